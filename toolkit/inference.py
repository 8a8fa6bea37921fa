"""Fitting machinery shared by every model: sampling, diagnostics, run folders.

Public API
----------
SamplerSettings
    Frozen sampler configuration (backend, chains, tune, draws, ...).
sample(model, settings, *, log_likelihood=True) -> xarray.DataTree
    Draw the posterior. Wall times are stored in ``dt.attrs`` (see ``sample``).
sampler_metadata(dt), jax_chain_method(chains)
    How a fit was sampled (chain method, start jitter, device); how the JAX backend runs chains.
Diagnostics, diagnose(dt, ...)
    R-hat, bulk/tail ESS, divergences, E-BFMI and a plain-English problem list.
save_run / load_run / Run
    Atomic run-folder I/O (``posterior.nc``, ``summary.json``, ``provenance.json``,
    ``figures/``, sealed by ``manifest.json``); ``check_run_destination`` checks an
    output path before any work, ``recover_run`` finishes an interrupted save.
build_provenance, hash_folder
    Provenance record and the cohort data hash.
clear_compile_cache, compile_cache_size
    Inspect / reset the in-process nutpie compile cache (the only module state).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import platform
import shutil
import warnings
import signal
import stat
import sys
import tempfile
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pymc as pm
import pytensor
import xarray as xr

from toolkit.summary import Summary
from toolkit.verdict import BFMI_MIN, ESS_MIN, RHAT_MAX  # noqa: F401 - the verdict's thresholds, also read from here

# Stage messages of a fit ("compiling", "sampling"); silent unless a caller (e.g. `toolkit analyze`)
# attaches a handler.
PROGRESS = logging.getLogger("toolkit.progress")

__all__ = [
    "BACKENDS",
    "backend_unavailable",
    "Diagnostics",
    "Run",
    "ResultMethods",
    "RunFolderError",
    "SamplerSettings",
    "build_provenance",
    "check_run_destination",
    "check_writable_destination",
    "clear_compile_cache",
    "compile_cache_size",
    "diagnose",
    "hash_folder",
    "jax_chain_method",
    "load_run",
    "max_treedepth_share",
    "recover_run",
    "sample",
    "sampler_metadata",
    "save_run",
    "verify_run",
]

BACKENDS = ("nutpie", "pymc", "numpyro")
# nutpie's mass-matrix adaptation (``nutpie.sample(adaptation=...)``); the other backends adapt a diagonal only
ADAPTATIONS = ("diag", "low_rank")
# how nutpie calls the log density: its numba C callback, or PyTensor's numba function from Python
LOGP_CALLBACKS = ("numba", "python")

RUN_FILES = ("posterior.nc", "summary.json", "provenance.json")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "toolkit-run-manifest/1"
# Scratch siblings of RUN: ".RUN.tmp-<pid>-<ns>-<random>" (being written), ".RUN.old-<pid>-<ns>" (moved aside).
_TMP_MARK = ".tmp-"
_OLD_MARK = ".old-"
FAULT_ENV = "TOOLKIT_FAULT_POINT"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SamplerSettings:
    """Sampler configuration.

    Parameters
    ----------
    backend : {"nutpie", "pymc", "numpyro"}
        NUTS implementation. ``"numpyro"`` (the JAX backend, CPU or GPU) needs the ``jax`` extra
        (``pip install numpyro jax``); its chains start from their own jittered points and run
        vectorized on one device (see :func:`jax_chain_method`).
    chains, tune, draws : int
        Number of chains, warm-up iterations and kept draws per chain.
    target_accept : float
        Target acceptance rate of step-size adaptation, in (0, 1).
    random_seed : int
        Seed passed to the sampler.
    progressbar : bool
        Show a progress bar.
    cores : int
        Chains run in parallel (PyMC and nutpie).
    adaptation : {"diag", "low_rank"}
        Mass-matrix adaptation (nutpie only): ``"diag"``, nutpie's diagonal from draw and gradient
        variances; ``"low_rank"``, a diagonal plus a low-rank correction for the strongest posterior
        correlations (nutpie's low-rank modified mass matrix; each leapfrog step then costs a few
        extra vector products). Another backend refuses ``"low_rank"``.
    logp_callback : {"numba", "python"}
        How nutpie calls the log density and its gradient (nutpie only). ``"numba"``: nutpie's numba C
        callback, fastest per gradient, but numba rebuilds it in every new process (10-20 s on 2 cores,
        whatever the caches hold). ``"python"``: PyTensor's numba-compiled logp+gradient function, which
        PyTensor caches on disk (``base_compiledir``), called from Python: a warm process compiles in
        about 1-2 s, but every gradient pays a Python call and holds the GIL, so chains take turns.
        For small models (durability), where compilation dominates.
    """

    backend: str = "nutpie"
    chains: int = 4
    tune: int = 1000
    draws: int = 1000
    target_accept: float = 0.9
    random_seed: int = 20261125
    progressbar: bool = True
    cores: int = 2
    adaptation: str = "diag"
    logp_callback: str = "numba"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"unknown backend {self.backend!r}; valid backends are: {', '.join(BACKENDS)}"
            )
        for name in ("chains", "draws", "cores"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if int(self.tune) < 0:
            raise ValueError(f"tune must be >= 0, got {self.tune!r}")
        if not 0.0 < float(self.target_accept) < 1.0:
            raise ValueError(f"target_accept must be in (0, 1), got {self.target_accept!r}")
        if self.adaptation not in ADAPTATIONS:
            raise ValueError(f"unknown adaptation {self.adaptation!r}; valid: {', '.join(ADAPTATIONS)}")
        if self.adaptation != "diag" and self.backend != "nutpie":
            raise ValueError(f"adaptation {self.adaptation!r} needs backend 'nutpie' (backend {self.backend!r} "
                             "adapts a diagonal mass matrix only); use adaptation = \"diag\" or backend = \"nutpie\"")
        if self.logp_callback not in LOGP_CALLBACKS:
            raise ValueError(f"unknown logp_callback {self.logp_callback!r}; valid: {', '.join(LOGP_CALLBACKS)}")
        if self.logp_callback != "numba" and self.backend != "nutpie":
            raise ValueError(f"logp_callback {self.logp_callback!r} is a nutpie setting and backend is "
                             f"{self.backend!r}; use backend = \"nutpie\" or leave logp_callback out")

    def as_dict(self) -> dict[str, Any]:
        """Return the settings as a plain JSON-able dict."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- nutpie cache

# The only module-level state: compiled nutpie models keyed by a structural fingerprint.
_NUTPIE_CACHE: OrderedDict[str, Any] = OrderedDict()
_NUTPIE_CACHE_MAX = 16


def clear_compile_cache() -> None:
    """Empty the in-process nutpie compile cache."""
    _NUTPIE_CACHE.clear()


def compile_cache_size() -> int:
    """Number of compiled nutpie models held in the in-process cache."""
    return len(_NUTPIE_CACHE)


def _update_array(h: "hashlib._Hash", value: Any) -> None:
    arr = np.ascontiguousarray(np.asarray(value))
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    if arr.dtype == object:
        h.update(repr(arr.tolist()).encode())
    else:
        h.update(arr.tobytes())


def _model_fingerprint(model: pm.Model) -> str:
    """Structural hash of a model: what nutpie bakes into its compiled functions.

    Covers the logp and deterministic graphs (text with types), the *values* of
    every constant in them (observed numpy data are constants, and ``dprint``
    abbreviates large arrays, so they are hashed separately), the name, type and
    shape of every shared variable (``pm.Data``; values are swapped in with
    ``with_data`` on a cache hit), coords, dims, transforms and initial values.
    """
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.basic import Constant
    from pytensor.graph.traversal import ancestors

    outputs = [model.logp(), *model.replace_rvs_by_values(model.deterministics)]
    h = hashlib.sha256()
    h.update(pytensor.dprint(outputs, file="str", print_type=True).encode())
    shared_seen: set[str] = set()
    for var in ancestors(outputs):
        if isinstance(var, Constant):
            h.update(b"C")
            _update_array(h, var.data)
        elif isinstance(var, SharedVariable):
            value = np.asarray(var.get_value(borrow=True))
            h.update(f"S{var.name}|{var.type}|{value.shape}".encode())
            shared_seen.add(str(var.name))
    for name in sorted(model.coords):
        h.update(f"coord:{name}".encode())
        values = model.coords[name]
        _update_array(h, np.asarray(values if values is not None else [], dtype=object))
    h.update(repr(sorted(model.named_vars_to_dims.items())).encode())
    for rv in model.free_RVs:
        transform = model.rvs_to_transforms.get(rv)
        h.update(f"rv:{rv.name}|{type(transform).__name__}".encode())
        initval = model.rvs_to_initial_values.get(rv)
        h.update(repr(initval).encode() if not isinstance(initval, np.ndarray) else b"")
        if isinstance(initval, np.ndarray):
            _update_array(h, initval)
    return h.hexdigest()


