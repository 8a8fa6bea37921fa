"""Validation of a cohort folder: every problem, all at once.

Each rule is a named pandera check over a table whose index is the
spreadsheet row number, so a failure case becomes a ``Problem`` naming the
file, row, column, value and the fix. Validation runs in three passes:

1. *cells*: every cell parses as its column's kind (raw text);
2. *rows*: ranges and within-row consistency on the parsed table;
3. *cohort*: across rows and files (unique ids, arms, patients known).

Nothing is written to the cohort folder, and no row is dropped or changed.
A cell that may hold a name or a date (an identifier-like column, a calendar
date, a patient code with spaces, text in a covariate column) is named by its
column, rows and count, never by its value.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pandera.pandas as pa

from toolkit.data.io import TableReadError, read_study, read_table, table_path
from toolkit.data.parse import parse_cart_value, parse_mrd_value, parse_number
from toolkit.data.problems import CohortValidationError, Problem
from toolkit.data.schema import STUDY_KEYS, TABLES, ColumnSpec, TableSpec

# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """A named check: ``ok(frame)`` is a boolean Series, True where the row passes."""

    name: str
    column: str
    message: str
    fix: str
    ok: Callable[[pd.DataFrame], pd.Series]
    show_value: bool = True  # False where the cell may hold a name (never echoed)


def _run_rules(frame: pd.DataFrame, raw: pd.DataFrame, file: str, rules: list[Rule]) -> list[Problem]:
    """Run rules through pandera (lazy, so every failure is collected)."""
    if not rules or frame.empty:
        return []
    by_name = {r.name: r for r in rules}
    schema = pa.DataFrameSchema(checks=[pa.Check(r.ok, name=r.name) for r in rules])
    try:
        schema.validate(frame, lazy=True)
        return []
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
    problems = []
    for (name, row), _ in cases.groupby(["check", "index"], sort=False):
        rule = by_name[name]
        value = raw.at[row, rule.column] if rule.column in raw.columns and rule.show_value else None
        problems.append(Problem(file, int(row), rule.column, value, rule.message, rule.fix))
    return problems


def _cell_is_valid(spec: ColumnSpec) -> Callable[[str], bool]:
    if spec.kind == "id":
        return lambda t: t != "" and not re.search(r"\s", t)
    if spec.kind == "category":
        allowed = {a.lower() for a in spec.allowed}
        return lambda t: (t == "" and spec.blank is not None) or (not allowed or t.lower() in allowed) and t != ""
    if spec.kind in ("number", "day"):
        return lambda t: (t == "" and spec.blank is not None) or (t != "" and parse_number(t) is not None)
    if spec.kind == "cart_value":
        return lambda t: parse_cart_value(t) is not None
    if spec.kind == "mrd_value":
        return lambda t: parse_mrd_value(t) is not None
    raise ValueError(f"unknown column kind {spec.kind!r}")


def _cell_message(spec: ColumnSpec) -> tuple[str, str]:
    if spec.kind == "id":
        return ("patient code is blank or contains spaces (not shown: it may be a name)",
                "give every row a pseudonymous code without spaces, e.g. P001")
    if spec.kind == "category":
        allowed = ", ".join(spec.allowed)
        if spec.blank is None and not spec.allowed:
            return "is blank", "fill in a value"
        return (f"is not one of {allowed}" + ("" if spec.blank else " (blank is not allowed)"),
                f"write one of {allowed}" + (f", or leave blank for '{spec.blank}'" if spec.blank else ""))
    if spec.kind in ("number", "day"):
        blank = f", or leave it blank for '{spec.blank}'" if spec.blank else " (this column may not be blank)"
        return ("is not a number" if spec.blank else "is blank or not a number",
                f"write a plain number with a point as decimal mark and no units{blank}")
    if spec.kind == "cart_value":
        return ("is not a number, BLQ or <x",
                "write the measured number, or BLQ (blank) or <LLOQ such as <50 for a value below the limit")
    return ("is not a percentage, negative, PNQ or <x",
            "write the measured percentage, or negative (blank, 0) or <limit such as <0.01 below the "
            "detection limit, or PNQ when detected but not quantifiable")


def _cell_rules(table: TableSpec, columns: list[str]) -> list[Rule]:
    rules = []
    for spec in table.columns:
        if spec.name not in columns:
            continue
        valid = _cell_is_valid(spec)
        message, fix = _cell_message(spec)
        rules.append(Rule(f"{table.name}.{spec.name}.cell", spec.name, message, fix,
                          lambda f, c=spec.name, v=valid: f[c].map(v).astype(bool), spec.kind != "id"))
    return rules


def _range_rules(table: TableSpec, columns: list[str]) -> list[Rule]:
    rules = []
    for spec in table.columns:
        if spec.name not in columns:
            continue
        if spec.minimum is not None:
            kind = "day" if spec.kind == "day" else "value"
            message = "is negative" if spec.minimum == 0 else f"is below {spec.minimum:g}"
            if spec.kind == "day":
                message = "is a negative day; days count from the CAR-T infusion (day 0)"
            rules.append(Rule(f"{table.name}.{spec.name}.min", spec.name, message,
                              f"correct the {kind}: it must be {spec.minimum:g} or more",
                              lambda f, c=spec.name, m=spec.minimum: ~(f[c] < m)))
        if spec.kind == "day":
            rules.append(Rule(f"{table.name}.{spec.name}.min", spec.name,
                              "is a negative day; days count from the CAR-T infusion (day 0)",
                              "correct the day: it must be 0 or more",
                              lambda f, c=spec.name: ~(f[c] < 0)))
        if spec.maximum is not None and spec.kind == "day":
            rules.append(Rule(f"{table.name}.{spec.name}.max", spec.name,
                              f"is more than {spec.maximum:g} days ({spec.maximum / 365.25:.0f} years) after "
                              "the CAR-T infusion",
                              "correct the day: days count from the infusion (day 0); check for a calendar "
                              "date or an extra digit",
                              lambda f, c=spec.name, m=spec.maximum: ~(f[c] > m)))
        elif spec.maximum is not None:
            unit = " (a percentage must lie in 0-100)" if spec.maximum == 100 else ""
            rules.append(Rule(f"{table.name}.{spec.name}.max", spec.name,
                              f"is above {spec.maximum:g}{unit}",
                              f"correct the value: it must be at most {spec.maximum:g}",
                              lambda f, c=spec.name, m=spec.maximum: ~(f[c] > m)))
    return rules


# --------------------------------------------------------------------------- parsing


def _parse_table(table: TableSpec, raw: pd.DataFrame) -> pd.DataFrame:
    """Typed copy of a raw table; cells that do not parse become NaN (already reported)."""
    out = pd.DataFrame(index=raw.index)
    for column in raw.columns:
        spec = next((c for c in table.columns if c.name == column), None)
        text = raw[column]
        if spec is None:  # extra covariate column in patients
            out[column] = text.map(lambda t: parse_number(t)).astype(float)
        elif spec.kind in ("number", "day"):
            out[column] = text.map(lambda t: np.nan if parse_number(t) is None else parse_number(t)).astype(float)
        elif spec.kind == "category" and spec.allowed:
            canonical = {a.lower(): a for a in spec.allowed}
            out[column] = text.map(lambda t: canonical.get(t.lower(), "" if t == "" else t))
        elif spec.kind == "cart_value":
            parsed = text.map(lambda t: parse_cart_value(t) or (np.nan, False, np.nan))
            out["value"] = [p[0] for p in parsed]
            out["below_lloq"] = [bool(p[1]) for p in parsed]
            out["own_limit"] = [p[2] for p in parsed]
        elif spec.kind == "mrd_value":
            parsed = text.map(lambda t: parse_mrd_value(t) or (np.nan, "invalid", np.nan))
            out["mrd_pct"] = [p[0] for p in parsed]
            out["censoring"] = [p[1] for p in parsed]
            out["own_limit"] = [p[2] for p in parsed]
        else:
            out[column] = text
    return out


# --------------------------------------------------------------------------- identifiers

_IDENTIFIER_COLUMN = re.compile(
    r"(^|_)(name|names|firstname|first_name|lastname|last_name|surname|initials|dob|birth|birthdate|"
    r"birthday|mrn|medical_record|record_number|hospital_number|nhs|ssn|social_security|address|"
    r"phone|telephone|email|e_mail|zip|zipcode|postcode|date|datetime)($|_)"
)
# A numeric column named like a code (hosp_id, record_no, case_number) is an
# identifier, not a covariate; only patient_id may hold the (pseudonymous) code.
_CODE_COLUMN = re.compile(r"(^|_)(id|ids|identifier|code|codes|no|nr|num|number|key|pid|uid)$")
_MONTHS = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*"
_DATE_CELL = re.compile(
    r"^(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}"
    rf"|\d{{1,2}}[- ]?{_MONTHS}[-, ]*\d{{2,4}}|{_MONTHS}[- ]\d{{1,2}},? \d{{4}})([ T].*)?$",
    re.IGNORECASE)
_RECORD_NUMBER = re.compile(r"^\d{7,}$")


def _looks_like_record_numbers(cells: pd.Series) -> bool:
    """Distinct whole numbers of 7+ digits on every filled row, mostly not round: record numbers.

    A measured count (cells infused, 120000000) is round; a record number is not.
    """
    filled = cells[cells != ""]
    if len(filled) < 5 or not filled.is_unique or not filled.map(lambda t: bool(_RECORD_NUMBER.match(t))).all():
        return False
    return bool(filled.str.endswith("00").mean() < 0.5)


def _normalized(column: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", column.lower()).strip("_")


def _misspelled(table: TableSpec, column: str) -> str | None:
    """The schema column that ``column`` spells differently (case, spaces, hyphens), if any."""
    if column in table.column_names:
        return None
    return next((c for c in table.column_names if _normalized(column) == c), None)


def _identifier_columns(table: TableSpec, raw: pd.DataFrame) -> list[str]:
    """Columns (not of the schema) that look like a name, a date or a record number."""
    flagged = []
    for position, column in enumerate(raw.columns):
        if column in table.column_names or column == "" or _misspelled(table, column):
            continue
        normalized = re.sub(r"[^a-z0-9]+", "_", column.lower()).strip("_")
        if (_IDENTIFIER_COLUMN.search(normalized) or normalized.endswith("date") or _CODE_COLUMN.search(normalized)
                or _looks_like_record_numbers(raw.iloc[:, position])):
            flagged.append(column)
    return flagged


def _identifier_problems(file: str, raw: pd.DataFrame, flagged: list[str]) -> tuple[list[Problem], set]:
    """Identifier columns and calendar dates, named by column and row count, never by value.

    Returns the problems and the ``(row, column)`` cells holding a date, so no
    other check repeats (and echoes) them.
    """
    problems, date_cells = [], set()
    for position, column in enumerate(raw.columns):
        cells = raw.iloc[:, position]
        if column in flagged:
            problems.append(Problem(
                file, None, column, None,
                f"looks like a direct identifier or a calendar date ({int((cells != '').sum())} filled row(s); "
                "values not shown); the toolkit accepts neither",
                "remove the column: patients are identified by a pseudonymous patient_id and time is "
                "counted in days since CAR-T infusion (a covariate that is a count or a measurement can stay "
                "under a name that does not end in id, no, number or code, e.g. n_prior_lines)"))
            continue
        rows = [int(r) for r, text in cells.items() if _DATE_CELL.match(text)]
        if rows:
            date_cells.update((r, column) for r in rows)
            listed = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
            problems.append(Problem(
                file, rows[0], column, None,
                f"holds a calendar date in {len(rows)} row(s) (rows {listed}; values not shown); the toolkit "
                "accepts only days since CAR-T infusion",
                "replace each date by the number of days since the infusion (day 0)"))
    return problems, date_cells


# --------------------------------------------------------------------------- per-table rules


def _event_rules() -> list[Rule]:
    """Within-row consistency of outcomes.csv."""
    remission = lambda f: f["response"].isin(["CR", "CRi"])  # noqa: E731
    rules = [
        Rule("outcomes.response_day.needed", "response_day",
             "is blank although the response is CR/CRi",
             "write the day remission was first documented, or change the response to NR",
             lambda f: ~(remission(f) & f["response_day"].isna())),
        Rule("outcomes.response_day.nr", "response_day",
             "is filled although the response is NR",
             "leave response_day blank for a non-responder, or correct the response",
             lambda f: ~((f["response"] == "NR") & f["response_day"].notna())),
        Rule("outcomes.relapse_day.nr", "relapse_day",
             "a relapse is recorded for a patient who never reached remission (response NR)",
             "leave relapse_day blank for non-responders (progression is not relapse), or correct the response",
             lambda f: ~((f["response"] == "NR") & f["relapse_day"].notna())),
        Rule("outcomes.relapse_day.order", "relapse_day",
             "is on or before response_day",
             "a relapse must come after the remission it ends; correct either day",
             lambda f: ~(f["relapse_day"] <= f["response_day"])),
        Rule("outcomes.relapse_cd19.needed", "relapse_cd19",
             "is blank although a relapse is recorded",
             "write positive, negative or unknown",
             lambda f: ~(f["relapse_day"].notna() & (f["relapse_cd19"] == ""))),
        Rule("outcomes.relapse_cd19.norelapse", "relapse_cd19",
             "is filled although no relapse_day is recorded",
             "leave relapse_cd19 blank, or fill in relapse_day",
             lambda f: ~(f["relapse_day"].isna() & (f["relapse_cd19"] != ""))),
        Rule("outcomes.death_day.followup", "last_followup_day",
             "differs from death_day; a patient who died is last known at the death day",
             "set last_followup_day equal to death_day",
             lambda f: ~(f["death_day"].notna() & (f["last_followup_day"] != f["death_day"]))),
    ]
    # Events in the order they can happen: remission, then relapse/HSCT/death;
    # nothing after death. Out of order, a time to event would be negative.
    for column, event in (("hsct_day", "transplant"), ("death_day", "death")):
        rules.append(Rule(
            f"outcomes.{column}.before_response", column, "is before response_day",
            f"correct either day: the {event} of a responder cannot precede the remission "
            "(leave response_day blank only for NR)",
            lambda f, c=column: ~(f[c] < f["response_day"])))
    for column, event in (("relapse_day", "relapse"), ("hsct_day", "transplant")):
        rules.append(Rule(
            f"outcomes.{column}.after_death", column, "is after death_day",
            f"correct either day: a {event} cannot come after the death",
            lambda f, c=column: ~(f[c] > f["death_day"])))
    for column in ("response_day", "relapse_day", "hsct_day", "death_day"):
        event = column.removesuffix("_day")
        rules.append(Rule(
            f"outcomes.{column}.after_followup", column,
            f"the {event} is after last_followup_day",
            f"correct the {event} day or extend last_followup_day to the last day the patient was seen",
            lambda f, c=column: ~_after_followup_not_death(f, c)))
    return rules


def _new_therapy_rules(columns) -> list[Rule]:
    """``new_therapy_day`` (an optional column) lies within follow-up."""
    if "new_therapy_day" not in columns:
        return []
    return [Rule("outcomes.new_therapy_day.after_followup", "new_therapy_day",
                 "the new therapy is after last_followup_day",
                 "correct the new therapy day or extend last_followup_day to the last day the patient was seen",
                 lambda f: ~(f["new_therapy_day"] > f["last_followup_day"]))]


def _after_followup_not_death(f: pd.DataFrame, column: str) -> pd.Series:
    """After last follow-up, unless already named as after the death (its own, clearer rule)."""
    late = f[column] > f["last_followup_day"]
    return late if column == "death_day" else late & ~(f[column] > f["death_day"])


def _series_order_rules(table: str, keys: list[str]) -> list[Rule]:
    """Samples of a patient come in increasing day order, without exact duplicates."""

    def duplicated(f: pd.DataFrame) -> pd.Series:
        return ~f.duplicated(subset=keys, keep="first")

    def increasing(f: pd.DataFrame) -> pd.Series:
        previous = f.groupby("patient_id", sort=False)["day"].cummax().groupby(f["patient_id"]).shift(1)
        return ~(f["day"] < previous)

    what = "sample" if table == "cart_kinetics" else "assessment"
    same = "the same day" if len(keys) == 2 else "the same day, method and specimen"
    return [
        Rule(f"{table}.day.duplicate", "day", f"repeats an earlier {what} of this patient on {same}",
             "remove the duplicate row or correct its day", duplicated),
        Rule(f"{table}.day.order", "day",
             f"is earlier than the previous {what} of this patient (days must increase)",
             "sort the patient's rows by day, or correct the day", increasing),
    ]


def _positive_rules(table: str, column: str, limit: str, quantified: str) -> list[Rule]:
    """A limit of quantification/detection, and a ``<x`` limit, must be above 0."""
    return [
        Rule(f"{table}.{column}.positive", column, "is 0; a limit is above 0",
             f"write the assay's {limit} (a number above 0), or leave it blank if unknown",
             lambda f: ~(f[column] == 0)),  # below 0 is named by the range rule
        Rule(f"{table}.{quantified}.own_limit", quantified, "is <x with x not above 0",
             f"write the {limit} after <, e.g. <50", lambda f: ~(f["own_limit"] <= 0)),
    ]


def _cart_rules() -> list[Rule]:
    return [
        Rule("cart_kinetics.value.zero", "value",
             "is 0, but a quantified level is above 0 (0 would be a level below the limit)",
             "write BLQ, or <LLOQ such as <50, for a sample below the limit of quantification",
             lambda f: ~(~f["below_lloq"] & (f["value"] == 0))),
        *_positive_rules("cart_kinetics", "lloq", "lower limit of quantification", "value"),
        Rule("cart_kinetics.lloq.needed", "lloq",
             "is blank although the value is below the LLOQ",
             "write the assay's lower limit of quantification in lloq, or write the value as <LLOQ (e.g. <50)",
             lambda f: ~(f["below_lloq"] & f["own_limit"].isna() & f["lloq"].isna())),
        *_series_order_rules("cart_kinetics", ["patient_id", "day"]),
    ]


def _mrd_rules(has_loq: bool) -> list[Rule]:
    rules = [
        Rule("mrd.lod_pct.needed", "lod_pct",
             "is blank although the MRD value is below the detection limit",
             "write the assay's detection limit in lod_pct (e.g. 0.01 for flow, 0.0001 for NGS), "
             "or write the value as <limit",
             lambda f: ~((f["censoring"] == "below_lod") & f["own_limit"].isna() & f["lod_pct"].isna())),
        *_positive_rules("mrd", "lod_pct", "detection limit", "mrd_pct"),
        *_series_order_rules("mrd", ["patient_id", "day", "method", "specimen"]),
    ]
    pnq_fix = "write the quantification limit in loq_pct (add the column if missing) and the detection limit in lod_pct"
    if has_loq:
        rules.append(Rule("mrd.loq_pct.positive", "loq_pct", "is 0; a limit is above 0",
                          "write the assay's quantification limit (a number above 0), or leave it blank",
                          lambda f: ~(f["loq_pct"] == 0)))
        rules.append(Rule("mrd.loq_pct.below_lod", "loq_pct", "is below lod_pct",
                          "the quantification limit is at or above the detection limit: check both, or swap them",
                          lambda f: ~((f["loq_pct"] < f["lod_pct"]) & (f["loq_pct"] != 0))))  # 0: named above
        rules.append(Rule("mrd.loq_pct.needed", "loq_pct",
                          "is blank although the value is PNQ (positive, not quantifiable)", pnq_fix,
                          lambda f: ~((f["censoring"] == "pnq") & (f["loq_pct"].isna() | f["lod_pct"].isna()))))
    else:
        rules.append(Rule("mrd.loq_pct.missing", "mrd_pct",
                          "is PNQ but the file has no loq_pct column", pnq_fix,
                          lambda f: f["censoring"] != "pnq"))
    return rules


# --------------------------------------------------------------------------- folder


@dataclass
class _Table:
    spec: TableSpec
    file: str
    raw: pd.DataFrame
    parsed: pd.DataFrame | None = None


def _read_tables(folder: Path, problems: list[Problem]) -> dict[str, _Table]:
    tables = {}
    for spec in TABLES.values():
        try:
            path = table_path(folder, spec.name)
        except TableReadError as err:
            problems.append(err.problem)
            continue
        if path is None:
            if spec.required:
                problems.append(Problem(
                    f"{spec.name}.csv", message="the file is missing",
                    fix=f"add {spec.name}.csv (start from data_templates/{spec.name}.csv)"))
            continue
        try:
            tables[spec.name] = _Table(spec, path.name, read_table(path))
        except TableReadError as err:
            problems.append(err.problem)
    return tables


_OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def _separator_problem(t: _Table) -> Problem | None:
    """A one-column header holding ``;`` (or tabs): the file uses another separator."""
    if len(t.raw.columns) != 1 or t.file.endswith(".xlsx"):
        return None
    for separator, name in _OTHER_SEPARATORS.items():
        if separator in t.raw.columns[0]:
            return Problem(t.file, 1, None, None,
                           f"the header row is one cell separated by {name}, so no column can be found",
                           "save the file comma-separated (in Excel: File > Save As > CSV UTF-8 (Comma "
                           f"delimited)), or replace every {separator!r} by a comma")
    return None


def _column_problems(t: _Table) -> list[Problem]:
    separator = _separator_problem(t)
    if separator is not None:
        return [separator]
    if all(c == "" for c in t.raw.columns):
        return [Problem(t.file, 1, None, None, "the first row is empty; the column names must be on row 1",
                        "delete the empty rows above the header row")]
    problems = []
    present = set(t.raw.columns)
    misspelled = {}
    for column in t.raw.columns:
        target = _misspelled(t.spec, column)
        if target is not None and target not in present:
            misspelled[target] = column
            problems.append(Problem(t.file, 1, column, None, f"is spelled differently from the column '{target}'",
                                    f"rename the header to '{target}' exactly"))
    for spec in t.spec.columns:
        if spec.required and spec.name not in present and spec.name not in misspelled:
            problems.append(Problem(t.file, None, spec.name, None, "required column is missing",
                                    f"add a column named '{spec.name}': {spec.description}"))
    seen = set()
    for position, column in enumerate(t.raw.columns, start=1):
        if column == "":
            problems.append(Problem(t.file, 1, f"#{position}", None, "header cell is blank",
                                    "give every column a name in the header row, or delete the empty column"))
        elif column in seen:
            problems.append(Problem(t.file, 1, column, None,
                                    f"the column name is repeated (again in column {position})",
                                    "keep one column of this name: delete or rename the other"))
        seen.add(column)
        if (column not in t.spec.column_names and not t.spec.extra_numeric_columns and column != ""
                and column not in misspelled.values()):
            problems.append(Problem(t.file, 1, column, None, "is not a column of this file",
                                    f"remove it or rename it to one of: {', '.join(t.spec.column_names)}"))
    return problems


def _extra_column_problems(t: _Table, skip: set) -> list[Problem]:
    """Extra columns must be numeric; named by column and row count (text there may be a name)."""
    problems = []
    for column in t.raw.columns:
        if column in t.spec.column_names:
            continue
        bad = t.raw[column].map(lambda s: parse_number(s) is None)
        rows = [int(r) for r in t.raw.index[bad] if (int(r), column) not in skip]
        if rows:
            listed = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
            problems.append(Problem(
                t.file, rows[0], column, None,
                f"extra columns are covariates and must be numeric; {len(rows)} row(s) are not "
                f"(rows {listed}; values not shown)",
                "code the covariate as a number (e.g. 1/0), leave the cell blank if unknown, or remove the column"))
        finite = t.raw[column].map(lambda s: parse_number(s))
        huge = [int(r) for r in t.raw.index[finite.map(lambda v: v is not None and abs(v) > 1e12)]]
        if huge:
            problems.append(Problem(
                t.file, huge[0], column, None,
                f"holds a magnitude above 1e12 in {len(huge)} row(s) (rows {', '.join(map(str, huge[:10]))})",
                "check the value, or express the covariate in larger units"))
    return problems


def _check_table(t: _Table, problems: list[Problem]) -> None:
    flagged = _identifier_columns(t.spec, t.raw)
    structural = _column_problems(t)
    problems.extend(p for p in structural if p.column not in flagged)  # an identifier column is named once
    if _separator_problem(t) is not None or any(_misspelled(t.spec, c) for c in t.raw.columns):
        return  # the header must be right before any cell can be read under it
    identifiers, date_cells = _identifier_problems(t.file, t.raw, flagged)
    problems.extend(identifiers)
    # An identifier column is named once, never checked (and echoed) cell by cell.
    t.raw = t.raw.loc[:, [c not in flagged for c in t.raw.columns]]
    missing = [c.name for c in t.spec.columns if c.required and c.name not in t.raw.columns]
    if missing or t.raw.columns.duplicated().any() or "" in t.raw.columns:
        return  # cell checks need the columns; the structural problems say what to fix first
    if t.raw.empty:
        problems.append(Problem(
            t.file, None, None, None, "has a header row but no data rows",
            "fill in one row a patient (see data_templates/example)" if t.spec.required else
            "fill in the rows, or remove the file if there are none"))
        return
    known = [c for c in t.raw.columns if c in t.spec.column_names]
    raw = t.raw[known + [c for c in t.raw.columns if c not in t.spec.column_names]]
    cell_problems = _run_rules(raw, raw, t.file, _cell_rules(t.spec, known)) + _extra_column_problems(t, date_cells)
    # a date cell is already named (without its value) by the identifier check
    cell_problems = [p for p in cell_problems if (p.row, p.column) not in date_cells]
    problems.extend(cell_problems)
    unreadable_rows = {p.row for p in cell_problems} | {r for r, _ in date_cells}
    parsed = _parse_table(t.spec, raw)
    # A value out of range is named once: the rules across its row would
    # report consequences of it, not causes.
    range_problems = [p for p in _run_rules(parsed, raw, t.file, _range_rules(t.spec, known))
                      if p.row not in unreadable_rows]
    problems.extend(range_problems)
    unreadable_rows |= {p.row for p in range_problems}
    rules = []
    if t.spec.name == "outcomes":
        rules += _event_rules() + _new_therapy_rules(known)
    elif t.spec.name == "cart_kinetics":
        rules += _cart_rules()
        parsed["lloq_used"] = parsed["own_limit"].fillna(parsed["lloq"])
        parsed.loc[~parsed["below_lloq"], "lloq_used"] = parsed.loc[~parsed["below_lloq"], "lloq"]
    elif t.spec.name == "mrd":
        if "loq_pct" not in parsed.columns:
            parsed["loq_pct"] = np.nan
        rules += _mrd_rules("loq_pct" in raw.columns)
        parsed["lod_used"] = parsed["own_limit"].fillna(parsed["lod_pct"])
    # A row whose cells could not be read gets only those problems: rules on
    # unreadable values would report consequences, not causes.
    problems.extend(p for p in _run_rules(parsed, raw, t.file, rules) if p.row not in unreadable_rows)
    t.raw, t.parsed = raw, parsed


def _code(value: str) -> str | None:
    """A patient code as written, or None when it is not a valid code (it may be a name: never echoed)."""
    return value if value and not re.search(r"\s", value) else None


def _unique_ids(t: _Table) -> list[Problem]:
    dup = t.parsed["patient_id"].duplicated(keep="first") & (t.parsed["patient_id"] != "")
    return [Problem(t.file, int(r), "patient_id", _code(t.raw.at[r, "patient_id"]),
                    "duplicate patient_id: this file has one row a patient",
                    "merge the two rows or correct the code") for r in t.parsed.index[dup]]


def _cohort_problems(tables: dict[str, _Table], study: dict | None) -> list[Problem]:
    problems = []
    patients = tables.get("patients")
    for name in ("patients", "outcomes"):
        if name in tables and tables[name].parsed is not None:
            problems += _unique_ids(tables[name])
    if patients is None or patients.parsed is None:
        return problems
    known = set(patients.parsed["patient_id"])
    if study is not None:
        arms = {study.get("control_arm"), study.get("experimental_arm")}
        bad = ~patients.parsed["arm"].isin(arms) & (patients.parsed["arm"] != "")  # blank: named by its cell
        present = set(patients.parsed["arm"][~bad]) - {""}
        if not bad.any() and len(present) == 1:
            (only,) = present
            other = study.get("experimental_arm") if only == study.get("control_arm") else study.get("control_arm")
            problems.append(Problem(
                patients.file, None, "arm", None, f"every patient is in arm '{only}'; none in '{other}'",
                "the analysis compares the two arms of study.toml: add the patients of the other arm, or "
                "correct the arm column"))
        for row in patients.parsed.index[bad]:
            problems.append(Problem(
                patients.file, int(row), "arm", patients.raw.at[row, "arm"],
                "is not one of the arms named in study.toml",
                f"write '{study.get('control_arm')}' or '{study.get('experimental_arm')}' exactly, "
                "or correct the arm labels in study.toml"))
    for name in ("outcomes", "cart_kinetics", "mrd"):
        t = tables.get(name)
        if t is None or t.parsed is None:
            continue
        unknown = t.parsed[~t.parsed["patient_id"].isin(known)]
        for _, rows in unknown.groupby("patient_id", sort=False):  # one problem a patient and file
            row, more = int(rows.index[0]), len(rows) - 1
            problems.append(Problem(t.file, row, "patient_id", _code(t.raw.at[row, "patient_id"]),
                                    "this patient is not in patients.csv"
                                    + (f" (and {more} later row(s) of this patient)" if more else ""),
                                    "add the patient to patients.csv or correct the code"))
    outcomes = tables.get("outcomes")
    if outcomes is not None and outcomes.parsed is not None:
        ids = patients.parsed["patient_id"]
        missing = ids[~ids.isin(set(outcomes.parsed["patient_id"])) & ids.map(lambda v: _code(v) is not None)]
        for row, pid in missing.items():
            problems.append(Problem(patients.file, int(row), "patient_id", _code(pid),
                                    "this patient has no row in outcomes.csv",
                                    "add the patient's outcomes (response and last_followup_day at least)"))
        followup = outcomes.parsed.drop_duplicates("patient_id").set_index("patient_id")["last_followup_day"]
        for name in ("cart_kinetics", "mrd"):
            t = tables.get(name)
            if t is None or t.parsed is None:
                continue
            limit = t.parsed["patient_id"].map(followup)
            late = t.parsed[t.parsed["day"] > limit]
            # one problem a patient: a follow-up day too early makes all later samples "late"
            for _, rows in late.groupby("patient_id", sort=False):
                row, more = int(rows.index[0]), len(rows) - 1
                problems.append(Problem(t.file, row, "day", t.raw.at[row, "day"],
                                        "is after the patient's last_followup_day in outcomes.csv"
                                        + (f" (and {more} later row(s) of this patient)" if more else ""),
                                        "correct the sample day or last_followup_day"))
    cart = tables.get("cart_kinetics")
    if cart is not None and cart.parsed is not None and "unit" in cart.parsed:
        units = cart.parsed["unit"]
        filled = units[units != ""]  # a blank unit is named by its cell
        first = filled.iloc[0] if len(filled) else ""
        for row in filled.index[filled != first]:
            problems.append(Problem(cart.file, int(row), "unit", cart.raw.at[row, "unit"],
                                    f"mixes units in one file (the first row uses '{first}')",
                                    "convert all values (and LLOQs) to one unit and write it on every row"))
    return problems


def _cart_unit_problems(tables: dict[str, _Table]) -> list[Problem]:
    """Every ``cart_kinetics`` row whose ``unit`` is not one the toolkit knows (``toolkit.data.units``): the
    CAR-T priors are centred per unit, so an unknown unit would be fitted on the wrong scale."""
    from toolkit.data.units import find_cart_unit, unknown_unit_fix

    cart = tables.get("cart_kinetics")
    if cart is None or cart.parsed is None or "unit" not in cart.parsed:
        return []
    unknown = cart.parsed["unit"].map(lambda u: u != "" and find_cart_unit(u) is None)
    return [Problem(cart.file, int(row), "unit", cart.raw.at[row, "unit"], "is not a unit the toolkit knows",
                    unknown_unit_fix()) for row in cart.parsed.index[unknown.to_numpy(bool)]]


_DATE_TEXT = re.compile(r"\b(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})\b")


def _study_problems(study: dict) -> list[Problem]:
    problems = []
    for key, value in study.items():
        if key not in STUDY_KEYS:
            problems.append(Problem("study.toml", None, key, None, "is not a key of study.toml",
                                    f"remove the line (keys: {', '.join(STUDY_KEYS)}); names and dates of "
                                    "people are not needed"))
        elif isinstance(value, (dt.date, dt.time)) or (isinstance(value, str) and _DATE_TEXT.search(value)):
            problems.append(Problem("study.toml", None, key, None, "holds a calendar date (not shown)",
                                    "remove the date: the toolkit counts days since CAR-T infusion"))
        elif not isinstance(value, str) and key not in ("control_arm", "experimental_arm"):
            problems.append(Problem("study.toml", None, key, None, "is not text",
                                    f'write it in quotes: {key} = "..."'))
    for key in ("control_arm", "experimental_arm"):
        value = study.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem("study.toml", None, key, None if value is None else str(value),
                                    "is missing or not a text label",
                                    f'add a line {key} = "label" with the arm label used in patients.csv'))
    if (study.get("control_arm") == study.get("experimental_arm")) and study.get("control_arm"):
        problems.append(Problem("study.toml", None, "experimental_arm", study["experimental_arm"],
                                "is the same label as control_arm", "give the two arms different labels"))
    return problems


def validate_folder(folder: Path) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Validate a cohort folder; return (study, parsed tables) or raise CohortValidationError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CohortValidationError(str(folder), [Problem(
            str(folder), message="is not a folder",
            fix="give the path of a cohort folder holding study.toml, patients.csv and outcomes.csv")])
    try:
        os.listdir(folder)
    except OSError as exc:
        raise CohortValidationError(str(folder), [Problem(
            str(folder), message=f"cannot be read ({exc.strerror or type(exc).__name__})",
            fix="check that you may read the folder and its files")]) from exc
    problems: list[Problem] = []
    study = None
    try:
        study = read_study(folder)
        problems += _study_problems(study)
    except TableReadError as err:
        problems.append(err.problem)
    tables = _read_tables(folder, problems)
    for t in tables.values():
        _check_table(t, problems)
    arms_ok = study is not None and not any(p.column in ("control_arm", "experimental_arm")
                                            for p in _study_problems(study))
    problems += _cohort_problems(tables, study if arms_ok else None)
    problems += _cart_unit_problems(tables)
    if problems:
        raise CohortValidationError(str(folder), problems)
    return study, {name: t.parsed for name, t in tables.items()}
