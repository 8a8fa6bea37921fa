"""Rerun one simulation of a calibration study exactly as its Dask worker ran it, and print its record.

    python benchmarks/sbc_rerun.py STUDY SIM [--spec models/MODEL_primary.toml]

Regenerates simulation SIM of the `toolkit calibrate` study in STUDY (its prior draw and cohort, from the study's
seed and default_design folder) and runs it through the study's own code, ``toolkit.calibration.runner.
run_simulation``, with the study's settings and reruns (``extend_sampling``), in a process with the workers' thread
settings (``THREAD_ENV``: one thread each; the script restarts itself with them). Prints the verdict, runs, R-hat,
ESS and divergences beside the stored record's. Without arguments it says so (so `make benchmarks` runs).

Why the thread settings: the sampler's floating-point sums depend on them, and chains that differ in the last bit
part within a few hundred iterations. Simulation 10 of the CAR-T 1.2.0 study (3 runs, 2 divergences in the last,
in the study) converged at its second run when run through ``run_simulation`` in a process with default threads;
with ``THREAD_ENV`` it gave the stored record to the last digit (docs/calibration.md, "CAR-T model 1.2.0").
``benchmarks/cart_sbc_refit.py`` refits a single run with the divergence record, which is not the study's run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

SHOWN = ("status", "converged", "first_converged", "runs", "max_rhat", "min_ess_bulk", "min_ess_tail",
         "divergences", "seconds")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?")
    parser.add_argument("sim", nargs="?", type=int)
    parser.add_argument("--spec", help="the study's spec (default: models/MODEL_primary.toml)")
    args = parser.parse_args()
    if args.study is None or args.sim is None:
        print("no study and simulation given; usage: python benchmarks/sbc_rerun.py STUDY SIM")
        return 0
    from toolkit.calibration.runner import THREAD_ENV

    if any(os.environ.get(k) != v for k, v in THREAD_ENV.items()):  # before numpy and numba load: restart
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **THREAD_ENV})
    import pandas as pd

    from toolkit.calibration.api import build_problem
    from toolkit.calibration.runner import _sim_path, prior_draws, run_simulation, study_settings
    from toolkit.data import load_cohort
    from toolkit.specs import load_spec

    study = Path(args.study)
    config = json.loads((study / "study.json").read_text())
    model, stored = config["problem"]["model"], config["settings"]
    spec = load_spec(args.spec or f"models/{model}_primary.toml", model=model)
    problem = build_problem(model, spec=spec, design_cohort=load_cohort(study / "default_design"))
    settings = study_settings(stored)
    theta = prior_draws(problem, [args.sim], seed=int(settings.random_seed))[args.sim]
    record = run_simulation(problem, args.sim, theta, settings=settings,
                            extensions=int(stored.get("extend_sampling", 0)))
    print("rerun: ", {k: record[k] for k in SHOWN}, record["error"] or "")
    path = _sim_path(study, args.sim)
    if path.exists():
        print("stored:", pd.read_parquet(path).iloc[0][list(SHOWN)].to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
