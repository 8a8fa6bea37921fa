"""Remission durability model: structure, closed forms, bad data, estimands, CLI."""

import json
import math

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from toolkit.cli import main
from toolkit.data import load_cohort
from toolkit.data.inputs import ModelDataError, to_durability_inputs
from toolkit.estimands import durability_estimands
from toolkit.fitting import DurabilityOptions
from toolkit.models.durability import (DurabilityPriors, build_durability_model, median_survival_days,
                                       nrm_free_value, survival_curves, survival_logp)
from toolkit.estimands import durability_definitions
from toolkit.testing import EXAMPLE, read_raw, row_of, set_cell, write_raw


@pytest.fixture(scope="module")
def example():
    return load_cohort(EXAMPLE)


@pytest.mark.parametrize("variant", ["weibull", "cure"])
@pytest.mark.parametrize("endpoint, hsct, covariates", [
    ("rfs", "censor", []),
    ("rfs", "timevarying", ["baseline_blasts_pct", "age_years"]),
    ("relapse", "censor", ["baseline_blasts_pct"]),
    ("efs", "censor", []),
])
def test_structure_and_finite_start(example, variant, endpoint, hsct, covariates):
    inputs = to_durability_inputs(example, endpoint=endpoint, hsct=hsct, covariates=covariates)
    model = build_durability_model(inputs, variant=variant)
    names = set(model.named_vars)
    assert {"log_shape", "log_scale_years", "log_hr", "hazard_ratio", "rfs"} <= names
    assert ("logit_cure" in names) == (variant == "cure")
    assert ("log_hr_hsct" in names) == (hsct == "timevarying")
    assert ("log_hr_death" in names) == (variant == "cure" or endpoint in ("relapse", "efs"))
    assert ("response" in names) == (endpoint == "efs")
    assert model.named_vars_to_dims["rfs"] == ("patient",)
    if covariates:
        assert list(model.coords["covariate"]) == covariates
    point = model.initial_point()
    assert np.isfinite(model.compile_logp()(point))
    assert np.all(np.isfinite(model.compile_dlogp()(point)))


def test_weibull_log_likelihood_matches_scipy():
    """Event: log f(t) = log h - H; censored: -H; with h, H of Weibull PH (scipy weibull_min, scale lam e^{-lp/k})."""
    t, k, lam, lp = np.array([0.3, 1.7]), 1.3, 0.8, -0.4
    ll = survival_logp(t, np.array([1, 0]), np.log(k), np.log(lam), lp).eval()
    scale = lam * np.exp(-lp / k)
    np.testing.assert_allclose(ll, [stats.weibull_min.logpdf(0.3, k, scale=scale),
                                    stats.weibull_min.logsf(1.7, k, scale=scale)], rtol=1e-10)


def test_cure_log_likelihood_matches_closed_form():
    t, k, lam, lp, pi = np.array([0.5, 2.0]), 0.9, 1.1, 0.2, 0.35
    ll = survival_logp(t, np.array([1, 0]), np.log(k), np.log(lam), lp,
                       log_cure=np.log(pi), log_uncure=np.log(1 - pi)).eval()
    scale = lam * np.exp(-lp / k)
    expected = [np.log(1 - pi) + stats.weibull_min.logpdf(0.5, k, scale=scale),
                np.log(pi + (1 - pi) * stats.weibull_min.sf(2.0, k, scale=scale))]
    np.testing.assert_allclose(ll, expected, rtol=1e-10)


def test_timevarying_hsct_cumulative_hazard():
    """Censored at t=2 after HSCT at c=1: log S = -e^lp [H0(1) + e^g (H0(2) - H0(1))]."""
    k, lam, g = 1.5, 1.0, math.log(0.5)
    ll = survival_logp(np.array([2.0]), np.array([0]), np.log(k), np.log(lam), 0.0,
                       hsct=np.array([1.0]), log_hr_hsct=g).eval()
    assert ll[0] == pytest.approx(-(1.0 + 0.5 * (2 ** 1.5 - 1.0)))


