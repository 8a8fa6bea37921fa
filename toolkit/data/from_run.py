"""Model inputs rebuilt from a saved run's own files (no cohort needed).

A run folder stores what its model was fitted to: ``constant_data`` and
``observed_data`` in ``posterior.nc`` and the ``options``/``data`` records in
``summary.json`` (:func:`toolkit.inference.save_run`). These functions turn them
back into the inputs dataclasses of :mod:`toolkit.data.inputs`,
:mod:`toolkit.data.mrd_inputs` and :mod:`toolkit.data.joint_inputs`, so figures,
estimands and a rebuilt model (``toolkit.fitting.rebuild_model``, for moment-matched
LOO) work from a run folder alone. ``run`` is anything with ``posterior`` (DataTree)
and ``summary`` (mapping): a :class:`toolkit.inference.Run` or a fit in memory.

They live in the data layer, below the models, inference and figures, so that
every layer can rebuild a run's inputs without importing a layer above it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from toolkit.data.inputs import CartInputs, DurabilityInputs
from toolkit.data.mrd_inputs import REFERENCE_PREFERENCE, MrdInputs

__all__ = ["cart_inputs_from_run", "durability_inputs_from_run", "inputs_from_run", "mrd_inputs_from_run"]


def inputs_from_run(run):
    """A saved run's model inputs rebuilt from its posterior file (no cohort needed), by ``summary["model"]``."""
    rebuild = {"durability": durability_inputs_from_run, "cart": cart_inputs_from_run,
               "mrd": mrd_inputs_from_run}
    model = run.summary["model"]
    return rebuild[model](run) if model in rebuild else None


def durability_inputs_from_run(run) -> DurabilityInputs:
    """Rebuild the model inputs of a saved durability run from its own files (no cohort needed)."""
    dt, summary = run.posterior, run.summary
    constant = dt["constant_data"]
    observed = dt["observed_data"]
    covariates = list(summary["options"]["covariates"])
    cov_stats = summary["data"]["covariates"]
    x = constant["x_std"].to_numpy() if covariates else np.zeros((observed["rfs"].size, 0))
    return DurabilityInputs(
        patient_ids=[str(p) for p in observed["rfs"]["patient"].to_numpy()],
        arm=constant["arm"].to_numpy().astype(int),
        time_years=observed["rfs"].to_numpy(),
        event=constant["event"].to_numpy().astype(int),
        covariates=covariates,
        x_std=x,
        x_mean=np.array([cov_stats[c]["mean"] for c in covariates]),
        x_sd=np.array([cov_stats[c]["sd"] for c in covariates]),
        endpoint=summary["data"]["endpoint"],
        hsct=summary["data"]["hsct_policy"],
        arm_labels=(summary["arms"]["control"], summary["arms"]["experimental"]),
        competing=(constant["death_in_remission"].to_numpy().astype(int) if "death_in_remission" in constant
                   else np.zeros(observed["rfs"].size, dtype=int)),
        responded=observed["response"].to_numpy().astype(int) if "response" in observed else np.zeros(0),
        responded_arm=constant["response_arm"].to_numpy().astype(int) if "response_arm" in constant else np.zeros(0),
        response_day=float(summary["data"].get("response_day", 28.0)),
    )


def cart_inputs_from_run(run) -> CartInputs:
    """Rebuild the model inputs of a saved CAR-T run from its own files (no cohort needed).

    Covariate means and SDs are not stored with a CAR-T run (the figures do not
    need them) and come back as NaN.
    """
    dt, summary = run.posterior, run.summary
    constant, observed = dt["constant_data"], dt["observed_data"]
    patient_ids = [str(p) for p in dt["posterior"]["theta_patient"].coords["patient"].to_numpy()]
    sample_patient = constant["patient_index"].to_numpy().astype(int)
    log_lloq = constant["log_lloq"].to_numpy().astype(float)
    patient_lloq = np.array([np.median(np.exp(log_lloq[sample_patient == i])) if (sample_patient == i).any()
                             else np.nan for i in range(len(patient_ids))])
    covariates = list(summary.get("options", {}).get("covariates", []))
    x = constant["x_std"].to_numpy() if covariates else np.zeros((len(patient_ids), 0))
    return CartInputs(
        patient_ids=patient_ids,
        arm=constant["experimental"].to_numpy().astype(int),
        sample_patient=sample_patient,
        day=constant["day"].to_numpy().astype(float),
        log_value=observed["log_level"].to_numpy().astype(float),
        censored=constant["censored"].to_numpy().astype(np.int8),
        log_lloq=log_lloq,
        patient_lloq=patient_lloq,
        covariates=covariates,
        x_std=x,
        x_mean=np.full(len(covariates), np.nan),
        x_sd=np.full(len(covariates), np.nan),
        arm_labels=(summary["arms"]["control"], summary["arms"]["experimental"]),
        unit=summary.get("data", {}).get("unit", "copies/ug"),
    )


