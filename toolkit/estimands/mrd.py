"""Decision quantities and per-patient predictions of the MRD model (``toolkit.models.mrd``).

Population quantities have no closed form (they mix the two classes, the
between-patient spread and the day-28 conditioning), so for every posterior
draw ``n_simulated`` new responders are simulated from that draw's population
(fixed seed; the same random numbers in both arms, so arm differences carry
no extra simulation noise). Baseline burdens and covariates of the new
patients are resampled from the analysed patients: population quantities are
standardized to this cohort's case mix.

Population: every MRD quantity is among **responders** (CR/CRi), the
patients the kinetic part analyses, and ``toolkit.simulate.compute_truth``
defines the truth over the same population.

"True MRD" is the model's latent m(t) on the reference assay's scale (NGS
when present), the counterpart of the simulator's true MRD (NGS unbiased).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.special import expit

from toolkit.data.from_run import mrd_inputs_from_run  # noqa: F401  (its old home; rebuilt in the data layer)
from toolkit.data.mrd_inputs import MrdInputs
from toolkit.estimands.core import finite_draws, posterior_probability, summarize_draws
from toolkit.models.mrd import (
    LATENCY_ORIGIN_DAY,
    LOG10_2,
    RELAPSE_LOG10,
    RESIDUAL_DF,
    MrdPriors,
    class_logliks_numpy,
    mrd_log10_numpy,
    residual_family,
)

__all__ = ["DEFAULT_DAY_GRID", "filled_detection_limits", "mrd_estimands", "mrd_inputs_from_run", "patient_recurrence",
           "patient_trajectories", "replicated_negative", "residual_df_of_run", "simulate_population"]

FLOW_LIMIT_LOG10 = -4.0  # 0.01 %: MRD-negative by flow (MRD-CR threshold; van Dongen 2015 Blood 125:3996)
NGS_LIMIT_LOG10 = -6.0  # 1e-6: NGS sensitivity
DAY_28 = 28.0
DAY_365 = 365.0
DEFAULT_DAY_GRID = (0, 7, 14, 21, 28, 45, 60, 90, 120, 150, 180, 240, 270, 300, 365, 450, 540, 630, 730)
ARM_NAMES = ("control", "experimental")
DEFAULT_SEED = 20261125


def _draws(posterior, name) -> np.ndarray:
    """(draws, ...) array of a posterior variable (chains stacked)."""
    arr = posterior[name].to_numpy()
    return arr.reshape(-1, *arr.shape[2:])


def _has(posterior, name) -> bool:
    return name in getattr(posterior, "data_vars", posterior)


def _patient_growth(post, sl=slice(None)) -> np.ndarray:
    """Per-patient regrowth rate g_i = log10(2) / Td_i, (draws, patients) or (draws, 1) for runs of model
    1.0, which had one doubling time for all patients."""
    if _has(post, "patient_doubling_time_days"):
        return LOG10_2 / _draws(post, "patient_doubling_time_days")[sl]
    return LOG10_2 / _draws(post, "mrd_doubling_time_days")[sl][:, None]


def _rows_of(per_patient: np.ndarray, patient: np.ndarray) -> np.ndarray:
    """Columns of a (draws, patients) array for each row's patient; a (draws, 1) array broadcasts as it is."""
    return per_patient if per_patient.shape[1] == 1 else per_patient[:, patient]


def _posterior(dt):
    """Accept a DataTree (uses its ``posterior`` group) or the posterior Dataset itself."""
    try:
        return dt["posterior"].to_dataset()
    except (KeyError, AttributeError, TypeError):
        return dt


def residual_df_of_run(run) -> int | None:
    """The measurement error of the model that fitted ``run`` (a run folder or a fit in memory): the
    Student-t degrees of freedom of its version (``provenance.json`` ``model_version``), or None for the
    Normal error of runs fitted before MRD 1.4.0. Every per-patient quantity recomputed from an old run's
    posterior must use it, so that it agrees with the likelihood the run was fitted with."""
    return residual_family((getattr(run, "provenance", None) or {}).get("model_version"))


