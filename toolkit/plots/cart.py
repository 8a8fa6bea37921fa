"""Checks of the CAR-T kinetic model a user looks at, readable in a notebook and in the report.

- :func:`plot_individual_fits`: each patient's samples (quantified, and below
  the LLOQ drawn at the limit) under the fitted curve (median, 90% band);
- :func:`cart_vpc` / :func:`plot_cart_vpc`: visual predictive check per arm,
  the share of samples below the LLOQ and the percentiles of the quantified
  levels, observed vs replicated from the posterior, by time bin;
- :func:`plot_typical_curves`: the typical patient's curve per arm;
- :func:`plot_cart_effects`: forest of the arm effects (ratios, Tmax difference);
- :func:`plot_prior_typical_curves`: prior predictive check of the typical curves;
- :func:`write_cart_figures`: all of them, and the decision densities and patient-level Cmax (:mod:`toolkit.plots.publication`), in a run's ``figures/`` (PNG and SVG).

Curves are computed in numpy from the posterior draws (``theta_patient`` for a
patient, ``mu_kinetic`` + the arm effect for the typical patient) with
``toolkit.models.cart.natural_parameters_np`` and ``toolkit.models.kinetics.cart_curve``;
draws are thinned evenly (deterministically) to ``n_draws``. Single-panel
functions take ``ax=None`` and return the Axes; grids return the Figure.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from toolkit.data.from_run import cart_inputs_from_run  # noqa: F401  (its old home; rebuilt in the data layer)
from toolkit.data.inputs import CartInputs
from toolkit.plots import ARM_COLORS, _axes, plot_forest, save_figures

# Visit windows (days since infusion) of the VPC: edges between the usual sampling days (1, 4, 7, 10, 14,
# 21, 28, then about monthly to quarterly); empty bins are dropped
VPC_EDGES = (0.0, 2.5, 5.5, 8.5, 12.0, 17.5, 24.5, 35.0, 50.0, 75.0, 105.0, 150.0, 220.0, 310.0, 450.0, 730.0,
             np.inf)
RATIO_EFFECTS = ("cmax_gmr", "auc28_gmr", "persistence_half_life_ratio")
EFFECT_LABELS = {"cmax_gmr": "Peak level (Cmax) GMR", "auc28_gmr": "AUC day 0-28 GMR",
                 "persistence_half_life_ratio": "Persistence half-life ratio",
                 "tmax_difference_days": "Day of the peak (Tmax)"}


def _flat(da) -> np.ndarray:
    """(chain, draw, ...) DataArray -> (draws, ...) array."""
    values = np.asarray(da.to_numpy() if hasattr(da, "to_numpy") else da, dtype=float)
    return values.reshape(-1, *values.shape[2:])


def _thin(n_total: int, n_draws: int | None) -> np.ndarray:
    """Evenly spaced draw indices (deterministic), all of them if there are fewer than ``n_draws``."""
    if n_draws is None or n_total <= n_draws:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, n_draws).round().astype(int))


def curves_from_theta(theta: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Levels C(t) (copies/ug) for unconstrained parameters ``theta`` (..., 6) on ``days``: (..., len(days))."""
    from toolkit.models.cart import natural_parameters_np
    from toolkit.models.kinetics import cart_curve

    p = natural_parameters_np(theta)
    with np.errstate(over="ignore", under="ignore"):
        return cart_curve(np.asarray(days, float), *(p[k][..., None] for k in ("cmax", "tmax", "foldx", "alpha",
                                                                            "beta", "fb")))


def _band(curves: np.ndarray, ci_prob: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tail = (1 - ci_prob) / 2
    lo, med, hi = np.quantile(curves, [tail, 0.5, 1 - tail], axis=0)
    return lo, med, hi


def _log_time_axis(ax, *, max_day: float) -> None:
    """Days on a symlog axis: linear over the first days (expansion), logarithmic after (persistence)."""
    ax.set_xscale("symlog", linthresh=7.0, linscale=0.6)
    ax.set_xlim(0, max_day)
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([t for t in (0, 7, 14, 28, 90, 180, 365, 730)
                                                               if t <= max_day]))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


# --------------------------------------------------------------------------- individual fits


