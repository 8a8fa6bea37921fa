"""Tests for toolkit.inference: sampling, compile cache, diagnostics, run folders."""

import dataclasses
import importlib.util
import json
import math
import os
from datetime import datetime

import numpy as np
import pymc as pm
import pytest
import xarray as xr

from toolkit import inference
from toolkit.inference import (
    Diagnostics,
    Run,
    SamplerSettings,
    build_provenance,
    diagnose,
    element_rows,
    hash_folder,
    load_run,
    sample,
    save_run,
)

N_OBS = 50
TRUE_MEAN = 3.0


def _observations(shift: float = 0.0) -> np.ndarray:
    y = np.random.default_rng(20261125).normal(size=N_OBS)
    return (y - y.mean()) / y.std() + TRUE_MEAN + shift  # sample mean exactly 3 + shift


def _normal_model(y: np.ndarray, offset: float = 0.0) -> pm.Model:
    """y ~ Normal(mu + offset, 1), mu ~ Normal(0, 10); offset is pm.Data."""
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 10.0)
        off = pm.Data("offset", np.asarray(offset, dtype=float))
        pm.Normal("y", mu + off, 1.0, observed=y)
    return model


def _exact_posterior(y: np.ndarray, offset: float = 0.0) -> tuple[float, float]:
    precision = len(y) + 1 / 100
    return float(np.sum(y - offset) / precision), float(1 / np.sqrt(precision))


FAST = dict(chains=2, tune=200, draws=200, progressbar=False, random_seed=1234)


@pytest.fixture(scope="module")
def nutpie_fit():
    return sample(_normal_model(_observations()), SamplerSettings(backend="nutpie", **FAST))


# --------------------------------------------------------------------------- settings


