"""Property-based: junk in any cell gives a clear error naming that cell, or a faithful parse; never a crash."""

import math
import shutil

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.data import CohortValidationError, load_cohort
from toolkit.data.parse import parse_cart_value, parse_mrd_value, parse_number
from toolkit.testing import EXAMPLE, folder_digest, read_raw, write_raw

FILES = ("patients", "outcomes", "cart_kinetics", "mrd")
RAW = {name: read_raw(EXAMPLE, name) for name in FILES}

junk = st.one_of(
    st.text(min_size=0, max_size=12),
    st.sampled_from(["", "NA", "nan", "inf", "-1", "1e400", "<", "<-3", "0x10", "1,5", "BLQ", "PNQ", "negative",
                     "CR", "12/03/2024", "2024-01-01", " 7 ", "\u00a0", "=SUM(A1)", "None", "∞"]),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), value=junk)
def test_junk_in_any_cell_is_named_or_read_faithfully(tmp_path_factory, data, value):
    folder = tmp_path_factory.mktemp("c")
    shutil.copytree(EXAMPLE, folder, dirs_exist_ok=True)
    name = data.draw(st.sampled_from(FILES))
    frame = RAW[name].copy()
    row = data.draw(st.sampled_from(list(frame.index)))
    column = data.draw(st.sampled_from(list(frame.columns)))
    value = value.replace("\n", " ").replace("\r", " ")
    frame.loc[row, column] = value
    write_raw(folder, name, frame)
    written = read_raw(folder, name).loc[row, column]
    before = folder_digest(folder)
    try:
        cohort = load_cohort(folder)
    except CohortValidationError as err:
        assert err.problems, "an error must name at least one problem"
        for problem in err.problems:
            assert problem.file and problem.message and problem.fix
        same_row = any((p.file, p.row) == (f"{name}.csv", row) for p in err.problems)
        # a changed id or follow-up day can surface in the patient's rows of other files
        linked = column in ("patient_id", "last_followup_day", "arm") and any(
            "patients.csv" in p.message or "last_followup_day" in p.message or p.column in ("patient_id", "arm")
            for p in err.problems)
        # a day changed to the next sample's day or past it is named at that next row, the later of the pair
        # ("repeats an earlier sample" / "is earlier than the previous sample")
        next_sample = column == "day" and any(
            (p.file, p.row, p.column) == (f"{name}.csv", row + 1, "day")
            and ("repeats an earlier sample" in p.message or "is earlier than the previous sample" in p.message)
            for p in err.problems)
        assert same_row or linked or next_sample, str(err)
    else:
        # accepted: the parsed value is exactly what the cell says
        table = {"cart_kinetics": cohort.cart, "mrd": cohort.mrd, "patients": cohort.patients,
                 "outcomes": cohort.outcomes}[name]
        assert len(table) == len(frame), "no row may be dropped"
        if (name, column) == ("mrd", "mrd_pct"):
            expected = parse_mrd_value(written.strip())
            assert table.at[row, "censoring"] == expected[1]
            assert table.at[row, "mrd_pct"] == expected[0] or math.isnan(expected[0])
        elif (name, column) == ("cart_kinetics", "value"):
            expected = parse_cart_value(written.strip())
            assert bool(table.at[row, "below_lloq"]) == expected[1]
            assert table.at[row, "value"] == expected[0] or math.isnan(expected[0])
        elif column in table.columns and pd.api.types.is_float_dtype(table[column]):
            parsed, expected = table.at[row, column], parse_number(written.strip())
            assert (math.isnan(parsed) and math.isnan(expected)) or parsed == expected
    assert folder_digest(folder) == before


DAY_COLUMNS = ["response_day", "relapse_day", "hsct_day", "death_day", "last_followup_day"]
day_text = st.one_of(st.just(""), st.integers(0, 2500).map(str))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_event_days_that_validate_give_non_negative_times(tmp_path_factory, data):
    """Whatever event days a row holds, validation refuses them or every endpoint has a time >= 0.

    Out-of-order days once passed validation and then crashed ``describe`` or were
    clamped by ``fit``; this property pins that validation is the only gate.
    """
    from toolkit.data.describe import describe_cohort
    from toolkit.data.endpoints import ENDPOINTS, HSCT_POLICIES, time_to_event

    folder = tmp_path_factory.mktemp("c")
    shutil.copytree(EXAMPLE, folder, dirs_exist_ok=True)
    frame = RAW["outcomes"].copy()
    for _ in range(data.draw(st.integers(1, 3))):
        row = data.draw(st.sampled_from(list(frame.index)))
        for column in data.draw(st.lists(st.sampled_from(DAY_COLUMNS), min_size=1, max_size=3, unique=True)):
            frame.loc[row, column] = data.draw(day_text)
        if frame.loc[row, "relapse_day"] and not frame.loc[row, "relapse_cd19"]:
            frame.loc[row, "relapse_cd19"] = "unknown"
        if not frame.loc[row, "relapse_day"]:
            frame.loc[row, "relapse_cd19"] = ""
    write_raw(folder, "outcomes", frame)
    try:
        cohort = load_cohort(folder)
    except CohortValidationError:
        return
    for endpoint in ENDPOINTS:
        for hsct in HSCT_POLICIES:
            times = time_to_event(cohort, endpoint=endpoint, hsct=hsct)["time"]
            assert (times >= 0).all() and times.notna().all(), (endpoint, hsct)
    describe_cohort(cohort)
