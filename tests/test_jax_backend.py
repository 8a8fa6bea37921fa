"""The JAX backend (``backend="numpyro"``): jittered per-chain starts, a finite gradient where JAX's own
reverse mode gives NaN, vectorized chains, the toolkit's diagnostics on its output, and a CLI fit.

Skipped when jax or numpyro is not installed (the ``jax`` extra; the ``test`` extra includes it).
"""

import json
from pathlib import Path

import numpy as np
import pymc as pm
import pytest

pytest.importorskip("jax")
pytest.importorskip("numpyro")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from toolkit import inference  # noqa: E402
from toolkit.cli import main  # noqa: E402
from toolkit.inference import SamplerSettings, diagnose, load_run, sample  # noqa: E402
from toolkit.testing import EXAMPLE  # noqa: E402

FAST = dict(chains=4, tune=200, draws=200, progressbar=False, random_seed=1234)


def _censored_weibull_model() -> pm.Model:
    """Right-censored Weibull times (60 patients): a small model with a censoring likelihood term."""
    rng = np.random.default_rng(3)
    t_true = rng.weibull(1.5, 60) * 10
    censor = rng.uniform(2, 15, 60)
    t = np.minimum(t_true, censor)
    with pm.Model() as model:
        k = pm.LogNormal("k", 0.0, 0.5)
        lam = pm.LogNormal("lam", np.log(10), 0.5)
        pm.Censored("t", pm.Weibull.dist(alpha=k, beta=lam), lower=None,
                    upper=np.where(t_true <= censor, np.inf, t), observed=t)
    return model


def _below_limit_model() -> pm.Model:
    """Two samples at a detection limit of 0 (left-censored Normal): the log-CDF term of the kinetic models."""
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 100.0)
        sigma = pm.HalfNormal("sigma", 1.0)
        pm.Censored("y", pm.Normal.dist(mu, sigma), lower=np.zeros(2), upper=None, observed=np.array([0.0, 1.0]))
    return model


def starts_differ(points: list[np.ndarray]) -> bool:
    """True when no two chains share a start in any variable (``points``: one array per variable, chains first)."""
    for values in points:
        flat = np.asarray(values).reshape(len(values), -1)
        if any(np.array_equal(flat[i], flat[j]) for i in range(len(flat)) for j in range(i)):
            return False
    return True


@pytest.fixture(scope="module")
def numpyro_fit():
    """One 4-chain numpyro fit of the censored Weibull model, with the starts the sampler was given."""
    captured = []
    real = inference._numpyro_initial_points

    def spy(*args, **kwargs):
        captured.append(real(*args, **kwargs))
        return captured[-1]

    mp = pytest.MonkeyPatch()
    mp.setattr(inference, "_numpyro_initial_points", spy)
    try:
        model = _censored_weibull_model()
        dt = sample(model, SamplerSettings(backend="numpyro", **FAST))
    finally:
        mp.undo()
    return model, dt, captured[0]


def test_chains_start_from_their_own_jittered_points(numpyro_fit):
    model, dt, starts = numpyro_fit
    assert starts_differ(starts)
    # PyMC's jitter: U(-1, 1) around the initial point on the unconstrained (log) scale
    origin = model.initial_point()
    for var, values in zip(model.value_vars, starts, strict=True):
        offsets = np.asarray(values) - origin[var.name]
        assert np.all(np.abs(offsets) <= 1.0) and np.ptp(offsets) > 0.1
    assert dt.attrs["init_jitter"] == 1
    assert dt.attrs["chain_method"] == "vectorized"  # the CPU host counts as one device
    assert dt.attrs["jax_platform"] == "cpu" and dt.attrs["jax_devices"] == 1


def test_starts_differ_flags_shared_starts():
    """The check above fails on what the backend used to do: every chain at the model's initial point."""
    from pymc.sampling.jax import _get_batched_jittered_initial_points

    shared = _get_batched_jittered_initial_points(model=_censored_weibull_model(), chains=4, initvals=None,
                                                  random_seed=1, jitter=False)
    assert not starts_differ(shared)


def test_starts_are_seeded():
    model = _censored_weibull_model()
    potential, _ = inference._jax_potential(model)
    a = inference._numpyro_initial_points(model, 4, 7, potential)
    b = inference._numpyro_initial_points(model, 4, 7, potential)
    c = inference._numpyro_initial_points(model, 4, 8, potential)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_gradient_is_pytensors_where_jax_autodiff_gives_nan():
    """Far below the limit, JAX's reverse mode through the log-CDF's switch is NaN (a stuck chain);
    the backend's potential has PyTensor's gradient there."""
    from pymc.sampling.jax import get_jaxified_logp

    model = _below_limit_model()
    x = [jnp.asarray(-50.0), jnp.asarray(0.0)]  # mu, log sigma: 50 SD below the limit
    _, naive = jax.value_and_grad(get_jaxified_logp(model, negative_logp=False))(x)
    assert not all(bool(jnp.isfinite(g)) for g in naive)  # the failure the custom gradient exists for
    potential, gradient = inference._jax_potential(model)
    assert gradient == "pytensor"
    value, grads = jax.value_and_grad(potential)(x)
    expected = model.compile_dlogp()({"mu": -50.0, "sigma_log__": 0.0})
    np.testing.assert_allclose(-np.array([float(g) for g in grads]), expected, rtol=1e-10)
    assert float(value) == pytest.approx(-float(model.compile_logp()({"mu": -50.0, "sigma_log__": 0.0})))


