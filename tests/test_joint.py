"""Joint model: closed-form pieces, structure, reduction to the separate models, CLI fit and predict."""

import math

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
import pytest
from scipy import integrate

from toolkit.cli import main
from toolkit.data import load_cohort
from toolkit.data.joint_inputs import NO_CHANGE, to_joint_inputs
from toolkit.models.kinetics import PEAK_ROUNDING_DAYS
from toolkit.inference import load_run
from toolkit.models import cart
from toolkit.models.joint import (
    STEP_RAMP_YEARS,
    build_joint_model,
    loss_delay,
    relapse_cumhaz,
    relapse_log_hazard,
)
from toolkit.prediction import brier_and_auc, calibration_table, eligible_at_landmark
from toolkit.simulate import simulate_trial, time_below

EXAMPLE = "data_templates/example"


@pytest.fixture(scope="module")
def example_cohort():
    return load_cohort(EXAMPLE)


@pytest.fixture(scope="module")
def example_inputs(example_cohort):
    return to_joint_inputs(example_cohort)


def _random_kinetics(n=2000, seed=3):
    rng = np.random.default_rng(seed)
    cmax = np.exp(np.log(24000) + 1.2 * rng.standard_normal(n))
    tmax = np.exp(np.log(9.3) + 0.38 * rng.standard_normal(n))
    alpha = np.exp(np.log(0.16) + 0.91 * rng.standard_normal(n))
    beta = np.minimum(np.exp(np.log(0.0032) + 0.86 * rng.standard_normal(n)), alpha / 2)
    fb = 1 / (1 + np.exp(-(math.log(0.0079 / 0.9921) + 0.8 * rng.standard_normal(n))))
    return cmax, tmax, alpha, beta, fb


def test_loss_day_matches_the_simulators_bisection():
    cmax, tmax, alpha, beta, fb = _random_kinetics()
    reference = time_below(50.0, cmax, tmax, 3900.0, alpha, beta, fb)
    mine = tmax + loss_delay(np.log(cmax), alpha, beta, np.log(fb / (1 - fb)), math.log(50.0), lib=np)
    finite = reference < tmax + 20 * 365 - 1
    assert finite.mean() > 0.95
    np.testing.assert_allclose(mine[finite], reference[finite], atol=1e-6)
    below_peak = cmax < 50.0
    np.testing.assert_array_equal(mine[below_peak], tmax[below_peak])  # never above the LLOQ: lost at Tmax


def test_loss_delay_pytensor_equals_numpy():
    cmax, tmax, alpha, beta, fb = _random_kinetics(200)
    args = (np.log(cmax), alpha, beta, np.log(fb / (1 - fb)), math.log(50.0))
    sym = [pt.dvector() for _ in range(4)]
    f = pytensor.function(sym, loss_delay(*sym, math.log(50.0)))
    np.testing.assert_allclose(f(*args[:4]), loss_delay(*args, lib=np), rtol=1e-10, atol=1e-9)


def test_hand_computed_loss_day():
    """Cmax 10,000, FB 0.01, alpha 0.2, beta 0.005, LLOQ 50: the persistence phase reaches 50 at
    u = ln(10000 * 0.01 / 50) / 0.005 = ln 2 / 0.005 = 138.63 days, corrected by the fast phase
    (0.99 e^{-0.2 u} ~ 1e-12, negligible). u is on the peak clock; the day after Tmax is
    h acosh(e^{u/h}) = u + h log 2 (to e^{-2u/h}), 1.39 days later at h = 2."""
    d = loss_delay(np.log(10_000.0), 0.2, 0.005, np.log(0.01 / 0.99), np.log(50.0), lib=np)
    h = PEAK_ROUNDING_DAYS
    assert d == pytest.approx(math.log(2) / 0.005 + h * math.log(2), abs=1e-6)


@pytest.mark.parametrize("ramp_years", [0.0, STEP_RAMP_YEARS])
@pytest.mark.parametrize("shape", [1.2, 0.7])
@pytest.mark.parametrize("changes", [[0.3], [0.3, 0.7], [1.5, 0.2], [0.0, 2.0], [1.08], [0.01, 1.09]])
def test_cumulative_hazard_is_the_integral_of_the_hazard(changes, shape, ramp_years):
    """The closed-form H(s) is the integral of h over (0, s], for the exact step and for the smoothed one
    the model samples (change points near s = 1.1 included, where the smoothing acts)."""
    log_shape, log_scale, lp = math.log(shape), math.log(0.75), -0.3
    log_hrs = [math.log(3.0), math.log(0.5)][: len(changes)]
    s = 1.1

    def hazard(u):
        return math.exp(relapse_log_hazard(np.array(u), lp, log_shape, log_scale, changes, log_hrs, lib=np,
                                           ramp_years=ramp_years))

    points = [c for c in changes if 0 < c < s]
    numeric, _ = integrate.quad(hazard, 0.0, s, points=points or None, limit=400)
    closed = relapse_cumhaz(np.array(s), lp, log_shape, log_scale, changes, log_hrs, lib=np, ramp_years=ramp_years)
    assert closed == pytest.approx(numeric, rel=1e-7)


