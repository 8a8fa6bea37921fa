"""Models rebuilt from a run folder (toolkit.fitting.rebuild_model) for moment-matched LOO of CAR-T and joint runs.

The check that matters: the rebuilt model has the fitted model's log density at the posterior draws
(evaluated the way ``arviz_stats.loo_moment_match`` evaluates it), and a model rebuilt from perturbed
inputs does not, so the comparison can fail.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from toolkit.data import load_cohort
from toolkit.data.from_run import cart_inputs_from_run, inputs_from_run, joint_inputs_from_run
from toolkit.fitting import (CartOptions, JointOptions, default_settings, fit_cart, fit_joint, moment_matched_loo,
                             rebuild_model)
from toolkit.inference import load_run
from toolkit.models import cart, joint
from toolkit.simulate import simulate_trial

TINY = {"chains": 2, "tune": 100, "draws": 100, "progressbar": False, "random_seed": 5}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A small simulated trial (24 patients) fitted by the CAR-T model and by the joint model with a pointwise
    log-likelihood; each fit saved and read back."""
    folder = tmp_path_factory.mktemp("rebuild")
    cohort = load_cohort(simulate_trial(24, seed=11, with_truth=False).write(folder / "cohort"))
    out = {}
    for name, fit in (("cart", lambda: fit_cart(cohort, CartOptions(), default_settings("cart", **TINY))),
                      ("joint", lambda: fit_joint(cohort, JointOptions(pointwise_log_likelihood=True),
                                                  default_settings("joint", **TINY)))):
        result = fit()
        out[name] = (result, load_run(result.save(folder / name)))
    return out


def _log_density(run, model, var_name, n_draws=25):
    """The model's log posterior density (Jacobian included) at the first draws of the run, as moment matching
    evaluates it (``arviz_stats`` builds it from the PyMC model)."""
    from arviz_stats.loo.loo_moment_match_helper import mm_from_pymc

    log_prob, _, upars = mm_from_pymc(run.posterior, model=model, var_name=var_name)
    return np.asarray(log_prob(upars.isel(draw=slice(0, n_draws))))


@pytest.mark.parametrize("kind, var_name", [("cart", "log_level"), ("joint", "relapse")])
def test_rebuilt_model_has_the_fitted_log_density(fitted, kind, var_name):
    result, run = fitted[kind]
    original = _log_density(run, result.model, var_name)
    rebuilt = _log_density(run, rebuild_model(run), var_name)
    assert np.isfinite(original).all()
    np.testing.assert_allclose(rebuilt, original, rtol=1e-9, atol=1e-8)


def test_a_model_rebuilt_from_perturbed_inputs_differs(fitted):
    """The broken variants the equality above must tell apart: one CAR-T level moved by 0.1 (log scale), and
    one responder's relapse time moved by a month."""
    result, run = fitted["cart"]
    inputs = cart_inputs_from_run(run)
    moved = inputs.log_value.copy()
    moved[np.flatnonzero(inputs.censored == 0)[0]] += 0.1
    options = CartOptions(**run.summary["options"])
    perturbed = cart.build_cart_model(dataclasses.replace(inputs, log_value=moved), options.prior_set(inputs.unit),
                                      effects_on=options.effects_on)
    assert not np.allclose(_log_density(run, perturbed, "log_level"), _log_density(run, result.model, "log_level"))

    result, run = fitted["joint"]
    inputs = joint_inputs_from_run(run)
    times = inputs.relapse.time_years.copy()
    times[0] += 1 / 12
    options = JointOptions(**run.summary["options"])
    perturbed = joint.build_joint_model(dataclasses.replace(inputs, relapse=dataclasses.replace(inputs.relapse,
                                                                                                time_years=times)),
                                        options.prior_set(), variant=options.variant,
                                        associations=options.associations,
                                        cart_priors=options.cart_prior_set(inputs.cart.unit))
    assert not np.allclose(_log_density(run, perturbed, "relapse"), _log_density(run, result.model, "relapse"))


def test_joint_inputs_come_back_from_the_run(fitted):
    result, run = fitted["joint"]
    rebuilt, fitted_inputs = inputs_from_run(run), result.inputs
    assert rebuilt.relapse.patient_ids == fitted_inputs.relapse.patient_ids
    np.testing.assert_array_equal(rebuilt.cart_index, fitted_inputs.cart_index)
    np.testing.assert_allclose(rebuilt.log_lloq, fitted_inputs.log_lloq)
    np.testing.assert_allclose(rebuilt.relapse.time_years, fitted_inputs.relapse.time_years)


@pytest.mark.parametrize("kind, var_name", [("cart", "log_level"), ("joint", "relapse")])
def test_flagged_observations_are_moment_matched(fitted, kind, var_name):
    """With the threshold just below the largest Pareto k, that observation is moment matched (not a fallback)."""
    import arviz_stats as azs

    _, run = fitted[kind]
    k = np.sort(np.asarray(azs.loo(run.posterior, var_name=var_name, pointwise=True).pareto_k).ravel())
    elpd, n, note = moment_matched_loo(run, var_name, k_threshold=float(k[-1]) - 1e-9)
    assert (n, note) == (1, "moment matched") and np.isfinite(float(elpd.elpd))


def test_a_run_that_cannot_be_rebuilt_falls_back_with_a_label(fitted):
    """A joint run with the MRD submodel stores too little to rebuild its model: plain PSIS-LOO, said so."""
    _, run = fitted["joint"]
    options = dict(run.summary["options"], associations=["log_cmax", "mrd_clearance"])
    with_mrd = SimpleNamespace(posterior=run.posterior, summary=dict(run.summary, options=options))
    assert inputs_from_run(with_mrd) is None
    elpd, n, note = moment_matched_loo(with_mrd, "relapse", k_threshold=-np.inf)
    assert n == 0 and note.startswith("plain PSIS-LOO (not moment matched") and "MRD submodel" in note