def test_chain_method_vectorized_on_one_device_parallel_across_devices(monkeypatch):
    assert inference.jax_chain_method(4) == ("vectorized", 1, "cpu")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax, "local_device_count", lambda: 4)
    assert inference.jax_chain_method(4)[0] == "parallel"
    assert inference.jax_chain_method(8)[0] == "vectorized"
    monkeypatch.setattr(jax, "local_device_count", lambda: 1)
    assert inference.jax_chain_method(4) == ("vectorized", 1, "gpu")


def test_toolkit_diagnostics_on_numpyro_output(numpyro_fit):
    _, dt, _ = numpyro_fit
    stats = dt["sample_stats"]
    for name in ("diverging", "energy", "n_steps", "tree_depth", "step_size", "reached_max_treedepth"):
        assert name in stats, name
    assert set(stats["diverging"].dims) == {"chain", "draw"} and stats.sizes == {"chain": 4, "draw": 200}
    d = diagnose(dt, ess_min=100)
    assert d.divergences == int(stats["diverging"].sum()) == 0
    assert np.isfinite(d.min_bfmi) and d.max_treedepth_share == 0.0  # recorded, not NaN
    assert d.max_rhat < 1.05 and d.converged, d.problems
    # no chain stuck away from the others
    assert np.ptp(dt.posterior["k"].mean("draw").values) < 0.1
    assert "log_likelihood" in dt.children and "observed_data" in dt.children
    assert dt.attrs["compile_seconds"] > 0 and dt.attrs["sampling_seconds"] > 0
    assert 0 <= dt.attrs["jax_compile_seconds"] <= dt.attrs["compile_seconds"]


@pytest.mark.slow  # a second compile (~10 s); the fast fixture above checks the flag is recorded (share 0)
def test_tree_depth_saturation_is_recorded_and_flagged(monkeypatch):
    """With the tree depth capped at 2 (at most 3 leapfrog steps) most trajectories are cut: the derived
    ``reached_max_treedepth`` flag records them and the verdict fails (at depth 10 above: share 0)."""
    monkeypatch.setattr(inference, "NUMPYRO_MAX_TREE_DEPTH", 2)
    dt = sample(_censored_weibull_model(), SamplerSettings(backend="numpyro", **{**FAST, "chains": 2, "tune": 100,
                                                                                  "draws": 100}),
                log_likelihood=False)
    stats = dt["sample_stats"]
    assert int(stats["n_steps"].max()) == 3
    assert inference.max_treedepth_share(stats.to_dataset()) > 0.1
    d = diagnose(dt, ess_min=1)
    assert not d.converged and any("maximum tree depth" in p for p in d.problems)


def test_cli_durability_fit_with_numpyro_writes_a_valid_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "durability", "--data", str(EXAMPLE), "--out", str(out), "--backend", "numpyro",
                 "--chains", "2", "--tune", "200", "--draws", "200"]) == 0
    assert "Run written to" in capsys.readouterr().out
    run = load_run(out)  # verifies the manifest
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "durability" and summary["estimands"]
    assert set(summary["diagnostics"]) >= {"max_rhat", "min_ess_bulk", "min_ess_tail", "divergences", "converged"}
    if not summary["diagnostics"]["converged"]:
        assert "provisional" in summary["warnings"][0]
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["settings"]["backend"] == "numpyro"
    assert provenance["sampler"]["chain_method"] == "vectorized" and provenance["sampler"]["init_jitter"] == 1
    assert run.posterior.attrs["chain_method"] == "vectorized"
    assert run.posterior["posterior"].sizes["chain"] == 2


def test_jax_compile_cache_beside_pytensors_unless_chosen(tmp_path, monkeypatch):
    import pytensor

    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        folder = inference.jax_compile_cache()
        assert folder == str(Path(pytensor.config.compiledir) / "jax")
        jax.config.update("jax_compilation_cache_dir", str(tmp_path))  # the user's choice stands
        assert inference.jax_compile_cache() == str(tmp_path)
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


@pytest.mark.slow  # the multi-device path (one chain per GPU), run here on virtual CPU devices
def test_parallel_chain_method_runs_one_chain_per_device(monkeypatch):
    if jax.local_device_count() < 2:
        pytest.skip("needs 2 JAX devices (XLA_FLAGS=--xla_force_host_platform_device_count=2 before jax starts)")
    monkeypatch.setattr(inference, "jax_chain_method", lambda chains: ("parallel", chains, "cpu"))
    dt = sample(_censored_weibull_model(), SamplerSettings(backend="numpyro", **{**FAST, "chains": 2}),
                log_likelihood=False)
    assert dt.attrs["chain_method"] == "parallel"
    assert diagnose(dt, ess_min=100).max_rhat < 1.05


def test_cli_numpyro_without_jax_exits_2_before_any_work(tmp_path, monkeypatch):
    import importlib.util

    from toolkit.testing import run_cli

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(inference.importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in ("jax", "numpyro") else real_find_spec(name, *a, **k))
    code, output = run_cli(["fit", "durability", "--data", str(EXAMPLE), "--out", str(tmp_path / "run"),
                            "--backend", "numpyro"])
    assert code == 2
    assert "backend 'numpyro' needs jax and numpyro" in output and "pip install numpyro jax" in output
    assert "Traceback" not in output and not (tmp_path / "run").exists()


def test_mrd_gradient_graph_traces_with_static_shapes():
    """The MRD model's PyTensor gradient computes a shape from a traced value unless the value variables
    carry their static shapes; with them it traces, so numpyro samples MRD with PyTensor's gradient."""
    from toolkit.data import load_cohort
    from toolkit.data.mrd_inputs import to_mrd_inputs
    from toolkit.fitting import MrdOptions
    from toolkit.models.mrd import build_mrd_model

    model = build_mrd_model(to_mrd_inputs(load_cohort(EXAMPLE)), MrdOptions().prior_set())
    _, gradient = inference._jax_potential(model)
    assert gradient == "pytensor"