def test_settings_defaults_and_as_dict():
    s = SamplerSettings()
    assert s.as_dict() == {
        "backend": "nutpie",
        "chains": 4,
        "tune": 1000,
        "draws": 1000,
        "target_accept": 0.9,
        "random_seed": 20261125,
        "progressbar": True,
        "cores": 2,
        "adaptation": "diag",
        "logp_callback": "numba",
    }
    json.dumps(s.as_dict(), allow_nan=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.chains = 2  # type: ignore[misc]


def test_unknown_backend_lists_valid_ones():
    with pytest.raises(ValueError, match="nutpie, pymc, numpyro"):
        SamplerSettings(backend="stan")


def test_adaptation_names_valid_values_and_needs_nutpie_for_low_rank():
    assert SamplerSettings(adaptation="low_rank").adaptation == "low_rank"
    with pytest.raises(ValueError, match="unknown adaptation 'dense'; valid: diag, low_rank"):
        SamplerSettings(adaptation="dense")
    with pytest.raises(ValueError, match="adaptation 'low_rank' needs backend 'nutpie'"):
        SamplerSettings(backend="pymc", adaptation="low_rank")


def test_spec_sampler_adaptation_reaches_settings(tmp_path):
    from toolkit.specs import load_spec, merged_sampler

    spec = tmp_path / "s.toml"
    spec.write_text('model = "cart"\n[sampler]\nadaptation = "low_rank"\n')
    merged = merged_sampler(load_spec(spec), {"adaptation": None})
    assert SamplerSettings(**merged).adaptation == "low_rank"


@pytest.mark.parametrize("adaptation", ["diag", "low_rank"])
def test_nutpie_gets_the_adaptation_asked_for(monkeypatch, adaptation):
    import nutpie

    seen = {}
    real = nutpie.sample

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(nutpie, "sample", spy)
    settings = SamplerSettings(backend="nutpie", adaptation=adaptation, **FAST)
    dt = sample(_normal_model(_observations()), settings, log_likelihood=False)
    assert seen["adaptation"] == adaptation
    mean, _ = _exact_posterior(_observations())
    assert float(dt.posterior["mu"].mean()) == pytest.approx(mean, abs=0.05)


# --------------------------------------------------------------------------- sampling


def _check_fit(dt: xr.DataTree, backend: str) -> None:
    for group in ("posterior", "sample_stats", "observed_data", "constant_data", "log_likelihood"):
        assert group in dt.children, group
    assert dict(dt.posterior.sizes) == {"chain": 2, "draw": 200}
    assert dt.log_likelihood["y"].shape == (2, 200, N_OBS)
    mean, sd = _exact_posterior(_observations())
    draws = dt.posterior["mu"].values
    assert draws.mean() == pytest.approx(mean, abs=0.05)  # MC s.e. ~0.01
    assert draws.std() == pytest.approx(sd, rel=0.25)
    assert dt.attrs["backend"] == backend
    for key in ("compile_seconds", "sampling_seconds", "log_likelihood_seconds", "total_seconds"):
        assert isinstance(dt.attrs[key], float) and dt.attrs[key] >= 0.0
    diag = diagnose(dt, ess_min=100)
    assert diag.divergences == 0
    assert diag.max_rhat < 1.05


def test_nutpie_recovers_known_mean(nutpie_fit):
    _check_fit(nutpie_fit, "nutpie")


def test_pymc_runs_chains_in_turn_once_jax_is_loaded(monkeypatch):
    """Forking worker processes after JAX (multithreaded) was imported may deadlock: cores=1 then, else as asked."""
    import sys

    seen = []

    def fake_sample(**kwargs):  # record the cores asked for; stop before any sampling
        seen.append(kwargs["cores"])
        raise StopIteration

    monkeypatch.setattr(pm, "sample", fake_sample)
    settings = SamplerSettings(backend="pymc", cores=2, **FAST)
    for loaded in (False, True):
        if loaded:
            monkeypatch.setitem(sys.modules, "jax", object())
        else:
            monkeypatch.delitem(sys.modules, "jax", raising=False)
        with pytest.raises(StopIteration):
            inference._sample_pymc(_normal_model(_observations()), settings)
    assert seen == [2, 1]


def test_pymc_recovers_known_mean():
    dt = sample(_normal_model(_observations()), SamplerSettings(backend="pymc", **FAST))
    _check_fit(dt, "pymc")


def test_log_likelihood_optional_and_constant_data_only_with_pm_data():
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 10.0)
        pm.Normal("y", mu, 1.0, observed=_observations())
    dt = sample(model, SamplerSettings(backend="pymc", **FAST), log_likelihood=False)
    assert "log_likelihood" not in dt.children
    assert "constant_data" not in dt.children
    assert "observed_data" in dt.children


def test_nutpie_cache_reuses_compiled_model(monkeypatch):
    import nutpie

    inference.clear_compile_cache()
    settings = SamplerSettings(backend="nutpie", **FAST)
    first = sample(_normal_model(_observations()), settings, log_likelihood=False)
    assert first.attrs["compile_cache_hit"] == 0
    assert inference.compile_cache_size() == 1

    def no_compile(*args, **kwargs):
        raise AssertionError("nutpie recompiled a cached model")

    monkeypatch.setattr(nutpie, "compile_pymc_model", no_compile)
    # A new but identical model object: same structure, shapes and data -> cache hit.
    again = sample(_normal_model(_observations()), settings, log_likelihood=False)
    assert again.attrs["compile_cache_hit"] == 1
    assert inference.compile_cache_size() == 1
    np.testing.assert_allclose(
        again.posterior["mu"].values.mean(), first.posterior["mu"].values.mean(), atol=1e-6
    )

    # Only pm.Data values changed: still a hit, and the new values are used.
    shifted = sample(_normal_model(_observations(), offset=1.0), settings, log_likelihood=False)
    assert shifted.attrs["compile_cache_hit"] == 1
    expected, _ = _exact_posterior(_observations(), offset=1.0)
    assert shifted.posterior["mu"].values.mean() == pytest.approx(expected, abs=0.05)
    assert float(shifted.constant_data["offset"]) == 1.0


