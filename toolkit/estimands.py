"""Posterior summaries of estimands (generic pieces).

Model-specific estimands build on :func:`summarize_draws` and
:func:`posterior_probability`; both take raw draws (any shape, flattened).
"""

from __future__ import annotations

import numpy as np

__all__ = ["finite_draws", "hdi_key", "posterior_probability", "summarize_draws"]


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
    return {
        "mean": float(np.mean(arr)),
        "median": float(np.median(arr)),
        "sd": float(np.std(arr, ddof=1)),
        hdi_key(ci_prob): [lo, hi],
    }


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
    """
    from toolkit.models.durability import cure_fractions, median_survival_days, survival_curves

    out: dict = {}
    hr = posterior["hazard_ratio"].to_numpy().ravel()
    out["hazard_ratio"] = summarize_draws(hr, ci_prob=ci_prob)
    if variant == "cure":
        out["hazard_ratio_uncured"] = out["hazard_ratio"]
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
    for j, cov in enumerate(inputs.covariates):
        beta = posterior["beta_std"].to_numpy()[..., j].ravel() / inputs.x_sd[j]
        out[f"log_hr_{cov}"] = summarize_draws(beta, ci_prob=ci_prob)
        if variant == "cure":
            gamma = posterior["gamma_std"].to_numpy()[..., j].ravel() / inputs.x_sd[j]
            out[f"log_odds_cure_{cov}"] = summarize_draws(gamma, ci_prob=ci_prob)
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
