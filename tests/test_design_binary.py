"""Binary-endpoint predictive probability (Lee & Liu 2008): the published example, exact operating
characteristics against simulation, and the two-arm Monte Carlo against exact enumeration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from toolkit.design.binary import (
    BinaryDesignError,
    decision_boundaries,
    operating_characteristics,
    posterior_prob_above,
    predictive_probability,
    simulate_operating_characteristics,
    two_arm_posterior_prob,
    two_arm_predictive_probability,
)
from toolkit.testing import run_cli

LEE_LIU = dict(prior=(0.6, 0.4), p0=0.6, threshold=0.9)


def test_lee_liu_worked_example():
    """Lee & Liu 2008: 16 responses in 23 patients, N_max 40, Beta(0.6, 0.4), P(p > 0.6) > 0.9: PP = 0.5656."""
    pp = predictive_probability(16, 23, 40, **LEE_LIU)
    assert pp == pytest.approx(0.565559, abs=5e-6)
    assert round(pp, 4) == 0.5656


def test_wrong_prior_or_target_gives_another_value():
    """The pin distinguishes broken variants: a flat prior (0.374), a and b swapped (0.384), another p0."""
    assert abs(predictive_probability(16, 23, 40, prior=(1, 1), p0=0.6, threshold=0.9) - 0.5656) > 0.1
    assert abs(predictive_probability(16, 23, 40, prior=(0.4, 0.6), p0=0.6, threshold=0.9) - 0.5656) > 0.1
    assert abs(predictive_probability(16, 23, 40, prior=(0.6, 0.4), p0=0.65, threshold=0.9) - 0.5656) > 0.1


def test_pp_by_brute_force_enumeration():
    """PP from its definition term by term, with the beta-binomial written out by hand."""
    from scipy.special import betaln, comb

    a, b, x, n, nmax = 0.6, 0.4, 16, 23, 40
    m = nmax - n
    total = 0.0
    for y in range(m + 1):
        w = comb(m, y) * np.exp(betaln(a + x + y, b + nmax - x - y) - betaln(a + x, b + n - x))
        post = 1 - stats.beta.cdf(0.6, a + x + y, b + nmax - x - y)
        total += w * (post > 0.9)
    assert predictive_probability(x, n, nmax, **LEE_LIU) == pytest.approx(total, abs=1e-12)


def test_more_responses_never_lower_pp():
    for n in (10, 23, 35):
        pps = [predictive_probability(x, n, 40, **LEE_LIU) for x in range(n + 1)]
        assert np.all(np.diff(pps) >= -1e-12)
        assert pps[0] < 0.01 and pps[-1] > 0.99


def test_boundaries_match_pp():
    bounds = decision_boundaries(40, futility=0.05, efficacy=0.95, looks=[10, 20, 30, 40], **LEE_LIU)
    for row in bounds.itertuples():
        r, s = row.futility_max_responses, row.efficacy_min_responses
        if r >= 0:
            assert predictive_probability(r, row.patients, 40, **LEE_LIU) < 0.05
        if r + 1 <= row.patients:
            assert predictive_probability(r + 1, row.patients, 40, **LEE_LIU) >= 0.05
        if s <= row.patients:
            assert predictive_probability(s, row.patients, 40, **LEE_LIU) > 0.95
    final = bounds.iloc[-1]  # at N_max: futility below the final success count
    x = np.arange(41)
    first_success = int(np.argmax(posterior_prob_above(x, 40 - x, (0.6, 0.4), 0.6) > 0.9))
    assert final.futility_max_responses == first_success - 1
    assert final.efficacy_min_responses == first_success


@pytest.mark.parametrize("rate", [0.6, 0.8])
def test_exact_operating_characteristics_agree_with_simulation(rate):
    """The exact recursion (boundaries) and a simulation recomputing PP per trial agree within MC error."""
    design = dict(futility=0.05, efficacy=0.99, looks=range(10, 41), **LEE_LIU)
    exact = operating_characteristics(40, rate, **design)
    sim = simulate_operating_characteristics(40, rate, trials=4000, random_seed=3, **design)
    for key in ("prob_efficacy", "prob_stop_futility", "expected_patients"):
        assert abs(exact[key] - sim[key]) < 4 * sim[f"{key}_se"] + 1e-9, key
    assert exact["prob_efficacy"] + exact["prob_stop_futility"] <= 1 + 1e-12


def test_operating_characteristics_without_looks_is_the_binomial_tail():
    """One look only at N_max: P(efficacy) is the binomial tail above the final success count."""
    x = np.arange(41)
    first = int(np.argmax(posterior_prob_above(x, 40 - x, (0.6, 0.4), 0.6) > 0.9))
    for rate in (0.6, 0.8):
        oc = operating_characteristics(40, rate, looks=[40], **LEE_LIU)
        assert oc["prob_efficacy"] == pytest.approx(stats.binom.sf(first - 1, 40, rate), abs=1e-12)
        assert oc["expected_patients"] == pytest.approx(40.0)
    # a broken rule (wrong p0 in the final test) gives a clearly different type I error
    wrong = operating_characteristics(40, 0.6, looks=[40], prior=(0.6, 0.4), p0=0.5, threshold=0.9)
    assert wrong["prob_efficacy"] > 2 * operating_characteristics(40, 0.6, looks=[40], **LEE_LIU)["prob_efficacy"]


def test_type_one_error_grows_and_power_falls_with_laxer_target():
    strict = dict(prior=(0.6, 0.4), p0=0.6, threshold=0.95, futility=0.05, looks=range(10, 41))
    lax = dict(strict, threshold=0.8)
    assert operating_characteristics(40, 0.6, **lax)["prob_efficacy"] > \
        operating_characteristics(40, 0.6, **strict)["prob_efficacy"]
    assert operating_characteristics(40, 0.8, **lax)["prob_efficacy"] > \
        operating_characteristics(40, 0.8, **strict)["prob_efficacy"]


def test_two_arm_posterior_probability():
    rng = np.random.default_rng(0)
    draws = np.mean(rng.beta(13, 9, 400_000) > rng.beta(9, 13, 400_000))
    assert two_arm_posterior_prob(13, 9, 9, 13) == pytest.approx(draws, abs=3e-3)
    assert two_arm_posterior_prob(5, 5, 5, 5) == pytest.approx(0.5, abs=1e-3)
    assert two_arm_posterior_prob(13, 9, 9, 13, margin=0.1) < two_arm_posterior_prob(13, 9, 9, 13)


def _two_arm_exact(xe, ne, xc, nc, nmax, threshold):
    """Exact PP by enumeration over the allocation and both arms' future responses (uniform priors)."""
    remaining = nmax - ne - nc
    total = 0.0
    for k in range(remaining + 1):
        w_k = stats.binom.pmf(k, remaining, 0.5)
        ye, yc = np.meshgrid(np.arange(k + 1), np.arange(remaining - k + 1), indexing="ij")
        w = (stats.betabinom.pmf(ye, k, 1 + xe, 1 + ne - xe)
             * stats.betabinom.pmf(yc, remaining - k, 1 + xc, 1 + nc - xc))
        prob = two_arm_posterior_prob(1 + xe + ye, 1 + ne + k - xe - ye, 1 + xc + yc,
                                      1 + nc + remaining - k - xc - yc)
        total += w_k * np.sum(w * (prob > threshold))
    return total


