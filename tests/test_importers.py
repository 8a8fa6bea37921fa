"""Importers: NONMEM-style and ADaM data (CSV and SAS transport) and one workbook to a cohort.

Each importer is pinned by a small hand-made dataset whose expected cohort
rows are written out below; the .xpt variants are written from the same
frames with pyreadstat, so both formats must give the same cohort.
"""

from __future__ import annotations

import datetime as dt
import io
import math

import pandas as pd
import pyreadstat
import pytest

from toolkit.cli import main
from toolkit.data import load_cohort
from toolkit.importers import ImportDataError, import_adam, import_nonmem, import_workbook
from toolkit.importers import adam as adam_module
from toolkit.importers.adam import study_days_since
from toolkit.testing import EXAMPLE


def _frame(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text.strip() + "\n"), dtype=str, keep_default_na=False)


def _cohort_text(folder, name: str) -> str:
    return (folder / f"{name}.csv").read_text().strip()


def _strip(text: str) -> str:
    return "\n".join(line.strip() for line in text.strip().splitlines())


# --------------------------------------------------------------------------- NONMEM

# Two patients; TIME in hours, DV and LLOQ on the natural-log scale. CMT 1 the
# infusion dose, 2 CAR-T (copies/ug), 3 MRD (fraction), 4 another analyte.
# Patient 1 is infused at TIME 0, patient 2 at TIME 24 (the origin moves).
NONMEM = """
C,ID,TIME,DV,MDV,EVID,CMT,AMT,BLQ,LLOQ,ARM,AGE,SEX
C,1,0,.,1,1,1,1,0,.,1,34,1
,1,-24,.,1,0,2,.,1,3.912023005,1,34,1
,1,0,.,1,1,1,1,0,.,1,34,1
,1,24,6.907755279,0,0,2,.,0,3.912023005,1,34,1
,1,168,9.903487553,0,0,2,.,0,3.912023005,1,34,1
,1,672,.,1,0,2,.,1,3.912023005,1,34,1
,1,672,-6.907755279,0,0,3,.,0,-9.210340372,1,34,1
,1,2160,.,1,0,3,.,1,-9.210340372,1,34,1
,2,24,.,1,1,1,1,0,.,2,51,2
,2,48,8.517193191,0,0,2,.,0,3.912023005,2,51,2
,2,72,.,1,0,2,.,0,3.912023005,2,51,2
,2,192,10.30895266,0,0,2,.,0,3.912023005,2,51,2
,2,696,.,1,0,3,.,1,-9.210340372,2,51,2
,2,700,5,0,0,4,.,0,.,2,51,2
"""
NONMEM_OUTCOMES = """
ID,response,response_day,relapse_day,relapse_cd19,hsct_day,death_day,last_followup_day
1,CR,28,200,negative,,,400
2,CRi,28,,,,,500
"""
NONMEM_ARGS = dict(dv_scale="log", time_unit="hours", arm_column="ARM", control_arm="1=CAR-T",
                   experimental_arm="2=IFN-a + CAR-T", cart_cmt="2", mrd_cmt="3", cart_unit="copies/ug",
                   mrd_unit="fraction", mrd_method="flow", mrd_specimen="BM",
                   covariates=["AGE=age_years", "SEX"], sex_codes="1=M,2=F")
NONMEM_EXPECTED = {
    "patients": """
        patient_id,arm,age_years,sex
        P001,CAR-T,34,M
        P002,IFN-a + CAR-T,51,F""",
    "cart_kinetics": """
        patient_id,day,value,lloq,unit
        P001,1,1000,50,copies/ug
        P001,7,20000,50,copies/ug
        P001,28,BLQ,50,copies/ug
        P002,1,5000,50,copies/ug
        P002,7,30000,50,copies/ug""",
    "mrd": """
        patient_id,day,mrd_pct,lod_pct,method,specimen
        P001,28,0.1,0.01,flow,BM
        P001,90,negative,0.01,flow,BM
        P002,28,negative,0.01,flow,BM""",
    "outcomes": """
        patient_id,response,response_day,relapse_day,relapse_cd19,hsct_day,death_day,last_followup_day
        P001,CR,28,200,negative,,,400
        P002,CRi,28,,,,,500""",
}


