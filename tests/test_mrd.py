"""MRD kinetic model: structure, likelihood pieces, censoring, methods, bad data, a small fit, estimands."""

import dataclasses
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from toolkit.data import load_cohort
from toolkit.data.inputs import ModelDataError
from toolkit.data.mrd_inputs import CENSORING_CODES, to_mrd_inputs
from toolkit.inference import SamplerSettings, diagnose, sample
from toolkit.models.mrd import (MODEL_NAME, MODEL_VERSION, MrdPriors, build_mrd_model, censored_log10_logp,
                                class_logliks_numpy, informed_patients, log_residual_interval,
                                log_residual_interval_numpy, mrd_log10_numpy, residual_family)
from toolkit.mrd_estimands import mrd_estimands, patient_recurrence, patient_trajectories
from toolkit.testing import EXAMPLE

POPULATION = ["log_clearance", "clearance_log_ratio", "clearance_sd", "baseline_anchor_sd", "logit_recurrence",
              "recurrence_log_or", "floor_depth_log10", "floor_depth_sd_log10", "log_relapse_latency",
              "relapse_log_time_ratio", "relapse_sd", "log_doubling_days", "doubling_sd", "mrd_residual_sd_log10",
              "method_bias_log10", "logit_response", "response_log_or"]
NAMED = ["mrd_clearance_log10_per_day", "clearance_rate_ratio", "mrd_recurrence_class_probability",
         "mrd_relapse_latency_days", "mrd_doubling_time_days", "mrd_floor_log10", "mrd_method_offset_log10",
         "response_rate", "patient_clearance_log10_per_day", "patient_baseline_log10", "patient_floor_log10",
         "patient_relapse_day", "patient_doubling_time_days"]


@pytest.fixture(scope="module")
def example():
    return load_cohort(EXAMPLE)


@pytest.fixture(scope="module")
def inputs(example):
    return to_mrd_inputs(example)


@pytest.fixture(scope="module")
def fitted(inputs):
    """One small fit of the example cohort, shared by the fit, log-likelihood and estimand tests."""
    settings = SamplerSettings(chains=4, tune=600, draws=500, progressbar=False, random_seed=11)
    return sample(build_mrd_model(inputs), settings)


def _with_mrd(cohort, mrd):
    return dataclasses.replace(cohort, mrd=mrd)


# --------------------------------------------------------------------------- structure


def test_structure_names_dims_and_finite_start(inputs):
    model = build_mrd_model(inputs)
    assert (MODEL_NAME, MODEL_VERSION) == ("mrd", "1.4.0")
    assert set(POPULATION + NAMED + ["mrd", "response"]) <= set(model.named_vars)
    assert {"patient", "assessment", "arm", "method", "infused"} <= set(model.coords)
    assert list(model.coords["arm"]) == ["control", "experimental"]
    assert list(model.coords["method"]) == ["flow", "ngs"]
    assert list(model.coords["biased_method"]) == ["flow"]
    assert len(model.coords["patient"]) == inputs.n_patients == 50
    assert len(model.coords["assessment"]) == inputs.n_assessments
    dims = model.named_vars_to_dims
    assert dims["mrd"] == ("patient", "visit")
    assert dims["mrd_clearance_log10_per_day"] == ("arm",)
    assert dims["patient_relapse_day"] == ("patient",)
    assert dims["day"] == ("assessment",)
    assert dims["response"] == ("infused",)
    point = model.initial_point()
    assert np.isfinite(model.compile_logp()(point))
    assert np.all(np.isfinite(model.compile_dlogp()(point)))


