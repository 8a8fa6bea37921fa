r"""Joint model: CAR-T kinetics driving relapse, in one posterior (shared-parameter joint model).

Submodels
---------
1. **CAR-T kinetics** of every infused patient, exactly the model of
   :mod:`toolkit.models.cart` (Stein curve, censored M3 likelihood,
   hierarchy with arm effects). Patient i's curve C_i(t) gives two features:

   - log Cmax_i, centred at the literature typical value (log 24,000 copies/ug);
   - T_loss,i, the day C_i(t) falls below the patient's LLOQ L_i after the
     peak (Tmax_i when the peak stays below L_i), as in
     ``toolkit.simulate.time_below``. It solves
     log Cmax + log[(1-FB) e^{-alpha u} + FB e^{-beta u}] = log L for u = t - Tmax
     by Newton's method on this convex, decreasing function of u, started at
     the larger root of its two linear pieces (a point left of the root, so the
     iterates rise monotonically to it); 8 steps reach machine precision in the
     cases tested, and gradients flow through the iterations.

2. **Relapse** of each responder, time s in years from the response day, a
   mixture cure model (``variant="cure"``; ``"weibull"`` drops the cure part)
   whose uncured patients have the Weibull proportional hazard

       h_i(s) = (k/lam)(s/lam)^{k-1} exp(lp_i + g_loss 1[s > c_i] + g_mrd 1[s > m_i])
       lp_i   = b_arm a_i + g_cmax (log Cmax_i - log 24000) + x_i . b

   with c_i = max(T_loss,i - response day_i, 0)/365.25 (CAR-T loss, a
   time-varying term driven by the kinetics) and m_i the first detectable MRD in
   remission (an *observed* time-varying marker, only with ``mrd=True``). The
   cumulative hazard has a closed form: with H0(s) = (s/lam)^k and
   D(c) = H0(s) - H0(min(s, c)),

       H_i(s) = e^{lp_i} [H0(s) + (e^{g_loss}-1) D(c_i) + (e^{g_mrd}-1) D(m_i)
                          + (e^{g_loss}-1)(e^{g_mrd}-1) D(max(c_i, m_i))].

   Cure: S_i(s) = pi_i + (1-pi_i) exp(-H_i(s)), logit pi_i = c0 + c_arm a_i.
   Censoring (end of follow-up, death in remission, consolidative HSCT) enters
   as log S_i(s); a relapse as log[(1-pi_i) h_i(s) exp(-H_i(s))]. The outcome is
   the cause-specific hazard of relapse (death in remission censors), since the
   kinetic associations act on relapse. This matches ``toolkit.simulate``'s
   generative story, so the association parameters have a known truth there.

Why MRD is a marker here, not a mediator (``mrd=False`` by default)
------------------------------------------------------------------
MRD recurrence is the leukemia regrowing on its way to a morphological
relapse: it is downstream of the process that causes relapse, not a cause of
it (in the simulator, MRD rises to 5 % blasts exactly at relapse). Putting it
in the hazard conditions on an early sign of the outcome, which absorbs the
arm and kinetic effects that run through relapse itself, so the mediation
estimands below are defined without it. It is useful for **prediction**
(``toolkit predict`` on a fit with ``mrd=True``), where its
``log_hr_mrd_recurrence`` is a prognostic, not causal, association
(Pulsipher 2022: HR 4.87 for NGS-MRD at day 28).

Priors (Normal(mu, sd); sources)
--------------------------------
- ``log_hr_per_log_cmax``: N(-0.34, 0.3). JULIET (Awasthi 2020): HR 0.79 per
  doubling of Cmax (95 % CI 0.61-1.01) = -0.34 per natural-log unit, SE 0.19;
  widened to 0.3 for the transfer from DLBCL to B-ALL (domain.md §1.2).
- ``log_hr_cart_loss``: N(1.50, 0.5). B-cell recovery in year 1, HR 4.5
  (2.03-9.97), Pulsipher 2022 (domain.md §2.2); widened for loss of transgene
  as a surrogate of B-cell recovery.
- ``log_hr_mrd_recurrence``: N(1.58, 0.6). Any NGS-MRD at day 28, HR 4.87
  (2.18-10.8), Pulsipher 2022 (domain.md §2.2).
- ``log_hr`` (b_arm, the direct effect): N(0, 0.5), between the durability
  model's skeptical N(0, 0.35) and default N(0, 1) (domain.md §4.4).
- Weibull ``log_shape`` N(0, 0.5), ``log_scale_years`` N(log 0.75, 1),
  ``logit_cure`` N(0, 1), ``cure_log_or`` N(0, 1), covariates
  ``beta_std`` N(0, 0.5): as :mod:`toolkit.models.durability`.
- The kinetic priors are :class:`toolkit.models.cart.CartPriors`.

Mediation estimands (``toolkit.joint_estimands``)
-------------------------------------------------
At horizon tau (default 365 days after response), with K_a the population
distribution of kinetic features in arm a (new patients drawn from the fitted
hierarchy of arm a, all infused patients, response on day 28), and
H(tau | a, K) the cumulative hazard of an uncured patient of arm a whose
kinetics are K:

- ``hazard_ratio_direct`` = E_{K0} H(tau|1,K) / E_{K0} H(tau|0,K) = exp(b_arm):
  the arm effect with kinetics held at the control arm's distribution (under
  this model it equals the conditional hazard ratio for any fixed kinetics);
- ``hazard_ratio_total`` = E_{K1} H(tau|1,K) / E_{K0} H(tau|0,K): kinetics
  allowed to differ by arm;
- ``hazard_ratio_indirect`` = total / direct (through Cmax and CAR-T loss);
- ``proportion_mediated`` = log(indirect) / log(total) = 1 - log(direct)/log(total)
  (the share of the total log effect through kinetics; unstable when the total
  effect is near 0, so read it with its interval).

The cure part has no kinetic association (none is identifiable from 60
patients alongside the hazard associations); its arm effect ``cure_log_or`` is
reported apart.

Two-stage alternative (``kinetics="two-stage"``)
------------------------------------------------
Fit the CAR-T model alone, then the relapse model with each patient's
posterior mean log Cmax and CAR-T loss day plugged in as known covariates.
Cheaper, but it ignores the uncertainty of the features (regression dilution
toward 0 and intervals too narrow); see ``benchmarks/bench_joint.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from toolkit.data.inputs import DAYS_PER_YEAR
from toolkit.data.joint_inputs import JointInputs
from toolkit.models import cart
from toolkit.models.priors import NormalPairPriors, normal

MODEL_NAME = "joint"
MODEL_VERSION = "1.0.0"
VARIANTS = ("cure", "weibull")
KINETICS = ("joint", "two-stage")
ASSOCIATIONS = ("log_cmax", "cart_loss", "mrd")
LOG_CMAX_REFERENCE = math.log(24_000.0)  # Stein 2019 typical Cmax, copies/ug
NEWTON_STEPS = 8
LOSS_HORIZON_DAYS = 20 * 365.0
STEP_RAMP_YEARS = 7.0 / 365.25  # width of the smoothed step in a relapse's hazard (relapse_log_hazard)


@dataclass(frozen=True)
class JointPriors(NormalPairPriors):
    """Normal(mu, sigma) priors of the relapse part, as (mu, sigma) pairs (sources in the module docstring)."""

    log_hr: tuple[float, float] = (0.0, 0.5)
    log_hr_per_log_cmax: tuple[float, float] = (-0.34, 0.3)
    log_hr_cart_loss: tuple[float, float] = (1.50, 0.5)
    log_hr_mrd_recurrence: tuple[float, float] = (1.58, 0.6)
    log_shape: tuple[float, float] = (0.0, 0.5)
    log_scale_years: tuple[float, float] = (float(np.log(0.75)), 1.0)
    logit_cure: tuple[float, float] = (0.0, 1.0)
    cure_log_or: tuple[float, float] = (0.0, 1.0)
    beta_std: tuple[float, float] = (0.0, 0.5)


# --------------------------------------------------------------------------- features (pytensor and numpy)


def loss_delay(log_cmax, alpha, beta, logit_fb, log_lloq, *, lib=pt, steps: int = NEWTON_STEPS):
    """u >= 0 with log Cmax + log[(1-FB) e^{-alpha u} + FB e^{-beta u}] = log L (0 if Cmax <= L).

    Newton on the convex decreasing f(u), from u0 = max of the roots of the two linear pieces
    (f(u0) >= 0); ``lib`` is ``pytensor.tensor`` or ``numpy``. Capped at ``LOSS_HORIZON_DAYS``.
    """
    log_fb = -_softplus(-logit_fb, lib)
    log_1m_fb = -_softplus(logit_fb, lib)
    head = log_cmax - log_lloq
    u = lib.maximum(lib.maximum((head + log_1m_fb) / alpha, (head + log_fb) / beta), 0.0)
    u = lib.minimum(u, LOSS_HORIZON_DAYS)
    for _ in range(steps):
        a_term = log_1m_fb - alpha * u
        b_term = log_fb - beta * u
        f = head + lib.logaddexp(a_term, b_term)
        w = _sigmoid(a_term - b_term, lib)  # weight of the fast phase
        slope = -(alpha * w + beta * (1.0 - w))
        u = lib.minimum(lib.maximum(u - f / slope, 0.0), LOSS_HORIZON_DAYS)
    return lib.where(head > 0, u, 0.0) if lib is np else pt.switch(pt.gt(head, 0), u, 0.0)


def _sigmoid(x, lib):
    if lib is pt:
        return pt.sigmoid(x)
    from scipy.special import expit

    return expit(x)


def _softplus(x, lib):
    return pt.softplus(x) if lib is pt else np.logaddexp(0.0, x)


def log_weibull_cumhaz0(s, log_shape, log_scale, lib=pt):
    """log H0(s) = k (log s - log lam), with s floored at 1e-12 years so H0(0) = 0 has finite gradients."""
    return lib.exp(log_shape) * (lib.log(lib.maximum(s, 1e-12)) - log_scale)


def relapse_cumhaz(s, lp, log_shape, log_scale, change_points: list, log_hrs: list, lib=pt):
    """H(s) = e^lp * integral of h0 times exp(sum_j g_j 1[u > c_j]) over (0, s], closed form for one or two
    change points (module docstring); ``change_points`` and ``log_hrs`` pair up."""
    h0 = lambda t: lib.exp(log_weibull_cumhaz0(t, log_shape, log_scale, lib))  # noqa: E731
    h0_s = h0(s)
    total = h0_s
    after = lambda c: h0_s - h0(lib.minimum(s, c))  # noqa: E731
    excess = [lib.expm1(g) for g in log_hrs]
    for c, e in zip(change_points, excess):
        total = total + e * after(c)
    if len(change_points) == 2:
        total = total + excess[0] * excess[1] * after(lib.maximum(*change_points))
    elif len(change_points) > 2:
        raise ValueError("at most two change points")
    return lib.exp(lp) * total


def relapse_log_hazard(s, lp, log_shape, log_scale, change_points: list, log_hrs: list, lib=pt,
                       ramp_years: float = STEP_RAMP_YEARS):
    """log h(s) = log k - log lam + (k-1)(log s - log lam) + lp + sum_j g_j step(s - c_j).

    ``step`` is the logistic ramp sigmoid(x / ramp_years) (``ramp_years=0``: the exact step). A relapse's
    density then changes smoothly as a modelled change point (CAR-T loss) moves past it, which NUTS
    needs; with the exact step, chains stuck on either side of each patient's relapse day (R-hat 4).
    """
    k = lib.exp(log_shape)
    out = log_shape - log_scale + (k - 1) * (lib.log(s) - log_scale) + lp
    for c, g in zip(change_points, log_hrs):
        out = out + g * (_sigmoid((s - c) / ramp_years, lib) if ramp_years > 0 else (s > c))
    return out


# --------------------------------------------------------------------------- the model



def check_associations(associations) -> tuple[str, ...]:
    associations = tuple(associations)
    unknown = [a for a in associations if a not in ASSOCIATIONS]
    if unknown:
        raise ValueError(f"unknown association(s) {', '.join(unknown)}; valid: {', '.join(ASSOCIATIONS)}")
    return associations


def build_joint_model(inputs: JointInputs, priors: JointPriors | None = None, *, variant: str = "cure",
                      associations=("log_cmax", "cart_loss"), cart_priors: cart.CartPriors | None = None,
                      fixed_features: dict | None = None) -> pm.Model:
    """The joint PyMC model (module docstring). With ``fixed_features`` = {"log_cmax": (responder,),
    "loss_day": (responder,)} the kinetics are not modelled and those values are used (two-stage).

    Variables: everything of :func:`toolkit.models.cart.build_cart_model` (joint only), ``log_hr``,
    ``log_hr_per_log_cmax``, ``log_hr_cart_loss``, ``log_hr_mrd_recurrence`` (those in
    ``associations``), ``log_shape``, ``log_scale_years``, ``logit_cure``/``cure_log_or`` (cure),
    ``beta_std`` (covariates); observed ``relapse`` (dim ``responder``); deterministics
    ``hazard_ratio_direct``, ``loss_years`` (responder).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    associations = check_associations(associations)
    if "mrd" in associations and not inputs.has_mrd:
        raise ValueError("the MRD association needs MRD data (mrd.csv), and this cohort has none")
    priors = priors or JointPriors()
    rel = inputs.relapse
    if fixed_features is None:
        model = cart.build_cart_model(inputs.cart, cart_priors)
    else:
        model = pm.Model()
    model.add_coord("responder", rel.patient_ids)
    model.add_coord("relapse_covariate", rel.covariates)
    with model:
        event = pm.Data("event", rel.event, dims="responder")
        arm = pm.Data("arm_responder", rel.arm.astype(float), dims="responder")
        response_day = pm.Data("response_day", inputs.response_day, dims="responder")
        if fixed_features is None:
            theta = model["theta_patient"][inputs.cart_index]
            p = cart.natural_parameters(theta)
            log_cmax = p["log_cmax"]
            delay = loss_delay(p["log_cmax"], p["alpha"], p["beta"], p["logit_fb"],
                               pt.as_tensor_variable(inputs.log_lloq))
            loss_day = p["tmax"] + delay
        else:
            log_cmax = pm.Data("log_cmax_fixed", np.asarray(fixed_features["log_cmax"], float), dims="responder")
            loss_day = pm.Data("loss_day_fixed", np.asarray(fixed_features["loss_day"], float), dims="responder")
        loss_years = pm.Deterministic("loss_years", pt.maximum(loss_day - response_day, 0.0) / DAYS_PER_YEAR,
                                      dims="responder")

        log_shape = normal("log_shape", priors.log_shape)
        log_scale = normal("log_scale_years", priors.log_scale_years)
        log_hr = normal("log_hr", priors.log_hr)
        lp = log_hr * arm
        if "log_cmax" in associations:
            lp = lp + normal("log_hr_per_log_cmax", priors.log_hr_per_log_cmax) * (log_cmax - LOG_CMAX_REFERENCE)
        if rel.covariates:
            x = pm.Data("relapse_x_std", rel.x_std, dims=("responder", "relapse_covariate"))
            lp = lp + pt.dot(x, normal("beta_std", priors.beta_std, dims="relapse_covariate"))
        changes, log_hrs = [], []
        if "cart_loss" in associations:
            changes.append(loss_years)
            log_hrs.append(normal("log_hr_cart_loss", priors.log_hr_cart_loss))
        if "mrd" in associations:
            changes.append(pm.Data("mrd_positive_years", inputs.mrd_positive_years, dims="responder"))
            log_hrs.append(normal("log_hr_mrd_recurrence", priors.log_hr_mrd_recurrence))
        cure_terms = []
        if variant == "cure":
            eta = normal("logit_cure", priors.logit_cure) + normal("cure_log_or", priors.cure_log_or) * arm
            cure_terms = [-pt.softplus(-eta), -pt.softplus(eta)]

        def logp(t, ev, lp_, k_log, lam_log, *rest):
            n = len(changes)
            cps, gs, cure_ = list(rest[:n]), list(rest[n:2 * n]), rest[2 * n:]
            cumhaz = relapse_cumhaz(t, lp_, k_log, lam_log, cps, gs)
            log_h = relapse_log_hazard(t, lp_, k_log, lam_log, cps, gs)
            if not cure_:
                return ev * log_h - cumhaz
            log_cure, log_uncure = cure_
            return pt.switch(pt.eq(ev, 1), log_uncure + log_h - cumhaz, pt.logaddexp(log_cure, log_uncure - cumhaz))

        pm.CustomDist("relapse", event, lp, log_shape, log_scale, *changes, *log_hrs, *cure_terms, logp=logp,
                      observed=rel.time_years, dims="responder")
        pm.Deterministic("hazard_ratio_direct", pt.exp(log_hr))
    return model
