r"""MRD kinetics after CD19 CAR-T: hierarchical log10-linear kill, floor, and regrowth (two-class mixture).

Time t is days since CAR-T infusion; m_i(t) is patient i's **true** MRD as a
log10 fraction of nucleated marrow cells (-4 = 0.01 %, -6 = 1e-6) on the scale
of the reference assay (NGS when the cohort has it, else qPCR, else flow).
Patient i is a responder (CR/CRi) with arm a_i (1 = experimental) and
standardized covariates x_i.

Trajectory (kill while CAR-T cells act, then eradication or regrowth), a sum of clones on the
linear scale, log10 m = log10 of::

    10^{D_i(t)} + 10^{F}                       sustained remission (class S)
    10^{D_i(t)} + 10^{f_i} + 10^{G_i(t)}       MRD recurrence       (class R)

    D_i(t) = B_i - k_i t                       CAR-T kill of the sensitive clone
    G_i(t) = log10(0.05) + g_i (t - R_i)       regrowing clone; reaches 5 % blasts at R_i
    R_i    = 28 + s_i,   g_i = log10(2) / Td_i

B_i is the pre-infusion burden, k_i the clearance rate, f_i the residual floor
of a patient who will recur, F = -8 (one cell in 1e8) the floor of sustained
remission, R_i the day the regrowing clone reaches 5 % blasts (morphological
relapse), s_i its latency after the day-28 response assessment and Td_i the
regrowth doubling time. The sum is a smooth version of the simulator's
``max(decline, floor, regrowth)`` (``toolkit.simulate._true_mrd``); the two
differ by log10 2 = 0.30 where two clones are equal (log10 3 if all three
are), by < 0.05 one log away from a crossing, and the smoothness keeps NUTS
free of kinks. The floor is written as a depth below the relapse level,
f_i = log10(0.05) - softplus(u_i): residual disease in CR sits below 5 %
blasts by definition, and without this bound a floor persisting at 1-5 %
explained an early relapse as well as regrowth did (a second posterior mode
that trapped chains in testing). softplus(u) = u for u >~ 2, so f_i is
Normal(log10 0.05 - mu_u, omega_u) wherever floors are plausible.

Class membership is marginalised per patient::

    p(y_i) = (1 - pi_i) prod_j p(y_ij | S) + pi_i prod_j p(y_ij | R),
    logit pi_i = c0 + c_arm a_i + x_i . gamma_rec

so the pointwise log-likelihood ``mrd`` is **per patient** (dim ``patient``),
not per assessment: PSIS-LOO with ``var_name="mrd"`` leaves one patient out.
Each patient's posterior probability of class R is computed after sampling
(``toolkit.mrd_estimands.patient_recurrence``, Rao-Blackwellised over draws).

Patient effects (z, e ~ Normal(0, 1); w ~ log Exponential(1), the standard minimum-Gumbel)::

    log k_i  = mu_k + b_k a_i + x_i . gamma_k + omega_k z_k,i       (clearance_rate_ratio = exp(b_k))
    B_i      = log10(blasts_i / 100) + sigma_B e_i                 (blasts known: anchored, anchor error sigma_B)
    B_i      = mu_B + omega_B e_i                                  (blasts blank: population prior; mu_B, omega_B
                                                                     = mean and SD of the cohort's known log10 burdens)
    u_i      ~ Normal(mu_u, omega_u),      f_i = log10(0.05) - softplus(u_i)
    log s_i  = mu_s + b_s a_i + omega_s w_i                        (s_i ~ Weibull(shape 1/omega_s, scale
                                                                     exp(mu_s + b_s a_i)); exp(b_s): ratio of
                                                                     relapse latencies, class R)
    log Td_i = mu_Td + omega_Td v_i                                (each patient's regrowth doubling time)

B is non-centered (the data barely touch it). log k, u, log s and log Td use
*varying centring* (:func:`toolkit.models.centring.mask_centred`): centred for patients whose data
pin the value (a value quantified or PNQ at the first assessment followed by
a negative whose limit lies below it -- 1 log10 below a quantified value, at
or below a PNQ's LoD -- pins the kill rate; a positive NGS/PNQ value below
1e-4, or values >= 1e-4 that stay level, pin the floor; a value >= 1e-4 that
rises 1 log10 above an earlier assessment pins the latency, two such days the
doubling time; :func:`informed_patients`), non-centered for the
rest, so neither a pinned z locked to (mu, omega) nor an unpinned funnel
slows the sampler (Papaspiliopoulos, Roberts & Skold 2007). The free
variables ``clearance_z``, ``floor_raw`` and ``relapse_raw`` therefore mix
the two meanings (as does ``doubling_raw``); read the ``patient_*``
deterministics instead. The centred latency is ``-relapse_raw`` ~
Gumbel(-(mu_s + b_s a_i), omega_s), the non-centred one ``-relapse_raw`` = w_i.

The latency is Weibull, not log-normal: relapse times after CAR-T follow a
Weibull-type hazard (the durability model's; docs/priors.md#mrd-relapse-sd), whose log has
a long left tail. Under a log-normal an early relapser (regrowth to 5 %
within weeks of day 28) sat 2.5-3 SD below the mean; that pulled
``relapse_sd`` and ``clearance_sd`` into funnels (R-hat 1.04-1.09 in
simulated cohorts) and made day-28 positivity from early regrowth too rare.

Each patient has their own regrowth doubling time (model 1.1.0), log-normal
between patients as in the simulator and in molecular relapse (Ommen 2010:
medians 11-36 days by subtype). Model 1.0 had one doubling time for all
patients; an early relapser whose MRD at day 28 (about 1e-2) rose more
slowly than the shared rate allowed could then be explained only by a
floor just below 5 % or by a kill rate far below the population's, two
tail explanations the chains split between (R-hat 1.05 on the floor SD and
the clearance hierarchy in a fresh 60-patient cohort, seed 1002). The
informative SD prior (``doubling_sd``, docs/priors.md#mrd-doubling-sd) keeps
the one ambiguity that led to the shared rate -- a long, flat, flow-positive
series read as a low floor with a 150-day doubling time -- far in the prior's
tail (log(150/17)/0.4 = 5 SD). v_i is varying-centred like the others:
centred for patients whose values rise on two or more days (their
regrowth is seen), non-centred for the rest. Model 1.2.0 counts a value as
regrowth only when it rises (1.1.0 took every value >= 1e-4): a cohort with
floors near 1e-3.3 had 40 latencies and 24 doubling times centred for 15
patients of the recurrence class, among them 10 of the sustained class, whose
doubling time the likelihood does not read -- a funnel with ``doubling_sd``
(27 divergences at 4 x 1000, all at high ``doubling_sd``; docs/calibration.md). What 1.2.0
leaves there: a recurrence-class patient with a high floor and no regrowth seen has a latency
bounded below by their level values, a wall about sigma / growth (12 days) wide in the relapse
day, and that cohort's remaining divergences cross it.

Measurement (Beal M3 at each row's own limits): y_ij = log10(reported value),
mu_ij = m_i(t_ij) + delta_method + delta_PB [specimen PB],
sigma_ij = sigma_method::

    quantified       log t_4(y | mu, sigma) = log t_4((y - mu) / sigma) - log sigma
    below the LoD    log F_4((log10 LoD - mu) / sigma)
    PNQ              log[F_4((log10 LoQ - mu)/sigma) - F_4((log10 LoD - mu)/sigma)]  (computed in the tail
                                                                                       where it is accurate)

t_4 and F_4 are the standard Student-t density and CDF with 4 degrees of freedom (model 1.4.0; Normal
before), F_4 in closed form (:func:`std_residual_lcdf`). Heavier tails than the Normal's: a discordant
value (a hemodiluted aspirate) no longer moves a patient's kinetics to explain it, and a value far past a
detection limit costs about 4 log|z|, not z^2 / 2 -- under the Normal, single patients' kill rates and
latencies bounded by their negatives were walls whose crossing was a divergent transition (energy errors
above 1,000; docs/calibration.md, "A heavier-tailed measurement error").

delta is 0 for the reference method; the others have a free bias (flow vs NGS).
Response (every infused patient, dim ``infused``): Bernoulli with
logit P(CR/CRi) = r0 + r_arm a, reported as ``response_rate``. Every MRD
estimand is among responders, the patients the kinetic part analyses (and
the population of the simulator's truth); "among all infused" is, draw by
draw, ``response_rate`` times the responders' value (``toolkit.mrd_estimands``).

Why this structure (what 60 patients with 5-8 assessments identify)
    The first assessment is at day 28, when about 90 % of responders are
    already below the flow limit, so the kill phase is almost never seen: the
    data give k_i a lower bound (MRD reached its floor by day 28) and little
    else. k therefore has one log-normal hierarchy with an arm effect and an
    informative prior, B_i is anchored on the measured blasts (the only
    information on the start), and its anchor error sigma_B is prior-driven.
    What the data do see is (i) the floor at day 28-365 through NGS (a
    residual 1e-6..1e-4 in the patients who later recur, nothing in those who
    stay in remission) and (ii) regrowth through flow and the value at
    relapse. A two-class mixture (recurrence vs sustained remission, the
    "cured" latent class of a mixture cure model) uses exactly that information;
    per-patient floors and latencies have population priors,
    so patients without positive values simply follow the population. The
    sustained-remission floor F is fixed: any value below the NGS limit
    (1e-6) is indistinguishable in these assays. A third class (residual
    disease that never regrows) is not identifiable from a late regrowth
    within 2 years of follow-up and is not modelled. Non-responders' MRD
    (>= 5 % by definition of NR) is not kinetics and is left out.

Parameters (units; default priors; source) -- ``MrdPriors``. Each default prior's source,
population and derivation is in ``docs/priors.md`` (anchors ``#mrd-<field>``, e.g. ``#mrd-log-clearance``).

================================  ===========================  ==============================================
parameter (name in the model)     prior                        source / reasoning
================================  ===========================  ==============================================
mu_k ``log_clearance``            Normal(log 0.25, 0.5)        log10/day; >= 0.138 log10/day (ELIANA: median
                                                               74 % blasts to < 0.01 % by day 28, Maude 2018)
                                                               ctDNA 2 log10 in 7 d
                                                               (0.29/day, Sworder 2023); 90 % prior 0.11-0.57
b_k ``clearance_log_ratio``       Normal(0, 0.4)               log ratio; no source, the scale of the CAR-T
                                                               Cmax arm effect (Mueller 2018 responder gap)
omega_k ``clearance_sd``          LogNormal(log 0.5, 0.5)      log scale; 90 % 0.22-1.14: CAR-T Cmax spread
                                                               between responders (CV 155 %, log SD 1.1;
                                                               Kymriah label) times a kill-rate elasticity
                                                               0.2-1; zero-avoiding, see Sampling
sigma_B ``baseline_anchor_sd``    HalfNormal(0.3)              log10; marrow blasts vs MRD fraction at day 0
                                                               (sampling, bridging); not identifiable from data
mu_B, omega_B (blank blasts)      cohort mean/SD of known      empirical; fallback Normal(log10 0.2, 0.5)
                                  log10 burdens                (20 %: no source; ELIANA median 74 %)
c0 ``logit_recurrence``           Normal(0, 1)                 ELIANA RFS plateau ~50 % (Laetsch 2023)
c_arm ``recurrence_log_or``       Normal(0, 1)                 as durability ``cure_log_or`` (sign flipped);
                                                               skeptical Normal(0, 0.5)
mu_u ``floor_depth_log10``        Normal(3.7, 0.7)             log10 units below 5 %: typical floor 1e-5,
                                                               between the flow (1e-4) and NGS (1e-6) limits
                                                               (Pulsipher 2022)
omega_u ``floor_depth_sd_log10``  LogNormal(log 0.5, 0.5)      log10; floors 1e-6..1e-4 between patients
                                                               (the 2-log10 window between the flow and NGS
                                                               limits) = SD ~0.5; zero-avoiding: an SD
                                                               near 0 is implausible, and with few NGS-positive
                                                               patients it formed a funnel with their centred
                                                               floors (divergences in simulated cohorts)
mu_s ``log_relapse_latency``      Normal(log 250, 0.7)         Weibull scale (days after day 28); ELIANA RFS
                                                               (Maude 2018, Laetsch 2023) through a cure model:
                                                               scale ~268 d, shape ~1.75 in the uncured
b_s ``relapse_log_time_ratio``    Normal(0, 1)                 log ratio, weakly informative as durability's
                                                               log_hr; skeptical Normal(0, 0.35) = durability's
                                                               skeptical log-HR on the time scale (shape ~1)
omega_s ``relapse_sd``            HalfNormal(1)                1 / Weibull shape (log-latency SD = 1.28 omega_s);
                                                               ELIANA reading above: 1/shape ~0.57
mu_Td ``log_doubling_days``       Normal(log 17.3, 0.63)       days, typical patient; 95 % in 5-60 d (AML
                                                               subtype medians 11-36 d, Ommen 2010)
omega_Td ``doubling_sd``          LogNormal(log 0.4, 0.5)      log scale; below the spread of Ommen's subtype
                                                               medians (0.55); zero-avoiding
delta ``method_bias_log10``       Normal(0, 0.3)               log10; flow vs qPCR within 0.5 log in 69 %
                                                               (Garand 2013)
sigma ``mrd_residual_sd_log10``   LogNormal(log 0.3, 0.5)      log10 scale of the t_4 error; between-assay
                                                               scale 0.3-0.5 (Garand 2013)
delta_PB ``pb_offset_log10``      Normal(-1, 0.7)              log10; only with PB rows. B-ALL MRD is mostly
                                                               >= 1 log lower in blood than in marrow (van der
                                                               Velden 2002); check against local paired samples
gamma ``covariate_*``             Normal(0, 0.5)               per SD of a covariate, on log k and logit pi
r0 ``logit_response``             Normal(logit 0.85, 1)        CR/CRi 71-87 % (Maude 2018, Pasquini 2020)
r_arm ``response_log_or``         Normal(0, 1)                 as durability
F (fixed)                         -8                           below every assay's limit; not identifiable
================================  ===========================  ==============================================

Sampling (``benchmarks/bench_mrd.py``; nutpie, target_accept 0.9, the
default, so the model needs no recommended value of its own). The example
cohort (50 responders, 318 assessments) at 4 x 1000 tune x 1000 draws: 0
divergences, max R-hat 1.006-1.009, min bulk/tail ESS 700-1000, 63 leapfrog
steps per draw; the whole fit (build, compile, sampling, pointwise
log-likelihood) 46 s on 2 shared cores with a warm compile cache (compile
13.5 s, sampling 30 s) and 77 s on the very first run (compile 39 s and 6 s
for the log-likelihood function, cached afterwards). Two changes made this
robust on simulated cohorts: the Weibull (log-Gumbel) latency above, and a
zero-avoiding LogNormal prior on ``floor_depth_sd_log10`` (every divergence
sat at floor SDs of 0.02-0.15, a funnel with the few centred floors). In the
20-cohort recovery study (``tests/test_mrd_recovery.py``) they took the
divergences from 24 to 1 and the largest population R-hat from 1.085 to
1.038 (median 1.009). What remains are per-patient ambiguities of the data
that no parameterisation removes: a patient with values near 2 % at days
28-35 is slow kill, a floor just below 5 % or early regrowth, and a sharp
lower bound on k_i where NGS at day 28 still sees the kill phase. They show
as R-hat up to about 1.04 on those patients' parameters and on the SDs they
pull (``clearance_sd``, ``relapse_sd``) in some simulated cohorts;
population estimands move little between chains.
Fresh cohorts (``benchmarks/mrd_convergence.py``: ``toolkit simulate --seed S``,
60 patients, then the primary spec's fit and the toolkit's own verdict over
every posterior variable). The slow directions there: (i) the clearance
hierarchy -- kill rates bounded only from below pin a low quantile of log k,
mu_k - 1.5 omega_k, so (mu_k, omega_k) formed a ridge with a wedge towards
omega_k = 0; the free variable is now that quantile (``log_clearance_low``, a
shear with Jacobian 1, so the prior of ``log_clearance``, now a
deterministic, is unchanged) and omega_k has a zero-avoiding prior (Gamma(2) until 1.3.0, now LogNormal);
(ii) single patients whose values have two explanations, e.g. one NGS PNQ at
day 28 and NGS negatives after it (a kill still in progress at day 28, with
k_i in a narrow band, or a fast kill and a floor just at the NGS limit): a
bimodal posterior that chains cross rarely, so R-hat on that patient's k_i,
floor and latency (and the arm's typical kill rate) is 1.02-1.13 after 4 x
1000 draws; the changes above do not remove it, more draws often do. The fit
therefore extends its own sampling (``toolkit.fitting.sample_extending``,
option ``extend_sampling``, 3 in the primary spec): a run that fails the
verdict is continued to twice the draws (then four, then eight times), after a run with
divergences a new run at a target_accept halfway to 1 (0.9 -> 0.95 -> 0.975 -> 0.9875; a run that
failed on divergences alone keeps its draws, ``toolkit.fitting.run_extending``); the
last run is kept and judged by the same verdict, and every run's settings and
diagnostics are in the provenance (``sampling_attempts``) and a warning.
(iii) early relapsers whose MRD at day 28 (about 1e-2) rose more slowly than
one shared doubling time allowed (the reason for per-patient doubling times
in 1.1.0, above).
Measured on fresh cohorts (``benchmarks/README.md``, "MRD convergence", per-seed table; seeds
1000-1019, 2 shared cores). Model 1.0.0 with two extensions: 12 of 20. Model 1.1.0 with two
extensions and the divergence rerun: 17 of 20 (1009, 1014, 1015 failed). Model 1.1.0 with three
extensions (the current spec): 19 of 20 (only 1009 fails; 7 at the first run). The third extension is what 1014 needed (case (ii): its
patient's kill rate mixes at 4 x 8000). Sampling is not bit-reproducible between processes (same
seed, 1015: 3 divergences in one process, none in another), so a seed's verdict is itself a draw.
What remains slow is the clearance hierarchy when no patient's data pin a kill rate (1009: no
``informed_patients`` "clearance" patient; ``clearance_sd``'s posterior spans 0.03-1.26 (1-99 %),
its ESS is about 1.4 % of the draws at 4 x 8000, R-hat 1.015 at 4 x 4000 and at 4 x 8000, so more
draws do not fix it), and divergences at the top of ``clearance_sd`` (1015's three sat at its
97.6-99.5 % posterior percentiles): a kill rate bounded below by a negative assessment puts a
wall of width about sigma / (k t omega_k) into its non-centred variable, which narrows as
omega_k grows. Tried and rejected on those seeds (first run, 4 x 1000): measuring each such
patient's variable from its wall (log k_i = c_i + omega_k y_i, c_i = log((B_i - LoD_i) / t_i);
1015 R-hat 1.13), centring every kill rate (1015 R-hat 1.14, E-BFMI 0.14), nutpie's low-rank
mass matrix (1009 R-hat 1.07). Still to try: integrating k_i out (one-dimensional quadrature in
the decline level at the first assessment, where the likelihood is smooth on the scale of sigma).
What sets the step size (``benchmarks/step_size.py --model mrd --stiffness 100``; benchmarks/README.md,
"MRD: what sets the step size"): the stiffest directions of the log density are single patients' walls,
kill rates bounded by a negative at 60 patients and, at 600, the latencies of patients negative to day 730
(in class R the regrowth must stay under the limit: a wall of width sigma / (g s omega_s) in the standard
value, of order 0.03 at typical values). Stretching those walls in the sampler's coordinate (commits f0e2c27 and b27a10a,
reverted) halved the steps at 600 but made the kill-rate hierarchy mix far worse on the example
cohort, or, latency only, added divergences at 60 patients.
Known misfit of model 1.0 (``toolkit.plots.mrd.plot_fraction_negative``): with one shared
doubling time it replicated slightly too few day-28 flow negatives among early
relapsers whose regrowth is steeper than the shared rate; model 1.1.0 lets that rate vary.

Named deterministics (dim ``arm`` = control, experimental; typical = population
median, covariates at their mean): ``mrd_clearance_log10_per_day``,
``clearance_rate_ratio``, ``mrd_recurrence_class_probability``,
``mrd_relapse_latency_days`` (class R, median days from day 28 to 5 %), ``response_rate``;
scalars ``mrd_doubling_time_days`` (typical patient), ``mrd_floor_log10``; dim ``method``:
``mrd_method_offset_log10``. Per patient: ``patient_clearance_log10_per_day``,
``patient_baseline_log10``, ``patient_floor_log10``, ``patient_relapse_day``, ``patient_doubling_time_days``.

Required columns: ``mrd.csv`` patient_id, day, mrd_pct (negative/PNQ), lod_pct,
loq_pct (for PNQ), method, specimen; ``outcomes.csv`` response;
``patients.csv`` arm, baseline_blasts_pct (blank allowed).

References
----------
1. docs/priors.md: every default prior, its source and derivation (further references there).
2. Beal SL. J Pharmacokinet Pharmacodyn 2001;28:481 (M3 censored likelihood).
3. Garand R et al. Leukemia 2013 (flow vs qPCR concordance, between-assay error).
4. Ommen HB et al. Blood 2010;115:198 (molecular doubling times before relapse).
5. Pulsipher MA et al. Blood Cancer Discov 2022;3:66 (NGS-MRD after tisagenlecleucel).
6. Papaspiliopoulos O, Roberts GO, Skold M. A general framework for the parametrization of
   hierarchical models. Statistical Science 2007;22:59-73 (centred vs non-centred).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from toolkit.data.mrd_inputs import MrdInputs
from toolkit.models.centring import mask_centred

__all__ = [
    "ARMS", "MODEL_NAME", "MODEL_VERSION", "MrdPriors", "RESIDUAL_DF", "build_mrd_model", "censored_log10_logp",
    "class_logliks_numpy", "informed_patients", "log_cdf_difference", "log_residual_interval",
    "log_residual_interval_numpy", "mrd_log10_numpy", "residual_family", "std_residual_lcdf",
    "std_residual_logpdf", "TERM_CAP_LOG10",
]

MODEL_NAME = "mrd"
MODEL_VERSION = "1.4.0"  # 1.1.0: each patient's own regrowth doubling time; 1.2.0: regrowth centred only where
# values rise; 1.3.0: clearance_sd LogNormal(log 0.5, 0.5) (sourced; Gamma(2) before); 1.4.0: Student-t (4 d.f.)
# measurement error (Normal before)
ARMS = ("control", "experimental")
PRIOR_SETS = ("default", "skeptical", "optimistic")
LN10 = math.log(10.0)
RELAPSE_LOG10 = math.log10(0.05)  # 5 % marrow blasts: morphological relapse
LATENCY_ORIGIN_DAY = 28.0  # response assessment; the regrowth latency s_i counts from here
LOG10_2 = math.log10(2.0)
CLEARANCE_SHEAR = 1.5  # log_clearance_low = mu_k - 1.5 omega_k: the ~7th percentile of log k (see build_mrd_model)
LOG_LN2 = math.log(math.log(2.0))  # median of w = log Exponential(1): the Weibull median is scale x (ln 2)^(1/shape)
TERM_CAP_LOG10 = 50.0  # each clone's log10 term is capped here in the likelihood (log10_sum); see there


def _logit(p: float) -> float:
    return float(math.log(p / (1 - p)))


@dataclass(frozen=True)
class MrdPriors:
    """Priors of the MRD model in one place; see the module docstring table for sources.

    Pairs are Normal (mu, sd) on the stated scale; single floats are HalfNormal
    scales; ``residual_sd_log10``, ``floor_depth_sd_log10``, ``clearance_sd`` and ``doubling_sd`` are
    LogNormal (mu, sd); ``sustained_floor_log10`` is a fixed constant.
    """

    log_clearance: tuple[float, float] = (math.log(0.25), 0.5)  # ELIANA bound, ctDNA; docs/priors.md#mrd-log-clearance
    clearance_log_ratio: tuple[float, float] = (0.0, 0.4)  # no source; docs/priors.md#mrd-clearance-log-ratio
    clearance_sd: tuple[float, float] = (math.log(0.5), 0.5)  # Kymriah label Cmax CV; docs/priors.md#mrd-clearance-sd
    baseline_anchor_sd: float = 0.3  # no source; docs/priors.md#mrd-baseline-anchor-sd
    baseline_log10_fallback: tuple[float, float] = (math.log10(0.2), 0.5)  # docs/priors.md#mrd-baseline-log10-fallback
    logit_recurrence: tuple[float, float] = (0.0, 1.0)  # ELIANA plateau; docs/priors.md#mrd-logit-recurrence
    recurrence_log_or: tuple[float, float] = (0.0, 1.0)  # no source; docs/priors.md#mrd-recurrence-log-or
    floor_depth_log10: tuple[float, float] = (3.7, 0.7)  # assay limits; docs/priors.md#mrd-floor-depth-log10
    floor_depth_sd_log10: tuple[float, float] = (math.log(0.5), 0.5)  # docs/priors.md#mrd-floor-depth-sd-log10
    log_relapse_latency: tuple[float, float] = (math.log(250.0), 0.7)  # docs/priors.md#mrd-log-relapse-latency
    relapse_log_time_ratio: tuple[float, float] = (0.0, 1.0)  # no source; docs/priors.md#mrd-relapse-log-time-ratio
    relapse_sd: float = 1.0  # ELIANA RFS; docs/priors.md#mrd-relapse-sd
    log_doubling_days: tuple[float, float] = (math.log(math.sqrt(5.0 * 60.0)), 0.63)  # docs/priors.md#mrd-log-doubling-days
    doubling_sd: tuple[float, float] = (math.log(0.4), 0.5)  # docs/priors.md#mrd-doubling-sd
    method_bias_log10: tuple[float, float] = (0.0, 0.3)  # Garand 2013; docs/priors.md#mrd-method-bias-log10
    residual_sd_log10: tuple[float, float] = (math.log(0.3), 0.5)  # Garand 2013; docs/priors.md#mrd-residual-sd-log10
    pb_offset_log10: tuple[float, float] = (-1.0, 0.7)  # van der Velden 2002; docs/priors.md#mrd-pb-offset-log10
    covariate_effect: tuple[float, float] = (0.0, 0.5)  # no source; docs/priors.md#mrd-covariate-effect
    logit_response: tuple[float, float] = (_logit(0.85), 1.0)  # CR/CRi rates; docs/priors.md#mrd-logit-response
    response_log_or: tuple[float, float] = (0.0, 1.0)  # no source; docs/priors.md#mrd-response-log-or
    sustained_floor_log10: float = -8.0  # fixed: below every assay's limit; docs/priors.md#mrd-sustained-floor-log10

    @classmethod
    def named(cls, name: str) -> MrdPriors:
        """The prior set ``default``, ``skeptical`` or ``optimistic`` (arm effects differ)."""
        if name == "default":
            return cls()
        if name == "skeptical":  # docs/priors.md#mrd-skeptical
            return cls(clearance_log_ratio=(0.0, 0.2), recurrence_log_or=(0.0, 0.5), relapse_log_time_ratio=(0.0, 0.35))
        if name == "optimistic":  # IFN-alpha helps (assumed size); docs/priors.md#mrd-optimistic
            return cls(clearance_log_ratio=(0.2, 0.3), recurrence_log_or=(-0.4, 0.5),
                       relapse_log_time_ratio=(0.35, 0.35))
        raise ValueError(f"unknown prior set {name!r}; valid: {', '.join(PRIOR_SETS)}")

    def with_overrides(self, overrides: dict) -> MrdPriors:
        valid = set(asdict(self))
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(f"unknown prior(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
        current = asdict(self)
        values = {k: (tuple(float(x) for x in v) if isinstance(current[k], tuple) else float(v))
                  for k, v in overrides.items()}
        return replace(self, **values)

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


# --------------------------------------------------------------------------- likelihood pieces (pytensor)


def log10_sum(*terms):
    """log10(sum_j 10^{x_j}) of log10 terms (pytensor; broadcasts).

    Summed on the linear scale: cheaper than nested logaddexp, and safe here because one term (a floor,
    far above 1e-300) is always representable; terms that underflow add 0, and terms are capped at
    10^50 (an MRD fraction is at most 1; the cap only keeps wild warm-up proposals finite).
    """
    total = pt.exp(pt.minimum(terms[0], TERM_CAP_LOG10) * LN10)
    for term in terms[1:]:
        total = total + pt.exp(pt.minimum(term, TERM_CAP_LOG10) * LN10)
    return pt.log(total) / LN10


RESIDUAL_DF = 4  # the measurement error is Student-t with 4 degrees of freedom (model 1.4.0; Normal before)
_T4_LOG_NORMALISER = math.lgamma(2.5) - math.lgamma(2.0) - 0.5 * math.log(4.0 * math.pi)


def std_residual_logpdf(z):
    """log density of the standard Student-t with 4 d.f. (pytensor): log c - 5/2 log(1 + z^2 / 4)."""
    return _T4_LOG_NORMALISER - 2.5 * pt.log1p(pt.sqr(z) / 4.0)


def std_residual_lcdf(z):
    """log F(z), the standard Student-t (4 d.f.) log CDF, in closed form (pytensor), accurate in both tails.

    With r = sqrt(4 + z^2) and s = z / r: F(z) = 1/2 + 3 s / 4 - s^3 / 4 = (1 + s)^2 (2 - s) / 4, and
    1 + s = q / r with q = r + z, computed as 4 / (r - z) for z < 0 (no cancellation in either tail;
    F(z) ~ 3 / z^4 far below 0, so a censored row's penalty grows like 4 log|z|, not z^2 / 2).
    """
    r = pt.sqrt(4.0 + pt.sqr(z))
    q = pt.switch(pt.lt(z, 0.0), 4.0 / (r - z), r + z)
    return -math.log(4.0) + 2.0 * pt.log(q / r) + pt.log(2.0 - z / r)


def log_cdf_difference(a, b):
    """log[F(a) - F(b)] for b < a (pytensor) = log F(a) + log1mexp(log F(b) - log F(a)): two log F."""
    log_a = std_residual_lcdf(a)
    return log_a + pt.log1mexp(std_residual_lcdf(b) - log_a)


def log_residual_interval(lower_z, upper_z):
    """log[F(upper_z) - F(lower_z)] for lower_z < upper_z, accurate in both tails (pytensor).

    Below 0 it is :func:`log_cdf_difference` (upper_z, lower_z); above 0 its mirror image
    (-lower_z, -upper_z; F(-z) = 1 - F(z)), so neither F underflows to 0 or rounds to 1.
    """
    upper_tail = pt.gt(lower_z, 0.0)
    return log_cdf_difference(pt.switch(upper_tail, -lower_z, upper_z), pt.switch(upper_tail, -upper_z, lower_z))


def censored_log10_logp(y, code, log10_lod, log10_loq, mu, sigma):
    """Pointwise log-likelihood of one assessment on the log10 scale (pytensor; broadcasts).

    ``code`` 0: Student-t (4 d.f., scale ``sigma``) log density of the quantified value ``y``; 1: below the
    detection limit, log F((log10 LoD - mu)/sigma); 2: positive not quantifiable, log of the probability
    between LoD and LoQ. Every branch must get finite inputs (fill ``y``/limits of unused rows with finite
    values, LoQ > LoD).

    Both censored codes are one interval, :func:`log_cdf_difference` (a, b), taken in the tail where neither
    F rounds (as :func:`log_residual_interval`): below the LoD a = z_LoD and b = 1e4 (min(z_LoD, 0) - 1), whose
    F is below 1e-15 of F(a) (F falls like |z|^-4), so the term is log F(z_LoD) to double precision. A row
    costs two log F, not the five of evaluating both censored branches, which matters because the swappable
    mode evaluates every branch on every row.
    """
    z = (y - mu) / sigma
    density = std_residual_logpdf(z) - pt.log(sigma)
    z_lod, z_loq = (log10_lod - mu) / sigma, (log10_loq - mu) / sigma
    below = pt.eq(code, 1)
    upper_tail = pt.and_(pt.bitwise_not(below), pt.gt(z_lod, 0.0))  # a PNQ whose band lies above mu
    a = pt.switch(upper_tail, -z_lod, pt.switch(below, z_lod, z_loq))
    b = pt.switch(upper_tail, -z_loq, pt.switch(below, 1e4 * (pt.minimum(z_lod, 0.0) - 1.0), z_lod))
    return pt.switch(pt.eq(code, 0), density, log_cdf_difference(a, b))


@dataclass(frozen=True)
class _Rows:
    """Constant row structure of the likelihood: which assessments take which censoring branch."""

    patient: np.ndarray  # patient index per assessment
    position: tuple[np.ndarray, np.ndarray]  # (patient, visit) of each assessment in the padded observed matrix
    quantified: np.ndarray  # assessment indices by branch
    below: np.ndarray
    pnq: np.ndarray
    n_patients: int


def _class_logliks(rows: _Rows, y, day, lod, loq, shift, sd, baseline, clearance, floor, relapse_day, growth,
                   sustained_floor, code=None):
    """Per-patient log-likelihood of the assessments under each class (S, R); pytensor, flat rows.

    Each censoring branch is evaluated only on its own rows (indices fixed by the data), then summed
    per patient. With ``code`` (a tensor of censoring codes, the swappable mode of ``build_mrd_model``)
    every branch is evaluated on every row and ``code`` selects (:func:`censored_log10_logp`), so the
    codes can change without rebuilding the graph; ``y``, ``lod`` and ``loq`` must then be finite on
    every row with ``loq > lod``.
    """
    p = rows.patient
    decline = baseline[p] - clearance[p] * day
    mu_s = log10_sum(decline, sustained_floor) + shift
    mu_r = log10_sum(decline, floor[p], RELAPSE_LOG10 + growth[p] * (day - relapse_day[p])) + shift
    out = []
    for mu in (mu_s, mu_r):
        total = pt.zeros(rows.n_patients)
        if code is not None:
            out.append(pt.inc_subtensor(total[p], censored_log10_logp(y, code, lod, loq, mu, sd)))
            continue
        if rows.quantified.size:
            q = rows.quantified
            z = (y[q] - mu[q]) / sd[q]
            dens = std_residual_logpdf(z) - pt.log(sd[q])
            total = pt.inc_subtensor(total[p[q]], dens)
        if rows.below.size:
            b = rows.below
            total = pt.inc_subtensor(total[p[b]], std_residual_lcdf((lod[b] - mu[b]) / sd[b]))
        if rows.pnq.size:
            c = rows.pnq
            interval = log_residual_interval((lod[c] - mu[c]) / sd[c], (loq[c] - mu[c]) / sd[c])
            total = pt.inc_subtensor(total[p[c]], interval)
        out.append(total)
    return out[0], out[1]


# --------------------------------------------------------------------------- numpy versions (posterior processing)


def mrd_log10_numpy(t, baseline, clearance, floor, relapse_day, growth, recurrence, sustained_floor=-8.0, *,
                    cap: float | None = None):
    """True log10 MRD of the model (numpy; broadcasts). ``recurrence`` (bool array) picks class R.

    ``cap``: each clone's log10 term capped there first, as the likelihood's ``log10_sum`` does
    (``TERM_CAP_LOG10``; reached only by a regrowth far beyond 100 %, in extreme prior draws).
    """
    decline = baseline - clearance * t
    regrowth = RELAPSE_LOG10 + growth * (t - relapse_day)
    if cap is not None:
        decline, floor, regrowth = (np.minimum(v, cap) for v in (decline, floor, regrowth))
    s = np.logaddexp(decline * LN10, sustained_floor * LN10)
    r = np.logaddexp(np.logaddexp(decline * LN10, floor * LN10), regrowth * LN10)
    return np.where(recurrence, r, s) / LN10


def residual_family(model_version: str | None) -> int | None:
    """The measurement error of an MRD run fitted by ``model_version``: degrees of freedom of its Student-t
    (:data:`RESIDUAL_DF`), or None for the Normal of the models before 1.4.0 (their runs keep their likelihood)."""
    if model_version is None:
        return RESIDUAL_DF
    major, minor = (int(v) for v in str(model_version).split(".")[:2])
    return None if (major, minor) < (1, 4) else RESIDUAL_DF


def _std_logpdf_lcdf_numpy(df: int | None):
    from scipy import stats

    dist = stats.norm() if df is None else stats.t(df)
    return dist.logpdf, dist.logcdf


def log_residual_interval_numpy(lower_z, upper_z, df: int | None = RESIDUAL_DF):
    """log[F(upper_z) - F(lower_z)] (numpy/scipy; F Student-t with ``df`` d.f., None: Normal), the same tail
    choice as :func:`log_residual_interval`."""
    lcdf = _std_logpdf_lcdf_numpy(df)[1]
    lower_z, upper_z = np.broadcast_arrays(np.asarray(lower_z, float), np.asarray(upper_z, float))
    upper_tail = lower_z > 0
    with np.errstate(divide="ignore"):
        low = lcdf(upper_z) + np.log(-np.expm1(lcdf(lower_z) - lcdf(upper_z)))
        high = lcdf(-lower_z) + np.log(-np.expm1(lcdf(-upper_z) - lcdf(-lower_z)))
    return np.where(upper_tail, high, low)


def class_logliks_numpy(inputs: MrdInputs, baseline, clearance, floor, relapse_day, growth, offset, sigma,
                        pb_offset=None, *, sustained_floor: float = -8.0, residual_df: int | None = RESIDUAL_DF):
    """Per-patient log-likelihood under each class, (draws, patients) each; numpy twin of the model's term.

    Patient arguments broadcast to (draws, patients); ``offset``/``sigma`` are (draws, methods); ``pb_offset``
    (draws,) or None; ``residual_df`` the measurement error's family (:func:`residual_family` of the run's model
    version). Used for per-patient class probabilities after sampling and to cross-check the pytensor
    likelihood in the tests.
    """
    logpdf, lcdf = _std_logpdf_lcdf_numpy(residual_df)
    baseline, clearance, floor, relapse_day, growth = np.broadcast_arrays(
        *(np.atleast_2d(np.asarray(v, dtype=float)) for v in (baseline, clearance, floor, relapse_day, growth)))
    y, lod, loq = _safe_rows(inputs)
    p, t, code = inputs.assessment_patient, inputs.day, inputs.censoring
    shift = offset[:, inputs.method]
    if pb_offset is not None:
        shift = shift + pb_offset[:, None] * inputs.peripheral_blood
    sd = sigma[:, inputs.method]
    decline = baseline[:, p] - clearance[:, p] * t
    regrowth = RELAPSE_LOG10 + growth[:, p] * (t - relapse_day[:, p])
    mu_s = np.logaddexp(decline * LN10, sustained_floor * LN10) / LN10 + shift
    mu_r = np.logaddexp(np.logaddexp(decline * LN10, floor[:, p] * LN10), regrowth * LN10) / LN10 + shift
    out = []
    for mu in (mu_s, mu_r):
        dens = logpdf((y - mu) / sd) - np.log(sd)
        below = lcdf((lod - mu) / sd)
        pnq = log_residual_interval_numpy((lod - mu) / sd, (loq - mu) / sd, residual_df)
        ll = np.where(code == 0, dens, np.where(code == 1, below, pnq))
        total = np.zeros((ll.shape[0], inputs.n_patients))
        np.add.at(total, (slice(None), p), ll)
        out.append(total)
    return out[0], out[1]


# --------------------------------------------------------------------------- model


def _normal(name, prior, **kwargs):
    return pm.Normal(name, mu=prior[0], sigma=prior[1], **kwargs)


def _padded(inputs: MrdInputs, flat: np.ndarray, fill: float) -> np.ndarray:
    out = np.full((inputs.n_patients, inputs.n_visits), fill, dtype=float)
    out[inputs.assessment_patient, inputs.assessment_visit] = flat
    return out


def _safe_rows(inputs: MrdInputs, *, swappable: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite y, LoD and LoQ for every row (values a row's likelihood branch does not use are fillers).

    ``swappable``: the LoQ filler does not depend on the censoring code (a row's own LoQ where it lies
    above its LoD, else LoD + 1), so the codes can be swapped without changing the limits.
    """
    code = inputs.censoring
    lod = np.where(np.isfinite(inputs.log10_lod), inputs.log10_lod, inputs.log10_value - 1.0)
    y = np.where(code == 0, inputs.log10_value, lod)  # censored rows hold their limit (ArviZ convention)
    if swappable:
        with np.errstate(invalid="ignore"):
            loq = np.where(inputs.log10_loq > lod, inputs.log10_loq, lod + 1.0)
    else:
        loq = np.where(code == 2, inputs.log10_loq, lod + 1.0)
    return y, lod, loq