def simulate_population(posterior, inputs: MrdInputs, *, arm: int, n_simulated: int = 2000,
                        random_seed: int = DEFAULT_SEED, draw_slice: slice = slice(None)) -> dict[str, np.ndarray]:
    """New responders drawn from each posterior draw's population: arrays (draws, n_simulated).

    Returns ``baseline``, ``clearance``, ``recurrence`` (bool, class R), ``floor``, ``relapse_day``,
    ``growth`` (log10/day). Random numbers depend only on ``random_seed`` (not on ``arm``).
    """
    post = _posterior(posterior)
    rng = np.random.default_rng(random_seed)
    n = int(n_simulated)
    rows = rng.integers(0, inputs.n_patients, n)
    z = {k: rng.standard_normal(n) for k in ("baseline", "clearance", "floor")}
    z["doubling"] = rng.standard_normal(n)  # drawn after the others, so model 1.0 runs keep their draws
    w_latency = np.log(rng.standard_exponential(n))
    u = rng.random(n)
    g = lambda name: _draws(post, name)[draw_slice]  # noqa: E731
    col = lambda a: a.reshape(-1, 1)  # noqa: E731
    x = inputs.x_std[rows] if inputs.covariates else None

    missing = inputs.baseline_missing[rows]
    anchor = np.nan_to_num(inputs.baseline_log10[rows])
    mu_b, sd_b = inputs.baseline_log10_mean, inputs.baseline_log10_sd
    if not (np.isfinite(mu_b) and np.isfinite(sd_b) and sd_b > 0):
        mu_b, sd_b = MrdPriors().baseline_log10_fallback
    baseline = np.where(missing, mu_b + sd_b * z["baseline"], anchor + col(g("baseline_anchor_sd")) * z["baseline"])
    log_k = col(g("log_clearance") + g("clearance_log_ratio") * arm) + col(g("clearance_sd")) * z["clearance"]
    eta = col(g("logit_recurrence") + g("recurrence_log_or") * arm) + np.zeros(n)
    if x is not None:
        log_k = log_k + g("covariate_clearance") @ x.T
        eta = eta + g("covariate_recurrence") @ x.T
    recurrence = u < 1.0 / (1.0 + np.exp(-eta))
    floor = RELAPSE_LOG10 - np.logaddexp(0.0, col(g("floor_depth_log10")) + col(g("floor_depth_sd_log10")) * z["floor"])
    # Weibull latency: log s = mu + omega w, w = log Exponential(1) (the model's log_weibull family)
    latency = np.exp(col(g("log_relapse_latency") + g("relapse_log_time_ratio") * arm)
                     + col(g("relapse_sd")) * w_latency)
    log_td = col(g("log_doubling_days")) + np.zeros(n)
    if _has(post, "doubling_sd"):  # model 1.1: each patient's own doubling time, log-normal between patients
        log_td = log_td + col(g("doubling_sd")) * z["doubling"]
    doubling = np.exp(log_td)
    return {"baseline": baseline, "clearance": np.exp(log_k), "recurrence": recurrence, "floor": floor,
            "relapse_day": LATENCY_ORIGIN_DAY + latency, "growth": LOG10_2 / doubling}


def _time_to_negativity(pop: dict[str, np.ndarray], sustained_floor: float, level: float = FLOW_LIMIT_LOG10):
    """First day true MRD falls below ``level`` (NaN if it never does before regrowth); numpy.

    m(t) is convex on the linear scale, so it falls below ``level`` at most once before its minimum
    t*. Closed form ignoring the regrowing clone, then bisection on [0, t*] wherever that clone is
    within 3 log10 of ``level`` at the first guess (where ignoring it could matter).
    """
    b, k, f = pop["baseline"], pop["clearance"], np.where(pop["recurrence"], pop["floor"], sustained_floor)
    rec, g, rday = pop["recurrence"], pop["growth"], pop["relapse_day"]
    target = 10.0 ** level

    def m(t):
        return mrd_log10_numpy(t, b, k, pop["floor"], rday, g, rec, sustained_floor)

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        gap = np.log10(np.maximum(target - 10.0 ** f, 1e-300))
        t0 = np.maximum((b - gap) / k, 0.0)
        c = RELAPSE_LOG10 - g * rday  # regrowth G(t) = c + g t
        t_star = np.where(rec, np.maximum((b - c - np.log10(g / k)) / (k + g), 0.0), np.inf)
    t_min = np.where(rec, t_star, np.maximum(t0, 0.0) + 1.0)
    reach = (f < level) & (m(np.minimum(t_min, 1e6)) < level)
    t = np.where(reach, np.minimum(t0, t_min), np.nan)
    near = reach & rec & (c + g * np.nan_to_num(t) > level - 3.0)
    if near.any():
        lo, hi = np.zeros(near.sum()), t_min[near]
        sub = {key: v[near] for key, v in pop.items()}
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            above = mrd_log10_numpy(mid, sub["baseline"], sub["clearance"], sub["floor"], sub["relapse_day"],
                                    sub["growth"], sub["recurrence"], sustained_floor) >= level
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        t[near] = hi
    already = reach & (m(np.zeros_like(b)) < level)
    return np.where(already, 0.0, t)


