"""Warm re-fit of the durability model in a new process: import, build, compile and sampling seconds.

Each fit runs in a fresh interpreter (``python -c``) that imports the toolkit, loads the 60-patient example
cohort, builds the durability model (default options) and samples it (4 chains x 1000 tuning + 1000 draws,
with the pointwise log-likelihood, as ``toolkit fit durability`` does). The first process of each backend
fills the PyTensor and numba caches (a private ``base_compiledir`` and ``NUMBA_CACHE_DIR`` under a temporary
folder, so nothing else's cache is used); the following ``--repeats`` processes are the warm re-fits that
are reported (median). Phases: ``import`` (``import toolkit.fitting``, which pulls in PyMC), ``build``
(cohort load + inputs + model), ``compile`` and ``sampling`` (``dt.attrs`` of ``toolkit.inference.sample``),
``loglik`` (pointwise log-likelihood) and ``process`` (interpreter start to exit, as a user waits for it).

Run from the repository root::

    .venv/bin/python benchmarks/bench_warm_refit.py [--backends pymc,nutpie:numba,nutpie:python] [--repeats 2]
        [--json F]

A backend ``nutpie:numba`` or ``nutpie:python`` also sets ``SamplerSettings.logp_callback``; plain ``nutpie``
takes the durability default (``python``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "data_templates" / "example"

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from toolkit.fitting import DurabilityOptions, default_settings
from toolkit.inference import sample
t1 = time.perf_counter()
from toolkit.data import load_cohort
from toolkit.data.inputs import to_durability_inputs
from toolkit.models.durability import build_durability_model
opts = DurabilityOptions()
inputs = to_durability_inputs(load_cohort(sys.argv[1]), endpoint=opts.endpoint, hsct=opts.hsct)
model = build_durability_model(inputs, opts.prior_set(), variant=opts.variant)
t2 = time.perf_counter()
backend, _, callback = sys.argv[2].partition(":")
extra = {"logp_callback": callback} if callback else {}
dt = sample(model, default_settings("durability", backend=backend, progressbar=False, **extra))
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "build": t2 - t1, "compile": dt.attrs["compile_seconds"],
                  "sampling": dt.attrs["sampling_seconds"], "loglik": dt.attrs["log_likelihood_seconds"],
                  "in_process": t3 - t0}))
"""


def one_process(backend: str, caches: Path) -> dict:
    env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={caches / 'pytensor'}",
           "NUMBA_CACHE_DIR": str(caches / "numba"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(EXAMPLE), backend], capture_output=True, text=True,
                          env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{backend} fit failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(lines[-1]), "process": wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="pymc,nutpie:numba,nutpie:python")
    p.add_argument("--repeats", type=int, default=2, help="warm processes per backend (after the cold one)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    phases = ("import", "build", "compile", "sampling", "loglik", "process")
    record = {"load_average_start": os.getloadavg()}
    print(f"load average at start {os.getloadavg()}")
    print(f"{'backend':14s} {'run':5s} " + " ".join(f"{ph:>9s}" for ph in phases))
    with tempfile.TemporaryDirectory(prefix="bench_warm_refit_") as tmp:
        for backend in args.backends.split(","):
            caches = Path(tmp) / backend.replace(":", "_")
            runs = [one_process(backend, caches) for _ in range(1 + args.repeats)]
            for i, r in enumerate(runs):
                print(f"{backend:14s} {'cold' if i == 0 else 'warm':5s} "
                      + " ".join(f"{r[ph]:9.2f}" for ph in phases), flush=True)
            warm = {ph: statistics.median(r[ph] for r in runs[1:]) for ph in phases} if args.repeats else {}
            record[backend] = {"cold": runs[0], "warm_runs": runs[1:], "warm_median": warm}
    record["load_average_end"] = os.getloadavg()
    print(f"load average at end {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
