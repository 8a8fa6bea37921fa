"""Trial design and interim decisions (toolkit.design): spec validation, calendar-time censoring, the rule,
operating characteristics with Monte Carlo error, interim patient states, the analytic check, CLI exit codes.

No test here samples with MCMC: the analytic rule (conjugate exponential) stands in for the model, and the
interim imputation runs on a hand-made posterior. The model path is exercised by the benchmark and by
``test_interim_brute_force_agrees`` (slow)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from toolkit.design.interim import (InterimError, approximate_q, check_cohort, current_state,
                                    impute_completed_trials, km_at)
from toolkit.design.operating import (NOT_REACHED, exponential_jeffreys, mean_se, operating_characteristics,
                                      proportion, run_trial, trial_outcomes)
from toolkit.design.spec import DesignError, load_design
from toolkit.design.trials import censor_at, write_cut
from toolkit.simulate import SimulatedTrial
from toolkit.testing import run_cli

REPO = Path(__file__).resolve().parents[1]
PRIMARY = REPO / "models" / "design_primary.toml"
CHECK = REPO / "models" / "design_check_exponential.toml"


def _write(tmp_path, text: str, name="d.toml") -> Path:
    base = CHECK.read_text()
    path = tmp_path / name
    path.write_text(text(base) if callable(text) else text)
    return path


# --------------------------------------------------------------------------- spec


def test_shipped_designs_load():
    d = load_design(PRIMARY)
    assert d.probability_key == "prob_rfs_365d_difference_above_0"
    assert d.max_patients == 60 and len(d.looks) == 1 and d.looks[0].patients == 40
    assert [s.name for s in d.scenarios] == ["no_effect", "hypothesised", "harmful"]
    assert load_design(CHECK).analysis_spec is None


@pytest.mark.parametrize("edit, message", [
    (lambda b: b.replace('estimand = "hazard_ratio"', 'estimand = "cure_fraction_difference"'),
     r"P\(cure_fraction_difference below 1\) is not produced by the analysis exponential_jeffreys: it reports "
     r"prob_hr_below_1, prob_hr_below_0.7"),
    (lambda b: b + '\n[[looks]]\nname = "late"\npatients = 80\n',
     r"\[\[looks\]\] number 1 is at patient 80, beyond the maximum sample size 60"),
    (lambda b: b.replace("[accrual]", "[accrual]\nspeed = 3"), r"unknown key\(s\) speed in \[accrual\]"),
    (lambda b: b + "\n[extras]\nx = 1\n", r"unknown key\(s\) extras in the file; valid: "),
    (lambda b: b + '\n[[looks]]\nname = "both"\npatients = 20\nevents = 10\n',
     r"needs exactly one of patients, events or day"),
    (lambda b: b.replace("hazard_ratio_direct = 0.5", "hazard_ratio_direct = -1"),
     r"\[\[scenarios\]\] number 2 effects: effect hazard_ratio_direct must be a positive ratio"),
    (lambda b: b.replace("cure_fraction = 0.0, weibull", "cure_fractions = 0.0, weibull", 1),
     r"unknown key\(s\) cure_fractions in \[\[scenarios\]\] number 1 parameters"),
    (lambda b: b.replace("success_probability = 0.975", "success_probability = 1.5"),
     r"\[rule\] success_probability must be a probability between 0 and 1, got 1.5"),
    (lambda b: b.replace('"exponential_jeffreys"', '"models/nope.toml"'),
     r"\[analysis\] spec: .*nope.toml: spec file not found"),
])
def test_bad_design_is_refused_with_the_key_and_fix(tmp_path, edit, message):
    with pytest.raises(DesignError, match=message):
        load_design(_write(tmp_path, edit))


def test_rule_on_the_primary_model_must_be_a_reported_probability(tmp_path):
    text = PRIMARY.read_text().replace('estimand = "rfs_365d_difference"', 'estimand = "rfs_1000d_difference"')
    with pytest.raises(DesignError, match=r"prob_rfs_1000d_difference_above_0|rfs_1000d_difference above 0\) is not "
                                          r"produced .* prob_rfs_365d_difference_above_0"):
        load_design(_write(tmp_path, text))


# --------------------------------------------------------------------------- calendar time


def _hand_trial() -> SimulatedTrial:
    """Four patients: a relapse on day 200, a death in remission on day 90, a non-responder, an HSCT."""
    ids = ["P001", "P002", "P003", "P004"]
    patients = pd.DataFrame({"patient_id": ids, "arm": ["CAR-T", "IFN-a + CAR-T", "CAR-T", "IFN-a + CAR-T"]})
    outcomes = pd.DataFrame({
        "patient_id": ids, "response": ["CR", "CRi", "NR", "CR"], "response_day": ["28", "28", "", "28"],
        "relapse_day": ["200", "", "", ""], "relapse_cd19": ["negative", "", "", ""],
        "hsct_day": ["", "", "", "100"], "death_day": ["400", "90", "150", ""],
        "last_followup_day": ["400", "90", "150", "900"]})
    cart = pd.DataFrame({"patient_id": ["P001", "P001"], "day": [7, 301], "value": ["1000", "60"],
                         "lloq": ["50", "50"], "unit": ["copies/ug", "copies/ug"]})
    mrd = pd.DataFrame(columns=["patient_id", "day", "mrd_pct", "lod_pct", "loq_pct", "method", "specimen"])
    study = {"name": "hand", "control_arm": "CAR-T", "experimental_arm": "IFN-a + CAR-T"}
    return SimulatedTrial(study, patients, outcomes, cart, mrd, pd.DataFrame(index=ids))


def test_a_look_sees_only_the_follow_up_accrued_by_its_date(tmp_path):
    from toolkit.data import load_cohort

    enrol = np.array([0.0, 50.0, 100.0, 290.0])
    cut, counts = censor_at(_hand_trial(), enrol, 300.0)  # followed 300, 250, 200, 10 days
    assert counts == {"enrolled": 4, "analysed": 3}  # P004: 10 days on study, response not yet assessed
    o = cut.outcomes.set_index("patient_id")
    assert list(o.index) == ["P001", "P002", "P003"]
    assert o.loc["P001", ["relapse_day", "relapse_cd19", "death_day", "last_followup_day"]].tolist() == \
        ["200", "negative", "", "300"]  # relapse seen, death on day 400 not yet
    assert o.loc["P002", ["death_day", "last_followup_day"]].tolist() == ["90", "90"]
    assert o.loc["P003", ["death_day", "last_followup_day"]].tolist() == ["150", "150"]
    assert cut.cart_kinetics["day"].tolist() == [7]  # the day-301 sample is after P001's 300 days on study
    cut2, counts2 = censor_at(_hand_trial(), enrol, 120.0)  # 120, 70, 20, -170 days
    assert counts2 == {"enrolled": 3, "analysed": 2}
    o2 = cut2.outcomes.set_index("patient_id")
    assert o2.loc["P001", ["relapse_day", "relapse_cd19", "death_day", "last_followup_day"]].tolist() == \
        ["", "", "", "120"]
    write_cut(cut, tmp_path / "look")
    assert len(load_cohort(tmp_path / "look").patients) == 3  # the cut cohort validates


# --------------------------------------------------------------------------- the rule and its aggregation


def _results(rows):
    cols = ["scenario", "trial", "look", "look_name", "day", "enrolled", "q", "estimate", "converged", "error"]
    frame = pd.DataFrame(rows, columns=cols)
    frame["analysed"] = frame["enrolled"]
    return frame


def _posterior_boundaries(tmp_path) -> Path:
    """The primary design with its interim boundaries on the posterior probability (q > 0.99, q < 0.10)."""
    text = PRIMARY.read_text().replace("interim_success_pos = 0.99", "interim_success = 0.99").replace(
        "interim_futility_pos = 0.05", "interim_futility = 0.10")
    return _write(tmp_path, text, "posterior.toml")


def test_the_rule_stops_at_the_first_boundary_and_counts_flip_flops(tmp_path):
    d = load_design(_posterior_boundaries(tmp_path))  # interim: success q > 0.99, futility q < 0.10; final q > 0.95
    assert d.boundary == "posterior" and d.boundary_column == "q"
    rows = [
        ("s", 0, 0, "i", 600, 40, 0.995, 0.2, True, ""), ("s", 0, 1, "final", 1000, 60, 0.90, 0.1, True, ""),
        ("s", 1, 0, "i", 600, 40, 0.05, -0.1, True, ""), ("s", 1, 1, "final", 1000, 60, 0.97, 0.1, True, ""),
        ("s", 2, 0, "i", 600, 40, 0.50, 0.0, False, ""), ("s", 2, 1, "final", 1000, 60, 0.96, 0.05, True, ""),
        ("s", 3, 0, "i", 600, 40, math.nan, math.nan, False, "ValueError: x"),
        ("s", 3, 1, "final", 1000, 60, 0.20, 0.0, True, ""),
        ("s", 4, 0, "i", 600, 40, 0.50, 0.0, True, ""), ("s", 4, 1, "final", 1000, 60, math.nan, math.nan, False,
                                                          "RuntimeError: y"),
    ]
    out = trial_outcomes(d, _results(rows)).set_index("trial")
    assert out["decision"].tolist() == ["success", "futility", "success", "failure", "error"]
    assert out["n"].tolist() == [40, 40, 60, 60, 60]
    assert out["flip_flop"].tolist() == [True, False, False, False, False]
    assert out.loc[2, "not_converged_fits"] == 1 and out.loc[3, "failed_fits"] == 1


def test_predictive_boundaries_stop_on_the_pos_not_on_q():
    d = load_design(PRIMARY)  # interim: success PoS > 0.99, futility PoS < 0.05; final: q > 0.95
    assert d.boundary == "predictive" and d.boundary_column == "pos" and d.pos_imputations == 200
    rows = [  # q alone would stop trial 0 for success and trial 1 for futility; the PoS decides
        ("s", 0, 0, "i", 600, 40, 0.995, 0.2, True, ""), ("s", 0, 1, "final", 1000, 60, 0.90, 0.1, True, ""),
        ("s", 1, 0, "i", 600, 40, 0.05, -0.1, True, ""), ("s", 1, 1, "final", 1000, 60, 0.97, 0.1, True, ""),
        ("s", 2, 0, "i", 600, 40, 0.90, 0.1, True, ""), ("s", 2, 1, "final", 1000, 60, 0.50, 0.0, True, ""),
        ("s", 3, 0, "i", 600, 40, 0.50, 0.0, True, ""), ("s", 3, 1, "final", 1000, 60, 0.20, 0.0, True, "")]
    frame = _results(rows)
    frame["pos"] = [0.60, math.nan, 0.30, math.nan, 0.995, math.nan, 0.02, math.nan]
    out = trial_outcomes(d, frame).set_index("trial")
    assert out["decision"].tolist() == ["failure", "success", "success", "futility"]
    assert out["flip_flop"].tolist() == [False, False, True, False]
    # a study stored without the PoS column takes no interim decision under predictive boundaries
    assert trial_outcomes(d, _results(rows))["decision"].tolist() == ["failure", "success", "failure", "failure"]
    from toolkit.design.report import sentences

    text = " ".join(sentences(d, operating_characteristics(d, frame, {"s": 0.0})))
    assert "predictive probability of success" in text and "boundaries on the predictive probability" in text


@pytest.mark.parametrize("edit, message", [
    (lambda b: b.replace("interim_futility_pos = 0.05", "interim_futility_pos = 0.05\ninterim_futility = 0.1"),
     r"\[rule\] has boundaries on the posterior probability \(interim_futility\) and on the predictive "
     r"probability \(interim_success_pos, interim_futility_pos\); keep one kind"),
    (lambda b: b.replace("interim_futility_pos = 0.05", "interim_futility_pos = 1.2"),
     r"\[rule\] interim_futility_pos must be a probability between 0 and 1, got 1.2"),
    (lambda b: b.replace("interim_futility_pos = 0.05", "interim_futility_pos = 0.995"),
     r"interim_futility_pos \(0.995\) must be below interim_success_pos \(0.99\)"),
    (lambda b: b.replace("pos_imputations = 200", "pos_imputations = 0"),
     r"\[simulation\] pos_imputations must be a positive whole number, got 0"),
])
def test_bad_predictive_boundaries_are_refused(tmp_path, edit, message):
    with pytest.raises(DesignError, match=message):
        load_design(_write(tmp_path, edit(PRIMARY.read_text())))


def test_predictive_boundaries_need_a_model_analysis(tmp_path):
    with pytest.raises(DesignError, match=r"interim_futility_pos: boundaries on the predictive probability need a "
                                          r"model analysis"):
        load_design(_write(tmp_path, lambda b: b.replace("success_probability = 0.975",
                                                         "success_probability = 0.975\ninterim_futility_pos = 0.05")))


def test_operating_characteristics_with_monte_carlo_error(tmp_path):
    d = load_design(_posterior_boundaries(tmp_path))
    rows = []
    for t in range(10):  # 3 interim successes, 2 futility stops, 2 final successes, 3 final failures
        q_i = 0.995 if t < 3 else 0.05 if t < 5 else 0.5
        q_f = 0.97 if t in (5, 6) else 0.5
        rows += [("no_effect", t, 0, "i", 600.0, 40, q_i, 0.1, True, ""),
                 ("no_effect", t, 1, "final", 1000.0, 60, q_f, 0.0, True, "")]
    oc = operating_characteristics(d, _results(rows), {"no_effect": 0.0}).set_index("scenario")
    r = oc.loc["no_effect"]
    assert r["p_success"] == pytest.approx(0.5) and r["p_success_se"] == pytest.approx(math.sqrt(0.25 / 10))
    assert r["p_stop_success_1"] == pytest.approx(0.3) and r["p_stop_futility_1"] == pytest.approx(0.2)
    assert r["expected_n"] == pytest.approx(0.5 * 40 + 0.5 * 60)
    assert r["p_flip_flop"] == pytest.approx(0.3)  # the three interim successes fail at the final
    assert r["bias_at_stop"] == pytest.approx(0.05)  # 0.1 at the five interim stops, 0 at the final
    assert proportion(0, 0)[0] != proportion(0, 0)[0]  # NaN without trials
    assert mean_se([1.0, 3.0]) == pytest.approx((2.0, 1.0))


# --------------------------------------------------------------------------- the independent check


def test_conjugate_rule_matches_the_beta_identity():
    """P(HR < 1) for Gamma(d+1/2, T) rates is the incomplete beta; check against Monte Carlo draws."""
    tte = pd.DataFrame({"arm": [0] * 5 + [1] * 5, "time": [1.0, 2, 3, 4, 5, 2, 4, 6, 8, 10],
                        "event": [1, 1, 1, 0, 1, 1, 0, 1, 0, 0]})
    q = exponential_jeffreys(tte)["q"]
    rng = np.random.default_rng(1)
    l0, l1 = rng.gamma(4.5, 1 / 15, 400_000), rng.gamma(2.5, 1 / 30, 400_000)
    assert q == pytest.approx(np.mean(l1 < l0), abs=0.003)


def _check_study(n_trials: int):
    d = load_design(CHECK)
    recs = [run_trial(d, i, t)["rows"][-1] for i in range(2) for t in range(n_trials)]
    return d, pd.DataFrame(recs)


def _schoenfeld_agreement(n_trials: int) -> None:
    """No effect: P(success) = 1 - 0.975; HR 0.5: Phi(|log 0.5| sqrt(D/4) - z_0.975) averaged over the
    trials' event counts D (Schoenfeld 1981). Both within 3 Monte Carlo SE."""
    d, res = _check_study(n_trials)
    z = stats.norm.ppf(d.success_probability)
    null = res[res["scenario"] == "no_effect"]
    p0, se0 = proportion((null["q"] > d.success_probability).sum(), len(null))
    assert abs(p0 - 0.025) < 3 * math.sqrt(0.025 * 0.975 / len(null)), (p0, se0)
    alt = res[res["scenario"] == "hr_0.5"]
    p1, se1 = proportion((alt["q"] > d.success_probability).sum(), len(alt))
    predicted = np.mean(stats.norm.cdf(abs(math.log(0.5)) * np.sqrt(alt["events"] / 4) - z))
    assert abs(p1 - predicted) < 3 * se1, (p1, predicted, se1)