def _hierarchical_model() -> pm.Model:
    """200 group means: slow enough (about a second for 4 x 600 draws) that a run is paused mid-way."""
    rng = np.random.default_rng(1)
    with pm.Model() as model:
        mu, tau = pm.Normal("mu", 0, 1), pm.HalfNormal("tau", 1)
        z = pm.Normal("z", 0, 1, shape=200)
        pm.Normal("y", mu + tau * z[np.repeat(np.arange(200), 20)], 1, observed=rng.normal(size=4000))
    return model


def test_a_continued_nutpie_run_is_a_fresh_run_of_that_many_draws():
    """What the rerun policy "continue" rests on (``toolkit.fitting.run_extending``): a run judged at 300 draws
    and continued to 600 gives exactly the draws and sampler statistics of a fresh run of 600 with that seed,
    whether it is paused mid-way (room for 20,000) or has drawn everything (the last checkpoint at its end)."""
    model = _hierarchical_model()
    settings = SamplerSettings(chains=4, tune=300, draws=600, random_seed=3, progressbar=False)
    fresh = sample(model, settings, log_likelihood=False)
    for max_draws in (20_000, 600):
        run = inference.open_nutpie_run(model, settings, max_draws, log_likelihood=False)
        first = run.first(300)
        run.resume()
        second = run.first(600)
        run.stop()
        assert first.posterior.sizes["draw"] == 300 and second.posterior.sizes["draw"] == 600
        np.testing.assert_array_equal(first.posterior["z"].values, fresh.posterior["z"].values[:, :300])
        np.testing.assert_array_equal(second.posterior["z"].values, fresh.posterior["z"].values)
        for stat in ("diverging", "n_steps", "step_size"):
            np.testing.assert_array_equal(second.sample_stats[stat].values, fresh.sample_stats[stat].values)
        assert "observed_data" in second.children and second.attrs["backend"] == "nutpie"
        assert 0 < first.attrs["sampling_seconds"] <= second.attrs["sampling_seconds"]
        assert 4 * 300 <= first.attrs["draws_made"] <= 4 * max_draws and second.attrs["draws_made"] >= 4 * 600
    run = inference.open_nutpie_run(model, settings, 20_000, log_likelihood=False)
    with pytest.raises(ValueError, match="a checkpoint must lie in 1..20000 draws"):
        run.first(20_001)
    assert run._finished()  # the mistake stopped the run: it does not go on to 20,000 draws behind the error
    # as sample() returns it: the pointwise log-likelihood of the checkpoint's draws
    run = inference.open_nutpie_run(_normal_model(_observations()), SamplerSettings(**FAST), 4000)
    judged = run.first(200)
    run.stop()
    assert judged["log_likelihood"]["y"].shape[:2] == (2, 200) and judged.attrs["log_likelihood_seconds"] >= 0


def test_python_logp_callback_fits_and_swaps_data_without_recompiling(monkeypatch):
    """The disk-cacheable callback (PyTensor's numba function called from Python) gives the exact
    posterior, never goes through nutpie's C-callback compiler, and swaps pm.Data on a cache hit."""
    import nutpie

    def no_cfunc(*args, **kwargs):
        raise AssertionError("nutpie's numba C callback was built")

    monkeypatch.setattr(nutpie, "compile_pymc_model", no_cfunc)
    inference.clear_compile_cache()
    settings = SamplerSettings(backend="nutpie", logp_callback="python", **FAST)
    dt = sample(_normal_model(_observations()), settings)
    _check_fit(dt, "nutpie")
    shifted = sample(_normal_model(_observations(), offset=1.0), settings, log_likelihood=False)
    assert shifted.attrs["compile_cache_hit"] == 1
    expected, _ = _exact_posterior(_observations(), offset=1.0)
    assert shifted.posterior["mu"].values.mean() == pytest.approx(expected, abs=0.05)
    # the numba-callback and python-callback compilations are different cache entries
    assert inference._nutpie_compiled(_normal_model(_observations()), "python")[1]
    with pytest.raises(AssertionError, match="C callback"):
        inference._nutpie_compiled(_normal_model(_observations()), "numba")


