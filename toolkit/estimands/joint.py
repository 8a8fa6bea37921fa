"""Decision quantities of the joint model (``toolkit.models.joint``): associations and mediation.

Definitions are in the ``toolkit.models.joint`` docstring ("Mediation estimands"). Expectations
over an arm's kinetics are Monte-Carlo averages over ``n_new`` new patients drawn per posterior draw
from that draw's fitted CAR-T population (the same standard-normal deviates in both arms, so arm
contrasts carry little simulation noise), each with the cohort's median response day and LLOQ.
"""

from __future__ import annotations

import numpy as np

from toolkit.data.inputs import DAYS_PER_YEAR
from toolkit.data.joint_inputs import JointInputs
from toolkit.estimands.core import finite_draws, posterior_probability, summarize_draws
from toolkit.models import cart
from toolkit.models.joint import (
    LOG_CLEARANCE_REFERENCE,
    LOG_CMAX_REFERENCE,
    MRD_SUBMODEL,
    loss_delay,
    population_log_clearance,
    relapse_cumhaz,
)

ASSOCIATION_NAMES = ("log_hr_per_log_cmax", "log_hr_cart_loss", "log_hr_mrd_recurrence", "log_hr_per_log_clearance")
DEFAULT_TAU_DAYS = 365.0


def _draws(posterior, name) -> np.ndarray:
    da = posterior[name]
    return da.to_numpy().reshape(-1, *da.shape[2:])


def new_patient_features(posterior, *, n_new: int = 200, response_day: float = 28.0, lloq: float = 50.0,
                         random_seed: int = 20261125) -> dict[str, np.ndarray]:
    """(draws, 2 arms, n_new) log Cmax and CAR-T loss (years after response) of new patients per arm, and
    with the MRD submodel their MRD kill rate ``log_clearance`` (log of log10/day, drawn independently:
    the two submodels share no patient effect)."""
    mu = _draws(posterior, "mu_kinetic")
    omega = _draws(posterior, "omega_kinetic")
    delta = cart.arm_effects_full(posterior)
    rng = np.random.default_rng(random_seed)
    z = rng.standard_normal((mu.shape[0], n_new, len(cart.KINETIC_PARAMETERS)))
    base = mu[:, None, :] + omega[:, None, :] * z
    log_cmax = np.empty((mu.shape[0], 2, n_new))
    loss_years = np.empty_like(log_cmax)
    for a in (0, 1):
        theta = base + a * delta[:, None, :]
        p = cart.natural_parameters_np(theta)
        lc = theta[..., 0]
        u = loss_delay(lc, p["alpha"], p["beta"], theta[..., 4], np.log(lloq), lib=np)
        log_cmax[:, a] = lc
        loss_years[:, a] = np.maximum(p["tmax"] + u - response_day, 0.0) / DAYS_PER_YEAR
    out = {"log_cmax": log_cmax, "loss_years": loss_years}
    if f"{MRD_SUBMODEL}::log_clearance" in posterior:
        sub = lambda name: _draws(posterior, f"{MRD_SUBMODEL}::{name}")[:, None, None]  # noqa: E731
        z_k = rng.standard_normal((mu.shape[0], 1, n_new))
        arms = np.array([0.0, 1.0])[None, :, None]
        out["log_clearance"] = population_log_clearance(sub("log_clearance"), sub("clearance_log_ratio"),
                                                        sub("clearance_sd"), arms, z_k)
    return out


def uncured_cumhaz(posterior, features: dict, *, arm: int, kinetics_arm: int, tau_years: float,
                   mrd_arm: int | None = None) -> np.ndarray:
    """(draws, n_new) H(tau | arm, K) of an uncured patient of ``arm`` with CAR-T kinetics K from
    ``kinetics_arm`` and MRD kill rate from ``mrd_arm`` (default: ``kinetics_arm``); MRD recurrence taken
    as never detected; covariates cancel in the ratios and are left at 0."""
    mrd_arm = kinetics_arm if mrd_arm is None else mrd_arm
    lp = _draws(posterior, "log_hr")[:, None] * arm
    if "log_hr_per_log_cmax" in posterior:
        lp = lp + _draws(posterior, "log_hr_per_log_cmax")[:, None] * (features["log_cmax"][:, kinetics_arm]
                                                                       - LOG_CMAX_REFERENCE)
    if "log_hr_per_log_clearance" in posterior:
        lp = lp + _draws(posterior, "log_hr_per_log_clearance")[:, None] * (features["log_clearance"][:, mrd_arm]
                                                                            - LOG_CLEARANCE_REFERENCE)
    changes, log_hrs = [], []
    if "log_hr_cart_loss" in posterior:
        changes.append(features["loss_years"][:, kinetics_arm])
        log_hrs.append(_draws(posterior, "log_hr_cart_loss")[:, None])
    return relapse_cumhaz(np.full_like(lp, tau_years), lp, _draws(posterior, "log_shape")[:, None],
                          _draws(posterior, "log_scale_years")[:, None], changes, log_hrs, lib=np)


