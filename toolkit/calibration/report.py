"""The calibration summary of a study folder: JSON, CSV table, figures and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path


from toolkit.calibration.metrics import ALPHA, COVERAGE_LEVELS, summarize_study, unconverged_fits
from toolkit.calibration.runner import STUDY_FILE, load_results, rerun_policy_of
from toolkit.plots.style import save_figure

__all__ = ["calibration_fragment", "write_calibration_report"]

#: share of non-converged fits the study tolerates before it says so in red
MAX_UNCONVERGED_SHARE = 0.02


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _fmt(x, digits=3) -> str:
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}g}"


def verdict_sentences(table, overview: dict, config: dict) -> list[str]:
    """The summary in words: calibration, convergence, what the design can and cannot learn."""
    problem = config.get("problem", {})
    name = f"{problem.get('model', '?')} ({problem.get('variant', '')})"
    n = overview["succeeded"]
    out = []
    if overview["failed"] and not overview["failing"]:
        out.append(f"Inconclusive: {overview['failed']} simulation(s) failed with an error, so their ranks are "
                   f"missing; the {n} that ran show no departure from uniformity.")
    elif overview["passed"]:
        out.append(f"The {name} model is calibrated at this design as far as {n} simulations can tell: no "
                   f"quantity's ranks depart from uniformity (Bonferroni threshold p < "
                   f"{overview['bonferroni_threshold']:.2g} over {len(table)} quantities).")
    else:
        out.append(f"The {name} model is NOT calibrated at this design: the ranks of "
                   f"{', '.join(overview['failing'])} depart from uniformity (p below "
                   f"{overview['bonferroni_threshold']:.2g}); its intervals for these quantities do not have "
                   "their stated coverage.")
    unusual = [q for q in (*overview["failing"], *overview["suspect"])
               if "p_oracle" in table and math.isfinite(table.loc[q, "p_oracle"]) and table.loc[q, "p_oracle"] < ALPHA]
    if unusual:
        out.append(f"For {', '.join(unusual)} the prior draws themselves fell unusually: an oracle that knows every "
                   "patient's true values, with no fit, departs from uniformity too (p oracle < "
                   f"{ALPHA:g}). Where the patients' data pin their own values, a fit's ranks follow that oracle's, "
                   "so the failure may be the draws' rather than the fits'; a study with another seed settles it.")
    if overview["suspect"]:
        out.append(f"Suspect (p < {overview['alpha']:g}, not below the study-wide threshold): "
                   f"{', '.join(overview['suspect'])}; more simulations would settle it.")
    share = overview["share_not_converged"]
    if n:
        flag = "above" if share > MAX_UNCONVERGED_SHARE else "within"
        out.append(f"{overview['not_converged']} of {n} fits ({100 * share:.1f}%) failed the toolkit's "
                   f"convergence verdict at these sampler settings ({flag} the {100 * MAX_UNCONVERGED_SHARE:.0f}% "
                   "tolerated); they are kept in the ranks, not dropped.")
        if overview.get("unconverged_population_recorded"):
            recorded, passed = overview["unconverged_population_recorded"], overview["unconverged_population_passed"]
            of = "these" if recorded == overview["not_converged"] else "those that record it,"
            out.append(f"Every population-level quantity (the ranked parameters and the arm-level quantities behind "
                       f"the estimands) passed R-hat and ESS in {passed} of {of} {recorded}"
                       + ("; in those, what failed was patient-level vectors, divergences or the sampler's "
                          "statistics." if passed else "."))
        if overview.get("extended"):
            reruns = config.get("settings", {}).get("extend_sampling", "?")
            how = {"continue": "the same chains continued to twice the draws after R-hat or ESS failed, a new run "
                               "at a higher target_accept after divergences",
                   "what-failed": "twice the draws after R-hat or ESS failed, a higher target_accept after "
                                  "divergences alone"}.get(rerun_policy_of(config.get("settings")),
                                                           "doubled draws, and a higher target_accept after divergences")
            out.append(f"{overview['extended']} of {n} fits failed their first run and were extended ({how}; "
                       f"extend_sampling = {reruns}, as `toolkit fit` does); the verdict above is of the kept runs.")
    if overview["failed"]:
        out.append(f"{overview['failed']} simulation(s) failed with an error (listed below) and are not in the ranks.")
    if len(table):
        prior = [q for q in table.index if table.loc[q, "learned_from"] == "mostly the prior"]
        data = [q for q in table.index if table.loc[q, "learned_from"] == "the data"]
        if prior:
            out.append(f"Learned mostly from the prior at this design (posterior SD > 80% of prior SD): "
                       f"{', '.join(prior)}.")
        if data:
            out.append(f"Learned from the data (posterior SD at most half the prior SD): {', '.join(data)}.")
    if n < 100:
        out.append(f"With {n} simulations only gross miscalibration is detectable; the full study runs hundreds.")
    return out


def write_calibration_report(out: str | Path) -> Path:
    """Summarize the study in ``out``: ``calibration.json``, ``calibration_table.csv``, figures, ``calibration.html``."""
    from toolkit.calibration.plots import plot_ecdf_differences, plot_rank_histograms

    out = Path(out)
    config = json.loads((out / STUDY_FILE).read_text()) if (out / STUDY_FILE).exists() else {}
    results = load_results(out)
    table, overview = summarize_study(results)
    table.to_csv(out / "calibration_table.csv")
    sentences = verdict_sentences(table, overview, config)
    unconverged = unconverged_fits(results)
    payload = {"config": config, "overview": overview, "summary": sentences,
               "quantities": json.loads(table.to_json(orient="index")),
               "unconverged_fits": json.loads(unconverged.to_json(orient="records"))}
    (out / "calibration.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    verdicts = table["verdict"].to_dict() if len(table) else {}
    images = {}
    for key, fig in (("ecdf", plot_ecdf_differences(results, verdicts=verdicts)),
                     ("ranks", plot_rank_histograms(results))):
        save_figure(fig, figures / key)  # PNG at 300 dpi and SVG, like every figure on disk
        images[key] = _png(fig)

    cov_head = "".join(f"<th>{int(100 * q)}%</th>" for q in COVERAGE_LEVELS)
    rows = []
    for q, r in table.iterrows():
        cov = "".join(f"<td>{_fmt(r[f'coverage_{int(100 * lv)}'], 2)} ± {_fmt(r[f'coverage_{int(100 * lv)}_se'], 1)}</td>"
                      for lv in COVERAGE_LEVELS)
        colour = {"fails": "#fdd", "suspect": "#ffe9b3"}.get(r["verdict"], "")
        rows.append(f"<tr style='background:{colour}'><td>{html.escape(q)}</td><td>{r['kind']}</td><td>{r['n']}</td>"
                    f"<td>{_fmt(r['p_ecdf'])}</td><td>{_fmt(r['p_chi2'])}</td><td><b>{r['verdict']}</b></td>{cov}"
                    f"<td>{_fmt(r['contraction'], 2)}</td><td>{r['learned_from']}</td>"
                    f"<td>{_fmt(r.get('p_oracle', float('nan')))}</td></tr>")
    errors = "".join(f"<li>{html.escape(str(k))}: {v}</li>" for k, v in overview["errors"].items())
    failing_fits = "".join(
        f"<tr><td>{r.sim}</td><td>{r.runs}</td><td>{r.divergences}</td><td>{_fmt(r.max_rhat, 4)}</td>"
        f"<td>{_fmt(r.min_ess_bulk, 4)}</td><td>{_fmt(r.min_ess_tail, 4)}</td><td>{html.escape(r.divergent_at)}</td></tr>"
        for r in unconverged.itertuples())
    failing_fits = (
        "<h3>Fits failing the convergence verdict (kept run)</h3><p>Divergent draws: the parameters whose "
        "divergent draws sit furthest from their posterior mean, as z = (mean of divergent draws - posterior mean) "
        "/ posterior SD.</p><table><tr><th>simulation</th><th>runs</th><th>divergences</th><th>max R-hat</th>"
        f"<th>min bulk ESS</th><th>min tail ESS</th><th>divergent draws at</th></tr>{failing_fits}</table>"
        if failing_fits else "")
    problem = config.get("problem", {})
    settings = config.get("settings", {})
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>Calibration: {html.escape(str(problem.get('model')))}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}td,th{{padding:2px 6px;font-size:13px}}
table{{border-collapse:collapse}}tr{{border-bottom:1px solid #ddd}}.bad{{color:#b00}}</style></head><body>
<h1>Simulation-based calibration: {html.escape(str(problem.get('model')))} ({html.escape(str(problem.get('variant')))})</h1>
<p>Design: {html.escape(json.dumps(problem.get('design', {})))}<br>Sampler: {html.escape(json.dumps(settings))}</p>
<h2>Summary</h2><ul>{''.join(f'<li>{html.escape(s)}</li>' for s in sentences)}</ul>
{f'<h3 class="bad">Failed simulations</h3><ul>{errors}</ul>' if errors else ''}
{failing_fits}
<h2>Per quantity</h2>
<p>p: ECDF test (Säilynoja et al. 2022) and chi-square on rank bins; coverage of central intervals with Monte
Carlo SE; contraction = mean posterior SD / prior SD; p oracle: the ECDF test of an oracle that knows every
patient's true values (no fit), where the model has one: small when the prior draws themselves fell unusually.</p>
<table><tr><th>quantity</th><th>kind</th><th>n</th><th>p ECDF</th><th>p χ²</th><th>verdict</th>{cov_head}
<th>contraction</th><th>learned from</th><th>p oracle</th></tr>{''.join(rows)}</table>
<h2>ECDF difference with simultaneous 95% bands</h2><img src="data:image/png;base64,{images['ecdf']}" style="max-width:100%">
<h2>Rank histograms</h2><img src="data:image/png;base64,{images['ranks']}" style="max-width:100%">
<p>References: Talts et al. (2018) arXiv:1804.06788; Modrák et al. (2023) Bayesian Analysis
doi:10.1214/23-BA1404; Säilynoja, Bürkner &amp; Vehtari (2022) Statistics and Computing 32:32.</p>
</body></html>"""
    path = out / "calibration.html"
    path.write_text(body, encoding="utf-8")
    return path




