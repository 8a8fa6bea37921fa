"""Parameter recovery of the durability model on simulated trials with known truth.

The fast tests run in CI; the full 20-cohort coverage study is marked slow
(`make test-slow`).
"""

import math

import numpy as np
import pytest

from toolkit.data import load_cohort
from toolkit.data.inputs import to_durability_inputs
from toolkit.estimands import durability_estimands
from toolkit.inference import SamplerSettings, diagnose, sample
from toolkit.models.durability import DurabilityPriors, build_durability_model
from toolkit.simulate import Effects, TrialParameters, compute_truth, simulate_trial

# A story in which RFS is exactly Weibull PH with a known hazard ratio: no cure
# fraction, no kinetic terms, (almost) no death in remission.
WEIBULL_STORY = TrialParameters(cure_fraction=0.0, log_hr_per_log_cmax=0.0, log_hr_cart_loss=0.0,
                                log_hr_baseline_blasts_pct=0.0, nrm_per_year=1e-9)
TRUE_HR = 0.6
EFFECTS = Effects(cmax_gmr=1.0, persistence_half_life_ratio=1.0, clearance_rate_ratio=1.0,
                  hazard_ratio_direct=TRUE_HR, cure_odds_ratio=1.0)
FAST = SamplerSettings(chains=4, tune=500, draws=500, progressbar=False)


def _fit(tmp_path, seed, n, *, variant="weibull", params=WEIBULL_STORY, effects=EFFECTS, priors=None):
    folder = simulate_trial(n, seed=seed, effects=effects, parameters=params, with_truth=False).write(tmp_path / f"c{seed}")
    inputs = to_durability_inputs(load_cohort(folder))
    dt = sample(build_durability_model(inputs, priors, variant=variant), FAST)
    return inputs, dt


def test_truth_of_the_weibull_story_is_the_generative_hazard_ratio():
    truth = compute_truth(EFFECTS, WEIBULL_STORY, n=50_000)
    assert truth["hazard_ratio"] == pytest.approx(TRUE_HR, abs=0.02)


def _coverage(tmp_path, seeds):
    covered = []
    for seed in seeds:
        _, dt = _fit(tmp_path, seed, 60)
        assert diagnose(dt).converged
        lo, hi = np.quantile(dt["posterior"]["hazard_ratio"].to_numpy().ravel(), [0.05, 0.95])
        covered.append(lo < TRUE_HR < hi)
    return np.mean(covered)


def test_hazard_ratio_interval_covers_truth_small(tmp_path):
    assert _coverage(tmp_path, seeds=range(100, 105)) >= 0.8


@pytest.mark.slow
def test_hazard_ratio_coverage_over_20_cohorts(tmp_path):
    coverage = _coverage(tmp_path, seeds=range(200, 220))
    print(f"90% interval coverage of the true HR over 20 cohorts: {coverage:.2f}")
    assert 0.8 <= coverage <= 1.0


def test_matches_lifelines_weibull_mle_on_600_patients(tmp_path):
    """Flat-ish priors, 600 patients: posterior mean log HR within 0.05 of lifelines' Weibull MLE.

    lifelines fits the AFT form; for a Weibull, log HR (PH) = -rho * coef (AFT).
    """
    from lifelines import WeibullAFTFitter

    flat = DurabilityPriors(log_hr=(0.0, 10.0), log_shape=(0.0, 10.0), log_scale_years=(0.0, 10.0))
    inputs, dt = _fit(tmp_path, 7, 600, priors=flat)
    import pandas as pd

    frame = pd.DataFrame({"t": inputs.time_years, "e": inputs.event, "arm": inputs.arm})
    aft = WeibullAFTFitter().fit(frame, duration_col="t", event_col="e")
    rho = math.exp(aft.params_.loc[("rho_", "Intercept")])
    mle_log_hr = -rho * aft.params_.loc[("lambda_", "arm")]
    bayes = float(dt["posterior"]["log_hr"].mean())
    assert abs(bayes - mle_log_hr) < 0.05, (bayes, mle_log_hr)
    assert abs(mle_log_hr - math.log(TRUE_HR)) < 0.3


def test_cure_fraction_recovered_on_a_cohort_with_a_plateau(tmp_path):
    params = TrialParameters(cure_fraction=0.5, log_hr_per_log_cmax=0.0, log_hr_cart_loss=0.0,
                             log_hr_baseline_blasts_pct=0.0, nrm_per_year=1e-9, weibull_scale_days=200.0,
                             followup_min_days=4 * 365.0)
    effects = Effects(1.0, 1.0, 1.0, hazard_ratio_direct=0.8, cure_odds_ratio=2.0)
    inputs, dt = _fit(tmp_path, 11, 400, variant="cure", params=params, effects=effects)
    assert diagnose(dt).converged
    est = durability_estimands(dt["posterior"], inputs, variant="cure")
    truth = {"cure_fraction_control": 0.5, "cure_fraction_experimental": 2 / 3}
    for name, value in truth.items():
        lo, hi = est[name]["hdi_90"]
        assert lo < value < hi, (name, est[name], value)
        assert abs(est[name]["median"] - value) < 0.1
