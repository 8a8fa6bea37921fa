"""CDISC ADaM datasets to a cohort folder.

- ADSL (one row a subject): ``USUBJID``, the randomized arm (``ARM`` by
  default, else ``TRT01P``; ``TRT01A`` only if named), baseline covariates
  (``AGE`` -> ``age_years`` and ``SEX`` -> ``sex`` when present, others
  named by the user) and the CAR-T infusion: a date variable
  (``infusion_date_column``) or a study-day variable (``infusion_day_column``),
  or one study day for every subject (``infusion_study_day``).
- ADTTE: ``PARAMCD`` (overall survival, relapse-free survival, optionally
  transplant), ``CNSR`` (0 = event), ``EVNTDESC``, the event or censoring
  date ``ADT`` (or study day ``ADY``) and the remission start ``STARTDT``
  (or ``STARTDY``) of the relapse-free survival record.
- ADPC / ADLB: CAR-T levels and MRD by ``PARAMCD``: ``AVAL``, ``ALLOQ``
  (limit), ``BLQFL`` (Y = below the limit), ``ADT``/``ADY``, ``DTYPE``.
- ADRS (optional): best overall response (``PARAMCD`` BOR, ``AVALC``).

Days since infusion. From dates: ``ADT - infusion date``. From SDTM/ADaM
study days, which have no day 0 (day 1 is the reference day, day -1 the day
before), through the continuous count ``c(d) = d - 1`` for ``d >= 1`` and
``c(d) = d`` for ``d <= -1``:

    day = c(ADY) - c(infusion study day)

so with the infusion on study day 1, study day 8 is day 7 and study day -1
is day -1. No date is ever written to the cohort.

Outcomes:
- ``last_followup_day`` and ``death_day`` from overall survival (the
  censoring day is the last day known alive);
- a relapse-free survival record makes a responder: ``response_day`` is its
  start, an event is a relapse unless ``EVNTDESC`` names death or it falls
  on the death day (death in remission); ``relapse_cd19`` is not in ADaM
  and is written as the user states (``unknown`` by default);
- the response category (CR or CRi) from ADRS, or one category the user
  states for every responder; patients without the record are NR;
- ``hsct_day`` from a transplant parameter when named.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path

import pandas as pd

from toolkit.data.problems import Problem
from toolkit.data.schema import CD19_STATUS, MRD_METHODS, SPECIMENS
from toolkit.importers.common import (
    ImportDataError, ImportReport, ImportResult, Source, canonical_code, fail, fmt, parse_assignment,
    pseudonyms, read_source, to_date, to_number, write_cohort,
)

OPTIONS = "command line"
_RESPONSES = {"CR": "CR", "CRI": "CRi", "CRH": "CRi", "CR WITH INCOMPLETE HEMATOLOGIC RECOVERY": "CRi",
              "CR WITH INCOMPLETE BLOOD COUNT RECOVERY": "CRi", "NR": "NR", "SD": "NR", "PD": "NR",
              "NON-RESPONSE": "NR", "NO RESPONSE": "NR", "NE": "NR", "NOT EVALUABLE": "NR"}
_METHODS = (("FLOW", "flow"), ("SEQUENC", "ngs"), ("NGS", "ngs"), ("PCR", "qpcr"))
_SPECIMENS = (("MARROW", "BM"), ("BM", "BM"), ("BLOOD", "PB"), ("PB", "PB"))


def study_days_since(day: float, reference: float) -> float:
    """Days from study day ``reference`` to study day ``day`` (SDTM: no day 0).

    >>> study_days_since(8, 1), study_days_since(-1, 1), study_days_since(2, -1)
    (7, -1, 2)
    """
    if day == 0 or reference == 0:
        raise ValueError("study day 0 does not exist")

    def continuous(d):
        return d - 1 if d > 0 else d

    return continuous(day) - continuous(reference)


class _Timeline:
    """Days since each subject's infusion, from dates or from study days."""

    def __init__(self, basis: str, infusion: dict[str, object], report: ImportReport):
        self.basis, self.infusion, self.report = basis, infusion, report

    def days(self, src: Source, positions, column: str, problems: list[Problem], what: str) -> dict[int, float]:
        """Day since infusion of each record at ``positions`` (missing cells are problems)."""
        src.require([column], what)
        out = {}
        for pos in positions:
            text = src.frame.at[pos, column]
            subject = src.frame.at[pos, "USUBJID"]
            if self.basis == "date":
                value = to_date(text)
                bad = value is None or not isinstance(value, dt.date)
            else:
                value = to_number(text)
                bad = value is None or math.isnan(value) or value == 0 or not float(value).is_integer()
            if bad:
                problems.append(Problem(src.name, src.row(pos), column, None,
                                        "is missing or not a " + ("date" if self.basis == "date" else
                                                                  "study day (a whole number, never 0)"),
                                        f"give the {what} of every record"))
                continue
            ref = self.infusion[subject]
            out[pos] = float((value - ref).days) if self.basis == "date" else float(study_days_since(value, ref))
        return out

    def column(self, kind: str) -> str:
        return {"date": {"event": "ADT", "start": "STARTDT"},
                "studyday": {"event": "ADY", "start": "STARTDY"}}[self.basis][kind]


