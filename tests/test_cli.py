"""Every CLI path, called through main(argv) as a user would call it."""

import json
import subprocess
import sys

from toolkit.cli import main
from toolkit.testing import EXAMPLE, folder_digest, set_cell


def test_validate_clean_cohort_exits_0(capsys):
    assert main(["validate", str(EXAMPLE)]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_validate_bad_cohort_exits_2_listing_every_problem(cohort_dir, capsys):
    set_cell(cohort_dir, "patients", 2, "age_years", "old")
    set_cell(cohort_dir, "mrd", 3, "mrd_pct", "??")
    before = folder_digest(cohort_dir)
    assert main(["validate", str(cohort_dir)]) == 2
    out = capsys.readouterr().out
    assert "2 problem(s)" in out
    assert "patients.csv, row 2, column 'age_years': is not a number (value 'old')" in out
    assert "mrd.csv, row 3, column 'mrd_pct'" in out
    assert "Traceback" not in out
    assert folder_digest(cohort_dir) == before


def test_simulate_then_validate_and_describe(tmp_path, capsys):
    out = tmp_path / "trial"
    assert main(["simulate", "--out", str(out), "--patients", "40", "--seed", "3",
                 "--effect", "cmax_gmr=2", "--effect", "hazard_ratio_direct=0.6"]) == 0
    truth = json.loads((out / "truth.json").read_text())
    assert truth["effects"]["cmax_gmr"] == 2 and truth["n_patients"] == 40
    assert truth["estimands"]["cmax_gmr"] > 1.9
    assert main(["validate", str(out)]) == 0
    assert main(["describe", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Relapse-free survival from remission" in text and "CAR-T qPCR" in text


def test_simulate_rejects_unknown_effect(tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path / "x"), "--effect", "magic=2"]) == 2
    assert "unknown effect(s) magic" in capsys.readouterr().out


def test_describe_bad_cohort_exits_2(cohort_dir, capsys):
    set_cell(cohort_dir, "outcomes", 2, "response", "??")
    assert main(["describe", str(cohort_dir)]) == 2


def test_demo_runs(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--fast"]) == 0
    printed = capsys.readouterr().out
    assert "Demo finished" in printed and "Relapse hazard ratio, total" in printed
    for name in ("durability_cure", "durability_weibull", "cart", "mrd", "joint"):
        assert (tmp_path / "demo" / "runs" / name / "summary.json").exists()
    assert (tmp_path / "demo" / "report.html").stat().st_size > 50_000


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "toolkit", "validate", str(EXAMPLE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_fit_cart_and_mrd_write_runs(example_cli_run):
    """Smoke test of the kinetic fits through the CLI (``toolkit fit``, few draws: labelled provisional if not
    converged; the shared tiny runs, whose command asserted exit 0)."""
    for model, name in (("cart", "cmax_gmr"), ("mrd", "clearance_rate_ratio")):
        out = example_cli_run(model)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["model"] == model and name in summary["estimands"]
        if not summary["diagnostics"]["converged"]:
            assert "provisional" in summary["warnings"][0]