def _write_nonmem(tmp_path, fmt: str):
    frame = _frame(NONMEM)
    outcomes = tmp_path / "outcomes_src.csv"
    outcomes.write_text(NONMEM_OUTCOMES.strip() + "\n")
    if fmt == "csv":
        path = tmp_path / "pk.csv"
        frame.to_csv(path, index=False)
    else:
        numeric = frame.copy()
        for column in numeric.columns.drop("C"):
            numeric[column] = pd.to_numeric(numeric[column].replace(".", ""), errors="coerce")
        path = tmp_path / "pk.xpt"
        pyreadstat.write_xport(numeric, str(path))
    return path, outcomes


@pytest.mark.parametrize("fmt", ["csv", "xpt"])
def test_nonmem_import_gives_the_expected_cohort(tmp_path, fmt):
    data, outcomes = _write_nonmem(tmp_path, fmt)
    result = import_nonmem(data, out=tmp_path / "cohort", outcomes=outcomes, **NONMEM_ARGS)
    for name, expected in NONMEM_EXPECTED.items():
        assert _cohort_text(result.folder, name) == _strip(expected), name
    load_cohort(result.folder)  # validates
    key = pd.read_csv(result.key_file, dtype=str)
    assert key.to_dict("list") == {"patient_id": ["P001", "P002"], "source_id": ["1", "2"]}
    assert result.key_file.parent == tmp_path  # outside the cohort folder
    left = {e["reason"].split(":")[0]: e["rows"] for e in result.report.left_out}
    rows = (lambda r: r) if fmt == "csv" else (lambda r: [x - 1 for x in r])  # .xpt: record numbers
    assert left["comment record (C column, or a line starting with #)"] == rows([2])
    assert left["dose record (the infusion and other doses)"] == rows([4, 10])
    assert left["MDV=1 without a below-limit flag"] == rows([12])
    assert left["observation before the infusion (day < 0)"] == rows([3])
    assert left["CMT=4 is neither the CAR-T nor the MRD compartment"] == rows([15])
    text = (result.folder / "import_report.md").read_text()
    assert "| nm" not in text and "`DV`" in text and "back-transformed from the log scale" in text


def test_nonmem_mrd_on_its_own_scale(tmp_path):
    """MRD as log10 beside CAR-T as natural log: the same cohort once --mrd-dv-scale is stated."""
    text = NONMEM.replace(",-6.907755279,0,0,3,", ",-3,0,0,3,").replace("-9.210340372", "-4")
    (tmp_path / "pk.csv").write_text(text.strip() + "\n")
    (tmp_path / "o.csv").write_text(NONMEM_OUTCOMES.strip() + "\n")
    result = import_nonmem(tmp_path / "pk.csv", out=tmp_path / "c", outcomes=tmp_path / "o.csv",
                           mrd_dv_scale="log10", **NONMEM_ARGS)
    assert _cohort_text(result.folder, "mrd") == _strip(NONMEM_EXPECTED["mrd"])
    wrong = import_nonmem(tmp_path / "pk.csv", out=tmp_path / "w", outcomes=tmp_path / "o.csv", **NONMEM_ARGS)
    assert _cohort_text(wrong.folder, "mrd") != _strip(NONMEM_EXPECTED["mrd"])


def test_nonmem_patient_of_another_arm_is_left_out_before_anything_else(tmp_path):
    """A patient outside the two arms (here without a dose record) is reported, not an error."""
    (tmp_path / "pk.csv").write_text(NONMEM.strip() + "\n,3,0,5,0,0,2,.,0,3.9,9,40,1\n")
    (tmp_path / "o.csv").write_text(NONMEM_OUTCOMES.strip() + "\n")
    result = import_nonmem(tmp_path / "pk.csv", out=tmp_path / "c", outcomes=tmp_path / "o.csv", **NONMEM_ARGS)
    for name, expected in NONMEM_EXPECTED.items():
        assert _cohort_text(result.folder, name) == _strip(expected), name
    entry = next(e for e in result.report.left_out if "neither the control" in e["reason"])
    assert entry["rows"] == [16]
    all_rows = [r for e in result.report.left_out for r in e["rows"]]
    assert len(all_rows) == len(set(all_rows))  # one reason a row


