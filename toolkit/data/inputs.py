"""Model inputs: the one place where cohort rows become arrays and indices.

Each ``to_<model>_inputs`` returns a frozen dataclass of numpy arrays plus
the coordinate labels the model's dims use. Problems that make a model
meaningless on this cohort raise ``ModelDataError`` with a plain message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from toolkit.data.endpoints import time_to_event
from toolkit.data.units import find_cart_unit, unknown_unit_fix

DAYS_PER_YEAR = 365.25


class ModelDataError(ValueError):
    """The cohort cannot support the requested model; the message says why and what to do."""


def check_covariates(frame, covariates: list[str], available: list[str]) -> None:
    """Refuse unknown, blank or constant covariates among the analysed patients (rows of ``frame``)."""
    unknown = [c for c in covariates if c not in available]
    if unknown:
        raise ModelDataError(f"unknown covariate(s) {', '.join(unknown)}; numeric columns of patients.csv: "
                             f"{', '.join(available) or 'none'}")
    for c in covariates:
        missing = frame.loc[frame[c].isna(), "patient_id"].astype(str).tolist()
        if missing:
            raise ModelDataError(f"covariate {c} is blank for {len(missing)} analysed patient(s) "
                                 f"({', '.join(missing[:10])}); fill it in or leave the covariate out")
        if np.nanstd(frame[c].to_numpy(float)) == 0:
            raise ModelDataError(f"covariate {c} has the same value ({frame[c].iloc[0]:g}) for every analysed "
                                 "patient, so its effect cannot be estimated; leave it out")


@dataclass(frozen=True)
class DurabilityInputs:
    """Relapse-free survival data for ``toolkit.models.durability``.

    Times are in **years** from the response day (models are better
    conditioned in years; horizons are converted back to days in outputs).
    ``x_std`` holds the covariates standardized with ``x_mean``/``x_sd``, so
    a coefficient per unit of the covariate is ``beta_std / x_sd``.
    ``hsct_years`` is +inf where there is no transplant in follow-up
    (``timevarying`` policy only). ``competing`` marks death in remission
    for the ``relapse`` endpoint. ``responded`` (all infused patients) feeds the
    non-response part of ``efs``; ``response_day`` is the responders' median
    response day (days since infusion), where EFS's remission clock starts.
    """

    patient_ids: list[str]
    arm: np.ndarray
    time_years: np.ndarray
    event: np.ndarray
    covariates: list[str]
    x_std: np.ndarray
    x_mean: np.ndarray
    x_sd: np.ndarray
    endpoint: str
    hsct: str
    arm_labels: tuple[str, str]
    hsct_years: np.ndarray = field(default_factory=lambda: np.zeros(0))
    competing: np.ndarray = field(default_factory=lambda: np.zeros(0))
    responded: np.ndarray = field(default_factory=lambda: np.zeros(0))
    responded_arm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    response_day: float = 28.0
    warnings: tuple[str, ...] = ()

    @property
    def n_patients(self) -> int:
        return len(self.patient_ids)


def to_durability_inputs(cohort, *, endpoint: str = "rfs", hsct: str = "censor",
                         covariates: list[str] | tuple[str, ...] = ()) -> DurabilityInputs:
    """Arrays for the durability model; raises ``ModelDataError`` when the data cannot support it.

    Refused: no events at all; a covariate that is unknown, has blanks among
    the analysed patients, or does not vary. Warned (and stored with the
    fit): an arm with no events, where the hazard ratio is informed mainly by
    the prior.
    """
    # efs uses the responders' remission data too: the model multiplies their RFS by P(response) (the
    # non-responders' event at day 0 enters through the response part, ``responded``)
    rfs_endpoint = "relapse" if endpoint == "relapse" else "rfs"
    tte = time_to_event(cohort, endpoint=rfs_endpoint, hsct=hsct)
    if len(tte) == 0:
        raise ModelDataError("no patient reached remission (CR/CRi), so remission durability cannot be analysed")
    covariates = list(covariates)
    check_covariates(tte, covariates, cohort.covariate_columns)
    events = tte["event"].to_numpy(int)
    if events.sum() == 0:
        what = "relapses" if endpoint == "relapse" else "relapses or deaths in remission"
        raise ModelDataError(f"the cohort has no {what} among its {len(tte)} responders, so there is nothing to "
                             "estimate a hazard from; the Kaplan-Meier curve (toolkit describe) is flat at 1")
    warnings = []
    for code, label in enumerate(cohort.arms):
        in_arm = tte["arm"] == code
        if in_arm.sum() == 0:
            raise ModelDataError(f"arm '{label}' has no responders, so the arms cannot be compared")
        if events[in_arm.to_numpy()].sum() == 0:
            warnings.append(f"arm '{label}' has no events: the hazard ratio is bounded only on one side and "
                            "its interval reflects the prior more than the data")
    x = tte[covariates].to_numpy(float) if covariates else np.zeros((len(tte), 0))
    mean, sd = x.mean(axis=0), x.std(axis=0)
    time = tte["time"].to_numpy(float) / DAYS_PER_YEAR
    # a relapse on the response day itself would have zero time; half a day keeps the density finite
    time = np.maximum(time, 0.5 / DAYS_PER_YEAR)
    merged = cohort.merged()
    responded = merged["response"].isin(["CR", "CRi"]).to_numpy(int)
    return DurabilityInputs(
        patient_ids=tte["patient_id"].tolist(),
        arm=tte["arm"].to_numpy(int),
        time_years=time,
        event=events,
        covariates=covariates,
        x_std=(x - mean) / np.where(sd > 0, sd, 1.0),
        x_mean=mean,
        x_sd=sd,
        endpoint=endpoint,
        hsct=hsct,
        arm_labels=cohort.arms,
        hsct_years=np.where(np.isfinite(tte["hsct_time"]), tte["hsct_time"] / DAYS_PER_YEAR, np.inf),
        competing=(tte["cause"] == "death").to_numpy(int),
        responded=responded,
        responded_arm=(merged["arm"] == cohort.experimental_arm).to_numpy(int),
        response_day=float(np.nanmedian(merged.loc[responded == 1, "response_day"].to_numpy(float))),
        warnings=tuple(warnings),
    )


# --------------------------------------------------------------------------- the kinetic cut

#: Outcome columns whose first filled day ends a patient's kinetic data (CAR-T and MRD): after an
#: allogeneic transplant (conditioning ablates CAR-T cells and clears disease), a relapse (salvage therapy)
#: or a CAR-T re-infusion / other anti-CD19 therapy, samples no longer follow the first infusion's course.
KINETIC_CUT_COLUMNS = ("hsct_day", "relapse_day", "new_therapy_day")
KINETIC_CUT_WHAT = "an allogeneic HSCT, a relapse or a new anti-CD19 therapy (CAR-T re-infusion or other)"


def kinetic_cut_day(cohort):
    """Each patient's first day of HSCT, relapse or new therapy (``KINETIC_CUT_COLUMNS``), NaN if none.

    Returns a float Series indexed by ``patient_id`` (str). A column the cohort does not have
    (``new_therapy_day`` is optional) counts as blank.
    """
    outcomes = cohort.outcomes
    days = [outcomes[c].astype(float) for c in KINETIC_CUT_COLUMNS if c in outcomes.columns]
    first = np.fmin.reduce([d.to_numpy() for d in days]) if days else np.full(len(outcomes), np.nan)
    import pandas as pd

    return pd.Series(first, index=outcomes["patient_id"].astype(str).to_numpy(), dtype=float)


def rows_after_kinetic_cut(rows, cut_day) -> np.ndarray:
    """Boolean mask of ``rows`` (``patient_id``, ``day``) taken after the patient's cut day.

    A sample **on** the cut day is kept: it was drawn before the transplant or the new therapy, and on a
    relapse day it is the natural course up to the relapse (for MRD, the relapse assessment itself).
    """
    limit = rows["patient_id"].astype(str).map(cut_day).to_numpy(float)
    day = rows["day"].to_numpy(float)
    with np.errstate(invalid="ignore"):
        return np.isfinite(limit) & (day > limit)


def kinetic_cut_warning(n_cut: int, n_patients: int, what: str) -> str:
    """The warning a fit stores (summary.json ``warnings``) and the report shows for cut samples."""
    return (f"{n_cut} {what} of {n_patients} patient(s) taken after {KINETIC_CUT_WHAT} are left out of the "
            "kinetic likelihood: they no longer follow the first infusion's natural course (samples on the "
            "event day itself are kept)")


# --------------------------------------------------------------------------- CAR-T kinetics


@dataclass(frozen=True)
class CartInputs:
    """CAR-T transgene levels for ``toolkit.models.cart``, one entry a sample.

    ``log_value`` is log(value) for quantified samples and 0 where the sample
    is below the LLOQ (``censored`` = 1); those enter the likelihood through
    P(log y < ``log_lloq``) at their own row's limit, never as a number.
    ``log_lloq`` is the row's limit (for quantified rows without a limit, the
    patient's usual limit, else the cohort's; it is not used by the
    likelihood there). ``patient_lloq`` is each patient's usual (median)
    limit, the level that defines time above the LLOQ (NaN when the cohort
    records no limit at all). ``arm`` is 1 for the experimental arm. ``unit`` is the canonical name of
    the file's unit (``toolkit.data.units``), which sets the prior centre of log Cmax.
    Covariates are standardized as in :class:`DurabilityInputs`.
    """

    patient_ids: list[str]
    arm: np.ndarray
    sample_patient: np.ndarray
    day: np.ndarray
    log_value: np.ndarray
    censored: np.ndarray
    log_lloq: np.ndarray
    patient_lloq: np.ndarray
    covariates: list[str]
    x_std: np.ndarray
    x_mean: np.ndarray
    x_sd: np.ndarray
    arm_labels: tuple[str, str]
    unit: str = "copies/ug"
    n_cut_samples: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def n_patients(self) -> int:
        return len(self.patient_ids)

    @property
    def n_samples(self) -> int:
        return int(self.day.size)


def to_cart_inputs(cohort, *, covariates: list[str] | tuple[str, ...] = ()) -> CartInputs:
    """Arrays for the CAR-T kinetics model; raises ``ModelDataError`` when the data cannot support it.

    Every patient in ``patients.csv`` is analysed. Refused: no ``cart_kinetics``
    table (or an empty one); a patient without any sample (named); a quantified
    value of 0 (it should be written BLQ); a censored sample without a limit;
    an arm without patients; a covariate that is unknown, blank for some patient
    or constant. Kept, with a warning: a patient whose samples are all below the
    LLOQ (the censored likelihood still says their curve stayed low). Cut, with a warning and the count
    in ``n_cut_samples``: samples taken after the patient's first HSCT, relapse or new therapy
    (:func:`kinetic_cut_day`; a sample on that day is kept).
    """
    import pandas as pd

    cart = cohort.cart
    if cart is None or len(cart) == 0:
        raise ModelDataError("the cohort has no CAR-T kinetics (cart_kinetics.csv is missing or has no rows), "
                             "so the CAR-T kinetic model cannot be fitted; add the file (see data_templates)")
    patients = cohort.patients.reset_index(drop=True)
    ids = patients["patient_id"].astype(str).tolist()
    cart = cart[["patient_id", "day", "value", "below_lloq", "lloq_used", "unit"]].copy()
    cart["patient_id"] = cart["patient_id"].astype(str)
    unknown_ids = sorted(set(cart["patient_id"]) - set(ids))
    if unknown_ids:
        raise ModelDataError(f"cart_kinetics.csv has samples of patient(s) not in patients.csv: "
                             f"{', '.join(unknown_ids[:10])}")
    after = rows_after_kinetic_cut(cart, kinetic_cut_day(cohort))
    n_cut, n_cut_patients = int(after.sum()), int(cart.loc[after, "patient_id"].nunique())
    cart = cart.loc[~after]
    without = [pid for pid in ids if pid not in set(cart["patient_id"])]
    if without:
        cut_note = (f" before {KINETIC_CUT_WHAT} (later samples are not used)" if n_cut else " at all")
        raise ModelDataError(f"{len(without)} patient(s) have no CAR-T sample{cut_note}: {', '.join(without[:10])}"
                             f"{' ...' if len(without) > 10 else ''}; add their samples to cart_kinetics.csv "
                             "or remove them from the analysis")
    quantified = ~cart["below_lloq"].to_numpy(bool)
    zero = cart.index[quantified & ~(cart["value"].to_numpy(float) > 0)]
    if len(zero):
        rows = ", ".join(str(r) for r in zero[:10])
        raise ModelDataError(f"cart_kinetics.csv row(s) {rows} have a quantified value of 0, which has no "
                             "logarithm; write BLQ (or <LLOQ) for a sample below the limit")
    no_limit = cart.index[~quantified & ~(cart["lloq_used"].to_numpy(float) > 0)]
    if len(no_limit):
        rows = ", ".join(str(r) for r in no_limit[:10])
        raise ModelDataError(f"cart_kinetics.csv row(s) {rows} are below the LLOQ but have no positive LLOQ; "
                             "write the assay's limit in lloq (or the value as <LLOQ)")
    arm_series = cohort.is_experimental()
    arm = arm_series.reindex(ids).to_numpy(int)
    for code, label in enumerate(cohort.arms):
        if not (arm == code).any():
            raise ModelDataError(f"arm '{label}' has no patients, so the arms cannot be compared")
    covariates = list(covariates)
    check_covariates(patients, covariates, cohort.covariate_columns)
    x = patients[covariates].to_numpy(float) if covariates else np.zeros((len(ids), 0))
    mean, sd = x.mean(axis=0), x.std(axis=0)

    index = {pid: i for i, pid in enumerate(ids)}
    cart = cart.sort_values(["patient_id", "day"], key=lambda s: s.map(index) if s.name == "patient_id" else s,
                            kind="stable")
    sample_patient = cart["patient_id"].map(index).to_numpy(int)
    limits = cart["lloq_used"].to_numpy(float)
    limits = np.where(limits > 0, limits, np.nan)
    per_patient = pd.Series(limits).groupby(sample_patient).median().reindex(range(len(ids)))
    cohort_limit = float(np.nanmedian(limits)) if np.isfinite(limits).any() else np.nan
    patient_lloq = per_patient.fillna(cohort_limit).to_numpy(float)
    fill = patient_lloq[sample_patient]
    row_lloq = np.where(np.isfinite(limits), limits, np.where(np.isfinite(fill), fill, 1.0))
    censored = cart["below_lloq"].to_numpy(bool)
    values = cart["value"].to_numpy(float)
    log_value = np.where(censored, 0.0, np.log(np.where(censored, 1.0, values)))

    warnings = []
    all_blq = [ids[i] for i in range(len(ids)) if censored[sample_patient == i].all()]
    if all_blq:
        warnings.append(f"{len(all_blq)} patient(s) have every sample below the LLOQ; "
                        "they are kept, and their curves are informed by the censored likelihood and the population")
    if n_cut:
        warnings.append(kinetic_cut_warning(n_cut, n_cut_patients, "CAR-T sample(s)"))
    units = {find_cart_unit(u) for u in cart["unit"].dropna().astype(str)}
    if None in units or len(units) > 1:  # validation refuses both; this guards cohorts built in code
        raise ModelDataError(f"cart_kinetics.csv unit: {unknown_unit_fix()}; one unit for the whole file")
    unit = units.pop().name if units else "copies/ug"
    return CartInputs(
        patient_ids=ids,
        arm=arm,
        sample_patient=sample_patient,
        day=cart["day"].to_numpy(float),
        log_value=log_value,
        censored=censored.astype(np.int8),
        log_lloq=np.log(row_lloq),
        patient_lloq=patient_lloq,
        covariates=covariates,
        x_std=(x - mean) / np.where(sd > 0, sd, 1.0),
        x_mean=mean,
        x_sd=sd,
        arm_labels=cohort.arms,
        unit=unit,
        n_cut_samples=n_cut,
        warnings=tuple(warnings),
    )
