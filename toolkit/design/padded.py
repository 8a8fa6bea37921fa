r"""The design's durability analysis compiled once per worker, its data swapped per look.

Every look of every simulated trial analyses a different number of patients,
so fitting each cut with ``toolkit.fitting.fit_durability`` builds and compiles
a new model per look; for these small survival models compiling costs more
than sampling. Here the model is built once per worker process at a fixed size
``n_max`` (the design's maximum sample size) with a 0/1 likelihood mask,

.. math::

    \log p(y \mid \theta) = \sum_{i=1}^{n_\max} m_i \log p(y_i \mid \theta),
    \qquad m_i = 1 \text{ for the cohort's } n \text{ patients}, \; 0 \text{ for padding},

(``build_durability_model(..., patient_mask=, infused_mask=)``; padded rows hold
finite placeholder data, so their zero-weighted terms are exactly 0 and the
log density equals the unpadded model's), compiled with nutpie, and each look
only swaps the ``pm.Data`` values (nutpie's ``with_data``), as the calibration
runner does (``toolkit.calibration.runner``).

What stays as in ``toolkit fit``: the cut is written as a cohort folder and read
back through ``load_cohort`` (the same validation), the model inputs come from
``to_durability_inputs``, the estimands from ``durability_estimands`` on the
unpadded inputs, and the convergence verdict from ``toolkit.inference.diagnose``
on every posterior variable, the check ``fit_durability`` applies. Left out (not
used by a design study): the pointwise log-likelihood, PSIS-LOO, the prior
draws for sensitivity and the provenance record.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace

import numpy as np

#: compiled padded models of this worker process, by structure (variant, endpoint, priors, n_max)
_COMPILED: dict[str, dict] = {}
PLACEHOLDER_YEARS = 1.0  # the time of a padded row: any finite positive value keeps its (zero-weighted) term finite


@dataclass
class PaddedFit:
    """What a design look needs of a fit (the attributes of ``toolkit.fitting.FitResult`` it reads)."""

    posterior: object
    inputs: object
    summary: dict
    compile_seconds: float = 0.0
    sampling_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        return bool(self.summary["diagnostics"]["converged"])


def pad_inputs(inputs, n_max: int):
    """``inputs`` padded to ``n_max`` responders (and ``n_max`` infused patients for ``efs``).

    Returns ``(padded, patient_mask, infused_mask)``; masks are 1 for the cohort's patients, 0 for padding
    (``infused_mask`` is None without a response part). Padded rows: arm 0, time ``PLACEHOLDER_YEARS``,
    no event, covariates 0, no transplant; no patient identifier is kept (slots are named ``slot_<k>``).
    """
    n = int(inputs.arm.size)
    if n > n_max:
        raise ValueError(f"{n} analysed patients, more than the padded size {n_max}")

    def pad(a, value, size=n_max):
        a = np.asarray(a)
        tail = np.full((size - a.shape[0],) + a.shape[1:], value, dtype=a.dtype)
        return np.concatenate([a, tail])

    patient_mask = pad(np.ones(n), 0.0)
    changes = {"patient_ids": [f"slot_{k:04d}" for k in range(n_max)], "arm": pad(inputs.arm, 0),
               "time_years": pad(np.asarray(inputs.time_years, float), PLACEHOLDER_YEARS),
               "event": pad(inputs.event, 0), "x_std": pad(np.asarray(inputs.x_std, float).reshape(n, -1), 0.0)}
    if np.asarray(inputs.competing).size:
        changes["competing"] = pad(inputs.competing, 0)
    if np.asarray(inputs.hsct_years).size:
        changes["hsct_years"] = pad(np.asarray(inputs.hsct_years, float), np.inf)
    infused_mask = None
    if np.asarray(inputs.responded).size:
        m = int(np.asarray(inputs.responded).size)
        if m > n_max:
            raise ValueError(f"{m} infused patients, more than the padded size {n_max}")
        infused_mask = pad(np.ones(m), 0.0)
        changes["responded"] = pad(inputs.responded, 0)
        changes["responded_arm"] = pad(inputs.responded_arm, 0)
    return replace(inputs, **changes), patient_mask, infused_mask


def padded_model(inputs, priors, *, variant: str, n_max: int):
    """The masked model of ``inputs`` padded to ``n_max``, every observation a swappable shared variable."""
    from toolkit.calibration.generators import swappable_observations
    from toolkit.models.durability import build_durability_model

    padded, patient_mask, infused_mask = pad_inputs(inputs, n_max)
    return swappable_observations(build_durability_model(padded, priors, variant=variant, patient_mask=patient_mask,
                                                         infused_mask=infused_mask))


def data_values(inputs, priors, *, variant: str, n_max: int) -> dict:
    """The values of every data container of the compiled padded model for ``inputs``, by name: the builder's
    ``pm.Data`` and, for each observed variable given constant data, ``<name>_observed``
    (``toolkit.calibration.generators.swappable_observations``). Read from the builder's model, so the
    data enter exactly as in a direct build; no log-density graph is made (the slow part)."""
    from pytensor.compile.sharedvalue import SharedVariable

    from toolkit.models.durability import build_durability_model

    padded, patient_mask, infused_mask = pad_inputs(inputs, n_max)
    model = build_durability_model(padded, priors, variant=variant, patient_mask=patient_mask,
                                   infused_mask=infused_mask)
    values = {v.name: v.get_value() for v in model.data_vars}
    for rv in model.observed_RVs:
        value = model.rvs_to_values[rv]
        if isinstance(value, SharedVariable):
            values[value.name] = value.get_value()
        elif hasattr(value, "data"):
            values[f"{rv.name}_observed"] = np.array(value.data)
    return values


def _cache_key(options, priors, n_max: int, inputs) -> str:
    what = {"variant": options.variant, "endpoint": inputs.endpoint, "hsct": inputs.hsct,
            "covariates": list(inputs.covariates), "priors": priors.as_dict(), "n_max": int(n_max),
            "response": bool(np.asarray(inputs.responded).size), "competing": bool(np.asarray(inputs.competing).size)}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def compiled_for(inputs, options, n_max: int) -> tuple[object, float]:
    """This worker's compiled padded model for the analysis (built and compiled on first use);
    returns ``(compiled, compile_seconds)`` with 0 s when it was already compiled."""
    import nutpie

    priors = options.prior_set()
    key = _cache_key(options, priors, n_max, inputs)
    if key in _COMPILED:
        return _COMPILED[key]["compiled"], 0.0
    t0 = time.perf_counter()
    model = padded_model(inputs, priors, variant=options.variant, n_max=n_max)
    compiled = nutpie.compile_pymc_model(model)
    if len(_COMPILED) > 4:  # compiled models hold memory; a worker serves one design at a time
        _COMPILED.clear()
    _COMPILED[key] = {"compiled": compiled}
    return compiled, time.perf_counter() - t0


def fit_padded(cohort, options, settings, *, n_max: int, estimands=None) -> PaddedFit:
    """Fit the durability analysis to ``cohort`` with the worker's compiled padded model (module docstring).

    Same inputs, estimands and convergence verdict as ``fit_durability``; ``settings`` are the design's
    sampler settings (nutpie, one core). ``estimands``: the estimand names the caller needs (None: all;
    ``durability_estimands(only=)``: the names given have the values of a full computation).
    """
    import nutpie

    from toolkit.data.inputs import to_durability_inputs
    from toolkit.estimands import durability_estimands
    from toolkit.fitting import _data_summary
    from toolkit.inference import diagnose

    inputs = to_durability_inputs(cohort, endpoint=options.endpoint, hsct=options.hsct, covariates=options.covariates)
    compiled, compile_seconds = compiled_for(inputs, options, n_max)
    values = data_values(inputs, options.prior_set(), variant=options.variant, n_max=n_max)
    known = {var.name for var in compiled.shared_var_keys}
    missing = known - set(values)
    if missing:  # a container the compiled model reads but the data do not give: refuse rather than reuse stale data
        raise RuntimeError(f"no data for the compiled model's containers {sorted(missing)}")
    compiled = compiled.with_data(**{k: v for k, v in values.items() if k in known})
    t0 = time.perf_counter()
    dt = nutpie.sample(compiled, draws=settings.draws, tune=max(int(settings.tune), 1), chains=settings.chains,
                       cores=1, seed=int(settings.random_seed), save_warmup=False, progress_bar=False,
                       target_accept=settings.target_accept)
    sampling_seconds = time.perf_counter() - t0
    diagnostics = diagnose(dt, var_names=list(dt["posterior"].data_vars))
    # a Dataset, not the DataTree node: the same values, and variable look-ups on a DataTree node are slow
    estimands = durability_estimands(dt["posterior"].to_dataset(), inputs, variant=options.variant, days=options.days,
                                     hr_below=options.hr_below, rfs_difference_above=options.rfs_difference_above,
                                     only=estimands)
    summary = {"model": "durability", "variant": options.variant, "diagnostics": diagnostics.as_dict(),
               "estimands": estimands, "data": _data_summary(inputs)}
    return PaddedFit(dt, inputs, summary, compile_seconds=compile_seconds, sampling_seconds=sampling_seconds)