def calibration_fragment(study: str | Path) -> str:
    """A short HTML section on a calibration study, for a model's report (``toolkit report --calibration``).

    It names the model and the study's size and sampler settings, which quantities
    are calibrated, which fail or are suspect, which are learned mostly from the
    prior at this design, and the share of fits that failed the convergence
    verdict. It reads ``calibration.json`` when the study has been summarized,
    else summarizes the stored simulations; a folder without a study raises
    ``StudyError`` naming it.
    """
    from toolkit.calibration.runner import StudyError

    study = Path(study)
    if not (study / STUDY_FILE).exists():
        raise StudyError(f"{study}: not a calibration study folder (no {STUDY_FILE}); give the --out folder of "
                         "a `toolkit calibrate` run")
    summary = study / "calibration.json"
    if summary.exists():
        payload = json.loads(summary.read_text())
        config, overview, quantities = payload["config"], payload["overview"], payload["quantities"]
    else:
        config = json.loads((study / STUDY_FILE).read_text())
        table, overview = summarize_study(load_results(study))
        quantities = json.loads(table.to_json(orient="index"))
    problem, settings = config.get("problem", {}), config.get("settings", {})
    by = lambda key, value: [q for q, r in quantities.items() if r.get(key) == value]  # noqa: E731
    calibrated, failing = by("verdict", "calibrated"), by("verdict", "fails")
    suspect, prior = by("verdict", "suspect"), by("learned_from", "mostly the prior")
    drawn = [q for q in (*failing, *suspect)
             if isinstance(quantities[q].get("p_oracle"), (int, float)) and quantities[q]["p_oracle"] < ALPHA]
    n, share = overview.get("succeeded", 0), overview.get("share_not_converged", float("nan"))
    names = lambda qs: ", ".join(f"<code>{html.escape(q)}</code>" for q in qs) or "none"  # noqa: E731
    flag = "" if not math.isfinite(share) or share <= MAX_UNCONVERGED_SHARE else " class='bad'"
    small = (f" With {n} simulations only gross miscalibration is detectable." if n < 100 else "")
    return f"""<section class="calibration"><h2>Calibration: {html.escape(str(problem.get('model')))}
({html.escape(str(problem.get('variant', '')))})</h2>
<p>Simulation-based calibration at the design of <i>{html.escape(str(problem.get('design', {}).get('source', '?')))}</i>:
{n} simulations, each fitted with {html.escape(json.dumps(settings))}; {overview.get('failed', 0)} failed with an
error.{small}</p>
<ul><li>Calibrated (ranks uniform): {names(calibrated)}.</li>
<li>Not calibrated: {names(failing)}; suspect: {names(suspect)}.</li>
{f"<li>Of these, the study's prior draws alone depart from uniformity too (an oracle that knows every patient's true values, no fit: p &lt; {ALPHA:g}): {names(drawn)}; another seed settles whether the fits are at fault.</li>" if drawn else ""}
<li>Learned mostly from the prior at this design (posterior SD &gt; 80% of prior SD): {names(prior)}.</li>
<li{flag}>Fits failing the convergence verdict: {overview.get('not_converged', 0)} of {n}
({_fmt(100 * share, 2)}%); kept in the ranks.</li></ul></section>"""
