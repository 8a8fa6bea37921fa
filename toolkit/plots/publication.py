"""Figures for a paper: Kaplan-Meier with numbers at risk, decision-estimand densities, seaborn overviews.

- :func:`plot_km_at_risk`: Kaplan-Meier per arm, censoring ticks, and the
  number-at-risk table under the axis (counts from
  :func:`toolkit.survival.number_at_risk`, the same table the curve is drawn from).
- :func:`decision_densities` / :func:`plot_decision_densities`: the posterior
  density of each decision estimand with its decision threshold marked and
  P(effect) written on it, computed from the same draws as ``summary.json``.
- :func:`plot_patient_estimates`: patient-level estimates by arm (seaborn box
  and strip); :func:`plot_patient_forest`: one point-range per patient from
  its posterior draws (seaborn point plot, 90% interval).
- :func:`plot_cohort_overview`: the cohort at a glance, by arm (seaborn).

Colours come from :mod:`toolkit.plots.style` (one per arm, everywhere; seaborn's
default desaturation is switched off so a bar is the same colour as a line).
Each function takes data, accepts ``ax=None`` where it draws one panel, and
returns the Axes (or the Figure, for multi-panel figures); none calls ``plt.show()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from toolkit.plots import count_label
from toolkit.plots.style import ARM_COLORS, arm_palette
from toolkit.survival import kaplan_meier, number_at_risk


def _ticks(max_days: float) -> np.ndarray:
    step = next(s for s in (30, 90, 180, 365, 730) if max_days / s <= 8)
    return np.arange(0.0, max_days + 1e-9, step)


def plot_km_at_risk(time_days, event, arm, *, arm_labels=("control", "experimental"), ticks=None,
                    xlabel: str = "Days since remission", ylabel: str = "Relapse-free survival",
                    show_small_cells: bool = False, ax=None):
    """Kaplan-Meier curve per arm with censoring ticks and a number-at-risk table under the axis.

    Parameters
    ----------
    time_days, event, arm : array-like
        Follow-up in days, 1 for an event (0 censored), arm index (0 control, 1 experimental).
    ticks : array-like, optional
        Days at which the numbers at risk are printed (also the x ticks); default a round grid.
    show_small_cells : bool
        Print counts from 1 to 4 as they are (otherwise "<5", as in the report).

    Returns
    -------
    matplotlib.axes.Axes
        The curve's Axes; the table is ``ax.figure.axes[-1]`` (one row per arm,
        one text per tick, in the order of ``ticks``).
    """
    time_days, event, arm = (np.asarray(x) for x in (time_days, event, arm))
    max_days = float(np.ceil(time_days.max() / 30) * 30) if time_days.size else 30.0
    ticks = _ticks(max_days) if ticks is None else np.asarray(ticks, dtype=float)
    if ax is None:
        fig = plt.figure(figsize=(6.5, 4.8), constrained_layout=True)
        ax, table = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [4, 0.3 + 0.25 * len(arm_labels)]})
    else:  # a caller's Axes: the table goes in a new Axes carved from its bottom
        table = ax.inset_axes([0, -0.45, 1, 0.22], sharex=ax)
    for a, label in enumerate(arm_labels):
        mask = arm == a
        if not mask.any():
            continue
        color = ARM_COLORS[a]
        km = kaplan_meier(time_days[mask], event[mask])
        ax.step(km["time"], km["survival"], where="post", color=color, lw=2,
                label=f"{label} (n={count_label(mask.sum(), show_small_cells)}, "
                      f"events={count_label(event[mask].sum(), show_small_cells)})")
        censored = time_days[mask][event[mask] == 0]
        s_at = km["survival"].to_numpy()[np.searchsorted(km["time"].to_numpy(), censored, side="right") - 1]
        ax.plot(censored, s_at, "|", color=color, ms=9, mew=1.5)
        row = len(arm_labels) - 1 - a
        for t, n in zip(ticks, number_at_risk(km, ticks)):
            table.text(t, row, count_label(n, show_small_cells), ha="center", va="center", color=color, fontsize=8)
    ax.plot([], [], "|", color="grey", ms=9, mew=1.5, label="censored")
    ax.set(ylim=(0, 1.02), xlim=(ticks[0] - 0.02 * ticks[-1], ticks[-1] * 1.02), ylabel=ylabel)
    ax.set_xticks(ticks)
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    table.set_ylim(-0.5, len(arm_labels) - 0.5)
    table.set_yticks(range(len(arm_labels)), list(reversed(arm_labels)), fontsize=8)
    for tick, a in zip(table.get_yticklabels(), reversed(range(len(arm_labels)))):
        tick.set_color(ARM_COLORS[a])
    table.tick_params(axis="y", length=0)
    table.set_title("Number at risk", fontsize=8, loc="left")
    for side in ("top", "right", "left"):
        table.spines[side].set_visible(False)
    table.set_xlabel(xlabel)
    table.tick_params(axis="x", labelbottom=True)
    return ax


# --------------------------------------------------------------------------- decision estimands


@dataclass(frozen=True)
class DecisionDensity:
    """Posterior draws of one decision estimand and the threshold its decision is about.

    ``direction`` is ``"below"`` (benefit = value below ``threshold``, e.g. a
    hazard ratio) or ``"above"``; ``probability`` is the share of draws on the
    benefit side, the number ``summary.json`` holds under ``key``.
    """

    name: str
    label: str
    draws: np.ndarray
    threshold: float
    direction: str
    key: str

    @property
    def probability(self) -> float:
        hit = self.draws < self.threshold if self.direction == "below" else self.draws > self.threshold
        return float(np.mean(hit))

    @property
    def statement(self) -> str:
        op = "<" if self.direction == "below" else ">"
        return f"P({self.label} {op} {self.threshold:g}) = {self.probability:.2f}"


def _flat(posterior, name) -> np.ndarray:
    da = posterior[name]
    return da.to_numpy().reshape(da.shape[0] * da.shape[1], *da.shape[2:])


def _thresholds(estimands: dict, prefix: str) -> list[float]:
    return sorted({float(k.removeprefix(prefix)) for k in estimands if k.startswith(prefix)})


def decision_densities(run) -> list[DecisionDensity]:
    """The decision estimands of a run whose draws can be read back from its posterior, with their thresholds.

    Thresholds are those the run reported probabilities for (``prob_*`` keys
    of ``summary.json``), so a figure shows the decisions the analysis plan made:
    durability, the hazard ratio (``prob_hr_below_x``) and the RFS difference
    at each day (``prob_rfs_{D}d_difference_above_x``); CAR-T, the Cmax
    geometric mean ratio; MRD, the clearance-rate ratio; joint, the direct hazard ratio.
    """
    model, est = run.summary["model"], run.summary["estimands"]
    posterior = run.posterior["posterior"]
    out: list[DecisionDensity] = []
    if model == "durability" and "hazard_ratio" in posterior:
        hr = _flat(posterior, "hazard_ratio").ravel()
        for x in _thresholds(est, "prob_hr_below_"):
            out.append(DecisionDensity("hazard_ratio", "HR", hr, x, "below", f"prob_hr_below_{x:g}"))
        days = sorted({int(k.split("_")[2].removesuffix("d")) for k in est
                       if k.startswith("prob_rfs_") and "_difference_above_" in k})
        if days:
            from toolkit.data.from_run import durability_inputs_from_run
            from toolkit.models.durability import survival_curves

            inputs = durability_inputs_from_run(run)
            variant = run.summary["variant"]
            curves = [survival_curves(posterior, inputs, days, variant=variant, arm=a) for a in (0, 1)]
            for j, d in enumerate(days):
                diff = curves[1][:, j] - curves[0][:, j]
                for x in _thresholds(est, f"prob_rfs_{d}d_difference_above_"):
                    out.append(DecisionDensity(f"rfs_{d}d_difference", f"RFS{d} difference", diff, x, "above",
                                               f"prob_rfs_{d}d_difference_above_{x:g}"))
    elif model == "cart" and "cmax_copies_per_ug" in posterior:
        cmax = _flat(posterior, "cmax_copies_per_ug")
        out.append(DecisionDensity("cmax_gmr", "Cmax GMR", cmax[:, 1] / cmax[:, 0], 1.0, "above",
                                   "prob_cmax_gmr_above_1"))
    elif model == "mrd" and "clearance_rate_ratio" in posterior:
        out.append(DecisionDensity("clearance_rate_ratio", "clearance ratio",
                                   _flat(posterior, "clearance_rate_ratio").ravel(), 1.0, "above",
                                   "prob_clearance_rate_ratio_above_1"))
    elif model == "joint" and "hazard_ratio_direct" in posterior:
        out.append(DecisionDensity("hazard_ratio_direct", "direct HR", _flat(posterior, "hazard_ratio_direct").ravel(),
                                   1.0, "below", "prob_hazard_ratio_direct_below_1"))
    return out


def plot_estimand_density(decisions, *, color=ARM_COLORS[1], log_scale: bool | None = None, ax=None):
    """Posterior density (seaborn KDE) of one decision estimand with each decision threshold as a dashed
    line, the benefit side of the first threshold shaded, and P(effect) for each written on the panel.

    ``decisions`` is one :class:`DecisionDensity` or several of the same estimand (same draws, different
    thresholds, e.g. P(HR < 1) and P(HR < 0.7)).
    """
    import matplotlib.ticker

    decisions = [decisions] if isinstance(decisions, DecisionDensity) else list(decisions)
    # shade the least demanding decision (any benefit: HR < 1, difference > 0); list the rest from there
    decisions.sort(key=lambda d: -d.threshold if d.direction == "below" else d.threshold)
    first = decisions[0]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.0), constrained_layout=True)
    draws = first.draws[np.isfinite(first.draws)]
    if log_scale is None:  # ratios read on the log scale, as the forests draw them
        log_scale = bool(np.all(draws > 0)) and all(d.threshold > 0 for d in decisions)
    sns.kdeplot(x=draws, ax=ax, color=color, fill=False, lw=1.8, log_scale=log_scale, cut=0)
    line = ax.lines[-1]
    x, y = line.get_xdata(), line.get_ydata()
    side = x < first.threshold if first.direction == "below" else x > first.threshold
    ax.fill_between(x, 0, y, where=side, color=color, alpha=0.35, lw=0)
    for d in decisions:
        ax.axvline(d.threshold, ymax=0.78 - 0.06 * len(decisions), color="k", ls="--", lw=1)
    ax.set_ylim(0, y.max() * (1.25 + 0.12 * len(decisions)))  # room for the probabilities above the curve
    ax.text(0.02, 0.97, "\n".join(d.statement for d in decisions), transform=ax.transAxes, ha="left", va="top",
            fontsize=8.5)
    if log_scale:
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set(xlabel=f"{first.name} (experimental vs control)", ylabel="posterior density")
    ax.set_yticks([])
    return ax


def plot_decision_densities(decisions: list[DecisionDensity], *, ncols: int = 2):
    """One :func:`plot_estimand_density` panel per decision estimand (its thresholds together); returns the
    Figure."""
    groups: dict[str, list[DecisionDensity]] = {}
    for d in decisions:
        groups.setdefault(d.name, []).append(d)
    n = max(1, len(groups))
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.9 * nrows), constrained_layout=True,
                             squeeze=False)
    for ax, group in zip(axes.flat, groups.values()):
        plot_estimand_density(group, ax=ax)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    if not groups:
        axes.flat[0].set_visible(True)
        axes.flat[0].text(0.5, 0.5, "no decision estimand with draws in this run", ha="center",
                          transform=axes.flat[0].transAxes)
    fig.suptitle("Posterior of each decision quantity: thresholds dashed, any benefit shaded",
                 fontsize=10)
    return fig


# --------------------------------------------------------------------------- patient level, cohort


def plot_patient_estimates(frame: pd.DataFrame, value: str, *, arm_labels=("control", "experimental"),
                           log_scale: bool = True, ylabel: str | None = None, ax=None):
    """Distribution of one patient-level estimate by arm: box (quartiles) and one point per patient.

    ``frame`` has an ``arm`` column (0/1) and ``value`` (e.g. the posterior
    median of each patient's Cmax from :func:`toolkit.estimands.cart_patient_estimands`).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.0), constrained_layout=True)
    data = pd.DataFrame({"arm": [arm_labels[int(a)] for a in frame["arm"]], value: frame[value].to_numpy()})
    palette = arm_palette(arm_labels)
    sns.boxplot(data=data, x="arm", y=value, hue="arm", order=list(arm_labels), palette=palette, ax=ax,
                showfliers=False, boxprops={"alpha": 0.35}, legend=False, log_scale=log_scale, saturation=1)
    sns.stripplot(data=data, x="arm", y=value, hue="arm", order=list(arm_labels), palette=palette, ax=ax,
                  size=4, jitter=0.2, legend=False)
    ax.set(xlabel="", ylabel=ylabel or value.replace("_", " "))
    ax.grid(alpha=0.3, axis="y")
    return ax


def plot_patient_forest(draws: np.ndarray, arm, *, patient_labels=None, arm_labels=("control", "experimental"),
                        xlabel: str = "value", log_scale: bool = True, ci_prob: float = 0.9, ax=None):
    """Point-range forest of a patient-level quantity: posterior median and central ``ci_prob`` interval per
    patient (rows sorted by median, coloured by arm). ``draws`` is (draw, patient)."""
    draws = np.asarray(draws, dtype=float)
    n = draws.shape[1]
    labels = list(patient_labels) if patient_labels is not None else [f"{i + 1}" for i in range(n)]
    order = [labels[i] for i in np.argsort(np.median(draws, axis=0))]
    long = pd.DataFrame({"patient": np.tile(labels, draws.shape[0]), "value": draws.ravel(),
                         "arm": np.tile([arm_labels[int(a)] for a in arm], draws.shape[0])})
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 1.0 + 0.16 * n), constrained_layout=True)
    sns.pointplot(data=long, y="patient", x="value", hue="arm", order=order, hue_order=list(arm_labels),
                  palette=arm_palette(arm_labels), estimator="median", errorbar=("pi", 100 * ci_prob),
                  linestyle="none", markersize=3, err_kws={"linewidth": 1}, log_scale=log_scale, ax=ax,
                  dodge=False)
    ax.set(xlabel=f"{xlabel} (median, {100 * ci_prob:.0f}% interval)", ylabel="")
    ax.tick_params(axis="y", labelsize=6)
    ax.legend(fontsize=8, frameon=False, title=None)
    ax.grid(alpha=0.3, axis="x")
    return ax


