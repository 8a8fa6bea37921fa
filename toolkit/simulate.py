r"""Synthetic two-arm CAR-T trials drawn from one generative story, with known truth.

``simulate_trial`` draws a whole trial (patients, outcomes, CAR-T kinetics,
MRD) and ``compute_truth`` gives every population quantity the models
report, under the names they use in ``summary.json``.

Generative story (time = days since CAR-T infusion; arm a = 1 experimental)
---------------------------------------------------------------------------
1. **Baseline.** Age ~ U(12, 65) years; sex F/M 1:1; marrow blasts
   ~ LogNormal(log 20 %, 0.9) clipped to [1, 95] %; dose ~ U(1, 2) x 1e7
   cells/kg (NCT04534634); prior HSCT ~ Bernoulli(0.5). Arms 1:1.
2. **CAR-T kinetics** (Stein 2019, CPT Pharmacometrics Syst Pharmacol 8:285; the random-effect column
   of Stein's Table 1 is read as the log-scale SD omega, as Monolix reports it):
   log Cmax ~ N(log 24000 + a log(cmax_gmr), 0.65), log Tmax ~ N(log 9.3, 0.38),
   log foldx ~ N(log 3900, 2.4 -> 1.0, see note), log alpha ~ N(log 0.16, 0.91),
   logit FB ~ N(logit 0.0079, 0.8), log beta ~ N(log 0.0032 - a
   log(persistence_half_life_ratio), 0.86); beta is capped at alpha/2 so the
   persistence phase is always the slower one.

       C(t) = Cmax/foldx * exp(rho t),                          t <  Tmax, rho = ln(foldx)/Tmax
       C(t) = Cmax [(1-FB) e^{-alpha (t-Tmax)} + FB e^{-beta (t-Tmax)}],  t >= Tmax

   qPCR: log y = log C + N(0, 0.56); y < LLOQ (50 copies/ug) is reported BLQ.
   *Note:* Stein's omega 2.4 for foldx only shapes the unobserved pre-peak
   start R0; 1.0 is used so that day-1 samples stay plausible.
   Loss of CAR-T persistence T_loss is the day C(t) falls below the LLOQ.
3. **Response** (CR/CRi at day 28, else NR): logit P = logit(0.85) +
   0.8 z_cmax, z_cmax = (log Cmax - log 24000)/0.65 (responders expand
   more, Mueller 2018). CR vs CRi 4:1.
4. **Cure.** A responder is cured (leukemia eradicated, never relapses) with
   probability pi_a, logit pi_a = logit(0.45) + a log(cure_odds_ratio).
5. **Relapse** of an uncured responder, time s from the response day, a
   Weibull proportional-hazards model with time-varying terms:

       h(s) = (k/lam) (s/lam)^(k-1) exp(eta_i + g_loss 1[s > s_loss] + g_hsct 1[s > s_hsct])
       eta_i = a log(hazard_ratio_direct) + g_cmax (log Cmax_i - log 24000)
               + g_blasts (blasts_i - 20) + g_clear (log k_i - log 0.3)

   k = 1.2, lam = 270 d (median 200 d without the loss term), g_cmax = -0.34
   per ln Cmax (Awasthi 2020), g_loss = log 3 (loss of CAR-T; Pulsipher
   2022 reports HR 4.5 for B-cell recovery), g_blasts = 0.01 per % blasts,
   g_hsct = log 0.5, g_clear = 0 (``log_hr_per_log_clearance``: the MRD kill
   rate k_i of step 6 has no effect on relapse by default; set it to give
   the MRD pathway of the joint model a known non-zero truth). CD19-negative relapse: 80 % while CAR-T persists, 10 %
   after its loss; 5 % of relapses are typed unknown.
6. **MRD** (log10 fraction): starts at log10(blasts/100), declines at a
   patient rate k_i ~ LogNormal(log 0.3 + a log(clearance_rate_ratio), 0.35)
   log10/day to a floor (cured: -8, eradicated; uncured: N(-5, 0.7));
   an uncured patient's MRD regrows at rate log10(2)/T_d, T_d ~
   LogNormal(log 12 d, 0.35), reaching 5 % blasts at the relapse day (MRD
   recurrence precedes relapse, as in Pulsipher 2022). Non-responders stay
   at >= 5 %. Flow (LoD 0.01 %, log10 SD 0.3, bias -0.1) at days 28, 90,
   180, 270, 365, 540, 730 and at relapse; NGS (LoD 1e-4 %, LoQ 1e-3 %,
   SD 0.15) at days 28, 90, 180, 365 in half the patients.
7. **Transplant and death.** 20 % of responders get a consolidative HSCT
   in remission U(45, 120) days after response. Death: non-responders
   rate ln2/210 per day; in remission 3 %/year (15 %/year after HSCT);
   after relapse ln2/365 per day. Accrual gives administrative follow-up
   U(3, 5) years; loss to follow-up 2 %/year after day 28.

Truth (``compute_truth``)
-------------------------
Each true value is a population quantity of this story, for the endpoint
relapse-free survival from the response day (event: relapse or death in
remission) in the hypothetical world **without consolidative HSCT** (what
the default "censor at HSCT" analysis estimates; HSCT here is assigned at
random, so censoring at it is not informative). Where there is no closed
form, values are averages over ``TRUTH_PATIENTS`` simulated patients per
arm, with conditional survival computed exactly per patient (no event-time
noise):

- ``rfs_{D}d_{arm}`` = mean_i exp(-mu_nrm D) [pi + (1-pi) exp(-H_i(D))] over
  responders (D = 180, 365, 730); ``rfs_{D}d_difference`` = experimental - control.
  Cured responders can die in remission (rate mu_nrm), as in the cure
  model, whose NRM hazard applies to cured and uncured alike.
- ``cir_{D}d_{arm}`` and ``nrm_{D}d_{arm}``: cumulative incidence of relapse
  and of death in remission D days after response, the two competing:
  with S_rel(s) = mean_i [pi + (1-pi) exp(-H_i(s))] and S_n(s) = exp(-mu_nrm s),
  CIR(D) = int_0^D S_n dF_rel, F_rel = 1 - S_rel, and NRM(D) = int_0^D S_rel
  d(1 - S_n), both by ``toolkit.survival.cumulative_incidence`` on the
  one-day grid the posterior uses; ``_difference`` as above.
- ``efs_{D}d_{arm}`` (days since infusion, every infused patient, non-response
  an event at day 0) = response_rate_arm x rfs(D - 28), responders being in
  remission from the day-28 assessment; ``response_rate_difference``.
- ``hazard_ratio``: the hazard ratio a Weibull proportional-hazards fit of
  relapse or death in remission converges to on this design (maximum
  likelihood on the large population with the trial's administrative
  censoring). ``hazard_ratio_uncured``: the cause-specific relapse hazard
  ratio among uncured responders, the projection of this story onto the
  cure model's relapse part: the Weibull-PH maximum-likelihood fit of relapse
  (death in remission and end of follow-up censor) among the uncured, on the
  same large population and design; the relapse hazard here has
  patient-level terms (Cmax, loss of CAR-T, blasts), so this is the marginal
  hazard ratio that a Weibull PH among the uncured approximates, not
  ``hazard_ratio_direct``. ``hazard_ratio_relapse``: the same fit among all
  responders (the Weibull model with NRM as its own hazard). ``prob_*``
  quantities are posterior statements and have no truth.
- ``cure_fraction_{arm}`` = pi_arm; ``median_rfs_days_{arm}`` the day RFS
  first reaches 0.5, by the bisection and 20-year horizon of the posterior
  estimand (``toolkit.survival.first_crossing``; absent if not reached).
- CAR-T: ``cmax_copies_per_ug_{arm}``, ``tmax_days_{arm}``,
  ``half_life_contraction_days_{arm}`` (ln2/alpha),
  ``half_life_persistence_days_{arm}`` (ln2/beta) and
  ``persistence_fraction_{arm}`` (FB) of the typical patient (every
  parameter at its population median); ``auc_0_28_{arm}`` the typical
  patient's AUC0-28; ``cmax_gmr`` and ``auc28_gmr`` ratios of population
  geometric means of patients' Cmax and AUC0-28; ``persistence_half_life_ratio``
  and ``tmax_difference_days`` typical-patient contrasts.
- MRD: ``clearance_rate_ratio``; ``mrd_negative_28d_flow_{arm}`` and
  ``mrd_negative_28d_ngs_{arm}`` = P(true MRD at day 28 < 1e-4 / < 1e-6)
  among responders (the MRD model's population; all infused = this x
  ``response_rate_{arm}``); ``mrd_recurrence_365d_{arm}`` = P(true MRD
  rises to >= 1e-4 by day 365 | below 1e-4 at day 28, responder), without
  HSCT or death; ``time_to_mrd_negativity_days_{arm}`` the median day true
  MRD first falls below 1e-4 among those who get there.
- Associations (conditional, exact): ``hazard_ratio_direct``,
  ``log_hr_per_log_cmax``, ``log_hr_cart_loss``, ``log_hr_hsct``,
  ``log_hr_baseline_blasts_pct``; ``response_rate_{arm}``.
- Mediation (``toolkit.models.joint``), at tau = 365 days after response,
  with Hbar_a(K) the mean cumulative relapse hazard of the uncured over all
  infused patients' kinetics K of an arm (response on day 28, no HSCT):
  ``hazard_ratio_total`` = Hbar_1(K_1)/Hbar_0(K_0); ``hazard_ratio_indirect``
  = total / ``hazard_ratio_direct``; ``proportion_mediated`` =
  log(indirect)/log(total); ``hazard_ratio_indirect_mrd`` = Hbar_1(K_1, M_1) /
  Hbar_1(K_1, M_0) (the part through the MRD kill rate M, 1 when g_clear = 0)
  and ``hazard_ratio_indirect_cart`` = indirect / that; ``log_hr_per_log_clearance``.
  MRD recurrence has no causal role in this story (it is downstream of
  relapse), so there is no ``log_hr_mrd_recurrence`` truth.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, special

from toolkit.data.io import write_study
from toolkit.models.kinetics import cart_auc, cart_curve, time_below  # noqa: F401  (public names of this module too)
from toolkit.survival import cumulative_incidence, first_crossing, incidence_grid

CONTROL_LABEL = "CAR-T"
EXPERIMENTAL_LABEL = "IFN-a + CAR-T"
TRUTH_PATIENTS = 200_000
RESPONSE_DAY = 28.0  # the day-28 response assessment
MEDIAN_HORIZON_DAYS = 20 * 365.25  # as toolkit.models.durability.MEDIAN_HORIZON_DAYS
RFS_HORIZONS = (180, 365, 730)
CART_DAYS = (1, 4, 7, 10, 14, 21, 28, 42, 56, 90, 120, 180, 270, 365)
FLOW_DAYS = (28, 90, 180, 270, 365, 540, 730)
NGS_DAYS = (28, 90, 180, 365)


@dataclass(frozen=True)
class Effects:
    """IFN-alpha effects, experimental vs control (1.0 = no effect)."""

    cmax_gmr: float = 1.5
    persistence_half_life_ratio: float = 1.5
    clearance_rate_ratio: float = 1.3
    hazard_ratio_direct: float = 0.8
    cure_odds_ratio: float = 1.0

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def with_overrides(self, overrides: dict[str, float]) -> Effects:
        unknown = sorted(set(overrides) - set(self.names()))
        if unknown:
            raise ValueError(f"unknown effect(s) {', '.join(unknown)}; valid names: {', '.join(self.names())}")
        for name, value in overrides.items():
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"effect {name} must be a positive ratio, got {value}")
        return replace(self, **overrides)


@dataclass(frozen=True)
class TrialParameters:
    """Control-arm population parameters of the generative story (see module docstring)."""

    # CAR-T kinetics, Stein 2019 Table 1 (typical values; omega as log-scale SD)
    cmax: float = 24_000.0
    omega_cmax: float = 0.65
    tmax: float = 9.3
    omega_tmax: float = 0.38
    foldx: float = 3_900.0
    omega_foldx: float = 1.0
    alpha: float = 0.16
    omega_alpha: float = 0.91
    fb: float = 0.0079
    omega_fb: float = 0.8
    beta: float = 0.0032
    omega_beta: float = 0.86
    sigma_cart: float = 0.56
    lloq: float = 50.0
    # response and cure
    response_rate: float = 0.85
    response_per_sd_cmax: float = 0.8
    cure_fraction: float = 0.45
    # relapse hazard of the uncured (Weibull PH, time from response)
    weibull_shape: float = 1.2
    weibull_scale_days: float = 270.0
    log_hr_per_log_cmax: float = -0.34
    log_hr_cart_loss: float = math.log(3.0)
    log_hr_baseline_blasts_pct: float = 0.01
    log_hr_hsct: float = math.log(0.5)
    log_hr_per_log_clearance: float = 0.0
    # MRD (log10 fraction)
    clearance_log10_per_day: float = 0.3
    omega_clearance: float = 0.35
    floor_uncured_log10: float = -5.0
    floor_uncured_sd: float = 0.7
    doubling_days: float = 12.0
    omega_doubling: float = 0.35
    flow_sd_log10: float = 0.3
    flow_bias_log10: float = -0.1
    ngs_sd_log10: float = 0.15
    ngs_fraction: float = 0.5
    # transplant, death, follow-up
    hsct_fraction: float = 0.2
    nrm_per_year: float = 0.03
    nrm_after_hsct_per_year: float = 0.15
    death_nr_median_days: float = 210.0
    death_after_relapse_median_days: float = 365.0
    followup_min_days: float = 3 * 365.0
    followup_max_days: float = 5 * 365.0
    loss_to_followup_per_year: float = 0.02


# --------------------------------------------------------------------------- kinetics
# cart_curve, cart_auc and time_below live in toolkit.models.kinetics (imported above): the
# simulator uses the model's forward functions, not the other way round.


# --------------------------------------------------------------------------- population


def _draw_population(n: int, arm: np.ndarray, p: TrialParameters, e: Effects, rng) -> dict[str, np.ndarray]:
    """Latent patient-level quantities (no sampling of observations)."""
    z = lambda: rng.standard_normal(n)  # noqa: E731
    blasts = np.clip(np.exp(np.log(20.0) + 0.9 * z()), 1.0, 95.0)
    pop = {
        "arm": arm,
        "age_years": rng.uniform(12, 65, n),
        "sex": np.where(rng.random(n) < 0.5, "F", "M"),
        "baseline_blasts_pct": blasts,
        "car_t_dose_per_kg": rng.uniform(1e7, 2e7, n),
        "prior_hsct": (rng.random(n) < 0.5).astype(int),
    }
    pop["log_cmax"] = np.log(p.cmax) + arm * np.log(e.cmax_gmr) + p.omega_cmax * z()
    pop["cmax"] = np.exp(pop["log_cmax"])
    pop["tmax"] = np.exp(np.log(p.tmax) + p.omega_tmax * z())
    pop["foldx"] = np.exp(np.log(p.foldx) + p.omega_foldx * z())
    pop["alpha"] = np.exp(np.log(p.alpha) + p.omega_alpha * z())
    pop["fb"] = special.expit(special.logit(p.fb) + p.omega_fb * z())
    beta = np.exp(np.log(p.beta) - arm * np.log(e.persistence_half_life_ratio) + p.omega_beta * z())
    pop["beta"] = np.minimum(beta, pop["alpha"] / 2)
    kin = {k: pop[k] for k in ("cmax", "tmax", "foldx", "alpha", "beta", "fb")}
    pop["t_loss"] = time_below(p.lloq, **kin)
    z_cmax = (pop["log_cmax"] - np.log(p.cmax)) / p.omega_cmax
    pop["p_response"] = special.expit(special.logit(p.response_rate) + p.response_per_sd_cmax * z_cmax)
    pop["responder"] = rng.random(n) < pop["p_response"]
    pop["response_day"] = np.where(pop["responder"], 28.0, np.nan)
    pop["p_cure"] = special.expit(special.logit(p.cure_fraction) + arm * np.log(e.cure_odds_ratio))
    pop["cured"] = pop["responder"] & (rng.random(n) < pop["p_cure"])
    pop["eta"] = (arm * np.log(e.hazard_ratio_direct)
                  + p.log_hr_per_log_cmax * (pop["log_cmax"] - np.log(p.cmax))
                  + p.log_hr_baseline_blasts_pct * (blasts - 20.0))
    pop["clearance"] = np.exp(np.log(p.clearance_log10_per_day) + arm * np.log(e.clearance_rate_ratio)
                              + p.omega_clearance * z())
    pop["eta"] = pop["eta"] + p.log_hr_per_log_clearance * (np.log(pop["clearance"]) - np.log(p.clearance_log10_per_day))
    pop["mrd0"] = np.log10(blasts / 100.0)
    pop["floor"] = np.where(pop["cured"], -8.0, p.floor_uncured_log10 + p.floor_uncured_sd * z())
    pop["growth"] = np.log10(2.0) / np.exp(np.log(p.doubling_days) + p.omega_doubling * z())
    return pop


def _weibull_cumhaz(s, k, lam):
    return (np.maximum(s, 0.0) / lam) ** k


def _relapse_cumhaz(s, pop, p: TrialParameters, s_hsct=None):
    """Cumulative relapse hazard of the uncured at time s since response.

    With multiplier m(s) = exp(g_loss 1[s > c_loss] + g_hsct 1[s > c_hsct]) and
    H0(s) = (s/lam)^k, H(s) = e^eta [H0(s) + sum_j (e^{g_j}-1) D(c_j)
    + (e^{g_loss}-1)(e^{g_hsct}-1) D(max c)], D(c) = H0(s) - H0(min(s, c)).
    """
    k, lam = p.weibull_shape, p.weibull_scale_days
    h0 = _weibull_cumhaz(s, k, lam)

    def after(c):
        c = np.where(np.isfinite(c), c, np.inf)
        return h0 - _weibull_cumhaz(np.minimum(s, c), k, lam)

    c_loss = np.maximum(pop["t_loss"] - 28.0, 0.0)
    e_loss = np.expm1(p.log_hr_cart_loss)
    total = h0 + e_loss * after(c_loss)
    if s_hsct is not None:
        e_hsct = np.expm1(p.log_hr_hsct)
        total = total + e_hsct * after(s_hsct) + e_loss * e_hsct * after(np.maximum(c_loss, s_hsct))
    return np.exp(pop["eta"]) * total


def _invert_cumhaz(target, pop, p, s_hsct=None, horizon=40 * 365.0):
    """Smallest s with H(s) >= target, by bisection (H is increasing)."""
    lo = np.zeros_like(target)
    hi = np.full_like(target, horizon)
    beyond = _relapse_cumhaz(hi, pop, p, s_hsct) < target
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = _relapse_cumhaz(mid, pop, p, s_hsct) < target
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return np.where(beyond, np.inf, hi)


# --------------------------------------------------------------------------- one trial


@dataclass
class SimulatedTrial:
    """A simulated trial: cohort tables plus the latent truth per patient."""

    study: dict
    patients: pd.DataFrame
    outcomes: pd.DataFrame
    cart_kinetics: pd.DataFrame
    mrd: pd.DataFrame
    latent: pd.DataFrame
    truth: dict = field(default_factory=dict)

    def write(self, out: str | Path) -> Path:
        """Write the cohort folder (study.toml, CSVs, truth.json)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_study(out, self.study)
        for name in ("patients", "outcomes", "cart_kinetics", "mrd"):
            getattr(self, name).to_csv(out / f"{name}.csv", index=False, lineterminator="\n")
        (out / "truth.json").write_text(json.dumps(self.truth, indent=2, sort_keys=False) + "\n")
        return out


