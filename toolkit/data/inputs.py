"""Model inputs: the one place where cohort rows become arrays and indices.

Each ``to_<model>_inputs`` returns a frozen dataclass of numpy arrays plus
the coordinate labels the model's dims use. Problems that make a model
meaningless on this cohort raise ``ModelDataError`` with a plain message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from toolkit.data.endpoints import time_to_event

DAYS_PER_YEAR = 365.25


class ModelDataError(ValueError):
    """The cohort cannot support the requested model; the message says why and what to do."""


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
    non-response part of ``efs``.
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
    rfs_endpoint = "relapse" if endpoint == "relapse" else "rfs"
    tte = time_to_event(cohort, endpoint=rfs_endpoint, hsct=hsct)
    if len(tte) == 0:
        raise ModelDataError("no patient reached remission (CR/CRi), so remission durability cannot be analysed")
    covariates = list(covariates)
    unknown = [c for c in covariates if c not in cohort.covariate_columns]
    if unknown:
        raise ModelDataError(f"unknown covariate(s) {', '.join(unknown)}; numeric columns of patients.csv: "
                             f"{', '.join(cohort.covariate_columns) or 'none'}")
    for c in covariates:
        missing = tte.loc[tte[c].isna(), "patient_id"].tolist()
        if missing:
            raise ModelDataError(f"covariate {c} is blank for {len(missing)} analysed patient(s) "
                                 f"({', '.join(missing[:10])}); fill it in or leave the covariate out")
        if np.nanstd(tte[c].to_numpy(float)) == 0:
            raise ModelDataError(f"covariate {c} has the same value ({tte[c].iloc[0]:g}) for every analysed patient, "
                                 "so its effect cannot be estimated; leave it out")
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
        warnings=tuple(warnings),
    )
