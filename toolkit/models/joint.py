r"""Joint model: CAR-T kinetics driving relapse, in one posterior (shared-parameter joint model).

Submodels
---------
1. **CAR-T kinetics** of every infused patient, exactly the model of
   :mod:`toolkit.models.cart` (Stein curve, censored M3 likelihood,
   hierarchy with arm effects). Patient i's curve C_i(t) gives two features:

   - log Cmax_i, centred at the literature typical value (log 24,000 copies/ug);
   - T_loss,i, the day C_i(t) falls below the patient's LLOQ L_i after the
     peak (Tmax_i when the peak stays below L_i), as in
     ``toolkit.models.kinetics.time_below``. It solves
     log Cmax + log[(1-FB) e^{-alpha u} + FB e^{-beta u}] = log L for the peak
     clock u = peak_clock(t - Tmax) (then t = Tmax + peak_clock^{-1}(u)) by
     Newton's method on this convex, decreasing function of u, started at
     the larger root of its two linear pieces (a point left of the root, so the
     iterates rise monotonically to it); 8 steps reach machine precision in the
     cases tested, and gradients flow through the iterations.

2. **MRD kinetics** (association ``mrd_clearance``, when the cohort has
   mrd.csv): the model of :mod:`toolkit.models.mrd`, unchanged, built as the
   named sub-model ``mrd::`` (its coords prefixed ``mrd_``). Its patient kill
   rate k_i (log10/day; log k_i = mu_k + b_k a_i + omega_k z_i, the quantity
   IFN-a's ``clearance_rate_ratio`` = exp(b_k) acts on) is the MRD feature of
   the relapse hazard: "deeper MRD clearance" as a mediator. A responder
   without any MRD assessment gets k_i from the fitted population
   (``mrd_clearance_z_unassessed``). The kill rate, not MRD recurrence, is the
   link: recurrence is the relapse itself on its way (see below), while the
   kill rate is fixed in the first weeks, before any relapse.

3. **Relapse** of each responder, time s in years from the response day, a
   mixture cure model (``variant="cure"``; ``"weibull"`` drops the cure part)
   whose uncured patients have the Weibull proportional hazard

       h_i(s) = (k/lam)(s/lam)^{k-1} exp(lp_i + g_loss 1[s > c_i] + g_mrd 1[s > m_i])
       lp_i   = b_arm a_i + g_cmax (log Cmax_i - log 24000) + g_clear (log k_i - log 0.25) + x_i . b

   with c_i = max(T_loss,i - response day_i, 0)/365.25 (CAR-T loss, a
   time-varying term driven by the kinetics) and m_i the first detectable MRD in
   remission (an *observed* time-varying marker, only with ``mrd=True``). The
   cumulative hazard has a closed form: with H0(s) = (s/lam)^k and
   D(c) = H0(s) - H0(min(s, c)),

       H_i(s) = e^{lp_i} [H0(s) + (e^{g_loss}-1) D(c_i) + (e^{g_mrd}-1) D(m_i)
                          + (e^{g_loss}-1)(e^{g_mrd}-1) D(max(c_i, m_i))].

   In the likelihood the CAR-T loss step is smoothed over ``STEP_RAMP_YEARS``
   (30 days): min(s, c) in D becomes a soft minimum and the hazard is its
   exact derivative (:func:`relapse_cumhaz`, :func:`relapse_log_hazard`), so
   the density is smooth in the modelled loss day and h and H stay one
   survival model; the estimands use the exact step.

   Cure: S_i(s) = pi_i + (1-pi_i) exp(-H_i(s)), logit pi_i = c0 + c_arm a_i.
   Censoring (end of follow-up, death in remission, consolidative HSCT) enters
   as log S_i(s); a relapse as log[(1-pi_i) h_i(s) exp(-H_i(s))]. The outcome is
   the cause-specific hazard of relapse (death in remission censors), since the
   kinetic associations act on relapse. This matches ``toolkit.simulate``'s
   generative story, so the association parameters have a known truth there.

Why MRD recurrence is a marker, not a mediator (``mrd`` is off by default)
--------------------------------------------------------------------------
MRD recurrence is the leukemia regrowing on its way to a morphological
relapse: it is downstream of the process that causes relapse, not a cause of
it (in the simulator, MRD rises to 5 % blasts exactly at relapse). Putting it
in the hazard conditions on an early sign of the outcome, which absorbs the
arm and kinetic effects that run through relapse itself, so the mediation
estimands below are defined without it. It is useful for **prediction**
(``toolkit predict`` on a fit with ``mrd``), where its
``log_hr_mrd_recurrence`` is a prognostic, not causal, association
(Pulsipher 2022: HR 4.87 for NGS-MRD at day 28). The MRD pathway of the
mediation question ("deeper MRD clearance") is the kill rate of the MRD
submodel (``mrd_clearance``, submodel 2).

Priors (Normal(mu, sd); sources)
--------------------------------
Each default prior's source, population and derivation is in ``docs/priors.md`` (anchors
``#joint-<field>``, e.g. ``#joint-log-hr-cart-loss``).

- ``log_hr_per_log_cmax``: N(-0.34, 0.3). JULIET (Awasthi 2020): HR 0.79 per
  doubling of Cmax (95 % CI 0.61-1.01) = -0.34 per natural-log unit, SE 0.19;
  widened to 0.3 for the transfer from DLBCL to B-ALL (Blood Adv 2020;4:560).
- ``log_hr_cart_loss``: N(1.50, 0.5). B-cell recovery in year 1, HR 4.5
  (2.03-9.97), Pulsipher 2022 (Blood Cancer Discov 3:66); widened for loss of transgene
  as a surrogate of B-cell recovery.
- ``log_hr_per_log_clearance``: N(0, 0.5) per natural-log unit of the MRD kill
  rate (g_clear; 95 % of the mass on HR 0.38-2.7 per 2.7-fold faster kill). No
  study reports relapse against the kill rate itself: day-28 NGS-MRD positivity
  (HR 4.87, Pulsipher 2022) reflects the residual floor more than the rate, so
  the prior is skeptical and centred on no link (no source; weakly informative).
- ``log_hr_mrd_recurrence``: N(1.58, 0.6). Any NGS-MRD at day 28, HR 4.87
  (2.18-10.8), Pulsipher 2022.
- ``log_hr`` (b_arm, the direct effect): N(0, 0.5); centred on the pooled effects
  of new cancer treatments in randomized trials (Kumar 2005, Djulbegovic 2008);
  its width, between the durability model's skeptical N(0, 0.35) and default
  N(0, 1), is a choice.
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

With the MRD submodel, K also holds the MRD kill rate M (drawn from arm a's
fitted MRD population, independently of the CAR-T kinetics: the submodels
share no patient effect), "kinetics" above means both, and the indirect
ratio splits exactly into two factors:

- ``hazard_ratio_indirect_cart`` = E H(tau|1, K1, M0) / E H(tau|1, K0, M0)
  (through CAR-T kinetics);
- ``hazard_ratio_indirect_mrd`` = E H(tau|1, K1, M1) / E H(tau|1, K1, M0)
  (through MRD clearance); their product is ``hazard_ratio_indirect``.

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
from toolkit.models.kinetics import peak_clock_inverse
from toolkit.models.priors import NormalPairPriors, normal

MODEL_NAME = "joint"
MODEL_VERSION = "1.2.0"  # 1.1.0: the kinetic submodel of CAR-T 1.2.0 (omega_alpha prior log-SD 0.25); 1.2.0: the
# MRD pathway's submodel is MRD 1.4.0 (Student-t measurement error)
VARIANTS = ("cure", "weibull")
KINETICS = ("joint", "two-stage")
ASSOCIATIONS = ("log_cmax", "cart_loss", "mrd", "mrd_clearance")
LOG_CMAX_REFERENCE = math.log(24_000.0)  # Stein 2019 typical Cmax, copies/ug; docs/priors.md#joint-references
LOG_CLEARANCE_REFERENCE = math.log(0.25)  # MRD kill rate (log10/day), MRD prior median; docs/priors.md#joint-references
MRD_SUBMODEL = "mrd"  # name of the nested MRD submodel (variables "mrd::...", coords "mrd_...")
NEWTON_STEPS = 8
LOSS_HORIZON_DAYS = 20 * 365.0
LOSS_CLOCK_FLOOR = 1e-6  # peak-clock days; see loss_delay
STEP_RAMP_YEARS = 30.0 / 365.25  # width of the smoothed CAR-T-loss step (relapse_log_hazard, relapse_cumhaz)


@dataclass(frozen=True)
class JointPriors(NormalPairPriors):
    """Normal(mu, sigma) priors of the relapse part, as (mu, sigma) pairs (sources in the module docstring)."""

    log_hr: tuple[float, float] = (0.0, 0.5)  # docs/priors.md#joint-log-hr
    log_hr_per_log_cmax: tuple[float, float] = (-0.34, 0.3)  # docs/priors.md#joint-log-hr-per-log-cmax
    log_hr_cart_loss: tuple[float, float] = (1.50, 0.5)  # docs/priors.md#joint-log-hr-cart-loss
    log_hr_mrd_recurrence: tuple[float, float] = (1.58, 0.6)  # docs/priors.md#joint-log-hr-mrd-recurrence
    log_hr_per_log_clearance: tuple[float, float] = (0.0, 0.5)  # docs/priors.md#joint-log-hr-per-log-clearance
    log_shape: tuple[float, float] = (0.0, 0.5)  # docs/priors.md#joint-log-shape
    log_scale_years: tuple[float, float] = (float(np.log(0.75)), 1.0)  # docs/priors.md#joint-log-scale-years
    logit_cure: tuple[float, float] = (0.0, 1.0)  # docs/priors.md#joint-logit-cure
    cure_log_or: tuple[float, float] = (0.0, 1.0)  # docs/priors.md#joint-cure-log-or
    beta_std: tuple[float, float] = (0.0, 0.5)  # docs/priors.md#joint-beta-std


# --------------------------------------------------------------------------- features (pytensor and numpy)


def loss_delay(log_cmax, alpha, beta, logit_fb, log_lloq, *, lib=pt, steps: int = NEWTON_STEPS):
    """Days d >= 0 after Tmax at which the curve falls to L (0 if Cmax <= L): d = peak_clock^{-1}(u), where u
    solves log Cmax + log[(1-FB) e^{-alpha u} + FB e^{-beta u}] = log L on the peak clock
    (``toolkit.models.kinetics``).

    Newton on the convex decreasing f(u), from u0 = max of the roots of the two linear pieces
    (f(u0) >= 0); ``lib`` is ``pytensor.tensor`` or ``numpy``. u is capped at ``LOSS_HORIZON_DAYS``.
    The inverse h acosh(e^{u/h}) has an infinite slope at u = 0 (the peak is flat), so u is floored at
    ``LOSS_CLOCK_FLOOR`` there (d >= sqrt(2 h 1e-6) = 0.002 day at h = 2): the gradient stays finite.
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
    d = peak_clock_inverse(lib.maximum(u, LOSS_CLOCK_FLOOR), lib=lib)
    return lib.where(head > 0, d, 0.0) if lib is np else pt.switch(pt.gt(head, 0), d, 0.0)


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