def _compile_python_callback(model: pm.Model) -> Any:
    """A nutpie model whose log density is PyTensor's numba function, called from Python.

    The same functions nutpie's own PyMC compiler builds (its ``_make_functions``, which
    also serves its JAX backend through ``from_pyfunc``), with mode ``NUMBA``: PyTensor
    caches their machine code on disk, so a new process loads them in about a second;
    only nutpie's C wrapper, which numba cannot cache, is left out.
    """
    from nutpie.compile_pymc import _make_functions, _prepare_dims_and_coords, _wrap_with_lock
    from nutpie.compiled_pyfunc import from_pyfunc
    from pymc.initial_point import make_initial_point_fn

    # as nutpie.compile_pymc_model: support-point start, jittered by the sampler
    point_fn = _wrap_with_lock(make_initial_point_fn(model=model, default_strategy="support_point",
                                                     jitter_rvs=set(model.free_RVs), return_transformed=True))
    n_dim, _, logp_pt, expand_pt, flat_point_fn, shape_info, reparameterized = _make_functions(
        model, mode="NUMBA", compute_grad=True, join_expanded=False, pymc_initial_point_fn=point_fn)
    logp_fn, expand_fn = logp_pt.vm.jit_fn, expand_pt.vm.jit_fn
    logp_names = [v.name for v in logp_pt.get_shared()]
    expand_names = [v.name for v in expand_pt.get_shared()]
    shared = {v.name: np.asarray(v.get_value()) for v in [*logp_pt.get_shared(), *expand_pt.get_shared()]}
    names, _slices, shapes = shape_info
    dtypes = [np.dtype("float64")] * len(names)

    def make_logp_func():
        def logp(x, **data):
            value, grad = logp_fn(x, *[data[n] for n in logp_names])
            return float(value), np.asarray(grad, dtype="float64", order="C")

        return logp

    def make_expand_func(seed1, seed2, chain):
        def expand(x, **data):
            values = expand_fn(x, *[data[n] for n in expand_names])
            return {n: np.asarray(v, order="C", dtype=d).reshape(shape)
                    for n, v, d, shape in zip(names, values, dtypes, shapes, strict=True)}

        return expand

    dims, coords = _prepare_dims_and_coords(model, shape_info, reparameterized)
    return from_pyfunc(ndim=n_dim, make_logp_fn=make_logp_func, make_expand_fn=make_expand_func,
                       make_initial_point_fn=flat_point_fn, expanded_dtypes=dtypes, expanded_shapes=shapes,
                       expanded_names=names, shared_data=shared, dims=dims, coords=coords,
                       reparameterized_names=reparameterized)


def _nutpie_compiled(model: pm.Model, logp_callback: str = "numba") -> tuple[Any, bool]:
    """Return ``(compiled_model, cache_hit)``; data values are refreshed on a hit."""
    import nutpie

    key = f"{logp_callback}:{_model_fingerprint(model)}"
    compiled = _NUTPIE_CACHE.get(key)
    if compiled is None:
        PROGRESS.info(f"compiling the model (nutpie, {logp_callback} log-density callback)")
        compiled = nutpie.compile_pymc_model(model) if logp_callback == "numba" else _compile_python_callback(model)
        _NUTPIE_CACHE[key] = compiled
        while len(_NUTPIE_CACHE) > _NUTPIE_CACHE_MAX:
            _NUTPIE_CACHE.popitem(last=False)
        return compiled, False
    _NUTPIE_CACHE.move_to_end(key)
    # Same structure and shapes, but pm.Data values may differ: swap them in.
    updates = {}
    names = ([var.name for var in compiled.shared_var_keys] if hasattr(compiled, "shared_var_keys")
             else list(compiled._shared_data))  # a from_pyfunc model keys its data by name
    for name in names:
        current = model.named_vars.get(name)
        if current is not None and hasattr(current, "get_value"):
            updates[name] = current.get_value()
    if updates:
        compiled = compiled.with_data(**updates)
    return compiled, True


# --------------------------------------------------------------------------- sampling


def _sample_nutpie(model: pm.Model, settings: SamplerSettings) -> tuple[xr.DataTree, dict]:
    import nutpie
    from pymc.backends.arviz import patch_nutpie_idata

    t0 = time.perf_counter()
    compiled, hit = _nutpie_compiled(model, settings.logp_callback)
    t1 = time.perf_counter()
    PROGRESS.info(f"sampling: {settings.chains} chains x ({settings.tune} tuning + {settings.draws} draws)")
    dt = nutpie.sample(
        compiled,
        draws=settings.draws,
        tune=max(int(settings.tune), 1),  # nuts-rs panics on tune == 0
        chains=settings.chains,
        cores=settings.cores,
        seed=int(settings.random_seed),
        save_warmup=False,
        progress_bar=settings.progressbar,
        target_accept=settings.target_accept,
        adaptation=settings.adaptation,
    )
    t2 = time.perf_counter()
    # Adds observed_data / constant_data groups (nutpie does not).
    patch_nutpie_idata(dt, model, sampling_time=t2 - t1)
    return dt, {
        "compile_seconds": t1 - t0,
        "sampling_seconds": t2 - t1,
        "compile_cache_hit": int(hit),
    }


class NutpieRun:
    """One nutpie run of up to ``max_draws`` draws a chain, read at checkpoints and continued.

    ``first(n)`` waits until every chain has ``n`` draws after tuning, pauses the run and returns the first ``n``
    draws of every chain: the same draws as a run of ``n`` draws with this seed (a nutpie chain's draws do not
    depend on how many were asked for; ``tests/test_inference.py``). ``resume()`` continues it, ``stop()``
    ends it. The chains run side by side, one thread each (nutpie runs chains in their order when it has fewer
    threads than chains, so the first would finish all ``max_draws`` before the last started); a checkpoint
    waits for the slowest chain, and the draws the others made beyond it are kept for the next checkpoint.
    ``finish(dt, sampling_seconds)`` makes what the caller returns (the run's own draws, sliced). nutpie's
    progress bar, when asked for, counts to ``max_draws``; the run stops at the checkpoint that passes.
    """

    def __init__(self, compiled, *, chains: int, tune: int, max_draws: int, seed: int, target_accept: float,
                 adaptation: str = "diag", finish: Callable | None = None, progress_bar: bool = False):
        import threading

        import nutpie

        self.tune, self.max_draws = max(int(tune), 1), int(max_draws)  # nuts-rs panics on tune == 0
        self._finish = finish or _with_sampling_seconds
        self._progress = threading.Condition()
        self._final = None
        self._least = 0  # draws after tuning that every chain has made
        self._seconds, self._since = 0.0, time.perf_counter()
        self._sampler = nutpie.sample(compiled, draws=self.max_draws, tune=self.tune, chains=int(chains),
                                      cores=int(chains), seed=int(seed), save_warmup=False,
                                      progress_bar=bool(progress_bar),
                                      target_accept=float(target_accept), adaptation=adaptation, blocking=False,
                                      progress_callback=self._on_progress, progress_rate=50)

    def _on_progress(self, chains) -> None:
        with self._progress:
            self._least = min(int(c.finished_draws) for c in chains) - self.tune
            self._progress.notify_all()

    def first(self, n: int):
        """The first ``n`` draws of every chain (waits for them; the run is paused until ``resume``)."""
        if not 0 < n <= self.max_draws:
            self.stop()  # a caller's mistake: the run is not left sampling behind the error
            raise ValueError(f"a checkpoint must lie in 1..{self.max_draws} draws, got {n}")
        # nutpie calls ``_on_progress`` holding its own lock, so its state is asked outside ours
        while not self._reached(n) and not self._finished():
            pass
        if self._final is not None or self._finished():
            if self._final is None:  # every draw is made: take them once (raises the sampler's error, if any)
                self._seconds += time.perf_counter() - self._since
                self._final = self._sampler.wait()
            dt = self._final
        else:
            self._sampler.pause()
            self._seconds += time.perf_counter() - self._since
            dt = self._sampler.inspect()
        made = self._draws_made(dt)
        dt = dt.isel(draw=slice(0, n), missing_dims="ignore")
        if int(dt["posterior"].sizes["draw"]) < n or any(
                bool(np.isnan(v.values).any()) for v in dt["posterior"].data_vars.values() if v.dtype.kind == "f"):
            raise RuntimeError(f"nutpie returned fewer than {n} draws in a chain")  # a broken promise, not bad data
        dt = self._finish(dt, self._seconds)
        dt.attrs["draws_made"] = made  # by all chains so far: the checkpoint's and those the faster chains made past it
        return dt

    @staticmethod
    def _draws_made(dt) -> int:
        """Draws after tuning the chains have made (nutpie pads a chain's draws still to come with NaN)."""
        values = next((v for v in dt["posterior"].data_vars.values() if v.dtype.kind == "f"), None)
        if values is None:
            return int(dt["posterior"].sizes["chain"] * dt["posterior"].sizes["draw"])
        drawn = ~np.isnan(values.transpose("chain", "draw", ...).values.reshape(
            values.sizes["chain"], values.sizes["draw"], -1)).all(axis=2)
        return int(drawn.sum())

    def _reached(self, n: int) -> bool:
        with self._progress:
            if self._least < n:
                self._progress.wait(timeout=0.5)
            return self._least >= n

    def _finished(self) -> bool:
        try:
            return bool(self._sampler.is_finished)
        except TimeoutError:  # nutpie's lock was busy: it is still sampling
            return False

    def resume(self) -> None:
        """Continue the paused run."""
        self._since = time.perf_counter()
        self._sampler.resume()

    def stop(self) -> None:
        """End the run and free its threads (what was drawn beyond the last checkpoint is dropped)."""
        if self._final is None and not self._finished():
            self._sampler.cancel()


