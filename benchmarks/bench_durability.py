"""Durability-model benchmark: cold/warm CLI wall time, backends, compile reuse, scaling, Stan peer.

What it measures (default: 4 chains x 1000 tune x 1000 draws, the 60-patient
example cohort in data_templates/example):

1. Whole-process wall time of ``toolkit fit durability --data data_templates/example
   --out RUN --variant weibull|cure`` as a subprocess: cold (fresh, empty
   ``PYTENSOR_FLAGS=base_compiledir=...`` and ``NUMBA_CACHE_DIR``) and warm (same
   dirs again), ``--repeats`` times (default 3, each with fresh caches; verdict on
   the median), against the targets <= 15 s cold and <= 5 s warm; with min bulk
   ESS (all parameters, and hazard_ratio), divergences, max R-hat, and where the
   time goes (outside the fit / compile / sampling / log-likelihood / the rest of
   sample() / post-processing). 1b: interpreter import times; 1c: the
   post-sampling steps of one fit timed one by one.
2. Per backend (nutpie; pymc with cores=2; numpyro only if importable), in this
   process: compile s, sampling s, min bulk ESS, ESS per sampling second and per
   whole-fit second; first fit with empty disk caches ("cold") and a repeat with
   the in-memory nutpie cache cleared ("warm disk").
3. In-process reuse: the same cohort fitted twice with nutpie; compile seconds
   and ``compile_cache_hit`` of each fit.
4. Scaling: simulated cohorts of 60, 600 and 6000 patients, weibull and cure,
   nutpie: fit s, compile s, sampling s, min ESS, divergences. A row whose
   predicted time exceeds ``--max-fit-seconds`` (180) gets fewer draws; the
   row says so.
5. Stan peer (``bench_durability_stan.py``): same Weibull PH model and data in
   pystan; skipped with "pystan not available" if no Python with pystan is given.

In-process sections (2-4) use their own fresh PyTensor/numba cache dirs (set
before PyTensor is imported), so they do not depend on ~/.pytensor.

Run from the repository root::

    .venv/bin/python benchmarks/bench_durability.py                       # full (about 6 minutes)
    .venv/bin/python benchmarks/bench_durability.py --quick               # smoke run (about 1 minute)
    .venv/bin/python benchmarks/bench_durability.py --json bench.json \\
        --stan-python /tmp/stanvenv/bin/python                            # with the Stan peer

pystan is not a project dependency; for section 5 make a separate venv:
``python3.12 -m venv /tmp/stanvenv && /tmp/stanvenv/bin/pip install pystan``
(or set ``BENCH_STAN_PYTHON``). ``--sections 1,2`` runs a subset.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLE = REPO / "data_templates" / "example"
COLD_TARGET_S = 15.0
WARM_TARGET_S = 5.0
SEED = 20261125

sys.path.insert(0, str(HERE))  # bench_durability_stan, when imported from elsewhere

from _stan_peer import find_stan_python, print_table  # noqa: E402
from bench_durability_stan import run_comparison  # noqa: E402


# --------------------------------------------------------------------------- helpers


def _toolkit_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "toolkit"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "toolkit"]


def _cache_env(root: Path) -> dict[str, str]:
    """Empty compile caches under ``root``. PyTensor 3 keeps its numba cache inside base_compiledir
    (``<compiledir>/numba``); NUMBA_CACHE_DIR is set too for numba's own ``cache=True`` functions."""
    flags = os.environ.get("PYTENSOR_FLAGS", "")
    flags = ",".join([f for f in flags.split(",") if f and not f.startswith("base_compiledir=")]
                     + [f"base_compiledir={root / 'pytensor'}"])
    return {"PYTENSOR_FLAGS": flags, "NUMBA_CACHE_DIR": str(root / "numba")}


def _hr_ess(posterior_path: Path) -> tuple[float, dict]:
    import arviz_stats as azs
    import xarray as xr

    with xr.open_datatree(posterior_path) as tree:
        ds = tree["posterior"].to_dataset()[["hazard_ratio"]].load()
        attrs = dict(tree.attrs)
    return float(azs.ess(ds, method="bulk")["hazard_ratio"]), {k: float(v) for k, v in attrs.items()
                                                                if k.endswith("_seconds")}


