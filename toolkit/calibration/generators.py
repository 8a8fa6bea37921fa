r"""Each model's own generator, for simulation-based calibration (SBC).

A *calibration problem* couples three things that must agree for SBC ranks to
be uniform (Talts et al. 2018, arXiv:1804.06788; Modrák et al. 2023, Bayesian
Analysis, doi:10.1214/23-BA1404):

1. the **prior** the parameters are drawn from: drawn with ``pm.draw`` from the
   PyMC model the toolkit fits (built by the model module's own builder with the
   spec's prior set), so prior and fit cannot drift apart;
2. the **likelihood** the data are drawn from, at a fixed **design** (who is in
   which arm, each patient's censoring time), with the censoring the model assumes;
3. the **fit**: the same builder, compiled once; each simulation only swaps its
   ``pm.Data`` values.

For each simulation the problem also gives the **test quantities** f(theta, y)
whose ranks are recorded: every scalar parameter, every decision estimand
(computed by the model module's own functions, so they are the quantities
``summary.json`` reports) and the joint log-likelihood of the simulated data,
log p(y | theta), evaluated with the generator model's compiled ``logp`` (a
dropped or mis-weighted likelihood term in the fit shows up there even when the
parameters' marginal ranks look fine; Modrák et al. 2023, section 4).

Durability design
-----------------
From a cohort folder (``--design``) or the default simulated trial: the
responders (endpoint ``rfs``), their arms, their covariates, and for each a
fixed censoring time c_i in years from the response day: the end of that
patient's follow-up for RFS (last follow-up, or a consolidative HSCT in
remission, the default ``censor`` policy). Censoring at a fixed c_i is
non-informative, as the model assumes. Event times are drawn by inverting the
survival function of the model's likelihood:

.. math::

    \text{cured}_i \sim \text{Bernoulli}(\pi_i) \quad(\text{cure variant}),\qquad
    T_i = \lambda\,(E_i\, e^{-lp_i})^{1/k},\; E_i \sim \text{Exp}(1),

so that :math:`S_u(t) = \exp(-(t/\lambda)^k e^{lp_i})`; a cured patient never
relapses. The observation is :math:`y_i = \min(T_i, c_i)`, event
:math:`\delta_i = 1[T_i \le c_i]`, with no rounding: the model's likelihood is
continuous. ``floor_days`` reproduces the half-day floor ``to_durability_inputs``
applies to real data (a relapse on the response day); the 1000-simulation study
showed it skews the ``log_shape`` ranks where the prior allows very early relapses
(docs/calibration.md), so the default generator leaves it out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

import numpy as np

from toolkit.data.inputs import DAYS_PER_YEAR, DurabilityInputs

__all__ = ["DurabilityCalibration", "DurabilityDesign", "default_design_cohort", "durability_design"]

#: the smallest time the model sees (half a day), as in ``to_durability_inputs``
MIN_TIME_YEARS = 0.5 / DAYS_PER_YEAR


# --------------------------------------------------------------------------- designs


@dataclass(frozen=True)
class DurabilityDesign:
    """What stays fixed across simulations: patients, arms, covariates, censoring times.

    ``censor_years`` is each patient's end of follow-up for the endpoint, in
    years from the response day. ``source`` says where the design came from
    (a folder name or ``default trial``), never a patient identifier.
    """

    arm: np.ndarray
    censor_years: np.ndarray
    covariates: tuple[str, ...] = ()
    x_std: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    x_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    x_sd: np.ndarray = field(default_factory=lambda: np.zeros(0))
    arm_labels: tuple[str, str] = ("control", "experimental")
    source: str = "default trial"
    infused_arm: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    response_day: float = 28.0

    @property
    def n_patients(self) -> int:
        return int(self.arm.size)

    def summary(self) -> dict:
        """JSON-able description (counts and follow-up, no identifiers)."""
        c = self.censor_years * DAYS_PER_YEAR
        return {"source": self.source, "patients": self.n_patients,
                "per_arm": {"control": int((self.arm == 0).sum()), "experimental": int((self.arm == 1).sum())},
                "covariates": list(self.covariates), "infused": int(self.infused_arm.size),
                "response_day": float(self.response_day),
                "follow_up_days": {"min": float(c.min()), "median": float(np.median(c)), "max": float(c.max())}}


def durability_design(cohort, *, covariates=()) -> DurabilityDesign:
    """The durability design of a cohort: responders, arms, covariates and censoring times.

    A responder's censoring time is the end of their RFS follow-up under the
    ``censor`` HSCT policy: the HSCT day when a transplant in remission came
    first, else the last follow-up day (for a patient who relapsed or died, the
    follow-up they would have had), from the response day.
    """
    from toolkit.data.inputs import check_covariates

    merged = cohort.merged()
    resp = merged[merged["response"].isin(["CR", "CRi"])].reset_index(drop=True)
    if len(resp) < 2:
        raise ValueError(f"the design cohort {cohort.path.name} has {len(resp)} responder(s); "
                         "a durability design needs responders in both arms")
    covariates = list(covariates)
    check_covariates(resp, covariates, cohort.covariate_columns)
    arm = (resp["arm"] == cohort.experimental_arm).to_numpy(int)
    if arm.min() == arm.max():
        raise ValueError(f"the design cohort {cohort.path.name} has responders in one arm only")
    first = np.fmin(resp["relapse_day"].to_numpy(float), resp["death_day"].to_numpy(float))
    hsct = resp["hsct_day"].to_numpy(float)
    end = resp["last_followup_day"].to_numpy(float)
    in_remission_hsct = np.isfinite(hsct) & ~(first <= hsct)
    end = np.where(in_remission_hsct, hsct, end)
    censor = np.maximum((end - resp["response_day"].to_numpy(float)) / DAYS_PER_YEAR, MIN_TIME_YEARS)
    x = resp[covariates].to_numpy(float) if covariates else np.zeros((len(resp), 0))
    mean, sd = x.mean(axis=0), x.std(axis=0)
    return DurabilityDesign(arm=arm, censor_years=censor, covariates=tuple(covariates),
                            x_std=(x - mean) / np.where(sd > 0, sd, 1.0), x_mean=mean, x_sd=sd,
                            arm_labels=tuple(cohort.arms), source=cohort.path.name,
                            infused_arm=(merged["arm"] == cohort.experimental_arm).to_numpy(int),
                            response_day=float(np.nanmedian(resp["response_day"].to_numpy(float))))


def default_design_cohort(folder) -> object:
    """Write the default simulated trial (``toolkit simulate`` defaults) into ``folder`` and load it."""
    from pathlib import Path

    from toolkit.data import load_cohort
    from toolkit.simulate import simulate_trial

    folder = Path(folder)
    if not (folder / "study.toml").exists():
        simulate_trial(with_truth=False).write(folder)
    cohort = load_cohort(folder)
    return cohort


def model_loglik_function(problem):
    """A function (draws, data) -> log p(y | theta) per draw, from the generator model's log density graph.

    The graph is the sum of the observed variables' log densities, built from the model's random variables
    (``pm.logp``), so it reads parameters on their natural scale: each free variable's draws, or, for the
    names in ``problem.loglik_reads`` (optional), a deterministic's draws in place of everything upstream of
    it (the CAR-T model's ``theta_patient``: the likelihood does not depend on how the patient parameters
    are sampled, e.g. which are centred). It is vectorized over a leading draw dimension
    (``vectorize_graph``), so one call evaluates every draw; the data come through ``problem.data_updates``.
    Any calibration problem can use it.
    """
    import pymc as pm
    import pytensor.tensor as pt
    from pytensor.graph.traversal import ancestors
    from pytensor.graph.replace import graph_replace, vectorize_graph

    model = problem.generator_model()
    graph = pt.add(*[pm.logp(rv, model.rvs_to_values[rv]).sum() for rv in model.observed_RVs])
    read = {model[n]: model[n].type(name=n) for n in getattr(problem, "loglik_reads", ())}
    graph = graph_replace(graph, read, strict=True) if read else graph
    upstream = set(ancestors([graph]))  # the free variables the likelihood still reads once ``read`` is replaced
    free = {rv: rv.type(name=rv.name) for rv in model.free_RVs if rv in upstream}
    graph = graph_replace(graph, free) if free else graph
    placeholders = {**read, **free}
    names = [v.name for v in placeholders.values()]
    batched = [pt.tensor(name=v.name, dtype=v.dtype, shape=(None, *v.type.shape)) for v in placeholders.values()]
    graph = vectorize_graph(graph, replace=dict(zip(placeholders.values(), batched)))
    shared = _shared_variables(graph)
    # default (numba) mode: measured 0.03 s for 4000 draws against 0.5 s in python mode, where some
    # elementwise ops loop per element in Python; its one-off compile is cached per worker
    fn = pm.pytensorf.compile(batched, graph)

    def loglik(draws: dict[str, np.ndarray], data: dict) -> np.ndarray:
        for name, value in problem.data_updates(data).items():
            if name in shared:  # a container the likelihood does not use (e.g. ``event`` beside NRM) is skipped
                shared[name].set_value(np.asarray(value, dtype=shared[name].type.dtype))
        # fresh copies: arrays unpickled by Dask can be unaligned, which PyTensor refuses
        return np.asarray(fn(*[np.array(draws[n], dtype=v.dtype, copy=True) for n, v in zip(names, batched)]),
                          float)

    return loglik


# --------------------------------------------------------------------------- durability problem


@dataclass(frozen=True)
class InputsDesign:
    """A design held as a model's inputs (identifiers replaced by ``sim0000``...; observations are only the
    compiled model's placeholder): the base of the CAR-T and MRD designs."""

    inputs: object
    source: str = "default trial"

    @property
    def n_patients(self) -> int:
        return self.inputs.n_patients

    def _common_summary(self) -> dict:
        """Source, patients per arm and the span of days (no identifiers)."""
        i = self.inputs
        return {"source": self.source, "patients": i.n_patients,
                "per_arm": {"control": int((i.arm == 0).sum()), "experimental": int((i.arm == 1).sum())},
                "days": {"min": float(i.day.min()), "max": float(i.day.max())}}


