"""How far the design cohort's centring choice is from the one each simulated cohort's own data warrant.

The CAR-T and MRD models sample each patient parameter centred where the data
pin it and non-centred elsewhere (``toolkit.models.centring``). A calibration
study used to keep the design cohort's choice for every simulated cohort; since
CAR-T 1.1.1 and the MRD change of the same day the choice is data and follows
each cohort (``data_updates``). This script measures the gap the change closed:
per prior draw it simulates a cohort at the design and counts, per parameter,
the entries the design centres without data on them in that cohort (a funnel
with their SD) and the entries the data pin that the design leaves
non-centred (locked to mu and sd).

Usage (run from the repository root)::

    python benchmarks/centring_mismatch.py [mrd|cart] [--design COHORT] [--draws 30] [--seed 4]

Without a model both are measured; without ``--design`` the default simulated trial (``toolkit simulate``
defaults) is written to a temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPECS = {"cart": "models/cart_primary.toml", "mrd": "models/mrd_primary.toml"}


def centring_of(problem, data: dict) -> dict[str, np.ndarray]:
    """{parameter: bool array}: the centring a model built from simulated ``data`` holds (``data_updates``)."""
    updates = problem.data_updates(data)
    if "centered" in updates:  # CAR-T: (patient, kinetic)
        from toolkit.models.cart import KINETIC_PARAMETERS

        mask = np.asarray(updates["centered"]) > 0.5
        return {k: mask[:, j] for j, k in enumerate(KINETIC_PARAMETERS)}
    return {k.removeprefix("centred_"): np.asarray(v) > 0.5 for k, v in updates.items() if k.startswith("centred_")}


def design_centring(model: str, problem) -> dict[str, np.ndarray]:
    if model == "cart":
        from toolkit.models.cart import KINETIC_PARAMETERS, centering_mask

        mask = centering_mask(problem.inputs())
        return {k: mask[:, j] for j, k in enumerate(KINETIC_PARAMETERS)}
    from toolkit.models.mrd import informed_patients

    return informed_patients(problem.inputs())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", choices=sorted(SPECS), help="default: both")
    parser.add_argument("--design", help="design cohort folder (default: the default simulated trial)")
    parser.add_argument("--draws", type=int, default=30)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    from toolkit.calibration.api import build_problem
    from toolkit.specs import load_spec

    for model in [args.model] if args.model else sorted(SPECS):
        with tempfile.TemporaryDirectory() as tmp:
            problem = build_problem(model, spec=load_spec(SPECS[model], model=model), design_cohort=args.design,
                                    work_dir=tmp)
            design = design_centring(model, problem)
            thetas = problem.draw_prior(args.draws, random_seed=args.seed)
            extra = {k: [] for k in design}
            missing = {k: [] for k in design}
            for j, theta in enumerate(thetas):
                own = centring_of(problem, problem.simulate(theta, random_seed=j))
                for k in design:
                    extra[k].append(int((design[k] & ~own[k]).sum()))
                    missing[k].append(int((~design[k] & own[k]).sum()))
            n = problem.inputs().n_patients
        print(f"{model}: {n} patients, {args.draws} prior draws (seed {args.seed}); per simulated cohort, mean (max)")
        print(f"{'parameter':<14}{'design centres':>16}{'centred, no data':>20}{'data, not centred':>20}")
        for k in design:
            print(f"{k:<14}{int(design[k].sum()):>16}{np.mean(extra[k]):>14.1f} ({max(extra[k]):>3})"
                  f"{np.mean(missing[k]):>14.1f} ({max(missing[k]):>3})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
