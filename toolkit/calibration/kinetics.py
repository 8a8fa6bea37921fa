r"""Own generators of the CAR-T kinetic model and of the joint model, for simulation-based calibration.

They follow the protocol of :class:`toolkit.calibration.generators.DurabilityCalibration`
(``describe``, ``cache_key``, ``generator_model``, ``fit_model``, ``parameter_names``,
``draw_prior``, ``simulate``, ``data_updates``, ``estimand_draws``, ``loglik_function``),
so the runner, the results store, the metrics and the report treat them alike.

CAR-T design
------------
From a cohort folder (``--design``) or the default simulated trial: every
infused patient, their arm and covariates, each sample's day and its own LLOQ
(``to_cart_inputs``: the rows the model is fitted to). What is simulated is the
level of each sample from the model's likelihood at a prior draw theta*:

.. math::

    \log y_s = \log C_{p(s)}(t_s;\,\theta^*_{p(s)}) + \sigma^*\varepsilon_s,\quad \varepsilon_s\sim N(0,1),

and a sample with :math:`\log y_s < \log \mathrm{LLOQ}_s` is reported below the limit,
left-censored at its own row's LLOQ (Beal 2001, M3), exactly the censoring the
model's likelihood assumes. The patient parameters theta*_p come from the same
``pm.draw`` as the population parameters (the builder's hierarchy). The design
cohort's own observations are the placeholder data of the compiled model:
they fix the builder's data-dependent sampler coordinates (which patient
parameters are centred, and the starting values); the posterior is the same
whichever coordinates are used.

Test quantities: the population parameters (``mu_kinetic``, ``omega_kinetic``,
``arm_effect``, ``sigma_log``, ``covariate_effect``; one per kinetic parameter),
every decision estimand of :func:`toolkit.estimands.cart_estimands` that is a
posterior quantity (per-arm typical-patient quantities, ``cmax_gmr``,
``auc28_gmr``, ``tmax_difference_days``, ``persistence_half_life_ratio``) and
the joint log-likelihood. Patient-level parameters are sampled and diagnosed
but not ranked (hundreds of them would only dilute the study-wide threshold).

Joint design
------------
The CAR-T design above plus the responders of the cohort: their arm, response
day, usual LLOQ (which defines loss of CAR-T) and a fixed end of follow-up for
relapse c_i (last follow-up; a consolidative HSCT or a death in remission
first ends it, the cause-specific censoring the model assumes). Relapse times
come from inverting the model's own cumulative hazard (with the same 30-day
smoothing of the CAR-T-loss step, :func:`toolkit.models.joint.relapse_cumhaz`):
cured ~ Bernoulli(pi_i) never relapse (cure variant); otherwise T_i solves
H_i(T_i) = E_i, E_i ~ Exp(1), by bisection; the observation is min(T_i, c_i).
Test quantities: the relapse parameters, the CAR-T population parameters, the
mediation estimands of :func:`toolkit.joint_estimands.mediation_draws`, the cure
fractions, ``cmax_gmr``, ``persistence_half_life_ratio`` and the joint
log-likelihood.

With the MRD pathway (association ``mrd_clearance``, ``models/joint_mrd.toml``)
the design also holds the MRD submodel's (``joint_design(..., mrd_submodel=True)``:
the responders with an assessment, as :mod:`toolkit.calibration.mrd` builds it),
and a prior draw also holds the MRD submodel's values (``mrd::...``). Its
assessments and responses come from the MRD model's own generator
(:meth:`toolkit.calibration.mrd.MrdCalibration.simulate`), and the relapse
hazard of the uncured adds g_k (log k_i - log 0.25), k_i the responder's kill
rate (``log_clearance_responder``: the MRD submodel's patient value, or a draw
from its population for a responder without assessments), exactly as the model's
linear predictor. The fit is the joint model with the submodel's censoring as
data (``mrd_swappable``). Added test quantities: ``log_hr_per_log_clearance``,
the MRD population parameters (``mrd::...``), ``hazard_ratio_indirect_cart``,
``hazard_ratio_indirect_mrd`` and ``clearance_rate_ratio``. The ``mrd``
association (MRD recurrence as an observed marker) is not generated.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, replace

import numpy as np

from toolkit.calibration.generators import (InputsDesign, arm_oracle_pits, design_cache_key, model_loglik_function,
                                           prior_draws, swappable_observations)
from toolkit.data.inputs import DAYS_PER_YEAR, CartInputs, DurabilityInputs

__all__ = ["CartCalibration", "CartDesign", "JointCalibration", "JointDesign", "cart_design", "joint_design",
           "log_cart_curve_np"]

LN2 = math.log(2.0)
#: CAR-T population parameters that are ranked (when the model has them)
CART_RANKED = ("mu_kinetic", "omega_kinetic", "arm_effect", "sigma_log", "covariate_effect")
#: relapse-part parameters of the joint model that are ranked (when the model has them)
JOINT_RANKED = ("log_hr", "log_shape", "log_scale_years", "logit_cure", "cure_log_or", "log_hr_per_log_cmax",
                "log_hr_cart_loss", "log_hr_per_log_clearance", "beta_std")
MIN_TIME_YEARS = 0.5 / DAYS_PER_YEAR
#: the arm quantities of the CAR-T model that are increasing functions of one typical value (e^theta; FB's
#: sigmoid), so their ranks are that value's (``CartCalibration.oracle_pits``)
TYPICAL_ARM_QUANTITIES = {"cmax": "cmax_copies_per_ug", "tmax": "tmax_days",
                          "persistence": "half_life_persistence_days", "fb": "persistence_fraction"}
MRD_PREFIX = "mrd::"  # variables and data containers of the joint model's MRD submodel (toolkit.models.joint)


def _submodel_part(values: dict) -> dict:
    """The MRD submodel's entries of ``values`` (keys ``mrd::name``) under their own names."""
    return {k[len(MRD_PREFIX):]: v for k, v in values.items() if k.startswith(MRD_PREFIX)}


