"""MRD checks a user looks at: figures of a run, the observed vs replicated share MRD-negative, the report section."""

import dataclasses
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest

from toolkit.data import load_cohort
from toolkit.data.mrd_inputs import to_mrd_inputs
from toolkit.inference import load_run
from toolkit.mrd_estimands import mrd_inputs_from_run, replicated_negative
from toolkit.plots.mrd import fraction_negative_table, plot_mrd_trajectories
from toolkit.report import render_report
from toolkit.report_mrd import mrd_answer, mrd_prior_rows
from toolkit.testing import EXAMPLE

FIGURES = ("trajectories.png", "fraction_negative.png", "forest.png")


@pytest.fixture(scope="module")
def run_dir(example_cli_run):
    """A tiny fit of the example through the CLI (figures written by the fit command; shared, read only)."""
    return example_cli_run("mrd")


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(run_dir)


@pytest.fixture(scope="module")
def inputs(run):
    return mrd_inputs_from_run(run)


def test_fit_writes_every_figure(run_dir):
    for name in FIGURES:
        path = run_dir / "figures" / name
        assert path.is_file() and path.stat().st_size > 10_000, name
        image = plt.imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.std() > 0.01, f"{name} is blank"


def test_inputs_rebuilt_from_the_run_equal_the_cohort_inputs(inputs):
    direct = to_mrd_inputs(load_cohort(EXAMPLE))
    assert inputs.patient_ids == direct.patient_ids and inputs.infused_ids == direct.infused_ids
    assert inputs.methods == direct.methods and inputs.reference_method == direct.reference_method
    assert inputs.arm_labels == direct.arm_labels
    for field in dataclasses.fields(direct):
        if field.name in ("log10_loq", "n_excluded_assessments", "warnings") or not isinstance(
                getattr(direct, field.name), np.ndarray):
            continue
        np.testing.assert_array_equal(getattr(inputs, field.name), getattr(direct, field.name), err_msg=field.name)
    pnq = direct.censoring == 2  # the quantification limit is kept where it is used: PNQ rows
    np.testing.assert_array_equal(inputs.log10_loq[pnq], direct.log10_loq[pnq])


def test_observed_share_negative_at_day_28_is_the_hand_count(inputs):
    """Day-28 window (days 0-60), responders, counted by hand from mrd.csv::

        m = mrd.csv (as text) of CR/CRi patients, joined to patients.csv arm, day < 60
        m.groupby(["arm", "method"]).apply(lambda g: ((g.mrd_pct == "negative").sum(), len(g)))
        CAR-T flow 20 of 24, CAR-T ngs 6 of 9, IFN-a + CAR-T flow 24 of 28, IFN-a + CAR-T ngs 6 of 11
    """
    table = fraction_negative_table(inputs)
    day28 = table[table["window"] == "0-60"].set_index(["method", "arm"])
    expected = {("flow", 0): (20, 24), ("ngs", 0): (6, 9), ("flow", 1): (24, 28), ("ngs", 1): (6, 11)}
    for key, (negative, n) in expected.items():
        assert (day28.loc[key, "negative"], day28.loc[key, "n"]) == (negative, n), key
        assert day28.loc[key, "observed"] == pytest.approx(negative / n)
    assert table["n"].sum() == inputs.n_assessments
    assert table["negative"].sum() == (inputs.censoring == 1).sum()


def test_replicated_share_negative_is_a_probability_band(run, inputs):
    replicated = replicated_negative(run.posterior["posterior"], inputs)
    assert replicated.shape == (200, inputs.n_assessments) and replicated.dtype == bool
    table = fraction_negative_table(inputs, replicated)
    assert ((0 <= table["predicted_lower"]) & (table["predicted_lower"] <= table["predicted_median"])
            & (table["predicted_median"] <= table["predicted_upper"]) & (table["predicted_upper"] <= 1)).all()
    assert np.array_equal(replicated, replicated_negative(run.posterior["posterior"], inputs))  # seeded