def mrd_inputs_from_run(run) -> MrdInputs:
    """Rebuild the model inputs of a saved MRD run from its own files (no cohort needed).

    Uses the run's ``constant_data``/``observed_data`` and ``summary.json`` ``data``; values of censored
    rows are NaN as in :func:`toolkit.data.mrd_inputs.to_mrd_inputs`. One difference: a quantified row
    without a recorded detection limit gets the filler the model stored (its value - 1 log10), not NaN.
    Runs written before the model recorded ``assessment_patient`` cannot be rebuilt (refit them).
    """
    dt, summary = run.posterior, run.summary
    constant = dt["constant_data"]
    if "assessment_patient" not in constant:
        raise ValueError("this MRD run does not record which patient each assessment belongs to "
                         "(assessment_patient); it was written by an older toolkit: fit it again")
    data = summary["data"]
    code = constant["censoring"].to_numpy().astype(np.int8)
    patient = constant["assessment_patient"].to_numpy().astype(int)
    visit = pd.Series(patient).groupby(patient).cumcount().to_numpy(int)
    lod = constant["log10_lod"].to_numpy().astype(float)
    methods = tuple(data["methods"])
    covariates = list(summary["options"].get("covariates", []))
    n_patients = constant["patient_arm"].size
    missing = constant["baseline_missing"].to_numpy() > 0.5
    stats = data.get("baseline_log10", {})
    pb = (constant["peripheral_blood"].to_numpy().astype(np.int8) if "peripheral_blood" in constant
          else np.zeros(code.size, dtype=np.int8))
    cov_stats = data.get("covariates", {})
    return MrdInputs(
        patient_ids=[str(x) for x in constant["patient"].to_numpy()],
        arm=constant["patient_arm"].to_numpy().astype(int),
        baseline_log10=np.where(missing, np.nan, constant["baseline_anchor_log10"].to_numpy()),
        baseline_missing=missing,
        baseline_log10_mean=float(stats.get("mean") if stats.get("mean") is not None else np.nan),
        baseline_log10_sd=float(stats.get("sd") if stats.get("sd") is not None else np.nan),
        assessment_patient=patient,
        assessment_visit=visit,
        day=constant["day"].to_numpy().astype(float),
        log10_value=np.where(code == 0, constant["log10_value"].to_numpy().astype(float), np.nan),
        censoring=code,
        log10_lod=lod,
        log10_loq=np.where(code == 2, constant["log10_loq"].to_numpy().astype(float), lod),
        method=constant["method_index"].to_numpy().astype(int),
        peripheral_blood=pb,
        methods=methods,
        reference_method=next(m for m in REFERENCE_PREFERENCE if m in methods),
        covariates=covariates,
        x_std=constant["x_std"].to_numpy() if covariates else np.zeros((n_patients, 0)),
        x_mean=np.array([cov_stats[c]["mean"] for c in covariates]) if cov_stats else np.full(len(covariates), np.nan),
        x_sd=np.array([cov_stats[c]["sd"] for c in covariates]) if cov_stats else np.full(len(covariates), np.nan),
        infused_ids=[str(x) for x in constant["infused"].to_numpy()],
        infused_arm=constant["response_arm"].to_numpy().astype(int),
        responded=dt["observed_data"]["response"].to_numpy().astype(int),
        arm_labels=(summary["arms"]["control"], summary["arms"]["experimental"]),
    )
