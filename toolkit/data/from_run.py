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
from toolkit.data.joint_inputs import NO_CHANGE, JointInputs
from toolkit.data.mrd_inputs import REFERENCE_PREFERENCE, MrdInputs

__all__ = ["cart_inputs_from_run", "durability_inputs_from_run", "inputs_from_run", "joint_inputs_from_run",
           "joint_rebuild_blocker", "mrd_inputs_from_run"]


def inputs_from_run(run):
    """A saved run's model inputs rebuilt from its posterior file (no cohort needed), by ``summary["model"]``;
    None for a model without a rebuild and for a joint run that cannot be rebuilt (:func:`joint_rebuild_blocker`)."""
    rebuild = {"durability": durability_inputs_from_run, "cart": cart_inputs_from_run,
               "mrd": mrd_inputs_from_run, "joint": joint_inputs_from_run}
    model = run.summary["model"]
    if model not in rebuild or (model == "joint" and joint_rebuild_blocker(run.summary) is not None):
        return None
    return rebuild[model](run)


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
    covariates = list(run.summary.get("options", {}).get("covariates", []))
    return _cart_inputs(run.posterior, run.summary, covariates)


def _cart_inputs(dt, summary, covariates: list[str]) -> CartInputs:
    """The CAR-T inputs stored in ``dt`` (a CAR-T run, or the kinetic part of a joint run)."""
    constant, observed = dt["constant_data"], dt["observed_data"]
    patient_ids = [str(p) for p in dt["posterior"]["theta_patient"].coords["patient"].to_numpy()]
    sample_patient = constant["patient_index"].to_numpy().astype(int)
    log_lloq = constant["log_lloq"].to_numpy().astype(float)
    # each patient's usual LLOQ is the median of its samples' limits; samples without a recorded limit were
    # given that median, and adding copies of a median leaves it unchanged, so this is the fitted value
    patient_lloq = np.array([np.median(np.exp(log_lloq[sample_patient == i])) if (sample_patient == i).any()
                             else np.nan for i in range(len(patient_ids))])
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


def joint_rebuild_blocker(summary) -> str | None:
    """Why a joint run's inputs cannot be rebuilt from its files, or None when they can.

    With the MRD submodel (association ``mrd_clearance``) the model's baseline-burden prior is centred on
    the cohort's mean and SD of the log10 baseline MRD, which a joint run does not store.
    """
    if "mrd_clearance" in summary.get("options", {}).get("associations", []):
        return ("this joint run has the MRD submodel (association mrd_clearance), whose baseline-burden prior "
                "uses the cohort's baseline MRD mean and SD, which a joint run does not store")
    return None


def joint_inputs_from_run(run) -> JointInputs:
    """Rebuild the model inputs of a saved joint run from its own files (no cohort needed).

    The kinetic part comes back as for a CAR-T run (without covariates: the joint model's covariates are the
    relapse part's); the relapse part from ``observed_data["relapse"]`` (years from response, dim
    ``responder``) and ``constant_data`` (``event``, ``arm_responder``, ``response_day``,
    ``relapse_x_std``, ``mrd_positive_years`` when the ``mrd`` association was fitted, else no change point).
    A two-stage run stores no stage-one CAR-T data (its kinetics enter as the fixed features
    ``log_cmax_fixed``/``loss_day_fixed``): its ``cart`` is None and ``log_lloq`` NaN. Covariate means and
    SDs come back as NaN. Raises ValueError for a run that cannot be rebuilt (:func:`joint_rebuild_blocker`).
    """
    dt, summary = run.posterior, run.summary
    reason = joint_rebuild_blocker(summary)
    if reason is not None:
        raise ValueError(f"{reason}; its inputs cannot be rebuilt from the run folder")
    constant, observed = dt["constant_data"], dt["observed_data"]
    responders = [str(p) for p in observed["relapse"]["responder"].to_numpy()]
    n = len(responders)
    covariates = list(summary.get("options", {}).get("covariates", []))
    arm_labels = (summary["arms"]["control"], summary["arms"]["experimental"])
    relapse = DurabilityInputs(
        patient_ids=responders,
        arm=constant["arm_responder"].to_numpy().astype(int),
        time_years=observed["relapse"].to_numpy().astype(float),
        event=constant["event"].to_numpy().astype(int),
        covariates=covariates,
        x_std=constant["relapse_x_std"].to_numpy() if covariates else np.zeros((n, 0)),
        x_mean=np.full(len(covariates), np.nan),
        x_sd=np.full(len(covariates), np.nan),
        endpoint="relapse",
        hsct="censor",
        arm_labels=arm_labels,
    )
    if "patient_index" in constant:  # kinetics fitted jointly: the CAR-T part is in the run
        cart = _cart_inputs(dt, summary, [])
        position = {pid: i for i, pid in enumerate(cart.patient_ids)}
        cart_index = np.array([position[pid] for pid in responders], dtype=np.int64)
        log_lloq = np.log(cart.patient_lloq[cart_index])
    else:
        cart, cart_index, log_lloq = None, np.full(n, -1, dtype=np.int64), np.full(n, np.nan)
    has_mrd = "mrd_positive_years" in constant
    return JointInputs(
        cart=cart,
        relapse=relapse,
        cart_index=cart_index,
        response_day=constant["response_day"].to_numpy().astype(float),
        log_lloq=log_lloq,
        mrd_positive_years=(constant["mrd_positive_years"].to_numpy().astype(float) if has_mrd
                            else np.full(n, NO_CHANGE)),
        has_mrd=has_mrd,
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
