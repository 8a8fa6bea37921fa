r"""Predictive probability of success for a binary response endpoint (Lee & Liu 2008).

Single arm. The response rate p has a Beta(a, b) prior. After x responses in
n patients, with N_max the maximum sample size and m = N_max - n patients to
come, the number of future responses Y is beta-binomial,

.. math:: P(Y = y \mid x) = \binom{m}{y} \frac{B(a + x + y,\; b + N_{max} - x - y)}{B(a + x,\; b + n - x)},

the trial succeeds at the end if B_y = P(p > p_0 | x, y) > θ_T (posterior
Beta(a + x + y, b + N_max - x - y)), and the predictive probability of
success is

.. math:: PP = \sum_{y=0}^{m} P(Y = y \mid x)\, 1[B_y > θ_T].

The trial stops for futility when PP < θ_L and for efficacy when PP > θ_U
(θ_U = 1 disables efficacy stopping, as in Lee & Liu's designs). PP is a
non-decreasing function of x at fixed n, so each look has a futility boundary
r_n (stop if x <= r_n) and an efficacy boundary s_n (stop if x >= s_n)
(:func:`decision_boundaries`). Type I error (P(declare efficacy | p = p_0)),
power (the same at p = p_1), the probability of early termination and the
expected sample size are computed exactly by propagating the binomial
distribution of x patient by patient and absorbing the mass that crosses a
boundary (:func:`operating_characteristics`).

Two arms (randomized). Independent Beta priors on p_E and p_C; success at the
end if P(p_E - p_C > δ | final data) > θ_T. The remaining patients are
randomized (E with probability r), so the predictive probability
averages over the allocation, the response rates and the future responses;
:func:`two_arm_predictive_probability` does it by Monte Carlo and reports
the Monte Carlo standard error sqrt(PP (1 - PP) / S).

Reference: Lee JJ, Liu DD. A predictive probability design for phase II
cancer clinical trials. Clinical Trials 2008;5:93-106. Their worked example
(Beta(0.6, 0.4) prior, 16 responses in 23 patients, N_max = 40, p_0 = 0.6,
θ_T = 0.9) gives PP = 0.5656 (this module: 0.565559).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

__all__ = ["BetaPrior", "BinaryDesignError", "decision_boundaries", "operating_characteristics",
           "posterior_prob_above", "predictive_probability", "predictive_table", "simulate_operating_characteristics",
           "two_arm_posterior_prob", "two_arm_predictive_probability"]


class BinaryDesignError(ValueError):
    """Inputs that do not describe a trial (e.g. more responses than patients); the message names the fix."""


@dataclass(frozen=True)
class BetaPrior:
    """Beta(a, b) prior on a response rate (a, b > 0; a / (a + b) is the prior mean)."""

    a: float
    b: float

    def __post_init__(self):
        for name in ("a", "b"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise BinaryDesignError(f"prior parameter {name} must be a finite number above 0, got {value!r}")


def _prior(prior) -> BetaPrior:
    return prior if isinstance(prior, BetaPrior) else BetaPrior(*map(float, prior))


def _check_probability(name: str, value: float, *, closed: bool = False) -> None:
    ok = 0 <= value <= 1 if closed else 0 < value < 1
    if not (isinstance(value, (int, float)) and math.isfinite(value) and ok):
        interval = "from 0 to 1" if closed else "strictly between 0 and 1"
        raise BinaryDesignError(f"{name} must be a probability {interval}, got {value!r}")


def _check_counts(responses: int, patients: int, max_patients: int) -> None:
    for name, value in (("responses", responses), ("patients", patients), ("max_patients", max_patients)):
        if int(value) != value or value < 0:
            raise BinaryDesignError(f"{name} must be a whole number >= 0, got {value!r}")
    if max_patients < 1:
        raise BinaryDesignError(f"max_patients must be at least 1, got {max_patients}")
    if responses > patients:
        raise BinaryDesignError(f"responses ({responses}) cannot exceed the number of patients ({patients})")
    if patients > max_patients:
        raise BinaryDesignError(f"patients so far ({patients}) cannot exceed the maximum sample size "
                                f"({max_patients}); raise max_patients or check the counts")


def posterior_prob_above(successes, failures, prior, p0: float) -> np.ndarray:
    """P(p > p0 | data) = 1 - I_{p0}(a + successes, b + failures) (regularized incomplete beta)."""
    prior = _prior(prior)
    return special.betainc(prior.b + np.asarray(failures, float), prior.a + np.asarray(successes, float), 1.0 - p0)


def predictive_table(responses: int, patients: int, max_patients: int, *, prior=(0.6, 0.4), p0: float,
                     threshold: float = 0.9):
    """Per number y of future responses: P(Y = y | data), P(p > p0 | data, y) and whether it exceeds θ_T."""
    import pandas as pd

    prior = _prior(prior)
    _check_counts(responses, patients, max_patients)
    _check_probability("p0", p0)
    _check_probability("threshold", threshold)
    m = max_patients - patients
    y = np.arange(m + 1)
    weight = stats.betabinom.pmf(y, m, prior.a + responses, prior.b + patients - responses)
    post = posterior_prob_above(responses + y, max_patients - responses - y, prior, p0)
    return pd.DataFrame({"future_responses": y, "probability": weight, "posterior_prob_above_p0": post,
                         "success": post > threshold})


def predictive_probability(responses: int, patients: int, max_patients: int, *, prior=(0.6, 0.4), p0: float,
                           threshold: float = 0.9) -> float:
    """Lee & Liu's predictive probability of success PP (see the module docstring)."""
    table = predictive_table(responses, patients, max_patients, prior=prior, p0=p0, threshold=threshold)
    return float(np.clip(np.sum(table["probability"].to_numpy() * table["success"].to_numpy()), 0.0, 1.0))