def test_logp_callback_values_and_backend():
    with pytest.raises(ValueError, match="unknown logp_callback 'c'; valid: numba, python"):
        SamplerSettings(logp_callback="c")
    with pytest.raises(ValueError, match="logp_callback 'python' is a nutpie setting"):
        SamplerSettings(backend="pymc", logp_callback="python")


def test_nutpie_cache_misses_when_observed_values_change(monkeypatch):
    inference.clear_compile_cache()
    settings = SamplerSettings(backend="nutpie", **FAST)
    calls = []
    real_compile = inference._nutpie_compiled

    def counting(model, *args):
        compiled, hit = real_compile(model, *args)
        calls.append(hit)
        return compiled, hit

    monkeypatch.setattr(inference, "_nutpie_compiled", counting)
    # Same shapes, different observed numbers: constants are baked into the
    # compiled logp, so reusing it would silently fit the old data.
    key_a = inference._model_fingerprint(_normal_model(_observations()))
    key_b = inference._model_fingerprint(_normal_model(_observations(shift=0.5)))
    assert key_a != key_b
    dt = sample(_normal_model(_observations(shift=0.5)), settings, log_likelihood=False)
    assert calls == [False]
    assert dt.posterior["mu"].values.mean() == pytest.approx(3.5, abs=0.05)


def test_numpyro_without_jax_raises_clear_error(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name, *args, **kwargs):
        return None if name in ("jax", "numpyro") else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(inference.importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(RuntimeError, match="pip install numpyro jax"):
        sample(_normal_model(_observations()), SamplerSettings(backend="numpyro", **FAST))


def test_numpyro_samples_censored_model_without_stuck_chains():
    pytest.importorskip("jax")
    pytest.importorskip("numpyro")
    rng = np.random.default_rng(3)
    t_true = rng.weibull(1.5, 60) * 10
    censor = rng.uniform(2, 15, 60)
    t = np.minimum(t_true, censor)
    upper = np.where(t_true <= censor, np.inf, t)
    with pm.Model() as model:
        k = pm.LogNormal("k", 0.0, 0.5)
        lam = pm.LogNormal("lam", np.log(10), 0.5)
        pm.Censored("t", pm.Weibull.dist(alpha=k, beta=lam), lower=None, upper=upper, observed=t)
    settings = SamplerSettings(backend="numpyro", **{**FAST, "chains": 4})
    dt = sample(model, settings)
    assert int(dt.sample_stats["diverging"].sum()) == 0
    chain_means = dt.posterior["k"].mean("draw").values
    assert np.ptp(chain_means) < 0.1  # no chain stuck away from the others
    assert diagnose(dt, ess_min=100).max_rhat < 1.05


# --------------------------------------------------------------------------- diagnostics


def _fake_tree(posterior: dict, diverging=None, energy=None) -> xr.DataTree:
    post = xr.Dataset(
        {
            name: (("chain", "draw", *[f"{name}_dim_{i}" for i in range(v.ndim - 2)]), v)
            for name, v in posterior.items()
        }
    )
    groups = {"posterior": post}
    stats = {}
    if diverging is not None:
        stats["diverging"] = (("chain", "draw"), diverging)
    if energy is not None:
        stats["energy"] = (("chain", "draw"), energy)
    if stats:
        groups["sample_stats"] = xr.Dataset(stats)
    return xr.DataTree.from_dict(groups)


def _good_tree(chains=4, draws=1000, seed=0) -> xr.DataTree:
    rng = np.random.default_rng(seed)
    return _fake_tree(
        {"a": rng.normal(size=(chains, draws)), "b": rng.normal(size=(chains, draws, 3))},
        diverging=np.zeros((chains, draws), dtype=bool),
        energy=rng.normal(size=(chains, draws)),
    )


def test_diagnose_passes_good_fit():
    diag = diagnose(_good_tree())
    assert diag.converged, diag.problems
    assert diag.problems == []
    assert diag.max_rhat < 1.01
    assert diag.min_ess_bulk > 400 and diag.min_ess_tail > 400
    assert diag.divergences == 0
    assert diag.min_bfmi > 0.3


def test_diagnose_flags_chains_at_different_means():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 1000)) + np.array([[0.0], [3.0]])
    dt = _fake_tree(
        {"a": a, "ok": rng.normal(size=(2, 1000))},
        diverging=np.zeros((2, 1000), dtype=bool),
        energy=rng.normal(size=(2, 1000)),
    )
    diag = diagnose(dt)
    assert not diag.converged
    assert diag.max_rhat > 1.5
    assert any("R-hat" in p for p in diag.problems)
    # Restricting to the healthy variable passes.
    assert diagnose(dt, var_names=["ok"]).converged


