"""Validation of a cohort folder: every problem, all at once.

Each rule is a named pandera check over a table whose index is the
spreadsheet row number, so a failure case becomes a ``Problem`` naming the
file, row, column, value and the fix. Validation runs in three passes:

1. *cells*: every cell parses as its column's kind (raw text);
2. *rows*: ranges and within-row consistency on the parsed table;
3. *cohort*: across rows and files (unique ids, arms, patients known).

Nothing is written to the cohort folder, and no row is dropped or changed.
"""

from __future__ import annotations

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
from toolkit.data.schema import TABLES, ColumnSpec, TableSpec

# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """A named check: ``ok(frame)`` is a boolean Series, True where the row passes."""

    name: str
    column: str
    message: str
    fix: str
    ok: Callable[[pd.DataFrame], pd.Series]


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
        value = raw.at[row, rule.column] if rule.column in raw.columns else None
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
        return "patient code is blank or contains spaces", "give every row a code without spaces, e.g. P001"
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
                          lambda f, c=spec.name, v=valid: f[c].map(v).astype(bool)))
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
        if spec.maximum is not None:
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
_DATE_CELL = re.compile(r"^(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})([ T].*)?$")


def _identifier_problems(file: str, raw: pd.DataFrame) -> list[Problem]:
    problems = []
    for column in raw.columns:
        normalized = re.sub(r"[^a-z0-9]+", "_", column.lower()).strip("_")
        if _IDENTIFIER_COLUMN.search(normalized) or normalized.endswith("date"):
            problems.append(Problem(
                file, None, column, None,
                "looks like a direct identifier or a calendar date; the toolkit accepts neither",
                "remove the column: patients are identified by a pseudonymous patient_id and time is "
                "counted in days since CAR-T infusion"))
            continue
        for row, text in raw[column].items():
            if _DATE_CELL.match(text):
                problems.append(Problem(
                    file, int(row), column, text,
                    "holds a calendar date; the toolkit accepts only days since CAR-T infusion",
                    "replace the date by the number of days since the infusion (day 0)"))
    return problems


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
    for column in ("response_day", "relapse_day", "hsct_day", "death_day"):
        event = column.removesuffix("_day")
        rules.append(Rule(
            f"outcomes.{column}.after_followup", column,
            f"the {event} is after last_followup_day",
            f"correct the {event} day or extend last_followup_day to the last day the patient was seen",
            lambda f, c=column: ~(f[c] > f["last_followup_day"])))
    return rules


def _new_therapy_rules(columns) -> list[Rule]:
    """``new_therapy_day`` (an optional column) lies within follow-up."""
    if "new_therapy_day" not in columns:
        return []
    return [Rule("outcomes.new_therapy_day.after_followup", "new_therapy_day",
                 "the new therapy is after last_followup_day",
                 "correct the new therapy day or extend last_followup_day to the last day the patient was seen",
                 lambda f: ~(f["new_therapy_day"] > f["last_followup_day"]))]


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


def _cart_rules() -> list[Rule]:
    return [
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
        *_series_order_rules("mrd", ["patient_id", "day", "method", "specimen"]),
    ]
    pnq_fix = "write the quantification limit in loq_pct (add the column if missing) and the detection limit in lod_pct"
    if has_loq:
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


def _column_problems(t: _Table) -> list[Problem]:
    problems = []
    present = set(t.raw.columns)
    for spec in t.spec.columns:
        if spec.required and spec.name not in present:
            problems.append(Problem(t.file, None, spec.name, None, "required column is missing",
                                    f"add a column named '{spec.name}': {spec.description}"))
    seen = set()
    for column in t.raw.columns:
        if column in seen or column == "":
            problems.append(Problem(t.file, 1, column, None, "header is blank or repeated",
                                    "give every column a unique name in the header row"))
        seen.add(column)
        if column not in t.spec.column_names and not t.spec.extra_numeric_columns:
            problems.append(Problem(t.file, 1, column, None, "is not a column of this file",
                                    f"remove it or rename it to one of: {', '.join(t.spec.column_names)}"))
    return problems