def _fake_posterior(**values):
    return xr.Dataset({k: (("chain", "draw"), np.full((1, 2), v)) for k, v in values.items()})


def test_survival_curves_and_median_closed_form(example):
    inputs = to_durability_inputs(example)
    post = _fake_posterior(log_shape=np.log(1.2), log_scale_years=np.log(0.9), log_hr=np.log(0.6))
    days = np.array([180.0, 365.0])
    t = days / 365.25
    s0 = survival_curves(post, inputs, days, variant="weibull", arm=0)[0]
    s1 = survival_curves(post, inputs, days, variant="weibull", arm=1)[0]
    np.testing.assert_allclose(s0, np.exp(-(t / 0.9) ** 1.2))
    np.testing.assert_allclose(s1, np.exp(-(t / 0.9) ** 1.2 * 0.6))
    # median: (t/lam)^k hr = log 2
    m1 = median_survival_days(post, inputs, variant="weibull", arm=1)[0]
    assert m1 == pytest.approx(365.25 * 0.9 * (math.log(2) / 0.6) ** (1 / 1.2), rel=1e-6)
    cure = _fake_posterior(log_shape=0.0, log_scale_years=0.0, log_hr=0.0, logit_cure=0.0, cure_log_or=np.log(3))
    s = survival_curves(cure, inputs, np.array([365.25]), variant="cure", arm=1)[0, 0]
    assert s == pytest.approx(0.75 + 0.25 * math.exp(-1))
    assert np.isinf(median_survival_days(cure, inputs, variant="cure", arm=1)[0])


def test_estimand_names_follow_truth_json(example):
    inputs = to_durability_inputs(example, covariates=["baseline_blasts_pct"])
    rng = np.random.default_rng(0)
    post = xr.Dataset({
        "log_shape": (("chain", "draw"), rng.normal(0, 0.05, (2, 50))),
        "log_scale_years": (("chain", "draw"), rng.normal(0, 0.05, (2, 50))),
        "log_hr": (("chain", "draw"), rng.normal(-0.3, 0.05, (2, 50))),
        "logit_cure": (("chain", "draw"), rng.normal(0, 0.05, (2, 50))),
        "cure_log_or": (("chain", "draw"), rng.normal(0, 0.05, (2, 50))),
        "beta_std": (("chain", "draw", "covariate"), rng.normal(0.2, 0.01, (2, 50, 1))),
        "gamma_std": (("chain", "draw", "covariate"), rng.normal(0, 0.01, (2, 50, 1))),
    })
    post["hazard_ratio"] = np.exp(post["log_hr"])
    est = durability_estimands(post, inputs, variant="cure", hr_below=(1.0, 0.7))
    truth = json.loads((EXAMPLE / "truth.json").read_text())["estimands"]
    for name in ["hazard_ratio_uncured", "rfs_180d_control", "rfs_365d_experimental", "rfs_365d_difference",
                 "cure_fraction_control", "cure_fraction_difference", "log_hr_baseline_blasts_pct"]:
        assert name in est and name in truth, name
    assert est["prob_hr_below_1"] == 1.0 and 0 < est["prob_hr_below_0.7"] < 1
    # per unit of the covariate as given: beta_std / sd
    assert est["log_hr_baseline_blasts_pct"]["median"] == pytest.approx(0.2 / inputs.x_sd[0], rel=0.02)
    assert set(est["hazard_ratio"]) == {"mean", "median", "sd", "hdi_90"}


def test_no_events_is_refused_with_a_clear_message(cohort_dir):
    outcomes = read_raw(cohort_dir, "outcomes")
    outcomes["relapse_day"], outcomes["relapse_cd19"], outcomes["death_day"] = "", "", ""
    write_raw(cohort_dir, "outcomes", outcomes)
    with pytest.raises(ModelDataError, match="the cohort has no relapses or deaths in remission among its"):
        to_durability_inputs(load_cohort(cohort_dir))