def test_nonmem_censored_records_are_kept_even_with_mdv_1(tmp_path):
    """M1-style data hide BLQ records with MDV=1; they are still censored observations."""
    data, outcomes = _write_nonmem(tmp_path, "csv")
    result = import_nonmem(data, out=tmp_path / "c", outcomes=outcomes, **NONMEM_ARGS)
    cart = load_cohort(result.folder).cart
    assert cart["below_lloq"].sum() == 1 and cart.loc[cart["below_lloq"], "lloq_used"].iloc[0] == pytest.approx(50)


def test_nonmem_monolix_cens_uses_dv_as_the_limit_and_linear_days(tmp_path):
    data = tmp_path / "monolix.txt"  # blank-separated, as Monolix and NONMEM files often are
    data.write_text("ID TIME DV CENS YTYPE ARM\n"
                    "A 0 120 0 1 ctl\nA 7 50 1 1 ctl\nB 0 300 0 1 exp\nB 14 80 0 1 exp\n")
    outcomes = tmp_path / "o.csv"
    outcomes.write_text("ID,response,response_day,relapse_day,relapse_cd19,hsct_day,death_day,last_followup_day\n"
                        "A,NR,,,,,,100\nB,CR,28,,,,,300\n")
    result = import_nonmem(data, out=tmp_path / "c", outcomes=outcomes, dv_scale="linear", time_unit="days",
                           arm_column="ARM", control_arm="ctl=CAR-T", experimental_arm="exp=IFN-a + CAR-T",
                           cart_cmt="1", cmt_column="YTYPE", cart_unit="copies/ug", infusion_time=0)
    assert _cohort_text(result.folder, "cart_kinetics") == _strip("""
        patient_id,day,value,lloq,unit
        P001,0,120,,copies/ug
        P001,7,BLQ,50,copies/ug
        P002,0,300,,copies/ug
        P002,14,80,,copies/ug""")


# --------------------------------------------------------------------------- ADaM

