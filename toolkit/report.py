"""The investigator report: one self-contained HTML file from one or more runs.

Rendered from Jinja2 templates, one per section, in ``toolkit/templates/report/``
(autoescaped): a statistician changes the wording there, or in a copy of any of
them passed as ``template_dir`` (``toolkit report --templates DIR``), without
touching code. Python computes the numbers; the templates say them.

Order: one paragraph answering the trial's question from the primary analysis
(:func:`primary_run`: the run whose spec says ``primary = true``), then each
analysis in plain words (generated from the posterior), key figures, methods
(model, priors, data, software), diagnostics, and the reviewer's appendix
(prior sensitivity, diagnostics of every run) when ``toolkit.review`` provides
it. A run that failed its diagnostics puts a red banner at the top and
"provisional" in the title. Images are embedded (base64 PNG), so the file
opens without a network. Summary-table counts between 1 and 4 are shown as
"<5" unless ``show_small_cells`` is set; only pseudonymous codes ever appear.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from markupsafe import Markup

from toolkit.inference import Run, RunFolderError, check_writable_destination, load_run
from toolkit.report_format import _e, _figure, _png, decision_figures, pit_figure  # noqa: F401
from toolkit.report_cart import cart_answer, cart_figures, cart_prior_rows
from toolkit.report_mrd import mrd_answer, mrd_figures, mrd_prior_rows
from toolkit.report_joint import joint_answer, joint_figures, joint_prior_rows
from toolkit.review import report_fragments

SMALL_CELL = 5

#: The report's templates (package data; see pyproject.toml).
TEMPLATE_DIR = Path(__file__).parent / "templates" / "report"


class ReportTemplateError(ValueError):
    """A report template that cannot be used; the message names the file, the line and the fix."""


def _count_text(n: int, show_small_cells: bool) -> str:
    """A table count as text (the template escapes it): "<5" for 1-4 unless ``show_small_cells``."""
    return str(n) if show_small_cells or n == 0 or n >= SMALL_CELL else f"<{SMALL_CELL}"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _points(x: float) -> str:
    """A difference of proportions in percentage points, never "-0"."""
    n = round(100 * x)
    return f"{n:+d} points" if n else "0 points"


def _interval(value: dict, fmt=_pct) -> str:
    lo, hi = next(v for k, v in value.items() if k.startswith("hdi_"))
    return f"{fmt(value['median'])} (90% interval {fmt(lo)} to {fmt(hi)})"


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
    from toolkit.plots.ppc import durability_event_name, durability_pit_of_run
    from toolkit.plots.publication import plot_km_at_risk

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
    figures.append(_figure(plot_km_at_risk(inputs.time_years * 365.25, inputs.event, inputs.arm,
                                           arm_labels=inputs.arm_labels),
                           "Relapse-free survival from remission per arm (Kaplan-Meier; ticks = censored), with the "
                           "number of patients still at risk under the axis (1 to 4 shown as \"<5\")."))
    figures += decision_figures(run)
    figures.append(pit_figure({durability_event_name(run.posterior["posterior"]):
                               durability_pit_of_run(run.posterior, inputs)}))
    return figures


COUNT_LABELS = {"patients": "patients analysed", "events": "events", "samples": "samples",
                "below_lloq": "samples below LLOQ"}


def _normal_prior_rows(priors: dict) -> list[list[str]]:
    return [[_e(k), f"Normal({v[0]:.3g}, {v[1]:.3g})" if isinstance(v, list) and len(v) == 2 else _e(v)]
            for k, v in priors.items()]


def _data_table(summary: dict, show_small_cells: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows (plain text) of the per-arm counts table; no rows when the summary has none."""
    data = summary.get("data", {})
    per_arm = data.get("per_arm")
    if not per_arm:
        return [], []
    first = list(next(iter(per_arm.values())))  # durability: patients, events; cart: patients, samples, below_lloq
    columns = sorted(first, key=lambda c: list(COUNT_LABELS).index(c) if c in COUNT_LABELS else len(COUNT_LABELS))
    rows = [[summary["arms"][arm]] + [_count_text(v[c], show_small_cells) for c in columns]
            for arm, v in per_arm.items()]
    return ["arm"] + [COUNT_LABELS.get(c, c.replace("_", " ")) for c in columns], rows


def _methods(run: Run, show_small_cells: bool) -> dict:
    """What ``methods.html.j2`` says of one run (prior rows are HTML made safe by the model's section)."""
    s, p = run.summary, run.provenance
    priors = PRIOR_ROWS.get(s["model"], _normal_prior_rows)(p.get("priors", {}))
    spec = p.get("spec") or {}
    header, rows = _data_table(s, show_small_cells)
    settings = p.get("settings", {})
    return {"model": s["model"], "variant": s.get("variant", ""),
            "rationale": spec.get("rationale", "").strip() if spec.get("rationale") else "",
            "options": list(s.get("options", {}).items()),
            "cohort": s.get("cohort", ""), "data_hash": p.get("data_hash", "")[:16],
            "data_header": header, "data_rows": rows,
            "priors": [(Markup(name), Markup(text)) for name, text in priors],
            "settings": {k: settings.get(k) for k in ("backend", "chains", "tune", "draws", "random_seed")},
            "versions": [(k, v) for k, v in p.get("versions", {}).items() if v]}