def test_smoothing_leaves_the_cumulative_hazard_exact_away_from_the_change_point():
    """Five ramp widths before or after the change point the smoothed H is the exact one to within 2 %
    (relative; the ramp's tail e^-5 times the excess hazard), and at s = 0 both are 0."""
    args = (-0.3, math.log(1.2), math.log(0.75), [0.5], [math.log(3.0)])
    for s in (0.5 - 5 * STEP_RAMP_YEARS, 0.5 + 5 * STEP_RAMP_YEARS + 0.5, 3.0):
        smooth = relapse_cumhaz(np.array(s), *args, lib=np, ramp_years=STEP_RAMP_YEARS)
        exact = relapse_cumhaz(np.array(s), *args, lib=np)
        assert smooth == pytest.approx(exact, rel=2e-2), s
    assert relapse_cumhaz(np.array(0.0), *args, lib=np, ramp_years=STEP_RAMP_YEARS) == pytest.approx(0.0, abs=1e-12)


def test_inputs_link_responders_to_their_cart_rows(example_cohort, example_inputs):
    ji = example_inputs
    assert [ji.cart.patient_ids[i] for i in ji.cart_index] == ji.relapse.patient_ids
    assert ji.relapse.endpoint == "relapse" and ji.has_mrd
    out = example_cohort.outcomes.set_index("patient_id")
    np.testing.assert_array_equal(ji.response_day, out.loc[ji.relapse.patient_ids, "response_day"].to_numpy())
    # first detectable MRD in remission, by hand for one patient who has one
    mrd = example_cohort.mrd
    i = int(np.flatnonzero(ji.mrd_positive_years < NO_CHANGE)[0])
    pid = ji.relapse.patient_ids[i]
    rows = mrd[(mrd.patient_id == pid) & (mrd.censoring != "below_lod") & (mrd.day >= ji.response_day[i])]
    assert ji.mrd_positive_years[i] == pytest.approx((rows.day.min() - ji.response_day[i]) / 365.25)


def test_structure_and_association_switches(example_inputs):
    model = build_joint_model(example_inputs)
    free = {v.name for v in model.free_RVs}
    assert {"log_hr", "log_hr_per_log_cmax", "log_hr_cart_loss", "logit_cure", "cure_log_or", "theta_raw"} <= free
    assert "log_hr_mrd_recurrence" not in free
    none = build_joint_model(example_inputs, associations=(), variant="weibull")
    free = {v.name for v in none.free_RVs}
    assert not free & {"log_hr_per_log_cmax", "log_hr_cart_loss", "logit_cure"}
    with pytest.raises(ValueError, match="unknown association"):
        build_joint_model(example_inputs, associations=("cd19",))


def test_mrd_association_needs_mrd_data(tmp_path, example_cohort):
    import dataclasses

    no_mrd = dataclasses.replace(example_cohort, mrd=None)
    inputs = to_joint_inputs(no_mrd)
    with pytest.raises(ValueError, match=r"^the MRD association needs MRD data \(mrd.csv\), and this cohort has none$"):
        build_joint_model(inputs, associations=("mrd",))


def test_without_associations_the_joint_density_is_the_sum_of_the_separate_models(example_inputs):
    """With no association the joint log density factorizes: log p = log p_cart + log p_relapse at any
    point, so the joint posterior is the product of the separate posteriors."""
    joint = build_joint_model(example_inputs, associations=())
    kinetic = cart.build_cart_model(example_inputs.cart)
    relapse = build_joint_model(example_inputs, associations=(),
                                fixed_features={"log_cmax": np.zeros(example_inputs.n_responders),
                                                "loss_day": np.zeros(example_inputs.n_responders)})
    rng = np.random.default_rng(5)
    point = {k: v + 0.1 * rng.standard_normal(np.shape(v)) for k, v in joint.initial_point().items()}
    total = joint.compile_logp()(point)
    part_k = kinetic.compile_logp()({k: v for k, v in point.items() if k in kinetic.initial_point()})
    part_r = relapse.compile_logp()({k: v for k, v in point.items() if k in relapse.initial_point()})
    assert total == pytest.approx(part_k + part_r, rel=1e-10)


