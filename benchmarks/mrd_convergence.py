"""MRD convergence on fresh simulated cohorts: the share of fits the toolkit's own verdict calls converged.

For each seed a 60-patient trial is simulated with the default effects (as ``toolkit simulate --seed S``),
written to a temporary cohort folder, read back and fitted exactly as ``toolkit fit mrd --spec
models/mrd_primary.toml`` does (the spec's options and sampler settings through the same resolvers,
``toolkit.fitting.fit_mrd``); the verdict is the run's own ``summary["diagnostics"]`` (every posterior
variable: R-hat <= 1.01, bulk and tail ESS >= 400, no divergences, E-BFMI >= 0.3, tree depth). Printed per
seed: verdict, max R-hat, min bulk/tail ESS, divergences, sampling runs (more than one when the fit extended
its own sampling), draws per chain kept, wall time, and the three slowest posterior elements. One fit at a
time (2 shared cores). Seeds 1000-1019 are used by no test. Run from the repository root::

    .venv/bin/python benchmarks/mrd_convergence.py                         # 20 seeds, several minutes a fit
    .venv/bin/python benchmarks/mrd_convergence.py --seeds 7 27 --log /tmp/mrd_convergence.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "models" / "mrd_primary.toml"
DEFAULT_SEEDS = list(range(1000, 1020))


def worst_variables(posterior, n: int = 3) -> list[list]:
    """The ``n`` posterior elements with the largest R-hat: [name, flat index, R-hat, bulk ESS]."""
    import arviz_stats as azs
    import numpy as np

    post = posterior["posterior"].to_dataset()
    with np.errstate(invalid="ignore", divide="ignore"):
        rhat, ess = azs.rhat(post, method="rank"), azs.ess(post, method="bulk")
    rows = []
    for name in post.data_vars:
        r, e = np.atleast_1d(rhat[name].values).ravel(), np.atleast_1d(ess[name].values).ravel()
        rows += [[name, i, round(float(r[i]), 4), round(float(e[i]))] for i in range(r.size) if np.isfinite(r[i])]
    return sorted(rows, key=lambda row: -row[2])[:n]


def fit_seed(seed: int, n_patients: int = 60, spec_path: Path = SPEC) -> dict:
    """Simulate one cohort and fit it as ``toolkit fit mrd --spec SPEC`` does; the verdict and timings."""
    from toolkit.data import load_cohort
    from toolkit.fitting import default_settings, fit_mrd, resolve_options
    from toolkit.simulate import simulate_trial
    from toolkit.specs import load_spec, merged_sampler

    spec = load_spec(spec_path, model="mrd")
    options = resolve_options("mrd", spec, {})
    settings = default_settings("mrd", **merged_sampler(spec, {}), progressbar=False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = simulate_trial(n_patients, seed=seed, with_truth=False).write(Path(tmp) / "cohort")
        cohort = load_cohort(folder)
        started = time.perf_counter()
        result = fit_mrd(cohort, options, settings, spec=spec)
    d = result.summary["diagnostics"]
    attempts = result.provenance.get("sampling_attempts", [{"draws": settings.draws}])
    return {"seed": seed, "converged": bool(d["converged"]), "max_rhat": d["max_rhat"],
            "min_ess_bulk": d["min_ess_bulk"], "min_ess_tail": d["min_ess_tail"], "divergences": d["divergences"],
            "runs": len(attempts), "draws": int(attempts[-1]["draws"]),
            "target_accept": [a.get("target_accept", settings.target_accept) for a in attempts],
            "divergences_per_run": [a.get("divergences") for a in attempts],
            "first_max_rhat": attempts[0].get("max_rhat", d["max_rhat"]),
            "worst": worst_variables(result.posterior), "wall_s": round(time.perf_counter() - started, 1)}


def _fmt(x, spec):
    return format(x, spec) if x is not None else "n/a"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS, help="default 1000-1019")
    parser.add_argument("--spec", type=Path, default=SPEC, help="default models/mrd_primary.toml")
    parser.add_argument("--log", type=Path, help="append one JSON line per fit to this file")
    args = parser.parse_args(argv)
    print(f"{'seed':>6} {'converged':>9} {'max_rhat':>8} {'ess_bulk':>8} {'ess_tail':>8} {'div':>4} {'runs':>4} "
          f"{'draws':>5} {'1st_rhat':>8} {'wall_s':>6}  slowest elements (R-hat)", flush=True)
    results = []
    for seed in args.seeds:
        r = fit_seed(seed, spec_path=args.spec)
        results.append(r)
        print(f"{r['seed']:>6} {('yes' if r['converged'] else 'NO'):>9} {_fmt(r['max_rhat'], '8.4f')} "
              f"{_fmt(r['min_ess_bulk'], '8.0f')} {_fmt(r['min_ess_tail'], '8.0f')} {r['divergences']:>4} "
              f"{r['runs']:>4} {r['draws']:>5} {_fmt(r['first_max_rhat'], '8.4f')} {r['wall_s']:>6.0f}  "
              + ", ".join(f"{w[0]}[{w[1]}] {w[2]:.3f}" for w in r["worst"]), flush=True)
        if args.log:
            with args.log.open("a") as fh:
                fh.write(json.dumps(r) + "\n")
    n_ok = sum(r["converged"] for r in results)
    print(f"\nconverged: {n_ok} of {len(results)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