def prior_draws(problem, n: int, *, random_seed) -> list[dict[str, np.ndarray]]:
    """``n`` joint draws of ``problem.parameter_names`` from its generator model's prior (one ``pm.draw``),
    one dict per draw; shared by every calibration problem."""
    import pymc as pm

    model = problem.generator_model()
    names = problem.parameter_names(model)
    rng = np.random.default_rng(random_seed)  # accepts an int or a sequence such as (seed, block)
    values = pm.draw([model[name] for name in names], draws=n, random_seed=rng, mode="FAST_COMPILE")
    if n == 1:  # pm.draw drops the draws dimension for a single draw
        values = [np.asarray(v)[None] for v in values]
    return [{name: np.asarray(v[i]) for name, v in zip(names, values)} for i in range(n)]


def _posterior_like(draws: dict[str, np.ndarray]):
    """Wrap flat draws (n, ...) as an xarray Dataset with (chain, draw) dims for the model's functions."""
    import xarray as xr

    return xr.Dataset({k: (("chain", "draw", *[f"{k}_d{i}" for i in range(v.ndim - 1)]), v[None])
                       for k, v in draws.items()})


def _shared_variables(graph) -> dict:
    """Named shared variables (``pm.Data`` and the like) a graph depends on, by name."""
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.traversal import ancestors

    return {v.name: v for v in ancestors([graph]) if isinstance(v, SharedVariable) and v.name}


