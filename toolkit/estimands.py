"""Posterior summaries of estimands (generic pieces).

Model-specific estimands build on :func:`summarize_draws` and
:func:`posterior_probability`; both take raw draws (any shape, flattened).
"""

from __future__ import annotations

import numpy as np

__all__ = ["hdi_key", "posterior_probability", "summarize_draws"]


def _flat_draws(draws) -> np.ndarray:
    arr = np.asarray(draws, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError("draws is empty")
    if np.isnan(arr).any():
        raise ValueError(f"draws contain {int(np.isnan(arr).sum())} NaN values")
    return arr


def hdi_key(ci_prob: float) -> str:
    """Key of the interval in :func:`summarize_draws` output, e.g. ``"hdi_90"``."""
    return f"hdi_{int(round(100 * ci_prob))}"


def summarize_draws(draws: np.ndarray, *, ci_prob: float = 0.9) -> dict:
    """Mean, median, sd and highest-density interval of posterior draws.

    Parameters
    ----------
    draws : array-like
        Draws of one scalar quantity, any shape (e.g. ``(chain, draw)``); flattened.
    ci_prob : float
        Probability mass of the HDI, in (0, 1].

    Returns
    -------
    dict
        ``{"mean", "median", "sd", "hdi_<100*ci_prob>": [lo, hi]}`` with plain
        floats; ``sd`` uses ``ddof=1``. The HDI is the narrowest interval between
        two sorted draws spanning ``floor(ci_prob * n)`` steps (arviz-stats
        ``"nearest"`` method; first one on ties).
    """
    import arviz_stats as azs

    if not 0.0 < ci_prob <= 1.0:
        raise ValueError(f"ci_prob must be in (0, 1], got {ci_prob!r}")
    arr = _flat_draws(draws)
    if arr.size < 2:
        raise ValueError("need at least 2 draws to summarise")
    lo, hi = (float(v) for v in azs.hdi(arr, prob=ci_prob))
    return {
        "mean": float(np.mean(arr)),
        "median": float(np.median(arr)),
        "sd": float(np.std(arr, ddof=1)),
        hdi_key(ci_prob): [lo, hi],
    }


def posterior_probability(
    draws: np.ndarray, *, above: float | None = None, below: float | None = None
) -> float:
    """Share of draws strictly above ``above`` and/or strictly below ``below``.

    With both bounds it is the probability of ``above < x < below``.

    Raises
    ------
    ValueError
        If neither bound is given, or ``above >= below``.
    """
    if above is None and below is None:
        raise ValueError("give at least one of above= or below=")
    if above is not None and below is not None and not above < below:
        raise ValueError(f"need above < below, got above={above!r}, below={below!r}")
    arr = _flat_draws(draws)
    hit = np.ones(arr.shape, dtype=bool)
    if above is not None:
        hit &= arr > above
    if below is not None:
        hit &= arr < below
    return float(np.mean(hit))
