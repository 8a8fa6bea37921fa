"""Deliberately broken fits (negative controls): calibration checks must flag them.

A check that cannot fail proves nothing, so each SBC check is paired with fits
that are wrong in a known way:

- :func:`shifted_prior`: the fit's prior differs from the generator's (one prior
  pair moved), as when a spec's prior and the simulation disagree;
- :class:`DropCensoredDurability`: the fit leaves out the censored patients'
  likelihood term, log S(c_i), keeping only the events' log f(t_i), as a
  complete-case analysis of survival data would;
- :class:`SubstitutedBlqCart`, :class:`SubstitutedBlqJoint`: the fit replaces the
  left-censoring term of every sample below the LLOQ, log Phi((log LLOQ - mu)/sigma),
  by a quantified value at LLOQ/2 (the substitution Beal 2001 compares with M3),
  as an analysis that imputes BLQ samples would.

``shifted_prior`` works for every problem whose prior set has ``with_overrides``
(durability, CAR-T, joint), e.g. ``shifted_prior(cart, "mu_persistence", 1.0)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np

from toolkit.calibration.generators import DurabilityCalibration, model_loglik_function
from toolkit.calibration.kinetics import CartCalibration, JointCalibration

__all__ = ["DropCensoredDurability", "SubstitutedBlqCart", "SubstitutedBlqJoint", "shifted_prior"]


def shifted_prior(problem, name: str, shift: float, scale: float = 1.0):
    """The same problem with the fit's prior ``name`` = (mu + shift, sigma * scale); the generator keeps its own."""
    mu, sigma = getattr(problem.priors, name)
    return problem.with_fit_priors(problem.priors.with_overrides({name: [mu + shift, sigma * scale]}))


@dataclass(frozen=True)
class DropCensoredDurability(DurabilityCalibration):
    """Durability SBC problem whose fit drops the right-censored observations' likelihood term."""

    def fit_model(self):
        import pymc as pm
        import pytensor.tensor as pt

        from toolkit.models.durability import survival_logp
        from toolkit.models.priors import normal

        if self.design.covariates or self.variant != "weibull":
            raise ValueError("the drop-censored control is written for the Weibull variant without covariates")
        inputs, priors = self.inputs(), self.fit_priors
        with pm.Model(coords={"patient": inputs.patient_ids}) as model:
            time = pm.Data("time_years", inputs.time_years, dims="patient")
            event = pm.Data("event", inputs.event, dims="patient")
            arm = pm.Data("arm", inputs.arm, dims="patient")
            log_shape = normal("log_shape", priors.log_shape)
            log_scale = normal("log_scale_years", priors.log_scale_years)
            log_hr = normal("log_hr", priors.log_hr)
            pointwise = survival_logp(time, event, log_shape, log_scale, log_hr * arm)
            pm.Potential("events_only", pt.sum(event * pointwise))  # the bug: censored terms weighted 0
            pm.Deterministic("hazard_ratio", pt.exp(log_hr))
        return model


class _SubstitutedBlq:
    """Mixin: the fit sees each sample below the LLOQ as quantified at LLOQ/2; the generator is unchanged.

    Only what is swapped into the compiled fit changes (``data_updates``); the
    joint log-likelihood test quantity is still the generator's, on the data
    as simulated.
    """

    def data_updates(self, data: dict) -> dict:
        censored = np.asarray(data["censored"], int) == 1
        lloq = self.inputs().log_lloq
        imputed = {**data, "log_value": np.where(censored, lloq - math.log(2.0), data["log_value"]),
                   "censored": np.zeros(censored.size, int)}
        return super().data_updates(imputed)

    def loglik_function(self):
        honest = super()

        class _Generator:  # the problem as simulated: its generator model and its own data updates
            generator_model = staticmethod(honest.generator_model)
            data_updates = staticmethod(honest.data_updates)

        return model_loglik_function(_Generator())


@dataclass(frozen=True)
class SubstitutedBlqCart(_SubstitutedBlq, CartCalibration):
    """CAR-T SBC problem whose fit imputes BLQ samples at LLOQ/2 instead of the censored likelihood."""


@dataclass(frozen=True)
class SubstitutedBlqJoint(_SubstitutedBlq, JointCalibration):
    """Joint-model SBC problem whose fit imputes BLQ CAR-T samples at LLOQ/2."""