def _with_sampling_seconds(dt, seconds: float):
    dt.attrs["sampling_seconds"] = float(seconds)
    return dt


def _split_pymc_time(dt: xr.DataTree, total: float) -> dict:
    sampling = float(dt.posterior.attrs.get("sampling_time", total))
    sampling = min(sampling, total)
    return {"compile_seconds": total - sampling, "sampling_seconds": sampling}


def _sample_pymc(model: pm.Model, settings: SamplerSettings) -> tuple[xr.DataTree, dict]:
    t0 = time.perf_counter()
    PROGRESS.info(f"compiling and sampling (PyMC NUTS): {settings.chains} chains x ({settings.tune} tuning + "
                  f"{settings.draws} draws)")
    dt = pm.sample(
        draws=settings.draws,
        tune=settings.tune,
        chains=settings.chains,
        # JAX (imported by the numpyro backend earlier in this process) is multithreaded, so forking worker
        # processes may deadlock; then chains run in turn (forkserver/spawn would re-import an unguarded script)
        cores=1 if "jax" in sys.modules else settings.cores,
        random_seed=settings.random_seed,
        target_accept=settings.target_accept,
        progressbar=settings.progressbar,
        nuts_sampler="pymc",
        compute_convergence_checks=False,
        model=model,
    )
    return dt, _split_pymc_time(dt, time.perf_counter() - t0)


def backend_unavailable(backend: str) -> str | None:
    """Why ``backend`` cannot run in this environment, with the fix; ``None`` when it can."""
    if backend != "numpyro":
        return None
    missing = [m for m in ("jax", "numpyro") if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (f"backend 'numpyro' needs {' and '.join(missing)}, which is not installed; "
            "run `pip install numpyro jax` (or install the toolkit's `jax` extra) or use backend 'nutpie'")


# JAX compile phases reported by jax.monitoring (tracing, lowering to MLIR, XLA compilation)
_JAX_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                       "/jax/core/compile/backend_compile_duration")
NUMPYRO_MAX_TREE_DEPTH = 10  # numpyro's default, stated so the saturation flag below can be derived


def jax_chain_method(chains: int) -> tuple[str, int, str]:
    """How numpyro runs ``chains`` chains here: ``(chain_method, devices, platform)``.

    ``"parallel"`` (one chain per device, ``pmap``) when there are at least as many accelerator
    devices as chains; else ``"vectorized"`` (``vmap``: one compiled program advances every chain,
    the fast path on a single GPU). On the CPU the host counts as one device: importing
    ``pymc.sampling.jax`` splits it into 100 virtual XLA devices, which share the same cores.
    """
    import jax

    platform = jax.default_backend()
    devices = 1 if platform == "cpu" else jax.local_device_count()
    method = "parallel" if chains > 1 and devices >= chains else "vectorized"
    return method, devices, platform


def jax_compile_cache() -> str:
    """Keep JAX's compiled programs on disk so a new process reuses them; returns the folder.

    JAX's persistent compilation cache, in ``<PyTensor's compiledir>/jax`` (PyTensor's own cache, which
    ``PYTENSOR_FLAGS=base_compiledir=...`` moves), unless the user chose a folder for JAX
    (``JAX_COMPILATION_CACHE_DIR``). The key is the whole compiled program, data included: a re-fit of the
    same model to the same data skips XLA compilation, a new cohort compiles afresh.
    """
    import jax

    folder = jax.config.jax_compilation_cache_dir
    if not folder:
        folder = str(Path(pytensor.config.compiledir) / "jax")
        jax.config.update("jax_compilation_cache_dir", folder)
    return folder


def _jax_potential(model: pm.Model) -> tuple[Callable, str]:
    """Potential energy U(x) = -log p(x) as a JAX function whose gradient is PyTensor's.

    Returns ``(potential, gradient)``, ``gradient`` naming where the gradient comes from. ``x`` is the
    list of unconstrained value arrays (``model.value_vars`` order). JAX's own reverse mode through
    ``switch`` (``jnp.where``) multiplies the zero cotangent of the branch not taken by that branch's
    derivative, which is inf or NaN where the branch overflows (e.g. ``erfcx`` in the censored log-CDF,
    far below the limit): the whole gradient becomes NaN and numpyro's step-size search collapses (a
    chain stuck at its start). PyTensor's symbolic gradient, with its stabilising rewrites (the one
    nutpie uses), is finite there, so it is compiled to JAX alongside the log density and supplied as
    a custom VJP (``"pytensor"``). The value variables are given their static shapes first: JAX needs
    concrete shapes, and some gradient graphs (the MRD model's) otherwise compute a shape from a
    traced value. Should a graph still not trace, JAX differentiates the log density (``"jax"``).
    """
    import jax
    import pytensor.tensor as pt
    from pymc.sampling.jax import get_jaxified_graph
    from pytensor.graph.replace import graph_replace

    start = model.initial_point()
    static = [pt.tensor(dtype=v.dtype, shape=np.shape(start[v.name]), name=v.name) for v in model.value_vars]
    (logp,) = graph_replace([model.logp()], dict(zip(model.value_vars, static, strict=True)), strict=False)
    logp_fn = get_jaxified_graph(inputs=static, outputs=[logp])
    logp_dlogp_fn = get_jaxified_graph(inputs=static, outputs=[logp, *pytensor.grad(logp, static)])

    def plain(x):
        return -logp_fn(*x)[0]

    try:
        jax.eval_shape(lambda x: logp_dlogp_fn(*x), [np.asarray(start[v.name]) for v in model.value_vars])
    except Exception:  # noqa: BLE001 - any tracing failure: JAX's own gradient still samples
        return plain, "jax"

    potential = jax.custom_vjp(plain)

    def forward(x):
        value, *grads = logp_dlogp_fn(*x)
        return -value, grads

    def backward(grads, cotangent):
        return ([-cotangent * g for g in grads],)

    potential.defvjp(forward, backward)
    return potential, "pytensor"


def _numpyro_initial_points(model: pm.Model, chains: int, seed: int, potential: Callable | None) -> list:
    """One start per chain: the model's initial point plus U(-1, 1) jitter on the unconstrained scale.

    PyMC's jitter (the same as its own NUTS and nutpie), each chain from its own seed drawn from
    ``seed``; a start whose log density or gradient is not finite is redrawn (up to 10 times).
    Returns one array per value variable, chains first (no chain axis when ``chains == 1``).
    """
    import jax
    import jax.numpy as jnp
    from pymc.sampling.jax import _get_batched_jittered_initial_points

    check = None
    if potential is not None:
        value_and_grad = jax.jit(jax.value_and_grad(potential))

        def check(values: list) -> float:  # PyMC passes the point's values, in value_vars order
            value, grads = value_and_grad(values)
            finite = bool(jnp.isfinite(value)) and all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
            return -float(value) if finite else -math.inf

    return _get_batched_jittered_initial_points(model=model, chains=chains, initvals=None, random_seed=seed,
                                                logp_fn=check, jitter=True)


class _JaxCompileClock:
    """Seconds JAX spends tracing, lowering and compiling while the block runs (``jax.monitoring``)."""

    def __enter__(self):
        import jax.monitoring

        self.seconds = 0.0

        def listener(event, duration, **kwargs):
            if event in _JAX_COMPILE_EVENTS:
                self.seconds += float(duration)

        self._listener = listener
        jax.monitoring.register_event_duration_secs_listener(listener)
        return self

    def __exit__(self, *exc):
        import jax.monitoring

        jax.monitoring.unregister_event_duration_listener(self._listener)
        return False


