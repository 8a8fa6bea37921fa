"""Design-study throughput: simulated trials per minute for the primary rule with 2 looks (interim + final).

Runs ``--trials`` trials of one scenario of ``models/design_primary.toml`` (each trial: simulate, cut at the
interim and at the final analysis, fit the primary cure model at both with the design's sampler settings,
apply the rule) in this process or on a local Dask cluster, and prints trials/min, seconds per fit, and the
honest extrapolation to the issue's target (1000 trials per scenario, 3 scenarios, <= 30 min on 2 cores).
With ``--interim K`` it also times ``toolkit interim``'s fast approximation on a simulated 40-patient cohort
and, for K > 0, its brute-force validator on K refits of imputed trials (agreement of the two decisions).

    .venv/bin/python benchmarks/bench_design.py --trials 2 --workers 0
    .venv/bin/python benchmarks/bench_design.py --trials 4 --workers 2
    .venv/bin/python benchmarks/bench_design.py --trials 2 --workers 0 --reference   # the per-look compile path
    .venv/bin/python benchmarks/bench_design.py --trials 0 --interim 20 --cohorts 3

The machine these numbers come from is shared (2 cores, other jobs running): say so when quoting them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def bench_trials(args) -> dict:
    from toolkit.design.operating import load_results, run_design
    from toolkit.design.spec import load_design

    design = load_design(ROOT / "models" / "design_primary.toml")
    index = [s.name for s in design.scenarios].index(args.scenario)
    from dataclasses import replace

    one = replace(design, scenarios=(design.scenarios[index],))
    import os

    import toolkit.design.operating as operating

    operating.COMPILE_ONCE = not args.reference  # in-process only: Dask workers import the module afresh
    if args.reference and args.workers:
        raise SystemExit("--reference runs in-process only (--workers 0)")
    out = Path(tempfile.mkdtemp(prefix="bench-design-"))
    load_before = os.getloadavg()
    done = []  # (wall, process CPU) when each trial is stored: the steady rate leaves out the first (the compile)
    t0, cpu0 = time.perf_counter(), time.process_time()
    run_design(one, args.trials, out, workers=args.workers,
               progress=lambda record: done.append((time.perf_counter(), time.process_time())))
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    res = load_results(out)
    fits = res[res["error"] == ""]
    per_min = args.trials / wall * 60
    target = 1000 * len(design.scenarios)
    return {"path": "fit_durability per look (reference)" if args.reference else "compiled once per worker",
            "trials": args.trials, "workers": args.workers, "wall_seconds": round(wall, 1),
            # other jobs share the machine: the 1-minute load average before and after, as `uptime` shows it
            "load_before": round(load_before[0], 2), "load_after": round(load_after[0], 2),
            "seconds_per_trial_median": round(float(res.groupby("trial")["seconds"].sum().median()), 1),
            "trials_per_min": round(per_min, 2), **_steady(done, args.workers), "fits": len(fits),
            "seconds_per_fit_median": round(float(fits["seconds"].median()), 1) if len(fits) else None,
            "not_converged": int((~fits["converged"].astype(bool)).sum()),
            "extrapolated_minutes_1000_per_scenario_x3": round(_minutes(target, done, t0, per_min), 0),
            "target_minutes": 30}


def _steady(done: list, workers: int) -> dict:
    """Trials a minute after the first trial was stored (compiling is then behind every worker), and in-process
    the CPU seconds a trial (all threads of this process: the sampler's included)."""
    if len(done) < 3:
        return {}
    (w0, c0), (w1, c1) = done[0], done[-1]
    out = {"steady_trials_per_min": round((len(done) - 1) / (w1 - w0) * 60, 2)}
    if not workers:
        out["steady_cpu_seconds_per_trial"] = round((c1 - c0) / (len(done) - 1), 2)
    return out


def _minutes(trials: int, done: list, t0: float, per_min: float) -> float:
    """Minutes for ``trials`` trials: the start-up (until the first trial is stored) plus the rest at the steady
    rate; over the whole run when too few trials were stored to tell the two apart."""
    if len(done) < 3:
        return trials / per_min
    rate = (len(done) - 1) / (done[-1][0] - done[0][0])  # trials a second
    return ((done[0][0] - t0) + (trials - 1) / rate) / 60


def bench_interim(args) -> list[dict]:
    from toolkit.data import load_cohort
    from toolkit.design.interim import brute_force, fit_current, predictive_probability_of_success
    from toolkit.design.spec import load_design
    from toolkit.design.trials import write_interim_cohort

    design = load_design(ROOT / "models" / "design_primary.toml")
    rows = []
    for c in range(args.cohorts):
        folder = Path(tempfile.mkdtemp(prefix="bench-interim-")) / "cohort"
        write_interim_cohort(design, folder, scenario="hypothesised", trial=100 + c, patients=40)
        cohort = load_cohort(folder)
        t0 = time.perf_counter()
        fit = fit_current(cohort, design)
        pos = predictive_probability_of_success(cohort, design, imputations=1000, seed=c, fit=fit)
        row = {"cohort": c, "patients": len(cohort.patients), "interim_seconds": round(time.perf_counter() - t0, 1),
               "pos": pos["pos"], "pos_se": round(pos["pos_mc_se"], 4),
               "q_now": pos["current_posterior_probability"]}
        if args.interim:
            bf = brute_force(cohort, design, imputations=args.interim, seed=1000 + c, fit=fit,
                             workdir=tempfile.mkdtemp(prefix="bench-bf-"))
            row.update({"bf_imputations": bf["imputations"], "pos_approx_same_imputations": bf["pos_approx"],
                        "pos_refit": bf["pos_refit"], "decision_agreement": bf["agreement"],
                        "q_abs_diff_mean": round(float(sum(abs(a - b) for a, b in zip(bf["q_approx"], bf["q_refit"]))
                                                       / bf["imputations"]), 3)})
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="0: in-process; K: local Dask cluster of K workers")
    parser.add_argument("--scenario", default="hypothesised")
    parser.add_argument("--reference", action="store_true",
                        help="fit each look with fit_durability (a model built and compiled per look), in-process")
    parser.add_argument("--interim", type=int, default=-1, help="brute-force refits per cohort (-1: skip interim)")
    parser.add_argument("--cohorts", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    out = {}
    if args.trials > 0:
        out["design"] = bench_trials(args)
        print(json.dumps(out["design"]), flush=True)
    if args.interim >= 0:
        out["interim"] = bench_interim(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