def test_type_i_error_and_power_agree_with_schoenfeld():
    """The independent check at 80 trials a scenario (10-25 s on the shared machine; the slow test runs 1000)."""
    _schoenfeld_agreement(80)


@pytest.mark.slow
def test_type_i_error_and_power_agree_with_schoenfeld_1000_trials():
    _schoenfeld_agreement(1000)


def test_the_check_flags_an_analysis_that_ignores_censoring():
    """The same agreement test fails when censored follow-up is counted as events (information lost)."""
    from toolkit.data import Cohort
    from toolkit.data.endpoints import time_to_event
    from toolkit.design.trials import simulate_calendar_trial, final_day

    d = load_design(CHECK)
    z = stats.norm.ppf(d.success_probability)
    success, pred = [], []
    for t in range(80):
        sim, enrol = simulate_calendar_trial(d, d.scenarios[1], 1, t)
        cut, _ = censor_at(sim, enrol, final_day(d, enrol))
        o = cut.outcomes.copy()
        for c in ("response_day", "relapse_day", "hsct_day", "death_day", "last_followup_day"):
            o[c] = pd.to_numeric(o[c], errors="coerce")
        tte = time_to_event(Cohort(Path("."), cut.study, cut.patients, o), endpoint="rfs")
        tte["event"] = 1  # the broken analysis
        r = exponential_jeffreys(tte)
        success.append(r["q"] > d.success_probability)
        pred.append(stats.norm.cdf(abs(math.log(0.5)) * math.sqrt(r["events"] / 4) - z))
    p, se = proportion(sum(success), len(success))
    assert abs(p - np.mean(pred)) > 3 * se


