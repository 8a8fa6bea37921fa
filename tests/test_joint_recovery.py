"""Joint model recovery over simulated trials at the trial's design (60 patients), slow-marked.

Run: ``pytest -m slow tests/test_joint_recovery.py -s`` (about 1-2 minutes a cohort on 2 cores). The
numbers of each cohort are appended to ``$JOINT_RECOVERY_LOG`` (JSON lines) when set, so a long run
that is stopped still leaves its results.
"""

import dataclasses
import json
import os

import numpy as np
import pytest

from toolkit.data import load_cohort
from toolkit.fitting import JointOptions, fit_joint
from toolkit.inference import SamplerSettings
from toolkit.simulate import Effects, compute_truth, simulate_trial

CHECKED = ("hazard_ratio_direct", "hazard_ratio_total", "log_hr_per_log_cmax", "log_hr_cart_loss")
SETTINGS = SamplerSettings(backend="nutpie", chains=4, tune=500, draws=500, target_accept=0.95, progressbar=False)


def _one(tmp_path, seed: int, truth: dict, kinetics: str) -> dict:
    folder = simulate_trial(60, seed=seed, with_truth=False).write(tmp_path / f"c{seed}")
    cohort = load_cohort(folder)
    sampled = cohort.patients["patient_id"].isin(cohort.cart["patient_id"])  # a patient dead before day 1
    cohort = dataclasses.replace(cohort, patients=cohort.patients[sampled])
    result = fit_joint(cohort, JointOptions(kinetics=kinetics), dataclasses.replace(SETTINGS, random_seed=seed))
    est = result.summary["estimands"]
    record = {"seed": seed, "kinetics": kinetics, "converged": result.converged,
              "max_rhat": result.summary["diagnostics"]["max_rhat"]}
    for name in CHECKED:
        lo, hi = est[name]["hdi_90"]
        record[name] = {"median": est[name]["median"], "lo": lo, "hi": hi, "truth": truth[name],
                        "covered": bool(lo <= truth[name] <= hi)}
    if os.environ.get("JOINT_RECOVERY_LOG"):
        with open(os.environ["JOINT_RECOVERY_LOG"], "a") as fh:
            fh.write(json.dumps(record) + "\n")
    return record


@pytest.mark.slow
@pytest.mark.parametrize("kinetics", ["joint"])
def test_joint_coverage_over_20_cohorts(tmp_path, kinetics):
    truth = compute_truth(Effects())
    records = [_one(tmp_path, seed, truth, kinetics) for seed in range(600, 620)]
    coverage = {name: float(np.mean([r[name]["covered"] for r in records])) for name in CHECKED}
    print(f"{kinetics}: 90% interval coverage over {len(records)} cohorts:", coverage,
          "not converged:", sum(not r["converged"] for r in records))
    for name, value in coverage.items():
        assert 0.8 <= value <= 1.0, (name, value)