def _fmt(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return f"{x:.{digits}g}"


def _fmt_day(x: float) -> str:
    return "" if x is None or not math.isfinite(x) else str(int(round(x)))


def simulate_trial(n_patients: int = 60, seed: int = 20261125, effects: dict[str, float] | Effects | None = None,
                   parameters: TrialParameters | None = None, *, with_truth: bool = True,
                   post_event_samples: bool = False, cart_days=None, flow_days=None,
                   ngs_days=None) -> SimulatedTrial:
    """Draw one whole two-arm trial. See the module docstring for the story.

    Parameters
    ----------
    n_patients : number of randomized and infused patients (1:1 arms).
    seed : random seed; the same seed gives the same trial.
    effects : IFN-alpha effect sizes (``Effects`` or a dict of overrides).
    parameters : control-arm population parameters.
    with_truth : also compute ``truth`` (about a second).
    post_event_samples : also write CAR-T samples and MRD assessments taken after a transplant or a relapse
        (and a ``new_therapy_day``), which no model should read as the first infusion's course; see
        :func:`add_post_event_samples`. Off by default; on, every other row and the truth are unchanged.
    cart_days, flow_days, ngs_days : the sampling schedule (days since infusion) of CAR-T qPCR, flow MRD
        and NGS MRD (NGS only on flow days); default ``CART_DAYS``, ``FLOW_DAYS``, ``NGS_DAYS``. The
        patients (every latent quantity) do not depend on the schedule, so schedules compared with one seed
        see the same patients; non-responders keep their day-28 flow assessment.
    """
    if n_patients < 2:
        raise ValueError("n_patients must be at least 2 (one a arm)")
    e = effects if isinstance(effects, Effects) else Effects().with_overrides(effects or {})
    p = parameters or TrialParameters()
    rng = np.random.default_rng(seed)
    n = n_patients
    arm = rng.permutation(np.arange(n) % 2)
    pop = _draw_population(n, arm, p, e, rng)

    # transplant, relapse, death, follow-up (days since infusion)
    resp = pop["responder"]
    s_hsct = np.where(resp & (rng.random(n) < p.hsct_fraction), rng.uniform(45, 120, n), np.inf)
    s_relapse = np.where(resp & ~pop["cured"], _invert_cumhaz(rng.exponential(size=n), pop, p, s_hsct), np.inf)
    relapse_day = 28.0 + s_relapse
    hsct_day = np.where(s_hsct < s_relapse, 28.0 + s_hsct, np.inf)
    nrm = p.nrm_per_year / 365.0
    nrm_hsct = p.nrm_after_hsct_per_year / 365.0
    # death in remission: rate nrm before HSCT, nrm_hsct after
    u = rng.exponential(size=n)
    t_before = np.where(np.isfinite(hsct_day), hsct_day - 28.0, np.inf)
    with np.errstate(invalid="ignore"):  # inf - inf for patients without HSCT, not used
        s_death_rem = np.where(u / nrm < t_before, u / nrm, t_before + (u - nrm * t_before) / nrm_hsct)
    death_rem_day = 28.0 + s_death_rem
    death_nr_day = rng.exponential(p.death_nr_median_days / np.log(2), n)
    death_after_relapse = relapse_day + rng.exponential(p.death_after_relapse_median_days / np.log(2), n)
    death_day = np.where(resp, np.where(relapse_day < death_rem_day, death_after_relapse, death_rem_day), death_nr_day)
    relapse_day = np.where(relapse_day < death_rem_day, relapse_day, np.inf)
    hsct_day = np.where(hsct_day < np.minimum(relapse_day, death_day), hsct_day, np.inf)
    admin = rng.uniform(p.followup_min_days, p.followup_max_days, n)
    lost = 28.0 + rng.exponential(365.0 / p.loss_to_followup_per_year, n)  # after the day-28 response assessment
    last = np.minimum.reduce([admin, lost, death_day])
    died = death_day <= last
    relapse_seen = relapse_day <= last
    hsct_seen = hsct_day <= last

    # CD19 status of relapse
    persisting = relapse_day < pop["t_loss"]
    cd19 = np.where(rng.random(n) < np.where(persisting, 0.8, 0.1), "negative", "positive")
    cd19 = np.where(rng.random(n) < 0.05, "unknown", cd19)

    ids = [f"P{i + 1:03d}" for i in range(n)]
    labels = np.where(arm == 1, EXPERIMENTAL_LABEL, CONTROL_LABEL)
    patients = pd.DataFrame({
        "patient_id": ids, "arm": labels,
        "age_years": [_fmt(round(a)) for a in pop["age_years"]],
        "sex": pop["sex"],
        "baseline_blasts_pct": [_fmt(b, 3) for b in pop["baseline_blasts_pct"]],
        "car_t_dose_per_kg": [f"{d:.2e}" for d in pop["car_t_dose_per_kg"]],
        "prior_hsct": pop["prior_hsct"],
    })
    response = np.where(resp, np.where(rng.random(n) < 0.8, "CR", "CRi"), "NR")
    # a relapse or transplant day equal to last follow-up is on the last visit; keep them integer-consistent
    last_i = np.ceil(last)
    outcomes = pd.DataFrame({
        "patient_id": ids, "response": response,
        "response_day": [_fmt_day(d) for d in pop["response_day"]],
        "relapse_day": [_fmt_day(min(d, l)) if s else "" for d, l, s in zip(relapse_day, last_i, relapse_seen)],
        "relapse_cd19": [c if s else "" for c, s in zip(cd19, relapse_seen)],
        "hsct_day": [_fmt_day(min(d, l)) if s else "" for d, l, s in zip(hsct_day, last_i, hsct_seen)],
        "death_day": [_fmt_day(l) if s else "" for l, s in zip(last_i, died)],
        "last_followup_day": [_fmt_day(l) for l in last_i],
    })
    # relapse must come strictly after response (day 28): push same-day relapses by one day
    rd = pd.to_numeric(outcomes["relapse_day"], errors="coerce")
    outcomes.loc[rd <= 28, "relapse_day"] = "29"
    bump = (rd <= 28) & (last_i < 29)
    outcomes.loc[bump, "last_followup_day"] = "29"
    outcomes.loc[bump & died, "death_day"] = "29"

    # end of kinetics sampling: relapse, transplant, death or last follow-up
    stop = np.minimum.reduce([np.where(relapse_seen, relapse_day, np.inf), np.where(hsct_seen, hsct_day, np.inf), last])
    cart_rows, mrd_rows = [], []
    kin = {k: pop[k] for k in ("cmax", "tmax", "foldx", "alpha", "beta", "fb")}
    schedule = (tuple(FLOW_DAYS if flow_days is None else flow_days), tuple(NGS_DAYS if ngs_days is None else ngs_days))
    for i in range(n):
        days = np.array(CART_DAYS if cart_days is None else cart_days, float)
        jitter = np.where(days > 28, np.round(rng.uniform(-0.05, 0.05, days.size) * days), 0.0)
        days = np.unique(days + jitter)
        days = days[days <= min(stop[i], last_i[i])]
        level = cart_curve(days, *(np.full(days.size, kin[k][i]) for k in kin))
        y = level * np.exp(p.sigma_cart * rng.standard_normal(days.size))
        for d, v in zip(days, y):
            cart_rows.append((ids[i], int(d), "BLQ" if v < p.lloq else _fmt(v), _fmt(p.lloq), "copies/ug"))
        mrd_rows += _mrd_assessments(i, ids[i], pop, p, relapse_day[i], relapse_seen[i], stop[i], last_i[i], rng,
                                     schedule)
    cart = pd.DataFrame(cart_rows, columns=["patient_id", "day", "value", "lloq", "unit"])
    mrd = pd.DataFrame(mrd_rows, columns=["patient_id", "day", "mrd_pct", "lod_pct", "loq_pct", "method", "specimen"])
    latent = pd.DataFrame({k: v for k, v in pop.items()}, index=ids)
    latent["relapse_day_latent"] = relapse_day
    study = {"name": f"Simulated IFN-a + CAR-T trial (seed {seed})", "control_arm": CONTROL_LABEL,
             "experimental_arm": EXPERIMENTAL_LABEL,
             "notes": "Synthetic data from toolkit.simulate; see truth.json for the true values."}
    trial = SimulatedTrial(study, patients, outcomes, cart, mrd, latent)
    if post_event_samples:
        add_post_event_samples(trial, p, np.random.default_rng([seed, 1]))
    if with_truth:
        trial.truth = {"seed": seed, "n_patients": n, "effects": asdict(e), "parameters": asdict(p),
                       "estimands": compute_truth(e, p)}
    return trial


#: Post-event story of ``add_post_event_samples``: conditioning before an allogeneic HSCT ablates CAR-T cells
#: (level x exp(-rate (t - HSCT day))); a relapse is followed, RETREAT_DELAY_DAYS later, by a CAR-T
#: re-infusion that expands to REINFUSION_CMAX_FRACTION of the first peak (the patient's own curve restarted).
ABLATION_RATE_PER_DAY = 0.7
RETREAT_DELAY_DAYS = 21
REINFUSION_CMAX_FRACTION = 0.3


def add_post_event_samples(trial: SimulatedTrial, p: TrialParameters, rng) -> SimulatedTrial:
    """Append samples taken after each patient's transplant or relapse to ``trial`` (in place).

    The first infusion's rows are untouched, so a cohort with these samples cut (``toolkit.data.inputs``'
    kinetic cut) holds exactly the rows of the same trial simulated without them. After HSCT day h:
    CAR-T at the ``CART_DAYS`` after h, level C(t) exp(-``ABLATION_RATE_PER_DAY`` (t - h)) (mostly BLQ),
    and flow MRD negative at the ``FLOW_DAYS`` after h (the transplant clears disease). After relapse
    day r: flow MRD at r + 14 still rising (regrowth continued), a CAR-T re-infusion on
    ``new_therapy_day`` n = r + ``RETREAT_DELAY_DAYS`` (when followed that long), then CAR-T at n + 7, 14,
    28 on the patient's own curve restarted at n with ``REINFUSION_CMAX_FRACTION`` of the first Cmax, and
    flow MRD negative at n + 28. Samples beyond last follow-up are not written.
    """
    latent, out = trial.latent, trial.outcomes
    day = lambda col: pd.to_numeric(out[col], errors="coerce").to_numpy(float)  # noqa: E731
    hsct, relapse, last = day("hsct_day"), day("relapse_day"), day("last_followup_day")
    new_therapy = np.where(relapse + RETREAT_DELAY_DAYS <= last, relapse + RETREAT_DELAY_DAYS, np.nan)
    kin = [latent[k].to_numpy(float) for k in ("cmax", "tmax", "foldx", "alpha", "beta", "fb")]
    cart_rows, mrd_rows = [], []
    for i, pid in enumerate(out["patient_id"]):
        params = [k[i] for k in kin]
        if np.isfinite(hsct[i]):
            days = np.array([d for d in CART_DAYS if hsct[i] < d <= last[i]], float)
            level = cart_curve(days, *params) * np.exp(-ABLATION_RATE_PER_DAY * (days - hsct[i]))
            cart_rows += [(pid, d, v) for d, v in zip(days, level)]
            mrd_rows += [(pid, d, "negative") for d in FLOW_DAYS if hsct[i] < d <= last[i]]
        if np.isfinite(relapse[i]):
            d = relapse[i] + 14
            if d <= last[i]:
                obs = np.log10(0.05) + latent["growth"].iloc[i] * 14 + p.flow_sd_log10 * rng.standard_normal()
                mrd_rows.append((pid, d, _fmt(min(10 ** obs * 100, 99.0), 3)))
            if np.isfinite(new_therapy[i]):
                n = new_therapy[i]
                days = np.array([n + d for d in (7, 14, 28) if n + d <= last[i]], float)
                again = [params[0] * REINFUSION_CMAX_FRACTION] + params[1:]
                cart_rows += [(pid, d, v) for d, v in zip(days, cart_curve(days - n, *again))]
                if n + 28 <= last[i]:
                    mrd_rows.append((pid, n + 28, "negative"))
    noisy = [(pid, int(d), v * np.exp(p.sigma_cart * rng.standard_normal())) for pid, d, v in cart_rows]
    extra_cart = pd.DataFrame([(pid, d, "BLQ" if v < p.lloq else _fmt(v), _fmt(p.lloq), "copies/ug")
                               for pid, d, v in noisy], columns=trial.cart_kinetics.columns)
    extra_mrd = pd.DataFrame([(pid, int(d), text, "0.01", "", "flow", "BM") for pid, d, text in mrd_rows],
                             columns=trial.mrd.columns)
    order = {pid: k for k, pid in enumerate(out["patient_id"])}

    def combine(old, new, keys):
        both = pd.concat([old, new], ignore_index=True).drop_duplicates(subset=keys, keep="first")
        rank = both["patient_id"].map(order)
        return both.assign(_p=rank, _d=both["day"].astype(int)).sort_values(["_p", "_d"], kind="stable") \
            .drop(columns=["_p", "_d"]).reset_index(drop=True)

    trial.cart_kinetics = combine(trial.cart_kinetics, extra_cart, ["patient_id", "day"])
    trial.mrd = combine(trial.mrd, extra_mrd, ["patient_id", "day", "method", "specimen"])
    position = list(out.columns).index("death_day")
    out.insert(position, "new_therapy_day", [_fmt_day(d) for d in new_therapy])
    return trial


def _true_mrd(t, i, pop, relapse_day):
    """True log10 MRD of patient i at days t."""
    decline = np.maximum(pop["mrd0"][i] - pop["clearance"][i] * t, pop["floor"][i])
    if not pop["responder"][i]:
        return np.maximum(decline, np.log10(0.05) + 0.3)
    regrowth = np.log10(0.05) - pop["growth"][i] * (relapse_day - t)
    return np.maximum(decline, regrowth) if np.isfinite(relapse_day) else decline


def _mrd_assessments(i, pid, pop, p, relapse_day, relapse_seen, stop, last, rng, schedule=(FLOW_DAYS, NGS_DAYS)):
    rows = []
    flow_schedule, ngs_schedule = schedule
    flow_days = [d for d in flow_schedule if d <= min(stop, last)] if pop["responder"][i] else [28]
    if relapse_seen:
        flow_days.append(int(min(round(relapse_day), last)))
    flow_days = sorted(set(d for d in flow_days if d <= last))
    ngs = pop["responder"][i] and rng.random() < p.ngs_fraction
    ngs_days = set(d for d in ngs_schedule if d in flow_days) if ngs else set()
    for d in flow_days:
        true = _true_mrd(np.array([float(d)]), i, pop, relapse_day)[0]
        obs = true + p.flow_bias_log10 + p.flow_sd_log10 * rng.standard_normal()
        pct = min(10 ** obs * 100, 99.0)
        rows.append((pid, d, "negative" if pct < 0.01 else _fmt(pct, 3), "0.01", "", "flow", "BM"))
        if d in ngs_days:
            obs = true + p.ngs_sd_log10 * rng.standard_normal()
            pct = min(10 ** obs * 100, 99.0)
            text = "negative" if pct < 1e-4 else ("PNQ" if pct < 1e-3 else _fmt(pct, 3))
            rows.append((pid, d, text, "0.0001", "0.001", "ngs", "BM"))
    return rows


# --------------------------------------------------------------------------- truth


def _weibull_ph_mle(time, event, arm) -> float:
    """Log hazard ratio of a Weibull PH maximum-likelihood fit (used for the truth projection)."""

    def nll(theta):
        log_k, log_lam, b = theta
        k, lam = np.exp(log_k), np.exp(log_lam)
        lin = b * arm
        z = (time / lam) ** k * np.exp(lin)
        logh = np.log(k / lam) + (k - 1) * np.log(time / lam) + lin
        return -(np.sum(event * logh) - np.sum(z))

    res = optimize.minimize(nll, x0=[0.0, np.log(np.median(time)), 0.0], method="Nelder-Mead",
                            options={"xatol": 1e-6, "fatol": 1e-6, "maxiter": 4000})
    return float(res.x[2])


MEDIATION_TAU_DAYS = 365.0


def compute_truth(effects: Effects | None = None, parameters: TrialParameters | None = None,
                  n: int = TRUTH_PATIENTS, seed: int = 1) -> dict[str, float]:
    """Every true estimand of the story, by name (see the module docstring for definitions)."""
    e, p = effects or Effects(), parameters or TrialParameters()
    rng = np.random.default_rng(seed)
    truth: dict[str, float] = {}
    pops = {}
    for a, name in ((0, "control"), (1, "experimental")):
        pop = _draw_population(n, np.full(n, a), p, e, rng)
        pops[name] = pop
        resp = pop["responder"]
        r = {k: v[resp] for k, v in pop.items()}
        truth[f"response_rate_{name}"] = float(resp.mean())
        pi = r["p_cure"]
        nrm = p.nrm_per_year / 365.0

        def rfs(d):
            return float(np.mean(np.exp(-nrm * d) * (pi + (1 - pi) * np.exp(-_relapse_cumhaz(np.full(pi.size, d), r, p)))))

        for d in RFS_HORIZONS:
            truth[f"rfs_{d}d_{name}"] = rfs(d)
        # the same crossing, horizon and bisection as the posterior's median_rfs_days
        median = first_crossing(lambda d: np.array([rfs(d[0])]), 1, 0.0, MEDIAN_HORIZON_DAYS)[0]
        if np.isfinite(median):
            truth[f"median_rfs_days_{name}"] = float(median)
        truth[f"cure_fraction_{name}"] = float(np.mean(pi))
        # competing risks among responders (no HSCT): relapse-only survival S_rel (the cure mixture) and
        # NRM survival S_n on the grid the posterior uses, CIR = int S_n d(1 - S_rel)
        grid = incidence_grid(max(RFS_HORIZONS))
        s_rel = np.array([np.mean(pi + (1 - pi) * np.exp(-_relapse_cumhaz(np.full(pi.size, g), r, p))) for g in grid])
        s_nrm = np.exp(-nrm * grid)
        cir, nrm_inc = cumulative_incidence(s_rel, s_nrm), cumulative_incidence(s_nrm, s_rel)
        for d in RFS_HORIZONS:
            j = int(np.argmin(np.abs(grid - d)))
            truth[f"cir_{d}d_{name}"] = float(cir[j])
            truth[f"nrm_{d}d_{name}"] = float(nrm_inc[j])
            # EFS from infusion: non-response an event at day 0, responders in remission from day 28
            truth[f"efs_{d}d_{name}"] = float(resp.mean()) * rfs(max(d - RESPONSE_DAY, 0.0))
        # CAR-T typical patient (population medians)
        typ = dict(cmax=p.cmax * (e.cmax_gmr if a else 1.0), tmax=p.tmax, foldx=p.foldx, alpha=p.alpha,
                   beta=min(p.beta / (e.persistence_half_life_ratio if a else 1.0), p.alpha / 2), fb=p.fb)
        truth[f"cmax_copies_per_ug_{name}"] = typ["cmax"]
        truth[f"tmax_days_{name}"] = typ["tmax"]
        truth[f"auc_0_28_{name}"] = float(cart_auc(28.0, **typ))
        truth[f"half_life_contraction_days_{name}"] = math.log(2) / typ["alpha"]
        truth[f"half_life_persistence_days_{name}"] = math.log(2) / typ["beta"]
        truth[f"persistence_fraction_{name}"] = typ["fb"]
        kin = {k: pop[k] for k in ("cmax", "tmax", "foldx", "alpha", "beta", "fb")}
        pop["log_auc28"] = np.log(cart_auc(28.0, **kin))
        # MRD
        mrd28 = np.where(pop["responder"], np.maximum(pop["mrd0"] - 28 * pop["clearance"], pop["floor"]), 0.0)
        s_rel = np.where(resp & ~pop["cured"], _invert_cumhaz(rng.exponential(size=n), pop, p), np.inf)
        rel_day = 28.0 + s_rel
        regrow28 = np.log10(0.05) - pop["growth"] * (rel_day - 28.0)
        mrd28 = np.where(pop["responder"], np.maximum(mrd28, regrow28), mrd28)
        # among responders, the population the MRD model analyses (non-responders never clear)
        truth[f"mrd_negative_28d_flow_{name}"] = float(np.mean(mrd28[resp] < -4))
        truth[f"mrd_negative_28d_ngs_{name}"] = float(np.mean(mrd28[resp] < -6))
        t_recur = rel_day - (np.log10(0.05) + 4.0) / pop["growth"]
        neg28 = pop["responder"] & (mrd28 < -4)
        truth[f"mrd_recurrence_365d_{name}"] = float(np.mean(t_recur[neg28] <= 365))
        t_neg = (pop["mrd0"] + 4.0) / pop["clearance"]
        reach = pop["responder"] & (pop["floor"] < -4) & (t_neg < t_recur)
        truth[f"time_to_mrd_negativity_days_{name}"] = float(np.median(np.maximum(t_neg[reach], 0.0)))
        pop["s_relapse"] = s_rel
    c, x = pops["control"], pops["experimental"]
    for what in ("rfs", "efs", "cir", "nrm"):
        for d in RFS_HORIZONS:
            truth[f"{what}_{d}d_difference"] = truth[f"{what}_{d}d_experimental"] - truth[f"{what}_{d}d_control"]
    truth["response_rate_difference"] = truth["response_rate_experimental"] - truth["response_rate_control"]
    truth["cure_fraction_difference"] = truth["cure_fraction_experimental"] - truth["cure_fraction_control"]
    truth["mrd_recurrence_365d_difference"] = truth["mrd_recurrence_365d_experimental"] - truth["mrd_recurrence_365d_control"]
    truth["cmax_gmr"] = float(np.exp(x["log_cmax"].mean() - c["log_cmax"].mean()))
    truth["auc28_gmr"] = float(np.exp(x["log_auc28"].mean() - c["log_auc28"].mean()))
    truth["tmax_difference_days"] = truth["tmax_days_experimental"] - truth["tmax_days_control"]
    truth["persistence_half_life_ratio"] = (truth["half_life_persistence_days_experimental"]
                                            / truth["half_life_persistence_days_control"])
    truth["clearance_rate_ratio"] = e.clearance_rate_ratio
    truth["hazard_ratio_direct"] = e.hazard_ratio_direct
    truth["log_hr_per_log_cmax"] = p.log_hr_per_log_cmax
    truth["log_hr_cart_loss"] = p.log_hr_cart_loss
    truth["log_hr_hsct"] = p.log_hr_hsct
    truth["log_hr_baseline_blasts_pct"] = p.log_hr_baseline_blasts_pct
    # mediation through kinetics (toolkit.models.joint): mean cumulative hazard of the uncured at 365 days
    # after response, over all infused patients of an arm (kinetics K_a), as if each were an uncured responder
    tau = np.full(n, MEDIATION_TAU_DAYS)
    h_11 = float(np.mean(_relapse_cumhaz(tau, x, p)))
    h_00 = float(np.mean(_relapse_cumhaz(tau, c, p)))
    truth["hazard_ratio_total"] = h_11 / h_00
    truth["hazard_ratio_indirect"] = truth["hazard_ratio_total"] / e.hazard_ratio_direct
    # the MRD part: the experimental arm's kinetics with the control arm's kill rates (independent of kinetics)
    clearance_term = lambda pop: p.log_hr_per_log_clearance * np.log(pop["clearance"])  # noqa: E731
    x_m0 = dict(x, eta=x["eta"] - clearance_term(x) + clearance_term(c))
    truth["hazard_ratio_indirect_mrd"] = h_11 / float(np.mean(_relapse_cumhaz(tau, x_m0, p)))
    truth["hazard_ratio_indirect_cart"] = truth["hazard_ratio_indirect"] / truth["hazard_ratio_indirect_mrd"]
    truth["log_hr_per_log_clearance"] = p.log_hr_per_log_clearance
    truth["proportion_mediated"] = (math.log(truth["hazard_ratio_indirect"]) / math.log(truth["hazard_ratio_total"])
                                    if truth["hazard_ratio_total"] != 1.0 else float("nan"))
    # Weibull-PH projections on the design (admin censoring U(3, 5) years, death in remission an event)
    times, events, relapses, arms, uncured = [], [], [], [], []
    for a, pop in ((0, c), (1, x)):
        resp = pop["responder"]
        s_rel = pop["s_relapse"][resp]
        s_death = rng.exponential(365.0 / p.nrm_per_year, resp.sum())
        s_cens = rng.uniform(p.followup_min_days, p.followup_max_days, resp.sum()) - 28.0
        t = np.minimum.reduce([s_rel, s_death, s_cens])
        times.append(np.maximum(t, 1e-3)), events.append((t < s_cens).astype(float))
        relapses.append(((s_rel <= s_death) & (s_rel < s_cens)).astype(float))
        arms.append(np.full(t.size, float(a))), uncured.append(~pop["cured"][resp])
    t, ev, rel, ar, un = (np.concatenate(v) for v in (times, events, relapses, arms, uncured))
    sub = rng.random(t.size) < min(1.0, 100_000 / t.size)  # the MLE is precise well before 200k
    truth["hazard_ratio"] = math.exp(_weibull_ph_mle(t[sub], ev[sub], ar[sub]))
    # cause-specific relapse hazard ratios (death in remission censors relapse), as the models with NRM as its
    # own hazard estimate them: among the uncured (the cure model) and among all responders (Weibull)
    truth["hazard_ratio_relapse"] = math.exp(_weibull_ph_mle(t[sub], rel[sub], ar[sub]))
    sub = sub & un
    truth["hazard_ratio_uncured"] = math.exp(_weibull_ph_mle(t[sub], rel[sub], ar[sub]))
    return {k: float(v) for k, v in sorted(truth.items())}
