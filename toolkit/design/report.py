"""Tables, a figure and an HTML section of a design study's operating characteristics."""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.design.spec import Design


def _pm(x: float, se: float, pct: bool = True, digits: int = 1) -> str:
    if not math.isfinite(x):
        return "—"
    if pct:
        return f"{100 * x:.{digits}f}% ± {100 * se:.{digits}f}" if math.isfinite(se) else f"{100 * x:.{digits}f}%"
    return f"{x:.{digits}f} ± {se:.{digits}f}" if math.isfinite(se) else f"{x:.{digits}f}"


def oc_table(design: Design, oc: pd.DataFrame) -> pd.DataFrame:
    """The readable table: one row per scenario, figures as 'estimate ± Monte Carlo SE'."""
    rows = []
    for _, r in oc.iterrows():
        row = {"scenario": r["scenario"], "trials": int(r["trials"]),
               "P(success)": _pm(r["p_success"], r["p_success_se"])}
        kind = " (PoS)" if design.boundary == "predictive" else ""  # which statistic the boundaries are on
        for i, lk in enumerate(design.looks):
            row[f"stop success{kind} @ {lk.name}"] = _pm(r[f"p_stop_success_{i + 1}"], r[f"p_stop_success_{i + 1}_se"])
            row[f"stop futility{kind} @ {lk.name}"] = _pm(r[f"p_stop_futility_{i + 1}"],
                                                    r[f"p_stop_futility_{i + 1}_se"])
        if design.looks:
            row["flip-flop"] = _pm(r["p_flip_flop"], r["p_flip_flop_se"])
        row["E[N]"] = _pm(r["expected_n"], r["expected_n_se"], pct=False)
        row["E[months]"] = _pm(r["expected_months"], r["expected_months_se"], pct=False)
        row[f"true {design.estimand}"] = f"{r['truth']:.3g}" if math.isfinite(r["truth"]) else "—"
        row["bias at stop"] = _pm(r["bias_at_stop"], r["bias_at_stop_se"], pct=False, digits=3)
        row["fits not converged"] = f"{int(r['fits_not_converged'])}/{int(r['fits'])}"
        row["fits failed"] = f"{int(r['fits_failed'])}/{int(r['fits'])}"
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(map(str, r)) + " |" for r in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def plot_operating_characteristics(design: Design, oc: pd.DataFrame, ax=None):
    """Stacked bars per scenario: P(stop for success / futility) at each interim, success and failure at the
    final analysis; error bars on P(success) (± 2 Monte Carlo SE). Returns the Axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(oc))
    bottom = np.zeros(len(oc))
    colors = plt.get_cmap("tab20").colors
    parts = []
    for i, lk in enumerate(design.looks):
        parts.append((f"success at {lk.name}", oc[f"p_stop_success_{i + 1}"].to_numpy(), colors[4 + 2 * i]))
        parts.append((f"futility at {lk.name}", oc[f"p_stop_futility_{i + 1}"].to_numpy(), colors[6 + 2 * i]))
    interim_success = sum(oc[f"p_stop_success_{i + 1}"].to_numpy() for i in range(len(design.looks))) \
        if design.looks else 0.0
    interim_fut = sum(oc[f"p_stop_futility_{i + 1}"].to_numpy() for i in range(len(design.looks))) \
        if design.looks else 0.0
    final_success = oc["p_success"].to_numpy() - interim_success
    parts.append(("success at final", final_success, colors[2]))
    parts.append(("not successful at final", 1 - oc["p_success"].to_numpy() - interim_fut,
                  colors[15]))
    for label, height, color in parts:
        ax.bar(x, height, bottom=bottom, label=label, color=color, width=0.6)
        bottom += np.nan_to_num(height)
    ax.errorbar(x, oc["p_success"], yerr=2 * oc["p_success_se"], fmt="none", ecolor="black", capsize=4,
                label="P(success) ± 2 MC SE")
    ax.set_xticks(x, oc["scenario"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title(f"Operating characteristics: {design.rule_text()}", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return ax


def sentences(design: Design, oc: pd.DataFrame) -> list[str]:
    """What the table says, in words an investigator can read."""
    out = [f"Each simulated trial enrols up to {design.max_patients} patients at {design.patients_per_month:g} a "
           f"month and is declared a success when {design.rule_text()} at the final analysis, "
           f"{design.final_after_last_patient_days:g} days after the last patient's infusion."]
    if design.looks:
        looks = ", ".join(lk.name for lk in design.looks)
        text = design.boundary_text()
        verb = "the trial would " if text.startswith("stop") else "there are "
        out.append(f"At the interim look(s) ({looks}) {verb}{text}.")
    for _, r in oc.iterrows():
        name = r["scenario"]
        what = ("the type I error (a false claim of benefit)" if name == "no_effect" else
                "the chance of a false claim of benefit" if name == "harmful" else "the power")
        n = int(r["trials_with_result"])
        s = (f"Scenario '{name}': the trial declares IFN-a beneficial in {_pm(r['p_success'], r['p_success_se'])} "
             f"of {n} simulated trials ({what}; ± one Monte Carlo standard error). ")
        if n and r["p_success"] in (0.0, 1.0):  # the binomial SE is 0 there and says nothing
            bound = 1 - 0.05 ** (1 / n)  # exact one-sided 95% bound with 0 of n (Clopper-Pearson)
            s += (f"With {n} trials and none {'failing' if r['p_success'] == 1 else 'succeeding'}, the true "
                  f"probability could still be {'as low as' if r['p_success'] == 1 else 'as high as'} "
                  f"{100 * (1 - bound if r['p_success'] == 1 else bound):.0f}% (exact one-sided 95% bound). ")
        s += (f"It enrols {_pm(r['expected_n'], r['expected_n_se'], pct=False)} patients and lasts "
              f"{_pm(r['expected_months'], r['expected_months_se'], pct=False)} months on average. ")
        if design.looks:
            s += (f"{_pm(r['p_flip_flop'], r['p_flip_flop_se'])} of trials cross the interim success boundary but "
                  "would fail at the final analysis (flip-flops). ")
        if math.isfinite(r["bias_at_stop"]):
            s += (f"The estimate of {design.estimand} at stopping is off the truth ({r['truth']:.3g}) by "
                  f"{_pm(r['bias_at_stop'], r['bias_at_stop_se'], pct=False, digits=3)} on average. ")
        if r["fits_not_converged"] or r["fits_failed"]:
            s += (f"{int(r['fits_not_converged'])} of {int(r['fits'])} fits did not pass the convergence "
                  f"diagnostics and {int(r['fits_failed'])} failed; they are included as they are (a failed "
                  "interim takes no decision; a trial whose final analysis failed has no result).")
        out.append(s.strip())
    return out


def write_design_report(design: Design, oc: pd.DataFrame, out: str | Path, *, command: str = "") -> dict:
    """Write ``operating_characteristics.csv`` (numbers), ``.md`` (readable table), ``figure.png`` and
    ``design.html`` (the HTML section) into ``out``; returns their paths."""
    import matplotlib.pyplot as plt

    out = Path(out)
    oc.to_csv(out / "operating_characteristics.csv", index=False)
    table = oc_table(design, oc)
    md = markdown_table(table)
    (out / "operating_characteristics.md").write_text(
        f"# {design.title}\n\nRule: {design.rule_text()}\n\nInterim boundaries: {design.boundary_text()}\n\n"
        f"{md}\n" + "\n\n".join(sentences(design, oc)) + "\n")
    ax = plot_operating_characteristics(design, oc)
    ax.figure.savefig(out / "figure.png", dpi=120, bbox_inches="tight")
    plt.close(ax.figure)
    import base64

    png = base64.b64encode((out / "figure.png").read_bytes()).decode()
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>"
                   for r in table.itertuples(index=False))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    paragraphs = "".join(f"<p>{html.escape(s)}</p>" for s in sentences(design, oc))
    section = (f"<section id='design'><h2>Trial design: {html.escape(design.title)}</h2>{paragraphs}"
               f"<table border='1' cellpadding='3' style='border-collapse:collapse;font-size:small'>"
               f"<tr>{head}</tr>{rows}</table><img alt='operating characteristics' "
               f"src='data:image/png;base64,{png}'/>"
               + (f"<p><small>Command: <code>{html.escape(command)}</code></small></p>" if command else "")
               + "</section>")
    (out / "design.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>"
                                     f"{html.escape(design.title)}</title></head><body>{section}</body></html>\n")
    return {k: out / f for k, f in (("csv", "operating_characteristics.csv"), ("md", "operating_characteristics.md"),
                                    ("figure", "figure.png"), ("html", "design.html"))}
