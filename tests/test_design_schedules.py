"""Sampling-schedule design: the spec, the simulator's schedule, the study machinery (mocked fits), the prior
SD through the real model, and (slow) the paired real check that a schedule without samples in the MRD
decline window leaves the clearance rate ratio at its prior while the early schedule identifies it."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from toolkit.design.schedules import (
    ScheduleSpecError,
    load_schedule_spec,
    run_schedules,
    summarize_schedules,
    verdict,
    write_outputs,
)
from toolkit.simulate import simulate_trial
from toolkit.testing import run_cli

SPEC = Path(__file__).resolve().parent.parent / "models" / "design_schedules.toml"


def test_shipped_spec_loads():
    study = load_schedule_spec(SPEC)
    names = [s.name for s in study.schedules]
    assert names == ["current", "early_mrd", "sparse_cart"]
    assert set(study.models) == {"cart", "mrd", "joint"}
    assert study.parameters["log_hr_per_log_clearance"] == -1.0
    early = study.schedules[1]
    assert min(early.flow_days) < 28 and min(study.schedules[0].flow_days) == 28


@pytest.mark.parametrize("text, match", [
    ('[[schedule]]\nname = "a b"\n', r"name must be letters, digits"),
    ('[[schedule]]\nname = "a"\nflow_days = [0, 7]\n', r"\(a\) flow_days must be a non-empty list of whole days"),
    ('[[schedule]]\nname = "a"\n[[schedule]]\nname = "a"\n', r"schedule names must be distinct"),
    ('[models]\ncart = "nope.toml"\n[[schedule]]\nname = "a"\n', r"\[models\] cart = 'nope.toml': no such spec"),
    ('[trial.effects]\nbogus = 2\n[[schedule]]\nname = "a"\n', r"\[trial.effects\] unknown effect"),
    ('estimands = ["auc"]\n[[schedule]]\nname = "a"\n', r"estimands must be a list of"),
    ('color = 1\n', r"unknown key\(s\) color"),
    ('title = "x"\n', r"at least one \[\[schedule\]\]"),
])
def test_bad_spec_is_named(tmp_path, text, match):
    path = tmp_path / "s.toml"
    for name in ("cart", "mrd", "joint"):
        (tmp_path / f"{name}_primary.toml").write_text(f'model = "{name}"\n')
    path.write_text(text)
    with pytest.raises(ScheduleSpecError, match=match) as err:
        load_schedule_spec(path)
    assert str(path) in str(err.value)


def test_simulator_schedule_keeps_defaults_and_patients():
    base = simulate_trial(30, seed=5, with_truth=False)
    same = simulate_trial(30, seed=5, with_truth=False, flow_days=(28, 90, 180, 270, 365, 540, 730))
    assert base.mrd.equals(same.mrd) and base.cart_kinetics.equals(same.cart_kinetics)
    early = simulate_trial(30, seed=5, with_truth=False, flow_days=(7, 14, 28, 56), cart_days=(7, 28))
    assert early.outcomes.equals(base.outcomes) and early.latent.equals(base.latent)
    days = early.mrd["day"].astype(int)
    assert (days == 7).sum() == base.outcomes["response"].isin(["CR", "CRi"]).sum()
    assert set(early.cart_kinetics["day"].astype(int)) <= {7, 28}


def test_patients_without_cart_samples_are_left_out_of_cart_fits_and_counted(tmp_path):
    """Under a sparse CAR-T schedule a patient who dies before the first sample (day 28) has none, and
    to_cart_inputs refuses the cohort (the broken variant: the study recorded every such cohort as a
    failed fit). The study fits the patients with samples and counts the one left out; the MRD fit
    keeps every patient."""
    from toolkit.data import load_cohort
    from toolkit.data.inputs import ModelDataError, to_cart_inputs
    from toolkit.design.schedules import with_cart_samples

    cohort = load_cohort(simulate_trial(12, seed=5, with_truth=False).write(tmp_path / "c"))
    gone = str(cohort.patients["patient_id"].iloc[3])
    cohort.cart = cohort.cart[cohort.cart["patient_id"].astype(str) != gone]
    with pytest.raises(ModelDataError, match="no CAR-T sample"):
        to_cart_inputs(cohort)
    kept, n = with_cart_samples(cohort)
    assert n == 1 and gone not in set(kept.patients["patient_id"].astype(str)) and len(kept.patients) == 11
    assert gone not in set(kept.outcomes["patient_id"].astype(str)) | set(kept.mrd["patient_id"].astype(str))
    assert to_cart_inputs(kept).arm.size == 11
    assert with_cart_samples(kept) == (kept, 0)

    seen = {}

    def fitter(model, data, study, *, random_seed):
        seen[model] = len(data.patients)
        return _mock_fitter([])(model, data, study, random_seed=random_seed)

    study = load_schedule_spec(SPEC).subset(schedules=["current"], models=["cart", "mrd"])
    from toolkit.design.schedules import _fit_all

    rows = _fit_all(study, cohort, {"cmax_gmr": 1.5, "clearance_rate_ratio": 1.3}, {"schedule": "current",
                                                                                   "cohort": 0, "seed": 1}, fitter)
    assert seen == {"cart": 11, "mrd": 12}
    assert {r["model"]: r["patients_left_out"] for r in rows} == {"cart": 1, "mrd": 0}
    import pandas as pd

    summary = summarize_schedules(pd.DataFrame(rows)).set_index("model")
    assert summary.loc["cart", "patients_left_out"] == 1 and summary.loc["cart", "cohorts_with_patients_left_out"] == 1
    from toolkit.design.schedules import summary_words

    words = " ".join(summary_words(summary.reset_index()))
    assert "1 patient(s) in 1 of 1 cohorts had no CAR-T sample" in words
    assert "contraction 0.17 (one cohort: no MC error)" in words  # 0.1 / 0.6, the mock fit of cmax_gmr


def _mock_fitter(calls):
    """A stand-in fit: the clearance ratio's posterior SD shrinks with MRD assessments before day 28 (what a
    real fit does, see the slow test); cmax_gmr is learned under every schedule."""

    def fitter(model, cohort, study, *, random_seed):
        calls.append((model, random_seed))
        early = int((cohort.mrd["day"].astype(float) < 28).sum())
        rng = np.random.default_rng(random_seed)
        sd = 0.45 * (0.25 if early else 0.98)
        centre = 1.3 + sd * rng.normal() * 0.5
        est = {"clearance_rate_ratio": {"mean": centre, "median": centre, "sd": sd,
                                        "hdi_90": [centre - 1.645 * sd, centre + 1.645 * sd]},
               "cmax_gmr": {"mean": 1.5, "median": 1.5, "sd": 0.1, "hdi_90": [1.3, 1.7]}}
        return {"converged": True, "estimands": est,
                "prior_sd": {"clearance_rate_ratio": 0.45, "cmax_gmr": 0.6}}

    return fitter


@pytest.fixture
def small_study():
    study = load_schedule_spec(SPEC).subset(schedules=["current", "early_mrd"], models=["mrd", "cart"])
    return replace(study, patients=12)


def test_study_with_mocked_fits_resumes_and_writes_outputs(tmp_path, small_study):
    calls = []
    out = tmp_path / "study"
    table = run_schedules(small_study, 3, out, workers=0, fitter=_mock_fitter(calls))
    assert len(calls) == 2 * 3 * 2  # schedules x cohorts x analyses
    assert len(list((out / "results").glob("*.parquet"))) == 6
    # the same cohort seeds under both schedules (the same patients)
    seeds = table.groupby("schedule")["seed"].apply(lambda s: sorted(set(s)))
    assert seeds["current"] == seeds["early_mrd"]
    summary = summarize_schedules(table)
    row = summary.set_index(["schedule", "estimand"])
    assert row.loc[("early_mrd", "clearance_rate_ratio"), "verdict"] == "identified"
    assert row.loc[("current", "clearance_rate_ratio"), "verdict"] == "prior-dominated"
    assert row.loc[("current", "cmax_gmr"), "verdict"] == "identified"
    assert row.loc[("early_mrd", "clearance_rate_ratio"), "contraction"] == pytest.approx(0.25)
    # resume: nothing left to run; without --resume the folder is refused
    run_schedules(small_study, 3, out, workers=0, fitter=_mock_fitter(calls), resume=True)
    assert len(calls) == 12
    with pytest.raises(ScheduleSpecError, match="pass --resume"):
        run_schedules(small_study, 3, out, workers=0, fitter=_mock_fitter(calls))
    with pytest.raises(ScheduleSpecError, match="differ"):
        run_schedules(replace(small_study, patients=14), 3, out, workers=0, fitter=_mock_fitter(calls), resume=True)
    paths = write_outputs(table, small_study, out)
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0
    text = paths["summary"].read_text()
    assert ("clearance_rate_ratio (mrd model): identified by early_mrd (contraction 0.25 ± 0.00, 90% coverage "
            in text)
    assert "not by current (prior-dominated: contraction 0.98 ± 0.00" in text
    assert "Paired on the same cohorts, contraction early_mrd minus current -0.73 ± 0.00 (3 cohorts)" in text
    assert (out / "differences.csv").read_text().startswith("model,estimand,schedule,reference,cohorts,difference")


def test_failed_fit_is_recorded_and_study_goes_on(tmp_path, small_study):
    def broken(model, cohort, study, *, random_seed):
        if model == "mrd":
            raise RuntimeError("sampler exploded")
        return _mock_fitter([])(model, cohort, study, random_seed=random_seed)

    table = run_schedules(small_study, 1, tmp_path / "s", workers=0, fitter=broken)
    errors = table[table["status"] == "error"]
    assert set(errors["model"]) == {"mrd"} and errors["error"].str.contains("sampler exploded").all()
    summary = summarize_schedules(table)
    assert set(summary["estimand"]) == {"cmax_gmr"}


def _ratio_table(reference, other):
    """A stored-results table with the given contraction ratios (prior SD 1) per cohort of two schedules."""
    import pandas as pd

    rows = [{"schedule": name, "cohort": c, "model": "cart", "estimand": "cmax_gmr", "status": "ok", "error": "",
             "converged": True, "truth": 1.5, "prior_sd": 1.0, "post_sd": r, "post_median": 1.5, "lo": 1.0, "hi": 2.0}
            for name, ratios in (("current", reference), ("sparse_cart", other)) for c, r in enumerate(ratios)]
    return pd.DataFrame(rows)


def test_paired_differences_pair_cohorts():
    """The schedule difference is taken cohort by cohort (same patients): cohorts that differ a lot from
    each other but little between schedules give a small SE. An unpaired difference of the two means
    (broken variant) has the same mean but an SE of about sqrt(2) x 0.1 = 0.14, which this test flags."""
    from toolkit.design.schedules import paired_differences, summary_words

    reference = np.array([0.55, 0.15, 0.35, 0.15])
    other = reference + 0.4 + np.array([0.01, -0.01, 0.02, -0.02])
    table = _ratio_table(reference, other)
    diff = paired_differences(table).iloc[0]
    assert (diff["schedule"], diff["reference"], diff["cohorts"]) == ("sparse_cart", "current", 4)
    assert diff["difference"] == pytest.approx(0.4)
    assert diff["difference_se"] == pytest.approx(np.std([0.01, -0.01, 0.02, -0.02], ddof=1) / 2)
    unpaired = math.sqrt(reference.var(ddof=1) / 4 + other.var(ddof=1) / 4)
    assert diff["difference_se"] < unpaired / 10
    # a cohort that only one schedule has is left out of the pairing
    partial = table[~((table["schedule"] == "sparse_cart") & (table["cohort"] == 3))]
    assert paired_differences(partial).iloc[0]["cohorts"] == 3
    missed = table.copy()
    missed.loc[(missed["schedule"] == "sparse_cart") & (missed["cohort"] < 2), "hi"] = 1.4
    assert ("Under sparse_cart the 90% intervals covered the truth in only 2 of 4 cohorts."
            in summary_words(summarize_schedules(missed))[0])
    words = summary_words(summarize_schedules(table), paired_differences(table))
    assert words == ["cmax_gmr (cart model): identified by current (contraction 0.30 ± 0.10, 90% coverage "
                     "1.00 ± 0.15); not by sparse_cart (partly learned: contraction 0.70 ± 0.10, 90% coverage "
                     "1.00 ± 0.15). Paired on the same cohorts, contraction sparse_cart minus current +0.40 ± 0.01 "
                     "(4 cohorts)."]


def test_prior_sd_failure_is_said_not_hidden(tmp_path):
    """An estimand that cannot be computed on prior draws gives NaN prior SD, the reason in the row's error
    column, and the verdict "no result" (never a contraction computed against a made-up prior SD)."""
    import pymc as pm

    from toolkit.design.schedules import prior_sd

    with pm.Model() as model:
        pm.Normal("x", 0.0, 2.0)

    def broken(post, inputs):
        raise KeyError("cmax_copies_per_ug")

    errors = []
    out = prior_sd(model, None, broken, ["cmax_gmr"], draws=20, random_seed=1, errors=errors)
    assert math.isnan(out["cmax_gmr"]) and errors == ["prior SD: KeyError: 'cmax_copies_per_ug'"]
    fine = prior_sd(model, None, lambda post, inputs: {"cmax_gmr": {"sd": float(post["x"].std())}}, ["cmax_gmr"],
                    draws=4000, random_seed=1)
    assert fine["cmax_gmr"] == pytest.approx(2.0, rel=0.05)

    study = load_schedule_spec(SPEC).subset(schedules=["current"], models=["cart"])

    def fitter(model, cohort, study, *, random_seed):
        est = {"cmax_gmr": {"mean": 1.5, "median": 1.5, "sd": 0.1, "hdi_90": [1.3, 1.7]}}
        return {"converged": True, "estimands": est, "prior_sd": {"cmax_gmr": math.nan},
                "prior_sd_error": "prior SD: KeyError: 'cmax_copies_per_ug'"}

    table = run_schedules(replace(study, patients=8), 1, tmp_path / "s", workers=0, fitter=fitter)
    assert table.loc[0, "status"] == "ok" and "KeyError" in table.loc[0, "error"]
    assert summarize_schedules(table).loc[0, "verdict"] == "no result"
    assert "no finite prior SD" in write_outputs(table, study, tmp_path / "s")["summary"].read_text()


def test_verdict_thresholds():
    assert verdict(0.3, 0.9, 50) == "identified"
    assert verdict(0.3, 0.5, 50) == "learned, under-covered"
    assert verdict(0.6, 0.9, 50) == "partly learned"
    assert verdict(0.95, 1.0, 50) == "prior-dominated"
    assert verdict(math.nan, 1.0, 50) == "no result"


def test_prior_sd_of_clearance_ratio_through_the_real_model():
    """The prior SD comes from the MRD model's own prior draws through mrd_estimands: for exp(b_k),
    b_k ~ Normal(0, 0.4), it is sqrt((e^{s^2} - 1) e^{s^2}) = 0.451 (a broken variant taking the SD of the
    log ratio, 0.4, or of another estimand is outside the tolerance)."""
    from toolkit.data import load_cohort
    from toolkit.data.mrd_inputs import to_mrd_inputs
    from toolkit.design.schedules import _estimand_function, prior_sd
    from toolkit.fitting import MrdOptions
    from toolkit.models import mrd

    trial = simulate_trial(16, seed=3, with_truth=False)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cohort = load_cohort(trial.write(Path(tmp) / "c"))
        inputs = to_mrd_inputs(cohort)
    model = mrd.build_mrd_model(inputs, MrdOptions().prior_set())
    sd = prior_sd(model, inputs, _estimand_function("mrd", MrdOptions()), ["clearance_rate_ratio"], draws=6000,
                  random_seed=1)["clearance_rate_ratio"]
    expected = math.sqrt((math.exp(0.16) - 1) * math.exp(0.16))
    assert sd == pytest.approx(expected, rel=0.06)
    assert abs(sd - 0.4) > 0.025


@pytest.mark.slow
def test_prior_sd_of_joint_estimands_through_the_real_model():
    """The joint model's (joint_mrd.toml, with the MRD submodel) prior SDs through its own prior draws and
    joint_estimands: log_hr_per_log_clearance ~ Normal(0, 0.5) gives 0.5 and clearance_rate_ratio =
    exp(b), b ~ Normal(0, 0.4), gives 0.451 (as in the MRD model); hazard_ratio_indirect_mrd and cmax_gmr
    are finite and positive. A variant taking the SD of another estimand (e.g. the indirect hazard ratio's,
    about 0.2, for the association) is outside the tolerance. Slow: compiles the joint model's prior draws."""
    import tempfile

    from toolkit.data import load_cohort
    from toolkit.data.joint_inputs import to_joint_inputs
    from toolkit.design.schedules import _analysis, _estimand_function, prior_sd
    from toolkit.models import joint

    study = load_schedule_spec(SPEC)
    options, _ = _analysis(study, "joint")
    assert "mrd_clearance" in options.associations
    trial = simulate_trial(16, seed=3, with_truth=False)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = to_joint_inputs(load_cohort(trial.write(Path(tmp) / "c")), covariates=options.covariates,
                                 mrd_submodel=True)
    model = joint.build_joint_model(inputs, options.prior_set(), variant=options.variant,
                                    associations=options.associations,
                                    cart_priors=options.cart_prior_set(inputs.cart.unit))
    names = ["cmax_gmr", "clearance_rate_ratio", "log_hr_per_log_clearance", "hazard_ratio_indirect_mrd"]
    errors = []
    sd = prior_sd(model, inputs, _estimand_function("joint", options), names, draws=2000, random_seed=1,
                  errors=errors)
    assert errors == []
    assert sd["log_hr_per_log_clearance"] == pytest.approx(0.5, rel=0.06)
    assert sd["clearance_rate_ratio"] == pytest.approx(math.sqrt((math.exp(0.16) - 1) * math.exp(0.16)), rel=0.08)
    assert 0 < sd["hazard_ratio_indirect_mrd"] < 0.4 and 0 < sd["cmax_gmr"]


