"""Simulation-based calibration: the generator, the metrics, and short SBC studies that can fail.

The durability Weibull model is calibrated by a short SBC (40 simulations, few
draws); the same check must flag two deliberately broken fits: one whose prior
differs from the generator's, one that drops the censored observations'
likelihood term.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from toolkit.calibration.controls import DropCensoredDurability, shifted_prior
from toolkit.calibration.generators import DurabilityCalibration, durability_design
from toolkit.calibration.metrics import chi2_pvalue, ecdf_band, ecdf_pvalue, summarize_study
from toolkit.calibration.runner import StudyError, load_results, run_simulation, run_study, study_settings
from toolkit.data import load_cohort
from toolkit.testing import EXAMPLE

SBC_SIMS = 40
FAST = study_settings(dict(chains=2, tune=300, draws=200, seed=11))


@pytest.fixture(scope="module")
def design():
    return durability_design(load_cohort(EXAMPLE))


@pytest.fixture(scope="module")
def weibull(design):
    return DurabilityCalibration(design, variant="weibull")


# --------------------------------------------------------------------------- generator (no sampling)


def test_design_keeps_responders_arms_and_follow_up(design):
    cohort = load_cohort(EXAMPLE)
    responders = cohort.outcomes["response"].isin(["CR", "CRi"]).sum()
    assert design.n_patients == responders
    assert set(np.unique(design.arm)) == {0, 1}
    assert (design.censor_years > 0).all()
    assert "P0" not in json.dumps(design.summary())  # no patient identifiers in what is stored


def test_prior_draws_come_from_the_model_prior(design):
    problem = DurabilityCalibration(design, variant="cure")
    thetas = problem.draw_prior(2000, random_seed=3)
    # every free parameter of the fitted model, including the cure model's own NRM hazard, and the NRM scale
    # the model derives from its free variable death_log_scale_ref (durability 1.2.0)
    model = problem.fit_model()
    assert set(thetas[0]) == {rv.name for rv in model.free_RVs} | {"death_log_scale_years"}
    assert {"log_shape", "log_scale_years", "log_hr", "logit_cure", "cure_log_or", "death_log_shape"} <= set(thetas[0])
    for name in set(thetas[0]) - {"death_log_scale_ref"}:  # each natural parameter has its own prior
        values = np.array([t[name] for t in thetas])
        mu, sigma = getattr(problem.priors, name)
        assert abs(values.mean() - mu) < 4 * sigma / np.sqrt(values.size), name
        assert abs(values.std() / sigma - 1) < 0.08, name
    # a changed prior set reaches the draws (prior and fit come from the same builder)
    moved = DurabilityCalibration(design, variant="cure",
                                  priors=problem.priors.with_overrides({"log_hr": [2.0, 0.1]}))
    assert abs(np.mean([t["log_hr"] for t in moved.draw_prior(200, random_seed=3)]) - 2.0) < 0.05


def test_simulated_data_follow_the_likelihood(design):
    problem = DurabilityCalibration(design, variant="cure")
    theta = {"log_shape": np.array(0.2), "log_scale_years": np.array(-0.5), "log_hr": np.array(0.0),
             "logit_cure": np.array(0.0), "cure_log_or": np.array(0.0)}
    events, n = 0, 0
    for seed in range(200):
        data = problem.simulate(theta, random_seed=seed)
        assert (data["time_years"] <= design.censor_years + 1e-12).all()
        # an event is never after the patient's censoring time; a censored row sits at it
        censored = data["event"] == 0
        assert np.allclose(data["time_years"][censored], design.censor_years[censored])
        events += data["event"].sum()
        n += data["event"].size
    # P(event) = (1 - pi) (1 - S_u(c_i)) with pi = 0.5
    k, lam = np.exp(0.2), np.exp(-0.5)
    expected = np.mean(0.5 * (1 - np.exp(-(design.censor_years / lam) ** k)))
    assert abs(events / n - expected) < 0.02


def test_efs_generator_draws_responses_deaths_and_relapses(design):
    problem = DurabilityCalibration(design, variant="cure", endpoint="efs")
    theta = problem.draw_prior(1, random_seed=4)[0]
    assert {"logit_response", "response_log_or", "death_log_shape"} <= set(theta)
    data = problem.simulate(theta, random_seed=2)
    assert data["responded"].size == design.infused_arm.size > design.n_patients
    assert np.array_equal(data["event"], data["relapse_event"] + data["death_in_remission"])
    updates = problem.data_updates(data)
    assert {"response_observed", "death_observed", "relapse_event"} <= set(updates)
    # the swapped containers are the ones the fitted likelihood reads
    import nutpie

    names = {v.name for v in nutpie.compile_pymc_model(problem.fit_model()).shared_var_keys}
    assert {"time_years", "relapse_event", "death_in_remission", "death_observed", "response_observed"} <= names


def test_log_likelihood_is_the_models_logp(weibull):
    loglik = weibull.loglik_function()
    data = weibull.simulate({"log_shape": 0.1, "log_scale_years": 0.2, "log_hr": -0.3}, random_seed=1)
    draws = {"log_shape": np.array([0.1, 0.3]), "log_scale_years": np.array([0.2, -0.1]),
             "log_hr": np.array([-0.3, 0.4])}
    got = loglik(draws, data)
    # closed form: sum over patients of event * log h(t) - H(t)
    for j in range(2):
        k, lam = np.exp(draws["log_shape"][j]), np.exp(draws["log_scale_years"][j])
        lp = draws["log_hr"][j] * weibull.design.arm
        t, ev = data["time_years"], data["event"]
        log_h = np.log(k / lam) + (k - 1) * np.log(t / lam) + lp
        assert got[j] == pytest.approx(np.sum(ev * log_h - (t / lam) ** k * np.exp(lp)), rel=1e-9)


# --------------------------------------------------------------------------- metrics


def test_ecdf_test_and_band_hold_their_level_and_have_power():
    rng = np.random.default_rng(0)
    assert ecdf_pvalue(rng.uniform(size=50)) > 0.05
    assert ecdf_pvalue(rng.beta(2, 2, size=200)) < 0.01  # PITs bunched in the middle (posterior too wide)
    assert ecdf_pvalue(np.clip(rng.uniform(size=50) + 0.25, 0, 1)) < 0.01  # shifted
    assert chi2_pvalue(rng.beta(0.5, 0.5, size=200)) < 0.01  # U shape (posterior too narrow)
    z, lo, hi = ecdf_band(40)
    inside = 0
    for _ in range(400):
        u = np.sort(rng.uniform(size=40))
        f = np.searchsorted(u, z, side="right") / 40
        inside += np.all((f >= lo) & (f <= hi))
    assert 0.92 <= inside / 400 <= 0.985  # simultaneous 95 %


# --------------------------------------------------------------------------- SBC studies


def _study(problem, tmp_path, name):
    out = run_study(problem, SBC_SIMS, tmp_path / name, settings=FAST, workers=0, progress=False)
    return summarize_study(load_results(out))


def test_sbc_of_the_weibull_model_passes(weibull, tmp_path):
    table, overview = _study(weibull, tmp_path, "good")
    assert overview["succeeded"] == SBC_SIMS and overview["failed"] == 0
    assert overview["passed"], table[["p_ecdf", "p_chi2", "verdict"]]
    assert {"log_hr", "hazard_ratio", "rfs_365d_difference", "log_likelihood"} <= set(table.index)
    assert (table["coverage_90"] > 0.75).all()
    # non-converged simulations are counted and visible, not dropped (few draws here: ESS < 400)
    assert overview["not_converged"] > 0 and (table["n"] == SBC_SIMS).all()
    # ... and listed one by one in the study's summary (calibration.json and the HTML page)
    from toolkit.calibration.report import write_calibration_report

    page = write_calibration_report(tmp_path / "good").read_text()
    listed = json.loads((tmp_path / "good" / "calibration.json").read_text())["unconverged_fits"]
    assert len(listed) == overview["not_converged"] and "Fits failing the convergence verdict" in page


def test_one_simulation_reports_diagnostics_and_ranks(weibull):
    # right after the Weibull study: same problem, so the compiled fit is reused (a cache hit)
    theta = weibull.draw_prior(1, random_seed=9)[0]
    record = run_simulation(weibull, 0, theta, settings=study_settings(dict(chains=2, tune=200, draws=200)))
    assert record["status"] == "ok", record["error"]
    assert np.isfinite(record["max_rhat"]) and record["divergences"] >= 0
    for q in record["quantities"].values():
        assert 0 <= q["rank"] <= q["n_kept"] and 0 < q["pit"] < 1
        if record["divergences"] == 0:  # nothing to locate
            assert np.isnan(q["divergent_z"])


def test_a_simulation_is_rerun_as_a_fit_would_be(weibull, monkeypatch):
    """With ``extensions``, a fit failing its verdict is rerun by the fits' own policy (after divergences a new
    run: doubled draws, next seed, target_accept halfway to 1) and the last run is the one ranked and recorded."""
    import nutpie

    from toolkit import fitting

    calls, verdicts, real_sample, real_diagnose = [], [(False, 2), (True, 0)], nutpie.sample, fitting.diagnose

    def sample(compiled, **kw):
        calls.append(kw)
        return real_sample(compiled, **kw)

    def diagnose(posterior, var_names=None):
        converged, divergences = verdicts.pop(0)
        return dataclasses.replace(real_diagnose(posterior, var_names=var_names), converged=converged,
                                   divergences=divergences)

    monkeypatch.setattr(nutpie, "sample", sample)
    monkeypatch.setattr(fitting, "diagnose", diagnose)
    theta = weibull.draw_prior(1, random_seed=9)[0]
    settings = study_settings(dict(chains=2, tune=150, draws=500, seed=5, target_accept=0.9))
    record = run_simulation(weibull, 3, theta, settings=settings, extensions=2)
    assert record["status"] == "ok", record["error"]
    # policy "continue": each run has room for the doublings still allowed (500 x 4, then 1000 x 2) and is judged
    # at its checkpoints; the divergences start a new run with a new seed at the higher target_accept
    assert [c["draws"] for c in calls] == [2000, 2000] and [c["target_accept"] for c in calls] == [0.9, 0.95]
    assert calls[1]["seed"] != calls[0]["seed"] and all(c["blocking"] is False for c in calls)
    assert record["runs"] == 2 and record["draws_per_chain"] == 1000 and record["converged"]
    assert not record["first_converged"]
    # the kept run (2 x 1000 draws), not the first (2 x 500), is thinned and ranked
    assert 2 * 1000 <= record["n_kept"] * record["thin"] < 2 * 1000 + 2 * record["thin"] and record["quantities"]
    # no reruns without extensions (the default), whatever the verdict
    calls.clear()
    verdicts[:] = [(False, 0)]
    record = run_simulation(weibull, 3, theta, settings=settings)
    assert len(calls) == 1 and record["runs"] == 1 and not record["converged"]


def test_sbc_flags_a_fit_prior_that_differs_from_the_generator(weibull, tmp_path):
    broken = shifted_prior(weibull, "log_scale_years", shift=2.0, scale=0.5)
    table, overview = _study(broken, tmp_path, "prior")
    assert not overview["passed"]
    assert "log_scale_years" in overview["failing"]


def test_sbc_flags_a_dropped_censoring_term(weibull, tmp_path):
    broken = DropCensoredDurability(weibull.design, variant="weibull")
    table, overview = _study(broken, tmp_path, "dropped")
    assert not overview["passed"]
    assert {"log_scale_years", "log_likelihood"} & set(overview["failing"])


# --------------------------------------------------------------------------- store, resume, failures


class _FailingDurability(DurabilityCalibration):
    def simulate(self, theta, *, random_seed):
        if float(theta["log_hr"]) > 0:
            raise RuntimeError("simulated failure")
        return super().simulate(theta, random_seed=random_seed)


def test_failed_simulation_is_recorded_and_study_resumes(weibull, tmp_path, monkeypatch):
    problem = _FailingDurability(weibull.design, variant="weibull")
    out = tmp_path / "study"
    settings = study_settings(dict(chains=2, tune=100, draws=100, seed=5))
    run_study(problem, 3, out, settings=settings, workers=0, progress=False)
    with pytest.raises(StudyError, match="--resume"):
        run_study(problem, 5, out, settings=settings, workers=0, progress=False)
    with pytest.raises(StudyError, match="differ"):
        run_study(problem, 5, out, settings=study_settings(dict(chains=2, tune=100, draws=100, seed=6)), workers=0,
                  resume=True, progress=False)
    from toolkit.models import durability

    with monkeypatch.context() as patch:  # the model changed since the study was stored: its ranks are another's
        patch.setattr(durability, "MODEL_VERSION", "99.0.0")
        with pytest.raises(StudyError, match="model_versions differ"):
            run_study(problem, 5, out, settings=settings, workers=0, resume=True, progress=False)
    assert json.loads((out / "study.json").read_text())["model_versions"] == {"durability": durability.MODEL_VERSION}
    run_study(problem, 5, out, settings=settings, workers=0, resume=True, progress=False)
    results = load_results(out)
    sims = results.groupby("sim").first()
    assert sorted(sims.index) == [0, 1, 2, 3, 4]
    failed = sims[sims["status"] == "error"]
    assert len(failed) >= 1 and failed["error"].str.contains("simulated failure").all()
    assert (sims.loc[sims["status"] == "ok", "n_kept"] > 0).all()
    _, overview = summarize_study(results)
    assert overview["failed"] == len(failed) and not overview["passed"]  # inconclusive, never a silent pass


# --------------------------------------------------------------------------- command line


def test_cli_refuses_models_without_a_generator_and_an_existing_study(tmp_path, capsys):
    from toolkit.cli import main

    assert main(["calibrate", "pkpd", "--simulations", "2", "--out", str(tmp_path / "c")]) == 2
    assert "unknown model 'pkpd'; valid: durability, cart, joint, mrd" in capsys.readouterr().out
    assert main(["calibrate", "mrd", "--variant", "cure", "--simulations", "2", "--out", str(tmp_path / "c")]) == 2
    assert "the MRD model has none" in capsys.readouterr().out
    assert not (tmp_path / "c").exists()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "study.json").write_text("{}")
    code = main(["calibrate", "durability", "--simulations", "2", "--out", str(tmp_path / "d"),
                 "--design", str(EXAMPLE), "--workers", "0"])
    assert code == 2
    assert "--resume" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--simulations", "0"], "--simulations must be at least 1"),
    (["--simulations", "2", "--workers", "-1"], "--workers must be 0"),
    (["--simulations", "2", "--design", "{tmp}/nope"], "is not a folder"),
    (["--simulations", "2", "--spec", "{models}/cart_primary.toml"], "is a spec for model 'cart'"),
    (["--simulations", "2", "--extend-sampling", "5"], "extend_sampling must be a whole number from 0 to 4"),
])
def test_cli_misuse_exits_2_before_any_work(tmp_path, capsys, argv, message):
    from toolkit.cli import main

    out = tmp_path / "study"
    models = Path(__file__).resolve().parent.parent / "models"
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{models}", str(models)) for a in argv]
    assert main(["calibrate", "durability", "--out", str(out), *argv]) == 2
    text = capsys.readouterr().out
    assert message in text and "Traceback" not in text
    assert not out.exists()  # nothing written


@pytest.mark.slow
def test_dask_local_cluster_runs_a_study_with_own_compile_dirs(weibull, tmp_path):
    out = run_study(weibull, 6, tmp_path / "dask", settings=study_settings(dict(chains=2, tune=200, draws=200)),
                    workers=2, progress=False)
    config = json.loads((out / "study.json").read_text())
    workers = config["runs"][-1]["workers"]
    assert len(workers) == 2
    assert len({w["base_compiledir"] for w in workers}) == 2
    assert all(w["threads"]["RAYON_NUM_THREADS"] == "1" for w in workers)
    sims = load_results(out).groupby("sim").first()
    assert (sims["status"] == "ok").all(), sims["error"]


def test_local_workers_compile_cold(tmp_path):
    """start_local_cluster empties the workers' cache directories first: a model compiled against a warm cache
    samples other chains than one compiled cold, so a resumed study (whose out/.worker-caches survive) would
    not reproduce a simulation to the digit."""
    from toolkit.calibration.runner import start_local_cluster

    stale = tmp_path / "caches" / "w0" / "numba" / "stale.nbi"
    stale.parent.mkdir(parents=True)
    stale.write_text("compiled by an earlier run")
    cluster, client = start_local_cluster(1, cache_root=tmp_path / "caches")
    try:
        assert not stale.exists()
    finally:
        client.close()
        cluster.close()


# --------------------------------------------------------------------------- CAR-T and joint generators

CART_PARAMETERS = {f"{p}[{k}]" for p in ("mu_kinetic", "omega_kinetic", "arm_effect")
                   for k in ("cmax", "tmax", "foldx", "alpha", "fb", "persistence")} | {"sigma_log"}


@pytest.fixture(scope="module")
def cart_problem():
    from toolkit.calibration.kinetics import CartCalibration, cart_design

    return CartCalibration(cart_design(load_cohort(EXAMPLE)))


@pytest.fixture(scope="module")
def joint_problem():
    from toolkit.calibration.kinetics import JointCalibration, joint_design

    return JointCalibration(design=joint_design(load_cohort(EXAMPLE)))


def test_cart_generator_censors_each_sample_at_its_own_lloq(cart_problem):
    inputs = cart_problem.inputs()
    assert "P0" not in json.dumps(cart_problem.describe()) and inputs.patient_ids[0] == "sim0000"
    thetas = cart_problem.draw_prior(20, random_seed=1)
    shares = []
    for j, theta in enumerate(thetas):
        data = cart_problem.simulate(theta, random_seed=j)
        censored = data["censored"] == 1
        assert (data["log_value"][~censored] >= inputs.log_lloq[~censored]).all()  # quantified: at or above it
        assert np.array_equal(data["log_value"][censored], inputs.log_lloq[censored])  # censored: holds its limit
        shares.append(censored.mean())
        updates = cart_problem.data_updates(data)
        assert np.array_equal(updates["censored_rows"], np.flatnonzero(censored))
    assert 0 < np.mean(shares) < 0.6  # some samples below the limit, as in real cohorts


def test_cart_prior_draws_are_joint_draws_of_the_model_prior(cart_problem):
    from toolkit.models.cart import natural_parameters_np

    thetas = cart_problem.draw_prior(400, random_seed=2)
    mu = np.array([t["mu_kinetic"] for t in thetas])
    prior = cart_problem.priors.mu()
    assert np.all(np.abs(mu.mean(axis=0) - prior[:, 0]) < 4 * prior[:, 1] / np.sqrt(len(thetas)))
    assert np.all(np.abs(mu.std(axis=0) / prior[:, 1] - 1) < 0.15)
    # patients and typical-patient deterministics come from the same draw as the population parameters
    t = thetas[0]
    typical = natural_parameters_np(t["mu_kinetic"])
    assert t["tmax_days"][0] == pytest.approx(typical["tmax"])
    assert t["theta_patient"].shape == (cart_problem.design.n_patients, 6)


def test_cart_log_likelihood_is_the_censored_normal_likelihood(cart_problem):
    from scipy.stats import norm

    from toolkit.calibration.kinetics import log_cart_curve_np

    thetas = cart_problem.draw_prior(2, random_seed=3)
    data = cart_problem.simulate(thetas[0], random_seed=4)
    draws = {k: np.stack([np.asarray(t[k]) for t in thetas]) for k in thetas[0]}
    got = cart_problem.loglik_function()(draws, data)
    inputs, censored = cart_problem.inputs(), data["censored"] == 1
    for j in range(2):
        mu = log_cart_curve_np(draws["theta_patient"][j][inputs.sample_patient], inputs.day)
        s = draws["sigma_log"][j]
        expected = (norm.logpdf(data["log_value"][~censored], mu[~censored], s).sum()
                    + norm.logcdf((inputs.log_lloq[censored] - mu[censored]) / s).sum())
        assert got[j] == pytest.approx(expected, rel=1e-8)


def test_cart_simulation_records_every_quantity(cart_problem):
    from toolkit.estimands import CART_ARM_QUANTITIES

    theta = cart_problem.draw_prior(1, random_seed=5)[0]
    record = run_simulation(cart_problem, 0, theta, settings=study_settings(dict(chains=2, tune=100, draws=100)))
    assert record["status"] == "ok", record["error"]
    estimands = {f"{q}_{a}" for q in CART_ARM_QUANTITIES for a in ("control", "experimental")}
    estimands |= {"cmax_gmr", "auc28_gmr", "tmax_difference_days", "persistence_half_life_ratio"}
    assert set(record["quantities"]) == CART_PARAMETERS | estimands | {"log_likelihood"}
    for q in record["quantities"].values():
        assert 0 <= q["rank"] <= q["n_kept"]
    assert isinstance(record["population_converged"], bool)
    oracle = cart_problem.oracle_pits(theta)  # fit-free PITs, stored beside the fit's
    assert record["quantities"]["tmax_days_experimental"]["oracle_pit"] == oracle["tmax_days_experimental"]
    assert np.isnan(record["quantities"]["log_likelihood"]["oracle_pit"])


def test_cart_oracle_ranks_are_uniform_over_the_prior_and_flag_unusual_draws(cart_problem):
    """The oracle that knows every patient's true values (``oracle_pits``, no fit) ranks each arm's typical value
    uniformly over prior draws; draws whose patients sit too close to their arm's typical value (the accident
    of docs/calibration.md "Why tmax_days_experimental failed", exaggerated) are flagged."""
    from toolkit.calibration.metrics import ecdf_pvalue

    thetas = cart_problem.draw_prior(400, random_seed=8)
    pits = [cart_problem.oracle_pits(t) for t in thetas]
    assert {"mu_kinetic[tmax]", "arm_effect[tmax]", "tmax_days_experimental", "cmax_gmr",
            "persistence_fraction_control"} <= set(pits[0])
    assert pits[0]["tmax_days_control"] == pits[0]["mu_kinetic[tmax]"]  # an increasing function of it
    watched = ("tmax_days_experimental", "mu_kinetic[cmax]", "arm_effect[persistence]")
    assert min(ecdf_pvalue([p[q] for p in pits]) for q in watched) > 0.001
    arm = cart_problem.inputs().arm[:, None]
    squeezed = []
    for t in thetas:  # every patient at 70% of their draw's distance from the typical value
        loc = t["mu_kinetic"] + arm * t["arm_effect"]
        squeezed.append(cart_problem.oracle_pits({**t, "theta_patient": loc + 0.7 * (t["theta_patient"] - loc)}))
    assert max(ecdf_pvalue([p[q] for p in squeezed]) for q in watched) < 0.001


def test_a_study_stored_before_the_oracle_gets_its_oracle_pits(cart_problem, tmp_path):
    """``StoredStudy.add_oracle_pits`` writes the oracle's PITs of the regenerated prior draws into stored
    simulations that lack them, leaving the fits' records as they were."""
    import pandas as pd

    from toolkit.calibration.api import StoredStudy
    from toolkit.calibration.runner import prior_draws, record_frame

    settings = study_settings(dict(chains=2, tune=100, draws=100, seed=9))
    theta = prior_draws(cart_problem, [3], seed=9)[3]
    quantities = {q: {"kind": "parameter", "prior_value": 0.0, "rank": 1, "n_kept": 9, "pit": 0.2, "post_mean": 0.0,
                      "post_sd": 1.0, "share_finite": 1.0, "divergent_z": np.nan}
                  for q in ("mu_kinetic[tmax]", "tmax_days_experimental", "log_likelihood")}
    record = {"sim": 3, "status": "ok", "error": "", "converged": True, "quantities": quantities}
    (tmp_path / "simulations").mkdir()
    record_frame(record).to_parquet(tmp_path / "simulations" / "sim_00003.parquet")  # as stored before
    study = StoredStudy(path=tmp_path, config={}, problem=cart_problem, settings=settings)
    assert study.add_oracle_pits() == 1 and study.add_oracle_pits() == 0  # once
    stored = pd.read_parquet(tmp_path / "simulations" / "sim_00003.parquet").set_index("quantity")
    oracle = cart_problem.oracle_pits(theta)
    assert stored.loc["tmax_days_experimental", "oracle_pit"] == oracle["tmax_days_experimental"]
    assert np.isnan(stored.loc["log_likelihood", "oracle_pit"]) and (stored["pit"] == 0.2).all()


