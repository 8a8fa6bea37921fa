"""The joint kinetics-relapse section of the investigator report: sentences, definitions and figures.

Registered in ``toolkit.report.ANSWERS`` / ``FIGURES`` / ``PRIOR_ROWS`` under the model name ``joint``;
``toolkit.report`` adds the "provisional" labels of a failed fit. Every number is read from the run's
summary or posterior, none typed by hand. The estimands are defined in ``toolkit.models.joint``
("Mediation estimands") and computed in ``toolkit.joint_estimands``; :data:`DEFINITIONS` says the same in
plain words.
"""

from __future__ import annotations

import html
import math


def _e(text) -> str:
    return html.escape(str(text))


def _interval(value: dict, fmt, transform=lambda x: x) -> str:
    lo, hi = next(v for k, v in value.items() if k.startswith("hdi_"))
    return f"{fmt(transform(value['median']))} (90% interval {fmt(transform(lo))} to {fmt(transform(hi))})"


def _ratio(x: float) -> str:
    return f"{x:.2f}"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _prob(p: float) -> str:
    return f'<span class="prob">{p:.2f}</span>'


def _tau_days(summary: dict) -> float:
    return float(summary.get("data", {}).get("tau_days", summary.get("options", {}).get("tau_days", 365.0)))


# Plain-words definitions, in the order of the answer (shown in the report and notebook 05).
DEFINITIONS = {
    "Total effect (hazard_ratio_total)":
        "how much the experimental arm changes the relapse hazard of patients who are not cured, with each "
        "arm's CAR-T cells expanding and persisting as they do in that arm (the effect a patient would get).",
    "Direct effect (hazard_ratio_direct)":
        "the same comparison with the CAR-T kinetics of both arms held at the control arm's: the part of the "
        "effect that does not run through Cmax or CAR-T loss.",
    "Indirect effect (hazard_ratio_indirect)":
        "total divided by direct: the part of the effect that runs through better CAR-T expansion (Cmax) and "
        "persistence (later loss of CAR-T cells).",
    "Proportion mediated (proportion_mediated)":
        "the share of the total effect, on the log hazard-ratio scale, that runs through the kinetics; 100% means "
        "all of it. It divides by the total effect, so it is unstable when that effect is near no effect.",
    "Cmax association (log_hr_per_log_cmax)":
        "how the relapse hazard changes with a patient's peak CAR-T level, per 2.7-fold (one natural-log unit) "
        "higher peak, other things equal.",
    "CAR-T loss association (log_hr_cart_loss)":
        "how much the relapse hazard rises once a patient's CAR-T cells fall below the assay's limit.",
    "Through CAR-T kinetics / through MRD clearance (hazard_ratio_indirect_cart, hazard_ratio_indirect_mrd)":
        "with the MRD submodel, the indirect effect split in two: the part through the CAR-T kinetics, and the "
        "part through a faster MRD kill rate; their product is the indirect effect.",
    "MRD clearance association (log_hr_per_log_clearance)":
        "how the relapse hazard changes with a patient's modelled MRD kill rate (how fast the leukemia falls "
        "after infusion, from the MRD submodel), per 2.7-fold faster kill, other things equal.",
    "MRD association (log_hr_mrd_recurrence)":
        "how much the relapse hazard rises once MRD is first detected in remission; a warning sign of the "
        "leukemia regrowing, not a cause, so it serves prediction only.",
    "Cure fraction":
        "the share of responders who never relapse; its arm effect is estimated apart and has no kinetic link.",
}