# --------------------------------------------------------------------------- interim


def _cohort(tmp_path, outcomes_rows, name="interim"):
    from toolkit.data import load_cohort
    from toolkit.data.io import write_study

    folder = tmp_path / name
    folder.mkdir()
    write_study(folder, {"name": "in progress", "control_arm": "CAR-T", "experimental_arm": "IFN-a + CAR-T"})
    ids = [r[0] for r in outcomes_rows]
    arms = ["CAR-T" if i % 2 == 0 else "IFN-a + CAR-T" for i in range(len(ids))]
    pd.DataFrame({"patient_id": ids, "arm": arms}).to_csv(folder / "patients.csv", index=False)
    pd.DataFrame(outcomes_rows, columns=["patient_id", "response", "response_day", "relapse_day", "relapse_cd19",
                                         "hsct_day", "death_day", "last_followup_day"]).to_csv(
        folder / "outcomes.csv", index=False)
    return load_cohort(folder)


ROWS = [("P001", "CR", 28, 100, "positive", None, None, 150),  # relapsed: fixed
        ("P002", "CR", 28, None, None, None, None, 300),  # in remission 272 days after response: open
        ("P003", "NR", None, None, None, None, 60, 60),  # non-responder: fixed
        ("P004", "CR", 28, None, None, 80, None, 400),  # HSCT in remission: censored at HSCT, fixed
        ("P005", "CRi", 28, None, None, None, 200, 200),  # death in remission: fixed
        ("P006", "CR", 28, None, None, None, None, 40)]  # in remission 12 days: open


