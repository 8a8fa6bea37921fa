"""The simulator: pinned closed forms, reproducibility, and statistics against the truth it was given."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from toolkit.data import load_cohort
from toolkit.models.kinetics import PEAK_ROUNDING_DAYS, peak_clock, peak_clock_inverse
from toolkit.simulate import (Effects, TrialParameters, _draw_population, cart_auc, cart_curve, compute_truth,
                              simulate_trial, time_below)
from toolkit.testing import EXAMPLE

TYPICAL = dict(cmax=24000.0, tmax=9.3, foldx=3900.0, alpha=0.16, beta=0.0032, fb=0.0079)


def test_typical_stein_curve_matches_domain_values():
    """Stein 2019 Table 1 typical values, derived: R0 = Cmax/foldx = 6.15, rho = ln(3900)/9.3 = 0.889/day,
    C(28) = 1374, C(90) = 147, C(365) = 61 copies/ug on Stein's kinked curve (peak rounding h -> 0)."""
    stein = np.array([1374, 147, 61])
    assert math.log(3900) / 9.3 == pytest.approx(0.889, abs=5e-4)
    np.testing.assert_allclose(cart_curve(np.array([28.0, 90.0, 365.0]), **TYPICAL, h=1e-9), stein, rtol=5e-3)
    # the rounded peak keeps R0 and the peak, and runs the contraction h log 2 days behind Stein's curve
    assert cart_curve(0.0, **TYPICAL) == pytest.approx(24000 / 3900)
    assert cart_curve(9.3, **TYPICAL) == pytest.approx(24000)
    assert cart_curve(np.linspace(0.0, 60.0, 6001), **TYPICAL).max() == pytest.approx(24000)
    h = PEAK_ROUNDING_DAYS
    np.testing.assert_allclose(cart_curve(np.array([28.0, 90.0, 365.0]), **TYPICAL),
                               cart_curve(np.array([28.0, 90.0, 365.0]) - h * math.log(2), **TYPICAL, h=1e-9), rtol=1e-7)


@pytest.mark.parametrize("tmax", [0.5, 2.0, 9.3, 30.0, 40.0])
def test_auc_quadrature_equals_numerical_integral(tmax):
    t = np.linspace(0, 28, 400_001)
    typical = {**TYPICAL, "tmax": tmax}
    numeric = np.trapezoid(cart_curve(t, **typical), t)
    assert cart_auc(28.0, **typical) == pytest.approx(numeric, rel=1e-8)


def test_auc_closed_form_over_wide_parameters():
    """The closed form (incomplete beta) against 400-node quadrature, over patients 1.5x as spread as the
    prior's typical ones, including peaks long after day 28 and far-tail (d > 15 h) pieces."""
    from toolkit.models.cart import CartPriors, natural_parameters_np
    from toolkit.models.kinetics import quadrature_auc

    rng = np.random.default_rng(1)
    mu, omega = CartPriors().mu(), CartPriors().omega()
    theta = (mu[:, 0] + mu[:, 1] * rng.standard_normal((4000, 6))
             + 1.5 * np.exp(np.log(omega[:, 0]) + omega[:, 1] * rng.standard_normal((4000, 6)))
             * rng.standard_normal((4000, 6)))
    p = natural_parameters_np(theta)
    p = {k: np.append(v, extra) for (k, v), extra in zip(p.items(), (26563.0, 758.0, 2869.5, 0.0687, 0.0053, 0.037))}
    closed = cart_auc(28.0, **p)
    quad = quadrature_auc(28.0, np.log(p["cmax"]), p["tmax"], np.log(p["foldx"]), p["alpha"], p["beta"],
                          np.log(p["fb"]) - np.log1p(-p["fb"]), nodes=400)
    sane = p["alpha"] < 50  # beyond that 400 nodes do not resolve the fall, and the closed form is the reference
    np.testing.assert_allclose(closed[sane], quad[sane], rtol=1e-9)
    late = {k: v[-1] for k, v in p.items()}  # peak on day 758: the far-tail branch of the expansion
    t = np.linspace(0.0, 28.0, 400_001)
    assert np.isfinite(closed).all() and closed[-1] == pytest.approx(np.trapezoid(cart_curve(t, **late), t), rel=1e-8)


def test_peak_clock_is_smooth_and_inverts():
    d = np.linspace(-30.0, 30.0, 60001)
    u = peak_clock(d)
    slope = np.gradient(u, d)
    assert u.min() == 0.0 and np.abs(slope).max() <= 1.0 + 1e-9 and np.abs(np.diff(slope)).max() < 1e-2  # C1: no jump
    np.testing.assert_allclose(peak_clock_inverse(u), np.abs(d), atol=1e-9)


