"""Model inputs of the MRD kinetic model (``toolkit.models.mrd``).

``to_mrd_inputs`` is the one place where ``mrd.csv`` rows become arrays and
integer indices for that model. It follows ``toolkit.data.inputs``: a frozen
dataclass of numpy arrays plus the labels the model's dims use, and
``ModelDataError`` with a plain message when the cohort cannot support the
model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.data.inputs import (
    ModelDataError,
    check_covariates,
    kinetic_cut_day,
    kinetic_cut_warning,
    rows_after_kinetic_cut,
)

__all__ = ["CENSORING_CODES", "MrdInputs", "to_mrd_inputs"]

#: Censoring code per assessment: quantified value, below the detection limit, positive not quantifiable.
CENSORING_CODES = {"none": 0, "below_lod": 1, "pnq": 2}
#: Which method's scale is "true MRD" when present, in order of preference (most sensitive, unbiased first).
REFERENCE_PREFERENCE = ("ngs", "qpcr", "flow")
METHOD_ORDER = ("flow", "ngs", "qpcr")
RESPONSES = ("CR", "CRi")


@dataclass(frozen=True)
class MrdInputs:
    """MRD assessments of responders, one entry an assessment, values on the log10 **fraction** scale.

    Patients (dim ``patient``) are the responders (CR/CRi) with at least one
    MRD assessment, in ``patients.csv`` order; non-responders' assessments are
    not kinetic data (their disease never cleared) and are left out, but every
    infused patient enters the response part (dim ``infused``).

    Per assessment (dim ``assessment``, sorted by patient, day, method):
    ``assessment_patient`` (index into ``patient_ids``), ``assessment_visit``
    (position within the patient, 0-based), ``day`` (days since infusion),
    ``log10_value`` (log10 of mrd_pct/100; NaN when censored), ``censoring``
    (``CENSORING_CODES``: 0 quantified, 1 below the detection limit, 2 PNQ),
    ``log10_lod`` (log10 of the row's detection limit as a fraction; NaN only
    for a quantified row without a limit, where the likelihood does not use
    it), ``log10_loq`` (the quantification limit; equal to ``log10_lod`` where
    the file has none; used only for PNQ rows), ``method`` (index into
    ``methods``), ``peripheral_blood`` (1 for PB specimens).

    Per patient: ``arm`` (1 experimental), ``baseline_log10`` (log10 of
    baseline_blasts_pct/100; NaN where blank, flagged in ``baseline_missing``).
    ``baseline_log10_mean``/``baseline_log10_sd`` describe the observed
    baseline burdens of all infused patients (the population prior of a blank
    one; NaN when fewer than 3 are known). Covariates are standardized over
    the analysed patients as in ``DurabilityInputs`` (``beta_std / x_sd`` is
    per unit).

    ``reference_method`` is the method whose scale is "true MRD" (offset fixed
    at 0): NGS if present, else qPCR, else flow.
    """

    patient_ids: list[str]
    arm: np.ndarray
    baseline_log10: np.ndarray
    baseline_missing: np.ndarray
    baseline_log10_mean: float
    baseline_log10_sd: float
    assessment_patient: np.ndarray
    assessment_visit: np.ndarray
    day: np.ndarray
    log10_value: np.ndarray
    censoring: np.ndarray
    log10_lod: np.ndarray
    log10_loq: np.ndarray
    method: np.ndarray
    peripheral_blood: np.ndarray
    methods: tuple[str, ...]
    reference_method: str
    covariates: list[str]
    x_std: np.ndarray
    x_mean: np.ndarray
    x_sd: np.ndarray
    infused_ids: list[str]
    infused_arm: np.ndarray
    responded: np.ndarray
    arm_labels: tuple[str, str]
    n_excluded_assessments: int = 0
    n_cut_assessments: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def n_patients(self) -> int:
        return len(self.patient_ids)

    @property
    def n_assessments(self) -> int:
        return int(self.day.size)

    @property
    def n_visits(self) -> int:
        """Most assessments of one patient (the padded width of the per-patient likelihood)."""
        return int(self.assessment_visit.max()) + 1 if self.n_assessments else 0


def to_mrd_inputs(cohort, *, covariates: list[str] | tuple[str, ...] = ()) -> MrdInputs:
    """Arrays for the MRD model; raises ``ModelDataError`` when the data cannot support it.

    Refused (each with the reason and the fix): no ``mrd`` table or no rows;
    assessments of patients not in ``patients.csv``; no responder (CR/CRi)
    with an assessment; an arm without such a responder; a censored row
    without a positive detection limit; a PNQ row whose quantification limit
    is not above its detection limit; a baseline_blasts_pct of 0; a covariate
    that is unknown, blank for an analysed patient or constant.

    Kept: a patient whose assessments are all negative (the censored
    likelihood at each row's own limit says their MRD stayed low); a blank
    baseline_blasts_pct (that patient's starting burden gets the population
    prior). Warned: responders without any assessment (left out of the
    kinetic part, still counted as responders), non-responders' assessments
    (left out); assessments taken after the patient's first HSCT, relapse or new therapy
    (``toolkit.data.inputs.kinetic_cut_day``; counted in ``n_cut_assessments``). An assessment on that
    day is kept: on a relapse day it is the relapse assessment itself, the regrowth the MRD model's
    recurrence estimands are about. The joint model uses these inputs too and keeps it as well: only the
    kill rate links its MRD submodel to the relapse hazard, and the relapse-day value informs the
    regrowth, not the kill rate, so the relapse is not counted twice (its MRD marker association already
    ignores the relapse-day assessment, ``toolkit.data.joint_inputs.first_mrd_positive_years``).
    """
    mrd = cohort.mrd
    if mrd is None:
        raise ModelDataError("the cohort has no MRD file (mrd.csv is missing), so the MRD kinetic model cannot "
                             "be fitted; add the file (see data_templates/mrd.csv)")
    if len(mrd) == 0:
        raise ModelDataError("mrd.csv has no assessments, so the MRD kinetic model cannot be fitted; "
                             "add one row per MRD assessment (see data_templates/mrd.csv)")
    patients = cohort.patients.reset_index(drop=True).copy()
    patients["patient_id"] = patients["patient_id"].astype(str)
    all_ids = patients["patient_id"].tolist()
    mrd = mrd.copy()
    mrd["patient_id"] = mrd["patient_id"].astype(str)
    unknown_ids = sorted(set(mrd["patient_id"]) - set(all_ids))
    if unknown_ids:
        raise ModelDataError(f"mrd.csv has assessments of patient(s) not in patients.csv: "
                             f"{', '.join(unknown_ids[:10])}")

    outcomes = cohort.outcomes.copy()
    outcomes["patient_id"] = outcomes["patient_id"].astype(str)
    response = outcomes.set_index("patient_id")["response"].reindex(all_ids)
    responded = response.isin(RESPONSES).to_numpy(int)
    arm_all = cohort.is_experimental().reindex(all_ids).to_numpy(int)
    responder_ids = [pid for pid, r in zip(all_ids, responded) if r]

    nonresponder_rows = ~mrd["patient_id"].isin(responder_ids)
    n_excluded = int(nonresponder_rows.sum())
    mrd = mrd.loc[~nonresponder_rows]
    after = rows_after_kinetic_cut(mrd, kinetic_cut_day(cohort))
    n_cut, n_cut_patients = int(after.sum()), int(mrd.loc[after, "patient_id"].nunique())
    mrd = mrd.loc[~after]
    if len(mrd) == 0:
        raise ModelDataError("no responder (CR/CRi in outcomes.csv) has an MRD assessment, so there is no MRD "
                             "kinetics to model; non-responders' assessments are not used")
    with_data = set(mrd["patient_id"])
    ids = [pid for pid in responder_ids if pid in with_data]
    without = [pid for pid in responder_ids if pid not in with_data]
    index = {pid: i for i, pid in enumerate(ids)}
    arm = arm_all[[all_ids.index(pid) for pid in ids]]
    for code, label in enumerate(cohort.arms):
        if not (arm == code).any():
            raise ModelDataError(f"arm '{label}' has no responder with an MRD assessment, so the arms cannot "
                                 "be compared")

    mrd = mrd.assign(_p=mrd["patient_id"].map(index), _m=mrd["method"].map({m: i for i, m in enumerate(METHOD_ORDER)}))
    mrd = mrd.sort_values(["_p", "day", "_m"], kind="stable")
    code = mrd["censoring"].map(CENSORING_CODES)
    if code.isna().any():
        bad = mrd.index[code.isna()]
        raise ModelDataError(f"mrd.csv row(s) {', '.join(map(str, bad[:10]))} have an unreadable mrd_pct; "
                             "run toolkit validate")
    code = code.to_numpy(np.int8)
    lod = mrd["lod_used"].to_numpy(float) if "lod_used" in mrd else mrd["lod_pct"].to_numpy(float)
    loq = mrd["loq_pct"].to_numpy(float) if "loq_pct" in mrd else np.full(len(mrd), np.nan)
    no_limit = (code > 0) & ~(lod > 0)
    if no_limit.any():
        rows = ", ".join(str(r) for r in mrd.index[no_limit][:10])
        raise ModelDataError(f"mrd.csv row(s) {rows} are below the detection limit or PNQ but have no positive "
                             "lod_pct; write the assay's detection limit in lod_pct")
    bad_pnq = (code == 2) & ~(loq > lod)
    if bad_pnq.any():
        rows = ", ".join(str(r) for r in mrd.index[bad_pnq][:10])
        raise ModelDataError(f"mrd.csv row(s) {rows} are PNQ but loq_pct is not above lod_pct, so there is no "
                             "interval between detection and quantification; check both limits")
    value = mrd["mrd_pct"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log10_value = np.where(code == 0, np.log10(value / 100.0), np.nan)
        log10_lod = np.where(lod > 0, np.log10(lod / 100.0), np.nan)
        log10_loq = np.where(loq > 0, np.log10(loq / 100.0), log10_lod)
    sample_patient = mrd["_p"].to_numpy(int)
    visit = mrd.groupby("_p").cumcount().to_numpy(int)
    methods = tuple(m for m in METHOD_ORDER if m in set(mrd["method"]))
    method = mrd["method"].map({m: i for i, m in enumerate(methods)}).to_numpy(int)
    reference = next(m for m in REFERENCE_PREFERENCE if m in methods)

    analysed = patients.set_index("patient_id").loc[ids].reset_index()
    blasts = analysed["baseline_blasts_pct"].to_numpy(float)
    zero = analysed.loc[blasts <= 0, "patient_id"].tolist()
    if zero:
        raise ModelDataError(f"baseline_blasts_pct is 0 for {', '.join(zero[:10])}; the model starts MRD at log10 "
                             "of the baseline burden, which needs a positive value: write the measured value "
                             "(e.g. 0.5 for 'under 1 %') or leave the cell blank (then the population prior is used)")
    with np.errstate(divide="ignore", invalid="ignore"):
        baseline = np.log10(blasts / 100.0)
        known = np.log10(patients["baseline_blasts_pct"].to_numpy(float) / 100.0)
    known = known[np.isfinite(known)]
    pop_mean, pop_sd = (float(known.mean()), float(known.std(ddof=1))) if known.size >= 3 else (np.nan, np.nan)

    covariates = list(covariates)
    check_covariates(analysed, covariates, cohort.covariate_columns)
    x = analysed[covariates].to_numpy(float) if covariates else np.zeros((len(ids), 0))
    mean, sd = x.mean(axis=0), x.std(axis=0)

    warnings = []
    if without:
        warnings.append(f"{len(without)} responder(s) have no MRD assessment ({', '.join(without[:10])}); they are "
                        "left out of the kinetic part and still count as responders")
    if n_excluded:
        warnings.append(f"{n_excluded} assessment(s) of non-responders are not used: their disease did not clear, "
                        "so they carry no clearance or recurrence information; every MRD estimate is among responders")
    if n_cut:
        warnings.append(kinetic_cut_warning(n_cut, n_cut_patients, "MRD assessment(s)"))
    missing = [pid for pid, b in zip(ids, baseline) if not np.isfinite(b)]
    if missing:
        warnings.append(f"{len(missing)} analysed patient(s) have a blank baseline_blasts_pct "
                        f"({', '.join(missing[:10])}); their starting burden gets the population prior")
    all_negative = [pid for i, pid in enumerate(ids) if (code[sample_patient == i] == 1).all()]
    if all_negative and len(all_negative) == len(ids):
        warnings.append("every assessment is below its detection limit: floors and regrowth are informed by the "
                        "priors only")
    return MrdInputs(
        patient_ids=ids,
        arm=arm.astype(int),
        baseline_log10=baseline,
        baseline_missing=~np.isfinite(baseline),
        baseline_log10_mean=pop_mean,
        baseline_log10_sd=pop_sd,
        assessment_patient=sample_patient,
        assessment_visit=visit,
        day=mrd["day"].to_numpy(float),
        log10_value=log10_value,
        censoring=code,
        log10_lod=log10_lod,
        log10_loq=log10_loq,
        method=method,
        peripheral_blood=(mrd["specimen"].astype(str) == "PB").to_numpy(np.int8),
        methods=methods,
        reference_method=reference,
        covariates=covariates,
        x_std=(x - mean) / np.where(sd > 0, sd, 1.0),
        x_mean=mean,
        x_sd=sd,
        infused_ids=all_ids,
        infused_arm=arm_all.astype(int),
        responded=responded.astype(int),
        arm_labels=cohort.arms,
        n_excluded_assessments=n_excluded,
        n_cut_assessments=n_cut,
        warnings=tuple(warnings),
    )