def population_mrd_draws(posterior, inputs: MrdInputs, *, n_simulated: int = 2000, random_seed: int = DEFAULT_SEED,
                         priors: MrdPriors | None = None, chunk: int = 250) -> dict[str, np.ndarray]:
    """Per-draw population quantities by arm (``{name}_{arm}`` -> (draws,)); see :func:`mrd_estimands`."""
    post = _posterior(posterior)
    floor_s = (priors or MrdPriors()).sustained_floor_log10
    n_draws = _draws(post, "log_clearance").shape[0]
    out: dict[str, list] = {}
    for a, name in enumerate(ARM_NAMES):
        for start in range(0, n_draws, chunk):
            sl = slice(start, min(start + chunk, n_draws))
            pop = simulate_population(post, inputs, arm=a, n_simulated=n_simulated, random_seed=random_seed,
                                      draw_slice=sl)
            args = (pop["baseline"], pop["clearance"], pop["floor"], pop["relapse_day"], pop["growth"],
                    pop["recurrence"], floor_s)
            m28 = mrd_log10_numpy(DAY_28, *args)
            m365 = mrd_log10_numpy(DAY_365, *args)
            neg28 = m28 < FLOW_LIMIT_LOG10
            # m is convex on the linear scale: below the limit at 28 and at 365 means below throughout
            recur = neg28 & pop["recurrence"] & (m365 >= FLOW_LIMIT_LOG10)
            t_neg = _time_to_negativity(pop, floor_s)
            parts = {
                "mrd_negative_28d_flow": neg28.mean(axis=1),
                "mrd_negative_28d_ngs": (m28 < NGS_LIMIT_LOG10).mean(axis=1),
                "mrd_recurrence_365d": recur.sum(axis=1) / np.maximum(neg28.sum(axis=1), 1),
                "time_to_mrd_negativity_days": np.nanmedian(np.where(np.isfinite(t_neg), t_neg, np.nan), axis=1),
            }
            for key, v in parts.items():
                out.setdefault(f"{key}_{name}", []).append(v)
    return {k: np.concatenate(v) for k, v in out.items()}


