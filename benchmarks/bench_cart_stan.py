"""Stan peer for the CAR-T kinetics benchmark: the same hierarchical Stein model in Stan vs nutpie.

What it measures, on the 60-patient example cohort (data_templates/example),
4 chains x 1000 tune x 1000 draws, target acceptance 0.95 for both samplers
(``toolkit.models.cart.RECOMMENDED_TARGET_ACCEPT``; Stan's ``delta``):

- Stan (pystan 3 / httpstan): compile seconds (``stan.build``), sampling
  seconds (warm-up + draws), whole worker-process wall time; cold (empty
  ``XDG_CACHE_HOME``, so httpstan compiles the C++ model) and warm (the cached
  model is reused).
- nutpie on toolkit's own model (``build_cart_model(inputs, CartPriors())``
  sampled by ``toolkit.inference.sample`` without the log-likelihood step):
  the same numbers, cold (empty PyTensor compile dir and numba cache) and warm
  (the same dirs again).
- Per run: min bulk ESS over the 19 population scalars (``mu_kinetic`` x 6,
  ``omega_kinetic`` x 6, ``arm_effect`` x 6, ``sigma_log``), computed with
  arviz_stats on both sides' draws (same estimator), ESS per sampling second
  and per whole-process second, divergences, max rank R-hat, leapfrog steps
  per draw. Ratios nutpie / Stan (issue target: ESS per sampling second
  >= 2x Stan's).
- Per parameter: bulk ESS on each side and whether the posterior medians agree
  within 2 x sqrt(MCSE_nutpie^2 + MCSE_stan^2) + 0.02 x max(|median|) (MCSE of
  the median from arviz_stats ``mcse(..., method="median")``).

The two sides fit the same model. Stan uses the plain non-centered form
theta_pj = mu_j + arm_p delta_j + omega_j z_pj, z ~ Normal(0, 1); the PyMC
model's partial centering, prior-standardized mu/delta and damped transforms
change only the sampler's coordinates, not the posterior. Stan gets exactly the
arrays toolkit builds (``to_cart_inputs``: sample_patient, day, log_value,
censored, log_lloq, arm), every prior number of ``CartPriors()`` as data, the
same Stein curve on the log scale (expansion before Tmax, log-sum-exp of the
two contraction phases after it; beta = ln2 exp(-theta_persistence), alpha =
beta + exp(theta_alpha)) and the same M3 likelihood (normal log-density of a
quantified row, normal log-CDF at the row's own log LLOQ for a censored one).
Starting values: the toolkit model starts every chain at data-informed patient
values (``initial_patient_theta``) plus the samplers' U(-1, 1) jitter damped
by its transforms; Stan gets the same start (as z) with the same damped jitter
per chain (mu +- 1 prior SD, omega and sigma x/÷ e^0.2, z +- 0.5), because
Stan's default U(-2, 2) starts on the z's put some late-peaking patients in the
local modes the model docstring describes.

pystan is NOT a project dependency. Install it in a separate venv, e.g.::

    python3.12 -m venv /tmp/stanvenv && /tmp/stanvenv/bin/pip install pystan

Run (from the repository root)::

    .venv/bin/python benchmarks/bench_cart_stan.py                 # uses /tmp/stanvenv/bin/python by default
    .venv/bin/python benchmarks/bench_cart_stan.py --stan-python /path/to/python --json bench_cart_stan.json
    BENCH_STAN_PYTHON=/path/to/python .venv/bin/python benchmarks/bench_cart_stan.py
    .venv/bin/python benchmarks/bench_cart_stan.py --quick         # smoke run: 2 chains x 200/200, caches as-is

The full run (cold + warm, both samplers) takes about 10-20 minutes on a
loaded 2-core machine; the load average is printed at the start and the end,
since both samplers' times scale with it. Without a Python that has pystan it
prints "pystan not available" and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _stan_peer, also when run by the pystan Python
import _stan_peer  # noqa: E402
from _stan_peer import EXAMPLE, print_table, run_worker  # noqa: E402

WORKER_TIMEOUT = 3000.0  # seconds
DEFAULT_STAN_PYTHON = "/tmp/stanvenv/bin/python"
PARAMS = ("mu_kinetic", "omega_kinetic", "arm_effect", "sigma_log")
KINETIC = ("cmax", "tmax", "foldx", "alpha", "fb", "persistence")  # toolkit.models.cart.KINETIC_PARAMETERS
TARGET_ACCEPT = 0.95  # toolkit.models.cart.RECOMMENDED_TARGET_ACCEPT
TARGET_RATIO = 2.0  # issue target: nutpie ESS per sampling second >= 2 x Stan's
MEDIAN_REL_TOL = 0.02

STAN_CODE = """
// Hierarchical Stein 2019 piecewise CAR-T kinetics with the Beal M3 censored likelihood;
// the same model as toolkit.models.cart.build_cart_model(inputs, CartPriors()) (all six arm
// effects, no covariates), in the plain non-centered parameterization.
// theta columns: 1 log Cmax, 2 log Tmax, 3 log foldx, 4 log(alpha - beta), 5 logit FB,
// 6 log persistence half-life (beta = ln2 exp(-theta6)).
data {
  int<lower=1> P;                          // patients
  int<lower=1> S;                          // samples
  array[S] int<lower=1, upper=P> patient;
  vector[S] day;
  vector[S] log_value;                     // 0 on censored rows (unused there)
  vector[S] log_lloq;                      // the row's own limit
  int<lower=0, upper=S> S_cens;
  array[S - S_cens] int<lower=1, upper=S> quantified_rows;
  array[S_cens] int<lower=1, upper=S> censored_rows;
  vector<lower=0, upper=1>[P] arm;         // 1 = experimental
  matrix[6, 2] prior_mu;                   // Normal(mean, sd) of mu_kinetic
  matrix<lower=0>[6, 2] prior_omega;       // LogNormal(log median, log-sd) of omega_kinetic: (median, log-sd)
  matrix[6, 2] prior_effect;               // Normal(mean, sd) of arm_effect
  vector[2] prior_sigma;                   // LogNormal(mu, sigma) of sigma_log
}
transformed data {
  real ln2 = log(2.0);
  vector[6] log_omega_median = log(prior_omega[:, 1]);
}
parameters {
  vector[6] mu_kinetic;
  vector<lower=0>[6] omega_kinetic;
  vector[6] arm_effect;
  real<lower=0> sigma_log;
  matrix[P, 6] z_kinetic;
}
model {
  matrix[P, 6] theta = rep_matrix(mu_kinetic', P) + arm * arm_effect'
                       + z_kinetic .* rep_matrix(omega_kinetic', P);
  vector[P] log_cmax = theta[:, 1];
  vector[P] tmax = exp(theta[:, 2]);
  vector[P] log_foldx = theta[:, 3];
  vector[P] beta = ln2 * exp(-theta[:, 6]);
  vector[P] alpha = beta + exp(theta[:, 4]);
  vector[P] log_fb = log_inv_logit(theta[:, 5]);
  vector[P] log_1m_fb = log1m_inv_logit(theta[:, 5]);
  vector[S] log_c;
  for (s in 1:S) {
    int p = patient[s];
    real t = day[s];
    if (t < tmax[p]) {
      log_c[s] = log_cmax[p] - log_foldx[p] * (1 - t / tmax[p]);
    } else {
      real d = t - tmax[p];
      log_c[s] = log_cmax[p] + log_sum_exp(log_1m_fb[p] - alpha[p] * d, log_fb[p] - beta[p] * d);
    }
  }
  mu_kinetic ~ normal(prior_mu[:, 1], prior_mu[:, 2]);
  omega_kinetic ~ lognormal(log_omega_median, prior_omega[:, 2]);
  arm_effect ~ normal(prior_effect[:, 1], prior_effect[:, 2]);
  sigma_log ~ lognormal(prior_sigma[1], prior_sigma[2]);
  to_vector(z_kinetic) ~ std_normal();
  log_value[quantified_rows] ~ normal(log_c[quantified_rows], sigma_log);
  target += normal_lcdf(log_lloq[censored_rows] | log_c[censored_rows], sigma_log);
}
"""


# --------------------------------------------------------------------------- small helpers


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" (1/5/15 min; {os.cpu_count()} CPUs)"
    except OSError:
        return "unavailable"


def scalar_names() -> list[str]:
    """The 19 population scalars, in a fixed order."""
    return [f"{p}[{k}]" for p in PARAMS[:3] for k in KINETIC] + ["sigma_log"]


# --------------------------------------------------------------------------- workers (subprocesses)


def stan_worker(data_path: str, init_path: str, out_path: str, *, chains: int, tune: int, draws: int, seed: int,
                delta: float) -> None:
    """Runs under the pystan Python: build, sample, write draws (npz, (chain, draw, k)) and timings (json)."""
    t0 = time.perf_counter()
    import numpy as np
    import stan

    t_import = time.perf_counter() - t0
    data = json.loads(Path(data_path).read_text())
    init = json.loads(Path(init_path).read_text())[:chains]
    t1 = time.perf_counter()
    posterior = stan.build(STAN_CODE, data=data, random_seed=seed)
    t2 = time.perf_counter()
    fit = posterior.sample(num_chains=chains, num_samples=draws, num_warmup=tune, delta=delta, init=init)
    t3 = time.perf_counter()

    def by_chain(name):
        # fit[name] is (k, draws * chains) with the chain index varying fastest
        a = np.asarray(fit[name], dtype=float)
        a = a.reshape(-1, a.shape[-1])
        return a.reshape(a.shape[0], -1, fit.num_chains).transpose(2, 1, 0)

    arrays = {name: by_chain(name) for name in PARAMS}
    arrays["diverging"] = by_chain("divergent__")[..., 0]
    arrays["n_steps"] = by_chain("n_leapfrog__")[..., 0]
    np.savez(out_path, **arrays)
    timings = {"import_seconds": t_import, "compile_seconds": t2 - t1, "sampling_seconds": t3 - t2,
               "in_process_seconds": time.perf_counter() - t0}
    Path(out_path + ".json").write_text(json.dumps(timings))


def toolkit_worker(cohort: str, out_path: str, *, chains: int, tune: int, draws: int, seed: int,
                   target_accept: float) -> None:
    """Runs under the project Python: toolkit's CAR-T model with nutpie, no log-likelihood step."""
    t0 = time.perf_counter()
    import numpy as np

    from toolkit.data import load_cohort
    from toolkit.data.inputs import to_cart_inputs
    from toolkit.inference import SamplerSettings, sample
    from toolkit.models.cart import CartPriors, build_cart_model

    t_import = time.perf_counter() - t0
    inputs = to_cart_inputs(load_cohort(cohort))
    model = build_cart_model(inputs, CartPriors())
    settings = SamplerSettings(backend="nutpie", chains=chains, tune=tune, draws=draws, random_seed=seed,
                               target_accept=target_accept, progressbar=False)
    dt = sample(model, settings, log_likelihood=False)
    post = dt["posterior"].to_dataset()
    arrays = {}
    for name in PARAMS:
        da = post[name]
        a = da.transpose("chain", "draw", *[d for d in da.dims if d not in ("chain", "draw")]).values
        arrays[name] = a.reshape(a.shape[0], a.shape[1], -1)
    stats = dt["sample_stats"].to_dataset()
    arrays["diverging"] = stats["diverging"].transpose("chain", "draw").values
    arrays["n_steps"] = stats["n_steps"].transpose("chain", "draw").values
    np.savez(out_path, **arrays)
    timings = {"import_seconds": t_import, "compile_seconds": float(dt.attrs["compile_seconds"]),
               "sampling_seconds": float(dt.attrs["sampling_seconds"]),
               "in_process_seconds": time.perf_counter() - t0}
    Path(out_path + ".json").write_text(json.dumps(timings))


# --------------------------------------------------------------------------- driver (project Python)


def export_stan_data(cohort: Path, data_path: Path, init_path: Path, *, chains: int, seed: int) -> dict:
    """The arrays toolkit feeds its model and every number of ``CartPriors()`` as Stan data (JSON), and
    per-chain starting values: the toolkit model's start plus its damped U(-1, 1) jitter."""
    import numpy as np

    from toolkit.data import load_cohort
    from toolkit.data.inputs import to_cart_inputs
    from toolkit.models.cart import KINETIC_PARAMETERS, CartPriors, initial_patient_theta

    assert tuple(KINETIC_PARAMETERS) == KINETIC, KINETIC_PARAMETERS
    inputs = to_cart_inputs(load_cohort(cohort))
    if inputs.covariates:
        raise RuntimeError("the Stan peer has no covariate effects")
    priors = CartPriors()
    if priors.omega_family != "lognormal":
        raise RuntimeError("the Stan peer uses LogNormal omega priors")
    mu_prior, omega_prior, effect_prior = priors.mu(), priors.omega(), priors.effect(KINETIC)
    censored = inputs.censored.astype(bool)
    data = {
        "P": int(inputs.n_patients),
        "S": int(inputs.n_samples),
        "patient": [int(i) + 1 for i in inputs.sample_patient],
        "day": [float(x) for x in inputs.day],
        "log_value": [float(x) for x in inputs.log_value],
        "log_lloq": [float(x) for x in inputs.log_lloq],
        "S_cens": int(censored.sum()),
        "quantified_rows": [int(i) + 1 for i in np.flatnonzero(~censored)],
        "censored_rows": [int(i) + 1 for i in np.flatnonzero(censored)],
        "arm": [int(x) for x in inputs.arm],
        "prior_mu": mu_prior.tolist(),
        "prior_omega": omega_prior.tolist(),
        "prior_effect": effect_prior.tolist(),
        "prior_sigma": [float(priors.sigma[0]), float(priors.sigma[1])],
    }
    data_path.write_text(json.dumps(data))

    # Starting point of the toolkit model (support points: prior means, LogNormal means, data-informed
    # patient theta as z), then per chain the U(-1, 1) jitter as its transforms damp it.
    omega0 = omega_prior[:, 0] * np.exp(0.5 * omega_prior[:, 1] ** 2)
    sigma0 = math.exp(priors.sigma[0] + 0.5 * priors.sigma[1] ** 2)
    z0 = (initial_patient_theta(inputs, priors) - mu_prior[:, 0]) / omega0
    rng = np.random.default_rng(seed)
    inits = []
    for _ in range(chains):
        u = lambda *shape: rng.uniform(-1.0, 1.0, size=shape)  # noqa: E731
        inits.append({
            "mu_kinetic": (mu_prior[:, 0] + mu_prior[:, 1] * u(6)).tolist(),
            "omega_kinetic": (omega0 * np.exp(u(6) / 5.0)).tolist(),
            "arm_effect": (effect_prior[:, 0] + effect_prior[:, 1] * u(6)).tolist(),
            "sigma_log": float(sigma0 * math.exp(float(u(1)[0]) / 5.0)),
            "z_kinetic": (z0 + u(*z0.shape) / 2.0).tolist(),
        })
    init_path.write_text(json.dumps(inits))
    data["n_censored"] = data["S_cens"]
    return data


def draw_stats(arrays: dict) -> dict:
    """Per-scalar bulk ESS, rank R-hat, median and its MCSE (arviz_stats), plus run-level summaries."""
    import arviz_stats as azs
    import numpy as np
    import xarray as xr

    names = scalar_names()
    columns = [np.asarray(arrays[p], dtype=float)[..., j] for p in PARAMS[:3] for j in range(len(KINETIC))]
    columns.append(np.asarray(arrays["sigma_log"], dtype=float)[..., 0])
    ds = xr.Dataset({n: (("chain", "draw"), c) for n, c in zip(names, columns)})
    ess = azs.ess(ds, method="bulk")
    rhat = azs.rhat(ds, method="rank")
    mcse = azs.mcse(ds, method="median")
    per = {n: {"ess_bulk": float(ess[n]), "rhat": float(rhat[n]), "median": float(np.median(ds[n].values)),
               "mcse_median": float(mcse[n])} for n in names}
    return {
        "per_parameter": per,
        "min_ess_bulk": min(v["ess_bulk"] for v in per.values()),
        "min_ess_parameter": min(per, key=lambda n: per[n]["ess_bulk"]),
        "max_rhat": max(v["rhat"] for v in per.values()),
        "divergences": int(np.sum(np.asarray(arrays["diverging"]).astype(bool))),
        "leapfrog_steps_per_draw": float(np.mean(arrays["n_steps"])),
    }


def run_comparison(*, stan_python: str | None, quick: bool = False, cohort: Path = EXAMPLE,
                   seed: int = 20261125, chains: int = 4, tune: int = 1000, draws: int = 1000,
                   target_accept: float = TARGET_ACCEPT, workdir: str | None = None) -> dict:
    """Stan vs nutpie on the same data and model; prints the tables and returns the numbers.

    Returns ``{"available": False, ...}`` (after printing "pystan not available")
    when no Python with pystan is found.
    """
    py = _stan_peer.peer_pythons(stan_python)
    if py is None:
        return dict(_stan_peer.SKIPPED)
    if quick:
        chains, tune, draws = 2, 200, 200
    load_start = load_average()
    print(f"load average at start: {load_start}", flush=True)
    me = str(Path(__file__).resolve())
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_cart_stan_", dir=workdir) as tmp:
        tmp = Path(tmp)
        data = export_stan_data(cohort, tmp / "data.json", tmp / "init.json", chains=chains, seed=seed)
        common = ["--chains", str(chains), "--tune", str(tune), "--draws", str(draws), "--seed", str(seed),
                  "--target-accept", str(target_accept)]
        stan_env, nutpie_env, passes = _stan_peer.cache_passes(tmp, quick)
        results = {}
        for state in passes:
            out = tmp / f"stan_{state}.npz"
            print(f"[{time.perf_counter() - t_all:7.1f} s] Stan, {state} caches ...", flush=True)
            results[("stan", state)] = run_worker(
                [stan_python, me, "--stan-worker", str(tmp / "data.json"), str(tmp / "init.json"), str(out),
                 *common], stan_env, out, WORKER_TIMEOUT)
            out = tmp / f"nutpie_{state}.npz"
            print(f"[{time.perf_counter() - t_all:7.1f} s] nutpie, {state} caches ...", flush=True)
            results[("nutpie", state)] = run_worker(
                [py, me, "--toolkit-worker", str(cohort), str(out), *common], nutpie_env, out, WORKER_TIMEOUT)
        print(f"[{time.perf_counter() - t_all:7.1f} s] done", flush=True)

    record = {"available": True, "stan_python": stan_python, "chains": chains, "tune": tune, "draws": draws,
              "target_accept": target_accept, "seed": seed, "n_patients": data["P"], "n_samples": data["S"],
              "n_censored": data["n_censored"], "load_average_start": load_start, "runs": {}}
    rows = []
    for (sampler, state), res in results.items():
        stats = draw_stats(res.pop("arrays"))
        res.update(stats)
        res["ess_per_sampling_second"] = stats["min_ess_bulk"] / res["sampling_seconds"]
        res["ess_per_wall_second"] = stats["min_ess_bulk"] / res["wall_seconds"]
        record["runs"][f"{sampler}_{state}"] = res
        rows.append([sampler, state, res["wall_seconds"], res["compile_seconds"], res["sampling_seconds"],
                     stats["min_ess_bulk"], stats["min_ess_parameter"], res["ess_per_sampling_second"],
                     res["ess_per_wall_second"], stats["max_rhat"], stats["divergences"],
                     stats["leapfrog_steps_per_draw"]])
    print_table(
        f"Stan peer: CAR-T kinetics on {cohort.name} ({data['P']} patients, {data['S']} samples, "
        f"{data['n_censored']} below the LLOQ), {chains} chains x {tune} tune x {draws} draws, "
        f"target accept {target_accept}; ESS by arviz_stats on both, over the 19 population scalars",
        ["sampler", "caches", "wall s", "compile s", "sampling s", "min ESS", "(parameter)", "ESS/s sampl",
         "ESS/s wall", "max R-hat", "div", "steps/draw"], rows)

    comparisons, crow = {}, []
    for state in passes:
        n, s = record["runs"][f"nutpie_{state}"], record["runs"][f"stan_{state}"]
        prow, per = [], {}
        for name in scalar_names():
            a, b = n["per_parameter"][name], s["per_parameter"][name]
            tol = (2 * math.hypot(a["mcse_median"], b["mcse_median"])
                   + MEDIAN_REL_TOL * max(abs(a["median"]), abs(b["median"])))
            diff = abs(a["median"] - b["median"])
            per[name] = {"abs_diff": diff, "tolerance": tol, "agree": bool(diff <= tol)}
            prow.append([name, a["ess_bulk"], b["ess_bulk"], a["rhat"], b["rhat"], round(a["median"], 4),
                         round(b["median"], 4), round(diff, 4), round(tol, 4), "yes" if diff <= tol else "NO"])
        print_table(f"Per parameter, {state} caches: bulk ESS, R-hat and posterior median, nutpie vs Stan",
                    ["parameter", "ESS nutpie", "ESS Stan", "R-hat nutpie", "R-hat Stan", "median nutpie",
                     "median Stan", "|diff|", "tolerance", "agree"], prow)
        n_agree = sum(v["agree"] for v in per.values())
        ratio = n["ess_per_sampling_second"] / s["ess_per_sampling_second"]
        c = comparisons[f"nutpie_vs_stan_{state}"] = {
            "ess_per_sampling_second_ratio": ratio,
            "ess_per_wall_second_ratio": n["ess_per_wall_second"] / s["ess_per_wall_second"],
            "min_ess_ratio": n["min_ess_bulk"] / s["min_ess_bulk"],
            "sampling_time_ratio": n["sampling_seconds"] / s["sampling_seconds"],
            "compile_time_ratio": n["compile_seconds"] / s["compile_seconds"],
            "wall_time_ratio": n["wall_seconds"] / s["wall_seconds"],
            "target_ratio": TARGET_RATIO, "meets_target": bool(ratio >= TARGET_RATIO),
            "medians_agree": n_agree, "medians_compared": len(per), "per_parameter": per,
        }
        crow.append(["nutpie / Stan", state, ratio, c["ess_per_wall_second_ratio"], c["min_ess_ratio"],
                     c["sampling_time_ratio"], c["compile_time_ratio"], c["wall_time_ratio"],
                     "yes" if c["meets_target"] else "NO", f"{n_agree}/{len(per)}"])
    print_table(f"Ratios nutpie / Stan (> 1 on ESS = better than Stan, < 1 on time = faster than Stan; "
                f"target: ESS/s sampling >= {TARGET_RATIO:g})",
                ["ratio", "caches", "ESS/s sampling", "ESS/s wall", "min ESS", "sampling s", "compile s",
                 "wall s", f">= {TARGET_RATIO:g}", "medians agree"], crow)
    print(f"   tolerance = 2 * sqrt(MCSE_nutpie^2 + MCSE_stan^2) + {MEDIAN_REL_TOL:g} * max(|median|), MCSE of the "
          "median from arviz_stats.mcse(method='median'); sampling s = warm-up + draws; wall = whole worker "
          "process (start, imports, data, compile, sample, write draws); nutpie skips the log-likelihood step "
          "(Stan computes none).")
    load_end = load_average()
    print(f"load average at end: {load_end}; total {time.perf_counter() - t_all:.0f} s", flush=True)
    record["load_average_end"] = load_end
    record["comparisons"] = comparisons
    record["mcse_method"] = "arviz_stats.mcse(method='median')"
    return record


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    return _stan_peer.build_parser(
        __doc__.split("\n\n")[0],
        stan_python_help=f"Python with pystan (default: $BENCH_STAN_PYTHON, else {DEFAULT_STAN_PYTHON}, else this one)",
        quick_help="smoke run: 2 chains x 200/200, caches as-is (no cold pass)", target_accept=TARGET_ACCEPT,
        stan_worker_args=("DATA_JSON", "INIT_JSON", "OUT_NPZ"), toolkit_worker_args=("COHORT", "OUT_NPZ"))


def main(args: argparse.Namespace) -> int:
    return _stan_peer.main(args, __file__, stan_worker=stan_worker, toolkit_worker=toolkit_worker,
                           default_stan_python=DEFAULT_STAN_PYTHON,
                           compare=lambda stan_python, a, kw: run_comparison(
                               stan_python=stan_python, quick=a.quick, target_accept=a.target_accept, **kw))


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