def test_population_converged_judges_population_level_variables_only():
    """``population_converged``: R-hat and ESS of the variables not indexed by patient; a patient-level vector
    whose chains disagree does not make it False, a population-level one does. The summary counts it among the
    unconverged fits that record it."""
    import pandas as pd
    import xarray as xr

    from toolkit.calibration.runner import population_converged
    from toolkit.calibration.report import verdict_sentences
    from toolkit.inference import diagnose

    rng = np.random.default_rng(5)
    mixed = rng.normal(size=(4, 500))
    split = mixed + np.array([0.0, 0.0, 3.0, 3.0])[:, None]  # two chains elsewhere: R-hat far above 1.01
    def tree(mu, theta):
        return xr.DataTree.from_dict({"posterior": xr.Dataset(
            {"mu": (("chain", "draw"), mu), "theta_patient": (("chain", "draw", "patient"), theta[..., None])})})
    names = ["mu", "theta_patient"]
    def judged(dt):
        return population_converged(diagnose(dt, names), dt["posterior"].to_dataset(), names)
    assert judged(tree(mixed, split))
    assert not judged(tree(split, mixed))
    rows = [{"sim": s, "status": "ok", "error": "", "converged": s >= 3, "population_converged": s != 1,
             "quantity": "mu", "kind": "parameter", "pit": rng.uniform(), "prior_value": 0.0, "post_sd": 1.0}
            for s in range(40)]
    rows[0]["population_converged"] = None  # stored before it was recorded
    table, overview = summarize_study(pd.DataFrame(rows))
    assert (overview["not_converged"], overview["unconverged_population_recorded"],
            overview["unconverged_population_passed"]) == (3, 2, 1)
    assert any("passed R-hat and ESS in 1 of those that record it, 2; in those, what failed was patient-level" in s
               for s in verdict_sentences(table, overview, {}))


