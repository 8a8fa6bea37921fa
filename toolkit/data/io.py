"""Reading and writing cohort files exactly as the user wrote them.

Tables are read as text (no type guessing, nothing converted), with the
DataFrame index set to the spreadsheet row number (the header is row 1), so
every problem can name the row a user sees in Excel or a text editor. The
header row is kept exactly as written: a repeated column name stays repeated
(pandas would rename the second one ``age_years.1`` and it would pass as a
covariate), so validation can name it.
"""

from __future__ import annotations

import io
import re
import tomllib
from pathlib import Path

import pandas as pd

from toolkit.data.problems import Problem

CSV_FIX = ("save it as a comma-separated UTF-8 text file with one header row (in Excel: File > Save As > "
           "CSV UTF-8 (Comma delimited)), or as .xlsx")


class TableReadError(Exception):
    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def _read_bytes(path: Path) -> bytes:
    """The file's bytes (one place, so tests can simulate an unreadable file)."""
    return path.read_bytes()


def _usable_file(path: Path, file: str, fix_absent: str) -> bool:
    """True if ``path`` is a regular file; False if absent; TableReadError if it cannot be a file.

    A link to a file that does not exist is not "absent": the user meant a
    file to be there, so it is named rather than silently skipped.
    """
    try:
        if path.is_symlink() and not path.exists():
            raise TableReadError(Problem(file=file, message="is a link to a file that does not exist",
                                         fix=f"replace the link by the file itself; {fix_absent}"))
        if not path.exists():
            return False
        if path.is_dir():
            raise TableReadError(Problem(file=file, message="is a folder, not a file",
                                         fix=f"rename or remove the folder; {fix_absent}"))
    except OSError as exc:
        raise TableReadError(Problem(file=file, message=f"cannot be opened ({exc.strerror or type(exc).__name__})",
                                     fix="check that you may read the cohort folder and its files")) from exc
    return True


def table_path(folder: Path, name: str) -> Path | None:
    """The file holding table ``name`` (``.csv`` or ``.xlsx``), or None if absent.

    Raises TableReadError if both exist (ambiguous), or if one is a folder or
    a dangling link.
    """
    csv, xlsx = folder / f"{name}.csv", folder / f"{name}.xlsx"
    absent = f"the toolkit reads the table from {name}.csv or {name}.xlsx"
    has_csv, has_xlsx = _usable_file(csv, csv.name, absent), _usable_file(xlsx, xlsx.name, absent)
    if has_csv and has_xlsx:
        raise TableReadError(
            Problem(
                file=xlsx.name,
                message=f"both {csv.name} and {xlsx.name} exist",
                fix="keep one of the two files so it is clear which one holds the data",
            )
        )
    if has_csv:
        return csv
    if has_xlsx:
        return xlsx
    return None


