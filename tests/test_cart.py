"""CAR-T kinetic model: closed forms, structure, censoring, priors, bad data, estimands, a small fit."""

import dataclasses
import math

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest
from scipy import integrate, stats

from toolkit.data import CohortValidationError, load_cohort
from toolkit.data.inputs import ModelDataError, to_cart_inputs
from toolkit.estimands import cart_estimands, cart_patient_estimands
from toolkit.inference import SamplerSettings, diagnose, sample
from toolkit.models import cart
from toolkit.models.cart import (KINETIC_PARAMETERS, CartPriors, build_cart_model, cart_auc, log_cart_curve,
                                 natural_parameters_np, prior_predictive_typical_curves)
from toolkit.simulate import cart_auc as cart_auc_np
from toolkit.simulate import cart_curve, time_below
from toolkit.testing import EXAMPLE, read_raw, row_of, write_raw

STEIN = dict(cmax=24_000.0, tmax=9.3, foldx=3_900.0, alpha=0.16, beta=0.0032, fb=0.0079)
ARM_QUANTITIES = ("cmax_copies_per_ug", "tmax_days", "auc_0_28", "half_life_contraction_days",
                  "half_life_persistence_days", "persistence_fraction")
POPULATION = ["mu_kinetic", "omega_kinetic", "arm_effect", "sigma_log"]


def _evaluate(model, names, point):
    """Values of model variables (deterministics too) at an unconstrained point."""
    outs = model.replace_rvs_by_values([model[n] for n in names])
    return model.compile_fn(outs, inputs=model.value_vars, point_fn=True, on_unused_input="ignore")(point)


def _graph_args(p):
    """Natural parameters -> arguments of the pytensor closed forms."""
    return (np.log(p["cmax"]), p["tmax"], np.log(p["foldx"]), p["alpha"], p["beta"],
            np.log(p["fb"] / (1 - p["fb"])))


@pytest.fixture(scope="module")
def example():
    return load_cohort(EXAMPLE)


@pytest.fixture(scope="module")
def example_inputs(example):
    return to_cart_inputs(example)


# --------------------------------------------------------------------------- closed forms


def test_curve_pinned_to_stein_typical_patient():
    """Stein 2019 typical values (Table 1), derived by hand::

        R0  = Cmax/foldx = 24000/3900                   = 6.1538 copies/ug
        rho = ln(3900)/9.3 = 8.2687/9.3                  = 0.88911 /day
        C(28) = 24000 [0.9921 e^{-0.16*18.7} + 0.0079 e^{-0.0032*18.7}]
              = 24000 [0.9921*0.050220 + 0.0079*0.94194] = 1373.6
        C(90) = 146.5, C(365) = 60.7 (same formula)

    on Stein's kinked curve (peak rounding h -> 0); the model's rounded peak is pinned to it in
    tests/test_simulate.py (R0 and the peak kept, the contraction h log 2 days later).
    """
    t = pt.dvector("t")
    log_c = log_cart_curve(t, *_graph_args(STEIN), h=1e-9)
    days = np.array([0.0, 1.0, 9.3, 28.0, 90.0, 365.0])
    c = np.exp(log_c.eval({t: days}))
    assert c[0] == pytest.approx(6.1538, rel=1e-4)
    assert math.log(c[1] / c[0]) == pytest.approx(0.88911, rel=1e-4)
    assert c[2] == pytest.approx(24_000.0, rel=1e-12)
    assert c[3] == pytest.approx(1373.6, rel=1e-4)
    assert c[4] == pytest.approx(146.5, rel=1e-3)
    assert c[5] == pytest.approx(60.7, rel=2e-3)


def test_auc_0_28_pinned_to_stein_typical_patient():
    """AUC0-28 = (Cmax - R0)/rho + Cmax[(1-FB)(1-e^{-alpha d})/alpha + FB(1-e^{-beta d})/beta], d = 18.7:

    (24000 - 6.15)/0.88911 = 26986;  24000 [0.9921*0.94978/0.16 + 0.0079*0.05806/0.0032] = 144788;
    total 171774 (about 1.72e5).
    """
    auc = float(cart_auc(28.0, *_graph_args(STEIN), h=1e-9).eval())  # Stein's kinked curve, by quadrature
    assert auc == pytest.approx(171_774.3, rel=1e-5)
    assert auc == pytest.approx(1.72e5, rel=0.01)