def plot_cohort_overview(cohort, *, show_small_cells: bool = False):
    """The cohort by arm (seaborn): best response, follow-up, and each numeric baseline covariate.

    Returns the Figure. Bars of 1-4 patients are labelled "<5" unless ``show_small_cells``.
    """
    arms = list(cohort.arms)
    palette = arm_palette(arms)
    df = cohort.merged()
    covariates = [c for c in ("age_years", "baseline_blasts_pct", "car_t_dose_per_kg")
                  if c in df and pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any()]
    fig, axes = plt.subplots(1, 2 + len(covariates), figsize=(3.3 * (2 + len(covariates)), 3.4),
                             constrained_layout=True, squeeze=False)
    axes = axes.ravel()
    response = df.assign(response=df["response"].fillna("missing"))
    bars = sns.countplot(data=response, x="response", hue="arm", hue_order=arms, palette=palette, ax=axes[0],
                         saturation=1,
                         order=[r for r in ("CR", "CRi", "NR", "missing") if r in set(response["response"])])
    for container in bars.containers:
        bars.bar_label(container, labels=[count_label(b.get_height(), show_small_cells) if b.get_height() else ""
                                          for b in container], fontsize=7)
    axes[0].set(title="Best response", xlabel="", ylabel="patients")
    axes[0].legend(fontsize=7, frameon=False, title=None)
    sns.boxplot(data=df, x="arm", y="last_followup_day", hue="arm", order=arms, hue_order=arms, palette=palette,
                ax=axes[1], legend=False, boxprops={"alpha": 0.5}, saturation=1)
    axes[1].set(title="Follow-up", xlabel="", ylabel="days since infusion")
    for ax, cov in zip(axes[2:], covariates):
        sns.violinplot(data=df, x="arm", y=cov, hue="arm", order=arms, hue_order=arms, palette=palette, ax=ax,
                       legend=False, inner="quart", cut=0, alpha=0.6, saturation=1)
        ax.set(title=cov.replace("_", " "), xlabel="", ylabel="")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    return fig