def test_diagnose_counts_divergences():
    dt = _good_tree()
    div = np.zeros((4, 1000), dtype=bool)
    div[0, [3, 50, 700]] = True
    div[2, [1, 2, 3, 4]] = True
    dt["sample_stats"] = xr.DataTree(
        dt["sample_stats"].to_dataset().assign(diverging=(("chain", "draw"), div))
    )
    diag = diagnose(dt)
    assert diag.divergences == 7
    assert not diag.converged
    assert any("7 divergent" in p for p in diag.problems)
    # what the rerun policy reads (toolkit.fitting.run_extending): these draws mix, only divergences failed
    assert diag.divergences_only and not diagnose(_good_tree()).divergences_only
    rng = np.random.default_rng(1)  # the same divergences in a fit whose chains also disagree
    dt["posterior"] = xr.DataTree(dt["posterior"].to_dataset().assign(
        a=(("chain", "draw"), rng.normal(size=(4, 1000)) + np.array([[0.0], [3.0], [0.0], [0.0]]))))
    both = diagnose(dt)
    assert both.divergences == 7 and not both.divergences_only


def test_diagnose_flags_low_bfmi():
    dt = _good_tree()
    walk = np.cumsum(np.random.default_rng(5).normal(size=(4, 1000)), axis=1)
    dt["sample_stats"] = xr.DataTree(
        dt["sample_stats"].to_dataset().assign(energy=(("chain", "draw"), walk))
    )
    diag = diagnose(dt)
    assert diag.min_bfmi < 0.3
    assert any("E-BFMI" in p for p in diag.problems)


def test_diagnose_single_chain():
    diag = diagnose(_good_tree(chains=1))
    assert math.isnan(diag.max_rhat)
    assert not diag.converged
    assert any("R-hat needs ≥ 2 chains" in p for p in diag.problems)
    d = diag.as_dict()
    assert d["max_rhat"] is None
    json.dumps(d, allow_nan=False)


def test_diagnose_missing_sample_stats_is_a_problem():
    rng = np.random.default_rng(2)
    diag = diagnose(_fake_tree({"a": rng.normal(size=(4, 1000))}))
    assert not diag.converged
    assert any("diverging" in p for p in diag.problems)
    assert any("energy" in p for p in diag.problems)


def test_diagnose_ignores_constant_elements():
    dt = _good_tree()
    const = xr.DataArray(np.full((4, 1000), 2.0), dims=("chain", "draw"))
    dt["posterior"] = xr.DataTree(dt["posterior"].to_dataset().assign(c=const))
    assert diagnose(dt).converged