ADSL = """
STUDYID,USUBJID,ARM,AGE,AGEU,SEX,SAFFL,CARTDT
S1,S1-01-SECRET1,CAR-T,34,YEARS,F,Y,2024-03-04
S1,S1-01-SECRET2,IFN-a + CAR-T,51,YEARS,M,Y,2024-04-10
S1,S1-02-SECRET3,Screen Failure,60,YEARS,M,N,
S1,S1-02-SECRET4,IFN-a + CAR-T,28,YEARS,F,Y,2024-05-01
S1,S1-02-SECRET5,CAR-T,45,YEARS,U,Y,2024-05-20
"""
ADTTE = """
USUBJID,PARAMCD,AVAL,CNSR,EVNTDESC,STARTDT,ADT
S1-01-SECRET1,OS,401,1,,2024-03-04,2025-04-08
S1-01-SECRET1,RFS,173,0,RELAPSE,2024-04-01,2024-09-20
S1-01-SECRET2,OS,301,0,DEATH,2024-04-10,2025-02-04
S1-01-SECRET2,RFS,273,0,DEATH,2024-05-08,2025-02-04
S1-02-SECRET4,OS,201,1,,2024-05-01,2024-11-17
S1-02-SECRET4,RFS,170,1,,2024-05-29,2024-11-14
S1-02-SECRET5,OS,150,0,DEATH,2024-05-20,2024-10-16
S1-02-SECRET5,EFS,150,0,DEATH,2024-05-20,2024-10-16
"""
ADPC = """
USUBJID,PARAMCD,AVAL,AVALU,ALLOQ,BLQFL,ADT,DTYPE
S1-01-SECRET1,CARTTG,,copies/ug,50,Y,2024-03-01,
S1-01-SECRET1,CARTTG,1200,copies/ug,50,,2024-03-11,
S1-01-SECRET1,CARTTG,,copies/ug,50,Y,2024-04-01,
S1-01-SECRET2,CARTTG,5000,copies/ug,50,,2024-04-17,
S1-01-SECRET2,CARTTG,5000,copies/ug,50,,2024-04-17,AVERAGE
S1-02-SECRET4,CARTTG,800,copies/ug,50,,2024-05-08,
"""
ADLB = """
USUBJID,PARAMCD,AVAL,AVALU,ALLOQ,BLQFL,ADT,LBMETHOD,LBSPEC
S1-01-SECRET1,MRD,0.5,%,0.01,,2024-04-01,FLOW CYTOMETRY,BONE MARROW
S1-01-SECRET1,MRD,,%,0.01,Y,2024-06-01,FLOW CYTOMETRY,BONE MARROW
S1-02-SECRET4,MRD,,%,0.0001,Y,2024-05-29,NEXT GENERATION SEQUENCING,BONE MARROW
S1-02-SECRET4,HGB,12,g/dL,,,2024-05-29,,
"""
ADRS = """
USUBJID,PARAMCD,AVALC
S1-01-SECRET1,BOR,CR
S1-01-SECRET2,BOR,CRI
S1-02-SECRET4,BOR,CR
S1-02-SECRET5,BOR,NR
"""
ADAM_EXPECTED = {
    "patients": """
        patient_id,arm,age_years,sex
        P001,CAR-T,34,F
        P002,IFN-a + CAR-T,51,M
        P003,IFN-a + CAR-T,28,F
        P004,CAR-T,45,""",
    "outcomes": """
        patient_id,response,response_day,relapse_day,relapse_cd19,hsct_day,death_day,last_followup_day
        P001,CR,28,200,unknown,,,400
        P002,CRi,28,,,,300,300
        P003,CR,28,,,,,200
        P004,NR,,,,,149,149""",
    "cart_kinetics": """
        patient_id,day,value,lloq,unit
        P001,7,1200,50,copies/ug
        P001,28,BLQ,50,copies/ug
        P002,7,5000,50,copies/ug
        P003,7,800,50,copies/ug""",
    "mrd": """
        patient_id,day,mrd_pct,lod_pct,method,specimen
        P001,28,0.5,0.01,flow,BM
        P001,89,negative,0.01,flow,BM
        P003,28,negative,0.0001,ngs,BM""",
}
ADAM_ARGS = dict(control_arm="CAR-T", experimental_arm="IFN-a + CAR-T", cart_param="CARTTG", mrd_param="MRD")
DATE_COLUMNS = ("CARTDT", "STARTDT", "ADT")


def _write_adam(tmp_path, fmt: str, texts=None) -> dict:
    texts = texts or {"adsl": ADSL, "adtte": ADTTE, "adpc": ADPC, "adlb": ADLB, "adrs": ADRS}
    paths = {}
    for name, text in texts.items():
        frame = _frame(text)
        if fmt == "csv":
            paths[name] = tmp_path / f"{name}.csv"
            frame.to_csv(paths[name], index=False)
            continue
        for column in frame.columns:  # SAS numbers and dates, as a real .xpt holds them
            if column in DATE_COLUMNS:
                frame[column] = [dt.date.fromisoformat(v) if v else None for v in frame[column]]
            elif column in ("AGE", "AVAL", "CNSR", "ALLOQ", "ADY", "STARTDY", "CARTDY"):
                frame[column] = pd.to_numeric(frame[column], errors="coerce")
        paths[name] = tmp_path / f"{name}.xpt"
        pyreadstat.write_xport(frame, str(paths[name]), variable_format={c: "DATE9" for c in DATE_COLUMNS
                                                                         if c in frame.columns})
    return paths