RISE_LOG10 = 1.0  # a value this far above an earlier assessment's upper edge is regrowth, not a floor's noise
PLATEAU_LOG10 = 0.5  # two values this close on different days, neither of them rising, sit on a floor


def informed_patients(inputs: MrdInputs) -> dict[str, np.ndarray]:
    """Which patients' data pin their floor, regrowth latency, doubling time and kill rate (boolean per patient).

    A quantified value at or above 1e-4 is *rising* when it lies at least ``RISE_LOG10`` above the upper edge
    of an earlier assessment (a quantified value; a PNQ's LoQ; a negative's LoD): regrowth seen, not a floor.
    latency: a rising value; doubling: rising values on two or more days (two points of the regrowth line);
    floor: a positive value (quantified or PNQ) below the flow limit 1e-4, or, where no value rises, two values
    at or above it on different days after the first, within ``PLATEAU_LOG10`` of each other (a high floor; before model 1.2.0
    every value at or above 1e-4 counted as regrowth, so a plateau at 1e-3.3 had its doubling time centred
    with nothing to pin it: a funnel with ``doubling_sd``, 27 divergences in a simulated cohort);
    clearance: a value quantified or PNQ at the first assessment with a later negative whose LoD is >= 1
    log10 below the value (PNQ: at or below its LoD), so the decline, not a floor, passed through it.
    Used only to choose the parameterisation.
    """
    positive = inputs.censoring != 1
    quantified = inputs.censoring == 0
    value = np.where(quantified, inputs.log10_value, -5.0)  # PNQ rows sit below 1e-4 (NGS, qPCR)
    low = positive & (value < -4.0)
    p, day = inputs.assessment_patient, inputs.day
    upper = np.where(quantified, inputs.log10_value, np.where(inputs.censoring == 2, inputs.log10_loq,
                                                               inputs.log10_lod))
    n = inputs.n_patients
    floor, latency, doubling = np.bincount(p[low], minlength=n) >= 1, np.zeros(n, bool), np.zeros(n, bool)
    for i in np.flatnonzero(np.bincount(p[quantified & (value >= -4.0)], minlength=n)):
        rows = np.flatnonzero(p == i)
        high = rows[quantified[rows] & (value[rows] >= -4.0)]
        rising = np.array([np.any(upper[rows][day[rows] < day[r]] <= value[r] - RISE_LOG10) for r in high])
        latency[i] = rising.any()
        doubling[i] = np.unique(day[high[rising]]).size >= 2
        if not latency[i]:  # no regrowth seen: values at or above 1e-4 that stay level after day one sit on a floor
            flat = high[day[high] > day[rows].min()]
            floor[i] |= any(day[a] < day[b] and abs(value[a] - value[b]) <= PLATEAU_LOG10 for a in flat for b in flat)
    # kill seen: a positive value at the patient's first assessment and a later negative whose limit sits
    # below the value's lower edge (quantified: the value - 1 log10; PNQ: its LoD), so a floor at that level
    # would have been detected and the decline, not a floor, passed through the value
    first_day = np.full(n, np.inf)
    np.minimum.at(first_day, p, day)
    edge = np.where(quantified, inputs.log10_value - 1.0, inputs.log10_lod)
    first = positive & (day == first_day[p])
    kill = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(np.bincount(p[first], minlength=n)):
        later_lod = inputs.log10_lod[(p == i) & (inputs.censoring == 1) & (day > first_day[i])]
        if later_lod.size and later_lod.min() <= edge[(p == i) & first].max():
            kill[i] = True
    return {"floor": floor, "latency": latency, "doubling": doubling, "clearance": kill}