def test_inputs_arrays(inputs, example):
    """log10 fractions, per-row limits, codes; non-responders out of the kinetic part, in the response part."""
    assert inputs.reference_method == "ngs"
    flow = inputs.method == 0
    assert np.allclose(inputs.log10_lod[flow & (inputs.censoring == 1)], -4.0)  # 0.01 % -> 1e-4
    assert np.allclose(inputs.log10_lod[~flow], -6.0) and np.allclose(inputs.log10_loq[inputs.censoring == 2], -5.0)
    q = inputs.censoring == 0
    assert np.all(np.isfinite(inputs.log10_value[q])) and np.all(np.isnan(inputs.log10_value[~q]))
    first = example.mrd.iloc[0]  # P001 day 28 flow negative
    assert inputs.patient_ids[0] == first["patient_id"] and inputs.censoring[0] == CENSORING_CODES["below_lod"]
    assert np.all(np.diff(inputs.assessment_patient) >= 0)
    assert len(inputs.infused_ids) == 60 and inputs.responded.sum() == 50
    assert inputs.n_excluded_assessments == 8 and "non-responders" in inputs.warnings[0]
    assert np.allclose(inputs.baseline_log10, np.log10(example.patients.set_index("patient_id")
                                                       .loc[inputs.patient_ids, "baseline_blasts_pct"] / 100))


# --------------------------------------------------------------------------- likelihood pieces


def _t4_pdf(u):
    return math.exp(math.lgamma(2.5) - math.lgamma(2.0) - 0.5 * math.log(4 * math.pi)) * (1 + u * u / 4) ** -2.5


def _log_interval_quad(lo, hi):
    """log[F(hi) - F(lo)] of the Student-t (4 d.f.) by quadrature, independent of the implementation."""
    val, _ = integrate.quad(_t4_pdf, lo, hi, epsabs=0, epsrel=1e-13)
    return math.log(val)


@pytest.mark.parametrize("lo, hi", [(-1.0, 1.0), (-0.2, 0.3), (2.0, 2.5), (8.0, 9.0), (37.0, 38.5),
                                    (-39.0, -38.0), (-6.0, -5.9), (0.5, 0.5000001), (1e3, 1.1e3)])
def test_log_residual_interval_matches_quadrature(lo, hi):
    expected = _log_interval_quad(lo, hi)
    got = float(log_residual_interval(np.float64(lo), np.float64(hi)).eval())
    assert got == pytest.approx(expected, rel=1e-7, abs=1e-9)
    assert float(log_residual_interval_numpy(lo, hi)) == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_censored_pieces_match_scipy():
    """quantified: t_4 logpdf; below LoD: t_4 logcdf at the limit; PNQ: log(cdf(LoQ) - cdf(LoD)) (scale sd)."""
    mu, sd = -4.7, 0.3
    y = np.array([-3.2, -4.0, -6.0])  # quantified value / (LoD filler) / (LoD filler)
    code = np.array([0, 1, 2])
    lod = np.array([-4.2, -4.0, -6.0])
    loq = np.array([-3.2, -3.0, -5.0])
    got = censored_log10_logp(y, code, lod, loq, mu, sd).eval()
    t4 = stats.t(4, mu, sd)
    expected = [t4.logpdf(-3.2), t4.logcdf(-4.0), np.log(t4.cdf(-5.0) - t4.cdf(-6.0))]
    np.testing.assert_allclose(got, expected, rtol=1e-10)


@pytest.mark.parametrize("mu", [-9.0, -5.5, -1.0, 2.0, 300.0])
def test_censored_rows_match_scipy_in_both_tails(mu):
    """The one-interval form of both censored codes: a PNQ band above or below mu, an LoD far above or below it
    (t_4 falls like |z|^-4: a row 1,000 scales past its limit costs about 4 log 1000, not 1000^2 / 2)."""
    sd = 0.3
    lod, loq = np.array([-6.0, -6.0]), np.array([-5.0, -5.0])
    got = censored_log10_logp(lod, np.array([1, 2]), lod, loq, mu, sd).eval()
    expected = [stats.t.logcdf((-6.0 - mu) / sd, 4), _log_interval_quad((-6.0 - mu) / sd, (-5.0 - mu) / sd)]
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_runs_before_1_4_keep_their_normal_measurement_error():
    """The numpy twin (class probabilities of a stored run) takes the error of the model version that made it."""
    assert residual_family("1.3.0") is None and residual_family("1.0.0") is None
    assert residual_family(MODEL_VERSION) == 4 and residual_family(None) == 4
    assert float(log_residual_interval_numpy(-1.0, 1.0, None)) == pytest.approx(
        math.log(stats.norm.cdf(1) - stats.norm.cdf(-1)), rel=1e-12)