def _fit_row(result) -> dict:
    """Numbers of one in-process FitResult."""
    import arviz_stats as azs

    d = result.summary["diagnostics"]
    attrs = result.posterior.attrs
    post = result.posterior["posterior"].to_dataset()[["hazard_ratio"]]
    fit_s = float(result.provenance["timings"]["fit_seconds"])
    sampling = float(attrs["sampling_seconds"])
    ess = float(d["min_ess_bulk"]) if d["min_ess_bulk"] is not None else math.nan
    return {
        "compile_seconds": float(attrs["compile_seconds"]),
        "sampling_seconds": sampling,
        "log_likelihood_seconds": float(attrs["log_likelihood_seconds"]),
        "sample_total_seconds": float(attrs["total_seconds"]),
        "fit_seconds": fit_s,
        "compile_cache_hit": int(attrs.get("compile_cache_hit", 0)),
        "min_ess_bulk": ess,
        "hr_ess_bulk": float(azs.ess(post, method="bulk")["hazard_ratio"]),
        "ess_per_sampling_second": ess / sampling if sampling > 0 else math.nan,
        "ess_per_fit_second": ess / fit_s,
        "divergences": int(d["divergences"]),
        "max_rhat": d["max_rhat"],
        "converged": bool(d["converged"]),
    }


# --------------------------------------------------------------------------- 1. CLI cold / warm