def test_interim_state_of_each_patient(tmp_path):
    s = current_state(_cohort(tmp_path, ROWS)).set_index("patient_id")
    assert s["open"].tolist() == [False, True, False, False, False, True]
    assert s["time"].tolist() == [72.0, 272.0, 0.0, 52.0, 172.0, 12.0]
    assert s["cause"].tolist() == ["relapse", "", "", "", "death", ""]


class _FakeFit:
    """A posterior by hand: Weibull relapse (shape 1, scale 1 year) with cure fraction pi, NRM negligible;
    ``log_hr`` and ``cure_log_or`` the experimental arm's effects."""

    def __init__(self, logit_cure: float, n: int = 400, log_hr: float = 0.0, cure_log_or: float = 0.0):
        import xarray as xr

        def v(x):
            return (("chain", "draw"), np.full((1, n), x))

        self.posterior = {"posterior": xr.Dataset({
            "log_shape": v(0.0), "log_scale_years": v(0.0), "log_hr": v(log_hr), "logit_cure": v(logit_cure),
            "cure_log_or": v(cure_log_or), "death_log_shape": v(0.0), "death_log_scale_years": v(12.0),
            "log_hr_death": v(0.0), "logit_response": v(2.0), "response_log_or": v(0.0)})}

        class Inputs:
            covariates: list = []
            x_std = np.zeros((1, 0))

        self.inputs = Inputs()