def test_time_below_lloq_is_where_the_curve_crosses():
    t = time_below(50.0, **TYPICAL)
    assert cart_curve(t, **TYPICAL) == pytest.approx(50.0, rel=1e-6)
    assert 365 < t < 600


def test_same_seed_same_trial_and_different_seed_differs():
    a = simulate_trial(20, seed=7, with_truth=False)
    b = simulate_trial(20, seed=7, with_truth=False)
    c = simulate_trial(20, seed=8, with_truth=False)
    pd.testing.assert_frame_equal(a.cart_kinetics, b.cart_kinetics)
    pd.testing.assert_frame_equal(a.outcomes, b.outcomes)
    assert not a.cart_kinetics.equals(c.cart_kinetics)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_simulated_cohorts_validate(tmp_path, seed):
    trial = simulate_trial(60, seed=seed, with_truth=False)
    cohort = load_cohort(trial.write(tmp_path / f"s{seed}"))
    assert len(cohort.patients) == 60
    assert cohort.patients["arm"].value_counts().tolist() == [30, 30]
    late = cohort.cart[cohort.cart["day"] > 180]
    assert 0.15 < late["below_lloq"].mean() < 0.5, "design: 20-40% BLQ among late samples"


def test_large_population_statistics_match_the_truth_given():
    """2,000 simulated patients per arm: empirical ratios within sampling error of the true effects."""
    e, p = Effects(cmax_gmr=1.8, persistence_half_life_ratio=2.0, clearance_rate_ratio=1.4), TrialParameters()
    rng = np.random.default_rng(11)
    n = 2000
    ctl = _draw_population(n, np.zeros(n), p, e, rng)
    exp = _draw_population(n, np.ones(n), p, e, rng)
    gmr = math.exp(exp["log_cmax"].mean() - ctl["log_cmax"].mean())
    se = p.omega_cmax * math.sqrt(2 / n)
    assert abs(math.log(gmr) - math.log(1.8)) < 3 * se
    beta_ratio = math.exp(np.log(ctl["beta"]).mean() - np.log(exp["beta"]).mean())
    assert beta_ratio == pytest.approx(2.0, rel=0.12)
    clear = math.exp(np.log(exp["clearance"]).mean() - np.log(ctl["clearance"]).mean())
    assert clear == pytest.approx(1.4, rel=0.05)
    # P(response) = E[expit(logit 0.85 + 0.8 Z)], Z ~ N(0, 1), by Gauss-Hermite quadrature
    z, w = np.polynomial.hermite_e.hermegauss(40)
    marginal = np.sum(w / w.sum() / (1 + np.exp(-(math.log(0.85 / 0.15) + 0.8 * z))))
    assert ctl["responder"].mean() == pytest.approx(marginal, abs=0.025)
    cured = ctl["cured"].sum() / ctl["responder"].sum()
    assert cured == pytest.approx(p.cure_fraction, abs=0.04)


def test_truth_is_consistent_with_its_definitions():
    truth = compute_truth(Effects(), n=50_000)
    assert truth["cmax_gmr"] == pytest.approx(1.5, rel=0.02)
    assert truth["persistence_half_life_ratio"] == pytest.approx(1.5)
    assert truth["clearance_rate_ratio"] == 1.3 and truth["hazard_ratio_direct"] == 0.8
    assert truth["rfs_365d_difference"] == pytest.approx(truth["rfs_365d_experimental"] - truth["rfs_365d_control"])
    assert truth["cure_fraction_control"] == pytest.approx(0.45)
    # no effect at all: every contrast vanishes
    null = compute_truth(Effects(1.0, 1.0, 1.0, 1.0, 1.0), n=50_000)
    assert null["hazard_ratio"] == pytest.approx(1.0, abs=0.03)
    assert abs(null["rfs_365d_difference"]) < 0.01
    assert null["auc28_gmr"] == pytest.approx(1.0, abs=0.03)