@pytest.mark.parametrize("fmt", ["csv", "xpt"])
def test_adam_import_gives_the_expected_cohort(tmp_path, fmt):
    paths = _write_adam(tmp_path, fmt)
    result = import_adam(**paths, out=tmp_path / "cohort", infusion_date_column="CARTDT", **ADAM_ARGS)
    for name, expected in ADAM_EXPECTED.items():
        assert _cohort_text(result.folder, name) == _strip(expected), name
    cohort = load_cohort(result.folder)
    assert cohort.arms == ("CAR-T", "IFN-a + CAR-T")
    key = pd.read_csv(result.key_file, dtype=str)
    assert list(key["USUBJID"]) == ["S1-01-SECRET1", "S1-01-SECRET2", "S1-02-SECRET4", "S1-02-SECRET5"]
    # Nothing in the cohort folder names a subject or holds a date.
    for file in result.folder.iterdir():
        text = file.read_text()
        assert "SECRET" not in text and "2024-" not in text and "S1-0" not in text, file.name
    reasons = " | ".join(e["reason"] for e in result.report.left_out)
    for reason in ("screen failure", "PARAMCD EFS is not used", "derived record (DTYPE not blank)",
                   "sample before the infusion", "PARAMCD HGB is not used"):
        assert reason in reasons
    for file in {e["file"] for e in result.report.left_out}:  # one reason a row
        rows = [r for e in result.report.left_out if e["file"] == file for r in e["rows"]]
        assert len(rows) == len(set(rows)), file


def _sdtm_study_day(date: str, reference: dt.date) -> int:
    """SDTM --DY: date - reference + 1 on or after the reference date, date - reference before it."""
    delta = (dt.date.fromisoformat(date) - reference).days
    return delta + 1 if delta >= 0 else delta


def _study_day_texts() -> dict:
    """The ADaM dataset with study days instead of dates.

    Every subject's reference date (study day 1) is two days after the
    infusion for S1-01-SECRET2 (infusion on study day -2: crosses the
    missing day 0) and four days before it for the others (infusion on
    study day 5, as with a lymphodepletion reference).
    """
    adsl = _frame(ADSL)
    reference = {}
    for _, row in adsl.iterrows():
        if row["CARTDT"]:
            shift = 2 if row["USUBJID"] == "S1-01-SECRET2" else -4
            reference[row["USUBJID"]] = dt.date.fromisoformat(row["CARTDT"]) + dt.timedelta(days=shift)
    adsl["CARTDY"] = [str(_sdtm_study_day(d, reference[s])) if d else "" for s, d in zip(adsl["USUBJID"], adsl["CARTDT"])]
    texts = {"adsl": adsl.drop(columns="CARTDT")}
    for name, text in (("adtte", ADTTE), ("adpc", ADPC), ("adlb", ADLB)):
        frame = _frame(text)
        frame["ADY"] = [str(_sdtm_study_day(d, reference[s])) for s, d in zip(frame["USUBJID"], frame["ADT"])]
        if "STARTDT" in frame:
            frame["STARTDY"] = [str(_sdtm_study_day(d, reference[s])) for s, d in zip(frame["USUBJID"], frame["STARTDT"])]
            frame = frame.drop(columns="STARTDT")
        texts[name] = frame.drop(columns="ADT")
    texts["adrs"] = _frame(ADRS)
    assert texts["adsl"].loc[1, "CARTDY"] == "-2" and texts["adsl"].loc[0, "CARTDY"] == "5"
    return {k: v.to_csv(index=False) for k, v in texts.items()}


def test_date_cells_iso_date9_and_sas_numbers():
    from toolkit.importers.common import to_date

    day = dt.date(2024, 3, 4)
    assert to_date("2024-03-04") == to_date("04MAR2024") == to_date("2024-03-04T10:30:00") == day
    assert to_date(str((day - dt.date(1960, 1, 1)).days)) == day  # a SAS date number
    assert math.isnan(to_date("")) and math.isnan(to_date("."))
    assert to_date("March 4") is None


def test_adam_param_in_two_files_is_taken_from_the_first_and_reported(tmp_path):
    texts = {"adsl": ADSL, "adtte": ADTTE, "adpc": ADPC, "adrs": ADRS,
             "adlb": ADLB + "S1-01-SECRET1,CARTTG,99,copies/ug,50,,2024-03-12,,\n"}
    paths = _write_adam(tmp_path, "csv", texts)
    result = import_adam(**paths, out=tmp_path / "c", infusion_date_column="CARTDT", **ADAM_ARGS)
    assert _cohort_text(result.folder, "cart_kinetics") == _strip(ADAM_EXPECTED["cart_kinetics"])
    assert {"file": "adlb.csv", "row_kind": "row", "rows": [6],
            "reason": "PARAMCD CARTTG is taken from adpc.csv (the first file holding it)"} in result.report.left_out