def _decode(data: bytes, file: str) -> str:
    """UTF-8 text (a byte-order mark is accepted); anything else is named with its row."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise TableReadError(Problem(file=file, message="is saved as UTF-16 text", fix=CSV_FIX))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        row = data[: exc.start].count(b"\n") + 1
        raise TableReadError(Problem(file=file, row=row, message="is not UTF-8 text (a character on this row "
                                     "cannot be read; the file was probably saved in another encoding)",
                                     fix=CSV_FIX)) from exc
    nul = text.find("\x00")
    if nul >= 0:
        row = text[:nul].count("\n") + 1
        line = text.splitlines()[row - 1] if text.splitlines() else ""
        column = None
        if row > 1 and text.splitlines():
            header = text.splitlines()[0].split(",")
            position = line[: line.find("\x00")].count(",")
            column = header[position].strip() if position < len(header) else None
        raise TableReadError(Problem(file=file, row=row, column=column,
                                     message="holds a NUL (binary zero) character, so it is not plain text",
                                     fix="retype the cell; " + CSV_FIX))
    return text


_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        data = _read_bytes(path)
    except OSError as exc:
        raise TableReadError(Problem(file=path.name, message=f"cannot be opened ({exc.strerror or type(exc).__name__})",
                                     fix="check that you may read the file (permissions, or open in another program)")) from exc
    text = _decode(data, path.name)
    if not text.strip():
        raise TableReadError(Problem(file=path.name, message="is empty",
                                     fix=f"start from data_templates/{path.name} and fill in one row per line"))
    if not text.splitlines()[0].strip():
        raise TableReadError(Problem(file=path.name, row=1, message="the first row is empty; the column names "
                                     "must be on row 1", fix="delete the empty rows above the header row"))
    try:
        return pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False, skipinitialspace=True,
                           skip_blank_lines=False)
    except pd.errors.ParserError as exc:
        match = _FIELDS.search(str(exc))
        if match:
            expected, row, saw = (int(g) for g in match.groups())
            raise TableReadError(Problem(file=path.name, row=row, message=f"has {saw} cells but the header row "
                                         f"has {expected}", fix="remove the extra cells (often a comma inside a "
                                         "value or a trailing comma), or quote a value that holds a comma")) from exc
        raise TableReadError(Problem(file=path.name, message="cannot be read as comma-separated text (a quote is "
                                     "probably not closed)", fix=CSV_FIX)) from exc
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported, never raised raw
        raise TableReadError(Problem(file=path.name, message=f"cannot be read as a table ({type(exc).__name__})",
                                     fix=CSV_FIX)) from exc


def _read_xlsx(path: Path) -> pd.DataFrame:
    try:
        return pd.read_excel(path, header=None, dtype=str, keep_default_na=False, sheet_name=0)
    except PermissionError as exc:
        raise TableReadError(Problem(file=path.name, message="cannot be opened (permission denied)",
                                     fix="check that you may read the file, and close it in Excel")) from exc
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported, never raised raw
        raise TableReadError(Problem(file=path.name, message=f"cannot be read as an Excel workbook "
                                     f"({type(exc).__name__})", fix="open it in Excel and save it again as .xlsx, "
                                     "or save it as a comma-separated UTF-8 .csv")) from exc


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or the first sheet of an .xlsx file as text, index = spreadsheet row.

    Raises TableReadError naming the file (and the row where it can) when
    the file is not readable text: another encoding, a NUL byte, a row with
    more cells than the header, an unreadable workbook.
    """
    grid = _read_xlsx(path) if path.suffix == ".xlsx" else _read_csv(path)
    grid = grid.fillna("").map(lambda v: str(v).strip())
    if grid.shape[0] == 0 or grid.shape[1] == 0:
        raise TableReadError(Problem(file=path.name, message="is empty",
                                     fix=f"start from data_templates/{path.stem}.csv and fill in one row per line"))
    nul = grid.apply(lambda col: col.str.contains("\x00", regex=False))
    if nul.to_numpy().any():  # an .xlsx cell (CSV bytes are checked before parsing)
        row, position = (int(i[0]) for i in nul.to_numpy().nonzero())
        raise TableReadError(Problem(file=path.name, row=row + 1, column=str(grid.iat[0, position]),
                                     message="holds a NUL (binary zero) character", fix="retype the cell"))
    frame = grid.iloc[1:].copy()
    frame.columns = list(grid.iloc[0])
    # Rows that are entirely empty (trailing lines in a spreadsheet) are not data.
    frame.index = pd.RangeIndex(2, len(frame) + 2)
    nonempty = frame.apply(lambda row: any(v != "" for v in row), axis=1) if len(frame) else []
    return frame[nonempty] if len(frame) else frame


STUDY_FIX = 'write one `key = "value"` per line, as in data_templates/study.toml'


def read_study(folder: Path) -> dict:
    """Parse ``study.toml``; raises TableReadError with a clear message if it is broken."""
    path = folder / "study.toml"
    if not _usable_file(path, "study.toml", "copy data_templates/study.toml into the cohort folder"):
        raise TableReadError(
            Problem(
                file="study.toml",
                message="the file is missing",
                fix="copy data_templates/study.toml into the cohort folder and fill in the arm labels",
            )
        )
    try:
        data = _read_bytes(path)
    except OSError as exc:
        raise TableReadError(Problem(file="study.toml", message=f"cannot be opened ({exc.strerror or type(exc).__name__})",
                                     fix="check that you may read the file")) from exc
    try:
        # A byte-order mark is accepted here as in the CSV files (Windows editors write one).
        return tomllib.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        row = data[: exc.start].count(b"\n") + 1
        raise TableReadError(Problem(file="study.toml", row=row, message="is not UTF-8 text",
                                     fix="save it as UTF-8 text (any plain-text editor offers this)")) from exc
    except tomllib.TOMLDecodeError as exc:
        raise TableReadError(
            Problem(file="study.toml", message=f"is not valid TOML ({exc})", fix=STUDY_FIX)
        ) from exc


def write_study(folder: Path, study: dict) -> None:
    lines = []
    for key, value in study.items():
        escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{key} = "{escaped}"')
    (folder / "study.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