def _pp_all(n: int, max_patients: int, prior: BetaPrior, p0: float, threshold: float) -> np.ndarray:
    """PP for every x = 0..n at n patients (vectorised over x and future y)."""
    m = max_patients - n
    x = np.arange(n + 1)[:, None]
    y = np.arange(m + 1)[None, :]
    weight = stats.betabinom.pmf(y, m, prior.a + x, prior.b + n - x)
    success = posterior_prob_above(x + y, max_patients - x - y, prior, p0) > threshold
    # the weights sum to 1 only up to rounding; a PP of 1 + 1e-16 must not pass 'PP > θ_U = 1'
    return np.clip(np.sum(weight * success, axis=1), 0.0, 1.0)


def _looks(looks, max_patients: int) -> list[int]:
    looks = sorted({int(n) for n in (looks if looks is not None else range(1, max_patients + 1))})
    if not looks or looks[0] < 1 or looks[-1] > max_patients:
        raise BinaryDesignError(f"interim looks must be numbers of patients from 1 to max_patients "
                                f"({max_patients}), got {looks}")
    return looks


def decision_boundaries(max_patients: int, *, prior=(0.6, 0.4), p0: float, threshold: float = 0.9,
                        futility: float = 0.05, efficacy: float = 1.0, looks=None):
    """Stopping boundaries per look: stop for futility if x <= r_n, for efficacy if x >= s_n.

    ``futility`` is θ_L (stop if PP < θ_L), ``efficacy`` θ_U (stop if PP > θ_U; 1 disables it). Columns:
    ``patients`` n, ``futility_max_responses`` r_n (-1: no futility stop possible), ``efficacy_min_responses``
    s_n (n + 1: none). At n = max_patients PP is 0 or 1, so the row gives the final rule.
    """
    import pandas as pd

    prior = _prior(prior)
    _check_counts(0, 0, max_patients)
    _check_probability("p0", p0)
    _check_probability("threshold", threshold)
    _check_probability("futility threshold", futility, closed=True)
    _check_probability("efficacy threshold", efficacy, closed=True)
    if futility > efficacy:
        raise BinaryDesignError(f"the futility threshold ({futility}) must not exceed the efficacy threshold "
                                f"({efficacy})")
    rows = []
    for n in _looks(looks, max_patients):
        pp = _pp_all(n, max_patients, prior, p0, threshold)
        below = np.flatnonzero(pp < futility)
        above = np.flatnonzero(pp > efficacy)
        rows.append({"patients": n, "futility_max_responses": int(below.max()) if below.size else -1,
                     "efficacy_min_responses": int(above.min()) if above.size else n + 1})
    return pd.DataFrame(rows)


