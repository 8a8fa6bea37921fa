"""One analysis end to end: cohort -> inputs -> model -> posterior -> summary.

The CLI, the notebooks and the tests all call these functions; each model
gets an ``<Model>Options`` dataclass (the analysis choices) and a
``fit_<model>`` function returning a ``FitResult`` that can be saved as a
run folder (``posterior.nc``, ``summary.json``, ``provenance.json``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import xarray as xr

from toolkit.data import Cohort
from toolkit.data.endpoints import ENDPOINTS, HSCT_POLICIES
from toolkit.data.from_run import durability_inputs_from_run  # also public here, where it lived before
from toolkit.data.inputs import DurabilityInputs, ModelDataError, to_durability_inputs
from toolkit.estimands import durability_definitions, durability_estimands
from toolkit.inference import (RERUN_POLICIES, RERUN_POLICY, ResultMethods, SamplerSettings, build_provenance,
                               diagnose, hash_folder, open_nutpie_run, sample, sampler_metadata)
from toolkit.models import cart, durability
from toolkit.predictive import add_posterior_predictive, durability_predictive, mrd_predictive
from toolkit.review import (ESTIMAND_DRAWS, add_log_likelihood, add_log_prior, estimand_draws_dataset,
                            recording_estimand_draws, write_summary_table)
from toolkit.summary import Summary

MODELS = ("durability",)
DEFAULT_BACKENDS = {"durability": durability.DEFAULT_BACKEND}


DEFAULT_TARGET_ACCEPT = {"cart": cart.RECOMMENDED_TARGET_ACCEPT, "joint": cart.RECOMMENDED_TARGET_ACCEPT}


def default_settings(model: str, **overrides) -> SamplerSettings:
    """Sampler settings measured best for ``model``: backend and target acceptance (overrides win)."""
    overrides.setdefault("backend", DEFAULT_BACKENDS.get(model, "nutpie"))
    if model == "durability" and overrides["backend"] == "nutpie":
        overrides.setdefault("logp_callback", durability.DEFAULT_LOGP_CALLBACK)
    if model in DEFAULT_TARGET_ACCEPT:
        overrides.setdefault("target_accept", DEFAULT_TARGET_ACCEPT[model])
    return SamplerSettings(**overrides)


@dataclass
class FitResult(ResultMethods):
    """A fitted analysis, ready to save or inspect; the same methods as a run read from disk
    (:class:`toolkit.inference.ResultMethods`: ``summary()``, ``estimand``, ``figures``, ``save``)."""

    model_name: str
    posterior: object
    summary: dict
    provenance: dict
    inputs: object = None
    model: object = None

    def __post_init__(self):
        self.summary = Summary(self.summary)


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


STAGE_ONE_STATS = "sample_stats_stage_one"  # the two-stage joint fit's stage-1 (CAR-T) sampler statistics


def merge_two_stage(posterior, stage_one):
    """The two-stage joint fit's DataTree: stage 2's groups, stage 1's posterior variables merged into
    ``posterior``, and stage 1's sampler statistics kept as group ``sample_stats_stage_one`` (so its
    divergences reach the diagnostics, :func:`with_stage_one_diagnostics`); wall times are summed."""
    import xarray as xr

    merged = posterior["posterior"].to_dataset().merge(stage_one["posterior"].to_dataset())
    posterior["posterior"] = xr.DataTree(merged)
    if "sample_stats" in stage_one.children:
        posterior[STAGE_ONE_STATS] = xr.DataTree(stage_one["sample_stats"].to_dataset())
    for key in ("compile_seconds", "sampling_seconds", "total_seconds"):
        if key in posterior.attrs and key in stage_one.attrs:
            posterior.attrs[key] = posterior.attrs[key] + stage_one.attrs[key]
    return posterior


def with_stage_one_diagnostics(diagnostics, posterior, *, bfmi_min: float = 0.3):
    """Add stage 1's divergences and E-BFMI (group ``sample_stats_stage_one``) to the verdict.

    Stage 1's R-hat and ESS are already covered: its variables are in the merged posterior. A
    divergence in either stage fails the fit, as it would in one posterior; ``divergences`` is the sum.
    Returns ``(diagnostics, stage_one)`` with ``stage_one`` = {divergences, min_bfmi} (None without the group).
    """
    from toolkit.inference import sampler_stat_problems

    if STAGE_ONE_STATS not in posterior.children:
        return diagnostics, None
    divergences, min_bfmi, own = sampler_stat_problems(posterior[STAGE_ONE_STATS].to_dataset(),
                                                       bfmi_min=bfmi_min, require_energy=False)
    problems = list(diagnostics.problems) + [f"stage 1 (CAR-T fit): {p}" for p in own]
    combined = replace(diagnostics, divergences=diagnostics.divergences + divergences,
                       min_bfmi=float(np.fmin(diagnostics.min_bfmi, min_bfmi)),
                       converged=diagnostics.converged and len(problems) == len(diagnostics.problems),
                       problems=problems)
    return combined, {"divergences": divergences, "min_bfmi": min_bfmi if np.isfinite(min_bfmi) else None}


def _assemble(*, model_module, variant, cohort: Cohort, inputs, model, posterior, estimands: dict, options,
              data: dict, settings: SamplerSettings, spec, priors: dict, started: float,
              loo_var: str | None, estimand_warnings: list[str] | tuple[str, ...] = (),
              estimand_record: dict | None = None) -> FitResult:
    """Diagnostics, checks, summary and provenance around a sampled posterior (shared by every model).

    Also stores what prior sensitivity needs (``toolkit.review``): group ``log_prior`` and, from
    ``estimand_record``, group ``estimand_draws``.
    """
    add_log_prior(posterior, model)
    if estimand_record is not None:
        posterior[ESTIMAND_DRAWS] = xr.DataTree(estimand_draws_dataset(estimands, estimand_record, posterior))
    diagnostics = diagnose(posterior, var_names=list(posterior["posterior"].data_vars))
    diagnostics, stage_one = with_stage_one_diagnostics(diagnostics, posterior)
    checks = {}
    if loo_var is not None:
        try:
            checks["loo"] = loo_summary(posterior, loo_var)
        except Exception as exc:  # noqa: BLE001 - a failed LOO must not lose the fit; it is reported instead
            checks["loo"] = {"error": f"{type(exc).__name__}: {exc}"}
    warnings_ = list(getattr(inputs, "warnings", ())) + list(estimand_warnings)
    if not diagnostics.converged:
        warnings_.insert(0, "the sampler did not pass its diagnostics: treat every number as provisional")
    summary = {
        "model": model_module.MODEL_NAME,
        "variant": variant,
        "cohort": cohort.name,
        "arms": {"control": cohort.control_arm, "experimental": cohort.experimental_arm},
        "diagnostics": diagnostics.as_dict() | ({"stage_one": stage_one} if stage_one is not None else {}),
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
    provenance["sampler"] = sampler_metadata(posterior)  # e.g. the JAX backend's chain method and start jitter
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
    with recording_estimand_draws() as estimand_record:
        estimands = durability_estimands(posterior["posterior"], inputs, variant=options.variant, days=options.days,
                                         hr_below=options.hr_below, rfs_difference_above=options.rfs_difference_above)
    add_posterior_predictive(posterior, durability_predictive(posterior["posterior"], inputs))
    result = _assemble(model_module=durability, variant=options.variant, cohort=cohort, inputs=inputs, model=model,
                       posterior=posterior, estimands=estimands, options=options, data=_data_summary(inputs),
                       settings=settings, spec=spec, priors=priors.as_dict(), started=started, loo_var="rfs",
                       estimand_record=estimand_record)
    result.summary["definitions"] = durability_definitions(options.variant, options.endpoint,
                                                           response_day=inputs.response_day)
    return result


@dataclass
class CartOptions:
    """Analysis choices for CAR-T kinetics (see ``toolkit.models.cart``)."""

    covariates: list[str] = field(default_factory=list)
    effects_on: list[str] = field(default_factory=lambda: ["cmax", "tmax", "foldx", "alpha", "fb", "persistence"])
    priors: dict[str, list[float]] = field(default_factory=dict)
    # extensions allowed while the verdict fails, each to twice the draws (sample_extending: the same chains
    # continued, or a new run after divergences)
    extend_sampling: int = 0

    def __post_init__(self):
        from toolkit.models.cart import CartPriors, check_effects_on

        check_extend_sampling(self.extend_sampling)
        self.covariates = list(self.covariates)
        self.effects_on = list(check_effects_on(self.effects_on))
        self.priors = dict(self.priors)
        CartPriors().with_overrides(self.priors)  # unknown names raise ValueError listing the valid ones

    def prior_set(self, unit: str = "copies/ug"):
        """The default CAR-T priors for the cohort's ``unit`` (``CartPriors.for_unit``), then the spec's
        ``[priors]`` departures (which win, e.g. a ``mu_cmax`` measured for this assay)."""
        from toolkit.models.cart import CartPriors

        return CartPriors.for_unit(unit).with_overrides(self.priors)


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
    priors = options.prior_set(inputs.unit)
    model = cart.build_cart_model(inputs, priors, effects_on=options.effects_on)
    posterior, settings, attempts = sample_extending(model, settings, options.extend_sampling)
    with recording_estimand_draws() as estimand_record:
        estimands = cart_estimands(posterior["posterior"], inputs)
    data = {"per_arm": {name: {"patients": int((inputs.arm == code).sum()),
                               "samples": int(np.isin(inputs.sample_patient, np.flatnonzero(inputs.arm == code)).sum()),
                               "below_lloq": int(inputs.censored[np.isin(inputs.sample_patient,
                                                                         np.flatnonzero(inputs.arm == code))].sum())}
                        for code, name in ((0, "control"), (1, "experimental"))},
            "unit": inputs.unit,
            "samples_cut_after_events": inputs.n_cut_samples}  # the kinetic cut (toolkit.data.inputs)
    result = _assemble(model_module=cart, variant="stein", cohort=cohort, inputs=inputs, model=model,
                       posterior=posterior, estimands=estimands, options=options, data=data, settings=settings,
                       spec=spec, priors=_jsonable_priors(asdict(priors)), started=started, loo_var=None,
                       estimand_record=estimand_record)
    return record_extensions(result, attempts, settings, options.extend_sampling)


def _jsonable_priors(priors: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in priors.items()}


def comparable_loo_variable(runs: dict) -> str:
    """The pointwise log-likelihood variable that the runs share; ValueError naming why they cannot be compared.

    PSIS-LOO values are comparable only between fits of the same kind of model (``summary.json`` ``model``)
    to the same cohort (``provenance.json`` ``data_hash``), each with a pointwise log-likelihood of the same
    observations (the joint model keeps one only with ``pointwise_log_likelihood = true`` in its spec).
    """
    if len(runs) < 2:
        raise ValueError("give at least two runs to compare")
    names = list(runs)
    kinds = {name: run.summary.get("model") for name, run in runs.items()}
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"{name} ({kind})" for name, kind in kinds.items())
        raise ValueError(f"runs of different kinds of model cannot be compared by PSIS-LOO: {listed}; their "
                         "likelihoods are of different data. Compare variants of one model fitted to one cohort "
                         "(e.g. durability weibull vs cure)")
    hashes = {name: run.provenance.get("data_hash") for name, run in runs.items()}
    if len(set(hashes.values())) > 1:
        raise ValueError(f"runs {', '.join(names)} were fitted to different cohort data (provenance data_hash "
                         "differs), so their LOO values cannot be compared; refit them on the same cohort folder")
    common = None
    for name, run in runs.items():
        if "log_likelihood" not in run.posterior.children:
            raise ValueError(f"run '{name}' ({kinds[name]}) has no pointwise log-likelihood, so PSIS-LOO cannot "
                             "compare it")
        found = set(run.posterior["log_likelihood"].to_dataset().data_vars)
        common = found if common is None else common & found
    if "rfs" in common:  # durability: the relapse-free survival term, as every durability comparison
        return "rfs"
    # joint: the relapse term (kinetics conditioned on; pointwise only with pointwise_log_likelihood = true);
    # MRD: the per-patient MRD trajectory term (the response term is the same Bernoulli in every MRD variant)
    for preferred in ("relapse", "mrd"):
        if preferred in common:
            return preferred
    if len(common) != 1:
        raise ValueError(f"runs {', '.join(names)} do not share exactly one pointwise log-likelihood variable "
                         f"(shared: {', '.join(sorted(common)) or 'none'}), so PSIS-LOO cannot compare them")
    return next(iter(common))




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


def _same_model_version(run, kind):
    """Raise ValueError when the run was fitted with another version of its model than this toolkit builds
    (its parameters, hence its log density, may differ: e.g. MRD 1.1.0 added per-patient doubling times)."""
    import importlib

    fitted = (getattr(run, "provenance", None) or {}).get("model_version")
    if kind not in ("durability", "cart", "mrd", "joint") or fitted is None:
        return
    current = importlib.import_module(f"toolkit.models.{kind}").MODEL_VERSION
    if str(fitted) != current:
        raise ValueError(f"the run was fitted with {kind} model {fitted}; this toolkit builds {current}, "
                         "so its log density cannot be rebuilt (refit the cohort to compare)")


def rebuild_model(run):
    """The PyMC model of a saved run, rebuilt from its own files (no cohort needed).

    The inputs come back from the run's ``constant_data``/``observed_data`` (:mod:`toolkit.data.from_run`),
    the priors and analysis choices from the options in ``summary.json``, so the rebuilt model has the same
    log density as the fitted one at every posterior draw (``tests/test_rebuild.py`` checks it for CAR-T and
    joint runs). A two-stage joint run rebuilds its stage-two model (the relapse part, with the stored fixed
    kinetic features). Raises ValueError naming why a run cannot be rebuilt (a joint run with the MRD
    submodel, :func:`toolkit.data.from_run.joint_rebuild_blocker`; an unknown model).
    """
    from toolkit.data.from_run import cart_inputs_from_run, joint_inputs_from_run, mrd_inputs_from_run

    kind = run.summary.get("model")
    _same_model_version(run, kind)
    if kind == "durability":
        options = DurabilityOptions(**run.summary["options"])
        return durability.build_durability_model(durability_inputs_from_run(run), options.prior_set(),
                                                 variant=options.variant)
    if kind == "mrd":
        from toolkit.models import mrd

        return mrd.build_mrd_model(mrd_inputs_from_run(run), MrdOptions(**run.summary["options"]).prior_set())
    if kind == "cart":
        options = CartOptions(**run.summary["options"])
        inputs = cart_inputs_from_run(run)
        return cart.build_cart_model(inputs, options.prior_set(inputs.unit), effects_on=options.effects_on)
    if kind == "joint":
        from toolkit.models import joint

        options = JointOptions(**run.summary["options"])
        inputs = joint_inputs_from_run(run)
        if options.kinetics == "joint":
            return joint.build_joint_model(inputs, options.prior_set(), variant=options.variant,
                                           associations=options.associations,
                                           cart_priors=options.cart_prior_set(inputs.cart.unit))
        constant = run.posterior["constant_data"]
        fixed = {"log_cmax": constant["log_cmax_fixed"].to_numpy(), "loss_day": constant["loss_day_fixed"].to_numpy()}
        return joint.build_joint_model(inputs, options.prior_set(), variant=options.variant,
                                       associations=options.associations, fixed_features=fixed)
    raise ValueError(f"no model rebuild for a {kind!r} run; models: durability, cart, mrd, joint")


def moment_matched_loo(run, var_name: str, *, k_threshold: float = 0.7):
    """PSIS-LOO of one run with high-Pareto-k observations moment matched, and what was done.

    Returns ``(elpd_data, n_matched, note)``. ``note`` is "none above k <threshold>", "moment matched", or,
    when moment matching could not be applied, "plain PSIS-LOO (not moment matched: <reason>)" (then the
    plain PSIS-LOO is returned, its k values stand and ``n_matched`` is 0). See :func:`loo_with_moment_matching`.
    """
    import arviz_stats as azs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loo = azs.loo(run.posterior, var_name=var_name, pointwise=True)
    n_flagged = int(np.sum(np.asarray(loo.pareto_k).ravel() > k_threshold))
    if n_flagged == 0:
        return loo, 0, f"none above k {k_threshold:g}"
    try:
        model = rebuild_model(run)
    except Exception as exc:  # noqa: BLE001 - a run that cannot be rebuilt keeps its plain PSIS-LOO, labelled
        return loo, 0, f"plain PSIS-LOO (not moment matched: model not rebuilt: {exc})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            matched = azs.loo_moment_match(run.posterior, loo, var_name=var_name, k_threshold=k_threshold,
                                           model=model, pointwise=True)
    except Exception as exc:  # noqa: BLE001 - a failed refinement must not lose the comparison: labelled fallback
        return loo, 0, f"plain PSIS-LOO (not moment matched: {type(exc).__name__}: {exc})"
    return matched, n_flagged, "moment matched"


def loo_with_moment_matching(run, var_name: str, *, k_threshold: float = 0.7):
    """PSIS-LOO of one run; observations with Pareto k above ``k_threshold`` are moment matched.

    Implicitly adaptive importance sampling (Paananen et al. 2021, Statistics and Computing 31:16)
    moves the draws towards each flagged observation's leave-one-out posterior with affine
    transformations, without refitting (``arviz_stats.loo_moment_match``, which evaluates the
    model's log density: the model is rebuilt with :func:`rebuild_model`, for all four models but a
    joint run with the MRD submodel). Exact refits (``arviz_stats.reloo``) would need one fit per
    flagged patient, a compile and a sampling run each; moment matching is tried first.

    Returns ``(elpd_data, n_matched)``; ``n_matched`` is 0 when nothing was above the threshold
    or moment matching could not be applied (then the plain PSIS-LOO is returned and its k values
    stand; :func:`moment_matched_loo` also says why).
    """
    loo, n_matched, _ = moment_matched_loo(run, var_name, k_threshold=k_threshold)
    return loo, n_matched


def compare_runs(runs: dict, var_name: str | None = None, *, k_threshold: float = 0.7):
    """PSIS-LOO comparison of fits to the same observations (e.g. ``weibull`` vs ``cure``).

    Refuses runs of different kinds or cohorts (:func:`comparable_loo_variable`, which also picks
    ``var_name`` when it is None) and runs whose observed data differ (different endpoint, HSCT policy
    or cohort), since their LOO values are not comparable. Observations with Pareto k above
    ``k_threshold`` are moment matched where the model can be rebuilt (:func:`loo_with_moment_matching`).
    Returns arviz's table (elpd, elpd_diff and its SE, weights) plus ``max_pareto_k`` and
    ``n_pareto_k_above_0.7`` (after moment matching), ``moment_matched`` (observations it was applied
    to), ``moment_matching`` (what was done, or why it could not be: :func:`moment_matched_loo`) and
    ``converged`` (the run's diagnostics verdict) per run.
    """
    import arviz_stats as azs

    found = comparable_loo_variable(runs)
    var_name = var_name or found
    names = list(runs)
    for name, run in runs.items():
        if len(run.posterior["log_likelihood"][var_name].dims) <= 2:  # (chain, draw): summed over observations
            raise ValueError(f"run '{name}' stores its '{var_name}' log-likelihood summed over observations, so "
                             "PSIS-LOO cannot use it; refit it with pointwise_log_likelihood = true under [options] "
                             "in its spec")
    first = runs[names[0]].posterior["observed_data"][var_name]
    for name in names[1:]:
        other = runs[name].posterior["observed_data"][var_name]
        if other.shape != first.shape or not np.allclose(other.to_numpy(), first.to_numpy()):
            raise ValueError(f"runs '{names[0]}' and '{name}' were fitted to different observations (endpoint, "
                             "HSCT policy or cohort differ), so their LOO values cannot be compared")
        _check_same_events(runs[names[0]], runs[name], names[0], name, var_name)
    elpds, matched, notes = {}, {}, {}
    for name, run in runs.items():
        elpds[name], matched[name], notes[name] = moment_matched_loo(run, var_name, k_threshold=k_threshold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        table = azs.compare(elpds)
    for name in names:
        k = np.asarray(elpds[name].pareto_k).ravel()
        table.loc[name, "max_pareto_k"] = float(np.nanmax(k))
        table.loc[name, "n_pareto_k_above_0.7"] = int(np.sum(k > 0.7))
        table.loc[name, "moment_matched"] = matched[name]
        table.loc[name, "moment_matching"] = notes[name]
        table.loc[name, "converged"] = bool(runs[name].summary["diagnostics"]["converged"])
    return table


@dataclass
class MrdOptions:
    """Analysis choices for MRD kinetics (see ``toolkit.models.mrd``)."""

    covariates: list[str] = field(default_factory=list)
    prior: str = "default"
    priors: dict[str, list[float]] = field(default_factory=dict)
    # extensions allowed while the verdict fails, each to twice the draws (sample_extending: the same chains
    # continued, or a new run after divergences)
    extend_sampling: int = 1

    def __post_init__(self):
        from toolkit.models.mrd import PRIOR_SETS

        self.covariates = list(self.covariates)
        if self.prior not in PRIOR_SETS:
            raise ValueError(f"unknown prior {self.prior!r}; valid: {', '.join(PRIOR_SETS)}")
        self.priors = dict(self.priors)
        self.prior_set()  # unknown names, or a pair for a single-number prior, raise ValueError
        check_extend_sampling(self.extend_sampling)

    def prior_set(self):
        """The named prior set (``prior``), then the spec's ``[priors]`` departures, each a [mu, sigma] pair of
        a Normal or LogNormal prior; single-number priors (HalfNormal scales, fixed constants) are not
        spec-overridable."""
        from dataclasses import fields

        from toolkit.models.mrd import MrdPriors

        base = MrdPriors.named(self.prior)
        pairs = sorted(f.name for f in fields(base) if isinstance(getattr(base, f.name), tuple))
        unknown = sorted(set(self.priors) - set(pairs))
        if unknown:
            raise ValueError(f"unknown or not overridable MRD prior(s) {', '.join(unknown)}; a [priors] entry is "
                             f"[mu, sigma] of one of: {', '.join(pairs)}")
        return base.with_overrides(self.priors)


MAX_EXTENSIONS = 4  # at most 1 + 2 + 4 + 8 + 16 = 31 times the spec's draws in all (3 before 5 December 2026)


def check_extend_sampling(value) -> int:
    """``value`` if it is a valid ``extend_sampling`` (a whole number 0..MAX_EXTENSIONS), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EXTENSIONS:
        raise ValueError(f"extend_sampling must be a whole number from 0 to {MAX_EXTENSIONS} (reruns with "
                         f"doubled draws when a fit fails its diagnostics), got {value!r}")
    return value


EXTEND_MIN_DRAWS = 1000  # chains x draws below which a run is a quick look that is never extended


def run_extending(settings: SamplerSettings, extensions: int, draw, var_names: list[str] | None = None,
                  policy: str = RERUN_POLICY, open_run=None):
    """Run ``draw(run_settings) -> posterior``; while the verdict fails, rerun or continue what failed, at most
    ``extensions`` times: the one rerun policy of fits (:func:`sample_extending`) and of calibration studies
    (``toolkit.calibration.runner``), so a study measures the sampler the analysis runs.

    After a run whose R-hat, ESS, E-BFMI or tree depth failed, the next has twice its draws per chain; after a
    run with divergences, target_accept moves halfway to 1 (0.9 -> 0.95 -> 0.975: a smaller step size, the
    standard remedy, at the cost of more leapfrog steps per draw), and a run that failed on divergences alone
    keeps its draws (more draws would only add chances of a divergence, not remove its cause). The kept run is
    the last, judged by the same verdict (:func:`toolkit.inference.diagnose` over ``var_names``, default every
    posterior variable). A quick look of fewer than ``EXTEND_MIN_DRAWS`` draws in all is not rerun (its ESS
    cannot reach 400 by design). The policies (``toolkit.inference.RERUN_POLICIES``; a calibration study
    records its own and is resumed under it):

    - ``"continue"`` (the default since 5 December 2026; needs ``open_run(run_settings, max_draws)`` -> a
      :class:`toolkit.inference.NutpieRun`, else it is ``"what-failed"``): doubling the draws continues the
      same chains from where they are, with their tuning, so the run judged at 2n draws is the first run's n
      draws and n more (the same draws as a fresh run of 2n draws with that seed). Only divergences start a
      new run (its seed ``random_seed + k``, at the higher target_accept). Tuning is paid once, not at every
      rerun: at 1000 + 1000 a fit judged at 8000 draws has sampled 9000 iterations a chain, against 19000.
    - ``"what-failed"`` (December 2026): each rerun k is a fresh run with seed ``random_seed + k``.
    - ``"doubling"`` (before): like "what-failed", but the draws doubled at every rerun, divergences or not.

    Under the restarting policies the budget is at most ``(extensions + 1) * tune + (2**(extensions + 1) - 1) *
    draws`` iterations per chain (tuning is repeated; at 1000 + 1000: 2.5 times one run for one rerun, 5 times
    for two, 9.5 for three, 18 for four); continuing, ``tune + 2**extensions * draws`` when no divergence restarts it.

    Returns
    -------
    posterior, diagnostics of the kept run, settings of the kept run, attempts
        ``attempts``: one dict per run or checkpoint (chains, tune, draws, target_accept, seed, verdict, max
        R-hat, min bulk/tail ESS, divergences, sampling seconds from ``posterior.attrs``; continuing, also
        ``continued``, whether it continued the run before, and ``draws_made``, the draws all chains had made
        when it was judged, those of chains ahead of the checkpoint included), recorded in a run's provenance.
    """
    from dataclasses import replace

    if policy not in RERUN_POLICIES:
        raise ValueError(f"unknown rerun policy {policy!r}; one of {', '.join(RERUN_POLICIES)}")
    continuing = (policy == "continue" and open_run is not None and extensions > 0
                  and settings.chains * settings.draws >= EXTEND_MIN_DRAWS)
    if policy == "continue" and not continuing:
        policy = "what-failed"  # a backend that cannot continue a run (or no reruns) restarts it
    attempts, run, d, handle, continued, seconds_before = [], settings, None, None, False, 0.0
    try:
        for k in range(extensions + 1):
            if k:
                target = 1.0 - (1.0 - run.target_accept) / 2.0 if d.divergences else run.target_accept
                keep_draws = d.divergences_only and policy in ("what-failed", "continue")
                continued = continuing and not d.divergences
                run = replace(settings, draws=run.draws if keep_draws else run.draws * 2,
                              random_seed=run.random_seed if continued else int(settings.random_seed) + k,
                              target_accept=round(target, 6))
            if continuing:
                if not continued:
                    if handle is not None:
                        handle.stop()
                    handle, seconds_before = open_run(run, run.draws * 2 ** (extensions - k)), 0.0
                else:
                    handle.resume()
                posterior = handle.first(run.draws)
            else:
                posterior = draw(run)
            d = diagnose(posterior, var_names=var_names or list(posterior["posterior"].data_vars))
            attempts.append({"chains": run.chains, "tune": run.tune, "draws": run.draws,
                             "target_accept": run.target_accept, "seed": int(run.random_seed),
                             "converged": d.converged, "max_rhat": d.as_dict()["max_rhat"],
                             "min_ess_bulk": d.as_dict()["min_ess_bulk"],
                             "min_ess_tail": d.as_dict()["min_ess_tail"], "divergences": d.divergences,
                             # this attempt's own time: a continued run's posterior counts from the run's start
                             "sampling_seconds": _seconds(posterior, since=seconds_before)}
                            | ({"continued": continued, "draws_made": posterior.attrs.get("draws_made")}
                               if continuing else {}))
            seconds_before = _seconds(posterior, since=0.0) or 0.0
            if d.converged or run.chains * run.draws < EXTEND_MIN_DRAWS:
                break
    finally:
        if handle is not None:
            handle.stop()
    return posterior, d, run, attempts


def _seconds(posterior, since: float) -> float | None:
    """The posterior's sampling seconds after ``since`` (None when the backend did not time it)."""
    seconds = posterior.attrs.get("sampling_seconds")
    return None if seconds is None else float(seconds) - since


def sample_extending(model, settings: SamplerSettings, extensions: int = 1, **sample_options):
    """:func:`run_extending` of ``toolkit.inference.sample(model, run, **sample_options)``; with the nutpie
    backend a failed verdict continues the run (``toolkit.inference.open_nutpie_run``).

    Returns
    -------
    posterior, settings of the kept run, attempts (see :func:`run_extending`)
    """
    open_run = None
    if settings.backend == "nutpie":
        def open_run(run: SamplerSettings, max_draws: int):
            return open_nutpie_run(model, run, max_draws, **sample_options)
    posterior, _, run, attempts = run_extending(settings, extensions,
                                                lambda run: sample(model, run, **sample_options),
                                                open_run=open_run)
    return posterior, run, attempts


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
    priors = options.prior_set()
    model = mrd.build_mrd_model(inputs, priors)
    posterior, settings, attempts = sample_extending(model, settings, options.extend_sampling)
    estimand_warnings: list[str] = []
    with recording_estimand_draws() as estimand_record:
        estimands = mrd_estimands(posterior["posterior"], inputs, warnings_out=estimand_warnings)
    add_posterior_predictive(posterior, mrd_predictive(posterior["posterior"], inputs, priors=priors))
    data = {"per_arm": {name: {"patients": int((inputs.arm == code).sum()),
                               "assessments": int(np.isin(inputs.assessment_patient,
                                                          np.flatnonzero(inputs.arm == code)).sum())}
                        for code, name in ((0, "control"), (1, "experimental"))},
            "methods": list(inputs.methods),
            "assessments_cut_after_events": inputs.n_cut_assessments,  # the kinetic cut (toolkit.data.inputs)
            "assessments_before_day_28": int((inputs.day < 28).sum()),  # what informs the kill rate itself
            # what a run folder needs to rebuild its inputs (toolkit.mrd_estimands.mrd_inputs_from_run)
            "baseline_log10": {k: (float(v) if np.isfinite(v) else None) for k, v in
                               (("mean", inputs.baseline_log10_mean), ("sd", inputs.baseline_log10_sd))},
            "covariates": {c: {"mean": float(m), "sd": float(s)}
                           for c, m, s in zip(inputs.covariates, inputs.x_mean, inputs.x_sd)}}
    result = _assemble(model_module=mrd, variant="recurrence-mixture", cohort=cohort, inputs=inputs, model=model,
                       posterior=posterior, estimands=estimands, options=options, data=data, settings=settings,
                       spec=spec, priors=_jsonable_priors(asdict(priors)), started=started, loo_var=None,
                       estimand_warnings=estimand_warnings, estimand_record=estimand_record)
    return record_extensions(result, attempts, settings, options.extend_sampling)


def _shown(value, digits: int) -> str:
    """A diagnostic in a sentence: rounded, or 'n/a' where it could not be computed (None)."""
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _extended_how(attempts: list[dict]) -> str:
    """'sampling was continued 2 time(s) ...' for :func:`record_extensions`."""
    continued = sum(bool(a.get("continued")) for a in attempts[1:])
    rerun = len(attempts) - 1 - continued
    parts = ([f"sampling was rerun {rerun} time(s) (more draws, or a smaller step size after divergences)"]
             if rerun else []) + ([f"its chains were continued {continued} time(s) to twice the draws"]
                                  if continued else [])
    return " and ".join(parts)


def record_extensions(result: FitResult, attempts: list[dict], kept: SamplerSettings, extensions: int) -> FitResult:
    """Record :func:`sample_extending`'s runs in the provenance, and a warning when the first run was rerun."""
    result.provenance["sampling_attempts"] = attempts
    if len(attempts) > 1:
        first = attempts[0]
        result.summary["warnings"].append(
            f"the first run ({first['chains']} chains x {first['draws']} draws) did not pass its diagnostics "
            f"(max R-hat {_shown(first['max_rhat'], 3)}, min bulk ESS {_shown(first['min_ess_bulk'], 0)}, "
            f"divergences {first.get('divergences', 0)}); {_extended_how(attempts)}, "
            f"keeping the last run ({kept.draws} draws per chain, "
            f"target_accept {kept.target_accept}; extend_sampling = {extensions})")
    return result


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
    # keep every observation's log-likelihood (for `toolkit compare`; tens of MB) instead of per-variable sums
    pointwise_log_likelihood: bool = False
    # extensions allowed while the verdict fails, each to twice the draws (sample_extending;
    # the joint fit only: the two-stage alternative's two samplings are not extended)
    extend_sampling: int = 0

    def __post_init__(self):
        from toolkit.models import joint

        check_extend_sampling(self.extend_sampling)

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
        self.priors = dict(self.priors)
        from toolkit.models.cart import CartPriors
        from toolkit.models.joint import JointPriors

        valid = set(asdict(JointPriors())) | set(asdict(CartPriors()))
        unknown = sorted(set(self.priors) - valid)
        if unknown:
            raise ValueError(f"unknown prior(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))} (the relapse "
                             "part's and the CAR-T kinetic part's)")

    def prior_set(self):
        """The relapse part's priors with the ``[priors]`` entries that name one of them."""
        from toolkit.models.joint import JointPriors

        names = set(asdict(JointPriors()))
        return JointPriors().with_overrides({k: v for k, v in self.priors.items() if k in names})

    def cart_prior_set(self, unit: str = "copies/ug"):
        """The CAR-T kinetic part's priors for the cohort's ``unit`` with the ``[priors]`` entries that name one
        of them (as :meth:`CartOptions.prior_set`)."""
        from toolkit.models.cart import CartPriors

        names = set(asdict(CartPriors()))
        return CartPriors.for_unit(unit).with_overrides({k: v for k, v in self.priors.items() if k in names})


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
    from toolkit.data.joint_inputs import to_joint_inputs
    from toolkit.joint_estimands import joint_estimands
    from toolkit.models import joint

    options = options or JointOptions()
    settings = settings or default_settings("joint")
    started = time.perf_counter()
    inputs = to_joint_inputs(cohort, covariates=options.covariates,
                             mrd_submodel="mrd_clearance" in options.associations)
    if inputs.cart.unit != "copies/ug":
        # the relapse part centres log Cmax at the qPCR typical peak (LOG_CMAX_REFERENCE) and its association
        # priors come from qPCR studies
        raise ModelDataError(f"the joint model is defined on qPCR levels (copies/ug) and this cohort's CAR-T unit "
                             f"is {inputs.cart.unit}; fit the CAR-T model alone (toolkit fit cart) on these data")
    priors = options.prior_set()
    cart_priors = options.cart_prior_set(inputs.cart.unit)
    # no pointwise log-likelihood: no comparison uses it for this model, and it compiles a second function
    if options.kinetics == "joint":
        model = joint.build_joint_model(inputs, priors, variant=options.variant, associations=options.associations,
                                        cart_priors=cart_priors)
        posterior, settings, attempts = sample_extending(model, settings, options.extend_sampling,
                                                         log_likelihood=False)
    else:
        attempts = []
        stage_one = sample(cart.build_cart_model(inputs.cart, cart_priors), settings, log_likelihood=False)
        model = joint.build_joint_model(inputs, priors, variant=options.variant, associations=options.associations,
                                        fixed_features=two_stage_features(stage_one["posterior"], inputs))
        posterior = merge_two_stage(sample(model, settings, log_likelihood=False), stage_one)
    # the log-likelihood is computed after sampling: summed per variable unless pointwise is asked for
    add_log_likelihood(posterior, model, pointwise=bool(options.pointwise_log_likelihood))
    estimand_warnings: list[str] = []
    with recording_estimand_draws() as estimand_record:
        estimands = joint_estimands(posterior["posterior"], inputs, tau_days=options.tau_days,
                                    hr_below=options.hr_below, warnings_out=estimand_warnings)
    rel = inputs.relapse
    data = {"per_arm": {name: {"patients": int((inputs.cart.arm == code).sum()),
                               "responders": int((rel.arm == code).sum()),
                               "relapses": int(rel.event[rel.arm == code].sum())}
                        for code, name in ((0, "control"), (1, "experimental"))},
            "endpoint": "relapse (cause-specific; death in remission and HSCT censor)",
            "mrd_positive_in_remission": int((inputs.mrd_positive_years < 1e5).sum()),
            "samples_cut_after_events": inputs.cart.n_cut_samples,
            "assessments_cut_after_events": inputs.mrd.n_cut_assessments if inputs.mrd is not None else None,
            "tau_days": float(options.tau_days)}
    result = _assemble(model_module=joint, variant=f"{options.variant}/{options.kinetics}", cohort=cohort,
                       inputs=inputs, model=model, posterior=posterior, estimands=estimands, options=options,
                       data=data, settings=settings, spec=spec,
                       priors=priors.as_dict() | {"cart": cart_priors.as_dict()}, started=started,
                       loo_var=None, estimand_warnings=estimand_warnings, estimand_record=estimand_record)
    return record_extensions(result, attempts, settings, options.extend_sampling) if attempts else result


FAST_SAMPLER = {"chains": 2, "tune": 150, "draws": 150}  # `--fast` (demo, analyze): a smoke run, not for decisions


def fit_plan(model: str):
    """``(Options class, fit function)`` of ``model``; ValueError listing the models for an unknown name."""
    plans = {"durability": (DurabilityOptions, fit_durability), "cart": (CartOptions, fit_cart),
             "mrd": (MrdOptions, fit_mrd), "joint": (JointOptions, fit_joint)}
    if model not in plans:
        raise ValueError(f"unknown model {model!r}; models: {', '.join(plans)}")
    return plans[model]


def resolve_options(model: str, spec: dict | None, overrides: dict | None = None, *, source: str | None = None):
    """The Options of ``model`` from a spec's ``[options]``, ``[decision]``, ``[priors]`` and ``overrides``.

    Raises :class:`toolkit.specs.SpecError` naming ``source`` (the spec file, or "command line") for an
    option the model does not have, a bad value or an unknown prior name, before any work starts.
    """
    import dataclasses

    from toolkit.specs import SpecError, merged_options

    source = source or (spec or {}).get("path") or "command line"
    options_class, _ = fit_plan(model)
    chosen = merged_options(spec, overrides or {})
    valid = [f.name for f in dataclasses.fields(options_class)]
    unknown = sorted(set(chosen) - set(valid))
    if unknown:
        raise SpecError(f"{source}: option(s) {', '.join(unknown)} are not options of model {model}; "
                        f"valid: {', '.join(valid)}")
    try:
        options = options_class(**chosen)
    except ValueError as err:  # e.g. an unknown prior name: say which file it came from
        raise SpecError(f"{source}: {err}") from err
    if hasattr(options, "prior_set"):  # an unknown prior name is named before any work starts
        try:
            options.prior_set()
        except ValueError as err:
            raise SpecError(f"{source}: [priors] {err}") from err
    return options