def joint_answer(summary: dict) -> list[str]:
    """Plain-language sentences from a joint-model summary (HTML-safe)."""
    est, arms = summary["estimands"], summary["arms"]
    ctl, exp = _e(arms["control"]), _e(arms["experimental"])
    tau = _tau_days(summary)
    out = []
    with_mrd = "hazard_ratio_indirect_mrd" in est
    through = "through CAR-T kinetics and MRD clearance" if with_mrd else "through CAR-T kinetics"
    probs = [(label, est.get(f"prob_hazard_ratio_{name}_below_1")) for label, name in
             (("overall", "total"), (through, "indirect"),
              ("through CAR-T kinetics alone", "indirect_cart"), ("through MRD clearance alone", "indirect_mrd"),
              ("directly (kinetics held at the control arm's)", "direct"))]
    probs = [(label, p) for label, p in probs if p is not None]
    if probs:
        out.append(f"Probability that {exp} lowers the relapse hazard of patients not cured "
                   + "; ".join(f"{label}: {_prob(p)}" for label, p in probs) + ".")
    if "hazard_ratio_total" in est:
        parts = [f"total {_interval(est['hazard_ratio_total'], _ratio)}"]
        if "hazard_ratio_direct" in est:
            parts.append(f"direct {_interval(est['hazard_ratio_direct'], _ratio)}")
        if "hazard_ratio_indirect" in est:
            parts.append(f"{through} {_interval(est['hazard_ratio_indirect'], _ratio)}")
        for name, label in (("indirect_cart", "of which through CAR-T kinetics"),
                            ("indirect_mrd", "of which through MRD clearance")):
            if f"hazard_ratio_{name}" in est:
                parts.append(f"{label} {_interval(est[f'hazard_ratio_{name}'], _ratio)}")
        out.append(f"Hazard ratio of relapse, {exp} vs {ctl}, over the first {tau:.0f} days after remission "
                   f"(below 1 favours {exp}): " + "; ".join(parts) + ".")
    if "proportion_mediated" in est:
        pm = est["proportion_mediated"]
        lo, hi = next(v for k, v in est["hazard_ratio_total"].items() if k.startswith("hdi_")) \
            if "hazard_ratio_total" in est else (0.0, 2.0)
        caution = (" The total effect's interval includes no effect (1), so this share is not interpretable here: "
                   "read the direct and indirect hazard ratios instead." if lo <= 1 <= hi else
                   " It divides by the total effect, so it is unstable when the total effect is near 1.")
        out.append(f"Share of the total effect that runs {through} (proportion mediated): "
                   f"{_interval(pm, _pct)}.{caution}")
    if "log_hr_per_log_cmax" in est:
        g = est["log_hr_per_log_cmax"]
        out.append(f"Peak CAR-T level and relapse: hazard ratio {_interval(g, _ratio, math.exp)} per 2.7-fold "
                   f"higher Cmax, i.e. {_interval(g, _ratio, lambda x: math.exp(x * math.log(2)))} per doubling "
                   "(below 1: patients with a higher peak relapse less).")
    if "log_hr_cart_loss" in est:
        out.append(f"Loss of CAR-T cells and relapse: once a patient's CAR-T cells fall below the assay's limit, "
                   f"the relapse hazard is multiplied by {_interval(est['log_hr_cart_loss'], _ratio, math.exp)}.")
    if "log_hr_per_log_clearance" in est:
        g = est["log_hr_per_log_clearance"]
        text = (f"MRD kill rate and relapse: hazard ratio {_interval(g, _ratio, math.exp)} per 2.7-fold faster "
                "MRD clearance (below 1: patients whose leukemia is cleared faster relapse less)")
        if "clearance_rate_ratio" in est:
            text += f"; MRD kill rate with {exp} relative to {ctl}: ratio {_interval(est['clearance_rate_ratio'], _ratio)}"
        out.append(text + ".")
    if "log_hr_mrd_recurrence" in est:
        out.append(f"MRD detected in remission and relapse: the relapse hazard is multiplied by "
                   f"{_interval(est['log_hr_mrd_recurrence'], _ratio, math.exp)} once MRD is detected; this is a "
                   "warning sign used for prediction, not a cause.")
    if "cmax_gmr" in est:
        text = f"Peak level (Cmax) with {exp} relative to {ctl}: geometric mean ratio {_interval(est['cmax_gmr'], _ratio)}"
        if "persistence_half_life_ratio" in est:
            text += f"; persistence half-life ratio {_interval(est['persistence_half_life_ratio'], _ratio)}"
        out.append(text + " (the kinetic differences the indirect effect runs through).")
    if "cure_fraction_difference" in est:
        out.append(f"Share of responders cured (never relapsing): {_interval(est['cure_fraction_control'], _pct)} "
                   f"with {ctl} vs {_interval(est['cure_fraction_experimental'], _pct)} with {exp}; this part of "
                   "the effect is not linked to kinetics in the model.")
    if summary.get("options", {}).get("kinetics") == "two-stage" or "two-stage" in str(summary.get("variant", "")):
        out.append("Two-stage fit: each patient's kinetics were plugged in as known, so the associations are "
                   "diluted toward no effect and the intervals are too narrow; the joint fit is the primary analysis.")
    return out