def _params(src: Source, param: str, role: str, option: str) -> pd.Index:
    src.require(["PARAMCD"], "the parameter code")
    hits = src.frame.index[src.frame["PARAMCD"].str.upper() == param.upper()]
    if len(hits) == 0:
        present = ", ".join(sorted(set(src.frame["PARAMCD"]) - {""})) or "(none)"
        fail(src.name, f"no record has PARAMCD {param} ({role})",
             f"name the {role} parameter with {option}; PARAMCDs in this file: {present}", column="PARAMCD")
    return hits


def import_adam(*, adsl: str | Path, adtte: str | Path, out: str | Path, control_arm: str, experimental_arm: str,
                adpc: str | Path | None = None, adlb: str | Path | None = None, adrs: str | Path | None = None,
                infusion_date_column: str | None = None, infusion_day_column: str | None = None,
                infusion_study_day: int | None = None, arm_column: str | None = None,
                population_flag: str | None = None, covariates: list[str] = (),
                os_param: str = "OS", relapse_param: str = "RFS", hsct_param: str | None = None,
                response: str | None = None, response_param: str = "BOR", relapse_cd19: str = "unknown",
                cart_param: str | None = None, cart_unit: str | None = None,
                mrd_param: str | None = None, mrd_unit: str | None = None, mrd_method: str | None = None,
                mrd_specimen: str | None = None, study_name: str | None = None,
                key_file: str | Path | None = None) -> ImportResult:
    """Turn CDISC ADaM datasets (CSV, .xlsx or SAS transport .xpt) into a cohort folder.

    Parameters
    ----------
    adsl, adtte : path
        Subject-level and time-to-event datasets (required).
    out : path
        The cohort folder to write (must not exist or be empty).
    control_arm, experimental_arm : str
        Arm values of ADSL as ``VALUE`` or ``VALUE=LABEL``; subjects of any
        other arm (screen failures, not treated) are left out and reported.
    adpc, adlb, adrs : path, optional
        Datasets holding ``cart_param`` / ``mrd_param`` records, and the
        best overall response.
    infusion_date_column, infusion_day_column, infusion_study_day
        Exactly one: the ADSL date variable of the CAR-T infusion, the ADSL
        study-day variable of it, or one study day for every subject.
    covariates : list of str
        Extra numeric ADSL variables as ``VAR`` or ``VAR=name``.
    os_param, relapse_param, hsct_param : str
        ADTTE parameter codes of overall survival, relapse-free survival
        (origin = remission) and, optionally, time to transplant.
    response : {"CR", "CRi"}, optional
        The response of every responder when no ADRS is given.
    relapse_cd19 : {"positive", "negative", "unknown"}
        CD19 status written for every relapse (ADaM does not hold it).
    cart_unit, mrd_unit
        Units when ``AVALU`` does not give them (``mrd_unit`` pct or fraction).
    mrd_method, mrd_specimen
        Assay and specimen of every MRD record, when ``LBMETHOD``/``LBSPEC``
        (or ``PCMETHOD``/``PCSPEC``) do not give them.

    Returns
    -------
    ImportResult
        The folder, the mapping report and the key file (USUBJID -> code).
    """
    report = ImportReport("adam")
    given = [x is not None for x in (infusion_date_column, infusion_day_column, infusion_study_day)]
    if sum(given) != 1:
        fail(OPTIONS, "the CAR-T infusion is not stated (or stated twice)",
             "give exactly one of --infusion-date-column VAR (an ADSL date, e.g. a CAR-T infusion date), "
             "--infusion-day-column VAR (an ADSL study day) or --infusion-study-day N (the same for every subject)")
    if relapse_cd19 not in CD19_STATUS:
        fail(OPTIONS, f"unknown CD19 status {relapse_cd19!r}", f"use --relapse-cd19 with one of {', '.join(CD19_STATUS)}")
    if response is not None and response not in ("CR", "CRi"):
        fail(OPTIONS, f"unknown response {response!r}", "use --response CR or --response CRi")
    report.options = {k: v for k, v in dict(
        infusion_date_column=infusion_date_column, infusion_day_column=infusion_day_column,
        infusion_study_day=infusion_study_day, arm_column=arm_column, control_arm=control_arm,
        experimental_arm=experimental_arm, population_flag=population_flag, covariates=list(covariates),
        os_param=os_param, relapse_param=relapse_param, hsct_param=hsct_param, response=response,
        response_param=response_param, relapse_cd19=relapse_cd19, cart_param=cart_param, cart_unit=cart_unit,
        mrd_param=mrd_param, mrd_unit=mrd_unit, mrd_method=mrd_method, mrd_specimen=mrd_specimen).items()}
    problems: list[Problem] = []

    # ---- ADSL: population, arm, infusion, covariates
    sl = read_source(adsl)
    report.source(sl)
    sl.require(["USUBJID"], "the unique subject identifier")
    arm_column = (arm_column or next((c for c in ("ARM", "TRT01P") if sl.has(c)), "ARM")).upper()
    sl.require([arm_column], "the randomized arm; name another with --arm-column")
    frame = sl.frame
    if (frame["USUBJID"] == "").any():
        fail(sl.name, "USUBJID is blank", "give every subject its USUBJID",
             row=sl.row(frame.index[frame["USUBJID"] == ""][0]), column="USUBJID")
    dup = frame["USUBJID"].duplicated(keep="first")
    if dup.any():
        fail(sl.name, "a subject has more than one row", "ADSL holds one row a subject",
             row=sl.row(frame.index[dup][0]), column="USUBJID")
    (c_code, c_label), (e_code, e_label) = parse_assignment(control_arm), parse_assignment(experimental_arm)
    labels = {canonical_code(c_code).upper(): c_label or c_code, canonical_code(e_code).upper(): e_label or e_code}
    arm = frame[arm_column].map(lambda t: canonical_code(t).upper())
    keep = arm.isin(list(labels))
    report.leave_out(sl, frame.index[~keep], f"{arm_column} is neither the control ({c_code}) nor the "
                                            f"experimental ({e_code}) arm (e.g. screen failure)")
    report.used(sl.name, arm_column, "patients.arm", f"{c_code} -> {labels[canonical_code(c_code).upper()]}, "
                f"{e_code} -> {labels[canonical_code(e_code).upper()]}")
    if population_flag:
        flag = population_flag.upper()
        sl.require([flag], "the population flag named with --population-flag")
        out_of_pop = keep & (frame[flag].str.upper() != "Y")
        report.leave_out(sl, frame.index[out_of_pop], f"{flag} is not Y (outside the analysis population)")
        report.used(sl.name, flag, "which subjects", "Y = imported")
        keep &= ~out_of_pop
    if infusion_study_day is not None:
        if infusion_study_day == 0:
            fail(OPTIONS, "--infusion-study-day is 0, which does not exist (SDTM study days skip 0)",
                 "give the study day of the infusion: 1 for the reference day, -1 for the day before")
        basis, infusion = "studyday", {s: float(infusion_study_day) for s in frame["USUBJID"]}
        report.converted(f"study days to days since infusion (infusion on study day {infusion_study_day}; "
                         "no study day 0)", int(keep.sum()))
    else:
        basis = "date" if infusion_date_column else "studyday"
        column = (infusion_date_column or infusion_day_column).upper()
        sl.require([column], "the CAR-T infusion")
        infusion = {}
        not_infused = []
        for pos in frame.index[keep]:
            text = frame.at[pos, column]
            value = to_date(text) if basis == "date" else to_number(text)
            if value is None or (basis == "studyday" and value == 0):
                problems.append(Problem(sl.name, sl.row(pos), column, None,
                                        "is not a " + ("date" if basis == "date" else "study day (never 0)"),
                                        "give the infusion " + ("date" if basis == "date" else "study day")))
            elif not isinstance(value, dt.date) and math.isnan(value):
                not_infused.append(pos)
            else:
                infusion[frame.at[pos, "USUBJID"]] = value
        report.leave_out(sl, not_infused, f"{column} is blank: not infused, so no day 0")
        keep &= ~frame.index.isin(not_infused)
        report.used(sl.name, column, "day 0", "the CAR-T infusion " + ("date" if basis == "date" else "study day"))
        report.converted("dates to days since infusion (date minus infusion date); no date written" if basis == "date"
                         else "study days to days since infusion (no study day 0)", int(keep.sum()))
    if problems:
        raise ImportDataError(problems)
    for code, name in ((c_code, "control"), (e_code, "experimental")):
        if not (keep & (arm == canonical_code(code).upper())).any():
            fail(sl.name, f"no imported subject has the {name} arm in {arm_column}",
                 f"check --{name}-arm against the values of {arm_column} (and --population-flag)", column=arm_column)
    subjects = list(frame.loc[keep, "USUBJID"])
    key = pseudonyms(subjects)
    timeline = _Timeline(basis, infusion, report)
    for code, label in labels.items():
        count = int((keep & (arm == code)).sum())
        if label != code or count:
            shown = c_code if code == canonical_code(c_code).upper() else e_code
            report.converted(f"{arm_column} '{shown}' written as arm '{label}' (subjects)", count)
    report.used(sl.name, "USUBJID", "patient_id", "replaced by a pseudonymous code (key kept apart)")
    rows = frame.index[keep]
    patients = pd.DataFrame({"patient_id": [key[s] for s in subjects],
                             "arm": [labels[arm[p]] for p in rows]})
    _covariates(sl, rows, patients, covariates, report)

    # ---- ADTTE: outcomes
    tte = read_source(adtte)
    report.source(tte)
    tte.require(["USUBJID", "PARAMCD", "CNSR"], "ADTTE")
    outcomes = _outcomes(tte, subjects, key, timeline, report, os_param=os_param, relapse_param=relapse_param,
                         hsct_param=hsct_param, relapse_cd19=relapse_cd19)
    _responses(outcomes, adrs, subjects, key, report, response=response, response_param=response_param,
               relapse_param=relapse_param)

    # ---- ADPC / ADLB: kinetics
    sample_sources = [read_source(p) for p in (adpc, adlb) if p is not None]
    for s in sample_sources:
        report.source(s)
    tables = {"patients": patients, "outcomes": outcomes}
    chosen: dict[str, str] = {}  # PARAMCD -> the file its records are taken from
    if cart_param is None and mrd_param is None and sample_sources:
        fail(OPTIONS, "ADPC/ADLB given but neither --cart-param nor --mrd-param",
             "name the PARAMCD of the CAR-T levels (--cart-param) and/or of MRD (--mrd-param)")
    for param, name in ((cart_param, "cart_kinetics"), (mrd_param, "mrd")):
        if param is None:
            continue
        if not sample_sources:
            fail(OPTIONS, f"--{'cart' if name == 'cart_kinetics' else 'mrd'}-param needs the dataset holding it",
                 "give --adpc FILE or --adlb FILE")
        src = next((s for s in sample_sources if s.has("PARAMCD")
                    and (s.frame["PARAMCD"].str.upper() == param.upper()).any()), sample_sources[0])
        chosen[param.upper()] = src.name
        tables[name] = _samples(src, param, name, subjects, key, timeline, report, unit=cart_unit if
                                name == "cart_kinetics" else mrd_unit, method=mrd_method, specimen=mrd_specimen)
    for src in sample_sources:
        if src.has("PARAMCD"):
            used = {p for p, name in chosen.items() if name == src.name}
            other = ~src.frame["PARAMCD"].str.upper().isin(used)
            for code in sorted(set(src.frame.loc[other, "PARAMCD"])):
                reason = (f"PARAMCD {code} is taken from {chosen[code.upper()]} (the first file holding it)"
                          if code.upper() in chosen else f"PARAMCD {code} is not used")
                report.leave_out(src, src.frame.index[other & (src.frame["PARAMCD"] == code)], reason)
    if cart_param is None:
        report.not_derived.append("cart_kinetics.csv: no --cart-param given")
    if mrd_param is None:
        report.not_derived.append("mrd.csv: no --mrd-param given")
    study = {"name": study_name or f"Imported from {sl.name}",
             "control_arm": labels[canonical_code(c_code).upper()],
             "experimental_arm": labels[canonical_code(e_code).upper()],
             "notes": "Imported by toolkit import adam; see import_report.md."}
    return write_cohort(out, study=study, tables=tables, report=report, key=key, key_file=key_file,
                        key_column="USUBJID")