def plot_individual_fits(posterior, inputs: CartInputs, *, patients: list[str] | None = None,
                         max_patients: int | None = None, n_draws: int = 200, ci_prob: float = 0.9,
                         ncols: int = 6):
    """One panel a patient: observed levels, BLQ samples at their LLOQ, fitted median curve and band.

    Parameters
    ----------
    posterior : xarray Dataset or DataTree group
        The ``posterior`` group (needs ``theta_patient``).
    inputs : CartInputs
        The fitted data (``to_cart_inputs`` or :func:`cart_inputs_from_run`).
    patients : list of str, optional
        Patient codes to show, in this order (default: every patient, in input order).
    max_patients : int, optional
        Show at most this many (the first ones), e.g. 24 for a quick look.
    n_draws : int
        Posterior draws used for the curves (evenly thinned).

    Returns
    -------
    matplotlib.figure.Figure
        Panel titles are the (pseudonymous) patient codes with the arm; filled
        dots are quantified samples, open downward triangles are samples below
        the LLOQ drawn at their limit (the true level is somewhere below).
    """
    theta = _flat(posterior["theta_patient"])
    theta = theta[_thin(theta.shape[0], n_draws)]
    index = {p: i for i, p in enumerate(inputs.patient_ids)}
    chosen = list(inputs.patient_ids) if patients is None else list(patients)
    unknown = [p for p in chosen if p not in index]
    if unknown:
        raise ValueError(f"unknown patient code(s) {', '.join(unknown[:10])}; the fit has "
                         f"{', '.join(inputs.patient_ids[:5])} ...")
    if max_patients is not None:
        chosen = chosen[:max_patients]
    max_day = float(np.ceil(inputs.day.max() * 1.05 / 30) * 30)
    days = np.concatenate([np.linspace(0, 28, 113), np.linspace(28.5, max_day, 300)])
    ncols = max(1, min(ncols, len(chosen)))
    nrows = int(np.ceil(len(chosen) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 1.9 * nrows + 0.6), sharex=True, sharey=True,
                             squeeze=False, constrained_layout=True)
    positive = np.exp(inputs.log_value[inputs.censored == 0])
    low = min(np.exp(inputs.log_lloq).min(), positive.min() if positive.size else np.inf) / 10
    high = (positive.max() if positive.size else np.exp(inputs.log_lloq).max()) * 10
    for ax, pid in zip(axes.flat, chosen):
        i = index[pid]
        arm = int(inputs.arm[i])
        color = ARM_COLORS[arm]
        lo, med, hi = _band(curves_from_theta(theta[:, i, :], days), ci_prob)
        ax.fill_between(days, np.maximum(lo, low), np.maximum(hi, low), color=color, alpha=0.25, lw=0)
        ax.plot(days, np.maximum(med, low), color=color, lw=1.2)
        rows = inputs.sample_patient == i
        q = rows & (inputs.censored == 0)
        c = rows & (inputs.censored == 1)
        ax.plot(inputs.day[q], np.exp(inputs.log_value[q]), "o", color="k", ms=3)
        ax.plot(inputs.day[c], np.exp(inputs.log_lloq[c]), "v", mfc="none", mec="k", ms=4, mew=0.8)
        ax.set_title(f"{pid} ({inputs.arm_labels[arm]})", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chosen):]:
        ax.set_visible(False)
    first = axes.flat[0]
    first.set_yscale("log")
    first.set_ylim(low, high)
    _log_time_axis(first, max_day=max_day)
    fig.supxlabel("Days since infusion (linear to day 7, logarithmic after)", fontsize=9)
    fig.supylabel(f"CAR-T level ({inputs.unit})", fontsize=9)
    fig.suptitle(f"Individual fits: posterior median curve and {int(round(ci_prob * 100))}% band; "
                 "dots quantified, open triangles below the LLOQ (drawn at the LLOQ)", fontsize=9)
    return fig


# --------------------------------------------------------------------------- visual predictive check


def vpc_bins(day: np.ndarray, edges=VPC_EDGES) -> np.ndarray:
    """Bin number of each sample day (``edges[b] <= day < edges[b+1]``)."""
    return np.searchsorted(np.asarray(edges, float), np.asarray(day, float), side="right") - 1