def soft_min(s, c, ramp, lib=pt):
    """min(s, c) for s >= 0 smoothed over ``ramp``: s - ramp [softplus((s - c)/ramp) - softplus(-c/ramp)]
    (the exact min when ramp = 0). It is 0 at s = 0 and increasing in s (slope 1 - sigmoid((s - c)/ramp)),
    so H0 of it is a cumulative hazard: never negative and H(0) = 0."""
    if ramp == 0:
        return lib.minimum(s, c)
    return s - ramp * (_softplus((s - c) / ramp, lib) - _softplus(-c / ramp, lib))


def soft_max(a, b, ramp, lib=pt):
    """max(a, b) smoothed over ``ramp``: b + ramp softplus((a - b)/ramp) (the exact max when ramp = 0)."""
    return lib.maximum(a, b) if ramp == 0 else b + ramp * _softplus((a - b) / ramp, lib)


def relapse_cumhaz(s, lp, log_shape, log_scale, change_points: list, log_hrs: list, lib=pt,
                   ramp_years: float = 0.0):
    """H(s) = e^lp * integral of h0 times exp(sum_j g_j 1[u > c_j]) over (0, s], closed form for one or two
    change points (module docstring); ``change_points`` and ``log_hrs`` pair up.

    ``ramp_years`` > 0 replaces min(s, c) and max(c_1, c_2) by :func:`soft_min` / :func:`soft_max` over that
    width (:func:`relapse_log_hazard` with the same width is its exact derivative). The model uses it: with
    the exact min, H has a kink where a patient's modelled CAR-T loss day crosses their follow-up time;
    with it and a 7-day ramp NUTS took 484 leapfrog steps per draw on the example cohort (2 chains x
    400 + 300), with the soft min and a 30-day width (``STEP_RAMP_YEARS``) 254, and the CAR-T model
    alone 127. Away from the change point (more than a few widths) H is the exact one; near it the step is
    spread over about +/- 2 widths, the resolution of the data (CAR-T samples 30-90 days apart after
    day 56 bracket the loss day no better). Estimands and prediction use the exact form.
    """
    h0 = lambda t: lib.exp(log_weibull_cumhaz0(t, log_shape, log_scale, lib))  # noqa: E731
    h0_s = h0(s)
    total = h0_s
    after = lambda c: h0_s - h0(soft_min(s, c, ramp_years, lib))  # noqa: E731
    excess = [lib.expm1(g) for g in log_hrs]
    for c, e in zip(change_points, excess):
        total = total + e * after(c)
    if len(change_points) == 2:
        total = total + excess[0] * excess[1] * after(soft_max(*change_points, ramp_years, lib))
    elif len(change_points) > 2:
        raise ValueError("at most two change points")
    return lib.exp(lp) * total