def _covariates(sl: Source, rows, patients: pd.DataFrame, covariates, report: ImportReport) -> None:
    items = [parse_assignment(c) for c in covariates]
    named = {c.upper() for c, _ in items}
    if sl.has("AGE") and "AGE" not in named:
        items.insert(0, ("AGE", "age_years"))
    if sl.has("SEX") and "SEX" not in named:
        items.insert(1 if sl.has("AGE") else 0, ("SEX", "sex"))
    for column, name in items:
        column, name = column.upper(), name or column.lower()
        sl.require([column], "a covariate named with --covariate")
        text = sl.frame.loc[rows, column]
        if name == "sex":
            values = text.str.upper().map({"F": "F", "FEMALE": "F", "M": "M", "MALE": "M"})
            report.converted(f"{column}: values other than F/M (e.g. U, UNDIFFERENTIATED) written as unknown (blank)",
                             int(values.isna().sum() - (text == "").sum()))
            patients["sex"] = values.fillna("").to_numpy()
            report.used(sl.name, column, "patients.sex", "F/M")
            continue
        if name == "age_years" and sl.has("AGEU"):
            units = set(sl.frame.loc[rows, "AGEU"].str.upper()) - {""}
            if units - {"YEARS", "YEAR", "Y"}:
                fail(sl.name, "AGE is not in years", "give ages in years (AGEU = YEARS)", column="AGEU")
        unreadable = text.map(lambda t: to_number(t) is None)
        numbers = [math.nan if bad else to_number(t) for t, bad in zip(text, unreadable)]
        if unreadable.any():
            pos = text.index[unreadable][0]
            fail(sl.name, f"covariate {column} is not numeric", "code it as a number, or leave it out",
                 row=sl.row(pos), column=column)
        patients[name] = [fmt(v) for v in numbers]
        report.used(sl.name, column, f"patients.{name}", "baseline value")