def test_the_summary_says_when_the_prior_draws_alone_fail():
    """A quantity whose fitted ranks fail while the oracle's (no fit) fail too is named in the summary as the
    draws' possible failure; one whose oracle passes, or that has none, is not."""
    import pandas as pd

    from toolkit.calibration.report import verdict_sentences

    rng = np.random.default_rng(4)
    middle = 0.5 + 0.25 * (rng.uniform(size=300) - 0.5)  # ranks piled in the middle: too wide
    rows = []
    for sim in range(300):
        base = {"sim": sim, "status": "ok", "error": "", "converged": True, "kind": "parameter", "prior_value": 0.0,
                "post_sd": 1.0}
        rows += [{**base, "quantity": "drawn", "pit": middle[sim], "oracle_pit": middle[sim]},
                 {**base, "quantity": "fitted", "pit": middle[sim], "oracle_pit": rng.uniform()},
                 {**base, "quantity": "plain", "pit": rng.uniform(), "oracle_pit": np.nan}]
    table, overview = summarize_study(pd.DataFrame(rows))
    assert set(overview["failing"]) == {"drawn", "fitted"}
    assert table.loc["drawn", "p_oracle"] < 0.001 < table.loc["fitted", "p_oracle"]
    assert np.isnan(table.loc["plain", "p_oracle"])
    said = [s for s in verdict_sentences(table, overview, {}) if "prior draws themselves" in s]
    assert len(said) == 1 and "drawn" in said[0] and "fitted" not in said[0]


