"""CAR-T checks a user looks at: figures of a run, the visual predictive check, the report section."""

import json
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest

from toolkit.cli import main
from toolkit.data import load_cohort
from toolkit.data.inputs import to_cart_inputs
from toolkit.inference import load_run
from toolkit.plots.cart import VPC_EDGES, cart_inputs_from_run, cart_vpc, plot_individual_fits
from toolkit.report_cart import cart_answer, cart_prior_rows
from toolkit.testing import EXAMPLE

FIGURES = ("individual_fits.png", "vpc.png", "typical_curves.png", "forest.png", "prior_typical_curves.png")


@pytest.fixture(scope="module")
def run_dir(example_cli_run):
    """A tiny fit of the example through the CLI (figures written by the fit command; shared, read only)."""
    return example_cli_run("cart")


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(run_dir)


@pytest.fixture(scope="module")
def example():
    return load_cohort(EXAMPLE)


def test_fit_writes_every_figure(run_dir):
    for name in FIGURES:
        path = run_dir / "figures" / name
        assert path.is_file() and path.stat().st_size > 10_000, name
        image = plt.imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.std() > 0.01, f"{name} is blank"


def test_inputs_rebuilt_from_the_run_equal_the_cohort_inputs(run, example):
    rebuilt, direct = cart_inputs_from_run(run), to_cart_inputs(example)
    assert rebuilt.patient_ids == direct.patient_ids and rebuilt.arm_labels == direct.arm_labels
    for name in ("arm", "sample_patient", "day", "censored", "log_lloq", "log_value", "patient_lloq"):
        np.testing.assert_allclose(getattr(rebuilt, name), getattr(direct, name), err_msg=name)
    assert rebuilt.unit == direct.unit


def test_vpc_observed_blq_shares_are_the_data_shares_per_bin(run, example):
    vpc = cart_vpc(run.posterior["posterior"], cart_inputs_from_run(run), n_draws=50)
    # the data's own shares, straight from the validated cohort table
    cart = example.cart.merge(example.patients[["patient_id", "arm"]], on="patient_id")
    cart["arm_code"] = (cart["arm"] == example.experimental_arm).astype(int)
    cart["bin"] = np.digitize(cart["day"], VPC_EDGES) - 1
    shares = cart.groupby(["arm_code", "bin"])["below_lloq"].agg(["mean", "size", "sum"])
    assert len(vpc) == len(shares)
    for row in vpc.itertuples():
        expected = shares.loc[(row.arm, row.bin)]
        assert row.observed_blq == expected["mean"] and row.n_samples == expected["size"]
        assert row.n_blq == expected["sum"]
    # pinned on the example: day-1 samples below the LLOQ, 21 of 30 (control) and 18 of 30 (IFN-a)
    first = vpc[vpc["bin"] == 0].set_index("arm")
    assert first.loc[0, "observed_blq"] == 21 / 30 and first.loc[1, "observed_blq"] == 18 / 30
    assert vpc["n_samples"].sum() == len(example.cart)
    for q in ("blq", "p10", "p50", "p90"):
        ok = vpc[f"predicted_{q}_lo"].notna()
        assert (vpc.loc[ok, f"predicted_{q}_lo"] <= vpc.loc[ok, f"predicted_{q}_median"]).all()
        assert (vpc.loc[ok, f"predicted_{q}_median"] <= vpc.loc[ok, f"predicted_{q}_hi"]).all()


def test_individual_fits_grid_options(run):
    inputs = cart_inputs_from_run(run)
    fig = plot_individual_fits(run.posterior["posterior"], inputs, max_patients=5, n_draws=20, ncols=3)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == [f"{p} ({inputs.arm_labels[a]})"
                                               for p, a in zip(inputs.patient_ids[:5], inputs.arm[:5])]
    plt.close(fig)
    with pytest.raises(ValueError, match="unknown patient code"):
        plot_individual_fits(run.posterior["posterior"], inputs, patients=["NOPE"])


def test_cart_answer_in_words_from_the_summary():
    est = {"cmax_copies_per_ug_control": {"median": 25_712.0, "hdi_90": [20_400.0, 31_149.0]},
           "cmax_copies_per_ug_experimental": {"median": 32_499.0, "hdi_90": [25_800.0, 39_400.0]},
           "cmax_gmr": {"median": 1.271, "hdi_90": [0.936, 1.65]}, "prob_cmax_gmr_above_1": 0.912,
           "auc28_gmr": {"median": 1.4, "hdi_90": [0.963, 1.86]}, "prob_auc28_gmr_above_1": 0.958,
           "persistence_half_life_ratio": {"median": 1.35, "hdi_90": [0.607, 2.18]}}
    summary = {"estimands": est, "arms": {"control": "CAR-T", "experimental": "IFN-a + CAR-T"},
               "data": {"unit": "copies/ug"}}
    text = cart_answer(summary)
    assert text[0] == ("Typical peak CAR-T level (Cmax): 25,700 (90% interval 20,400 to 31,100) copies/ug with "
                       "CAR-T vs 32,500 (90% interval 25,800 to 39,400) copies/ug with IFN-a + CAR-T.")
    assert text[1] == ("Peak level with IFN-a + CAR-T relative to CAR-T (geometric mean ratio of Cmax): 1.27 "
                       "(90% interval 0.94 to 1.65); probability that IFN-a + CAR-T raises the peak level: "
                       '<span class="prob">0.91</span>.')
    assert '<span class="prob">0.96</span>' in text[2] and "ratio 1.35 (90% interval 0.61 to 2.18)" in text[3]
    assert len(text) == 4  # no Tmax sentence without Tmax estimands


def test_prior_rows_name_each_family():
    rows = dict(cart_prior_rows({"mu_cmax": [np.log(24_000.0), 0.5], "omega_cmax": [0.65, 0.5],
                                 "omega_family": "lognormal", "sigma": [np.log(0.56), 0.2],
                                 "effect_persistence": [0.0, 0.5]}))
    assert rows == {"mu_cmax": "Normal(10.1, 0.5) on log Cmax (median 24,000)",
                    "omega_cmax": "LogNormal(median 0.65, log-SD 0.5)",
                    "sigma": "LogNormal(median 0.56, log-SD 0.2) (residual SD, log scale)",
                    "effect_persistence": "Normal(0, 0.5) on the arm difference in log persistence half-life"}


def test_report_has_the_cart_section_and_images(run_dir, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    text = out.read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    p = summary["estimands"]["prob_cmax_gmr_above_1"]
    assert f'probability that IFN-a + CAR-T raises the peak level: <span class="prob">{p:.2f}</span>' in text
    assert "Typical peak CAR-T level (Cmax)" in text and "Persistence (half-life" in text
    images = re.findall(r'<img [^>]*src="([^"]+)"', text)
    # 4 key figures, then a trace and a rank plot in the reviewer appendix (toolkit.review)
    assert len(images) == 4 + 2 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "visual predictive check" in text
    assert "<th>samples below LLOQ</th>" in text and "LogNormal(median 0.65, log-SD 0.5)" in text
    if not summary["diagnostics"]["converged"]:  # 100 draws: usually labelled
        assert "(provisional)" in text