def _extra_column_problems(t: _Table) -> list[Problem]:
    problems = []
    for column in t.raw.columns:
        if column in t.spec.column_names:
            continue
        bad = t.raw[column].map(lambda s: parse_number(s) is None)
        for row in t.raw.index[bad]:
            problems.append(Problem(
                t.file, int(row), column, t.raw.at[row, column],
                "extra columns are covariates and must be numeric",
                "code the covariate as a number (e.g. 1/0), leave the cell blank if unknown, or remove the column"))
    return problems


def _check_table(t: _Table, problems: list[Problem]) -> None:
    problems.extend(_column_problems(t) + _identifier_problems(t.file, t.raw))
    missing = [c.name for c in t.spec.columns if c.required and c.name not in t.raw.columns]
    if missing or t.raw.columns.duplicated().any() or "" in t.raw.columns:
        return  # cell checks need the columns; the structural problems say what to fix first
    known = [c for c in t.raw.columns if c in t.spec.column_names]
    raw = t.raw[known + [c for c in t.raw.columns if c not in t.spec.column_names]]
    cell_problems = _run_rules(raw, raw, t.file, _cell_rules(t.spec, known)) + _extra_column_problems(t)
    problems.extend(cell_problems)
    unreadable_rows = {p.row for p in cell_problems}
    parsed = _parse_table(t.spec, raw)
    rules = _range_rules(t.spec, known)
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


def _unique_ids(t: _Table) -> list[Problem]:
    dup = t.parsed["patient_id"].duplicated(keep="first") & (t.parsed["patient_id"] != "")
    return [Problem(t.file, int(r), "patient_id", t.raw.at[r, "patient_id"],
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
        bad = ~patients.parsed["arm"].isin(arms)
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
        unknown = ~t.parsed["patient_id"].isin(known)
        for row in t.parsed.index[unknown]:
            problems.append(Problem(t.file, int(row), "patient_id", t.raw.at[row, "patient_id"],
                                    "this patient is not in patients.csv",
                                    "add the patient to patients.csv or correct the code"))
    outcomes = tables.get("outcomes")
    if outcomes is not None and outcomes.parsed is not None:
        missing = patients.parsed["patient_id"][~patients.parsed["patient_id"].isin(set(outcomes.parsed["patient_id"]))]
        for row, pid in missing.items():
            problems.append(Problem(patients.file, int(row), "patient_id", pid,
                                    "this patient has no row in outcomes.csv",
                                    "add the patient's outcomes (response and last_followup_day at least)"))
        followup = outcomes.parsed.drop_duplicates("patient_id").set_index("patient_id")["last_followup_day"]
        for name in ("cart_kinetics", "mrd"):
            t = tables.get(name)
            if t is None or t.parsed is None:
                continue
            limit = t.parsed["patient_id"].map(followup)
            late = t.parsed["day"] > limit
            for row in t.parsed.index[late]:
                problems.append(Problem(t.file, int(row), "day", t.raw.at[row, "day"],
                                        "is after the patient's last_followup_day in outcomes.csv",
                                        "correct the sample day or last_followup_day"))
    cart = tables.get("cart_kinetics")
    if cart is not None and cart.parsed is not None and "unit" in cart.parsed:
        units = cart.parsed["unit"]
        first = units.iloc[0] if len(units) else ""
        for row in cart.parsed.index[units != first]:
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


def _study_problems(study: dict) -> list[Problem]:
    problems = []
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
    problems += _cohort_problems(tables, study if study and not _study_problems(study) else None)
    problems += _cart_unit_problems(tables)
    if problems:
        raise CohortValidationError(str(folder), problems)
    return study, {name: t.parsed for name, t in tables.items()}
