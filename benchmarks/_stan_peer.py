"""Shared scaffolding of the Stan-peer benchmarks (``bench_cart_stan.py``, ``bench_durability_stan.py``).

Each peer benchmark runs the same model in pystan (a side venv, since pystan and the toolkit need
different Pythons) and in the toolkit, each in a worker subprocess that writes its draws to an ``.npz``
plus timings to ``.npz.json``. This module holds what the two have in common: finding a Python with
pystan, running a worker, the command line (worker modes, sampler options) and a plain table printer.
Standard library only at import time: the pystan Python imports it too when it runs a Stan worker.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "data_templates" / "example"


def print_table(title: str, headers: list[str], rows: list[list]) -> None:
    """Plain fixed-width table on stdout."""

    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            if not math.isfinite(v):
                return str(v)
            return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in text:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    sys.stdout.flush()


def has_pystan(python: str) -> bool:
    try:
        out = subprocess.run([python, "-c", "import stan"], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def find_stan_python(explicit: str | None = None, default_path: str | None = None) -> str | None:
    """A Python that can ``import stan``: ``explicit`` (--stan-python), $BENCH_STAN_PYTHON, ``default_path``
    when given and present, or this interpreter."""
    for candidate in (explicit, os.environ.get("BENCH_STAN_PYTHON")):
        if candidate:
            return candidate if has_pystan(candidate) else None
    if default_path and Path(default_path).exists() and has_pystan(default_path):
        return default_path
    if importlib.util.find_spec("stan") is not None:
        return sys.executable
    return None


def project_python() -> str | None:
    """The project's venv Python (has toolkit), or this interpreter if it has toolkit."""
    if importlib.util.find_spec("toolkit") is not None:
        return sys.executable
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else None


def run_worker(cmd: list[str], env_extra: dict[str, str], out_npz: Path, timeout: float) -> dict:
    """Run one worker subprocess; returns its wall time, the timings it wrote and its draws."""
    env = {**os.environ, **env_extra}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    import numpy as np

    timings = json.loads(Path(str(out_npz) + ".json").read_text())
    with np.load(out_npz) as f:
        arrays = {k: f[k] for k in f.files}
    return {"wall_seconds": wall, **timings, "arrays": arrays}


def build_parser(description: str, *, stan_python_help: str, quick_help: str, target_accept: float,
                 stan_worker_args: tuple[str, ...], toolkit_worker_args: tuple[str, ...]) -> argparse.ArgumentParser:
    """The peer benchmarks' command line: sampler options plus the hidden worker modes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--stan-python", help=stan_python_help)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--target-accept", type=float, default=target_accept)
    p.add_argument("--stan-worker", nargs=len(stan_worker_args), metavar=stan_worker_args, help=argparse.SUPPRESS)
    p.add_argument("--toolkit-worker", nargs=len(toolkit_worker_args), metavar=toolkit_worker_args,
                   help=argparse.SUPPRESS)
    return p


def main(args: argparse.Namespace, script: str, *, stan_worker, toolkit_worker, compare,
         default_stan_python: str | None = None) -> int:
    """Dispatch a peer benchmark: a worker mode, or the driver (re-run under the project's venv when
    started with the pystan Python). ``compare(stan_python, args, sampler_kwargs)`` returns the record."""
    kw = {"chains": args.chains, "tune": args.tune, "draws": args.draws, "seed": args.seed}
    if args.stan_worker:
        stan_worker(*args.stan_worker, delta=args.target_accept, **kw)
        return 0
    if args.toolkit_worker:
        toolkit_worker(*args.toolkit_worker, target_accept=args.target_accept, **kw)
        return 0
    stan_python = find_stan_python(args.stan_python, default_stan_python)
    if importlib.util.find_spec("toolkit") is None:
        py = project_python()
        if py is None:
            print("cannot find the project's .venv/bin/python (toolkit); run `make install` first")
            return 1
        argv = [py, str(Path(script).resolve()), *sys.argv[1:]]
        if stan_python and not args.stan_python:
            argv += ["--stan-python", stan_python]
        return subprocess.call(argv)
    record = compare(stan_python, args, kw)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2, default=float) + "\n")
    return 0


def peer_pythons(stan_python: str | None) -> str | None:
    """The project's Python when a pystan Python is usable, else None after printing why the comparison is
    skipped; raises when the project's Python is missing."""
    if stan_python is None or not has_pystan(stan_python):
        print("\npystan not available (give --stan-python PY or $BENCH_STAN_PYTHON, a Python where "
              "`pip install pystan` was run); Stan comparison skipped")
        return None
    py = project_python()
    if py is None:
        raise RuntimeError("cannot find the project's Python (.venv/bin/python) to run toolkit")
    return py


SKIPPED = {"available": False, "reason": "pystan not available"}


def cache_passes(tmp: Path, quick: bool) -> tuple[dict, dict, list[str]]:
    """(Stan env, toolkit env, passes): cold then warm runs on private caches under ``tmp``; a quick run
    reuses the user's caches once ("as-is"), so it does not pay a cold Stan compile."""
    if quick:
        return {}, {}, ["as-is"]
    stan_env = {"XDG_CACHE_HOME": str(tmp / "stan_cache")}
    toolkit_env = {"PYTENSOR_FLAGS": f"base_compiledir={tmp / 'pytensor'}", "NUMBA_CACHE_DIR": str(tmp / "numba")}
    return stan_env, toolkit_env, ["cold", "warm"]