def test_two_arm_monte_carlo_agrees_with_enumeration():
    exact = _two_arm_exact(9, 15, 6, 15, 40, 0.9)
    mc = two_arm_predictive_probability(9, 15, 6, 15, 40, threshold=0.9, draws=20_000, random_seed=7)
    assert abs(mc["pp"] - exact) < 4 * mc["mc_se"]
    # a broken variant (the remaining patients all given to the experimental arm) is told apart
    skewed = two_arm_predictive_probability(9, 15, 6, 15, 40, threshold=0.9, allocation=0.999, draws=20_000,
                                            random_seed=7)
    assert abs(skewed["pp"] - exact) > 4 * mc["mc_se"]


@pytest.mark.parametrize("args, match", [
    ((24, 23, 40), "cannot exceed the number of patients"),
    ((3, 41, 40), "cannot exceed the maximum sample size"),
    ((-1, 3, 40), "whole number >= 0"),
])
def test_bad_counts(args, match):
    with pytest.raises(BinaryDesignError, match=match):
        predictive_probability(*args, **LEE_LIU)


def test_bad_prior():
    with pytest.raises(BinaryDesignError, match="prior parameter b must be a finite number above 0"):
        predictive_probability(1, 3, 40, prior=(0.6, -1), p0=0.6)


def test_cli_reports_the_example(capsys):
    code, out = run_cli(["design-binary", "--responses", "16", "--patients", "23", "--max-patients", "40",
                         "--prior-a", "0.6", "--prior-b", "0.4", "--p0", "0.6", "--threshold", "0.9", "--p1", "0.8"])
    assert code == 0
    assert "0.5656" in out and "type I error" in out and "power" in out


@pytest.mark.parametrize("argv, match", [
    (["--responses", "30", "--patients", "23", "--max-patients", "40"], r"responses \(30\) cannot exceed"),
    (["--responses", "3", "--patients", "23", "--max-patients", "20"], r"cannot exceed the maximum sample size"),
    (["--responses", "3", "--patients", "23", "--max-patients", "40", "--prior-a", "0"],
     r"prior parameter a must be a finite number above 0"),
    (["--responses", "3", "--patients", "10", "--max-patients", "40", "--control-patients", "10"],
     r"needs both --control-responses and --control-patients"),
])
def test_cli_bad_input_exits_2(argv, match):
    code, out = run_cli(["design-binary", *argv])
    assert code == 2
    assert "Traceback" not in out
    import re

    assert re.search(match, out)