def relapse_log_hazard(s, lp, log_shape, log_scale, change_points: list, log_hrs: list, lib=pt,
                       ramp_years: float = STEP_RAMP_YEARS):
    """log h(s), the derivative of :func:`relapse_cumhaz` with the same ``ramp_years``, so that hazard and
    cumulative hazard are one survival model.

    Exact step (``ramp_years=0``): log h = log h0(s) + lp + sum_j g_j 1[s > c_j], h0(s) = (k/lam)(s/lam)^{k-1}.
    Smoothed (``ramp_years`` = r > 0), with m(s, c) = soft_min(s, c, r) and dm/ds = 1 - sigmoid((s - c)/r):

        h(s) = e^lp [h0(s) + sum_j e_j (h0(s) - h0(m(s, c_j)) dm_j/ds) + e_1 e_2 (h0(s) - h0(m(s, M)) dm_M/ds)]

    with e_j = e^{g_j} - 1 and M = soft_max(c_1, c_2, r) (the last term only with two change points). A
    relapse's density then changes smoothly as a modelled change point (CAR-T loss) moves past it, which
    NUTS needs; with the exact step, chains stuck on either side of each patient's relapse day (R-hat 4).
    """
    k = lib.exp(log_shape)

    def log_h0(t):
        return log_shape - log_scale + (k - 1) * (lib.log(lib.maximum(t, 1e-12)) - log_scale)

    if ramp_years == 0:
        out = log_h0(s) + lp
        for c, g in zip(change_points, log_hrs):
            out = out + g * (s > c)
        return out
    h0_s = lib.exp(log_h0(s))

    def after_rate(c):  # d/ds [H0(s) - H0(soft_min(s, c))]
        return h0_s - lib.exp(log_h0(soft_min(s, c, ramp_years, lib))) * (1.0 - _sigmoid((s - c) / ramp_years, lib))

    excess = [lib.expm1(g) for g in log_hrs]
    total = h0_s
    for c, e in zip(change_points, excess):
        total = total + e * after_rate(c)
    if len(change_points) == 2:
        total = total + excess[0] * excess[1] * after_rate(soft_max(*change_points, ramp_years, lib))
    return lp + lib.log(lib.maximum(total, 1e-300))


