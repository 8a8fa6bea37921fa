r"""Diagnostic: the CAR-T calibration study at another peak rounding than the model's.

The model's curve rounds Stein's peak over ``PEAK_ROUNDING_DAYS`` (``toolkit.models.kinetics``; model 1.1.0).
This runs the primary spec's simulation-based calibration (same prior draws, design, sampler settings and
reruns as ``toolkit calibrate cart --spec models/cart_primary.toml``) with the peak rounded over ``--h`` days
instead, in the generator and in the fit alike, so its simulations can be set beside the model's own study
one by one: same seed, same prior draw per simulation index. ``--h 1e-6`` is Stein's kinked curve (the model
before 1.1.0).

In this process only (``workers=0``: the setting is a module attribute that Dask workers would not see)::

    nice -n 5 .venv/bin/python benchmarks/cart_peak_rounding_sbc.py --h 1 --simulations 20 \
        --design calib/cart/default_design --out calib/cart_h1 [--resume]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--h", type=float, default=1e-6, help="peak rounding in days (default 1e-6: Stein's kinked curve)")
    p.add_argument("--simulations", type=int, default=20)
    p.add_argument("--design", default=None, help="design cohort folder (default: the default simulated trial)")
    p.add_argument("--out", default=None, help="study folder (default calib/cart_peak_rounding_<h>)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--sims", metavar="FIRST-LAST", help="only these simulations, into an --out another process "
                   "started (a second process on the other core); no summary")
    args = p.parse_args(argv)
    args.out = args.out or f"calib/cart_peak_rounding_{args.h:g}"

    from toolkit.calibration.api import _extensions, build_problem
    from toolkit.calibration.report import write_calibration_report
    from toolkit.calibration.runner import run_study, study_settings
    from toolkit.models import kinetics
    from toolkit.specs import load_spec, shipped_spec

    kinetics.PEAK_ROUNDING_DAYS = args.h  # read by the fit's graph and the generator's curve (this process only)
    spec = load_spec(shipped_spec("models/cart_primary.toml"), model="cart")
    problem = build_problem("cart", spec=spec, design_cohort=args.design, work_dir=args.out)
    settings = study_settings(spec["sampler"])
    if args.sims:
        from toolkit.calibration import runner

        first, last = (int(x) for x in args.sims.split("-"))
        todo = [s for s in range(first, last + 1) if s not in runner.done_simulations(args.out)]
        thetas = runner.prior_draws(problem, todo, seed=settings.random_seed)
        for sim in todo:
            record = runner.run_simulation(problem, sim, thetas[sim], settings=settings,
                                           extensions=_extensions(spec, None))
            runner._write_atomic(runner.record_frame(record), runner._sim_path(Path(args.out), sim))  # noqa: SLF001
            print(f"simulation {sim}: converged {record['converged']}, runs {record['runs']}", flush=True)
        return 0
    run_study(problem, args.simulations, args.out, settings=settings, workers=0,
              resume=args.resume, extensions=_extensions(spec, None))
    write_calibration_report(args.out)
    print(f"summary: {Path(args.out) / 'calibration.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
