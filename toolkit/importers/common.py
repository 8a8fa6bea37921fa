"""What every importer shares: reading source files, the mapping report,
pseudonymous patient codes, and writing a cohort folder that validates.

Source tables are read as text (CSV, the first sheet of an .xlsx, or a SAS
transport .xpt file), every cell stripped, so the same parsers serve every
format. A cell's place is named the way the user finds it: the spreadsheet
row for CSV/.xlsx (the header is row 1), the record number for .xpt.

Errors never echo a cell's content: source files hold identifiers and dates
that must not end up in a terminal log.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from toolkit.data.io import write_study
from toolkit.data.problems import CohortValidationError, Problem
from toolkit.data.schema import TABLES

#: Text cells that mean "missing" in pharmacometric and SAS-exported files.
MISSING = ("", ".", "NA", "NaN", "nan")
SAS_EPOCH = dt.date(1960, 1, 1)  # SAS dates count days from 1960-01-01


class ImportDataError(ValueError):
    """Raised with every problem found in the source files (or the options)."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(set(problems), key=lambda p: (p.file, p.row or -1, p.column or "", p.message))
        lines = [f"{len(self.problems)} problem(s) in the import:"] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


def fail(file: str, message: str, fix: str, *, row: int | None = None, column: str | None = None):
    """Raise one problem (never with the cell's value: it may be an identifier or a date)."""
    raise ImportDataError([Problem(file, row, column, None, message, fix)])


# --------------------------------------------------------------------------- source tables


@dataclass
class Source:
    """A source table as text, with how to name its rows.

    ``frame`` has upper-case column names (CDISC and NONMEM names are
    case-insensitive in practice) and a 0-based position index.
    """

    path: Path
    frame: pd.DataFrame
    kind: str  # csv, xlsx, xpt

    @property
    def name(self) -> str:
        return self.path.name

    def row(self, position: int) -> int:
        """The row number a user sees: spreadsheet row (header = 1) or .xpt record number."""
        return position + (1 if self.kind == "xpt" else 2)

    @property
    def row_word(self) -> str:
        return "record" if self.kind == "xpt" else "row"

    def has(self, column: str) -> bool:
        return column.upper() in self.frame.columns

    def require(self, columns: list[str], what: str) -> None:
        missing = [c for c in columns if not self.has(c)]
        if missing:
            raise ImportDataError([Problem(self.name, None, c, None, "required column is missing",
                                           f"add the column {c} ({what})") for c in missing])


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else format(value, ".15g")
    if isinstance(value, (dt.datetime, pd.Timestamp)):
        return "" if pd.isna(value) else value.date().isoformat() if value.time() == dt.time(0) else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value).strip()


