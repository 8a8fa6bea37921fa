"""Checks of the MRD kinetic model a user looks at, readable in a notebook and in the report.

- :func:`plot_mrd_trajectories`: each analysed patient's assessments (flow,
  NGS and qPCR by marker; quantified filled, below the detection limit open and
  drawn at that limit, PNQ as a bar from the detection to the quantification
  limit) under the model's true-MRD trajectory (posterior median, 90% band);
- :func:`fraction_negative_table` / :func:`plot_fraction_negative`: the share
  of assessments that are MRD-negative by visit window, arm and method, as
  observed and as replicated from the posterior (each assessment measured again
  against its own detection limit);
- :func:`plot_mrd_effects`: forest of the arm effects;
- :func:`write_mrd_figures`: all of them, and the decision densities, in a run's ``figures/`` (PNG and SVG).

Trajectories are the reference assay's scale (NGS when the cohort has it), so
flow values sit off the band by the flow offset the model estimates
(``mrd_method_offset_log10``). Single-panel functions take ``ax=None`` and
return the Axes; grids return the Figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from toolkit.data.mrd_inputs import MrdInputs
from toolkit.plots import ARM_COLORS, count_label, plot_forest, save_figures

__all__ = ["VISIT_EDGES", "fraction_negative_table", "plot_fraction_negative", "plot_mrd_effects",
           "plot_mrd_trajectories", "write_mrd_figures"]

# Visit windows (days since infusion): edges between the usual MRD visits (day 28, months 3, 6, 9, 12, 18, 24)
VISIT_EDGES = (0.0, 60.0, 135.0, 225.0, 315.0, 450.0, 635.0, 900.0, np.inf)
METHOD_MARKERS = {"flow": "o", "ngs": "s", "qpcr": "^"}
METHOD_LABELS = {"flow": "flow", "ngs": "NGS", "qpcr": "qPCR"}
BOTTOM_LOG10 = -8.5  # display floor (fraction): just below the sustained-remission floor 1e-8


def _thinned(posterior, n_draws: int):
    """The posterior Dataset with draws thinned evenly (deterministically) to at most ``n_draws`` in all."""
    from toolkit.mrd_estimands import _posterior

    post = _posterior(posterior)
    total = post.sizes["chain"] * post.sizes["draw"]
    step = max(1, int(np.ceil(total / n_draws)))
    return post.isel(draw=slice(None, None, step))


def _pct(log10_fraction):
    return 100.0 * 10.0 ** np.asarray(log10_fraction, dtype=float)


def _pct_axis(ax):
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, numticks=12))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _draw_assessments(ax, inputs: MrdInputs, rows: np.ndarray, *, color="k", size=3.5):
    """One patient's rows: quantified filled, below LoD open at the LoD, PNQ a bar LoD-LoQ with an open marker."""
    for m, method in enumerate(inputs.methods):
        marker = METHOD_MARKERS.get(method, "o")
        sel = rows[inputs.method[rows] == m]
        code = inputs.censoring[sel]
        q, b, c = sel[code == 0], sel[code == 1], sel[code == 2]
        ax.plot(inputs.day[q], _pct(inputs.log10_value[q]), marker, color=color, ms=size, ls="none")
        ax.plot(inputs.day[b], _pct(inputs.log10_lod[b]), marker, color=color, mfc="white", ms=size, ls="none")
        if c.size:
            ax.vlines(inputs.day[c], _pct(inputs.log10_lod[c]), _pct(inputs.log10_loq[c]), color=color, lw=1)
            mid = 0.5 * (inputs.log10_lod[c] + inputs.log10_loq[c])
            ax.plot(inputs.day[c], _pct(mid), marker, color=color, mfc="white", ms=size, ls="none")