@pytest.mark.parametrize("argv, match", [
    (["{spec}", "--cohorts", "0", "--out", "{tmp}/o"], r"--cohorts must be at least 1"),
    (["{spec}", "--cohorts", "2", "--out", "{tmp}/o", "--models", "durability"], r"unknown analysis"),
    (["{tmp}/missing.toml", "--cohorts", "2", "--out", "{tmp}/o"], r"schedule spec not found"),
    (["{spec}", "--cohorts", "2", "--out", "{tmp}/full"], r"already exists and is not empty"),
])
def test_cli_misuse_exits_2(tmp_path, argv, match):
    import re

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("user data\n")
    code, out = run_cli(["schedules", *[a.format(spec=SPEC, tmp=tmp_path) for a in argv]])
    assert code == 2 and "Traceback" not in out
    assert re.search(match, out)
    assert (tmp_path / "full" / "keep.txt").read_text() == "user data\n"


@pytest.mark.slow
def test_mrd_clearance_identified_only_with_early_samples(tmp_path):
    """Real MRD fits (small): the early schedule contracts the clearance-rate-ratio posterior well below its
    prior; the protocol's day-28-first schedule (no sample in the decline window) does not."""
    study = load_schedule_spec(SPEC).subset(schedules=["current", "early_mrd"], models=["mrd"])
    study = replace(study, patients=30, sampler={"chains": 2, "tune": 200, "draws": 200}, prior_draws=300)
    table = run_schedules(study, 1, tmp_path / "s", workers=0)
    assert (table["status"] == "ok").all(), table["error"].tolist()
    c = summarize_schedules(table).set_index("schedule")["contraction"]
    assert c["early_mrd"] < 0.5
    assert c["current"] > 0.75