def test_imputation_respects_states_and_conditional_survival(tmp_path):
    cohort = _cohort(tmp_path, ROWS)
    d = load_design(PRIMARY)
    state = current_state(cohort)
    trials = impute_completed_trials(_FakeFit(logit_cure=0.0), state, d, imputations=200, seed=3)
    assert all(len(t) == d.max_patients for t in trials)
    fixed = ~state["open"].to_numpy()
    for t in trials[:50]:
        head = t.iloc[: len(state)]
        assert (head.loc[fixed, ["time", "event", "cause"]].to_numpy() == state.loc[fixed, ["time", "event",
                                                                                          "cause"]].to_numpy()).all()
        assert (head.loc[~fixed, "time"].to_numpy() >= state.loc[~fixed, "time"].to_numpy()).all()
    # P002 in remission 272 days: P(event by 272 + F) = 1 - S(272 + F) / S(272), S = 0.5 + 0.5 exp(-t/365.25)
    ev = np.array([t.iloc[1]["event"] for t in trials])
    f = np.array([t.attrs["final_days_after_cut"] for t in trials])
    S = lambda x: 0.5 + 0.5 * np.exp(-x / 365.25)  # noqa: E731
    expected = np.mean(1 - S(272 + f) / S(272))
    assert abs(ev.mean() - expected) < 3 * math.sqrt(expected * (1 - expected) / len(ev))
    # nearly everyone cured: open patients stay event-free
    cured = impute_completed_trials(_FakeFit(logit_cure=12.0), state, d, imputations=20, seed=4)
    assert not any(t.loc[state["open"].to_numpy().nonzero()[0], "event"].any() for t in cured)


# 24 responders followed 200-300 days, arms alternating (control first): 4 control relapses, 1 experimental
LOOK_ROWS = [(f"P{i + 1:03d}", "CR", 28, (120 + i if i in (0, 4, 8, 12, 5) else None),
              ("positive" if i in (0, 4, 8, 12, 5) else None), None, None, 200 + 4 * i) for i in range(24)]


def test_look_pos_is_high_for_a_clear_benefit_and_flags_the_wrong_arm(tmp_path, monkeypatch):
    """The PoS at a look (the function every interim look of a design study calls) under a posterior with a
    clear benefit (experimental: hazard ratio 0.1, cure odds ratio 20) is near 1 and near 0 for the same harm;
    a broken variant that computes the final rule against the wrong arm is flagged by the same check."""
    import toolkit.design.interim as interim

    cohort = _cohort(tmp_path, LOOK_ROWS)
    d = load_design(PRIMARY)
    benefit, harm = _FakeFit(0.0, log_hr=math.log(0.1), cure_log_or=3.0), _FakeFit(0.0, log_hr=math.log(10),
                                                                                       cure_log_or=-3.0)

    def check():
        pos, se, _ = interim.look_predictive_probability(cohort, d, benefit, imputations=200, seed=5)
        low, _, _ = interim.look_predictive_probability(cohort, d, harm, imputations=200, seed=5)
        assert se == pytest.approx(math.sqrt(pos * (1 - pos) / 200))
        assert pos > 0.9 and low < 0.1, (pos, low)

    check()
    # the design's look PoS is this function with the design's imputations
    from toolkit.design.operating import _look_pos

    look = _look_pos(d, cohort, benefit, seed=5)
    assert look["pos"] == interim.look_predictive_probability(cohort, d, benefit, imputations=200, seed=5)[0]
    assert look["pos_imputations"] == 200
    right = interim.approximate_q
    monkeypatch.setattr(interim, "approximate_q", lambda design, t: right(design, t.assign(arm=1 - t["arm"])))
    with pytest.raises(AssertionError):
        check()


def test_every_interim_look_of_a_trial_records_its_pos(tmp_path, monkeypatch):
    """run_trial stores the PoS (and its MC SE) next to q at each interim look, none at the final analysis."""
    import toolkit.design.operating as operating
    from toolkit.data import load_cohort

    calls = []

    def fake_analysis(design, cut, *, workdir, look_seed, overrides):
        folder = Path(workdir) / f"look{len(calls)}"
        write_cut(cut, folder)
        calls.append(look_seed)
        return ({"q": 0.5, "estimate": 0.0, "converged": True}, _FakeFit(0.0, log_hr=math.log(0.1), cure_log_or=3.0),
                load_cohort(folder))

    monkeypatch.setattr(operating, "_analyse_model", fake_analysis)
    d = load_design(PRIMARY)
    rows = pd.DataFrame(run_trial(d, 1, 0, workdir=str(tmp_path))["rows"]).set_index("look_name")
    assert len(calls) == 2
    interim_row = rows.loc[d.looks[0].name]
    assert 0 <= interim_row["pos"] <= 1 and interim_row["pos_imputations"] == 200
    assert interim_row["pos_mc_se"] == pytest.approx(math.sqrt(interim_row["pos"] * (1 - interim_row["pos"]) / 200))
    assert math.isnan(rows.loc["final", "pos"])