def _sample_numpyro(model: pm.Model, settings: SamplerSettings) -> tuple[xr.DataTree, dict]:
    """numpyro's NUTS on the model's JAX log density, through PyMC's JAX helpers.

    Every chain starts from its own jittered point (:func:`_numpyro_initial_points`); chains run
    vectorized on one device or in parallel across devices (:func:`jax_chain_method`); the
    gradient is PyTensor's (:func:`_jax_potential`). ``compile_seconds`` is the graph set-up and
    start search plus the JAX compile time reported during sampling; ``sampling_seconds`` the rest.
    """
    problem = backend_unavailable("numpyro")
    if problem:
        raise RuntimeError(problem)
    t0 = time.perf_counter()
    import jax
    from arviz_base import from_dict, make_attrs
    from pymc.backends.arviz import coords_and_dims_for_inferencedata, find_constants, find_observations
    from pymc.sampling.jax import _postprocess_samples, _sample_numpyro_nuts, get_jaxified_graph
    from pymc.util import _get_seeds_per_chain, get_default_varnames

    jax_compile_cache()
    chain_method, devices, platform = jax_chain_method(settings.chains)
    PROGRESS.info(f"compiling the model (numpyro, JAX on {platform}, chains {chain_method})")
    (seed,) = _get_seeds_per_chain(int(settings.random_seed), 1)
    with _JaxCompileClock() as setup_clock:
        potential, gradient = _jax_potential(model)
        initial_points = _numpyro_initial_points(model, settings.chains, seed, potential)
    t1 = time.perf_counter()
    PROGRESS.info(f"sampling: {settings.chains} chains x ({settings.tune} tuning + {settings.draws} draws)")
    with _JaxCompileClock() as run_clock:
        raw, stats, numpyro = _sample_numpyro_nuts(
            model=model, target_accept=settings.target_accept, tune=settings.tune, draws=settings.draws,
            chains=settings.chains, chain_method=chain_method, progressbar=settings.progressbar, random_seed=seed,
            initial_points=initial_points, nuts_kwargs={"max_tree_depth": NUMPYRO_MAX_TREE_DEPTH},
            logp_fn=potential)
        jax.block_until_ready(raw)
    t2 = time.perf_counter()
    # numpyro builds at most 2**depth - 1 leapfrog steps; a full tree means the trajectory was cut there
    stats["reached_max_treedepth"] = np.asarray(stats["n_steps"]) >= 2**NUMPYRO_MAX_TREE_DEPTH - 1
    names = list(get_default_varnames(model.unobserved_value_vars, include_transformed=False))
    values = _postprocess_samples(get_jaxified_graph(inputs=model.value_vars, outputs=names), raw,
                                  postprocessing_vectorize="vmap", donate_samples=True)
    coords, dims = coords_and_dims_for_inferencedata(model)
    groups = {"posterior": {v.name: np.asarray(x) for v, x in zip(names, values, strict=True)},
              "sample_stats": {k: np.asarray(v) for k, v in stats.items()}}
    for group, found in (("observed_data", find_observations(model)), ("constant_data", find_constants(model))):
        if found:
            groups[group] = found
    dt = from_dict(data=groups, coords=coords, dims=dims, sample_dims=["chain", "draw"],
                   attrs={"posterior": make_attrs({"sampling_time": t2 - t1, "tuning_steps": settings.tune},
                                                  inference_library=numpyro)})
    compile_in_run = min(run_clock.seconds, t2 - t1)
    return dt, {
        "compile_seconds": (t1 - t0) + compile_in_run,
        "sampling_seconds": (t2 - t1) - compile_in_run,
        "attrs": {"chain_method": chain_method, "init_jitter": 1, "jax_platform": platform, "jax_devices": devices,
                  "jax_gradient": gradient, "jax_compile_seconds": float(setup_clock.seconds + run_clock.seconds)},
    }


# dt.attrs that describe how the sampler ran (beyond SamplerSettings); copied into a run's provenance
SAMPLER_ATTRS = ("backend", "chain_method", "init_jitter", "jax_platform", "jax_devices", "jax_gradient",
                 "jax_compile_seconds")


def sampler_metadata(dt: xr.DataTree) -> dict[str, Any]:
    """How the sampler ran, from ``dt.attrs`` (the :data:`SAMPLER_ATTRS` present)."""
    return {k: dt.attrs[k] for k in SAMPLER_ATTRS if k in dt.attrs}


_SAMPLERS = {"nutpie": _sample_nutpie, "pymc": _sample_pymc, "numpyro": _sample_numpyro}


def sample(
    model: pm.Model, settings: SamplerSettings, *, log_likelihood: bool = True
) -> xr.DataTree:
    """Draw the posterior of ``model`` with the backend named in ``settings``.

    Parameters
    ----------
    model : pm.Model
    settings : SamplerSettings
    log_likelihood : bool
        Add a ``log_likelihood`` group (pointwise, for LOO) after sampling.

    Returns
    -------
    xarray.DataTree
        Groups ``posterior``, ``sample_stats``, ``observed_data``,
        ``constant_data`` (when the model has ``pm.Data``) and ``log_likelihood``
        (when requested). Wall times live in ``dt.attrs`` (seconds, floats):
        ``compile_seconds`` (nutpie: compile or cache lookup; pymc: total minus the sampler's
        own ``sampling_time``, i.e. compile + init; numpyro: graph set-up, start search and the
        JAX compile time measured while sampling),
        ``sampling_seconds``, ``log_likelihood_seconds``, ``total_seconds``; plus
        ``backend`` (str) and ``compile_cache_hit`` (int 0/1, nutpie only). The numpyro backend adds
        ``chain_method`` ("vectorized" or "parallel"), ``init_jitter`` (1: every chain started from
        its own jittered point), ``jax_platform``, ``jax_devices``, ``jax_gradient`` ("pytensor", or
        "jax" where PyTensor's gradient graph did not trace) and ``jax_compile_seconds`` (the JAX
        compile time inside ``compile_seconds``): see :data:`SAMPLER_ATTRS`.
    """
    if not isinstance(settings, SamplerSettings):
        raise TypeError("settings must be a SamplerSettings")
    t0 = time.perf_counter()
    dt, timings = _SAMPLERS[settings.backend](model, settings)
    return _finish_posterior(model, dt, settings, timings, log_likelihood=log_likelihood, started=t0)


def open_nutpie_run(model: pm.Model, settings: SamplerSettings, max_draws: int, *,
                    log_likelihood: bool = True) -> NutpieRun:
    """A :class:`NutpieRun` of ``model`` at ``settings`` (its seed, tuning, target_accept, adaptation) with up to
    ``max_draws`` draws a chain, whose checkpoints come back as :func:`sample` returns a posterior."""
    from pymc.backends.arviz import patch_nutpie_idata

    t0 = time.perf_counter()
    compiled, hit = _nutpie_compiled(model, settings.logp_callback)
    compile_seconds = time.perf_counter() - t0
    PROGRESS.info(f"sampling: {settings.chains} chains x ({settings.tune} tuning + up to {max_draws} draws, "
                  "judged at checkpoints)")

    def finish(dt: xr.DataTree, seconds: float) -> xr.DataTree:
        patch_nutpie_idata(dt, model, sampling_time=seconds)
        timings = {"compile_seconds": compile_seconds, "sampling_seconds": seconds, "compile_cache_hit": int(hit)}
        return _finish_posterior(model, dt, settings, timings, log_likelihood=log_likelihood,
                                 started=time.perf_counter() - seconds - compile_seconds)

    return NutpieRun(compiled, chains=settings.chains, tune=settings.tune, max_draws=max_draws,
                     seed=int(settings.random_seed), target_accept=settings.target_accept,
                     adaptation=settings.adaptation, finish=finish, progress_bar=settings.progressbar)


def _finish_posterior(model: pm.Model, dt: xr.DataTree, settings: SamplerSettings, timings: dict, *,
                      log_likelihood: bool, started: float) -> xr.DataTree:
    """What :func:`sample` adds to a backend's draws: the pointwise log-likelihood and the wall-time attrs."""
    t0 = started
    # nutpie/numpyro paths always add constant_data; keep it only when it has pm.Data.
    if "constant_data" in dt.children and not dt["constant_data"].to_dataset().data_vars:
        del dt["constant_data"]
    t_ll = 0.0
    if log_likelihood:
        t1 = time.perf_counter()
        PROGRESS.info("computing the pointwise log-likelihood (for PSIS-LOO)")
        with warnings.catch_warnings():
            # the CAR-T likelihood's dimension is ``sample`` (one qPCR sample, a name stored in run folders
            # and read by users' scripts); ArviZ 1 warns because it names stacked draws so, which the toolkit never does
            warnings.filterwarnings("ignore", message="Found dimension named 'sample'", category=UserWarning)
            dt = pm.compute_log_likelihood(dt, model=model, extend_inferencedata=True, progressbar=False)
        t_ll = time.perf_counter() - t1
    # netCDF attributes cannot be bool or None: floats, ints and str only.
    dt.attrs.update(
        {
            "backend": settings.backend,
            "compile_seconds": float(timings["compile_seconds"]),
            "sampling_seconds": float(timings["sampling_seconds"]),
            "log_likelihood_seconds": float(t_ll),
            "total_seconds": float(time.perf_counter() - t0),
            "compile_cache_hit": int(timings.get("compile_cache_hit", 0)),
        }
        | timings.get("attrs", {})
    )
    return dt


