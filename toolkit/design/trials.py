"""Whole trials in calendar time: accrual, look dates, and what each look can see.

Every patient is infused on the day of enrolment. Enrolment days since the
first patient form a Poisson process at the design's accrual rate:
``e_1 = 0``, ``e_{i+1} = e_i + Exp(rate)``. A patient's outcomes come from
``toolkit.simulate.simulate_trial`` (its own administrative follow-up
switched off; loss to follow-up kept), in days since infusion.

At a look on calendar day ``L`` a patient enrolled on day ``e_i`` has been
followed ``c_i = L - e_i`` days: patients with ``c_i < 0`` are not yet
enrolled and are dropped; every event later than ``c_i`` is blanked and
``last_followup_day = min(last_followup_day, floor(c_i))`` (administrative
censoring at the look). Patients with ``c_i`` below the day-28 response
assessment are enrolled but cannot be analysed yet (their response is
unknown) and are left out of that look's analysis; they still count in the
enrolled N.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from toolkit.design.spec import DAYS_PER_MONTH, Design, Look, Scenario
from toolkit.simulate import RESPONSE_DAY, SimulatedTrial, simulate_trial

EVENT_COLUMNS = ("relapse_day", "hsct_day", "death_day")


def trial_seed(design: Design, scenario_index: int, trial: int) -> int:
    """The simulator seed of one trial: distinct per (design seed, scenario, trial), reproducible."""
    return int(np.random.SeedSequence([design.seed, scenario_index, trial]).generate_state(1)[0])


def enrolment_days(n: int, patients_per_month: float, rng) -> np.ndarray:
    """Calendar day of each patient's enrolment (= infusion): Poisson accrual from day 0."""
    rate = patients_per_month / DAYS_PER_MONTH
    gaps = rng.exponential(1.0 / rate, n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


def simulate_calendar_trial(design: Design, scenario: Scenario, scenario_index: int, trial: int):
    """One whole trial of ``design.max_patients`` patients and its enrolment days."""
    seed = trial_seed(design, scenario_index, trial)
    sim = simulate_trial(design.max_patients, seed=seed, effects=scenario.effects_obj(),
                         parameters=scenario.parameters_obj(), with_truth=False)
    enrol = enrolment_days(design.max_patients, design.patients_per_month, np.random.default_rng([seed, 7]))
    return sim, enrol


def _days(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(float)


def event_calendar_days(sim: SimulatedTrial, enrol: np.ndarray) -> np.ndarray:
    """Sorted calendar days of the relapse-free-survival events (relapse, or death in remission)."""
    o = sim.outcomes
    responder = o["response"].isin(["CR", "CRi"]).to_numpy()
    first = np.fmin(_days(o, "relapse_day"), _days(o, "death_day"))
    hsct = _days(o, "hsct_day")
    seen = responder & np.isfinite(first) & ~(hsct < first)  # after HSCT in remission the patient is censored
    return np.sort((enrol + first)[seen])


def look_day(look: Look, enrol: np.ndarray, event_days: np.ndarray) -> float:
    """Calendar day of a look; NaN when its trigger is never reached (e.g. too few events)."""
    if look.trigger == "patients":
        return float(enrol[look.patients - 1] + look.lag_days)
    if look.trigger == "events":
        return float(event_days[look.events - 1] + look.lag_days) if len(event_days) >= look.events else math.nan
    return float(look.day + look.lag_days)


def final_day(design: Design, enrol: np.ndarray) -> float:
    """Calendar day of the final analysis: the last patient's enrolment + the design's follow-up."""
    return float(enrol[-1] + design.final_after_last_patient_days)


def censor_at(sim: SimulatedTrial, enrol: np.ndarray, day: float) -> tuple[SimulatedTrial, dict]:
    """What a look on calendar ``day`` sees (module docstring); returns the trial cut there and counts.

    Counts: ``enrolled`` (e_i <= day), ``analysed`` (followed at least to the response assessment).
    """
    followed = day - enrol
    enrolled = followed >= 0
    analysed = followed >= RESPONSE_DAY
    ids = sim.patients["patient_id"].to_numpy()
    keep_ids = set(ids[analysed])
    cut = pd.Series(np.floor(np.maximum(followed, 0.0)), index=ids)
    o = sim.outcomes[sim.outcomes["patient_id"].isin(keep_ids)].copy()
    c = cut.loc[o["patient_id"]].to_numpy()
    for col in EVENT_COLUMNS:
        d = _days(o, col)
        o[col] = np.where(np.isfinite(d) & (d <= c), o[col], "")
    o["relapse_cd19"] = np.where(o["relapse_day"] != "", o["relapse_cd19"], "")
    last = np.minimum(_days(o, "last_followup_day"), c)
    o["last_followup_day"] = [str(int(x)) for x in last]

    def rows(frame):
        if frame is None or frame.empty:
            return frame
        f = frame[frame["patient_id"].isin(keep_ids)]
        return f[pd.to_numeric(f["day"]).to_numpy(float) <= cut.loc[f["patient_id"]].to_numpy()].copy()

    out = SimulatedTrial(dict(sim.study), sim.patients[sim.patients["patient_id"].isin(keep_ids)].copy(), o,
                         rows(sim.cart_kinetics), rows(sim.mrd), sim.latent.loc[sorted(keep_ids)].copy())
    return out, {"enrolled": int(enrolled.sum()), "analysed": int(analysed.sum())}


def write_cut(cut: SimulatedTrial, folder, *, tables=("patients", "outcomes", "cart_kinetics", "mrd")) -> None:
    """Write a cut trial as a cohort folder; an optional table left empty by the cut is not written (a
    header-only file is refused by validation). ``tables``: the tables to write (a durability analysis
    reads patients and outcomes only, and validating the kinetics tables is most of the time of a read)."""
    from pathlib import Path

    from toolkit.data.io import write_study

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_study(folder, cut.study)
    for name in tables:
        table = getattr(cut, name)
        if name in ("patients", "outcomes") or (table is not None and len(table)):
            table.to_csv(folder / f"{name}.csv", index=False, lineterminator="\n")


def write_interim_cohort(design: Design, out, *, scenario: str, trial: int = 0, patients: int) -> dict:
    """A cohort folder of a simulated trial in progress: cut on the day its ``patients``-th patient is
    enrolled (what an interim analysis would see). Returns the look's counts and its truth of the rule's
    estimand is not computed here. Used by the notebook, the benchmark and the tests."""
    index = [s.name for s in design.scenarios].index(scenario)
    sim, enrol = simulate_calendar_trial(design, design.scenarios[index], index, trial)
    cut, counts = censor_at(sim, enrol, float(enrol[patients - 1]))
    cut.study["name"] = f"Simulated trial in progress ({scenario}, trial {trial}, {patients} enrolled)"
    cut.truth = {"scenario": scenario, "trial": trial, "look_day": float(enrol[patients - 1]), **counts}
    write_cut(cut, out)
    return counts