def test_empirical_rfs_in_a_large_trial_matches_truth():
    """RFS at 365 days among responders, Kaplan-Meier on a 4,000-patient trial vs the truth (censor at HSCT)."""
    from toolkit.data.endpoints import time_to_event
    from toolkit.survival import aalen_johansen, kaplan_meier, survival_at

    trial = simulate_trial(4000, seed=5, with_truth=False)

    class _Cohort:  # the endpoint derivation needs only these
        experimental_arm = "IFN-a + CAR-T"
        covariate_columns = []

        def merged(self):
            m = trial.patients.merge(trial.outcomes, on="patient_id")
            for c in ("response_day", "relapse_day", "hsct_day", "death_day", "last_followup_day"):
                m[c] = pd.to_numeric(m[c], errors="coerce")
            return m

    tte = time_to_event(_Cohort())
    efs = time_to_event(_Cohort(), endpoint="efs")
    truth = compute_truth(n=100_000)
    for code, name in ((0, "control"), (1, "experimental")):
        sub = tte[tte["arm"] == code]
        km = kaplan_meier(sub["time"], sub["event"])  # horizons count from the response day
        # relapse and death in remission competing (HSCT censors): Aalen-Johansen vs the CIR and NRM truths
        cause = sub["cause"].map({"relapse": 1, "death": 2}).fillna(0).to_numpy(int)
        cir, nrm = (aalen_johansen(sub["time"], cause, event_of_interest=c) for c in (1, 2))
        # EFS from infusion, non-response an event at day 0
        km_efs = kaplan_meier(efs.loc[efs["arm"] == code, "time"], efs.loc[efs["arm"] == code, "event"])
        for day in (180, 365):
            assert survival_at(km, [day])[0] == pytest.approx(truth[f"rfs_{day}d_{name}"], abs=0.035), (name, day)
            assert _step(cir, day) == pytest.approx(truth[f"cir_{day}d_{name}"], abs=0.035), (name, day)
            assert _step(nrm, day) == pytest.approx(truth[f"nrm_{day}d_{name}"], abs=0.015), (name, day)
            assert survival_at(km_efs, [day])[0] == pytest.approx(truth[f"efs_{day}d_{name}"], abs=0.035), (name, day)
            # relapse-free and alive, relapsed, or died in remission: one of the three
            assert (truth[f"rfs_{day}d_{name}"] + truth[f"cir_{day}d_{name}"] + truth[f"nrm_{day}d_{name}"]
                    == pytest.approx(1.0, abs=1e-6))


def _step(table, day):
    return float(table["cif"].to_numpy()[np.searchsorted(table["time"].to_numpy(), day, side="right") - 1])


def test_median_rfs_truth_is_the_exact_crossing():
    """A pure Weibull story (no cure, no kinetic terms, no NRM): median = lam (ln 2)^(1/k) days after response,
    found by the posterior estimand's bisection, not on a coarse grid."""
    params = TrialParameters(cure_fraction=0.0, log_hr_per_log_cmax=0.0, log_hr_cart_loss=0.0,
                             log_hr_baseline_blasts_pct=0.0, nrm_per_year=1e-12)
    truth = compute_truth(Effects(1.0, 1.0, 1.0, 0.6, 1.0), params, n=2_000)
    k, lam = params.weibull_shape, params.weibull_scale_days
    assert truth["median_rfs_days_control"] == pytest.approx(lam * math.log(2) ** (1 / k), abs=0.01)
    assert truth["median_rfs_days_experimental"] == pytest.approx(lam * (math.log(2) / 0.6) ** (1 / k), abs=0.01)


def test_hazard_ratio_uncured_truth_is_the_cure_models_relapse_hazard_ratio():
    """Cure fraction, frequent death in remission, and a relapse hazard that is exactly Weibull PH among the
    uncured with HR 0.6: the truth is 0.6 (death in remission censors relapse; it is not a relapse event)."""
    params = TrialParameters(cure_fraction=0.4, log_hr_per_log_cmax=0.0, log_hr_cart_loss=0.0,
                             log_hr_baseline_blasts_pct=0.0, nrm_per_year=0.3)
    truth = compute_truth(Effects(1.0, 1.0, 1.0, 0.6, 1.5), params, n=50_000)
    assert truth["hazard_ratio_uncured"] == pytest.approx(0.6, abs=0.03)
    assert truth["cure_fraction_difference"] > 0.05

def test_effect_names_are_checked():
    with pytest.raises(ValueError, match="unknown effect"):
        Effects().with_overrides({"cmax_ratio": 2})
    with pytest.raises(ValueError, match="must be a positive ratio"):
        Effects().with_overrides({"cmax_gmr": -1})


def test_truth_json_names_are_the_model_estimand_names():
    truth = json.loads((EXAMPLE / "truth.json").read_text())
    names = set(truth["estimands"])
    for required in ["hazard_ratio", "rfs_180d_control", "rfs_365d_difference", "cure_fraction_experimental",
                     "cmax_gmr", "auc28_gmr", "persistence_half_life_ratio", "clearance_rate_ratio",
                     "mrd_recurrence_365d_difference", "log_hr_baseline_blasts_pct"]:
        assert required in names
