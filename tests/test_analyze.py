"""``toolkit analyze``: the analysis plan on a cohort, resumable; the shared result API; CLI defaults.

The fitting tests use a plan of the two durability specs (the comparison needs both) with
``--fast`` or tiny sampler settings; the whole plan of ``models/`` runs in the slow test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit.analyze import AnalyzeError, read_plan
from toolkit.inference import clear_compile_cache
from toolkit.specs import analysis_plan_dir
from toolkit.testing import EXAMPLE, copy_example, folder_digest, run_cli

DESIGN_SPEC = 'design = "two-arm"\n[trial]\npatients = 60\n'  # a design spec: no `model` key
TINY = {"chains": 2, "tune": 100, "draws": 100}


@pytest.fixture(scope="module")
def sap(tmp_path_factory):
    """A plan folder: the two durability analyses and a design spec that must be skipped."""
    folder = tmp_path_factory.mktemp("sap")
    for name in ("durability_primary.toml", "durability_weibull.toml"):
        shutil.copy(analysis_plan_dir() / name, folder / name)
    (folder / "design_default.toml").write_text(DESIGN_SPEC)
    return folder


@pytest.fixture(scope="module")
def analyzed(sap, tmp_path_factory):
    """``toolkit analyze data_templates/example --fast`` on the two-spec plan: (exit code, output, out folder)."""
    out = tmp_path_factory.mktemp("analysis") / "out"
    clear_compile_cache()  # a model compiled by an earlier test in this process would skip "compiling"
    code, output = run_cli(["analyze", EXAMPLE, "--out", out, "--sap", sap, "--fast"])
    return code, output, out


def test_analyze_writes_runs_report_estimands_and_manifest(analyzed, sap):
    code, output, out = analyzed
    assert code == 0, output
    assert "Traceback" not in output
    for stage in ("compiling", "sampling", "drawing figures"):
        assert stage in output  # progress per analysis
    assert "skipping design_default.toml: not an analysis spec" in output
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["durability_primary", "durability_weibull"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "FAST MODE" in html
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fast"] is True
    assert manifest["plan"]["skipped"] == {"design_default.toml": read_plan(sap).skipped["design_default.toml"]}
    assert set(manifest["analyses"]) == {"durability_primary", "durability_weibull"}
    assert manifest["data"]["sha256"] and manifest["toolkit_version"]
    assert set(manifest["plan"]["specs"]) == {"durability_primary.toml", "durability_weibull.toml"}
    assert manifest["comparison"]["method"] == "PSIS-LOO"
    for name, record in manifest["analyses"].items():
        assert record["status"].startswith("fitted")
        provenance = json.loads((out / record["run"] / "provenance.json").read_text())
        assert provenance["analyze"]["fast"] is True and provenance["settings"]["draws"] == 150


def test_estimands_table_is_tidy_numeric_and_matches_the_runs(analyzed):
    _, _, out = analyzed
    table = pd.read_csv(out / "estimands.csv")
    assert list(table.columns) == ["analysis", "model", "estimand", "median", "mean", "sd", "lo", "hi", "level",
                                   "probability", "converged", "fast"]
    assert table["fast"].all()
    summary = json.loads((out / "runs" / "durability_primary" / "summary.json").read_text())
    rows = table[table["analysis"] == "durability_primary"].set_index("estimand")
    assert set(rows.index) == set(summary["estimands"])
    hr = summary["estimands"]["hazard_ratio"]
    assert rows.loc["hazard_ratio", "median"] == pytest.approx(hr["median"])
    assert [rows.loc["hazard_ratio", "lo"], rows.loc["hazard_ratio", "hi"]] == pytest.approx(hr["hdi_90"])
    assert rows.loc["hazard_ratio", "level"] == 0.9 and np.isnan(rows.loc["hazard_ratio", "probability"])
    assert rows.loc["prob_hr_below_1", "probability"] == pytest.approx(summary["estimands"]["prob_hr_below_1"])
    assert (rows["converged"] == summary["diagnostics"]["converged"]).all()
    xlsx = pd.read_excel(out / "estimands.xlsx", sheet_name="estimands")
    assert len(xlsx) == len(table) and list(xlsx.columns) == list(table.columns)


def test_second_call_is_a_noop_and_a_changed_spec_reruns_only_that_analysis(analyzed, sap, tmp_path):
    code, output, out = analyzed
    assert code == 0, output
    runs = {name: folder_digest(out / "runs" / name) for name in ("durability_primary", "durability_weibull")}
    before = folder_digest(out)
    code, output = run_cli(["analyze", EXAMPLE, "--out", out, "--sap", sap, "--fast"])
    assert code == 0, output
    assert output.count("up to date, skipped") >= 2 and "Nothing to do" in output
    assert folder_digest(out) == before, "a call that changes nothing must write nothing"

    changed = tmp_path / "sap"
    shutil.copytree(sap, changed)
    spec = changed / "durability_weibull.toml"
    spec.write_text(spec.read_text().replace("days = [180, 365, 730]", "days = [180, 365]"))
    code, output = run_cli(["analyze", EXAMPLE, "--out", out, "--sap", changed, "--fast"])
    assert code == 0, output
    assert "durability_primary (durability, durability_primary.toml): up to date, skipped" in output
    assert "durability_weibull (durability, durability_weibull.toml): fitting (the spec changed)" in output
    assert folder_digest(out / "runs" / "durability_primary") == runs["durability_primary"]
    assert folder_digest(out / "runs" / "durability_weibull") != runs["durability_weibull"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["analyses"]["durability_primary"]["status"] == "up to date, skipped"
    assert "rfs_730d_control" not in pd.read_csv(out / "estimands.csv").query("analysis == 'durability_weibull'")[
        "estimand"].values


def test_full_settings_do_not_reuse_fast_runs(analyzed, sap):
    """A fast run is never taken for a full one: the mode is part of what must be unchanged."""
    from toolkit.analyze import PlanEntry, sha256_file, up_to_date, toolkit_version
    from toolkit.inference import hash_folder

    _, _, out = analyzed
    spec = sap / "durability_primary.toml"
    entry = PlanEntry("durability_primary", spec, "durability", {}, sha256_file(spec))
    common = {"data_hash": hash_folder(EXAMPLE), "version": toolkit_version()}
    assert up_to_date(out / "runs" / "durability_primary", entry, fast=True, **common) == (True, "up to date")
    assert up_to_date(out / "runs" / "durability_primary", entry, fast=False, **common) == (False, "fast mode changed")
    assert up_to_date(out / "runs" / "durability_primary", entry, fast=True, data_hash="0" * 64,
                      version=common["version"]) == (False, "the cohort data changed")


def test_invalid_cohort_stops_before_any_fit(cohort_dir, sap, tmp_path, monkeypatch):
    import toolkit.fitting

    def no_fit(*args, **kwargs):
        raise AssertionError("a fit started on an invalid cohort")

    monkeypatch.setattr(toolkit.fitting, "fit_durability", no_fit)
    outcomes = (cohort_dir / "outcomes.csv").read_text().splitlines()
    head = outcomes[0].split(",")
    row = outcomes[1].split(",")
    row[head.index("response")] = "maybe"
    (cohort_dir / "outcomes.csv").write_text("\n".join([outcomes[0], ",".join(row), *outcomes[2:]]) + "\n")
    before = folder_digest(cohort_dir)
    code, output = run_cli(["analyze", cohort_dir, "--out", tmp_path / "out", "--sap", sap, "--fast"])
    assert code == 2, output
    assert "outcomes.csv" in output and "response" in output and "nothing was fitted" in output
    assert "Traceback" not in output
    assert not (tmp_path / "out").exists()
    assert folder_digest(cohort_dir) == before


def test_plan_rule_and_a_broken_spec_is_named_before_fitting(tmp_path):
    (tmp_path / "design_x.toml").write_text(DESIGN_SPEC)
    (tmp_path / "good.toml").write_text('model = "durability"\n[options]\nvariant = "cure"\n')
    plan = read_plan(tmp_path)
    assert [e.name for e in plan.analyses] == ["good"] and list(plan.skipped) == ["design_x.toml"]
    (tmp_path / "bad.toml").write_text('model = "durability"\n[options]\nflavour = "cure"\n')
    with pytest.raises(AnalyzeError, match=r"bad.toml: option\(s\) flavour are not options of model durability"):
        read_plan(tmp_path)
    (tmp_path / "bad.toml").write_text('model = "survival"\n')
    with pytest.raises(AnalyzeError, match=r"model 'survival' is unknown"):
        read_plan(tmp_path)


def test_default_plan_holds_the_shipped_analyses():
    names = {e.name for e in read_plan().analyses}
    assert {"durability_primary", "durability_weibull", "cart_primary", "mrd_primary", "joint_primary"} <= names


# --------------------------------------------------------------------------- one result API


def test_run_and_fit_result_share_one_api(analyzed, tmp_path):
    from toolkit.fitting import FitResult
    from toolkit.inference import Run, load_run
    from toolkit.results import ResultMethods

    _, _, out = analyzed
    run = load_run(out / "runs" / "durability_primary")
    assert isinstance(run, ResultMethods) and issubclass(FitResult, ResultMethods) and isinstance(run, Run)
    assert run.summary["model"] == "durability" and run.model_name == "durability"  # old attribute use still works
    table = run.summary()
    assert table.loc["hazard_ratio", "median"] == pytest.approx(run.summary["estimands"]["hazard_ratio"]["median"])
    assert all(np.issubdtype(t, np.floating) for t in table.dtypes)
    assert run.estimand("prob_hr_below_1") == run.summary["estimands"]["prob_hr_below_1"]
    with pytest.raises(KeyError, match="no estimand 'hr' in this durability result; it has: "):
        run.estimand("hr")
    figures = run.figures()
    assert {"rfs_overlay", "forest", "cir_overlay"} <= set(figures)
    import matplotlib.pyplot as plt

    assert all(isinstance(f, plt.Figure) for f in figures.values())
    for f in figures.values():
        plt.close(f)
    copy = run.save(tmp_path / "copy")
    again = load_run(copy)
    assert again.summary == run.summary and again.provenance == run.provenance

    fit = FitResult("durability", run.posterior, dict(run.summary), run.provenance)
    assert fit.summary().equals(table) and fit.converged == run.converged
    assert json.loads(json.dumps(fit.summary)) == json.loads(json.dumps(run.summary))


def test_estimands_frame_handles_missing_and_probability_values():
    from toolkit.results import estimands_frame

    frame = estimands_frame({"estimands": {"a": {"mean": 1.0, "median": 0.9, "sd": None, "hdi_90": [0.1, 2.0]},
                                           "prob_a": 0.25}})
    assert frame.loc[0, "level"] == 0.9 and np.isnan(frame.loc[0, "sd"]) and np.isnan(frame.loc[0, "probability"])
    assert frame.loc[1, "probability"] == 0.25 and np.isnan(frame.loc[1, "median"])


# --------------------------------------------------------------------------- defaults a new user expects


def test_fit_durability_without_spec_fits_the_primary_analysis(monkeypatch, tmp_path):
    import toolkit.fitting

    seen = {}

    def capture(cohort, options, settings, *, spec=None):
        seen.update(options=options, settings=settings, spec=spec)
        raise KeyboardInterrupt  # stop before sampling

    monkeypatch.setattr(toolkit.fitting, "fit_durability", capture)
    code, output = run_cli(["fit", "durability", "--data", EXAMPLE, "--out", tmp_path / "run"])
    assert code == 130
    assert "fitting the pre-specified primary analysis durability_primary.toml" in output
    assert seen["options"].variant == "cure" and seen["spec"]["path"].endswith("durability_primary.toml")
    assert seen["settings"].target_accept == 0.95
    code, output = run_cli(["fit", "durability", "--data", EXAMPLE, "--out", tmp_path / "run", "--no-spec"])
    assert code == 130 and seen["options"].variant == "weibull" and seen["spec"] is None


def test_help_shows_defaults():
    code, output = run_cli(["simulate", "--help"])
    assert code == 0 and "default: 60" in output and "default: 20261125" in output
    code, output = run_cli(["fit", "--help"])
    assert code == 0 and "models/MODEL_primary.toml" in output and "4 chains x 1000" in output


def test_notebook_fast_variable_is_recorded_and_shown(monkeypatch):
    from toolkit.inference import SamplerSettings, build_provenance
    from toolkit.report import mode_notes

    def provenance():
        return build_provenance(model_name="m", model_version="1", settings=SamplerSettings(), data_hash="h",
                                spec=None, priors={}, timings={})

    monkeypatch.delenv("TOOLKIT_NOTEBOOK_FAST", raising=False)
    quiet = provenance()
    assert "environment" not in quiet

    class FakeRun:
        def __init__(self, prov):
            self.provenance = prov

    assert mode_notes([FakeRun(quiet)]) == []
    monkeypatch.setenv("TOOLKIT_NOTEBOOK_FAST", "1")
    loud = provenance()
    assert loud["environment"] == {"TOOLKIT_NOTEBOOK_FAST": "1"}
    assert "TOOLKIT_NOTEBOOK_FAST=1" in mode_notes([FakeRun(loud)])[0]
    assert "FAST MODE" in mode_notes([FakeRun({"fast": True})])[0]


def test_cohort_from_frames_validates_like_a_folder(cohort_dir):
    import tomllib

    from toolkit.data import Cohort, CohortValidationError, load_cohort

    frames = {name: pd.read_csv(cohort_dir / f"{name}.csv", dtype=str, keep_default_na=False)
              for name in ("patients", "outcomes", "cart_kinetics", "mrd")}
    study = tomllib.loads((cohort_dir / "study.toml").read_text())
    cohort = Cohort.from_frames(patients=frames["patients"], outcomes=frames["outcomes"],
                                cart=frames["cart_kinetics"], mrd=frames["mrd"], study=study)
    folder = load_cohort(cohort_dir)
    pd.testing.assert_frame_equal(cohort.outcomes, folder.outcomes)
    pd.testing.assert_frame_equal(cohort.cart, folder.cart)
    assert cohort.control_arm == folder.control_arm
    bad = frames["outcomes"].copy()
    bad.loc[0, "response"] = "maybe"
    with pytest.raises(CohortValidationError, match=r"outcomes.csv.*row 2.*response") as err:
        Cohort.from_frames(patients=frames["patients"], outcomes=bad, study=study)
    with pytest.raises(CohortValidationError, match="outcomes.csv"):
        Cohort.from_frames(patients=frames["patients"], outcomes=bad, study=study)
    assert len(err.value.problems) >= 1


@pytest.mark.slow
def test_whole_default_plan_on_the_example(tmp_path):
    """`toolkit analyze data_templates/example --fast` with the shipped plan (every model; minutes)."""
    out = tmp_path / "out"
    code, output = run_cli(["analyze", EXAMPLE, "--out", out, "--fast"])
    assert code == 0, output
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["analyses"]) == {e.name for e in read_plan().analyses}
    assert (out / "report.html").is_file()
    code, output = run_cli(["analyze", EXAMPLE, "--out", out, "--fast"])
    assert code == 0 and "Nothing to do" in output


@pytest.mark.slow  # a kernel start and two small fits: about a minute on two cores
def test_durability_notebook_loads_the_runs_of_analyze(analyzed, tmp_path):
    """With ``run_dir`` the notebook reads the primary and Weibull runs instead of refitting them."""
    import nbformat

    from toolkit.notebooks import NOTEBOOK_DIR, run_notebooks

    _, _, out = analyzed
    notebook = NOTEBOOK_DIR / "04_remission_durability.ipynb"
    # the prior-sensitivity fits still run in the notebook: kept tiny (1 chain) since only the loading is tested
    records = run_notebooks(EXAMPLE, tmp_path / "nb", fast=False, notebooks=[notebook],
                            parameters={"run_dir": str(out), "draws": 60, "tune": 60, "chains": 1})
    assert records[0]["ok"], records[0]["error"]
    executed = nbformat.read(tmp_path / "nb" / notebook.name, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert f"Loaded the run {out / 'runs' / 'durability_primary'}: not refitted" in text
    assert "Traceback" not in text


def test_seed_reaches_every_analysis_and_a_bad_seed_is_refused(monkeypatch, tmp_path):
    """``analyze --seed`` is passed on as a sampler override (recorded in provenance, refits on change)."""
    import toolkit.analyze

    seen = []

    def fake_analyze(data, out, **kwargs):
        seen.append(kwargs["sampler"])
        return {"analyses": {"primary": {"status": "up to date", "converged": True}}, "unchanged": True,
                "fast": False}

    monkeypatch.setattr(toolkit.analyze, "analyze", fake_analyze)
    for args in (["--seed", "7"], []):
        code, output = run_cli(["analyze", EXAMPLE, "--out", tmp_path / "a", *args])
        assert code == 0, output
    assert seen == [{"random_seed": 7}, None]
    code, output = run_cli(["analyze", EXAMPLE, "--out", tmp_path / "c", "--seed", "-3"])
    assert code == 2 and "Traceback" not in output and "whole number" in output
    assert len(seen) == 2
