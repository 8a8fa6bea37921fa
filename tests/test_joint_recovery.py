"""Joint model recovery over simulated trials at the trial's design (60 patients), slow-marked.

Run: ``pytest -m slow tests/test_joint_recovery.py -s`` (about 1-2 minutes a cohort on 2 cores). The
numbers of each cohort are appended to ``$JOINT_RECOVERY_LOG`` (JSON lines) when set, so a long run
that is stopped still leaves its results. ``$JOINT_RECOVERY_COHORTS`` sets how many cohorts each
scenario fits (default 20).

Scenarios: ``kinetics`` (the default story: CAR-T kinetics drive relapse, MRD clearance does not; the
pre-2026-11 primary model without the MRD submodel) and ``mrd_pathway`` (the MRD kill rate also acts on
relapse, log HR -0.5 per log unit, so the MRD part of the indirect effect is 1.3^-0.5 = 0.88; fitted with
the MRD submodel, association ``mrd_clearance``). For each association the log also records the ratio of
posterior to prior SD: near 1 means the data taught little and coverage is the prior's doing.
"""

import dataclasses
import json
import os

import numpy as np
import pytest

from toolkit.data import load_cohort
from toolkit.fitting import JointOptions, fit_joint
from toolkit.inference import SamplerSettings
from toolkit.models.joint import JointPriors
from toolkit.simulate import Effects, TrialParameters, compute_truth, simulate_trial
from toolkit.testing import coverage_problems

CHECKED = ("hazard_ratio_direct", "hazard_ratio_total", "log_hr_per_log_cmax", "log_hr_cart_loss")
SCENARIOS = {
    "kinetics": (TrialParameters(), ["log_cmax", "cart_loss"], CHECKED, range(600, 620)),
    "mrd_pathway": (TrialParameters(log_hr_per_log_clearance=-0.5), ["log_cmax", "cart_loss", "mrd_clearance"],
                    CHECKED + ("log_hr_per_log_clearance", "hazard_ratio_indirect_mrd"), range(640, 660)),
}
SETTINGS = SamplerSettings(backend="nutpie", chains=4, tune=500, draws=500, target_accept=0.95, progressbar=False)


def _one(tmp_path, seed: int, truth: dict, kinetics: str, scenario: str = "kinetics") -> dict:
    parameters, associations, checked, _ = SCENARIOS[scenario]
    folder = simulate_trial(60, seed=seed, parameters=parameters, with_truth=False).write(tmp_path / f"c{seed}")
    cohort = load_cohort(folder)
    sampled = cohort.patients["patient_id"].isin(cohort.cart["patient_id"])  # a patient dead before day 1
    cohort = dataclasses.replace(cohort, patients=cohort.patients[sampled])
    result = fit_joint(cohort, JointOptions(kinetics=kinetics, associations=associations),
                       dataclasses.replace(SETTINGS, random_seed=seed))
    est = result.summary["estimands"]
    record = {"seed": seed, "scenario": scenario, "kinetics": kinetics, "converged": result.converged,
              "max_rhat": result.summary["diagnostics"]["max_rhat"]}
    for name in checked:
        lo, hi = est[name]["hdi_90"]
        record[name] = {"median": est[name]["median"], "lo": lo, "hi": hi, "truth": truth[name],
                        "covered": bool(lo <= truth[name] <= hi)}
        if name.startswith("log_hr"):
            record[name]["sd_ratio"] = est[name]["sd"] / getattr(JointPriors(), name)[1]
    if os.environ.get("JOINT_RECOVERY_LOG"):
        with open(os.environ["JOINT_RECOVERY_LOG"], "a") as fh:
            fh.write(json.dumps(record) + "\n")
    return record


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_joint_coverage_over_20_cohorts(tmp_path, scenario):
    parameters, _, checked, seeds = SCENARIOS[scenario]
    seeds = seeds[:int(os.environ.get("JOINT_RECOVERY_COHORTS", len(seeds)))]
    truth = compute_truth(Effects(), parameters)
    records = [_one(tmp_path, seed, truth, "joint", scenario) for seed in seeds]
    coverage = {name: float(np.mean([r[name]["covered"] for r in records])) for name in checked}
    print(f"{scenario}: 90% interval coverage over {len(records)} cohorts:", coverage,
          "not converged:", sum(not r["converged"] for r in records))
    # too low or too high (toolkit.testing.coverage_problems). The kinetic associations are learned from the
    # prior alone at this size (docs/calibration.md, joint study: contraction 0.97-1.03), so their
    # posterior/prior SD ratios are printed, not bounded: their coverage says the prior is not wrong
    for name in coverage:
        if name.startswith("log_hr"):
            ratio = np.median([r[name]["sd_ratio"] for r in records])
            print(f"{name}: posterior/prior SD, median over cohorts {ratio:.2f}")
        problems = coverage_problems([r[name]["covered"] for r in records])
        assert not problems, (name, problems)
