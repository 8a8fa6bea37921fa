"""Stan peer for the durability benchmark: the Weibull PH model in Stan vs nutpie, same data.

What it measures, on the 60-patient example cohort (data_templates/example),
4 chains x 1000 tune x 1000 draws, target acceptance 0.9 for both samplers:

- Stan (pystan 3 / httpstan): compile seconds (``stan.build``), sampling
  seconds, whole worker-process wall time; cold (empty ``XDG_CACHE_HOME``, so
  httpstan compiles the C++ model) and warm (the cached model is reused).
- nutpie and PyMC's NUTS (toolkit's own model, ``toolkit.inference.sample``
  without the log-likelihood step): the same numbers, cold (empty PyTensor
  compile dir and numba cache) and warm (same dirs again).
- Min bulk ESS over log_shape, log_scale_years, log_hr, hazard_ratio, computed
  with arviz_stats on every set of draws (same estimator), ESS/s ratios
  (nutpie / Stan and pymc / Stan), whole-fit wall time ratios, divergences,
  max R-hat, and whether the hazard-ratio posterior medians agree within
  2 x sqrt(MCSE_backend^2 + MCSE_stan^2) + 0.02, with the MCSE of the median
  from arviz_stats ``mcse(..., method="median")``.

Both sides run as worker subprocesses that do only: import, read data,
compile, sample, write draws. Stan gets exactly the arrays toolkit builds
(``to_durability_inputs``: time in years from response, event, arm) and the
priors of ``DurabilityPriors()`` passed as data.

pystan is NOT a project dependency. Install it in a separate venv, e.g.::

    python3.12 -m venv /tmp/stanvenv && /tmp/stanvenv/bin/pip install pystan

Run (from the repository root)::

    .venv/bin/python benchmarks/bench_durability_stan.py --stan-python /tmp/stanvenv/bin/python
    /tmp/stanvenv/bin/python benchmarks/bench_durability_stan.py     # same; re-runs itself under .venv
    BENCH_STAN_PYTHON=/tmp/stanvenv/bin/python .venv/bin/python benchmarks/bench_durability_stan.py

Options: ``--quick`` (2 chains x 200/200, warm runs only), ``--json PATH``.
Without a Python that has pystan it prints "pystan not available" and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _stan_peer, also when run by the pystan Python
import _stan_peer  # noqa: E402
from _stan_peer import EXAMPLE, print_table, run_worker  # noqa: E402

WORKER_TIMEOUT = 900.0  # seconds
PARAMS = ("log_shape", "log_scale_years", "log_hr", "hazard_ratio")
TOOLKIT_BACKENDS = ("nutpie", "pymc")

STAN_CODE = """
// Weibull proportional hazards, right-censored; the same model as
// toolkit.models.durability (variant weibull, no covariates, HSCT censored):
//   log h = log k - log lam + (k - 1)(log t - log lam) + b arm,  H = (t/lam)^k exp(b arm)
data {
  int<lower=1> N;
  vector<lower=0>[N] t;            // years from response
  vector<lower=0, upper=1>[N] event;
  vector<lower=0, upper=1>[N] arm;
  vector[2] prior_log_shape;       // (mu, sigma)
  vector[2] prior_log_scale_years;
  vector[2] prior_log_hr;
}
transformed data {
  vector[N] log_t = log(t);
}
parameters {
  real log_shape;
  real log_scale_years;
  real log_hr;
}
model {
  real k = exp(log_shape);
  vector[N] lp = log_hr * arm;
  vector[N] z = log_t - log_scale_years;
  log_shape ~ normal(prior_log_shape[1], prior_log_shape[2]);
  log_scale_years ~ normal(prior_log_scale_years[1], prior_log_scale_years[2]);
  log_hr ~ normal(prior_log_hr[1], prior_log_hr[2]);
  target += dot_product(event, log_shape - log_scale_years + (k - 1) * z + lp) - sum(exp(lp + k * z));
}
generated quantities {
  real hazard_ratio = exp(log_hr);
}
"""


# --------------------------------------------------------------------------- small helpers


# --------------------------------------------------------------------------- workers (subprocesses)


def stan_worker(data_path: str, out_path: str, *, chains: int, tune: int, draws: int, seed: int,
                delta: float) -> None:
    """Runs under the pystan Python: build, sample, write draws (npz) and timings (json)."""
    t0 = time.perf_counter()
    import numpy as np
    import stan

    t_import = time.perf_counter() - t0
    data = json.loads(Path(data_path).read_text())
    t1 = time.perf_counter()
    posterior = stan.build(STAN_CODE, data=data, random_seed=seed)
    t2 = time.perf_counter()
    fit = posterior.sample(num_chains=chains, num_samples=draws, num_warmup=tune, delta=delta)
    t3 = time.perf_counter()
    # fit[name] is (1, draws * chains) with the chain index varying fastest.
    arrays = {name: np.asarray(fit[name]).reshape(-1, fit.num_chains).T for name in PARAMS}
    arrays["diverging"] = np.asarray(fit["divergent__"]).reshape(-1, fit.num_chains).T
    np.savez(out_path, **arrays)
    timings = {"import_seconds": t_import, "compile_seconds": t2 - t1, "sampling_seconds": t3 - t2,
               "in_process_seconds": time.perf_counter() - t0}
    Path(out_path + ".json").write_text(json.dumps(timings))


def toolkit_worker(backend: str, cohort: str, out_path: str, *, chains: int, tune: int, draws: int, seed: int,
                   target_accept: float) -> None:
    """Runs under the project Python: toolkit's Weibull model (nutpie or pymc), no log-likelihood step."""
    t0 = time.perf_counter()
    import numpy as np

    from toolkit.data import load_cohort
    from toolkit.data.inputs import to_durability_inputs
    from toolkit.inference import SamplerSettings, sample
    from toolkit.models.durability import build_durability_model

    t_import = time.perf_counter() - t0
    inputs = to_durability_inputs(load_cohort(cohort))
    model = build_durability_model(inputs, variant="weibull")
    settings = SamplerSettings(backend=backend, chains=chains, tune=tune, draws=draws, random_seed=seed,
                               target_accept=target_accept, progressbar=False, cores=2)
    dt = sample(model, settings, log_likelihood=False)
    post = dt["posterior"].to_dataset()
    arrays = {name: post[name].transpose("chain", "draw").values for name in PARAMS}
    arrays["diverging"] = dt["sample_stats"]["diverging"].transpose("chain", "draw").values
    np.savez(out_path, **arrays)
    timings = {"import_seconds": t_import, "compile_seconds": float(dt.attrs["compile_seconds"]),
               "sampling_seconds": float(dt.attrs["sampling_seconds"]),
               "in_process_seconds": time.perf_counter() - t0}
    Path(out_path + ".json").write_text(json.dumps(timings))


