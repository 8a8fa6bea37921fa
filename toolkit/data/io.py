"""Reading and writing cohort files exactly as the user wrote them.

Tables are read as text (no type guessing, nothing converted), with the
DataFrame index set to the spreadsheet row number (the header is row 1), so
every problem can name the row a user sees in Excel or a text editor.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd

from toolkit.data.problems import Problem


class TableReadError(Exception):
    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def table_path(folder: Path, name: str) -> Path | None:
    """The file holding table ``name`` (``.csv`` or ``.xlsx``), or None if absent.

    Raises TableReadError if both exist (ambiguous).
    """
    csv, xlsx = folder / f"{name}.csv", folder / f"{name}.xlsx"
    if csv.exists() and xlsx.exists():
        raise TableReadError(
            Problem(
                file=xlsx.name,
                message=f"both {csv.name} and {xlsx.name} exist",
                fix="keep one of the two files so it is clear which one holds the data",
            )
        )
    if csv.exists():
        return csv
    if xlsx.exists():
        return xlsx
    return None


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or the first sheet of an .xlsx file as text, index = spreadsheet row."""
    try:
        if path.suffix == ".xlsx":
            frame = pd.read_excel(path, dtype=str, keep_default_na=False, sheet_name=0)
        else:
            frame = pd.read_csv(
                path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig"
            )
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported, never raised raw
        raise TableReadError(
            Problem(
                file=path.name,
                message=f"cannot be read as a table ({type(exc).__name__}: {exc})",
                fix="save it as a comma-separated UTF-8 text file (or .xlsx) with one header row",
            )
        ) from exc
    frame = frame.fillna("")
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.map(lambda v: str(v).strip())
    # Rows that are entirely empty (trailing lines in a spreadsheet) are not data.
    frame.index = pd.RangeIndex(2, len(frame) + 2)
    nonempty = frame.apply(lambda row: any(v != "" for v in row), axis=1) if len(frame) else []
    return frame[nonempty] if len(frame) else frame


def read_study(folder: Path) -> dict:
    """Parse ``study.toml``; raises TableReadError with a clear message if it is broken."""
    path = folder / "study.toml"
    if not path.exists():
        raise TableReadError(
            Problem(
                file="study.toml",
                message="the file is missing",
                fix="copy data_templates/study.toml into the cohort folder and fill in the arm labels",
            )
        )
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TableReadError(
            Problem(file="study.toml", message=f"is not valid TOML ({exc})",
                    fix='write one `key = "value"` per line, as in data_templates/study.toml')
        ) from exc


def write_study(folder: Path, study: dict) -> None:
    lines = []
    for key, value in study.items():
        escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{key} = "{escaped}"')
    (folder / "study.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