def test_study_days_have_no_day_zero():
    assert study_days_since(1, 1) == 0
    assert study_days_since(8, 1) == 7  # not 8: study day 1 is the infusion day
    assert study_days_since(-1, 1) == -1  # the day before
    assert study_days_since(1, -1) == 1
    assert study_days_since(2, -2) == 3
    assert study_days_since(29, 5) == 24
    with pytest.raises(ValueError, match="day 0"):
        study_days_since(0, 1)


@pytest.mark.parametrize("fmt", ["csv", "xpt"])
def test_adam_study_days_give_the_same_cohort_as_dates(tmp_path, fmt):
    paths = _write_adam(tmp_path, fmt, _study_day_texts())
    result = import_adam(**paths, out=tmp_path / "cohort", infusion_day_column="CARTDY", **ADAM_ARGS)
    for name, expected in ADAM_EXPECTED.items():
        assert _cohort_text(result.folder, name) == _strip(expected), name


def test_naive_study_day_subtraction_is_caught(tmp_path, monkeypatch):
    """The pinned cohort flags an importer that forgets the missing day 0."""
    monkeypatch.setattr(adam_module, "study_days_since", lambda day, reference: day - reference)
    paths = _write_adam(tmp_path, "csv", _study_day_texts())
    result = import_adam(**paths, out=tmp_path / "cohort", infusion_day_column="CARTDY", **ADAM_ARGS)
    assert _cohort_text(result.folder, "outcomes") != _strip(ADAM_EXPECTED["outcomes"])


def test_adam_constant_infusion_study_day(tmp_path):
    texts = {"adsl": ADSL, "adtte": """
USUBJID,PARAMCD,CNSR,EVNTDESC,STARTDY,ADY
S1-01-SECRET1,OS,1,,1,366
S1-01-SECRET1,RFS,0,RELAPSE,29,181
S1-01-SECRET2,OS,1,,1,200
S1-02-SECRET4,OS,1,,1,100
S1-02-SECRET5,OS,0,DEATH,1,50
S1-01-SECRET1,HSCT,0,,1,151
S1-02-SECRET4,HSCT,1,,1,100
"""}
    paths = _write_adam(tmp_path, "csv", texts)
    result = import_adam(**paths, out=tmp_path / "c", infusion_study_day=1, response="CRi", hsct_param="HSCT",
                         population_flag="SAFFL", relapse_cd19="negative",
                         control_arm="CAR-T", experimental_arm="IFN-a + CAR-T")
    assert _cohort_text(result.folder, "outcomes") == _strip("""
        patient_id,response,response_day,relapse_day,relapse_cd19,hsct_day,death_day,last_followup_day
        P001,CRi,28,180,negative,150,,365
        P002,NR,,,,,,199
        P003,NR,,,,,,99
        P004,NR,,,,,49,49""")


# --------------------------------------------------------------------------- workbook


def test_workbook_import_matches_the_example_cohort(tmp_path):
    book = tmp_path / "trial.xlsx"
    with pd.ExcelWriter(book) as writer:
        for name in ("patients", "outcomes", "cart_kinetics", "mrd"):
            pd.read_csv(EXAMPLE / f"{name}.csv").to_excel(writer, sheet_name=name, index=False)  # numbers as numbers
        study = load_cohort(EXAMPLE).study
        pd.DataFrame({"key": list(study), "value": list(study.values())}).to_excel(writer, sheet_name="study",
                                                                                 index=False)
        pd.DataFrame({"note": ["ignored"]}).to_excel(writer, sheet_name="README", index=False)
    result = import_workbook(book, out=tmp_path / "cohort")
    imported, example = load_cohort(result.folder), load_cohort(EXAMPLE)
    assert imported.study == example.study
    for table in ("patients", "outcomes", "cart", "mrd"):
        pd.testing.assert_frame_equal(getattr(imported, table), getattr(example, table), check_dtype=False)
    assert result.key_file is None
    assert result.report.left_out[0]["reason"] == "sheet is not a cohort table"