def test_model_log_likelihood_matches_numpy_scipy_twin(inputs):
    """The model's per-patient mixture term equals logaddexp(log(1-pi) + sum_S, log pi + sum_R) computed
    with scipy (the t_4 log density and CDF) at a random point, i.e. the pytensor graph is the documented likelihood."""
    model = build_mrd_model(inputs)
    rng = np.random.default_rng(3)
    point = {k: v + 0.3 * rng.standard_normal(np.shape(v)) for k, v in model.initial_point().items()}
    named_graphs = model.replace_rvs_by_values([model[n] for n in NAMED])
    fn = model.compile_fn([model.logp(vars=[model["mrd"]], sum=False)[0], *named_graphs], point_fn=True)
    out = fn(point)
    ll_model, named = out[0], dict(zip(NAMED, out[1:]))
    eta = point["logit_recurrence"] + point["recurrence_log_or"] * inputs.arm
    d = lambda name: np.asarray(named[name])[None]  # noqa: E731
    ll_s, ll_r = class_logliks_numpy(inputs, d("patient_baseline_log10"), d("patient_clearance_log10_per_day"),
                                     d("patient_floor_log10"), d("patient_relapse_day"),
                                     np.log10(2) / d("patient_doubling_time_days"), d("mrd_method_offset_log10"),
                                     np.exp(point["mrd_residual_sd_log10_log__"])[None])
    expected = np.logaddexp(-np.logaddexp(0, eta) + ll_s[0], -np.logaddexp(0, -eta) + ll_r[0])
    np.testing.assert_allclose(ll_model, expected, rtol=1e-8, atol=1e-8)


def test_trajectory_closed_form():
    """Class S: log10(10^(B - k t) + 1e-8); class R adds the floor and 10^(log10 0.05 + g (t - R))."""
    t = np.array([0.0, 10.0, 365.0])
    s = mrd_log10_numpy(t, -0.5, 0.3, -5.0, 400.0, 0.025, False)
    np.testing.assert_allclose(s, np.log10(10 ** (-0.5 - 0.3 * t) + 1e-8))
    r = mrd_log10_numpy(t, -0.5, 0.3, -5.0, 400.0, 0.025, True)
    np.testing.assert_allclose(r, np.log10(10 ** (-0.5 - 0.3 * t) + 1e-5 + 10 ** (np.log10(0.05) + 0.025 * (t - 400))))
    assert mrd_log10_numpy(400.0, -0.5, 0.3, -5.0, 400.0, 0.025, True) == pytest.approx(np.log10(0.05), abs=1e-3)


# --------------------------------------------------------------------------- censoring and methods


def test_all_negative_patient_is_kept_and_its_limit_matters(inputs):
    codes = pd.Series(inputs.censoring).groupby(inputs.assessment_patient).agg(lambda c: (c == 1).all())
    i = int(np.flatnonzero(codes.to_numpy())[0])
    rows = inputs.assessment_patient == i
    assert rows.sum() >= 4 and (inputs.censoring[rows] == 1).all()  # kept, with every assessment negative
    looser = dataclasses.replace(inputs, log10_lod=np.where(rows, inputs.log10_lod + 1.0, inputs.log10_lod))
    lp = {}
    for name, inp in (("as_recorded", inputs), ("looser", looser)):
        model = build_mrd_model(inp)
        fn = model.compile_fn(model.logp(vars=[model["mrd"]], sum=False)[0], inputs=model.value_vars,
                              on_unused_input="ignore")
        lp[name] = fn(model.initial_point())
    changed = np.flatnonzero(~np.isclose(lp["as_recorded"], lp["looser"], rtol=0, atol=1e-12))
    assert changed.tolist() == [i]  # only that patient's term moves
    assert lp["looser"][i] > lp["as_recorded"][i]  # a higher limit makes "negative" more likely