def read_source(path: str | Path) -> Source:
    """Read a CSV, .xlsx (first sheet) or SAS transport (.xpt) file as text."""
    path = Path(path)
    if not path.is_file():
        fail(path.name, "the file does not exist", f"check the path {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".xpt":
            import pyreadstat

            frame, _ = pyreadstat.read_xport(str(path))
            kind = "xpt"
        elif suffix in (".xlsx", ".xls"):
            frame = pd.read_excel(path, dtype=object, keep_default_na=False, sheet_name=0)
            kind = "xlsx"
        else:
            options = dict(dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig")
            frame = pd.read_csv(path, **options)
            if frame.shape[1] == 1:  # not comma-separated: NONMEM files are often blank- or semicolon-separated
                frame = pd.read_csv(path, sep=r"\s*;\s*|\s+", engine="python", **options)
            kind = "csv"
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported, never raised raw
        fail(path.name, f"cannot be read ({type(exc).__name__})",
             "give a comma-separated UTF-8 text file with one header row, an .xlsx file or a SAS transport .xpt file")
    frame = frame.map(_cell_text) if len(frame) else frame.astype(str)
    # NONMEM headers often start with a comment mark ("#ID" or "C ID").
    frame.columns = [re.sub(r"^#\s*", "", str(c).strip()).upper() for c in frame.columns]
    frame = frame.reset_index(drop=True)
    return Source(path, frame, kind)


def to_number(text: str) -> float | None:
    """Number in a cell; NaN for a missing mark; None for anything unreadable."""
    if text in MISSING:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


_DATE9 = re.compile(r"^(\d{1,2})([A-Za-z]{3})(\d{4})$")


def to_date(text: str) -> dt.date | None | float:
    """A date cell: ISO (2024-03-01, optionally with a time), DATE9 (01MAR2024) or a SAS date number.

    Returns NaN for a missing cell and None for anything unreadable.
    """
    if text in MISSING:
        return math.nan
    number = to_number(text)
    if number is not None:  # a SAS date: days since 1960-01-01 (what .xpt files store)
        return SAS_EPOCH + dt.timedelta(days=int(math.floor(number)))
    match = _DATE9.match(text)
    try:
        if match:
            return dt.datetime.strptime(text.upper(), "%d%b%Y").date()
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        return None


def fmt(value: float, digits: int = 10) -> str:
    """A number as cohort text: whole numbers without a decimal point, NaN blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(float(value), f".{digits}g")


def parse_assignment(text: str) -> tuple[str, str | None]:
    """``"SOURCE=LABEL"`` -> (SOURCE, LABEL); ``"SOURCE"`` -> (SOURCE, None)."""
    source, sep, label = text.partition("=")
    return source.strip(), (label.strip() or None) if sep else None


def canonical_code(text: str) -> str:
    """Numeric codes compare as numbers ("1", "1.0" and "1.00" are the same arm code)."""
    number = to_number(text)
    return fmt(number) if number is not None and not math.isnan(number) else text


# --------------------------------------------------------------------------- the mapping report


@dataclass
class ImportReport:
    """What an import read, converted, left out and could not derive.

    It holds counts and row numbers only, never a patient's value, so it can
    travel with the cohort.
    """

    importer: str
    sources: list[dict] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    columns_used: list[dict] = field(default_factory=list)
    conversions: list[dict] = field(default_factory=list)
    left_out: list[dict] = field(default_factory=list)
    not_derived: list[str] = field(default_factory=list)
    written: dict = field(default_factory=dict)
    key_file: str | None = None

    def source(self, src: Source) -> None:
        self.sources.append({"file": src.name, "format": src.kind, "rows": len(src.frame)})

    def used(self, file: str, column: str, to: str, note: str = "") -> None:
        entry = {"file": file, "column": column, "to": to, "note": note}
        if entry not in self.columns_used:
            self.columns_used.append(entry)

    def converted(self, what: str, count: int) -> None:
        if count:
            self.conversions.append({"conversion": what, "count": int(count)})

    def leave_out(self, src: Source, positions, reason: str) -> None:
        rows = [src.row(int(p)) for p in positions]
        if rows:
            self.left_out.append({"file": src.name, "row_kind": src.row_word, "rows": rows, "reason": reason})

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    def markdown(self) -> str:
        lines = [f"# Import report ({self.importer})", "",
                 "Written by `toolkit import`. It names source columns, counts and row numbers only: "
                 "no identifier, date or patient value of the source files.", "", "## Source files", ""]
        lines += [f"- `{s['file']}` ({s['format']}, {s['rows']} rows)" for s in self.sources]
        lines += ["", "## Options", ""] + [f"- {k}: `{v}`" for k, v in self.options.items() if v not in (None, [], ())]
        lines += ["", "## Source columns used", "", "| file | column | cohort field | note |", "|---|---|---|---|"]
        lines += [f"| {c['file']} | `{c['column']}` | {c['to']} | {c['note']} |" for c in self.columns_used]
        lines += ["", "## Values converted", "", "| conversion | count |", "|---|---|"]
        lines += [f"| {c['conversion']} | {c['count']} |" for c in self.conversions] or ["| (none) | 0 |"]
        lines += ["", "## Rows left out", ""]
        if not self.left_out:
            lines.append("None.")
        for entry in self.left_out:
            rows = ", ".join(str(r) for r in entry["rows"])
            lines.append(f"- `{entry['file']}`, {len(entry['rows'])} {entry['row_kind']}(s) ({rows}): {entry['reason']}")
        lines += ["", "## Not derived from the source", ""]
        lines += [f"- {n}" for n in self.not_derived] or ["Everything the cohort needs was derived."]
        lines += ["", "## Written", ""] + [f"- `{k}`: {v} rows" for k, v in self.written.items()]
        if self.key_file:
            lines += ["", "## Patient codes", "",
                      "Source subject identifiers were replaced by pseudonymous codes (P001, P002, ... in the "
                      "order of the source file). The key linking codes to identifiers is in a separate file "
                      "outside this folder: keep it private and never share it with the cohort."]
        return "\n".join(lines) + "\n"


@dataclass
class ImportResult:
    """A written cohort folder and the report of how it was made."""

    folder: Path
    report: ImportReport
    key_file: Path | None = None


# --------------------------------------------------------------------------- codes and writing


def pseudonyms(ids: list[str]) -> dict[str, str]:
    """Source identifier -> P001, P002, ... in the order given (width grows past 999)."""
    width = max(3, len(str(len(ids))))
    return {source: f"P{i:0{width}d}" for i, source in enumerate(ids, start=1)}


def default_key_file(out: Path) -> Path:
    return out.parent / f"{out.name}.id_key.csv"


def check_destination(out: Path, key_file: Path | None) -> None:
    """Refuse to overwrite anything: the output folder must be new (or empty), the key file new."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        fail(str(out), "already exists and is not empty",
             "choose a new folder for the imported cohort (an import never overwrites files)")
    if key_file is not None:
        if key_file.exists():
            fail(str(key_file), "the key file already exists",
                 "choose another --key-file, or move the old key away first (an import never overwrites files)")
        try:
            key_file.resolve().relative_to(out.resolve())
        except ValueError:
            return
        fail(str(key_file), "the key file would be inside the cohort folder",
             "write the key outside the cohort folder (the cohort is shared, the key must stay private)")


def write_cohort(out: str | Path, *, study: dict, tables: dict[str, pd.DataFrame], report: ImportReport,
                 key: dict[str, str] | None = None, key_file: str | Path | None = None,
                 key_column: str = "source_id") -> ImportResult:
    """Write a cohort folder, validate it, and only then put it in place.

    The folder is built under a temporary name beside ``out`` and renamed
    when it validates, so a failed import leaves nothing behind. Raises
    ``ImportDataError`` with the validator's problems otherwise.
    """
    from toolkit.data.validate import validate_folder

    out = Path(out)
    key_path = None
    if key is not None:
        key_path = Path(key_file) if key_file else default_key_file(out)
    check_destination(out, key_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.importing-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write_study(tmp, study)
        for name, frame in tables.items():
            columns = [c for c in TABLES[name].column_names if c in frame.columns]
            columns += [c for c in frame.columns if c not in columns]
            frame[columns].to_csv(tmp / f"{name}.csv", index=False, lineterminator="\n")
            report.written[f"{name}.csv"] = len(frame)
        if key_path is not None:
            report.key_file = str(key_path)
        (tmp / "import_report.md").write_text(report.markdown(), encoding="utf-8")
        (tmp / "import_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        try:
            validate_folder(tmp)
        except CohortValidationError as err:
            problems = [Problem(p.file, p.row, p.column, p.value, "in the imported cohort: " + p.message, p.fix)
                        for p in err.problems]
            raise ImportDataError(problems) from None
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if key_path is not None:
        key_path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"patient_id": list(key.values()), key_column: list(key.keys())}).to_csv(
            key_path, index=False, lineterminator="\n")
    return ImportResult(folder=out, report=report, key_file=key_path)