def test_graph_curve_and_auc_match_numpy_and_quadrature():
    rng = np.random.default_rng(3)
    n = 40
    p = dict(cmax=np.exp(rng.normal(10, 1, n)), tmax=np.exp(rng.normal(2.2, 0.6, n)),
             foldx=np.exp(rng.normal(8, 1.5, n)), alpha=np.exp(rng.normal(-1.8, 0.9, n)), fb=rng.uniform(0.001, 0.1, n))
    p["beta"] = p["alpha"] * rng.uniform(0.005, 0.5, n)
    days = np.array([0.0, 0.5, 3.0, 7.0, 14.0, 28.0, 60.0, 200.0])
    graph = np.exp(log_cart_curve(days[None, :], *(np.asarray(a)[:, None] for a in _graph_args(p))).eval())
    np.testing.assert_allclose(graph, cart_curve(days[None, :], *(p[k][:, None] for k in
                                                                 ("cmax", "tmax", "foldx", "alpha", "beta", "fb"))),
                               rtol=1e-10)
    auc = cart_auc(28.0, *_graph_args(p)).eval()
    np.testing.assert_allclose(auc, cart_auc_np(28.0, **p), rtol=1e-10)
    for i in range(5):  # includes Tmax > 28 for some draws
        args = {k: p[k][i] for k in p}
        quad = sum(integrate.quad(lambda t: cart_curve(t, **args), a, b, limit=200)[0]
                   for a, b in ((0, min(args["tmax"], 28)), (min(args["tmax"], 28), 28)))
        assert auc[i] == pytest.approx(quad, rel=1e-6)


def test_time_above_lloq_matches_simulator_definition(example_inputs):
    """patient_time_above_lloq is toolkit.simulate.time_below on each draw's patient parameters."""
    theta = np.array([[math.log(24_000), math.log(9.3), math.log(3_900), math.log(0.16 - 0.0032),
                       math.log(0.0079 / 0.9921), math.log(math.log(2) / 0.0032)]])
    inputs = dataclasses.replace(example_inputs, patient_ids=["P"], arm=np.array([0]), patient_lloq=np.array([50.0]))
    import xarray as xr

    post = xr.Dataset({"theta_patient": (("chain", "draw", "patient", "kinetic"), theta[None, None])})
    t = cart.patient_time_above_lloq(post, inputs)
    expected = time_below(50.0, **STEIN)
    assert t[0, 0] == pytest.approx(float(expected), rel=1e-6)
    assert 365 < t[0, 0] < 450  # C(365) = 60.7 > 50; terminal half-life 217 d


# --------------------------------------------------------------------------- structure


def test_structure_names_dims_and_finite_start(example_inputs):
    model = build_cart_model(example_inputs)
    names = set(model.named_vars)
    assert {"mu_kinetic", "omega_kinetic", "theta_raw", "arm_effect", "sigma_log", "log_level", "theta_patient",
            *ARM_QUANTITIES, "patient_cmax", "patient_auc_0_28"} <= names
    assert list(model.coords["kinetic"]) == list(KINETIC_PARAMETERS)
    assert list(model.coords["arm"]) == ["control", "experimental"]
    assert list(model.coords["effect"]) == list(KINETIC_PARAMETERS)
    assert len(model.coords["patient"]) == 60 and len(model.coords["sample"]) == example_inputs.n_samples
    for name in ARM_QUANTITIES:
        assert model.named_vars_to_dims[name] == ("arm",)
    assert model.named_vars_to_dims["log_level"] == ("sample",)
    assert model.named_vars_to_dims["patient_cmax"] == ("patient",)
    assert model.named_vars_to_dims["theta_patient"] == ("patient", "kinetic")
    point = model.initial_point()
    assert np.isfinite(model.compile_logp()(point))
    assert np.all(np.isfinite(model.compile_dlogp()(point)))