def mrd_estimands(posterior, inputs: MrdInputs, *, ci_prob: float = 0.9, n_simulated: int = 2000,
                  random_seed: int = DEFAULT_SEED, priors: MrdPriors | None = None,
                  warnings_out: list[str] | None = None) -> dict:
    """Decision quantities of the MRD model, named as in ``truth.json``.

    - ``clearance_rate_ratio`` = exp(b_k): ratio of typical (median) clearance rates, experimental /
      control; exactly the simulator's ``clearance_rate_ratio``. ``prob_clearance_rate_ratio_above_1``.
    - ``mrd_negative_28d_flow_{arm}`` / ``mrd_negative_28d_ngs_{arm}``: P(true MRD at day 28 < 1e-4 /
      < 1e-6) among **responders** (CR/CRi), the population the kinetic part analyses; the
      simulator's truth uses the same population. Among all infused patients (non-responders
      counted MRD-positive) it is, draw by draw, ``response_rate`` x this.
    - ``mrd_recurrence_365d_{arm}``: P(true MRD rises to >= 1e-4 by day 365 | responder, below 1e-4 at
      day 28), in the world without HSCT and death (regrowth is a latent process of the model,
      follow-up stopping at HSCT/death only censors it); ``mrd_recurrence_365d_difference``
      (experimental - control) and ``prob_mrd_recurrence_365d_lower`` = P(experimental < control).
    - ``time_to_mrd_negativity_days_{arm}``: median day true MRD first falls below 1e-4 among
      responders who get there (before any regrowth). The kill phase ends before the first
      assessment (day 28), so this is driven mostly by the prior on the clearance rate and by the
      baseline burdens. A draw in which no simulated responder gets there has no such day: it is left
      out and counted in a message appended to ``warnings_out`` (the fit's summary.json ``warnings``;
      a ``UserWarning`` without a list); with fewer than 2 such days the estimand is not reported.

    Each is ``summarize_draws`` output (mean, median, sd, hdi_<ci>) except the ``prob_*`` floats.
    """
    post = _posterior(posterior)
    out: dict = {}
    ratio = _draws(post, "clearance_rate_ratio").ravel()
    out["clearance_rate_ratio"] = summarize_draws(ratio, ci_prob=ci_prob)
    out["prob_clearance_rate_ratio_above_1"] = posterior_probability(ratio, above=1.0)
    pop = population_mrd_draws(post, inputs, n_simulated=n_simulated, random_seed=random_seed, priors=priors)
    for name in ARM_NAMES:
        for key in ("mrd_negative_28d_flow", "mrd_negative_28d_ngs"):
            out[f"{key}_{name}"] = summarize_draws(pop[f"{key}_{name}"], ci_prob=ci_prob)
    for name in ARM_NAMES:
        out[f"mrd_recurrence_365d_{name}"] = summarize_draws(pop[f"mrd_recurrence_365d_{name}"], ci_prob=ci_prob)
    diff = pop["mrd_recurrence_365d_experimental"] - pop["mrd_recurrence_365d_control"]
    out["mrd_recurrence_365d_difference"] = summarize_draws(diff, ci_prob=ci_prob)
    out["prob_mrd_recurrence_365d_lower"] = posterior_probability(diff, below=0.0)
    for name in ARM_NAMES:
        ttn = finite_draws(pop[f"time_to_mrd_negativity_days_{name}"], f"time_to_mrd_negativity_days_{name}",
                           warnings_out, why="no simulated responder fell below 1e-4 in those draws")
        if ttn.size >= 2:
            out[f"time_to_mrd_negativity_days_{name}"] = summarize_draws(ttn, ci_prob=ci_prob)
    return out


# --------------------------------------------------------------------------- per patient


def patient_recurrence_draws(posterior, inputs: MrdInputs, *, priors: MrdPriors | None = None,
                             chunk: int = 500, residual_df: int | None = RESIDUAL_DF) -> np.ndarray:
    """P(class R | data, draw) per draw and patient, (draws, patients): pi L_R / (pi L_R + (1 - pi) L_S).

    ``residual_df``: the measurement error of the model that made the draws (``toolkit.models.mrd.
    residual_family`` of its version; a run before 1.4.0: None, Normal)."""
    post = _posterior(posterior)
    floor_s = (priors or MrdPriors()).sustained_floor_log10
    n_draws = _draws(post, "log_clearance").shape[0]
    res = []
    for start in range(0, n_draws, chunk):
        sl = slice(start, min(start + chunk, n_draws))
        g = lambda name: _draws(post, name)[sl]  # noqa: E731
        eta = g("logit_recurrence")[:, None] + g("recurrence_log_or")[:, None] * inputs.arm
        if inputs.covariates:
            eta = eta + g("covariate_recurrence") @ inputs.x_std.T
        ll_s, ll_r = class_logliks_numpy(
            inputs, g("patient_baseline_log10"), g("patient_clearance_log10_per_day"), g("patient_floor_log10"),
            g("patient_relapse_day"), _patient_growth(post, sl), g("mrd_method_offset_log10"),
            g("mrd_residual_sd_log10"), g("pb_offset_log10") if _has(post, "pb_offset_log10") else None,
            sustained_floor=floor_s, residual_df=residual_df)
        res.append(expit(eta + ll_r - ll_s))
    return np.concatenate(res)