def test_flow_only_cohort_uses_flow_as_reference(example):
    cohort = _with_mrd(example, example.mrd[example.mrd["method"] == "flow"])
    inp = to_mrd_inputs(cohort)
    assert inp.methods == ("flow",) and inp.reference_method == "flow"
    model = build_mrd_model(inp)
    assert "biased_method" not in model.coords and "method_bias_log10" not in model.named_vars
    point = model.initial_point()
    assert np.isfinite(model.compile_logp()(point)) and np.all(np.isfinite(model.compile_dlogp()(point)))


def test_qpcr_and_peripheral_blood_rows_get_their_own_terms(example):
    mrd = example.mrd.copy()
    ngs = mrd.index[mrd["method"] == "ngs"]
    mrd.loc[ngs[:10], "method"] = "qpcr"
    mrd.loc[ngs[10:20], "specimen"] = "PB"
    inp = to_mrd_inputs(_with_mrd(example, mrd))
    assert inp.methods == ("flow", "ngs", "qpcr") and inp.reference_method == "ngs"
    assert inp.peripheral_blood.sum() == 10
    model = build_mrd_model(inp)
    assert list(model.coords["biased_method"]) == ["flow", "qpcr"]
    assert "pb_offset_log10" in model.named_vars
    assert np.isfinite(model.compile_logp()(model.initial_point()))