def test_joint_relapse_times_follow_the_models_hazard(joint_problem):
    theta = joint_problem.draw_prior(1, random_seed=6)[0]
    c = joint_problem.design.censor_years
    events = []
    for seed in range(300):
        data = joint_problem.simulate(theta, random_seed=seed)
        assert (data["time_years"] <= c + 1e-12).all()
        assert np.array_equal(data["time_years"][data["event"] == 0], c[data["event"] == 0])
        events.append(data["event"])
    pi = 1 / (1 + np.exp(-(theta["logit_cure"] + theta["cure_log_or"] * joint_problem.design.relapse.arm)))
    expected = (1 - pi) * (1 - np.exp(-joint_problem.relapse_cumhaz(theta, c)))
    assert abs(np.mean(events) - expected.mean()) < 0.03
    # an event time solves H(T) = E: its cumulative hazard at T is below that at follow-up end
    data = joint_problem.simulate(theta, random_seed=1)
    hit = data["event"] == 1
    assert (joint_problem.relapse_cumhaz(theta, data["time_years"])[hit]
            <= joint_problem.relapse_cumhaz(theta, c)[hit] + 1e-9).all()


def test_joint_problem_swaps_the_containers_its_likelihood_reads(joint_problem):
    from toolkit.calibration.generators import _shared_variables

    theta = joint_problem.draw_prior(1, random_seed=7)[0]
    updates = joint_problem.data_updates(joint_problem.simulate(theta, random_seed=2))
    names = set(_shared_variables(joint_problem.fit_model().logp()))  # what the compiled logp reads
    assert {"log_level_observed", "censored_rows", "relapse_observed", "event"} <= names
    assert {"log_level_observed", "censored_rows", "relapse_observed", "event"} <= set(updates)


