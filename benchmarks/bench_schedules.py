"""Schedule-study benchmark: wall time per fit and for the whole study, and the resulting table.

Runs ``toolkit.design.schedules.run_schedules`` on the spec (default models/design_schedules.toml) with a
few cohorts per schedule, then prints seconds per fit (from each task's own timing, which includes the
model build, the compile, sampling and the prior-SD draws) and the contraction / coverage table.

Run from the repository root (what docs/design_schedules.md quotes; small scale)::

    .venv/bin/python benchmarks/bench_schedules.py --cohorts 4 --schedules current,early_mrd --models mrd \
        --workers 2 --out /tmp/schedules-bench

The full study (every schedule and analysis; about 100 cohorts per schedule for coverage known to
+- 0.03) is the command line of docs/design_schedules.md, best run on a cluster (``--scheduler``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(args) -> int:
    from toolkit.design.schedules import load_schedule_spec, run_schedules, summarize_schedules, write_outputs

    split = lambda text: [t for t in (text or "").split(",") if t] or None  # noqa: E731
    study = load_schedule_spec(args.spec).subset(schedules=split(args.schedules), models=split(args.models))
    t0 = time.perf_counter()
    table = run_schedules(study, args.cohorts, args.out, workers=args.workers, resume=args.resume)
    wall = time.perf_counter() - t0
    write_outputs(table, study, args.out)
    per_fit = table.drop_duplicates(["schedule", "cohort", "model"]).groupby("model")["seconds"]
    print(f"{len(table.drop_duplicates(['schedule', 'cohort', 'model']))} fits in {wall:.0f} s wall "
          f"({args.workers} workers)")
    print(per_fit.describe()[["count", "mean", "min", "max"]].to_string())
    print(summarize_schedules(table).to_string(index=False))
    return 0


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(ROOT / "models" / "design_schedules.toml"))
    p.add_argument("--cohorts", type=int, default=4)
    p.add_argument("--schedules", default="current,early_mrd")
    p.add_argument("--models", default="mrd")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", required=True, help="a new folder (or an existing study with --resume)")
    p.add_argument("--resume", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse()))
