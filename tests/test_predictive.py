"""Posterior-predictive draws stored in runs (toolkit.predictive) and the checks that use them (toolkit.plots.ppc)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import xarray as xr

from toolkit.data import load_cohort
from toolkit.data.from_run import durability_inputs_from_run, mrd_inputs_from_run
from toolkit.fitting import DurabilityOptions, MrdOptions, default_settings, fit_durability, fit_mrd
from toolkit.inference import _write_manifest, load_run
from toolkit.plots.ppc import (durability_pit, durability_pit_from_draws, durability_pit_of_run, mrd_pit,
                               mrd_pit_of_run, mrd_replicated_negative_of_run)
from toolkit.predictive import MAX_PREDICTIVE_DRAWS, PREDICTIVE_GROUP, durability_predictive, stored_predictive
from toolkit.testing import EXAMPLE

TINY = {"chains": 2, "tune": 200, "draws": 200, "progressbar": False, "random_seed": 7}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predictive")
    cohort = load_cohort(EXAMPLE)
    durability_fit = fit_durability(cohort, DurabilityOptions(variant="cure"), default_settings("durability", **TINY))
    mrd_fit = fit_mrd(cohort, MrdOptions(), default_settings("mrd", **TINY))
    return {"durability": load_run(durability_fit.save(folder / "durability")),
            "mrd": load_run(mrd_fit.save(folder / "mrd")), "folder": folder}


def test_runs_store_thinned_predictive_draws(runs):
    group = runs["durability"].posterior[PREDICTIVE_GROUP]
    assert set(group.data_vars) == {"rfs", "rfs_event"}
    assert group["rfs"].dims == ("chain", "draw", "patient")
    assert group.sizes["chain"] * group.sizes["draw"] <= MAX_PREDICTIVE_DRAWS
    inputs = durability_inputs_from_run(runs["durability"])
    small = durability_predictive(runs["durability"].posterior["posterior"].to_dataset(), inputs, max_draws=50)
    assert (small.sizes["chain"], small.sizes["draw"]) == (2, 25)  # thinned evenly within each chain
    observed = runs["durability"].posterior["observed_data"]["rfs"]
    assert list(group["patient"].to_numpy()) == list(observed["patient"].to_numpy())
    # the replicate is observed as the data are: censored at each patient's own time
    assert (group["rfs"] <= observed + 1e-12).all()
    assert ((group["rfs_event"] == 1) == (group["rfs"] < observed)).mean() > 0.99
    mrd = runs["mrd"].posterior[PREDICTIVE_GROUP]["mrd_log10"]
    assert mrd.dims == ("chain", "draw", "assessment")
    assert mrd.sizes["assessment"] == runs["mrd"].posterior["constant_data"]["censoring"].size
    assert np.isfinite(mrd.to_numpy()).all()


def test_stored_durability_pit_matches_the_closed_form_and_a_wrong_model_does_not(runs):
    """F_i(t_i) from 400 stored replicates is within Monte Carlo error (sd <= 0.025) of the closed form; replicates
    from a model with the hazard ratio multiplied by e^2 are not (the check can fail)."""
    run = runs["durability"]
    inputs = durability_inputs_from_run(run)
    closed = durability_pit(run.posterior["posterior"], inputs)
    stored = durability_pit_of_run(run.posterior, inputs)
    assert np.max(np.abs(stored - closed)) < 0.12
    wrong_posterior = run.posterior["posterior"].to_dataset()
    wrong_posterior["log_hr"] = wrong_posterior["log_hr"] + 2.0
    wrong = durability_pit_from_draws(durability_predictive(wrong_posterior, inputs)["rfs_event"].to_numpy()
                                      .reshape(-1, inputs.arm.size), inputs)
    assert np.max(np.abs(wrong - closed)[inputs.arm == 1]) > 0.2


def test_stored_mrd_draws_give_the_predictive_check(runs):
    run = runs["mrd"]
    inputs = mrd_inputs_from_run(run)
    stored, recomputed = mrd_pit_of_run(run.posterior, inputs), mrd_pit(run.posterior["posterior"], inputs)
    assert stored.shape == recomputed.shape == (inputs.censoring.size,)
    assert np.mean(np.abs(stored - recomputed)) < 0.05  # two Monte Carlo estimates of the same F
    negative = mrd_replicated_negative_of_run(run.posterior, inputs)
    assert negative.shape == stored_predictive(run.posterior, "mrd_log10").shape
    from toolkit.mrd_estimands import replicated_negative

    share_recomputed = replicated_negative(run.posterior["posterior"], inputs).mean(axis=0)
    assert np.mean(np.abs(negative.mean(axis=0) - share_recomputed)) < 0.05


def _without_stored_draws(run_path, old, *, model_version: str | None = None):
    """A copy of a run folder as runs were written before the toolkit stored replicates (and, given
    ``model_version``, as fitted by that version of the model), sealed again."""
    shutil.copytree(run_path, old)
    tree = xr.open_datatree(old / "posterior.nc").load()
    del tree[PREDICTIVE_GROUP]
    (old / "posterior.nc").unlink()
    tree.to_netcdf(old / "posterior.nc")
    if model_version is not None:
        provenance = json.loads((old / "provenance.json").read_text(encoding="utf-8"))
        provenance["model_version"] = model_version
        (old / "provenance.json").write_text(json.dumps(provenance), encoding="utf-8")
    _write_manifest(old)
    return load_run(old)


@pytest.mark.parametrize("model", ["durability", "mrd"])
def test_a_run_saved_without_the_draws_still_loads_and_reports(runs, model, tmp_path):
    old = tmp_path / f"old_{model}"
    run = _without_stored_draws(runs[model].path, old)
    assert PREDICTIVE_GROUP not in run.posterior.children
    if model == "durability":
        inputs = durability_inputs_from_run(run)
        np.testing.assert_array_equal(durability_pit_of_run(run.posterior, inputs),
                                      durability_pit(run.posterior["posterior"], inputs))
    else:
        inputs = mrd_inputs_from_run(run)
        np.testing.assert_array_equal(mrd_pit_of_run(run.posterior, inputs), mrd_pit(run.posterior["posterior"], inputs))
    from toolkit.report import write_report

    out = write_report([old], tmp_path / "report.html")
    assert out.is_file() and "PIT" in out.read_text(encoding="utf-8")


def test_an_mrd_run_from_before_1_4_is_checked_under_its_own_normal_error(runs, tmp_path, monkeypatch):
    """MRD 1.4.0 made the measurement error Student-t. A run fitted before it, saved without replicates, has its
    replicates, PIT, trajectories and report recomputed under the Normal error it was fitted with, not t_4."""
    import toolkit.mrd_estimands as mrd_estimands
    from toolkit.mrd_estimands import patient_recurrence, residual_df_of_run
    from toolkit.models.mrd import RESIDUAL_DF
    from toolkit.plots.mrd import mrd_figure_builders
    from toolkit.report import write_report

    old = tmp_path / "old_mrd"
    run = _without_stored_draws(runs["mrd"].path, old, model_version="1.3.0")
    assert residual_df_of_run(run) is None and residual_df_of_run(runs["mrd"]) == RESIDUAL_DF
    inputs = mrd_inputs_from_run(run)
    posterior = run.posterior["posterior"]
    normal = mrd_pit(posterior, inputs, residual_df=None)
    np.testing.assert_array_equal(mrd_pit_of_run(run.posterior, inputs, residual_df=None), normal)
    assert not np.array_equal(normal, mrd_pit(posterior, inputs))  # the error matters to the check
    recurrence = patient_recurrence(posterior, inputs, residual_df=None)["recurrence_probability"]
    assert not np.allclose(recurrence, patient_recurrence(posterior, inputs)["recurrence_probability"])

    seen = []
    original = mrd_estimands.patient_recurrence_draws

    def recording(*args, residual_df, **kwargs):
        seen.append(residual_df)
        return original(*args, residual_df=residual_df, **kwargs)

    monkeypatch.setattr(mrd_estimands, "patient_recurrence_draws", recording)
    for name in ("trajectories.png", "fraction_negative.png", "pit.png"):
        mrd_figure_builders(run)[name]()
    write_report([old], tmp_path / "report.html")
    assert seen and set(seen) == {None}, "a figure or the report recomputed an old run under the current error"
    seen.clear()
    mrd_figure_builders(runs["mrd"])["trajectories.png"]()  # a current run: its own (current) error
    assert seen and set(seen) == {RESIDUAL_DF}