def test_the_kinetic_problem_of_a_joint_problem_fits_the_joint_fits_car_t_levels(joint_problem):
    """``JointCalibration.kinetic_problem`` (``sbc_rerun.py --kinetics-alone``; docs/calibration.md, "Why the
    joint fits diverge less") fits the CAR-T model to the very CAR-T levels the joint fit saw, under the joint
    problem's own kinetic priors (not the defaults)."""
    from toolkit.calibration.runner import simulated_data

    narrow = dataclasses.replace(joint_problem.cart_priors, omega_alpha=(0.5, 0.1))
    joint = dataclasses.replace(joint_problem, cart_priors=narrow)
    alone = joint.kinetic_problem()
    assert alone.model_name == "cart" and alone.priors == narrow != joint_problem.cart_priors
    assert alone.describe()["design"] == joint_problem.design.cart.summary()
    theta = joint.draw_prior(1, random_seed=8)[0]
    levels, cart = (simulated_data(p, 3, theta, seed=11) for p in (joint, alone))
    assert set(cart) == {"log_value", "censored"}
    assert all(np.array_equal(levels[k], cart[k]) for k in cart)


@pytest.fixture(scope="module")
def joint_mrd_problem():
    from toolkit.calibration.kinetics import JointCalibration, joint_design

    return JointCalibration(design=joint_design(load_cohort(EXAMPLE), mrd_submodel=True),
                            associations=("log_cmax", "cart_loss", "mrd_clearance"))


def test_joint_generator_with_the_mrd_submodel_is_the_models_likelihood(joint_mrd_problem, joint_problem):
    """With ``mrd_clearance`` the generator adds the MRD submodel's data (its own generator) and each responder's
    kill rate to the relapse hazard. Checked against the fitted model's log density: on data with every
    relapse censored, log p = CAR-T part + MRD part + sum_i log(pi_i + (1 - pi_i) exp(-H_i(c_i))), with the CAR-T
    part from the problem without MRD and the MRD part from the MRD model's own problem; so the hazard the
    generator draws from (``relapse_cumhaz``, clearance term included) is the one the model fits."""
    from toolkit.calibration.kinetics import MRD_PREFIX, _submodel_part
    from toolkit.models.joint import MRD_SUBMODEL

    assert MRD_PREFIX == f"{MRD_SUBMODEL}::"
    p, design = joint_mrd_problem, joint_mrd_problem.design
    theta = p.draw_prior(1, random_seed=5)[0]
    theta["log_hr_per_log_clearance"] = np.asarray(1.5)  # a strong association, so a dropped term shows
    data = p.simulate(theta, random_seed=3)
    assert {"mrd::log10_value", "mrd::censoring", "mrd::responded"} <= set(data)
    assert set(np.unique(data["mrd::censoring"])) >= {0, 1}  # quantified and negative assessments
    assert "P0" not in json.dumps(p.describe()) and design.mrd.inputs.patient_ids[0] == "sim0000"
    c = design.censor_years
    censored_all = {**data, "time_years": c.copy(), "event": np.zeros(c.size, int)}
    draws = {k: np.asarray(v)[None] for k, v in theta.items()}

    def relapse_part(problem):
        eta = float(theta["logit_cure"]) + float(theta["cure_log_or"]) * design.relapse.arm
        cure = 1 / (1 + np.exp(-eta))
        return float(np.sum(np.log(cure + (1 - cure) * np.exp(-problem.relapse_cumhaz(theta, c)))))

    whole = float(p.loglik_function()(draws, censored_all)[0])
    cart_part = float(joint_problem.loglik_function()(draws, censored_all)[0]) - relapse_part(joint_problem)
    mrd = p.mrd_problem()
    mrd_part = float(mrd.loglik_function()(_submodel_part(draws), _submodel_part(data))[0])
    np.testing.assert_allclose(whole, cart_part + mrd_part + relapse_part(p), rtol=1e-9)
    # the clearance term matters: without it the relapse part differs
    assert abs(relapse_part(p) - relapse_part(joint_problem)) > 0.1
    # the kill rate in the hazard is the MRD submodel's (assessed responders) or a population draw
    k = np.asarray(theta["log_clearance_responder"], float)
    assessed = design.mrd_index >= 0
    np.testing.assert_allclose(k[assessed], np.log(theta["mrd::patient_clearance_log10_per_day"])[
        design.mrd_index[assessed]])
    # every container the compiled fit reads is swapped, the MRD submodel's included
    from toolkit.calibration.generators import _shared_variables

    updates = p.data_updates(data)
    read = set(_shared_variables(p.fit_model().logp()))
    assert {"mrd::mrd_observed", "mrd::censoring", "mrd::response_observed", "mrd::centred_clearance"} <= read
    assert {"mrd::mrd_observed", "mrd::censoring", "mrd::response_observed", "relapse_observed"} <= set(updates)


def test_cli_calibrate_refuses_joint_specs_the_generator_does_not_cover(tmp_path, capsys):
    from toolkit.cli import main

    # MRD recurrence ('mrd') is an observed marker of the hazard, which the generator does not make
    lines = ['model = "joint"', "[options]", 'associations = ["log_cmax", "mrd"]']
    (tmp_path / "marker.toml").write_text("\n".join(lines) + "\n")
    out = tmp_path / "j"
    code = main(["calibrate", "joint", "--spec", str(tmp_path / "marker.toml"), "--simulations", "2",
                 "--out", str(out), "--design", str(EXAMPLE), "--workers", "0"])
    text = capsys.readouterr().out
    assert code == 2 and "observed marker" in text and "Traceback" not in text
    assert main(["calibrate", "cart", "--variant", "cure", "--simulations", "2", "--out", str(out),
                 "--design", str(EXAMPLE), "--workers", "0"]) == 2
    assert "the CAR-T model has none" in capsys.readouterr().out
    assert not out.exists()


@pytest.mark.slow
def test_joint_simulation_records_every_quantity(joint_problem):
    theta = joint_problem.draw_prior(1, random_seed=8)[0]
    record = run_simulation(joint_problem, 0, theta, settings=study_settings(dict(chains=2, tune=100, draws=100)))
    assert record["status"] == "ok", record["error"]
    expected = {"log_hr", "log_shape", "log_scale_years", "logit_cure", "cure_log_or", "log_hr_per_log_cmax",
                "log_hr_cart_loss", "hazard_ratio_total", "hazard_ratio_direct", "hazard_ratio_indirect",
                "proportion_mediated", "cure_fraction_difference", "cmax_gmr", "persistence_half_life_ratio",
                "log_likelihood"} | CART_PARAMETERS
    assert expected <= set(record["quantities"])


@pytest.mark.slow
def test_joint_simulation_with_the_mrd_pathway_records_its_quantities(joint_mrd_problem):
    theta = joint_mrd_problem.draw_prior(1, random_seed=8)[0]
    record = run_simulation(joint_mrd_problem, 0, theta,
                            settings=study_settings(dict(chains=2, tune=100, draws=100)))
    assert record["status"] == "ok", record["error"]
    assert {"log_hr_per_log_clearance", "hazard_ratio_indirect_cart", "hazard_ratio_indirect_mrd",
            "clearance_rate_ratio", "mrd::clearance_log_ratio", "mrd::mrd_residual_sd_log10[ngs]",
            "log_likelihood"} <= set(record["quantities"])
    assert not any(q.startswith("mrd::patient_") for q in record["quantities"])  # patient values not ranked


