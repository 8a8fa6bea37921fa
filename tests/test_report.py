"""The investigator report: content generated from the posterior, honesty labels, self-contained HTML, browser."""

import json
import re
import shutil

import pytest

from toolkit.cli import main
from toolkit.report import find_chromium, render_report
from toolkit.inference import load_run
from toolkit.testing import EXAMPLE, edit_run_file


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    for variant in ("cure", "weibull"):
        assert main(["fit", "durability", "--data", str(EXAMPLE), "--out", str(base / variant), "--variant", variant,
                     "--endpoint", "efs", "--no-figures"]) == 0
    return base


def test_report_is_self_contained_and_answers_in_words(runs, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(runs / "cure"), str(runs / "weibull"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "PROVISIONAL" not in text and "(provisional)" not in text
    summary = json.loads((runs / "cure" / "summary.json").read_text())
    p = summary["estimands"]["prob_hr_below_1"]
    assert (f'Probability that IFN-a + CAR-T lowers the relapse hazard among patients who are not cured: '
            f'<span class="prob">{p:.2f}</span>') in text
    assert "Model comparison (PSIS-LOO)" in text
    # EFS and the cumulative incidence of relapse, with their definitions in words
    assert "not responding is an event at day 0" in text and "Event-free 365 days after infusion" in text
    assert "death in remission (non-relapse mortality) a competing event" in text
    assert "Relapsed by 365 days after remission" in text and "Aalen-Johansen" in text
    images = re.findall(r'<img [^>]*src="([^"]+)"', text)
    # per durability run: RFS overlay, forest, CIR, Kaplan-Meier with numbers at risk, decision densities, PIT;
    # then a trace and a rank plot per run in the reviewer appendix (toolkit.review)
    assert len(images) == 12 + 2 * 2 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "Prior sensitivity: durability" in text and "Diagnostics appendix: durability" in text
    assert not re.search(r'(src|href)="(https?:)?//', text), "no network resources"
    assert text.index("The answer") < text.index("Key figures") < text.index("Methods") < text.index("Diagnostics")
    visible = re.sub(r'src="data:[^"]+"', "", text)
    assert not re.search(r"\bP\d{3}\b", visible), "no patient codes in the report"


def test_failed_fit_is_labelled_provisional(runs, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(runs / "weibull", bad)
    summary = json.loads((bad / "summary.json").read_text())
    summary["diagnostics"].update(converged=False, max_rhat=1.2, problems=["max R-hat 1.200 > 1.01"])
    edit_run_file(bad, "summary.json", json.dumps(summary))
    text = render_report([load_run(bad)])
    assert '<div class="banner" role="alert">PROVISIONAL' in text
    assert "<title>Simulated IFN-a + CAR-T trial (seed 20261125): posterior report (provisional)</title>" in text
    assert "max R-hat 1.200 &gt; 1.01" in text and '<span class="bad">FAILED</span>' in text
    assert "patient-level parameters only" not in text  # nothing in its table says where
    # a run whose patient-level vectors alone fail: the Diagnostics section says where
    import pandas as pd

    table = pd.read_csv(bad / "parameter_summary.csv", index_col=0)
    table.loc["patient_x[0]"] = table.iloc[0]
    table.loc["patient_x[0]", ["variable", "level", "r_hat", "ess_bulk", "ess_tail"]] = ["patient_x", "patient", 1.2,
                                                                                        30, 40]
    edit_run_file(bad, "parameter_summary.csv", table.to_csv())
    text = render_report([load_run(bad)])
    section = text[text.index("<h2>Diagnostics</h2>"):]
    assert "Where it fails: patient-level parameters only: patient_x (R-hat up to 1.200" in section


def test_small_cells_are_suppressed_unless_asked(runs, tmp_path):
    small = tmp_path / "small"
    shutil.copytree(runs / "weibull", small)
    summary = json.loads((small / "summary.json").read_text())
    summary["data"]["per_arm"]["experimental"]["events"] = 3
    edit_run_file(small, "summary.json", json.dumps(summary))
    run = load_run(small)
    assert "<td>&lt;5</td>" in render_report([run]) and "<td>3</td>" not in render_report([run])
    assert "<td>3</td>" in render_report([run], show_small_cells=True)


@pytest.mark.skipif(find_chromium() is None or shutil.which("chromedriver") is None,
                    reason="needs Debian chromium and chromium-driver (installed by .ci/run)")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    out = tmp_path / "report.html"
    assert main(["report", str(runs / "cure"), "--out", str(out)]) == 0
    options = webdriver.ChromeOptions()
    options.binary_location = find_chromium()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,2400", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(out.resolve().as_uri())
        loaded = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        assert loaded and all(loaded), "every image must load"
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        assert "posterior report" in driver.title
        driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.skipif(find_chromium() is None, reason="needs Debian chromium")
def test_pdf_is_printed(runs, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(runs / "cure"), "--out", str(out), "--pdf"]) == 0
    assert out.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


def _tiny_study(folder):
    """A calibration study folder with two quantities, one calibrated, one not (no sampling)."""
    import numpy as np
    import pandas as pd

    (folder / "simulations").mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps({"problem": {"model": "durability", "variant": "cure",
                                                               "design": {"source": "example"}}, "settings": {}}))
    rng = np.random.default_rng(1)
    for sim in range(30):
        rows = [{"sim": sim, "status": "ok", "error": "", "converged": True, "quantity": q, "kind": "parameter",
                 "prior_value": rng.normal(), "rank": 0, "n_kept": 100, "pit": pit, "post_mean": 0.0, "post_sd": 0.2}
                for q, pit in (("log_hr", rng.uniform()), ("logit_cure", 0.5 + 0.01 * rng.uniform()))]
        pd.DataFrame(rows).to_parquet(folder / "simulations" / f"sim_{sim:05d}.parquet")
    return folder


def test_report_includes_calibration_summaries_and_refuses_a_non_study(runs, tmp_path, capsys):
    study = _tiny_study(tmp_path / "study")
    out = tmp_path / "report.html"
    assert main(["report", str(runs / "cure"), "--out", str(out), "--calibration", str(study)]) == 0
    text = out.read_text()
    assert "Calibration: durability" in text and "<code>logit_cure</code>" in text
    bad = tmp_path / "bad.html"
    assert main(["report", str(runs / "cure"), "--out", str(bad), "--calibration", str(tmp_path)]) == 2
    message = capsys.readouterr().out
    assert "not a calibration study folder" in message and "Traceback" not in message
    assert not bad.exists()
