r"""Closed-form survival pieces: Kaplan-Meier with Greenwood intervals, Aalen-Johansen
cumulative incidence, and the grid integrals and crossings that the posterior
estimands and the simulator's truths share.

Kaplan-Meier:  S(t) = prod_{t_j <= t} (1 - d_j / n_j)
Greenwood:     Var[log S(t)] = sum_{t_j <= t} d_j / (n_j (n_j - d_j))
Interval on the log(-log S) scale (as R's survival::survfit, conf.type="log-log"):
    S(t) ** exp(+-z * sqrt(Var[log S]) / log S(t))

Reference values (R 4.2, survival 3.4) for time = 1, 2, 2, 3, 4, 5 and
event = 1, 1, 0, 1, 0, 1::

    survfit(Surv(c(1,2,2,3,4,5), c(1,1,0,1,0,1)) ~ 1)
    time n.risk n.event survival
       1      6       1    0.833
       2      5       1    0.667
       3      3       1    0.444
       5      1       1    0.000
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def _checked(time, status, name: str, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``time`` as finite non-negative floats and ``status`` (``name``) of the same length as ``dtype``."""
    time = np.asarray(time, dtype=float)
    status = np.asarray(status, dtype=dtype)
    if time.shape != status.shape:
        raise ValueError(f"time and {name} must have the same length")
    if np.any(~np.isfinite(time)) or np.any(time < 0):
        raise ValueError("times must be finite and non-negative")
    return time, status


def kaplan_meier(time, event, *, ci_prob: float = 0.9) -> pd.DataFrame:
    """Kaplan-Meier estimate at each distinct event time.

    Returns a table with ``time``, ``n_at_risk``, ``events``, ``censored``,
    ``survival``, ``lower``, ``upper`` (log-log Greenwood interval), starting
    with a row at time 0 with survival 1.
    """
    time, event = _checked(time, event, "event", bool)
    z = stats.norm.ppf(0.5 + ci_prob / 2)
    rows = [(0.0, len(time), 0, 0, 1.0, 1.0, 1.0)]
    surv, greenwood = 1.0, 0.0
    for t in np.unique(time):
        at_risk = int(np.sum(time >= t))
        d = int(np.sum((time == t) & event))
        c = int(np.sum((time == t) & ~event))
        if d:
            surv *= 1.0 - d / at_risk
            greenwood += d / (at_risk * (at_risk - d)) if at_risk > d else np.inf
        if surv > 0 and 0 < greenwood < np.inf:
            half = z * np.sqrt(greenwood) / np.log(surv)
            lower, upper = surv ** np.exp(-half), surv ** np.exp(half)
        else:
            lower, upper = (surv, surv) if greenwood == 0 else (0.0, 1.0 if surv > 0 else 0.0)
        rows.append((float(t), at_risk, d, c, surv, lower, upper))
    return pd.DataFrame(rows, columns=["time", "n_at_risk", "events", "censored", "survival", "lower", "upper"])


def survival_at(km: pd.DataFrame, days) -> np.ndarray:
    """Step-function value of a Kaplan-Meier table at the given days (NaN beyond the last time)."""
    days = np.atleast_1d(np.asarray(days, dtype=float))
    idx = np.searchsorted(km["time"].to_numpy(), days, side="right") - 1
    out = km["survival"].to_numpy()[idx]
    return np.where(days > km["time"].max(), np.nan, out)


def number_at_risk(km: pd.DataFrame, days) -> np.ndarray:
    """Patients still at risk (follow-up time >= day) at each of ``days``, read from a Kaplan-Meier table.

    The table has a row at every distinct follow-up time, so the number at
    risk at day t is ``n_at_risk`` of the first row at or after t (0 past the
    last). The at-risk table under a Kaplan-Meier figure prints these.
    """
    days = np.atleast_1d(np.asarray(days, dtype=float))
    times, at_risk = km["time"].to_numpy(), km["n_at_risk"].to_numpy()
    idx = np.searchsorted(times, days, side="left")
    return np.where(idx < times.size, at_risk[np.minimum(idx, times.size - 1)], 0).astype(int)


def median_survival(km: pd.DataFrame) -> float:
    """First time the Kaplan-Meier curve is at or below 0.5 (NaN if it never is)."""
    hit = km.loc[km["survival"] <= 0.5, "time"]
    return float(hit.iloc[0]) if len(hit) else float("nan")


def aalen_johansen(time, cause, *, event_of_interest: int = 1) -> pd.DataFrame:
    r"""Aalen-Johansen cumulative incidence of one cause among competing causes.

    ``cause`` is 0 for a censored follow-up and a positive integer code per
    cause. At each distinct time t_j with n_j at risk, d_j events of any cause
    and d_1j of the cause of interest::

        S(t_j)   = S(t_{j-1}) (1 - d_j / n_j)                 (all-cause Kaplan-Meier)
        CIF(t_j) = CIF(t_{j-1}) + S(t_{j-1}) d_1j / n_j

    Tied times need no jitter (each time's events are taken together). Pinned
    to lifelines' ``AalenJohansenFitter`` on untied data in the tests.

    Returns a table with ``time``, ``n_at_risk``, ``events`` (of interest),
    ``other_events``, ``cif`` and ``survival`` (all causes), starting with a
    row at time 0.
    """
    time, cause = _checked(time, cause, "cause", int)
    rows = [(0.0, len(time), 0, 0, 0.0, 1.0)]
    surv, cif = 1.0, 0.0
    for t in np.unique(time):
        at = time == t
        at_risk = int(np.sum(time >= t))
        d1 = int(np.sum(at & (cause == event_of_interest)))
        d = int(np.sum(at & (cause > 0)))
        if t == 0 and d == 0:
            continue
        cif += surv * d1 / at_risk
        surv *= 1.0 - d / at_risk
        rows.append((float(t), at_risk, d1, d - d1, cif, surv))
    return pd.DataFrame(rows, columns=["time", "n_at_risk", "events", "other_events", "cif", "survival"])