def _patient_classes(posterior, inputs, priors, random_seed, residual_df=RESIDUAL_DF):
    r = patient_recurrence_draws(posterior, inputs, priors=priors, residual_df=residual_df)
    rng = np.random.default_rng(random_seed)
    return r, rng.random(r.shape) < r


def patient_recurrence(posterior, inputs: MrdInputs, *, priors: MrdPriors | None = None,
                       random_seed: int = DEFAULT_SEED, residual_df: int | None = RESIDUAL_DF) -> pd.DataFrame:
    """Per-patient recurrence summaries, indexed by patient_id (analysed responders).

    Columns: ``arm`` (0/1); ``recurrence_probability`` = P(class R | data), the posterior probability
    that the patient's MRD will regrow (absent HSCT/death), Rao-Blackwellised over draws;
    ``mrd_positive_365d_probability`` = P(true MRD >= 1e-4 at day 365 | data);
    ``relapse_day_median`` = posterior median day the regrowing clone reaches 5 % among draws in
    class R (NaN when under 1 % of draws); ``clearance_log10_per_day_median``;
    ``floor_log10_median`` (class R draws). ``residual_df``: as in :func:`patient_recurrence_draws`
    (:func:`residual_df_of_run` for a stored run).
    """
    post = _posterior(posterior)
    floor_s = (priors or MrdPriors()).sustained_floor_log10
    r, cls = _patient_classes(post, inputs, priors, random_seed, residual_df)
    g = lambda name: _draws(post, name)  # noqa: E731
    m365 = mrd_log10_numpy(DAY_365, g("patient_baseline_log10"), g("patient_clearance_log10_per_day"),
                           g("patient_floor_log10"), g("patient_relapse_day"),
                           _patient_growth(post), cls, floor_s)
    rday = np.where(cls, g("patient_relapse_day"), np.nan)
    floor = np.where(cls, g("patient_floor_log10"), np.nan)
    enough = cls.mean(axis=0) >= 0.01
    with warnings.catch_warnings():  # all-NaN columns (never class R) give NaN, as intended
        warnings.simplefilter("ignore", RuntimeWarning)
        rday_med = np.where(enough, np.nanmedian(rday, axis=0), np.nan)
        floor_med = np.where(enough, np.nanmedian(floor, axis=0), np.nan)
    return pd.DataFrame({
        "arm": inputs.arm,
        "recurrence_probability": r.mean(axis=0),
        "mrd_positive_365d_probability": (m365 >= FLOW_LIMIT_LOG10).mean(axis=0),
        "relapse_day_median": rday_med,
        "clearance_log10_per_day_median": np.median(g("patient_clearance_log10_per_day"), axis=0),
        "floor_log10_median": floor_med,
    }, index=pd.Index(inputs.patient_ids, name="patient_id"))


def patient_trajectories(posterior, inputs: MrdInputs, *, days=DEFAULT_DAY_GRID, ci_prob: float = 0.9,
                         priors: MrdPriors | None = None, random_seed: int = DEFAULT_SEED,
                         residual_df: int | None = RESIDUAL_DF) -> pd.DataFrame:
    """Posterior predicted true log10 MRD per patient on a day grid, indexed by patient_id.

    Each draw takes the patient's class with its per-draw posterior class probability (fixed seed),
    so the band mixes both classes. Columns: ``day``, ``mrd_log10_median``, ``mrd_log10_lower``,
    ``mrd_log10_upper`` (equal-tailed ``ci_prob`` band), ``mrd_pct_median`` (100 x 10^median).
    Values are capped at log10 = 0 (100 %); after clinical relapse the model's regrowth is an
    extrapolation. ``residual_df``: as in :func:`patient_recurrence_draws` (the class probabilities).
    """
    post = _posterior(posterior)
    floor_s = (priors or MrdPriors()).sustained_floor_log10
    _, cls = _patient_classes(post, inputs, priors, random_seed, residual_df)
    g = lambda name: _draws(post, name)[:, :, None]  # noqa: E731
    t = np.asarray(days, dtype=float)
    m = mrd_log10_numpy(t, g("patient_baseline_log10"), g("patient_clearance_log10_per_day"),
                        g("patient_floor_log10"), g("patient_relapse_day"),
                        _patient_growth(post)[:, :, None], cls[:, :, None], floor_s)
    m = np.minimum(m, 0.0)
    tail = (1.0 - ci_prob) / 2.0
    lo, med, hi = np.quantile(m, [tail, 0.5, 1.0 - tail], axis=0)
    n_p, n_t = len(inputs.patient_ids), t.size
    frame = pd.DataFrame({
        "day": np.tile(t, n_p),
        "mrd_log10_median": med.ravel(),
        "mrd_log10_lower": lo.ravel(),
        "mrd_log10_upper": hi.ravel(),
    }, index=pd.Index(np.repeat(inputs.patient_ids, n_t), name="patient_id"))
    frame["mrd_pct_median"] = 100.0 * 10.0 ** frame["mrd_log10_median"]
    return frame


