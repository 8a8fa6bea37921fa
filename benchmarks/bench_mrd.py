"""MRD-model benchmark: whole-fit wall time (cold and warm compile), sampler health, scaling.

What it measures (nutpie, ``toolkit.inference.sample`` with ``SamplerSettings`` defaults
except the draw counts; target_accept 0.9):

1. The 60-patient example cohort (``data_templates/example``: 50 responders with MRD,
   318 assessments, 5-8 for most patients) at 4 chains x 1000 tune x 1000 draws.
   Each fit runs in a fresh subprocess: "cold" with empty PyTensor/numba cache dirs,
   "warm" with the same dirs again. Reported: whole fit seconds (build + compile +
   sampling + pointwise log-likelihood; targets <= 60 s, 0 divergences, max R-hat
   <= 1.01), its parts, mean leapfrog steps per draw, min bulk/tail ESS, max R-hat over
   every posterior variable and over the population parameters, and the seconds of
   ``mrd_estimands`` (2000 simulated patients per draw).
2. Scaling: simulated cohorts (``simulate_trial``) of 600 and 6000 patients, same
   settings for 600; 6000 uses 2 chains x 200 tune x 200 draws (the row says so), as
   4 x 1000 x 1000 would take hours on 2 cores.

Run from the repository root::

    .venv/bin/python benchmarks/bench_mrd.py                 # full (about 20-40 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_mrd.py --quick         # smoke run (small draws, 60 patients)
    .venv/bin/python benchmarks/bench_mrd.py --json out.json --sections 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLE = REPO / "data_templates" / "example"
TARGET_FIT_S = 60.0
SEED = 20261125
POPULATION = ["log_clearance", "clearance_log_ratio", "clearance_sd", "baseline_anchor_sd", "logit_recurrence",
              "recurrence_log_or", "floor_depth_log10", "floor_depth_sd_log10", "log_relapse_latency",
              "relapse_log_time_ratio", "relapse_sd", "log_doubling_days", "mrd_residual_sd_log10",
              "method_bias_log10", "logit_response", "response_log_or"]


def _cache_env(root: Path) -> dict[str, str]:
    flags = os.environ.get("PYTENSOR_FLAGS", "")
    flags = ",".join([f for f in flags.split(",") if f and not f.startswith("base_compiledir=")]
                     + [f"base_compiledir={root / 'pytensor'}"])
    return {"PYTENSOR_FLAGS": flags, "NUMBA_CACHE_DIR": str(root / "numba")}


# --------------------------------------------------------------------------- worker (one fit, own process)


def worker(spec: dict) -> dict:
    """Fit one cohort and return the numbers (runs in a subprocess so compile caches are controlled)."""
    t_start = time.perf_counter()
    import numpy as np

    from toolkit.data import load_cohort
    from toolkit.data.mrd_inputs import to_mrd_inputs
    from toolkit.inference import SamplerSettings, diagnose, sample
    from toolkit.models.mrd import build_mrd_model
    from toolkit.mrd_estimands import mrd_estimands

    t_import = time.perf_counter()
    inputs = to_mrd_inputs(load_cohort(spec["cohort"]))
    settings = SamplerSettings(chains=spec["chains"], tune=spec["tune"], draws=spec["draws"], progressbar=False,
                               random_seed=SEED)
    t0 = time.perf_counter()
    model = build_mrd_model(inputs)
    t_build = time.perf_counter()
    dt = sample(model, settings)
    t_fit = time.perf_counter()
    d_all = diagnose(dt)
    d_pop = diagnose(dt, var_names=POPULATION)
    steps = dt["sample_stats"]["n_steps"].to_numpy()
    row = {
        "patients": inputs.n_patients, "assessments": inputs.n_assessments,
        "assessments_per_patient_median": float(np.median(np.bincount(inputs.assessment_patient))),
        "chains": spec["chains"], "tune": spec["tune"], "draws": spec["draws"],
        "import_seconds": t_import - t_start,
        "fit_seconds": t_fit - t0,
        "build_seconds": t_build - t0,
        "compile_seconds": float(dt.attrs["compile_seconds"]),
        "sampling_seconds": float(dt.attrs["sampling_seconds"]),
        "log_likelihood_seconds": float(dt.attrs["log_likelihood_seconds"]),
        "steps_per_draw": float(steps.mean()),
        "divergences": int(d_all.divergences),
        "max_rhat_all": d_all.max_rhat, "max_rhat_population": d_pop.max_rhat,
        "min_ess_bulk_all": d_all.min_ess_bulk, "min_ess_tail_all": d_all.min_ess_tail,
        "min_ess_bulk_population": d_pop.min_ess_bulk,
        "min_bfmi": d_all.min_bfmi,
    }
    if spec.get("estimands", True):
        t1 = time.perf_counter()
        est = mrd_estimands(dt, inputs)
        row["estimands_seconds"] = time.perf_counter() - t1
        row["clearance_rate_ratio"] = est["clearance_rate_ratio"]["median"]
        row["mrd_recurrence_365d_difference"] = est["mrd_recurrence_365d_difference"]["median"]
    row["process_seconds"] = time.perf_counter() - t_start
    return row


def _run_worker(spec: dict, cache_root: Path, timeout: float) -> dict:
    env = {**os.environ, **_cache_env(cache_root)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", **spec}
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": proc.stderr[-2000:], **spec}
    row = json.loads(lines[-1])
    row["subprocess_wall_seconds"] = wall
    return row


# --------------------------------------------------------------------------- sections


def _fmt(x, digits=3):
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.{digits}g}"
    return str(x)


def _print_rows(title: str, rows: list[dict], keys: list[str]) -> None:
    print(f"\n## {title}")
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(_fmt(r.get(k, "")) for k in keys) if "error" not in r else f"ERROR {r['error'][:500]}")


def section_example(quick: bool) -> list[dict]:
    n = 200 if quick else 1000
    spec = {"cohort": str(EXAMPLE), "chains": 4, "tune": n, "draws": n}
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold", "warm"):
            row = _run_worker(spec, Path(cache), timeout=1800)
            row["run"] = label
            row["meets_fit_target"] = bool(row.get("fit_seconds", math.inf) <= TARGET_FIT_S)
            rows.append(row)
    keys = ["run", "patients", "assessments", "fit_seconds", "compile_seconds", "sampling_seconds",
            "log_likelihood_seconds", "steps_per_draw", "divergences", "max_rhat_all", "max_rhat_population",
            "min_ess_bulk_all", "min_ess_tail_all", "estimands_seconds", "meets_fit_target"]
    _print_rows(f"1. example cohort, 4 x {n} tune x {n} draws (target fit <= {TARGET_FIT_S:.0f} s)", rows, keys)
    return rows


def section_scaling(quick: bool, sizes: list[int]) -> list[dict]:
    from toolkit.simulate import simulate_trial

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            folder = simulate_trial(n, seed=SEED, with_truth=False).write(Path(tmp) / f"c{n}")
            if quick:
                spec = {"cohort": str(folder), "chains": 2, "tune": 100, "draws": 100}
            elif n <= 1000:
                spec = {"cohort": str(folder), "chains": 4, "tune": 1000, "draws": 1000}
            else:
                spec = {"cohort": str(folder), "chains": 2, "tune": 200, "draws": 200}
            spec["estimands"] = n <= 1000
            row = _run_worker(spec, Path(tmp) / "cache", timeout=3 * 3600)
            row["simulated_patients"] = n
            rows.append(row)
            _print_rows("partial", [row], ["simulated_patients", "fit_seconds", "steps_per_draw"])
    keys = ["simulated_patients", "patients", "assessments", "chains", "tune", "draws", "fit_seconds",
            "compile_seconds", "sampling_seconds", "log_likelihood_seconds", "steps_per_draw", "divergences",
            "max_rhat_all", "max_rhat_population", "min_ess_bulk_all", "min_ess_bulk_population"]
    _print_rows("2. scaling (patients = responders with MRD; simulated = infused)", rows, keys)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small draw counts, for a smoke run")
    p.add_argument("--sections", default="1,2", help="comma-separated subset of 1,2")
    p.add_argument("--sizes", default="600,6000", help="simulated cohort sizes for section 2")
    p.add_argument("--json", type=Path, help="write all rows here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    sections = {s.strip() for s in args.sections.split(",")}
    results = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    if "1" in sections:
        results["example"] = section_example(args.quick)
    if "2" in sections:
        results["scaling"] = section_scaling(args.quick, [int(s) for s in args.sizes.split(",")])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
