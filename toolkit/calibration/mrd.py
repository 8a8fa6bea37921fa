r"""Own generator of the MRD kinetic model (``toolkit.models.mrd``), for simulation-based calibration.

It follows the protocol of :class:`toolkit.calibration.kinetics.CartCalibration`
(``describe``, ``cache_key``, ``generator_model``, ``fit_model``, ``parameter_names``,
``draw_prior``, ``simulate``, ``data_updates``, ``estimand_draws``, ``loglik_function``),
so the runner, the results store, the metrics and the report treat it alike.

Design
------
From a cohort folder (``--design``) or the default simulated trial
(``to_mrd_inputs``: the rows the model is fitted to): the responders with an MRD
assessment, their arms, covariates and baseline blasts (the anchor of B_i), each
assessment's day, method, specimen, detection limit (LoD) and quantification
limit (LoQ; none, i.e. no PNQ band, where the file records none), and every
infused patient's arm. A quantified row without a recorded LoD gets the smallest
LoD of its method in the cohort (``filled_detection_limits``). Identifiers are
replaced by ``sim0000``...; nothing of a patient's identity is stored.

Data from the model's likelihood at a prior draw theta*
-------------------------------------------------------
theta* (population and patient-level values) comes from one ``pm.draw`` of the
model the toolkit fits. Then, for responder i and assessment j:

.. math::

    R_i \sim \text{Bernoulli}(\pi_i),\quad \text{logit}\,\pi_i = c_0 + c_{arm} a_i + x_i\gamma_{rec}

    y_{ij} = m_i(t_{ij}) + \delta_{method} + \delta_{PB}[\text{PB}] + \sigma_{method}\,\varepsilon_{ij},
    \quad \varepsilon_{ij} \sim t_4 \text{ (Student-t, 4 d.f.; model 1.4.0, Normal before)}

with m_i the model's own trajectory (:func:`toolkit.models.mrd.mrd_log10_numpy`,
the same softened sum of clones, each capped as the likelihood caps it) in class
R_i, and the value censored exactly as the likelihood (Beal 2001, M3) assumes:
y < log10 LoD is reported negative (code 1), log10 LoD <= y < log10 LoQ positive
not quantifiable (code 2), else quantified (code 0). Every infused patient's
response is drawn from the response part, Bernoulli(logit^-1(r_0 + r_arm a)).
The kinetic part is drawn for the design's responders whatever the simulated
responses: the likelihood factorises into the response part and the kinetic
part, whose parameters have independent priors, so the posterior is the one
the model implies, and the number of patients (hence the compiled model) stays
fixed.

The fit is ``build_mrd_model(..., swappable_censoring=True)``: the three
censoring branches are evaluated on every row and the ``censoring`` container
selects, so the compiled model takes each simulation's codes with ``with_data``.
Which patients' kill rate, floor, latency and doubling time are centred
(``informed_patients``) follows each simulated data set (``centred_*`` containers
swapped with the observations), as a model built from those data would choose;
it changes only the parameterisation the sampler sees, not the posterior. (Until
December 2026 it was the design cohort's choice for every simulation: per
simulated cohort of the default design, about 13 patients' latency was sampled
centred with no data on it.) The log-likelihood reads the patient-level values
(``loglik_reads``), not the sampling coordinates.

Test quantities: the population parameters (each scalar, and each method's
residual SD and bias, covariate effects), the MRD decision estimands of
``summary.json`` through the function that computes them
(:func:`toolkit.estimands.mrd.population_mrd_draws`, the same seed and number of
simulated responders as :func:`~toolkit.estimands.mrd.mrd_estimands`):
``clearance_rate_ratio``, ``mrd_negative_28d_flow_{arm}``,
``mrd_negative_28d_ngs_{arm}``, ``mrd_recurrence_365d_{arm}`` and
``mrd_recurrence_365d_difference``, ``time_to_mrd_negativity_days_{arm}``
(+inf in a draw where no simulated responder gets below 1e-4; ranks break such
ties at random), and the joint log-likelihood of the simulated data. Patient
parameters are sampled and diagnosed but not ranked.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, replace

import numpy as np

from toolkit.calibration.generators import (InputsDesign, arm_oracle_pits, design_cache_key, model_loglik_function,
                                           prior_draws, swappable_observations)
from toolkit.data.mrd_inputs import MrdInputs

__all__ = ["MRD_RANKED", "MrdCalibration", "MrdDesign", "SubstitutedNegativesMrd", "mrd_design", "mrd_design_of"]

#: population parameters of the MRD model that are ranked (when the model has them)
MRD_RANKED = ("log_clearance", "log_clearance_low", "clearance_log_ratio", "clearance_sd", "baseline_anchor_sd",
              "logit_recurrence", "recurrence_log_or", "covariate_clearance", "covariate_recurrence",
              "floor_depth_log10", "floor_depth_sd_log10", "log_relapse_latency", "relapse_log_time_ratio",
              "relapse_sd", "log_doubling_days", "doubling_sd", "mrd_residual_sd_log10", "method_bias_log10",
              "pb_offset_log10", "logit_response", "response_log_or")
#: drawn and sampled, read by the generator, the estimands or the log-likelihood, not ranked
MRD_PATIENT = ("patient_baseline_log10", "patient_clearance_log10_per_day", "patient_floor_log10",
               "patient_relapse_day", "patient_doubling_time_days")
MRD_UNRANKED = (*MRD_PATIENT, "clearance_rate_ratio", "clearance_z", "baseline_z", "floor_raw", "relapse_raw",
                "doubling_raw")
ARM_NAMES = ("control", "experimental")


def _default(fn, name):
    """A keyword default of ``fn`` (a Monte-Carlo setting of an estimand is defined once, where it is used)."""
    return inspect.signature(fn).parameters[name].default


def _expit(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, float)))


@dataclass(frozen=True)
class MrdDesign(InputsDesign):
    """What stays fixed across simulations: responders, arms, covariates, baselines, assessments and limits.

    ``inputs`` are the design cohort's :class:`MrdInputs` with identifiers replaced by
    ``sim0000``... and every row's detection limit filled; their observations are only
    the compiled model's placeholder. ``log10_loq`` equals ``log10_lod`` on rows
    without a PNQ band.
    """

    inputs: MrdInputs
    source: str = "default trial"

    def summary(self) -> dict:
        """JSON-able description (counts, methods, days, limits; no identifiers)."""
        i = self.inputs
        return {**self._common_summary(),
                "infused": int(i.infused_arm.size), "assessments": i.n_assessments, "methods": list(i.methods),
                "reference_method": i.reference_method, "peripheral_blood_rows": int(i.peripheral_blood.sum()),
                "pnq_band_rows": int((i.log10_loq > i.log10_lod).sum()), "covariates": list(i.covariates),
                "baseline_missing": int(i.baseline_missing.sum()),
                "design_censoring": {"quantified": int((i.censoring == 0).sum()),
                                     "below_lod": int((i.censoring == 1).sum()), "pnq": int((i.censoring == 2).sum())}}


def mrd_design(cohort, *, covariates=()) -> MrdDesign:
    """The MRD design of a cohort (``to_mrd_inputs``), anonymised, with every row's detection limit.

    Raises ``ValueError`` when a method has no detection limit anywhere in the cohort
    (the generator censors every row at its own limit).
    """
    from toolkit.data.mrd_inputs import to_mrd_inputs

    return mrd_design_of(to_mrd_inputs(cohort, covariates=list(covariates)), cohort.path.name)


def mrd_design_of(inputs: MrdInputs, source: str) -> MrdDesign:
    """:func:`mrd_design` of MRD inputs already built from cohort ``source`` (e.g. the joint model's submodel)."""
    from toolkit.estimands.mrd import filled_detection_limits

    lod = filled_detection_limits(inputs)
    if not np.isfinite(lod).all():
        missing = sorted({inputs.methods[m] for m in inputs.method[~np.isfinite(lod)]})
        raise ValueError(f"the design cohort {source} records no detection limit for method(s) "
                         f"{', '.join(missing)}; the generator censors each assessment at its own limit, so fill "
                         "lod_pct in mrd.csv for those rows")
    with np.errstate(invalid="ignore"):
        loq = np.where(inputs.log10_loq > lod, inputs.log10_loq, lod)
    inputs = replace(inputs, log10_lod=lod, log10_loq=loq,
                     patient_ids=[f"sim{j:04d}" for j in range(inputs.n_patients)],
                     infused_ids=[f"inf{j:04d}" for j in range(len(inputs.infused_ids))], warnings=())
    return MrdDesign(inputs=inputs, source=source)


@dataclass(frozen=True)
class MrdCalibration:
    """SBC problem of the MRD kinetic model (``toolkit.models.mrd``) at a design."""

    design: MrdDesign
    priors: object = None  # MrdPriors (the spec's prior set)
    fit_priors: object = None  # differs from ``priors`` only in negative controls
    model_name: str = "mrd"
    variant: str = "recurrence-mixture"
    #: the log-likelihood reads the patient-level values, not the coordinates they are sampled in (which of
    #: ``clearance_z``, ``floor_raw``, ``relapse_raw``, ``doubling_raw`` are centred follows the data)
    loglik_reads = ("patient_clearance_log10_per_day", "patient_baseline_log10", "patient_floor_log10",
                    "patient_relapse_day", "patient_doubling_time_days")

    def __post_init__(self):
        from toolkit.models.mrd import MrdPriors

        if self.priors is None:
            object.__setattr__(self, "priors", MrdPriors())
        if self.fit_priors is None:
            object.__setattr__(self, "fit_priors", self.priors)

    # ---- identity -------------------------------------------------------------------------

    def describe(self) -> dict:
        return {"model": self.model_name, "variant": self.variant, "class": type(self).__qualname__,
                "priors": self.priors.as_dict(), "fit_priors": self.fit_priors.as_dict(),
                "design": self.design.summary()}

    def _design_arrays(self):
        i = self.design.inputs
        return (i.arm, i.assessment_patient, i.day, i.log10_lod, i.log10_loq, i.method, i.peripheral_blood,
                np.nan_to_num(i.baseline_log10, nan=-99.0), i.x_std, i.infused_arm, i.censoring)

    def cache_key(self) -> str:
        return design_cache_key(self.describe(), self._design_arrays())

    # ---- models ---------------------------------------------------------------------------

    def inputs(self) -> MrdInputs:
        return self.design.inputs

    def _build(self, priors):
        from toolkit.models.mrd import build_mrd_model

        return swappable_observations(build_mrd_model(self.inputs(), priors, swappable_censoring=True))

    def generator_model(self):
        """The PyMC model whose prior and log-likelihood define the generator."""
        return self._build(self.priors)

    def fit_model(self):
        """The PyMC model that is fitted (the toolkit's own builder; overridden only by negative controls)."""
        return self._build(self.fit_priors)

    def data_updates(self, data: dict) -> dict:
        """Shared-variable values of one simulated data set: the padded observed matrix, codes, responses, and
        which patients are centred (``informed_patients`` of the simulated data, as a model built from them
        would choose)."""
        from toolkit.models.mrd import informed_patients

        i = self.inputs()
        y = np.asarray(data["log10_value"], float)
        padded = np.zeros((i.n_patients, i.n_visits))
        padded[i.assessment_patient, i.assessment_visit] = y  # as the builder pads its observed value
        code = np.asarray(data["censoring"], np.int64)
        informed = informed_patients(replace(i, log10_value=y, censoring=code))
        return {"mrd_observed": padded, "censoring": code, "log10_value": y,
                "response_observed": np.asarray(data["responded"], np.int64),
                **{f"centred_{k}": v.astype(float) for k, v in informed.items()}}

    # ---- generator ------------------------------------------------------------------------

    def ranked(self) -> tuple[str, ...]:
        return MRD_RANKED

    def parameter_names(self, model) -> list[str]:
        """Ranked population parameters, then what the generator and estimands read, then the free variables."""
        names = [n for n in (*self.ranked(), "clearance_rate_ratio", *MRD_PATIENT) if n in model.named_vars]
        return names + [rv.name for rv in model.free_RVs if rv.name not in names]

    def unranked_parameters(self) -> tuple[str, ...]:
        # clearance_rate_ratio is ranked as an estimand (under its summary.json name), not twice
        return MRD_UNRANKED

    def vector_labels(self, name: str, size: int):
        i = self.inputs()
        if name == "mrd_residual_sd_log10" and size == len(i.methods):
            return list(i.methods)
        if name == "method_bias_log10":
            return [m for m in i.methods if m != i.reference_method]
        if name in ("covariate_clearance", "covariate_recurrence"):
            return list(i.covariates)
        return None

    def draw_prior(self, n: int, *, random_seed) -> list[dict[str, np.ndarray]]:
        """``n`` joint draws of every named parameter from the generator model's prior (one ``pm.draw``)."""
        return prior_draws(self, n, random_seed=random_seed)

    def true_log10_mrd(self, theta: dict, recurrence: np.ndarray) -> np.ndarray:
        """m_i(t_ij) of every assessment at theta in the given classes (the likelihood's trajectory)."""
        from toolkit.models.mrd import LOG10_2, TERM_CAP_LOG10, mrd_log10_numpy

        i = self.inputs()
        p = i.assessment_patient
        growth = LOG10_2 / np.asarray(theta["patient_doubling_time_days"], float)[p]  # each patient's own (1.1.0)
        return mrd_log10_numpy(i.day, np.asarray(theta["patient_baseline_log10"], float)[p],
                               np.asarray(theta["patient_clearance_log10_per_day"], float)[p],
                               np.asarray(theta["patient_floor_log10"], float)[p],
                               np.asarray(theta["patient_relapse_day"], float)[p], growth, recurrence[p],
                               self.priors.sustained_floor_log10, cap=TERM_CAP_LOG10)

    def measurement_shift(self, theta: dict) -> np.ndarray:
        """delta_method + delta_PB [PB] per assessment (0 for the reference method on marrow)."""
        i = self.inputs()
        offset = np.zeros(len(i.methods))
        biased = [j for j, m in enumerate(i.methods) if m != i.reference_method]
        if biased:
            offset[biased] = np.asarray(theta["method_bias_log10"], float).ravel()
        shift = offset[i.method]
        if "pb_offset_log10" in theta:
            shift = shift + float(theta["pb_offset_log10"]) * i.peripheral_blood
        return shift

    def simulate(self, theta: dict, *, random_seed) -> dict[str, np.ndarray]:
        """Classes, every assessment's log10 value censored at its own LoD / LoQ, every infused patient's response."""
        rng = np.random.default_rng(random_seed)
        from toolkit.models.mrd import RESIDUAL_DF

        i = self.inputs()
        eta = float(theta["logit_recurrence"]) + float(theta["recurrence_log_or"]) * i.arm
        if i.covariates:
            eta = eta + i.x_std @ np.asarray(theta["covariate_recurrence"], float)
        recurrence = rng.uniform(size=i.n_patients) < _expit(eta)
        mu = self.true_log10_mrd(theta, recurrence) + self.measurement_shift(theta)
        sigma = np.asarray(theta["mrd_residual_sd_log10"], float).ravel()[i.method]
        y = mu + sigma * rng.standard_t(RESIDUAL_DF, i.n_assessments)  # the model's Student-t error (1.4.0)
        code = np.where(y < i.log10_lod, 1, np.where(y < i.log10_loq, 2, 0))
        eta_r = float(theta["logit_response"]) + float(theta["response_log_or"]) * i.infused_arm
        responded = rng.uniform(size=i.infused_arm.size) < _expit(eta_r)
        # a censored row holds its LoD (the likelihood reads only which interval it is in)
        return {"log10_value": np.where(code == 0, y, i.log10_lod), "censoring": code.astype(np.int64),
                "responded": responded.astype(np.int64), "recurrence": recurrence.astype(np.int64)}

    # ---- test quantities ------------------------------------------------------------------

    def estimand_draws(self, draws: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The MRD decision estimands per draw, by the functions behind ``summary.json`` (same names)."""
        import xarray as xr

        from toolkit.estimands.mrd import mrd_estimands, population_mrd_draws

        post = xr.Dataset({k: (("chain", "draw", *[f"{k}_d{j}" for j in range(np.ndim(v) - 1)]),
                               np.asarray(v, float)[None])
                           for k, v in draws.items() if k in MRD_RANKED})
        pop = population_mrd_draws(post, self.inputs(), n_simulated=_default(mrd_estimands, "n_simulated"),
                                   random_seed=_default(mrd_estimands, "random_seed"), priors=self.priors)
        out = {"clearance_rate_ratio": np.exp(np.asarray(draws["clearance_log_ratio"], float))}
        for key in ("mrd_negative_28d_flow", "mrd_negative_28d_ngs", "mrd_recurrence_365d"):
            for name in ARM_NAMES:
                out[f"{key}_{name}"] = pop[f"{key}_{name}"]
        out["mrd_recurrence_365d_difference"] = (pop["mrd_recurrence_365d_experimental"]
                                                 - pop["mrd_recurrence_365d_control"])
        for name in ARM_NAMES:
            t = pop[f"time_to_mrd_negativity_days_{name}"]
            out[f"time_to_mrd_negativity_days_{name}"] = np.where(np.isnan(t), np.inf, t)
        return out

    def oracle_pits(self, theta: dict) -> dict[str, float]:
        """PITs of the typical kill rate per arm (``log_clearance``, ``clearance_log_ratio`` and
        ``clearance_rate_ratio`` = exp of it), floor depth (``floor_depth_log10``) and doubling time
        (``log_doubling_days``) under the oracle of :func:`~toolkit.calibration.generators.arm_oracle_pits`,
        which knows every patient's true value (log k_i less its covariate term; the floor's softplus argument;
        log doubling time); a function of the prior draw alone. (Relapse latency is log-Weibull, not normal:
        no oracle here.)"""
        from toolkit.models.mrd import RELAPSE_LOG10

        i = self.inputs()
        log_k = np.log(np.asarray(theta["patient_clearance_log10_per_day"], float))
        if i.covariates:
            log_k = log_k - np.asarray(i.x_std, float) @ np.asarray(theta["covariate_clearance"], float)
        clearance = arm_oracle_pits(log_k, i.arm, float(theta["log_clearance"]), float(theta["clearance_sd"]),
                                    float(theta["clearance_log_ratio"]))
        out = {}
        if clearance:
            out = {"log_clearance": clearance["control"], "clearance_log_ratio": clearance["effect"],
                   "clearance_rate_ratio": clearance["effect"]}
        depth = np.log(np.expm1(RELAPSE_LOG10 - np.asarray(theta["patient_floor_log10"], float)))  # softplus^-1
        out["floor_depth_log10"] = arm_oracle_pits(depth, i.arm, float(theta["floor_depth_log10"]),
                                                   float(theta["floor_depth_sd_log10"]))["control"]
        out["log_doubling_days"] = arm_oracle_pits(
            np.log(np.asarray(theta["patient_doubling_time_days"], float)), i.arm, float(theta["log_doubling_days"]),
            float(theta["doubling_sd"]))["control"]
        return out

    def loglik_function(self):
        """A function (draws, data) -> log p(y | theta) per draw (``model_loglik_function``)."""
        return model_loglik_function(self)

    def with_fit_priors(self, fit_priors):
        return replace(self, fit_priors=fit_priors)


@dataclass(frozen=True)
class SubstitutedNegativesMrd(MrdCalibration):
    """Negative control: the fit reads every censored assessment as a quantified value (substitution).

    A negative becomes quantified at half its detection limit (log10 LoD - log10 2) and
    a PNQ at the midpoint of its band on the log10 scale, as an analysis that imputes
    censored MRD values would (Beal 2001 compares such substitution with M3). The
    generator, and the joint log-likelihood test quantity, are unchanged.
    """

    def data_updates(self, data: dict) -> dict:
        i = self.inputs()
        code = np.asarray(data["censoring"])
        value = np.where(code == 1, i.log10_lod - math.log10(2.0),
                         np.where(code == 2, 0.5 * (i.log10_lod + i.log10_loq), data["log10_value"]))
        return super().data_updates({**data, "log10_value": value, "censoring": np.zeros(code.size, np.int64)})

    def _honest(self) -> MrdCalibration:
        return MrdCalibration(self.design, priors=self.priors, fit_priors=self.fit_priors)

    def cache_key(self) -> str:
        # the compiled fit model and the log-likelihood function are the honest problem's (only the data
        # swapped in differ), so a worker reuses its compile
        return self._honest().cache_key()

    def loglik_function(self):
        return model_loglik_function(self._honest())
