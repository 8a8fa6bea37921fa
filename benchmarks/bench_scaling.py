"""Scaling benchmark: durability, CAR-T, MRD and joint models on simulated cohorts of growing size.

For every model and patient count, a trial is simulated (``simulate_trial(n, seed=31)``), built into the
model exactly as ``toolkit fit`` builds it (default options and priors, the model's default backend and
target acceptance from ``toolkit.fitting.default_settings``), and sampled in a fresh process. Measured:

- **wall s**: the worker process from start to end (imports, simulation, build, compile, sampling, diagnostics);
- **compile s**: ``dt.attrs["compile_seconds"]`` of :func:`toolkit.inference.sample`;
- **grad ms**: mean time of one log-density + gradient evaluation at the initial point
  (``model.compile_logp_dlogp``-style: one compiled PyTensor function returning both; with
  ``--backend numpyro``, the jitted JAX function numpyro calls, one chain);
- **steps/draw**: mean leapfrog steps per kept draw (``sample_stats.n_steps``), and the adapted
  **step size** (mean over chains): the step size falls when the hardest region of the posterior is harder;
- **sampling s**, **min ESS** (bulk, over every sampled quantity), **max R-hat**, **divergences**,
  **ESS/s** = min bulk ESS / sampling seconds, and the toolkit's own **converged** verdict
  (:func:`toolkit.inference.diagnose`: R-hat <= 1.01, bulk/tail ESS >= 400, no divergences, E-BFMI);
- in ``rows.jsonl`` only, **worst**: the three elements with the highest R-hat and the lowest ESS, so a fit
  that fails says where (the GPU session of 4 December 2026 could not tell which element had R-hat 1.014).

The system load (``os.getloadavg``) is recorded before and after each fit: on a shared machine the times are
pessimistic by roughly the load in excess of the free cores.

Run from the repository root::

    .venv/bin/python benchmarks/bench_scaling.py                           # every model at 60, 600, 6000
    .venv/bin/python benchmarks/bench_scaling.py --models cart,mrd --patients 60,600 \\
        --chains 4 --tune 1000 --draws 1000 --out /tmp/scaling            # table.md + table.csv + rows.jsonl

``--timeout`` bounds each fit (a row then says "timed out"); ``--backend`` overrides every model's default;
``--sampler KEY=VALUE`` passes extra sampler settings (e.g. ``mass_matrix=low_rank``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = ("durability", "cart", "mrd", "joint")
COLUMNS = ("model", "patients", "observations", "backend", "run", "wall_s", "compile_s", "grad_ms",
           "steps_per_draw", "step_size", "sampling_s", "min_ess_bulk", "max_rhat", "divergences", "ess_per_s",
           "converged", "load_before", "load_after")


def _build(model_name: str, n: int, folder: Path):
    """Simulated cohort of ``n`` patients -> (model, observation count), as ``toolkit fit`` builds it."""
    import dataclasses

    from toolkit.data import load_cohort
    from toolkit.simulate import simulate_trial

    trial = simulate_trial(n, seed=31, with_truth=False)
    if model_name in ("cart", "joint"):
        # the CAR-T and joint models need kinetics for every patient (as bench_joint.py and bench_cart_scaling.py)
        keep = trial.patients["patient_id"].isin(trial.cart_kinetics["patient_id"])
        trial.patients, trial.outcomes = trial.patients[keep], trial.outcomes[keep.to_numpy()]
    cohort = load_cohort(trial.write(folder))
    if model_name == "durability":
        from toolkit.fitting import DurabilityOptions
        from toolkit.data.inputs import to_durability_inputs
        from toolkit.models.durability import build_durability_model

        opts = DurabilityOptions()
        inputs = to_durability_inputs(cohort, endpoint=opts.endpoint, hsct=opts.hsct)
        return build_durability_model(inputs, opts.prior_set(), variant=opts.variant), int(inputs.event.size)
    if model_name == "cart":
        from toolkit.data.inputs import to_cart_inputs
        from toolkit.fitting import CartOptions
        from toolkit.models.cart import build_cart_model

        sampled = cohort.patients["patient_id"].isin(cohort.cart["patient_id"])
        inputs = to_cart_inputs(dataclasses.replace(cohort, patients=cohort.patients[sampled]))
        return build_cart_model(inputs, CartOptions().prior_set(inputs.unit)), int(inputs.day.size)
    if model_name == "mrd":
        from toolkit.data.mrd_inputs import to_mrd_inputs
        from toolkit.fitting import MrdOptions
        from toolkit.models.mrd import build_mrd_model

        inputs = to_mrd_inputs(cohort)
        return build_mrd_model(inputs, MrdOptions().prior_set()), int(inputs.n_assessments)
    from toolkit.data.joint_inputs import to_joint_inputs
    from toolkit.fitting import JointOptions
    from toolkit.models.joint import build_joint_model

    opts = JointOptions()
    inputs = to_joint_inputs(cohort, mrd_submodel="mrd_clearance" in opts.associations)
    model = build_joint_model(inputs, opts.prior_set(), variant=opts.variant, associations=opts.associations,
                              cart_priors=opts.cart_prior_set(inputs.cart.unit))
    return model, int(inputs.cart.day.size + inputs.relapse.event.size)


def gradient_ms(model, budget_s: float = 3.0) -> float:
    """Mean milliseconds of one logp + gradient evaluation at the initial point (one compiled function)."""
    import numpy as np
    import pytensor

    point = model.initial_point()
    value_vars = model.value_vars
    logp = model.logp(jacobian=True)
    grads = pytensor.grad(logp, value_vars)
    fn = pytensor.function(value_vars, [logp, *grads])
    args = [np.asarray(point[v.name]) for v in value_vars]
    fn(*args)
    calls, t0 = 0, time.perf_counter()
    while calls < 5 or (time.perf_counter() - t0 < budget_s and calls < 5000):
        fn(*args)
        calls += 1
    return 1000 * (time.perf_counter() - t0) / calls


def jax_gradient_ms(model, budget_s: float = 3.0) -> float:
    """As :func:`gradient_ms`, for the JAX log density + gradient the numpyro backend samples with (jitted)."""
    import jax
    import numpy as np

    from toolkit.inference import _jax_potential

    point = model.initial_point()
    args = [np.asarray(point[v.name]) for v in model.value_vars]
    fn = jax.jit(jax.value_and_grad(_jax_potential(model)[0]))
    jax.block_until_ready(fn(args))
    calls, t0 = 0, time.perf_counter()
    while calls < 5 or (time.perf_counter() - t0 < budget_s and calls < 5000):
        jax.block_until_ready(fn(args))
        calls += 1
    return 1000 * (time.perf_counter() - t0) / calls


def worker(job: dict) -> dict:
    """One fit in this process; returns the row (printed as JSON by ``--worker``)."""
    t_start = time.perf_counter()
    import tempfile

    import numpy as np

    from toolkit.fitting import default_settings
    from toolkit.inference import diagnose, sample, sampler_metadata

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        model, n_obs = _build(job["model"], job["patients"], Path(tmp) / "cohort")
    overrides = {k: v for k, v in (("chains", job["chains"]), ("tune", job["tune"]), ("draws", job["draws"]),
                                   ("backend", job.get("backend")), ("progressbar", False)) if v is not None}
    overrides.update(job.get("sampler") or {})
    settings = default_settings(job["model"], **overrides)
    # the gradient the sampler calls: numpyro's JAX function, else PyTensor's compiled one
    timer = jax_gradient_ms if settings.backend == "numpyro" else gradient_ms
    grad = timer(model) if job.get("gradient", True) else float("nan")
    dt = sample(model, settings, log_likelihood=False)
    d = diagnose(dt)
    stats = dt["sample_stats"]
    steps = float(np.mean(stats["n_steps"].to_numpy())) if "n_steps" in stats else float("nan")
    step_size = float(np.mean(stats["step_size"].to_numpy())) if "step_size" in stats else float("nan")
    sampling = float(dt.attrs["sampling_seconds"])
    return {"model": job["model"], "patients": job["patients"], "observations": n_obs, "backend": settings.backend,
            "run": f"{settings.chains}x{settings.tune}+{settings.draws}",
            "wall_s": time.perf_counter() - t_start, "compile_s": float(dt.attrs["compile_seconds"]),
            "grad_ms": grad, "steps_per_draw": steps, "step_size": step_size, "sampling_s": sampling,
            "min_ess_bulk": d.min_ess_bulk,
            "max_rhat": d.max_rhat, "divergences": int(d.divergences), "ess_per_s": d.min_ess_bulk / sampling,
            "converged": bool(d.converged), "load_before": load_before, "load_after": os.getloadavg()[0],
            "worst": worst_elements(dt),
            "settings": settings.as_dict(),
            # how the sampler ran: the JAX backend's chain method, start jitter, platform, devices, gradient
            "sampler_attrs": sampler_metadata(dt)}


def worst_elements(dt, top: int = 3) -> dict[str, list[str]]:
    """The posterior elements that decide the verdict: the ``top`` by R-hat and by min(bulk, tail) ESS, as
    ``"name[index]: R-hat, bulk ESS, tail ESS"`` (:func:`toolkit.inference.element_rows`), so a row that fails
    says where."""
    import numpy as np

    from toolkit.inference import element_rows

    rows = element_rows(dt["posterior"].to_dataset())
    label = lambda r: f"{r[0]}[{r[1]}]: {r[2]:.3f}, {r[3]:.0f}, {r[4]:.0f}"  # noqa: E731
    return {"by_rhat": [label(r) for r in sorted(rows, key=lambda r: -np.nan_to_num(r[2]))[:top]],
            "by_ess": [label(r) for r in sorted(rows, key=lambda r: min(r[3], r[4]))[:top]]}


def run_job(job: dict, timeout: float) -> dict:
    """``worker(job)`` in a fresh interpreter (so every row pays its own imports and compile-cache lookups)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**job, "error": f"timed out after {timeout:.0f} s", "wall_s": time.perf_counter() - t0}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {**job, "error": (proc.stderr or proc.stdout)[-1500:], "wall_s": time.perf_counter() - t0}
    return json.loads(lines[-1])


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return "-" if value is None else str(value)


