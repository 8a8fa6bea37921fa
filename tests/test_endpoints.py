import numpy as np
import pytest

from toolkit.data import load_cohort
from toolkit.data.endpoints import time_to_event
from toolkit.testing import EXAMPLE, row_of, set_cell


@pytest.fixture(scope="module")
def example():
    return load_cohort(EXAMPLE)


def test_rfs_counts_from_remission_and_censors_at_hsct(example):
    tte = time_to_event(example)
    merged = example.merged().set_index("patient_id")
    responders = merged[merged["response"].isin(["CR", "CRi"])]
    assert set(tte["patient_id"]) == set(responders.index)
    for _, r in tte.iterrows():
        m = merged.loc[r["patient_id"]]
        if r["cause"] == "relapse":
            assert r["time"] == m["relapse_day"] - m["response_day"] and r["event"] == 1
        elif r["cause"] == "hsct":
            assert r["time"] == m["hsct_day"] - m["response_day"] and r["event"] == 0
        elif r["cause"] == "death":
            assert r["time"] == m["death_day"] - m["response_day"] and r["event"] == 1
        else:
            assert r["time"] == m["last_followup_day"] - m["response_day"] and r["event"] == 0
    assert (tte["cause"] == "hsct").sum() == responders["hsct_day"].lt(
        responders[["relapse_day", "death_day"]].min(axis=1).fillna(np.inf)).sum()


def test_relapse_endpoint_treats_death_as_competing(example):
    tte = time_to_event(example, endpoint="relapse")
    deaths = tte[tte["cause"] == "death"]
    assert len(deaths) > 0 and (deaths["event"] == 0).all()


def test_efs_counts_non_response_at_day_zero(example):
    tte = time_to_event(example, endpoint="efs")
    assert len(tte) == 60
    nr = tte[tte["cause"] == "nonresponse"]
    assert len(nr) == (example.outcomes["response"] == "NR").sum()
    assert (nr["time"] == 0).all() and (nr["event"] == 1).all()


def test_timevarying_hsct_keeps_follow_up(cohort_dir):
    row = row_of(cohort_dir, "outcomes", patient_id="P005")
    set_cell(cohort_dir, "outcomes", row, "hsct_day", "100")
    cohort = load_cohort(cohort_dir)
    censored = time_to_event(cohort, hsct="censor").set_index("patient_id").loc["P005"]
    kept = time_to_event(cohort, hsct="timevarying").set_index("patient_id").loc["P005"]
    assert (censored["cause"], censored["time"]) == ("hsct", 72)
    assert kept["cause"] == "censored" and kept["hsct_time"] == 72 and kept["time"] > 72


def test_unknown_policy_names_the_valid_ones(example):
    with pytest.raises(ValueError, match="unknown HSCT policy 'drop'; valid: censor, timevarying"):
        time_to_event(example, hsct="drop")
    with pytest.raises(ValueError, match="unknown endpoint 'os'; valid: rfs, relapse, efs"):
        time_to_event(example, endpoint="os")