def test_diagnose_statistics_are_arviz_per_variable_ones():
    """One stacked call per statistic gives ArviZ's per-variable R-hat and ESS (vector variables, a constant
    element left out); a stuck element's R-hat is flagged as before."""
    import arviz_stats as azs

    rng = np.random.default_rng(7)
    walk = np.cumsum(rng.normal(size=(4, 500, 3)), axis=1) * 0.05 + rng.normal(size=(4, 500, 3))
    walk[..., 1] = 5.0  # constant element
    dt = _fake_tree({"a": rng.normal(size=(4, 500)), "v": walk, "b": rng.standard_t(3, size=(4, 500))},
                    diverging=np.zeros((4, 500), dtype=bool), energy=rng.normal(size=(4, 500)))
    post = dt["posterior"].to_dataset()
    keep = {"a": [0], "v": [0, 2], "b": [0]}

    def ref(ds):
        return np.concatenate([np.ravel(ds[n].values)[keep[n]] for n in ("a", "v", "b")])

    diag = diagnose(dt)
    with np.errstate(invalid="ignore", divide="ignore"):  # the constant element's statistics are NaN
        assert diag.max_rhat == np.max(ref(azs.rhat(post, method="rank")))
        assert diag.min_ess_bulk == np.min(ref(azs.ess(post, method="bulk")))
        assert diag.min_ess_tail == np.min(ref(azs.ess(post, method="tail")))
    assert diag.max_rhat > 1.01 and not diag.converged  # the random walk's chains disagree
    # the per-element rows the verdict keeps are ArviZ's per variable, the constant element left out
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = [(n, j, float(np.ravel(azs.rhat(post, method="rank")[n].values)[j]),
                     float(np.ravel(azs.ess(post, method="bulk")[n].values)[j]),
                     float(np.ravel(azs.ess(post, method="tail")[n].values)[j]))
                    for n in ("a", "v", "b") for j in keep[n]]
    assert diag.elements == expected
    assert element_rows(post) == expected  # the scripts' rows are the verdict's
    assert diag.elements_pass(["a"]) and not diag.elements_pass(["a", "v"])  # v's walk fails R-hat
    assert diag.elements_pass(["v"], rhat_max=np.inf, ess_min=0.0)
    assert "elements" not in diag.as_dict()


def test_element_diagnostics_are_arviz_ones_per_element():
    """The per-element statistics the diagnostic scripts print are ArviZ's, element by element, and R-hat
    is None with one chain (never a one-chain number)."""
    import arviz_stats as azs

    from toolkit.inference import element_diagnostics

    rng = np.random.default_rng(11)
    draws = np.cumsum(rng.normal(size=(4, 400, 3)), axis=1) * 0.1 + rng.normal(size=(4, 400, 3))
    ds = xr.Dataset({"x": (("chain", "draw", "e"), draws)})
    bulk, tail, rhat = element_diagnostics(draws)
    np.testing.assert_array_equal(bulk, azs.ess(ds, method="bulk")["x"].values)
    np.testing.assert_array_equal(tail, azs.ess(ds, method="tail")["x"].values)
    np.testing.assert_array_equal(rhat, azs.rhat(ds, method="rank")["x"].values)
    assert element_diagnostics(draws[:1])[2] is None


def test_adapted_scales_are_posterior_sds():
    """nutpie's stored mass-matrix diagonal is a standard deviation: Normal(0, 0.01) and Normal(0, 100)
    coordinates get about 0.01 and 100 (a variance would be 1e-4 and 1e4), so the diagnosis scripts divide
    draws by it, not by its square root. Fails if a nutpie release changes what it stores."""
    import nutpie

    from toolkit.inference import adapted_scales

    with pm.Model() as model:
        pm.Normal("x", 0, 0.01, shape=3)
        pm.Normal("y", 0, 100)
    dt = nutpie.sample(nutpie.compile_pymc_model(model), draws=200, tune=600, chains=2, cores=1, seed=3,
                       progress_bar=False, store_mass_matrix=True)
    scale = adapted_scales(dt)
    assert scale.shape == (2, 4)
    np.testing.assert_allclose(scale, np.broadcast_to([0.01, 0.01, 0.01, 100.0], (2, 4)), rtol=0.35)