def markdown_table(rows: list[dict]) -> str:
    """The rows as a markdown table (a failed or timed-out row says so)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if "error" in r:
            first = r["error"].strip().splitlines()[-1] if r["error"].strip() else "failed"
            lines.append(f"| {r['model']} | {r['patients']} | | | | {_fmt(r.get('wall_s'))} | " + f"{first[:80]} |"
                         + " |" * (len(COLUMNS) - 7))
        else:
            lines.append("| " + " | ".join(_fmt(r.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--patients", default="60,600,6000", help="comma-separated patient counts")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--backend", help="override every model's default backend (nutpie, pymc, numpyro)")
    p.add_argument("--sampler", action="append", default=[], metavar="KEY=VALUE",
                   help="extra SamplerSettings field, e.g. mass_matrix=low_rank (repeatable)")
    p.add_argument("--no-gradient", action="store_true", help="skip the gradient timing (it compiles a function)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per fit")
    p.add_argument("--out", help="folder for table.md, table.csv and rows.jsonl (appended)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker)), default=float), flush=True)
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = sorted(set(models) - set(MODELS))
    if bad:
        p.error(f"unknown model(s) {', '.join(bad)}; valid: {', '.join(MODELS)}")
    sampler = {}
    for item in args.sampler:
        key, _, value = item.partition("=")
        try:
            sampler[key] = json.loads(value)
        except json.JSONDecodeError:
            sampler[key] = value
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"uptime load average at start: {os.getloadavg()}", flush=True)
    for n in (int(s) for s in args.patients.split(",")):
        for m in models:
            job = {"model": m, "patients": n, "chains": args.chains, "tune": args.tune, "draws": args.draws,
                   "backend": args.backend, "sampler": sampler, "gradient": not args.no_gradient}
            row = run_job(job, args.timeout)
            rows.append(row)
            print(markdown_table([row]).splitlines()[-1], flush=True)
            if out:
                with open(out / "rows.jsonl", "a") as f:
                    f.write(json.dumps(row, default=float) + "\n")
    table = markdown_table(rows)
    print("\n" + table)
    print(f"uptime load average at end: {os.getloadavg()}")
    if out:
        (out / "table.md").write_text(table + "\n")
        with open(out / "table.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[*COLUMNS, "error"], extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
