"""The kinetic cut: CAR-T and MRD samples after a patient's first HSCT, relapse or new anti-CD19 therapy are
not the first infusion's natural course, so the models leave them out (counted in a warning)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit.data import load_cohort
from toolkit.data.inputs import kinetic_cut_day, to_cart_inputs
from toolkit.data.joint_inputs import to_joint_inputs
from toolkit.data.mrd_inputs import to_mrd_inputs
from toolkit.simulate import TrialParameters, cart_curve, simulate_trial
from toolkit.testing import read_raw, write_raw

SEED = 3


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same simulated trial without and with samples after transplant/relapse (post_event_samples)."""
    root = tmp_path_factory.mktemp("cut")
    plain = simulate_trial(60, seed=SEED, with_truth=False)
    post = simulate_trial(60, seed=SEED, with_truth=False, post_event_samples=True)
    return (plain, load_cohort(plain.write(root / "plain")), post, load_cohort(post.write(root / "post")))


def test_post_event_option_is_off_by_default_and_adds_only_later_rows(pair):
    plain, _, post, cohort = pair
    assert "new_therapy_day" not in plain.outcomes.columns
    assert post.outcomes.drop(columns="new_therapy_day").equals(plain.outcomes)
    cut = kinetic_cut_day(cohort)
    for table in ("cart_kinetics", "mrd"):
        before, after = getattr(plain, table), getattr(post, table)
        keys = ["patient_id", "day"] + (["method", "specimen"] if table == "mrd" else [])
        merged = after.merge(before, on=keys, how="left", indicator=True, suffixes=("", "_plain"))
        added = merged[merged["_merge"] == "left_only"]
        assert len(added) > 20
        # every added row is after the patient's first event, every old row is unchanged
        assert (added["day"].astype(float) > added["patient_id"].map(cut)).all()
        assert len(merged) - len(added) == len(before)


