"""Figures, readable in a notebook and in the report alike.

Every function takes posterior quantities (or a summary), accepts ``ax=None``
and returns the matplotlib Axes; none calls ``plt.show()``.
"""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

import matplotlib.pyplot as plt
import numpy as np

from toolkit.survival import kaplan_meier

from toolkit.plots.style import ARM_COLORS, save_figure  # noqa: F401  (one colour per arm, everywhere)

#: Counts from 1 to SMALL_CELL - 1 are shown as "<5" in legends and annotations,
#: as in the report's tables: a small cell can identify a patient.
SMALL_CELL = 5


def count_label(n, show_small_cells: bool = False) -> str:
    """A count as printed in a figure: ``"<5"`` for 1-4 unless ``show_small_cells``."""
    n = int(n)
    return str(n) if show_small_cells or n == 0 or n >= SMALL_CELL else f"<{SMALL_CELL}"


def _axes(ax, figsize=(6.5, 4.2)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, constrained_layout=True)
    return ax


def plot_rfs_overlay(posterior, inputs, *, variant: str, max_days: float | None = None, ci_prob: float = 0.9,
                     ax=None, show_small_cells: bool = False):
    """Kaplan-Meier RFS per arm (steps, + censored) over the posterior median and band of S(t).

    The band is the central ``ci_prob`` interval of the model's RFS curve per
    arm (standardized over the cohort's covariates).
    """
    from toolkit.models.durability import survival_curves

    ax = _axes(ax)
    days_obs = inputs.time_years * 365.25
    max_days = max_days or float(np.ceil(days_obs.max() / 90) * 90)
    grid = np.linspace(0.5, max_days, 200)
    tail = (1 - ci_prob) / 2
    for arm, label in enumerate(inputs.arm_labels):
        color = ARM_COLORS[arm]
        s = survival_curves(posterior, inputs, grid, variant=variant, arm=arm)
        lo, med, hi = np.quantile(s, [tail, 0.5, 1 - tail], axis=0)
        ax.fill_between(grid, lo, hi, color=color, alpha=0.2, lw=0)
        ax.plot(grid, med, color=color, lw=1.5, ls="--")
        mask = inputs.arm == arm
        km = kaplan_meier(days_obs[mask], inputs.event[mask])
        ax.step(km["time"], km["survival"], where="post", color=color, lw=2,
                label=f"{label} (n={count_label(mask.sum(), show_small_cells)}, "
                      f"events={count_label(inputs.event[mask].sum(), show_small_cells)})")
        censored = days_obs[mask][inputs.event[mask] == 0]
        s_at = km["survival"].to_numpy()[np.searchsorted(km["time"].to_numpy(), censored, side="right") - 1]
        ax.plot(censored, s_at, "|", color=color, ms=8, mew=1.5)
    ax.set(xlim=(0, max_days), ylim=(0, 1.02), xlabel="Days since remission",
           ylabel="Relapse-free survival")
    ax.set_title(f"Kaplan-Meier (steps) and model ({variant}): median, {int(ci_prob * 100)}% band", fontsize=10)
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return ax