def joint_definitions_html() -> str:
    items = "".join(f"<dt><strong>{_e(k)}</strong></dt><dd>{_e(v)}</dd>" for k, v in DEFINITIONS.items())
    return ("<div class='answer'><strong>Joint model: what the quantities mean</strong>"
            "<p class='muted'>All hazard ratios compare the relapse hazard of responders who are not cured, over "
            "the stated horizon after remission; new patients' kinetics are drawn from each arm's fitted "
            f"CAR-T population.</p><dl>{items}</dl></div>")


def joint_figures(run) -> list[str]:
    """HTML of a joint run: the definitions, then the mediation forest, the mediation curves and the
    association posteriors against their priors."""
    from toolkit.plots.joint import (curve_defaults, plot_association_posteriors, plot_mediation_curves,
                                     plot_mediation_forest)
    from toolkit.report_format import _figure, decision_figures

    summary = run.summary
    tau = _tau_days(summary)
    posterior = run.posterior["posterior"]
    arms = (summary["arms"]["control"], summary["arms"]["experimental"])
    return [
        joint_definitions_html(),
        _figure(plot_mediation_forest(summary["estimands"]),
                f"Effect of the experimental arm on the relapse hazard of patients not cured (first {tau:.0f} days "
                "after remission), split into the part through CAR-T kinetics (indirect) and the rest (direct); "
                "total = direct × indirect. Below 1 favours the experimental arm."),
        _figure(plot_mediation_curves(posterior, arm_labels=arms, tau_days=tau, **curve_defaults(run)),
                "Share of patients not cured still in remission, by days since remission: the experimental arm with "
                "its own CAR-T kinetics (solid orange), the experimental arm if its CAR-T cells behaved as in the "
                "control arm (dashed), and the control arm (solid blue); posterior median and 90% band. The gap "
                "between the orange curves is the effect through kinetics; between dashed orange and blue, the "
                "direct effect."),
        _figure(plot_association_posteriors(posterior, run.provenance.get("priors")).axes[0],
                "How strongly the kinetics are linked to relapse: posterior (filled) against prior (dashed) of each "
                "association, on the log hazard-ratio scale (0 = no link). A posterior much narrower than its prior "
                "was learned from these data; one like its prior was not."),
    ] + decision_figures(run)


_PRIOR_MEANING = {
    "log_hr": "log hazard ratio of the arm (direct effect)",
    "log_hr_per_log_cmax": "log hazard ratio per natural-log unit of Cmax",
    "log_hr_cart_loss": "log hazard ratio after CAR-T loss",
    "log_hr_mrd_recurrence": "log hazard ratio after MRD recurrence (used only with the mrd association)",
    "log_hr_per_log_clearance": "log hazard ratio per natural-log unit of the MRD kill rate (mrd_clearance only)",
    "log_shape": "log Weibull shape",
    "log_scale_years": "log Weibull scale (years)",
    "logit_cure": "logit cure fraction, control arm",
    "cure_log_or": "log odds ratio of cure, experimental vs control",
    "beta_std": "log hazard ratio per SD of each covariate (used only with covariates)",
}


def joint_prior_rows(priors: dict) -> list[list[str]]:
    """The prior record of a joint run as (parameter, prior) rows (HTML-safe); the kinetic part's priors are
    those of the CAR-T model."""
    rows = []
    for name, value in priors.items():
        if name == "cart":  # the kinetic part's priors as used (unit centre and spec departures), below
            continue
        if isinstance(value, (list, tuple)) and len(value) == 2:
            text = f"Normal({value[0]:.3g}, {value[1]:.3g}) on the {_PRIOR_MEANING.get(name, 'model scale')}"
            if name.startswith("log_hr"):
                text += f" (median hazard ratio {math.exp(value[0]):.2f})"
        else:
            text = _e(value)
        rows.append([_e(name), _e(text)])
    if isinstance(priors.get("cart"), dict):
        from toolkit.report_cart import cart_prior_rows

        rows.append(["cart", "the CAR-T kinetic part: the CAR-T model's priors (toolkit.models.cart.CartPriors) "
                             "for this cohort's unit, with the spec's departures, as used:"])
        rows += [[f"CAR-T kinetics: {name}", text] for name, text in cart_prior_rows(priors["cart"])]
    else:
        rows.append(["CAR-T kinetics", "the defaults of the CAR-T kinetic model (toolkit.models.cart.CartPriors)"])
    rows.append(["MRD kinetics (mrd_clearance only)", "the defaults of the MRD kinetic model (toolkit.models.mrd.MrdPriors)"])
    return rows