def cart_vpc(posterior, inputs: CartInputs, *, edges=VPC_EDGES, n_draws: int = 200, ci_prob: float = 0.9,
             percentiles=(10, 50, 90), random_seed: int = 20261125) -> pd.DataFrame:
    """Visual-predictive-check table: observed vs posterior-replicated samples per arm and time bin.

    For each of ``n_draws`` posterior draws, every sample is replicated at its
    own day and LLOQ from its patient's fitted curve and the residual SD:
    log y_rep = log C_p(t) + sigma_log * eps, below the LLOQ if y_rep < LLOQ.
    Per (arm, bin) the table gives the observed share of samples below the
    LLOQ (``observed_blq``, exactly the data's share) and the replicated
    share's median and ``ci_prob`` interval (``predicted_blq_*``), and for each
    percentile q of the quantified levels the observed value (``observed_pq``,
    NaN with no quantified sample) and the replicated percentile's median and
    interval (``predicted_pq_*``; the percentile of each replicate's quantified
    values, the same censoring as the data).
    """
    theta = _flat(posterior["theta_patient"])
    sigma = _flat(posterior["sigma_log"]).reshape(-1)
    keep = _thin(theta.shape[0], n_draws)
    theta, sigma = theta[keep], sigma[keep]
    # (draws, samples): each sample's level under its patient's parameters
    log_c = np.log(np.maximum(curves_from_theta(theta[:, inputs.sample_patient, :], inputs.day[:, None])[..., 0],
                              1e-300))
    rng = np.random.default_rng(random_seed)
    log_rep = log_c + sigma[:, None] * rng.standard_normal(log_c.shape)
    blq_rep = log_rep < inputs.log_lloq[None, :]
    edges = np.asarray(edges, float)
    bins = vpc_bins(inputs.day, edges)
    arm_of_sample = inputs.arm[inputs.sample_patient]
    tail = (1 - ci_prob) / 2
    rows = []
    for arm in (0, 1):
        for b in np.unique(bins[arm_of_sample == arm]):
            s = (arm_of_sample == arm) & (bins == b)
            observed_blq = inputs.censored[s].astype(bool)
            row = {"arm": arm, "arm_label": inputs.arm_labels[arm], "bin": int(b), "day_from": edges[b],
                   "day_to": edges[b + 1], "day_median": float(np.median(inputs.day[s])), "n_samples": int(s.sum()),
                   "n_blq": int(observed_blq.sum()), "observed_blq": float(observed_blq.mean())}
            pred_blq = blq_rep[:, s].mean(axis=1)
            row.update(zip(("predicted_blq_lo", "predicted_blq_median", "predicted_blq_hi"),
                           np.quantile(pred_blq, [tail, 0.5, 1 - tail])))
            quantified = np.exp(inputs.log_value[s][~observed_blq])
            rep = np.where(blq_rep[:, s], np.nan, np.exp(log_rep[:, s]))
            for q in percentiles:
                row[f"observed_p{q}"] = float(np.percentile(quantified, q)) if quantified.size else np.nan
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # a draw with every replicate below the LLOQ
                    per_draw = np.nanpercentile(rep, q, axis=1)
                    row.update(zip((f"predicted_p{q}_lo", f"predicted_p{q}_median", f"predicted_p{q}_hi"),
                                   np.nanquantile(per_draw, [tail, 0.5, 1 - tail])
                                   if np.isfinite(per_draw).any() else (np.nan,) * 3))
            rows.append(row)
    return pd.DataFrame(rows)