def test_cut_inputs_equal_the_trial_without_post_event_samples(pair):
    """Structural: with the cut, the model inputs are exactly those of the first-infusion data."""
    _, plain_cohort, post, cohort = pair
    a, b = to_cart_inputs(plain_cohort), to_cart_inputs(cohort)
    for name in ("day", "log_value", "censored", "sample_patient", "log_lloq", "patient_lloq"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    n_added = len(post.cart_kinetics) - len(a.day)
    assert a.n_cut_samples == 0 and b.n_cut_samples == n_added
    assert any(w.startswith(f"{n_added} CAR-T sample(s) of ") and "left out of the kinetic likelihood" in w
               for w in b.warnings)
    m_a, m_b = to_mrd_inputs(plain_cohort), to_mrd_inputs(cohort)
    np.testing.assert_array_equal(m_a.day, m_b.day)
    np.testing.assert_array_equal(m_a.censoring, m_b.censoring)
    assert m_b.n_cut_assessments > 0 and any("MRD assessment(s)" in w for w in m_b.warnings)
    j = to_joint_inputs(cohort, mrd_submodel=True)
    assert j.cart.n_cut_samples == n_added and j.mrd.n_cut_assessments == m_b.n_cut_assessments
    assert any("CAR-T sample(s)" in w for w in j.warnings) and any("MRD assessment(s)" in w for w in j.warnings)


def test_cut_samples_are_biased_against_the_first_infusion_curve(pair):
    """What the cut prevents: samples after the event sit far from the patient's true first-infusion curve
    (ablation after HSCT, re-expansion after re-infusion), while the kept ones scatter around it with the
    assay's residual SD."""
    _, _, post, cohort = pair
    p = TrialParameters()
    latent = post.latent
    cart = cohort.cart.copy()
    cart = cart[~cart["below_lloq"]]
    pid = cart["patient_id"].astype(str)
    truth = cart_curve(cart["day"].to_numpy(float), *(latent.loc[pid, k].to_numpy(float)
                                                       for k in ("cmax", "tmax", "foldx", "alpha", "beta", "fb")))
    residual = np.log(cart["value"].to_numpy(float)) - np.log(truth)
    after = cart["day"].to_numpy(float) > pid.map(kinetic_cut_day(cohort)).to_numpy(float)
    kept, cut = residual[~after], residual[after]
    assert abs(kept.mean()) < 0.15 and abs(kept.std() - p.sigma_cart) < 0.1
    assert cut.size >= 10 and np.mean(np.abs(cut)) > 3 * p.sigma_cart


def test_new_therapy_day_alone_cuts_and_is_validated(cohort_dir):
    outcomes = read_raw(cohort_dir, "outcomes")
    cart = read_raw(cohort_dir, "cart_kinetics")
    pid = "P001"
    days = cart.loc[cart["patient_id"] == pid, "day"].astype(int)
    event = int(days.iloc[len(days) // 2])
    outcomes["new_therapy_day"] = ""
    outcomes.loc[outcomes["patient_id"] == pid, "new_therapy_day"] = str(event)
    write_raw(cohort_dir, "outcomes", outcomes)
    inputs = to_cart_inputs(load_cohort(cohort_dir))
    assert inputs.n_cut_samples == int((days > event).sum()) > 0  # the sample on the event day is kept
    kept_days = inputs.day[inputs.sample_patient == inputs.patient_ids.index(pid)]
    assert kept_days.max() == event
    # a new therapy after last follow-up is a validation problem naming file, row and column
    from toolkit.data.problems import CohortValidationError

    row = int(outcomes.index[outcomes["patient_id"] == pid][0])
    outcomes.loc[row, "new_therapy_day"] = str(int(outcomes.loc[row, "last_followup_day"]) + 5)
    write_raw(cohort_dir, "outcomes", outcomes)
    with pytest.raises(CohortValidationError) as err:
        load_cohort(cohort_dir)
    (problem,) = err.value.problems
    assert (problem.file, problem.row, problem.column) == ("outcomes.csv", row, "new_therapy_day")


def test_prediction_excludes_patients_after_a_new_therapy(cohort_dir):
    from toolkit.prediction import eligible_at_landmark

    before = eligible_at_landmark(load_cohort(cohort_dir), 90.0)
    pid = str(before["patient_id"].iloc[0])
    outcomes = read_raw(cohort_dir, "outcomes")
    outcomes["new_therapy_day"] = ""
    outcomes.loc[outcomes["patient_id"] == pid, "new_therapy_day"] = "60"
    write_raw(cohort_dir, "outcomes", outcomes)
    after = eligible_at_landmark(load_cohort(cohort_dir), 90.0)
    assert pid not in set(after["patient_id"]) and len(after) == len(before) - 1


def test_data_dictionary_names_the_cut_columns():
    from toolkit.data.templates import data_dictionary

    text = data_dictionary()
    assert "The kinetic cut: the first of `hsct_day`, `relapse_day` and `new_therapy_day`" in text
    assert "| `new_therapy_day` | no |" in text


@pytest.mark.slow
def test_fit_with_the_cut_recovers_the_residual_sd_and_without_it_is_biased(pair, monkeypatch):
    """One small CAR-T fit each way on the post-event cohort: without the cut the post-event samples inflate
    the residual SD (true 0.56) well beyond the cut fit's."""
    import toolkit.data.inputs as inputs_module
    from toolkit.inference import SamplerSettings, sample
    from toolkit.models.cart import build_cart_model

    _, _, _, cohort = pair
    settings = SamplerSettings(chains=2, tune=200, draws=200, random_seed=11, target_accept=0.9)
    with_cut = to_cart_inputs(cohort)
    monkeypatch.setattr(inputs_module, "kinetic_cut_day",
                        lambda c: pd.Series(np.nan, index=c.outcomes["patient_id"].astype(str).to_numpy()))
    without_cut = to_cart_inputs(cohort)
    assert without_cut.n_samples > with_cut.n_samples
    sigma = {}
    for name, inputs in (("cut", with_cut), ("no_cut", without_cut)):
        post = sample(build_cart_model(inputs), settings, log_likelihood=False)["posterior"]
        sigma[name] = float(np.median(post["sigma_log"].to_numpy()))
    assert abs(sigma["cut"] - TrialParameters().sigma_cart) < 0.1, sigma
    assert sigma["no_cut"] > sigma["cut"] + 0.15, sigma
