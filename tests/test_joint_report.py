"""Joint-model outputs a user reads: figures of a run, the report section, dynamic-prediction calibration."""

import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest

from toolkit.cli import SPEC_DIR
from toolkit.data import load_cohort
from toolkit.fitting import JointOptions
from toolkit.inference import load_run
from toolkit.narrative import joint_in_words
from toolkit.plots.joint import known_outcomes, plot_calibration, write_joint_figures
from toolkit.prediction import calibration_table, predict_relapse
from toolkit.report import render_report
from toolkit.report_joint import DEFINITIONS, joint_answer, joint_prior_rows
from toolkit.specs import load_spec, merged_options

FIGURES = ("mediation_forest.png", "associations.png", "mediation_curves.png")
LANDMARK, HORIZON = 90.0, 365.0


@pytest.fixture(scope="module")
def trial(joint_trial):
    """The simulated trial of the shared joint fit (``conftest.joint_cli_run``), with its latent truths."""
    return joint_trial


@pytest.fixture(scope="module")
def cohort_dir(joint_cli_run):
    return joint_cli_run[0]


@pytest.fixture(scope="module")
def run_dir(joint_cli_run):
    """One tiny joint fit through the CLI, with the MRD submodel (figures written by the fit command)."""
    return joint_cli_run[1]


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(run_dir)


@pytest.fixture(scope="module")
def predictions(run, cohort_dir):
    return predict_relapse(run, load_cohort(cohort_dir), landmark_day=LANDMARK, horizons=(HORIZON,), n_draws=100,
                           n_proposals=50)


def test_fit_writes_the_joint_figures(run_dir, run, tmp_path):
    for name in FIGURES:
        assert (run_dir / "figures" / name).stat().st_size > 5_000, name
    paths = write_joint_figures(run, tmp_path)
    pngs = [p.name for p in paths if p.suffix == ".png"]
    assert pngs == list(FIGURES) + ["decisions.png"]
    assert [p.name for p in paths if p.suffix == ".svg"] == [n.replace(".png", ".svg") for n in pngs]
    plt.close("all")


def test_report_has_the_joint_section_with_the_summary_probabilities(run, cohort_dir):
    html = render_report([run])
    assert "Joint model: what the quantities mean" in html
    for term in DEFINITIONS:
        assert term.split(" (")[0] in html
    est = run.summary["estimands"]
    sentence = joint_answer(run.summary)[0]
    shown = [float(x) for x in re.findall(r'<span class="prob">([0-9.]+)</span>', sentence)]
    expected = [est[f"prob_hazard_ratio_{n}_below_1"]
                for n in ("total", "indirect", "indirect_cart", "indirect_mrd", "direct")]
    assert shown == [round(p, 2) for p in expected]
    assert "through MRD clearance alone" in sentence
    # the split of the indirect effect is exact: through CAR-T kinetics x through MRD clearance
    post = run.posterior["posterior"]
    assert "mrd::clearance_z" in post and "log_hr_per_log_clearance" in post
    from toolkit.data.joint_inputs import to_joint_inputs
    from toolkit.joint_estimands import mediation_draws

    draws = mediation_draws(post, to_joint_inputs(load_cohort(cohort_dir), mrd_submodel=True), n_new=50)
    np.testing.assert_allclose(draws["hazard_ratio_indirect"],
                               draws["hazard_ratio_indirect_cart"] * draws["hazard_ratio_indirect_mrd"], rtol=1e-12)
    mrd_sentence = next(s for s in joint_answer(run.summary) if s.startswith("MRD kill rate and relapse"))
    assert f"{math.exp(est['log_hr_per_log_clearance']['median']):.2f}" in mrd_sentence
    assert sentence in html
    assert f"{est['hazard_ratio_total']['median']:.2f}" in html
    assert html.count("<img") == 4  # three joint figures and the decision densities
    assert "Normal(-0.34, 0.3)" in html and "CartPriors" in html
    words = joint_in_words(run.summary)
    assert f"overall: {expected[0]:.2f}" in words
    assert words.startswith("PROVISIONAL") == (not run.summary["diagnostics"]["converged"])


def test_proportion_mediated_comes_with_its_caution(run):
    sentences = joint_answer(run.summary)
    mediated = next(s for s in sentences if "proportion mediated" in s)
    assert "unstable" in mediated or "not interpretable" in mediated


def test_prior_rows_cover_every_recorded_prior(run):
    rows = joint_prior_rows(run.provenance["priors"])
    assert {r[0] for r in rows} >= set(run.provenance["priors"])


def test_known_outcomes_agree_with_the_latent_relapse_day(trial, cohort_dir, predictions):
    observed = known_outcomes(load_cohort(cohort_dir), predictions["patient_id"], HORIZON)
    latent = trial.latent["relapse_day_latent"].reindex(observed.index)
    assert (latent[observed == 1] <= HORIZON + 1).all()  # + 1: relapse days are recorded as whole days
    assert (latent[observed == 0] > HORIZON - 1).all()
    assert observed.notna().sum() >= 10


def test_calibration_observed_is_a_hand_count(cohort_dir, predictions):
    risk = f"p_relapse_by_{HORIZON:g}d"
    p = predictions[risk].to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    observed = known_outcomes(load_cohort(cohort_dir), predictions["patient_id"], HORIZON)
    known = observed.notna().to_numpy()
    predicted, relapsed = p[known], observed.to_numpy()[known]
    table = calibration_table(predicted, relapsed, bins=3)
    sizes = table["n"].to_numpy()
    assert sizes.sum() == known.sum() and sizes.max() - sizes.min() <= 1  # equal-size groups by predicted risk
    order = np.argsort(predicted, kind="stable")
    start = 0
    for row in table.itertuples():
        members = order[start:start + row.n]
        start += row.n
        assert row.observed == pytest.approx(sum(relapsed[i] == 1 for i in members) / row.n)
        assert row.mean_predicted == pytest.approx(predicted[members].mean())
    ax = plot_calibration(table)
    assert len(ax.lines) >= 1
    plt.close("all")


def test_primary_spec_maps_onto_joint_options():
    spec = load_spec(SPEC_DIR / "joint_primary.toml", model="joint")
    options = JointOptions(**merged_options(spec, {}))
    assert (options.variant, options.kinetics, options.associations) == ("cure", "joint", ["log_cmax", "cart_loss"])
    assert options.tau_days == 365 and options.covariates == [] and options.hr_below == [1.0]
    assert spec["sampler"]["target_accept"] == 0.95 and "rationale" in spec


def test_mrd_spec_maps_onto_joint_options_with_the_mrd_submodel():
    spec = load_spec(SPEC_DIR / "joint_mrd.toml", model="joint")
    options = JointOptions(**merged_options(spec, {}))
    assert options.associations == ["log_cmax", "cart_loss", "mrd_clearance"] and options.kinetics == "joint"
    assert spec["sampler"]["draws"] == 2000 and spec["sampler"]["target_accept"] == 0.95


def test_two_stage_refuses_the_mrd_submodel():
    with pytest.raises(ValueError, match=r"^the two-stage alternative plugs in CAR-T features only; fit the "
                                         r"mrd_clearance association with kinetics = \"joint\"$"):
        JointOptions(kinetics="two-stage", associations=["log_cmax", "mrd_clearance"])