# --------------------------------------------------------------------------- driver (project Python)


def export_stan_data(cohort: Path, path: Path) -> dict:
    """The arrays toolkit feeds its model, plus the default priors, as Stan data (JSON)."""
    from toolkit.data import load_cohort
    from toolkit.data.inputs import to_durability_inputs
    from toolkit.models.durability import DurabilityPriors

    inputs = to_durability_inputs(load_cohort(cohort))
    priors = DurabilityPriors()
    data = {
        "N": int(inputs.n_patients),
        "t": [float(x) for x in inputs.time_years],
        "event": [int(x) for x in inputs.event],
        "arm": [int(x) for x in inputs.arm],
        "prior_log_shape": list(priors.log_shape),
        "prior_log_scale_years": list(priors.log_scale_years),
        "prior_log_hr": list(priors.log_hr),
    }
    path.write_text(json.dumps(data))
    return data


def draw_stats(arrays: dict) -> dict:
    """Min bulk ESS, HR ESS, max R-hat, divergences, HR median and its MCSE (arviz_stats on both sides)."""
    import arviz_stats as azs
    import numpy as np
    import xarray as xr

    ds = xr.Dataset({name: (("chain", "draw"), np.asarray(arrays[name], dtype=float)) for name in PARAMS})
    ess = azs.ess(ds, method="bulk")
    rhat = azs.rhat(ds, method="rank")
    mcse_median = azs.mcse(ds[["hazard_ratio"]], method="median")
    return {
        "min_ess_bulk": float(min(float(ess[n]) for n in PARAMS)),
        "hr_ess_bulk": float(ess["hazard_ratio"]),
        "max_rhat": float(max(float(rhat[n]) for n in PARAMS)),
        "divergences": int(np.sum(np.asarray(arrays["diverging"]).astype(bool))),
        "hr_median": float(np.median(ds["hazard_ratio"].values)),
        "hr_mcse_median": float(mcse_median["hazard_ratio"]),
    }


