"""Posterior summaries of estimands (generic pieces).

Model-specific estimands build on :func:`summarize_draws` and
:func:`posterior_probability`; both take raw draws (any shape, flattened).
"""

from __future__ import annotations

from contextvars import ContextVar

import numpy as np

__all__ = ["finite_draws", "hdi_key", "posterior_probability", "summarize_draws"]


# Set by toolkit.review.recording_estimand_draws: {id(summary): (summary, draws)}, so a fit can store the draws
# behind each estimand (prior sensitivity weights them) without every estimand function returning draws.
_DRAW_RECORDER: ContextVar[dict | None] = ContextVar("estimand_draw_recorder", default=None)


def _flat_draws(draws) -> np.ndarray:
    arr = np.asarray(draws, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError("draws is empty")
    if np.isnan(arr).any():
        raise ValueError(f"draws contain {int(np.isnan(arr).sum())} NaN values")
    return arr


def hdi_key(ci_prob: float) -> str:
    """Key of the interval in :func:`summarize_draws` output, e.g. ``"hdi_90"``."""
    return f"hdi_{int(round(100 * ci_prob))}"


def summarize_draws(draws: np.ndarray, *, ci_prob: float = 0.9) -> dict:
    """Mean, median, sd and highest-density interval of posterior draws.

    Parameters
    ----------
    draws : array-like
        Draws of one scalar quantity, any shape (e.g. ``(chain, draw)``); flattened.
    ci_prob : float
        Probability mass of the HDI, in (0, 1].

    Returns
    -------
    dict
        ``{"mean", "median", "sd", "hdi_<100*ci_prob>": [lo, hi]}`` with plain
        floats; ``sd`` uses ``ddof=1``. The HDI is the narrowest interval between
        two sorted draws spanning ``floor(ci_prob * n)`` steps (arviz-stats
        ``"nearest"`` method; first one on ties).
    """
    import arviz_stats as azs

    if not 0.0 < ci_prob <= 1.0:
        raise ValueError(f"ci_prob must be in (0, 1], got {ci_prob!r}")
    arr = _flat_draws(draws)
    if arr.size < 2:
        raise ValueError("need at least 2 draws to summarise")
    lo, hi = (float(v) for v in azs.hdi(arr, prob=ci_prob))
    summary = {
        "mean": float(np.mean(arr)),
        "median": float(np.median(arr)),
        "sd": float(np.std(arr, ddof=1)),
        hdi_key(ci_prob): [lo, hi],
    }
    record = _DRAW_RECORDER.get()
    if record is not None:
        record[id(summary)] = (summary, arr)
    return summary


def posterior_probability(
    draws: np.ndarray, *, above: float | None = None, below: float | None = None
) -> float:
    """Share of draws strictly above ``above`` and/or strictly below ``below``.

    With both bounds it is the probability of ``above < x < below``.

    Raises
    ------
    ValueError
        If neither bound is given, or ``above >= below``.
    """
    if above is None and below is None:
        raise ValueError("give at least one of above= or below=")
    if above is not None and below is not None and not above < below:
        raise ValueError(f"need above < below, got above={above!r}, below={below!r}")
    arr = _flat_draws(draws)
    hit = np.ones(arr.shape, dtype=bool)
    if above is not None:
        hit &= arr > above
    if below is not None:
        hit &= arr < below
    return float(np.mean(hit))


def finite_draws(draws, name: str, warnings_out: list[str] | None = None, *, why: str = "") -> np.ndarray:
    """The finite draws of ``name`` (flattened); drawing any other is counted, never silent.

    Draws that are NaN or infinite (e.g. a ratio whose denominator is 0 in that draw) are left out of the
    estimand's summary and probabilities. When some are, the message "``name``: K of N posterior draws are
    not finite ...", plus ``why``, is appended to ``warnings_out`` (a fit stores it in summary.json
    ``warnings``), or raised as a ``UserWarning`` when no list is given.
    """
    import warnings

    arr = np.asarray(draws, dtype=float).ravel()
    ok = np.isfinite(arr)
    if not ok.all():
        message = (f"{name}: {int((~ok).sum())} of {arr.size} posterior draws are not finite"
                   + (f" ({why})" if why else "") + " and are left out of its summary; the estimate describes "
                   "the other draws")
        if warnings_out is None:
            warnings.warn(message, UserWarning, stacklevel=2)
        else:
            warnings_out.append(message)
    return arr[ok]


# --------------------------------------------------------------------------- remission durability


def _threshold_name(x: float) -> str:
    return f"{x:g}"


def durability_estimands(posterior, inputs, *, variant: str, days=(180, 365), hr_below=(1.0, 0.7),
                         rfs_difference_above=(0.0, 0.1), ci_prob: float = 0.9) -> dict:
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
    """
    from toolkit.models.durability import (cumulative_incidences, cure_fractions, efs_curves, median_survival_days,
                                           response_probabilities, survival_curves)

    out: dict = {}
    arms = ((0, "control"), (1, "experimental"))
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
    for arm, name in ((0, "control"), (1, "experimental")):
        median = median_survival_days(posterior, inputs, variant=variant, arm=arm)
        if np.isfinite(median).all():
            out[f"median_rfs_days_{name}"] = summarize_draws(median, ci_prob=ci_prob)
        else:
            out[f"prob_median_rfs_reached_{name}"] = float(np.isfinite(median).mean())
    if variant == "cure":
        cf = {name: cure_fractions(posterior, inputs, arm=arm) for arm, name in ((0, "control"), (1, "experimental"))}
        for name, draws in cf.items():
            out[f"cure_fraction_{name}"] = summarize_draws(draws, ci_prob=ci_prob)
        out["cure_fraction_difference"] = summarize_draws(cf["experimental"] - cf["control"], ci_prob=ci_prob)
    if separate:
        grid, inc = None, {}
        for arm, name in arms:
            grid, cir, nrm = cumulative_incidences(posterior, inputs, max(days), arm=arm)
            inc[name] = {"cir": cir, "nrm": nrm}
        index = [int(np.argmin(np.abs(grid - d))) for d in days]  # the grid has every whole day
        for what in ("cir", "nrm"):
            for j, d in zip(index, days):
                for _, name in arms:
                    out[f"{what}_{d}d_{name}"] = summarize_draws(inc[name][what][:, j], ci_prob=ci_prob)
                out[f"{what}_{d}d_difference"] = summarize_draws(
                    inc["experimental"][what][:, j] - inc["control"][what][:, j], ci_prob=ci_prob)
    if "logit_response" in posterior:
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


# --------------------------------------------------------------------------- CAR-T kinetics


CART_ARM_QUANTITIES = ("cmax_copies_per_ug", "tmax_days", "auc_0_28", "half_life_contraction_days",
                       "half_life_persistence_days", "persistence_fraction")


def cart_estimands(posterior, inputs, *, ci_prob: float = 0.9, n_new_patients: int = 200,
                   random_seed: int = 20261125) -> dict:
    """Decision quantities of the CAR-T kinetic model, named as in ``truth.json``.

    - per arm (``_control``, ``_experimental``), the typical patient (population
      medians, covariates at the cohort mean): ``cmax_copies_per_ug``,
      ``tmax_days``, ``auc_0_28``, ``half_life_contraction_days``,
      ``half_life_persistence_days``, ``persistence_fraction``;
    - ``cmax_gmr`` = exp(delta_cmax), the ratio of typical Cmax, which equals the
      ratio of the population geometric means of patient Cmax (log Cmax is
      normal with the same SD in both arms);
    - ``auc28_gmr``: ratio of population geometric means of patients' AUC0-28.
      AUC is nonlinear in the parameters, so per draw ``n_new_patients`` new
      patients a arm are simulated from that draw's population (fixed seed,
      the same deviates in both arms) and exp(mean log AUC) compared;
    - ``tmax_difference_days`` (experimental - control, typical patients),
      ``persistence_half_life_ratio`` (ratio of typical ln2/beta);
    - ``prob_cmax_gmr_above_1``, ``prob_auc28_gmr_above_1`` (floats).

    Values are :func:`summarize_draws` dicts except the probabilities.
    """
    from toolkit.models.cart import new_patient_log_auc

    out: dict = {}
    arm_draws = {}
    for q in CART_ARM_QUANTITIES:
        da = posterior[q]
        values = da.to_numpy().reshape(-1, da.shape[-1])
        arm_draws[q] = values
        for a, name in enumerate(("control", "experimental")):
            out[f"{q}_{name}"] = summarize_draws(values[:, a], ci_prob=ci_prob)
    cmax_gmr = arm_draws["cmax_copies_per_ug"][:, 1] / arm_draws["cmax_copies_per_ug"][:, 0]
    log_auc = new_patient_log_auc(posterior, inputs, n_new=n_new_patients, random_seed=random_seed)
    auc28_gmr = np.exp(log_auc[:, 1, :].mean(axis=1) - log_auc[:, 0, :].mean(axis=1))
    out["cmax_gmr"] = summarize_draws(cmax_gmr, ci_prob=ci_prob)
    out["auc28_gmr"] = summarize_draws(auc28_gmr, ci_prob=ci_prob)
    out["tmax_difference_days"] = summarize_draws(arm_draws["tmax_days"][:, 1] - arm_draws["tmax_days"][:, 0],
                                                  ci_prob=ci_prob)
    hl = arm_draws["half_life_persistence_days"]
    out["persistence_half_life_ratio"] = summarize_draws(hl[:, 1] / hl[:, 0], ci_prob=ci_prob)
    out["prob_cmax_gmr_above_1"] = posterior_probability(cmax_gmr, above=1.0)
    out["prob_auc28_gmr_above_1"] = posterior_probability(auc28_gmr, above=1.0)
    return out


def cart_patient_estimands(posterior, inputs, *, ci_prob: float = 0.9,
                           horizon_days: float = 20 * 365.0):
    """Per-patient posterior summaries, a DataFrame indexed by ``patient_id``.

    Columns ``{quantity}_{mean,median,lo,hi}`` (HDI of ``ci_prob``) for
    ``cmax`` (``patient_cmax``), ``auc_0_28`` (``patient_auc_0_28``) and
    ``time_above_lloq_days`` (days from infusion until the patient's fitted
    curve falls below their LLOQ; capped at Tmax + ``horizon_days``, see
    :func:`toolkit.models.cart.patient_time_above_lloq`), plus ``arm`` (0/1).
    """
    import pandas as pd

    from toolkit.models.cart import patient_time_above_lloq

    draws = {
        "cmax": posterior["patient_cmax"].to_numpy().reshape(-1, inputs.n_patients),
        "auc_0_28": posterior["patient_auc_0_28"].to_numpy().reshape(-1, inputs.n_patients),
        "time_above_lloq_days": patient_time_above_lloq(posterior, inputs, horizon_days=horizon_days),
    }
    key = hdi_key(ci_prob)
    rows = []
    for i in range(inputs.n_patients):
        row = {"arm": int(inputs.arm[i])}
        for name, values in draws.items():
            s = summarize_draws(values[:, i], ci_prob=ci_prob)
            row.update({f"{name}_mean": s["mean"], f"{name}_median": s["median"],
                        f"{name}_lo": s[key][0], f"{name}_hi": s[key][1]})
        rows.append(row)
    return pd.DataFrame(rows, index=pd.Index(inputs.patient_ids, name="patient_id"))