def test_approximate_final_rule_uses_km_and_greenwood():
    from toolkit.survival import kaplan_meier, survival_at

    t = np.array([10.0, 50, 50, 120, 200, 400, 400, 500])
    e = np.array([1, 1, 0, 1, 0, 1, 0, 0], bool)
    s, v = km_at(t, e, 365)
    assert s == pytest.approx(float(survival_at(kaplan_meier(t, e), [365])[0]))
    assert v == pytest.approx(s**2 * (1 / (8 * 7) + 1 / (7 * 6) + 1 / (5 * 4)))
    d = load_design(PRIMARY)
    trial = pd.DataFrame({"arm": [0] * 8 + [1] * 8, "responder": True, "response_day": 28.0,
                          "time": np.concatenate([t, t + 1000]), "event": np.concatenate([e, np.zeros(8, bool)])})
    s0, v0 = km_at(t, e, 365)
    assert approximate_q(d, trial) == pytest.approx(stats.norm.cdf((1 - s0) / math.sqrt(v0)))


def test_interim_cohort_larger_than_the_design_is_refused(tmp_path):
    rows = [(f"P{i:03d}", "CR", 28, None, None, None, None, 100) for i in range(1, 62)]
    with pytest.raises(InterimError, match=r"has 61 patients, more than the design's maximum of 60"):
        check_cohort(_cohort(tmp_path, rows), load_design(PRIMARY))


# --------------------------------------------------------------------------- CLI


def test_cli_design_runs_the_check_and_writes_its_outputs(tmp_path, monkeypatch):
    import toolkit.design.operating as operating

    monkeypatch.setattr(operating, "scenario_truth", lambda design: {"no_effect": 1.0, "hr_0.5": 0.5})
    code, text = run_cli(["design", CHECK, "--trials", "4", "--out", tmp_path / "oc", "--workers", "0"])
    assert code == 0, text
    for name in ("operating_characteristics.csv", "operating_characteristics.md", "figure.png", "design.html"):
        assert (tmp_path / "oc" / name).exists()
    assert "type I error" in text and "the power" in text
    assert len(list((tmp_path / "oc" / "trials").glob("*.parquet"))) == 8
    code, text = run_cli(["design", CHECK, "--trials", "5", "--out", tmp_path / "oc", "--workers", "0", "--resume"])
    assert code == 0 and "5 trial(s)" in text
    assert len(list((tmp_path / "oc" / "trials").glob("*.parquet"))) == 10
    code, text = run_cli(["design", CHECK, "--trials", "4", "--out", tmp_path / "oc", "--workers", "0"])
    assert code == 2 and "already exists and is not empty" in text


def test_cli_design_and_interim_errors_exit_2(tmp_path):
    bad = _write(tmp_path, lambda b: b + '\n[[looks]]\nname = "late"\npatients = 61\n')
    code, text = run_cli(["design", bad, "--trials", "2", "--out", tmp_path / "x"])
    assert code == 2 and "beyond the maximum sample size 60" in text and "Traceback" not in text
    code, text = run_cli(["design", CHECK, "--trials", "0", "--out", tmp_path / "y"])
    assert code == 2 and "--trials must be a positive number" in text
    both = _write(tmp_path, PRIMARY.read_text().replace("interim_futility_pos = 0.05", "interim_futility = 0.1"),
                  "both.toml")
    code, text = run_cli(["design", both, "--trials", "2", "--out", tmp_path / "b"])
    assert code == 2 and "keep one kind" in text and "Traceback" not in text
    rows = [(f"P{i:03d}", "CR", 28, None, None, None, None, 100) for i in range(1, 62)]
    cohort = _cohort(tmp_path, rows)
    code, text = run_cli(["interim", cohort.path, "--design", PRIMARY, "--out", tmp_path / "z"])
    assert code == 2 and "more than the design's maximum of 60" in text
    small = _cohort(tmp_path, ROWS, name="small")
    code, text = run_cli(["interim", small.path, "--design", CHECK, "--out", tmp_path / "w"])
    assert code == 2 and "needs a model analysis" in text
    quiet = _cohort(tmp_path, [(f"P{i:03d}", "CR", 28, None, None, None, None, 100) for i in range(1, 5)], "quiet")
    code, text = run_cli(["interim", quiet.path, "--design", PRIMARY, "--out", tmp_path / "v"])
    assert code == 2 and "no relapses or deaths in remission" in text and "Traceback" not in text


@pytest.mark.slow
def test_interim_brute_force_agrees(tmp_path):
    """The fast approximation against refits of the same imputed completed trials (one simulated 40-patient
    cohort in progress, 8 refits): the per-trial posterior probabilities agree closely, and so do most
    decisions. ``benchmarks/bench_design.py --interim K`` runs more cohorts and refits."""
    from toolkit.data import load_cohort
    from toolkit.design.interim import brute_force
    from toolkit.design.trials import write_interim_cohort

    d = load_design(PRIMARY)
    write_interim_cohort(d, tmp_path / "c", scenario="hypothesised", trial=0, patients=40)
    r = brute_force(load_cohort(tmp_path / "c"), d, imputations=8, seed=1, workdir=tmp_path / "bf",
                    overrides={"draws": 1000, "chains": 2, "tune": 500})
    diff = np.abs(np.array(r["q_approx"]) - np.array(r["q_refit"]))
    assert diff.mean() < 0.15, (r["q_approx"], r["q_refit"])
    assert r["agreement"] >= 0.75


