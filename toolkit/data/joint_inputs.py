"""Arrays for the joint model (``toolkit.models.joint``): CAR-T samples of every infused patient plus
the relapse outcome of the responders, linked patient by patient.

The relapse part is the cause-specific hazard of relapse from the response
day (endpoint ``relapse``: death in remission and a consolidative HSCT end
follow-up without an event), because the kinetic associations act on relapse,
not on death; time is in years as in :class:`DurabilityInputs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.data.inputs import (
    DAYS_PER_YEAR,
    CartInputs,
    DurabilityInputs,
    ModelDataError,
    kinetic_cut_day,
    rows_after_kinetic_cut,
    to_cart_inputs,
    to_durability_inputs,
)
from toolkit.data.mrd_inputs import MrdInputs, to_mrd_inputs

NO_CHANGE = 1e6  # years: a change point that never comes (no MRD positivity seen)


@dataclass(frozen=True)
class JointInputs:
    """``cart`` (all infused patients) and ``relapse`` (responders), with per responder:

    ``cart_index`` (row of the responder in ``cart.patient_ids``), ``response_day``
    (days since infusion), ``log_lloq`` (log of the patient's usual LLOQ, which
    defines loss of CAR-T), and ``mrd_positive_years``: years from response to the
    first MRD assessment at or after the response day, and before the end of the
    patient's follow-up, that detected disease (quantified or positive-not-quantifiable,
    any method); ``NO_CHANGE`` if none.

    With the MRD submodel (``to_joint_inputs(..., mrd_submodel=True)``): ``mrd`` (the
    :class:`MrdInputs` of the cohort, responders with assessments) and ``mrd_index``
    (row of each responder in ``mrd.patient_ids``, -1 for a responder without any
    MRD assessment).
    """

    cart: CartInputs
    relapse: DurabilityInputs
    cart_index: np.ndarray
    response_day: np.ndarray
    log_lloq: np.ndarray
    mrd_positive_years: np.ndarray
    has_mrd: bool
    mrd: MrdInputs | None = None
    mrd_index: np.ndarray | None = None

    @property
    def n_responders(self) -> int:
        return self.relapse.n_patients

    @property
    def warnings(self) -> tuple[str, ...]:
        """The warnings of every part (CAR-T, relapse, MRD), which the fit stores and the report shows."""
        parts = (self.cart, self.relapse) + ((self.mrd,) if self.mrd is not None else ())
        return tuple(w for part in parts for w in part.warnings)


def first_mrd_positive_years(cohort, patient_ids, response_day, end_years) -> tuple[np.ndarray, bool]:
    """Years from response to the first detectable MRD in remission (see :class:`JointInputs`)."""
    out = np.full(len(patient_ids), NO_CHANGE)
    mrd = cohort.mrd
    if mrd is None or len(mrd) == 0:
        return out, False
    # quantified or positive-not-quantifiable, and not after a transplant or new therapy (the kinetic cut;
    # assessments after a relapse are already past the end of follow-up below)
    detected = (mrd["censoring"] != "below_lod").to_numpy() & ~rows_after_kinetic_cut(mrd, kinetic_cut_day(cohort))
    position = {pid: i for i, pid in enumerate(patient_ids)}
    for pid, day, positive in zip(mrd["patient_id"].astype(str), mrd["day"].to_numpy(float), detected):
        i = position.get(pid)
        if i is None or not positive or day < response_day[i]:
            continue
        s = (day - response_day[i]) / DAYS_PER_YEAR
        if s < end_years[i]:  # an assessment on the relapse day itself is not a predictor of it
            out[i] = min(out[i], s)
    return out, True


def to_joint_inputs(cohort, *, covariates: list[str] | tuple[str, ...] = (), mrd_submodel: bool = False
                    ) -> JointInputs:
    """Link the CAR-T data and the relapse outcome; raises ``ModelDataError`` naming what is missing.

    Refused (besides what :func:`to_cart_inputs` and :func:`to_durability_inputs` refuse, and with
    ``mrd_submodel`` what :func:`to_mrd_inputs` refuses): a cohort without a recorded LLOQ (loss of
    CAR-T is defined by it).
    """
    cart = to_cart_inputs(cohort)
    relapse = to_durability_inputs(cohort, endpoint="relapse", hsct="censor", covariates=covariates)
    position = {pid: i for i, pid in enumerate(cart.patient_ids)}
    index = np.array([position[pid] for pid in relapse.patient_ids], dtype=np.int64)
    if not np.isfinite(cart.patient_lloq[index]).all():
        raise ModelDataError("cart_kinetics.csv records no LLOQ for some responders, so loss of CAR-T (the level "
                             "falling below the LLOQ) is undefined; fill the lloq column")
    outcomes = cohort.outcomes.set_index(cohort.outcomes["patient_id"].astype(str))
    response_day = outcomes.loc[relapse.patient_ids, "response_day"].to_numpy(float)
    mrd_years, has_mrd = first_mrd_positive_years(cohort, relapse.patient_ids, response_day, relapse.time_years)
    mrd, mrd_index = None, None
    if mrd_submodel:
        mrd = to_mrd_inputs(cohort)
        row = {pid: i for i, pid in enumerate(mrd.patient_ids)}
        mrd_index = np.array([row.get(pid, -1) for pid in relapse.patient_ids], dtype=np.int64)
    return JointInputs(cart=cart, relapse=relapse, cart_index=index, response_day=response_day,
                       log_lloq=np.log(cart.patient_lloq[index]), mrd_positive_years=mrd_years, has_mrd=has_mrd,
                       mrd=mrd, mrd_index=mrd_index)