def build_mrd_model(inputs: MrdInputs, priors: MrdPriors | None = None, *, parent: pm.Model | None = None,
                    name: str = "", dim_prefix: str = "", swappable_censoring: bool = False,
                    centred: dict[str, np.ndarray] | None = None) -> pm.Model:
    """The PyMC model for ``inputs`` (see the module docstring for equations and priors).

    Coords: ``patient`` (analysed responders), ``assessment`` (flat rows),
    ``visit`` (position within a patient; the padded per-patient likelihood),
    ``arm``, ``method`` (methods present), ``infused`` (every patient, response
    part), ``covariate``; ``biased_method`` (non-reference methods) when there
    are several methods.

    ``parent``, ``name`` and ``dim_prefix`` build the model as a named sub-model of ``parent``
    (variables ``name::...``, coords ``dim_prefix + coord``), as :mod:`toolkit.models.joint` does.

    ``swappable_censoring``: by default each censoring branch (quantified, below the LoD, PNQ) is
    evaluated only on the rows that take it, indices fixed when the model is built. With ``True`` every
    branch is evaluated on every row and the ``censoring`` data container selects, so a compiled model
    can take data with other censoring (simulation-based calibration swaps it with nutpie's
    ``with_data``); the log density is the same (``tests/test_mrd_calibration.py``), at the cost of
    three branches per row, so ordinary fits keep the default. Swapped data must give finite
    ``log10_value`` on every row (a censored row holds its LoD); ``log10_lod`` and ``log10_loq`` are the
    design's and stay fixed.

    ``centred``: which patients' kill rate, floor, latency and doubling time are centred (``informed_patients``'s
    dict); default from ``inputs``' own data. It chooses the parameterisation only, not the posterior.
    """
    d = lambda dim: dim_prefix + dim  # noqa: E731
    priors = priors or MrdPriors()
    methods = list(inputs.methods)
    biased = [m for m in methods if m != inputs.reference_method]
    has_pb = bool(inputs.peripheral_blood.any())
    coords = {d("patient"): inputs.patient_ids, d("assessment"): np.arange(inputs.n_assessments),
              d("visit"): np.arange(inputs.n_visits), d("arm"): list(ARMS), d("method"): methods,
              d("infused"): inputs.infused_ids, d("covariate"): inputs.covariates}
    if biased:
        coords[d("biased_method")] = biased
    y, lod, loq = _safe_rows(inputs, swappable=swappable_censoring)
    pos = (inputs.assessment_patient, inputs.assessment_visit)
    mask = np.zeros((inputs.n_patients, inputs.n_visits))
    mask[pos] = 1.0  # 0 marks padding of patients with fewer assessments
    code = inputs.censoring
    rows = _Rows(patient=inputs.assessment_patient, position=pos, quantified=np.flatnonzero(code == 0),
                 below=np.flatnonzero(code == 1), pnq=np.flatnonzero(code == 2), n_patients=inputs.n_patients)
    sustained = float(priors.sustained_floor_log10)
    informed = informed_patients(inputs) if centred is None else centred
    mu_b_pop, sd_b_pop = inputs.baseline_log10_mean, inputs.baseline_log10_sd
    if not (np.isfinite(mu_b_pop) and np.isfinite(sd_b_pop) and sd_b_pop > 0):
        mu_b_pop, sd_b_pop = priors.baseline_log10_fallback
    anchor = np.where(inputs.baseline_missing, 0.0, np.nan_to_num(inputs.baseline_log10))

    submodel = {} if parent is None else {"model": parent, "name": name}
    with pm.Model(coords=coords, **submodel) as model:
        day = pm.Data("day", inputs.day, dims=d("assessment"))
        # the record; it selects the branch of each row in the swappable mode, else the branches are fixed
        censoring = pm.Data("censoring", inputs.censoring.astype(np.int64), dims=d("assessment"))
        # the record of which patient each row belongs to (run folders rebuild their inputs from it)
        pm.Data("assessment_patient", inputs.assessment_patient.astype(np.int64), dims=d("assessment"))
        pm.Data("log10_value", y, dims=d("assessment"))
        lod_data = pm.Data("log10_lod", lod, dims=d("assessment"))
        loq_data = pm.Data("log10_loq", loq, dims=d("assessment"))
        method = pm.Data("method_index", inputs.method.astype(np.int64), dims=d("assessment"))
        arm = pm.Data("patient_arm", inputs.arm.astype(float), dims=d("patient"))
        anchor_data = pm.Data("baseline_anchor_log10", anchor, dims=d("patient"))
        missing = pm.Data("baseline_missing", inputs.baseline_missing.astype(float), dims=d("patient"))
        # which patients are centred, per parameter, is data: a compiled model swaps it with the observations
        # (a calibration study fits each simulated cohort with the choice its own data warrant)
        informed = {k: pm.Data(f"centred_{k}", np.asarray(v, float), dims=d("patient")) for k, v in informed.items()}

        # clearance (kill) rate. The data bound most kill rates only from below (MRD at the floor by day 28), so
        # they pin a low quantile of the log k distribution, mu_k - c omega_k, not mu_k and omega_k apart: the
        # free variable is that quantile (c = CLEARANCE_SHEAR; a shear, Jacobian 1, so the prior on
        # (mu_k, omega_k) is unchanged), which keeps the posterior from being a narrow ridge along mu_k = q + c omega_k
        k_ratio = _normal("clearance_log_ratio", priors.clearance_log_ratio)
        # LogNormal from the spread of CAR-T expansion between responders (model 1.3.0; Gamma(2) before): kill rates
        # that are all alike are implausible, and an SD near 0 formed a funnel with the patients whose kill rate
        # the data pin (divergences at clearance_sd ~ 0.02 in a simulated cohort)
        k_sd = pm.LogNormal("clearance_sd", mu=priors.clearance_sd[0], sigma=priors.clearance_sd[1])
        k_low = pm.Normal("log_clearance_low", mu=priors.log_clearance[0] - CLEARANCE_SHEAR * k_sd,
                          sigma=priors.log_clearance[1])
        log_k_mu = pm.Deterministic("log_clearance", k_low + CLEARANCE_SHEAR * k_sd)
        log_k = mask_centred("clearance_z", log_k_mu + k_ratio * arm, k_sd, informed["clearance"],
                             dims=d("patient"))
        # baseline burden
        anchor_sd = pm.HalfNormal("baseline_anchor_sd", sigma=priors.baseline_anchor_sd)
        e_b = pm.Normal("baseline_z", 0.0, 1.0, dims=d("patient"))
        baseline = pm.Deterministic("patient_baseline_log10", pt.switch(
            pt.gt(missing, 0.5), mu_b_pop + sd_b_pop * e_b, anchor_data + anchor_sd * e_b), dims=d("patient"))
        # recurrence class
        c0 = _normal("logit_recurrence", priors.logit_recurrence)
        c_arm = _normal("recurrence_log_or", priors.recurrence_log_or)
        eta = c0 + c_arm * arm
        if inputs.covariates:
            x = pm.Data("x_std", inputs.x_std, dims=(d("patient"), d("covariate")))
            g_k = _normal("covariate_clearance", priors.covariate_effect, dims=d("covariate"))
            g_r = _normal("covariate_recurrence", priors.covariate_effect, dims=d("covariate"))
            log_k = log_k + pt.dot(x, g_k)
            eta = eta + pt.dot(x, g_r)
        clearance = pm.Deterministic("patient_clearance_log10_per_day", pt.exp(log_k), dims=d("patient"))
        # floor and regrowth of the recurrence class
        # the floor is a depth below 5 % blasts: a CR patient's residual disease sits below the relapse
        # level by construction (softplus keeps "persisting at 1-5 %" from mimicking regrowth)
        d_mu = _normal("floor_depth_log10", priors.floor_depth_log10)
        d_sd = pm.LogNormal("floor_depth_sd_log10", mu=priors.floor_depth_sd_log10[0],
                            sigma=priors.floor_depth_sd_log10[1])
        floor = pm.Deterministic("patient_floor_log10", RELAPSE_LOG10 - pt.softplus(
            mask_centred("floor_raw", d_mu, d_sd, informed["floor"], dims=d("patient"))), dims=d("patient"))
        s_mu = _normal("log_relapse_latency", priors.log_relapse_latency)
        s_ratio = _normal("relapse_log_time_ratio", priors.relapse_log_time_ratio)
        s_sd = pm.HalfNormal("relapse_sd", sigma=priors.relapse_sd)
        # Weibull latency (log-Weibull = minimum-Gumbel on the log scale): early relapsers are not extreme
        log_latency = mask_centred("relapse_raw", s_mu + s_ratio * arm, s_sd, informed["latency"],
                                   family="log_weibull", dims=d("patient"))
        relapse_day = pm.Deterministic("patient_relapse_day", LATENCY_ORIGIN_DAY + pt.exp(log_latency),
                                       dims=d("patient"))
        # one doubling time for all patients: with per-patient doubling times a long flat flow-positive
        # series had two explanations (high floor + fast late regrowth, or low floor + 150-day doubling)
        # and chains split between them; few patients have two values on the regrowth to pin their own
        td_mu = _normal("log_doubling_days", priors.log_doubling_days)
        td_sd = pm.LogNormal("doubling_sd", mu=priors.doubling_sd[0], sigma=priors.doubling_sd[1])
        log_td = mask_centred("doubling_raw", td_mu, td_sd, informed["doubling"], dims=d("patient"))
        growth = LOG10_2 / pm.Deterministic("patient_doubling_time_days", pt.exp(log_td), dims=d("patient"))
        # measurement
        sigma = pm.LogNormal("mrd_residual_sd_log10", mu=priors.residual_sd_log10[0],
                             sigma=priors.residual_sd_log10[1], dims=d("method"))
        offset = pt.zeros(len(methods))
        if biased:
            bias = _normal("method_bias_log10", priors.method_bias_log10, dims=d("biased_method"))
            offset = pt.set_subtensor(offset[[methods.index(m) for m in biased]], bias)
        pb_offset = pt.as_tensor(0.0)
        if has_pb:
            pb = pm.Data("peripheral_blood", inputs.peripheral_blood.astype(float), dims=d("assessment"))
            pb_offset = _normal("pb_offset_log10", priors.pb_offset_log10)

        # likelihood: per patient, class marginalised; the padded (patient, visit) matrix is the observed value
        n_methods = len(methods)

        def last(x, n):  # a core-dim parameter may arrive with broadcast batch dims of equal rows
            return x.reshape((-1,))[-n:]

        def class_logliks(y_flat, baseline_, clearance_, floor_, relapse_, growth_, offset_, sigma_, pb_):
            shift = last(offset_, n_methods)[method] + (last(pb_, 1)[0] * pb if has_pb else 0.0)
            return _class_logliks(rows, y_flat, day, lod_data, loq_data, shift, last(sigma_, n_methods)[method],
                                  baseline_, clearance_, floor_, relapse_, growth_, sustained,
                                  code=censoring if swappable_censoring else None)

        def mixture_logp(value, mask_, baseline_, clearance_, floor_, relapse_, growth_, eta_, offset_, sigma_, pb_):
            ll_s, ll_r = class_logliks(value[rows.position], baseline_, clearance_, floor_, relapse_, growth_,
                                       offset_, sigma_, pb_)
            return pt.logaddexp(-pt.softplus(eta_) + ll_s, -pt.softplus(-eta_) + ll_r)

        pm.CustomDist("mrd", pt.as_tensor(mask), baseline, clearance, floor, relapse_day, growth, eta, offset,
                      sigma, pb_offset, logp=mixture_logp, signature="(v),(),(),(),(),(),(),(m),(m),()->(v)",
                      observed=_padded(inputs, y, 0.0), dims=(d("patient"), d("visit")))

        # response of every infused patient
        r_arm = pm.Data("response_arm", inputs.infused_arm.astype(float), dims=d("infused"))
        r0 = _normal("logit_response", priors.logit_response)
        r_or = _normal("response_log_or", priors.response_log_or)
        pm.Bernoulli("response", logit_p=r0 + r_or * r_arm, observed=inputs.responded, dims=d("infused"))

        # named quantities
        arms = pt.as_tensor(np.array([0.0, 1.0]))
        pm.Deterministic("mrd_clearance_log10_per_day", pt.exp(log_k_mu + k_ratio * arms), dims=d("arm"))
        pm.Deterministic("clearance_rate_ratio", pt.exp(k_ratio))
        pm.Deterministic("mrd_recurrence_class_probability", pt.sigmoid(c0 + c_arm * arms), dims=d("arm"))
        pm.Deterministic("mrd_relapse_latency_days", pt.exp(s_mu + s_ratio * arms + s_sd * LOG_LN2), dims=d("arm"))
        pm.Deterministic("mrd_doubling_time_days", pt.exp(td_mu))
        pm.Deterministic("mrd_floor_log10", RELAPSE_LOG10 - pt.softplus(d_mu))
        pm.Deterministic("mrd_method_offset_log10", offset, dims=d("method"))
        pm.Deterministic("response_rate", pt.sigmoid(r0 + r_or * arms), dims=d("arm"))
        # patient_* deterministics: defined where they are computed (the likelihood reads them)
    return model
