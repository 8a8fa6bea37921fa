"""The CAR-T kinetics section of the investigator report: sentences and figures from a ``cart`` run.

Registered in ``toolkit.report.ANSWERS`` / ``FIGURES`` under the model name;
``toolkit.report`` adds the "provisional" labels of a failed fit. Every
number is read from the run's summary or posterior, none typed by hand.
"""

from __future__ import annotations

import html
import math


def _e(text) -> str:
    return html.escape(str(text))


def _level(x: float) -> str:
    """A level or AUC to 3 significant figures with thousands separators (25,700; 9.32; 0.0088)."""
    x = float(f"{x:.3g}")
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _ratio(x: float) -> str:
    return f"{x:.2f}"


def _days(x: float) -> str:
    return f"{x:.1f}" if abs(x) < 100 else f"{x:.0f}"


def _signed_days(x: float) -> str:
    text = f"{x:+.1f}"
    return "0.0" if text in ("+0.0", "-0.0") else text


def _interval(value: dict, fmt) -> str:
    lo, hi = next(v for k, v in value.items() if k.startswith("hdi_"))
    return f"{fmt(value['median'])} (90% interval {fmt(lo)} to {fmt(hi)})"


def cart_answer(summary: dict) -> list[str]:
    """Plain-language sentences from a CAR-T kinetics summary (HTML-safe)."""
    est, arms = summary["estimands"], summary["arms"]
    ctl, exp = _e(arms["control"]), _e(arms["experimental"])
    unit = _e(summary.get("data", {}).get("unit", "copies/ug"))
    out = []
    if "cmax_copies_per_ug_control" in est:
        out.append(f"Typical peak CAR-T level (Cmax): {_interval(est['cmax_copies_per_ug_control'], _level)} {unit} "
                   f"with {ctl} vs {_interval(est['cmax_copies_per_ug_experimental'], _level)} {unit} with {exp}.")
    if "cmax_gmr" in est:
        prob = (f'; probability that {exp} raises the peak level: '
                f'<span class="prob">{est["prob_cmax_gmr_above_1"]:.2f}</span>' if "prob_cmax_gmr_above_1" in est
                else "")
        out.append(f"Peak level with {exp} relative to {ctl} (geometric mean ratio of Cmax): "
                   f"{_interval(est['cmax_gmr'], _ratio)}{prob}.")
    if "auc28_gmr" in est:
        prob = (f'; probability that {exp} raises it: <span class="prob">{est["prob_auc28_gmr_above_1"]:.2f}</span>'
                if "prob_auc28_gmr_above_1" in est else "")
        out.append(f"CAR-T exposure over the first 28 days with {exp} relative to {ctl} (geometric mean ratio of "
                   f"AUC0-28): {_interval(est['auc28_gmr'], _ratio)}{prob}.")
    if "persistence_half_life_ratio" in est:
        typical = ""
        if "half_life_persistence_days_control" in est:
            typical = (f" Typical persistence half-life: {_interval(est['half_life_persistence_days_control'], _days)}"
                       f" days with {ctl} vs {_interval(est['half_life_persistence_days_experimental'], _days)} days "
                       f"with {exp}.")
        out.append(f"Persistence (half-life of the slow, memory-like phase) with {exp} relative to {ctl}: ratio "
                   f"{_interval(est['persistence_half_life_ratio'], _ratio)}.{typical} It is estimated from the slow decline "
                   "over the months sampled, so it is the least precise of the kinetic quantities.")
    if "tmax_difference_days" in est and "tmax_days_control" in est:
        out.append(f"Day of the peak (Tmax): {_interval(est['tmax_days_control'], _days)} with {ctl} vs "
                   f"{_interval(est['tmax_days_experimental'], _days)} with {exp}; difference "
                   f"{_interval(est['tmax_difference_days'], _signed_days)} days.")
    return out