@pytest.mark.parametrize("centering", ["auto", "noncentered"])
def test_effects_subset_covariates_and_centering(example, centering):
    inputs = to_cart_inputs(example, covariates=["age_years", "prior_hsct"])
    model = build_cart_model(inputs, effects_on=["persistence", "cmax"], centering=centering)
    assert list(model.coords["effect"]) == ["cmax", "persistence"]
    assert list(model.coords["covariate"]) == ["age_years", "prior_hsct"]
    assert model.named_vars_to_dims["covariate_effect"] == ("covariate", "kinetic")
    assert (model["centered"].get_value().sum() > 0) == (centering == "auto")
    point = model.initial_point()
    assert np.isfinite(model.compile_logp()(point))
    assert np.all(np.isfinite(model.compile_dlogp()(point)))
    none = build_cart_model(inputs, effects_on=())
    assert "arm_effect" not in none.named_vars


def test_unknown_options_are_refused(example_inputs):
    with pytest.raises(ValueError, match="unknown kinetic parameter\\(s\\) in effects_on: beta; valid: cmax, tmax, "
                                         "foldx, alpha, fb, persistence"):
        build_cart_model(example_inputs, effects_on=["cmax", "beta"])
    with pytest.raises(ValueError, match="unknown centering 'centered'; valid: auto, noncentered"):
        build_cart_model(example_inputs, centering="centered")
    with pytest.raises(ValueError, match="unknown omega_family 'gamma'; valid: lognormal, halfnormal"):
        CartPriors(omega_family="gamma")
    with pytest.raises(ValueError, match="unknown prior\\(s\\) mu_beta"):
        CartPriors().with_overrides({"mu_beta": [0, 1]})


def test_typical_deterministics_match_numpy_twin(example_inputs):
    """The per-arm deterministics are the natural parameters of mu (+ delta) -- the map the estimands use."""
    model = build_cart_model(example_inputs)
    rng = np.random.default_rng(0)
    point = {k: v + rng.normal(0, 0.3, v.shape) for k, v in model.initial_point().items()}
    names = ["mu_kinetic", "arm_effect", *ARM_QUANTITIES, "theta_patient", "patient_cmax", "patient_auc_0_28"]
    out = dict(zip(["mu", "delta", *ARM_QUANTITIES, "theta", "pcmax", "pauc"], _evaluate(model, names, point)))
    for a in (0, 1):
        p = natural_parameters_np(out["mu"] + a * out["delta"])
        assert out["cmax_copies_per_ug"][a] == pytest.approx(p["cmax"])
        assert out["tmax_days"][a] == pytest.approx(p["tmax"])
        assert out["auc_0_28"][a] == pytest.approx(cart_auc_np(28.0, **p))
        assert out["half_life_contraction_days"][a] == pytest.approx(math.log(2) / p["alpha"])
        assert out["half_life_persistence_days"][a] == pytest.approx(math.log(2) / p["beta"])
        assert out["persistence_fraction"][a] == pytest.approx(p["fb"])
    p = natural_parameters_np(out["theta"])
    np.testing.assert_allclose(out["pcmax"], p["cmax"])
    np.testing.assert_allclose(out["pauc"], cart_auc_np(28.0, **p))
    assert np.all(p["alpha"] > p["beta"])


# --------------------------------------------------------------------------- likelihood and censoring


def _log_level_terms(model, point):
    return model.compile_fn(model.logp(vars=[model["log_level"]], sum=False), inputs=model.value_vars,
                            on_unused_input="ignore",
                            point_fn=True)(point)[0]


def test_likelihood_is_normal_density_or_log_cdf_at_the_rows_own_lloq(example_inputs):
    inputs = example_inputs
    model = build_cart_model(inputs)
    point = model.initial_point()
    terms = _log_level_terms(model, point)
    theta, sigma = _evaluate(model, ["theta_patient", "sigma_log"], point)
    p = natural_parameters_np(theta)
    i = inputs.sample_patient
    mu = np.log(cart_curve(inputs.day, *(p[k][i] for k in ("cmax", "tmax", "foldx", "alpha", "beta", "fb"))))
    cens = inputs.censored == 1
    np.testing.assert_allclose(terms[~cens], stats.norm.logpdf(inputs.log_value[~cens], mu[~cens], sigma), rtol=1e-9)
    np.testing.assert_allclose(terms[cens], stats.norm.logcdf(inputs.log_lloq[cens], mu[cens], sigma),
                               rtol=1e-6, atol=1e-12)