# --------------------------------------------------------------------------- diagnostics


@dataclass
class Diagnostics:
    """Convergence summary of one fit; see :func:`diagnose`."""

    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    divergences: int
    min_bfmi: float
    converged: bool
    problems: list[str] = field(default_factory=list)
    # share of kept draws whose trajectory stopped at the sampler's maximum tree depth (NaN: not recorded)
    max_treedepth_share: float = math.nan
    # the statistics behind max_rhat and the minimum ESS, one row per varying element (:func:`element_rows`'
    # tuples); None where the Diagnostics were not made by :func:`diagnose`. Not part of :meth:`as_dict`.
    elements: list[tuple[str, int, float, float, float]] | None = field(default=None, repr=False, compare=False)

    def elements_pass(self, names, *, rhat_max: float = RHAT_MAX, ess_min: float = ESS_MIN) -> bool:
        """Whether every varying element of the variables ``names`` passed R-hat and both ESS thresholds, from the
        statistics the verdict computed (no second computation; NaN R-hat, one chain, passes)."""
        if self.elements is None:
            raise ValueError("these Diagnostics hold no per-element statistics (not made by diagnose)")
        names = set(names)
        return all(not (rhat > rhat_max) and not (bulk < ess_min) and not (tail < ess_min)
                   for name, _, rhat, bulk, tail in self.elements if name in names)

    @property
    def divergences_only(self) -> bool:
        """The fit failed on divergences alone: R-hat, ESS, E-BFMI and tree depth passed."""
        return self.divergences > 0 and len(self.problems) == 1

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (NaN/inf become ``None``)."""
        return {
            "max_rhat": _finite_or_none(self.max_rhat),
            "min_ess_bulk": _finite_or_none(self.min_ess_bulk),
            "min_ess_tail": _finite_or_none(self.min_ess_tail),
            "divergences": int(self.divergences),
            "min_bfmi": _finite_or_none(self.min_bfmi),
            "converged": bool(self.converged),
            "problems": [str(p) for p in self.problems],
            "max_treedepth_share": _finite_or_none(self.max_treedepth_share),
        }


def _finite_or_none(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


# How a fit that failed its verdict is rerun (``toolkit.fitting.run_extending``): "continue" (since 5 December
# 2026) continues the same chains to twice the draws after R-hat, ESS, E-BFMI or tree depth failed, and starts a
# new run only after divergences; "what-failed" (December 2026) started a new run each time; "doubling" (before)
# also doubled the draws after divergences. A calibration study records its policy, so a resumed study keeps
# the one it started with.
RERUN_POLICIES = ("continue", "what-failed", "doubling")
RERUN_POLICY = "continue"

# Names of the per-draw "trajectory stopped at the maximum tree depth" flag: nutpie, then PyMC/numpyro.
TREEDEPTH_FLAGS = ("maxdepth_reached", "reached_max_treedepth")
TREEDEPTH_MAX_SHARE = 0.01


def max_treedepth_share(stats: xr.Dataset | None) -> float:
    """Share of draws whose NUTS trajectory was cut at the maximum tree depth (NaN if not recorded).

    nutpie records the flag as ``maxdepth_reached``, PyMC's NUTS as ``reached_max_treedepth``; the
    numpyro backend derives ``reached_max_treedepth`` from its step count (a full tree of
    2**10 - 1 leapfrog steps). A posterior without either flag gives NaN.
    """
    if stats is None:
        return math.nan
    for name in TREEDEPTH_FLAGS:
        if name in stats:
            flags = np.asarray(stats[name].values).astype(bool)
            return float(flags.mean()) if flags.size else math.nan
    return math.nan


def sampler_stat_problems(stats: xr.Dataset | None, *, bfmi_min: float = BFMI_MIN,
                          require_energy: bool = True,
                          treedepth_max_share: float = TREEDEPTH_MAX_SHARE) -> tuple[int, float, list[str]]:
    """Divergences, E-BFMI and tree-depth saturation of one fit's ``sample_stats``.

    Returns ``(divergences, min_bfmi, problems)``.
    E-BFMI per chain = sum_t (E_t - E_{t-1})^2 / sum_t (E_t - mean E)^2 (``arviz_stats.bfmi``);
    a fit fails with any divergence, a chain below ``bfmi_min``, or more than
    ``treedepth_max_share`` of its draws stopped at the maximum tree depth
    (:func:`max_treedepth_share`): such trajectories are cut short, so the sampler explores by
    random walk and its ESS and R-hat are less trustworthy than they look. Shared by
    :func:`diagnose` and the two-stage joint fit's stage-1 check.
    """
    import arviz_stats as azs

    problems: list[str] = []
    divergences = 0
    if stats is None or "diverging" not in stats:
        problems.append("no 'diverging' in sample_stats (divergences could not be checked)")
    else:
        divergences = int(np.sum(stats["diverging"].values.astype(bool)))
        if divergences > 0:
            problems.append(
                f"{divergences} divergent transitions (sampler hit difficult geometry; "
                "raise target_accept or reparameterise)"
            )
    min_bfmi = math.nan
    if stats is None or "energy" not in stats:
        if require_energy:
            problems.append("no 'energy' in sample_stats (E-BFMI could not be checked)")
    else:
        energy = stats["energy"].transpose("chain", "draw").values
        bfmi = np.asarray(azs.bfmi(energy, chain_axis=0, draw_axis=1), dtype=float)
        min_bfmi = float(np.min(bfmi))
        if not min_bfmi >= bfmi_min:
            problems.append(
                f"min E-BFMI {min_bfmi:.2f} < {bfmi_min:g} "
                "(momentum resampling explores energy poorly; reparameterise)"
            )
    share = max_treedepth_share(stats)
    if math.isfinite(share) and share > treedepth_max_share:
        problems.append(
            f"{100 * share:.1f}% of draws stopped at the maximum tree depth (> {100 * treedepth_max_share:g}%; "
            "trajectories cut short explore slowly: reparameterise or raise the maximum depth)"
        )
    return divergences, min_bfmi, problems


def element_diagnostics(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Bulk ESS, tail ESS and rank R-hat of each element of a (chain, draw, element) array, as :func:`diagnose`
    judges them: ArviZ's per-element statistics (the tail quantiles from rcParams' ``stats.ci_prob``, as
    ``azs.ess(..., method="tail")``), computed over all elements at once by ``toolkit.convergence``. R-hat is
    None with one chain; a chain stuck at one value gives NaN, not a warning.
    """
    from arviz_stats.validate import validate_ci_prob

    from toolkit.convergence import rank_statistics

    with np.errstate(invalid="ignore", divide="ignore"):
        return rank_statistics(draws, validate_ci_prob(None))


def _varying_elements(posterior: xr.Dataset, names: list[str]) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """The (chain, draw, element) array of every element of ``names`` whose draws are not all identical (a
    constant carries no convergence information), and each column's ``(variable, flat index)``."""
    parts, columns = [], []
    for name in names:
        values = posterior[name].transpose("chain", "draw", ...).values
        flat = values.reshape(values.shape[0], values.shape[1], -1)
        rows = flat.reshape(values.shape[0] * values.shape[1], -1)
        varying = np.flatnonzero(~np.all(rows == rows[:1], axis=0))
        parts.append(flat[..., varying])
        columns += [(name, int(j)) for j in varying]
    n_chains = int(posterior.sizes.get("chain", 1))
    return (np.concatenate(parts, axis=-1) if parts else np.zeros((n_chains, 0, 0))), columns


def element_rows(posterior: xr.Dataset, names: list[str] | None = None) -> list[tuple[str, int, float, float, float]]:
    """``(variable, flat index, R-hat, bulk ESS, tail ESS)`` of every varying element of ``names`` (default every
    variable) of a posterior group, from :func:`element_diagnostics` (as the verdict judges them; R-hat NaN with
    one chain): where a fit that fails its verdict fails (``benchmarks/bench_scaling.py``, ``sbc_rerun.py``).
    :func:`diagnose` keeps the same rows of the variables it judged (``Diagnostics.elements``)."""
    stacked, columns = _varying_elements(posterior, list(names or posterior.data_vars))
    if not columns:
        return []
    bulk, tail, rhat = element_diagnostics(stacked)
    return _rows(columns, rhat, bulk, tail)


def _rows(columns, rhat, bulk, tail) -> list[tuple[str, int, float, float, float]]:
    rhat = np.full(bulk.shape, np.nan) if rhat is None else rhat
    return [(name, j, float(r), float(b), float(t)) for (name, j), r, b, t in zip(columns, rhat, bulk, tail)]