@pytest.mark.slow
@pytest.mark.parametrize("control", ["shifted_prior", "substituted_blq"])
def test_cart_sbc_flags_a_broken_fit(cart_problem, tmp_path, control):
    from toolkit.calibration.controls import SubstitutedBlqCart

    if control == "shifted_prior":
        broken = shifted_prior(cart_problem, "mu_persistence", shift=1.5, scale=0.5)
        expected = {"mu_kinetic[persistence]", "half_life_persistence_days_control"}
    else:
        broken = SubstitutedBlqCart(cart_problem.design)
        expected = None
    table, overview = _study(broken, tmp_path, control)
    assert not overview["passed"]
    if expected:
        assert expected & set(overview["failing"])


@pytest.mark.slow
def test_joint_sbc_flags_a_shifted_association_prior(joint_problem, tmp_path):
    broken = shifted_prior(joint_problem, "log_hr_cart_loss", shift=1.5, scale=0.5)
    table, overview = _study(broken, tmp_path, "joint_prior")
    assert not overview["passed"]
    assert "log_hr_cart_loss" in overview["failing"]


def test_report_includes_a_calibration_summary(tmp_path):
    import pandas as pd

    from toolkit.calibration.report import calibration_fragment
    from toolkit.calibration.runner import STUDY_FILE, SIM_DIR

    study = tmp_path / "study"
    (study / SIM_DIR).mkdir(parents=True)
    (study / STUDY_FILE).write_text(json.dumps({"problem": {"model": "cart", "variant": "v",
                                                            "design": {"source": "example"}},
                                                "settings": {"chains": 2}}))
    rng = np.random.default_rng(0)
    for sim in range(30):
        rows = [{"sim": sim, "status": "ok", "error": "", "converged": sim % 10 != 0, "quantity": q, "kind": "parameter",
                 "prior_value": rng.normal(), "rank": 0, "n_kept": 100, "pit": pit, "post_mean": 0.0, "post_sd": sd,
                 "share_finite": 1.0, "divergences": 0, "max_rhat": 1.0, "min_ess_bulk": 500.0, "thin": 1,
                 "seconds": 1.0, "sampling_seconds": 1.0, "compile_seconds": 0.0, "events": -1, "worker_pid": 1,
                 "min_ess_tail": 500.0}
                for q, pit, sd in (("good", rng.uniform(), 0.1 * rng.uniform() + 0.1),
                                   ("bad", 0.5 + 0.01 * rng.uniform(), 1.0))]
        pd.DataFrame(rows).to_parquet(study / SIM_DIR / f"sim_{sim:05d}.parquet")
    fragment = calibration_fragment(study)
    assert "<code>good</code>" in fragment.split("Calibrated")[1].split("</li>")[0]
    assert "<code>bad</code>" in fragment.split("Not calibrated")[1].split("</li>")[0]
    assert "3 of 30" in fragment and "class='bad'" in fragment  # 10% not converged, above the 2% tolerated
    with pytest.raises(StudyError, match="not a calibration study folder"):
        calibration_fragment(tmp_path)


def test_cart_start_values_reproduce_the_builders_starts(cart_problem):
    # for the design's own data they are the compiled model's starts (the builder's formula, not a copy of it)
    inputs = cart_problem.inputs()
    start = cart_problem.fit_model().initial_point()
    starts = cart_problem.start_values({"log_value": inputs.log_value, "censored": inputs.censored})
    for name, value in starts.items():
        assert np.allclose(value, start[name]), name
    # and they follow the simulated data
    data = cart_problem.simulate(cart_problem.draw_prior(1, random_seed=9)[0], random_seed=1)
    moved = cart_problem.start_values(data)
    assert not np.allclose(moved["theta_raw"], starts["theta_raw"])


@pytest.mark.parametrize("problem_name", ["cart_problem", "joint_problem"])
def test_swapped_data_fit_the_model_built_from_those_data(problem_name, request):
    """The compiled-once fit model, given a simulated cohort's containers, has the log density and start of the
    model the builder makes from that cohort, centring mask included (which entries are sampled centred
    follows the simulated data, as in a fit of real data; it used to stay the design's)."""
    from dataclasses import replace as dc_replace

    from toolkit.calibration.generators import _shared_variables
    from toolkit.models.cart import centering_mask

    problem = request.getfixturevalue(problem_name)
    thetas = problem.draw_prior(12, random_seed=11)
    design_mask = centering_mask(problem.inputs())
    data = next(d for d in (problem.simulate(t, random_seed=j) for j, t in enumerate(thetas))
                if (centering_mask(problem.simulated_inputs(d)) != design_mask).any())
    updates = problem.data_updates(data)
    fit = problem.fit_model()
    shared = _shared_variables(fit.logp())
    assert "centered" in shared
    for name, value in updates.items():
        if name in shared:
            shared[name].set_value(np.asarray(value, dtype=shared[name].type.dtype))
    if problem_name == "cart_problem":
        fresh_problem = dc_replace(problem, design=dc_replace(problem.design, inputs=problem.simulated_inputs(data)))
    else:
        cart = dc_replace(problem.design.cart, inputs=problem.simulated_inputs(data))
        relapse = dc_replace(problem.design.relapse)
        fresh_problem = dc_replace(problem, design=dc_replace(problem.design, cart=cart, relapse=relapse))
    fresh = fresh_problem.fit_model()
    fresh_shared = _shared_variables(fresh.logp())
    for name in ("relapse_observed", "event"):
        if name in updates and name in fresh_shared:
            fresh_shared[name].set_value(np.asarray(updates[name], dtype=fresh_shared[name].type.dtype))
    point = fresh.initial_point()
    starts = problem.start_values(data)
    for name, value in starts.items():
        assert np.allclose(value, point[name]), name
    rng = np.random.default_rng(3)
    fit_logp, fresh_logp = fit.compile_logp(), fresh.compile_logp()
    for _ in range(3):
        moved = {k: v + 0.05 * rng.standard_normal(np.shape(v)) for k, v in point.items()}
        assert np.isclose(fit_logp(moved), fresh_logp(moved), rtol=1e-10, atol=1e-8)
def test_open_study_guards_every_study_folder(tmp_path):
    """One check serves calibration, design and schedule studies: a held folder needs --resume, and a
    resume must match the stored entries it compares; the stored history is kept."""
    from toolkit.calibration.runner import StudyError, open_study, record_study_run, write_study_file

    path = tmp_path / "study.json"
    assert open_study(path, {"problem": 1}, resume=False, what="calibration", compare=("problem",)) == {}
    write_study_file(path, {"problem": 1, "settings": 2})
    record_study_run(path, {"wall_seconds": 3.0})
    with pytest.raises(StudyError, match="already holds a calibration study; pass --resume"):
        open_study(path, {"problem": 1}, resume=False, what="calibration", compare=("problem",))
    with pytest.raises(StudyError, match="stored study's problem differ"):
        open_study(path, {"problem": 9}, resume=True, what="calibration", compare=("problem",))
    kept = open_study(path, {"problem": 1, "settings": 5}, resume=True, what="calibration", compare=("problem",))
    assert kept == {"runs": [{"wall_seconds": 3.0}]}
    with pytest.raises(ValueError, match="already holds a design study"):  # the caller's error type
        open_study(tmp_path / "none.json", {}, resume=False, what="design", compare=(), error=ValueError, held=True)


