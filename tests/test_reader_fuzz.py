"""Property-based fuzzing of the table readers: random bytes, encodings, delimiters and cells.

Whatever the file holds, reading it ends in a clean load or in a
``TableReadError``/``CohortValidationError`` naming the file; never another
exception, and the file is never changed.
"""

import io

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl.utils.exceptions import IllegalCharacterError

from toolkit.data import CohortValidationError, load_cohort
from toolkit.data.io import TableReadError, read_study, read_table
from toolkit.testing import EXAMPLE, copy_example, folder_digest

PATIENTS = (EXAMPLE / "patients.csv").read_text(encoding="utf-8")
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# a whole cohort is validated per example: fewer, to keep the file fast
COHORT = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read_or_named_error(path):
    before = path.read_bytes()
    try:
        frame = read_table(path)
    except TableReadError as err:
        assert err.problem.file == path.name and err.problem.message and err.problem.fix
    else:
        assert isinstance(frame, pd.DataFrame)
        assert all(isinstance(c, str) for c in frame.columns)
    assert path.read_bytes() == before


def _loads_or_names_problems(folder) -> None:
    """The cohort loads, or fails with named problems; either way no file changes."""
    before = folder_digest(folder)
    try:
        load_cohort(folder)
    except CohortValidationError as err:
        assert err.problems
    assert folder_digest(folder) == before


@FAST
@given(data=st.binary(max_size=400))
def test_random_bytes_as_csv(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("f") / "patients.csv"
    path.write_bytes(data)
    _read_or_named_error(path)


@FAST
@given(data=st.binary(max_size=400), prefix=st.sampled_from([b"", b"PK\x03\x04", b"\xd0\xcf\x11\xe0"]))
def test_random_bytes_as_xlsx(tmp_path_factory, data, prefix):
    path = tmp_path_factory.mktemp("f") / "patients.xlsx"
    path.write_bytes(prefix + data)
    _read_or_named_error(path)


@COHORT
@given(encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252", "utf-32"]),
       delimiter=st.sampled_from([",", ";", "\t", "|", " "]),
       newline=st.sampled_from(["\n", "\r\n", "\r"]),
       accent=st.booleans())
def test_example_patients_in_any_encoding_and_delimiter(tmp_path_factory, encoding, delimiter, newline, accent):
    folder = copy_example(tmp_path_factory.mktemp("c") / "cohort")
    text = PATIENTS.replace(",", delimiter).replace("\n", newline)
    if accent:
        text = text.replace("IFN-a", "IFN-\u00e1")
    (folder / "patients.csv").write_bytes(text.encode(encoding))
    before = folder_digest(folder)
    try:
        load_cohort(folder)
    except CohortValidationError as err:
        assert err.problems and all(p.file and p.message and p.fix for p in err.problems)
    assert folder_digest(folder) == before


@COHORT
@given(line=st.integers(0, 61), junk=st.text(max_size=20), cut=st.integers(0, 40))
def test_damaged_csv_lines(tmp_path_factory, line, junk, cut):
    """A line cut short, or junk (quotes, commas, control characters) spliced into it."""
    folder = copy_example(tmp_path_factory.mktemp("c") / "cohort")
    lines = PATIENTS.splitlines()
    if line < len(lines):
        lines[line] = lines[line][:cut] + junk + lines[line][cut:]
    (folder / "patients.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _loads_or_names_problems(folder)


@COHORT
@given(cells=st.lists(st.one_of(st.text(max_size=10), st.integers(), st.floats(), st.none(), st.booleans(),
                                st.datetimes()), min_size=1, max_size=6))
def test_xlsx_with_random_cells(tmp_path_factory, cells):
    folder = copy_example(tmp_path_factory.mktemp("c") / "cohort")
    frame = pd.read_csv(io.StringIO(PATIENTS), dtype=str, keep_default_na=False).astype(object)
    for i, value in enumerate(cells):
        frame.iat[i, i % frame.shape[1]] = value
    try:
        frame.to_excel(folder / "patients.xlsx", index=False)
    except (ValueError, TypeError, IllegalCharacterError):  # openpyxl refuses to write some values: nothing to read
        return
    (folder / "patients.csv").unlink()
    _loads_or_names_problems(folder)


@FAST
@given(data=st.binary(max_size=200), bom=st.booleans())
def test_random_study_toml(tmp_path_factory, data, bom):
    folder = tmp_path_factory.mktemp("s")
    (folder / "study.toml").write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    try:
        study = read_study(folder)
    except TableReadError as err:
        assert err.problem.file == "study.toml"
    else:
        assert isinstance(study, dict)
