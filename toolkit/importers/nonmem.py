"""NONMEM/Monolix-style long data to a cohort folder.

One row a record: ``ID``, ``TIME``, ``DV``, ``MDV``, ``EVID``, ``CMT`` and a
censoring flag (``BLQ`` for NONMEM M3-style data, ``CENS`` for Monolix) with
its limit (``LLOQ``; for Monolix ``CENS=1`` rows the limit is ``DV`` itself).
What the file cannot say, the user states:

- the DV scale (``linear``, ``log`` = natural log, or ``log10``);
- the TIME unit (hours or days) and the time origin: the patient's dose
  record (``EVID=1``, optionally in ``dose_cmt``) at the CAR-T infusion, or
  a fixed ``infusion_time`` on the TIME axis;
- which compartment (or ``DVID``/``YTYPE`` value) holds CAR-T levels and
  which holds MRD;
- the arm (a column of the file), baseline covariates (columns), and the
  outcomes, which NONMEM data rarely hold, as a separate file.

Day since infusion of a record: ``(TIME - TIME_infusion) / 24`` for hours.
A value on the log scale becomes ``exp(DV)`` (``10**DV`` for log10), its
limit likewise. Censored records (``BLQ=1`` or ``CENS=1``) are kept as
below-limit values with their limit, also when ``MDV=1`` (the M1 method
hides them from NONMEM; they are still observations).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.data.problems import Problem
from toolkit.data.schema import MRD_METHODS, OUTCOMES, SPECIMENS
from toolkit.importers.common import (
    ImportDataError, ImportReport, ImportResult, canonical_code, fail, fmt, parse_assignment, pseudonyms,
    read_source, to_number, write_cohort,
)

DV_SCALES = ("linear", "log", "log10")
TIME_UNITS = ("hours", "days")
OPTIONS = "command line"


def _to_linear(values: np.ndarray, scale: str) -> np.ndarray:
    if scale == "log":
        return np.exp(values)
    if scale == "log10":
        return np.power(10.0, values)
    return values


def _numbers(src, column: str, positions, problems: list[Problem], what: str) -> pd.Series:
    """A numeric column (NaN for '.', blank); unreadable cells become problems."""
    text = src.frame[column]
    unreadable = text.map(lambda t: to_number(t) is None)  # before pandas turns None into NaN
    for pos in text.index[unreadable]:
        if pos in positions:
            problems.append(Problem(src.name, src.row(pos), column, None, "is not a number",
                                    f"write {what} as a plain number ('.' or blank for missing)"))
    return text.map(lambda t: to_number(t) if to_number(t) is not None else math.nan).astype(float)


def import_nonmem(data: str | Path, *, out: str | Path, dv_scale: str, time_unit: str,
                  arm_column: str, control_arm: str, experimental_arm: str, outcomes: str | Path | None = None,
                  cart_cmt: str | None = None, mrd_cmt: str | None = None, cmt_column: str = "CMT",
                  cart_unit: str | None = None, mrd_unit: str = "pct", mrd_method: str | None = None,
                  mrd_specimen: str | None = None, infusion_time: float | None = None, dose_cmt: str | None = None,
                  covariates: list[str] = (), sex_codes: str | None = None, study_name: str | None = None,
                  key_file: str | Path | None = None, mrd_dv_scale: str | None = None) -> ImportResult:
    """Turn a NONMEM/Monolix-style data file into a cohort folder.

    Parameters
    ----------
    data : path
        The long data file (.csv, .xlsx or .xpt).
    out : path
        The cohort folder to write (must not exist or be empty).
    dv_scale : {"linear", "log", "log10"}
        Scale of ``DV`` (and of ``LLOQ``/a Monolix censored ``DV``).
    mrd_dv_scale : {"linear", "log", "log10"}, optional
        Scale of the MRD records when it differs from ``dv_scale``.
    time_unit : {"hours", "days"}
        Unit of ``TIME``.
    arm_column, control_arm, experimental_arm : str
        Column holding the randomized arm, and the two arm codes as
        ``CODE`` or ``CODE=LABEL`` (the label written to the cohort).
    outcomes : path
        One row a patient: ``ID`` and the outcomes.csv columns in days since
        infusion. Required: NONMEM data hold no relapse, death or follow-up.
    cart_cmt, mrd_cmt : str
        Value of ``cmt_column`` marking CAR-T and MRD observations.
    cart_unit : str
        Unit of the CAR-T levels (e.g. ``copies/ug``), required with ``cart_cmt``.
    mrd_unit : {"pct", "fraction"}
        MRD as a percentage or a fraction (then multiplied by 100).
    mrd_method, mrd_specimen : str
        Assay (flow, ngs, qpcr) and specimen (BM, PB) of the MRD records.
    infusion_time : float
        Infusion on the TIME axis for every patient, instead of a dose record.
    dose_cmt : str
        Compartment of the infusion dose record when there are several doses.
    covariates : list of str
        Baseline columns as ``COLUMN`` or ``COLUMN=name`` (value of the
        patient's first record); ``sex`` must be F/M or coded by ``sex_codes``
        such as ``"1=M,2=F"``.

    Returns
    -------
    ImportResult
        The folder, the mapping report and the key file (source ID -> code).
    """
    report = ImportReport("nonmem")
    problems: list[Problem] = []
    for option, scale in (("--dv-scale", dv_scale), ("--mrd-dv-scale", mrd_dv_scale or dv_scale)):
        if scale not in DV_SCALES:
            fail(OPTIONS, f"unknown DV scale {scale!r}", f"use {option} with one of {', '.join(DV_SCALES)}")
    if time_unit not in TIME_UNITS:
        fail(OPTIONS, f"unknown time unit {time_unit!r}", f"use --time-unit with one of {', '.join(TIME_UNITS)}")
    if cart_cmt is None and mrd_cmt is None:
        fail(OPTIONS, "neither --cart-cmt nor --mrd-cmt is given",
             "name the compartment holding CAR-T levels (--cart-cmt) and/or MRD (--mrd-cmt)")
    if cart_cmt is not None and not cart_unit:
        fail(OPTIONS, "--cart-cmt needs the unit of the CAR-T levels", "add --cart-unit, e.g. --cart-unit copies/ug")
    if mrd_cmt is not None and (mrd_method not in MRD_METHODS or mrd_specimen not in SPECIMENS):
        fail(OPTIONS, "--mrd-cmt needs the MRD assay and specimen",
             f"add --mrd-method ({', '.join(MRD_METHODS)}) and --mrd-specimen ({', '.join(SPECIMENS)})")
    if mrd_unit not in ("pct", "fraction"):
        fail(OPTIONS, f"unknown MRD unit {mrd_unit!r}", "use --mrd-unit pct or --mrd-unit fraction")
    if outcomes is None:
        fail(OPTIONS, "NONMEM-style data hold no outcomes (response, relapse, death, follow-up)",
             "give --outcomes FILE with one row a patient: ID, " + ", ".join(OUTCOMES.column_names[1:])
             + " (days since infusion; see data_templates/DATA_DICTIONARY.md)")

    src = read_source(data)
    report.source(src)
    frame = src.frame
    cmt_column, arm_column = cmt_column.upper(), arm_column.upper()
    flag = next((c for c in ("BLQ", "CENS") if src.has(c)), None)
    src.require(["ID", "TIME", "DV", cmt_column, arm_column],
                "NONMEM/Monolix data; name another compartment or arm column with --cmt-column, --arm-column")
    if infusion_time is None and not (src.has("EVID") or src.has("AMT")):
        fail(src.name, "has neither EVID nor AMT, so no infusion record can be found", "add the EVID column "
             "(EVID=1 on the CAR-T infusion record), or give --infusion-time T (the infusion on the TIME axis)",
             column="EVID")
    report.options = {"dv_scale": dv_scale, "mrd_dv_scale": mrd_dv_scale, "time_unit": time_unit,
                      "cart_cmt": cart_cmt, "mrd_cmt": mrd_cmt,
                      "cmt_column": cmt_column, "cart_unit": cart_unit, "mrd_unit": mrd_unit,
                      "mrd_method": mrd_method, "mrd_specimen": mrd_specimen, "infusion_time": infusion_time,
                      "dose_cmt": dose_cmt, "arm_column": arm_column, "control_arm": control_arm,
                      "experimental_arm": experimental_arm, "covariates": list(covariates), "sex_codes": sex_codes}

    comment = pd.Series(False, index=frame.index)
    if src.has("C"):
        comment = frame["C"].str.upper().isin(["C", "#", "1"])
    comment |= frame["ID"].str.startswith("#")
    report.leave_out(src, frame.index[comment], "comment record (C column, or a line starting with #)")
    rows = frame.index[~comment]
    ids = frame["ID"].where(~comment)
    time = _numbers(src, "TIME", set(rows), problems, "TIME")
    dv = _numbers(src, "DV", set(rows), problems, "DV")
    cmt = frame[cmt_column].map(canonical_code)
    evid = _numbers(src, "EVID", set(rows), problems, "EVID") if src.has("EVID") else None
    mdv = _numbers(src, "MDV", set(rows), problems, "MDV") if src.has("MDV") else pd.Series(0.0, index=frame.index)
    amt = _numbers(src, "AMT", set(rows), problems, "AMT") if src.has("AMT") else None
    cens = _numbers(src, flag, set(rows), problems, flag).fillna(0) if flag else pd.Series(0.0, index=frame.index)
    lloq_column = next((c for c in ("LLOQ", "LOQ") if src.has(c)), None)
    lloq = _numbers(src, lloq_column, set(rows), problems, "the limit") if lloq_column else None
    for pos in rows:
        if ids[pos] == "":
            problems.append(Problem(src.name, src.row(pos), "ID", None, "is blank", "give every record its ID"))
        elif math.isnan(time[pos]):
            problems.append(Problem(src.name, src.row(pos), "TIME", None, "is missing", "give every record its TIME"))
    if problems:
        raise ImportDataError(problems)
    for name, used, note in (("ID", "patient_id", "replaced by a pseudonymous code"),
                             ("TIME", "day", f"{time_unit} since the infusion record"),
                             ("DV", "value / mrd_pct", f"{dv_scale} scale"
                              + (f" (MRD: {mrd_dv_scale})" if mrd_dv_scale else "")),
                             (cmt_column, "which table", f"CAR-T = {cart_cmt}, MRD = {mrd_cmt}"),
                             ("MDV", "record kept or left out", "MDV=1 without censoring flag: no observation"),
                             ("EVID", "record type", "0 observation, 1/4 dose (infusion), other left out"),
                             ("AMT", "dose record", "AMT > 0 marks a dose when there is no EVID"),
                             (flag or "", "below-limit flag", "1 = below the limit (kept, censored)"),
                             (lloq_column or "", "lloq / lod_pct", f"{dv_scale} scale")):
        if name and src.has(name) and not (name == "AMT" and evid is not None):
            report.used(src.name, name, used, note)

    # Patients, in file order.
    patient_ids = list(dict.fromkeys(ids[rows]))
    first_pos = {pid: frame.index[ids == pid][0] for pid in patient_ids}

    # Arms: a per-patient column; patients of other arms are left out.
    (control_code, control_label), (exp_code, exp_label) = parse_assignment(control_arm), parse_assignment(experimental_arm)
    labels = {canonical_code(control_code): control_label or control_code,
              canonical_code(exp_code): exp_label or exp_code}
    arm_of: dict[str, str] = {}
    for pid in patient_ids:
        values = {canonical_code(v) for v in frame.loc[(ids == pid) & ~comment, arm_column] if v not in ("", ".")}
        if len(values) > 1:
            problems.append(Problem(src.name, src.row(first_pos[pid]), arm_column, None,
                                    "the arm differs between records of one patient",
                                    "give every record of a patient the same randomized arm"))
        elif values:
            arm_of[pid] = values.pop()
    if problems:
        raise ImportDataError(problems)
    kept = [pid for pid in patient_ids if arm_of.get(pid) in labels]
    dropped = [pid for pid in patient_ids if pid not in kept]
    report.leave_out(src, frame.index[ids.isin(dropped)],
                     f"patient's {arm_column} is neither the control ({control_code}) nor the experimental "
                     f"({exp_code}) arm code ({len(dropped)} patient(s))")
    report.used(src.name, arm_column, "patients.arm", f"{control_code} -> {labels[canonical_code(control_code)]}, "
                f"{exp_code} -> {labels[canonical_code(exp_code)]}")
    for code, name in ((control_code, "control"), (exp_code, "experimental")):
        if not any(arm_of[p] == canonical_code(code) for p in kept):
            fail(src.name, f"no patient has the {name} arm code in column {arm_column}",
                 f"check --{name}-arm against the codes used in {arm_column}", column=arm_column)
    key = pseudonyms(kept)
    in_cohort = ids.isin(kept)
    for code, label in labels.items():
        report.converted(f"{arm_column} code {code} written as arm '{label}' (patients)",
                         sum(arm_of[p] == code for p in kept))

    # Record types.
    if evid is not None:
        is_dose = evid.isin([1, 4]) & in_cohort
    elif amt is not None:
        is_dose = (amt.fillna(0) > 0) & in_cohort
    else:  # no dose records: the infusion is stated with infusion_time
        is_dose = pd.Series(False, index=frame.index)
    if evid is not None:
        other = in_cohort & ~is_dose & evid.notna() & (evid != 0)
        for code in sorted(evid[other].unique()):
            report.leave_out(src, frame.index[other & (evid == code)], f"EVID={fmt(code)}: not an observation")
    else:
        other = pd.Series(False, index=frame.index)
    report.leave_out(src, frame.index[is_dose], "dose record (the infusion and other doses): not an observation")
    if ((cens < 0) & in_cohort).any():
        pos = frame.index[(cens < 0) & in_cohort][0]
        fail(src.name, "holds a right-censored (above the upper limit) record, which a cohort cannot hold",
             "replace it by the measured value or a value at the upper limit, or remove the record",
             row=src.row(pos), column=flag)
    censored = (cens > 0) & in_cohort & ~is_dose & ~other
    no_obs = in_cohort & ~is_dose & ~other & ~censored & (mdv == 1)
    report.leave_out(src, frame.index[no_obs], "MDV=1 without a below-limit flag: no observation")
    observation = in_cohort & ~is_dose & ~other & ~no_obs

    # Time origin per patient.
    origin: dict[str, float] = {}
    dose_cmt_code = canonical_code(dose_cmt) if dose_cmt is not None else None
    for pid in kept:
        if infusion_time is not None:
            origin[pid] = float(infusion_time)
            continue
        doses = frame.index[is_dose & (ids == pid)]
        if dose_cmt_code is not None:
            doses = [p for p in doses if cmt[p] == dose_cmt_code]
        if len(doses) == 0:
            problems.append(Problem(src.name, src.row(first_pos[pid]), "EVID", None,
                                    "this patient has no infusion record (EVID=1"
                                    + (f" in CMT {dose_cmt}" if dose_cmt else "") + ")",
                                    "add the EVID=1 record at the CAR-T infusion, or give --infusion-time T "
                                    "(the infusion on the TIME axis)"))
        elif len(doses) > 1:
            problems.append(Problem(src.name, src.row(doses[1]), "EVID", None,
                                    "this patient has more than one dose record, so the infusion is ambiguous",
                                    "give --dose-cmt with the compartment of the CAR-T dose, or --infusion-time"))
        else:
            origin[pid] = time[doses[0]]
    if problems:
        raise ImportDataError(problems)
    scale = 24.0 if time_unit == "hours" else 1.0
    day = pd.Series([(time[p] - origin[ids[p]]) / scale if ids[p] in origin else math.nan for p in frame.index],
                    index=frame.index).round(6)
    report.converted(f"TIME ({time_unit}) to days since the patient's infusion"
                     + (f" (infusion at TIME {fmt(infusion_time)})" if infusion_time is not None else
                        " (TIME of the EVID=1 record)"), int(observation.sum()))

    # Observations per table.
    tables: dict[str, pd.DataFrame] = {}
    cmts_seen = sorted(set(cmt[observation & in_cohort]))
    for wanted, name in ((cart_cmt, "cart_kinetics"), (mrd_cmt, "mrd")):
        if wanted is None:
            continue
        scale = dv_scale if name == "cart_kinetics" else (mrd_dv_scale or dv_scale)
        value = pd.Series(_to_linear(dv.to_numpy(), scale), index=frame.index)
        limit = None
        if lloq is not None:
            limit = pd.Series(_to_linear(lloq.to_numpy(), scale), index=frame.index)
        if flag == "CENS":  # Monolix: the DV of a censored record is the limit itself
            limit = value.where(censored) if limit is None else limit.fillna(value.where(censored))
        code = canonical_code(wanted)
        if code not in cmts_seen:
            fail(src.name, f"no observation record has {cmt_column}={wanted}",
                 f"give the {cmt_column} value of the {'CAR-T' if name == 'cart_kinetics' else 'MRD'} "
                 f"observations; observations are in {cmt_column} {', '.join(cmts_seen) or '(none)'}",
                 column=cmt_column)
        sel = observation & in_cohort & (cmt == code)
        before = sel & (day < 0)
        report.leave_out(src, frame.index[before], "observation before the infusion (day < 0): the cohort starts "
                                                   "at the infusion")
        sel &= ~before
        for pos in frame.index[sel & ~censored & dv.isna()]:
            problems.append(Problem(src.name, src.row(pos), "DV", None,
                                    "is missing on an observation record (MDV=0, not below the limit)",
                                    "give the value, set MDV=1 to mark no observation, or flag it below the limit"))
        for pos in frame.index[sel & censored & (limit.isna() if limit is not None else True)]:
            problems.append(Problem(src.name, src.row(pos), lloq_column or "LLOQ", None,
                                    "a below-limit record has no limit",
                                    "add an LLOQ column (on the DV scale) with the assay limit of every "
                                    "below-limit record"))
        if problems:
            raise ImportDataError(problems)
        sub = frame.index[sel]
        digits = 10 if scale == "linear" else 6
        patient = [key[ids[p]] for p in sub]
        lim = [limit[p] if limit is not None else math.nan for p in sub]
        if name == "cart_kinetics":
            table = pd.DataFrame({
                "patient_id": patient, "day": [fmt(day[p]) for p in sub],
                "value": ["BLQ" if censored[p] else fmt(value[p], digits) for p in sub],
                "lloq": [fmt(v, digits) for v in lim], "unit": cart_unit})
            report.converted("CAR-T censored record (BLQ/CENS=1) written as BLQ with its limit",
                             int(censored[sub].sum()))
        else:
            factor = 100.0 if mrd_unit == "fraction" else 1.0
            table = pd.DataFrame({
                "patient_id": patient, "day": [fmt(day[p]) for p in sub],
                "mrd_pct": ["negative" if censored[p] else fmt(value[p] * factor, digits) for p in sub],
                "lod_pct": [fmt(v * factor, digits) for v in lim], "method": mrd_method, "specimen": mrd_specimen})
            report.converted("MRD censored record (BLQ/CENS=1) written as negative with its detection limit",
                             int(censored[sub].sum()))
            if factor != 1.0:
                report.converted("MRD fraction multiplied by 100 (percent)", len(sub))
        if scale != "linear":
            report.converted(f"{'CAR-T' if name == 'cart_kinetics' else 'MRD'} DV and limit back-transformed "
                             f"from the {scale} scale ({'exp' if scale == 'log' else '10^'}), "
                             "6 significant digits", len(sub))
        order = pd.DataFrame({"p": [ids[p] for p in sub], "d": [day[p] for p in sub]})
        order["k"] = order["p"].map({pid: i for i, pid in enumerate(kept)})
        tables[name] = table.iloc[order.sort_values(["k", "d"], kind="stable").index].reset_index(drop=True)
    other_cmt = observation & in_cohort & ~cmt.isin([canonical_code(c) for c in (cart_cmt, mrd_cmt) if c])
    for code in sorted(set(cmt[other_cmt])):
        report.leave_out(src, frame.index[other_cmt & (cmt == code)],
                         f"{cmt_column}={code} is neither the CAR-T nor the MRD compartment")

    # Patients: arm and baseline covariates (value at the patient's first record).
    patients = pd.DataFrame({"patient_id": [key[p] for p in kept],
                             "arm": [labels[arm_of[p]] for p in kept]})
    sex_map = {}
    if sex_codes:
        for item in sex_codes.split(","):
            code, label = parse_assignment(item)
            sex_map[canonical_code(code)] = (label or "").upper()
    for item in covariates:
        column, name = parse_assignment(item)
        column, name = column.upper(), name or column.lower()
        src.require([column], "a covariate named with --covariate")
        first = [frame.loc[(ids == pid) & ~comment & ~frame[column].isin(["", "."]), column] for pid in kept]
        raw = [values.iloc[0] if len(values) else "" for values in first]
        varying = sum(values.map(canonical_code).nunique() > 1 for values in first)
        report.converted(f"{column}: differs between records of a patient; the first record's value taken", varying)
        if name == "sex":
            mapped = [sex_map.get(canonical_code(v), v.upper()[:1] if v.upper() in ("F", "M", "FEMALE", "MALE") else None)
                      if v else "" for v in raw]
            if any(m is None or (m and m not in ("F", "M")) for m in mapped):
                fail(src.name, f"{column} holds codes that are not F/M", "give --sex-codes such as 1=M,2=F",
                     column=column)
            patients["sex"] = mapped
            report.converted(f"{column} codes mapped to F/M with --sex-codes (patients)",
                             sum(bool(m) for m in mapped) if sex_codes else 0)
            report.used(src.name, column, "patients.sex", f"codes {sex_codes}" if sex_codes else "F/M")
        else:
            numbers = [to_number(v) for v in raw]
            if any(n is None for n in numbers):
                fail(src.name, f"covariate {column} is not numeric",
                     "code the covariate as a number in the data file, or leave it out", column=column)
            patients[name] = [fmt(n) for n in numbers]
            report.used(src.name, column, f"patients.{name}", "value of the patient's first record")

    tables = {"patients": patients, **tables,
              "outcomes": _read_outcomes(outcomes, key, kept, src, first_pos, report)}
    unused = sorted(set(frame.columns) - {c["column"] for c in report.columns_used} - {"C"})
    if unused:
        report.not_derived.append(f"columns not used: {', '.join(unused)}")
    study = {"name": study_name or f"Imported from {src.name}",
             "control_arm": labels[canonical_code(control_code)],
             "experimental_arm": labels[canonical_code(exp_code)],
             "notes": f"Imported by toolkit import nonmem from {src.name}; see import_report.md."}
    return write_cohort(out, study=study, tables=tables, report=report, key=key, key_file=key_file)


def _read_outcomes(path, key: dict[str, str], kept: list[str], data_src, first_pos, report: ImportReport) -> pd.DataFrame:
    """outcomes.csv from a file keyed by the data file's ID (days since infusion, as in the cohort)."""
    src = read_source(path)
    report.source(src)
    required = [c.name for c in OUTCOMES.columns[1:] if c.required]
    src.require(["ID"] + [c.upper() for c in required], "an outcomes.csv column, days since infusion")
    frame = src.frame
    columns = [c for c in OUTCOMES.column_names[1:] if c in required or c.upper() in frame.columns]
    ids = frame["ID"].map(canonical_code)
    by_code = {canonical_code(k): k for k in key}
    dup = ids.duplicated(keep="first") & ids.isin(list(by_code))
    if dup.any():
        fail(src.name, "a patient has more than one outcomes row", "keep one row a patient",
             row=src.row(frame.index[dup][0]), column="ID")
    missing = [pid for pid in kept if canonical_code(pid) not in set(ids)]
    if missing:
        raise ImportDataError([Problem(data_src.name, data_src.row(first_pos[pid]), "ID", None,
                                       f"this patient has no row in {src.name}",
                                       f"add the patient's outcomes to {src.name}") for pid in missing])
    known = ids.isin(list(by_code))
    report.leave_out(src, frame.index[~known], "ID not among the imported patients of the data file")
    for column in columns:  # optional columns (e.g. new_therapy_day) only when the file has them
        report.used(src.name, column.upper(), f"outcomes.{column}", "as written (days since infusion for the *_day columns)")
    report.used(src.name, "ID", "patient_id", "replaced by the same pseudonymous code")
    rows = frame[known]
    out = pd.DataFrame({"patient_id": [key[by_code[i]] for i in ids[known]]})
    for column in columns:
        out[column] = rows[column.upper()].replace(".", "").to_numpy()
    order = {key[p]: i for i, p in enumerate(kept)}
    return out.sort_values("patient_id", key=lambda s: s.map(order)).reset_index(drop=True)
