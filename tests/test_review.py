"""Reviewer's checks (toolkit.review): summary table, trace/rank plots, tree depth, prior sensitivity, compare."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import xarray as xr

from toolkit import review
from toolkit.data import load_cohort
from toolkit.fitting import DurabilityOptions, compare_runs, default_settings, fit_durability
from toolkit.inference import _write_manifest, diagnose, load_run
from toolkit.testing import EXAMPLE, run_cli

TINY = {"chains": 2, "tune": 200, "draws": 200, "progressbar": False}


@pytest.fixture(scope="module")
def cohort():
    return load_cohort(EXAMPLE)


def _durability_run(cohort, folder, priors=None, seed=1):
    fit = fit_durability(cohort, DurabilityOptions(priors=priors or {}),
                         default_settings("durability", random_seed=seed, **TINY))
    fit.save(folder)
    return load_run(folder)


@pytest.fixture(scope="module")
def runs(cohort, tmp_path_factory, example_cli_run):
    base = tmp_path_factory.mktemp("review")
    out = {
        "default": _durability_run(cohort, base / "default"),
        # log HR prior centred at +4 (HR 55) with sd 0.15, the data say HR about 0.5: a deliberate conflict
        "conflict": _durability_run(cohort, base / "conflict", {"log_hr": [4.0, 0.15]}),
        # log HR prior sd 0.02 against a likelihood sd of about 0.35: the data cannot move it
        "dominated": _durability_run(cohort, base / "dominated", {"log_hr": [0.0, 0.02]}),
    }
    out["cart"] = load_run(example_cli_run("cart"))  # the shared tiny CLI fit (2 x 100 draws), read only
    out["base"] = base
    return out


# --------------------------------------------------------------------------- summary table and plots


def test_summary_table_columns_and_population_first(runs):
    table = review.summary_table(runs["cart"].posterior)
    for column in ("variable", "level", "mean", "sd", "hdi90_lb", "hdi90_ub", "mcse_mean", "mcse_sd", "ess_bulk",
                   "ess_tail", "r_hat"):
        assert column in table.columns
    levels = list(table["level"])
    assert levels[0] == "population" and "patient" in levels
    first_patient = levels.index("patient")
    assert set(levels[first_patient:]) == {"patient"}, "hyperparameters must come before patient-level vectors"
    assert "theta_patient" in set(table["variable"]) and "sigma_log" in set(table["variable"])
    # every element of every posterior variable is summarised
    post = runs["cart"].posterior["posterior"]
    assert len(table) == sum(int(np.prod([v.sizes[d] for d in v.dims if d not in ("chain", "draw")]))
                             for v in post.data_vars.values())


def test_an_unconverged_fit_says_when_only_patient_level_parameters_fail(tmp_path):
    """The appendix of a fit that failed its verdict says when every population-level quantity passes and the
    failure sits in patient-level vectors only; nothing is said when a population-level quantity fails too."""
    import pandas as pd

    rows = [("mu", "population", 1.004, 900, 800), ("arm_effect", "population", 1.008, 450, 420),
            ("theta_patient", "patient", 1.179, 16, 41), ("theta_patient", "patient", 1.002, 2000, 1500),
            ("patient_cmax", "patient", 1.001, 1800, 1600)]
    table = pd.DataFrame(rows, columns=["variable", "level", "r_hat", "ess_bulk", "ess_tail"])
    said = review.failure_level_sentence(table)
    assert "patient-level parameters only: theta_patient (R-hat up to 1.179, bulk/tail ESS down to 16/41)" in said
    assert "patient_cmax" not in said and "R-hat at most 1.008, bulk/tail ESS at least 450/420" in said
    table.loc[1, "ess_bulk"] = 390  # a population-level quantity fails too
    assert review.failure_level_sentence(table) == ""
    table.loc[1, "ess_bulk"], table.loc[2, ["r_hat", "ess_bulk", "ess_tail"]] = 450, (1.0, 900, 900)
    assert review.failure_level_sentence(table) == ""  # nothing in the table fails: divergences, stated elsewhere

    # and `toolkit fit` prints it under the verdict, from the run's parameter_summary.csv
    from rich.console import Console

    from toolkit.cli import print_fit_summary

    table.loc[2, ["r_hat", "ess_bulk", "ess_tail"]] = (1.179, 16, 41)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    table.to_csv(run_dir / review.SUMMARY_CSV)
    summary = {"model": "cart", "arms": {"experimental": "IFN", "control": "ctl"}, "estimands": {},
               "diagnostics": {"converged": False, "max_rhat": 1.179, "min_ess_bulk": 16, "min_ess_tail": 41,
                               "divergences": 0, "problems": ["R-hat 1.179 > 1.01"]}}
    console = Console(record=True, width=200)
    print_fit_summary(console, summary, run_dir)
    assert "patient-level parameters only" in console.export_text()


def test_summary_csv_written_with_the_run(runs):
    path = runs["default"].path / review.SUMMARY_CSV
    assert path.is_file()
    assert path.read_text().splitlines()[0].startswith("parameter,variable,level,mean,sd")


def test_trace_and_rank_figures(runs):
    names = review.plotted_parameters(runs["cart"].posterior)
    assert names and not any(n.endswith("_std") for n in names)
    assert all(review.parameter_level(runs["cart"].posterior["posterior"][n]) == "population" for n in names)
    figs = review.trace_rank_figures(runs["default"].posterior)
    assert set(figs) == {"trace", "rank"}
    for fig in figs.values():
        assert len(fig.axes) >= 3
    html = review.diagnostics_appendix(runs["default"])
    assert html.count("data:image/png;base64,") == 2 and "log_hr" in html and "tree depth" in html


# --------------------------------------------------------------------------- tree depth


def _tree(flag_name: str, share: float) -> xr.DataTree:
    rng = np.random.default_rng(0)
    post = xr.Dataset({"x": (("chain", "draw"), rng.normal(size=(4, 1000)))})
    flags = np.zeros((4, 1000), dtype=bool)
    flags.ravel()[: int(share * flags.size)] = True
    stats = xr.Dataset({"diverging": (("chain", "draw"), np.zeros((4, 1000), dtype=bool)),
                        "energy": (("chain", "draw"), rng.normal(size=(4, 1000))),
                        flag_name: (("chain", "draw"), flags)})
    return xr.DataTree.from_dict({"posterior": post, "sample_stats": stats})


@pytest.mark.parametrize("flag_name", ["maxdepth_reached", "reached_max_treedepth"])
def test_treedepth_saturation_in_verdict(flag_name):
    ok = diagnose(_tree(flag_name, 0.0))
    assert ok.converged and ok.max_treedepth_share == 0.0
    bad = diagnose(_tree(flag_name, 0.25))
    assert not bad.converged and bad.max_treedepth_share == pytest.approx(0.25)
    assert any("maximum tree depth" in p for p in bad.problems)
    assert bad.as_dict()["max_treedepth_share"] == pytest.approx(0.25)


def test_fit_summary_reports_treedepth_share(runs):
    assert runs["default"].summary["diagnostics"]["max_treedepth_share"] is not None


# --------------------------------------------------------------------------- prior sensitivity


def test_fit_stores_log_prior_and_estimand_draws(runs):
    for name in ("default", "cart"):
        dt = runs[name].posterior
        assert review.has_sensitivity_groups(dt)
        assert review.ESTIMAND_DRAWS in dt.children
    cart_prior = runs["cart"].posterior[review.LOG_PRIOR].to_dataset()
    assert any(str(n).startswith("patient::") for n in cart_prior.data_vars)  # per-patient terms kept apart
    assert all(v.dims == ("chain", "draw") for v in cart_prior.data_vars.values())  # summed: small file
    assert "hazard_ratio" in runs["default"].posterior[review.ESTIMAND_DRAWS].to_dataset()


def test_conflicting_prior_is_flagged_and_default_is_not(runs):
    conflict = review.sensitivity_table(runs["conflict"])
    assert conflict.loc["log_hr", "diagnosis"] == review.LABEL_CONFLICT
    default = review.sensitivity_table(runs["default"])
    assert default.loc["log_hr", "diagnosis"] == review.LABEL_FINE  # the paired case: the check can fail


def test_tight_prior_is_prior_dominated(runs):
    table = review.sensitivity_table(runs["dominated"])
    assert table.loc["log_hr", "diagnosis"] == review.LABEL_PRIOR_DOMINATED


def test_prior_only_is_prior_dominated():
    """No likelihood (log-likelihood 0 for every draw): the posterior is the prior, so only the prior moves it."""
    rng = np.random.default_rng(2)
    mu = rng.normal(0.0, 1.0, size=(4, 500))
    tree = xr.DataTree.from_dict({
        "posterior": xr.Dataset({"mu": (("chain", "draw"), mu)}),
        review.LOG_PRIOR: xr.Dataset({"mu": (("chain", "draw"), -0.5 * mu**2)}),
        "log_likelihood": xr.Dataset({"y": (("chain", "draw"), np.zeros_like(mu))}),
    })
    table = review.prior_sensitivity(tree)
    assert table.loc["mu", "diagnosis"] == review.LABEL_PRIOR_DOMINATED


def test_sensitivity_side_by_side_and_section(runs):
    table = review.sensitivity_table(runs["default"], alternatives={"conflict": runs["conflict"]})
    assert {"estimate_default", "estimate_conflict"} <= set(table.columns)
    hr = table[(table.index == "hazard_ratio") & (table["kind"] == "estimand")].iloc[0]
    assert hr["estimate_conflict"] > hr["estimate_default"]
    prob = table.loc["prob_hr_below_1"]
    assert prob["kind"] == "probability" and prob["estimate_conflict"] < prob["estimate_default"]
    html = review.sensitivity_section(runs["cart"])
    assert "one prior set" in html and "<table" in html


def test_sensitivity_cli(runs, tmp_path):
    code, text = run_cli(["sensitivity", runs["default"].path, "--out", tmp_path / "sens"])
    assert code == 0, text
    assert (tmp_path / "sens" / "sensitivity.csv").is_file()
    assert (tmp_path / "sens" / review.SUMMARY_CSV).is_file()
    # a run saved before log_prior was stored: exit 2 with the fix
    old = tmp_path / "old_run"
    shutil.copytree(runs["default"].path, old)
    tree = xr.open_datatree(old / "posterior.nc").load()
    del tree[review.LOG_PRIOR]
    (old / "posterior.nc").unlink()
    tree.to_netcdf(old / "posterior.nc")
    _write_manifest(old)
    code, text = run_cli(["sensitivity", old])
    assert code == 2 and "refit" in text and "Traceback" not in text
    code, text = run_cli(["sensitivity", tmp_path / "missing"])
    assert code == 2 and "Traceback" not in text
    code, text = run_cli(["sensitivity", runs["default"].path, "--compare-with", runs["cart"].path])
    assert code == 2 and "same model" in text


# --------------------------------------------------------------------------- compare


def test_compare_cart_runs_and_refuse_mixed_kinds(runs):
    twin = runs["base"] / "cart_twin"
    if not twin.exists():
        shutil.copytree(runs["cart"].path, twin)
    # moment matching off here (it compiles the CAR-T model, minutes on two cores): tests/test_rebuild.py has it
    table = compare_runs({"cart": runs["cart"], "cart_twin": load_run(twin)}, k_threshold=np.inf)
    assert set(table.index) == {"cart", "cart_twin"} and np.isfinite(table["elpd"]).all()
    with pytest.raises(ValueError, match="different kinds"):
        compare_runs({"cart": runs["cart"], "durability": runs["default"]})


def test_high_pareto_k_is_moment_matched(runs):
    """With the threshold below the three largest Pareto k values, those three observations are moment matched."""
    import arviz_stats as azs

    from toolkit.fitting import loo_with_moment_matching

    run = runs["default"]
    k = np.sort(np.asarray(azs.loo(run.posterior, var_name="rfs", pointwise=True).pareto_k).ravel())
    matched, n = loo_with_moment_matching(run, "rfs", k_threshold=float(k[-3]) - 1e-9)
    assert n == 3 and np.isfinite(float(matched.elpd))
    plain, n_plain = loo_with_moment_matching(run, "rfs", k_threshold=0.7)
    assert n_plain == 0 or k[-1] > 0.7