def test_all_blq_patient_is_kept_and_informs_the_likelihood(example_inputs):
    """P057 has every sample below the LLOQ: kept, and its log-likelihood moves with its own LLOQ."""
    inputs = example_inputs
    assert "P057" in inputs.patient_ids
    # the warning counts patients without naming them (it is shown in the investigator report)
    assert "1 patient(s) have every sample below the LLOQ; they are kept" in " ".join(inputs.warnings)
    assert not any("P057" in w for w in inputs.warnings)
    idx = inputs.patient_ids.index("P057")
    rows = inputs.sample_patient == idx
    assert rows.sum() == 2 and np.all(inputs.censored[rows] == 1)
    base = build_cart_model(inputs)
    point = base.initial_point()
    higher = dataclasses.replace(inputs, log_lloq=np.where(rows, inputs.log_lloq + math.log(4.0), inputs.log_lloq))
    a, b = _log_level_terms(base, point), _log_level_terms(build_cart_model(higher), point)
    assert np.all(np.isfinite(a[rows])) and np.all(b[rows] > a[rows])  # a higher limit is easier to stay under
    np.testing.assert_array_equal(a[~rows], b[~rows])


def test_value_equal_to_lloq_is_quantified_not_censored(cohort_dir):
    raw = read_raw(cohort_dir, "cart_kinetics")
    row = row_of(cohort_dir, "cart_kinetics", patient_id="P001", day="7")
    raw.loc[row, "value"] = "50"
    write_raw(cohort_dir, "cart_kinetics", raw)
    inputs = to_cart_inputs(load_cohort(cohort_dir))
    k = int(np.flatnonzero((inputs.sample_patient == 0) & (inputs.day == 7))[0])
    assert inputs.censored[k] == 0 and inputs.log_value[k] == pytest.approx(math.log(50))
    model = build_cart_model(inputs)
    point = model.initial_point()
    terms = _log_level_terms(model, point)
    (sigma,) = _evaluate(model, ["sigma_log"], point)
    assert terms[k] < stats.norm.logpdf(0, 0, sigma) + 1e-9  # a density term, not a log-probability near 0


# --------------------------------------------------------------------------- prior predictive


def test_a_late_expander_starts_at_its_own_peak():
    """A patient's Tmax starts at the data's peak day, however late: a start clipped at 28 days left one chain of
    a calibration fit in an early-peak mode (docs/calibration.md, "A narrower prior on ω_α")."""
    day = np.array([1, 4, 7, 10, 14, 21, 28, 43, 57, 89, 118, 181.0])
    log_value = np.array([0, 0, 0, 0, 0, 4.2, 4.1, 4.9, 6.1, 7.3, 9.2, 6.8])
    inputs = dataclasses.replace(
        to_cart_inputs(load_cohort(EXAMPLE)), patient_ids=["P1"], arm=np.zeros(1), x_std=np.zeros((1, 0)),
        sample_patient=np.zeros(day.size, dtype=int), day=day, log_value=log_value,
        censored=(day < 20).astype(int), log_lloq=np.full(day.size, math.log(50.0)), patient_lloq=np.array([50.0]))
    theta0 = cart.initial_patient_theta(inputs, CartPriors())
    assert theta0[0, 0] == pytest.approx(9.2)
    assert math.exp(theta0[0, 1]) == pytest.approx(118.0)  # the first day within 1 log unit of the highest level
    assert theta0[0, 2] == pytest.approx((9.2 - 7.3) / (1 - 89 / 118))  # the rise through day 89