def _cli_run(cmd: list[str], env: dict, run_dir: Path) -> dict:
    """One ``toolkit fit durability`` process: wall time and where it went."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    timings = json.loads((run_dir / "provenance.json").read_text())["timings"]
    hr_ess, attrs = _hr_ess(run_dir / "posterior.nc")
    d = summary["diagnostics"]
    fit_s = timings["fit_seconds"]
    ll = attrs.get("log_likelihood_seconds", 0.0)
    return {
        "wall_seconds": wall,
        "outside_fit_seconds": wall - fit_s,
        "compile_seconds": timings["compile_seconds"], "sampling_seconds": timings["sampling_seconds"],
        "log_likelihood_seconds": ll,
        "rest_of_sample_seconds": timings["total_seconds"] - timings["compile_seconds"]
        - timings["sampling_seconds"] - ll,
        "post_sample_seconds": fit_s - timings["total_seconds"], "fit_seconds": fit_s,
        "min_ess_bulk": d["min_ess_bulk"], "hr_ess_bulk": hr_ess, "divergences": d["divergences"],
        "max_rhat": d["max_rhat"], "converged": d["converged"],
        "hazard_ratio_median": summary["estimands"]["hazard_ratio"]["median"],
    }


def default_backend() -> str:
    """The backend ``toolkit fit durability`` uses without --backend (it has changed over time)."""
    try:
        from toolkit.fitting import DEFAULT_BACKENDS

        return DEFAULT_BACKENDS.get("durability", "nutpie")
    except ImportError:
        from toolkit.inference import SamplerSettings

        return SamplerSettings().backend


def bench_cli(cfg: dict, tmp: Path, repeats: int = 1) -> dict:
    default = default_backend()
    others = [b for b in ("nutpie", "pymc") if b != default]
    rows, out = [], {"command": None, "repeats": repeats, "default_backend": default, "runs": {}}
    # The default command per variant (the targets are for it); then the other backend(s) for comparison.
    combos = [(v, None) for v in cfg["variants"]] + [(v, b) for b in others for v in cfg["variants"]]
    for variant, backend in combos:
        label = f"{variant} (default: {default})" if backend is None else f"{variant} --backend {backend}"
        key = variant if backend is None else f"{variant}_{backend}"
        extra = [*cfg["cli_extra"], *(["--backend", backend] if backend else [])]
        runs = {"cold": [], "warm": []}
        for rep in range(repeats):
            caches = tmp / f"cli_caches_{key}_{rep}"  # fresh, empty caches for every cold run
            caches.mkdir()
            env = {**os.environ, **_cache_env(caches)}
            for state in ("cold", "warm"):
                run_dir = tmp / f"cli_run_{key}_{state}_{rep}"
                cmd = [*_toolkit_cmd(), "fit", "durability", "--data", str(EXAMPLE), "--out", str(run_dir),
                       "--variant", variant, *extra]
                if backend is None:
                    out["command"] = " ".join(cmd[:1] + ["fit", "durability", "--data", "data_templates/example",
                                                         "--out", "<tmp>", "--variant", "<variant>", *extra])
                runs[state].append(_cli_run(cmd, env, run_dir))
        for state, recs in runs.items():
            target = COLD_TARGET_S if state == "cold" else WARM_TARGET_S
            walls = [r["wall_seconds"] for r in recs]
            best = min(recs, key=lambda r: r["wall_seconds"])
            median = statistics.median(walls)
            rec = {"command": " ".join(cmd).replace(str(run_dir), "<tmp>"),
                   "backend": backend or default, "default_command": backend is None,
                   "counts_for_target": backend is None,
                   "target_seconds": target, "wall_seconds_all": walls, "wall_seconds_median": median,
                   "wall_seconds_min": best["wall_seconds"], "target_met": median <= target,
                   "target_met_by_best": best["wall_seconds"] <= target, "best_run": best, "all_runs": recs}
            out["runs"][f"{key}_{state}"] = rec
            verdict = "met" if rec["target_met"] else "MISSED"
            rows.append([label, state, median, best["wall_seconds"], f"<= {target:g}",
                         verdict if backend is None else f"({verdict})",
                         best["outside_fit_seconds"], best["compile_seconds"], best["sampling_seconds"],
                         best["log_likelihood_seconds"], best["rest_of_sample_seconds"], best["post_sample_seconds"],
                         best["min_ess_bulk"], best["hr_ess_bulk"], best["divergences"], best["max_rhat"]])
    print_table(f"1. CLI whole-process wall time: {out['command']}  (cold = empty PyTensor + numba caches, "
                f"warm = same caches again; {repeats} repeat(s), each with fresh caches)",
                ["variant", "caches", "median s", "best s", "target", "(median)", "outside fit", "compile",
                 "sampling", "loglik", "rest sample()", "post-sample", "min ESS", "HR ESS", "div", "max R-hat"], rows)
    print("   target verdict on the median wall time; the breakdown columns are those of the best (fastest) run")
    print(f"   default backend of `toolkit fit durability` here: {default}; the --backend rows are for comparison "
          "only (verdict in parentheses). PyMC's compile = wall - its own sampling_time, so its init is in compile")
    print("   outside fit = interpreter start + imports + cohort load + writing the run + printing "
          "(wall - provenance fit_seconds); rest sample() = nutpie/arviz import + converting the draws (nutpie only); "
          "post-sample = inputs, model build, diagnostics, estimands, PSIS-LOO, provenance")
    return out


def bench_imports(repeats: int = 3) -> dict:
    py = sys.executable
    stmts = {"python -c pass": "pass", "import pymc": "import pymc", "import nutpie": "import nutpie",
             "import toolkit.cli": "import toolkit.cli", "import toolkit.fitting": "import toolkit.fitting",
             "import toolkit.fitting, nutpie": "import toolkit.fitting, nutpie"}
    out, rows = {}, []
    for label, stmt in stmts.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([py, "-c", stmt], check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        out[label] = statistics.median(times)
        rows.append([label, out[label]])
    # Where import time goes: cumulative time of heavy packages, counted where each is first imported.
    proc = subprocess.run([py, "-X", "importtime", "-c", "import toolkit.cli, toolkit.fitting, nutpie"],
                          capture_output=True, text=True, check=True)
    cumulative = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s*(\S+)", line)
        if m:
            cumulative[m.group(2)] = int(m.group(1)) / 1e6
    heavy = ["rich.console", "pandas", "pandera", "scipy.stats", "xarray", "pytensor", "pymc", "arviz_base", "arviz_stats",
             "numba", "nutpie", "arviz", "arviz_plots", "matplotlib.pyplot"]
    top = [(name, cumulative[name]) for name in heavy if name in cumulative]
    out["importtime_cumulative"] = dict(top)
    print_table(f"1b. Import times (median of {repeats} fresh processes)", ["statement", "seconds"], rows)
    print("   -X importtime of `import toolkit.cli, toolkit.fitting, nutpie`, cumulative s where each package is "
          "first imported (nested, so they overlap): " + ", ".join(f"{name} {s:.2f}" for name, s in top))
    return out


def bench_post_fit_steps(result, cohort, options) -> dict:
    """1c: the post-sampling steps of fit_durability, each re-timed on an existing fit."""
    from toolkit.data.inputs import to_durability_inputs
    from toolkit.estimands import durability_estimands
    from toolkit.fitting import loo_summary
    from toolkit.inference import diagnose, hash_folder, save_run
    from toolkit.models.durability import build_durability_model

    dt = result.posterior
    steps = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        value = fn()
        steps[name] = time.perf_counter() - t0
        return value

    inputs = timed("to_durability_inputs", lambda: to_durability_inputs(cohort))
    timed("build_durability_model", lambda: build_durability_model(inputs, options.prior_set(),
                                                                   variant=options.variant))
    timed("diagnose", lambda: diagnose(dt, var_names=list(dt["posterior"].data_vars)))
    timed("durability_estimands", lambda: durability_estimands(
        dt["posterior"], inputs, variant=options.variant, days=options.days, hr_below=options.hr_below,
        rfs_difference_above=options.rfs_difference_above))
    timed("loo_summary (PSIS-LOO)", lambda: loo_summary(dt))
    timed("hash_folder (provenance)", lambda: hash_folder(cohort.path))
    with tempfile.TemporaryDirectory() as d:
        timed("save_run (posterior.nc + json)", lambda: save_run(Path(d) / "run", dt, result.summary,
                                                                 result.provenance))
    print_table("1c. Steps around sampling, timed one by one in-process (nutpie, weibull, example cohort; "
                "second call of each, so no first-import cost)",
                ["step", "seconds"], [[k, v] for k, v in steps.items()])
    return steps


# --------------------------------------------------------------------------- 2. backends


def bench_backends(cfg: dict, cohort) -> tuple[dict, object]:
    from toolkit.fitting import DurabilityOptions, fit_durability
    from toolkit.inference import SamplerSettings, clear_compile_cache

    import logging

    logging.getLogger("pymc").setLevel(logging.WARNING)  # PyMC's "Initializing NUTS ..." chatter
    options = DurabilityOptions(variant="weibull")
    out, rows, first_nutpie = {}, [], None
    for backend in ("nutpie", "pymc", "numpyro"):
        if backend == "numpyro" and not all(importlib.util.find_spec(m) for m in ("numpyro", "jax")):
            out[backend] = {"available": False, "reason": "not installed"}
            rows.append([backend, "not installed", *["-"] * 9])
            continue
        settings = SamplerSettings(backend=backend, cores=2, progressbar=False, **cfg["sampler"])
        for state in ("first", "repeat"):
            clear_compile_cache()
            result = fit_durability(cohort, options, settings)
            rec = _fit_row(result)
            out[f"{backend}_{state}"] = rec
            if backend == "nutpie" and state == "first":
                first_nutpie = result
            rows.append([backend, state, rec["compile_seconds"], rec["sampling_seconds"], rec["fit_seconds"],
                         rec["min_ess_bulk"], rec["hr_ess_bulk"], rec["ess_per_sampling_second"],
                         rec["ess_per_fit_second"], rec["divergences"], rec["max_rhat"]])
    s = cfg["sampler"]
    print_table(f"2. Backends in one process: weibull, example cohort, {s['chains']} chains x {s['tune']} tune x "
                f"{s['draws']} draws, cores=2",
                ["backend", "fit", "compile s", "sampling s", "fit s", "min ESS", "HR ESS", "ESS/s sampling",
                 "ESS/s fit", "div", "max R-hat"], rows)
    print("   first = first fit of this model in this process, on empty disk caches (pymc runs after nutpie, "
          "so shared ops may already be cached); repeat = same fit again with the in-memory nutpie cache "
          "cleared (disk caches warm). pymc compile s = wall - PyMC's own sampling_time (compile + init). "
          "fit s = whole fit_durability (incl. log-likelihood, diagnostics, estimands, LOO).")
    return out, first_nutpie


# --------------------------------------------------------------------------- 3. reuse


def bench_reuse(cfg: dict, cohort) -> dict:
    from toolkit.fitting import DurabilityOptions, fit_durability
    from toolkit.inference import SamplerSettings, clear_compile_cache

    clear_compile_cache()
    settings = SamplerSettings(backend="nutpie", cores=2, progressbar=False, **cfg["sampler"])
    out, rows = {}, []
    for i in (1, 2):
        rec = _fit_row(fit_durability(cohort, DurabilityOptions(variant="weibull"), settings))
        out[f"fit_{i}"] = rec
        rows.append([i, rec["compile_seconds"], rec["compile_cache_hit"], rec["sampling_seconds"],
                     rec["log_likelihood_seconds"], rec["fit_seconds"]])
    print_table("3. In-process reuse: the example cohort fitted twice with nutpie (in-memory cache cleared "
                "before fit 1; disk caches already warm from section 2)",
                ["fit", "compile s", "compile_cache_hit", "sampling s", "loglik s", "fit s"], rows)
    return out


# --------------------------------------------------------------------------- 4. scaling


def bench_scaling(cfg: dict, tmp: Path, max_fit_seconds: float) -> dict:
    from toolkit.data import load_cohort
    from toolkit.fitting import DurabilityOptions, fit_durability
    from toolkit.inference import SamplerSettings, clear_compile_cache
    from toolkit.simulate import simulate_trial

    out, rows = {}, []
    previous: dict[str, tuple[int, float]] = {}  # variant -> (responders, sampling s per draw per responder)
    for n in cfg["sizes"]:
        folder = tmp / f"sim_{n}"
        simulate_trial(n, seed=SEED, with_truth=False).write(folder)
        cohort = load_cohort(folder)
        for variant in cfg["variants_scaling"]:
            sampler = dict(cfg["sampler"])
            note = ""
            if variant in previous:
                # Sampling time grows about linearly in responders: predict from the previous size.
                rate = previous[variant]
                n_resp = int((cohort.merged()["response"].isin(["CR", "CRi"])).sum())
                predicted = rate * n_resp * sampler["chains"] * (sampler["tune"] + sampler["draws"]) / 2 + 10
                if predicted > max_fit_seconds:
                    scale = (max_fit_seconds - 10) / (predicted - 10)
                    sampler["tune"] = max(min(200, sampler["tune"]), int(sampler["tune"] * scale))
                    sampler["draws"] = max(min(200, sampler["draws"]), int(sampler["draws"] * scale))
                    note = (f"draws reduced to {sampler['tune']} tune / {sampler['draws']} draws "
                            f"(predicted {predicted:.0f} s > {max_fit_seconds:g} s)")
            settings = SamplerSettings(backend="nutpie", cores=2, progressbar=False, **sampler)
            clear_compile_cache()  # every row compiles (disk caches warm); the 60-patient cohort equals the example
            result = fit_durability(cohort, DurabilityOptions(variant=variant), settings)
            rec = _fit_row(result)
            n_resp = result.inputs.n_patients
            rec.update(patients=n, responders=n_resp, events=int(result.inputs.event.sum()), note=note,
                       tune=sampler["tune"], draws=sampler["draws"])
            previous[variant] = rec["sampling_seconds"] / (
                n_resp * sampler["chains"] * (sampler["tune"] + sampler["draws"]) / 2)
            out[f"{variant}_{n}"] = rec
            rows.append([n, n_resp, rec["events"], variant, rec["compile_seconds"], rec["sampling_seconds"],
                         rec["log_likelihood_seconds"], rec["fit_seconds"], rec["min_ess_bulk"], rec["hr_ess_bulk"],
                         rec["divergences"], rec["max_rhat"], note or "-"])
    s = cfg["sampler"]
    print_table(f"4. Scaling (simulated cohorts, seed {SEED}; nutpie, {s['chains']} chains x {s['tune']} tune x "
                f"{s['draws']} draws unless noted)",
                ["patients", "responders", "events", "variant", "compile s", "sampling s", "loglik s", "fit s",
                 "min ESS", "HR ESS", "div", "max R-hat", "note"], rows)
    print("   compile s: in-memory nutpie cache cleared before each row, disk caches warm")
    return out


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 chains x 100/100, weibull-only CLI runs, sizes 60 and 300")
    p.add_argument("--json", help="write all the numbers to this JSON file")
    p.add_argument("--sections", default="1,2,3,4,5", help="comma-separated subset of 1-5 (default: all)")
    p.add_argument("--stan-python", help="Python with pystan for section 5 (default: $BENCH_STAN_PYTHON, "
                                         "or this interpreter if it has pystan)")
    p.add_argument("--max-fit-seconds", type=float, default=180.0,
                   help="reduce draws for a scaling row predicted to take longer (default 180)")
    p.add_argument("--repeats", type=int, default=3,
                   help="repeats of each CLI cold/warm pair, each with fresh caches (default 3; --quick: 1)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary folders (runs, caches)")
    return p


def _versions() -> dict:
    import importlib.metadata as md

    def v(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            **{name: v(name) for name in ("pymc", "pytensor", "nutpie", "arviz", "arviz-stats", "numba", "numpy")}}


def main(args: argparse.Namespace) -> int:
    sections = {int(s) for s in str(args.sections).split(",") if s.strip()}
    if args.quick:
        args.repeats = 1
    if args.quick:
        cfg = {"sampler": {"chains": 2, "tune": 100, "draws": 100}, "variants": ["weibull"],
               "cli_extra": ["--chains", "2", "--tune", "100", "--draws", "100"], "sizes": [60, 300],
               "variants_scaling": ["weibull", "cure"]}
    else:
        cfg = {"sampler": {"chains": 4, "tune": 1000, "draws": 1000}, "variants": ["weibull", "cure"],
               "cli_extra": [], "sizes": [60, 600, 6000], "variants_scaling": ["weibull", "cure"]}
    tmp = Path(tempfile.mkdtemp(prefix="bench_durability_"))
    # In-process sections get their own empty caches; must be set before PyTensor/numba are imported.
    if "pytensor" in sys.modules or "numba" in sys.modules:
        print("note: pytensor/numba already imported; in-process sections use the existing compile caches")
    os.environ.update(_cache_env(tmp / "inprocess_caches"))
    started = time.perf_counter()
    record: dict = {"mode": "quick" if args.quick else "full", "config": cfg, "versions": _versions(),
                    "targets": {"cold_seconds": COLD_TARGET_S, "warm_seconds": WARM_TARGET_S}}
    v = record["versions"]
    record["load_average_start"] = os.getloadavg()
    if record["load_average_start"][0] > 0.5 * (os.cpu_count() or 1):
        print(f"WARNING: 1-minute load average {record['load_average_start'][0]:.1f} on {os.cpu_count()} CPUs: "
              "other processes are running, so the timings below are inflated")
    print(f"bench_durability ({record['mode']}): Python {v['python']}, {v['cpus']} CPUs, pymc {v['pymc']}, "
          f"pytensor {v['pytensor']}, nutpie {v['nutpie']}, arviz-stats {v['arviz-stats']}; tmp {tmp}", flush=True)
    try:
        if 1 in sections:
            record["cli"] = bench_cli(cfg, tmp, repeats=args.repeats)
            record["imports"] = bench_imports()
            sys.stdout.flush()
        if sections & {1, 2, 3, 4}:
            from toolkit.data import load_cohort

            cohort = load_cohort(EXAMPLE)
        first = None
        if 2 in sections:
            record["backends"], first = bench_backends(cfg, cohort)
            sys.stdout.flush()
        if 1 in sections:
            from toolkit.fitting import DurabilityOptions, fit_durability
            from toolkit.inference import SamplerSettings

            options = DurabilityOptions(variant="weibull")
            if first is None:
                first = fit_durability(cohort, options, SamplerSettings(progressbar=False, **cfg["sampler"]))
            record["post_fit_steps"] = bench_post_fit_steps(first, cohort, options)
            sys.stdout.flush()
        if 3 in sections:
            record["reuse"] = bench_reuse(cfg, cohort)
            sys.stdout.flush()
        if 4 in sections:
            record["scaling"] = bench_scaling(cfg, tmp, args.max_fit_seconds)
            sys.stdout.flush()
        if 5 in sections:
            record["stan"] = run_comparison(stan_python=find_stan_python(args.stan_python), quick=args.quick,
                                            seed=SEED, **({} if args.quick else cfg["sampler"]))
        if "cli" in record:
            runs = record["cli"]["runs"]
            print_table("Targets (whole-process wall time of the default CLI command)",
                        ["run", "median s", "best s", "target s", "median", "best"],
                        [[k, r["wall_seconds_median"], r["wall_seconds_min"], r["target_seconds"],
                          "met" if r["target_met"] else "MISSED", "met" if r["target_met_by_best"] else "MISSED"]
                         for k, r in runs.items() if r["counts_for_target"]])
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    record["benchmark_seconds"] = time.perf_counter() - started
    record["load_average_end"] = os.getloadavg()
    print(f"\nbenchmark finished in {record['benchmark_seconds']:.0f} s; load average (1/5/15 min) at start "
          + "/".join(f"{x:.1f}" for x in record["load_average_start"]) + ", at end "
          + "/".join(f"{x:.1f}" for x in record["load_average_end"]))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2, default=float) + "\n")
        print(f"numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
