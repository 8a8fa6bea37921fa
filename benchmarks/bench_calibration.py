"""SBC throughput benchmark: simulations per minute with 1 and 2 workers, overhead, and the simple way.

What it measures (durability model, the spec's variant and sampler settings unless
overridden; design = the example cohort in data_templates/example):

1. ``run_study`` on a local Dask cluster with K workers for each K in ``--workers``
   (and ``0`` = in-process, no Dask, if listed): end-to-end wall time (cluster
   start, per-worker compile and all simulations), steady-state simulations per
   minute (simulations after each worker's first, from their own timings), and the
   per-simulation overhead beyond sampling: (simulation seconds - sampling seconds) /
   sampling seconds, over simulations that did not compile.
2. The simple way, as generic SBC packages do it (e.g. simuk): per simulation a
   new PyMC model built on the simulated data, and ``pm.sample`` with nutpie, which
   compiles it again; seconds per simulation, in this process.

Run from the repository root (small scale; the full study is 1000 simulations)::

    .venv/bin/python benchmarks/bench_calibration.py --simulations 20 --workers 1,2 --simple 3
    .venv/bin/python benchmarks/bench_calibration.py --draws 250 --tune 250   # lighter sampling

Each run uses fresh output folders under a temporary directory; numbers are printed
as a table and, with ``--json FILE``, written to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _problem(args):
    from toolkit.calibration.api import build_problem
    from toolkit.specs import load_spec

    spec = load_spec(ROOT / "models" / args.spec, model="durability")
    return build_problem("durability", spec=spec, design_cohort=ROOT / "data_templates" / "example",
                         variant=args.variant), spec


def _settings(args, spec):
    from toolkit.calibration.runner import study_settings

    sampler = dict(spec.get("sampler", {}))
    for key in ("draws", "tune", "chains"):
        if getattr(args, key) is not None:
            sampler[key] = getattr(args, key)
    return study_settings({k: sampler[k] for k in ("chains", "tune", "draws", "seed") if k in sampler})


def bench_engine(args, workers: int, root: Path) -> dict:
    from toolkit.calibration.runner import load_results, run_study

    problem, spec = _problem(args)
    settings = _settings(args, spec)
    out = root / f"engine_w{workers}"
    t0 = time.perf_counter()
    run_study(problem, args.simulations, out, settings=settings, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    sims = load_results(out).groupby("sim").first()
    steady = sims[(sims["compile_seconds"] == 0) & (sims["status"] == "ok")]
    per_sim = float(steady["seconds"].mean())
    sampling = float(steady["sampling_seconds"].mean())
    k = max(workers, 1)
    return {"workers": workers, "simulations": int(len(sims)), "failed": int((sims["status"] != "ok").sum()),
            "wall_seconds": wall, "end_to_end_per_min": 60 * len(sims) / wall,
            "compile_seconds_per_worker": float(sims.loc[sims["compile_seconds"] > 0, "compile_seconds"].mean()),
            "steady_per_min": 60 * k / per_sim, "seconds_per_sim": per_sim, "sampling_seconds_per_sim": sampling,
            "overhead_beyond_sampling": (per_sim - sampling) / sampling}


def bench_simple(args, n: int) -> dict:
    """A new model and a compile per simulation (the generic-package way)."""
    import pymc as pm

    from toolkit.models.durability import build_durability_model

    problem, spec = _problem(args)
    settings = _settings(args, spec)
    thetas = problem.draw_prior(n, random_seed=1)
    times = []
    for i, theta in enumerate(thetas):
        t0 = time.perf_counter()
        data = problem.simulate(theta, random_seed=i)
        model = build_durability_model(problem.inputs(data["time_years"], data["event"]), problem.fit_priors,
                                       variant=problem.variant)
        pm.sample(model=model, nuts_sampler="nutpie", draws=settings.draws, tune=settings.tune,
                  chains=settings.chains, cores=1, random_seed=i, progressbar=False,
                  compute_convergence_checks=False)
        times.append(time.perf_counter() - t0)
    return {"simulations": n, "seconds_per_sim": sum(times) / n, "first_seconds": times[0],
            "per_min": 60 * n / sum(times)}


def main(args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-calibration-"))
    result = {"variant": args.variant, "spec": args.spec, "simulations": args.simulations,
              "cpu_count": os.cpu_count(), "engine": [], "simple": None}
    for k in [int(x) for x in args.workers.split(",") if x != ""]:
        row = bench_engine(args, k, root)
        result["engine"].append(row)
        print(f"workers={k}: {row['simulations']} sims in {row['wall_seconds']:.0f} s "
              f"({row['end_to_end_per_min']:.1f}/min end to end, {row['steady_per_min']:.1f}/min steady); "
              f"compile {row['compile_seconds_per_worker']:.0f} s/worker; per sim {row['seconds_per_sim']:.3f} s, "
              f"sampling {row['sampling_seconds_per_sim']:.3f} s, overhead {100 * row['overhead_beyond_sampling']:.0f}%",
              flush=True)
    if args.simple:
        row = bench_simple(args, args.simple)
        result["simple"] = row
        print(f"simple way (new model + compile per simulation): {row['seconds_per_sim']:.1f} s per sim "
              f"({row['per_min']:.1f}/min)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--simulations", type=int, default=20)
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (0 = in-process)")
    p.add_argument("--simple", type=int, default=3, help="simulations done the simple way (0 = skip)")
    p.add_argument("--spec", default="durability_primary.toml")
    p.add_argument("--variant", choices=["weibull", "cure"])
    p.add_argument("--draws", type=int)
    p.add_argument("--tune", type=int)
    p.add_argument("--chains", type=int)
    p.add_argument("--json")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse())