def _mentions_death(text: str) -> bool:
    return bool(re.search(r"DEATH|DIED|DEAD", text.upper()))


def _outcomes(tte: Source, subjects, key, timeline: _Timeline, report: ImportReport, *, os_param, relapse_param,
              hsct_param, relapse_cd19) -> pd.DataFrame:
    frame, problems = tte.frame, []
    wanted = set(subjects)
    outside = ~frame["USUBJID"].isin(wanted)
    report.leave_out(tte, frame.index[outside], "subject not among the imported subjects")
    params = {os_param.upper(): "OS", relapse_param.upper(): "RFS"} | ({hsct_param.upper(): "HSCT"} if hsct_param else {})
    found = {}
    for code, role in params.items():
        option = {"OS": "--os-param", "RFS": "--relapse-param", "HSCT": "--hsct-param"}[role]
        hits = _params(tte, code, role, option)
        found[role] = hits[~outside[hits]]
    other = ~outside & ~frame["PARAMCD"].str.upper().isin(list(params))
    for code in sorted(set(frame.loc[other, "PARAMCD"])):
        report.leave_out(tte, frame.index[other & (frame["PARAMCD"] == code)], f"PARAMCD {code} is not used")
    event_col = timeline.column("event")
    if tte.has("AVAL"):
        report.not_derived.append(f"{tte.name} AVAL is not used: event and censoring days come from {event_col} "
                                  "(and the remission start from " + timeline.column("start") + "), which do not "
                                  "depend on each parameter's origin or on the +1 day convention")
    for column, to in (("PARAMCD", "which outcome"), ("CNSR", "event (0) or censored"),
                       (event_col, "event / censoring day"), ("EVNTDESC", "death vs relapse")):
        if tte.has(column):
            report.used(tte.name, column, to)
    cnsr = frame["CNSR"].map(to_number)
    days: dict[str, dict[int, float]] = {}
    for role, hits in found.items():
        for pos in hits:
            if cnsr[pos] not in (0.0, 1.0):
                problems.append(Problem(tte.name, tte.row(pos), "CNSR", None, "is not 0 (event) or 1 (censored)",
                                        "write CNSR 0 for an event and 1 for a censored time"))
        dup = frame.loc[hits, "USUBJID"].duplicated(keep="first")
        for pos in dup.index[dup]:
            problems.append(Problem(tte.name, tte.row(pos), "USUBJID", None,
                                    f"a subject has more than one {role} record",
                                    "keep one record a subject and parameter"))
        days[role] = timeline.days(tte, hits, event_col, problems, f"{role} event or censoring day")
    if problems:
        raise ImportDataError(problems)
    by_subject = {role: {frame.at[p, "USUBJID"]: p for p in hits} for role, hits in found.items()}
    start_col = timeline.column("start")
    starts = {}
    if by_subject["RFS"]:
        if not tte.has(start_col):
            fail(tte.name, f"response_day cannot be derived: the {relapse_param} records have no {start_col}",
                 f"add {start_col} (the remission start of relapse-free survival) to ADTTE", column=start_col)
        starts = timeline.days(tte, list(by_subject["RFS"].values()), start_col, problems,
                               "remission start of relapse-free survival")
        report.used(tte.name, start_col, "outcomes.response_day", f"start of {relapse_param}")
    for role, values in list(days.items()) + [("RFS start", starts)]:
        for pos, day in values.items():
            if day < 0:
                problems.append(Problem(tte.name, tte.row(pos), event_col if role != "RFS start" else start_col, None,
                                        f"the {role} day is before the infusion",
                                        "check the infusion date/study day in ADSL and this record's date"))
    missing_os = [s for s in subjects if s not in by_subject["OS"]]
    if missing_os:
        problems.append(Problem(tte.name, None, "PARAMCD", None,
                                f"{len(missing_os)} imported subject(s) have no {os_param} record, so their "
                                "last follow-up cannot be derived",
                                f"add a {os_param} record (CNSR 1 at the last day known alive) for every subject"))
    if problems:
        raise ImportDataError(problems)
    rows, death_as_relapse_event, relapses = [], 0, 0
    for s in subjects:
        os_pos = by_subject["OS"][s]
        death = days["OS"][os_pos] if cnsr[os_pos] == 0 else math.nan
        row = {"patient_id": key[s], "response": "NR", "response_day": math.nan, "relapse_day": math.nan,
               "relapse_cd19": "", "hsct_day": math.nan, "death_day": death,
               "last_followup_day": days["OS"][os_pos]}
        if s in by_subject["RFS"]:
            pos = by_subject["RFS"][s]
            row["response"], row["response_day"] = "responder", starts[pos]
            if cnsr[pos] == 0:
                desc = frame.at[pos, "EVNTDESC"] if tte.has("EVNTDESC") else ""
                if _mentions_death(desc) or days["RFS"][pos] == death:
                    death_as_relapse_event += 1
                else:
                    row["relapse_day"], row["relapse_cd19"] = days["RFS"][pos], relapse_cd19
                    relapses += 1
        if "HSCT" in by_subject and s in by_subject["HSCT"]:
            pos = by_subject["HSCT"][s]
            if cnsr[pos] == 0:
                row["hsct_day"] = days["HSCT"][pos]
        rows.append(row)
    report.converted(f"{relapse_param} events that are deaths in remission (EVNTDESC names death, or on the "
                     f"{os_param} death day): not a relapse", death_as_relapse_event)
    report.converted(f"{relapse_param} events written as relapse_day, relapse_cd19 = {relapse_cd19} "
                     "(ADaM holds no CD19 status)", relapses)
    report.converted(f"subjects without a {relapse_param} record written as non-responders (NR)",
                     sum(r["response"] == "NR" for r in rows))
    if not hsct_param:
        report.not_derived.append("hsct_day: no --hsct-param, so hsct_day is blank (no transplant) for everyone; "
                                  "if subjects were transplanted in remission, the durability model cannot censor "
                                  "or adjust for it")
    if relapses:
        report.not_derived.append(f"relapse_cd19: not in ADaM; written as '{relapse_cd19}' (--relapse-cd19)")
    out = pd.DataFrame(rows)
    for column in ("response_day", "relapse_day", "hsct_day", "death_day", "last_followup_day"):
        out[column] = out[column].map(fmt)
    return out


