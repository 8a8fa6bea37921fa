r"""Remission durability: Bayesian relapse-free survival, Weibull PH or mixture cure.

Time t is years since the response day (CR/CRi). Patient i has arm a_i
(1 = experimental) and standardized covariates x_i.

``weibull`` (proportional hazards)::

    h_i(t) = (k/lam) (t/lam)^(k-1) exp(lp_i),   lp_i = b_arm a_i + x_i . b
    S_i(t) = exp(-(t/lam)^k exp(lp_i))

``cure`` (Berkson-Gage mixture; the Weibull PH part is the hazard of the uncured)::

    S_i(t) = pi_i + (1 - pi_i) S_u,i(t),   logit pi_i = c0 + c_arm a_i + x_i . c

Likelihood (right censoring is a likelihood term, nothing is imputed):
event -> log f_i(t), censored -> log S_i(t), with f = (1 - pi) f_u for ``cure``.

Policies

- HSCT ``timevarying``: after a consolidative transplant at c_i the hazard
  (of the uncured) is multiplied by exp(b_hsct):
  H(t) = e^lp [H0(min(t, c)) + e^b_hsct (H0(t) - H0(min(t, c)))].
  Estimands describe patients without HSCT. ``censor``: follow-up ends at HSCT.
- Non-relapse mortality (NRM, death in remission) has its own Weibull
  cause-specific hazard h_n (``death_*`` parameters, arm effect
  ``log_hr_death``; after a transplant under ``timevarying`` times
  exp(``log_hr_hsct_nrm``)) for every patient in remission, cured or not,
  whenever the model is ``cure`` or the endpoint is ``relapse`` or ``efs``
  (:func:`separate_nrm`). The relapse part above is then a cause-specific
  hazard (death censors it) and, for ``cure``, the cure fraction acts on
  relapse only::

      S_i(t) = [pi_i + (1 - pi_i) S_u,i(t)] S_n,i(t)        (relapse-free and alive)
      relapse at t:  (1 - pi_i) h_u,i(t) S_u,i(t) S_n,i(t)
      death in remission at t:  h_n,i(t) S_n,i(t) [pi_i + (1 - pi_i) S_u,i(t)]

  The likelihood factorises into the two parts, which are the ``rfs``
  (relapse events) and ``death`` observed variables. Only ``weibull`` with
  endpoint ``rfs`` keeps one Weibull hazard for relapse or death together.
- endpoint ``efs`` (every infused patient, origin day 0): non-response is an
  event at day 0 with logit P(response) = r0 + r_arm a; responders follow
  the model above from their response day, so with d_r the response day::

      EFS_arm(t) = p_arm S_arm(t - d_r)      (t >= d_r; p_arm for t < d_r)

Derived (per posterior draw, standardised over the cohort's covariates):
RFS S(t); cumulative incidence of relapse CIR(t) = int_0^t h_rel(s) S(s) ds
and of NRM, NRM(t) = int_0^t h_n(s) S(s) ds, by numerical integration on a
one-day grid (``toolkit.survival.cumulative_incidence``; the simulator's truth
uses the same function); EFS as above.

Parameters (default priors; source). Each default prior's source, population and derivation
is in ``docs/priors.md`` (anchors ``#durability-<field>``, e.g. ``#durability-log-hr``).

- ``log_hr`` (b_arm, experimental vs control): Normal(0, 1), weakly
  informative (95 % of mass on HR 0.14-7.1). ``skeptical`` Normal(0, 0.35)
  and ``optimistic`` Normal(log 0.7, 0.35): sceptical and enthusiastic
  priors after Spiegelhalter, Freedman & Parmar (JRSS A 1994).
- ``log_shape`` (log k): Normal(0, 0.5), k in 0.37-2.7; no direct source.
- ``log_scale_years`` (log lam): Normal(log 0.75, 1); ELIANA relapse-free
  survival among responders (80 % at 6 and 59 % at 12 months, Maude 2018
  NEJM; plateau 52 % at 3 years, Laetsch 2023 JCO) read through a cure model
  gives lam 0.70-0.82 years.
- ``beta_std`` (per SD of each covariate): Normal(0, 0.5).
- ``logit_cure`` (c0): Normal(0, 1); ELIANA's RFS plateau (Laetsch 2023)
  suggests a cure fraction near 50 %, with wide spread.
- ``cure_log_or`` (c_arm): Normal(0, 1); ``skeptical`` Normal(0, 0.5)
  (about ±12 points at 1 SD), ``optimistic`` Normal(0.4, 0.5).
- ``gamma_std`` (covariates on logit pi): Normal(0, 0.5).
- ``log_hr_hsct``: Normal(0, 1). Death in remission: ``death_log_scale_years``
  Normal(log 30, 1.5) (about 3 %/year; no source, weakly informative),
  ``death_log_shape`` Normal(0, 0.5), ``log_hr_death`` Normal(0, 1),
  ``log_hr_hsct_nrm`` Normal(0, 1) (weakly informative, no source: NRM after
  transplant vs before, ``timevarying`` only); the sampler moves on v = k_n^(1/2) (log lam_n - log 2 y),
  ``death_log_scale_ref``, with the prior above carried over exactly (:func:`nrm_log_scale`,
  model 1.2.0), and ``death_log_scale_years`` is kept as a Deterministic. Response:
  ``logit_response`` Normal(logit 0.85, 1) (CR/CRi 81 % in ELIANA, 85.5 % in
  the CIBMTR registry, Pasquini 2020), ``response_log_or`` Normal(0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from toolkit.data.inputs import DurabilityInputs
from toolkit.models.priors import NormalPairPriors, normal

MODEL_NAME = "durability"
MODEL_VERSION = "1.2.0"  # 1.1: NRM as its own hazard for cure and efs; EFS, CIR, NRM; 1.2: NRM scale sampled
#                            about NRM_REFERENCE_YEARS, sheared by the shape (same prior and likelihood)
VARIANTS = ("weibull", "cure")
PRIOR_SETS = ("default", "skeptical", "optimistic")
#: nutpie with PyTensor's disk-cached numba log density called from Python, chosen by measurement
#: (benchmarks/bench_warm_refit.py): for a model this small compilation dominates; nutpie's own numba
#: C callback is rebuilt in every process (10-20 s on 2 cores), PyMC's NUTS compiles in a few seconds
#: but samples 3-7x slower; the Python callback loads in 1-2 s and keeps most of nutpie's speed.
DEFAULT_BACKEND = "nutpie"
DEFAULT_LOGP_CALLBACK = "python"


@dataclass(frozen=True)
class DurabilityPriors(NormalPairPriors):
    """Normal(mu, sigma) priors, as (mu, sigma) pairs; see the module docstring for sources."""

    log_hr: tuple[float, float] = (0.0, 1.0)  # docs/priors.md#durability-log-hr
    log_shape: tuple[float, float] = (0.0, 0.5)  # docs/priors.md#durability-log-shape
    log_scale_years: tuple[float, float] = (float(np.log(0.75)), 1.0)  # docs/priors.md#durability-log-scale-years
    beta_std: tuple[float, float] = (0.0, 0.5)  # docs/priors.md#durability-beta-std
    logit_cure: tuple[float, float] = (0.0, 1.0)  # docs/priors.md#durability-logit-cure
    cure_log_or: tuple[float, float] = (0.0, 1.0)  # docs/priors.md#durability-cure-log-or
    gamma_std: tuple[float, float] = (0.0, 0.5)  # docs/priors.md#durability-gamma-std
    log_hr_hsct: tuple[float, float] = (0.0, 1.0)  # docs/priors.md#durability-log-hr-hsct
    death_log_scale_years: tuple[float, float] = (float(np.log(30.0)), 1.5)  # docs/priors.md#durability-death-log-scale-years
    death_log_shape: tuple[float, float] = (0.0, 0.5)  # docs/priors.md#durability-death-log-shape
    log_hr_death: tuple[float, float] = (0.0, 1.0)  # docs/priors.md#durability-log-hr-death
    log_hr_hsct_nrm: tuple[float, float] = (0.0, 1.0)  # docs/priors.md#durability-log-hr-hsct-nrm
    logit_response: tuple[float, float] = (float(np.log(0.85 / 0.15)), 1.0)  # docs/priors.md#durability-logit-response
    response_log_or: tuple[float, float] = (0.0, 1.0)  # docs/priors.md#durability-response-log-or

    @classmethod
    def named(cls, name: str) -> DurabilityPriors:
        """The prior set ``default``, ``skeptical`` or ``optimistic`` (arm effects differ)."""
        if name == "default":
            return cls()
        if name == "skeptical":  # docs/priors.md#durability-skeptical
            return cls(log_hr=(0.0, 0.35), cure_log_or=(0.0, 0.5))
        if name == "optimistic":  # docs/priors.md#durability-optimistic
            return cls(log_hr=(float(np.log(0.7)), 0.35), cure_log_or=(0.4, 0.5))
        raise ValueError(f"unknown prior set {name!r}; valid: {', '.join(PRIOR_SETS)}")



def separate_nrm(variant: str, endpoint: str) -> bool:
    """Whether death in remission has its own cause-specific hazard (see the module docstring)."""
    return variant == "cure" or endpoint in ("relapse", "efs")


#: the time (years) about which the NRM hazard's scale is sampled (:func:`nrm_log_scale`): inside the trial's
#: follow-up (median 3 years at the default design), where the few deaths in remission inform the hazard
NRM_REFERENCE_YEARS = 2.0
#: the power a of the NRM shape in that variable, v = k^a (log lam - log t_r) (:func:`nrm_log_scale`)
NRM_SHAPE_POWER = 0.5
#: natural-scale parameters the model keeps as Deterministics of its free variables (calibration ranks them)
NATURAL_PARAMETERS = ("death_log_scale_years",)


def nrm_log_scale(log_shape, prior: tuple[float, float], reference_years: float | None = None,
                  power: float | None = None):
    r"""The NRM hazard's log scale, ``death_log_scale_years``, sampled through v = k^a (log lam - log t_r).

    t_r = ``reference_years`` (default :data:`NRM_REFERENCE_YEARS`), a = ``power`` (default
    :data:`NRM_SHAPE_POWER`). With few deaths in remission only the cumulative NRM hazard over the
    follow-up, log H0(t_r) = -k (log lam - log t_r), is learned; log lam lies far above the data's
    time scale, so (log k, log lam) lie on the curved ridge log lam = log t_r + const / k, whose
    ends made the sampler diverge (docs/calibration.md). a = 1 samples that cumulative hazard
    itself, which straightens the ridge but leaves a funnel (v's prior sd is k sigma) that diverges
    on large cohorts with no death; a = 1/2 goes half-way and does neither at the measured
    designs. The prior is unchanged: log lam ~ Normal(mu, sigma) independent of log k is the same as

    .. math:: v \mid k \sim \text{Normal}(k^a(\mu - \log t_r),\; k^a\sigma), \qquad
              \log\lambda = \log t_r + v / k^a,

    whose density carries the Jacobian |d log lam / dv| = k^-a of the change of variables, so the
    model's log density in (log k, v) is the old one in (log k, log lam) minus a log k
    (``tests/test_durability.py``). A prior draw of v from z ~ Normal(0, 1) gives log lam = mu +
    sigma z, the old draw.
    """
    mu, sigma = prior
    log_t = float(np.log(NRM_REFERENCE_YEARS if reference_years is None else reference_years))
    c = pt.exp((NRM_SHAPE_POWER if power is None else power) * log_shape)
    v = pm.Normal("death_log_scale_ref", mu=c * (mu - log_t), sigma=c * sigma)
    return pm.Deterministic("death_log_scale_years", log_t + v / c)


def nrm_free_value(log_shape, log_scale, reference_years: float | None = None, power: float | None = None):
    """v = k^a (log lam - log t_r), the free variable ``death_log_scale_ref`` at natural-scale NRM parameters."""
    log_t = np.log(NRM_REFERENCE_YEARS if reference_years is None else reference_years)
    return np.exp((NRM_SHAPE_POWER if power is None else power) * log_shape) * (log_scale - log_t)


def weibull_log_cumhaz0(t, log_shape, log_scale):
    """log H0(t) = k (log t - log lam)."""
    return pt.exp(log_shape) * (pt.log(t) - log_scale)


def survival_logp(t, event, log_shape, log_scale, lp, log_cure=None, log_uncure=None,
                  hsct=None, log_hr_hsct=None):
    """Pointwise log-likelihood of right-censored Weibull PH (optionally mixture cure).

    log h(t) = log k - log lam + (k - 1)(log t - log lam) + lp [+ b_hsct 1(t > c)]
    """
    k = pt.exp(log_shape)
    h0 = pt.exp(weibull_log_cumhaz0(t, log_shape, log_scale))
    log_h = log_shape - log_scale + (k - 1) * (pt.log(t) - log_scale) + lp
    if hsct is not None:
        before = pt.exp(weibull_log_cumhaz0(pt.minimum(t, hsct), log_shape, log_scale))
        h0 = before + pt.exp(log_hr_hsct) * (h0 - before)
        log_h = log_h + log_hr_hsct * pt.gt(t, hsct)
    cumhaz = pt.exp(lp) * h0
    if log_cure is None:
        return event * log_h - cumhaz
    log_event = log_uncure + log_h - cumhaz
    log_censored = pt.logaddexp(log_cure, log_uncure - cumhaz)
    return pt.switch(pt.eq(event, 1), log_event, log_censored)


def build_durability_model(inputs: DurabilityInputs, priors: DurabilityPriors | None = None, *,
                           variant: str = "weibull", patient_mask: np.ndarray | None = None,
                           infused_mask: np.ndarray | None = None) -> pm.Model:
    """The PyMC model for ``inputs`` (see the module docstring for equations and priors).

    ``patient_mask`` (per responder) and ``infused_mask`` (per infused patient, ``efs``), 0/1, multiply
    each patient's log-likelihood terms: log p(y | theta) = sum_i m_i log p(y_i | theta). Used to pad a
    cohort to a fixed size (padded rows have m_i = 0 and contribute nothing), so one compiled model
    serves cohorts of different sizes (``toolkit.design.padded``); they are containers (``pm.Data``
    ``patient_mask``, ``infused_mask``) swapped with the data. Without them the model is unchanged.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    priors = priors or DurabilityPriors()
    coords = {"patient": inputs.patient_ids, "covariate": inputs.covariates}

    def masked(logp, extra):  # the log-likelihood of each patient times its 0/1 mask, when there is one
        return logp * extra[0] if extra else logp

    with pm.Model(coords=coords) as model:
        mask = (pm.Data("patient_mask", np.asarray(patient_mask, float), dims="patient"),) \
            if patient_mask is not None else ()
        time = pm.Data("time_years", inputs.time_years, dims="patient")
        event = pm.Data("event", inputs.event, dims="patient")
        arm = pm.Data("arm", inputs.arm, dims="patient")
        log_shape = normal("log_shape", priors.log_shape)
        log_scale = normal("log_scale_years", priors.log_scale_years)
        log_hr = normal("log_hr", priors.log_hr)
        lp = log_hr * arm
        if inputs.covariates:
            x = pm.Data("x_std", inputs.x_std, dims=("patient", "covariate"))
            beta = normal("beta_std", priors.beta_std, dims="covariate")
            lp = lp + pt.dot(x, beta)
        kwargs = {}
        if inputs.hsct == "timevarying":
            finite = np.where(np.isfinite(inputs.hsct_years), inputs.hsct_years, 1e6)
            kwargs["hsct"] = pm.Data("hsct_years", finite, dims="patient")
            kwargs["log_hr_hsct"] = normal("log_hr_hsct", priors.log_hr_hsct)
        if variant == "cure":
            logit_cure = normal("logit_cure", priors.logit_cure)
            cure_log_or = normal("cure_log_or", priors.cure_log_or)
            eta = logit_cure + cure_log_or * arm
            if inputs.covariates:
                gamma = normal("gamma_std", priors.gamma_std, dims="covariate")
                eta = eta + pt.dot(x, gamma)
            kwargs["log_cure"] = -pt.softplus(-eta)
            kwargs["log_uncure"] = -pt.softplus(eta)
        separate = separate_nrm(variant, inputs.endpoint)
        if separate:  # the relapse part: death in remission censors it (its own hazard below)
            event = pm.Data("relapse_event", inputs.event * (1 - inputs.competing), dims="patient")
        n_kw = len(kwargs)
        pm.CustomDist("rfs", event, log_shape, log_scale, lp, *kwargs.values(), *mask,
                      logp=lambda t, ev, ls, lsc, lp_, *rest: masked(
                          survival_logp(t, ev, ls, lsc, lp_, **dict(zip(kwargs, rest[:n_kw]))), rest[n_kw:]),
                      observed=time, dims="patient")
        if separate:
            competing = pm.Data("death_in_remission", inputs.competing, dims="patient")
            d_shape = normal("death_log_shape", priors.death_log_shape)
            d_scale = nrm_log_scale(d_shape, priors.death_log_scale_years)
            d_hr = normal("log_hr_death", priors.log_hr_death)
            d_kwargs = {}
            if inputs.hsct == "timevarying":
                d_kwargs = {"hsct": kwargs["hsct"], "log_hr_hsct": normal("log_hr_hsct_nrm", priors.log_hr_hsct_nrm)}
            n_dkw = len(d_kwargs)
            pm.CustomDist("death", competing, d_shape, d_scale, d_hr * arm, *d_kwargs.values(), *mask,
                          logp=lambda t, ev, ls, lsc, lp_, *rest: masked(
                              survival_logp(t, ev, ls, lsc, lp_, **dict(zip(d_kwargs, rest[:n_dkw]))), rest[n_dkw:]),
                          observed=inputs.time_years.copy(), dims="patient")  # its own value variable
        if inputs.endpoint == "efs":
            model.add_coord("infused", np.arange(len(inputs.responded)))
            r_arm = pm.Data("response_arm", inputs.responded_arm, dims="infused")
            logit_r = normal("logit_response", priors.logit_response)
            r_or = normal("response_log_or", priors.response_log_or)
            if infused_mask is None:
                pm.Bernoulli("response", logit_p=logit_r + r_or * r_arm, observed=inputs.responded, dims="infused")
            else:
                r_mask = pm.Data("infused_mask", np.asarray(infused_mask, float), dims="infused")
                pm.CustomDist("response", logit_r + r_or * r_arm, r_mask, dtype="int64",
                              logp=lambda y, logit_p, m: m * pm.logp(pm.Bernoulli.dist(logit_p=logit_p), y),
                              observed=inputs.responded, dims="infused")
        pm.Deterministic("hazard_ratio", pt.exp(log_hr))
    return model


# --------------------------------------------------------------------------- posterior quantities (numpy)


def _draws(posterior, name) -> np.ndarray:
    return posterior[name].to_numpy().reshape(-1, *posterior[name].shape[2:])


def _arm_parameters(posterior, inputs: DurabilityInputs, *, arm: int, x_std=None) -> dict:
    """Per draw (and covariate row) parameters of one arm, shaped (draws, rows, 1) for broadcasting over time."""
    x = inputs.x_std if x_std is None else x_std
    log_lam = _draws(posterior, "log_scale_years")[:, None, None]
    par = {"k": np.exp(_draws(posterior, "log_shape"))[:, None, None], "lam": np.exp(log_lam), "log_lam": log_lam}
    lp = _draws(posterior, "log_hr")[:, None, None] * arm
    if inputs.covariates:
        lp = lp + (_draws(posterior, "beta_std") @ x.T)[:, :, None]
    par["lp"] = lp
    if "logit_cure" in posterior:
        eta = (_draws(posterior, "logit_cure") + _draws(posterior, "cure_log_or") * arm)[:, None, None]
        if inputs.covariates:
            eta = eta + (_draws(posterior, "gamma_std") @ x.T)[:, :, None]
        par["pi"] = 1 / (1 + np.exp(-eta))
        par["uncured"] = 1 - par["pi"]
    if "death_log_shape" in posterior:
        par["dk"] = np.exp(_draws(posterior, "death_log_shape"))[:, None, None]
        par["log_dl"] = _draws(posterior, "death_log_scale_years")[:, None, None]
        par["dl"] = np.exp(par["log_dl"])
        par["dlp"] = _draws(posterior, "log_hr_death")[:, None, None] * arm
        par["d_offset"] = par["dlp"] - par["dk"] * par["log_dl"]
    par["offset"] = lp - par["k"] * log_lam  # log H(t) = k log t + offset (:func:`_weibull_survival`)
    return par


def _add(x: np.ndarray, y) -> np.ndarray:
    """x + y, into x where the result has x's shape (no new array per block of the CIR/NRM loop)."""
    if np.broadcast_shapes(x.shape, np.shape(y)) == x.shape:
        return np.add(x, y, out=x)
    return x + y  # y has more rows (covariates) than x


def _weibull_survival(log_t: np.ndarray, k, offset) -> np.ndarray:
    """Weibull PH survival exp(-(t/lam)^k e^lp), computed as exp(-exp(k log t + offset)), offset = lp - k log lam.

    The same value to rounding (an exp in place of a power, which costs twice as much on the CIR/NRM
    grids); t = 0 gives log t = -inf and S = 1, as (0/lam)^k = 0 does.
    """
    x = _add(log_t * k, offset)
    np.exp(x, out=x)
    np.negative(x, out=x)
    return np.exp(x, out=x)


def _components(par: dict, t_years: np.ndarray, draws=slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """(S_rel, S_n): survival from relapse (a mixture for cure) and from NRM, (draws, rows, m)."""
    with np.errstate(divide="ignore"):
        log_t = np.log(t_years)
    su = _weibull_survival(log_t, par["k"][draws], par["offset"][draws])
    if "pi" in par:
        pi, uncured = par["pi"][draws], par["uncured"][draws]
        su = _add(su * uncured if su.shape[1] < pi.shape[1] else np.multiply(su, uncured, out=su), pi)
    if "dk" in par:
        sn = _weibull_survival(log_t, par["dk"][draws], par["d_offset"][draws])
    else:
        sn = np.ones((1, 1, 1))
    return su, sn


def survival_curves(posterior, inputs: DurabilityInputs, days, *, variant: str, arm: int,
                    x_std: np.ndarray | None = None) -> np.ndarray:
    """Posterior RFS S(t) per draw at ``days`` (since response) for one arm, averaged over covariate rows.

    ``days`` is 1-D (the same times for every draw) or (draws, m) (times per
    draw). Returns (draws, m). With covariates, S is averaged over ``x_std``
    rows (default: the analysed cohort), i.e. standardized to the cohort's
    covariate distribution. Patients are taken as without HSCT. Where death in
    remission has its own hazard, S = S_rel S_n (relapse-free and alive).
    ``variant`` is kept for the callers; the posterior's variables decide.
    """
    t = np.asarray(days, dtype=float) / 365.25
    t = t[None, None, :] if t.ndim == 1 else t[:, None, :]
    return _survival(_arm_parameters(posterior, inputs, arm=arm, x_std=x_std), t)


def _survival(par: dict, t_years: np.ndarray) -> np.ndarray:
    """S(t) = S_rel S_n averaged over covariate rows, (draws, m), from :func:`_arm_parameters`."""
    su, sn = _components(par, t_years)
    return (su * sn).mean(axis=1)


MEDIAN_HORIZON_DAYS = 20 * 365.25


def median_survival_days(posterior, inputs: DurabilityInputs, *, variant: str, arm: int,
                         horizon_days: float = MEDIAN_HORIZON_DAYS) -> np.ndarray:
    """Per-draw day where S(t) = 0.5 (bisection, ``toolkit.survival.first_crossing``); +inf if not within
    the horizon. The simulator's ``median_rfs_days`` truth is the same crossing of the true RFS curve."""
    from toolkit.survival import first_crossing

    par = _arm_parameters(posterior, inputs, arm=arm)  # once, not at every bisection step
    return first_crossing(lambda d: _survival(par, d[:, None, None] / 365.25)[:, 0], par["k"].shape[0],
                          0.0, horizon_days)


def cumulative_incidences(posterior, inputs: DurabilityInputs, horizon_days: float, *, arm: int,
                          x_std: np.ndarray | None = None, days=None,
                          chunk: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Per-draw cumulative incidence of relapse and of NRM for one arm on a one-day grid.

    CIR(t) = int_0^t h_rel(s) S(s) ds and NRM(t) = int_0^t h_n(s) S(s) ds with
    S = S_rel S_n, where the relapse part S_rel = pi + (1 - pi) S_u (cure)
    carries the cure fraction and S_n is the NRM survival of every patient in
    remission; computed by ``toolkit.survival.cumulative_incidence`` on the
    grid ``toolkit.survival.incidence_grid(horizon_days)`` per covariate row
    and averaged over rows. Needs a model with a separate NRM hazard.

    Returns (grid_days, cir, nrm), cir and nrm (draws, grid); with ``days``
    (each within the horizon) only those days: (days, cir, nrm), (draws,
    len(days)), the same values (the grid point nearest each day; the grid
    has every whole day) without the running sums at every other day.
    ``chunk``: draws per block (default: blocks of about 2**16 grid values,
    which keeps the temporaries in cache).
    """
    from toolkit.survival import cumulative_incidence, incidence_grid

    if "death_log_shape" not in posterior:
        raise ValueError("cumulative incidences need death in remission as its own hazard (a cure model, or the "
                         "relapse or efs endpoint)")
    grid = incidence_grid(horizon_days)
    at = None
    if days is not None:
        days = np.atleast_1d(np.asarray(days, dtype=float))
        if np.any(days < 0) or np.any(days > grid[-1]):
            raise ValueError(f"days must lie within 0..{horizon_days:g} (the horizon)")
        at = np.abs(grid[None, :] - days[:, None]).argmin(axis=1)
    par = _arm_parameters(posterior, inputs, arm=arm, x_std=x_std)
    n, rows = par["k"].shape[0], max(np.shape(par[key])[1] for key in par)
    if chunk is None:
        chunk = max(1, 2**16 // (rows * grid.size))
    width = grid.size if at is None else at.size
    cir, nrm = np.empty((n, width)), np.empty((n, width))
    t = grid[None, None, :] / 365.25
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        su, sn = _components(par, t, sl)
        # S_n has no covariates (one row): CIR is linear in S_rel, so the CIR of the row mean is the mean
        # of the rows' CIRs and the rows x grid sum is done once; NRM's geometric midpoint of S_rel is not.
        if sn.shape[1] == 1:
            cir[sl] = cumulative_incidence(su.mean(axis=1) if su.shape[1] > 1 else su[:, 0], sn[:, 0], at=at)
        else:
            cir[sl] = cumulative_incidence(su, sn, at=at).mean(axis=1)
        nrm_rows = cumulative_incidence(sn, su, at=at)
        nrm[sl] = nrm_rows[:, 0] if nrm_rows.shape[1] == 1 else nrm_rows.mean(axis=1)
    return (grid if at is None else grid[at]), cir, nrm


def response_probabilities(posterior, *, arm: int) -> np.ndarray:
    """Posterior P(response) per draw for one arm: expit(r0 + r_arm a)."""
    eta = _draws(posterior, "logit_response") + _draws(posterior, "response_log_or") * arm
    return 1 / (1 + np.exp(-eta))


def efs_curves(posterior, inputs: DurabilityInputs, days, *, variant: str, arm: int,
               response_day: float) -> np.ndarray:
    """Posterior EFS per draw at ``days`` since infusion: p_arm S_arm(max(t - response_day, 0)), (draws, m)."""
    days = np.asarray(days, dtype=float)
    rfs = survival_curves(posterior, inputs, np.maximum(days - response_day, 0.0), variant=variant, arm=arm)
    return response_probabilities(posterior, arm=arm)[:, None] * rfs


def cure_fractions(posterior, inputs: DurabilityInputs, *, arm: int) -> np.ndarray:
    """Posterior cure fraction per draw for one arm, averaged over the cohort's covariates."""
    eta = (_draws(posterior, "logit_cure") + _draws(posterior, "cure_log_or") * arm)[:, None]
    if inputs.covariates:
        eta = eta + _draws(posterior, "gamma_std") @ inputs.x_std.T
    return (1 / (1 + np.exp(-eta))).mean(axis=1)