def test_arm_without_events_is_warned(cohort_dir):
    cohort = load_cohort(cohort_dir)
    experimental = set(cohort.patients.loc[cohort.patients["arm"] == cohort.experimental_arm, "patient_id"])
    outcomes = read_raw(cohort_dir, "outcomes")
    mask = outcomes["patient_id"].isin(experimental)
    outcomes.loc[mask, ["relapse_day", "relapse_cd19", "death_day"]] = ""
    write_raw(cohort_dir, "outcomes", outcomes)
    inputs = to_durability_inputs(load_cohort(cohort_dir))
    assert inputs.warnings == ("arm 'IFN-a + CAR-T' has no events: the hazard ratio is bounded only on one side "
                               "and its interval reflects the prior more than the data",)


def test_constant_or_missing_covariate_is_refused(cohort_dir):
    patients = read_raw(cohort_dir, "patients")
    patients["prior_hsct"] = "1"
    write_raw(cohort_dir, "patients", patients)
    with pytest.raises(ModelDataError, match=r"covariate prior_hsct has the same value \(1\) for every analysed patient"):
        to_durability_inputs(load_cohort(cohort_dir), covariates=["prior_hsct"])
    set_cell(cohort_dir, "patients", row_of(cohort_dir, "patients", patient_id="P001"), "age_years", "")
    with pytest.raises(ModelDataError, match=r"covariate age_years is blank for 1 analysed patient\(s\) \(P001\)"):
        to_durability_inputs(load_cohort(cohort_dir), covariates=["age_years"])
    with pytest.raises(ModelDataError, match="unknown covariate"):
        to_durability_inputs(load_cohort(cohort_dir), covariates=["weight"])


def test_options_and_priors_name_valid_choices():
    with pytest.raises(ValueError, match="unknown variant 'gompertz'; valid: weibull, cure"):
        DurabilityOptions(variant="gompertz")
    with pytest.raises(ValueError, match="unknown prior set 'flat'"):
        DurabilityPriors.named("flat")
    with pytest.raises(ValueError, match="unknown prior"):
        DurabilityPriors().with_overrides({"log_hazard": [0, 1]})
    assert DurabilityPriors.named("skeptical").log_hr == (0.0, 0.35)
    assert DurabilityPriors.named("optimistic").log_hr == (pytest.approx(math.log(0.7)), 0.35)


def test_cli_fit_durability_writes_run_and_prints_estimands(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["fit", "durability", "--data", str(EXAMPLE), "--out", str(out), "--spec",
                 "models/durability_primary.toml", "--draws", "500", "--tune", "500", "--days", "180,365",
                 "--prob-hr-below", "1,0.8"])
    assert code == 0
    text = capsys.readouterr().out
    assert "hazard_ratio" in text and "Diagnostics: converged" in text
    summary = json.loads((out / "summary.json").read_text())
    provenance = json.loads((out / "provenance.json").read_text())
    assert summary["model"] == "durability" and summary["variant"] == "cure"  # from the spec
    assert summary["arms"] == {"control": "CAR-T", "experimental": "IFN-a + CAR-T"}
    assert set(summary["diagnostics"]) >= {"max_rhat", "min_ess_bulk", "min_ess_tail", "divergences", "converged"}
    assert "prob_hr_below_0.8" in summary["estimands"] and "rfs_730d_control" not in summary["estimands"]
    assert summary["options"]["days"] == [180, 365]
    # the primary analysis gives RFS, EFS and the cumulative incidences from one posterior, each defined in words
    for name in ("efs_365d_difference", "cir_365d_difference", "nrm_365d_control", "response_rate_difference",
                 "cure_fraction_difference", "hazard_ratio_uncured"):
        assert name in summary["estimands"], name
    assert "not an event-free-survival hazard ratio" in summary["definitions"]["hazard_ratio"]
    assert "competing" in summary["definitions"]["cir_{D}d_{arm}"]
    assert (out / "figures" / "cir_overlay.png").exists()
    assert provenance["settings"]["draws"] == 500 and provenance["spec"]["path"].endswith("durability_primary.toml")
    assert len(provenance["data_hash"]) == 64
    assert (out / "posterior.nc").exists() and (out / "figures" / "rfs_overlay.png").exists()
    truth = json.loads((EXAMPLE / "truth.json").read_text())["estimands"]
    lo, hi = summary["estimands"]["rfs_365d_control"]["hdi_90"]
    assert lo < truth["rfs_365d_control"] < hi


