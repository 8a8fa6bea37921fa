"""Decision quantities of the CAR-T kinetic model, named as in ``truth.json``."""

from __future__ import annotations

import numpy as np

from toolkit.estimands.core import hdi_key, posterior_probability, summarize_draws


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