def test_trajectories_grid_picks_patients_and_refuses_unknown_ones(run, inputs):
    fig = plot_mrd_trajectories(run.posterior["posterior"], inputs, patients=["P001", "P003", "P005"], ncols=2,
                                n_draws=50)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["P001", "P003", "P005"]
    assert len(visible[0].collections) >= 1  # the band
    plt.close(fig)
    with pytest.raises(ValueError, match="not analysed patients: P059"):
        plot_mrd_trajectories(run.posterior["posterior"], inputs, patients=["P059"])  # a non-responder


def test_answer_sentences_read_the_summary():
    value = lambda m, lo, hi: {"mean": m, "median": m, "sd": 0.1, "hdi_90": [lo, hi]}  # noqa: E731
    summary = {"arms": {"control": "CAR-T", "experimental": "IFN-a + CAR-T"},
               "data": {"assessments_before_day_28": 0},
               "estimands": {"clearance_rate_ratio": value(1.13, 0.58, 1.82), "prob_clearance_rate_ratio_above_1": 0.65,
                             "mrd_negative_28d_flow_control": value(0.77, 0.66, 0.87),
                             "mrd_negative_28d_flow_experimental": value(0.85, 0.76, 0.93),
                             "mrd_recurrence_365d_control": value(0.355, 0.23, 0.50),
                             "mrd_recurrence_365d_experimental": value(0.267, 0.15, 0.38),
                             "mrd_recurrence_365d_difference": value(-0.088, -0.238, 0.054),
                             "prob_mrd_recurrence_365d_lower": 0.84}}
    rate, negative, recurrence = mrd_answer(summary)
    assert "ratio of typical kill rates): 1.13 (90% interval 0.58 to 1.82)" in rate
    assert 'clears MRD faster: <span class="prob">0.65</span>' in rate and "leans on its prior" in rate
    assert "77% (90% interval 66% to 87%) with CAR-T vs 85% (90% interval 76% to 93%) with IFN-a + CAR-T" in negative
    assert "difference -9 points (90% interval -24 points to +5 points)" in recurrence
    assert 'fewer recurrences: <span class="prob">0.84</span>' in recurrence


def test_report_includes_the_mrd_section(run):
    html = render_report([run])
    assert "Speed of MRD clearance" in html and "Responders MRD-negative at day 28" in html
    assert "MRD recurrence by day 365" in html
    assert len(re.findall(r'<img alt="[^"]*" src="data:image/png;base64,', html)) == 4  # no per-patient figure
    assert "HalfNormal(1)" in html and "LogNormal(" in html and "fixed at -8" in html
    assert "LogNormal(-0.693, 0.5) (median 0.5 on the log scale)" in html  # clearance_sd since model 1.3.0
    rows = dict((name, text) for name, text in mrd_prior_rows({"log_doubling_days": [2.85, 0.63],
                                                               "clearance_sd": 0.5}))
    assert rows["log_doubling_days"] == "Normal(2.85, 0.63) (median 17 days)"
    assert rows["clearance_sd"] == "Gamma(2, rate 4) (mean 0.5 on the log scale)"  # a run before 1.3.0


def test_the_doubling_sd_prior_row_names_its_lognormal():
    """Model 1.1.0's ``doubling_sd`` is a LogNormal on the log scale, not a Normal pair (the default branch)."""
    rows = dict(mrd_prior_rows({"doubling_sd": [-0.916, 0.5]}))
    assert rows["doubling_sd"] == "LogNormal(-0.916, 0.5) (median 0.4 on the log scale)"


def test_mrd_pit_from_the_replicates(run, inputs):
    from toolkit.mrd_estimands import replicated_mrd_log10, replicated_negative
    from toolkit.plots.ppc import mrd_pit

    post = run.posterior["posterior"]
    y_rep, lod = replicated_mrd_log10(post, inputs)
    np.testing.assert_array_equal(replicated_negative(post, inputs), y_rep < lod)
    u = mrd_pit(post, inputs)
    assert u.shape == inputs.day.shape and np.all((u >= 0) & (u <= 1))
    below = np.asarray(inputs.censoring) == 1  # below the limit: at most the share of replicates below it
    assert np.all(u[below] <= np.mean(y_rep <= lod, axis=0)[below] + 1e-12)