def plot_cart_vpc(vpc: pd.DataFrame, *, unit: str = "copies/ug", ci_prob: float = 0.9, percentiles=(10, 50, 90)):
    """Two rows by two arms: quantified-level percentiles (top) and share below the LLOQ (bottom) by time bin.

    Observed values are black points joined by lines; the posterior-replicated
    ones are the arm-coloured bands (``ci_prob`` interval) with their median
    dashed. Points are at each bin's median sample day.
    """
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True, sharey="row", squeeze=False,
                             constrained_layout=True, gridspec_kw={"height_ratios": [3, 2]})
    max_day = float(vpc["day_median"].max()) * 1.15 if len(vpc) else 400.0
    styles = {10: ":", 50: "-", 90: ":"}
    for arm in (0, 1):
        sub = vpc[vpc["arm"] == arm].sort_values("day_median")
        color = ARM_COLORS[arm]
        top, bottom = axes[0, arm], axes[1, arm]
        label = sub["arm_label"].iat[0] if len(sub) else ("control", "experimental")[arm]
        x = sub["day_median"].to_numpy()
        for q in percentiles:
            lo, med, hi = (sub[f"predicted_p{q}_{k}"].to_numpy() for k in ("lo", "median", "hi"))
            top.fill_between(x, lo, hi, color=color, alpha=0.35 if q == 50 else 0.15, lw=0)
            top.plot(x, med, color=color, ls="--", lw=1)
            top.plot(x, sub[f"observed_p{q}"], styles.get(q, "-"), marker="o", color="k", ms=3, lw=1)
        top.set(yscale="log", title=f"{label}: quantified levels (10th, 50th, 90th percentiles)",
                ylabel=f"CAR-T level ({unit})")
        bottom.fill_between(x, sub["predicted_blq_lo"], sub["predicted_blq_hi"], color=color, alpha=0.3, lw=0)
        bottom.plot(x, sub["predicted_blq_median"], color=color, ls="--", lw=1)
        bottom.plot(x, sub["observed_blq"], "-o", color="k", ms=3, lw=1)
        bottom.set(ylim=(-0.02, 1.02), ylabel="Share below LLOQ", title=f"{label}: samples below the LLOQ")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
        _log_time_axis(bottom, max_day=max_day)
        bottom.set_xlabel("Days since infusion (bin median)")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], color="k", marker="o", ms=3, lw=1, label="observed (median: solid; 10th/90th: dotted)"),
               Line2D([], [], color="grey", ls="--", lw=1, label="replicated, median"),
               Patch(color="grey", alpha=0.35, label=f"replicated, {int(round(ci_prob * 100))}% interval")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle("Visual predictive check: observed (black) vs replicated from the posterior (bands); "
                 "percentiles of quantified samples only", fontsize=9)
    return fig


# --------------------------------------------------------------------------- typical curves, effects, priors


def typical_curves(posterior, days: np.ndarray, *, n_draws: int | None = 400) -> np.ndarray:
    """(draws, 2 arms, len(days)) typical-patient curves: population medians plus the arm effect."""
    from toolkit.models.cart import arm_effects_full

    mu = _flat(posterior["mu_kinetic"])
    delta = arm_effects_full(posterior)
    keep = _thin(mu.shape[0], n_draws)
    theta = np.stack([mu[keep], mu[keep] + delta[keep]], axis=1)
    return curves_from_theta(theta, days)


def _plot_arm_bands(ax, days, curves, labels, ci_prob, *, lloq=None, unit="copies/ug", title=""):
    for arm, label in enumerate(labels):
        lo, med, hi = _band(curves[:, arm, :], ci_prob)
        color = ARM_COLORS[arm]
        ax.fill_between(days, lo, hi, color=color, alpha=0.2, lw=0)
        ax.plot(days, med, color=color, lw=2, label=f"{label}: median, {int(round(ci_prob * 100))}% band")
    if lloq is not None and np.isfinite(lloq):
        ax.axhline(lloq, color="grey", ls=":", lw=1, label=f"usual LLOQ ({lloq:g})")
    ax.set(yscale="log", xlabel="Days since infusion (linear to day 7, logarithmic after)",
           ylabel=f"CAR-T level ({unit})")
    _log_time_axis(ax, max_day=float(days.max()))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper right")
    ax.grid(alpha=0.3)
    return ax


def plot_typical_curves(posterior, *, arm_labels=("control", "experimental"), days=None, ci_prob: float = 0.9,
                        n_draws: int | None = 400, lloq: float | None = None, unit: str = "copies/ug", ax=None):
    """The typical patient's curve per arm (every parameter at its population median), days 0-365, log scale."""
    days = np.arange(0.0, 365.01, 0.5) if days is None else np.asarray(days, float)
    ax = _axes(ax)
    return _plot_arm_bands(ax, days, typical_curves(posterior, days, n_draws=n_draws), arm_labels, ci_prob,
                           lloq=lloq, unit=unit, title="Typical patient per arm (posterior)")