# --------------------------------------------------------------------------- model checks and run folders


def replicated_negative(posterior, inputs: MrdInputs, *, priors: MrdPriors | None = None,
                        random_seed: int = DEFAULT_SEED, residual_df: int | None = RESIDUAL_DF) -> np.ndarray:
    """Posterior predictive "MRD-negative" per draw and assessment, (draws, assessments) booleans:
    the replicate of :func:`replicated_mrd_log10` below that assessment's own detection limit."""
    y_rep, lod = replicated_mrd_log10(posterior, inputs, priors=priors, random_seed=random_seed,
                                      residual_df=residual_df)
    return y_rep < lod


def replicated_mrd_log10(posterior, inputs: MrdInputs, *, priors: MrdPriors | None = None,
                         random_seed: int = DEFAULT_SEED, residual_df: int | None = RESIDUAL_DF
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Posterior predictive log10 MRD per draw and assessment, (draws, assessments), and each row's limit.

    For each draw every analysed assessment is measured again: the patient's class is drawn with its
    per-draw posterior class probability, the value from m(t) + method and specimen offsets + sigma_method
    times a standard Student-t (``residual_df`` d.f.; None: Normal, the models before 1.4.0) on the log10
    scale, and it is negative when below **that assessment's own** detection
    limit (a PNQ or quantified value is positive). A quantified row without a recorded limit uses the
    smallest limit of its method in the cohort (never negative if the method has none); the limits
    used are returned beside the replicates.
    """
    post = _posterior(posterior)
    floor_s = (priors or MrdPriors()).sustained_floor_log10
    _, cls = _patient_classes(post, inputs, priors, random_seed, residual_df)
    g = lambda name: _draws(post, name)  # noqa: E731
    p, t, method = inputs.assessment_patient, inputs.day, inputs.method
    mu = mrd_log10_numpy(t, g("patient_baseline_log10")[:, p], g("patient_clearance_log10_per_day")[:, p],
                         g("patient_floor_log10")[:, p], g("patient_relapse_day")[:, p],
                         _rows_of(_patient_growth(post), p), cls[:, p], floor_s)
    mu = mu + g("mrd_method_offset_log10")[:, method]
    if _has(post, "pb_offset_log10"):
        mu = mu + g("pb_offset_log10")[:, None] * inputs.peripheral_blood
    rng = np.random.default_rng(random_seed + 1)
    noise = rng.standard_normal(mu.shape) if residual_df is None else rng.standard_t(residual_df, mu.shape)
    y_rep = mu + g("mrd_residual_sd_log10")[:, method] * noise
    return y_rep, filled_detection_limits(inputs)


def filled_detection_limits(inputs: MrdInputs) -> np.ndarray:
    """Each assessment's log10 detection limit; a quantified row without one gets the smallest limit of its
    method in the cohort (-inf, never negative, if the method has none)."""
    method = inputs.method
    lod = np.asarray(inputs.log10_lod, dtype=float).copy()
    for m in np.unique(method):
        known = lod[(method == m) & np.isfinite(lod)]
        fill = known.min() if known.size else -np.inf
        lod[(method == m) & ~np.isfinite(lod)] = fill
    return lod
