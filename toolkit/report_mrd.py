"""The MRD kinetics section of the investigator report: sentences and figures from an ``mrd`` run.

Registered in ``toolkit.report.ANSWERS`` / ``FIGURES`` / ``PRIOR_ROWS`` under
the model name; ``toolkit.report`` adds the "provisional" labels of a failed
fit. Every number is read from the run's summary or posterior, none typed by
hand. Every MRD quantity is among responders (CR/CRi), the patients the model
analyses (``toolkit.mrd_estimands``).
"""

from __future__ import annotations

import html
import math


def _e(text) -> str:
    return html.escape(str(text))


def _interval(value: dict, fmt) -> str:
    lo, hi = next(v for k, v in value.items() if k.startswith("hdi_"))
    return f"{fmt(value['median'])} (90% interval {fmt(lo)} to {fmt(hi)})"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _points(x: float) -> str:
    """A difference of proportions in percentage points, never "-0"."""
    n = round(100 * x)
    return f"{n:+d} points" if n else "0 points"


def _ratio(x: float) -> str:
    return f"{x:.2f}"


def _prob(p: float) -> str:
    return f'<span class="prob">{p:.2f}</span>'


def mrd_answer(summary: dict) -> list[str]:
    """Plain-language sentences from an MRD kinetics summary (HTML-safe)."""
    est, arms = summary["estimands"], summary["arms"]
    ctl, exp = _e(arms["control"]), _e(arms["experimental"])
    out = []
    if "clearance_rate_ratio" in est:
        prob = (f"; probability that {exp} clears MRD faster: {_prob(est['prob_clearance_rate_ratio_above_1'])}"
                if "prob_clearance_rate_ratio_above_1" in est else "")
        caveat = ""
        if summary.get("data", {}).get("assessments_before_day_28") == 0:
            caveat = (" No MRD was measured before day 28, when most responders are already below the flow limit, "
                      "so the data bound the kill rate only from below and this ratio leans on its prior.")
        out.append(f"Speed of MRD clearance after infusion with {exp} relative to {ctl} (ratio of typical kill rates): "
                   f"{_interval(est['clearance_rate_ratio'], _ratio)}{prob}.{caveat}")
    if "mrd_negative_28d_flow_control" in est:
        ngs = ""
        if "mrd_negative_28d_ngs_control" in est:
            ngs = (f" Below 0.0001% (the sensitivity of NGS): {_interval(est['mrd_negative_28d_ngs_control'], _pct)} "
                   f"with {ctl} vs {_interval(est['mrd_negative_28d_ngs_experimental'], _pct)} with {exp}.")
        out.append(f"Responders MRD-negative at day 28 (true MRD below 0.01%, the flow cytometry threshold): "
                   f"{_interval(est['mrd_negative_28d_flow_control'], _pct)} with {ctl} vs "
                   f"{_interval(est['mrd_negative_28d_flow_experimental'], _pct)} with {exp}.{ngs}")
    if "mrd_recurrence_365d_control" in est:
        diff = ""
        if "mrd_recurrence_365d_difference" in est:
            prob = (f"; probability that {exp} has fewer recurrences: {_prob(est['prob_mrd_recurrence_365d_lower'])}"
                    if "prob_mrd_recurrence_365d_lower" in est else "")
            diff = f"; difference {_interval(est['mrd_recurrence_365d_difference'], _points)}{prob}"
        out.append(f"MRD recurrence by day 365 (MRD rising back to 0.01% or more, among responders MRD-negative at "
                   f"day 28, had no transplant or death intervened): {_interval(est['mrd_recurrence_365d_control'], _pct)} "
                   f"with {ctl} vs {_interval(est['mrd_recurrence_365d_experimental'], _pct)} with {exp}{diff}.")
    return out