# --------------------------------------------------------------------------- compiled once: the padded model


def _padding_cohort(tmp_path, name="pad"):
    """14 infused patients, 11 responders (relapses, a death in remission, an HSCT), arms alternating."""
    rows = [(f"P{i + 1:03d}", "NR" if i in (2, 7, 9) else "CR", None if i in (2, 7, 9) else 28 + i,
             (150 + 10 * i) if i in (0, 3, 6, 11) else None, "positive" if i in (0, 3, 6, 11) else None,
             100 if i == 5 else None, 90 if i == 8 else None, 90 if i == 8 else 300 + 5 * i) for i in range(14)]
    return _cohort(tmp_path, rows, name)


def test_padded_masked_model_has_the_unpadded_log_density(tmp_path):
    """Padded to 60 with a 0/1 likelihood mask, the model's log density and gradient equal the unpadded
    model's at any parameter value; without the mask (padded rows counted) they differ: the check can fail."""
    from toolkit.data.inputs import to_durability_inputs
    from toolkit.design.operating import analysis_settings
    from toolkit.design.padded import data_values, pad_inputs, padded_model
    from toolkit.models.durability import build_durability_model

    options, _ = analysis_settings(load_design(PRIMARY))
    inputs = to_durability_inputs(_padding_cohort(tmp_path), endpoint=options.endpoint, hsct=options.hsct)
    priors = options.prior_set()
    plain = build_durability_model(inputs, priors, variant=options.variant)
    masked = padded_model(inputs, priors, variant=options.variant, n_max=60)
    unmasked = build_durability_model(pad_inputs(inputs, 60)[0], priors, variant=options.variant)
    assert masked["time_years"].get_value().shape == (60,) and masked["infused_mask"].get_value().sum() == 14
    rng = np.random.default_rng(1)
    names = [v.name for v in plain.value_vars]
    logp = [m.compile_logp() for m in (plain, masked, unmasked)]
    dlogp = [m.compile_dlogp() for m in (plain, masked)]
    for _ in range(3):
        point = {k: v + rng.normal(0, 0.5, np.shape(v)) for k, v in plain.initial_point().items()}
        logps = [f(point) for f in logp]
        assert logps[1] == pytest.approx(logps[0], abs=1e-9)
        assert abs(logps[2] - logps[0]) > 1.0  # the broken variant (padding counted) is flagged
        grads = [dict(zip([v.name for v in m.value_vars], f(point))) for m, f in zip((plain, masked), dlogp)]
        assert [grads[1][n] for n in names] == pytest.approx([grads[0][n] for n in names], abs=1e-8)
    # the data a look swaps in are the masked model's containers, value for value
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.traversal import ancestors

    shared = {v.name: v.get_value() for v in ancestors([masked.logp()]) if isinstance(v, SharedVariable)}
    values = data_values(inputs, priors, variant=options.variant, n_max=60)
    assert set(shared) <= set(values)
    for k in shared:
        np.testing.assert_array_equal(values[k], shared[k])


@pytest.mark.slow  # a nutpie compile: 15-60 s on the shared machine
def test_padded_fit_reuses_one_compiled_model_across_cohort_sizes(tmp_path):
    """Two cohorts of different sizes are fitted by one compiled model (the second compiles nothing), with
    the estimands and convergence verdict of a durability summary (tiny sampler settings)."""
    from dataclasses import replace

    from toolkit.design.operating import analysis_settings
    from toolkit.design.padded import fit_padded

    options, settings = analysis_settings(load_design(PRIMARY), chains=2, tune=200, draws=200)
    settings = replace(settings, cores=1)
    small = _padding_cohort(tmp_path, "small")
    large = _cohort(tmp_path, LOOK_ROWS + [("P099", "NR", None, None, None, None, None, 100)], "large")
    first = fit_padded(small, options, settings, n_max=60)
    second = fit_padded(large, options, settings, n_max=60)
    assert second.compile_seconds == 0.0
    for fit, n in ((first, 11), (second, 24)):
        assert fit.inputs.arm.size == n
        assert 0 <= fit.summary["estimands"]["prob_rfs_365d_difference_above_0"] <= 1
        assert set(fit.summary["diagnostics"]) >= {"converged", "max_rhat", "min_ess_bulk", "divergences"}
        assert fit.posterior["posterior"].sizes["draw"] == 200


# --------------------------------------------------------------------------- throughput: the same look records


