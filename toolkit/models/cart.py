r"""CAR-T cellular kinetics: hierarchical Stein 2019 piecewise model, closed form (no ODE).

Time t is days since CAR-T infusion; C is the transgene level (copies/ug
genomic DNA, or the cohort's unit). Patient p has arm a_p (1 = experimental)
and standardized covariates x_p.

Curve (Stein et al. 2019 [1], Fig. 2, with a rounded peak; the same as ``toolkit.models.kinetics.cart_curve``)::

    C(t) = Cmax e^{-rho u(d)},                                    t <  Tmax,  rho = ln(foldx)/u(Tmax)
    C(t) = Cmax [(1-FB) e^{-alpha u(d)} + FB e^{-beta u(d)}],      t >= Tmax
    u(d) = h log cosh(d/h),  d = t - Tmax,  h = PEAK_ROUNDING_DAYS = 2

computed on the log scale (contraction with ``logaddexp``), chosen with ``pt.switch(t < Tmax, ...)``.
The peak clock u is d^2/(2h) near the peak and |d| - h log 2 beyond; h -> 0 is Stein's piecewise curve.
(Tmax, Cmax) is the curve's maximum, C(0) = Cmax/foldx, and the slope is continuous (0 at Tmax), so the
log density is differentiable in Tmax (model 1.1.0; why, and how it differs from Stein's curve:
docs/priors.md#cart-rounded-peak). AUC0-T: Gauss-Legendre quadrature on each phase in the graph
(``cart_auc``, ``toolkit.models.kinetics.quadrature_auc``), an incomplete-beta closed form in numpy (``toolkit.models.kinetics.cart_auc``); they agree to 1e-10
on typical patients (tests/test_cart.py), and the quadrature is the less accurate at extreme rates.

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
**by construction**. Why this parameterisation: Stein's model puts the
between-patient normal on log beta, so the model does too
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

Hierarchy::

    theta_pj = mu_j + a_p delta_j + x_p . gamma_j + omega_j z_pj,   z_pj ~ Normal(0, 1)

delta_j exists only for the parameters in ``effects_on`` (default: all six;
for ``persistence`` it is the log ratio of typical persistence half-lives,
experimental / control); the others have no arm difference. gamma
(``covariate_effect``, per SD of each standardized covariate) acts on all six.
The unconstrained patient parameters are the deterministic ``theta_patient``
(patient, kinetic).

Likelihood (Beal 2001 M3 [3]): log y_s ~ Normal(log C_p(t_s), sigma) for a
quantified sample; a sample below the LLOQ contributes
log Phi((log LLOQ_s - log C_p(t_s))/sigma) at **its own row's** LLOQ. Nothing is
dropped or imputed; a patient whose samples are all below the LLOQ stays in.
The term is a ``CustomDist`` that is pointwise per sample (``log_level``, dim
``sample``), so ``pm.compute_log_likelihood`` and PSIS-LOO work. (``pm.Censored``
would treat a quantified value exactly equal to the LLOQ as censored; the
explicit censored-row index does not.)

Random-effect SDs: omega, not omega^2
    Stein's Table 1 "random effect" column (foldx 2.4, Tmax 0.38, Cmax 0.65,
    alpha 0.91, FB 0.8, beta 0.86) is read as the log-scale **SD** omega.
    Stein fitted in Monolix, which reports omega (the SD) by default.
    nlmixr2lib reads it as omega^2, which would give SDs of 0.6-1.5 instead
    of 0.38-2.4; the question is not settled against the paper's text
    (docs/priors.md#cart-omega-reading). The omega priors have their medians at
    Stein's values with log-SD 0.5 (95 % within x/÷ 2.7), so the data can move
    the well-informed ones either way.

Priors (``CartPriors``; Normal(mu, sd) unless stated). Each default prior's source, population
and derivation is in ``docs/priors.md`` (anchors ``#cart-<field>``, e.g. ``#cart-mu-cmax``).

===================================  ================================  ========================================
parameter                            prior                             source / reasoning
===================================  ================================  ========================================
mu[cmax]   (log Cmax)                Normal(log 24000, 0.5)            Stein Table 1, 24,000 copies/ug (RSE 20 %);
                                                                       widened for another product/population.
                                                                       Per unit (``CartPriors.for_unit``;
                                                                       ``toolkit.data.units``): cells/uL (flow)
                                                                       Normal(log 30, 1.0), Kimmel 2021
mu[tmax]   (log Tmax)                Normal(log 9.3, 0.3)              Stein 9.3 d (RSE 4 %); label 10-20 d
mu[foldx]  (log foldx)               Normal(log 3900, 0.7)             Stein 3,900 (RSE 30 %)
mu[alpha]  (log(alpha - beta))       Normal(log 0.1568, 0.5)           Stein alpha 0.16/d - beta 0.0032/d
mu[fb]     (logit FB)                Normal(logit 0.0079, 0.5)         Stein 0.0079 (RSE 15 %)
mu[persistence] (log half-life)      Normal(log 216.6, 0.5)            Stein beta 0.0032/d (RSE 23 %); ~220 d,
                                                                       an extrapolation beyond 1 y of data
omega[cmax, tmax]                    LogNormal(log omega_Stein, 0.5)   Stein omega (as SD) 0.65, 0.38
omega[alpha]                         LogNormal(log 0.91, 0.25)         Stein 0.91 (SE of log omega ~0.09); 0.5
                                                                       put 16 % on omega > 1.49, where fits
                                                                       failed (model 1.2.0)
omega[foldx]                         LogNormal(log 1.0, 0.5)           no source; Stein 2.4 at the 96th pct
omega[fb, persistence]               LogNormal(log omega_Stein, 0.25)  Stein 0.8, 0.86; shrinkage 0.53, 0.82:
                                                                       the data cannot estimate these spreads
                                                                       (see "Sampling" below)
delta[cmax]                          Normal(0, 0.4)                    Mueller 2018: responder gap 0.55
delta[persistence] (log t1/2 ratio)  Normal(0, 0.5)                    no source; null-centred
delta[fb]                            Normal(0, 0.5)                    no source; as persistence
delta[tmax]                          Normal(0, 0.3)                    like omega_Tmax 0.38: 35 % at 1 SD
delta[foldx], delta[alpha]           Normal(0, 0.5)                    as persistence: 1.65-fold at 1 SD
gamma (per SD of a covariate)        Normal(0, 0.3)                    Stein: no covariate effect on Cmax
sigma (log-scale residual SD)        LogNormal(log 0.56, 0.2)          Stein a = 0.56 (RSE 3.3 %)
===================================  ================================  ========================================

``CartPriors(omega_family="halfnormal")`` gives HalfNormal omega priors with
the same medians (scale = median / 0.674).

*foldx note:* the median 1.0 has no literature source. Stein's omega for
foldx (2.4) only shapes the start R0 = Cmax/foldx, which his data did not
observe; an SD of 2.4 spreads day-1 levels over a factor of about 2,700
between the 5th and 95th patient percentiles (docs/priors.md#cart-omega-foldx).

Sampling (what was needed for a clean fit; see ``benchmarks/bench_cart.py``)

- **Between-patient SD priors for FB and persistence.** With HalfNormal
  priors (median at Stein's omega) the bulk ESS of omega[persistence] was
  200-340 per 4000 draws (R-hat up to 1.03): patients whose level falls below
  the LLOQ soon after the peak are explained either by a small FB or by a
  short persistence half-life, and omega[fb] and omega[persistence] trade
  off (posterior correlation -0.5). Longer warm-up, a low-rank mass matrix
  and tighter HalfNormal scales did not help; LogNormal(log omega_Stein, 0.25)
  (the data cannot estimate these spreads, Stein's shrinkage says) did.
- **Partial centering** (``centering="auto"``): a patient's log Cmax and log
  Tmax are sampled centered when the peak is bracketed by samples and there
  are >= 3 quantified values, and log(alpha - beta) when >= 2 quantified
  values follow the peak; everything else is non-centered (z). Well-informed
  parameters in non-centered form couple all z's to mu and omega (step size
  0.06, 130 leapfrog steps per draw); partial centering halves the steps.
  ``centering="noncentered"`` samples every patient parameter non-centered.
  One free variable ``theta_raw`` (patient, kinetic) holds both kinds::

      theta_raw ~ Normal(c k loc, k omega^c),   theta = theta_raw / k (c = 1) or loc + omega theta_raw / k (c = 0)

  (k = 5 or 2 damps the samplers' start jitter; see "Starting values"; :func:`toolkit.models.centring.mask_centred`,
  shared with the MRD model) with the mask c a data container (``centered``), so a model compiled once and given another cohort's
  data (``toolkit calibrate``) uses the mask that cohort's data warrant (model 1.1.1; before, a calibration
  study kept its design cohort's mask for every simulated cohort).
- **Starting values.** The likelihood of a patient's peak position is
  multimodal (e.g. a peak at day 21 vs an early peak, a contraction of hours
  and a plateau explaining the rise as noise); chains started at the typical
  curve settled some late-peaking patients in such a local mode (R-hat 1.5).
  Each patient now starts at data-informed values (:func:`initial_patient_theta`:
  highest level, the first day within 1 log unit of it, and the expansion
  through the last sample before it), and the start jitter samplers add
  (U(-1, 1) on the unconstrained scale) is damped: mu and delta are sampled on
  the prior-standardized scale (``mu_kinetic_std``, ``arm_effect_std``), the
  positive scales with a log transform scaled by 5 (:class:`DampedLogTransform`),
  centered patient parameters are sampled as 5 theta and the z's as 2 z
  (``theta_raw``, ``RAW_SCALE_*``). The model is unchanged; only the sampler's
  coordinates are. In 20 simulated cohorts this still left 1-2 fits with a
  chain in a local mode before the foldx/Tmax start was added; see the
  report of ``tests/test_cart_recovery.py``. A patient whose profile is flat
  after the peak can also be genuinely bimodal (slow contraction and small FB
  vs fast contraction and large FB); R-hat flags it.
- **Step size.** At ``target_accept=0.9`` a run had 0-3 divergences, and
  some 18-41 (the same seed gives different counts after tiny floating-point
  differences, e.g. a cold vs a warm compile), always at patients like the
  example's P029/P044 whose level falls below the LLOQ soon after the peak.
  ``RECOMMENDED_TARGET_ACCEPT = 0.95`` removed them in every run made, at
  about twice the leapfrog steps (65 -> 127 per draw).
- **What set the step size before 1.1.0: the kink at Tmax.** On Stein's
  piecewise curve the log density is not differentiable in Tmax: the slope
  jumps from ln(foldx)/Tmax (about 0.9/day) to about -alpha as Tmax crosses
  one of the patient's sample days. The leapfrog integrator's energy error at
  such a crossing, not the posterior's scales or correlations, set the step
  size (0.054 at 60 patients, 127 steps per draw). Evidence
  (``benchmarks/step_size.py``; ``benchmarks/README.md``): sampling the
  population medians at the cohort-average location and each patient's
  log Cmax + logit FB raised the smallest scaled posterior variance (2.8-fold
  on the script's wrong scale of then, benchmarks/README.md "Scales") and left
  steps and step size unchanged; a draw-based mass matrix did not
  help either; blending the two phases over about half a day doubled the step
  size and halved the steps (at 600 patients: 0.019 -> 0.069, 337 -> 113
  steps). A reparameterisation cannot remove a kink, so version 1.1.0 rounds
  the peak (module docstring, "Curve"; docs/priors.md#cart-rounded-peak): on
  the example cohort at target_accept 0.95, 64 steps per draw, step size 0.10.
- **Convergence on prior-drawn cohorts** (the calibration study at the
  primary spec's settings, docs/calibration.md "CAR-T model 1.1.0 at the spec's
  settings"): with the kinked curve 6 of 32 fits failed the verdict even after
  two reruns (``extend_sampling = 2``), all 3 whose between-patient SD of log
  Tmax was drawn at or above 0.8 among them; with the rounded peak 3 of the
  same 32, and 21 of 200 (12 on divergences alone), all 36 quantities calibrated.
  Those failures sat at large omega_alpha; with its prior's log-SD 0.25 (model
  1.2.0, "CAR-T model 1.2.0") 14 of 200 fail (7.0%): 13 with 1-16 divergences
  in a third run, one on chains in different modes (a late expander whose
  samples end before the peak); ``tmax_days_experimental`` fails calibration
  at 200, by a chance arrangement of the prior draws that an oracle without any fit
  shows too (docs/calibration.md "Why tmax_days_experimental failed"). Centring persistence where late samples
  spread widely (tried as 1.2.1, withdrawn) did not reduce them; a fourth run
  at a higher target_accept (the spec's ``extend_sampling = 3``, rerun policy
  "what-failed") converged 5 of the 9 divergence-only failures, but a study
  with it fails as often (10 of 167): single patients whose data two curves
  explain about equally (a slow single decline, or a fast contraction to a
  plateau), which NUTS crosses between rarely, and single divergences.
  Since 6 December 2026 the spec samples at target_accept 0.975 with a fifth
  run (``extend_sampling = 4``, policy "continue"): the joint model, whose
  adapted step is smaller on the same data, diverged in 2 of 100 first runs
  against 32 of 200; rerun so, 5 of the study's 10 failures converge
  (docs/calibration.md "A smaller step and a fifth run").
- **Speed.** The curve is evaluated on a (patient, visit) grid and samples
  are picked by one gather, and the log-CDF only on censored rows: about half
  the cost per gradient of gathering six parameters per sample.

Named deterministics (dim ``arm`` = control, experimental; the typical patient
= every parameter at its population median, covariates at the cohort mean):
``cmax_copies_per_ug``, ``tmax_days``, ``auc_0_28`` (copies/ug x day),
``half_life_contraction_days`` (ln2/alpha), ``half_life_persistence_days``
(ln2/beta), ``persistence_fraction`` (FB). Per patient (dim ``patient``):
``patient_cmax``, ``patient_auc_0_28``; ``patient_time_above_lloq_days`` is
computed from the draws by :func:`patient_time_above_lloq` (bisection, as
``toolkit.models.kinetics.time_below``).

Required columns: ``cart_kinetics.csv`` patient_id, day, value (BLQ/<x for
censored), lloq, unit; ``patients.csv`` arm (and any covariates).

References
----------
1. Stein AM et al. Tisagenlecleucel model-based cellular kinetic analysis of CAR-T cells.
   CPT Pharmacometrics Syst Pharmacol 2019;8(5):285-295. doi:10.1002/psp4.12388 (Table 1).
2. Mueller KT et al. Clinical pharmacology of tisagenlecleucel in B-cell ALL. Clin Cancer Res 2018;24:6175.
3. Beal SL. Ways to fit a PK model with some data below the quantification limit.
   J Pharmacokinet Pharmacodyn 2001;28(5):481-504.
4. docs/priors.md: every default prior, its source and derivation (further references there).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pymc.distributions.dist_math import normal_lcdf
from pymc.logprob.transforms import Transform

from toolkit.data.inputs import CartInputs
from toolkit.models.centring import mask_centred
from toolkit.models.kinetics import cart_auc as auc_np
from toolkit.models import kinetics
from toolkit.models.kinetics import cart_curve, time_below

MODEL_NAME = "cart"
MODEL_VERSION = "1.2.0"  # 1.1.0: rounded peak (kinetics.peak_clock); 1.1.1: centring mask as data (theta_raw);
# 1.2.0: omega_alpha prior log-SD 0.5 -> 0.25 (docs/priors.md#cart-omega-alpha). A 1.2.1 that centred persistence
# where late samples spread over 204 days was tried and withdrawn: no fewer unconverged fits on the same cohorts,
# and it centred slow contractors whose late samples are still contraction (docs/calibration.md, "CAR-T model 1.2.1")
KINETIC_PARAMETERS = ("cmax", "tmax", "foldx", "alpha", "fb", "persistence")
ARMS = ("control", "experimental")
OMEGA_FAMILIES = ("lognormal", "halfnormal")
CENTERINGS = ("auto", "noncentered")
HALFNORMAL_MEDIAN = 0.6744897501960817  # median of HalfNormal(1)
LN2 = math.log(2.0)
AUC_HORIZON_DAYS = 28.0
# NUTS target acceptance to fit this model with: at 0.9 some runs on the 60-patient example had 3-41
# divergences (all at patients whose level drops below the LLOQ soon after the peak, where a small FB and
# a short persistence half-life trade off); at 0.95, none in the runs made (benchmarks/bench_cart.py)
RECOMMENDED_TARGET_ACCEPT = 0.95
# k of the sampled coordinate theta_raw = k theta (centred entries) or k z (non-centred ones): the samplers'
# U(-1, 1) start jitter moves theta by +-1/5 or z by +-1/2
RAW_SCALE_CENTERED = 5.0
RAW_SCALE_NONCENTERED = 2.0
# latest start of a patient's Tmax (initial_patient_theta): the data's peak, however late, within a year
START_TMAX_MAX_DAYS = 365.0

def _logit(p: float) -> float:
    return float(math.log(p / (1 - p)))


@dataclass(frozen=True)
class CartPriors:
    """Priors of the CAR-T kinetic model in one place; see the module docstring table for sources.

    ``mu_*``, ``effect_*`` and ``covariate_effect`` are Normal (mu, sd) pairs on the
    unconstrained scale; ``omega_*`` are (median, log-sd) pairs of LogNormal priors (or the
    median of a HalfNormal with ``omega_family="halfnormal"``); ``sigma`` is LogNormal (mu, sd).
    """

    mu_cmax: tuple[float, float] = (math.log(24_000.0), 0.5)  # Stein Table 1, Cmax 24,000; docs/priors.md#cart-mu-cmax
    mu_tmax: tuple[float, float] = (math.log(9.3), 0.3)  # Stein Table 1, Tmax 9.3 d; docs/priors.md#cart-mu-tmax
    mu_foldx: tuple[float, float] = (math.log(3_900.0), 0.7)  # Stein Table 1, foldx 3,900; docs/priors.md#cart-mu-foldx
    mu_alpha: tuple[float, float] = (math.log(0.16 - 0.0032), 0.5)  # Stein; docs/priors.md#cart-mu-alpha
    mu_fb: tuple[float, float] = (_logit(0.0079), 0.5)  # Stein Table 1, FB 0.0079; docs/priors.md#cart-mu-fb
    mu_persistence: tuple[float, float] = (math.log(LN2 / 0.0032), 0.5)  # Stein; docs/priors.md#cart-mu-persistence
    # between-patient SDs: LogNormal(log median, log-sd); median = Stein Table 1 omega read as SD
    omega_cmax: tuple[float, float] = (0.65, 0.5)  # Stein omega 0.65; docs/priors.md#cart-omega-cmax
    omega_tmax: tuple[float, float] = (0.38, 0.5)  # Stein omega 0.38; docs/priors.md#cart-omega-tmax
    omega_foldx: tuple[float, float] = (1.0, 0.5)  # no source (Stein 2.4); docs/priors.md#cart-omega-foldx
    omega_alpha: tuple[float, float] = (0.91, 0.25)  # Stein 0.91 (SE ~0.09 on log); docs/priors.md#cart-omega-alpha
    omega_fb: tuple[float, float] = (0.8, 0.25)  # Stein omega 0.8, shrinkage 0.53; docs/priors.md#cart-omega-fb
    omega_persistence: tuple[float, float] = (0.86, 0.25)  # Stein 0.86 on beta; docs/priors.md#cart-omega-persistence
    omega_family: str = "lognormal"  # or "halfnormal" (same medians); docs/priors.md#cart-omega-family
    effect_cmax: tuple[float, float] = (0.0, 0.4)  # Mueller 2018 gap sets scale; docs/priors.md#cart-effect-cmax
    effect_tmax: tuple[float, float] = (0.0, 0.3)  # below omega_Tmax 0.38; docs/priors.md#cart-effect-tmax
    effect_foldx: tuple[float, float] = (0.0, 0.5)  # weakly informative; docs/priors.md#cart-effect-foldx
    effect_alpha: tuple[float, float] = (0.0, 0.5)  # weakly informative; docs/priors.md#cart-effect-alpha
    effect_fb: tuple[float, float] = (0.0, 0.5)  # weakly informative; docs/priors.md#cart-effect-fb
    effect_persistence: tuple[float, float] = (0.0, 0.5)  # weakly informative; docs/priors.md#cart-effect-persistence
    covariate_effect: tuple[float, float] = (0.0, 0.3)  # Stein: no covariates; docs/priors.md#cart-covariate-effect
    sigma: tuple[float, float] = (math.log(0.56), 0.2)  # Stein residual a = 0.56; docs/priors.md#cart-sigma

    @classmethod
    def for_unit(cls, unit: str) -> CartPriors:
        """The default priors with ``mu_cmax`` centred on the typical peak level in ``unit`` (a name or
        spelling of ``toolkit.data.units.CART_UNITS``; each centre's source is given there). Every other
        parameter is a shape of the curve, the same in any unit. An unknown unit raises ValueError naming
        the supported ones."""
        from toolkit.data.units import find_cart_unit, unknown_unit_fix

        found = find_cart_unit(unit)
        if found is None:
            raise ValueError(f"unknown CAR-T unit {unit!r}: {unknown_unit_fix()}")
        return cls(mu_cmax=tuple(float(v) for v in found.log_cmax_prior))

    def mu(self) -> np.ndarray:
        return np.array([getattr(self, f"mu_{k}") for k in KINETIC_PARAMETERS], dtype=float)

    def omega(self) -> np.ndarray:
        """(6, 2) array of (median, log-sd) of the between-patient SDs."""
        return np.array([getattr(self, f"omega_{k}") for k in KINETIC_PARAMETERS], dtype=float)

    def effect(self, names=KINETIC_PARAMETERS) -> np.ndarray:
        return np.array([getattr(self, f"effect_{k}") for k in names], dtype=float).reshape(-1, 2)

    def with_overrides(self, overrides: dict) -> CartPriors:
        valid = set(asdict(self))
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(f"unknown prior(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
        values = {k: (str(v) if k == "omega_family" else (float(v[0]), float(v[1]))) for k, v in overrides.items()}
        return replace(self, **values)

    def __post_init__(self) -> None:
        if self.omega_family not in OMEGA_FAMILIES:
            raise ValueError(f"unknown omega_family {self.omega_family!r}; valid: {', '.join(OMEGA_FAMILIES)}")

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


def log_cart_curve(t, log_cmax, tmax, log_foldx, alpha, beta, logit_fb, *, h: float | None = None):
    """log C(t) of the rounded-peak Stein curve in pytensor: ``toolkit.models.kinetics.log_cart_curve``."""
    return kinetics.log_cart_curve(t, log_cmax, tmax, log_foldx, alpha, beta, logit_fb, h=h, lib=pt)


def cart_auc(t_end, log_cmax, tmax, log_foldx, alpha, beta, logit_fb, *, h: float | None = None):
    """AUC of the curve from 0 to ``t_end`` in pytensor: ``toolkit.models.kinetics.quadrature_auc``."""
    return kinetics.quadrature_auc(t_end, log_cmax, tmax, log_foldx, alpha, beta, logit_fb, h=h, lib=pt)


def _censored_normal_logp(value, mu, sigma, censored_rows, log_lloq):
    """Beal M3, pointwise: Normal log-density of a quantified sample; log Phi((log LLOQ - mu)/sigma) of a
    censored one (rows ``censored_rows``). The log-CDF is evaluated on the censored rows only."""
    z = (value - mu) / sigma
    density = -0.5 * pt.sqr(z) - pt.log(sigma) - 0.5 * math.log(2 * math.pi)
    return pt.set_subtensor(density[censored_rows],
                            normal_lcdf(mu[censored_rows], sigma, log_lloq[censored_rows]))


# --------------------------------------------------------------------------- model


class DampedLogTransform(Transform):
    """Log transform scaled by ``k``: u = k log(x). Same model, different sampler coordinates.

    Samplers start each chain at the initial point plus U(-1, 1) jitter on the
    unconstrained scale (nutpie and PyMC do this for every free variable). On
    the plain log scale that multiplies a between-patient SD by up to e (2.7),
    which, multiplied into the data-informed patient starts, threw patients with
    late peaks into local modes (peak before the first positive sample, a
    contraction of hours) that a chain never left. With k = 5 the jitter moves
    the SD by at most e^0.2. The mass matrix adapts to any scale, so sampling
    efficiency is unchanged.
    """

    name = "logdamped"  # no underscore: PyMC strips "_<name>__" by splitting on "_"
    ndim_supp = 0

    def __init__(self, k: float = 5.0):
        self.k = float(k)

    def forward(self, value, *inputs):
        return self.k * pt.log(value)

    def backward(self, value, *inputs):
        return pt.exp(value / self.k)

    def log_jac_det(self, value, *inputs):
        return value / self.k - math.log(self.k)


def centering_mask(inputs: CartInputs) -> np.ndarray:
    """(patient, 6) True where a patient's parameter is sampled centered (data inform it well).

    cmax, tmax: at least 3 quantified samples and the highest one has a sample on each side (the peak is
    bracketed); alpha: at least 2 quantified samples after the highest one. Everything else (foldx, fb,
    persistence, and the parameters of sparsely sampled patients) is non-centered.
    """
    mask = np.zeros((inputs.n_patients, len(KINETIC_PARAMETERS)), dtype=bool)
    for i in range(inputs.n_patients):
        rows = np.flatnonzero(inputs.sample_patient == i)
        q = rows[inputs.censored[rows] == 0]
        if q.size == 0:
            continue
        peak_day = inputs.day[q[np.argmax(inputs.log_value[q])]]
        days = inputs.day[rows]
        bracketed = (days < peak_day).any() and (days > peak_day).any()
        if q.size >= 3 and bracketed:
            mask[i, 0] = mask[i, 1] = True
        if (inputs.day[q] > peak_day).sum() >= 2:
            mask[i, 3] = True
    return mask


def initial_patient_theta(inputs: CartInputs, priors: CartPriors) -> np.ndarray:
    """Data-informed starting values (patient, 6).

    log Cmax: the patient's highest quantified level. Tmax: the first day whose level is within 1 (natural
    log unit) of that maximum, clipped to 4-365 days (a slow rise to a late maximum starts at the beginning
    of the plateau, not at its end; until December 2026 the clip was 28 days, and a late expander whose level
    rose to day 118 started at day 28 left one chain of four in an early-peak mode, R-hat 1.53, in a
    calibration study: docs/calibration.md, "A narrower prior on ω_α, on the same prior draws"). log foldx: the
    expansion line through the last quantified sample before Tmax (clipped to 10-10^6). Everything else, and
    every parameter of a patient with no quantified sample, at the prior medians. Starting each patient at the
    typical curve (or at a late Tmax with a typical foldx, which misfits the rise by several log units) made
    the first gradient steps throw some patients into an early-peak local mode: a peak before the first
    positive sample, a contraction of hours and a plateau explaining the rise as noise, which a chain never
    left.
    """
    theta0 = np.tile(priors.mu()[:, 0], (inputs.n_patients, 1))
    for i in range(inputs.n_patients):
        rows = np.flatnonzero((inputs.sample_patient == i) & (inputs.censored == 0))
        if rows.size == 0:
            continue
        values, days = inputs.log_value[rows], inputs.day[rows]
        log_cmax = float(values.max())
        tmax = float(np.clip(days[np.flatnonzero(values >= log_cmax - 1.0)[0]], 4.0, START_TMAX_MAX_DAYS))
        theta0[i, 0] = log_cmax
        theta0[i, 1] = math.log(tmax)
        before = np.flatnonzero((days < tmax) & (days > 0))
        if before.size:
            j = before[-1]
            log_foldx = (log_cmax - values[j]) / (1.0 - days[j] / tmax)
            theta0[i, 2] = float(np.clip(log_foldx, math.log(10.0), math.log(1e6)))
    return theta0


def initial_raw(inputs: CartInputs, priors: CartPriors, mask: np.ndarray) -> np.ndarray:
    """Start of ``theta_raw`` (patient, 6): :func:`initial_patient_theta` where an entry is centred, its z
    (theta0 - mu) / omega0 where not (omega0: the omega prior's mean; a HalfNormal's scale)."""
    theta0 = initial_patient_theta(inputs, priors)
    omega = priors.omega()
    omega0 = (omega[:, 0] * np.exp(0.5 * omega[:, 1] ** 2) if priors.omega_family == "lognormal"
              else omega[:, 0] / HALFNORMAL_MEDIAN)
    return np.where(mask, theta0, (theta0 - priors.mu()[:, 0]) / omega0)


def sampler_start(inputs: CartInputs, priors: CartPriors, mask: np.ndarray | None = None) -> np.ndarray:
    """Start of the free variable ``theta_raw`` (patient, 6) for ``inputs`` and a centring ``mask`` (default:
    :func:`centering_mask` of inputs): k :func:`initial_raw`, k = ``RAW_SCALE_CENTERED`` or
    ``RAW_SCALE_NONCENTERED``. What :func:`build_cart_model` starts from, so a compiled model given other data
    starts where a model built from them would."""
    mask = centering_mask(inputs) if mask is None else np.asarray(mask, bool)
    return np.where(mask, RAW_SCALE_CENTERED, RAW_SCALE_NONCENTERED) * initial_raw(inputs, priors, mask)


def _padded_layout(inputs: CartInputs) -> tuple[np.ndarray, np.ndarray]:
    """Days as a (patient, visit) grid (0 where a patient has fewer samples) and each sample's flat
    position in it. Evaluating the curve on the grid and picking samples with one gather is about twice
    as fast as gathering six patient parameters per sample."""
    counts = np.bincount(inputs.sample_patient, minlength=inputs.n_patients)
    width = max(int(counts.max()), 1)
    visit = np.zeros(inputs.n_samples, dtype=np.int64)
    for i in range(inputs.n_patients):
        rows = np.flatnonzero(inputs.sample_patient == i)
        visit[rows] = np.arange(rows.size)
    grid = np.zeros((inputs.n_patients, width))
    grid[inputs.sample_patient, visit] = inputs.day
    return grid, inputs.sample_patient.astype(np.int64) * width + visit


def build_cart_model(inputs: CartInputs, priors: CartPriors | None = None, *,
                     effects_on=KINETIC_PARAMETERS, centering: str = "auto") -> pm.Model:
    """The PyMC model for ``inputs`` (see the module docstring for equations and priors).

    Parameters
    ----------
    inputs : CartInputs
        From :func:`toolkit.data.inputs.to_cart_inputs`.
    priors : CartPriors, optional
        Defaults to ``CartPriors()``.
    effects_on : sequence of str
        Kinetic parameters that get an arm effect (default all of ``KINETIC_PARAMETERS``);
        an unknown name raises ValueError listing the valid ones.

    Returns
    -------
    pm.Model
        Coords ``patient``, ``sample``, ``arm``, ``covariate``, ``kinetic``, ``effect``, ``visit``.
        Free variables: ``mu_kinetic_std`` (prior-standardized ``mu_kinetic``), ``omega_kinetic``,
        ``theta_raw`` (patient, kinetic: k theta where the ``centered`` data is 1, k z where it is 0),
        ``arm_effect_std`` (-> ``arm_effect``, dim ``effect``),
        ``covariate_effect`` (covariate, kinetic; with covariates), ``sigma_log``. Observed:
        ``log_level`` (dim ``sample``), pointwise.
    """
    effects = check_effects_on(effects_on)
    if centering not in CENTERINGS:
        raise ValueError(f"unknown centering {centering!r}; valid: {', '.join(CENTERINGS)}")
    priors = priors or CartPriors()
    grid, flat_index = _padded_layout(inputs)
    coords = {"patient": inputs.patient_ids, "sample": np.arange(inputs.n_samples), "arm": list(ARMS),
              "covariate": inputs.covariates, "kinetic": list(KINETIC_PARAMETERS), "effect": list(effects),
              "visit": np.arange(grid.shape[1])}
    mu_prior = priors.mu()
    omega_prior = priors.omega()
    with pm.Model(coords=coords) as model:
        pm.Data("day", inputs.day, dims="sample")
        pm.Data("patient_index", inputs.sample_patient, dims="sample")
        pm.Data("censored", inputs.censored.astype("int8"), dims="sample")
        log_lloq = pm.Data("log_lloq", inputs.log_lloq, dims="sample")
        experimental = pm.Data("experimental", inputs.arm.astype(float), dims="patient")
        day_grid = pm.Data("day_grid", grid, dims=("patient", "visit"))
        sample_position = pm.Data("sample_position", flat_index, dims="sample")
        censored_rows = pm.Data("censored_rows", np.flatnonzero(inputs.censored).astype(np.int64))

        # population medians and arm effects on the prior-standardized scale, so a sampler's U(-1, 1)
        # start jitter moves them by at most one prior SD
        mu_std = pm.Normal("mu_kinetic_std", 0.0, 1.0, dims="kinetic")
        mu = pm.Deterministic("mu_kinetic", mu_prior[:, 0] + mu_prior[:, 1] * mu_std, dims="kinetic")
        if priors.omega_family == "lognormal":
            omega = pm.LogNormal("omega_kinetic", mu=np.log(omega_prior[:, 0]), sigma=omega_prior[:, 1],
                                 dims="kinetic", default_transform=DampedLogTransform())
        else:
            omega = pm.HalfNormal("omega_kinetic", sigma=omega_prior[:, 0] / HALFNORMAL_MEDIAN, dims="kinetic",
                                  default_transform=DampedLogTransform())
        sigma = pm.LogNormal("sigma_log", mu=priors.sigma[0], sigma=priors.sigma[1],
                             default_transform=DampedLogTransform())

        delta = pt.zeros(len(KINETIC_PARAMETERS))
        if effects:
            eff_prior = priors.effect(effects)
            eff_std = pm.Normal("arm_effect_std", 0.0, 1.0, dims="effect")
            arm_effect = pm.Deterministic("arm_effect", eff_prior[:, 0] + eff_prior[:, 1] * eff_std, dims="effect")
            delta = pt.set_subtensor(delta[[KINETIC_PARAMETERS.index(k) for k in effects]], arm_effect)
        loc = mu + experimental[:, None] * delta
        if inputs.covariates:
            x = pm.Data("x_std", inputs.x_std, dims=("patient", "covariate"))
            gamma = pm.Normal("covariate_effect", mu=priors.covariate_effect[0], sigma=priors.covariate_effect[1],
                              dims=("covariate", "kinetic"))
            loc = loc + pt.dot(x, gamma)
        mask = centering_mask(inputs) if centering == "auto" else np.zeros((inputs.n_patients, 6), dtype=bool)
        # which entries are centred is data (pm.Data), so a compiled model swaps it with the observations
        # (a calibration study fits each simulated cohort with the mask its own data warrant)
        centered = pm.Data("centered", mask.astype(float), dims=("patient", "kinetic"))
        # theta_raw = k theta (centred) or k z (non-centred), RAW_SCALE_*: damped start jitter
        values = mask_centred("theta_raw", loc, omega, centered, scale_centred=RAW_SCALE_CENTERED,
                              scale_noncentred=RAW_SCALE_NONCENTERED, start=sampler_start(inputs, priors, mask),
                              dims=("patient", "kinetic"))
        theta = pm.Deterministic("theta_patient", values, dims=("patient", "kinetic"))

        patient = natural_parameters(theta)
        on_grid = log_cart_curve(day_grid, *(patient[k][:, None] for k in _CURVE_ARGS))
        log_c = on_grid.ravel()[sample_position]
        pm.CustomDist("log_level", log_c, sigma, censored_rows, log_lloq, logp=_censored_normal_logp,
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
        pm.Deterministic("patient_cmax", pt.exp(patient["log_cmax"]), dims="patient")
        pm.Deterministic("patient_auc_0_28", cart_auc(AUC_HORIZON_DAYS, **patient), dims="patient")
    return model


_CURVE_ARGS = ("log_cmax", "tmax", "log_foldx", "alpha", "beta", "logit_fb")


# --------------------------------------------------------------------------- numpy twins (posterior, prior checks)


def natural_parameters_np(theta: np.ndarray) -> dict[str, np.ndarray]:
    """numpy version of :func:`natural_parameters`, in the argument names of ``toolkit.models.kinetics``."""
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


def patient_theta(posterior, inputs: CartInputs | None = None) -> np.ndarray:
    """(draws, patient, 6) unconstrained patient parameters (the ``theta_patient`` deterministic)."""
    return _draws(posterior, "theta_patient")


def patient_time_above_lloq(posterior, inputs: CartInputs, *, horizon_days: float = 20 * 365.0) -> np.ndarray:
    """(draws, patient) days from infusion until the patient's fitted curve falls below their LLOQ.

    Defined as ``toolkit.models.kinetics.time_below`` (the simulator's T_loss): Tmax if
    the peak never reaches the LLOQ; ``horizon_days`` (20 years) if the curve is
    still above it then. Uses each patient's usual LLOQ (``inputs.patient_lloq``).
    """
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
    args = (p[k][..., None] for k in ("cmax", "tmax", "foldx", "alpha", "beta", "fb"))
    curve = cart_curve(grid[None, None, :], *args)
    out = {"day": grid, "curve": curve, **p}
    out["auc_0_28"] = auc_np(AUC_HORIZON_DAYS, **p)
    return out