def adapted_scales(dt: xr.DataTree) -> np.ndarray:
    """The per-coordinate scale nutpie sampled with, (chain, coordinate): the last diagonal stored in warm-up.

    Needs ``store_mass_matrix=True``. nutpie's ``mass_matrix_inv`` entry is a **standard deviation** on the
    unconstrained scale (a coordinate with posterior SD s gets s, not s^2;
    ``tests/test_inference.py::test_adapted_scales_are_posterior_sds`` holds it), so posterior SD / scale is 1
    where the diagonal fits, and x / scale are the sampler's coordinates. nutpie stores it during warm-up only
    (the sampling rows are NaN), so the last stored entry is the one it sampled with.
    """
    warm = dt["warmup_sample_stats"]["mass_matrix_inv"].to_numpy()
    return np.stack([w[np.flatnonzero(~np.isnan(w).all(axis=-1))[-1]] for w in warm])


def stiffness(model, u: np.ndarray, scale: np.ndarray, points: int, seed: int, iterations: int = 30):
    r"""The stiffest direction of the log density at ``points`` posterior draws, in the sampler's coordinates.

    At a draw x (spread over chains), in scaled coordinates y = x / s (s: the chain's adapted scale), power
    iteration on the Hessian of -log p, each product H v = -(g(y + h v) - g(y - h v)) / 2h from two gradients
    (g = s * d log p / dx, h = 1e-4), gives its largest-magnitude eigenvalue lambda and eigenvector v. A
    Gaussian the diagonal fits has lambda = 1 in every direction; the leapfrog is unstable at
    step * sqrt(lambda) > 2 and its energy error grows as (step^2 lambda)^2 well before, so the draws with the
    largest lambda, and the coordinates that make up their v, are where the step size is set. ``u``: nutpie's
    unconstrained draws (chain, draw, coordinate; ``store_unconstrained=True``), in ``model.value_vars`` order;
    ``scale``: :func:`adapted_scales`. Returns (lambda per point, v per point as rows).
    """
    fn = model.logp_dlogp_function(ravel_inputs=True)
    rng = np.random.default_rng(seed)
    n_chains, n_draws, n = u.shape
    h = 1e-4
    lams, vecs = [], []
    for t in range(points):
        chain = t % n_chains
        s = scale[chain]
        x = u[chain, rng.integers(n_draws)]
        v = rng.normal(size=n)
        v /= np.linalg.norm(v)
        lam = 0.0
        for _ in range(iterations):
            hv = -(fn(x + h * v * s)[1] - fn(x - h * v * s)[1]) * s / (2 * h)
            lam = float(v @ hv)
            v = hv / np.linalg.norm(hv)
        lams.append(lam)
        vecs.append(v)
    return np.array(lams), np.array(vecs)


def diagnose(
    dt: xr.DataTree,
    var_names: list[str] | None = None,
    *,
    rhat_max: float = RHAT_MAX,
    ess_min: float = ESS_MIN,
    bfmi_min: float = BFMI_MIN,
) -> Diagnostics:
    """Check convergence of a posterior.

    Sampler statistics (divergences, E-BFMI, tree-depth saturation) are checked by
    :func:`sampler_stat_problems`; ``max_treedepth_share`` is reported in the result.

    Parameters
    ----------
    dt : xarray.DataTree
        Needs ``posterior``; ``sample_stats`` with ``diverging`` and ``energy``.
    var_names : list of str, optional
        Posterior variables to check (default: all).
    rhat_max, ess_min, bfmi_min : float
        Thresholds: rank-normalised split R-hat must be <= ``rhat_max``, bulk and
        tail ESS >= ``ess_min``, every chain's E-BFMI >= ``bfmi_min``, and there
        must be no divergences.

    Returns
    -------
    Diagnostics
        ``converged`` is True only if every check passes. Elements that are
        identical across all draws (e.g. a constant deterministic) are left out
        of R-hat/ESS. Missing ``diverging``/``energy`` stats count as problems
        (the checks could not be made). With one chain R-hat is NaN and reported.
    """
    import arviz_stats as azs

    post = dt["posterior"].to_dataset()
    names = list(post.data_vars) if var_names is None else list(var_names)
    unknown = [n for n in names if n not in post.data_vars]
    if unknown:
        raise KeyError(f"variables not in posterior: {unknown}")
    post = post[names]
    n_chains = int(post.sizes.get("chain", 1))
    problems: list[str] = []

    # Elements whose draws are all identical carry no convergence information. The varying ones of every
    # variable go into one (chain, draw, element) array, so each statistic is one call of the same per-element
    # computation rather than one xarray call per variable (that wrapping cost more than the statistics).
    stacked, columns = _varying_elements(post, names)
    ess_bulk = ess_tail = rhat = np.array([])
    if stacked.shape[-1]:
        ess_bulk, ess_tail, rhat = element_diagnostics(stacked)
    elements = _rows(columns, None if n_chains < 2 else rhat, ess_bulk, ess_tail)
    min_ess_bulk = float(np.min(ess_bulk)) if ess_bulk.size else math.nan
    min_ess_tail = float(np.min(ess_tail)) if ess_tail.size else math.nan

    if n_chains < 2:
        max_rhat = math.nan
        problems.append("R-hat needs ≥ 2 chains (only 1 chain; cannot check chain agreement)")
    else:
        if rhat.size == 0:
            max_rhat = math.nan
            problems.append("R-hat could not be computed (no varying draws)")
        elif not np.all(np.isfinite(rhat)):
            max_rhat = math.inf
            problems.append(
                f"R-hat is undefined/infinite for {int(np.sum(~np.isfinite(rhat)))} values "
                "(chains stuck or disagree completely)"
            )
        else:
            max_rhat = float(np.max(rhat))
            if max_rhat > rhat_max:
                problems.append(
                    f"max R-hat {max_rhat:.3f} > {rhat_max:g} "
                    "(chains disagree; run longer or reparameterise)"
                )
    if not math.isfinite(min_ess_bulk) or min_ess_bulk < ess_min:
        problems.append(
            f"min bulk ESS {min_ess_bulk:.0f} < {ess_min:g} "
            "(too few effective draws for means/medians; run longer)"
        )
    if not math.isfinite(min_ess_tail) or min_ess_tail < ess_min:
        problems.append(
            f"min tail ESS {min_ess_tail:.0f} < {ess_min:g} "
            "(credible-interval ends unreliable; run longer)"
        )

    stats = dt["sample_stats"].to_dataset() if "sample_stats" in dt.children else None
    divergences, min_bfmi, stat_problems = sampler_stat_problems(stats, bfmi_min=bfmi_min)
    problems += stat_problems

    return Diagnostics(
        max_rhat=max_rhat,
        min_ess_bulk=min_ess_bulk,
        min_ess_tail=min_ess_tail,
        divergences=divergences,
        min_bfmi=min_bfmi,
        converged=not problems,
        problems=problems,
        max_treedepth_share=max_treedepth_share(stats),
        elements=elements,
    )


# --------------------------------------------------------------------------- run folders


class ResultMethods:
    """Methods shared by :class:`~toolkit.fitting.FitResult` and :class:`~toolkit.inference.Run`.

    Subclasses hold ``model_name``, ``posterior`` (DataTree), ``summary`` (a :class:`Summary`) and
    ``provenance``. Defined here, beside :func:`save_run` and :class:`Run`, because ``save`` writes a run
    folder and ``Run`` derives from it (in ``toolkit.results`` the two modules imported each other);
    ``toolkit.results.ResultMethods`` is the same class.
    """

    @property
    def converged(self) -> bool:
        return bool(self.summary["diagnostics"]["converged"])

    def estimand(self, name: str):
        """One estimand: a dict ``{mean, median, sd, hdi_90}`` or, for a probability, a float.

        A name the result does not have raises ``KeyError`` listing the ones it has.
        """
        estimands = self.summary["estimands"]
        if name not in estimands:
            raise KeyError(f"no estimand {name!r} in this {self.summary['model']} result; it has: "
                           f"{', '.join(estimands)}")
        return estimands[name]

    def figures(self) -> dict:
        """The model's check figures (the ones saved in a run's ``figures/``) as ``{name: Figure}``."""
        import matplotlib.pyplot as plt

        from toolkit.plots.runs import figure_builders

        out = {}
        for name, draw in figure_builders(self).items():
            drawn = draw()
            out[Path(name).stem] = drawn if isinstance(drawn, plt.Figure) else drawn.figure
        return out

    def save(self, run_dir: str | Path, *, overwrite: bool = False, figures=None) -> Path:
        """Write a run folder whole or not at all (:func:`toolkit.inference.save_run`), with the parameter
        summary table ``parameter_summary.csv`` (:func:`toolkit.review.write_summary_table`).

        ``figures``: True draws the model's figures into ``run_dir/figures``, None (default) skips them, a
        callable ``figures(run, folder)`` draws its own.
        """
        from toolkit.plots.runs import figure_writer
        from toolkit.review import write_summary_table

        writer = figure_writer(self.summary["model"]) if figures is True else (figures or None)

        def extras(run, folder):  # the parameter summary table goes in before the manifest seals the folder
            write_summary_table(run)
            if writer is not None:
                writer(run, folder)

        return save_run(run_dir, self.posterior, dict(self.summary), self.provenance, overwrite=overwrite,
                        figures=extras)


