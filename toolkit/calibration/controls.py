"""Deliberately broken fits (negative controls): calibration checks must flag them.

A check that cannot fail proves nothing, so each SBC check is paired with fits
that are wrong in a known way:

- :func:`shifted_prior`: the fit's prior differs from the generator's (one prior
  pair moved), as when a spec's prior and the simulation disagree;
- :class:`DropCensoredDurability`: the fit leaves out the censored patients'
  likelihood term, log S(c_i), keeping only the events' log f(t_i), as a
  complete-case analysis of survival data would.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.calibration.generators import DurabilityCalibration

__all__ = ["DropCensoredDurability", "shifted_prior"]


def shifted_prior(problem: DurabilityCalibration, name: str, shift: float, scale: float = 1.0) -> DurabilityCalibration:
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
