"""One analysis end to end: cohort -> inputs -> model -> posterior -> summary.

The CLI, the notebooks and the tests all call these functions; each model
gets an ``<Model>Options`` dataclass (the analysis choices) and a
``fit_<model>`` function returning a ``FitResult`` that can be saved as a
run folder (``posterior.nc``, ``summary.json``, ``provenance.json``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from toolkit.data import Cohort
from toolkit.data.endpoints import ENDPOINTS, HSCT_POLICIES
from toolkit.data.inputs import DurabilityInputs, to_durability_inputs
from toolkit.estimands import durability_definitions, durability_estimands
from toolkit.inference import SamplerSettings, build_provenance, diagnose, hash_folder, sample, save_run
from toolkit.models import cart, durability

MODELS = ("durability",)
DEFAULT_BACKENDS = {"durability": durability.DEFAULT_BACKEND}


DEFAULT_TARGET_ACCEPT = {"cart": cart.RECOMMENDED_TARGET_ACCEPT, "joint": cart.RECOMMENDED_TARGET_ACCEPT}


def default_settings(model: str, **overrides) -> SamplerSettings:
    """Sampler settings measured best for ``model``: backend and target acceptance (overrides win)."""
    overrides.setdefault("backend", DEFAULT_BACKENDS.get(model, "nutpie"))
    if model in DEFAULT_TARGET_ACCEPT:
        overrides.setdefault("target_accept", DEFAULT_TARGET_ACCEPT[model])
    return SamplerSettings(**overrides)


@dataclass
class FitResult:
    """A fitted analysis, ready to save or inspect."""

    model_name: str
    posterior: object
    summary: dict
    provenance: dict
    inputs: object = None
    model: object = None

    @property
    def converged(self) -> bool:
        return bool(self.summary["diagnostics"]["converged"])

    def save(self, run_dir: str | Path) -> Path:
        return save_run(run_dir, self.posterior, self.summary, self.provenance)


@dataclass
class DurabilityOptions:
    """Analysis choices for remission durability (see ``toolkit.models.durability``)."""

    variant: str = "weibull"
    endpoint: str = "rfs"
    hsct: str = "censor"
    covariates: list[str] = field(default_factory=list)
    days: list[int] = field(default_factory=lambda: [180, 365])
    prior: str = "default"
    priors: dict[str, list[float]] = field(default_factory=dict)
    hr_below: list[float] = field(default_factory=lambda: [1.0, 0.7])
    rfs_difference_above: list[float] = field(default_factory=lambda: [0.0, 0.1])

    def __post_init__(self):
        checks = {"variant": durability.VARIANTS, "endpoint": ENDPOINTS, "hsct": HSCT_POLICIES,
                  "prior": durability.PRIOR_SETS}
        for name, valid in checks.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; valid: {', '.join(valid)}")
        if not self.days or any(int(d) <= 0 for d in self.days):
            raise ValueError(f"days must be positive horizons in days, got {self.days}")
        self.days = [int(d) for d in self.days]
        self.covariates = list(self.covariates)

    def prior_set(self) -> durability.DurabilityPriors:
        return durability.DurabilityPriors.named(self.prior).with_overrides(self.priors)


def _data_summary(inputs: DurabilityInputs) -> dict:
    per_arm = {}
    for code, name in ((0, "control"), (1, "experimental")):
        mask = inputs.arm == code
        per_arm[name] = {"patients": int(mask.sum()), "events": int(inputs.event[mask].sum())}
        if inputs.endpoint == "efs":
            per_arm[name]["infused"] = int((inputs.responded_arm == code).sum())
    return {"endpoint": inputs.endpoint, "hsct_policy": inputs.hsct, "per_arm": per_arm,
            "response_day": inputs.response_day,
            "covariates": {c: {"mean": float(m), "sd": float(s)}
                           for c, m, s in zip(inputs.covariates, inputs.x_mean, inputs.x_sd)}}


def loo_summary(posterior, var_name: str = "rfs") -> dict:
    """PSIS-LOO of one fit: elpd, its SE, p_loo and Pareto-k warnings (k > 0.7 is unreliable)."""
    import arviz_stats as azs

    with warnings.catch_warnings():  # Pareto-k problems are reported in the returned record
        warnings.simplefilter("ignore", UserWarning)
        loo = azs.loo(posterior, var_name=var_name)
    k = np.asarray(loo.pareto_k).ravel()
    return {"elpd_loo": float(loo.elpd), "se": float(loo.se), "p_loo": float(loo.p),
            "max_pareto_k": float(np.nanmax(k)), "n_pareto_k_above_0.7": int(np.sum(k > 0.7))}


def _assemble(*, model_module, variant, cohort: Cohort, inputs, model, posterior, estimands: dict, options,
              data: dict, settings: SamplerSettings, spec, priors: dict, started: float,
              loo_var: str | None) -> FitResult:
    """Diagnostics, checks, summary and provenance around a sampled posterior (shared by every model)."""
    diagnostics = diagnose(posterior, var_names=list(posterior["posterior"].data_vars))
    checks = {}
    if loo_var is not None:
        try:
            checks["loo"] = loo_summary(posterior, loo_var)
        except Exception as exc:  # noqa: BLE001 - a failed LOO must not lose the fit; it is reported instead
            checks["loo"] = {"error": f"{type(exc).__name__}: {exc}"}
    warnings_ = list(getattr(inputs, "warnings", ()))
    if not diagnostics.converged:
        warnings_.insert(0, "the sampler did not pass its diagnostics: treat every number as provisional")
    summary = {
        "model": model_module.MODEL_NAME,
        "variant": variant,
        "cohort": cohort.name,
        "arms": {"control": cohort.control_arm, "experimental": cohort.experimental_arm},
        "diagnostics": diagnostics.as_dict(),
        "estimands": estimands,
        "options": asdict(options),
        "data": data,
        "model_checks": checks,
        "warnings": warnings_,
    }
    timings = {k: posterior.attrs.get(k) for k in ("compile_seconds", "sampling_seconds", "total_seconds")}
    timings["fit_seconds"] = time.perf_counter() - started
    provenance = build_provenance(model_name=model_module.MODEL_NAME, model_version=model_module.MODEL_VERSION,
                                  settings=settings, data_hash=hash_folder(cohort.path), spec=spec,
                                  priors=priors, timings=timings)
    provenance["cohort_path"] = str(cohort.path)
    return FitResult(model_module.MODEL_NAME, posterior, summary, provenance, inputs=inputs, model=model)


def fit_durability(cohort: Cohort, options: DurabilityOptions | None = None,
                   settings: SamplerSettings | None = None, *, spec: dict | None = None) -> FitResult:
    """Fit the durability model to a validated cohort and summarize it."""
    options = options or DurabilityOptions()
    settings = settings or default_settings("durability")
    started = time.perf_counter()
    inputs = to_durability_inputs(cohort, endpoint=options.endpoint, hsct=options.hsct, covariates=options.covariates)
    priors = options.prior_set()
    model = durability.build_durability_model(inputs, priors, variant=options.variant)
    posterior = sample(model, settings)
    estimands = durability_estimands(posterior["posterior"], inputs, variant=options.variant, days=options.days,
                                     hr_below=options.hr_below, rfs_difference_above=options.rfs_difference_above)
    result = _assemble(model_module=durability, variant=options.variant, cohort=cohort, inputs=inputs, model=model,
                       posterior=posterior, estimands=estimands, options=options, data=_data_summary(inputs),
                       settings=settings, spec=spec, priors=priors.as_dict(), started=started, loo_var="rfs")
    result.summary["definitions"] = durability_definitions(options.variant, options.endpoint,
                                                           response_day=inputs.response_day)
    return result


@dataclass
class CartOptions:
    """Analysis choices for CAR-T kinetics (see ``toolkit.models.cart``)."""

    covariates: list[str] = field(default_factory=list)
    effects_on: list[str] = field(default_factory=lambda: ["cmax", "tmax", "foldx", "alpha", "fb", "persistence"])

    def __post_init__(self):
        from toolkit.models.cart import check_effects_on

        self.covariates = list(self.covariates)
        self.effects_on = list(check_effects_on(self.effects_on))


def fit_cart(cohort: Cohort, options: CartOptions | None = None, settings: SamplerSettings | None = None, *,
             spec: dict | None = None) -> FitResult:
    """Fit the CAR-T kinetic model to a validated cohort and summarize it."""
    from toolkit.data.inputs import to_cart_inputs
    from toolkit.estimands import cart_estimands
    from toolkit.models import cart

    options = options or CartOptions()
    settings = settings or default_settings("cart")
    started = time.perf_counter()
    inputs = to_cart_inputs(cohort, covariates=options.covariates)
    priors = cart.CartPriors()
    model = cart.build_cart_model(inputs, priors, effects_on=options.effects_on)
    posterior = sample(model, settings)
    estimands = cart_estimands(posterior["posterior"], inputs)
    data = {"per_arm": {name: {"patients": int((inputs.arm == code).sum()),
                               "samples": int(np.isin(inputs.sample_patient, np.flatnonzero(inputs.arm == code)).sum()),
                               "below_lloq": int(inputs.censored[np.isin(inputs.sample_patient,
                                                                         np.flatnonzero(inputs.arm == code))].sum())}
                        for code, name in ((0, "control"), (1, "experimental"))},
            "unit": inputs.unit}
    return _assemble(model_module=cart, variant="stein", cohort=cohort, inputs=inputs, model=model,
                     posterior=posterior, estimands=estimands, options=options, data=data, settings=settings,
                     spec=spec, priors=_jsonable_priors(asdict(priors)), started=started, loo_var=None)


def _jsonable_priors(priors: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in priors.items()}


def durability_inputs_from_run(run) -> DurabilityInputs:
    """Rebuild the model inputs of a saved durability run from its own files (no cohort needed)."""
    dt, summary = run.posterior, run.summary
    constant = dt["constant_data"]
    observed = dt["observed_data"]
    covariates = list(summary["options"]["covariates"])
    cov_stats = summary["data"]["covariates"]
    x = constant["x_std"].to_numpy() if covariates else np.zeros((observed["rfs"].size, 0))
    return DurabilityInputs(
        patient_ids=[str(p) for p in observed["rfs"]["patient"].to_numpy()],
        arm=constant["arm"].to_numpy().astype(int),
        time_years=observed["rfs"].to_numpy(),
        event=constant["event"].to_numpy().astype(int),
        covariates=covariates,
        x_std=x,
        x_mean=np.array([cov_stats[c]["mean"] for c in covariates]),
        x_sd=np.array([cov_stats[c]["sd"] for c in covariates]),
        endpoint=summary["data"]["endpoint"],
        hsct=summary["data"]["hsct_policy"],
        arm_labels=(summary["arms"]["control"], summary["arms"]["experimental"]),
        competing=(constant["death_in_remission"].to_numpy().astype(int) if "death_in_remission" in constant
                   else np.zeros(observed["rfs"].size, dtype=int)),
        responded=observed["response"].to_numpy().astype(int) if "response" in observed else np.zeros(0),
        responded_arm=constant["response_arm"].to_numpy().astype(int) if "response_arm" in constant else np.zeros(0),
        response_day=float(summary["data"].get("response_day", 28.0)),
    )


def _check_same_events(run_a, run_b, name_a: str, name_b: str, var_name: str) -> None:
    """Refuse LOO across likelihoods of different events: a model with death in remission as its own hazard
    scores relapse events in ``rfs``; one Weibull for relapse or death scores both there."""
    if var_name != "rfs":
        return

    def events(run):
        const = run.posterior["constant_data"]
        key = "relapse_event" if "relapse_event" in const else "event"
        return "death" in run.posterior["observed_data"], const[key].to_numpy()

    (sep_a, ev_a), (sep_b, ev_b) = events(run_a), events(run_b)
    if sep_a != sep_b or ev_a.shape != ev_b.shape or not np.array_equal(ev_a, ev_b):
        raise ValueError(f"runs '{name_a}' and '{name_b}' score different events in '{var_name}' (one models death "
                         "in remission as its own hazard, the other counts it as an RFS event), so their LOO values "
                         "cannot be compared; fit both with the same endpoint (e.g. efs or relapse)")


def compare_runs(runs: dict, var_name: str = "rfs"):
    """PSIS-LOO comparison of fits to the same observations (e.g. ``weibull`` vs ``cure``).

    Refuses runs whose observed data differ (different endpoint, HSCT policy
    or cohort), since their LOO values are not comparable. Returns arviz's
    table (elpd, elpd_diff and its SE, weights) plus ``max_pareto_k`` and
    ``n_pareto_k_above_0.7`` per run.
    """
    import arviz_stats as azs

    if len(runs) < 2:
        raise ValueError("give at least two runs to compare")
    names = list(runs)
    first = runs[names[0]].posterior["observed_data"][var_name]
    for name in names[1:]:
        other = runs[name].posterior["observed_data"][var_name]
        if other.shape != first.shape or not np.allclose(other.to_numpy(), first.to_numpy()):
            raise ValueError(f"runs '{names[0]}' and '{name}' were fitted to different observations (endpoint, "
                             "HSCT policy or cohort differ), so their LOO values cannot be compared")
        _check_same_events(runs[names[0]], runs[name], names[0], name, var_name)
    posteriors = {name: run.posterior for name, run in runs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        table = azs.compare(posteriors, var_name=var_name)
    for name in names:
        loo = loo_summary(runs[name].posterior, var_name)
        table.loc[name, "max_pareto_k"] = loo["max_pareto_k"]
        table.loc[name, "n_pareto_k_above_0.7"] = loo["n_pareto_k_above_0.7"]
    return table


@dataclass
class MrdOptions:
    """Analysis choices for MRD kinetics (see ``toolkit.models.mrd``)."""

    covariates: list[str] = field(default_factory=list)
    prior: str = "default"

    def __post_init__(self):
        from toolkit.models.mrd import PRIOR_SETS

        self.covariates = list(self.covariates)
        if self.prior not in PRIOR_SETS:
            raise ValueError(f"unknown prior {self.prior!r}; valid: {', '.join(PRIOR_SETS)}")


def fit_mrd(cohort: Cohort, options: MrdOptions | None = None, settings: SamplerSettings | None = None, *,
            spec: dict | None = None) -> FitResult:
    """Fit the MRD kinetic model to a validated cohort and summarize it."""
    from toolkit.data.mrd_inputs import to_mrd_inputs
    from toolkit.models import mrd
    from toolkit.mrd_estimands import mrd_estimands

    options = options or MrdOptions()
    settings = settings or default_settings("mrd")
    started = time.perf_counter()
    inputs = to_mrd_inputs(cohort, covariates=options.covariates)
    priors = mrd.MrdPriors.named(options.prior)
    model = mrd.build_mrd_model(inputs, priors)
    posterior = sample(model, settings)
    estimands = mrd_estimands(posterior["posterior"], inputs)
    data = {"per_arm": {name: {"patients": int((inputs.arm == code).sum()),
                               "assessments": int(np.isin(inputs.assessment_patient,
                                                          np.flatnonzero(inputs.arm == code)).sum())}
                        for code, name in ((0, "control"), (1, "experimental"))},
            "methods": list(inputs.methods),
            "assessments_before_day_28": int((inputs.day < 28).sum()),  # what informs the kill rate itself
            # what a run folder needs to rebuild its inputs (toolkit.mrd_estimands.mrd_inputs_from_run)
            "baseline_log10": {k: (float(v) if np.isfinite(v) else None) for k, v in
                               (("mean", inputs.baseline_log10_mean), ("sd", inputs.baseline_log10_sd))},
            "covariates": {c: {"mean": float(m), "sd": float(s)}
                           for c, m, s in zip(inputs.covariates, inputs.x_mean, inputs.x_sd)}}
    return _assemble(model_module=mrd, variant="recurrence-mixture", cohort=cohort, inputs=inputs, model=model,
                     posterior=posterior, estimands=estimands, options=options, data=data, settings=settings,
                     spec=spec, priors=_jsonable_priors(asdict(priors)), started=started, loo_var=None)


@dataclass
class JointOptions:
    """Analysis choices for the joint model (see ``toolkit.models.joint``)."""

    variant: str = "cure"
    kinetics: str = "joint"
    associations: list[str] = field(default_factory=lambda: ["log_cmax", "cart_loss"])
    covariates: list[str] = field(default_factory=list)
    tau_days: float = 365.0
    priors: dict[str, list[float]] = field(default_factory=dict)
    hr_below: list[float] = field(default_factory=lambda: [1.0])

    def __post_init__(self):
        from toolkit.models import joint

        checks = {"variant": joint.VARIANTS, "kinetics": joint.KINETICS}
        for name, valid in checks.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; valid: {', '.join(valid)}")
        self.associations = list(joint.check_associations(self.associations))
        if self.kinetics == "two-stage" and "mrd_clearance" in self.associations:
            raise ValueError("the two-stage alternative plugs in CAR-T features only; fit the mrd_clearance "
                             "association with kinetics = \"joint\"")
        self.covariates = list(self.covariates)
        if not self.tau_days > 0:
            raise ValueError(f"tau_days must be a positive horizon in days, got {self.tau_days}")

    def prior_set(self):
        from toolkit.models.joint import JointPriors

        return JointPriors().with_overrides(self.priors)


def two_stage_features(cart_posterior, inputs) -> dict:
    """Stage one of the two-stage alternative: each responder's posterior mean log Cmax and posterior
    median CAR-T loss day (days since infusion), from a CAR-T-only fit."""
    from toolkit.models import cart
    from toolkit.models.joint import loss_delay

    theta = cart.patient_theta(cart_posterior)[:, inputs.cart_index, :]
    p = cart.natural_parameters_np(theta)
    loss = p["tmax"] + loss_delay(theta[..., 0], p["alpha"], p["beta"], theta[..., 4], inputs.log_lloq[None, :],
                                  lib=np)
    return {"log_cmax": theta[..., 0].mean(axis=0), "loss_day": np.median(loss, axis=0)}


def fit_joint(cohort: Cohort, options: JointOptions | None = None, settings: SamplerSettings | None = None, *,
              spec: dict | None = None) -> FitResult:
    """Fit the joint kinetics-relapse model (or its two-stage alternative) and summarize it."""
    import xarray as xr

    from toolkit.data.joint_inputs import to_joint_inputs
    from toolkit.joint_estimands import joint_estimands
    from toolkit.models import joint

    options = options or JointOptions()
    settings = settings or default_settings("joint")
    started = time.perf_counter()
    inputs = to_joint_inputs(cohort, covariates=options.covariates,
                             mrd_submodel="mrd_clearance" in options.associations)
    priors = options.prior_set()
    # no pointwise log-likelihood: no comparison uses it for this model, and it compiles a second function
    if options.kinetics == "joint":
        model = joint.build_joint_model(inputs, priors, variant=options.variant, associations=options.associations)
        posterior = sample(model, settings, log_likelihood=False)
    else:
        stage_one = sample(cart.build_cart_model(inputs.cart), settings, log_likelihood=False)
        model = joint.build_joint_model(inputs, priors, variant=options.variant, associations=options.associations,
                                        fixed_features=two_stage_features(stage_one["posterior"], inputs))
        posterior = sample(model, settings, log_likelihood=False)
        merged = posterior["posterior"].to_dataset().merge(stage_one["posterior"].to_dataset())
        posterior["posterior"] = xr.DataTree(merged)
        for key in ("compile_seconds", "sampling_seconds", "total_seconds"):
            if key in posterior.attrs and key in stage_one.attrs:
                posterior.attrs[key] = posterior.attrs[key] + stage_one.attrs[key]
    estimands = joint_estimands(posterior["posterior"], inputs, tau_days=options.tau_days,
                                hr_below=options.hr_below)
    rel = inputs.relapse
    data = {"per_arm": {name: {"patients": int((inputs.cart.arm == code).sum()),
                               "responders": int((rel.arm == code).sum()),
                               "relapses": int(rel.event[rel.arm == code].sum())}
                        for code, name in ((0, "control"), (1, "experimental"))},
            "endpoint": "relapse (cause-specific; death in remission and HSCT censor)",
            "mrd_positive_in_remission": int((inputs.mrd_positive_years < 1e5).sum()),
            "tau_days": float(options.tau_days)}
    return _assemble(model_module=joint, variant=f"{options.variant}/{options.kinetics}", cohort=cohort,
                     inputs=inputs, model=model, posterior=posterior, estimands=estimands, options=options,
                     data=data, settings=settings, spec=spec, priors=priors.as_dict(), started=started,
                     loo_var=None)