def test_stiffness_is_the_hessian_in_the_samplers_coordinates():
    """For a Gaussian with SDs (1, 0.1), scales that fit give lambda = 1; leaving the second coordinate at scale 1
    gives lambda = 100 along it (the direction a step size must answer)."""
    from toolkit.inference import stiffness

    with pm.Model() as model:
        pm.Normal("a", 0.0, 1.0)
        pm.Normal("b", 0.0, 0.1)
    u = np.random.default_rng(1).normal(size=(2, 50, 2)) * [1.0, 0.1]
    lam, _ = stiffness(model, u, np.tile([1.0, 0.1], (2, 1)), 4, seed=2)
    np.testing.assert_allclose(lam, 1.0, rtol=1e-4)
    lam, vec = stiffness(model, u, np.ones((2, 2)), 4, seed=2)
    np.testing.assert_allclose(lam, 100.0, rtol=1e-4)
    np.testing.assert_allclose(np.abs(vec[:, 1]), 1.0, rtol=1e-6)


def test_diagnostics_as_dict_is_plain_json():
    d = diagnose(_good_tree()).as_dict()
    for key in ("max_rhat", "min_ess_bulk", "min_ess_tail", "divergences", "converged",
                "min_bfmi", "problems"):
        assert key in d
    assert type(d["max_rhat"]) is float
    assert type(d["divergences"]) is int
    assert type(d["converged"]) is bool
    assert isinstance(d["problems"], list)
    json.dumps(d, allow_nan=False)
    assert isinstance(Diagnostics(**{**d, "max_rhat": 1.0}), Diagnostics)


# --------------------------------------------------------------------------- run folders


def _provenance(**timings):
    return build_provenance(
        model_name="normal",
        model_version="0.1",
        settings=SamplerSettings(**FAST),
        data_hash="abc",
        spec=None,
        priors={"mu": "Normal(0, 10)"},
        timings={"sampling_seconds": 1.5, **timings},
    )