def test_cli_fit_refuses_bad_requests(tmp_path, capsys, cohort_dir):
    assert main(["fit", "durability", "--data", str(EXAMPLE), "--out", str(tmp_path / "r"),
                 "--covariates", "sex"]) == 2
    assert "unknown covariate(s) sex" in capsys.readouterr().out
    assert main(["fit", "joint", "--data", str(EXAMPLE), "--out", str(tmp_path / "r"), "--associations", "cd19"]) == 2
    assert "unknown association(s) cd19; valid: log_cmax, cart_loss, mrd" in capsys.readouterr().out
    bad_spec = tmp_path / "bad.toml"
    bad_spec.write_text('model = "durability"\n[sampler]\nwarmup = 10\n')
    assert main(["fit", "durability", "--data", str(EXAMPLE), "--out", str(tmp_path / "r"), "--spec", str(bad_spec)]) == 2
    assert "unknown [sampler] key(s) warmup" in capsys.readouterr().out
    assert not (tmp_path / "r").exists()


def test_cure_model_puts_death_in_remission_on_its_own_hazard_for_cured_and_uncured(example):
    """The observed-data log-likelihood of the cure model equals, patient by patient (S_n = exp(-H_n))::

        relapse at t:             log(1 - pi) + log h_u(t) - H_u(t) - H_n(t)
        death in remission at t:  log h_n(t) - H_n(t) + log(pi + (1 - pi) exp(-H_u(t)))
        censored at t:            -H_n(t) + log(pi + (1 - pi) exp(-H_u(t)))
    """
    inputs = to_durability_inputs(example)
    assert inputs.competing.sum() > 0  # the example has deaths in remission
    model = build_durability_model(inputs, variant="cure")
    assert {"death", "log_hr_death"} <= set(model.named_vars)
    point = model.initial_point()
    point.update(log_shape=np.log(1.3), log_scale_years=np.log(0.7), log_hr=np.log(0.6), logit_cure=-0.2,
                 cure_log_or=0.5, death_log_shape=np.log(0.9),
                 death_log_scale_ref=nrm_free_value(np.log(0.9), np.log(20.0)), log_hr_death=0.3)
    observed = model.compile_logp(vars=model.observed_RVs)(point)
    t, a = inputs.time_years, inputs.arm
    relapse = (inputs.event == 1) & (inputs.competing == 0)
    death = inputs.competing == 1
    k, lam, kn, lamn = 1.3, 0.7, 0.9, 20.0
    hu, Hu = k / lam * (t / lam) ** (k - 1) * 0.6 ** a, (t / lam) ** k * 0.6 ** a
    hn, Hn = kn / lamn * (t / lamn) ** (kn - 1) * np.exp(0.3 * a), (t / lamn) ** kn * np.exp(0.3 * a)
    pi = 1 / (1 + np.exp(-(-0.2 + 0.5 * a)))
    expected = np.where(relapse, np.log(1 - pi) + np.log(hu) - Hu - Hn,
                        np.where(death, np.log(hn) - Hn + np.log(pi + (1 - pi) * np.exp(-Hu)),
                                 -Hn + np.log(pi + (1 - pi) * np.exp(-Hu))))
    assert observed == pytest.approx(expected.sum(), rel=1e-9)


