"""Tests for toolkit.estimands (generic summaries)."""

import numpy as np
import pytest

from toolkit.estimands import hdi_key, posterior_probability, summarize_draws


def test_summarize_draws_pinned_on_arange():
    out = summarize_draws(np.arange(1, 101), ci_prob=0.9)
    assert set(out) == {"mean", "median", "sd", "hdi_90"}
    assert out["mean"] == pytest.approx(50.5)
    assert out["median"] == pytest.approx(50.5)
    assert out["sd"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    lo, hi = out["hdi_90"]
    # Equally spaced draws: every window spanning floor(0.9 * 100) = 90 steps is
    # equally narrow, the first one wins.
    assert (lo, hi) == (1.0, 91.0)
    assert hi - lo == 90


def test_summarize_draws_plain_floats_and_any_shape():
    draws = np.random.default_rng(7).normal(size=(2, 500))
    out = summarize_draws(draws)
    flat = summarize_draws(draws.ravel())
    assert out == flat
    for key in ("mean", "median", "sd"):
        assert type(out[key]) is float
    assert all(type(v) is float for v in out["hdi_90"])
    assert isinstance(out["hdi_90"], list)


def test_hdi_is_highest_density_not_equal_tailed():
    draws = np.concatenate([np.zeros(90), 100.0 * np.arange(1, 11)])
    out = summarize_draws(draws, ci_prob=0.9)
    assert out["hdi_90"] == [0.0, 100.0]  # an equal-tailed interval would reach ~950


def test_hdi_covers_requested_mass_on_normal_draws():
    draws = np.random.default_rng(11).normal(size=20_000)
    lo, hi = summarize_draws(draws, ci_prob=0.9)["hdi_90"]
    # The HDI endpoints wander with the sample; its width is stable (2 * 1.645).
    assert hi - lo == pytest.approx(3.29, abs=0.05)
    assert lo < 0 < hi
    assert np.mean((draws >= lo) & (draws <= hi)) >= 0.9


@pytest.mark.parametrize(("prob", "key"), [(0.9, "hdi_90"), (0.95, "hdi_95"), (0.5, "hdi_50")])
def test_hdi_key_name(prob, key):
    assert hdi_key(prob) == key
    assert key in summarize_draws(np.arange(100.0), ci_prob=prob)


def test_summarize_draws_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        summarize_draws(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="empty"):
        summarize_draws(np.array([]))
    with pytest.raises(ValueError, match="ci_prob"):
        summarize_draws(np.arange(10.0), ci_prob=1.5)


def test_posterior_probability_exact():
    draws = np.arange(10)  # 0..9
    assert posterior_probability(draws, above=6.5) == 0.3
    assert posterior_probability(draws, above=3) == 0.6  # strict: 4..9
    assert posterior_probability(draws, below=2) == 0.2  # strict: 0, 1
    assert posterior_probability(draws, above=2, below=7) == 0.4  # 3, 4, 5, 6
    assert posterior_probability(draws.reshape(2, 5), above=-1) == 1.0
    assert type(posterior_probability(draws, above=0)) is float


def test_posterior_probability_errors():
    with pytest.raises(ValueError, match="at least one"):
        posterior_probability(np.arange(5))
    with pytest.raises(ValueError, match="above < below"):
        posterior_probability(np.arange(5), above=3, below=2)
    with pytest.raises(ValueError, match="NaN"):
        posterior_probability(np.array([np.nan, 1.0]), above=0)