def _diagnostics(run: Run) -> dict:
    """What ``diagnostics.html.j2`` says of one run: the verdict, the checks and their values, the problems."""
    from toolkit.review import failure_level_of_run

    d = run.summary["diagnostics"]
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
    return {"model": run.summary["model"], "variant": run.summary.get("variant", ""),
            "converged": bool(d["converged"]), "rows": rows, "problems": list(d.get("problems", [])),
            "where": "" if d["converged"] else failure_level_of_run(run.path, run.posterior)}


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


def _comparison(runs: list[Run]) -> dict | None:
    """Which durability variant the data favour (PSIS-LOO), when both were fitted to the same data."""
    from toolkit.fitting import compare_runs

    durability = {f"{r.summary['variant']}": r for r in runs if r.summary["model"] == "durability"}
    if len(durability) < 2:
        return None
    try:
        table = compare_runs(durability)
    except ValueError:
        return None
    best, other = table.index[0], table.index[1]
    diff, se = -table.loc[other, "elpd_diff"], table.loc[other, "dse"]
    return {"best": best, "other": other, "diff": float(diff), "se": float(se), "clear": bool(diff > 2 * se)}


def mode_notes(runs: list[Run]) -> list[str]:
    """Plain-text notes for runs made in fast mode (``toolkit analyze --fast``) or with TOOLKIT_NOTEBOOK_FAST set
    (``banner.html.j2`` shows them)."""
    fast = [r for r in runs if r.provenance.get("fast")]
    env = sorted({f"{k}={v}" for r in runs for k, v in (r.provenance.get("environment") or {}).items()})
    text = []
    if fast:
        text.append(f"FAST MODE: {len(fast)} of {len(runs)} analyses were sampled with short smoke-run settings "
                    "(see Methods); their numbers are not for decisions.")
    if env:
        text.append(f"Fitted with {', '.join(env)} set in the environment.")
    return text


# --------------------------------------------------------------------------- the primary answer


def _spec(run: Run) -> dict:
    return run.provenance.get("spec") or {}


def primary_run(runs: list[Run]) -> tuple[Run, str]:
    """The run that answers the trial's question, and how it was chosen.

    The analysis plan marks it with ``primary = true`` in its spec file
    (``models/durability_primary.toml``); ``how`` is then ``"spec"``. Runs
    fitted before the key existed fall back to the durability run whose spec
    file name ends in ``_primary``, then the first durability run, then the
    first run (``how`` says which, and the report says so).
    """
    for run in runs:
        if _spec(run).get("primary") is True:
            return run, "spec"
    durability = [r for r in runs if r.summary["model"] == "durability"]
    for run in durability:
        if Path(str(_spec(run).get("path", ""))).stem.endswith("_primary"):
            return run, f"the durability analysis of {Path(str(_spec(run)['path'])).name}"
    if durability:
        return durability[0], "the first durability analysis given"
    return runs[0], "the first analysis given"


HEADLINES = {"cart": ("cmax_gmr", "prob_cmax_gmr_above_1"), "mrd": ("clearance_rate_ratio",
                                                                    "prob_clearance_rate_ratio_above_1"),
             "joint": ("hazard_ratio_total", "prob_hazard_ratio_total_below_1")}


def primary_context(run: Run, how: str) -> dict:
    """The numbers ``primary.html.j2`` words: for durability, RFS at 365 days (else the first day reported)
    per arm, their difference and P(any improvement), and the hazard ratio with P(HR < 1); for the other
    models their headline effect and its probability."""
    s, est = run.summary, run.summary["estimands"]
    out = {"model": s["model"], "variant": s.get("variant", ""), "title": _spec(run).get("title", ""),
           "converged": bool(s["diagnostics"]["converged"]), "how": how}
    if s["model"] == "durability":
        days = sorted({int(k.split("_")[1].removesuffix("d")) for k in est
                       if k.startswith("rfs_") and k.endswith("d_difference")})
        day = 365 if 365 in days else (days[0] if days else None)
        if day is not None and f"prob_rfs_{day}d_difference_above_0" in est:
            out["day"] = day
            out["rfs"] = {"control": est[f"rfs_{day}d_control"], "experimental": est[f"rfs_{day}d_experimental"],
                          "difference": est[f"rfs_{day}d_difference"],
                          "prob": est[f"prob_rfs_{day}d_difference_above_0"]}
        out["hazard_ratio"] = est["hazard_ratio"]
        out["prob_hr_below_1"] = est["prob_hr_below_1"]
    elif s["model"] in HEADLINES and all(k in est for k in HEADLINES[s["model"]]):
        effect, prob = HEADLINES[s["model"]]
        out.update(effect=est[effect], prob=est[prob])
    else:
        out["model"] = "other"
    return out


# --------------------------------------------------------------------------- templates