# --------------------------------------------------------------------------- bad input: exit 2, clear, no identifiers


def _run(capsys, argv) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _nonmem_argv(data, outcomes, out, *extra):
    return ["import", "nonmem", str(data), "--out", str(out), "--outcomes", str(outcomes), "--dv-scale", "log",
            "--time-unit", "hours", "--arm-column", "ARM", "--control-arm", "1=CAR-T", "--experimental-arm",
            "2=IFN-a + CAR-T", "--cart-unit", "copies/ug", *extra]


def test_cli_nonmem_import_then_validate(tmp_path, capsys):
    data, outcomes = _write_nonmem(tmp_path, "csv")
    code, text = _run(capsys, _nonmem_argv(data, outcomes, tmp_path / "cohort", "--cart-cmt", "2"))
    assert code == 0, text
    assert "it validates" in text and "keep it" in text
    assert main(["validate", str(tmp_path / "cohort")]) == 0
    # the destination now exists: a second import refuses instead of overwriting
    code, text = _run(capsys, _nonmem_argv(data, outcomes, tmp_path / "cohort", "--cart-cmt", "2"))
    assert code == 2 and "already exists" in text


@pytest.mark.parametrize("case, expected", [
    ("missing_column", "pk.csv, column 'DV': required column is missing"),
    ("unknown_cmt", "no observation record has CMT=9"),
    ("no_infusion", "pk.csv, row 10, column 'EVID': this patient has no infusion record"),
    ("no_outcomes", "NONMEM-style data hold no outcomes"),
    ("bad_number", "pk.csv, row 5, column 'DV': is not a number"),
    ("sample_after_followup", "cart_kinetics.csv, row 3, column 'day': in the imported cohort: is after the "
                              "patient's last_followup_day"),
])
def test_cli_nonmem_bad_input_exits_2_naming_file_row_column(tmp_path, capsys, case, expected):
    frame = _frame(NONMEM)
    frame["ID"] = frame["ID"].replace({"1": "ID-SECRET-1", "2": "ID-SECRET-2"})
    outcomes = tmp_path / "o.csv"
    text = NONMEM_OUTCOMES.replace("\n1,", "\nID-SECRET-1,").replace("\n2,", "\nID-SECRET-2,")
    if case == "sample_after_followup":  # follow-up ends before the patient's CAR-T samples
        text = text.replace("28,200,negative,,,400", "3,,,,,5")
    outcomes.write_text(text)
    cmt = "2"
    if case == "missing_column":
        frame = frame.drop(columns="DV")
    elif case == "unknown_cmt":
        cmt = "9"
    elif case == "no_infusion":
        frame = frame.drop(index=8)  # patient 2's EVID=1 record (spreadsheet row 10)
    elif case == "bad_number":
        frame.loc[3, "DV"] = "1,2e3"
    data = tmp_path / "pk.csv"
    frame.to_csv(data, index=False)
    argv = _nonmem_argv(data, outcomes, tmp_path / "cohort", "--cart-cmt", cmt)
    if case == "no_outcomes":
        argv = [a for a in argv if a not in ("--outcomes", str(outcomes))]
    code, text = _run(capsys, argv)
    assert code == 2
    assert expected in text and "Fix:" in text
    assert "Traceback" not in text and "SECRET" not in text
    assert not (tmp_path / "cohort").exists() and not (tmp_path / "cohort.id_key.csv").exists()