def _default(fn, name):
    """A keyword default of ``fn`` (so a Monte-Carlo setting of an estimand is defined once, where it is used)."""
    return inspect.signature(fn).parameters[name].default


def log_cart_curve_np(theta: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``toolkit.models.kinetics.log_cart_curve`` on unconstrained patient parameters (..., 6), in numpy."""
    from toolkit.models.kinetics import log_cart_curve

    th = np.asarray(theta, float)
    beta = LN2 * np.exp(-th[..., 5])
    return log_cart_curve(t, th[..., 0], np.exp(th[..., 1]), th[..., 2], beta + np.exp(th[..., 3]), beta, th[..., 4])


def _dataset(draws: dict[str, np.ndarray], dims: dict[str, tuple[str, ...]], coords: dict):
    """Flat draws (n, ...) as an xarray Dataset with (chain, draw) dims and named coords."""
    import xarray as xr

    data = {}
    for name, value in draws.items():
        value = np.asarray(value, float)
        names = dims.get(name, tuple(f"{name}_d{i}" for i in range(value.ndim - 1)))
        data[name] = (("chain", "draw", *names), value[None])
    return xr.Dataset(data, coords={k: v for k, v in coords.items()
                                    if any(k in d for d in dims.values())})


# --------------------------------------------------------------------------- CAR-T


@dataclass(frozen=True)
class CartDesign(InputsDesign):
    """What stays fixed across simulations: patients, arms, covariates, sampling days, each sample's LLOQ.

    ``inputs`` are the design cohort's :class:`CartInputs` with identifiers replaced
    by ``sim0000``...; their observations are only the compiled model's placeholder.
    """

    inputs: CartInputs
    source: str = "default trial"

    def summary(self) -> dict:
        """JSON-able description (counts, days, share below the LLOQ; no identifiers)."""
        i = self.inputs
        return {**self._common_summary(), "samples": i.n_samples, "covariates": list(i.covariates), "unit": i.unit,
                "design_share_below_lloq": float(np.mean(i.censored))}


def _anonymous(inputs, n: int):
    return [f"sim{j:04d}" for j in range(n)]


def cart_design(cohort, *, covariates=()) -> CartDesign:
    """The CAR-T design of a cohort (``to_cart_inputs``: every infused patient, their samples and limits)."""
    from toolkit.data.inputs import to_cart_inputs

    inputs = to_cart_inputs(cohort, covariates=list(covariates))
    if not np.isfinite(inputs.log_lloq).all():
        raise ValueError(f"the design cohort {cohort.path.name} records no LLOQ for some samples; the generator "
                         "censors each sample at its own limit, so fill the lloq column of cart_kinetics.csv")
    inputs = replace(inputs, patient_ids=_anonymous(inputs, inputs.n_patients), warnings=())
    return CartDesign(inputs=inputs, source=cohort.path.name)


@dataclass(frozen=True)
class CartCalibration:
    """SBC problem of the CAR-T kinetic model (``toolkit.models.cart``) at a design."""

    design: CartDesign
    priors: object = None
    fit_priors: object = None
    effects_on: tuple = ("cmax", "tmax", "foldx", "alpha", "fb", "persistence")
    model_name: str = "cart"
    variant: str = "hierarchical Stein"
    #: the log-likelihood reads the patient parameters themselves, not the coordinates they are sampled in
    #: (``theta_raw`` depends on the centring mask, which follows the data; ``model_loglik_function``)
    loglik_reads = ("theta_patient",)

    def __post_init__(self):
        from toolkit.models.cart import CartPriors, check_effects_on

        object.__setattr__(self, "effects_on", tuple(check_effects_on(self.effects_on)))
        if self.priors is None:
            object.__setattr__(self, "priors", CartPriors.for_unit(self.design.inputs.unit))
        if self.fit_priors is None:
            object.__setattr__(self, "fit_priors", self.priors)

    # ---- identity -------------------------------------------------------------------------

    def describe(self) -> dict:
        return {"model": self.model_name, "variant": self.variant, "class": type(self).__qualname__,
                "effects_on": list(self.effects_on), "priors": self.priors.as_dict(),
                "fit_priors": self.fit_priors.as_dict(), "design": self.design.summary()}

    def _design_arrays(self):
        i = self.design.inputs
        return (i.arm, i.sample_patient, i.day, i.log_lloq, i.log_value, i.censored, i.x_std)

    def cache_key(self) -> str:
        return design_cache_key(self.describe(), self._design_arrays())

    # ---- models ---------------------------------------------------------------------------

    def inputs(self) -> CartInputs:
        return self.design.inputs

    def _build(self, priors):
        from toolkit.models.cart import build_cart_model

        return swappable_observations(build_cart_model(self.inputs(), priors, effects_on=self.effects_on))

    def generator_model(self):
        return self._build(self.priors)

    def fit_model(self):
        return self._build(self.fit_priors)

    def simulated_inputs(self, data: dict) -> CartInputs:
        """The design's inputs holding a simulated data set (levels and censoring)."""
        return replace(self.inputs(), log_value=np.asarray(data["log_value"], float),
                       censored=np.asarray(data["censored"], int))

    def data_updates(self, data: dict) -> dict:
        """Observations, censoring and the centring mask the simulated data warrant
        (``toolkit.models.cart.centering_mask``), as a model built from them would have."""
        from toolkit.models.cart import centering_mask

        censored = np.asarray(data["censored"], int)
        return {"log_level_observed": data["log_value"], "censored": censored,
                "censored_rows": np.flatnonzero(censored).astype(np.int64),
                "centered": centering_mask(self.simulated_inputs(data)).astype(float)}

    def kinetic_fit_priors(self):
        """The CAR-T priors of the fitted model."""
        return self.fit_priors

    def start_values(self, data: dict) -> dict[str, np.ndarray]:
        """Starting values of the patient parameters for ``data``, as the builder derives them from a cohort
        (``toolkit.models.cart.sampler_start``: data-informed starts on the sampler's scale, with the
        centring mask of :meth:`data_updates`). The compiled model holds its placeholder data's starts;
        without these many fits had chains in different local modes (R-hat > 1.5).
        """
        from toolkit.models.cart import sampler_start

        return {"theta_raw": sampler_start(self.simulated_inputs(data), self.kinetic_fit_priors())}

    # ---- generator ------------------------------------------------------------------------

    def ranked(self) -> tuple[str, ...]:
        return CART_RANKED

    def parameter_names(self, model) -> list[str]:
        """Ranked population parameters, then what the estimands and log-likelihood read (not ranked)."""
        from toolkit.estimands import CART_ARM_QUANTITIES

        names = [n for n in self.ranked() if n in model.named_vars]
        names += [n for n in (*CART_ARM_QUANTITIES, "theta_patient") if n not in names]
        return names + [rv.name for rv in model.free_RVs if rv.name not in names]

    def unranked_parameters(self) -> tuple[str, ...]:
        from toolkit.estimands import CART_ARM_QUANTITIES

        return (*CART_ARM_QUANTITIES, "theta_patient", "mu_kinetic_std", "arm_effect_std", "theta_raw")

    def vector_labels(self, name: str, size: int):
        from toolkit.models.cart import KINETIC_PARAMETERS

        if name in ("mu_kinetic", "omega_kinetic") and size == len(KINETIC_PARAMETERS):
            return list(KINETIC_PARAMETERS)
        if name == "arm_effect" and size == len(self.effects_on):
            return list(self.effects_on)
        if name == "covariate_effect":
            return [f"{c}/{k}" for c in self.inputs().covariates for k in KINETIC_PARAMETERS]
        return None

    def draw_prior(self, n: int, *, random_seed) -> list[dict[str, np.ndarray]]:
        """``n`` joint draws of every named parameter from the generator model's prior (one ``pm.draw``)."""
        return prior_draws(self, n, random_seed=random_seed)

    def simulate_levels(self, theta: dict, rng) -> dict[str, np.ndarray]:
        i = self.inputs()
        mu = log_cart_curve_np(np.asarray(theta["theta_patient"], float)[i.sample_patient], i.day)
        y = mu + float(theta["sigma_log"]) * rng.standard_normal(i.n_samples)
        censored = y < i.log_lloq
        # a censored row holds its limit (the likelihood reads only that it is below it)
        return {"log_value": np.where(censored, i.log_lloq, y), "censored": censored.astype(int)}

    def simulate(self, theta: dict, *, random_seed) -> dict[str, np.ndarray]:
        """Every sample's log level from the likelihood at theta, left-censored at its own LLOQ."""
        return self.simulate_levels(theta, np.random.default_rng(random_seed))

    # ---- test quantities ------------------------------------------------------------------

    def posterior_like(self, draws: dict[str, np.ndarray]):
        from toolkit.models.cart import ARMS, KINETIC_PARAMETERS

        dims = {"mu_kinetic": ("kinetic",), "omega_kinetic": ("kinetic",), "arm_effect": ("effect",),
                "covariate_effect": ("covariate", "kinetic"), "theta_patient": ("patient", "kinetic")}
        dims.update({q: ("arm",) for q in ("cmax_copies_per_ug", "tmax_days", "auc_0_28",
                                           "half_life_contraction_days", "half_life_persistence_days",
                                           "persistence_fraction")})
        coords = {"kinetic": list(KINETIC_PARAMETERS), "effect": list(self.effects_on), "arm": list(ARMS),
                  "covariate": list(self.inputs().covariates), "patient": list(self.inputs().patient_ids)}
        keep = {k: v for k, v in draws.items() if k in dims or np.asarray(v).ndim == 1}
        return _dataset(keep, dims, coords)

    def cart_estimand_draws(self, draws: dict[str, np.ndarray], post=None) -> dict[str, np.ndarray]:
        """The posterior quantities of :func:`toolkit.estimands.cart_estimands`, per draw (same names)."""
        from toolkit.estimands import CART_ARM_QUANTITIES, cart_estimands
        from toolkit.models.cart import new_patient_log_auc

        out = {}
        arm = {q: np.asarray(draws[q], float) for q in CART_ARM_QUANTITIES}
        for q in CART_ARM_QUANTITIES:
            out[f"{q}_control"], out[f"{q}_experimental"] = arm[q][:, 0], arm[q][:, 1]
        out["cmax_gmr"] = arm["cmax_copies_per_ug"][:, 1] / arm["cmax_copies_per_ug"][:, 0]
        post = self.posterior_like(draws) if post is None else post
        log_auc = new_patient_log_auc(post, self.inputs(), n_new=_default(cart_estimands, "n_new_patients"),
                                      random_seed=_default(cart_estimands, "random_seed"))
        out["auc28_gmr"] = np.exp(log_auc[:, 1, :].mean(axis=1) - log_auc[:, 0, :].mean(axis=1))
        out["tmax_difference_days"] = arm["tmax_days"][:, 1] - arm["tmax_days"][:, 0]
        hl = arm["half_life_persistence_days"]
        out["persistence_half_life_ratio"] = hl[:, 1] / hl[:, 0]
        return out

    def estimand_draws(self, draws: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.cart_estimand_draws(draws)

    def oracle_pits(self, theta: dict) -> dict[str, float]:
        """PITs of the arms' typical kinetic values (log scale: mu_k, + delta_k in the experimental arm) under
        the oracle of :func:`~toolkit.calibration.generators.arm_oracle_pits`, which knows every patient's true
        parameters (covariate terms x_i gamma removed); a function of the prior draw alone. Keys are the stored
        quantities that are increasing functions of one typical value or arm effect (their PIT is its):
        ``mu_kinetic[k]``, ``arm_effect[k]``, ``cmax_copies_per_ug_*``, ``tmax_days_*``,
        ``half_life_persistence_days_*`` (e^theta), ``persistence_fraction_*`` (sigmoid), ``cmax_gmr``,
        ``persistence_half_life_ratio``."""
        from toolkit.models.cart import ARMS, KINETIC_PARAMETERS

        i = self.inputs()
        values = np.asarray(theta["theta_patient"], float)
        if i.covariates:
            values = values - np.asarray(i.x_std, float) @ np.asarray(theta["covariate_effect"], float)
        delta = dict(zip(self.effects_on, np.atleast_1d(np.asarray(theta.get("arm_effect", []), float))))
        ratio = {"cmax": "cmax_gmr", "persistence": "persistence_half_life_ratio"}
        out = {}
        for k, name in enumerate(KINETIC_PARAMETERS):
            pits = arm_oracle_pits(values[:, k], i.arm, float(theta["mu_kinetic"][k]),
                                   float(theta["omega_kinetic"][k]), delta.get(name))
            if not pits:
                continue
            out[f"mu_kinetic[{name}]"] = pits["control"]
            if "effect" in pits:
                out[f"arm_effect[{name}]"] = pits["effect"]
                if name in ratio:
                    out[ratio[name]] = pits["effect"]
            if name in TYPICAL_ARM_QUANTITIES:
                for arm in ARMS[: 2 if "effect" in pits else 1]:
                    out[f"{TYPICAL_ARM_QUANTITIES[name]}_{arm}"] = pits[arm]
        return out

    def loglik_function(self):
        return model_loglik_function(self)

    def with_fit_priors(self, fit_priors):
        return replace(self, fit_priors=fit_priors)


# --------------------------------------------------------------------------- joint


@dataclass(frozen=True)
class JointDesign:
    """The CAR-T design plus the responders: arm, response day, usual LLOQ, end of relapse follow-up."""

    cart: CartDesign
    relapse: DurabilityInputs
    cart_index: np.ndarray
    response_day: np.ndarray
    log_lloq: np.ndarray
    censor_years: np.ndarray
    #: with the MRD submodel: its design (responders with assessments) and each responder's row in it (-1: none)
    mrd: object = None
    mrd_index: np.ndarray | None = None

    @property
    def n_patients(self) -> int:
        return self.cart.n_patients

    def summary(self) -> dict:
        c = self.censor_years * DAYS_PER_YEAR
        out = {**self.cart.summary(), "responders": int(self.cart_index.size),
               "responders_per_arm": {"control": int((self.relapse.arm == 0).sum()),
                                      "experimental": int((self.relapse.arm == 1).sum())},
               "relapse_covariates": list(self.relapse.covariates),
               "follow_up_days": {"min": float(c.min()), "median": float(np.median(c)), "max": float(c.max())}}
        if self.mrd is not None:
            out["mrd"] = self.mrd.summary()
        return out


def joint_design(cohort, *, covariates=(), mrd_submodel: bool = False) -> JointDesign:
    """The joint model's design of a cohort (``to_joint_inputs``) with each responder's end of follow-up.

    c_i is the last follow-up day, or a consolidative HSCT in remission, or a death
    in remission if either came first (both censor relapse in the joint model),
    from the response day. ``mrd_submodel``: also the MRD submodel's design
    (:func:`toolkit.calibration.mrd.mrd_design_of`: the responders with an assessment, anonymised, every
    row's detection limit filled), for the ``mrd_clearance`` association.
    """
    from toolkit.data.joint_inputs import to_joint_inputs

    inputs = to_joint_inputs(cohort, covariates=list(covariates), mrd_submodel=mrd_submodel)
    mrd = None
    if mrd_submodel:
        from toolkit.calibration.mrd import mrd_design_of

        mrd = mrd_design_of(inputs.mrd, cohort.path.name)
    merged = cohort.merged()
    merged = merged.set_index(merged["patient_id"].astype(str))
    rows = merged.loc[inputs.relapse.patient_ids]
    relapse_day = rows["relapse_day"].to_numpy(float)
    end = rows["last_followup_day"].to_numpy(float)
    for column in ("hsct_day", "death_day"):
        day = rows[column].to_numpy(float)
        first = np.isfinite(day) & ~(relapse_day <= day)  # in remission at that day
        end = np.where(first, np.fmin(end, day), end)
    censor = np.maximum((end - inputs.response_day) / DAYS_PER_YEAR, MIN_TIME_YEARS)
    cart = CartDesign(inputs=replace(inputs.cart, patient_ids=_anonymous(None, inputs.cart.n_patients),
                                     warnings=()), source=cohort.path.name)
    relapse = replace(inputs.relapse, patient_ids=[f"sim{j:04d}" for j in inputs.cart_index], warnings=())
    return JointDesign(cart=cart, relapse=relapse, cart_index=inputs.cart_index, response_day=inputs.response_day,
                       log_lloq=inputs.log_lloq, censor_years=censor, mrd=mrd, mrd_index=inputs.mrd_index)


@dataclass(frozen=True)
class JointCalibration(CartCalibration):
    """SBC problem of the joint model (``toolkit.models.joint``; CAR-T associations) at a design."""

    design: JointDesign = None
    priors: object = None  # JointPriors (relapse part)
    fit_priors: object = None
    cart_priors: object = None
    variant: str = "cure"
    associations: tuple = ("log_cmax", "cart_loss")
    tau_days: float = 365.0
    model_name: str = "joint"
    mrd_priors: object = None  # MrdPriors of the MRD submodel (association mrd_clearance)

    def __post_init__(self):
        from toolkit.models import joint
        from toolkit.models.cart import CartPriors

        if self.variant not in joint.VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; valid: {', '.join(joint.VARIANTS)}")
        associations = tuple(joint.check_associations(self.associations))
        if "mrd" in associations:
            raise ValueError("the joint generator does not cover the 'mrd' association (MRD recurrence as an "
                             "observed marker of the hazard, not a modelled quantity); it covers log_cmax, "
                             "cart_loss and mrd_clearance")
        if "mrd_clearance" in associations and self.design.mrd is None:
            raise ValueError("the mrd_clearance association needs the MRD submodel's design: "
                             "joint_design(cohort, mrd_submodel=True)")
        object.__setattr__(self, "associations", associations)
        if self.with_mrd and self.mrd_priors is None:
            from toolkit.models.mrd import MrdPriors

            object.__setattr__(self, "mrd_priors", MrdPriors())
        if self.priors is None:
            object.__setattr__(self, "priors", joint.JointPriors())
        if self.fit_priors is None:
            object.__setattr__(self, "fit_priors", self.priors)
        if self.cart_priors is None:
            object.__setattr__(self, "cart_priors", CartPriors.for_unit(self.design.cart.inputs.unit))

    @property
    def with_mrd(self) -> bool:
        """Whether the fitted model holds the MRD submodel (association ``mrd_clearance``)."""
        return "mrd_clearance" in self.associations

    def mrd_problem(self):
        """The MRD submodel's own calibration problem (its generator, data containers and labels)."""
        from toolkit.calibration.mrd import MrdCalibration

        return MrdCalibration(self.design.mrd, priors=self.mrd_priors)

    def kinetic_problem(self) -> CartCalibration:
        """The CAR-T model's own calibration problem on this design and kinetic priors. Its generator draws the
        same CAR-T levels from a prior draw and seed as :meth:`simulate` does first, so it fits the CAR-T model
        alone to the levels the joint fit sees (``benchmarks/sbc_rerun.py --kinetics-alone``)."""
        return CartCalibration(self.design.cart, priors=self.cart_priors)

    def describe(self) -> dict:
        out = {"model": self.model_name, "variant": self.variant, "class": type(self).__qualname__,
               "associations": list(self.associations), "tau_days": float(self.tau_days),
               "priors": self.priors.as_dict(), "fit_priors": self.fit_priors.as_dict(),
               "cart_priors": self.cart_priors.as_dict(), "design": self.design.summary()}
        if self.with_mrd:
            out["mrd_priors"] = self.mrd_priors.as_dict()
        return out

    def _design_arrays(self):
        d = self.design
        i = d.cart.inputs
        arrays = (i.arm, i.sample_patient, i.day, i.log_lloq, i.log_value, i.censored, d.cart_index,
                  d.response_day, d.censor_years, d.relapse.x_std)
        return (*arrays, *self.mrd_problem()._design_arrays(), d.mrd_index) if self.with_mrd else arrays

    @property
    def loglik_reads(self) -> tuple[str, ...]:
        """The CAR-T patient parameters and, with the MRD submodel, its patient-level values (not the
        coordinates they are sampled in)."""
        from toolkit.calibration.mrd import MrdCalibration

        mrd = tuple(f"{MRD_PREFIX}{n}" for n in MrdCalibration.loglik_reads) if self.with_mrd else ()
        return (*CartCalibration.loglik_reads, *mrd)

    def inputs(self):
        return self.design.cart.inputs

    def kinetic_fit_priors(self):
        return self.cart_priors

    def joint_inputs(self):
        from toolkit.data.joint_inputs import NO_CHANGE, JointInputs

        d = self.design
        n = d.cart_index.size
        relapse = replace(d.relapse, time_years=d.censor_years.copy(), event=np.zeros(n, int))
        return JointInputs(cart=d.cart.inputs, relapse=relapse, cart_index=d.cart_index, response_day=d.response_day,
                           log_lloq=d.log_lloq, mrd_positive_years=np.full(n, NO_CHANGE), has_mrd=False,
                           mrd=d.mrd.inputs if self.with_mrd else None,
                           mrd_index=d.mrd_index if self.with_mrd else None)

    def _build(self, priors):
        from toolkit.models.joint import build_joint_model

        return swappable_observations(build_joint_model(self.joint_inputs(), priors, variant=self.variant,
                                                        associations=self.associations,
                                                        cart_priors=self.cart_priors, mrd_priors=self.mrd_priors,
                                                        mrd_swappable=self.with_mrd))

    def data_updates(self, data: dict) -> dict:
        out = {**super().data_updates(data), "relapse_observed": data["time_years"], "event": data["event"]}
        if self.with_mrd:  # the MRD submodel's containers are its own, named "mrd::<name>"
            mrd = self.mrd_problem().data_updates(_submodel_part(data))
            out.update({f"{MRD_PREFIX}{k}": v for k, v in mrd.items()})
        return out

    def ranked(self) -> tuple[str, ...]:
        from toolkit.calibration.mrd import MRD_RANKED

        mrd = (*(f"{MRD_PREFIX}{n}" for n in MRD_RANKED),) if self.with_mrd else ()
        return (*JOINT_RANKED, *CART_RANKED, *mrd)

    def parameter_names(self, model) -> list[str]:
        """As the CAR-T problem's, plus the MRD submodel's patient values and each responder's kill rate."""
        from toolkit.calibration.mrd import MRD_PATIENT

        names = super().parameter_names(model)
        if not self.with_mrd:
            return names
        extra = [n for n in (*(f"{MRD_PREFIX}{v}" for v in MRD_PATIENT), "log_clearance_responder")
                 if n in model.named_vars and n not in names]
        return names + extra

    def unranked_parameters(self) -> tuple[str, ...]:
        from toolkit.calibration.mrd import MRD_UNRANKED

        mrd = (*(f"{MRD_PREFIX}{n}" for n in MRD_UNRANKED), "log_clearance_responder",
               "mrd_clearance_z_unassessed") if self.with_mrd else ()
        return (*super().unranked_parameters(), *mrd)

    def vector_labels(self, name: str, size: int):
        if name == "beta_std":
            return list(self.design.relapse.covariates)
        if self.with_mrd and name.startswith(MRD_PREFIX):
            return self.mrd_problem().vector_labels(name[len(MRD_PREFIX):], size)
        return super().vector_labels(name, size)

    def relapse_cumhaz(self, theta: dict, s: np.ndarray) -> np.ndarray:
        """H_i(s) of every responder at theta (the likelihood's smoothed change point)."""
        from toolkit.models import cart
        from toolkit.models.joint import (LOG_CMAX_REFERENCE, STEP_RAMP_YEARS, loss_delay, relapse_cumhaz,
                                          soft_max)

        d = self.design
        th = np.asarray(theta["theta_patient"], float)[d.cart_index]
        p = cart.natural_parameters_np(th)
        lp = float(theta["log_hr"]) * d.relapse.arm
        if "log_cmax" in self.associations:
            lp = lp + float(theta["log_hr_per_log_cmax"]) * (th[:, 0] - LOG_CMAX_REFERENCE)
        if self.with_mrd:  # each responder's MRD kill rate (log10/day), as the model's log_clearance_responder
            from toolkit.models.joint import LOG_CLEARANCE_REFERENCE

            lp = lp + float(theta["log_hr_per_log_clearance"]) * (
                np.asarray(theta["log_clearance_responder"], float) - LOG_CLEARANCE_REFERENCE)
        if d.relapse.covariates:
            lp = lp + d.relapse.x_std @ np.asarray(theta["beta_std"], float)
        changes, log_hrs = [], []
        if "cart_loss" in self.associations:
            loss_day = p["tmax"] + loss_delay(th[:, 0], p["alpha"], p["beta"], th[:, 4], d.log_lloq, lib=np)
            changes.append(soft_max((loss_day - d.response_day) / DAYS_PER_YEAR, 0.0, STEP_RAMP_YEARS, lib=np))
            log_hrs.append(float(theta["log_hr_cart_loss"]))
        return relapse_cumhaz(s, lp, float(theta["log_shape"]), float(theta["log_scale_years"]), changes, log_hrs,
                              lib=np, ramp_years=STEP_RAMP_YEARS)

    def simulate(self, theta: dict, *, random_seed) -> dict[str, np.ndarray]:
        """CAR-T levels as :class:`CartCalibration`; with the MRD submodel its assessments and responses by its own
        generator (:meth:`MrdCalibration.simulate`, keys ``mrd::...``); then relapse times from the model's
        hazard, censored at c_i."""
        rng = np.random.default_rng(random_seed)
        out = self.simulate_levels(theta, rng)
        if self.with_mrd:
            mrd = self.mrd_problem().simulate(_submodel_part(theta), random_seed=rng.integers(2**63))
            out.update({f"{MRD_PREFIX}{k}": v for k, v in mrd.items()})
        d = self.design
        c = d.censor_years
        e = rng.exponential(size=c.size)
        relapse = self.relapse_cumhaz(theta, c) >= e
        if self.variant == "cure":
            eta = float(theta["logit_cure"]) + float(theta["cure_log_or"]) * d.relapse.arm
            relapse &= rng.uniform(size=c.size) >= 1.0 / (1.0 + np.exp(-eta))
        lo, hi = np.zeros_like(c), c.copy()
        for _ in range(60):  # H is increasing in s: bisection for H(T) = E on (0, c]
            mid = 0.5 * (lo + hi)
            below = self.relapse_cumhaz(theta, mid) < e
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        time = np.where(relapse, np.maximum(hi, np.finfo(float).tiny), c)
        return {**out, "time_years": time, "event": relapse.astype(int)}

    def estimand_draws(self, draws: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Mediation estimands (:func:`toolkit.joint_estimands.mediation_draws`), cure fractions, CAR-T contrasts."""
        from toolkit.joint_estimands import mediation_draws

        post = self.posterior_like(draws)
        out = dict(mediation_draws(post, self.joint_inputs(), tau_days=self.tau_days,
                                   n_new=_default(mediation_draws, "n_new"),
                                   random_seed=_default(mediation_draws, "random_seed")))
        if "logit_cure" in draws:
            pis = [1 / (1 + np.exp(-(np.asarray(draws["logit_cure"]) + a * np.asarray(draws["cure_log_or"]))))
                   for a in (0, 1)]
            out["cure_fraction_control"], out["cure_fraction_experimental"] = pis
            out["cure_fraction_difference"] = pis[1] - pis[0]
        cart_q = self.cart_estimand_draws(draws, post)
        out["cmax_gmr"] = cart_q["cmax_gmr"]
        out["persistence_half_life_ratio"] = cart_q["persistence_half_life_ratio"]
        if self.with_mrd:  # as joint_estimands reports it
            out["clearance_rate_ratio"] = np.exp(np.asarray(draws[f"{MRD_PREFIX}clearance_log_ratio"], float))
        return out

    def with_fit_priors(self, fit_priors):
        return replace(self, fit_priors=fit_priors)