def operating_characteristics(max_patients: int, response_rate: float, *, prior=(0.6, 0.4), p0: float,
                              threshold: float = 0.9, futility: float = 0.05, efficacy: float = 1.0,
                              looks=None) -> dict:
    """Exact operating characteristics of the single-arm design at a true response rate.

    The distribution of x is propagated patient by patient, P_n(x) = P_{n-1}(x) (1 - p) + P_{n-1}(x - 1) p,
    and at each look the mass with x <= r_n (futility) or x >= s_n (efficacy) is absorbed. At N_max the
    trial declares efficacy if P(p > p0 | x) > θ_T. Returns ``prob_efficacy`` (type I error at p = p0,
    power at p = p1), ``prob_stop_futility``, ``prob_stop_efficacy_early``, ``prob_early_termination``,
    ``expected_patients`` and the per-look stopping probabilities.
    """
    _check_probability("response_rate", response_rate, closed=True)
    bounds = decision_boundaries(max_patients, prior=prior, p0=p0, threshold=threshold, futility=futility,
                                 efficacy=efficacy, looks=looks)
    by_n = {int(r.patients): (int(r.futility_max_responses), int(r.efficacy_min_responses))
            for r in bounds.itertuples()}
    prior = _prior(prior)
    mass = np.zeros(max_patients + 1)
    mass[0] = 1.0
    p = float(response_rate)
    stop_fut, stop_eff, expected, per_look = 0.0, 0.0, 0.0, []
    for n in range(1, max_patients + 1):
        new = mass * (1 - p)
        new[1:] += mass[:-1] * p
        mass = new
        if n == max_patients:
            break
        if n in by_n:
            r, s = by_n[n]
            f = float(mass[: r + 1].sum()) if r >= 0 else 0.0
            e = float(mass[s: n + 1].sum()) if s <= n else 0.0
            if r >= 0:
                mass[: r + 1] = 0.0
            if s <= n:
                mass[s: n + 1] = 0.0
            stop_fut, stop_eff = stop_fut + f, stop_eff + e
            expected += n * (f + e)
            per_look.append({"patients": n, "stop_futility": f, "stop_efficacy": e})
    x = np.arange(max_patients + 1)
    final_success = posterior_prob_above(x, max_patients - x, prior, p0) > threshold
    reach = float(mass.sum())
    expected += max_patients * reach
    return {"response_rate": p, "prob_efficacy": stop_eff + float(mass[final_success].sum()),
            "prob_stop_futility": stop_fut, "prob_stop_efficacy_early": stop_eff,
            "prob_early_termination": stop_fut + stop_eff, "prob_reach_max": reach,
            "expected_patients": expected, "per_look": per_look}


def simulate_operating_characteristics(max_patients: int, response_rate: float, *, prior=(0.6, 0.4), p0: float,
                                       threshold: float = 0.9, futility: float = 0.05, efficacy: float = 1.0,
                                       looks=None, trials: int = 20_000, random_seed=None) -> dict:
    """The same operating characteristics by simulating trials and computing PP at each look directly.

    An independent check of :func:`operating_characteristics` (which uses the boundaries): each simulated
    trial's PP is recomputed from its counts. Returns the estimates and their Monte Carlo standard errors.
    """
    prior = _prior(prior)
    looks = [n for n in _looks(looks, max_patients) if n < max_patients]
    rng = np.random.default_rng(random_seed)
    responses = rng.random((trials, max_patients)) < response_rate
    cum = np.cumsum(responses, axis=1)
    cache: dict[tuple[int, int], float] = {}
    efficacy_hits, futility_stops, n_used = 0, 0, np.empty(trials)
    for t in range(trials):
        outcome, stopped_at = None, max_patients
        for n in looks:
            key = (int(cum[t, n - 1]), n)
            if key not in cache:
                cache[key] = predictive_probability(key[0], n, max_patients, prior=prior, p0=p0, threshold=threshold)
            if cache[key] < futility:
                outcome, stopped_at = "futility", n
                break
            if cache[key] > efficacy:
                outcome, stopped_at = "efficacy", n
                break
        if outcome is None:
            x = int(cum[t, -1])
            outcome = "efficacy" if posterior_prob_above(x, max_patients - x, prior, p0) > threshold else "final"
        efficacy_hits += outcome == "efficacy"
        futility_stops += outcome == "futility"
        n_used[t] = stopped_at
    pe, pf = efficacy_hits / trials, futility_stops / trials
    return {"prob_efficacy": pe, "prob_efficacy_se": math.sqrt(pe * (1 - pe) / trials),
            "prob_stop_futility": pf, "prob_stop_futility_se": math.sqrt(pf * (1 - pf) / trials),
            "expected_patients": float(n_used.mean()),
            "expected_patients_se": float(n_used.std(ddof=1) / math.sqrt(trials)), "trials": trials}