def run_comparison(*, stan_python: str | None, quick: bool = False, cohort: Path = EXAMPLE,
                   seed: int = 20261125, chains: int = 4, tune: int = 1000, draws: int = 1000,
                   workdir: str | None = None) -> dict:
    """Stan vs nutpie on the same data; prints the tables and returns the numbers.

    Returns ``{"available": False, ...}`` (after printing "pystan not available")
    when no Python with pystan is found.
    """
    py = _stan_peer.peer_pythons(stan_python)
    if py is None:
        return dict(_stan_peer.SKIPPED)
    if quick:
        chains, tune, draws = 2, 200, 200
    target_accept = 0.9  # toolkit's default; Stan's delta is set to the same
    me = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory(prefix="bench_stan_", dir=workdir) as tmp:
        tmp = Path(tmp)
        data = export_stan_data(cohort, tmp / "data.json")
        common = ["--chains", str(chains), "--tune", str(tune), "--draws", str(draws), "--seed", str(seed)]
        stan_env, nutpie_env, passes = _stan_peer.cache_passes(tmp, quick)
        results = {}
        for state in passes:
            out = tmp / f"stan_{state}.npz"
            results[("stan", state)] = run_worker(
                [stan_python, me, "--stan-worker", str(tmp / "data.json"), str(out), *common,
                 "--target-accept", str(target_accept)], stan_env, out, WORKER_TIMEOUT)
            for backend in TOOLKIT_BACKENDS:
                out = tmp / f"{backend}_{state}.npz"
                # cold: every backend gets its own empty caches; warm: the same ones again
                env = {k: v.replace(str(tmp), str(tmp / backend)) for k, v in nutpie_env.items()}
                results[(backend, state)] = run_worker(
                    [py, me, "--toolkit-worker", backend, str(cohort), str(out), *common,
                     "--target-accept", str(target_accept)], env, out, WORKER_TIMEOUT)

    rows, record = [], {"available": True, "stan_python": stan_python, "chains": chains, "tune": tune,
                        "draws": draws, "target_accept": target_accept, "n_patients": data["N"],
                        "n_events": int(sum(data["event"])), "runs": {}}
    for (sampler, state), res in results.items():
        stats = draw_stats(res.pop("arrays"))
        res.update(stats)
        res["ess_per_sampling_second"] = stats["min_ess_bulk"] / res["sampling_seconds"]
        res["ess_per_wall_second"] = stats["min_ess_bulk"] / res["wall_seconds"]
        record["runs"][f"{sampler}_{state}"] = res
        rows.append([sampler, state, res["wall_seconds"], res["import_seconds"], res["compile_seconds"],
                     res["sampling_seconds"], stats["min_ess_bulk"], stats["hr_ess_bulk"],
                     res["ess_per_sampling_second"], res["ess_per_wall_second"], stats["max_rhat"],
                     stats["divergences"], stats["hr_median"], stats["hr_mcse_median"]])
    print_table(
        f"5. Stan peer: Weibull PH on {cohort.name} ({data['N']} responders, {record['n_events']} events), "
        f"{chains} chains x {tune} tune x {draws} draws, target accept {target_accept}; ESS by arviz_stats on both",
        ["sampler", "caches", "wall s", "import s", "compile s", "sampling s", "min ESS", "HR ESS",
         "ESS/s sampl", "ESS/s wall", "max R-hat", "div", "HR median", "MCSE(median)"], rows)

    comparisons, crow = {}, []
    for backend in TOOLKIT_BACKENDS:
        for state in passes:
            n, s = record["runs"][f"{backend}_{state}"], record["runs"][f"stan_{state}"]
            tol = 2 * math.hypot(n["hr_mcse_median"], s["hr_mcse_median"]) + 0.02
            diff = abs(n["hr_median"] - s["hr_median"])
            c = comparisons[f"{backend}_vs_stan_{state}"] = {
                "ess_per_sampling_second_ratio": n["ess_per_sampling_second"] / s["ess_per_sampling_second"],
                "ess_per_wall_second_ratio": n["ess_per_wall_second"] / s["ess_per_wall_second"],
                "wall_time_ratio": n["wall_seconds"] / s["wall_seconds"],
                "compile_plus_sampling_ratio":
                    (n["compile_seconds"] + n["sampling_seconds"]) / (s["compile_seconds"] + s["sampling_seconds"]),
                "hr_median_abs_diff": diff, "hr_median_tolerance": tol, "hr_medians_agree": bool(diff <= tol),
            }
            crow.append([f"{backend} / stan", state, c["ess_per_sampling_second_ratio"], c["ess_per_wall_second_ratio"],
                         c["wall_time_ratio"], c["compile_plus_sampling_ratio"], round(diff, 4), round(tol, 4),
                         "yes" if c["hr_medians_agree"] else "NO"])
    print_table("5b. toolkit backends vs Stan (ratios backend / Stan: > 1 on ESS/s = better than Stan, "
                "< 1 on time = faster than Stan)",
                ["ratio", "caches", "ESS/s sampling", "ESS/s wall", "wall time", "compile+sampling", "|dHR median|",
                 "tolerance", "agree"], crow)
    print("   tolerance = 2 * sqrt(MCSE_backend^2 + MCSE_stan^2) + 0.02, MCSE of the median from "
          "arviz_stats.mcse(method='median'); wall = whole worker process (start, imports, compile, sample, "
          "write draws); the toolkit side skips the log-likelihood step (Stan computes none).")
    record["comparisons"] = comparisons
    record["mcse_method"] = "arviz_stats.mcse(method='median')"
    return record


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    return _stan_peer.build_parser(
        __doc__.split("\n\n")[0], stan_python_help="Python with pystan (default: $BENCH_STAN_PYTHON or this one)",
        quick_help="tiny smoke run: 2 chains x 200/200, warm caches only", target_accept=0.9,
        stan_worker_args=("DATA_JSON", "OUT_NPZ"), toolkit_worker_args=("BACKEND", "COHORT", "OUT_NPZ"))


def main(args: argparse.Namespace) -> int:
    return _stan_peer.main(args, __file__, stan_worker=stan_worker, toolkit_worker=toolkit_worker,
                           compare=lambda stan_python, a, kw: run_comparison(
                               stan_python=stan_python, quick=a.quick, **kw))


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