@pytest.mark.parametrize("variant, endpoint", [("weibull", "efs"), ("cure", "rfs")])
def test_nrm_reparameterisation_keeps_the_log_density(example, monkeypatch, variant, endpoint):
    """Model 1.2.0 samples v = k^a (log lam_n - log t_r) in place of log lam_n (``nrm_log_scale``).

    At the same natural-scale parameters its joint log density equals 1.1.0's (log lam_n a free
    Normal) plus the change of variables' log Jacobian log |d log lam_n / dv| = -a log k_n, at
    points spread over the prior, far tails included; dropping the Jacobian (v with sd sigma, not
    k^a sigma) breaks the equality.
    """
    import pymc as pm
    import pytensor.tensor as pt

    from toolkit.models import durability as dm
    from toolkit.models.priors import normal

    a = dm.NRM_SHAPE_POWER
    assert 0 < a <= 1
    inputs = to_durability_inputs(example, endpoint=endpoint)
    new = build_durability_model(inputs, variant=variant)
    assert "death_log_scale_ref" in {rv.name for rv in new.free_RVs}
    assert "death_log_scale_years" in {d.name for d in new.deterministics}
    monkeypatch.setattr(dm, "nrm_log_scale", lambda log_shape, prior: normal("death_log_scale_years", prior))
    old = build_durability_model(inputs, variant=variant)  # 1.1.0: log lam_n itself is the free variable

    def no_jacobian(log_shape, prior):  # a broken variant: v's sd not scaled by k^a
        log_t, c = np.log(dm.NRM_REFERENCE_YEARS), pt.exp(a * log_shape)
        v = pm.Normal("death_log_scale_ref", mu=c * (prior[0] - log_t), sigma=prior[1])
        return pm.Deterministic("death_log_scale_years", log_t + v / c)

    monkeypatch.setattr(dm, "nrm_log_scale", no_jacobian)
    broken = build_durability_model(inputs, variant=variant)
    logp_new, logp_old, logp_broken = new.compile_logp(), old.compile_logp(), broken.compile_logp()
    rng = np.random.default_rng(1)
    gaps, broken_gaps = [], []
    for log_k, log_lam in [(0.0, np.log(30.0)), (-1.2, 1.0), (1.0, 6.5), (0.4, -0.5), *rng.normal([0, 3.4], [0.5, 1.5], (4, 2))]:
        point = old.initial_point()
        point.update(log_shape=0.2, log_scale_years=-0.3, log_hr=-0.4, death_log_shape=log_k,
                     death_log_scale_years=log_lam, log_hr_death=0.3)
        other = {k: v for k, v in point.items() if k != "death_log_scale_years"}
        other["death_log_scale_ref"] = nrm_free_value(log_k, log_lam)
        gaps.append(logp_new(other) - logp_old(point) + a * log_k)
        broken_gaps.append(logp_broken(other) - logp_old(point) + a * log_k)
    assert np.ptp(gaps) < 1e-9 and abs(gaps[0]) < 1e-6  # the same up to a constant (here 0, to rounding)
    assert np.ptp(broken_gaps) > 0.1


def test_nrm_reparameterisation_keeps_the_prior(example):
    """Prior draws of the natural NRM parameters: log lam_n ~ Normal(log 30, 1.5) independent of log k_n."""
    import pymc as pm

    model = build_durability_model(to_durability_inputs(example, endpoint="efs"), variant="weibull")
    k, lam = pm.draw([model["death_log_shape"], model["death_log_scale_years"]], draws=4000, random_seed=5)
    mu, sigma = DurabilityPriors().death_log_scale_years
    assert abs(lam.mean() - mu) < 4 * sigma / np.sqrt(lam.size) and abs(lam.std() / sigma - 1) < 0.05
    assert abs(np.corrcoef(k, lam)[0, 1]) < 0.05


def _competing_posterior(n=40, seed=0):
    """Exponential relapse (k = 1) with a cure fraction, exponential NRM, and a response part."""
    rng = np.random.default_rng(seed)
    vals = dict(log_shape=0.0, log_scale_years=np.log(0.8), log_hr=np.log(0.5), logit_cure=np.log(0.4 / 0.6),
                cure_log_or=np.log(2.0), death_log_shape=0.0, death_log_scale_years=np.log(10.0),
                log_hr_death=0.0, logit_response=np.log(0.8 / 0.2), response_log_or=np.log(1.5))
    post = xr.Dataset({k: (("chain", "draw"), np.full((1, n), v) + rng.normal(0, 1e-9, (1, n)))
                       for k, v in vals.items()})
    post["hazard_ratio"] = np.exp(post["log_hr"])
    return post


