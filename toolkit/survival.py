r"""Closed-form survival pieces: Kaplan-Meier with Greenwood intervals.

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


def kaplan_meier(time, event, *, ci_prob: float = 0.9) -> pd.DataFrame:
    """Kaplan-Meier estimate at each distinct event time.

    Returns a table with ``time``, ``n_at_risk``, ``events``, ``censored``,
    ``survival``, ``lower``, ``upper`` (log-log Greenwood interval), starting
    with a row at time 0 with survival 1.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=bool)
    if time.shape != event.shape:
        raise ValueError("time and event must have the same length")
    if np.any(~np.isfinite(time)) or np.any(time < 0):
        raise ValueError("times must be finite and non-negative")
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


def median_survival(km: pd.DataFrame) -> float:
    """First time the Kaplan-Meier curve is at or below 0.5 (NaN if it never is)."""
    hit = km.loc[km["survival"] <= 0.5, "time"]
    return float(hit.iloc[0]) if len(hit) else float("nan")
