r"""CAR-T cellular kinetics: hierarchical Stein 2019 piecewise model, closed form (no ODE).

Time t is days since CAR-T infusion; C is the transgene level (copies/ug
genomic DNA, or the cohort's unit). Patient p has arm a_p (1 = experimental)
and standardized covariates x_p.

Curve (Stein et al. 2019 [1], Fig. 2; the same as ``toolkit.simulate.cart_curve``)::

    C(t) = Cmax/foldx * exp(rho t),                                      t <  Tmax,  rho = ln(foldx)/Tmax
    C(t) = Cmax [(1-FB) e^{-alpha (t-Tmax)} + FB e^{-beta (t-Tmax)}],      t >= Tmax

computed on the log scale: expansion log C = log Cmax - log foldx (1 - t/Tmax);
contraction log C = log Cmax + logsumexp(log(1-FB) - alpha d, log FB - beta d),
d = t - Tmax, chosen with ``pt.switch(t < Tmax, ...)``. The curve is
continuous at Tmax. AUC0-T has the closed form of ``toolkit.simulate.cart_auc``.

Patient parameters (unconstrained scale; the ``kinetic`` coordinate)

==============  =========================  ==========================================  =========
name            theta                      clinical meaning                            unit
==============  =========================  ==========================================  =========
``cmax``        log Cmax                   peak level                                  copies/ug
``tmax``        log Tmax                   day of the peak                             days
``foldx``       log foldx                  fold expansion from R0 = Cmax/foldx to Cmax  -
``alpha``       log(alpha - beta)          contraction (effector decline) rate excess  1/day
``fb``          logit FB                   fraction entering the slow (memory) phase   -
``persistence`` log(ln2/beta)              persistence (terminal) half-life            days
==============  =========================  ==========================================  =========

so beta = ln2 e^{-theta_persistence} and alpha = beta + e^{theta_alpha} > beta
**by construction**. Why this parameterisation: the simulator (and Stein's
model) put the between-patient normal on log beta, so the model does too
(log half-life = log ln2 - log beta, the same normal up to sign); the only
constraint needed is that the persistence phase is the slower one, and
log(alpha - beta) gives it without truncation or a hard cap (the simulator
caps beta <= alpha/2, binding in about 0.5 % of patients). Because beta/alpha
is about 0.02, log alpha is log(alpha - beta) to within 0.02, so the normal on
it is Stein's normal on log alpha. An arm effect on ``persistence`` is
therefore exactly the log **ratio of typical persistence half-lives**
(ln2/beta), and ``alpha = beta + ...`` moves the typical contraction half-life
by under 1 % when beta changes (ignored in the estimand definitions). The
alternative beta = alpha sigmoid(theta) makes the persistence effect a ratio
only approximately and ties beta's spread to alpha's.

Hierarchy (non-centered)::

    theta_pj = mu_j + a_p delta_j + x_p . gamma_j + omega_j z_pj,   z_pj ~ Normal(0, 1)

delta_j exists only for the parameters in ``effects_on`` (default: all six);
the others have no arm difference. gamma (``covariate_effect``) acts on all six.

Likelihood (Beal 2001 M3 [3]): log y_s ~ Normal(log C_p(t_s), sigma) for a
quantified sample; a sample below the LLOQ contributes
log Phi((log LLOQ_s - log C_p(t_s))/sigma) at **its own row's** LLOQ. Nothing is
dropped or imputed. The term is a ``CustomDist`` that is pointwise per sample,
so ``pm.compute_log_likelihood`` and PSIS-LOO work. (``pm.Censored`` would
treat a quantified value exactly equal to the LLOQ as censored; the explicit
flag does not.)

Random-effect SDs: omega, not omega^2
    Stein's Table 1 "random effect" column (foldx 2.4, Tmax 0.38, Cmax 0.65,
    alpha 0.91, FB 0.8, beta 0.86) is read as the log-scale **SD** omega.
    Stein fitted in Monolix, which reports omega (the SD) by default; an
    independent re-implementation reads it so; and the toolkit's simulator
    (``toolkit.simulate``) uses the same reading, so fits and truth agree.
    nlmixr2lib reads it as omega^2 (domain.md §1.1, caution), which would give
    SDs of 0.6-1.5 instead of 0.38-2.4; the HalfNormal priors below are wide
    enough that the data can move omega in either direction.

Priors (``CartPriors``; Normal(mu, sd) unless stated)

===================================  ====================================  ==========================================
parameter                            prior                                 source / reasoning
===================================  ====================================  ==========================================
mu[cmax]   (log Cmax)                Normal(log 24000, 0.5)                Stein Table 1, 24,000 copies/ug (RSE 20 %);
                                                                           widened for a different product/population
mu[tmax]   (log Tmax)                Normal(log 9.3, 0.3)                  Stein 9.3 d (RSE 4 %); label Tmax 10-20 d
mu[foldx]  (log foldx)               Normal(log 3900, 0.7)                 Stein 3,900 (RSE 30 %)
mu[alpha]  (log(alpha - beta))       Normal(log 0.1568, 0.5)               Stein alpha 0.16/d, beta 0.0032/d (half-life 4.3 d)
mu[fb]     (logit FB)                Normal(logit 0.0079, 0.5)             Stein 0.0079 (RSE 15 %)
mu[persistence] (log half-life)      Normal(log 216.6, 0.5)                Stein beta 0.0032/d (RSE 23 %), ~220 d terminal
                                                                           half-life, an extrapolation beyond 1 y
omega[j]                             HalfNormal(1.5 omega_Stein,j)         prior median = Stein's omega (0.674 * 1.5 ~ 1);
                                                                           Stein Table 1 read as SD (see above);
                                                                           foldx uses omega 1.0 (see note)
delta[cmax]                          Normal(0, 0.4)                        domain.md §4.4 (responder gap 0.55)
delta[persistence] (log t1/2 ratio)  Normal(0, 0.5)                        domain.md §4.4
delta[fb]                            Normal(0, 0.5)                        domain.md §4.4 ("beta or logit FB")
delta[tmax]                          Normal(0, 0.3)                        similar to omega_Tmax 0.38: a 35 % shift at 1 SD
delta[foldx], delta[alpha]           Normal(0, 0.5)                        as for persistence: a 1.65-fold change at 1 SD
gamma (per SD of a covariate)        Normal(0, 0.3)                        Stein found no covariate effect on Cmax
sigma (log-scale residual SD)        LogNormal(log 0.56, 0.2)              Stein a = 0.56 (RSE 3.3 %)
===================================  ====================================  ==========================================

*foldx note:* Stein's omega for foldx (2.4) only shapes the unobserved
pre-peak start R0; the simulator uses 1.0 so that day-1 samples stay
plausible, and a HalfNormal(3.6) prior lets the sampler wander into
R0 spreads of 10^4 that the first week of data cannot rule out. The prior
scale is 1.5 (median omega 1.0, 97.5 % quantile 3.4, so 2.4 stays inside).

Named deterministics (dim ``arm`` = control, experimental; the typical patient
= every parameter at its population median, covariates at the cohort mean):
``cmax_copies_per_ug``, ``tmax_days``, ``auc_0_28`` (copies/ug x day),
``half_life_contraction_days`` (ln2/alpha), ``half_life_persistence_days``
(ln2/beta), ``persistence_fraction`` (FB). Per patient (dim ``patient``):
``patient_cmax``, ``patient_auc_0_28``; ``patient_time_above_lloq_days`` is
computed from the draws by :func:`patient_time_above_lloq` (bisection, as
``toolkit.simulate.time_below``).

Required columns: ``cart_kinetics.csv`` patient_id, day, value (BLQ/<x for
censored), lloq, unit; ``patients.csv`` arm (and any covariates).

References
----------
1. Stein AM et al. Tisagenlecleucel model-based cellular kinetic analysis of CAR-T cells.
   CPT Pharmacometrics Syst Pharmacol 2019;8(5):285-295. doi:10.1002/psp4.12388 (Table 1).
2. Mueller KT et al. Clinical pharmacology of tisagenlecleucel in B-cell ALL. Clin Cancer Res 2018;24:6175.
3. Beal SL. Ways to fit a PK model with some data below the quantification limit.
   J Pharmacokinet Pharmacodyn 2001;28(5):481-504.
4. domain.md §1.1 (Stein table, derived typical values), §4.4 (arm-effect priors), §5 (M3 likelihood).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pymc.distributions.dist_math import normal_lcdf

from toolkit.data.inputs import CartInputs

MODEL_NAME = "cart"
MODEL_VERSION = "1.0.0"
KINETIC_PARAMETERS = ("cmax", "tmax", "foldx", "alpha", "fb", "persistence")
ARMS = ("control", "experimental")
LN2 = math.log(2.0)
AUC_HORIZON_DAYS = 28.0

# Stein 2019 Table 1 typical values (domain.md §1.1)
STEIN_TYPICAL = {"cmax": 24_000.0, "tmax": 9.3, "foldx": 3_900.0, "alpha": 0.16, "fb": 0.0079, "beta": 0.0032}
# Stein 2019 Table 1 random-effect column, read as the log-scale SD omega (module docstring)
STEIN_OMEGA = {"cmax": 0.65, "tmax": 0.38, "foldx": 2.4, "alpha": 0.91, "fb": 0.8, "persistence": 0.86}


def _logit(p: float) -> float:
    return float(math.log(p / (1 - p)))


@dataclass(frozen=True)
class CartPriors:
    """Priors of the CAR-T kinetic model in one place; see the module docstring table for sources.

    ``mu_*`` and ``effect_*`` and ``covariate_effect`` are Normal (mu, sd) pairs on the
    unconstrained scale; ``omega_*`` are HalfNormal scales; ``sigma`` is LogNormal (mu, sd).
    """

    mu_cmax: tuple[float, float] = (math.log(24_000.0), 0.5)  # Stein Table 1, Cmax 24,000 copies/ug
    mu_tmax: tuple[float, float] = (math.log(9.3), 0.3)  # Stein Table 1, Tmax 9.3 d
    mu_foldx: tuple[float, float] = (math.log(3_900.0), 0.7)  # Stein Table 1, foldx 3,900 (RSE 30 %)
    mu_alpha: tuple[float, float] = (math.log(0.16 - 0.0032), 0.5)  # Stein alpha 0.16/d minus beta 0.0032/d
    mu_fb: tuple[float, float] = (_logit(0.0079), 0.5)  # Stein Table 1, FB 0.0079
    mu_persistence: tuple[float, float] = (math.log(LN2 / 0.0032), 0.5)  # Stein beta 0.0032/d -> t1/2 217 d
    omega_cmax: float = 1.5 * 0.65  # Stein omega 0.65 (as SD) = prior median
    omega_tmax: float = 1.5 * 0.38  # Stein omega 0.38
    omega_foldx: float = 1.5  # Stein omega 2.4 only shapes R0; simulator uses 1.0 (docstring note)
    omega_alpha: float = 1.5 * 0.91  # Stein omega 0.91
    omega_fb: float = 1.5 * 0.8  # Stein omega 0.8
    omega_persistence: float = 1.5 * 0.86  # Stein omega 0.86 on beta (= on log half-life)
    effect_cmax: tuple[float, float] = (0.0, 0.4)  # domain.md §4.4, log fold-change in Cmax
    effect_tmax: tuple[float, float] = (0.0, 0.3)  # comparable to omega_Tmax 0.38
    effect_foldx: tuple[float, float] = (0.0, 0.5)  # as domain.md §4.4 persistence
    effect_alpha: tuple[float, float] = (0.0, 0.5)  # as domain.md §4.4 persistence
    effect_fb: tuple[float, float] = (0.0, 0.5)  # domain.md §4.4 (logit FB)
    effect_persistence: tuple[float, float] = (0.0, 0.5)  # domain.md §4.4, log half-life ratio
    covariate_effect: tuple[float, float] = (0.0, 0.3)  # per covariate SD; Stein: no covariate effects
    sigma: tuple[float, float] = (math.log(0.56), 0.2)  # Stein residual a = 0.56 (log scale)

    def mu(self) -> np.ndarray:
        return np.array([getattr(self, f"mu_{k}") for k in KINETIC_PARAMETERS], dtype=float)

    def omega(self) -> np.ndarray:
        return np.array([getattr(self, f"omega_{k}") for k in KINETIC_PARAMETERS], dtype=float)

    def effect(self, names=KINETIC_PARAMETERS) -> np.ndarray:
        return np.array([getattr(self, f"effect_{k}") for k in names], dtype=float).reshape(-1, 2)

    def with_overrides(self, overrides: dict) -> CartPriors:
        valid = set(asdict(self))
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(f"unknown prior(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
        values = {k: (float(v) if k.startswith("omega_") else (float(v[0]), float(v[1])))
                  for k, v in overrides.items()}
        return replace(self, **values)

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def check_effects_on(effects_on) -> tuple[str, ...]:
    """Validate ``effects_on``; returns the names in canonical order."""
    if isinstance(effects_on, str):
        effects_on = (effects_on,)
    names = list(effects_on)
    unknown = [n for n in names if n not in KINETIC_PARAMETERS]
    if unknown:
        raise ValueError(f"unknown kinetic parameter(s) in effects_on: {', '.join(map(str, unknown))}; "
                         f"valid: {', '.join(KINETIC_PARAMETERS)}")
    return tuple(k for k in KINETIC_PARAMETERS if k in names)


# --------------------------------------------------------------------------- closed forms (pytensor)


def natural_parameters(theta):
    """Unconstrained theta (last axis = ``KINETIC_PARAMETERS``) -> dict of natural parameters (pytensor)."""
    beta = LN2 * pt.exp(-theta[..., 5])
    return {
        "log_cmax": theta[..., 0],
        "tmax": pt.exp(theta[..., 1]),
        "log_foldx": theta[..., 2],
        "alpha": beta + pt.exp(theta[..., 3]),
        "logit_fb": theta[..., 4],
        "beta": beta,
    }


def log_cart_curve(t, log_cmax, tmax, log_foldx, alpha, beta, logit_fb):
    """log C(t) of the Stein curve, stable on the log scale (pytensor; broadcasts)."""
    expansion = log_cmax - log_foldx * (1.0 - t / tmax)
    d = t - tmax
    log_fb = -pt.softplus(-logit_fb)
    log_1m_fb = -pt.softplus(logit_fb)
    contraction = log_cmax + pt.logaddexp(log_1m_fb - alpha * d, log_fb - beta * d)
    return pt.switch(pt.lt(t, tmax), expansion, contraction)


def cart_auc(t_end, log_cmax, tmax, log_foldx, alpha, beta, logit_fb):
    """AUC of the Stein curve from 0 to ``t_end`` in closed form (pytensor; see ``toolkit.simulate.cart_auc``)."""
    cmax = pt.exp(log_cmax)
    rho = log_foldx / tmax
    t1 = pt.minimum(t_end, tmax)
    expansion = pt.exp(log_cmax - log_foldx) * pt.expm1(rho * t1) / rho
    d = pt.maximum(t_end - tmax, 0.0)
    fb = pt.sigmoid(logit_fb)
    contraction = cmax * ((1 - fb) * -pt.expm1(-alpha * d) / alpha + fb * -pt.expm1(-beta * d) / beta)
    return expansion + contraction


def _censored_normal_logp(value, mu, sigma, censored, log_lloq):
    """Beal M3: Normal log-density if quantified, log Phi((log LLOQ - mu)/sigma) if censored; pointwise."""
    z = (value - mu) / sigma
    density = -0.5 * pt.sqr(z) - pt.log(sigma) - 0.5 * math.log(2 * math.pi)
    return pt.switch(pt.eq(censored, 1), normal_lcdf(mu, sigma, log_lloq), density)


# --------------------------------------------------------------------------- model


def build_cart_model(inputs: CartInputs, priors: CartPriors | None = None, *,
                     effects_on=KINETIC_PARAMETERS) -> pm.Model:
    """The PyMC model for ``inputs`` (see the module docstring for equations and priors).

    ``effects_on`` names the kinetic parameters that get an arm effect
    (default all of ``KINETIC_PARAMETERS``); an unknown name raises ValueError.
    """
    effects = check_effects_on(effects_on)
    priors = priors or CartPriors()
    coords = {"patient": inputs.patient_ids, "sample": np.arange(inputs.n_samples), "arm": list(ARMS),
              "covariate": inputs.covariates, "kinetic": list(KINETIC_PARAMETERS), "effect": list(effects)}
    mu_prior = priors.mu()
    with pm.Model(coords=coords) as model:
        day = pm.Data("day", inputs.day, dims="sample")
        patient_index = pm.Data("patient_index", inputs.sample_patient, dims="sample")
        censored = pm.Data("censored", inputs.censored.astype("int8"), dims="sample")
        log_lloq = pm.Data("log_lloq", inputs.log_lloq, dims="sample")
        experimental = pm.Data("experimental", inputs.arm.astype(float), dims="patient")

        mu = pm.Normal("mu_kinetic", mu=mu_prior[:, 0], sigma=mu_prior[:, 1], dims="kinetic")
        omega = pm.HalfNormal("omega_kinetic", sigma=priors.omega(), dims="kinetic")
        z = pm.Normal("z_kinetic", 0.0, 1.0, dims=("patient", "kinetic"))
        sigma = pm.LogNormal("sigma_log", mu=priors.sigma[0], sigma=priors.sigma[1])

        delta = pt.zeros(len(KINETIC_PARAMETERS))
        if effects:
            eff_prior = priors.effect(effects)
            arm_effect = pm.Normal("arm_effect", mu=eff_prior[:, 0], sigma=eff_prior[:, 1], dims="effect")
            delta = pt.set_subtensor(delta[[KINETIC_PARAMETERS.index(k) for k in effects]], arm_effect)
        theta = mu + experimental[:, None] * delta + omega * z
        if inputs.covariates:
            x = pm.Data("x_std", inputs.x_std, dims=("patient", "covariate"))
            gamma = pm.Normal("covariate_effect", mu=priors.covariate_effect[0], sigma=priors.covariate_effect[1],
                              dims=("covariate", "kinetic"))
            theta = theta + pt.dot(x, gamma)

        p = natural_parameters(theta[patient_index])
        log_c = log_cart_curve(day, p["log_cmax"], p["tmax"], p["log_foldx"], p["alpha"], p["beta"], p["logit_fb"])
        pm.CustomDist("log_level", log_c, sigma, censored, log_lloq, logp=_censored_normal_logp,
                      observed=inputs.log_value, dims="sample")

        # typical patient per arm (z = 0, covariates at the cohort mean)
        arm_code = pt.as_tensor_variable(np.array([0.0, 1.0]))
        typical = natural_parameters(mu + arm_code[:, None] * delta)
        pm.Deterministic("cmax_copies_per_ug", pt.exp(typical["log_cmax"]), dims="arm")
        pm.Deterministic("tmax_days", typical["tmax"], dims="arm")
        pm.Deterministic("auc_0_28", cart_auc(AUC_HORIZON_DAYS, **typical), dims="arm")
        pm.Deterministic("half_life_contraction_days", LN2 / typical["alpha"], dims="arm")
        pm.Deterministic("half_life_persistence_days", LN2 / typical["beta"], dims="arm")
        pm.Deterministic("persistence_fraction", pt.sigmoid(typical["logit_fb"]), dims="arm")
        # per patient, for later joint models
        patient = natural_parameters(theta)
        pm.Deterministic("patient_cmax", pt.exp(patient["log_cmax"]), dims="patient")
        pm.Deterministic("patient_auc_0_28", cart_auc(AUC_HORIZON_DAYS, **patient), dims="patient")
    return model


# --------------------------------------------------------------------------- numpy twins (posterior, prior checks)


def natural_parameters_np(theta: np.ndarray) -> dict[str, np.ndarray]:
    """numpy version of :func:`natural_parameters`, in ``toolkit.simulate`` argument names."""
    theta = np.asarray(theta, dtype=float)
    beta = LN2 * np.exp(-theta[..., 5])
    return {"cmax": np.exp(theta[..., 0]), "tmax": np.exp(theta[..., 1]), "foldx": np.exp(theta[..., 2]),
            "alpha": beta + np.exp(theta[..., 3]), "beta": beta, "fb": 1.0 / (1.0 + np.exp(-theta[..., 4]))}


def _draws(posterior, name) -> np.ndarray:
    da = posterior[name]
    return da.to_numpy().reshape(-1, *da.shape[2:])


def arm_effects_full(posterior) -> np.ndarray:
    """(draws, 6) arm effects on theta, zero for parameters without an arm effect."""
    n = _draws(posterior, "mu_kinetic").shape[0]
    out = np.zeros((n, len(KINETIC_PARAMETERS)))
    if "arm_effect" in posterior:
        names = [str(v) for v in posterior["arm_effect"].coords["effect"].to_numpy()]
        values = _draws(posterior, "arm_effect")
        for j, name in enumerate(names):
            out[:, KINETIC_PARAMETERS.index(name)] = values[:, j]
    return out


def patient_theta(posterior, inputs: CartInputs) -> np.ndarray:
    """(draws, patient, 6) unconstrained patient parameters from the posterior draws."""
    mu = _draws(posterior, "mu_kinetic")
    omega = _draws(posterior, "omega_kinetic")
    z = _draws(posterior, "z_kinetic")
    theta = mu[:, None, :] + inputs.arm[None, :, None] * arm_effects_full(posterior)[:, None, :] + omega[:, None, :] * z
    if inputs.covariates:
        theta = theta + np.einsum("pc,dck->dpk", inputs.x_std, _draws(posterior, "covariate_effect"))
    return theta


def patient_time_above_lloq(posterior, inputs: CartInputs, *, horizon_days: float = 20 * 365.0) -> np.ndarray:
    """(draws, patient) days from infusion until the patient's fitted curve falls below their LLOQ.

    Defined as ``toolkit.simulate.time_below`` (the simulator's T_loss): Tmax if
    the peak never reaches the LLOQ; ``horizon_days`` (20 years) if the curve is
    still above it then. Uses each patient's usual LLOQ (``inputs.patient_lloq``).
    """
    from toolkit.simulate import time_below

    if not np.isfinite(inputs.patient_lloq).all():
        raise ValueError("the cohort records no LLOQ, so time above the LLOQ is undefined")
    p = natural_parameters_np(patient_theta(posterior, inputs))
    level = np.broadcast_to(inputs.patient_lloq[None, :], p["cmax"].shape)
    t = time_below(level, p["cmax"], p["tmax"], p["foldx"], p["alpha"], p["beta"], p["fb"], horizon=horizon_days)
    return np.minimum(t, p["tmax"] + horizon_days)


def new_patient_log_auc(posterior, inputs: CartInputs, *, n_new: int = 200, random_seed: int = 20261125,
                        t_end: float = AUC_HORIZON_DAYS) -> np.ndarray:
    """(draws, 2 arms, n_new) log AUC0-t_end of new patients drawn from each draw's population.

    The same standard-normal deviates (and covariate rows, resampled from the
    cohort) are used for both arms (common random numbers), so the Monte-Carlo
    error of an arm contrast is small.
    """
    from toolkit.simulate import cart_auc as auc_np

    mu = _draws(posterior, "mu_kinetic")
    omega = _draws(posterior, "omega_kinetic")
    delta = arm_effects_full(posterior)
    rng = np.random.default_rng(random_seed)
    z = rng.standard_normal((mu.shape[0], n_new, len(KINETIC_PARAMETERS)))
    base = mu[:, None, :] + omega[:, None, :] * z
    if inputs.covariates:
        rows = rng.integers(0, inputs.n_patients, size=(mu.shape[0], n_new))
        gamma = _draws(posterior, "covariate_effect")
        base = base + np.einsum("dnc,dck->dnk", inputs.x_std[rows], gamma)
    out = np.empty((mu.shape[0], 2, n_new))
    for a in (0, 1):
        p = natural_parameters_np(base + a * delta[:, None, :])
        out[:, a, :] = np.log(auc_np(t_end, **p))
    return out


def prior_predictive_typical_curves(priors: CartPriors | None = None, n: int = 1000, seed: int = 20261125, *,
                                    days=None, effects_on=KINETIC_PARAMETERS) -> dict[str, np.ndarray]:
    """Typical-patient curves (population medians) of each arm under the prior, in numpy.

    Returns ``{"day": (m,), "curve": (n, 2, m) copies/ug, and per arm typical
    parameters "cmax", "tmax", "foldx", "alpha", "beta", "fb", "auc_0_28": (n, 2)}``;
    arm 0 = control, 1 = experimental. ``days`` defaults to 0-365 by 0.25 day.
    """
    from toolkit.simulate import cart_auc as auc_np
    from toolkit.simulate import cart_curve

    priors = priors or CartPriors()
    effects = check_effects_on(effects_on)
    rng = np.random.default_rng(seed)
    grid = np.arange(0.0, 365.01, 0.25) if days is None else np.asarray(days, dtype=float)
    m = priors.mu()
    mu = m[:, 0] + m[:, 1] * rng.standard_normal((n, len(KINETIC_PARAMETERS)))
    delta = np.zeros((n, len(KINETIC_PARAMETERS)))
    if effects:
        e = priors.effect(effects)
        idx = [KINETIC_PARAMETERS.index(k) for k in effects]
        delta[:, idx] = e[:, 0] + e[:, 1] * rng.standard_normal((n, len(effects)))
    theta = np.stack([mu, mu + delta], axis=1)  # (n, arm, 6)
    p = natural_parameters_np(theta)
    curve = cart_curve(grid[None, None, :], *(p[k][..., None] for k in ("cmax", "tmax", "foldx", "alpha", "beta", "fb")))
    out = {"day": grid, "curve": curve, **p}
    out["auc_0_28"] = auc_np(AUC_HORIZON_DAYS, **p)
    return out
