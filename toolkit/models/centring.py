"""Patient-level location-scale variables sampled centred where data pin them, non-centred elsewhere.

A hierarchical model's patient value ``theta_i = mu_i + sd * z_i`` can be sampled
as the value itself (centred) or as the standard variable ``z_i`` (non-centred).
A non-centred ``z`` whose value the data pin moves in lock-step with (mu, sd);
a centred value with no data forms a funnel with sd (Papaspiliopoulos, Roberts
& Skold 2007, Statistical Science 22:59). Each entry gets the form its data
warrant, and **which form is data** (a 0/1 array or ``pm.Data`` container
``centred``), so a model compiled once and given another cohort's data
(``pm.set_data``, nutpie's ``with_data``; the calibration studies) samples it the
way a model built from that cohort would. One free variable holds both kinds,
optionally scaled by ``k`` (a sampler coordinate, not part of the model)::

    raw ~ Normal(c k_c mu, c k_c sd + (1 - c) k_n)
    theta = raw / k_c                 where c = 1 (centred)
    theta = mu + sd raw / k_n         where c = 0 (non-centred)

so theta ~ Normal(mu, sd) either way. With ``family="log_weibull"`` the
standard variable is w = log Exponential(1) and the free variable is stored as
its negative, a Gumbel: -(mu + sd w) ~ Gumbel(-mu, sd).

Used by the CAR-T model (``theta_raw``, k = 5 centred and 2 non-centred, with a
data-informed start) and the MRD model (clearance, floor, latency, doubling;
k = 1).
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

__all__ = ["mask_centred", "normal_with_start"]


def normal_with_start(name, mu, sigma, start, **kwargs):
    """A Normal(mu, sigma) whose default starting value is ``start`` (not its mean).

    Written as a CustomDist with a ``support_point`` because explicit ``initval``s
    stop ``pm.compute_log_likelihood`` from cloning the model.
    """

    def dist(mu, sigma, start, size):
        return pm.Normal.dist(mu, sigma, size=size)

    def support_point(rv, size, mu, sigma, start):
        return pt.broadcast_to(start, rv.shape)

    return pm.CustomDist(name, mu, sigma, np.asarray(start, dtype=float), dist=dist, support_point=support_point,
                         **kwargs)


def mask_centred(name, mu, sd, centred, *, family: str = "normal", scale_centred: float = 1.0,
                 scale_noncentred: float = 1.0, start=None, dims=None):
    """The patient values theta ~ family(mu, sd), sampled through the free variable ``name`` as in the module
    docstring: centred where ``centred`` is 1, non-centred where 0 (an array or a data container, broadcast
    against ``mu``). ``scale_*``: k_c and k_n; ``start``: the free variable's starting value (normal family
    only; default its mean; the log_weibull family takes neither). Returns theta (pytensor)."""
    c = pt.as_tensor(centred).astype("float64")
    is_centred = pt.gt(c, 0.5)
    k_c, k_n = float(scale_centred), float(scale_noncentred)
    if family == "normal" and k_c == k_n == 1.0 and start is None:  # the MRD model's graph, kept bit for bit
        raw = pm.Normal(name, mu=c * mu, sigma=c * sd + (1.0 - c), dims=dims)
        return pt.switch(is_centred, raw, mu + sd * raw)
    if family == "normal":  # the CAR-T model's graph: its form fixes a seed's prior draws and the sampler's path
        k = pt.where(is_centred, k_c, k_n)
        mu, sd = pt.as_tensor(mu), pt.as_tensor(sd)
        sd = pt.broadcast_to(sd, pt.broadcast_shape(mu, c))
        mean, sigma = pt.where(is_centred, k * mu, 0.0), pt.where(is_centred, k * sd, k)
        raw = (pm.Normal(name, mu=mean, sigma=sigma, dims=dims) if start is None
               else normal_with_start(name, mean, sigma, start, dims=dims))
        return pt.where(is_centred, raw / k, mu + sd * raw / k)
    if family == "log_weibull":  # -(mu + sd w) ~ Gumbel(-mu, sd); w = -G, G ~ Gumbel(0, 1); the MRD model's graph
        if start is not None or k_c != 1.0 or k_n != 1.0:
            raise ValueError("the log_weibull family takes no start value or scales")
        raw = pm.Gumbel(name, mu=-c * mu, beta=c * sd + (1.0 - c), dims=dims)
        return pt.switch(is_centred, -raw, mu - sd * raw)
    raise ValueError(f"unknown family {family!r}; valid: normal, log_weibull")
