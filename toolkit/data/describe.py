"""Cohort summary tables: what a statistician looks at before fitting anything."""

from __future__ import annotations

import numpy as np
import pandas as pd

from toolkit.data.endpoints import time_to_event
from toolkit.survival import kaplan_meier, median_survival, survival_at

KM_DAYS = (90, 180, 365, 730)


def describe_cohort(cohort, *, km_days=KM_DAYS) -> dict[str, pd.DataFrame]:
    """Summary tables keyed by name: ``arms``, ``rfs``, ``samples``.

    ``arms``: patients, responses, events and follow-up per arm.
    ``rfs``: Kaplan-Meier relapse-free survival (from response, censored at
    HSCT) per arm at ``km_days``, with the 90% Greenwood log-log interval.
    ``samples``: kinetic samples per assay and the share below the limit.
    """
    merged = cohort.merged()
    arms = []
    for label in cohort.arms:
        sub = merged[merged["arm"] == label]
        resp = sub["response"].isin(["CR", "CRi"])
        # reverse Kaplan-Meier: median potential follow-up
        fu_km = kaplan_meier(sub["last_followup_day"], sub["death_day"].isna())
        arms.append({
            "arm": label,
            "patients": len(sub),
            "CR/CRi": int(resp.sum()),
            "response rate": resp.mean() if len(sub) else np.nan,
            "relapses": int(sub["relapse_day"].notna().sum()),
            "CD19-negative relapses": int((sub["relapse_cd19"] == "negative").sum()),
            "HSCT after CAR-T": int(sub["hsct_day"].notna().sum()),
            "deaths": int(sub["death_day"].notna().sum()),
            "median follow-up (days)": median_survival(fu_km),
        })
    tte = time_to_event(cohort, endpoint="rfs", hsct="censor")
    rfs = []
    for code, label in enumerate(cohort.arms):
        sub = tte[tte["arm"] == code]
        if len(sub) == 0:
            continue
        km = kaplan_meier(sub["time"], sub["event"])
        row = {"arm": label, "responders": len(sub), "events": int(sub["event"].sum()),
               "median RFS (days)": median_survival(km)}
        for day, s in zip(km_days, survival_at(km, km_days)):
            idx = np.searchsorted(km["time"].to_numpy(), day, side="right") - 1
            lo, hi = km["lower"].iat[idx], km["upper"].iat[idx]
            row[f"RFS {day}d"] = f"{s:.2f} ({lo:.2f}-{hi:.2f})" if np.isfinite(s) else "not reached"
        rfs.append(row)
    samples = []
    if cohort.cart is not None and len(cohort.cart):
        c = cohort.cart
        samples.append({"assay": f"CAR-T qPCR ({c['unit'].iat[0]})", "samples": len(c),
                        "patients": c["patient_id"].nunique(),
                        "below limit": int(c["below_lloq"].sum()), "share below limit": c["below_lloq"].mean()})
    if cohort.mrd is not None and len(cohort.mrd):
        for method, m in cohort.mrd.groupby("method"):
            below = m["censoring"] != "none"
            samples.append({"assay": f"MRD {method}", "samples": len(m), "patients": m["patient_id"].nunique(),
                            "below limit": int(below.sum()), "share below limit": below.mean()})
    return {"arms": pd.DataFrame(arms), "rfs": pd.DataFrame(rfs), "samples": pd.DataFrame(samples)}
