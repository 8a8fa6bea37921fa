"""Decision quantities of the remission-durability (cure) model, named as in ``truth.json``."""

from __future__ import annotations

import numpy as np

from toolkit.estimands.core import posterior_probability, summarize_draws


# --------------------------------------------------------------------------- remission durability


def _threshold_name(x: float) -> str:
    return f"{x:g}"


def durability_estimands(posterior, inputs, *, variant: str, days=(180, 365), hr_below=(1.0, 0.7),
                         rfs_difference_above=(0.0, 0.1), ci_prob: float = 0.9, only=None) -> dict:
    """Decision quantities of the durability model, named as in ``truth.json``.

    - ``hazard_ratio`` = exp(b_arm), experimental vs control (for ``cure``:
      among the uncured; also given as ``hazard_ratio_uncured``);
    - ``prob_hr_below_<x>`` = P(HR < x) for each ``hr_below``;
    - ``rfs_{D}d_{arm}`` and ``rfs_{D}d_difference`` (experimental - control),
      standardized over the cohort's covariates; ``prob_rfs_{D}d_difference_above_<x>``;
    - ``median_rfs_days_{arm}`` when the curve reaches 0.5 within 20 years in
      every draw, else ``prob_median_rfs_reached_{arm}``;
    - ``cure_fraction_{arm}`` and ``cure_fraction_difference`` (``cure``);
    - ``log_hr_<covariate>`` per unit of the covariate as given (``log_odds_cure_<covariate>`` for ``cure``).

    Where death in remission has its own hazard (``cure``, or endpoint
    ``relapse``/``efs``): ``cir_{D}d_{arm}`` and ``nrm_{D}d_{arm}``, the
    cumulative incidence of relapse and of non-relapse mortality D days after
    response (death in remission and relapse competing), with ``_difference``;
    and for ``weibull`` ``hazard_ratio_relapse`` (the cause-specific relapse
    hazard ratio among all responders; ``hazard_ratio`` is then the same).
    For endpoint ``efs``: ``response_rate_{arm}`` and ``response_rate_difference``,
    ``efs_{D}d_{arm}`` (D days after infusion) and ``efs_{D}d_difference``,
    ``prob_efs_{D}d_difference_above_<x>``. :func:`durability_definitions`
    says each in words.

    ``only``: the names a caller needs (e.g. a design study's rule at every look); the costly groups that
    give none of them (medians, cure fractions, cumulative incidences, EFS) are skipped, and every name
    returned has the same value as without ``only``. None: every estimand.
    """
    from toolkit.models.durability import (cumulative_incidences, cure_fractions, efs_curves, median_survival_days,
                                           response_probabilities, survival_curves)

    out: dict = {}
    arms = ((0, "control"), (1, "experimental"))

    def wanted(*prefixes: str) -> bool:
        return only is None or any(name.startswith(prefixes) for name in only)

    hr = posterior["hazard_ratio"].to_numpy().ravel()
    out["hazard_ratio"] = summarize_draws(hr, ci_prob=ci_prob)
    separate = "death_log_shape" in posterior
    if variant == "cure":
        out["hazard_ratio_uncured"] = out["hazard_ratio"]
    elif separate:
        out["hazard_ratio_relapse"] = out["hazard_ratio"]
    for x in hr_below:
        out[f"prob_hr_below_{_threshold_name(x)}"] = posterior_probability(hr, below=x)
    curves = {}
    for arm, name in ((0, "control"), (1, "experimental")):
        curves[name] = survival_curves(posterior, inputs, days, variant=variant, arm=arm)
        for j, d in enumerate(days):
            out[f"rfs_{d}d_{name}"] = summarize_draws(curves[name][:, j], ci_prob=ci_prob)
    for j, d in enumerate(days):
        diff = curves["experimental"][:, j] - curves["control"][:, j]
        out[f"rfs_{d}d_difference"] = summarize_draws(diff, ci_prob=ci_prob)
        for x in rfs_difference_above:
            out[f"prob_rfs_{d}d_difference_above_{_threshold_name(x)}"] = posterior_probability(diff, above=x)
    for arm, name in (((0, "control"), (1, "experimental")) if wanted("median_rfs_", "prob_median_rfs_") else ()):
        median = median_survival_days(posterior, inputs, variant=variant, arm=arm)
        if np.isfinite(median).all():
            out[f"median_rfs_days_{name}"] = summarize_draws(median, ci_prob=ci_prob)
        else:
            out[f"prob_median_rfs_reached_{name}"] = float(np.isfinite(median).mean())
    if variant == "cure" and wanted("cure_fraction_"):
        cf = {name: cure_fractions(posterior, inputs, arm=arm) for arm, name in ((0, "control"), (1, "experimental"))}
        for name, draws in cf.items():
            out[f"cure_fraction_{name}"] = summarize_draws(draws, ci_prob=ci_prob)
        out["cure_fraction_difference"] = summarize_draws(cf["experimental"] - cf["control"], ci_prob=ci_prob)
    if separate and wanted("cir_", "nrm_"):
        inc = {}
        for arm, name in arms:  # only the estimand days of the one-day grid (it has every whole day)
            _, cir, nrm = cumulative_incidences(posterior, inputs, max(days), arm=arm, days=days)
            inc[name] = {"cir": cir, "nrm": nrm}
        for what in ("cir", "nrm"):
            for j, d in enumerate(days):
                for _, name in arms:
                    out[f"{what}_{d}d_{name}"] = summarize_draws(inc[name][what][:, j], ci_prob=ci_prob)
                out[f"{what}_{d}d_difference"] = summarize_draws(
                    inc["experimental"][what][:, j] - inc["control"][what][:, j], ci_prob=ci_prob)
    if "logit_response" in posterior and wanted("response_rate_", "efs_", "prob_efs_"):
        p = {name: response_probabilities(posterior, arm=arm) for arm, name in arms}
        for name, draws in p.items():
            out[f"response_rate_{name}"] = summarize_draws(draws, ci_prob=ci_prob)
        out["response_rate_difference"] = summarize_draws(p["experimental"] - p["control"], ci_prob=ci_prob)
        efs = {name: efs_curves(posterior, inputs, days, variant=variant, arm=arm, response_day=inputs.response_day)
               for arm, name in arms}
        for j, d in enumerate(days):
            for name, curve in efs.items():
                out[f"efs_{d}d_{name}"] = summarize_draws(curve[:, j], ci_prob=ci_prob)
            diff = efs["experimental"][:, j] - efs["control"][:, j]
            out[f"efs_{d}d_difference"] = summarize_draws(diff, ci_prob=ci_prob)
            for x in rfs_difference_above:
                out[f"prob_efs_{d}d_difference_above_{_threshold_name(x)}"] = posterior_probability(diff, above=x)
    for j, cov in enumerate(inputs.covariates):
        beta = posterior["beta_std"].to_numpy()[..., j].ravel() / inputs.x_sd[j]
        out[f"log_hr_{cov}"] = summarize_draws(beta, ci_prob=ci_prob)
        if variant == "cure":
            gamma = posterior["gamma_std"].to_numpy()[..., j].ravel() / inputs.x_sd[j]
            out[f"log_odds_cure_{cov}"] = summarize_draws(gamma, ci_prob=ci_prob)
    return out


