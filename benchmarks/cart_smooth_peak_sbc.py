r"""Diagnostic: the CAR-T calibration study with the curve's two phases blended over H days (**not the model**).

The Stein curve's slope jumps at Tmax, so each patient's log density has a kink in Tmax at every sample day
(benchmarks/README.md, "CAR-T: the step size is set by the kink at Tmax"). This runs the primary spec's
simulation-based calibration (same prior draws, design, sampler settings and reruns as
``toolkit calibrate cart --spec models/cart_primary.toml``) on the blended curve of
``cart_step_size.py --smooth-peak H``, in the generator and in the fit alike, so its simulations can be set
beside the model's own study one by one: same seed, same prior draw per simulation index.

In this process only (``workers=0``: the blend is a monkeypatch that Dask workers would not see)::

    nice -n 5 .venv/bin/python benchmarks/cart_smooth_peak_sbc.py --h 2 --simulations 20 \
        --design /tmp/calib/cartx/default_design --out /tmp/calib/cart_smooth2 [--resume]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def smooth_curve_np(h: float):
    """numpy twin of ``cart_step_size._smooth_curve(h)`` on unconstrained patient parameters (..., 6)."""
    from toolkit.calibration.kinetics import cart_curve_phases_np

    def curve(theta, t):
        expansion, contraction, d = cart_curve_phases_np(theta, t)
        w = 1.0 / (1.0 + np.exp(-d / h))
        return (1 - w) * expansion + w * contraction

    return curve


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--h", type=float, default=2.0, help="blend width in days")
    p.add_argument("--simulations", type=int, default=20)
    p.add_argument("--design", default=None, help="design cohort folder (default: the default simulated trial)")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--sims", metavar="FIRST-LAST", help="only these simulations, into an --out another process "
                   "started (a second process on the other core); no summary")
    args = p.parse_args(argv)

    from cart_step_size import _smooth_curve

    from toolkit.calibration import kinetics
    from toolkit.calibration.api import _extensions, build_problem
    from toolkit.calibration.report import write_calibration_report
    from toolkit.calibration.runner import run_study, study_settings
    from toolkit.models import cart
    from toolkit.specs import load_spec, shipped_spec

    cart.log_cart_curve = _smooth_curve(args.h)  # read by build_cart_model at build time
    kinetics.log_cart_curve_np = smooth_curve_np(args.h)  # the generator's curve
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
