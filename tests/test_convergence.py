"""The verdict's R-hat and ESS over many elements at once (``toolkit.convergence``) are ArviZ's, bit for bit."""

import numpy as np
import pytest

from toolkit.convergence import rank_statistics

PROB = 0.89


def _arviz(draws):
    from arviz_stats.base import array_stats

    axes = {"chain_axis": 0, "draw_axis": 1}
    with np.errstate(invalid="ignore", divide="ignore"):
        bulk = np.ravel(array_stats.ess(draws, method="bulk", **axes))
        tail = np.ravel(array_stats.ess(draws, method="tail", prob=PROB, **axes))
        rhat = np.ravel(array_stats.rhat(draws, method="rank", **axes)) if draws.shape[0] >= 2 else None
    return bulk, tail, rhat


def _awkward(rng, chains, draws):
    """Thirteen elements that take every branch: mixing, a random walk, ties, a constant, a binary value,
    chains apart, a NaN, an infinity, a heavy tail, autocorrelation, identical chains, a spread below float
    resolution and plain noise."""
    d = rng.normal(size=(chains, draws, 13))
    d[..., 1] = np.cumsum(d[..., 1], axis=1)
    d[..., 2] = np.round(d[..., 2], 1)
    d[..., 3] = 5.0
    d[..., 4] = (d[..., 4] > 0.5).astype(float)
    d[:, :, 5] += np.arange(chains)[:, None] * 3
    d[0, 0, 6] = np.nan
    d[0, 0, 7] = np.inf
    d[..., 8] = np.exp(3 * d[..., 8])
    d[..., 9] = 0.9 * np.roll(d[..., 9], 1, axis=1) + d[..., 9]
    d[1:, :, 10] = d[0, :, 10]
    d[..., 11] = 1e-17 * d[..., 11] + 1.0
    return d


@pytest.mark.parametrize("chains,draws", [(1, 200), (2, 4), (2, 5), (4, 101), (4, 1000), (6, 333)])
def test_rank_statistics_are_arviz_ones_bit_for_bit(chains, draws):
    rng = np.random.default_rng(chains * 1000 + draws)
    d = _awkward(rng, chains, draws)
    with np.errstate(invalid="ignore", divide="ignore"):
        got = rank_statistics(d, PROB)
    for name, ours, theirs in zip(("bulk ESS", "tail ESS", "R-hat"), got, _arviz(d)):
        if theirs is None:
            assert ours is None, name  # one chain: no R-hat, never a one-chain number
            continue
        np.testing.assert_array_equal(ours, theirs, err_msg=name)


def test_rank_statistics_see_chains_that_disagree():
    """The check can fail: chains shifted apart give R-hat far above 1.01 and a small ESS, mixed ones not."""
    rng = np.random.default_rng(3)
    mixed = rng.normal(size=(4, 1000, 2))
    apart = mixed + np.array([0.0, 0.0, 2.0, 2.0])[:, None, None]
    (bulk_m, _, rhat_m), (bulk_a, _, rhat_a) = rank_statistics(mixed, PROB), rank_statistics(apart, PROB)
    assert np.all(rhat_m < 1.01) and np.all(bulk_m > 2000)
    assert np.all(rhat_a > 1.3) and np.all(bulk_a < 100)