@dataclass
class Run(ResultMethods):
    """A saved fit: posterior, summary and provenance read from ``path``; the same methods as a fit in
    memory (:class:`ResultMethods`: ``summary()``, ``estimand``, ``figures``, ``save``)."""

    posterior: xr.DataTree
    summary: dict
    provenance: dict
    path: Path

    def __post_init__(self):
        self.summary = Summary(self.summary)

    @property
    def model_name(self) -> str:
        return self.summary["model"]

    @property
    def inputs(self):
        """The model inputs, rebuilt from the run's own files (:func:`toolkit.data.from_run.inputs_from_run`)."""
        if "_inputs" not in self.__dict__:
            from toolkit.data.from_run import inputs_from_run

            self.__dict__["_inputs"] = inputs_from_run(self)
        return self.__dict__["_inputs"]


def _jsonable(obj: Any) -> Any:
    """Convert to strict-JSON types; NaN and ±inf become ``None``."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(obj.as_dict() if hasattr(obj, "as_dict") else dataclasses.asdict(obj))
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=False)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class RunFolderError(ValueError):
    """A run folder that cannot be trusted, or an output path that cannot be written.

    The message names the folder, the file and the fix; the CLI prints it and exits 2.
    """


def _fault_point(name: str) -> None:
    """Crash-test hook: SIGKILL this process at checkpoint ``name`` if ``TOOLKIT_FAULT_POINT`` names it.

    Inert unless the variable is set; ``tests/test_run_atomicity.py`` uses it to kill a
    save at every step and check that the run folder is never half written.
    """
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


# A scratch folder whose owner is alive is in use, unless it is older than this (a PID can be reused):
# a save takes seconds to minutes, and a run stays moved aside only for the instant between two renames.
_SCRATCH_MAX_AGE_NS = {_TMP_MARK: 6 * 3600 * 10**9, _OLD_MARK: 3600 * 10**9}


def _scratch_fields(path: Path, mark: str) -> tuple[int | None, int]:
    """``(pid, creation time in ns)`` from a scratch folder's name ``.RUN<mark><pid>-<ns>...``."""
    parts = path.name.rsplit(mark, 1)[-1].split("-")
    pid = int(parts[0]) if parts[0].isdigit() else None
    stamp = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return pid, stamp


def _scratch_stale(path: Path, mark: str) -> bool:
    pid, stamp = _scratch_fields(path, mark)
    return not _pid_alive(pid) or time.time_ns() - stamp > _SCRATCH_MAX_AGE_NS[mark]


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _scratch_siblings(run_dir: Path, mark: str) -> list[Path]:
    prefix = f".{run_dir.name}{mark}"
    try:
        return sorted(p for p in run_dir.parent.iterdir() if p.name.startswith(prefix))
    except OSError:
        return []


def _is_scratch_name(name: str) -> bool:
    return name.startswith(".") and (_TMP_MARK in name or _OLD_MARK in name)


def recover_run(run_dir: str | Path) -> Path | None:
    """Finish what an interrupted :func:`save_run` left beside ``run_dir``.

    A save that was killed after moving the previous run aside (``.RUN.old-*``)
    but before renaming the new one in leaves no folder at ``run_dir``: the
    moved-aside run is renamed back (the new run was never reported, so the
    previous one stands). Scratch folders of dead processes (``.RUN.tmp-*``,
    and ``.RUN.old-*`` once a run is in place) are removed; those of a live
    process are left alone unless older than any save takes (6 h; 1 h for a
    moved-aside run), since a PID can be reused. Returns the restored folder's
    old name, or None.
    """
    run_dir = Path(run_dir).absolute()
    restored = None
    if not os.path.lexists(run_dir):
        olds = [p for p in _scratch_siblings(run_dir, _OLD_MARK) if _scratch_stale(p, _OLD_MARK)]
        if olds:
            newest = max(olds, key=lambda p: _scratch_fields(p, _OLD_MARK)[1])  # the last run saved
            os.rename(newest, run_dir)
            _fsync_dir(run_dir.parent)
            restored = newest
    if os.path.isdir(run_dir):
        for p in _scratch_siblings(run_dir, _OLD_MARK):
            if _scratch_stale(p, _OLD_MARK):
                shutil.rmtree(p, ignore_errors=True)
    for p in _scratch_siblings(run_dir, _TMP_MARK):
        if _scratch_stale(p, _TMP_MARK):
            shutil.rmtree(p, ignore_errors=True)
    return restored


def check_writable_destination(path: str | Path, *, what: str = "output") -> Path:
    """Refuse ``path`` if its folder cannot be created or written; return it absolute.

    The nearest existing ancestor must be a folder this process may write in
    (missing folders below it are created later).
    """
    path = Path(path).absolute()
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor.is_symlink():  # a dangling link: mkdir would fail
            raise RunFolderError(f"cannot write {what} {path}: {ancestor} is a broken symbolic link; "
                                 "choose another location")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunFolderError(f"cannot write {what} {path}: {ancestor} is a file, not a folder; "
                             "choose another location")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunFolderError(f"cannot write {what} {path}: no write permission in {ancestor}; "
                             "choose a folder you can write to")
    return path


def _looks_like_run(folder: Path) -> bool:
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError:
        return False
    return not names or MANIFEST in names or bool(names & set(RUN_FILES))