def plot_mrd_trajectories(posterior, inputs: MrdInputs, *, patients: list[str] | None = None, ncols: int = 6,
                          ci_prob: float = 0.9, n_draws: int = 1000, random_seed: int | None = None,
                          residual_df="current"):
    """Grid of per-patient panels: assessments over the model's true-MRD median and ``ci_prob`` band.

    ``patients`` (default: all analysed, control arm first) picks and orders the panels. The band mixes
    the two classes with each draw's posterior class probability (``patient_trajectories``, under the
    measurement error ``residual_df`` of the model that made the draws, as in
    ``toolkit.plots.ppc.mrd_pit``). Returns the Figure.
    """
    from toolkit.mrd_estimands import DEFAULT_SEED, patient_trajectories
    from toolkit.plots.ppc import measurement_error_kwargs

    ids = list(inputs.patient_ids)
    if patients is None:
        patients = [p for a in (0, 1) for p, arm in zip(ids, inputs.arm) if arm == a]
    unknown = sorted(set(patients) - set(ids))
    if unknown:
        raise ValueError(f"not analysed patients: {', '.join(unknown[:10])}; valid: the responders with MRD data")
    max_day = float(np.ceil(max(inputs.day.max(), 28.0) / 30.0) * 30.0)
    days = np.unique(np.r_[np.linspace(0.0, 28.0, 15), np.linspace(28.0, max_day, 60)])
    traj = patient_trajectories(_thinned(posterior, n_draws), inputs, days=days, ci_prob=ci_prob,
                                random_seed=DEFAULT_SEED if random_seed is None else random_seed,
                                **measurement_error_kwargs(residual_df))
    n = len(patients)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.0 * ncols + 0.4, 1.6 * nrows + 0.9), sharex=True,
                             sharey=True, squeeze=False, constrained_layout=True)
    bottom = BOTTOM_LOG10
    for ax, pid in zip(axes.flat, patients):
        i = ids.index(pid)
        color = ARM_COLORS[int(inputs.arm[i])]
        t = traj.loc[[pid]]
        ax.fill_between(t["day"], _pct(np.maximum(t["mrd_log10_lower"], bottom)),
                        _pct(np.maximum(t["mrd_log10_upper"], bottom)), color=color, alpha=0.25, lw=0)
        ax.plot(t["day"], _pct(np.maximum(t["mrd_log10_median"], bottom)), color=color, lw=1.2)
        _draw_assessments(ax, inputs, np.flatnonzero(inputs.assessment_patient == i))
        ax.set_title(pid, fontsize=8, color=color, pad=2)
        ax.grid(alpha=0.3, lw=0.5)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    _pct_axis(axes.flat[0])
    axes.flat[0].set_ylim(_pct(bottom), 100.0)
    axes.flat[0].set_xlim(0, max_day)
    for ax in axes[:, 0]:
        ax.set_ylabel("MRD (%)", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("Days since infusion", fontsize=8)
    handles = [plt.Line2D([], [], color=ARM_COLORS[a], lw=4, alpha=0.5,
                          label=f"{inputs.arm_labels[a]}: model median, {int(round(ci_prob * 100))}% band")
               for a in (0, 1)]
    for method in inputs.methods:
        mk = METHOD_MARKERS.get(method, "o")
        label = METHOD_LABELS.get(method, method)
        handles.append(plt.Line2D([], [], marker=mk, color="k", ls="none", ms=4, label=f"{label} quantified"))
        handles.append(plt.Line2D([], [], marker=mk, color="k", mfc="white", ls="none", ms=4,
                                  label=f"{label} below its limit (drawn at the limit)"))
    if (inputs.censoring == 2).any():
        handles.append(plt.Line2D([], [], marker="|", color="k", ls="none", ms=8,
                                  label="positive, not quantifiable (detection to quantification limit)"))
    fig.legend(handles=handles, loc="outside upper center", ncols=3, fontsize=7, frameon=False)
    return fig


def fraction_negative_table(inputs: MrdInputs, replicated: np.ndarray | None = None, *, edges=VISIT_EDGES,
                            ci_prob: float = 0.9) -> pd.DataFrame:
    """Share of assessments below their own detection limit by visit window, arm and method.

    One row per (method, arm, window) with assessments: ``method``, ``arm`` (0/1), ``window`` (e.g.
    "60-135"), ``day`` (mean assessment day in it), ``n``, ``negative`` (count below the detection
    limit; PNQ counts as positive), ``observed`` (= negative / n). With ``replicated`` (draws x
    assessments booleans, :func:`toolkit.mrd_estimands.replicated_negative`) also ``predicted_median``,
    ``predicted_lower``, ``predicted_upper``: the central ``ci_prob`` interval of the replicated share.
    """
    edges = np.asarray(edges, dtype=float)
    window = np.searchsorted(edges, inputs.day, side="right") - 1
    arm = inputs.arm[inputs.assessment_patient]
    negative = inputs.censoring == 1
    tail = (1.0 - ci_prob) / 2.0
    rows = []
    for m, method in enumerate(inputs.methods):
        for a in (0, 1):
            for w in range(edges.size - 1):
                sel = (inputs.method == m) & (arm == a) & (window == w)
                n = int(sel.sum())
                if n == 0:
                    continue
                hi = "" if np.isinf(edges[w + 1]) else f"{edges[w + 1]:g}"
                row = {"method": method, "arm": a, "window": f"{edges[w]:g}-{hi}", "day": float(inputs.day[sel].mean()),
                       "n": n, "negative": int(negative[sel].sum()), "observed": float(negative[sel].mean())}
                if replicated is not None:
                    share = replicated[:, sel].mean(axis=1)
                    row["predicted_lower"], row["predicted_median"], row["predicted_upper"] = (
                        float(v) for v in np.quantile(share, [tail, 0.5, 1.0 - tail]))
                rows.append(row)
    return pd.DataFrame(rows)


def plot_fraction_negative(table: pd.DataFrame, *, arm_labels=("control", "experimental"), ci_prob: float = 0.9,
                           show_counts: bool = True):
    """Observed (points) vs replicated (dashed median, band) share MRD-negative, one panel per method.

    ``table`` is :func:`fraction_negative_table` output with the predicted columns. ``show_counts`` writes
    "negative/n" beside each point (off in the report, which suppresses small cells). Returns the Figure.
    """
    methods = list(dict.fromkeys(table["method"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(5.2 * len(methods), 3.8), squeeze=False, sharey=True,
                             constrained_layout=True)
    for ax, method in zip(axes.flat, methods):
        for a in (0, 1):
            t = table[(table["method"] == method) & (table["arm"] == a)].sort_values("day")
            if t.empty:
                continue
            color = ARM_COLORS[a]
            offset = -3.0 if a == 0 else 3.0  # side by side at shared visit days
            if "predicted_median" in t:
                ax.fill_between(t["day"], t["predicted_lower"], t["predicted_upper"], color=color, alpha=0.2, lw=0)
                ax.plot(t["day"], t["predicted_median"], color=color, lw=1.2, ls="--")
            ax.plot(t["day"] + offset, t["observed"], "o", color=color, ms=5, label=arm_labels[a])
            for _, r in (t.iterrows() if show_counts else ()):
                ax.annotate(f"{count_label(r['negative'])}/{count_label(r['n'])}", (r["day"] + offset, r["observed"]),
                            xytext=(0, 6 if a else -10),
                            textcoords="offset points", ha="center", fontsize=6, color=color)
        counts = ", negative/n" if show_counts else ""
        ax.set_title(f"{METHOD_LABELS.get(method, method)}: observed (points{counts}) vs model "
                     f"(dashed median, {int(round(ci_prob * 100))}% band)", fontsize=9)
        ax.set(xlabel="Days since infusion (visit window mean)", ylim=(-0.05, 1.08))
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("Share of assessments MRD-negative")
    axes.flat[0].legend(fontsize=8, frameon=False, loc="lower left")
    return fig


EFFECT_LABELS = {"clearance_rate_ratio": "MRD kill rate ratio",
                 "mrd_recurrence_365d_difference": "MRD recurrence by day 365"}


def plot_mrd_effects(estimands: dict):
    """Forest of the arm effects: kill-rate ratio (log scale) and recurrence difference (points). Returns the Figure.

    Both panels are :func:`toolkit.plots.plot_forest`; labels and interval texts are then made readable
    (a difference is written "-9 points (-23 to +7)").
    """
    panels = [(names, reference, log_scale, xlabel) for names, reference, log_scale, xlabel in (
        (["clearance_rate_ratio"], 1.0, True, "Ratio, experimental / control (median, 90% interval)"),
        (["mrd_recurrence_365d_difference"], 0.0, False,
         "Difference, experimental - control (below 0: fewer recurrences)"))
        if all(n in estimands for n in names)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.0, 1.5 * len(panels) + 0.6), squeeze=False,
                             constrained_layout=True)
    for ax, (names, reference, log_scale, xlabel) in zip(axes.flat, panels):
        plot_forest(estimands, names, reference=reference, log_scale=log_scale, ax=ax)
        ax.set_yticks(range(len(names)), [EFFECT_LABELS.get(n, n) for n in reversed(names)])
        for text, name in zip(ax.texts, names):
            v = estimands[name]
            lo, hi = next(x for k, x in v.items() if k.startswith("hdi_"))
            if log_scale:
                text.set_text(f"{v['median']:.2f} ({lo:.2f} to {hi:.2f})")
            else:
                text.set_text(f"{100 * v['median']:+.0f} points ({100 * lo:+.0f} to {100 * hi:+.0f})")
        if log_scale:
            lo_x, hi_x = ax.get_xlim()
            ax.set_xticks([t for t in (0.25, 0.5, 1.0, 2.0, 4.0) if lo_x <= t <= hi_x])
        else:
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{100 * x:+.0f}"))
            xlabel += ", percentage points"
        ax.set_xlabel(xlabel, fontsize=9)
    return fig


def mrd_figure_builders(run) -> dict:
    """``{file name: callable drawing one figure}`` of the MRD checks of a run (or a fit in memory)."""
    from toolkit.mrd_estimands import mrd_inputs_from_run, residual_df_of_run
    from toolkit.plots.ppc import PIT_TITLE, mrd_pit_of_run, mrd_replicated_negative_of_run, plot_pit_ecdf
    from toolkit.plots.publication import decision_densities, plot_decision_densities

    inputs = mrd_inputs_from_run(run)
    posterior = run.posterior["posterior"]
    error = residual_df_of_run(run)  # an old run's figures keep the measurement error it was fitted with
    return {
        "trajectories.png": lambda: plot_mrd_trajectories(posterior, inputs, residual_df=error),
        "fraction_negative.png": lambda: plot_fraction_negative(
            fraction_negative_table(inputs, mrd_replicated_negative_of_run(run.posterior, inputs, residual_df=error)),
            arm_labels=inputs.arm_labels),
        "forest.png": lambda: plot_mrd_effects(run.summary["estimands"]),
        "decisions.png": lambda: plot_decision_densities(decision_densities(run)),
        "pit.png": lambda: plot_pit_ecdf({"MRD": mrd_pit_of_run(run.posterior, inputs, residual_df=error)},
                                         title=PIT_TITLE),
    }


def write_mrd_figures(run, folder) -> list[Path]:
    """Save the MRD checks of a loaded run in ``folder`` (PNG at 300 dpi and SVG); returns the paths."""
    return save_figures(mrd_figure_builders(run), folder)
