r"""Posterior-predictive draws stored with a run (group ``posterior_predictive`` of ``posterior.nc``).

Each replicate re-measures the observed data from one posterior draw, under the
same observation scheme:

- durability (:func:`durability_predictive`): for each draw and patient a
  relapse time :math:`T^{rep}` from the relapse part of the model (a patient
  is cured with probability :math:`\pi`, else
  :math:`T^{rep} = \lambda\,(E\,e^{-\eta})^{1/k}`, :math:`E \sim \mathrm{Exp}(1)`,
  the Weibull of ``toolkit.models.durability``), observed as the observed pair
  is: ``rfs`` = :math:`\min(T^{rep}, t_i)` and ``rfs_event`` =
  :math:`1[T^{rep} \le t_i]`, with :math:`t_i` the patient's observed time
  (event or censoring). The mean of ``rfs_event`` over draws is the predictive
  CDF at the observed time, :math:`F_i(t_i)`, which is all the censored-data
  PIT needs (``toolkit.plots.ppc``). Death in remission and HSCT censor, as
  in the likelihood of the relapse part;
- MRD (:func:`mrd_predictive`): ``mrd_log10``, each analysed assessment's
  log10 MRD measured again (the draw's class, trajectory, method and specimen
  offsets and residual SD; ``toolkit.mrd_estimands.replicated_mrd_log10``), dim
  ``assessment``; below the assessment's own detection limit it would read
  negative.

To keep run folders small the draws are thinned evenly within each chain to at
most ``max_draws`` in all (default :data:`MAX_PREDICTIVE_DRAWS`: 60 patients
take about 0.2 MB, 600 MRD assessments about 1.9 MB); a check from 400 draws
estimates each predictive CDF value with a standard error of at most 0.025 (independent draws).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

MAX_PREDICTIVE_DRAWS = 400
PREDICTIVE_GROUP = "posterior_predictive"
DEFAULT_SEED = 20261202


def thinned(posterior: xr.Dataset, max_draws: int = MAX_PREDICTIVE_DRAWS) -> xr.Dataset:
    """``posterior`` with its draws thinned evenly within each chain to at most ``max_draws`` in all."""
    n_chains, n_draws = posterior.sizes["chain"], posterior.sizes["draw"]
    keep = max(1, min(n_draws, max_draws // max(n_chains, 1)))
    return posterior.isel(draw=np.unique(np.linspace(0, n_draws - 1, keep).round().astype(int)))


def durability_predictive(posterior: xr.Dataset, inputs, *, max_draws: int = MAX_PREDICTIVE_DRAWS,
                          random_seed: int = DEFAULT_SEED) -> xr.Dataset:
    """Replicated ``rfs`` (years, censored at each patient's observed time) and ``rfs_event`` (0/1) per
    (chain, draw, patient) from a durability posterior (module docstring)."""
    from toolkit.models.durability import _arm_parameters

    post = thinned(posterior, max_draws)
    n_chains, n_draws = post.sizes["chain"], post.sizes["draw"]
    arm = np.asarray(inputs.arm)
    rng = np.random.default_rng(random_seed)
    t_rep = np.empty((n_chains * n_draws, arm.size))
    for a in (0, 1):
        par = _arm_parameters(post, inputs, arm=a)
        lam, k, lp = (np.broadcast_to(par[name][..., 0], (n_chains * n_draws, arm.size)) for name in ("lam", "k", "lp"))
        e = rng.exponential(size=lam.shape)
        t = lam * (e * np.exp(-lp)) ** (1.0 / k)
        if "pi" in par:
            t = np.where(rng.uniform(size=lam.shape) < np.broadcast_to(par["pi"][..., 0], lam.shape), np.inf, t)
        t_rep[:, arm == a] = t[:, arm == a]
    observed = np.asarray(inputs.time_years, dtype=float)[None, :]
    shape = (n_chains, n_draws, arm.size)
    coords = {"chain": post["chain"].to_numpy(), "draw": post["draw"].to_numpy(), "patient": list(inputs.patient_ids)}
    return xr.Dataset({"rfs": (("chain", "draw", "patient"), np.minimum(t_rep, observed).reshape(shape)),
                       "rfs_event": (("chain", "draw", "patient"), (t_rep <= observed).astype(np.int8).reshape(shape))},
                      coords=coords)


def mrd_predictive(posterior: xr.Dataset, inputs, *, priors=None, max_draws: int = MAX_PREDICTIVE_DRAWS,
                   random_seed: int = DEFAULT_SEED) -> xr.Dataset:
    """Replicated log10 MRD ``mrd_log10`` per (chain, draw, assessment) from an MRD posterior (module docstring)."""
    from toolkit.estimands.mrd import replicated_mrd_log10

    post = thinned(posterior, max_draws)
    y_rep, _ = replicated_mrd_log10(post, inputs, priors=priors, random_seed=random_seed)
    shape = (post.sizes["chain"], post.sizes["draw"], y_rep.shape[1])
    coords = {"chain": post["chain"].to_numpy(), "draw": post["draw"].to_numpy(),
              "assessment": np.arange(y_rep.shape[1])}
    return xr.Dataset({"mrd_log10": (("chain", "draw", "assessment"), y_rep.reshape(shape))}, coords=coords)


def add_posterior_predictive(dt: xr.DataTree, predictive: xr.Dataset) -> xr.DataTree:
    """Store ``predictive`` as the run's ``posterior_predictive`` group (replacing one already there)."""
    dt[PREDICTIVE_GROUP] = xr.DataTree(predictive)
    return dt


def stored_predictive(dt, name: str) -> np.ndarray | None:
    """The stored replicates of ``name`` as (draws, observations), chains stacked; None for a run saved
    without them (runs written before the toolkit stored posterior-predictive draws)."""
    if not isinstance(dt, xr.DataTree) or PREDICTIVE_GROUP not in dt.children:
        return None
    group = dt[PREDICTIVE_GROUP]
    if name not in group.data_vars:
        return None
    arr = group[name].to_numpy()
    return arr.reshape(-1, *arr.shape[2:])