def test_efs_cir_and_nrm_estimands_are_closed_form_and_named_as_the_truth(example):
    """Constant hazards a (relapse of the uncured) and b (NRM), cure fraction pi, response probability p:
    CIR(t) = (1 - pi) a / (a + b) (1 - e^{-(a+b) t}), NRM(t) = b / (a + b) (1 - e^{-(a+b) t}) pi-weighted,
    EFS(t) = p [pi e^{-b (t - d)} + (1 - pi) e^{-(a+b)(t - d)}], d the response day."""
    inputs = to_durability_inputs(example, endpoint="efs")
    est = durability_estimands(_competing_posterior(), inputs, variant="cure", days=(180, 365))
    truth = json.loads((EXAMPLE / "truth.json").read_text())["estimands"]
    for name in ["efs_365d_control", "efs_365d_difference", "cir_365d_experimental", "cir_365d_difference",
                 "nrm_180d_control", "nrm_365d_difference", "response_rate_control", "response_rate_difference",
                 "hazard_ratio_uncured", "cure_fraction_difference"]:
        assert name in est and name in truth, name
    b = 1 / 10.0
    for arm, name in ((0, "control"), (1, "experimental")):
        a = 1 / 0.8 * (0.5 if arm else 1.0)
        pi = (0.4 / 0.6 * (2.0 if arm else 1.0)) / (1 + 0.4 / 0.6 * (2.0 if arm else 1.0))
        p = 0.8 * (1.5 if arm else 1.0) / (0.2 + 0.8 * (1.5 if arm else 1.0))
        for d in (180, 365):
            t = d / 365.25
            cir = (1 - pi) * a / (a + b) * -np.expm1(-(a + b) * t)
            nrm = pi * -np.expm1(-b * t) + (1 - pi) * b / (a + b) * -np.expm1(-(a + b) * t)
            assert est[f"cir_{d}d_{name}"]["median"] == pytest.approx(cir, rel=1e-4)
            assert est[f"nrm_{d}d_{name}"]["median"] == pytest.approx(nrm, rel=1e-4)
            assert (est[f"rfs_{d}d_{name}"]["median"] + cir + nrm) == pytest.approx(1.0, abs=1e-4)
            s = (d - inputs.response_day) / 365.25
            efs = p * (pi * np.exp(-b * s) + (1 - pi) * np.exp(-(a + b) * s))
            assert est[f"efs_{d}d_{name}"]["median"] == pytest.approx(efs, rel=1e-6)
        assert est[f"response_rate_{name}"]["median"] == pytest.approx(p, rel=1e-6)
    assert inputs.response_day == 28.0
    words = durability_definitions("cure", "efs", response_day=28.0)
    assert "not an event-free-survival hazard ratio" in words["hazard_ratio"]
    assert "non-response" in words["efs_{D}d_{arm}"] or "does not respond" in words["efs_{D}d_{arm}"]


def _reference_incidences(post, inputs, horizon_days, *, arm):
    """CIR and NRM as first written: the Weibull survivals as powers, every row's running sums on the whole
    one-day grid, then the row mean."""
    from toolkit.survival import cumulative_incidence, incidence_grid

    def draws(name):
        return post[name].to_numpy().reshape(post[name].shape[0] * post[name].shape[1], -1)

    grid = incidence_grid(horizon_days)
    t = grid[None, None, :] / 365.25
    lp = draws("log_hr")[:, :, None] * arm
    if inputs.covariates:
        lp = lp + (draws("beta_std") @ inputs.x_std.T)[:, :, None]
    su = np.exp(-(t / np.exp(draws("log_scale_years"))[:, :, None]) ** np.exp(draws("log_shape"))[:, :, None]
                * np.exp(lp))
    if "logit_cure" in post:
        eta = (draws("logit_cure") + draws("cure_log_or") * arm)[:, :, None]
        if inputs.covariates:
            eta = eta + (draws("gamma_std") @ inputs.x_std.T)[:, :, None]
        pi = 1 / (1 + np.exp(-eta))
        su = pi + (1 - pi) * su
    dl, dk = np.exp(draws("death_log_scale_years"))[:, :, None], np.exp(draws("death_log_shape"))[:, :, None]
    sn = np.exp(-(t / dl) ** dk * np.exp(draws("log_hr_death")[:, :, None] * arm))
    su, sn = np.broadcast_arrays(su, sn)
    return grid, cumulative_incidence(su, sn).mean(axis=1), cumulative_incidence(sn, su).mean(axis=1)