def arm_oracle_pits(values: np.ndarray, arm: np.ndarray, mu: float, sd: float,
                    delta: float | None = None) -> dict[str, float]:
    r"""PITs of a hierarchical parameter's typical values under an oracle that knows every patient's true value
    (no fit; a function of the prior draw alone). With values_i ~ Normal(L_a, sd^2) around their arm's typical
    value (covariate terms already removed), L_0 = mu, L_1 = mu + delta, n_a patients in arm a and
    m_a = mean_{i in a} values_i:

        (L_a - m_a) / (sd / sqrt n_a) ~ Normal(0, 1),
        (delta - (m_1 - m_0)) / (sd sqrt(1/n_0 + 1/n_1)) ~ Normal(0, 1)

    exactly, whatever the draw; without an arm effect (``delta`` None) one L = mu from every patient. Returns
    ``{"control": ..., "experimental": ..., "effect": ...}`` (the last two only with ``delta``; {} when an arm
    has no patient). Where patients' data pin their own values, a fit's rank of L follows this oracle's, so a
    study's ranks of L repeat how its prior draws fell (docs/calibration.md, "The draws' own test")."""
    from scipy.stats import norm

    values, arm = np.asarray(values, float), np.asarray(arm)
    if delta is None:
        return {"control": float(norm.cdf((mu - values.mean()) / (sd / np.sqrt(values.size))))}
    n = np.array([np.sum(arm == a) for a in (0, 1)])
    if n.min() == 0:
        return {}
    m = np.array([values[arm == a].mean() for a in (0, 1)])
    return {"control": float(norm.cdf((mu - m[0]) / (sd / np.sqrt(n[0])))),
            "experimental": float(norm.cdf((mu + delta - m[1]) / (sd / np.sqrt(n[1])))),
            "effect": float(norm.cdf((delta - (m[1] - m[0])) / (sd * np.sqrt(1 / n[0] + 1 / n[1]))))}