def _responses(outcomes: pd.DataFrame, adrs, subjects, key, report: ImportReport, *, response, response_param,
               relapse_param) -> None:
    responder = outcomes["response"] == "responder"
    if adrs is None:
        if response is None:
            if responder.any():
                fail(OPTIONS, "the response category (CR or CRi) of responders cannot be derived from ADSL/ADTTE",
                     "give --adrs FILE (best overall response) or --response CR|CRi for every responder")
            return
        outcomes.loc[responder, "response"] = response
        report.not_derived.append(f"response category: not in the data; every subject with a {relapse_param} "
                                  f"record written as {response} (--response)")
        return
    rs = read_source(adrs)
    report.source(rs)
    rs.require(["USUBJID", "PARAMCD", "AVALC"], "ADRS")
    hits = _params(rs, response_param, "best overall response", "--response-param")
    report.used(rs.name, "AVALC", "outcomes.response", f"PARAMCD {response_param}; CR -> CR, CRi/CRh -> CRi, other -> NR")
    by_subject, problems = {}, []
    for pos in hits:
        s = rs.frame.at[pos, "USUBJID"]
        if s in by_subject:
            problems.append(Problem(rs.name, rs.row(pos), "USUBJID", None, "a subject has more than one "
                                    f"{response_param} record", "keep one best-response record a subject"))
        value = _RESPONSES.get(rs.frame.at[pos, "AVALC"].upper())
        if value is None:
            problems.append(Problem(rs.name, rs.row(pos), "AVALC", None, "is not a known response",
                                    "write CR, CRi (or CRh), NR, SD, PD or NE"))
        by_subject[s] = (pos, value)
    report.leave_out(rs, [p for p in rs.frame.index if p not in set(hits) or rs.frame.at[p, "USUBJID"] not in key],
                     f"not a {response_param} record of an imported subject")
    for s, row in zip(subjects, outcomes.index):
        pos, value = by_subject.get(s, (None, None))
        if pos is None:
            problems.append(Problem(rs.name, None, "USUBJID", None,
                                    f"an imported subject (cohort code {key[s]}) has no {response_param} record",
                                    "add the best overall response of every subject"))
        elif value == "NR" and responder[row]:
            problems.append(Problem(rs.name, rs.row(pos), "AVALC", None, f"says no response, but the subject "
                                    f"has a {relapse_param} record (a remission)", "correct one of the two"))
        elif value in ("CR", "CRi") and not responder[row]:
            problems.append(Problem(rs.name, rs.row(pos), "AVALC", None, f"says remission, but the subject has no "
                                    f"{relapse_param} record, so response_day cannot be derived",
                                    f"add the subject's {relapse_param} record (start = remission)"))
        elif value is not None:
            outcomes.at[row, "response"] = value
    if problems:
        raise ImportDataError(problems)