def test_prior_typical_curves_stay_physiological():
    out = prior_predictive_typical_curves(CartPriors(), n=2000, seed=7)
    curve, day = out["curve"], out["day"]
    assert curve.shape == (2000, 2, day.size) and np.all(np.isfinite(curve))
    peak = curve.max(axis=2)
    peak_day = day[curve.argmax(axis=2)]
    assert np.mean((peak > 1e2) & (peak < 1e6)) >= 0.9
    assert np.mean((peak_day >= 3) & (peak_day <= 30)) >= 0.9
    assert np.mean((out["cmax"] > 1e2) & (out["cmax"] < 1e6)) >= 0.99
    assert np.mean((out["tmax"] >= 3) & (out["tmax"] <= 30)) >= 0.99
    half_contraction = math.log(2) / out["alpha"]
    half_persistence = math.log(2) / out["beta"]
    assert np.mean((half_contraction > 0.5) & (half_contraction < 30)) >= 0.9
    assert np.mean((half_persistence > 30) & (half_persistence < 3000)) >= 0.9
    assert np.all(out["alpha"] > out["beta"])
    # the typical AUC0-28 brackets Stein's 1.72e5 and day-365 levels stay within a log-decade band of 61
    assert 1e4 < np.median(out["auc_0_28"]) < 1e6
    assert 5 < np.median(curve[:, 0, -1]) < 700


# --------------------------------------------------------------------------- inputs and bad data