def mediation_draws(posterior, inputs: JointInputs, *, tau_days: float = DEFAULT_TAU_DAYS, n_new: int = 200,
                    random_seed: int = 20261125) -> dict[str, np.ndarray]:
    """Per-draw ``hazard_ratio_total``, ``hazard_ratio_direct``, ``hazard_ratio_indirect``, ``proportion_mediated``;
    with the MRD submodel also ``hazard_ratio_indirect_cart`` = H(1, K1, M0) / H(1, K0, M0) and
    ``hazard_ratio_indirect_mrd`` = H(1, K1, M1) / H(1, K1, M0) (their product is the indirect ratio;
    H(arm, CAR-T kinetics, MRD kill rate) as in :func:`uncured_cumhaz`)."""
    features = new_patient_features(posterior, n_new=n_new, response_day=float(np.median(inputs.response_day)),
                                    lloq=float(np.exp(np.median(inputs.log_lloq))), random_seed=random_seed)
    tau = tau_days / DAYS_PER_YEAR
    h = {(a, k, m): uncured_cumhaz(posterior, features, arm=a, kinetics_arm=k, mrd_arm=m,
                                   tau_years=tau).mean(axis=1)
         for a, k, m in ((0, 0, 0), (1, 0, 0), (1, 1, 1), (1, 1, 0))}
    total = h[1, 1, 1] / h[0, 0, 0]
    direct = h[1, 0, 0] / h[0, 0, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        proportion = np.log(total / direct) / np.log(total)
    out = {"hazard_ratio_total": total, "hazard_ratio_direct": direct, "hazard_ratio_indirect": total / direct,
           "proportion_mediated": proportion}
    if "log_clearance" in features:
        out["hazard_ratio_indirect_cart"] = h[1, 1, 0] / h[1, 0, 0]
        out["hazard_ratio_indirect_mrd"] = h[1, 1, 1] / h[1, 1, 0]
    return out


def joint_estimands(posterior, inputs: JointInputs, *, tau_days: float = DEFAULT_TAU_DAYS, ci_prob: float = 0.9,
                    n_new: int = 200, hr_below=(1.0,), warnings_out: list[str] | None = None) -> dict:
    """Association parameters, mediation estimands and the kinetic contrasts, named as in ``truth.json``.

    Besides the :func:`mediation_draws` quantities: ``log_hr_per_log_cmax``, ``log_hr_cart_loss``,
    ``log_hr_mrd_recurrence`` (those in the model), ``cure_fraction_{arm}`` and
    ``cure_fraction_difference`` (cure variant), ``prob_hazard_ratio_total_below_1`` (and other
    thresholds in ``hr_below``), ``prob_hazard_ratio_direct_below_1``, ``prob_hazard_ratio_indirect_below_1``,
    and the CAR-T contrasts ``cmax_gmr`` and ``persistence_half_life_ratio``.

    A mediation draw that is not finite (``proportion_mediated`` where the total effect is exactly null in
    that draw) is left out of that estimand's summary and probabilities, and counted in a message appended
    to ``warnings_out`` (the fit's summary.json ``warnings``; a ``UserWarning`` without a list).
    """
    out: dict = {}
    draws = mediation_draws(posterior, inputs, tau_days=tau_days, n_new=n_new)
    draws = {name: finite_draws(values, name, warnings_out,
                                why="the total effect is null in those draws" if name == "proportion_mediated"
                                else "")
             for name, values in draws.items()}
    for name, values in draws.items():
        out[name] = summarize_draws(values, ci_prob=ci_prob)
    for name in ("hazard_ratio_total", "hazard_ratio_direct", "hazard_ratio_indirect", "hazard_ratio_indirect_cart",
                 "hazard_ratio_indirect_mrd"):
        for x in (hr_below if name in draws else ()):
            out[f"prob_{name}_below_{x:g}".replace(".", "_")] = posterior_probability(draws[name], below=x)
    for name in ASSOCIATION_NAMES:
        if name in posterior:
            out[name] = summarize_draws(_draws(posterior, name), ci_prob=ci_prob)
    if "logit_cure" in posterior:
        pis = [1 / (1 + np.exp(-(_draws(posterior, "logit_cure") + a * _draws(posterior, "cure_log_or"))))
               for a in (0, 1)]
        out["cure_fraction_control"] = summarize_draws(pis[0], ci_prob=ci_prob)
        out["cure_fraction_experimental"] = summarize_draws(pis[1], ci_prob=ci_prob)
        out["cure_fraction_difference"] = summarize_draws(pis[1] - pis[0], ci_prob=ci_prob)
    if "cmax_copies_per_ug" in posterior:
        c = _draws(posterior, "cmax_copies_per_ug")
        out["cmax_gmr"] = summarize_draws(c[:, 1] / c[:, 0], ci_prob=ci_prob)
        hl = _draws(posterior, "half_life_persistence_days")
        out["persistence_half_life_ratio"] = summarize_draws(hl[:, 1] / hl[:, 0], ci_prob=ci_prob)
    if f"{MRD_SUBMODEL}::clearance_rate_ratio" in posterior:
        out["clearance_rate_ratio"] = summarize_draws(_draws(posterior, f"{MRD_SUBMODEL}::clearance_rate_ratio"),
                                                      ci_prob=ci_prob)
    return out