def cart_figures(run) -> list[str]:
    """HTML figures of a CAR-T run: typical curves, arm effects, visual predictive check.

    The per-patient fits (``RUN/figures/individual_fits.png``, and the notebook)
    are left out of the report, which shows no patient-level data.
    """
    import numpy as np

    from toolkit.plots.cart import (cart_inputs_from_run, cart_vpc, plot_cart_effects, plot_cart_vpc,
                                    plot_typical_curves)
    from toolkit.report_format import _figure, decision_figures

    inputs = cart_inputs_from_run(run)
    posterior = run.posterior["posterior"]
    lloq = float(np.nanmedian(inputs.patient_lloq))
    return [
        _figure(plot_typical_curves(posterior, arm_labels=inputs.arm_labels, lloq=lloq, unit=inputs.unit),
                "CAR-T level of the typical patient per arm (every kinetic parameter at its population median): "
                "posterior median (line) and 90% band; the dotted line is the assay's usual limit of quantification."),
        _figure(plot_cart_effects(run.summary["estimands"]).axes[0],
                "Effect of the experimental arm on CAR-T kinetics: geometric mean ratios of the peak level (Cmax) and "
                "of the exposure over days 0-28 (AUC), and the ratio of persistence half-lives (above 1: more or "
                "longer-lasting CAR-T cells with the experimental arm); below, the difference in the day of the peak."),
        _figure(plot_cart_vpc(cart_vpc(posterior, inputs), unit=inputs.unit).axes[0],
                "Model check (visual predictive check): by visit window and arm, the share of samples below the limit "
                "of quantification and the 10th, 50th and 90th percentiles of the quantified levels, observed (black) "
                "and replicated from the fitted model at the same days and limits (bands, 90% intervals). Black "
                "lines inside the bands mean the model reproduces the data."),
    ] + decision_figures(run)


_SCALE = {"cmax": ("log Cmax", lambda m: f"{_level(math.exp(m))}"),
          "tmax": ("log Tmax", lambda m: f"{math.exp(m):.3g} days"),
          "foldx": ("log foldx", lambda m: f"{_level(math.exp(m))}"),
          "alpha": ("log(alpha - beta)", lambda m: f"{math.exp(m):.3g}/day"),
          "fb": ("logit FB", lambda m: f"{1 / (1 + math.exp(-m)):.2g}"),
          "persistence": ("log persistence half-life", lambda m: f"{math.exp(m):.0f} days")}


def cart_prior_rows(priors: dict) -> list[list[str]]:
    """The prior record of a CAR-T run as (parameter, prior) table rows, each with its family (HTML-safe).

    ``mu_*`` and ``effect_*`` are Normal on the unconstrained scale (with the
    natural-scale median), ``omega_*`` LogNormal (median, log-SD) or HalfNormal
    (median) by ``omega_family``, ``sigma`` LogNormal (log-mean, log-SD).
    """
    family = priors.get("omega_family", "lognormal")
    rows = []
    for name, value in priors.items():
        if name == "omega_family":
            continue
        kind, _, kinetic = name.partition("_")
        pair = isinstance(value, (list, tuple)) and len(value) == 2
        if not pair:
            text = _e(value)
        elif kind == "mu" and kinetic in _SCALE:
            scale, natural = _SCALE[kinetic]
            text = f"Normal({value[0]:.3g}, {value[1]:.3g}) on {scale} (median {natural(value[0])})"
        elif kind == "effect" and kinetic in _SCALE:
            text = f"Normal({value[0]:.3g}, {value[1]:.3g}) on the arm difference in {_SCALE[kinetic][0]}"
        elif kind == "omega":
            text = (f"HalfNormal with median {value[0]:.3g}" if family == "halfnormal"
                    else f"LogNormal(median {value[0]:.3g}, log-SD {value[1]:.3g})")
        elif name == "sigma":
            text = f"LogNormal(median {math.exp(value[0]):.3g}, log-SD {value[1]:.3g}) (residual SD, log scale)"
        elif name == "covariate_effect":
            text = f"Normal({value[0]:.3g}, {value[1]:.3g}) per SD of each covariate"
        else:
            text = f"Normal({value[0]:.3g}, {value[1]:.3g})"
        rows.append([_e(name), text])
    return rows
