"""The investigator report: one self-contained HTML file from one or more runs.

Order: the answer in plain words (generated from the posterior), key
figures, methods (model, priors, data, software), diagnostics. A run that
failed its diagnostics puts a red banner at the top and "provisional" in the
title. Images are embedded (base64 PNG), so the file opens without a network.
Summary-table counts between 1 and 4 are shown as "<5" unless
``show_small_cells`` is set; only pseudonymous codes ever appear.
"""

from __future__ import annotations

import base64
import html
import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from toolkit.inference import Run, RunFolderError, check_writable_destination, load_run
from toolkit.report_cart import cart_answer, cart_figures, cart_prior_rows
from toolkit.report_mrd import mrd_answer, mrd_figures, mrd_prior_rows
from toolkit.report_joint import joint_answer, joint_figures, joint_prior_rows

SMALL_CELL = 5

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2rem; }
.banner { background: #b00020; color: white; padding: .8rem 1rem; border-radius: 4px; font-weight: 600; }
.answer { background: #f4f7fb; border-left: 4px solid #4C72B0; padding: .6rem 1rem; }
.answer li { margin: .3rem 0; } .prob { font-weight: 700; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; }
th { background: #f0f0f0; } .ok { color: #1b7d3a; font-weight: 600; } .bad { color: #b00020; font-weight: 600; }
figure { margin: 1rem 0; } figcaption { font-size: .85rem; color: #555; }
img { max-width: 100%; } .muted { color: #666; font-size: .85rem; }
@media print { .banner { -webkit-print-color-adjust: exact; print-color-adjust: exact; } }
"""


def _e(text) -> str:
    return html.escape(str(text))


def _png(ax) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png", dpi=110)
    plt.close(ax.figure)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(ax, caption: str) -> str:
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{_png(ax)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _count(n: int, show_small_cells: bool) -> str:
    return str(n) if show_small_cells or n == 0 or n >= SMALL_CELL else f"&lt;{SMALL_CELL}"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _points(x: float) -> str:
    """A difference of proportions in percentage points, never "-0"."""
    n = round(100 * x)
    return f"{n:+d} points" if n else "0 points"


def _interval(value: dict, fmt=_pct) -> str:
    lo, hi = next(v for k, v in value.items() if k.startswith("hdi_"))
    return f"{fmt(value['median'])} (90% interval {fmt(lo)} to {fmt(hi)})"


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --------------------------------------------------------------------------- per model


def durability_answer(summary: dict) -> list[str]:
    """Plain-language sentences from a durability summary (HTML-safe)."""
    est, arms = summary["estimands"], summary["arms"]
    ctl, exp = _e(arms["control"]), _e(arms["experimental"])
    among = " among patients who are not cured" if summary.get("variant") == "cure" else ""
    hr = est["hazard_ratio"]
    out = [f'Probability that {exp} lowers the relapse hazard{among}: '
           f'<span class="prob">{est["prob_hr_below_1"]:.2f}</span> (hazard ratio '
           f'{_interval(hr, lambda x: f"{x:.2f}")}).']
    for key, value in est.items():
        if key.startswith("prob_hr_below_") and key != "prob_hr_below_1":
            out.append(f"Probability that the hazard ratio is below {key.removeprefix('prob_hr_below_')}: "
                       f'<span class="prob">{value:.2f}</span>.')
    days = sorted({int(k.split("_")[1].removesuffix("d")) for k in est if k.startswith("rfs_") and k.endswith("_difference")})
    for d in days:
        diff = est[f"rfs_{d}d_difference"]
        probs = [(k.rsplit("_", 1)[1], v) for k, v in est.items() if k.startswith(f"prob_rfs_{d}d_difference_above_")]
        words = "; ".join(f"{'P' if i == 0 else 'p'}robability of {'any improvement' if float(x) == 0 else f'an improvement of at least {100 * float(x):.0f} points'}: "
                          f'<span class="prob">{p:.2f}</span>' for i, (x, p) in enumerate(probs))
        out.append(f"Relapse-free {d} days after remission: {_interval(est[f'rfs_{d}d_control'])} with {ctl} vs "
                   f"{_interval(est[f'rfs_{d}d_experimental'])} with {exp}; difference "
                   f"{_interval(diff, _points)}. {words}.")
    if "cure_fraction_difference" in est:
        out.append(f"Share of responders cured (never relapsing): {_interval(est['cure_fraction_control'])} with {ctl} vs "
                   f"{_interval(est['cure_fraction_experimental'])} with {exp}.")
    out += _competing_answer(est, ctl, exp)
    return out


def _horizons(est: dict, prefix: str) -> list[int]:
    return sorted({int(k.split("_")[1].removesuffix("d")) for k in est
                   if k.startswith(f"{prefix}_") and k.endswith("d_difference")})


def _competing_answer(est: dict, ctl: str, exp: str) -> list[str]:
    """Sentences on event-free survival, response, and relapse with death in remission competing (HTML-safe)."""
    out = []
    if "response_rate_difference" in est:
        out.append(f"Response (CR or CRi) among all infused patients: {_interval(est['response_rate_control'])} with "
                   f"{ctl} vs {_interval(est['response_rate_experimental'])} with {exp}; difference "
                   f"{_interval(est['response_rate_difference'], _points)}.")
    for i, d in enumerate(_horizons(est, "efs")):
        words = ("Event-free survival counts every infused patient from infusion: not responding is an event at "
                 "day 0, then relapse or death. " if i == 0 else "")
        prob = est.get(f"prob_efs_{d}d_difference_above_0")
        tail = f' Probability of any improvement: <span class="prob">{prob:.2f}</span>.' if prob is not None else ""
        out.append(f"{words}Event-free {d} days after infusion: {_interval(est[f'efs_{d}d_control'])} with {ctl} vs "
                   f"{_interval(est[f'efs_{d}d_experimental'])} with {exp}; difference "
                   f"{_interval(est[f'efs_{d}d_difference'], _points)}.{tail}")
    for i, d in enumerate(_horizons(est, "cir")):
        words = ("Cumulative incidence of relapse is the probability of having relapsed by a given day after "
                 "remission, with death in remission (non-relapse mortality) a competing event, not a censoring. "
                 if i == 0 else "")
        out.append(f"{words}Relapsed by {d} days after remission: {_interval(est[f'cir_{d}d_control'])} with {ctl} vs "
                   f"{_interval(est[f'cir_{d}d_experimental'])} with {exp}; difference "
                   f"{_interval(est[f'cir_{d}d_difference'], _points)}. Died in remission by then: "
                   f"{_interval(est[f'nrm_{d}d_control'])} vs {_interval(est[f'nrm_{d}d_experimental'])}.")
    return out


def durability_figures(run: Run) -> list[str]:
    from toolkit.fitting import durability_inputs_from_run
    from toolkit.plots import plot_forest, plot_rfs_overlay

    from toolkit.plots import plot_cir_overlay

    inputs = durability_inputs_from_run(run)
    figures = [
        _figure(plot_rfs_overlay(run.posterior["posterior"], inputs, variant=run.summary["variant"]),
                "Relapse-free survival from remission: observed (Kaplan-Meier steps, ticks = censored) and the "
                "model's estimate (dashed median, shaded 90% band) per arm."),
        _figure(plot_forest(run.summary["estimands"]),
                "Effect of the experimental arm (hazard ratio; below 1 favours the experimental arm)."),
    ]
    if "death_log_shape" in run.posterior["posterior"]:
        figures.append(_figure(plot_cir_overlay(run.posterior["posterior"], inputs),
                               "Cumulative incidence of relapse (solid) and of death in remission (dotted) from "
                               "remission, the two competing: observed (Aalen-Johansen steps) and the model's estimate "
                               "(dashed median, shaded 90% band) per arm."))
    return figures


COUNT_LABELS = {"patients": "patients analysed", "events": "events", "samples": "samples",
                "below_lloq": "samples below LLOQ"}


def _normal_prior_rows(priors: dict) -> list[list[str]]:
    return [[_e(k), f"Normal({v[0]:.3g}, {v[1]:.3g})" if isinstance(v, list) and len(v) == 2 else _e(v)]
            for k, v in priors.items()]


def _data_table(summary: dict, show_small_cells: bool) -> str:
    data = summary.get("data", {})
    per_arm = data.get("per_arm")
    if not per_arm:
        return ""
    first = list(next(iter(per_arm.values())))  # durability: patients, events; cart: patients, samples, below_lloq
    columns = sorted(first, key=lambda c: list(COUNT_LABELS).index(c) if c in COUNT_LABELS else len(COUNT_LABELS))
    rows = [[_e(summary["arms"][arm])] + [_count(v[c], show_small_cells) for c in columns] for arm, v in per_arm.items()]
    note = "" if show_small_cells else f'<p class="muted">Counts from 1 to {SMALL_CELL - 1} are shown as "&lt;{SMALL_CELL}".</p>'
    return _table(["arm"] + [COUNT_LABELS.get(c, c.replace("_", " ")) for c in columns], rows) + note


def _methods(run: Run, show_small_cells: bool) -> str:
    s, p = run.summary, run.provenance
    options = s.get("options", {})
    opts = ", ".join(f"{_e(k)} = {_e(v)}" for k, v in options.items())
    priors = _table(["parameter", "prior"], PRIOR_ROWS.get(s["model"], _normal_prior_rows)(p.get("priors", {})))
    settings = p.get("settings", {})
    versions = ", ".join(f"{_e(k)} {_e(v)}" for k, v in p.get("versions", {}).items() if v)
    spec = p.get("spec") or {}
    rationale = f"<p>{_e(spec.get('rationale', '').strip())}</p>" if spec.get("rationale") else ""
    return (f"<h3>{_e(s['model'])} ({_e(s.get('variant', ''))})</h3>{rationale}"
            f"<p>Analysis choices: {opts}.</p>"
            f"<p>Data: {_e(s.get('cohort', ''))} (data hash <code>{_e(p.get('data_hash', '')[:16])}</code>).</p>"
            f"{_data_table(s, show_small_cells)}<p>Priors (Normal(mean, SD) on the model scale unless stated; sources in the "
            f"model's documentation):</p>{priors}"
            f"<p>Sampler: {_e(settings.get('backend'))}, {_e(settings.get('chains'))} chains × "
            f"{_e(settings.get('tune'))} tuning + {_e(settings.get('draws'))} draws, seed {_e(settings.get('random_seed'))}. "
            f"Software: {versions}.</p>")


def _diagnostics(run: Run) -> str:
    d = run.summary["diagnostics"]
    verdict = '<span class="ok">passed</span>' if d["converged"] else '<span class="bad">FAILED</span>'
    rows = [["max R-hat (≤ 1.01)", f"{d['max_rhat']:.3f}" if d["max_rhat"] is not None else "n/a"],
            ["min bulk ESS (≥ 400)", f"{d['min_ess_bulk']:.0f}" if d["min_ess_bulk"] is not None else "n/a"],
            ["min tail ESS (≥ 400)", f"{d['min_ess_tail']:.0f}" if d["min_ess_tail"] is not None else "n/a"],
            ["divergences (0)", str(d["divergences"])]]
    if d.get("min_bfmi") is not None:
        rows.append(["min E-BFMI (≥ 0.3)", f"{d['min_bfmi']:.2f}"])
    loo = run.summary.get("model_checks", {}).get("loo", {})
    if "elpd_loo" in loo:
        rows.append(["PSIS-LOO elpd (SE)", f"{loo['elpd_loo']:.1f} ({loo['se']:.1f})"])
        rows.append(["max Pareto k (≤ 0.7)", f"{loo['max_pareto_k']:.2f}"])
    elif "error" in loo:
        rows.append(["PSIS-LOO", f"failed: {loo['error']}"])
    problems = "".join(f"<li>{_e(x)}</li>" for x in d.get("problems", []))
    return (f"<h3>{_e(run.summary['model'])} ({_e(run.summary.get('variant', ''))}): {verdict}</h3>"
            + _table(["check", "value"], [[_e(a), _e(b)] for a, b in rows])
            + (f"<ul>{problems}</ul>" if problems else ""))


ANSWERS = {"durability": durability_answer, "cart": cart_answer, "mrd": mrd_answer, "joint": joint_answer}
FIGURES = {"durability": durability_figures, "cart": cart_figures, "mrd": mrd_figures, "joint": joint_figures}
PRIOR_ROWS = {"cart": cart_prior_rows, "mrd": mrd_prior_rows, "joint": joint_prior_rows}


def _generic_answer(summary: dict) -> list[str]:
    out = []
    for key, value in summary["estimands"].items():
        if isinstance(value, dict):
            out.append(f"{_e(key)}: {_interval(value, lambda x: f'{x:.3g}')}")
        else:
            out.append(f'{_e(key)}: <span class="prob">{value:.2f}</span>')
    return out


def _comparison(runs: list[Run]) -> list[str]:
    """One sentence on which durability variant the data favour (PSIS-LOO), when both were fitted to the same data."""
    from toolkit.fitting import compare_runs

    durability = {f"{r.summary['variant']}": r for r in runs if r.summary["model"] == "durability"}
    if len(durability) < 2:
        return []
    try:
        table = compare_runs(durability)
    except ValueError:
        return []
    best, other = table.index[0], table.index[1]
    diff, se = -table.loc[other, "elpd_diff"], table.loc[other, "dse"]
    clear = diff > 2 * se
    verdict = (f"the data clearly favour the {best} model" if clear else
               f"the {best} and {other} models fit about equally well")
    return [f"<p>Model comparison (PSIS-LOO): {verdict} (difference in expected log predictive density "
            f"{diff:.1f}, SE {se:.1f}). Where the cure model is favoured, IFN-α's effect is best read from the "
            "cure fraction and the relapse-free proportions, not from the hazard ratio of the uncured alone.</p>"]


def render_report(runs: list[Run], *, show_small_cells: bool = False) -> str:
    """The report as an HTML string."""
    failed = [r for r in runs if not r.summary["diagnostics"]["converged"]]
    study = runs[0].summary.get("cohort", "CAR-T study")
    title = f"{study}: posterior report" + (" (provisional)" if failed else "")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{CSS}</style></head><body>"]
    if failed:
        names = ", ".join(f"{r.summary['model']} ({r.summary.get('variant', '')})" for r in failed)
        parts.append(f'<div class="banner" role="alert">PROVISIONAL: the fit of {_e(names)} failed its sampling '
                     "diagnostics (see Diagnostics). Its numbers may be wrong and must not be used for decisions.</div>")
    parts.append(f"<h1>{_e(title)}</h1>")
    parts.append("<h2>The answer</h2>")
    for run in runs:
        sentences = ANSWERS.get(run.summary["model"], _generic_answer)(run.summary)
        label = f"{run.summary['model']} ({run.summary.get('variant', '')})"
        warnings = "".join(f"<li class='bad'>{_e(w)}</li>" for w in run.summary.get("warnings", []))
        parts.append(f"<div class='answer'><strong>{_e(label)}</strong><ul>"
                     + "".join(f"<li>{s}</li>" for s in sentences) + warnings + "</ul></div>")
    parts += _comparison(runs)
    parts.append("<p class='muted'>Probabilities are posterior probabilities given the data, the model and its "
                 "priors; intervals are 90% highest-density intervals.</p>")
    parts.append("<h2>Key figures</h2>")
    for run in runs:
        parts += FIGURES.get(run.summary["model"], lambda r: [])(run)
    parts.append("<h2>Methods</h2>")
    parts += [_methods(run, show_small_cells) for run in runs]
    parts.append("<h2>Diagnostics</h2>")
    parts += [_diagnostics(run) for run in runs]
    parts.append("</body></html>")
    return "\n".join(parts)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def html_to_pdf(html_path: Path, pdf_path: Path) -> Path:
    """Print the HTML to PDF with headless Chromium (the browser renders exactly what readers see)."""
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("--pdf needs Chromium: install the Debian package `chromium` (apt-get install chromium)")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--print-to-pdf={pdf_path}", "--no-pdf-header-footer", html_path.resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return pdf_path


# What every report reads from a run's summary.json (the DESIGN contract); model sections need more.
REQUIRED_SUMMARY = (("model",), ("arms", "control"), ("arms", "experimental"), ("estimands",),
                    ("diagnostics", "converged"), ("diagnostics", "max_rhat"), ("diagnostics", "min_ess_bulk"),
                    ("diagnostics", "min_ess_tail"), ("diagnostics", "divergences"))


def check_report_summary(run: Run) -> None:
    """Refuse a run whose ``summary.json`` lacks what the report reads (:class:`RunFolderError`, naming the key).

    Checks the contract keys, then drafts the run's own text sections (cheap:
    no figures), so a missing model-specific estimand is named here rather than
    surfacing as a traceback half-way through the report.
    """
    where = run.path / "summary.json"
    fix = "summary.json is written by `toolkit fit` and is not meant to be edited: re-fit the run with --overwrite"
    absent, missing = object(), []
    for keys in REQUIRED_SUMMARY:  # a key must be there; its value may be null (R-hat of one chain)
        node = run.summary
        for key in keys:
            node = node[key] if isinstance(node, dict) and key in node else absent
        if node is absent:
            missing.append(".".join(keys))
    if missing:
        raise RunFolderError(f"{where} lacks {', '.join(missing)}, which the report needs; {fix}")
    try:
        ANSWERS.get(run.summary["model"], _generic_answer)(run.summary)
        _methods(run, False)
        _diagnostics(run)
    except KeyError as exc:
        raise RunFolderError(f"{where} lacks {exc.args[0]!r}, which the report needs; {fix}") from None
    except (TypeError, ValueError, AttributeError, IndexError, StopIteration) as exc:
        raise RunFolderError(f"{where} has a value the report cannot read ({type(exc).__name__}: {exc}); "
                             f"{fix}") from None


def check_report_path(out, *, pdf: bool = False) -> Path:
    """Refuse a report destination that is a folder or cannot be written, before any run is read."""
    out = Path(out)
    targets = [out] + ([out.with_suffix(".pdf")] if pdf else [])
    for target in targets:
        if target.is_dir():
            raise RunFolderError(f"--out {target} is a folder; give a file name for the report, "
                                 f"e.g. {target / ('report' + (target.suffix or '.html'))}")
    check_writable_destination(out, what="report")
    return out


def _replace_atomically(out: Path, write) -> None:
    """``write(tmp_path)`` into a temporary file beside ``out``, then rename it over ``out``; no debris on failure."""
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes it 0600; the report is meant to be shared
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_report(run_dirs: list, out, *, show_small_cells: bool = False, pdf: bool = False,
                 calibration: list | None = None) -> Path:
    """Write the report for ``run_dirs`` to ``out`` (HTML; and ``out`` with .pdf if ``pdf``).

    The destination is checked first, then every run is loaded (checked
    against its manifest) and its summary checked, before anything is drawn.
    Each file is written to a temporary file in the same folder and renamed
    into place, so a failure leaves the previous report (or none) and no
    temporary file.
    """
    out = check_report_path(out, pdf=pdf)
    runs = [load_run(d) for d in run_dirs]
    for run in runs:
        check_report_summary(run)
    text = render_report(runs, show_small_cells=show_small_cells)
    # --- calibration hook (toolkit report --calibration STUDY): one section per study, before </body>
    if calibration:
        from toolkit.calibration.report import calibration_fragment

        sections = "".join(calibration_fragment(study) for study in calibration)
        text = text.replace("</body>", sections + "</body>", 1) if "</body>" in text else text + sections
    # --- end calibration hook
    out.parent.mkdir(parents=True, exist_ok=True)
    _replace_atomically(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if pdf:
        _replace_atomically(out.with_suffix(".pdf"), lambda tmp: html_to_pdf(out, tmp))
    return out