# --------------------------------------------------------------------------- the model



def population_log_clearance(log_clearance, clearance_log_ratio, clearance_sd, arm, z):
    """log k of a patient drawn from the MRD submodel's population: mu_k + b_k a + omega_k z (pytensor or
    numpy; the MRD model's covariates are not used by the joint model)."""
    return log_clearance + clearance_log_ratio * arm + clearance_sd * z


def _responder_log_clearance(model: pm.Model, inputs: JointInputs, arm, mrd_priors, swappable: bool = False):
    """log k_i (MRD kill rate, log10/day) of each responder from the MRD submodel built into ``model``.

    Responders with MRD assessments take their patient's k_i; a responder without any gets a draw
    from the fitted population, mu_k + b_k a_i + omega_k z_i, z_i ~ Normal(0, 1).
    """
    from toolkit.models import mrd

    mrd.build_mrd_model(inputs.mrd, mrd_priors, parent=model, name=MRD_SUBMODEL, dim_prefix=MRD_SUBMODEL + "_",
                        swappable_censoring=swappable)
    sub = lambda name: model[f"{MRD_SUBMODEL}::{name}"]  # noqa: E731
    assessed = pt.log(sub("patient_clearance_log10_per_day"))
    index = inputs.mrd_index
    missing = np.flatnonzero(index < 0)
    if missing.size:
        model.add_coord("mrd_unassessed", [inputs.relapse.patient_ids[i] for i in missing])
        z = pm.Normal("mrd_clearance_z_unassessed", 0.0, 1.0, dims="mrd_unassessed")
        pop = population_log_clearance(sub("log_clearance"), sub("clearance_log_ratio"), sub("clearance_sd"),
                                       arm[missing], z)
        index = index.copy()
        index[missing] = len(inputs.mrd.patient_ids) + np.arange(missing.size)
        assessed = pt.concatenate([assessed, pop])
    log_k = assessed[index]
    return pm.Deterministic("log_clearance_responder", log_k, dims="responder")


