"""Misspecification studies (toolkit.calibration.misspec, ``toolkit misspecify``): the summary's bias, RMSE,
coverage and P(decision) by hand; checks that flag shifted truths and inert intervals; the CLI end to end on
a two-scenario grid with short sampling; errors that exit 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit.calibration.misspec import coverage_flag, readable_table, summarize_misspecification
from toolkit.design.spec import load_design
from toolkit.testing import run_cli

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "models" / "design_misspecification.toml"


def _table(truth: float, *, trials: int = 200, sd: float = 0.1, shift: float = 0.0, width: float = 1.645,
           name: str = "rfs_365d_difference", seed: int = 0) -> pd.DataFrame:
    """Synthetic fits: posterior medians truth + shift + N(0, sd), 90% intervals median ± width * sd."""
    rng = np.random.default_rng(seed)
    med = truth + shift + rng.normal(0, sd, trials)
    rows = [{"scenario": "s", "trial": t, "estimand": name, "median": m, "lo": m - width * sd, "hi": m + width * sd,
             "probability": math.nan, "error": "", "converged": True} for t, m in enumerate(med)]
    rows += [{"scenario": "s", "trial": t, "estimand": "prob_rfs_365d_difference_above_0", "median": math.nan,
              "lo": math.nan, "hi": math.nan, "probability": p, "error": "", "converged": t != 0}
             for t, p in enumerate(np.linspace(0, 1, trials))]
    return pd.DataFrame(rows)


def _reference(truth: float, name: str = "rfs_365d_difference") -> dict:
    return {"truth": {"s": {name: truth}}, "prior": {name: {"median": 0.0, "sd": 0.2, "lo": -0.3, "hi": 0.3}},
            "prior_percentile": {"s": {name: 97.0}}, "prior_sds": {"s": {name: 2.0}}}


@pytest.fixture(scope="module")
def grid():
    return load_design(GRID)


def test_summary_recovers_bias_coverage_and_decision_share(grid):
    frame = summarize_misspecification(grid, _table(0.3, shift=0.02), _reference(0.3)).set_index("estimand")
    row = frame.loc["rfs_365d_difference"]
    assert row["trials"] == 200 and row["truth"] == 0.3
    assert abs(row["bias"] - 0.02) < 3 * row["bias_se"] + 1e-9
    assert abs(row["rmse"] - math.hypot(0.02, 0.1)) < 0.02
    assert 0.8 < row["coverage_90"] < 0.97 and row["coverage_flag"] == ""
    assert row["width_90"] == pytest.approx(2 * 1.645 * 0.1) and row["prior_width_90"] == pytest.approx(0.6)
    prob = frame.loc["prob_rfs_365d_difference_above_0"]
    # probabilities evenly spaced on [0, 1]: the share above the rule's 0.95 is about 5%
    assert prob["p_decision"] == pytest.approx(np.mean(np.linspace(0, 1, 200) > grid.success_probability))
    assert prob["not_converged"] == 1


def test_summary_flags_a_shifted_truth_and_intervals_too_wide(grid):
    low = summarize_misspecification(grid, _table(0.3, shift=0.25), _reference(0.3)).set_index("estimand")
    assert low.loc["rfs_365d_difference", "coverage_flag"] == "low"
    high = summarize_misspecification(grid, _table(0.3, width=4.0), _reference(0.3)).set_index("estimand")
    assert high.loc["rfs_365d_difference", "coverage_flag"] == "high"
    assert coverage_flag(90, 100) == "" and coverage_flag(78, 100) == "low" and coverage_flag(99, 100) == "high"


def test_hazard_ratio_bias_is_on_the_log_scale(grid):
    table = _table(math.log(0.5), sd=0.2, name="hazard_ratio_uncured")
    for column in ("median", "lo", "hi"):
        table.loc[table["estimand"] == "hazard_ratio_uncured", column] = np.exp(
            table.loc[table["estimand"] == "hazard_ratio_uncured", column])
    frame = summarize_misspecification(grid, table, _reference(0.5, "hazard_ratio_uncured")).set_index("estimand")
    row = frame.loc["hazard_ratio_uncured"]
    assert row["scale"] == "log" and abs(row["bias"]) < 3 * row["bias_se"]
    shown = readable_table(grid, frame.reset_index(), estimands=("hazard_ratio_uncured",))
    assert shown["estimand"].iloc[0] == "hazard_ratio_uncured (log)"


def test_shipped_grid_has_no_effect_and_strong_points(grid):
    """The grid has a no-effect point and strong points in both directions (how far out their truths lie in
    prior SDs is measured in ``test_cli_misspecify_runs_a_small_grid_and_resumes`` for strong_benefit, and
    for all in the study's reference.json: docs/calibration.md)."""
    effects = {s.name: s.effects for s in grid.scenarios}
    assert all(v == 1.0 for v in effects["no_effect"].values())
    assert effects["strong_benefit"]["hazard_ratio_direct"] <= 0.2 and effects["strong_benefit"]["cure_odds_ratio"] >= 4
    assert effects["strong_harm"]["hazard_ratio_direct"] >= 5 and effects["strong_harm"]["cure_odds_ratio"] <= 0.25
    assert not grid.looks and grid.analysis_spec is not None


def test_cli_misspecify_runs_a_small_grid_and_resumes(tmp_path, monkeypatch):
    import toolkit.simulate as simulate

    real = simulate.compute_truth
    monkeypatch.setattr(simulate, "compute_truth", lambda e, p: real(e, p, n=20_000))  # a faster, noisier truth
    spec = tmp_path / "grid.toml"
    text = GRID.read_text()
    keep = [block for block in text.split("[[scenarios]]")]
    spec.write_text(keep[0] + "[[scenarios]]" + keep[1] + "[[scenarios]]" + keep[5].split("[simulation]")[0]
                    + "[simulation]\nseed = 5\n")
    args = ["misspecify", spec, "--out", tmp_path / "m", "--workers", "0", "--chains", "2", "--draws", "150",
            "--tune", "150"]
    code, text = run_cli(args + ["--trials", "1"])
    assert code == 0, text
    out = tmp_path / "m"
    for name in ("misspecification.csv", "misspecification.md", "misspecification.png", "reference.json"):
        assert (out / name).exists(), name
    summary = pd.read_csv(out / "misspecification.csv")
    assert {"no_effect", "strong_benefit"} == set(summary["scenario"])
    assert {"hazard_ratio_uncured", "cure_fraction_difference", "rfs_365d_difference"} <= set(summary["estimand"])
    reference = json.loads((out / "reference.json").read_text())
    assert reference["prior_percentile"]["strong_benefit"]["rfs_365d_difference"] > 90
    # the grid's strong point lies >= 1.5 prior SDs out on every key effect (log scale for the HR), no effect near 0
    for name in ("hazard_ratio_uncured", "cure_fraction_difference", "rfs_365d_difference", "cir_365d_difference",
                 "efs_365d_difference"):
        assert abs(reference["prior_sds"]["strong_benefit"][name]) >= 1.5, name
        assert abs(reference["prior_sds"]["no_effect"][name]) < 0.5, name
    assert "P(rfs_365d_difference > 0) > 0.95 is met in" in text and "Traceback" not in text
    from toolkit.calibration.misspec import CONFIG_FILE
    from toolkit.models import durability

    assert json.loads((out / CONFIG_FILE).read_text())["model_versions"] == {"durability": durability.MODEL_VERSION}
    code, text = run_cli(args + ["--trials", "2", "--resume"])
    assert code == 0, text
    assert len(list((out / "trials").glob("*.parquet"))) == 4
    monkeypatch.setattr(durability, "MODEL_VERSION", "99.0.0")  # a changed model does not extend the study
    code, text = run_cli(args + ["--trials", "3", "--resume"])
    assert code == 2 and "model_versions" in text and "Traceback" not in text
    code, text = run_cli(args + ["--trials", "2"])
    assert code == 2 and "already exists and is not empty" in text


def test_cli_misspecify_errors_exit_2(tmp_path):
    code, text = run_cli(["misspecify", REPO / "models" / "design_check_exponential.toml", "--trials", "1",
                          "--out", tmp_path / "a", "--workers", "0"])
    assert code == 2 and "fits a model" in text and "Traceback" not in text
    code, text = run_cli(["misspecify", GRID, "--trials", "0", "--out", tmp_path / "b"])
    assert code == 2 and "--trials must be a positive number" in text
    code, text = run_cli(["misspecify", tmp_path / "missing.toml", "--trials", "1", "--out", tmp_path / "c"])
    assert code == 2 and "not found" in text and "Traceback" not in text


CART_GRID = REPO / "models" / "design_misspecification_cart.toml"


def _no_effect_and_strong_benefit(grid_text: str, tmp_path):
    """Run a shipped grid's first and third scenarios (no effect, strong benefit), one trial each with short
    sampling, through ``toolkit misspecify``; returns the summary table, ``reference.json`` and the output."""
    blocks = grid_text.split("[[scenarios]]")
    spec = tmp_path / "grid.toml"
    spec.write_text(blocks[0] + "[[scenarios]]" + blocks[1] + "[[scenarios]]" + blocks[3].split("[simulation]")[0]
                    + "[simulation]\nseed = 5\n")
    code, text = run_cli(["misspecify", spec, "--out", tmp_path / "m", "--workers", "0", "--trials", "1",
                          "--chains", "2", "--draws", "100", "--tune", "100"])
    assert code == 0, text
    summary = pd.read_csv(tmp_path / "m" / "misspecification.csv")
    assert {"no_effect", "strong_benefit"} == set(summary["scenario"])
    return summary, json.loads((tmp_path / "m" / "reference.json").read_text()), text


def test_cart_grid_is_a_cart_analysis_with_ratios_on_the_log_scale():
    from toolkit.calibration.misspec import CART_KEY_ESTIMANDS, key_estimands, log_scale

    design = load_design(CART_GRID)
    assert design.analysis_model == "cart" and design.probability_key == "prob_cmax_gmr_above_1"
    assert key_estimands(design) == CART_KEY_ESTIMANDS
    assert all(log_scale(n) for n in ("cmax_gmr", "auc28_gmr", "persistence_half_life_ratio", "hazard_ratio"))
    assert not log_scale("tmax_difference_days") and not log_scale("cure_fraction_difference")
    effects = {s.name: s.effects for s in design.scenarios}
    assert all(v == 1.0 for v in effects["no_effect"].values())
    assert effects["strong_benefit"]["cmax_gmr"] >= 3 and effects["harm"]["cmax_gmr"] <= 0.5


def test_cli_misspecify_fits_the_cart_analysis(tmp_path, monkeypatch):
    """Two trials (no effect, strong benefit) of the CAR-T grid through ``toolkit misspecify`` with short
    sampling: the CAR-T estimands are summarised against the simulator's truths, whose strong point lies
    >= 1.5 prior SDs out on the log scale (no effect: near the prior's centre)."""
    import toolkit.simulate as simulate

    real = simulate.compute_truth
    monkeypatch.setattr(simulate, "compute_truth", lambda e, p: real(e, p, n=20_000))
    summary, reference, text = _no_effect_and_strong_benefit(CART_GRID.read_text(), tmp_path)
    assert {"cmax_gmr", "auc28_gmr", "persistence_half_life_ratio", "prob_cmax_gmr_above_1"} <= set(summary["estimand"])
    assert (summary.loc[summary["estimand"] == "cmax_gmr", "scale"] == "log").all()
    for name in ("cmax_gmr", "persistence_half_life_ratio"):
        assert reference["prior_sds"]["strong_benefit"][name] >= 1.5, name
        assert abs(reference["prior_sds"]["no_effect"][name]) < 0.5, name
    assert "P(cmax_gmr > 1) > 0.95 is met in" in text and "Traceback" not in text


def test_trial_design_commands_refuse_a_cart_analysis(tmp_path):
    code, text = run_cli(["design", CART_GRID, "--trials", "1", "--out", tmp_path / "d", "--workers", "0"])
    assert code == 2 and "toolkit misspecify" in text and "Traceback" not in text
    assert not (tmp_path / "d").exists()  # refused before anything is written


MRD_GRID = REPO / "models" / "design_misspecification_mrd.toml"


def test_mrd_grid_is_an_mrd_analysis_with_the_kill_rate_ratio_on_the_log_scale():
    from toolkit.calibration.misspec import MRD_KEY_ESTIMANDS, key_estimands, log_scale

    design = load_design(MRD_GRID)
    assert design.analysis_model == "mrd" and design.probability_key == "prob_clearance_rate_ratio_above_1"
    assert key_estimands(design) == MRD_KEY_ESTIMANDS
    assert log_scale("clearance_rate_ratio") and not log_scale("mrd_recurrence_365d_difference")
    effects = {s.name: s.effects for s in design.scenarios}
    assert all(v == 1.0 for v in effects["no_effect"].values())
    assert effects["strong_benefit"]["clearance_rate_ratio"] >= 2.5 and effects["harm"]["clearance_rate_ratio"] <= 0.4


def test_cli_misspecify_fits_the_mrd_analysis(tmp_path, monkeypatch):
    """Two trials (no effect, strong benefit) of the MRD grid through ``toolkit misspecify`` with short
    sampling and no reruns: the MRD estimands are summarised against the simulator's truths (kill-rate ratio
    on the log scale), whose strong kill-rate ratio lies >= 1.5 prior SDs out (no effect: at the centre)."""
    import toolkit.simulate as simulate

    import toolkit.calibration.misspec as misspec

    real = simulate.compute_truth
    monkeypatch.setattr(simulate, "compute_truth", lambda e, p: real(e, p, n=20_000))
    monkeypatch.setattr(misspec, "PRIOR_DRAWS", 1000)  # each draw simulates 2000 patients' MRD per arm
    analysis = tmp_path / "mrd_short.toml"  # the primary spec without its reruns (short sampling fails them)
    analysis.write_text((REPO / "models" / "mrd_primary.toml").read_text().replace("extend_sampling = 4",
                                                                                     "extend_sampling = 0"))
    grid = MRD_GRID.read_text().replace('"models/mrd_primary.toml"', json.dumps(str(analysis)))
    summary, reference, text = _no_effect_and_strong_benefit(grid, tmp_path)
    assert {"clearance_rate_ratio", "mrd_negative_28d_flow_control", "mrd_recurrence_365d_difference",
            "prob_clearance_rate_ratio_above_1"} <= set(summary["estimand"])
    assert (summary.loc[summary["estimand"] == "clearance_rate_ratio", "scale"] == "log").all()
    assert reference["prior_sds"]["strong_benefit"]["clearance_rate_ratio"] >= 1.5
    assert abs(reference["prior_sds"]["no_effect"]["clearance_rate_ratio"]) < 0.5
    assert "P(clearance_rate_ratio > 1) > 0.95 is met in" in text and "Traceback" not in text


JOINT_GRID = REPO / "models" / "design_misspecification_joint.toml"


def test_joint_grid_is_a_joint_analysis_with_a_mediation_rule():
    from toolkit.calibration.misspec import JOINT_KEY_ESTIMANDS, analysis_tables, key_estimands, log_scale
    from toolkit.design.spec import produced_probabilities
    from toolkit.specs import load_spec

    design = load_design(JOINT_GRID)
    assert design.analysis_model == "joint" and design.probability_key == "prob_hazard_ratio_total_below_1"
    assert key_estimands(design) == JOINT_KEY_ESTIMANDS
    assert analysis_tables(design) == ("patients", "outcomes", "cart_kinetics")  # no MRD association
    assert all(log_scale(n) for n in ("hazard_ratio_total", "hazard_ratio_direct", "hazard_ratio_indirect"))
    effects = {s.name: s.effects for s in design.scenarios}
    assert all(v == 1.0 for v in effects["no_effect"].values())
    assert effects["kinetics_only"]["hazard_ratio_direct"] == 1.0 and effects["kinetics_only"]["cmax_gmr"] >= 3
    with_mrd = load_spec(REPO / "models" / "joint_mrd.toml", model="joint")
    assert "prob_hazard_ratio_indirect_mrd_below_1" in produced_probabilities(with_mrd)


def test_cli_misspecify_refuses_a_two_stage_joint_analysis_before_any_trial(tmp_path):
    """The joint analysis' prior reference needs the kinetics' prior; a two-stage spec is refused up front."""
    analysis = tmp_path / "joint_two_stage.toml"
    analysis.write_text((REPO / "models" / "joint_primary.toml").read_text().replace('kinetics = "joint"',
                                                                                       'kinetics = "two-stage"'))
    grid = tmp_path / "grid.toml"
    grid.write_text(JOINT_GRID.read_text().replace('"models/joint_primary.toml"', json.dumps(str(analysis))))
    out = tmp_path / "m"
    code, text = run_cli(["misspecify", grid, "--trials", "1", "--out", out, "--workers", "0"])
    assert code == 2 and 'needs kinetics = "joint"' in text and "Traceback" not in text
    assert not out.exists()  # refused before anything is written or fitted


def test_cli_misspecify_fits_the_joint_analysis(tmp_path, monkeypatch):
    """Two trials (no effect, strong benefit) of the joint grid through ``toolkit misspecify`` with short
    sampling and no reruns: the mediation hazard ratios and associations are summarised against the
    simulator's truths (ratios on the log scale), and the strong benefit's total hazard ratio lies far out in
    the joint prior."""
    import toolkit.simulate as simulate

    import toolkit.calibration.misspec as misspec

    real = simulate.compute_truth
    monkeypatch.setattr(simulate, "compute_truth", lambda e, p: real(e, p, n=20_000))
    monkeypatch.setattr(misspec, "PRIOR_DRAWS", 1000)
    analysis = tmp_path / "joint_short.toml"  # the primary spec without its reruns (short sampling fails them)
    analysis.write_text((REPO / "models" / "joint_primary.toml").read_text().replace("extend_sampling = 4",
                                                                                       "extend_sampling = 0"))
    grid = JOINT_GRID.read_text().replace('"models/joint_primary.toml"', json.dumps(str(analysis)))
    summary, reference, text = _no_effect_and_strong_benefit(grid, tmp_path)
    assert {"hazard_ratio_total", "hazard_ratio_direct", "hazard_ratio_indirect", "log_hr_per_log_cmax",
            "prob_hazard_ratio_total_below_1"} <= set(summary["estimand"])
    assert (summary.loc[summary["estimand"] == "hazard_ratio_total", "scale"] == "log").all()
    assert reference["truth"]["no_effect"]["hazard_ratio_total"] == pytest.approx(1.0, abs=0.05)
    assert reference["prior_sds"]["strong_benefit"]["hazard_ratio_total"] <= -1.5
    assert "P(hazard_ratio_total < 1) > 0.95 is met in" in text and "Traceback" not in text
