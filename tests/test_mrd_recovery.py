"""Parameter recovery of the MRD model on simulated trials with known truth.

Cohorts come from ``toolkit.simulate.simulate_trial`` (60 patients) with an
IFN-alpha effect on clearance (ratio 1.3) and on cure (odds ratio 2, so the
MRD recurrence risk differs between arms); the truth is ``compute_truth`` of
the same story. The fast test (2 cohorts) runs in CI; the 20-cohort coverage
study is marked slow (``make test-slow``), about 30-40 minutes on 2 cores.

What "recovery" means here: the first MRD assessment is on day 28, when the
kill phase is over in almost every patient, so the data bound the clearance
rate only from below; its posterior stays close to the prior and covering the
truth says little more than that the prior is not wrong (the report gives the
posterior/prior SD ratio). The recurrence difference is informed by the data
(NGS floors, regrowth, values at relapse).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from toolkit.data import load_cohort
from toolkit.data.mrd_inputs import to_mrd_inputs
from toolkit.inference import SamplerSettings, diagnose, sample
from toolkit.models.mrd import MrdPriors, build_mrd_model
from toolkit.mrd_estimands import mrd_estimands
from toolkit.simulate import Effects, compute_truth, simulate_trial
from toolkit.testing import coverage_problems

EFFECTS = Effects(clearance_rate_ratio=1.3, cure_odds_ratio=2.0)
FAST = SamplerSettings(chains=4, tune=500, draws=500, progressbar=False)
FULL = SamplerSettings(chains=4, tune=1000, draws=1000, progressbar=False)
POPULATION = ["log_clearance", "clearance_log_ratio", "clearance_sd", "logit_recurrence", "recurrence_log_or",
              "floor_depth_log10", "floor_depth_sd_log10", "log_relapse_latency", "relapse_log_time_ratio",
              "relapse_sd", "log_doubling_days", "mrd_residual_sd_log10", "method_bias_log10"]
CHECKED = ("clearance_rate_ratio", "mrd_recurrence_365d_difference", "mrd_recurrence_365d_control",
           "mrd_recurrence_365d_experimental", "mrd_negative_28d_flow_control", "mrd_negative_28d_flow_experimental",
           "mrd_negative_28d_ngs_control", "mrd_negative_28d_ngs_experimental",
           "time_to_mrd_negativity_days_control", "time_to_mrd_negativity_days_experimental")


@functools.lru_cache(maxsize=1)
def truth() -> dict[str, float]:
    return compute_truth(EFFECTS, n=100_000)


def fit_cohort(tmp_path, seed: int, n_patients: int = 60, settings: SamplerSettings = FAST,
               return_posterior: bool = False):
    """Simulate, fit and summarise one cohort: per estimand (median, 90 % HDI low, high, covers truth)."""
    folder = simulate_trial(n_patients, seed=seed, effects=EFFECTS, with_truth=False).write(tmp_path / f"c{seed}")
    inputs = to_mrd_inputs(load_cohort(folder))
    dt = sample(build_mrd_model(inputs), settings)
    d = diagnose(dt, var_names=POPULATION)
    est = mrd_estimands(dt, inputs, n_simulated=1000)
    row = {"seed": seed, "divergences": d.divergences, "max_rhat": d.max_rhat, "min_ess_bulk": d.min_ess_bulk,
           "clearance_log_ratio_sd": float(dt["posterior"]["clearance_log_ratio"].std())}
    for name in CHECKED:
        if name in est:
            lo, hi = est[name]["hdi_90"]
            row[name] = (est[name]["median"], lo, hi, bool(lo <= truth()[name] <= hi))
    return (row, dt) if return_posterior else row


def coverage(rows: list[dict], name: str) -> float:
    return float(np.mean([r[name][3] for r in rows if name in r]))


def test_truth_has_the_mrd_estimands():
    t = truth()
    assert t["clearance_rate_ratio"] == 1.3
    assert t["mrd_recurrence_365d_difference"] < -0.05  # cure odds ratio 2 lowers recurrence
    assert 0 < t["mrd_negative_28d_ngs_control"] < t["mrd_negative_28d_flow_control"] < 1


def test_clearance_rate_ratio_covers_truth_small(tmp_path):
    rows = [fit_cohort(tmp_path, seed) for seed in (301, 302)]
    for r in rows:  # 4 x 500 draws: a health check, not the 1.01 bar (see toolkit.models.mrd "Sampling")
        assert r["divergences"] <= 20 and r["max_rhat"] < 1.1, r
    assert coverage(rows, "clearance_rate_ratio") == 1.0


@pytest.mark.slow
def test_mrd_coverage_over_20_cohorts(tmp_path):
    rows = []
    for seed in range(400, 420):
        rows.append(fit_cohort(tmp_path, seed, settings=FULL))
        r = rows[-1]  # one line per cohort as it finishes (run with -s to watch)
        print(f"cohort {seed}: divergences {r['divergences']}, max R-hat {r['max_rhat']:.3f}, min bulk ESS "
              f"{r['min_ess_bulk']:.0f}; " + "; ".join(f"{n} {r[n][0]:.3f} [{r[n][1]:.3f}, {r[n][2]:.3f}] covers "
                                                       f"{truth()[n]:.3f}: {r[n][3]}" for n in CHECKED[:2]), flush=True)
    for name in CHECKED:
        print(f"90% HDI coverage of {name} over {len(rows)} cohorts: {coverage(rows, name):.2f}")
    # too low, too high (toolkit.testing.coverage_problems); the clearance ratio is learned mostly from the
    # prior (module docstring), so its SD ratio is printed, not bounded: its coverage says the prior is not wrong
    for name in ("clearance_rate_ratio", "mrd_recurrence_365d_difference"):
        problems = coverage_problems([r[name][3] for r in rows if name in r])
        assert not problems, (name, problems)
    print("posterior/prior SD of the clearance log ratio, median over cohorts:",
          np.median([r["clearance_log_ratio_sd"] / MrdPriors().clearance_log_ratio[1] for r in rows]))
    assert sum(r["divergences"] for r in rows) <= 20