def design_cache_key(description: dict, arrays) -> str:
    """A short hash of a problem's description and its design arrays: the key of a worker's compiled fit model."""
    h = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def swappable_observations(model):
    """The model with every observed variable whose data is a constant observed through a shared variable.

    The builders give some observed variables their data as numpy constants
    (e.g. the durability model's ``death``, which needs a value variable of its
    own), which a compiled model cannot swap. ``pm.observe`` re-observes each such
    variable on a shared variable named ``<name>_observed`` holding the same
    values, so nutpie's ``with_data`` can replace it; the model is otherwise the
    builder's, unchanged.
    """
    import pymc as pm
    import pytensor
    from pytensor.compile.sharedvalue import SharedVariable

    swaps = {}
    for rv in model.observed_RVs:
        value = model.rvs_to_values[rv]
        if not isinstance(value, SharedVariable) and hasattr(value, "data"):
            swaps[rv.name] = pytensor.shared(np.array(value.data), name=f"{rv.name}_observed")
    return pm.observe(model, swaps) if swaps else model


@dataclass(frozen=True)
class DurabilityCalibration:
    """SBC problem for ``toolkit.models.durability`` (endpoint ``rfs``, HSCT ``censor``).

    Parameters
    ----------
    design : DurabilityDesign
    variant : {"weibull", "cure"}
    priors : DurabilityPriors
        The generator's priors (the spec's prior set).
    fit_priors : DurabilityPriors, optional
        The fit's priors; default the generator's. Differing only in negative controls.
    days : horizons (days) of the RFS estimands.
    """

    design: DurabilityDesign
    variant: str = "cure"
    priors: object = None
    fit_priors: object = None
    days: tuple[int, ...] = (180, 365, 730)
    floor_days: float = 0.0
    endpoint: str = "rfs"
    model_name: str = "durability"

    def __post_init__(self):
        from toolkit.models.durability import VARIANTS, DurabilityPriors

        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; valid: {', '.join(VARIANTS)}")
        if self.endpoint not in ("rfs", "efs"):
            raise ValueError(f"the durability generator covers endpoints rfs and efs, not {self.endpoint!r}")
        if self.priors is None:
            object.__setattr__(self, "priors", DurabilityPriors())
        if self.fit_priors is None:
            object.__setattr__(self, "fit_priors", self.priors)
        object.__setattr__(self, "days", tuple(int(d) for d in self.days))

    # ---- identity -------------------------------------------------------------------------

    def describe(self) -> dict:
        """JSON-able configuration (what a resumed study must match)."""
        return {"model": self.model_name, "variant": self.variant, "endpoint": self.endpoint,
                "class": type(self).__qualname__,
                "priors": self.priors.as_dict(), "fit_priors": self.fit_priors.as_dict(),
                "days": list(self.days), "floor_days": self.floor_days, "design": self.design.summary()}

    def cache_key(self) -> str:
        """Identifies the compiled fit model on a worker (structure, priors, design arrays)."""
        return design_cache_key(self.describe(), (self.design.arm, self.design.censor_years, self.design.x_std))

    # ---- models ---------------------------------------------------------------------------

    def inputs(self, time_years=None, event=None) -> DurabilityInputs:
        """Model inputs at the design (placeholder data: everyone censored at c_i)."""
        d = self.design
        n = d.n_patients
        return DurabilityInputs(
            patient_ids=[f"sim{i:04d}" for i in range(n)], arm=d.arm.astype(int),
            time_years=d.censor_years.copy() if time_years is None else np.asarray(time_years, float),
            event=np.zeros(n, int) if event is None else np.asarray(event, int),
            covariates=list(d.covariates), x_std=d.x_std, x_mean=d.x_mean, x_sd=d.x_sd,
            endpoint=self.endpoint, hsct="censor", arm_labels=d.arm_labels, competing=np.zeros(n, int),
            responded=np.zeros(d.infused_arm.size, int), responded_arm=d.infused_arm.astype(int),
            response_day=d.response_day)

    def generator_model(self):
        """The PyMC model whose prior and log-likelihood define the generator."""
        from toolkit.models.durability import build_durability_model

        return swappable_observations(build_durability_model(self.inputs(), self.priors, variant=self.variant))

    def fit_model(self):
        """The PyMC model that is fitted (the toolkit's own builder; overridden only by negative controls)."""
        from toolkit.models.durability import build_durability_model

        return swappable_observations(build_durability_model(self.inputs(), self.fit_priors, variant=self.variant))

    def separate_nrm(self) -> bool:
        """Whether death in remission has its own hazard in this model (the builder's ``death`` variable)."""
        return "death" in self.generator_model().named_vars

    def data_updates(self, data: dict) -> dict:
        """Shared-variable values of one simulated data set, by name (``pm.Data`` and swappable observations)."""
        updates = {"time_years": data["time_years"], "event": data["event"]}
        if "death_in_remission" in data:
            updates.update(relapse_event=data["relapse_event"], death_in_remission=data["death_in_remission"],
                           death_observed=data["time_years"])
        if "responded" in data:
            updates["response_observed"] = data["responded"]
        return updates

    # ---- generator ------------------------------------------------------------------------

    def parameter_names(self, model) -> list[str]:
        """The free variables and the natural-scale parameters the model derives from them (e.g. the NRM
        scale, sampled through ``death_log_scale_ref``), which the generator needs and the ranks test."""
        from toolkit.models.durability import NATURAL_PARAMETERS

        names = [rv.name for rv in model.free_RVs]
        return names + [d.name for d in model.deterministics if d.name in NATURAL_PARAMETERS]

    def draw_prior(self, n: int, *, random_seed: int) -> list[dict[str, np.ndarray]]:
        """``n`` parameter draws from the generator model's prior (``pm.draw``), one dict each."""
        return prior_draws(self, n, random_seed=random_seed)

    def linear_predictors(self, theta: dict) -> tuple[np.ndarray, np.ndarray | None]:
        """lp_i (log relative hazard) and, for ``cure``, pi_i (cure probability) per patient."""
        d = self.design
        lp = float(theta["log_hr"]) * d.arm
        if d.covariates:
            lp = lp + d.x_std @ np.asarray(theta["beta_std"])
        if self.variant != "cure":
            return lp, None
        eta = float(theta["logit_cure"]) + float(theta["cure_log_or"]) * d.arm
        if d.covariates:
            eta = eta + d.x_std @ np.asarray(theta["gamma_std"])
        return lp, 1.0 / (1.0 + np.exp(-eta))

    def simulate(self, theta: dict, *, random_seed) -> dict[str, np.ndarray]:
        """One data set from the likelihood at ``theta``: observed time (years) and event flags.

        Where death in remission has its own hazard (``death_*`` parameters), a
        death time D_i ~ Weibull PH(k_n, lam_n, log_hr_death a_i) is drawn for every
        patient, cured or not; the first of relapse and death ends follow-up, and
        ``relapse_event`` / ``death_in_remission`` say which.
        """
        rng = np.random.default_rng(random_seed)
        d = self.design
        k, lam = np.exp(float(theta["log_shape"])), np.exp(float(theta["log_scale_years"]))
        lp, pi = self.linear_predictors(theta)
        t = lam * (rng.exponential(size=d.n_patients) * np.exp(-lp)) ** (1.0 / k)
        if pi is not None:
            t = np.where(rng.uniform(size=d.n_patients) < pi, np.inf, t)
        death = np.full(d.n_patients, np.inf)
        if "death_log_shape" in theta:
            dk, dl = np.exp(float(theta["death_log_shape"])), np.exp(float(theta["death_log_scale_years"]))
            dlp = float(theta["log_hr_death"]) * d.arm
            death = dl * (rng.exponential(size=d.n_patients) * np.exp(-dlp)) ** (1.0 / dk)
        first = np.minimum(t, death)
        event = (first <= d.censor_years).astype(int)
        # the smallest positive double keeps log(t) finite should a draw underflow to 0
        floor = max(self.floor_days / DAYS_PER_YEAR, np.finfo(float).tiny)
        out = {"time_years": np.maximum(np.minimum(first, d.censor_years), floor), "event": event}
        if "death_log_shape" in theta:
            out["death_in_remission"] = (event * (death < t)).astype(int)
            out["relapse_event"] = (event * (t <= death)).astype(int)
        if "logit_response" in theta:  # efs: response of every infused patient
            eta = float(theta["logit_response"]) + float(theta["response_log_or"]) * d.infused_arm
            out["responded"] = (rng.uniform(size=d.infused_arm.size) < 1 / (1 + np.exp(-eta))).astype(int)
        return out

    # ---- test quantities ------------------------------------------------------------------

    def estimand_draws(self, draws: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Decision estimands per draw, by the model module's own functions (names as in summary.json)."""
        from toolkit.models import durability as dm

        post = _posterior_like(draws)
        inputs = self.inputs()
        arms = ((0, "control"), (1, "experimental"))
        out = {"hazard_ratio": np.exp(np.asarray(draws["log_hr"], float))}
        curves = {}
        for arm, name in arms:
            curves[name] = dm.survival_curves(post, inputs, list(self.days), variant=self.variant, arm=arm)
            for j, day in enumerate(self.days):
                out[f"rfs_{day}d_{name}"] = curves[name][:, j]
        for j, day in enumerate(self.days):
            out[f"rfs_{day}d_difference"] = curves["experimental"][:, j] - curves["control"][:, j]
        for arm, name in arms:
            # +inf where the curve never reaches 0.5 (a plateau above it): ranks break such ties at random
            out[f"median_rfs_days_{name}"] = dm.median_survival_days(post, inputs, variant=self.variant, arm=arm)
        if self.variant == "cure":
            cf = {name: dm.cure_fractions(post, inputs, arm=arm) for arm, name in arms}
            out["cure_fraction_control"], out["cure_fraction_experimental"] = cf["control"], cf["experimental"]
            out["cure_fraction_difference"] = cf["experimental"] - cf["control"]
        if "death_log_shape" in draws and hasattr(dm, "cumulative_incidences"):
            inc = {}
            for arm, name in arms:  # only the estimand days of the one-day grid
                _, cir, nrm = dm.cumulative_incidences(post, inputs, max(self.days), arm=arm, days=self.days)
                inc[name] = {"cir": cir, "nrm": nrm}
            for what in ("cir", "nrm"):
                for j, day in enumerate(self.days):
                    for _, name in arms:
                        out[f"{what}_{day}d_{name}"] = inc[name][what][:, j]
                    out[f"{what}_{day}d_difference"] = inc["experimental"][what][:, j] - inc["control"][what][:, j]
        if "logit_response" in draws:
            p = {name: dm.response_probabilities(post, arm=arm) for arm, name in arms}
            out["response_rate_control"], out["response_rate_experimental"] = p["control"], p["experimental"]
            out["response_rate_difference"] = p["experimental"] - p["control"]
            efs = {name: dm.efs_curves(post, inputs, list(self.days), variant=self.variant, arm=arm,
                                       response_day=inputs.response_day) for arm, name in arms}
            for j, day in enumerate(self.days):
                for name in ("control", "experimental"):
                    out[f"efs_{day}d_{name}"] = efs[name][:, j]
                out[f"efs_{day}d_difference"] = efs["experimental"][:, j] - efs["control"][:, j]
        return out

    def loglik_function(self):
        """A function (draws, data) -> log p(y | theta) per draw (:func:`model_loglik_function`)."""
        return model_loglik_function(self)

    def with_fit_priors(self, fit_priors) -> DurabilityCalibration:
        return replace(self, fit_priors=fit_priors)