def _strict_load(path):
    def reject(token):
        raise ValueError(f"non-strict JSON token {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def test_save_load_round_trip(tmp_path):
    dt = _good_tree(draws=100)
    summary = {"mu": {"mean": 1.0, "hdi_90": [0.5, 1.5]}, "bad": float("nan"),
               "inf": np.float64(np.inf), "n": np.int64(3)}
    out = save_run(tmp_path / "runs" / "r1", dt, summary, _provenance(nan=math.nan))
    assert out == (tmp_path / "runs" / "r1").absolute()
    assert sorted(p.name for p in out.iterdir()) == sorted([*inference.RUN_FILES, inference.MANIFEST])
    run = load_run(out)
    assert isinstance(run, Run)
    assert run.path == out
    xr.testing.assert_equal(run.posterior["posterior"].to_dataset(), dt["posterior"].to_dataset())
    assert run.summary == {"mu": {"mean": 1.0, "hdi_90": [0.5, 1.5]}, "bad": None,
                           "inf": None, "n": 3}
    assert run.provenance["timings"] == {"sampling_seconds": 1.5, "nan": None}
    for name in ("summary.json", "provenance.json"):
        text = (out / name).read_text()
        assert "NaN" not in text and "Infinity" not in text
        _strict_load(out / name)
    # Only the run folder is left next to it: no temp or backup folders.
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["r1"]


def test_save_run_of_sampled_posterior(tmp_path, nutpie_fit):
    diag = diagnose(nutpie_fit, ess_min=100)
    out = save_run(tmp_path / "fit", nutpie_fit, {"diagnostics": diag.as_dict()}, _provenance())
    run = load_run(out)
    np.testing.assert_array_equal(run.posterior.posterior["mu"].values,
                                  nutpie_fit.posterior["mu"].values)
    assert {"posterior", "sample_stats", "log_likelihood"} <= set(run.posterior.children)
    assert run.posterior.attrs["backend"] == "nutpie"
    assert run.summary["diagnostics"]["divergences"] == 0


def test_save_run_overwrites_previous_run(tmp_path):
    save_run(tmp_path / "r", _good_tree(draws=50, seed=1), {"v": 1}, _provenance())
    with pytest.raises(inference.RunFolderError, match="already exists; add --overwrite"):
        save_run(tmp_path / "r", _good_tree(draws=60, seed=2), {"v": 2}, _provenance())
    assert load_run(tmp_path / "r").summary == {"v": 1}
    save_run(tmp_path / "r", _good_tree(draws=60, seed=2), {"v": 2}, _provenance(), overwrite=True)
    run = load_run(tmp_path / "r")
    assert run.summary == {"v": 2}
    assert run.posterior.posterior.sizes["draw"] == 60
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


def test_failed_save_leaves_previous_run_intact(tmp_path, monkeypatch):
    run_dir = tmp_path / "r"
    save_run(run_dir, _good_tree(draws=50), {"v": 1}, _provenance())
    before = hash_folder(run_dir)

    real_write = inference._write_json

    def fail_on_provenance(path, obj):
        if path.name == "provenance.json":
            raise OSError("disk full (simulated)")
        real_write(path, obj)

    monkeypatch.setattr(inference, "_write_json", fail_on_provenance)
    with pytest.raises(OSError, match="simulated"):
        save_run(run_dir, _good_tree(draws=80, seed=9), {"v": 2}, _provenance(), overwrite=True)
    assert hash_folder(run_dir) == before
    assert load_run(run_dir).summary == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # temp folder cleaned up


def test_failed_swap_restores_previous_run(tmp_path, monkeypatch):
    run_dir = tmp_path / "r"
    save_run(run_dir, _good_tree(draws=50), {"v": 1}, _provenance())
    before = hash_folder(run_dir)
    real_rename = os.rename

    def fail_moving_new_into_place(src, dst):
        if ".tmp-" in os.fspath(src):
            raise OSError("rename failed (simulated)")
        real_rename(src, dst)

    monkeypatch.setattr(inference.os, "rename", fail_moving_new_into_place)
    with pytest.raises(OSError, match="simulated"):
        save_run(run_dir, _good_tree(draws=80, seed=9), {"v": 2}, _provenance(), overwrite=True)
    monkeypatch.undo()
    assert hash_folder(run_dir) == before
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


def test_load_run_names_missing_file(tmp_path):
    run_dir = save_run(tmp_path / "r", _good_tree(draws=50), {"v": 1}, _provenance())
    (run_dir / "summary.json").unlink()
    with pytest.raises(inference.RunFolderError, match="summary.json is missing"):
        load_run(run_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(tmp_path / "nope")


# --------------------------------------------------------------------------- provenance


def test_build_provenance_records_versions_and_utc_time():
    prov = _provenance(nan=math.nan)
    assert prov["model_name"] == "normal" and prov["model_version"] == "0.1"
    assert prov["settings"]["chains"] == 2
    assert prov["data_hash"] == "abc"
    assert prov["spec"] is None
    assert prov["timings"]["nan"] is None
    for pkg in ("python", "pymc", "pytensor", "arviz", "nutpie", "numpy", "pandas", "toolkit"):
        assert prov["versions"][pkg], pkg
    created = datetime.fromisoformat(prov["created_utc"])
    assert created.utcoffset().total_seconds() == 0
    json.dumps(prov, allow_nan=False)


def test_hash_folder(tmp_path):
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "x.csv").write_bytes(b"1,2\n")
    (a / "sub" / "y.csv").write_bytes(b"3,4\n")
    b = tmp_path / "b"
    (b / "sub").mkdir(parents=True)
    (b / "sub" / "y.csv").write_bytes(b"3,4\n")  # created in the other order
    (b / "x.csv").write_bytes(b"1,2\n")
    h = hash_folder(a)
    assert len(h) == 64 and h == hash_folder(b)

    (b / "link.csv").symlink_to(b / "x.csv")  # symlinks are not regular files
    assert hash_folder(b) == h
    (b / "x.csv").write_bytes(b"1,3\n")
    assert hash_folder(b) != h
    (b / "x.csv").write_bytes(b"1,2\n")
    (b / "x.csv").rename(b / "z.csv")
    assert hash_folder(b) != h
    with pytest.raises(NotADirectoryError):
        hash_folder(a / "x.csv")
