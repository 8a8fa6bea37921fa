"""Benchmark of the joint model (``toolkit fit joint``): wall time, diagnostics, ESS/s, two-stage vs joint.

Usage: ``.venv/bin/python benchmarks/bench_joint.py [--quick] [--associations A,B] [--tune N] [--scaling]
[--backends nutpie,pymc] [--two-stage-cohorts N] [--json F]``

``--associations`` is passed to ``toolkit fit joint`` (e.g. ``log_cmax,cart_loss,mrd_clearance`` for the
model with the MRD submodel, the primary analysis); ``--tune`` changes the warm-up length of sections 1-3.

1. ``toolkit fit joint --data data_templates/example`` as a whole process, 4 chains x 1000 tune x
   1000 draws (nutpie, target_accept 0.95), first with empty PyTensor/numba caches ("cold"), then
   again ("warm"). Target: <= 180 s cold, 0 divergences, R-hat <= 1.01. Diagnostics are over every
   sampled quantity (patient parameters included), as ``summary.json`` reports them.
2. ``--two-stage``: the same with ``--kinetics two-stage`` (CAR-T fit, then the relapse model on plug-in
   features), for time and estimates side by side.
3. ``--scaling``: a simulated 600-patient trial (4 x 500 x 500, warm caches).
3b. ``--backends``: the example with each named backend (4 x 300 x 300, warm caches), min-ESS per
   sampling second side by side.
4. ``--two-stage-cohorts N``: N simulated 60-patient trials (seed 700+i) fitted both ways (4 x 500 x
   500); prints bias and 90 % coverage of the association parameters and ``hazard_ratio_direct``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "data_templates" / "example"
TOOLKIT = [sys.executable, "-m", "toolkit"]
CHECKED = ("hazard_ratio_direct", "hazard_ratio_total", "log_hr_per_log_cmax", "log_hr_cart_loss")


def fit_process(data: Path, out: Path, caches: Path, *extra: str) -> dict:
    """One ``toolkit fit joint`` in a fresh interpreter; returns wall time and the run's numbers."""
    env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={caches / 'pytensor'}",
           "NUMBA_CACHE_DIR": str(caches / "numba")}
    t0 = time.perf_counter()
    proc = subprocess.run([*TOOLKIT, "fit", "joint", "--data", str(data), "--out", str(out), "--no-figures",
                           *extra], env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"fit failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    timings = json.loads((out / "provenance.json").read_text()).get("timings", {})
    d = summary["diagnostics"]
    sampling = float(timings.get("sampling_seconds") or float("nan"))
    return {"wall_seconds": wall, "compile_seconds": timings.get("compile_seconds"), "sampling_seconds": sampling,
            "fit_seconds": timings.get("fit_seconds"), "divergences": d["divergences"], "max_rhat": d["max_rhat"],
            "min_ess_bulk": d["min_ess_bulk"], "min_ess_per_sampling_second": d["min_ess_bulk"] / sampling,
            "converged": d["converged"],
            "estimands": {k: summary["estimands"][k] for k in CHECKED if k in summary["estimands"]}}


def print_rows(title: str, rows: dict) -> None:
    print(f"\n{title}")
    print(f"  {'run':28s} {'wall s':>8s} {'compile s':>9s} {'sampling s':>10s} {'div':>4s} {'R-hat':>6s} "
          f"{'min ESS':>8s} {'ESS/s':>7s}  HR direct / total (median)")
    for name, r in rows.items():
        est = r["estimands"]
        print(f"  {name:28s} {r['wall_seconds']:8.1f} {r['compile_seconds'] or float('nan'):9.1f} "
              f"{r['sampling_seconds']:10.1f} {r['divergences']:4d} {r['max_rhat']:6.3f} {r['min_ess_bulk']:8.0f} "
              f"{r['min_ess_per_sampling_second']:7.2f}  {est['hazard_ratio_direct']['median']:.2f} / "
              f"{est['hazard_ratio_total']['median']:.2f}")


def two_stage_cohorts(n: int, tmp: Path, caches: Path, sampler: list[str]) -> dict:
    from toolkit.simulate import compute_truth, simulate_trial

    truth = compute_truth()
    out: dict = {"joint": [], "two-stage": []}
    for i in range(n):
        trial = simulate_trial(60, seed=700 + i, with_truth=False)
        keep = trial.patients["patient_id"].isin(trial.cart_kinetics["patient_id"])
        trial.patients = trial.patients[keep]
        trial.outcomes = trial.outcomes[keep.to_numpy()]
        folder = trial.write(tmp / f"cohort{i}")
        for kinetics in out:
            r = fit_process(folder, tmp / f"run{i}_{kinetics}", caches, *sampler, "--kinetics", kinetics)
            out[kinetics].append(r)
            print(f"  cohort {i} {kinetics}: converged {r['converged']}, "
                  + ", ".join(f"{k} {r['estimands'][k]['median']:.2f}" for k in CHECKED), flush=True)
    print("\n  bias (mean posterior median - truth) and 90% coverage")
    for name in CHECKED:
        line = f"  {name:22s} truth {truth[name]:6.3f}"
        for kinetics, records in out.items():
            med = [r["estimands"][name]["median"] for r in records]
            cov = [r["estimands"][name]["hdi_90"][0] <= truth[name] <= r["estimands"][name]["hdi_90"][1]
                   for r in records]
            line += f" | {kinetics}: bias {sum(med) / len(med) - truth[name]:+.3f}, coverage {sum(cov) / len(cov):.2f}"
        print(line)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 chains x 200 x 200 (smoke run)")
    p.add_argument("--two-stage", action="store_true")
    p.add_argument("--scaling", action="store_true")
    p.add_argument("--two-stage-cohorts", type=int, default=0)
    p.add_argument("--associations", help="passed to toolkit fit joint")
    p.add_argument("--tune", type=int, help="warm-up draws per chain (default: the toolkit's, 1000)")
    p.add_argument("--backends", help="comma-separated backends for section 3b, e.g. nutpie,pymc")
    p.add_argument("--no-example", action="store_true", help="skip section 1 (cold and warm example fits)")
    p.add_argument("--json")
    args = p.parse_args()
    sampler = ["--chains", "2", "--tune", "200", "--draws", "200"] if args.quick else []
    if args.tune and not args.quick:
        sampler += ["--tune", str(args.tune)]
    if args.associations:
        sampler += ["--associations", args.associations]
    model_args = ["--associations", args.associations] if args.associations else []
    record: dict = {"load_average_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench_joint_") as tmp:
        tmp, caches = Path(tmp), Path(tmp) / "caches"
        rows = {} if args.no_example else {"cold": fit_process(EXAMPLE, tmp / "cold", caches, *sampler),
                                           "warm": fit_process(EXAMPLE, tmp / "warm", caches, *sampler)}
        if args.two_stage:
            rows["two-stage (warm)"] = fit_process(EXAMPLE, tmp / "two", caches, *sampler, "--kinetics", "two-stage")
        if rows:
            print_rows("1. toolkit fit joint on the example cohort (60 patients), whole process", rows)
            record["example"] = rows
        if args.scaling:
            from toolkit.simulate import simulate_trial

            big = simulate_trial(600, seed=31, with_truth=False)
            keep = big.patients["patient_id"].isin(big.cart_kinetics["patient_id"])
            big.patients, big.outcomes = big.patients[keep], big.outcomes[keep.to_numpy()]
            folder = big.write(tmp / "big")
            scale = {"600 patients, 4x500x500": fit_process(folder, tmp / "big_run", caches, "--tune", "500",
                                                            "--draws", "500", *model_args)}
            print_rows("3. Scaling", scale)
            record["scaling"] = scale
        if args.backends:
            backends = {f"{b}, 4x300x300 (warm)": fit_process(EXAMPLE, tmp / f"backend_{b}", caches, "--backend", b,
                                                              "--tune", "300", "--draws", "300", *model_args)
                        for b in args.backends.split(",")}
            print_rows("3b. Backends", backends)
            record["backends"] = backends
        if args.two_stage_cohorts:
            print(f"\n4. Joint vs two-stage on {args.two_stage_cohorts} simulated 60-patient trials")
            record["two_stage_cohorts"] = two_stage_cohorts(args.two_stage_cohorts, tmp, caches,
                                                            ["--tune", "500", "--draws", "500"])
    record["load_average_end"] = os.getloadavg()[0]
    print(f"\nload average: {record['load_average_start']:.1f} at start, {record['load_average_end']:.1f} at end")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
