r"""Running a simulation-based calibration study: one simulation, a batch on Dask, the results store.

One simulation (:func:`run_simulation`, run on a worker):

1. simulate a data set from the problem's likelihood at the prior draw theta*;
2. swap it into the fit model, compiled **once per worker** (nutpie's compiled
   model, ``with_data``), and sample;
3. diagnose the fit with the toolkit's own verdict (``toolkit.inference.diagnose``)
   and, where the spec allows reruns (``extend_sampling``), continue or rerun what failed (the same chains to
   twice the draws, or a new run at a higher target_accept after divergences) while the verdict fails, exactly as
   a fit of real data would (``toolkit.fitting.run_extending``); the last run is the one kept;
4. thin each chain by ESS: keep every m-th draw, m = floor(S / min bulk ESS),
   so the L kept draws are close to independent (Talts et al. 2018, section 4.1);
5. for every test quantity f (scalar parameters, decision estimands, joint
   log-likelihood) record the rank r = #{l : f(theta_l) < f(theta*)} (ties broken
   uniformly at random), L, and the randomized PIT u = (r + v) / (L + 1), v ~ U(0, 1),
   which is exactly U(0, 1) when the fit is calibrated.

A failed simulation is recorded with its error and the study goes on; a fit
that fails its diagnostics is kept and flagged (``converged = False``), never
dropped (dropping them would bias the ranks; Modrák et al. 2023).

The results store is a folder: ``study.json`` (configuration) and
``simulations/sim_NNNNN.parquet``, one file per simulation, each written
atomically (temporary name, then rename), so an interrupted study loses at most
the simulations in flight and ``resume=True`` runs only the missing ones.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from toolkit.inference import RERUN_POLICY, NutpieRun, SamplerSettings

__all__ = ["StudyError", "study_settings", "load_results", "run_simulation", "run_study", "start_local_cluster"]

STUDY_FILE = "study.json"
SIM_DIR = "simulations"
#: prior draws are made in blocks of this size with the seed (study seed, block), so a
#: simulation's parameters do not depend on how many simulations the study asks for
PRIOR_BLOCK = 500
#: environment of every worker process: one thread each (nutpie's rayon pool, numba, BLAS)
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}


class StudyError(ValueError):
    """A study that cannot be started or resumed; the message says why and what to do."""


def study_settings(sampler: dict | None = None) -> SamplerSettings:
    """The toolkit's :class:`~toolkit.inference.SamplerSettings` of a study, from a spec's ``[sampler]`` table.

    A study uses one settings type with every fit: ``seed`` (the spec's name) is
    ``random_seed``; fits always run on nutpie, one core a worker (a run that may be
    continued runs its chains side by side on it, ``toolkit.inference.NutpieRun``), without a
    progress bar. Keys a study does not use (e.g. ``backend``) are ignored.
    """
    sampler = dict(sampler or {})
    if "seed" in sampler:
        sampler["random_seed"] = sampler.pop("seed")
    known = {"chains", "tune", "draws", "target_accept", "random_seed"}
    return SamplerSettings(**{k: v for k, v in sampler.items() if k in known}, progressbar=False, cores=1)


def settings_record(settings: SamplerSettings, extensions: int = 0, policy: str = RERUN_POLICY) -> dict:
    """What ``study.json`` stores of the settings (the keys a resumed study must match; names as in a spec).

    ``extend_sampling`` and ``rerun_policy`` (``toolkit.inference.RERUN_POLICIES``) are stored only when reruns are
    allowed, so studies stored before they existed resume (:func:`rerun_policy_of`)."""
    record = {"chains": int(settings.chains), "tune": int(settings.tune), "draws": int(settings.draws),
              "target_accept": float(settings.target_accept), "seed": int(settings.random_seed)}
    if not extensions:
        return record
    return {**record, "extend_sampling": int(extensions)} | ({} if policy == "doubling" else {"rerun_policy": policy})


def rerun_policy_of(stored_settings: dict | None) -> str:
    """The rerun policy of a study from its stored settings: a study with reruns stored before the policy was
    recorded (December 2026) doubled the draws at every rerun ("doubling")."""
    stored_settings = stored_settings or {}
    if "rerun_policy" in stored_settings:
        return stored_settings["rerun_policy"]
    return "doubling" if stored_settings.get("extend_sampling") else RERUN_POLICY


# --------------------------------------------------------------------------- one simulation

_WORKER_CACHE: dict[str, dict] = {}


def _prepared(problem) -> dict:
    """The problem's compiled fit model and log-likelihood function, built once per process."""
    key = problem.cache_key()
    if key not in _WORKER_CACHE:
        import nutpie

        t0 = time.perf_counter()
        model = problem.fit_model()
        compiled = nutpie.compile_pymc_model(model)
        loglik = problem.loglik_function()
        _WORKER_CACHE.clear()  # one study at a time per worker; compiled models hold memory
        _WORKER_CACHE[key] = {"compiled": compiled, "names": problem.parameter_names(model), "loglik": loglik,
                              "compile_seconds": time.perf_counter() - t0, "used": False,
                              # the compiled model's start (unconstrained, before jitter), in its flat order
                              "start": model.initial_point(),
                              "value_names": [model.rvs_to_values[rv].name for rv in model.free_RVs]}
    return _WORKER_CACHE[key]


def _vector_labels(problem, name: str, size: int) -> list[str]:
    if hasattr(problem, "vector_labels"):  # e.g. the CAR-T model's kinetic parameter names
        labels = problem.vector_labels(name, size)
        if labels is not None:
            return list(labels)
    covariates = list(getattr(problem.design, "covariates", ()))
    return covariates if len(covariates) == size and name in ("beta_std", "gamma_std") else [str(j) for j in range(size)]


def divergent_z(problem, posterior, diverging: np.ndarray, names: list[str]) -> dict[str, float]:
    r"""Where a run's divergent draws sit: per parameter element, z = (mean of its divergent draws - posterior
    mean) / posterior SD over all the run's draws, keyed as :func:`quantity_draws` names parameters.

    A divergence marks a region the sampler could not explore; \|z\| of 1-2 in a population SD (say) points at
    the funnel or wall that caused it. Empty when the run has no divergence. ``posterior``: the run's posterior
    Dataset; ``diverging``: (chain, draw) booleans.
    """
    diverging = np.asarray(diverging, bool)
    if not diverging.any():
        return {}
    out = {}
    unranked = set(getattr(problem, "unranked_parameters", lambda: ())())  # not stored: skip their elements
    for name in (n for n in names if n not in unranked):
        values = posterior[name].transpose("chain", "draw", ...).values
        labels = [name] if values.ndim == 2 else [f"{name}[{label}]" for label in
                                                  _vector_labels(problem, name, int(np.prod(values.shape[2:])))]
        for label, z in zip(labels, divergent_z_of(values, diverging)):
            if np.isfinite(z):
                out[label] = float(z)
    return out


def divergent_z_of(values: np.ndarray, diverging: np.ndarray) -> np.ndarray:
    """z = (mean of the divergent draws - mean) / SD of each element of a (chain, draw, ...) array, flattened;
    NaN where an element does not vary. ``diverging``: (chain, draw) booleans, at least one True."""
    flat = np.asarray(values, float).reshape(values.shape[0] * values.shape[1], -1)
    sd = flat.std(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, (flat[np.asarray(diverging, bool).ravel()].mean(axis=0) - flat.mean(axis=0)) / sd,
                        np.nan)


def quantity_draws(problem, draws: dict[str, np.ndarray], data: dict, loglik) -> dict[str, tuple[str, np.ndarray]]:
    """Every test quantity per draw: ``{name: (kind, values)}``, kind parameter, estimand or loglik."""
    out = {}
    # draws a problem needs but does not rank (patient-level parameters, inputs of its estimands)
    unranked = set(getattr(problem, "unranked_parameters", lambda: ())())
    for name, v in draws.items():
        if name in unranked:
            continue
        v = np.asarray(v, float)
        if v.ndim == 1:
            out[name] = ("parameter", v)
        else:
            flat = v.reshape(v.shape[0], -1)
            for j, label in enumerate(_vector_labels(problem, name, flat.shape[1])):
                out[f"{name}[{label}]"] = ("parameter", flat[:, j])
    for name, v in problem.estimand_draws(draws).items():
        out[name] = ("estimand", np.asarray(v, float))
    out["log_likelihood"] = ("loglik", np.asarray(loglik(draws, data), float))
    return out


def population_converged(diag, posterior, names: list[str]) -> bool:
    """Whether every population-level variable among ``names`` (``toolkit.review.parameter_level``: not indexed
    by patient; the ranked parameters and the arm-level quantities behind the estimands) passes the verdict's
    R-hat and ESS thresholds (``toolkit.inference.RHAT_MAX``, ``ESS_MIN``), from the statistics the verdict
    ``diag`` (``toolkit.inference.diagnose`` of ``posterior``'s run) already computed. Divergences and sampler
    statistics belong to the whole run and are not judged here, so for a fit that failed its verdict True means
    that patient-level vectors, divergences or sampler statistics failed, not a population-level quantity."""
    from toolkit.review import parameter_level

    return diag.elements_pass([n for n in names if n in posterior and parameter_level(posterior[n]) == "population"])


def simulated_data(problem, sim: int, theta: dict, *, seed: int) -> dict[str, np.ndarray]:
    """Simulation ``sim``'s data set: the problem's likelihood at its prior draw ``theta``, with the random seed
    (study seed, sim, 0). The one place that seed is made, so a study, its reruns and the benchmarks that
    regenerate a simulation (``benchmarks/sbc_*.py``) see the same cohort."""
    return problem.simulate(theta, random_seed=[seed, sim, 0])


def compiled_with_data(problem, prep: dict, data: dict):
    """The worker's compiled fit model (``prep``: :func:`_prepared`) holding ``data``, with the data-informed
    starts of problems that derive them (``problem.start_values``, e.g. the CAR-T patient parameters)."""
    # only containers the compiled likelihood reads; the rest (e.g. ``event`` beside a separate NRM) are unused
    known = {var.name for var in prep["compiled"].shared_var_keys}
    compiled = prep["compiled"].with_data(**{k: v for k, v in problem.data_updates(data).items() if k in known})
    if hasattr(problem, "start_values"):
        compiled = with_starts(compiled, prep, problem.start_values(data))
    return compiled


def with_starts(compiled, prep: dict, starts: dict):
    """``compiled`` starting its chains at ``starts`` (unconstrained values by value-variable name).

    The compiled model's starting-point function (the model's start plus the
    sampler's jitter) is shifted by ``starts - start`` in the flat order of the free
    variables; variables not in ``starts`` keep their start. Used by problems whose
    builder derives starting values from the data (``problem.start_values(data)``):
    the compiled model holds the placeholder data's starts otherwise.
    """
    import dataclasses

    offset = np.concatenate([
        (np.asarray(starts[name], float) - np.asarray(prep["start"][name], float)).ravel() if name in starts
        else np.zeros(np.asarray(prep["start"][name]).size) for name in prep["value_names"]])
    base = compiled.initial_point_func

    def initial_point(seed=None):
        return base(seed) + offset

    return dataclasses.replace(compiled, initial_point_func=initial_point)


def _rank(post: np.ndarray, true: float, rng) -> tuple[int, int]:
    less = int(np.sum(post < true))
    ties = int(np.sum(post == true))
    return less + int(rng.integers(0, ties + 1)), post.size


def _sample_with_extensions(compiled, sim: int, names: list[str], settings: SamplerSettings, extensions: int,
                            policy: str):
    """Sample a simulation's fit as the analysis would (``toolkit.fitting.run_extending``: rerun with doubled
    draws while the verdict over ``names`` fails, at most ``extensions`` times; the last run is kept).

    Returns (posterior, diagnosis and settings of the kept run, attempts).
    """
    import nutpie

    from toolkit.fitting import run_extending

    def seed(run: SamplerSettings) -> int:
        return int((run.random_seed * 1_000_003 + sim) % 2**63)

    def draw(run: SamplerSettings):
        t1 = time.perf_counter()
        dt = nutpie.sample(compiled, draws=run.draws, tune=run.tune, chains=run.chains, cores=1, seed=seed(run),
                           progress_bar=False, save_warmup=False, target_accept=run.target_accept)
        dt.attrs["sampling_seconds"] = time.perf_counter() - t1
        return dt

    def open_run(run: SamplerSettings, max_draws: int) -> NutpieRun:
        return NutpieRun(compiled, chains=run.chains, tune=run.tune, max_draws=max_draws, seed=seed(run),
                         target_accept=run.target_accept)

    return run_extending(settings, extensions, draw, var_names=names, policy=policy, open_run=open_run)


def run_simulation(problem, sim: int, theta: dict, *, settings: SamplerSettings, extensions: int = 0,
                   policy: str = RERUN_POLICY, keep: dict | None = None, cohort_seed: int | None = None) -> dict:
    """One SBC simulation; never raises: an error is returned as ``status = "error"`` with its message.

    ``extensions``: reruns with doubled draws allowed while the fit fails its verdict (the spec's
    ``extend_sampling``; 0: one run at ``settings``) under the rerun ``policy`` (``toolkit.fitting.run_extending``).
    ``runs``, ``first_converged`` and ``run_history`` (each
    run's draws, target_accept, R-hat, ESS and divergences, as JSON) record what they did.
    ``keep``: a dict that receives the kept run's ``posterior`` (with its sampler statistics), the verdict's
    variable ``names``, the simulated ``data`` and the runs' ``attempts``, for a closer look at one simulation
    (``benchmarks/sbc_rerun.py --detail``); a study passes none. ``cohort_seed`` (default ``settings.random_seed``)
    draws the simulated data, so a rerun alone (``sbc_rerun.py --run``) samples from another seed on the study's
    cohort.
    """
    t0 = time.perf_counter()
    record = {"sim": int(sim), "status": "ok", "error": "", "worker_pid": os.getpid(), "converged": False,
              "first_converged": False, "runs": 0, "draws_per_chain": 0,
              "max_rhat": np.nan, "min_ess_bulk": np.nan, "min_ess_tail": np.nan, "divergences": -1,
              "thin": 0, "n_kept": 0, "events": -1, "compile_seconds": 0.0, "sampling_seconds": np.nan,
              "seconds": np.nan, "run_history": "", "population_converged": False, "quantities": {}}
    try:
        prep = _prepared(problem)
        if not prep["used"]:
            record["compile_seconds"] = prep["compile_seconds"]
            prep["used"] = True
        seed = settings.random_seed if cohort_seed is None else cohort_seed
        data = simulated_data(problem, sim, theta, seed=seed)
        record["events"] = int(np.sum(data.get("event", -1)))
        compiled = compiled_with_data(problem, prep, data)
        names = prep["names"]
        dt, diag, kept, attempts = _sample_with_extensions(compiled, sim, names, settings, extensions, policy)
        if keep is not None:
            keep.update(posterior=dt, names=names, data=data, attempts=attempts)
        post = dt["posterior"].to_dataset()
        record["population_converged"] = population_converged(diag, post, names)
        record.update(converged=bool(diag.converged), max_rhat=float(diag.max_rhat),
                      min_ess_bulk=float(diag.min_ess_bulk), min_ess_tail=float(diag.min_ess_tail),
                      divergences=int(diag.divergences), runs=len(attempts),
                      sampling_seconds=sum(a["sampling_seconds"] for a in attempts),
                      first_converged=bool(attempts[0]["converged"]), draws_per_chain=int(kept.draws),
                      run_history=json.dumps([{k: a[k] for k in RUN_HISTORY + ("continued", "draws_made") if k in a}
                                              for a in attempts]))
        n_total = kept.chains * kept.draws
        ess = diag.min_ess_bulk if np.isfinite(diag.min_ess_bulk) and diag.min_ess_bulk > 0 else 1.0
        thin = max(1, int(n_total // min(ess, n_total)))
        draws = {n: post[n].transpose("chain", "draw", ...).values[:, ::thin].reshape(-1, *post[n].shape[2:])
                 for n in names}
        truth = {n: np.asarray(theta[n], float)[None] for n in names}
        q_post = quantity_draws(problem, draws, data, prep["loglik"])
        q_true = quantity_draws(problem, truth, data, prep["loglik"])
        rng = np.random.default_rng([seed, sim, 1])
        where_divergent = divergent_z(problem, post, dt["sample_stats"]["diverging"].transpose("chain", "draw").values,
                                       names) \
            if diag.divergences else {}
        # fit-free PITs of the quantities a problem has an oracle for (``oracle_pits``; NaN elsewhere)
        oracle = problem.oracle_pits(theta) if hasattr(problem, "oracle_pits") else {}
        for name, (kind, values) in q_post.items():
            true = float(q_true[name][1][0])
            rank, n_kept = _rank(values, true, rng)
            finite = values[np.isfinite(values)]
            record["quantities"][name] = {
                "kind": kind, "prior_value": true, "rank": rank, "n_kept": n_kept,
                "pit": (rank + float(rng.uniform())) / (n_kept + 1),
                "post_mean": float(finite.mean()) if finite.size else np.nan,
                "post_sd": float(finite.std(ddof=1)) if finite.size > 1 else np.nan,
                "share_finite": float(finite.size / values.size),
                "divergent_z": where_divergent.get(name, np.nan), "oracle_pit": oracle.get(name, np.nan)}
        record.update(thin=thin, n_kept=int(next(iter(draws.values())).shape[0]))
    except Exception as exc:  # noqa: BLE001 - one failed simulation is recorded and must not stop the study
        where = traceback.extract_tb(exc.__traceback__)[-1]
        record.update(status="error", error=f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:"
                                            f"{where.lineno})")
    record["seconds"] = time.perf_counter() - t0
    return record


# what the record keeps of each run of a simulation (``toolkit.fitting.run_extending``'s attempts), as JSON
RUN_HISTORY = ("draws", "target_accept", "max_rhat", "min_ess_bulk", "min_ess_tail", "divergences")
# and, under policy "continue", "continued" (the run continued the one before to twice its draws) and
# "draws_made" (by all chains when it was judged, those past the checkpoint included)


def iterations_per_chain(run_history: str | None, tune: int, chains: int, *, as_if: str | None = None
                         ) -> float | None:
    """Iterations a chain sampled, tuning included, from a simulation's ``run_history`` (None without one).

    Each run costs its tuning and draws; a run continued from the one before (policy "continue") only the
    draws it added, and the last checkpoint of a continued run the draws its chains had made by then
    (``draws_made`` / ``chains``, those the faster chains made past the checkpoint included).
    ``as_if``: what the same sequence of verdicts would have cost under another policy: "continue" (every run
    after one without divergences continues it; the draws past the checkpoints are not counted) or
    "what-failed" (every run a new run, tuned again).
    """
    if not isinstance(run_history, str) or not run_history:
        return None
    if as_if not in (None, "continue", "what-failed"):
        raise ValueError(f"as_if must be 'continue' or 'what-failed', got {as_if!r}")
    runs = json.loads(run_history)
    if as_if == "what-failed":
        return float(sum(tune + run["draws"] for run in runs))
    continued = [bool(run.get("continued")) or (as_if == "continue" and k > 0 and not runs[k - 1]["divergences"])
                 for k, run in enumerate(runs)]
    total = 0.0
    for k, run in enumerate(runs):
        if not continued[k]:
            total += tune
        if k + 1 == len(runs) or not continued[k + 1]:  # the last checkpoint of its run
            total += run["draws_made"] / chains if run.get("draws_made") and as_if is None else run["draws"]
    return total


def record_frame(record: dict):
    """A simulation record as a long table: one row per test quantity (one row with quantity '' on error)."""
    import pandas as pd

    base = {k: v for k, v in record.items() if k != "quantities"}
    rows = [{**base, "quantity": name, **q} for name, q in record["quantities"].items()]
    if not rows:
        rows = [{**base, "quantity": "", "kind": "", "prior_value": np.nan, "rank": -1, "n_kept": 0,
                 "pit": np.nan, "post_mean": np.nan, "post_sd": np.nan, "share_finite": np.nan,
                 "divergent_z": np.nan, "oracle_pit": np.nan}]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the results store


def _sim_path(out: Path, sim: int) -> Path:
    return out / SIM_DIR / f"sim_{sim:05d}.parquet"


def _write_atomic(frame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".parquet")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def done_simulations(out: str | Path) -> set[int]:
    """Indices of the simulations already stored in ``out``."""
    return {int(p.stem.split("_")[1]) for p in (Path(out) / SIM_DIR).glob("sim_*.parquet")}


def load_results(out: str | Path):
    """Every stored simulation of a study, one row per (simulation, quantity)."""
    import pandas as pd

    files = sorted((Path(out) / SIM_DIR).glob("sim_*.parquet"))
    if not files:
        raise StudyError(f"{out}: no simulation results (simulations/sim_*.parquet); run the study first")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def write_study_file(path: Path, data: dict) -> None:
    """Write a study's JSON file whole (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def open_study(path: Path, config: dict, *, resume: bool, what: str, compare: tuple[str, ...],
               error: type[Exception] = StudyError, held: bool | None = None) -> dict:
    """Check a study folder before a study (calibration, design, schedules) starts or resumes in it.

    ``path`` is the study's JSON file; ``held`` (default: that file exists) says the folder holds a
    study, which only ``resume`` may continue, and only with the same ``compare`` entries of
    ``config``. Returns the stored history (``runs``, ``started``) a resumed study keeps.
    ``model_versions`` (:func:`model_versions`) is compared only when the stored study has it.
    """
    held = path.exists() if held is None else held
    if not held:
        return {}
    if not resume:
        raise error(f"{path.parent} already holds a {what} study; pass --resume to continue it, "
                    "or choose a new --out folder")
    if not path.exists():
        return {}
    stored = json.loads(path.read_text())
    # a study stored before model versions were recorded cannot be checked for them (they are written now)
    differing = [key for key in compare if stored.get(key) != config.get(key)
                 and not (key == "model_versions" and key not in stored)]
    if differing:
        raise error(f"{path.parent}: the stored study's {', '.join(differing)} differ from this one's, so "
                    "--resume would mix two studies; use the same spec and settings, or a new --out folder")
    return {k: stored[k] for k in ("runs", "started") if k in stored}


def versions_line(study) -> str:
    """"model versions: study {...}, this toolkit {...}": a rerun of a stored simulation (``benchmarks/sbc_rerun.py``)
    samples the model this toolkit builds, which may be newer than the study's."""
    problem = study.problem
    now = model_versions(problem.model_name, with_mrd=getattr(problem, "with_mrd", False))
    return f"model versions: study {study.config.get('model_versions', 'not recorded')}, this toolkit {now}"


def model_versions(model: str, *, with_mrd: bool = False) -> dict[str, str]:
    """``MODEL_VERSION`` of every model module a study of ``model`` fits (the joint model: its submodels too;
    ``with_mrd``: its MRD submodel), so a study is not resumed by a changed model: its stored results belong to
    the model that made them."""
    import importlib

    modules = {"durability": ("durability",), "cart": ("cart",), "mrd": ("mrd",),
               "joint": ("joint", "cart", *(("mrd",) if with_mrd else ()))}
    return {m: importlib.import_module(f"toolkit.models.{m}").MODEL_VERSION for m in modules.get(model, ())}


def record_study_run(path: Path, run: dict) -> None:
    """Append one run's facts (workers, wall time, ...) to the study file's ``runs``."""
    config = json.loads(path.read_text())
    config.setdefault("runs", []).append(run)
    write_study_file(path, config)


def prior_draws(problem, sims: list[int], *, seed: int) -> dict[int, dict]:
    """The prior draws of the given simulations (blocks of PRIOR_BLOCK, seed (study seed, block))."""
    out = {}
    for block in sorted({s // PRIOR_BLOCK for s in sims}):
        thetas = problem.draw_prior(PRIOR_BLOCK, random_seed=[seed, block])
        for s in sims:
            if s // PRIOR_BLOCK == block:
                out[s] = thetas[s % PRIOR_BLOCK]
    return out


# --------------------------------------------------------------------------- Dask


def worker_environment(root: str | Path, name: str) -> dict[str, str]:
    """Environment of one worker: its own PyTensor compile dir and numba cache, one thread.

    PyTensor's compile cache and numba's on-disk cache can race between processes
    (pymc issue 7819), so each worker gets directories of its own.
    """
    root = Path(root)
    return {**THREAD_ENV, "PYTENSOR_FLAGS": f"base_compiledir={root / name / 'pytensor'}",
            "NUMBA_CACHE_DIR": str(root / name / "numba")}


def start_local_cluster(n_workers: int, *, cache_root: str | Path | None = None):
    """A local Dask cluster: ``n_workers`` processes with one thread each and their own compile caches.

    Built as a ``distributed.SpecCluster`` (what ``LocalCluster`` is) so that each
    worker's Nanny can set a *different* environment, before the worker imports
    PyTensor. The caches start empty (``cache_root`` is emptied first): a model compiled
    against a warm cache samples other chains, to the last digit, than one compiled cold
    (the same seed gave min bulk ESS 1,507 against 1,237, CAR-T study simulation 6), so a
    simulation's record depends on the code and the seed only if every worker compiles
    cold (``benchmarks/sbc_rerun.py`` does the same). Returns ``(cluster, client)``.
    """
    import dask
    import shutil
    from distributed import Client, Nanny, Scheduler, SpecCluster

    cache_root = Path(cache_root or Path(tempfile.gettempdir()) / f"toolkit-calibrate-{os.getpid()}")
    shutil.rmtree(cache_root, ignore_errors=True)
    workers = {f"calib-{i}": {"cls": Nanny, "options": {"nthreads": 1, "env": worker_environment(cache_root, f"w{i}"),
                                                         "silence_logs": 50}}
               for i in range(n_workers)}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": THREAD_ENV}):
        cluster = SpecCluster(workers=workers, silence_logs=50,
                              scheduler={"cls": Scheduler, "options": {"dashboard_address": None,
                                                                       "host": "127.0.0.1"}})
    client = Client(cluster)
    client.wait_for_workers(n_workers)
    return cluster, client


def _worker_info() -> dict:
    """Where this worker compiles (reported in study.json so a shared cache would show)."""
    import pytensor

    return {"pid": os.getpid(), "base_compiledir": str(pytensor.config.base_compiledir),
            "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR", ""),
            "threads": {k: os.environ.get(k, "") for k in THREAD_ENV}}


# --------------------------------------------------------------------------- a whole study


class Progress:
    """Count, rate and estimated time left, printed as simulations finish.

    The rate is over the last ``window`` completions, so the one-off start-up
    (cluster, per-worker compile) does not inflate the estimate for long.
    """

    def __init__(self, total: int, *, stream=None, every: float = 2.0, window: int = 50):
        from collections import deque

        self.total, self.done, self.failed, self.unconverged = total, 0, 0, 0
        self.t0, self.last, self.every = time.perf_counter(), 0.0, every
        self.recent = deque([self.t0], maxlen=window + 1)
        self.stream = stream if stream is not None else sys.stderr

    def update(self, record: dict) -> None:
        self.done += 1
        self.failed += record["status"] != "ok"
        self.unconverged += record["status"] == "ok" and not record["converged"]
        now = time.perf_counter()
        self.recent.append(now)
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        span = self.recent[-1] - self.recent[0]
        rate = (len(self.recent) - 1) / span if span > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta = f"{left / 60:.1f} min" if np.isfinite(left) else "?"
        return (f"[{self.done}/{self.total}] {60 * rate:.1f} simulations/min, {elapsed:.0f} s elapsed, "
                f"about {eta} left; {self.failed} failed, {self.unconverged} not converged")


def run_study(problem, n_simulations: int, out: str | Path, *, settings: SamplerSettings | None = None,
              workers: int | None = None, scheduler: str | None = None, resume: bool = False,
              progress: bool | object = True, extensions: int = 0) -> Path:
    """Run (or resume) an SBC study of ``problem`` and store every simulation under ``out``.

    Parameters
    ----------
    problem : a calibration problem (e.g. ``DurabilityCalibration``)
    n_simulations : total number of simulations the study should hold
    out : results folder (``study.json``, ``simulations/``)
    workers : local worker processes (default: one per core); ``0`` runs in this process
    scheduler : address of an existing Dask scheduler (``tcp://host:8786``); overrides ``workers``
    resume : continue a stored study (same problem and settings), running only missing simulations
    progress : print progress lines to stderr (or an object with ``update(record)``)
    extensions : reruns while a fit fails its verdict (the spec's ``extend_sampling``; the rerun policy is
        ``toolkit.inference.RERUN_POLICY``, or the stored one of a resumed study)

    Returns
    -------
    Path of the results folder.
    """
    if n_simulations < 1:
        raise StudyError(f"--simulations must be at least 1, got {n_simulations}")
    if workers is not None and workers < 0:
        raise StudyError(f"--workers must be 0 (in this process) or more, got {workers}")
    settings = settings or study_settings()
    out = Path(out)
    path = out / STUDY_FILE
    # a resumed study keeps the rerun policy it was stored with (one made before December 2026: "doubling")
    policy = (rerun_policy_of(json.loads(path.read_text()).get("settings")) if resume and path.exists()
              else RERUN_POLICY)
    config = {"problem": problem.describe(), "settings": settings_record(settings, extensions, policy),
              "model_versions": model_versions(problem.model_name, with_mrd=getattr(problem, "with_mrd", False)),
              "n_simulations": int(n_simulations),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    previous = open_study(path, config, resume=resume, what="calibration",
                          compare=("problem", "settings", "model_versions"),
                          held=path.exists() or bool(done_simulations(out)))
    write_study_file(path, {**config, **previous})
    todo = [s for s in range(n_simulations) if s not in done_simulations(out)]
    tracker = progress if hasattr(progress, "update") else (Progress(len(todo)) if progress else None)
    if not todo:
        return out
    thetas = prior_draws(problem, todo, seed=settings.random_seed)

    def store(record: dict) -> None:
        _write_atomic(record_frame(record), _sim_path(out, record["sim"]))
        if tracker is not None:
            tracker.update(record)

    t0 = time.perf_counter()
    info = map_tasks(run_simulation, [(problem, s, thetas[s]) for s in todo],
                     kwargs={"settings": settings, "extensions": int(extensions), "policy": policy},
                     on_result=store, on_error=lambda item, err: {
                         "sim": item[1], "status": "error", "error": err, "worker_pid": -1, "converged": False,
                         "quantities": {}},
                     workers=workers, scheduler=scheduler, cache_root=out / ".worker-caches", broadcast_first=True)
    record_study_run(out / STUDY_FILE, {**info, "wall_seconds": time.perf_counter() - t0})
    return out


def map_tasks(fn, items: list[tuple], *, kwargs: dict, on_result, on_error, workers: int | None = None,
              scheduler: str | None = None, cache_root: str | Path | None = None, broadcast_first: bool = False) -> dict:
    """Run ``fn(*item, **kwargs)`` for every item, in this process (``workers=0``) or on Dask.

    Results are handed to ``on_result`` as they arrive (in completion order); a task
    whose worker died is handed to ``on_error(item, message)`` and then to
    ``on_result``, and the rest go on. With ``broadcast_first`` the first element of
    every item (the same problem object) is sent to each worker once. Returns a
    description of the executor (and of each worker's compile directories).
    """
    if scheduler is None and workers == 0:
        for item in items:
            on_result(fn(*item, **kwargs))
        return {"executor": "in-process"}
    from distributed import Client, as_completed

    cluster = None
    if scheduler is not None:
        from toolkit.calibration.worker import SetupWorkerCaches

        client = Client(scheduler)
        client.register_plugin(SetupWorkerCaches())
    else:
        cluster, client = start_local_cluster(workers or os.cpu_count() or 1, cache_root=cache_root)
    try:
        info = client.run(_worker_info)
        if broadcast_first and items:
            shared = client.scatter(items[0][0], broadcast=True)
            items_sent = [(shared, *item[1:]) for item in items]
        else:
            items_sent = items
        futures = {client.submit(fn, *sent, **kwargs, pure=False): item for sent, item in zip(items_sent, items)}
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - e.g. a worker that died: recorded, the rest go on
                result = on_error(futures[future], f"{type(exc).__name__}: {exc}")
            on_result(result)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return {"executor": scheduler or f"local cluster, {len(info)} workers", "workers": list(info.values())}