def _map_text(text: str, table) -> str | None:
    upper = text.upper()
    return next((to for key, to in table if key in upper), None)


def _samples(src: Source, param: str, name: str, subjects, key, timeline: _Timeline, report: ImportReport, *,
             unit, method, specimen) -> pd.DataFrame:
    cart = name == "cart_kinetics"
    role = "CAR-T level" if cart else "MRD"
    option = "--cart-param" if cart else "--mrd-param"
    src.require(["USUBJID", "AVAL"], role)
    hits = _params(src, param, role, option)
    frame, problems = src.frame, []
    keep = [p for p in hits if frame.at[p, "USUBJID"] in key]
    report.leave_out(src, [p for p in hits if p not in set(keep)], f"{param}: subject not among the imported subjects")
    if src.has("DTYPE"):
        derived = [p for p in keep if frame.at[p, "DTYPE"] != ""]
        report.leave_out(src, derived, f"{param}: derived record (DTYPE not blank), not a measurement")
        keep = [p for p in keep if p not in set(derived)]
        report.used(src.name, "DTYPE", "which records", "blank = measured")
    blq = {p: src.has("BLQFL") and frame.at[p, "BLQFL"].upper() == "Y" for p in keep}
    value = {p: to_number(frame.at[p, "AVAL"]) for p in keep}
    for p in keep:
        if value[p] is None:
            problems.append(Problem(src.name, src.row(p), "AVAL", None, "is not a number", "write AVAL as a number"))
    no_result = [p for p in keep if not blq[p] and value[p] is not None and math.isnan(value[p])]
    report.leave_out(src, no_result, f"{param}: AVAL blank and not below the limit (no result)")
    keep = [p for p in keep if p not in set(no_result)]
    event_col = timeline.column("event")
    days = timeline.days(src, keep, event_col, problems, f"{role} sample day")
    if problems:
        raise ImportDataError(problems)
    before = [p for p in keep if days[p] < 0]
    report.leave_out(src, before, f"{param}: sample before the infusion (day < 0): the cohort starts at the infusion")
    keep = [p for p in keep if days[p] >= 0]
    limit = {p: to_number(frame.at[p, "ALLOQ"]) if src.has("ALLOQ") else math.nan for p in keep}
    for p in keep:
        if limit[p] is None:
            problems.append(Problem(src.name, src.row(p), "ALLOQ", None, "is not a number", "write ALLOQ as a number"))
        elif blq[p] and math.isnan(limit[p]):
            problems.append(Problem(src.name, src.row(p), "ALLOQ", None, "a below-limit record (BLQFL = Y) has no limit",
                                    "give the assay's lower limit of quantification in ALLOQ"))
    if problems:
        raise ImportDataError(problems)
    units = sorted(set(frame.loc[keep, "AVALU"]) - {""}) if src.has("AVALU") else []
    for column, to in (("PARAMCD", f"{param} -> {name}.csv"), ("AVAL", "value" if cart else "mrd_pct"),
                       ("ALLOQ", "lloq" if cart else "lod_pct"), ("BLQFL", "below the limit (Y)"),
                       (event_col, "day"), ("AVALU", "unit")):
        if src.has(column):
            report.used(src.name, column, f"{name}.{to}" if column in ("AVAL", "ALLOQ") else to)
    order = {s: i for i, s in enumerate(subjects)}
    keep.sort(key=lambda p: (order[frame.at[p, "USUBJID"]], days[p]))
    patient = [key[frame.at[p, "USUBJID"]] for p in keep]
    day = [fmt(days[p]) for p in keep]
    report.converted(f"{param}: below-limit records (BLQFL = Y) kept as censored with ALLOQ as the limit",
                     sum(blq[p] for p in keep))
    if cart:
        if unit is None:
            if len(units) != 1:
                fail(src.name, f"the unit of {param} is not one AVALU value", "give --cart-unit, e.g. copies/ug "
                     "(and convert the values to one unit)", column="AVALU")
            unit = units[0]
        elif len(units) > 1:
            fail(src.name, f"{param} mixes units in AVALU", "convert the values to one unit", column="AVALU")
        return pd.DataFrame({"patient_id": patient, "day": day,
                             "value": ["BLQ" if blq[p] else fmt(value[p]) for p in keep],
                             "lloq": [fmt(limit[p]) for p in keep], "unit": unit})
    if unit is None:
        unit = {"%": "pct", "PERCENT": "pct", "FRACTION": "fraction"}.get(units[0].upper()) if len(units) == 1 else None
        if unit is None:
            fail(src.name, f"the unit of {param} is not % or FRACTION in AVALU", "give --mrd-unit pct or fraction",
                 column="AVALU")
    if unit not in ("pct", "fraction"):
        fail(OPTIONS, f"unknown MRD unit {unit!r}", "use --mrd-unit pct or --mrd-unit fraction")
    factor = 100.0 if unit == "fraction" else 1.0
    if factor != 1.0:
        report.converted(f"{param}: fraction multiplied by 100 (percent)", len(keep))
    methods, specimens = [], []
    for p in keep:
        m = method or next((_map_text(frame.at[p, c], _METHODS) for c in ("LBMETHOD", "PCMETHOD", "METHOD")
                            if src.has(c) and frame.at[p, c]), None)
        sp = specimen or next((_map_text(frame.at[p, c], _SPECIMENS) for c in ("LBSPEC", "PCSPEC", "SPEC")
                               if src.has(c) and frame.at[p, c]), None)
        if m not in MRD_METHODS or sp not in SPECIMENS:
            fail(src.name, "the MRD assay or specimen of a record is not known",
                 f"give --mrd-method ({', '.join(MRD_METHODS)}) and --mrd-specimen ({', '.join(SPECIMENS)}), "
                 "or LBMETHOD/LBSPEC columns naming flow cytometry, sequencing or PCR and marrow or blood",
                 row=src.row(p))
        methods.append(m)
        specimens.append(sp)
    return pd.DataFrame({"patient_id": patient, "day": day,
                         "mrd_pct": ["negative" if blq[p] else fmt(value[p] * factor) for p in keep],
                         "lod_pct": [fmt(limit[p] * factor) for p in keep], "method": methods,
                         "specimen": specimens})
