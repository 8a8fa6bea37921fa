"""One .xlsx workbook (sheets patients, outcomes, cart_kinetics, mrd, study) to a cohort folder.

A cohort folder already accepts one .xlsx a table (its first sheet). A
single workbook with a sheet a table is what many people keep instead; this
importer writes its sheets as the cohort's CSV files, cell text unchanged,
and ``study`` (two columns, ``key`` and ``value``) as ``study.toml``. The
cohort on disk stays one format, so ``toolkit validate`` and every other
command see exactly what the analysis used.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from toolkit.data.schema import STUDY_KEYS, TABLES
from toolkit.importers.common import ImportReport, ImportResult, fail, write_cohort

SHEETS = ("patients", "outcomes", "cart_kinetics", "mrd", "study")


def _text(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Excel stores 28 as 28.0
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()  # kept visible, so validation can refuse a calendar date
    return str(value).strip()


def import_workbook(path: str | Path, *, out: str | Path) -> ImportResult:
    """Write the sheets of one workbook as a cohort folder (validated before it is put in place).

    Sheet names are matched case-insensitively; ``patients``, ``outcomes``
    and ``study`` are required. Other sheets are left out and reported.
    """
    path = Path(path)
    if not path.is_file():
        fail(path.name, "the file does not exist", f"check the path {path}")
    report = ImportReport("workbook")
    try:
        sheets = pd.read_excel(path, sheet_name=None, dtype=object, header=0)
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported, never raised raw
        fail(path.name, f"cannot be read as an .xlsx workbook ({type(exc).__name__})",
             "save the workbook as .xlsx with one sheet a table")
    by_name = {name.strip().lower(): name for name in sheets}
    missing = [s for s in ("patients", "outcomes", "study") if s not in by_name]
    if missing:
        fail(path.name, f"has no sheet named {', '.join(missing)}",
             f"name the sheets {', '.join(SHEETS)} (cart_kinetics and mrd are optional); sheets found: "
             f"{', '.join(sheets) or '(none)'}")
    report.sources.append({"file": path.name, "format": "xlsx", "rows": sum(len(f) for f in sheets.values())})
    report.options = {"sheets": [by_name[s] for s in SHEETS if s in by_name]}
    for name, actual in by_name.items():
        if name not in SHEETS:
            report.left_out.append({"file": f"{path.name} [{actual}]", "row_kind": "row",
                                    "rows": list(range(2, len(sheets[actual]) + 2)),
                                    "reason": "sheet is not a cohort table"})
    tables = {}
    for name in ("patients", "outcomes", "cart_kinetics", "mrd"):
        if name not in by_name:
            continue
        frame = sheets[by_name[name]].map(_text)
        frame.columns = [str(c).strip() for c in frame.columns]
        frame = frame[frame.apply(lambda r: any(v != "" for v in r), axis=1)] if len(frame) else frame
        tables[name] = frame
        for column in frame.columns:
            known = column in TABLES[name].column_names
            report.used(f"{path.name} [{by_name[name]}]", column, f"{name}.{column}",
                        "copied as written" if known else "copied; validation checks it")
    study_frame = sheets[by_name["study"]]
    columns = [str(c).strip().lower() for c in study_frame.columns]
    if columns[:2] != ["key", "value"]:
        fail(f"{path.name} [{by_name['study']}]", "the study sheet's header is not key, value",
             "give the study sheet two columns, key and value, with one row each for "
             + ", ".join(STUDY_KEYS))
    study = {}
    for _, row in study_frame.iterrows():
        key, value = _text(row.iloc[0]), _text(row.iloc[1])
        if key:
            study[key] = value
        if key and key not in STUDY_KEYS:
            report.not_derived.append(f"study key '{key}' is not a study.toml key; written anyway")
    report.used(f"{path.name} [{by_name['study']}]", "key/value", "study.toml")
    return write_cohort(out, study=study, tables=tables, report=report)