def check_associations(associations) -> tuple[str, ...]:
    associations = tuple(associations)
    unknown = [a for a in associations if a not in ASSOCIATIONS]
    if unknown:
        raise ValueError(f"unknown association(s) {', '.join(unknown)}; valid: {', '.join(ASSOCIATIONS)}")
    return associations


def build_joint_model(inputs: JointInputs, priors: JointPriors | None = None, *, variant: str = "cure",
                      associations=("log_cmax", "cart_loss"), cart_priors: cart.CartPriors | None = None,
                      fixed_features: dict | None = None, mrd_priors=None, mrd_swappable: bool = False) -> pm.Model:
    """The joint PyMC model (module docstring). With ``fixed_features`` = {"log_cmax": (responder,),
    "loss_day": (responder,)} the kinetics are not modelled and those values are used (two-stage).

    Variables: everything of :func:`toolkit.models.cart.build_cart_model` (joint only), ``log_hr``,
    ``log_hr_per_log_cmax``, ``log_hr_cart_loss``, ``log_hr_mrd_recurrence`` (those in
    ``associations``), ``log_shape``, ``log_scale_years``, ``logit_cure``/``cure_log_or`` (cure),
    ``beta_std`` (covariates); observed ``relapse`` (dim ``responder``); deterministics
    ``hazard_ratio_direct``, ``loss_years`` (responder). With ``mrd_clearance``: the MRD model of
    :func:`toolkit.models.mrd.build_mrd_model` as the sub-model ``mrd::`` (coords ``mrd_*``),
    ``log_hr_per_log_clearance``, ``mrd_clearance_z_unassessed`` (responders without MRD data) and the
    deterministic ``log_clearance_responder``. ``mrd_swappable``: the MRD submodel's censoring is data
    (``build_mrd_model(swappable_censoring=True)``), as simulation-based calibration needs.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    associations = check_associations(associations)
    if "mrd" in associations and not inputs.has_mrd:
        raise ValueError("the MRD association needs MRD data (mrd.csv), and this cohort has none")
    if "mrd_clearance" in associations and inputs.mrd is None:
        raise ValueError("the mrd_clearance association needs the MRD submodel: build the inputs with "
                         "to_joint_inputs(cohort, mrd_submodel=True) from a cohort with mrd.csv")
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
        # loss before the response day counts from the response day (0); smoothed like the change points
        loss_years = pm.Deterministic("loss_years", soft_max((loss_day - response_day) / DAYS_PER_YEAR, 0.0,
                                                             STEP_RAMP_YEARS), dims="responder")

        log_shape = normal("log_shape", priors.log_shape)
        log_scale = normal("log_scale_years", priors.log_scale_years)
        log_hr = normal("log_hr", priors.log_hr)
        lp = log_hr * arm
        if "log_cmax" in associations:
            lp = lp + normal("log_hr_per_log_cmax", priors.log_hr_per_log_cmax) * (log_cmax - LOG_CMAX_REFERENCE)
        if "mrd_clearance" in associations:
            log_k = _responder_log_clearance(model, inputs, arm, mrd_priors, mrd_swappable)
            lp = lp + normal("log_hr_per_log_clearance", priors.log_hr_per_log_clearance) * (
                log_k - LOG_CLEARANCE_REFERENCE)
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
            cumhaz = relapse_cumhaz(t, lp_, k_log, lam_log, cps, gs, ramp_years=STEP_RAMP_YEARS)
            log_h = relapse_log_hazard(t, lp_, k_log, lam_log, cps, gs)
            if not cure_:
                return ev * log_h - cumhaz
            log_cure, log_uncure = cure_
            return pt.switch(pt.eq(ev, 1), log_uncure + log_h - cumhaz, pt.logaddexp(log_cure, log_uncure - cumhaz))

        pm.CustomDist("relapse", event, lp, log_shape, log_scale, *changes, *log_hrs, *cure_terms, logp=logp,
                      observed=rel.time_years, dims="responder")
        pm.Deterministic("hazard_ratio_direct", pt.exp(log_hr))
    return model
