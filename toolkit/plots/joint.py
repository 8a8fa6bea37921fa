"""Figures of the joint kinetics-relapse model (``toolkit.models.joint``), for a notebook and the report.

- :func:`plot_mediation_forest`: the total, direct and indirect hazard ratios (reference 1);
- :func:`plot_association_posteriors`: posterior densities of the association parameters (and the
  direct arm effect ``log_hr``) over their priors: how much the data moved each one;
- :func:`mediation_curves` / :func:`plot_mediation_curves`: the relapse-free curves of patients not cured,
  for arm 1 with its own kinetics (K1), arm 1 with the control arm's kinetics (K0) and arm 0 with K0: the
  gap between the first two is the effect through kinetics (indirect), between the last two the direct one;
- :func:`known_outcomes` and :func:`plot_calibration`: dynamic predictions against what was observed
  (``toolkit.prediction.calibration_table``);
- :func:`write_joint_figures`: the first three, and the decision densities, in a run's ``figures/`` (PNG and SVG).

Curves use the same Monte-Carlo population of new patients as the mediation estimands
(``toolkit.joint_estimands.new_patient_features``): S(t | a, K) = E_K exp(-H(t | a, K)), the share still in
remission at t of uncured patients of arm a whose kinetics follow arm K's fitted distribution.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from toolkit.plots import ARM_COLORS, _axes, count_label, plot_forest, save_figures

MEDIATION_NAMES = ("hazard_ratio_total", "hazard_ratio_direct", "hazard_ratio_indirect", "hazard_ratio_indirect_cart",
                   "hazard_ratio_indirect_mrd")
MEDIATION_LABELS = {"hazard_ratio_total": "Total (kinetics may differ)",
                    "hazard_ratio_direct": "Direct (kinetics held at control's)",
                    "hazard_ratio_indirect": "Indirect (through CAR-T kinetics)",
                    "hazard_ratio_indirect_cart": "  of which through CAR-T kinetics",
                    "hazard_ratio_indirect_mrd": "  of which through MRD clearance"}
ASSOCIATION_LABELS = {"log_hr_per_log_cmax": "log HR per log-unit of Cmax",
                      "log_hr_cart_loss": "log HR after CAR-T loss",
                      "log_hr_mrd_recurrence": "log HR after MRD recurrence",
                      "log_hr_per_log_clearance": "log HR per log-unit of MRD kill rate",
                      "log_hr": "log HR of the arm (direct)"}
CURVE_STYLES = {(1, 1): ("-", ARM_COLORS[1]), (1, 0): ("--", ARM_COLORS[1]), (0, 0): ("-", ARM_COLORS[0])}


def _flat(da) -> np.ndarray:
    values = np.asarray(da.to_numpy(), dtype=float)
    return values.reshape(-1, *values.shape[2:])


def _thinned_dataset(posterior, n_draws: int | None):
    """The posterior as an xarray Dataset with draws thinned evenly to about ``n_draws`` in all."""
    ds = posterior.to_dataset() if hasattr(posterior, "to_dataset") else posterior
    total = ds.sizes["chain"] * ds.sizes["draw"]
    if n_draws is None or total <= n_draws:
        return ds
    step = int(np.ceil(total / n_draws))
    return ds.isel(draw=slice(None, None, step))


# --------------------------------------------------------------------------- (a) mediation forest


def plot_mediation_forest(estimands: dict, *, ax=None):
    """Forest of the mediation hazard ratios (median, 90% interval; below 1 favours the experimental arm)."""
    names = [n for n in MEDIATION_NAMES if isinstance(estimands.get(n), dict)]
    labels = dict(MEDIATION_LABELS)
    if "hazard_ratio_indirect_mrd" in names:
        labels["hazard_ratio_indirect"] = "Indirect (through CAR-T kinetics and MRD clearance)"
    ax = plot_forest(estimands, names, reference=1.0, ax=ax)
    ax.set_yticks(range(len(names)), [labels[n] for n in reversed(names)])
    lo, hi = ax.get_xlim()
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(
        [t for t in (0.1, 0.2, 0.33, 0.5, 0.67, 1, 1.5, 2, 3, 5, 10) if lo <= t <= hi]))
    ax.set_xlabel("Hazard ratio of relapse among the uncured,\nexperimental / control (median, 90% interval)")
    return ax


# --------------------------------------------------------------------------- (b) associations vs priors


def _priors_of(priors: dict | None) -> dict:
    from toolkit.models.joint import JointPriors

    out = JointPriors().as_dict()
    out.update({k: list(v) for k, v in (priors or {}).items() if isinstance(v, (list, tuple)) and len(v) == 2})
    return out


def plot_association_posteriors(posterior, priors: dict | None = None, *, names: list[str] | None = None):
    """One panel per association parameter in the fit (and ``log_hr``): posterior density (filled) over its
    Normal prior (dashed). ``priors`` is ``run.provenance["priors"]`` (default: ``JointPriors``)."""
    from scipy import stats

    priors = _priors_of(priors)
    names = names or [n for n in ("log_hr_per_log_cmax", "log_hr_cart_loss", "log_hr_mrd_recurrence",
                                  "log_hr_per_log_clearance", "log_hr") if n in posterior]
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names) + 0.6, 3.0), squeeze=False,
                             constrained_layout=True)
    for ax, name in zip(axes[0], names):
        draws = _flat(posterior[name])
        mu, sd = priors[name]
        lo = min(mu - 3.5 * sd, np.quantile(draws, 0.001))
        hi = max(mu + 3.5 * sd, np.quantile(draws, 0.999))
        grid = np.linspace(lo, hi, 300)
        density = stats.gaussian_kde(draws)(grid)
        ax.fill_between(grid, density, color=ARM_COLORS[0], alpha=0.35, lw=0)
        ax.plot(grid, density, color=ARM_COLORS[0], lw=1.5, label="posterior")
        ax.plot(grid, stats.norm.pdf(grid, mu, sd), color="grey", ls="--", lw=1.2, label=f"prior N({mu:.2g}, {sd:.2g})")
        ax.axvline(0, color="k", lw=0.6, ls=":")
        ax.set_title(ASSOCIATION_LABELS.get(name, name), fontsize=9)
        ax.set_yticks([])
        ax.set_xlabel(f"HR = exp(value); median HR {np.exp(np.median(draws)):.2f}", fontsize=8)
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    return fig


# --------------------------------------------------------------------------- (c) curves of mediation


def curve_defaults(run) -> dict:
    """Median response day and LLOQ of a run or FitResult (as the mediation estimands use), from its own posterior."""
    out = {"response_day": 28.0, "lloq": 50.0}
    constant = run.posterior["constant_data"] if "constant_data" in run.posterior.children else None
    if constant is not None:
        if "response_day" in constant:
            out["response_day"] = float(np.median(constant["response_day"].to_numpy()))
        if "log_lloq" in constant:
            out["lloq"] = float(np.exp(np.median(constant["log_lloq"].to_numpy())))
    return out


def mediation_curves(posterior, days_after_response: np.ndarray, *, response_day: float = 28.0,
                     lloq: float = 50.0, n_new: int = 200, n_draws: int | None = 300,
                     random_seed: int = 20261125) -> dict[tuple[int, int], np.ndarray]:
    """{(arm, kinetics arm): (draws, len(days)) S(t) = E_K exp(-H(t | arm, K))} for (1, 1), (1, 0), (0, 0)."""
    from toolkit.data.inputs import DAYS_PER_YEAR
    from toolkit.joint_estimands import new_patient_features, uncured_cumhaz

    ds = _thinned_dataset(posterior, n_draws)
    features = new_patient_features(ds, n_new=n_new, response_day=response_day, lloq=lloq, random_seed=random_seed)
    days = np.asarray(days_after_response, float)
    out = {}
    for a, k in ((1, 1), (1, 0), (0, 0)):
        out[a, k] = np.stack([np.exp(-uncured_cumhaz(ds, features, arm=a, kinetics_arm=k,
                                                     tau_years=max(d, 1e-6) / DAYS_PER_YEAR)).mean(axis=1)
                              for d in days], axis=1)
    return out


def plot_mediation_curves(posterior, *, arm_labels=("control", "experimental"), max_days: float = 730.0,
                          response_day: float = 28.0, lloq: float = 50.0, tau_days: float | None = 365.0,
                          ci_prob: float = 0.9, n_draws: int | None = 300, ax=None):
    """Relapse-free curves of uncured patients: experimental arm with its kinetics (solid), with the control
    arm's kinetics (dashed), control arm (solid); posterior median and ``ci_prob`` band."""
    ax = _axes(ax, figsize=(6.8, 4.4))
    days = np.linspace(0.0, max_days, 61)
    curves = mediation_curves(posterior, days, response_day=response_day, lloq=lloq, n_draws=n_draws)
    ctl, exp = arm_labels
    labels = {(1, 1): f"{exp}, its own CAR-T kinetics (total effect)",
              (1, 0): f"{exp}, kinetics as with {ctl} (direct effect only)",
              (0, 0): f"{ctl}"}
    tail = (1 - ci_prob) / 2
    for key, s in curves.items():
        ls, color = CURVE_STYLES[key]
        lo, med, hi = np.quantile(s, [tail, 0.5, 1 - tail], axis=0)
        if key != (1, 0):
            ax.fill_between(days, lo, hi, color=color, alpha=0.15, lw=0)
        ax.plot(days, med, color=color, ls=ls, lw=2, label=labels[key])
    if tau_days:
        ax.axvline(tau_days, color="grey", lw=0.8, ls=":")
    ax.set(xlim=(0, max_days), ylim=(0, 1.02), xlabel="Days since remission",
           ylabel="Still in remission (patients not cured)")
    ax.set_title(f"Mediation: the gap solid-dashed (orange) is the effect through kinetics\n"
                 f"median, {int(ci_prob * 100)}% band; dotted: horizon of the hazard ratios", fontsize=9)
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return ax


