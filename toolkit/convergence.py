r"""Rank-normalised R-hat and bulk and tail ESS of many posterior elements at once.

These are the statistics the toolkit's convergence verdict judges (``toolkit.inference.diagnose``), as
defined by Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021, Bayesian Analysis 16:667,
doi:10.1214/20-BA1221) and computed by ArviZ (``arviz_stats``). ArviZ computes them one element at a time
in Python; with a few hundred patient-level values a posterior's verdict then costs more than some fits'
sampling. Here every step runs over all elements in one array operation, the same operations in the same
order per element, so the values are ArviZ's bit for bit (``tests/test_convergence.py``), at a third of
the cost or less (``benchmarks/bench_convergence.py``).

For one element x with m chains of n draws:

* split: the first and last n//2 draws of each chain as 2m chains of h = n//2 draws, N = 2m h values;
* z-scale: z = Phi^-1((r - 3/8) / (N - 2(3/8) + 1)), r the average rank of a value among the N;
* R-hat(y) = sqrt((B/W + h - 1) / h), B = h Var(chain means), W = mean of the chains' variances;
  rank R-hat = max(R-hat(z(x)), R-hat(z(|x - median x|)));
* ESS(y) = M / tau, M = 2m h, tau = -1 + 2 sum_{t<=K} rho_t + rho_{K+1} (at least 1/log10 M), rho_t the
  autocorrelations combined over chains, truncated by Geyer's initial positive sequence (pairs
  rho_{2k} + rho_{2k+1} > 0) and made monotone;
* bulk ESS = ESS(z(x)); tail ESS = min over q in {1 - p, p} of ESS(1[x <= Q_q(x)]), Q_q the linear sample
  quantile of all m n draws and p ArviZ's ``stats.ci_prob``.

Elements with a NaN, fewer than 4 draws (NaN) or all values within float resolution of each other (ESS =
M) follow ArviZ's conventions; an element with an infinite value is passed to ArviZ itself.
"""

from __future__ import annotations

import numpy as np