_FORMATS = {"pct": _pct, "points": _points, "ratio": lambda x: f"{x:.2f}", "number": lambda x: f"{x:.3g}"}


def template_environment(template_dir=None):
    """The Jinja2 environment of the report: autoescaped, strict about undefined names.

    Templates in ``template_dir`` (if given) take precedence, file by file,
    over the package's, so a copy of one section is enough to reword it.
    Filters: ``interval(value, "pct"|"points"|"ratio"|"number")`` (median and
    90% interval), ``prob`` (two decimals).
    """
    import jinja2

    paths = [str(TEMPLATE_DIR)]
    if template_dir is not None:
        folder = Path(template_dir)
        if not folder.is_dir():
            raise ReportTemplateError(f"--templates {folder}: not a folder; give a folder holding copies of the "
                                      f"report templates (the originals are in {TEMPLATE_DIR})")
        paths.insert(0, str(folder))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(paths), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["interval"] = lambda value, fmt="number": _interval(value, _FORMATS[fmt])
    env.filters["prob"] = lambda p: f"{p:.2f}"
    return env


def _calibration_sections(studies: list | None) -> Markup:
    """The summary of each ``toolkit calibrate`` study (:func:`toolkit.calibration.report.calibration_fragment`)."""
    if not studies:
        return Markup("")
    from toolkit.calibration.report import calibration_fragment

    return Markup("\n").join(Markup(calibration_fragment(study)) for study in studies)


def render_report(runs: list[Run], *, show_small_cells: bool = False, template_dir=None,
                  calibration: list | None = None) -> str:
    """The report as an HTML string, rendered from ``report.html.j2`` and its section templates.

    ``calibration``: folders of ``toolkit calibrate`` studies whose summaries go in the Calibration section.
    """
    import jinja2

    env = template_environment(template_dir)
    primary, how = primary_run(runs)
    ordered = [primary] + [r for r in runs if r is not primary]
    review = report_fragments(ordered)  # HTML-safe by construction (values escaped in toolkit.review)
    failed = [r for r in ordered if not r.summary["diagnostics"]["converged"]]
    study = runs[0].summary.get("cohort", "CAR-T study")
    analyses = []
    for run in ordered:
        sentences = ANSWERS.get(run.summary["model"], _generic_answer)(run.summary)
        analyses.append({"label": f"{run.summary['model']} ({run.summary.get('variant', '')})",
                         "primary": run is primary,
                         "sentences": [Markup(x) for x in sentences],  # HTML-safe by construction (values escaped)
                         "warnings": list(run.summary.get("warnings", []))})
    figures = [Markup(f) for run in ordered for f in FIGURES.get(run.summary["model"], lambda r: [])(run)]
    context = {
        "title": f"{study}: posterior report" + (" (provisional)" if failed else ""),
        "failed": [f"{r.summary['model']} ({r.summary.get('variant', '')})" for r in failed],
        "mode_notes": mode_notes(runs),
        "arms": primary.summary["arms"],
        "p": primary_context(primary, how),
        "analyses": analyses,
        "comparison": _comparison(runs),
        "figures": figures,
        "methods": [_methods(run, show_small_cells) for run in ordered],
        "diagnostics": [_diagnostics(run) for run in ordered],
        "show_small_cells": show_small_cells, "small_cell": SMALL_CELL,
        "appendix": Markup(review["appendix"]),
        "sensitivity": Markup(review["sensitivity"]),
        "calibration": _calibration_sections(calibration),
    }
    try:
        return env.get_template("report.html.j2").render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise ReportTemplateError(f"report template {exc.filename or exc.name}, line {exc.lineno}: {exc.message}; "
                                  "fix the template or remove your copy to use the original") from None
    except jinja2.TemplateNotFound as exc:
        raise ReportTemplateError(f"report template {exc.name} not found in {TEMPLATE_DIR} or --templates; "
                                  "restore it") from None
    except jinja2.UndefinedError as exc:
        raise ReportTemplateError(f"a report template uses a name the report does not provide ({exc.message}); "
                                  "check the names against the originals in " + str(TEMPLATE_DIR)) from None


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
        primary_context(run, "spec")
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
                 template_dir=None, calibration: list | None = None) -> Path:
    """Write the report for ``run_dirs`` to ``out`` (HTML; and ``out`` with .pdf if ``pdf``).

    The destination is checked first, then every run is loaded (checked
    against its manifest) and its summary checked, before anything is drawn.
    Each file is written to a temporary file in the same folder and renamed
    into place, so a failure leaves the previous report (or none) and no
    temporary file.
    """
    out = check_report_path(out, pdf=pdf)
    template_environment(template_dir)  # a --templates folder that is not there is refused before any run is read
    runs = [load_run(d) for d in run_dirs]
    for run in runs:
        check_report_summary(run)
    text = render_report(runs, show_small_cells=show_small_cells, template_dir=template_dir,
                         calibration=calibration)
    out.parent.mkdir(parents=True, exist_ok=True)
    _replace_atomically(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if pdf:
        _replace_atomically(out.with_suffix(".pdf"), lambda tmp: html_to_pdf(out, tmp))
    return out
