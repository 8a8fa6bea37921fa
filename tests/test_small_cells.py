"""Small-cell suppression in figures: counts from 1 to 4 print as "<5" in legends, as in the report's tables."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from toolkit.data import load_cohort  # noqa: E402
from toolkit.plots import count_label, plot_km_by_arm  # noqa: E402
from toolkit.testing import copy_example, read_raw, write_raw  # noqa: E402


def test_count_label():
    assert [count_label(n) for n in (0, 1, 4, 5, 60)] == ["0", "<5", "<5", "5", "60"]
    assert count_label(3, show_small_cells=True) == "3"


def _small_cohort(tmp_path, keep):
    folder = copy_example(tmp_path / "cohort")
    for name in ("patients", "outcomes", "cart_kinetics", "mrd"):
        frame = read_raw(folder, name)
        write_raw(folder, name, frame[frame["patient_id"].isin(keep)])
    return load_cohort(folder)


def test_km_legend_suppresses_small_counts(tmp_path):
    cohort = _small_cohort(tmp_path, [f"P{i:03d}" for i in range(1, 7)])
    ax = plot_km_by_arm(cohort)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(ax.figure)
    assert labels and all("n=<5" in label and "events=<5" in label for label in labels), labels
    ax = plot_km_by_arm(cohort, show_small_cells=True)  # the opt-out shows them
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(ax.figure)
    assert not any("<5" in label for label in labels), labels


def test_calibration_title_and_mrd_annotations_suppress_small_counts():
    import pandas as pd

    from toolkit.plots.joint import plot_calibration
    from toolkit.plots.mrd import plot_fraction_negative

    table = pd.DataFrame({"n": [4, 4, 4], "mean_predicted": [0.2, 0.5, 0.8], "observed": [0.25, 0.5, 0.75]})
    ax = plot_calibration(table, scores={"brier": 0.2, "auc": 0.7, "events": 3, "n": 12})
    title = ax.get_title()
    plt.close(ax.figure)
    assert "3 groups of <5 patients" in title and "(<5 relapses in 12)" in title, title
    mrd = pd.DataFrame({"method": ["flow"] * 2, "arm": [0, 1], "window": ["0-60"] * 2, "day": [28.0, 28.0],
                        "n": [3, 12], "negative": [2, 9], "observed": [2 / 3, 0.75]})
    fig = plot_fraction_negative(mrd)
    texts = [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)
    assert sorted(texts) == ["9/12", "<5/<5"], texts