def check_run_destination(run_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Check that a run can be saved at ``run_dir``, before any work starts; return it absolute.

    Refused (:class:`RunFolderError`): a file or a symbolic link at ``run_dir``;
    an existing run without ``overwrite``; with ``overwrite``, a folder that is
    not a run (``--overwrite`` replaces runs only, never other folders); a
    location that cannot be written. A run left moved aside by an interrupted
    save is restored first (:func:`recover_run`).
    """
    run_dir = Path(run_dir).absolute()
    if run_dir.parent.is_dir():
        try:
            recover_run(run_dir)
        except OSError:
            pass  # a read-only parent is reported below
    if run_dir.is_symlink():
        raise RunFolderError(f"run folder {run_dir} is a symbolic link; give the real folder or a new name")
    if run_dir.exists():
        if not run_dir.is_dir():
            raise RunFolderError(f"run folder {run_dir} exists and is a file, not a folder; "
                                 "choose a new name for the run (--out)")
        if not overwrite:
            raise RunFolderError(f"run folder {run_dir} already exists; add --overwrite to replace it "
                                 "(the old run is kept until the new one is complete) or choose another --out")
        if not _looks_like_run(run_dir):
            raise RunFolderError(f"{run_dir} exists and is not a run folder (no {MANIFEST}, posterior.nc or "
                                 "summary.json); --overwrite replaces only run folders: choose another --out")
    return check_writable_destination(run_dir, what="run folder")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run_files(folder: Path) -> dict[str, Path]:
    """Every file under ``folder`` (POSIX relative path -> path), the manifest excepted."""
    found = {}
    for dirpath, _dirnames, filenames in os.walk(folder, followlinks=False):
        for name in filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(folder).as_posix()
            if rel != MANIFEST:
                found[rel] = full
    return found


def _write_manifest(folder: Path) -> None:
    """Seal ``folder``: ``manifest.json`` with the size and SHA-256 of every other file (written last)."""
    files = {}
    for rel, full in sorted(_run_files(folder).items()):
        with open(full, "rb") as f:  # netCDF and PNG writers do not fsync: the rename must not outrun the data
            os.fsync(f.fileno())
        files[rel] = {"bytes": full.stat().st_size, "sha256": _sha256(full)}
    _write_json(folder / MANIFEST, {"format": MANIFEST_FORMAT, "files": files})


def _refit_hint(run_dir: Path) -> str:
    return f"re-fit it with `toolkit fit MODEL --data COHORT --out {run_dir} --overwrite`"


def verify_run(run_dir: str | Path) -> None:
    """Refuse a run folder whose ``manifest.json`` is missing or does not match its files.

    Every file listed must exist with its recorded size and SHA-256, the three
    run files must be listed, and no other file may be present (hidden files
    such as ``.DS_Store`` excepted). A folder without a manifest was written by
    a toolkit before manifests or by a save that did not finish; neither can be
    told from a complete run, so it is refused too and must be re-fitted (the
    fit settings are in its ``provenance.json``).
    """
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST
    if not manifest_path.is_file():
        missing = [n for n in RUN_FILES if not (run_dir / n).is_file()]
        why = (f"it is incomplete (missing {', '.join(missing)}): its save did not finish" if missing else
               "it was written by an older toolkit or its save did not finish, so its completeness cannot "
               "be checked")
        raise RunFolderError(f"run folder {run_dir} has no {MANIFEST}: {why}; {_refit_hint(run_dir)}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        listed = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(listed, dict):
            raise ValueError("unknown format")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"run folder {run_dir}: {MANIFEST} is damaged ({type(exc).__name__}); "
                             f"{_refit_hint(run_dir)}") from None
    problems = [f"{n} is not listed" for n in RUN_FILES if n not in listed]
    present = _run_files(run_dir)
    for rel, record in sorted(listed.items()):
        full = present.get(rel)
        if full is None:
            problems.append(f"{rel} is missing")
        elif not isinstance(record, dict) or full.stat().st_size != record.get("bytes") \
                or _sha256(full) != record.get("sha256"):
            problems.append(f"{rel} was changed after the fit (size or SHA-256 differs)")
    for rel in sorted(set(present) - set(listed)):
        if not any(part.startswith(".") for part in rel.split("/")):
            problems.append(f"{rel} is not part of the run")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise RunFolderError(f"run folder {run_dir} does not match its {MANIFEST}: {shown}. The run is "
                             f"incomplete or was edited; {_refit_hint(run_dir)}")


def save_run(
    run_dir: str | Path,
    posterior: xr.DataTree,
    summary: dict,
    provenance: dict,
    *,
    overwrite: bool = False,
    figures: Callable[[Run, Path], Any] | None = None,
) -> Path:
    """Write a run folder whole or not at all, and return its path.

    Everything is written into a temporary sibling ``.RUN.tmp-<pid>-*``:
    ``posterior.nc``, ``summary.json``, ``provenance.json``, then the figures
    (``figures(run, folder)`` on the run read back from disk), then
    ``manifest.json`` (size and SHA-256 of every file), last. Only then is a
    previous run renamed aside (``.RUN.old-<pid>-*``), the new one renamed
    in, and the old one deleted. A crash at any step leaves at ``run_dir``
    the previous complete run or the new complete one; after a crash between
    the two renames :func:`recover_run` (called by this function,
    :func:`check_run_destination` and :func:`load_run`) renames the previous
    run back. Orphan scratch folders are removed on the next save.

    ``posterior.nc`` keeps the cohort's pseudonymous ``patient_id`` codes as
    the ``patient`` coordinate. They are what ties a poorly fitted or
    influential patient (Pareto k, individual-fit figures) back to the source
    data; dropping them would not de-identify the run, which holds every
    patient's observed data in cohort order anyway. A run folder is therefore
    as sensitive as the cohort folder and is shared under the same rules; the
    report, which is what investigators receive, prints no patient code.

    Parameters
    ----------
    run_dir : str or Path
        Destination folder (created with its parents if needed).
    posterior : xarray.DataTree
        Written to ``posterior.nc``.
    summary, provenance : dict
        Written to ``summary.json`` / ``provenance.json`` as strict JSON
        (NaN/inf written as ``null``).
    overwrite : bool
        Replace an existing run at ``run_dir`` (never a folder that is not a
        run); without it an existing run is refused (:class:`RunFolderError`).
    figures : callable, optional
        ``figures(run, folder)`` writes the run's figures into ``folder``.
    """
    run_dir = check_run_destination(run_dir, overwrite=overwrite)
    parent = run_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    _fault_point("save_started")
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}{_TMP_MARK}{os.getpid()}-{time.time_ns()}-", dir=parent))
    backup = None
    try:
        _fault_point("tmp_created")
        posterior.to_netcdf(tmp / "posterior.nc")
        _fault_point("posterior_written")
        _write_json(tmp / "summary.json", summary)
        _write_json(tmp / "provenance.json", provenance)
        _fault_point("json_written")
        if figures is not None:
            figures(_read_run(tmp), tmp / "figures")
            _fault_point("figures_written")
        _write_manifest(tmp)
        _fsync_dir(tmp)
        _fault_point("manifest_written")
        if os.path.lexists(run_dir):
            if not overwrite:  # appeared while this run was being written
                raise RunFolderError(f"run folder {run_dir} appeared while the run was being saved; "
                                     "add --overwrite to replace it or choose another --out")
            backup = parent / f".{run_dir.name}{_OLD_MARK}{os.getpid()}-{time.time_ns()}"
            os.rename(run_dir, backup)
            _fsync_dir(parent)
            _fault_point("old_moved_aside")
        try:
            os.rename(tmp, run_dir)
        except BaseException:
            if backup is not None:
                os.rename(backup, run_dir)
            raise
        _fsync_dir(parent)
        _fault_point("new_renamed_in")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
        _fault_point("old_removed")
    return run_dir


def _read_run(run_dir: Path) -> Run:
    """Read the three run files without checking the manifest (a run being written, or one just verified)."""
    try:
        with xr.open_datatree(run_dir / "posterior.nc") as tree:
            posterior = tree.load()
    except Exception as exc:  # noqa: BLE001 - netCDF/HDF5 raise many types for a damaged file
        raise RunFolderError(f"run folder {run_dir}: posterior.nc cannot be read ({type(exc).__name__}); "
                             f"{_refit_hint(run_dir)}") from None
    texts = {}
    for name in ("summary.json", "provenance.json"):
        try:
            texts[name] = json.loads((run_dir / name).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RunFolderError(f"run folder {run_dir}: {name} is not valid JSON ({exc}); "
                                 f"{_refit_hint(run_dir)}") from None
        if not isinstance(texts[name], dict):
            raise RunFolderError(f"run folder {run_dir}: {name} is not a JSON object; {_refit_hint(run_dir)}")
    return Run(posterior=posterior, summary=texts["summary.json"], provenance=texts["provenance.json"],
               path=run_dir)


def load_run(run_dir: str | Path) -> Run:
    """Read a run folder written by :func:`save_run`, after checking it against its manifest.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist (after restoring a run an interrupted save
        moved aside, see :func:`recover_run`).
    RunFolderError
        A ``ValueError`` naming the folder, the file and the fix, if the folder
        is a scratch folder of a save, has no ``manifest.json``, does not match
        it (:func:`verify_run`), or a run file cannot be read.
    """
    run_dir = Path(run_dir)
    if _is_scratch_name(run_dir.absolute().name):
        raise RunFolderError(f"{run_dir} is a scratch folder left by an interrupted save, not a run; "
                             "load the run folder itself (the scratch folder is removed by the next save)")
    if not os.path.lexists(run_dir) and run_dir.absolute().parent.is_dir():
        try:
            recover_run(run_dir)
        except OSError:
            pass  # read-only location: reported as missing below
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    verify_run(run_dir)
    return _read_run(run_dir)


# --------------------------------------------------------------------------- provenance


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the numerical stack (``None`` if not installed)."""
    import toolkit

    return {
        "python": platform.python_version(),
        "pymc": _version("pymc"),
        "pytensor": _version("pytensor"),
        "arviz": _version("arviz"),
        "arviz_base": _version("arviz-base"),
        "arviz_stats": _version("arviz-stats"),
        "nutpie": _version("nutpie"),
        "numpy": _version("numpy"),
        "pandas": _version("pandas"),
        "xarray": _version("xarray"),
        "numpyro": _version("numpyro"),
        "jax": _version("jax"),
        "toolkit": getattr(toolkit, "__version__", None) or _version("cart-toolkit"),
    }


RECORDED_ENV = ("TOOLKIT_NOTEBOOK_FAST",)  # environment variables recorded in every run's provenance


def build_provenance(
    *,
    model_name: str,
    model_version: str,
    settings: SamplerSettings | dict,
    data_hash: str,
    spec: dict | None,
    priors: dict,
    timings: dict,
) -> dict:
    """Provenance record for a run (JSON-able; NaN/inf become ``None``).

    Adds ``versions`` (see :func:`package_versions`), ``platform`` and
    ``created_utc`` (ISO 8601, UTC) to the given fields.
    """
    settings_dict = settings.as_dict() if isinstance(settings, SamplerSettings) else dict(settings)
    return _jsonable(
        {
            "model_name": model_name,
            "model_version": model_version,
            "settings": settings_dict,
            "data_hash": data_hash,
            "spec": spec,
            "priors": priors,
            "timings": timings,
            "versions": package_versions(),
            "platform": platform.platform(),
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        # a variable that shortens sampling is recorded (and shown in the report), never silent
        | ({"environment": {v: os.environ[v] for v in RECORDED_ENV if v in os.environ}}
           if any(v in os.environ for v in RECORDED_ENV) else {})
    )


def hash_folder(path: str | Path) -> str:
    """SHA-256 (hex) over the sorted relative paths and bytes of every regular file.

    Symbolic links are not followed. Each file contributes its POSIX relative
    path, its size and its bytes, so renames and moves change the hash.
    """
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    files = []
    for dirpath, _dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            full = Path(dirpath) / name
            if stat.S_ISREG(os.lstat(full).st_mode):
                files.append((full.relative_to(root).as_posix(), full))
    h = hashlib.sha256()
    for rel, full in sorted(files):
        h.update(rel.encode("utf-8") + b"\0")
        h.update(full.stat().st_size.to_bytes(8, "little"))
        with open(full, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