@pytest.mark.parametrize("case, expected", [
    ("event_before_infusion", "adtte.csv, row 3, column 'ADT': the RFS day is before the infusion"),
    ("no_os", "1 imported subject(s) have no OS record"),
    ("no_infusion_option", "the CAR-T infusion is not stated"),
    ("no_response", "the response category (CR or CRi) of responders cannot be derived"),
    ("missing_column", "adtte.csv, column 'CNSR': required column is missing"),
    ("study_day_zero", "adsl.csv"),
])
def test_cli_adam_bad_input_exits_2(tmp_path, capsys, case, expected):
    texts = {"adsl": ADSL, "adtte": ADTTE, "adpc": ADPC, "adlb": ADLB, "adrs": ADRS}
    infusion = ["--infusion-date-column", "CARTDT"]
    if case == "event_before_infusion":
        texts["adtte"] = ADTTE.replace("2024-09-20", "2024-02-20")
    elif case == "no_os":
        texts["adtte"] = "\n".join(line for line in ADTTE.splitlines() if not line.startswith("S1-02-SECRET4,OS"))
    elif case == "no_infusion_option":
        infusion = []
    elif case == "no_response":
        texts.pop("adrs")
    elif case == "missing_column":
        texts["adtte"] = _frame(ADTTE).drop(columns="CNSR").to_csv(index=False)
    elif case == "study_day_zero":
        texts["adsl"] = _frame(ADSL).assign(CARTDY=["1", "0", "", "1", "1"]).to_csv(index=False)
        infusion = ["--infusion-day-column", "CARTDY"]
    paths = _write_adam(tmp_path, "csv", texts)
    argv = ["import", "adam", "--out", str(tmp_path / "cohort"), "--control-arm", "CAR-T", "--experimental-arm",
            "IFN-a + CAR-T", "--cart-param", "CARTTG", "--mrd-param", "MRD", *infusion]
    for name, path in paths.items():
        argv += [f"--{name}", str(path)]
    code, text = _run(capsys, argv)
    assert code == 2, text
    assert expected in text and "Fix:" in text
    assert "Traceback" not in text and "SECRET" not in text and "2024-" not in text
    assert not (tmp_path / "cohort").exists()


def test_adam_error_is_an_import_data_error_in_python(tmp_path):
    paths = _write_adam(tmp_path, "csv")
    with pytest.raises(ImportDataError, match="no record has PARAMCD CART"):
        import_adam(**paths, out=tmp_path / "c", infusion_date_column="CARTDT", control_arm="CAR-T",
                    experimental_arm="IFN-a + CAR-T", cart_param="CART")


# --------------------------------------------------------------------------- the imported cohorts fit


def test_imported_cohort_fits_durability(tmp_path):
    """A tiny durability fit on the ADaM cohort: it reaches the sampler and summarizes (not a real analysis)."""
    from toolkit.fitting import DurabilityOptions, default_settings, fit_durability

    paths = _write_adam(tmp_path, "csv")
    cohort = load_cohort(import_adam(**paths, out=tmp_path / "c", infusion_date_column="CARTDT", **ADAM_ARGS).folder)
    result = fit_durability(cohort, DurabilityOptions(days=[180]),
                            default_settings("durability", chains=1, tune=100, draws=100, random_seed=1,
                                             progressbar=False))
    hr = result.summary["estimands"]["hazard_ratio"]
    assert math.isfinite(hr["median"]) and hr["median"] > 0


@pytest.mark.parametrize("endpoint", ["rfs", "efs"])
def test_imported_nonmem_cohort_builds_the_durability_model(tmp_path, endpoint):
    """No sampling: the imported cohort gives durability inputs and a finite log density at the start."""
    import numpy as np

    from toolkit.data.inputs import to_durability_inputs
    from toolkit.models.durability import build_durability_model

    data, outcomes = _write_nonmem(tmp_path, "csv")
    cohort = load_cohort(import_nonmem(data, out=tmp_path / "c", outcomes=outcomes, **NONMEM_ARGS).folder)
    model = build_durability_model(to_durability_inputs(cohort, endpoint=endpoint, covariates=["age_years"]))
    assert np.isfinite(model.compile_logp()(model.initial_point()))


@pytest.mark.parametrize("source", ["nonmem", "adam", "workbook"])
def test_import_help_shows_options_and_defaults(capsys, source):
    assert main(["import", source, "--help"]) == 0  # main() returns argparse's exit code
    text = capsys.readouterr().out
    assert "--out" in text
    if source == "nonmem":
        assert "(default: pct)" in text and "(default: None)" not in text
