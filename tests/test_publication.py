"""Publication figures (PNG + SVG, one colour per arm, Kaplan-Meier numbers at risk, decision densities) and the
report rendered from templates with the primary answer first."""

import json
import re
import shutil

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from toolkit.data import load_cohort  # noqa: E402
from toolkit.inference import load_run  # noqa: E402
from toolkit.plots import plot_km_by_arm, plot_rfs_overlay, write_durability_figures  # noqa: E402
from toolkit.plots.publication import (decision_densities, plot_cohort_overview, plot_decision_densities,  # noqa: E402
                                       plot_km_at_risk, plot_patient_estimates)
from toolkit.plots.style import ARM_COLORS, DPI, save_figure  # noqa: E402
from toolkit.report import TEMPLATE_DIR, ReportTemplateError, primary_run, render_report  # noqa: E402
from toolkit.specs import SpecError, load_spec  # noqa: E402
from toolkit.survival import kaplan_meier, number_at_risk  # noqa: E402
from toolkit.testing import EXAMPLE, edit_run_file, run_cli  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The primary durability spec fitted to the example with few draws (no figures: the tests draw them)."""
    out = tmp_path_factory.mktemp("primary") / "run"
    code, text = run_cli(["fit", "durability", "--data", EXAMPLE, "--out", out, "--spec",
                          "models/durability_primary.toml", "--chains", "2", "--tune", "200", "--draws", "200",
                          "--no-figures"])
    assert code == 0, text
    return out


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(run_dir)


@pytest.fixture(scope="module")
def inputs(run):
    from toolkit.fitting import durability_inputs_from_run

    return durability_inputs_from_run(run)


# --------------------------------------------------------------------------- files


def test_save_figure_writes_png_at_300_dpi_and_svg(tmp_path):
    from PIL import Image

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    paths = save_figure(fig, tmp_path / "sub" / "line.png")
    plt.close(fig)
    assert [p.name for p in paths] == ["line.png", "line.svg"]
    with Image.open(paths[0]) as image:
        assert image.size == (2 * DPI, 1 * DPI)
        assert round(image.info["dpi"][0]) == DPI
    assert paths[1].read_text().lstrip().startswith("<?xml") and "<svg" in paths[1].read_text()


def test_run_figures_are_written_as_png_and_svg(run, tmp_path):
    paths = write_durability_figures(run, tmp_path)
    pngs = sorted(p.stem for p in paths if p.suffix == ".png")
    assert pngs == sorted(p.stem for p in paths if p.suffix == ".svg")
    assert {"km_at_risk", "decisions", "pit", "rfs_overlay", "forest", "cir_overlay"} <= set(pngs)
    assert all(p.stat().st_size > 5_000 for p in paths)
    plt.close("all")


# --------------------------------------------------------------------------- colours


def _arm_colours(fig, arm_labels) -> dict:
    """{arm label: set of hex colours} of every legend entry or tick label naming an arm, across the figure."""
    out = {label: set() for label in arm_labels}
    for ax in fig.axes:
        legend = ax.get_legend()
        handles = list(zip(legend.legend_handles, [t.get_text() for t in legend.get_texts()])) if legend else []
        for handle, text in handles:
            for label in arm_labels:
                if text == label or text.startswith(f"{label} (") or text.startswith(f"{label}:"):
                    colour = (handle.get_color() if hasattr(handle, "get_color") and not hasattr(handle, "get_facecolor")
                              else handle.get_facecolor())
                    out[label].add(mcolors.to_hex(colour))
        for tick in ax.get_yticklabels():
            if tick.get_text() in out and mcolors.to_hex(tick.get_color()) != "#000000":
                out[tick.get_text()].add(mcolors.to_hex(tick.get_color()))
    return out


def _expected(arm_labels) -> dict:
    return {label: {mcolors.to_hex(c)} for label, c in zip(arm_labels, ARM_COLORS)}


def test_arm_colours_are_the_same_in_every_figure(run, inputs):
    cohort = load_cohort(EXAMPLE)
    labels = tuple(inputs.arm_labels)
    assert labels == tuple(cohort.arms)
    figures = {
        "km_at_risk": plot_km_at_risk(inputs.time_years * 365.25, inputs.event, inputs.arm, arm_labels=labels).figure,
        "rfs_overlay": plot_rfs_overlay(run.posterior["posterior"], inputs, variant=run.summary["variant"]).figure,
        "km_by_arm": plot_km_by_arm(cohort).figure,
        "cohort_overview": plot_cohort_overview(cohort),
    }
    for name, fig in figures.items():
        assert _arm_colours(fig, labels) == _expected(labels), name
    # the box-and-strip plot has no legend: its points carry the colours
    frame = pd.DataFrame({"arm": inputs.arm, "value": np.exp(np.arange(len(inputs.arm)) / 10)})
    ax = plot_patient_estimates(frame, "value", arm_labels=labels)
    points = [mcolors.to_hex(c.get_facecolor()[0]) for c in ax.collections if len(c.get_offsets())]
    assert points == [mcolors.to_hex(c) for c in ARM_COLORS]
    # the check fails on a figure that takes seaborn's default palette
    import seaborn as sns

    fig, ax = plt.subplots()
    sns.lineplot(x=[0, 1, 0, 1], y=[1, 0, 1, 0.5], hue=[labels[0]] * 2 + [labels[1]] * 2, ax=ax)
    assert _arm_colours(fig, labels) != _expected(labels)
    plt.close("all")


# --------------------------------------------------------------------------- Kaplan-Meier numbers at risk


def test_number_at_risk_counts_follow_up_at_or_after_each_day():
    time = np.array([1, 2, 2, 3, 4, 5, 8.0])
    event = np.array([1, 1, 0, 1, 0, 1, 0])
    km = kaplan_meier(time, event)
    days = [0, 1, 1.5, 2, 5, 6, 8, 9]
    assert number_at_risk(km, days).tolist() == [int(np.sum(time >= d)) for d in days] == [7, 7, 6, 6, 2, 1, 1, 0]


def test_number_at_risk_matches_lifelines_event_table():
    lifelines = pytest.importorskip("lifelines")
    rng = np.random.default_rng(3)
    time, event = np.round(rng.exponential(300, 80)), rng.random(80) < 0.6
    table = lifelines.KaplanMeierFitter().fit(time, event).event_table
    km = kaplan_meier(time, event)
    assert number_at_risk(km, table.index.to_numpy()).tolist() == table["at_risk"].astype(int).tolist()


def test_km_at_risk_table_prints_the_survival_module_counts(inputs):
    days = inputs.time_years * 365.25
    ticks = [0, 180, 365, 730]
    ax = plot_km_at_risk(days, inputs.event, inputs.arm, arm_labels=inputs.arm_labels, ticks=ticks,
                         show_small_cells=True)
    table = ax.figure.axes[-1]
    assert table.get_title(loc="left") == "Number at risk"
    for a, label in enumerate(inputs.arm_labels):
        mask = inputs.arm == a
        expected = number_at_risk(kaplan_meier(days[mask], inputs.event[mask]), ticks)
        assert expected.tolist() == [int(np.sum(days[mask] >= t)) for t in ticks]
        row = len(inputs.arm_labels) - 1 - a
        printed = sorted((t.get_position()[0], t.get_text()) for t in table.texts if t.get_position()[1] == row)
        assert [x for x, _ in printed] == ticks
        assert [int(n) for _, n in printed] == expected.tolist(), label
    # censoring ticks: one "|" marker per censored patient and arm
    censored = [line for line in ax.lines if line.get_marker() == "|" and len(line.get_xdata())]
    assert sum(len(line.get_xdata()) for line in censored) == int(np.sum(inputs.event == 0))
    plt.close("all")


def test_km_at_risk_table_hides_small_counts_unless_asked():
    time, event, arm = np.array([10.0, 20, 30, 40, 50, 60]), np.ones(6), np.array([0, 0, 0, 1, 1, 1])
    ax = plot_km_at_risk(time, event, arm, ticks=[0, 30])
    assert {t.get_text() for t in ax.figure.axes[-1].texts} == {"<5"}
    ax = plot_km_at_risk(time, event, arm, ticks=[0, 30], show_small_cells=True)
    assert sorted(t.get_text() for t in ax.figure.axes[-1].texts) == ["1", "3", "3", "3"]
    plt.close("all")


# --------------------------------------------------------------------------- decision densities


def test_decision_densities_write_the_summary_probabilities(run):
    decisions = decision_densities(run)
    est = run.summary["estimands"]
    keys = {d.key for d in decisions}
    assert {"prob_hr_below_1", "prob_hr_below_0.7", "prob_rfs_365d_difference_above_0"} <= keys
    for d in decisions:
        assert d.probability == pytest.approx(est[d.key], abs=1e-12), d.key
    fig = plot_decision_densities(decisions)
    written = "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)
    for d in decisions:
        assert f"{est[d.key]:.2f}" in written and d.statement in written
    thresholds = {round(line.get_xdata()[0], 6) for ax in fig.axes for line in ax.lines if line.get_linestyle() == "--"}
    assert {1.0, 0.7, 0.0, 0.1} <= thresholds
    plt.close("all")


# --------------------------------------------------------------------------- the report from templates


def test_primary_paragraph_comes_first(run):
    html = render_report([run])
    title = run.provenance["spec"]["title"]
    first = html.index('class="primary-answer"')
    assert html.index("<h1>") < html.index("The answer") < first
    assert first < html.index("class='answer'") < html.index("Key figures") < html.index("Methods")
    paragraph = html[first:html.index("</p>", first)]
    est = run.summary["estimands"]
    assert title in paragraph and f'{est["prob_rfs_365d_difference_above_0"]:.2f}' in paragraph
    assert f'{est["prob_hr_below_1"]:.2f}' in paragraph
    assert "No run given is marked primary" not in html  # the spec says primary = true


def test_the_run_marked_primary_leads_whatever_the_order(run_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    provenance = json.loads((other / "provenance.json").read_text())
    provenance["spec"].update(primary=False, title="A secondary look", path="models/secondary.toml")
    edit_run_file(other, "provenance.json", json.dumps(provenance))
    runs = [load_run(other), load_run(run_dir)]
    assert primary_run(runs) == (runs[1], "spec")
    html = render_report(runs)
    paragraph = html[html.index('class="primary-answer"'):]
    assert paragraph.index(runs[1].provenance["spec"]["title"]) < paragraph.index("</p>")
    assert "A secondary look" not in html[:html.index("<h3>Each analysis</h3>")]
    # nothing marked: the report says which run it took instead
    assert primary_run([load_run(other)])[1] == "the first durability analysis given"
    assert "No run given is marked primary" in render_report([load_run(other)])


def test_rewording_a_template_copy_changes_the_report(run, run_dir, tmp_path):
    mine = tmp_path / "templates"
    mine.mkdir()
    text = (TEMPLATE_DIR / "primary.html.j2").read_text()
    assert "<strong>Primary analysis</strong>" in text
    (mine / "primary.html.j2").write_text(text.replace("<strong>Primary analysis</strong>",
                                                       "<strong>Main finding of the trial</strong>"))
    html = render_report([run], template_dir=mine)
    assert "Main finding of the trial" in html and "<strong>Primary analysis</strong>" not in html
    assert "Key figures" in html  # the other sections still come from the package's templates
    out = tmp_path / "report.html"
    code, printed = run_cli(["report", run_dir, "--out", out, "--templates", mine])
    assert code == 0, printed
    assert "Main finding of the trial" in out.read_text()


def test_a_broken_or_missing_template_folder_is_a_clear_error(run, run_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "methods.html.j2").write_text("<h2>Methods</h2>\n{% for m in methods %}\n")
    with pytest.raises(ReportTemplateError, match=r"methods\.html\.j2, line \d+"):
        render_report([run], template_dir=broken)
    out = tmp_path / "report.html"
    code, printed = run_cli(["report", run_dir, "--out", out, "--templates", broken])
    assert code == 2 and "methods.html.j2" in printed and "Traceback" not in printed and not out.exists()
    code, printed = run_cli(["report", run_dir, "--out", out, "--templates", tmp_path / "nowhere"])
    assert code == 2 and "not a folder" in printed and not out.exists()


def test_templates_escape_what_they_are_given(run_dir, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(run_dir, odd)
    summary = json.loads((odd / "summary.json").read_text())
    summary["cohort"] = "<script>alert(1)</script>"
    edit_run_file(odd, "summary.json", json.dumps(summary))
    html = render_report([load_run(odd)])
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_spec_primary_must_be_true_or_false(tmp_path):
    spec = tmp_path / "x.toml"
    spec.write_text('model = "durability"\nprimary = "yes"\n')
    with pytest.raises(SpecError, match=r"x\.toml: primary must be true or false"):
        load_spec(spec)
    assert load_spec("models/durability_primary.toml")["primary"] is True
    assert "primary" not in load_spec("models/durability_weibull.toml")


def test_templates_ship_as_package_data():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads(Path("pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["toolkit"]
    shipped = {p.relative_to(TEMPLATE_DIR.parent.parent).as_posix() for p in TEMPLATE_DIR.iterdir()}
    assert shipped and all(any(Path(f).match(pattern) for pattern in patterns) for f in shipped)
    assert re.search(r"autoescape=True", (TEMPLATE_DIR.parent.parent / "report.py").read_text())


# --------------------------------------------------------------------------- posterior predictive checks (PIT)


def test_censored_pit_is_uniform_under_the_model_and_flags_ignored_censoring():
    from scipy import stats

    from toolkit.plots.ppc import censored_pit

    rng = np.random.default_rng(5)
    n, k, lam = 4000, 1.3, 2.0
    cdf = lambda t: 1 - np.exp(-(t / lam) ** k)  # noqa: E731
    t = lam * rng.weibull(k, n)
    c = rng.uniform(0, 4, n)
    time, event = np.minimum(t, c), t <= c
    u = censored_pit(cdf(time), np.where(event, cdf(time), 1.0), random_seed=1)
    assert stats.kstest(u, "uniform").pvalue > 0.01
    broken = cdf(time)  # censored follow-up read as an event: the check must flag it
    assert stats.kstest(broken, "uniform").pvalue < 1e-6


def test_pit_figure_reports_arviz_uniformity_test():
    from toolkit.plots.ppc import plot_pit_ecdf

    u = np.random.default_rng(2).uniform(size=200)
    fig = plot_pit_ecdf({"fits": u, "misfits": u ** 2})
    texts = {ax.get_title(): " ".join(t.get_text() for t in ax.texts) for ax in fig.axes}
    p = {name: float(re.search(r"p=([0-9.]+)", text).group(1)) for name, text in texts.items()}
    assert p["fits"] > 0.01 and p["misfits"] < 0.01
    plt.close("all")


def test_durability_pit_has_one_value_per_patient(run, inputs):
    from toolkit.plots.ppc import durability_pit

    u = durability_pit(run.posterior["posterior"], inputs)
    assert u.shape == inputs.event.shape and np.all((u >= 0) & (u <= 1))
    # relapses are at their predictive CDF, censored follow-ups above it
    again = durability_pit(run.posterior["posterior"], inputs, random_seed=99)
    event = inputs.event.astype(bool)
    np.testing.assert_allclose(u[event], again[event])
    assert not np.allclose(u[~event], again[~event])


def test_review_fragments_fill_the_appendix_slot(run, monkeypatch):
    import toolkit.report

    monkeypatch.setattr(toolkit.report, "report_fragments", lambda runs: {"sensitivity": "", "appendix": ""})
    html = render_report([run])  # nothing to show: no empty headings
    assert "Appendix" not in html and "Prior sensitivity" not in html
    monkeypatch.setattr(toolkit.report, "report_fragments", lambda runs: {
        "appendix": "\n".join(f"<p id='diag'>summary table of {r.summary['model']}</p>" for r in runs),
        "sensitivity": "<p id='sens'>power-scaling</p>"})
    html = render_report([run])
    assert "<p id='diag'>summary table of durability</p>" in html and "<p id='sens'>power-scaling</p>" in html
    assert html.index("<h2>Diagnostics</h2>") < html.index("Prior sensitivity") < html.index("id='diag'")
