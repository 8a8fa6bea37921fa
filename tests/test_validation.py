"""The bad-input corpus: each defect is named with its file, row, column and fix."""

import shutil

import pandas as pd
import pytest

from toolkit.data import CohortValidationError, load_cohort
from toolkit.testing import EXAMPLE, folder_digest, read_raw, row_of, set_cell, write_raw


def problems_of(folder):
    before = folder_digest(folder)
    with pytest.raises(CohortValidationError) as info:
        load_cohort(folder)
    assert folder_digest(folder) == before, "validation must never change the user's files"
    return info.value.problems


def only_problem(folder):
    problems = problems_of(folder)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


def test_example_cohort_is_valid():
    cohort = load_cohort(EXAMPLE)
    assert len(cohort.patients) == 60
    assert set(cohort.patients["arm"]) == {"CAR-T", "IFN-a + CAR-T"}
    assert cohort.cart["below_lloq"].any() and cohort.mrd["censoring"].eq("pnq").any()


def test_below_limit_values_are_kept_as_censored_rows(cohort_dir):
    cart = read_raw(cohort_dir, "cart_kinetics")
    cart.loc[2, "value"], cart.loc[3, "value"], cart.loc[3, "lloq"] = "<40", "", "50"
    write_raw(cohort_dir, "cart_kinetics", cart)
    cohort = load_cohort(cohort_dir)
    assert len(cohort.cart) == len(cart), "no row may be dropped"
    assert cohort.cart.loc[2, ["below_lloq", "lloq_used"]].tolist() == [True, 40.0]
    assert cohort.cart.loc[3, ["below_lloq", "lloq_used"]].tolist() == [True, 50.0]
    mrd = read_raw(cohort_dir, "mrd")
    mrd.loc[2, "mrd_pct"], mrd.loc[3, "mrd_pct"] = "0", "<0.005"
    write_raw(cohort_dir, "mrd", mrd)
    cohort = load_cohort(cohort_dir)
    assert len(cohort.mrd) == len(mrd)
    assert cohort.mrd.loc[2, "censoring"] == "below_lod" and cohort.mrd.loc[2, "lod_used"] == float(mrd.loc[2, "lod_pct"])
    assert cohort.mrd.loc[3, ["censoring", "lod_used"]].tolist() == ["below_lod", 0.005]


@pytest.mark.parametrize(
    "file, column, value, message",
    [
        ("patients", "age_years", "thirty", "is not a number"),
        ("patients", "baseline_blasts_pct", "120", "is above 100 (a percentage must lie in 0-100)"),
        ("patients", "baseline_blasts_pct", "-3", "is negative"),
        ("patients", "sex", "X", "is not one of F, M"),
        ("patients", "arm", "placebo", "is not one of the arms named in study.toml"),
        ("outcomes", "response", "PR", "is not one of CR, CRi, NR (blank is not allowed)"),
        ("outcomes", "last_followup_day", "", "is blank or not a number"),
        ("outcomes", "last_followup_day", "1,200", "is blank or not a number"),
        ("cart_kinetics", "value", "high", "is not a number, BLQ or <x"),
        ("cart_kinetics", "day", "-2", "is a negative day; days count from the CAR-T infusion (day 0)"),
        ("mrd", "mrd_pct", "150", "is above 100 (a percentage must lie in 0-100)"),
        ("mrd", "mrd_pct", "lots", "is not a percentage, negative, PNQ or <x"),
        ("mrd", "method", "pcr", "is not one of flow, ngs, qpcr (blank is not allowed)"),
        ("mrd", "lod_pct", "101", "is above 100 (a percentage must lie in 0-100)"),
    ],
)
def test_bad_cell_is_named(cohort_dir, file, column, value, message):
    row = 2  # the first sample of its patient, so a day change cannot also break the order
    set_cell(cohort_dir, file, row, column, value)
    problem = only_problem(cohort_dir)
    assert (problem.file, problem.row, problem.column, problem.value) == (f"{file}.csv", row, column, value)
    assert problem.message == message
    assert problem.fix


def test_relapse_after_last_followup(cohort_dir):
    row = row_of(cohort_dir, "outcomes", patient_id="P005")  # in remission, alive
    set_cell(cohort_dir, "outcomes", row, "relapse_day", "2000")
    set_cell(cohort_dir, "outcomes", row, "relapse_cd19", "positive")
    problem = only_problem(cohort_dir)
    assert (problem.file, problem.row, problem.column) == ("outcomes.csv", row, "relapse_day")
    assert problem.message == "the relapse is after last_followup_day"


