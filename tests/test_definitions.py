"""Smaller definitions: stage-1 divergences of the two-stage joint fit reach the verdict, non-finite estimand
draws are counted, a failed PSIS-LOO is shown, and ``toolkit compare`` refuses what it cannot compare."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import xarray as xr

from toolkit.cli import main, print_fit_summary
from toolkit.inference import diagnose, load_run
from toolkit.testing import EXAMPLE, edit_run_file

# --------------------------------------------------------------------------- two-stage diagnostics


def _fake_fit(seed: int, divergent: int = 0) -> xr.DataTree:
    rng = np.random.default_rng(seed)
    shape = (2, 400)
    diverging = np.zeros(shape, bool)
    diverging[0, :divergent] = True
    return xr.DataTree.from_dict({
        "posterior": xr.Dataset({f"x{seed}": (("chain", "draw"), rng.standard_normal(shape))}),
        "sample_stats": xr.Dataset({"diverging": (("chain", "draw"), diverging),
                                    "energy": (("chain", "draw"), rng.standard_normal(shape))}),
    })


def test_stage_one_divergences_reach_the_verdict():
    from toolkit.fitting import merge_two_stage, with_stage_one_diagnostics

    clean = merge_two_stage(_fake_fit(2), _fake_fit(1))
    d, stage_one = with_stage_one_diagnostics(diagnose(clean), clean)
    assert set(clean["posterior"].data_vars) == {"x1", "x2"} and stage_one["divergences"] == 0
    assert d.converged, d.problems

    merged = merge_two_stage(_fake_fit(2), _fake_fit(1, divergent=7))
    stage_two_only = diagnose(merged)
    assert stage_two_only.converged  # what the fit reported before: stage 2's statistics alone
    d, stage_one = with_stage_one_diagnostics(stage_two_only, merged)
    assert not d.converged and d.divergences == 7 and stage_one == {"divergences": 7, "min_bfmi": stage_one["min_bfmi"]}
    assert any(p.startswith("stage 1 (CAR-T fit): 7 divergent transitions") for p in d.problems)


# --------------------------------------------------------------------------- non-finite draws


def test_joint_mediation_counts_non_finite_draws(monkeypatch):
    import toolkit.joint_estimands as je

    rng = np.random.default_rng(0)
    total = np.exp(rng.normal(-0.3, 0.2, 400))
    direct = np.exp(rng.normal(-0.2, 0.2, 400))
    proportion = np.log(total / direct) / np.log(total)
    proportion[:5] = np.nan
    proportion[5:8] = np.inf
    draws = {"hazard_ratio_total": total, "hazard_ratio_direct": direct, "hazard_ratio_indirect": total / direct,
             "proportion_mediated": proportion}
    monkeypatch.setattr(je, "mediation_draws", lambda *a, **k: draws)
    notes: list[str] = []
    out = je.joint_estimands({}, None, warnings_out=notes)
    assert notes == ["proportion_mediated: 8 of 400 posterior draws are not finite (the total effect is null in "
                     "those draws) and are left out of its summary; the estimate describes the other draws"]
    assert np.isfinite(out["proportion_mediated"]["mean"])
    assert out["prob_hazard_ratio_total_below_1"] == pytest.approx(np.mean(total < 1))
    with pytest.warns(UserWarning, match=r"^proportion_mediated: 8 of 400 posterior draws are not finite"):
        je.joint_estimands({}, None)


def test_mrd_time_to_negativity_counts_draws_without_a_day(monkeypatch):
    import toolkit.mrd_estimands as me

    n = 300
    pop = {}
    for arm in ("control", "experimental"):
        for key in ("mrd_negative_28d_flow", "mrd_negative_28d_ngs", "mrd_recurrence_365d"):
            pop[f"{key}_{arm}"] = np.full(n, 0.5) + 0.01 * np.arange(n) / n
        pop[f"time_to_mrd_negativity_days_{arm}"] = np.linspace(10, 20, n)
    pop["time_to_mrd_negativity_days_experimental"][:12] = np.nan
    monkeypatch.setattr(me, "population_mrd_draws", lambda *a, **k: pop)
    posterior = xr.Dataset({"clearance_rate_ratio": (("chain", "draw"), np.full((2, n // 2), 1.2))})
    notes: list[str] = []
    out = me.mrd_estimands(posterior, None, warnings_out=notes)
    assert notes == ["time_to_mrd_negativity_days_experimental: 12 of 300 posterior draws are not finite (no "
                     "simulated responder fell below 1e-4 in those draws) and are left out of its summary; the "
                     "estimate describes the other draws"]
    assert "time_to_mrd_negativity_days_experimental" in out


# --------------------------------------------------------------------------- LOO shown, compare refuses


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    for variant in ("cure", "weibull"):
        assert main(["fit", "durability", "--data", str(EXAMPLE), "--out", str(base / variant), "--variant", variant,
                     "--endpoint", "efs", "--no-figures"]) == 0  # same events scored, so LOO compares them
    return base


def _edited_copy(runs, tmp_path, name, edit_summary=None, edit_provenance=None):
    out = tmp_path / name
    shutil.copytree(runs / "weibull", out)
    for file, edit in (("summary.json", edit_summary), ("provenance.json", edit_provenance)):
        if edit is not None:
            record = json.loads((out / file).read_text())
            edit(record)
            edit_run_file(out, file, json.dumps(record))  # re-sealed: an intact run with an unusual summary
    return out


def test_failed_loo_is_shown_in_cli_and_report(runs, tmp_path, capsys):
    from rich.console import Console

    from toolkit.report import render_report

    def fail(summary):
        summary["model_checks"]["loo"] = {"error": "ValueError: log likelihood has NaN"}

    bad = _edited_copy(runs, tmp_path, "loo_failed", fail)
    run = load_run(bad)
    console = Console(width=200)
    with console.capture() as captured:
        print_fit_summary(console, run.summary)
    assert "PSIS-LOO failed: ValueError: log likelihood has NaN" in captured.get()
    assert "<td>PSIS-LOO</td><td>failed: ValueError: log likelihood has NaN</td>" in render_report([run])


def test_compare_marks_runs_that_did_not_converge(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # a wide console, so the table's headers are not folded
    assert main(["compare", str(runs / "cure"), str(runs / "weibull")]) == 0
    out = capsys.readouterr().out
    assert "converged" in out and "PROVISIONAL" not in out

    def unconverged(summary):
        summary["diagnostics"].update(converged=False, problems=["max R-hat 1.200 > 1.01"])

    bad = _edited_copy(runs, tmp_path, "weibull_unconverged", unconverged)
    assert main(["compare", str(runs / "cure"), str(bad)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "PROVISIONAL: not every run converged" in out and "NO (provisional)" in out
    assert "NOT CONVERGED: weibull_unconverged failed its sampling diagnostics" in out


def test_compare_refuses_other_kinds_and_other_data(runs, tmp_path, capsys):
    def as_cart(summary):
        summary["model"] = "cart"

    other_kind = _edited_copy(runs, tmp_path, "cart_like", as_cart)
    assert main(["compare", str(runs / "cure"), str(other_kind)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "error: runs of different kinds of model cannot be compared by PSIS-LOO: cure (durability), " \
           "cart_like (cart)" in out and "Traceback" not in out

    def other_cohort(provenance):
        provenance["data_hash"] = "0" * 64

    other_data = _edited_copy(runs, tmp_path, "other_data", edit_provenance=other_cohort)
    assert main(["compare", str(runs / "cure"), str(other_data)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "were fitted to different cohort data (provenance data_hash differs)" in out


@pytest.mark.slow
def test_compare_of_a_cart_and_a_durability_run_exits_2(runs, example_cli_run, capsys):
    """The case that raised ``KeyError: 'rfs'``: a real CAR-T run against a durability run."""
    cart = example_cli_run("cart")
    capsys.readouterr()
    assert main(["compare", str(runs / "cure"), str(cart)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "different kinds of model" in out and "Traceback" not in out


@pytest.mark.slow
def test_two_stage_fit_keeps_stage_one_statistics(tmp_path):
    """A real (tiny) two-stage joint fit: stage 1's sampler statistics are saved and counted in the verdict."""
    from toolkit.data import load_cohort
    from toolkit.fitting import STAGE_ONE_STATS, JointOptions, default_settings, fit_joint

    settings = default_settings("joint", chains=2, tune=100, draws=100, random_seed=3)
    result = fit_joint(load_cohort(EXAMPLE), JointOptions(kinetics="two-stage"), settings)
    run = load_run(result.save(tmp_path / "run"))
    assert STAGE_ONE_STATS in run.posterior.children
    n1 = int(run.posterior[STAGE_ONE_STATS]["diverging"].to_numpy().sum())
    n2 = int(run.posterior["sample_stats"]["diverging"].to_numpy().sum())
    d = run.summary["diagnostics"]
    assert d["stage_one"]["divergences"] == n1 and d["divergences"] == n1 + n2
    assert d["converged"] is False or n1 == 0