def mrd_figures(run) -> list[str]:
    """HTML figures of an MRD run: arm effects and the observed vs replicated share MRD-negative.

    The per-patient trajectories (``RUN/figures/trajectories.png``, and the
    notebook) are left out of the report, which shows no patient-level data;
    the share MRD-negative is drawn without its counts (small cells).
    """
    from toolkit.mrd_estimands import mrd_inputs_from_run, residual_df_of_run
    from toolkit.plots.mrd import fraction_negative_table, plot_fraction_negative, plot_mrd_effects
    from toolkit.plots.ppc import mrd_pit_of_run, mrd_replicated_negative_of_run
    from toolkit.report_format import _figure, decision_figures, pit_figure

    inputs = mrd_inputs_from_run(run)
    error = residual_df_of_run(run)  # a run fitted before MRD 1.4.0 keeps its Normal measurement error
    table = fraction_negative_table(inputs, mrd_replicated_negative_of_run(run.posterior, inputs, residual_df=error))
    return [
        _figure(plot_mrd_effects(run.summary["estimands"]).axes[0],
                "Effect of the experimental arm on MRD: ratio of typical MRD kill rates (above 1: faster clearance "
                "with the experimental arm) and the difference in MRD recurrence by day 365 among responders "
                "MRD-negative at day 28 (below 0: fewer recurrences with the experimental arm); median and 90% interval."),
        _figure(plot_fraction_negative(table, arm_labels=inputs.arm_labels, show_counts=False).axes[0],
                "Model check: by visit window, arm and assay, the share of MRD assessments below their own detection "
                "limit, observed (points) and replicated from the fitted model at the same days and limits (dashed "
                "median, 90% band). Points inside the bands mean the model reproduces the data."),
    ] + decision_figures(run) + [pit_figure({"MRD": mrd_pit_of_run(run.posterior, inputs, residual_df=error)})]


_NATURAL = {"log_clearance": lambda m: f"median {math.exp(m):.2g} log10/day",
            "log_relapse_latency": lambda m: f"Weibull scale {math.exp(m):.0f} days",
            "log_doubling_days": lambda m: f"median {math.exp(m):.0f} days",
            "logit_recurrence": lambda m: f"median {1 / (1 + math.exp(-m)):.0%}",
            "logit_response": lambda m: f"median {1 / (1 + math.exp(-m)):.0%}"}


def mrd_prior_rows(priors: dict) -> list[list[str]]:
    """The prior record of an MRD run as (parameter, prior) table rows, each with its family (HTML-safe).

    Pairs are Normal(mean, SD) except the LogNormal ``residual_sd_log10``, ``floor_depth_sd_log10``,
    ``doubling_sd`` and ``clearance_sd`` (since model 1.3.0); single numbers are HalfNormal scales except
    ``sustained_floor_log10`` (a fixed constant) and a run before 1.3.0's ``clearance_sd`` (the mean of a Gamma(2)).
    """
    rows = []
    for name, value in priors.items():
        pair = isinstance(value, (list, tuple)) and len(value) == 2
        if name == "sustained_floor_log10":
            text = f"fixed at {value:g} (log10 fraction)"
        elif pair and name in ("residual_sd_log10", "floor_depth_sd_log10"):
            text = f"LogNormal({value[0]:.3g}, {value[1]:.3g}) (median {math.exp(value[0]):.2g} log10)"
        elif name == "clearance_sd" and not pair:  # models before 1.3.0
            text = f"Gamma(2, rate {2.0 / value:.3g}) (mean {value:.3g} on the log scale)"
        elif pair and name in ("doubling_sd", "clearance_sd"):
            text = f"LogNormal({value[0]:.3g}, {value[1]:.3g}) (median {math.exp(value[0]):.2g} on the log scale)"
        elif pair:
            natural = f" ({_NATURAL[name](value[0])})" if name in _NATURAL else ""
            text = f"Normal({value[0]:.3g}, {value[1]:.3g}){natural}"
        elif isinstance(value, (int, float)):
            text = f"HalfNormal({value:.3g})"
        else:
            text = _e(value)
        rows.append([_e(name), text])
    return rows