@pytest.mark.parametrize("variant", ["weibull", "cure"])
@pytest.mark.parametrize("covariates", [[], ["baseline_blasts_pct", "age_years"]])
def test_cumulative_incidences_equal_the_full_grid_sums(example, variant, covariates):
    """The blocked, selected-day CIR/NRM (the estimands' and the calibration's path) and the full-grid output
    equal the plain definition: every row's running Riemann-Stieltjes sum over the whole grid, averaged, of
    Weibull survivals computed as powers (the code takes exp(k log(t / lam)); rounding differs by ~1e-15)."""
    from toolkit.models.durability import cumulative_incidences

    inputs = to_durability_inputs(example, endpoint="relapse", covariates=covariates)
    rng = np.random.default_rng(3)
    n = 60
    vals = {"log_shape": rng.normal(0, 0.5, n), "log_scale_years": rng.normal(np.log(0.75), 1, n),
            "log_hr": rng.normal(0, 1, n), "death_log_shape": rng.normal(0, 0.5, n),
            "death_log_scale_years": rng.normal(np.log(30), 1.5, n), "log_hr_death": rng.normal(0, 1, n)}
    if variant == "cure":
        vals.update(logit_cure=rng.normal(0, 1, n), cure_log_or=rng.normal(0, 1, n))
    post = xr.Dataset({k: (("chain", "draw"), v.reshape(2, -1)) for k, v in vals.items()})
    for name in (["beta_std"] + (["gamma_std"] if variant == "cure" else [])) if covariates else []:
        post[name] = (("chain", "draw", "covariate"), rng.normal(0, 0.5, (2, n // 2, len(covariates))))
    days = [1, 28, 180, 365, 730]
    for arm in (0, 1):
        grid, cir_ref, nrm_ref = _reference_incidences(post, inputs, 730, arm=arm)
        assert np.all(np.diff(cir_ref[:, -1]) != 0) and np.all(nrm_ref[:, -1] > 0)  # varied, not trivial
        g, cir, nrm = cumulative_incidences(post, inputs, 730, arm=arm)
        np.testing.assert_array_equal(g, grid)
        np.testing.assert_allclose(cir, cir_ref, rtol=0, atol=1e-13)
        np.testing.assert_allclose(nrm, nrm_ref, rtol=0, atol=1e-13)
        for chunk in (None, 7):
            at, cir, nrm = cumulative_incidences(post, inputs, 730, arm=arm, days=days, chunk=chunk)
            np.testing.assert_array_equal(at, days)
            np.testing.assert_allclose(cir, cir_ref[:, days], rtol=0, atol=1e-13)
            np.testing.assert_allclose(nrm, nrm_ref[:, days], rtol=0, atol=1e-13)
    # the tolerance tells a slip of one grid day apart at every day
    assert np.all(np.max(np.abs(cir_ref[:, days] - cir_ref[:, [d - 1 for d in days]]), axis=0) > 1e-6)
    with pytest.raises(ValueError, match="within 0..730"):
        cumulative_incidences(post, inputs, 730, arm=0, days=[731])


def test_default_sampler_is_nutpie_with_the_disk_cached_python_callback():
    """Durability fits use nutpie's Python log-density callback (compiles in 1-2 s in a new process,
    benchmarks/bench_warm_refit.py); the kinetic models keep nutpie's numba C callback, and a user's
    backend choice is left alone."""
    from toolkit.fitting import default_settings

    assert (default_settings("durability").backend, default_settings("durability").logp_callback) == \
        ("nutpie", "python")
    assert default_settings("cart").logp_callback == "numba"
    assert default_settings("durability", backend="pymc").logp_callback == "numba"
    assert default_settings("durability", logp_callback="numba").logp_callback == "numba"
