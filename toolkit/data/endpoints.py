"""Time-to-event endpoints derived from outcomes.csv, with stated policies.

This is the one place where outcome rows become (time, event) pairs; the
descriptive tables and the survival models both use it.

Endpoints (time in days):

- ``rfs`` (default): responders only; origin = response_day; event =
  relapse or death in remission; censored at last follow-up.
- ``relapse``: as ``rfs`` but only relapse is the event of interest; death
  in remission is a competing event (``cause == "death"``, ``event == 0``).
- ``efs``: every infused patient; origin = infusion (day 0); event =
  non-response (at day 0), relapse or death; censored at last follow-up.
  Non-response is dated day 0, as in the ELIANA and ZUMA-3 EFS definitions
  (Maude et al., N Engl J Med 2018; Shah et al., Lancet 2021), so the curve
  starts at the response rate; the durability model builds EFS the same way,
  P(response) times relapse-free survival from the response day.

Transplant policy for a consolidative HSCT in remission (before the event):

- ``censor`` (default): follow-up ends at the HSCT day (hypothetical
  estimand: durability without consolidation);
- ``timevarying``: follow-up continues; ``hsct_time`` (days from origin)
  marks when the post-HSCT hazard multiplier starts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ENDPOINTS = ("rfs", "relapse", "efs")
HSCT_POLICIES = ("censor", "timevarying")


def time_to_event(cohort, *, endpoint: str = "rfs", hsct: str = "censor") -> pd.DataFrame:
    """One row per patient in the endpoint's population.

    Columns: ``patient_id``, ``arm`` (0 control, 1 experimental), ``time``,
    ``event`` (1 = event of interest), ``cause`` (``relapse``, ``death``,
    ``nonresponse``, ``hsct`` or ``censored``), ``hsct_time`` (NaN if none or
    censored at it), plus the patients.csv covariates.
    """
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; valid: {', '.join(ENDPOINTS)}")
    if hsct not in HSCT_POLICIES:
        raise ValueError(f"unknown HSCT policy {hsct!r}; valid: {', '.join(HSCT_POLICIES)}")
    df = cohort.merged()
    df["arm"] = (df["arm"] == cohort.experimental_arm).astype(int)
    responder = df["response"].isin(["CR", "CRi"])
    if endpoint == "efs":
        origin = pd.Series(0.0, index=df.index)
    else:
        df, origin = df[responder].copy(), df.loc[responder, "response_day"]
        responder = responder[responder]
    inf = np.inf
    relapse = df["relapse_day"].fillna(inf)
    death = df["death_day"].fillna(inf)
    hsct_day = df["hsct_day"].fillna(inf)
    followup = df["last_followup_day"]
    first = np.minimum(relapse, death)
    in_remission_hsct = responder & (hsct_day < first)
    cause = np.select([relapse <= death, death < relapse], ["relapse", "death"], "censored")
    cause = np.where(np.isfinite(first), cause, "censored")
    end = np.where(np.isfinite(first), first, followup)
    if endpoint == "efs":
        nr = ~responder
        cause = np.where(nr, "nonresponse", cause)
        end = np.where(nr, 0.0, end)
    hsct_time = np.where(in_remission_hsct, hsct_day - origin, np.nan)
    if hsct == "censor":
        cens = in_remission_hsct.to_numpy()
        cause = np.where(cens, "hsct", cause)
        end = np.where(cens, hsct_day, end)
        hsct_time = np.full(len(df), np.nan)
    event_causes = {"rfs": ("relapse", "death"), "relapse": ("relapse",),
                    "efs": ("relapse", "death", "nonresponse")}[endpoint]
    out = pd.DataFrame({
        "patient_id": df["patient_id"].to_numpy(),
        "arm": df["arm"].to_numpy(),
        "time": np.asarray(end, dtype=float) - np.asarray(origin, dtype=float),
        "event": np.isin(cause, event_causes).astype(int),
        "cause": cause,
        "hsct_time": hsct_time,
    })
    for column in cohort.covariate_columns:
        out[column] = df[column].to_numpy()
    return out.reset_index(drop=True)