def durability_definitions(variant: str, endpoint: str, *, response_day: float | None = None) -> dict[str, str]:
    """What each durability estimand of a run means, in words (stored in ``summary.json`` as ``definitions``).

    The simulator's truths (``toolkit.simulate.compute_truth``) follow the
    same definitions under the same names.
    """
    from toolkit.models.durability import separate_nrm

    separate = separate_nrm(variant, endpoint)
    if variant == "cure":
        hr = ("hazard ratio of relapse, experimental vs control, among responders who are not cured (cause-specific: "
              "death in remission is a competing event with its own hazard; the same as hazard_ratio_uncured)")
    elif separate:
        hr = ("cause-specific hazard ratio of relapse, experimental vs control, among all responders (death in "
              "remission is a competing event with its own hazard; the same as hazard_ratio_relapse)")
    else:
        hr = "hazard ratio of relapse or death in remission, experimental vs control, among responders (Weibull PH)"
    if endpoint == "efs":
        hr += ("; it is not an event-free-survival hazard ratio: EFS mixes non-response at day 0 with the hazards "
               "after remission and is not proportional, so its effect is efs_{D}d_difference and "
               "response_rate_difference")
    out = {"hazard_ratio": hr,
           "rfs_{D}d_{arm}": ("relapse-free survival D days after the response day among responders: alive and "
                              "without relapse, in patients without a consolidative transplant"
                              + (" (cured patients can still die in remission)" if variant == "cure" else "")),
           "median_rfs_days_{arm}": "the day that relapse-free survival first falls to 0.5 (within 20 years)"}
    if variant == "cure":
        out["cure_fraction_{arm}"] = ("share of responders who will never relapse (they remain at risk of death in "
                                      "remission)")
    if separate:
        out["cir_{D}d_{arm}"] = ("cumulative incidence of relapse D days after the response day: the probability of "
                                 "having relapsed by then, with death in remission as a competing event "
                                 "(integral of the relapse hazard times the probability of being alive in remission)")
        out["nrm_{D}d_{arm}"] = ("cumulative incidence of non-relapse mortality: the probability of having died in "
                                 "remission by D days after the response day, with relapse as a competing event")
    if endpoint == "efs":
        when = f"day {response_day:g}" if response_day is not None else "the response day"
        out["efs_{D}d_{arm}"] = ("event-free survival D days after infusion among every infused patient: in "
                                 "remission, without relapse and alive; a patient who does not respond counts as an "
                                 f"event at day 0. Computed as P(response) x relapse-free survival from {when} "
                                 "(the responders' median response day)")
        out["response_rate_{arm}"] = "share of infused patients reaching CR or CRi"
    return out