@pytest.mark.parametrize(
    "patient, edits, column, message",
    [
        ("P005", {"response_day": ""}, "response_day", "is blank although the response is CR/CRi"),
        ("P005", {"response": "NR"}, "response_day", "is filled although the response is NR"),
        ("P004", {"response": "NR", "response_day": ""}, "relapse_day",
         "a relapse is recorded for a patient who never reached remission (response NR)"),
        ("P004", {"relapse_day": "20"}, "relapse_day", "is on or before response_day"),
        ("P004", {"relapse_cd19": ""}, "relapse_cd19", "is blank although a relapse is recorded"),
        ("P005", {"relapse_cd19": "negative"}, "relapse_cd19", "is filled although no relapse_day is recorded"),
        ("P004", {"last_followup_day": "500"}, "last_followup_day",
         "differs from death_day; a patient who died is last known at the death day"),
    ],
)
def test_contradictory_response_fields(cohort_dir, patient, edits, column, message):
    row = row_of(cohort_dir, "outcomes", patient_id=patient)
    for col, value in edits.items():
        set_cell(cohort_dir, "outcomes", row, col, value)
    problems = problems_of(cohort_dir)
    named = [p for p in problems if (p.file, p.row, p.column) == ("outcomes.csv", row, column)]
    assert [p.message for p in named] == [message], "\n".join(map(str, problems))


def test_duplicate_patient_id(cohort_dir):
    set_cell(cohort_dir, "patients", 3, "patient_id", "P001")
    problems = problems_of(cohort_dir)
    dup = [p for p in problems if p.message.startswith("duplicate patient_id")]
    assert [(p.file, p.row, p.value) for p in dup] == [("patients.csv", 3, "P001")]
    # P002 now lacks a patients row: its outcomes row is named too
    assert any(p.file == "outcomes.csv" and p.value == "P002" and "not in patients.csv" in p.message for p in problems)


def test_patient_missing_from_patients(cohort_dir):
    set_cell(cohort_dir, "cart_kinetics", 7, "patient_id", "P999")
    problem = only_problem(cohort_dir)
    assert (problem.file, problem.row, problem.column, problem.value) == ("cart_kinetics.csv", 7, "patient_id", "P999")
    assert problem.message == "this patient is not in patients.csv"


def test_patient_without_outcomes(cohort_dir):
    outcomes = read_raw(cohort_dir, "outcomes")
    write_raw(cohort_dir, "outcomes", outcomes.drop(index=4))
    problem = only_problem(cohort_dir)
    assert (problem.file, problem.row, problem.value) == ("patients.csv", 4, "P003")
    assert problem.message == "this patient has no row in outcomes.csv"


def test_missing_required_column(cohort_dir):
    outcomes = read_raw(cohort_dir, "outcomes").drop(columns="last_followup_day")
    write_raw(cohort_dir, "outcomes", outcomes)
    problem = only_problem(cohort_dir)
    assert (problem.file, problem.row, problem.column) == ("outcomes.csv", None, "last_followup_day")
    assert problem.message == "required column is missing"


def test_missing_file_and_study_keys(cohort_dir):
    (cohort_dir / "outcomes.csv").unlink()
    (cohort_dir / "study.toml").write_text('name = "x"\ncontrol_arm = "CAR-T"\n')
    problems = problems_of(cohort_dir)
    assert ("outcomes.csv", "the file is missing") in [(p.file, p.message) for p in problems]
    assert ("study.toml", "experimental_arm") in [(p.file, p.column) for p in problems]


def test_non_increasing_and_duplicate_days(cohort_dir):
    cart = read_raw(cohort_dir, "cart_kinetics")
    first = cart[cart["patient_id"] == "P001"].index
    cart.loc[first[3], "day"] = cart.loc[first[1], "day"]  # earlier than the previous sample
    write_raw(cohort_dir, "cart_kinetics", cart)
    problems = problems_of(cohort_dir)
    assert [(p.row, p.column, p.message) for p in problems] == [
        (first[3], "day", "is earlier than the previous sample of this patient (days must increase)")
    ] or all(p.row == first[3] for p in problems)
    cart = read_raw(cohort_dir, "cart_kinetics")
    cart.loc[first[3], "day"] = cart.loc[first[2], "day"]
    write_raw(cohort_dir, "cart_kinetics", cart)
    problem = only_problem(cohort_dir)
    assert problem.row == first[3]
    assert problem.message == "repeats an earlier sample of this patient on the same day"


def test_censored_value_without_limit(cohort_dir):
    cart = read_raw(cohort_dir, "cart_kinetics")
    row = int(cart.index[cart["value"] == "BLQ"][0])
    set_cell(cohort_dir, "cart_kinetics", row, "lloq", "")
    problem = only_problem(cohort_dir)
    assert (problem.file, problem.row, problem.column) == ("cart_kinetics.csv", row, "lloq")
    assert problem.message == "is blank although the value is below the LLOQ"
    mrd = read_raw(cohort_dir, "mrd")
    mrow = int(mrd.index[mrd["mrd_pct"] == "negative"][0])
    set_cell(cohort_dir, "mrd", mrow, "lod_pct", "")
    problems = problems_of(cohort_dir)
    assert ("mrd.csv", mrow, "lod_pct", "is blank although the MRD value is below the detection limit") in [
        (p.file, p.row, p.column, p.message) for p in problems]