def plot_cir_overlay(posterior, inputs, *, max_days: float | None = None, ci_prob: float = 0.9, ax=None):
    """Aalen-Johansen cumulative incidence of relapse and of death in remission per arm (steps) over the
    posterior median and band of CIR(t) and NRM(t) (``toolkit.models.durability.cumulative_incidences``).

    Time is days since remission; relapse and death in remission compete, HSCT
    (``censor`` policy) and end of follow-up censor.
    """
    from toolkit.models.durability import cumulative_incidences
    from toolkit.survival import aalen_johansen

    ax = _axes(ax)
    days_obs = inputs.time_years * 365.25
    max_days = max_days or float(np.ceil(days_obs.max() / 90) * 90)
    tail = (1 - ci_prob) / 2
    cause = np.where(inputs.competing == 1, 2, np.where(inputs.event == 1, 1, 0))
    for arm, label in enumerate(inputs.arm_labels):
        color = ARM_COLORS[arm]
        grid, cir, nrm = cumulative_incidences(posterior, inputs, max_days, arm=arm)
        step = max(1, grid.size // 300)
        for curve, ls in ((cir, "--"), (nrm, ":")):
            lo, med, hi = np.quantile(curve[:, ::step], [tail, 0.5, 1 - tail], axis=0)
            ax.fill_between(grid[::step], lo, hi, color=color, alpha=0.15, lw=0)
            ax.plot(grid[::step], med, color=color, lw=1.2, ls=ls)
        mask = inputs.arm == arm
        for code, ls, what in ((1, "-", "relapse"), (2, ":", "death in remission")):
            aj = aalen_johansen(days_obs[mask], cause[mask], event_of_interest=code)
            ax.step(aj["time"], aj["cif"], where="post", color=color, lw=2, ls=ls,
                    label=f"{label}: {what} (n={mask.sum()}, events={int(np.sum(cause[mask] == code))})")
    ax.set(xlim=(0, max_days), ylim=(0, 1.02), xlabel="Days since remission", ylabel="Cumulative incidence")
    ax.set_title(f"Aalen-Johansen (steps) and model: median, {int(ci_prob * 100)}% band", fontsize=10)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    return ax


def plot_forest(estimands: dict, names: list[str] | None = None, *, reference: float | None = 1.0,
                log_scale: bool = True, ax=None):
    """Forest plot of effect estimands (median and interval) from a summary's ``estimands``."""
    if names is None:
        names = [n for n, v in estimands.items() if isinstance(v, dict) and
                 (n.endswith("ratio") or n.endswith("_gmr") or n.startswith("hazard_ratio"))]
        for alias in ("hazard_ratio_uncured", "hazard_ratio_relapse"):
            if estimands.get(alias) == estimands.get("hazard_ratio"):
                names = [n for n in names if n != alias]  # an alias, not a second effect
    rows = [(n, estimands[n]) for n in names if n in estimands and isinstance(estimands[n], dict)]
    ax = _axes(ax, figsize=(6.5, 0.5 * len(rows) + 1.2))
    for i, (name, value) in enumerate(rows):
        lo, hi = next(v for k, v in value.items() if k.startswith("hdi_"))
        y = len(rows) - 1 - i
        ax.plot([lo, hi], [y, y], color="k", lw=2)
        ax.plot(value["median"], y, "o", color="k")
        ax.annotate(f"{value['median']:.2f} ({lo:.2f}-{hi:.2f})", (hi, y), xytext=(6, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [n for n, _ in reversed(rows)])
    if reference is not None:
        ax.axvline(reference, color="grey", ls=":", lw=1)
    if log_scale:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("Experimental vs control (median, 90% interval)")
    ax.margins(x=0.25, y=0.3)
    return ax


def durability_figure_builders(run) -> dict:
    """``{file name: callable drawing one figure}`` of the durability checks of a run (or a fit in memory)."""
    from toolkit.data.from_run import durability_inputs_from_run
    from toolkit.plots.ppc import PIT_TITLE, durability_event_name, durability_pit_of_run, plot_pit_ecdf
    from toolkit.plots.publication import decision_densities, plot_decision_densities, plot_km_at_risk

    inputs = durability_inputs_from_run(run)
    posterior = run.posterior["posterior"]
    figures = {"rfs_overlay.png": lambda: plot_rfs_overlay(posterior, inputs, variant=run.summary["variant"]),
               "forest.png": lambda: plot_forest(run.summary["estimands"])}
    if "death_log_shape" in posterior:  # else a single hazard for relapse or death: no CIFs
        figures["cir_overlay.png"] = lambda: plot_cir_overlay(posterior, inputs)
    figures["km_at_risk.png"] = lambda: plot_km_at_risk(inputs.time_years * 365.25, inputs.event, inputs.arm,
                                                         arm_labels=inputs.arm_labels)
    figures["decisions.png"] = lambda: plot_decision_densities(decision_densities(run))
    figures["pit.png"] = lambda: plot_pit_ecdf({durability_event_name(posterior): durability_pit_of_run(run.posterior,
                                                                                                    inputs)},
                                               title=PIT_TITLE)
    return figures


def write_durability_figures(run, folder) -> list:
    """Save the durability checks of a loaded run in ``folder`` (PNG at 300 dpi and SVG); returns the paths."""
    return save_figures(durability_figure_builders(run), folder)


# --------------------------------------------------------------------------- cohort overview


def plot_km_by_arm(cohort, *, endpoint: str = "rfs", ax=None, show_small_cells: bool = False):
    """Kaplan-Meier curves per arm for an endpoint (``rfs`` from remission, censored at HSCT; or ``efs``)."""
    from toolkit.data.endpoints import time_to_event

    ax = _axes(ax)
    tte = time_to_event(cohort, endpoint=endpoint)
    for arm, label in enumerate(cohort.arms):
        sub = tte[tte["arm"] == arm]
        if len(sub) == 0:
            continue
        km = kaplan_meier(sub["time"], sub["event"])
        color = ARM_COLORS[arm]
        ax.step(km["time"], km["survival"], where="post", color=color, lw=2,
                label=f"{label} (n={count_label(len(sub), show_small_cells)}, "
                      f"events={count_label(sub['event'].sum(), show_small_cells)})")
        ax.fill_between(km["time"], km["lower"], km["upper"], step="post", color=color, alpha=0.15, lw=0)
    origin = "remission" if endpoint != "efs" else "infusion"
    ax.set(xlabel=f"Days since {origin}", ylabel={"rfs": "Relapse-free survival", "relapse": "Relapse-free",
                                                   "efs": "Event-free survival"}[endpoint], ylim=(0, 1.02))
    ax.set_title("Kaplan-Meier by arm with 90% Greenwood band", fontsize=10)
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return ax


def plot_cart_spaghetti(cohort, *, ax=None):
    """CAR-T levels per patient over time (log scale), BLQ samples drawn at their LLOQ as open markers."""
    ax = _axes(ax)
    if cohort.cart is None or cohort.cart.empty:
        ax.text(0.5, 0.5, "no CAR-T kinetics in this cohort", ha="center", transform=ax.transAxes)
        return ax
    arm_of = cohort.patients.set_index("patient_id")["arm"]
    for pid, rows in cohort.cart.groupby("patient_id", sort=False):
        color = ARM_COLORS[int(arm_of[pid] == cohort.experimental_arm)]
        shown = rows["value"].where(~rows["below_lloq"], rows["lloq_used"])
        ax.plot(rows["day"], shown, color=color, alpha=0.35, lw=0.8)
        blq = rows[rows["below_lloq"]]
        ax.plot(blq["day"], blq["lloq_used"], "o", mfc="none", color=color, ms=3, alpha=0.6)
    for arm, label in enumerate(cohort.arms):
        ax.plot([], [], color=ARM_COLORS[arm], label=label)
    ax.plot([], [], "o", mfc="none", color="grey", label="below LLOQ (drawn at the LLOQ)")
    ax.set(yscale="log", xscale="symlog", xlabel="Days since infusion (log scale after day 1)",
           ylabel=f"CAR-T level ({cohort.cart['unit'].iat[0]})")
    ax.set_xlim(left=0)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return ax


def plot_mrd_spaghetti(cohort, *, ax=None):
    """MRD per patient over time (log10 %), censored assessments drawn at their detection limit (open)."""
    ax = _axes(ax)
    if cohort.mrd is None or cohort.mrd.empty:
        ax.text(0.5, 0.5, "no MRD assessments in this cohort", ha="center", transform=ax.transAxes)
        return ax
    arm_of = cohort.patients.set_index("patient_id")["arm"]
    markers = {"flow": "o", "ngs": "s", "qpcr": "^"}
    for (pid, method), rows in cohort.mrd.groupby(["patient_id", "method"], sort=False):
        color = ARM_COLORS[int(arm_of[pid] == cohort.experimental_arm)]
        censored = rows["censoring"] != "none"
        shown = rows["mrd_pct"].where(~censored, rows["lod_used"])
        ax.plot(rows["day"], shown, color=color, alpha=0.3, lw=0.8)
        ax.plot(rows.loc[~censored, "day"], shown[~censored], markers.get(method, "o"), color=color, ms=3)
        ax.plot(rows.loc[censored, "day"], shown[censored], markers.get(method, "o"), mfc="none", color=color,
                ms=3, alpha=0.6)
    for arm, label in enumerate(cohort.arms):
        ax.plot([], [], color=ARM_COLORS[arm], label=label)
    for method in sorted(cohort.mrd["method"].unique()):
        ax.plot([], [], markers.get(method, "o"), color="grey", mfc="none", label=f"{method} below limit (at LoD)")
    ax.set(yscale="log", xlabel="Days since infusion", ylabel="MRD (% of nucleated cells)")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return ax


def save_figures(figures: dict, folder) -> list:
    """Draw each ``{file name: callable returning an Axes or Figure}`` and save it in ``folder``.

    Each is written as PNG (300 dpi) and SVG (:func:`toolkit.plots.style.save_figure`); returns every path.
    """
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in figures.items():
        out = draw()
        fig = out if isinstance(out, plt.Figure) else out.figure
        paths += save_figure(fig, folder / name)
        plt.close(fig)
    return paths