def test_look_estimands_only_are_the_full_computation(tmp_path):
    """A design look computes only the rule's estimands (``durability_estimands(only=)``): every name it
    returns has exactly the value of the full computation, the rule's names are there, and the costly groups
    (medians, cumulative incidences, cure fractions) are skipped."""
    from toolkit.estimands import durability_estimands

    fit = _FakeFit(0.0, log_hr=math.log(0.5), cure_log_or=0.5)
    rng = np.random.default_rng(2)
    post = fit.posterior["posterior"].drop_vars(["logit_response", "response_log_or"])
    post = post.map(lambda v: v + rng.normal(0, 0.2, v.shape))  # draws that differ
    post = post.assign(hazard_ratio=np.exp(post["log_hr"]))
    d = load_design(PRIMARY)
    full = durability_estimands(post, fit.inputs, variant="cure")
    some = durability_estimands(post, fit.inputs, variant="cure", only={d.estimand, d.probability_key})
    assert {d.estimand, d.probability_key} <= set(some) and set(some) < set(full)
    assert not any(k.startswith(("median_rfs", "cir_", "nrm_", "cure_fraction")) for k in some)
    assert all(some[k] == full[k] for k in some)
    # the comparison can fail: another posterior gives other values under the same names
    other = durability_estimands(post.assign(log_hr=post["log_hr"] * 0, hazard_ratio=post["log_hr"] ** 0), fit.inputs,
                                 variant="cure",
                                 only={d.estimand, d.probability_key})
    assert other[d.estimand] != full[d.estimand]


def test_look_pos_without_dataframes_is_the_same(tmp_path):
    """The design study's PoS imputes completed trials as column arrays (``frames=False``), not DataFrames:
    the same imputed trials, the same q per imputation and the same PoS at the same seed; a trial with its arms
    swapped gives other q values (the comparison can fail)."""
    import toolkit.design.interim as interim

    cohort = _cohort(tmp_path, LOOK_ROWS)
    d = load_design(PRIMARY)
    fit = _FakeFit(0.0, log_hr=math.log(0.7), cure_log_or=0.3)
    pos, se, frames = interim.look_predictive_probability(cohort, d, fit, imputations=200, seed=11)
    pos2, se2, arrays = interim.look_predictive_probability(cohort, d, fit, imputations=200, seed=11, frames=False)
    assert (pos, se) == (pos2, se2) and 0 < pos < 1
    q = [approximate_q(d, t) for t in frames]
    assert q == [approximate_q(d, t) for t in arrays]
    for f, a in zip(frames[:20], arrays[:20]):
        assert f.attrs["final_days_after_cut"] == a["final_days_after_cut"]
        for c in f.columns:
            pd.testing.assert_series_equal(pd.Series(a[c], name=c), f[c])
    swapped = [approximate_q(d, {**t, "arm": 1 - t["arm"]}) for t in arrays]
    assert swapped != q


def test_a_real_trial_analyses_every_look_without_error(tmp_path):
    """One trial of the primary design through the real look path (padded model, nutpie, estimands, PoS) at
    tiny settings: every look is analysed, none is recorded as an error. Model looks swallow exceptions into
    the record (one failed look must not stop a study), so a broken look path shows only here."""
    d = load_design(PRIMARY)
    rows = pd.DataFrame(run_trial(d, 0, 0, overrides={"chains": 2, "tune": 50, "draws": 50},
                                  workdir=str(tmp_path))["rows"])
    reached = rows[rows["error"] != NOT_REACHED]
    assert len(reached) == 2 and (reached["error"] == "").all(), reached["error"].tolist()
    assert reached["q"].between(0, 1).all() and reached["pos"].notna().sum() == 1


@pytest.mark.slow  # a nutpie compile and 4 small fits: 20-60 s on the shared machine
def test_trial_records_unchanged_by_the_throughput_changes(tmp_path, monkeypatch):
    """One trial at a fixed seed gives the same look records (q, estimate, pos) through the fast path as
    through the previous one (every estimand computed, the PoS from DataFrames): the fit path is the same,
    so the records are equal, not only close."""
    import toolkit.design.interim as interim
    import toolkit.design.operating as operating
    import toolkit.design.padded as padded

    d = load_design(PRIMARY)
    small = {"chains": 2, "tune": 200, "draws": 200}
    fast = pd.DataFrame(run_trial(d, 1, 3, overrides=small, workdir=str(tmp_path))["rows"])
    fit_padded, look_pos = padded.fit_padded, interim.look_predictive_probability
    monkeypatch.setattr(padded, "fit_padded", lambda *a, estimands=None, **k: fit_padded(*a, **k))
    monkeypatch.setattr(interim, "look_predictive_probability", lambda *a, frames=True, **k: look_pos(*a, **k))
    before = pd.DataFrame(run_trial(d, 1, 3, overrides=small, workdir=str(tmp_path))["rows"])
    assert operating.COMPILE_ONCE and (fast["error"] == "").all() and fast["pos"].notna().any(), fast.to_dict()
    cols = ["q", "estimate", "pos", "events", "converged"]
    pd.testing.assert_frame_equal(fast[cols], before[cols])


def test_failed_analyses_are_said_loudly():
    """A study whose looks failed prints how many and the most frequent error; looks not reached are no failure."""
    from rich.console import Console

    from toolkit.cli import _warn_failed_analyses

    def said(errors):
        console = Console(record=True, width=200)
        _warn_failed_analyses(console, pd.DataFrame({"error": errors}))
        return console.export_text()

    text = said(["", "NameError: x", "NameError: x", NOT_REACHED, "ValueError: y"])
    assert "3 of 5 analyses failed" in text and "(2x): NameError: x" in text
    assert said(["", NOT_REACHED]) == ""
