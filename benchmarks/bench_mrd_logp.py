"""Cost of one MRD log-density gradient: the fixed censoring of a fit and the swappable one of a calibration study.

    python benchmarks/bench_mrd_logp.py [--repeats 3] [--draws 500]

``build_mrd_model`` fixes each assessment's censoring branch when it is built; with
``swappable_censoring=True`` (every ``toolkit calibrate mrd`` fit) it evaluates the branches on every row and
lets the data select, so a compiled model takes a new simulated cohort. This prints, for the example cohort
(50 responders, 318 assessments), the milliseconds per leapfrog step of nutpie's sampler in each mode: one chain
of ``--draws`` tuning and ``--draws`` kept draws on one core (one-thread settings), steps counted over warm-up and
kept draws, the best of ``--repeats`` runs after one to warm up, compile time apart. The step is the sampler's
unit of work (one gradient plus the sampler's own arithmetic), so the study's sampling time is steps x this.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--draws", type=int, default=500)
    args = parser.parse_args()
    from toolkit.calibration.runner import THREAD_ENV

    if any(os.environ.get(k) != v for k, v in THREAD_ENV.items()):  # one thread, as a study's workers
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **THREAD_ENV})
    import numpy as np
    import nutpie

    from toolkit.data import load_cohort
    from toolkit.data.mrd_inputs import to_mrd_inputs
    from toolkit.models.mrd import build_mrd_model

    inputs = to_mrd_inputs(load_cohort("data_templates/example"))
    print(f"example cohort: {inputs.n_patients} responders, {inputs.day.size} assessments; 1 chain x "
          f"{args.draws} tune x {args.draws} draws, best of {args.repeats}")
    for swappable in (False, True):
        t0 = time.perf_counter()
        compiled = nutpie.compile_pymc_model(build_mrd_model(inputs, swappable_censoring=swappable))
        compile_s = time.perf_counter() - t0
        per_step = []
        for seed in range(args.repeats + 1):
            t1 = time.perf_counter()
            dt = nutpie.sample(compiled, draws=args.draws, tune=args.draws, chains=1, cores=1, seed=seed,
                               progress_bar=False, save_warmup=True)
            seconds = time.perf_counter() - t1
            steps = sum(int(np.asarray(dt[g]["n_steps"]).sum()) for g in ("warmup_sample_stats", "sample_stats"))
            if seed:  # the first run warms up
                per_step.append(1e3 * seconds / steps)
        print(f"{'swappable' if swappable else 'fixed':9s} censoring: {min(per_step):.3f} ms per leapfrog step "
              f"(runs: {', '.join(f'{v:.3f}' for v in per_step)}); compile {compile_s:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