def test_ecdf_curves_are_coloured_by_the_study_verdict():
    """A curve outside its own band is red only without a verdict; with one, the verdict decides the colour."""
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.colors import to_hex

    from toolkit.calibration.plots import VERDICT_COLOURS, plot_ecdf_differences

    rng = np.random.default_rng(0)
    pits = {"uniform": rng.random(200), "shifted": rng.random(200) ** 3}  # the second leaves its band
    results = pd.DataFrame([{"status": "ok", "quantity": q, "pit": u} for q, us in pits.items() for u in us])

    def colours(verdicts):
        fig = plot_ecdf_differences(results, verdicts=verdicts)
        out = [to_hex(ax.get_lines()[0].get_color()) for ax in fig.axes if ax.get_visible() and ax.get_lines()]
        plt.close(fig)
        return out

    assert colours(None) == [to_hex("C0"), to_hex("C3")]
    assert colours({"uniform": "suspect", "shifted": "calibrated"}) == [to_hex(VERDICT_COLOURS["suspect"]),
                                                                          to_hex(VERDICT_COLOURS["calibrated"])]
    assert colours({"uniform": "calibrated", "shifted": "fails"}) == [to_hex("C0"), to_hex("C3")]


def test_reruns_come_from_the_spec_and_are_part_of_what_a_resume_must_match():
    from toolkit.calibration.api import _extensions
    from toolkit.calibration.runner import settings_record
    from toolkit.specs import load_spec, shipped_spec

    assert _extensions(load_spec(shipped_spec("models/mrd_primary.toml"), model="mrd"), None) == 4
    assert _extensions(load_spec(shipped_spec("models/cart_primary.toml"), model="cart"), None) == 4
    assert _extensions(load_spec(shipped_spec("models/durability_primary.toml"), model="durability"), None) == 0
    assert _extensions(None, 1) == 1
    for bad in (-1, 5, True, 1.5):
        with pytest.raises(StudyError, match="extend_sampling must be a whole number from 0 to 4"):
            _extensions(None, bad)
    settings = study_settings(dict(chains=2, tune=100, draws=100))
    assert "extend_sampling" not in settings_record(settings)  # studies stored before reruns still resume
    assert settings_record(settings, 2)["extend_sampling"] == 2


def test_a_resumed_study_keeps_the_rerun_policy_it_was_stored_with(weibull, tmp_path, monkeypatch):
    """A study with reruns records its rerun policy, and each simulation its runs; a study stored before the
    policy was recorded doubled the draws at every rerun, and resuming it keeps doing so (its stored simulations
    and the new ones are one study)."""
    from toolkit.calibration import runner
    from toolkit.calibration.runner import rerun_policy_of, settings_record
    from toolkit.inference import RERUN_POLICY

    settings = study_settings(dict(chains=2, tune=100, draws=100, seed=5))
    assert settings_record(settings, 2)["rerun_policy"] == RERUN_POLICY == "continue"
    assert "rerun_policy" not in settings_record(settings, 2, "doubling")  # as a store made before it
    assert rerun_policy_of(settings_record(settings, 2, "doubling")) == "doubling"
    assert rerun_policy_of(settings_record(settings)) == RERUN_POLICY  # no reruns: nothing to keep
    policies, simulate = [], runner.run_simulation
    monkeypatch.setattr(runner, "run_simulation", lambda *a, **k: policies.append(k["policy"]) or simulate(*a, **k))
    out = tmp_path / "study"
    run_study(weibull, 1, out, settings=settings, workers=0, progress=False, extensions=2)
    stored = json.loads((out / "study.json").read_text())
    assert stored["settings"]["rerun_policy"] == "continue" and policies == ["continue"]
    history = json.loads(load_results(out)["run_history"].iloc[0])
    assert history[0]["draws"] == 100 and set(history[0]) == set(runner.RUN_HISTORY)
    del stored["settings"]["rerun_policy"]  # as a study stored before December 2026
    (out / "study.json").write_text(json.dumps(stored))
    run_study(weibull, 2, out, settings=settings, workers=0, progress=False, extensions=2, resume=True)
    assert policies[1:] == ["doubling"] and "rerun_policy" not in json.loads((out / "study.json").read_text())[
        "settings"]


def test_a_study_fit_that_fails_its_first_verdict_continues_its_chains(weibull, tmp_path, monkeypatch):
    """Policy "continue" on the study's own path (a compiled model with the simulation's data swapped in): the
    run judged at 250 draws is continued to 500, not restarted, and the kept 500 draws are ranked. The first
    verdict is made to fail; the second is the toolkit's own."""
    from toolkit import fitting

    verdicts, real = [], fitting.diagnose

    def fail_first(posterior, var_names=None):
        d = real(posterior, var_names=var_names)
        verdicts.append(posterior["posterior"].sizes["draw"])
        return dataclasses.replace(d, converged=False, problems=["made to fail"]) if len(verdicts) == 1 else d

    monkeypatch.setattr(fitting, "diagnose", fail_first)
    out = tmp_path / "study"
    run_study(weibull, 1, out, settings=study_settings(dict(chains=4, tune=200, draws=250, seed=5)), workers=0,
              progress=False, extensions=2)
    results = load_results(out)
    history = json.loads(results["run_history"].iloc[0])
    assert verdicts[:2] == [250, 500] and [h["continued"] for h in history[:2]] == [False, True]
    assert [h["draws"] for h in history[:2]] == [250, 500] and results["runs"].iloc[0] == len(history)
    assert results["draws_per_chain"].iloc[0] == history[-1]["draws"] >= 500  # the kept run is the continued one
    assert (results["n_kept"] <= 4 * history[-1]["draws"]).all() and results["pit"].between(0, 1).all()


def test_iterations_per_chain_counts_tuning_once_a_run():
    """A new run costs its tuning and draws, a continued one the draws its chains had made when last judged."""
    from toolkit.calibration.runner import iterations_per_chain

    restarted = json.dumps([{"draws": 1000, "divergences": 0}, {"draws": 2000, "divergences": 3},
                            {"draws": 4000, "divergences": 0}])
    assert iterations_per_chain(restarted, 1000, 4) == 3000 + 7000
    # the same verdicts continued: the second run continues the first; the third is new (the second diverged)
    assert iterations_per_chain(restarted, 1000, 4, as_if="continue") == 1000 + 2000 + 1000 + 4000
    continued = json.dumps([{"draws": 1000, "divergences": 0, "continued": False, "draws_made": 4200},
                            {"draws": 2000, "divergences": 0, "continued": True, "draws_made": 8400}])
    assert iterations_per_chain(continued, 1000, 4) == 1000 + 8400 / 4
    assert iterations_per_chain(continued, 1000, 4, as_if="what-failed") == 2000 + 3000  # each run tuned again
    assert iterations_per_chain("", 1000, 4) is None and iterations_per_chain(None, 1000, 4) is None