def _split(x: np.ndarray) -> np.ndarray:
    """(E, m, n) -> (E, 2m, n//2): each chain's first and last halves as chains."""
    half = x.shape[-1] // 2
    return np.concatenate((x[..., :half], x[..., -half:]), axis=1)


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Normal scores of the average ranks of each element's values, (E, chains, draws).

    A value's average rank is r = s + 1 + (k - 1)/2, s the position of its first equal in sorted order and k
    how many equal it (``scipy.stats.rankdata(method="average")``'s arithmetic). Untied values have the ranks
    1..N, whose scores are one table of N values; only tied ones need a score of their own.
    """
    from scipy import stats

    flat = x.reshape(x.shape[0], -1)
    n = flat.shape[-1]
    c = 3 / 8
    order = np.argsort(flat, axis=-1)  # any sort: equal values share their average rank
    ordered = np.take_along_axis(flat, order, axis=-1)
    position = np.arange(n)
    scores = np.broadcast_to(stats.norm.ppf((position + 1.0 - c) / (n - 2 * c + 1)), flat.shape).copy()
    equal = ordered[:, 1:] == ordered[:, :-1]
    if equal.any():
        edge = np.ones((flat.shape[0], 1), dtype=bool)
        starts = np.concatenate([edge, ~equal], axis=1)  # a value differs from the one before it
        ends = np.concatenate([~equal, edge], axis=1)  # ... from the one after it
        first = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
        last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, position, n - 1), -1), axis=-1), -1)
        tied = last > first
        rank = (first[tied] + 1.0) + ((last[tied] - first[tied] + 1).astype(float) - 1) / 2
        scores[tied] = stats.norm.ppf((rank - c) / (n - 2 * c + 1))
    z = np.empty_like(flat)
    np.put_along_axis(z, order, scores, axis=-1)
    return z.reshape(x.shape)


def _rhat(y: np.ndarray) -> np.ndarray:
    """Split R-hat of each element of (E, chains, draws)."""
    h = y.shape[-1]
    chain_mean = np.mean(y, axis=-1)
    chain_var = np.var(y, axis=-1, ddof=1)
    between = h * np.var(chain_mean, axis=-1, ddof=1)
    within = np.mean(chain_var, axis=-1)
    return np.sqrt((between / within + h - 1) / h)


def _autocov(y: np.ndarray) -> np.ndarray:
    """Autocovariance at every lag along the last axis (FFT), as ``arviz_stats``' ``autocov``."""
    from scipy.fftpack import next_fast_len  # 5-smooth lengths, as ArviZ uses (scipy.fft's differ)

    n = y.shape[-1]
    m = next_fast_len(2 * n)
    y = y - y.mean(-1, keepdims=True)
    f = np.fft.rfft(y, n=m, axis=-1)
    f *= np.conjugate(f)
    cov = np.fft.irfft(f, n=m, axis=-1)[..., :n]
    cov /= n
    return cov


def _ess(y: np.ndarray) -> np.ndarray:
    """ESS of each element of (E, chains, draws) (Geyer's initial monotone sequence, as ArviZ's ``_ess``)."""
    y = np.asarray(y, dtype=float)
    n_elem, n_chain, n_draw = y.shape
    total = n_chain * n_draw
    ess = np.full(n_elem, float(total))
    spread = np.max(y, axis=(1, 2)) - np.min(y, axis=(1, 2))
    live = ~(spread < np.finfo(float).resolution)
    if not live.any():
        return ess
    y = y[live]
    acov = _autocov(y)
    # the chains' mean autocovariance at each lag, summed in each element's own (chain) order
    mean_acov = np.mean(np.ascontiguousarray(np.swapaxes(acov, 1, 2)), axis=-1)  # (E, lags)
    chain_mean = y.mean(axis=-1)
    mean_var = mean_acov[:, 0] * n_draw / (n_draw - 1.0)
    var_plus = mean_var * (n_draw - 1.0) / n_draw
    if n_chain > 1:
        var_plus = var_plus + np.var(chain_mean, axis=-1, ddof=1)
    rho_all = 1.0 - (mean_var[:, None] - mean_acov) / var_plus[:, None]

    k = y.shape[0]
    rho = np.zeros((k, n_draw))
    rho[:, 0] = 1.0
    even = np.ones(k)
    odd = rho_all[:, 1].copy()
    rho[:, 1] = odd
    # Geyer's initial positive sequence: every element steps t = 1, 3, 5, ... until its pair sum is <= 0
    t = np.ones(k, dtype=int)
    going = np.ones(k, dtype=bool)
    step = 1
    while True:
        going &= (step < n_draw - 3) & (even + odd > 0.0)
        if not going.any():
            break
        idx = np.flatnonzero(going)
        even[idx] = rho_all[idx, step + 1]
        odd[idx] = rho_all[idx, step + 2]
        keep = idx[even[idx] + odd[idx] >= 0]
        rho[keep, step + 1] = even[keep]
        rho[keep, step + 2] = odd[keep]
        t[idx] += 2
        step += 2
    max_t = t - 2
    positive = np.flatnonzero(even > 0)
    rho[positive, max_t[positive] + 1] = even[positive]
    # Geyer's initial monotone sequence, left to right (each step may use the one before)
    for step in range(1, int(max_t.max()) - 1, 2):
        idx = np.flatnonzero(step <= max_t - 2)
        before = rho[idx, step - 1] + rho[idx, step]
        rising = (rho[idx, step + 1] + rho[idx, step + 2]) > before
        idx, before = idx[rising], before[rising]
        rho[idx, step + 1] = before / 2.0
        rho[idx, step + 2] = rho[idx, step + 1]
    tau = np.array([-1.0 + 2.0 * np.sum(rho[e, : max_t[e] + 1]) + np.sum(rho[e, max_t[e] + 1: max_t[e] + 2])
                    for e in range(k)])
    tau = np.maximum(tau, 1 / np.log10(total))
    out = total / tau
    out[np.isnan(rho).any(axis=-1)] = np.nan
    ess[live] = out
    return ess


def rank_statistics(draws: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Bulk ESS, tail ESS (quantiles ``1 - prob`` and ``prob``) and rank R-hat of each element of a
    (chain, draw, element) array; R-hat is None with one chain. The values are ArviZ's ``ess(method="bulk")``,
    ``ess(method="tail", prob=prob)`` and ``rhat(method="rank")``."""
    x = np.ascontiguousarray(np.moveaxis(np.asarray(draws, dtype=float), -1, 0))  # (E, m, n)
    n_elem, n_chain, n_draw = x.shape
    bulk, tail = np.full(n_elem, np.nan), np.full(n_elem, np.nan)
    rhat = np.full(n_elem, np.nan) if n_chain >= 2 else None
    if n_draw < 4 or n_elem == 0:
        return bulk, tail, rhat
    has_nan = np.isnan(x).any(axis=(1, 2))
    odd = ~has_nan & ~np.isfinite(x).all(axis=(1, 2))
    ok = np.flatnonzero(~has_nan & ~odd)
    if ok.size:
        xs = x[ok]
        split = _split(xs)
        z = _z_scale(split)
        bulk[ok] = _ess(z)
        if rhat is not None:
            flat = split.reshape(split.shape[0], -1)
            folded = np.abs(split - np.median(flat, axis=-1)[:, None, None])
            r_bulk, r_tail = _rhat(z), _rhat(_z_scale(folded))
            rhat[ok] = np.where(r_tail > r_bulk, r_tail, r_bulk)  # Python's max(bulk, tail), NaN kept as it does
        low, high = sorted((prob, 1 - prob))
        q = np.quantile(xs.reshape(xs.shape[0], -1), [low, high], axis=-1)  # (2, E)
        ess_low = _ess(_split((xs <= q[0][:, None, None]).astype(float)))
        ess_high = _ess(_split((xs <= q[1][:, None, None]).astype(float)))
        tail[ok] = np.where(ess_high < ess_low, ess_high, ess_low)  # Python's min(low, high)
    for e in np.flatnonzero(odd):  # an infinite value: ArviZ's own per-element code
        from arviz_stats.base import array_stats

        one = x[e][..., None]
        axes = {"chain_axis": 0, "draw_axis": 1}
        bulk[e] = np.ravel(array_stats.ess(one, method="bulk", **axes))[0]
        tail[e] = np.ravel(array_stats.ess(one, method="tail", prob=prob, **axes))[0]
        if rhat is not None:
            rhat[e] = np.ravel(array_stats.rhat(one, method="rank", **axes))[0]
    return bulk, tail, rhat