def plot_prior_typical_curves(priors=None, *, effects_on=None, n: int = 500, seed: int = 20261125,
                              arm_labels=("control", "experimental"), ci_prob: float = 0.9, lloq: float | None = None,
                              unit: str = "copies/ug", ax=None):
    """Prior predictive check: typical curves per arm under the priors alone (median, band, 20 draws)."""
    from toolkit.models.cart import KINETIC_PARAMETERS, prior_predictive_typical_curves

    prior = prior_predictive_typical_curves(priors, n=n, seed=seed, days=np.arange(0.0, 365.01, 0.5),
                                            effects_on=KINETIC_PARAMETERS if effects_on is None else effects_on)
    ax = _axes(ax)
    days, curves = prior["day"], prior["curve"]
    for k in range(min(20, curves.shape[0])):
        ax.plot(days, curves[k, 0], color=ARM_COLORS[0], alpha=0.15, lw=0.6)
    return _plot_arm_bands(ax, days, curves, arm_labels, ci_prob, lloq=lloq, unit=unit,
                           title="Prior predictive check: typical patient per arm (before seeing data)")


def plot_cart_effects(estimands: dict, *, ci_prob_label: str = "90%"):
    """Forest of the arm effects: ratios (log scale, reference 1) and the Tmax difference (days, reference 0)."""
    has_tmax = isinstance(estimands.get("tmax_difference_days"), dict)
    fig, axes = plt.subplots(2 if has_tmax else 1, 1, figsize=(6.5, 4.2 if has_tmax else 2.8), squeeze=False,
                             constrained_layout=True, gridspec_kw={"height_ratios": [3, 1.3] if has_tmax else [1]})
    names = [n for n in RATIO_EFFECTS if n in estimands]
    ax = plot_forest(estimands, names, reference=1.0, ax=axes[0, 0])
    ax.set_yticks(range(len(names)), [EFFECT_LABELS[n] for n in reversed(names)])
    lo, hi = ax.get_xlim()
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(
        [t for t in (0.1, 0.2, 0.33, 0.5, 0.67, 1, 1.5, 2, 3, 5, 10) if lo <= t <= hi]))
    ax.set_xlabel(f"Ratio, experimental / control (median, {ci_prob_label} interval)")
    if has_tmax:
        ax = plot_forest(estimands, ["tmax_difference_days"], reference=0.0, log_scale=False, ax=axes[1, 0])
        ax.set_yticks([0], [EFFECT_LABELS["tmax_difference_days"]])
        ax.set_xlabel(f"Difference, experimental - control (days; median, {ci_prob_label} interval)")
    return fig


# --------------------------------------------------------------------------- a run's figures


def cart_figure_builders(run) -> dict:
    """``{file name: callable drawing one figure}`` of the CAR-T checks of a run (or a fit in memory)."""
    from toolkit.plots.publication import (decision_densities, plot_decision_densities, plot_patient_estimates,
                                           plot_patient_forest)

    inputs = cart_inputs_from_run(run)
    posterior = run.posterior["posterior"]
    lloq = float(np.nanmedian(inputs.patient_lloq))
    effects_on = run.summary.get("options", {}).get("effects_on")
    return {
        "individual_fits.png": lambda: plot_individual_fits(posterior, inputs),
        "vpc.png": lambda: plot_cart_vpc(cart_vpc(posterior, inputs), unit=inputs.unit),
        "typical_curves.png": lambda: plot_typical_curves(posterior, arm_labels=inputs.arm_labels, lloq=lloq,
                                                          unit=inputs.unit),
        "forest.png": lambda: plot_cart_effects(run.summary["estimands"]),
        "prior_typical_curves.png": lambda: plot_prior_typical_curves(effects_on=effects_on,
                                                                      arm_labels=inputs.arm_labels, lloq=lloq,
                                                                      unit=inputs.unit),
        "decisions.png": lambda: plot_decision_densities(decision_densities(run)),
        "patient_cmax.png": lambda: plot_patient_estimates(
            pd.DataFrame({"arm": inputs.arm, "cmax": np.median(_flat(posterior["patient_cmax"]), axis=0)}), "cmax",
            arm_labels=inputs.arm_labels, ylabel=f"patient Cmax, posterior median ({inputs.unit})"),
        "patient_cmax_forest.png": lambda: plot_patient_forest(
            _flat(posterior["patient_cmax"]), inputs.arm, patient_labels=inputs.patient_ids,
            arm_labels=inputs.arm_labels, xlabel=f"patient Cmax ({inputs.unit})"),
    }


def write_cart_figures(run, folder) -> list[Path]:
    """Save the CAR-T checks of a loaded run in ``folder`` (PNG at 300 dpi and SVG); returns the paths."""
    return save_figures(cart_figure_builders(run), folder)
