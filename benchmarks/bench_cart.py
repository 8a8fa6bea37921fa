"""CAR-T kinetic model benchmark: whole-fit time on cold/warm compile caches, convergence, ESS/s.

What it measures (default: 4 chains x 1000 tune x 1000 draws, nutpie, the
60-patient example cohort in data_templates/example, 721 samples, 13 % below
the LLOQ):

``target_accept`` is ``toolkit.models.cart.RECOMMENDED_TARGET_ACCEPT`` (0.95)
unless ``--target-accept`` is given.

1. One whole fit in a fresh process, first with empty PyTensor and numba
   caches (``PYTENSOR_FLAGS=base_compiledir=...``, ``NUMBA_CACHE_DIR``; "cold")
   and then again with the same caches ("warm"). Whole fit = load cohort +
   ``to_cart_inputs`` + ``build_cart_model`` + ``sample`` (compile, sampling,
   pointwise log-likelihood) + ``diagnose`` + ``cart_estimands`` +
   ``cart_patient_estimands``; process wall adds interpreter start and imports.
   Reported: compile s, sampling s, divergences, max R-hat and min bulk/tail ESS
   over the population parameters (``mu_kinetic``, ``omega_kinetic``,
   ``arm_effect``, ``sigma_log``), bulk ESS of each, ESS/s (min bulk ESS per
   sampling second and per whole-fit second), leapfrog steps per draw.
   Targets: whole fit <= 60 s cold, 0 divergences, R-hat <= 1.01, min bulk ESS >= 400.
2. ``--compare``: the same fit (warm caches) with ``target_accept=0.9`` (the
   SamplerSettings default; the model recommends 0.95) and with the
   alternatives the model docstring discusses: ``centering="noncentered"``
   and ``CartPriors(omega_family="halfnormal")``.
3. ``--cohorts N``: N simulated trials (``simulate_trial(60, seed=500+i)``),
   warm caches, same numbers, to see the spread across data sets.

Run from the repository root::

    .venv/bin/python benchmarks/bench_cart.py                   # section 1 (about 2-3 minutes)
    .venv/bin/python benchmarks/bench_cart.py --compare --cohorts 3 --json bench_cart.json
    .venv/bin/python benchmarks/bench_cart.py --quick           # smoke run: 2 chains x 100/100

Numbers depend on machine load: on a shared 2-core machine, sampling time
varies by a factor of about 2 between runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLE = REPO / "data_templates" / "example"
POPULATION = ["mu_kinetic", "omega_kinetic", "arm_effect", "sigma_log"]
TARGETS = {"fit_seconds_cold": 60.0, "divergences": 0, "max_rhat": 1.01, "min_ess_bulk": 400.0}
SEED = 20261125
RECOMMENDED_TARGET_ACCEPT = 0.95  # toolkit.models.cart.RECOMMENDED_TARGET_ACCEPT (not imported: the parent
# process must not import PyTensor before the child processes set their cache folders)


# --------------------------------------------------------------------------- one fit (runs in a child process)


def fit_once(cfg: dict) -> dict:
    """One whole fit; returns timings and diagnostics (JSON-able)."""
    t_start = time.perf_counter()
    import arviz_stats as azs
    import numpy as np

    from toolkit.data import load_cohort
    from toolkit.data.inputs import to_cart_inputs
    from toolkit.estimands import cart_estimands, cart_patient_estimands
    from toolkit.inference import SamplerSettings, diagnose, sample
    from toolkit.models.cart import CartPriors, build_cart_model

    t_import = time.perf_counter()
    cohort = load_cohort(cfg["data"])
    inputs = to_cart_inputs(cohort)
    priors = CartPriors(omega_family=cfg.get("omega_family", "lognormal"))
    model = build_cart_model(inputs, priors, centering=cfg.get("centering", "auto"))
    t_build = time.perf_counter()
    settings = SamplerSettings(backend="nutpie", chains=cfg["chains"], tune=cfg["tune"], draws=cfg["draws"],
                               random_seed=cfg["seed"], progressbar=False, cores=2,
                               target_accept=cfg.get("target_accept", 0.9))
    dt = sample(model, settings)
    t_sample = time.perf_counter()
    diag = diagnose(dt, var_names=POPULATION)
    est = cart_estimands(dt["posterior"], inputs)
    cart_patient_estimands(dt["posterior"], inputs)
    t_end = time.perf_counter()

    post = dt["posterior"].to_dataset()[POPULATION]
    ess = azs.ess(post, method="bulk")
    per_param = {}
    for name in POPULATION:
        values = np.atleast_1d(ess[name].values)
        labels = [str(v) for v in post[name].coords[post[name].dims[-1]].values] if post[name].ndim > 2 else [""]
        for label, v in zip(labels, values):
            per_param[f"{name}[{label}]" if label else name] = float(v)
    stats = dt["sample_stats"].to_dataset()
    attrs = dt.attrs
    fit_s = t_end - t_import
    sampling = float(attrs["sampling_seconds"])
    return {
        "config": cfg,
        "n_patients": inputs.n_patients, "n_samples": inputs.n_samples,
        "censored_fraction": float(inputs.censored.mean()),
        "import_seconds": t_import - t_start,
        "inputs_and_build_seconds": t_build - t_import,
        "compile_seconds": float(attrs["compile_seconds"]),
        "sampling_seconds": sampling,
        "log_likelihood_seconds": float(attrs["log_likelihood_seconds"]),
        "post_processing_seconds": t_end - t_sample,
        "fit_seconds": fit_s,
        "divergences": int(diag.divergences),
        "max_rhat": float(diag.max_rhat),
        "min_ess_bulk": float(diag.min_ess_bulk),
        "min_ess_tail": float(diag.min_ess_tail),
        "ess_bulk": per_param,
        "min_ess_parameter": min(per_param, key=per_param.get),
        "ess_per_sampling_second": float(diag.min_ess_bulk) / sampling,
        "ess_per_fit_second": float(diag.min_ess_bulk) / fit_s,
        "leapfrog_steps_per_draw": float(stats["n_steps"].mean()),
        "step_size": float(stats["step_size"].mean()) if "step_size" in stats else math.nan,
        "cmax_gmr_median": est["cmax_gmr"]["median"],
        "auc28_gmr_median": est["auc28_gmr"]["median"],
        "persistence_half_life_ratio_median": est["persistence_half_life_ratio"]["median"],
    }


def _cache_env(root: Path) -> dict[str, str]:
    flags = os.environ.get("PYTENSOR_FLAGS", "")
    flags = ",".join([f for f in flags.split(",") if f and not f.startswith("base_compiledir=")]
                     + [f"base_compiledir={root / 'pytensor'}"])
    return {"PYTENSOR_FLAGS": flags, "NUMBA_CACHE_DIR": str(root / "numba")}


def run_child(cfg: dict, caches: Path) -> dict:
    """Run :func:`fit_once` in a fresh interpreter with the given cache folder; adds ``process_wall_seconds``."""
    env = {**os.environ, **_cache_env(caches)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)],
                          env=env, capture_output=True, text=True, timeout=1800, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark fit failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    record["process_wall_seconds"] = wall
    return record


# --------------------------------------------------------------------------- printing


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"
    return str(x)


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n{title}")
    cells = [header] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, row in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if j == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _row(label: str, r: dict) -> list:
    return [label, r["process_wall_seconds"], r["fit_seconds"], r["compile_seconds"], r["sampling_seconds"],
            r["log_likelihood_seconds"], r["post_processing_seconds"], r["divergences"], r["max_rhat"],
            r["min_ess_bulk"], r["min_ess_parameter"], r["ess_per_sampling_second"], r["ess_per_fit_second"],
            r["leapfrog_steps_per_draw"]]


HEADER = ["run", "wall s", "fit s", "compile s", "sampling s", "loglik s", "post s", "div", "max R-hat",
          "min ESS", "lowest", "ESS/s samp", "ESS/s fit", "steps/draw"]


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 2 chains x 100 tune x 100 draws")
    p.add_argument("--compare", action="store_true", help="also fit the noncentered and halfnormal alternatives")
    p.add_argument("--cohorts", type=int, default=0, help="also fit N simulated 60-patient trials (warm caches)")
    p.add_argument("--data", default=str(EXAMPLE), help="cohort folder (default: the example cohort)")
    p.add_argument("--target-accept", type=float, default=RECOMMENDED_TARGET_ACCEPT,
                   help=f"NUTS target acceptance (default {RECOMMENDED_TARGET_ACCEPT}, the model's recommendation)")
    p.add_argument("--json", help="write all the numbers to this JSON file")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary folders (caches, cohorts)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(args: argparse.Namespace) -> int:
    if args.worker:
        print(json.dumps(fit_once(json.loads(args.worker))))
        return 0
    sampler = {"chains": 2, "tune": 100, "draws": 100} if args.quick else {"chains": 4, "tune": 1000, "draws": 1000}
    base = {"data": str(args.data), "seed": SEED, "target_accept": args.target_accept, **sampler}
    tmp = Path(tempfile.mkdtemp(prefix="bench_cart_"))
    caches = tmp / "caches"
    caches.mkdir()
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "cpus": os.cpu_count(),
                **{n: md.version(n) for n in ("pymc", "pytensor", "nutpie", "arviz-stats", "numba", "numpy")}}
    record: dict = {"mode": "quick" if args.quick else "full", "sampler": sampler, "versions": versions,
                    "targets": TARGETS}
    print(f"bench_cart ({record['mode']}): Python {versions['python']}, {versions['cpus']} CPUs, pymc "
          f"{versions['pymc']}, pytensor {versions['pytensor']}, nutpie {versions['nutpie']}; "
          f"{sampler['chains']} chains x {sampler['tune']} tune x {sampler['draws']} draws; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    started = time.perf_counter()
    try:
        runs = {"cold": run_child(base, caches)}
        runs["warm"] = run_child(base, caches)
        record["runs"] = runs
        r = runs["cold"]
        print(f"cohort: {r['n_patients']} patients, {r['n_samples']} samples "
              f"({100 * r['censored_fraction']:.0f} % below the LLOQ)")
        print_table("1. Whole fit in a fresh process (cold = empty PyTensor + numba caches; warm = same caches again)",
                    HEADER, [_row(k, v) for k, v in runs.items()])
        print("   fit s = load + inputs + build + sample (compile, sampling, log-likelihood) + diagnose + estimands;"
              " wall s adds interpreter start and imports; ESS over the population parameters")
        print_table("   bulk ESS per population parameter (cold run)", ["parameter", "bulk ESS"],
                    [[k, v] for k, v in r["ess_bulk"].items()])
        if args.compare:
            alternatives = {"target_accept 0.9": {**base, "target_accept": 0.9},
                            "noncentered": {**base, "centering": "noncentered"},
                            "halfnormal omega": {**base, "omega_family": "halfnormal"}}
            record["compare"] = {k: run_child(cfg, caches) for k, cfg in alternatives.items()}
            print_table("2. Alternatives (warm caches; the first fit of a new graph still compiles it)", HEADER,
                        [_row("default (warm)", runs["warm"])]
                        + [_row(k, v) for k, v in record["compare"].items()])
        if args.cohorts:
            from toolkit.simulate import simulate_trial

            sims = {}
            for i in range(args.cohorts):
                folder = simulate_trial(60, seed=500 + i, with_truth=False).write(tmp / f"sim{i}")
                sims[f"seed {500 + i}"] = run_child({**base, "data": str(folder)}, caches)
            record["cohorts"] = sims
            print_table("3. Simulated 60-patient trials (warm caches; a new data shape recompiles)", HEADER,
                        [_row(k, v) for k, v in sims.items()])
        cold = runs["cold"]
        checks = [["whole fit, cold cache (s)", cold["fit_seconds"], f"<= {TARGETS['fit_seconds_cold']:g}",
                   cold["fit_seconds"] <= TARGETS["fit_seconds_cold"]],
                  ["divergences", cold["divergences"], "0", cold["divergences"] == 0],
                  ["max R-hat", cold["max_rhat"], "<= 1.01", cold["max_rhat"] <= TARGETS["max_rhat"]],
                  ["min bulk ESS", cold["min_ess_bulk"], ">= 400", cold["min_ess_bulk"] >= TARGETS["min_ess_bulk"]]]
        record["targets_met"] = {c[0]: bool(c[3]) for c in checks}
        print_table("Targets (cold run)", ["check", "value", "target", "result"],
                    [[c[0], c[1], c[2], "met" if c[3] else "MISSED"] for c in checks])
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    record["benchmark_seconds"] = time.perf_counter() - started
    print(f"\nbenchmark finished in {record['benchmark_seconds']:.0f} s (load average now {os.getloadavg()[0]:.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2, default=float) + "\n")
        print(f"numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