def test_inputs_arrays(example, example_inputs):
    inputs = example_inputs
    assert inputs.n_patients == 60 and inputs.n_samples == len(example.cart)
    assert np.all(np.diff(inputs.sample_patient) >= 0)
    assert np.all(inputs.log_value[inputs.censored == 1] == 0)
    np.testing.assert_allclose(inputs.log_lloq, math.log(50.0))
    assert inputs.arm.sum() == (example.is_experimental() == 1).sum()
    cov = to_cart_inputs(example, covariates=["age_years"])
    np.testing.assert_allclose(cov.x_std.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(cov.x_std.std(axis=0), 1)


def test_per_row_lloq_is_used(cohort_dir):
    raw = read_raw(cohort_dir, "cart_kinetics")
    row = row_of(cohort_dir, "cart_kinetics", patient_id="P001", day="1")
    raw.loc[row, "value"] = "<20"
    write_raw(cohort_dir, "cart_kinetics", raw)
    inputs = to_cart_inputs(load_cohort(cohort_dir))
    k = int(np.flatnonzero((inputs.sample_patient == 0) & (inputs.day == 1))[0])
    assert inputs.censored[k] == 1 and inputs.log_lloq[k] == pytest.approx(math.log(20))


def test_no_cart_file_is_refused(cohort_dir):
    (cohort_dir / "cart_kinetics.csv").unlink()
    with pytest.raises(ModelDataError, match=r"the cohort has no CAR-T kinetics \(cart_kinetics.csv is missing or "
                                             r"has no rows\), so the CAR-T kinetic model cannot be fitted"):
        to_cart_inputs(load_cohort(cohort_dir))


def test_patient_without_samples_is_named(cohort_dir):
    raw = read_raw(cohort_dir, "cart_kinetics")
    write_raw(cohort_dir, "cart_kinetics", raw[~raw["patient_id"].isin(["P010", "P033"])])
    with pytest.raises(ModelDataError, match=r"2 patient\(s\) have no CAR-T sample at all: P010, P033; add their "
                                             r"samples to cart_kinetics.csv"):
        to_cart_inputs(load_cohort(cohort_dir))


def test_quantified_zero_and_bad_covariates_are_refused(cohort_dir, example):
    raw = read_raw(cohort_dir, "cart_kinetics")
    row = row_of(cohort_dir, "cart_kinetics", patient_id="P001", day="7")
    raw.loc[row, "value"] = "0"
    write_raw(cohort_dir, "cart_kinetics", raw)
    # validation refuses it before any model input is built (a quantified level is above 0)
    with pytest.raises(CohortValidationError, match=rf"cart_kinetics.csv, row {row}, column 'value': is 0, but a "
                                                    "quantified level is above 0"):
        load_cohort(cohort_dir)
    with pytest.raises(ModelDataError, match="unknown covariate\\(s\\) weight_kg; numeric columns of patients.csv"):
        to_cart_inputs(example, covariates=["weight_kg"])


# --------------------------------------------------------------------------- estimands on seeded fake posteriors


def _prior_posterior(inputs, effects_on, draws=200, seed=5):
    """A seeded fake posterior: prior draws of every variable but the observations, as (chain, draw)."""
    model = build_cart_model(inputs, effects_on=effects_on)
    names = [v.name for v in model.free_RVs] + [v.name for v in model.deterministics]
    prior = pm.sample_prior_predictive(draws=draws, model=model, var_names=names, random_seed=seed)
    return prior["prior"].to_dataset()


def test_auc28_gmr_equals_cmax_gmr_when_only_cmax_differs(example_inputs):
    """AUC is proportional to Cmax at fixed shape, so with an arm effect on Cmax alone the AUC GMR is exp(delta)."""
    post = _prior_posterior(example_inputs, effects_on=["cmax"])
    est = cart_estimands(post, example_inputs)
    for key in ("mean", "median", "sd"):
        assert est["auc28_gmr"][key] == pytest.approx(est["cmax_gmr"][key], rel=1e-9)
    assert abs(est["tmax_difference_days"]["mean"]) < 1e-9
    assert est["persistence_half_life_ratio"]["mean"] == pytest.approx(1.0)


def test_estimand_names_and_patient_table(example_inputs):
    post = _prior_posterior(example_inputs, effects_on=KINETIC_PARAMETERS, draws=100)
    est = cart_estimands(post, example_inputs)
    expected = {f"{q}_{a}" for q in ARM_QUANTITIES for a in ("control", "experimental")} | {
        "cmax_gmr", "auc28_gmr", "tmax_difference_days", "persistence_half_life_ratio",
        "prob_cmax_gmr_above_1", "prob_auc28_gmr_above_1"}
    assert set(est) == expected
    assert set(est["cmax_gmr"]) == {"mean", "median", "sd", "hdi_90"}
    assert isinstance(est["prob_auc28_gmr_above_1"], float)
    again = cart_estimands(post, example_inputs)
    assert again["auc28_gmr"] == est["auc28_gmr"]  # fixed seed
    table = cart_patient_estimands(post, example_inputs)
    assert list(table.index) == example_inputs.patient_ids and table.index.name == "patient_id"
    for q in ("cmax", "auc_0_28", "time_above_lloq_days"):
        assert {f"{q}_mean", f"{q}_median", f"{q}_lo", f"{q}_hi"} <= set(table.columns)
        assert np.all(table[f"{q}_lo"] <= table[f"{q}_hi"])
    assert np.all(table["time_above_lloq_days_lo"] >= 0)


# --------------------------------------------------------------------------- a small fit


@pytest.fixture(scope="module")
def example_fit(example_inputs):
    model = build_cart_model(example_inputs)
    # at the target acceptance `toolkit fit cart` uses (at 0.9 this cohort had 13 divergences)
    return sample(model, SamplerSettings(chains=4, tune=500, draws=500, progressbar=False, random_seed=11,
                                         target_accept=cart.RECOMMENDED_TARGET_ACCEPT))


def test_small_fit_on_example_converges(example_fit, example_inputs):
    """4 x 500 draws at the recommended target_accept. Divergences: 0-2 at seeds 11-18 in a fresh process (seed
    11: 0), but 4 at seed 11 in a CI worker after other tests (the trajectory depends on the process's history,
    not only on the seed); at target_accept 0.9 this cohort had 13, which the bound of 5 still fails."""
    d = diagnose(example_fit, var_names=POPULATION, ess_min=100)
    assert d.max_rhat < 1.05 and d.min_ess_bulk > 100 and d.divergences <= 5, d.problems  # 500 draws a chain
    ll = example_fit["log_likelihood"]["log_level"]
    assert ll.shape[-1] == example_inputs.n_samples and np.isfinite(ll.to_numpy()).all()
    est = cart_estimands(example_fit["posterior"], example_inputs)
    assert 12_000 < est["cmax_copies_per_ug_control"]["median"] < 48_000
    assert 6 < est["tmax_days_control"]["median"] < 15
    sigma = example_fit["posterior"]["sigma_log"].to_numpy()
    assert 0.45 < np.median(sigma) < 0.7  # simulated with 0.56