# --------------------------------------------------------------------------- (d) calibration of predictions


def known_outcomes(cohort, patient_ids, horizon_day: float) -> pd.Series:
    """Relapse by ``horizon_day`` (days since infusion) per patient: 1 relapsed, 0 followed to the horizon
    relapse-free (alive, untransplanted), NaN unknown (censored earlier by follow-up, death or HSCT)."""
    df = cohort.merged()
    df = df.set_index(df["patient_id"].astype(str))
    df = df.loc[[str(p) for p in patient_ids]]
    inf = np.inf
    relapsed = df["relapse_day"].fillna(inf) <= horizon_day
    censor = np.minimum.reduce([df["last_followup_day"].fillna(-inf).to_numpy(float),
                                df["death_day"].fillna(inf).to_numpy(float),
                                df["hsct_day"].fillna(inf).to_numpy(float)])
    out = np.where(relapsed, 1.0, np.where(censor >= horizon_day, 0.0, np.nan))
    return pd.Series(out, index=df.index, name=f"relapsed_by_{horizon_day:g}d")


def plot_calibration(table: pd.DataFrame, *, scores: dict | None = None, title: str = "", ci_prob: float = 0.9,
                     ax=None):
    """Observed share relapsed vs mean predicted risk per group (``toolkit.prediction.calibration_table``),
    with a ``ci_prob`` Jeffreys interval for each observed share; the diagonal is perfect calibration.
    ``scores``: the output of ``toolkit.prediction.brier_and_auc``."""
    from scipy import stats

    ax = _axes(ax, figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    n = table["n"].to_numpy(float)
    x = table["mean_predicted"].to_numpy(float)
    y = table["observed"].to_numpy(float)
    k = np.round(y * n)
    tail = (1 - ci_prob) / 2
    lo = np.where(k > 0, stats.beta.ppf(tail, k + 0.5, n - k + 0.5), 0.0)
    hi = np.where(k < n, stats.beta.ppf(1 - tail, k + 0.5, n - k + 0.5), 1.0)
    ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="o", color=ARM_COLORS[0], ecolor=ARM_COLORS[0], mec="k",
                ms=7, capsize=3, zorder=3)
    text = title
    sizes = count_label(n.min()) if n.min() == n.max() else f"{count_label(n.min())}-{count_label(n.max())}"
    text += ("\n" if text else "") + f"{len(n)} groups of {sizes} patients by predicted risk"
    if scores:
        text += (f"\nBrier {scores['brier']:.3f}, AUC {scores['auc']:.2f} ({count_label(scores['events'])} relapses "
                 f"in {count_label(scores['n'])})")
    ax.set(xlim=(0, 1), ylim=(-0.03, 1.03), xlabel="Predicted risk of relapse (group mean)",
           ylabel=f"Observed share relapsed ({int(ci_prob * 100)}% interval)")
    ax.set_title(text, fontsize=8)
    ax.grid(alpha=0.3)
    return ax


# --------------------------------------------------------------------------- a run's figures


def joint_figure_builders(run) -> dict:
    """``{file name: callable drawing one figure}`` of the joint model of a run (or a fit in memory)."""
    from toolkit.plots.publication import decision_densities, plot_decision_densities

    posterior = run.posterior["posterior"]
    defaults = curve_defaults(run)
    arms = (run.summary["arms"]["control"], run.summary["arms"]["experimental"])
    tau = run.summary.get("data", {}).get("tau_days", run.summary.get("options", {}).get("tau_days", 365.0))
    return {
        "mediation_forest.png": lambda: plot_mediation_forest(run.summary["estimands"]),
        "associations.png": lambda: plot_association_posteriors(posterior, run.provenance.get("priors")),
        "mediation_curves.png": lambda: plot_mediation_curves(posterior, arm_labels=arms, tau_days=tau, **defaults),
        "decisions.png": lambda: plot_decision_densities(decision_densities(run)),
    }


def write_joint_figures(run, folder) -> list[Path]:
    """Save the joint-model figures of a loaded run in ``folder`` (PNG at 300 dpi and SVG); returns the paths."""
    return save_figures(joint_figure_builders(run), folder)
