"""Posterior summaries of estimands (generic pieces, used by every analysis).

Model-specific estimands build on :func:`summarize_draws` and
:func:`posterior_probability`; both take raw draws (any shape, flattened).
"""

from __future__ import annotations

from contextvars import ContextVar

import numpy as np

__all__ = ["finite_draws", "hdi_key", "posterior_probability", "summarize_draws"]


# Set by toolkit.review.recording_estimand_draws: {id(summary): (summary, draws)}, so a fit can store the draws
# behind each estimand (prior sensitivity weights them) without every estimand function returning draws.
_DRAW_RECORDER: ContextVar[dict | None] = ContextVar("estimand_draw_recorder", default=None)


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
    summary = {
        "mean": float(np.mean(arr)),
        "median": float(np.median(arr)),
        "sd": float(np.std(arr, ddof=1)),
        hdi_key(ci_prob): [lo, hi],
    }
    record = _DRAW_RECORDER.get()
    if record is not None:
        record[id(summary)] = (summary, arr)
    return summary


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


def finite_draws(draws, name: str, warnings_out: list[str] | None = None, *, why: str = "") -> np.ndarray:
    """The finite draws of ``name`` (flattened); drawing any other is counted, never silent.

    Draws that are NaN or infinite (e.g. a ratio whose denominator is 0 in that draw) are left out of the
    estimand's summary and probabilities. When some are, the message "``name``: K of N posterior draws are
    not finite ...", plus ``why``, is appended to ``warnings_out`` (a fit stores it in summary.json
    ``warnings``), or raised as a ``UserWarning`` when no list is given.
    """
    import warnings

    arr = np.asarray(draws, dtype=float).ravel()
    ok = np.isfinite(arr)
    if not ok.all():
        message = (f"{name}: {int((~ok).sum())} of {arr.size} posterior draws are not finite"
                   + (f" ({why})" if why else "") + " and are left out of its summary; the estimate describes "
                   "the other draws")
        if warnings_out is None:
            warnings.warn(message, UserWarning, stacklevel=2)
        else:
            warnings_out.append(message)
    return arr[ok]