def test_brier_auc_and_calibration_by_hand():
    p = np.array([0.1, 0.2, 0.8, 0.9, 0.5, 0.5])
    y = np.array([0, 0, 1, 1, 1, 0], bool)
    out = brier_and_auc(p, y)
    assert out["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01 + 0.25 + 0.25) / 6)
    # pairs (pos, neg): 3 x 3 = 9; pos 0.8 and 0.9 beat all three; pos 0.5 beats 0.1, 0.2 and ties 0.5
    assert out["auc"] == pytest.approx((3 + 3 + 2 + 0.5) / 9)
    table = calibration_table(p, y, bins=2)
    assert table["n"].tolist() == [3, 3]
    assert table["observed"].tolist() == pytest.approx([1 / 3, 2 / 3])


def test_landmark_eligibility_follows_the_outcomes(example_cohort):
    eligible = eligible_at_landmark(example_cohort, 90.0)
    out = example_cohort.outcomes.set_index("patient_id")
    for pid in eligible["patient_id"]:
        row = out.loc[pid]
        assert row["response"] in ("CR", "CRi")
        for col in ("relapse_day", "death_day", "hsct_day"):
            assert not row[col] <= 90
        assert row["last_followup_day"] >= 90


# --------------------------------------------------------------------------- one small fit, CLI and predict


@pytest.fixture(scope="module")
def small_run(joint_cli_run):
    """(cohort, run) folders of the session's shared tiny joint fit (``conftest.joint_cli_run``); read only."""
    return joint_cli_run


def test_fit_joint_writes_the_estimands(small_run):
    run = load_run(small_run[1])
    est = run.summary["estimands"]
    for name in ("hazard_ratio_total", "hazard_ratio_direct", "hazard_ratio_indirect", "proportion_mediated",
                 "log_hr_per_log_cmax", "log_hr_cart_loss", "cure_fraction_difference"):
        assert name in est, name
    # direct = exp(log_hr) exactly (module docstring)
    log_hr = run.posterior["posterior"]["log_hr"].to_numpy().ravel()
    assert est["hazard_ratio_direct"]["median"] == pytest.approx(float(np.median(np.exp(log_hr))), rel=1e-9)
    total, direct, indirect = (est[k]["median"] for k in ("hazard_ratio_total", "hazard_ratio_direct",
                                                          "hazard_ratio_indirect"))
    assert 0.05 < total < 20 and 0.05 < indirect < 20 and 0.05 < direct < 20


def test_predict_cli_writes_probabilities(small_run, capsys, tmp_path):
    cohort_dir, run_dir = small_run
    out = tmp_path / "preds.csv"
    code = main(["predict", str(run_dir), "--patient-data", str(cohort_dir),
                 "--landmark-day", "90", "--horizons", "365,730", "--out", str(out)])
    assert code == 0, capsys.readouterr().out
    table = pd.read_csv(out)
    cohort = load_cohort(cohort_dir)
    assert table["patient_id"].tolist() == eligible_at_landmark(cohort, 90.0)["patient_id"].tolist()
    for h in ("365", "730"):
        p, lo, hi = (table[f"p_relapse_by_{h}d{s}"] for s in ("", "_lo", "_hi"))
        assert ((0 <= p) & (p <= 1)).all() and (lo <= p + 1e-12).all() and (p <= hi + 1e-12).all()
    assert (table["p_relapse_by_730d"] >= table["p_relapse_by_365d"] - 1e-12).all()  # risk grows with time


def test_predict_refuses_a_horizon_before_the_landmark(small_run, capsys):
    code = main(["predict", str(small_run[1]), "--patient-data", str(small_run[0]),
                 "--landmark-day", "400", "--horizons", "365"])
    assert code == 2
    assert "every horizon must come after the landmark day 400; got [365.0]" in capsys.readouterr().out


def test_predict_refuses_a_run_of_another_model(tmp_path, capsys):
    folder = simulate_trial(30, seed=5, with_truth=False).write(tmp_path / "cohort")
    assert main(["fit", "durability", "--data", str(folder), "--out", str(tmp_path / "run"), "--chains", "1",
                 "--tune", "50", "--draws", "50", "--no-figures"]) == 0
    capsys.readouterr()
    code = main(["predict", str(tmp_path / "run"), "--patient-data", str(folder)])
    assert code == 2
    assert "toolkit predict needs a joint-model run, and this run is a 'durability' fit" in capsys.readouterr().out


def test_mrd_positivity_after_the_end_of_follow_up_is_not_used(example_cohort, example_inputs):
    """toolkit predict truncates follow-up at the landmark; a detection on or after the end does not count."""
    from toolkit.data.joint_inputs import first_mrd_positive_years

    ji = example_inputs
    i = int(np.flatnonzero(ji.mrd_positive_years < NO_CHANGE)[0])
    pid, start, first = ji.relapse.patient_ids[i], ji.response_day[i:i + 1], ji.mrd_positive_years[i]
    kept, _ = first_mrd_positive_years(example_cohort, [pid], start, np.array([first + 1e-9]))
    cut, _ = first_mrd_positive_years(example_cohort, [pid], start, np.array([first]))
    assert kept[0] == pytest.approx(first) and cut[0] > first


# --------------------------------------------------------------------------- the MRD submodel (mrd_clearance)


@pytest.fixture(scope="module")
def mrd_inputs(example_cohort):
    return to_joint_inputs(example_cohort, mrd_submodel=True)


def test_mrd_submodel_structure(mrd_inputs):
    model = build_joint_model(mrd_inputs, associations=("log_cmax", "cart_loss", "mrd_clearance"))
    free = {v.name for v in model.free_RVs}
    assert {"log_hr_per_log_clearance", "mrd::log_clearance_low", "mrd::clearance_log_ratio", "mrd::clearance_z",
            "theta_raw"} <= free
    assert {"log_clearance_responder", "mrd::log_clearance"} <= {v.name for v in model.deterministics}
    # every responder of the example has MRD assessments, in the MRD inputs' order
    assert (mrd_inputs.mrd_index >= 0).all()
    assert [mrd_inputs.mrd.patient_ids[i] for i in mrd_inputs.mrd_index] == mrd_inputs.relapse.patient_ids


def test_mrd_clearance_needs_the_mrd_submodel_inputs(example_inputs):
    with pytest.raises(ValueError, match=r"^the mrd_clearance association needs the MRD submodel: build the inputs "
                                         r"with to_joint_inputs\(cohort, mrd_submodel=True\) from a cohort with "
                                         r"mrd.csv$"):
        build_joint_model(example_inputs, associations=("mrd_clearance",))


def test_with_the_clearance_association_at_zero_the_density_is_the_sum_of_the_three_models(mrd_inputs):
    """log p_joint(point with log_hr_per_log_clearance = 0) = log p_cart + log p_mrd + log p_relapse
    + log N(0 | prior of the association): the MRD submodel is exactly the MRD model, and an association
    fixed at zero links nothing."""
    from scipy import stats

    from toolkit.models.joint import JointPriors
    from toolkit.models.mrd import build_mrd_model

    joint = build_joint_model(mrd_inputs, associations=("mrd_clearance",))
    kinetic = cart.build_cart_model(mrd_inputs.cart)
    mrd_alone = build_mrd_model(mrd_inputs.mrd)
    relapse = build_joint_model(mrd_inputs, associations=(),
                                fixed_features={"log_cmax": np.zeros(mrd_inputs.n_responders),
                                                "loss_day": np.zeros(mrd_inputs.n_responders)})
    rng = np.random.default_rng(6)
    point = {k: v + 0.1 * rng.standard_normal(np.shape(v)) for k, v in joint.initial_point().items()}
    point["log_hr_per_log_clearance"] = np.array(0.0)
    total = joint.compile_logp()(point)
    part_k = kinetic.compile_logp()({k: v for k, v in point.items() if k in kinetic.initial_point()})
    part_m = mrd_alone.compile_logp()({k.removeprefix("mrd::"): v for k, v in point.items() if k.startswith("mrd::")})
    part_r = relapse.compile_logp()({k: v for k, v in point.items() if k in relapse.initial_point()})
    prior = stats.norm(*JointPriors().log_hr_per_log_clearance).logpdf(0.0)
    assert total == pytest.approx(part_k + part_m + part_r + prior, rel=1e-10)


def test_simulated_mrd_pathway_truth_is_the_kill_rate_ratio_to_the_power_of_the_association():
    """With eta additive in g log k and k independent of the CAR-T kinetics, the MRD part of the indirect
    effect is E[k_1^g] / E[k_0^g] = clearance_rate_ratio^g for log-normal k of equal spread."""
    from toolkit.simulate import Effects, TrialParameters, compute_truth

    truth = compute_truth(Effects(), TrialParameters(log_hr_per_log_clearance=-0.5))
    assert truth["log_hr_per_log_clearance"] == -0.5
    assert truth["hazard_ratio_indirect_mrd"] == pytest.approx(1.3 ** -0.5, rel=0.03)
    assert truth["hazard_ratio_indirect"] == pytest.approx(
        truth["hazard_ratio_indirect_cart"] * truth["hazard_ratio_indirect_mrd"], rel=1e-12)
    default = compute_truth(Effects())
    assert default["hazard_ratio_indirect_mrd"] == 1.0