def test_a_reopened_study_regenerates_its_prior_draws_and_cohorts(tmp_path):
    """``reopen_study`` (the benchmarks that look again at a stored study without refitting it) rebuilds the
    stored problem, its prior draws (the stored truths) and each simulation's data as the study made them, and
    refuses a problem that is not the stored one; the scripts that rerun a stored simulation run on it."""
    import shutil
    import subprocess
    import sys

    from toolkit.calibration.api import build_problem, reopen_study
    from toolkit.calibration.runner import simulated_data

    design = tmp_path / "default_design"  # as `toolkit calibrate` keeps its design (the folder's name is recorded)
    shutil.copytree(EXAMPLE, design)
    weibull = build_problem("durability", design_cohort=design, variant="weibull")
    out = tmp_path / "study"
    run_study(weibull, 2, out, settings=study_settings(dict(chains=2, tune=100, draws=100, seed=5)), workers=0,
              progress=False)
    study = reopen_study(out, design=design)
    assert study.problem.describe() == weibull.describe() and study.seed == 5
    stored = load_results(out).set_index(["sim", "quantity"])["prior_value"]
    thetas = study.prior_draws([0, 1])
    for sim in (0, 1):
        scalars = [q for q in stored[sim].index if np.ndim(thetas[sim].get(q, [])) == 0]
        assert scalars and all(np.isclose(thetas[sim][q], stored[(sim, q)]) for q in scalars)
        data = study.data(sim, thetas[sim])
        assert all(np.array_equal(v, simulated_data(weibull, sim, thetas[sim], seed=5)[k]) for k, v in data.items())
    with pytest.raises(StudyError, match="another spec, variant or design"):
        reopen_study(out, "models/durability_primary.toml", design=design)
    with pytest.raises(StudyError, match="no design cohort"):
        reopen_study(out)
    # sbc_rerun.py once crashed after every rerun: no test ran it on a study
    shutil.copytree(design, out / "default_design")
    root = Path(__file__).resolve().parent.parent
    for argv, expected in ((["sbc_rerun.py", "--detail"], ("simulation 1", "rerun: ", "stored: ",
                                                           "iterations a chain", "population parameters")),
                           (["sbc_divergences.py"], ("simulation 1: ", "divergent transitions in 2 chains"))):
        done = subprocess.run([sys.executable, str(root / "benchmarks" / argv[0]), str(out), "1", *argv[1:]],
                              capture_output=True, text=True, timeout=600, cwd=root)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr[-2000:]
        assert all(text in done.stdout for text in expected), done.stdout


def test_recovery_coverage_is_checked_in_both_directions():
    """The slow recovery tests' check (toolkit.testing.coverage_problems) flags under-coverage, a coverage too
    high for the interval's level, and intervals that are the prior's; a calibrated study passes."""
    from toolkit.testing import coverage_problems

    calibrated = [True] * 36 + [False] * 4  # 36 of 40 for a 90 % interval
    assert coverage_problems(calibrated, sd_ratios=[0.6] * 40) == []
    assert "below 0.8" in coverage_problems([True] * 30 + [False] * 10)[0]
    assert "too high" in coverage_problems([True] * 60)[0]  # 60 of 60: P = 0.9^60 = 0.002
    assert coverage_problems([True] * 40) == []  # 40 of 40: P = 0.015, not rare enough alone
    inert = coverage_problems([True] * 40, sd_ratios=[0.99] * 40)  # likelihood dropped: the prior's intervals
    assert len(inert) == 1 and "the prior's" in inert[0]


def test_unconverged_by_prior_names_the_parameter_whose_tail_holds_the_failures():
    import pandas as pd

    from toolkit.calibration.metrics import unconverged_by_prior

    rng = np.random.default_rng(3)
    a, b = rng.lognormal(0, 0.5, 200), rng.normal(0, 1, 200)
    failed = a > np.quantile(a, 0.9)  # every failure in a's upper tail, none related to b
    rows = [{"sim": s, "status": "ok", "quantity": q, "kind": "parameter", "prior_value": v,
             "converged": not failed[s]} for s in range(200) for q, v in (("a", a[s]), ("b", b[s]))]
    table = unconverged_by_prior(pd.DataFrame(rows)).set_index("parameter")
    assert table.index[0] == "a" and table.loc["a", "p_fisher"] < 1e-6
    assert table.loc["a", "unconverged_upper"] == 20 and table.loc["b", "p_fisher"] > 0.01


def test_divergent_draws_are_located_and_listed_with_the_failed_fits():
    """Where a failed fit's divergent draws sit is stored per parameter (z against its posterior) and listed."""
    import types

    import pandas as pd
    import xarray as xr

    from toolkit.calibration.metrics import unconverged_fits
    from toolkit.calibration.runner import divergent_z

    rng = np.random.default_rng(4)
    sd_draws, vector = rng.normal(1.0, 0.2, (2, 500)), rng.normal(0.0, 1.0, (2, 500, 2))
    diverging = np.zeros((2, 500), bool)
    diverging[0, :5] = True
    sd_draws[diverging] = 1.0 + 2 * 0.2  # divergences two posterior SDs up the between-patient SD: a funnel's mouth
    post = xr.Dataset({"omega": (("chain", "draw"), sd_draws), "beta": (("chain", "draw", "k"), vector)})
    problem = types.SimpleNamespace(design=types.SimpleNamespace(covariates=()))
    where = divergent_z(problem, post, diverging, ["omega", "beta"])
    assert set(where) == {"omega", "beta[0]", "beta[1]"}
    assert 1.8 < where["omega"] < 2.2 and abs(where["beta[0]"]) < 1.5
    assert divergent_z(problem, post, np.zeros((2, 500), bool), ["omega"]) == {}  # no divergence, nothing stored
    rows = [{"sim": s, "status": "ok", "quantity": q, "converged": s != 1, "runs": 3, "divergences": 2 * (s == 1),
             "max_rhat": 1.004, "min_ess_bulk": 900.0, "min_ess_tail": 700.0,
             "divergent_z": where[q] if s == 1 else np.nan} for s in range(3) for q in where]
    table = unconverged_fits(pd.DataFrame(rows))
    assert table["sim"].tolist() == [1] and table.loc[0, "divergent_at"].startswith("omega +")
    # a study stored before divergent draws were located still lists its failed fits
    old = unconverged_fits(pd.DataFrame(rows).drop(columns="divergent_z"))
    assert old["sim"].tolist() == [1] and old.loc[0, "divergent_at"] == ""


def test_studies_kept_in_the_repository_load_and_belong_to_the_current_models():
    """The studies under docs/studies/ (continued across sessions with --resume) load, summarise, and were made
    by the model versions the code has now; a model change needs a new study folder, not a resume. A study of
    an older version stays as the record of that version only with a SUPERSEDED.md saying by what and why."""
    import importlib

    from toolkit.calibration.metrics import unconverged_fits

    root = Path(__file__).resolve().parent.parent / "docs" / "studies"
    studies = sorted(p.parent for p in root.glob("*/study.json"))
    assert studies, "docs/studies/ holds no study"
    for study in studies:
        config = json.loads((study / "study.json").read_text())
        assert (study / "default_design").is_dir() or config["problem"]["design"]["source"] != "default trial"
        results = load_results(study)
        table, overview = summarize_study(results)
        assert overview["succeeded"] + overview["failed"] == results["sim"].nunique() and len(table)
        assert len(unconverged_fits(results)) == overview["not_converged"]
        versions = config.get("model_versions")
        if versions is not None:  # a store made before versions were recorded gets them at its next run
            current = {m: importlib.import_module(f"toolkit.models.{m}").MODEL_VERSION for m in versions}
            assert versions == current or (study / "SUPERSEDED.md").is_file(), (
                f"{study.name}: made by {versions}, the code is at {current}: a new folder")