# --------------------------------------------------------------------------- two arms

#: quadrature grid for P(p_E - p_C > δ): midpoints of GRID equal steps in the CDF of p_C
GRID = 2000


def two_arm_posterior_prob(a_e, b_e, a_c, b_c, margin: float = 0.0) -> np.ndarray:
    r"""P(p_E - p_C > δ) for independent Beta(a_e, b_e) and Beta(a_c, b_c), vectorised.

    P = E_{p_C}[1 - F_E(p_C + δ)] = \int_0^1 (1 - F_E(F_C^{-1}(u) + δ)) du, by the midpoint rule on
    ``GRID`` points in u (exact in the limit; error well below 1e-3 for posteriors after a few patients).
    """
    a_e, b_e, a_c, b_c = (np.asarray(v, float)[..., None] for v in (a_e, b_e, a_c, b_c))
    u = (np.arange(GRID) + 0.5) / GRID
    q = special.betaincinv(a_c, b_c, u) + margin
    survival = np.where(q >= 1, 0.0, np.where(q <= 0, 1.0, special.betainc(b_e, a_e, 1 - np.clip(q, 0, 1))))
    return survival.mean(axis=-1)


def two_arm_predictive_probability(responses_e: int, patients_e: int, responses_c: int, patients_c: int,
                                   max_patients: int, *, prior_e=(1.0, 1.0), prior_c=(1.0, 1.0),
                                   threshold: float = 0.9, margin: float = 0.0, allocation: float = 0.5,
                                   draws: int = 20_000, random_seed=None) -> dict:
    r"""Predictive probability of success of a randomized two-arm trial, by Monte Carlo.

    Each draw s: the allocation of the R = N_max - n_E - n_C remaining patients, k_s ~ Binomial(R, r) to E;
    p_E, p_C from their posteriors; future responses Y_E ~ Bin(k_s, p_E), Y_C ~ Bin(R - k_s, p_C); success
    if P(p_E - p_C > δ | completed trial) > θ_T. PP = mean of the success indicators, with Monte Carlo
    standard error sqrt(PP (1 - PP) / S). Returns ``{"pp", "mc_se", "draws", "remaining"}``.
    """
    pe, pc = _prior(prior_e), _prior(prior_c)
    _check_counts(responses_e, patients_e, max_patients)
    _check_counts(responses_c, patients_c, max_patients)
    if patients_e + patients_c > max_patients:
        raise BinaryDesignError(f"patients so far ({patients_e} + {patients_c}) exceed the maximum sample size "
                                f"({max_patients})")
    _check_probability("threshold", threshold)
    _check_probability("allocation", allocation)
    if not (math.isfinite(margin) and -1 < margin < 1):
        raise BinaryDesignError(f"margin must be a difference between -1 and 1, got {margin!r}")
    if int(draws) < 1:
        raise BinaryDesignError(f"draws must be at least 1, got {draws!r}")
    rng = np.random.default_rng(random_seed)
    remaining = max_patients - patients_e - patients_c
    k = rng.binomial(remaining, allocation, draws)
    p_e = rng.beta(pe.a + responses_e, pe.b + patients_e - responses_e, draws)
    p_c = rng.beta(pc.a + responses_c, pc.b + patients_c - responses_c, draws)
    x_e = responses_e + rng.binomial(k, p_e)
    x_c = responses_c + rng.binomial(remaining - k, p_c)
    n_e = patients_e + k
    n_c = patients_c + remaining - k
    # many draws share a completed trial: compute its posterior probability once
    states, inverse = np.unique(np.stack([x_e, n_e, x_c, n_c], axis=1), axis=0, return_inverse=True)
    prob = two_arm_posterior_prob(pe.a + states[:, 0], pe.b + states[:, 1] - states[:, 0],
                                  pc.a + states[:, 2], pc.b + states[:, 3] - states[:, 2], margin)
    success = prob[inverse.ravel()] > threshold
    pp = float(success.mean())
    return {"pp": pp, "mc_se": math.sqrt(pp * (1 - pp) / draws), "draws": int(draws), "remaining": int(remaining)}