def incidence_grid(horizon_days: float, *, step_days: float = 1.0) -> np.ndarray:
    """The grid 0 = s_0 < ... < s_m = ``horizon_days`` (steps of at most ``step_days``) on which
    :func:`cumulative_incidence` integrates; the simulator's truth and the posterior estimate use it alike."""
    m = max(1, int(np.ceil(horizon_days / step_days)))
    return np.linspace(0.0, float(horizon_days), m + 1)


def cumulative_incidence(surv_cause, surv_other, *, at=None) -> np.ndarray:
    r"""Cumulative incidence of a cause, given on a grid the survivals of its own and the competing hazards.

    With cause-specific hazards h_c and h_o, S_c = exp(-H_c), S_o = exp(-H_o)
    and S = S_c S_o the probability of no event::

        CIF_c(s_m) = int_0^{s_m} h_c(s) S(s) ds = int_0^{s_m} S_o(s) d(1 - S_c(s))
                   ~ sum_j sqrt(S_o(s_j) S_o(s_{j+1})) (S_c(s_j) - S_c(s_{j+1}))

    (a Riemann-Stieltjes sum with S_o at the geometric midpoint of each step,
    exact when h_o is constant within the step; no density is evaluated, so a
    Weibull shape below 1 needs no special care at s = 0). ``surv_cause`` and
    ``surv_other`` have the grid on their last axis and broadcast against
    each other; S_c may be a mixture (e.g. pi + (1 - pi) S_u for a cure
    model). Returns the running CIF on the grid, starting at 0, or with
    ``at`` (grid indices) only CIF(s_at), last axis ``len(at)``: the same sums
    without the running total over every grid point. The two causes'
    incidences and S sum to 1 up to the discretisation error. The sum is
    linear in ``surv_cause``, so the CIF of a mean of S_c's is the mean of
    their CIFs against the same S_o.
    """
    sc, so = np.broadcast_arrays(np.asarray(surv_cause, dtype=float), np.asarray(surv_other, dtype=float))
    if at is None:
        steps = np.sqrt(so[..., :-1] * so[..., 1:])
        steps *= sc[..., :-1] - sc[..., 1:]
        zero = np.zeros(sc.shape[:-1] + (1,))
        return np.concatenate([zero, np.cumsum(steps, axis=-1)], axis=-1)
    at = np.asarray(at, dtype=int)
    if at.ndim != 1 or np.any(at < 0) or np.any(at >= sc.shape[-1]):
        raise ValueError(f"at must be grid indices in 0..{sc.shape[-1] - 1}")
    # step j in column j of a full-width array (the last column is unused): on contiguous inputs the
    # neighbours are taken along the flat array, one pass without strided slices
    steps = _adjacent(np.multiply, so)
    np.sqrt(steps, out=steps)
    steps *= _adjacent(np.subtract, sc)
    order = np.argsort(at, kind="stable")
    ends = np.concatenate([[0], at[order]])
    # the running sum at the sorted indices, one segment of steps at a time (an empty segment adds 0)
    segments = np.stack([steps[..., a:b].sum(axis=-1) for a, b in zip(ends[:-1], ends[1:])], axis=-1)
    out = np.empty_like(segments)
    out[..., order] = np.cumsum(segments, axis=-1)
    return out


def _adjacent(op, a: np.ndarray) -> np.ndarray:
    """op(a[..., j], a[..., j + 1]) in column j of an array shaped as ``a`` (the last column is 0)."""
    out = np.empty(a.shape)
    if a.flags.c_contiguous:
        flat = a.reshape(-1)
        op(flat[:-1], flat[1:], out=out.reshape(-1)[:-1])  # a row's last column gets a cross-row value
    else:
        op(a[..., :-1], a[..., 1:], out=out[..., :-1])
    out[..., -1] = 0.0
    return out


def first_crossing(surv, n: int, lo: float, hi: float, *, level: float = 0.5, iterations: int = 50) -> np.ndarray:
    """Where a decreasing survival function first reaches ``level``: bisection on [lo, hi].

    ``surv`` maps an array of ``n`` times (one per curve) to the ``n``
    curves' values there. Returns one time per curve, +inf where the curve is still above
    ``level`` at ``hi``. The median RFS of the posterior and of the simulator's
    truth are both this, with the same horizon.
    """
    lo_, hi_ = np.full(n, float(lo)), np.full(n, float(hi))
    reached = np.asarray(surv(hi_), dtype=float) <= level
    for _ in range(iterations):
        mid = 0.5 * (lo_ + hi_)
        above = np.asarray(surv(mid), dtype=float) > level
        lo_, hi_ = np.where(above, mid, lo_), np.where(above, hi_, mid)
    return np.where(reached, hi_, np.inf)