def test_pnq_needs_quantification_limit(cohort_dir):
    mrd = read_raw(cohort_dir, "mrd")
    row = int(mrd.index[mrd["mrd_pct"] == "PNQ"][0])
    set_cell(cohort_dir, "mrd", row, "loq_pct", "")
    problem = only_problem(cohort_dir)
    assert (problem.row, problem.column) == (row, "loq_pct")
    write_raw(cohort_dir, "mrd", read_raw(cohort_dir, "mrd").drop(columns="loq_pct"))
    problems = problems_of(cohort_dir)
    assert all(p.message == "is PNQ but the file has no loq_pct column" for p in problems)
    assert len(problems) == (mrd["mrd_pct"] == "PNQ").sum()


def test_mixed_units(cohort_dir):
    set_cell(cohort_dir, "cart_kinetics", 9, "unit", "cells/uL")
    problem = only_problem(cohort_dir)
    assert (problem.row, problem.column, problem.value) == (9, "unit", "cells/uL")
    assert problem.message == "mixes units in one file (the first row uses 'copies/ug')"


def test_sample_after_last_followup(cohort_dir):
    cart = read_raw(cohort_dir, "cart_kinetics")
    last = cart[cart["patient_id"] == "P003"].index[-1]
    set_cell(cohort_dir, "cart_kinetics", int(last), "day", "5000")
    problem = only_problem(cohort_dir)
    assert (problem.row, problem.column) == (last, "day")
    assert problem.message == "is after the patient's last_followup_day in outcomes.csv"


@pytest.mark.parametrize("column", ["name", "date_of_birth", "MRN", "infusion_date", "Email"])
def test_identifier_columns_are_refused(cohort_dir, column):
    patients = read_raw(cohort_dir, "patients")
    patients[column] = "x"
    write_raw(cohort_dir, "patients", patients)
    problems = problems_of(cohort_dir)
    assert problems[0].column == column and "direct identifier or a calendar date" in problems[0].message


def test_calendar_date_cells_are_refused(cohort_dir):
    set_cell(cohort_dir, "outcomes", 6, "last_followup_day", "2024-03-01")
    problems = problems_of(cohort_dir)
    assert [(p.file, p.row, p.column, p.value, p.message) for p in problems] == [
        ("outcomes.csv", 6, "last_followup_day", None,
         "holds a calendar date in 1 row(s) (rows 6; values not shown); the toolkit accepts only days since CAR-T "
         "infusion")]


def test_extra_patient_columns_are_numeric_covariates(cohort_dir):
    patients = read_raw(cohort_dir, "patients")
    patients["ldh_u_per_l"] = "250"
    write_raw(cohort_dir, "patients", patients)
    assert "ldh_u_per_l" in load_cohort(cohort_dir).covariate_columns
    set_cell(cohort_dir, "patients", 4, "ldh_u_per_l", "high")
    problem = only_problem(cohort_dir)
    assert (problem.row, problem.column, problem.value, problem.message) == (
        4, "ldh_u_per_l", None, "extra columns are covariates and must be numeric; 1 row(s) are not (rows 4; values not shown)")


def test_every_problem_is_reported_at_once(cohort_dir):
    set_cell(cohort_dir, "patients", 2, "age_years", "old")
    set_cell(cohort_dir, "outcomes", 3, "response", "maybe")
    set_cell(cohort_dir, "mrd", 4, "mrd_pct", "??")
    problems = problems_of(cohort_dir)
    assert {(p.file, p.row) for p in problems} == {("patients.csv", 2), ("outcomes.csv", 3), ("mrd.csv", 4)}


def test_message_text_names_file_row_column_value_and_fix(cohort_dir):
    set_cell(cohort_dir, "patients", 2, "age_years", "old")
    problem = only_problem(cohort_dir)
    assert str(problem) == (
        "patients.csv, row 2, column 'age_years': is not a number (value 'old'). Fix: write a plain number "
        "with a point as decimal mark and no units, or leave it blank for 'unknown'")


def test_excel_tables_are_read(cohort_dir):
    patients = pd.read_csv(cohort_dir / "patients.csv", dtype=str, keep_default_na=False)
    patients.to_excel(cohort_dir / "patients.xlsx", index=False)
    (cohort_dir / "patients.csv").unlink()
    assert len(load_cohort(cohort_dir).patients) == 60
    set_cell_xlsx = pd.read_excel(cohort_dir / "patients.xlsx", dtype=str, keep_default_na=False)
    set_cell_xlsx.loc[0, "baseline_blasts_pct"] = "abc"
    set_cell_xlsx.to_excel(cohort_dir / "patients.xlsx", index=False)
    problem = only_problem(cohort_dir)
    assert (problem.file, problem.row, problem.column) == ("patients.xlsx", 2, "baseline_blasts_pct")


def test_csv_and_excel_of_one_table_is_ambiguous(cohort_dir):
    shutil.copy(cohort_dir / "patients.csv", cohort_dir / "patients.xlsx")
    problem = only_problem(cohort_dir)
    assert problem.message == "both patients.csv and patients.xlsx exist"


def test_not_a_folder(tmp_path):
    problem = only_problem_missing(tmp_path / "nope")
    assert problem.message == "is not a folder"


def only_problem_missing(path):
    with pytest.raises(CohortValidationError) as info:
        load_cohort(path)
    return info.value.problems[0]
