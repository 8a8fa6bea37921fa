"""Models rebuilt from a run folder (toolkit.fitting.rebuild_model) for moment-matched LOO of CAR-T and joint runs.

The check that matters: the rebuilt model has the fitted model's log density at the posterior draws
(in the unconstrained space where ``arviz_stats.loo_moment_match`` evaluates it), and a model rebuilt
from perturbed inputs does not, so the comparison can fail. The tests that fit (a CAR-T and a joint
model, then compile each model's log density) take minutes on two cores and are marked slow; the
labelled fallback is checked on a synthetic run without fitting.
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
def fitted(tmp_path_factory):  # used by slow tests only
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


def _points(run, model, n_draws=6) -> list[dict]:
    """The first posterior draws of ``run`` as points of ``model``'s unconstrained space (value variables)."""
    # arviz_stats's own transform of posterior draws (what loo_moment_match evaluates the model at)
    from arviz_stats.loo.loo_moment_match_helper import _get_upars_da

    start = model.initial_point()
    upars, _ = _get_upars_da(run.posterior, model, start, list(model.value_vars))
    points = []
    for row in upars.isel(draw=slice(0, n_draws)).to_numpy().reshape(-1, upars.shape[-1]):
        point, at = {}, 0
        for v in model.value_vars:
            size = start[v.name].size
            point[v.name] = row[at:at + size].reshape(start[v.name].shape)
            at += size
        points.append(point)
    return points


def _log_density(model, points) -> np.ndarray:
    logp = model.compile_logp(jacobian=True)
    return np.array([logp(p) for p in points])


@pytest.fixture(scope="module")
def original_density(fitted):
    """Per kind: the posterior draws as points, and the fitted model's log density at them."""
    out = {}
    for kind, (result, run) in fitted.items():
        points = _points(run, result.model)
        out[kind] = (points, _log_density(result.model, points))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cart", "joint"])
def test_rebuilt_model_has_the_fitted_log_density(fitted, original_density, kind):
    _, run = fitted[kind]
    points, original = original_density[kind]
    assert np.isfinite(original).all()
    np.testing.assert_allclose(_log_density(rebuild_model(run), points), original, rtol=1e-9, atol=1e-8)


@pytest.mark.slow
def test_a_model_rebuilt_from_perturbed_inputs_differs(fitted, original_density):
    """The broken variants the equality above must tell apart: one CAR-T level moved by 0.1 (log scale), and
    one responder's relapse status flipped."""
    _, run = fitted["cart"]
    inputs = cart_inputs_from_run(run)
    moved = inputs.log_value.copy()
    moved[np.flatnonzero(inputs.censored == 0)[0]] += 0.1
    options = CartOptions(**run.summary["options"])
    perturbed = cart.build_cart_model(dataclasses.replace(inputs, log_value=moved), options.prior_set(inputs.unit),
                                      effects_on=options.effects_on)
    points, original = original_density["cart"]
    assert np.max(np.abs(_log_density(perturbed, points) - original)) > 1e-3

    _, run = fitted["joint"]
    inputs = joint_inputs_from_run(run)
    event = inputs.relapse.event.copy()
    event[0] = 1 - event[0]
    options = JointOptions(**run.summary["options"])
    perturbed = joint.build_joint_model(dataclasses.replace(inputs, relapse=dataclasses.replace(inputs.relapse,
                                                                                                event=event)),
                                        options.prior_set(), variant=options.variant,
                                        associations=options.associations,
                                        cart_priors=options.cart_prior_set(inputs.cart.unit))
    points, original = original_density["joint"]
    assert np.max(np.abs(_log_density(perturbed, points) - original)) > 1e-3


@pytest.mark.slow
def test_joint_inputs_come_back_from_the_run(fitted):
    result, run = fitted["joint"]
    rebuilt, fitted_inputs = inputs_from_run(run), result.inputs
    assert rebuilt.relapse.patient_ids == fitted_inputs.relapse.patient_ids
    np.testing.assert_array_equal(rebuilt.cart_index, fitted_inputs.cart_index)
    np.testing.assert_allclose(rebuilt.log_lloq, fitted_inputs.log_lloq)
    np.testing.assert_allclose(rebuilt.relapse.time_years, fitted_inputs.relapse.time_years)


@pytest.mark.slow
@pytest.mark.parametrize("kind, var_name", [("cart", "log_level"), ("joint", "relapse")])
def test_flagged_observations_are_moment_matched(fitted, kind, var_name):
    """With the threshold just below the largest Pareto k, that observation is moment matched (not a fallback)."""
    import arviz_stats as azs

    _, run = fitted[kind]
    k = np.sort(np.asarray(azs.loo(run.posterior, var_name=var_name, pointwise=True).pareto_k).ravel())
    elpd, n, note = moment_matched_loo(run, var_name, k_threshold=float(k[-1]) - 1e-9)
    assert (n, note) == (1, "moment matched") and np.isfinite(float(elpd.elpd))


def _synthetic_joint_run(associations):
    """A joint "run" with a random pointwise relapse log-likelihood (no fit): enough for PSIS-LOO."""
    import xarray as xr

    rng = np.random.default_rng(1)
    loglik = xr.Dataset({"relapse": (("chain", "draw", "responder"), rng.normal(-1.0, 0.5, (2, 100, 12)))})
    posterior = xr.Dataset({"log_hr": (("chain", "draw"), rng.normal(size=(2, 100)))})
    tree = xr.DataTree.from_dict({"posterior": posterior, "log_likelihood": loglik})
    summary = {"model": "joint", "options": {"associations": associations}, "arms": {"control": "A",
                                                                                     "experimental": "B"}}
    return SimpleNamespace(posterior=tree, summary=summary)


def test_a_run_that_cannot_be_rebuilt_falls_back_with_a_label():
    """A joint run with the MRD submodel stores too little to rebuild its model: plain PSIS-LOO, said so."""
    run = _synthetic_joint_run(["log_cmax", "mrd_clearance"])
    assert inputs_from_run(run) is None
    elpd, n, note = moment_matched_loo(run, "relapse", k_threshold=-np.inf)
    assert n == 0 and np.isfinite(float(elpd.elpd))
    assert note.startswith("plain PSIS-LOO (not moment matched") and "MRD submodel" in note
    # the broken variant: nothing flagged, nothing to label
    assert moment_matched_loo(run, "relapse", k_threshold=np.inf)[2].startswith("none above k")