def test_blank_baseline_gets_population_prior_and_covariates_are_standardized(example):
    patients = example.patients.copy()
    patients.loc[patients.index[0], "baseline_blasts_pct"] = np.nan
    cohort = dataclasses.replace(example, patients=patients)
    inp = to_mrd_inputs(cohort, covariates=["age_years"])
    assert inp.baseline_missing[0] and np.isnan(inp.baseline_log10[0])
    assert any("blank baseline_blasts_pct" in w for w in inp.warnings)
    np.testing.assert_allclose(inp.x_std.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(inp.x_std.std(axis=0), 1, atol=1e-12)
    model = build_mrd_model(inp)
    assert list(model.coords["covariate"]) == ["age_years"]
    assert {"covariate_clearance", "covariate_recurrence"} <= set(model.named_vars)
    assert np.isfinite(model.compile_logp()(model.initial_point()))


def test_informed_patients_choose_the_parameterisation(inputs):
    inf = informed_patients(inputs)
    i = inputs.patient_ids.index("P003")  # NGS positive below 1e-4, never above: floor pinned, regrowth not
    assert inf["floor"][i] and not inf["latency"][i]
    j = inputs.patient_ids.index("P001")  # 0.586 % then 2.56 %: two values above 1e-4
    assert inf["latency"][j] and inf["doubling"][j]


def _with_series(inputs, patient, values, lod=-4.0):
    """``inputs`` with one patient's assessments replaced in day order: a float is quantified, None negative at
    ``lod`` (flow, the example's method)."""
    i = inputs.patient_ids.index(patient)
    rows = np.flatnonzero(inputs.assessment_patient == i)
    rows = rows[np.argsort(inputs.day[rows])]
    assert rows.size >= len(values)
    censoring, value, log10_lod = inputs.censoring.copy(), inputs.log10_value.copy(), inputs.log10_lod.copy()
    for r, v in zip(rows, list(values) + [None] * (rows.size - len(values))):
        censoring[r], value[r], log10_lod[r] = (1, np.nan, lod) if v is None else (0, v, lod)
    return i, dataclasses.replace(inputs, censoring=censoring, log10_value=value, log10_lod=log10_lod)


@pytest.mark.parametrize("series, floor, latency, doubling", [
    ([None, None, None, None, -2.2, -1.6], False, True, True),  # negatives, then regrowth seen twice
    ([None, None, None, None, None, -1.6], False, True, False),  # one value of the regrowth: its day, not its rate
    ([-3.3, -3.4, -3.1, -3.2, -3.3, -3.1], True, False, False),  # level at 1e-3.3 for a year: a high floor
    ([-2.5, -3.4, None, None, None, None], False, False, False),  # falling after day 28: the kill, not regrowth
    ([-3.3, -3.2, -3.3, -2.0, -1.5, -1.4], False, True, True),  # a floor at 1e-3.3, then regrowth from it
])
def test_regrowth_is_centred_only_where_values_rise(inputs, series, floor, latency, doubling):
    """A value at or above 1e-4 counts as regrowth (latency, doubling time centred) only when it lies >= 1 log10
    above an earlier assessment's upper edge; level values above 1e-4 are a floor (model 1.2.0; before, every
    value above 1e-4 centred the latency and two of them the doubling time, a funnel where nothing pinned them)."""
    i, seen = _with_series(inputs, "P001", series)
    informed = informed_patients(seen)
    assert (informed["floor"][i], informed["latency"][i], informed["doubling"][i]) == (floor, latency, doubling)


def test_kill_rate_centred_only_where_the_decline_passed_a_value(inputs):
    """A positive first value with a later negative whose limit lies below it pins the kill rate (centred);
    the same value followed only by negatives at a higher limit (a floor could explain it) does not."""
    i = inputs.patient_ids.index("P003")
    rows = np.flatnonzero(inputs.assessment_patient == i)
    first = rows[np.argmin(inputs.day[rows])]
    later = rows[inputs.day[rows] > inputs.day[first]]
    censoring, value, lod = inputs.censoring.copy(), inputs.log10_value.copy(), inputs.log10_lod.copy()
    censoring[first], value[first] = 0, -3.0  # quantified 0.1 % at the first assessment
    censoring[later], value[later], lod[later] = 1, np.nan, -4.5  # every later value negative at 10^-4.5
    seen = dataclasses.replace(inputs, censoring=censoring, log10_value=value, log10_lod=lod)
    assert informed_patients(seen)["clearance"][i]
    lod_high = lod.copy()
    lod_high[later] = -3.5  # limits within 1 log10 of the value: a floor at 10^-3.5 would not have been seen
    assert not informed_patients(dataclasses.replace(seen, log10_lod=lod_high))["clearance"][i]


def test_clearance_shear_keeps_the_prior_of_log_clearance(inputs):
    """log_clearance = log_clearance_low + 1.5 clearance_sd is a deterministic whose prior is still
    Normal(log 0.25, 0.5) whatever clearance_sd is (a shear, Jacobian 1); clearance_sd ~ LogNormal(log 0.5, 0.5)."""
    import pymc as pm

    model = build_mrd_model(inputs)
    assert "log_clearance_low" in model.named_vars and "log_clearance" in {v.name for v in model.deterministics}
    mu, sd = MrdPriors().log_clearance
    log_k, k_sd = pm.draw([model["log_clearance"], model["clearance_sd"]], draws=20000, random_seed=3)
    assert abs(log_k.mean() - mu) < 0.02 and abs(log_k.std() - sd) < 0.02
    assert abs(np.corrcoef(log_k, k_sd)[0, 1]) < 0.03  # independent of the SD, as before the shear
    sd_mu, sd_sd = MrdPriors().clearance_sd
    assert abs(np.log(k_sd).mean() - sd_mu) < 0.02 and abs(np.log(k_sd).std() - sd_sd) < 0.02
    sd_mean = math.exp(sd_mu + sd_sd**2 / 2)
    # the free quantile's prior is centred 1.5 SDs below; left at Normal(mu, sd) (the broken shear), log_clearance
    # would be centred 0.75 above mu, which the first check flags
    assert abs((log_k - 1.5 * k_sd).mean() - (mu - 1.5 * sd_mean)) < 0.03


# --------------------------------------------------------------------------- bad input


def test_no_mrd_file_is_refused(example):
    with pytest.raises(ModelDataError, match=re.escape("the cohort has no MRD file (mrd.csv is missing)")):
        to_mrd_inputs(_with_mrd(example, None))


def test_empty_mrd_file_is_refused(example):
    with pytest.raises(ModelDataError, match=re.escape("mrd.csv has no assessments, so the MRD kinetic model "
                                                       "cannot be fitted")):
        to_mrd_inputs(_with_mrd(example, example.mrd.iloc[:0]))


def test_unknown_patient_is_refused(example):
    mrd = example.mrd.copy()
    mrd.loc[mrd.index[0], "patient_id"] = "X999"
    with pytest.raises(ModelDataError, match=re.escape("mrd.csv has assessments of patient(s) not in patients.csv: "
                                                       "X999")):
        to_mrd_inputs(_with_mrd(example, mrd))


def test_only_non_responder_assessments_is_refused(example):
    nr = example.outcomes.loc[example.outcomes["response"] == "NR", "patient_id"]
    mrd = example.mrd[example.mrd["patient_id"].isin(nr)]
    with pytest.raises(ModelDataError, match=re.escape("no responder (CR/CRi in outcomes.csv) has an MRD "
                                                       "assessment")):
        to_mrd_inputs(_with_mrd(example, mrd))


def test_arm_without_responder_assessments_is_refused(example):
    control = example.patients.loc[example.patients["arm"] == example.control_arm, "patient_id"]
    mrd = example.mrd[example.mrd["patient_id"].isin(control)]
    with pytest.raises(ModelDataError, match=re.escape("arm 'IFN-a + CAR-T' has no responder with an MRD "
                                                       "assessment, so the arms cannot be compared")):
        to_mrd_inputs(_with_mrd(example, mrd))


def test_pnq_without_interval_is_refused(example):
    mrd = example.mrd.copy()
    row = mrd.index[mrd["censoring"] == "pnq"][0]
    mrd.loc[row, "loq_pct"] = mrd.loc[row, "lod_used"]
    with pytest.raises(ModelDataError, match=re.escape(f"mrd.csv row(s) {row} are PNQ but loq_pct is not above "
                                                       "lod_pct")):
        to_mrd_inputs(_with_mrd(example, mrd))


def test_censored_row_without_limit_is_refused(example):
    mrd = example.mrd.copy()
    row = mrd.index[mrd["censoring"] == "below_lod"][0]
    mrd.loc[row, ["lod_used", "lod_pct"]] = np.nan
    with pytest.raises(ModelDataError, match=re.escape(f"mrd.csv row(s) {row} are below the detection limit or "
                                                       "PNQ but have no positive lod_pct")):
        to_mrd_inputs(_with_mrd(example, mrd))


def test_zero_blasts_and_bad_covariates_are_refused(example):
    patients = example.patients.copy()
    patients.loc[patients.index[0], "baseline_blasts_pct"] = 0.0
    with pytest.raises(ModelDataError, match=re.escape("baseline_blasts_pct is 0 for P001")):
        to_mrd_inputs(dataclasses.replace(example, patients=patients))
    with pytest.raises(ModelDataError, match=re.escape("unknown covariate(s) shoe_size")):
        to_mrd_inputs(example, covariates=["shoe_size"])


def test_priors_named_sets_and_overrides():
    assert MrdPriors.named("skeptical").recurrence_log_or == (0.0, 0.5)
    with pytest.raises(ValueError, match="unknown prior set 'bold'; valid: default, skeptical, optimistic"):
        MrdPriors.named("bold")
    priors = MrdPriors().with_overrides({"relapse_sd": 0.5, "floor_depth_log10": [3, 1]})
    assert priors.floor_depth_log10 == (3.0, 1.0) and priors.relapse_sd == 0.5
    with pytest.raises(ValueError, match="unknown prior"):
        MrdPriors().with_overrides({"nope": 1})


# --------------------------------------------------------------------------- a small fit


def test_small_fit_on_example_converges(fitted):
    """4 x 500 draws: population parameters agree across chains (the 1.01 / 400 bar is the benchmark's,
    at 4 x 1000 draws)."""
    d = diagnose(fitted, var_names=POPULATION, rhat_max=1.03, ess_min=150)
    assert d.divergences == 0, d.problems
    assert d.converged, d.problems
    ll = fitted["log_likelihood"]["mrd"]
    assert ll.dims == ("chain", "draw", "patient") and np.all(np.isfinite(ll.to_numpy()))


def test_loo_is_per_patient(fitted):
    import arviz_stats as azs

    loo = azs.loo(fitted, var_name="mrd")
    assert np.isfinite(loo.elpd) and np.asarray(loo.pareto_k).size == 50


def test_estimands_names_and_ranges(fitted, inputs):
    est = mrd_estimands(fitted, inputs, n_simulated=500)
    arms = ("control", "experimental")
    expected = {"clearance_rate_ratio", "prob_clearance_rate_ratio_above_1", "mrd_recurrence_365d_difference",
                "prob_mrd_recurrence_365d_lower",
                *(f"{k}_{a}" for a in arms for k in ("mrd_negative_28d_flow", "mrd_negative_28d_ngs",
                                                     "mrd_recurrence_365d", "time_to_mrd_negativity_days"))}
    assert set(est) == expected
    for a in arms:
        flow, ngs = est[f"mrd_negative_28d_flow_{a}"]["mean"], est[f"mrd_negative_28d_ngs_{a}"]["mean"]
        assert 0 < ngs < flow < 1  # below 1e-6 implies below 1e-4
        assert 0 < est[f"mrd_recurrence_365d_{a}"]["mean"] < 1
        assert 0 < est[f"time_to_mrd_negativity_days_{a}"]["median"] < 28
    lo, hi = est["clearance_rate_ratio"]["hdi_90"]
    assert lo < est["clearance_rate_ratio"]["median"] < hi
    assert 0 <= est["prob_mrd_recurrence_365d_lower"] <= 1
    again = mrd_estimands(fitted, inputs, n_simulated=500)  # fixed seed: reproducible
    assert again["mrd_recurrence_365d_difference"] == est["mrd_recurrence_365d_difference"]


def test_patient_outputs(fitted, inputs):
    rec = patient_recurrence(fitted, inputs)
    assert list(rec.index) == inputs.patient_ids and rec.index.name == "patient_id"
    assert rec["recurrence_probability"].between(0, 1).all()
    assert rec.loc["P001", "recurrence_probability"] > 0.99  # regrew to 2.6 % at day 394
    assert rec.loc["P003", "recurrence_probability"] > 0.9  # NGS-positive floor
    traj = patient_trajectories(fitted, inputs, days=(28, 365, 394))
    p1 = traj.loc["P001"].set_index("day")
    assert p1.loc[394.0, "mrd_log10_median"] == pytest.approx(np.log10(0.0256), abs=0.5)
    assert (traj["mrd_log10_lower"] <= traj["mrd_log10_median"]).all()
    assert (traj["mrd_log10_median"] <= traj["mrd_log10_upper"]).all() and (traj["mrd_log10_upper"] <= 0).all()



def test_a_run_of_another_model_version_is_not_rebuilt():
    """MRD 1.1.0 has per-patient doubling times, so a 1.0.0 run's draws do not fit its log density: rebuilding
    (moment-matched LOO) says so instead of failing on a missing variable; the current version passes the check."""
    from types import SimpleNamespace

    from toolkit.fitting import _same_model_version, rebuild_model

    old = SimpleNamespace(summary={"model": "mrd", "options": {}}, provenance={"model_version": "1.0.0"})
    with pytest.raises(ValueError, match="fitted with mrd model 1.0.0; this toolkit builds 1.4.0"):
        rebuild_model(old)
    _same_model_version(SimpleNamespace(provenance={"model_version": MODEL_VERSION}), "mrd")
