r"""Posterior predictive checks from draws, drawn with ArviZ: censored-data PIT for relapse and for MRD.

The probability integral transform (PIT) of an observation y under its
posterior predictive distribution F is u = F(y); if the model generated the
data, the u are uniform on (0, 1). A censored observation only says where y
lies, so its PIT is drawn uniformly over the PIT values it allows (the
randomized PIT for censored data), which keeps u uniform under the model:

- right-censored at c (relapse-free at last follow-up):  u ~ U(F(c), 1)
- left-censored at the detection limit l (MRD negative): u ~ U(0, F(l))
- interval-censored between l and the quantification limit q (MRD PNQ):
  u ~ U(F(l), F(q))

A run stores posterior-predictive draws (``toolkit.predictive``: group
``posterior_predictive``), and the checks of a run use them
(:func:`durability_pit_of_run`, :func:`mrd_pit_of_run`,
:func:`mrd_replicated_negative_of_run`): F is the share of stored replicates
at or below the observed value. ArviZ's PIT functions (``arviz_stats.loo_pit``,
``arviz_plots.plot_ppc_pit``) take observations as exact, so the censored-data
randomization is done here. A run saved before the draws were stored gets
them computed from its posterior as before (:func:`durability_pit`,
:func:`mrd_pit`).

The uniformity test and its simultaneous band are ArviZ's
(``arviz_plots.plot_ecdf_pit``, the PIT-ECDF of Säilynoja et al. 2022,
Statistics and Computing 32:32). These are in-sample checks: the draws have
seen the data, so the PIT is somewhat too central for hierarchical models
(conservative: a flagged misfit is real, a pass is not proof of fit).

The durability PIT uses the relapse part of the model (death in remission
and HSCT censor it, as in the likelihood); under the ``timevarying`` HSCT
policy the transplant's effect on the hazard after HSCT is ignored here.
The CAR-T model keeps its BLQ-aware visual predictive check
(:func:`toolkit.plots.cart.cart_vpc`).
"""

from __future__ import annotations

import numpy as np

DEFAULT_SEED = 20261201

PIT_TITLE = "Posterior predictive check: censored-data PIT (ArviZ), uniform if the model fits"


def censored_pit(cdf_lower, cdf_upper, *, random_seed: int = DEFAULT_SEED) -> np.ndarray:
    """Randomized PIT u ~ U(``cdf_lower``, ``cdf_upper``) per observation (equal bounds: an exact observation)."""
    lo, hi = np.asarray(cdf_lower, dtype=float), np.asarray(cdf_upper, dtype=float)
    v = np.random.default_rng(random_seed).uniform(size=lo.shape)
    return np.where(hi > lo, lo + v * (hi - lo), lo)


def durability_event_name(posterior) -> str:
    """What the durability model's time-to-event part scores: relapse alone where death in remission has
    its own hazard, else relapse or death (the RFS endpoint)."""
    return "relapse" if "death_log_shape" in posterior else "relapse or death"


def durability_pit(posterior, inputs, *, random_seed: int = DEFAULT_SEED) -> np.ndarray:
    """Censored-data PIT of each patient's relapse time under the durability model's posterior predictive.

    F_i(t) = 1 - mean over draws of S_rel,i(t), with S_rel the relapse
    survival of the patient's arm and covariates (a mixture with the cure
    fraction for ``cure``). A relapse at t gives F_i(t); a follow-up censored
    at c gives U(F_i(c), 1).
    """
    from toolkit.models.durability import _arm_parameters, _components

    t = np.asarray(inputs.time_years, dtype=float)[None, :, None]
    surv = np.empty(t.shape[1])
    for arm in (0, 1):
        su, _ = _components(_arm_parameters(posterior, inputs, arm=arm), np.broadcast_to(t, (1, t.shape[1], 1)))
        su = np.broadcast_to(su, (su.shape[0], t.shape[1], 1))
        mask = np.asarray(inputs.arm) == arm
        surv[mask] = su[:, mask, 0].mean(axis=0)
    cdf = 1.0 - surv
    event = np.asarray(inputs.event).astype(bool)
    return censored_pit(cdf, np.where(event, cdf, 1.0), random_seed=random_seed)


def measurement_error_kwargs(residual_df) -> dict:
    """Keyword arguments naming an MRD run's measurement error: none for "current" (the estimand functions'
    default, this toolkit's model), else ``residual_df`` (None: Normal, degrees of freedom: Student-t)."""
    return {} if residual_df == "current" else {"residual_df": residual_df}


def mrd_pit(posterior, inputs, *, random_seed: int = DEFAULT_SEED, residual_df="current") -> np.ndarray:
    """Censored-data PIT of each MRD assessment (log10 scale) from the replicates of
    :func:`toolkit.mrd_estimands.replicated_mrd_log10`: F(y) if quantified, U(0, F(LoD)) if below the
    detection limit, U(F(LoD), F(LoQ)) if positive but not quantifiable. ``residual_df``: the measurement
    error of the model that made the draws ("current": this toolkit's; None: Normal, runs before MRD 1.4.0)."""
    from toolkit.mrd_estimands import replicated_mrd_log10

    y_rep, lod = replicated_mrd_log10(posterior, inputs, **measurement_error_kwargs(residual_df))
    return _mrd_censored_pit(y_rep, lod, inputs, random_seed=random_seed)


def _mrd_censored_pit(y_rep, lod, inputs, *, random_seed: int) -> np.ndarray:
    """The MRD censored-data PIT from replicates ``y_rep`` (draws, assessments) and each row's LoD."""
    y_rep = np.asarray(y_rep, dtype=float)
    censoring = np.asarray(inputs.censoring)

    def cdf(x):
        x = np.asarray(x, dtype=float)
        return np.mean(y_rep <= np.where(np.isfinite(x), x, -np.inf)[None, :], axis=0)

    y = np.asarray(inputs.log10_value, dtype=float)
    loq = np.asarray(inputs.log10_loq, dtype=float)
    lower = np.where(censoring == 0, cdf(y), np.where(censoring == 1, 0.0, cdf(lod)))
    upper = np.where(censoring == 0, cdf(y), np.where(censoring == 1, cdf(lod), cdf(np.maximum(loq, lod))))
    return censored_pit(lower, upper, random_seed=random_seed)


def durability_pit_from_draws(event_rep, inputs, *, random_seed: int = DEFAULT_SEED) -> np.ndarray:
    """Censored-data PIT from stored replicates: ``event_rep`` (draws, patients) is 1 where the replicate
    relapsed by the patient's observed time (``toolkit.predictive.durability_predictive``), so its mean is
    F_i(t_i); a relapse gives F_i(t_i), a censored follow-up U(F_i(t_i), 1)."""
    cdf = np.asarray(event_rep, dtype=float).mean(axis=0)
    event = np.asarray(inputs.event).astype(bool)
    return censored_pit(cdf, np.where(event, cdf, 1.0), random_seed=random_seed)


def mrd_pit_from_draws(y_rep, inputs, *, random_seed: int = DEFAULT_SEED) -> np.ndarray:
    """Censored-data PIT of each MRD assessment from stored replicates ``y_rep`` (draws, assessments) of
    log10 MRD (``toolkit.predictive.mrd_predictive``); the same rule as :func:`mrd_pit`."""
    from toolkit.mrd_estimands import filled_detection_limits

    return _mrd_censored_pit(y_rep, filled_detection_limits(inputs), inputs, random_seed=random_seed)


def durability_pit_of_run(dt, inputs, *, random_seed: int = DEFAULT_SEED) -> np.ndarray:
    """The durability PIT of a run (DataTree): from its stored replicates, or, for a run saved without them,
    computed from its posterior (:func:`durability_pit`)."""
    return _pit_of_run(dt, inputs, "rfs_event", durability_pit_from_draws, durability_pit, random_seed)


def mrd_pit_of_run(dt, inputs, *, random_seed: int = DEFAULT_SEED, residual_df="current") -> np.ndarray:
    """The MRD PIT of a run (DataTree): from its stored replicates, or, for a run saved without them,
    computed from its posterior (:func:`mrd_pit`) under the run's own measurement error ``residual_df``
    (``toolkit.mrd_estimands.residual_df_of_run``)."""
    from functools import partial

    return _pit_of_run(dt, inputs, "mrd_log10", mrd_pit_from_draws, partial(mrd_pit, residual_df=residual_df),
                       random_seed)


def _pit_of_run(dt, inputs, stored_name: str, from_draws, from_posterior, random_seed: int) -> np.ndarray:
    """A run's PIT from its stored replicates ``stored_name``, or from its posterior when it has none."""
    from toolkit.predictive import stored_predictive

    replicates = stored_predictive(dt, stored_name)
    if replicates is None:
        return from_posterior(dt["posterior"], inputs, random_seed=random_seed)
    return from_draws(replicates, inputs, random_seed=random_seed)


def mrd_replicated_negative_of_run(dt, inputs, *, residual_df="current") -> np.ndarray:
    """Replicated "MRD-negative" (draws, assessments) of a run: its stored replicates below each assessment's
    detection limit, or, for a run saved without them, :func:`toolkit.mrd_estimands.replicated_negative`
    under the run's own measurement error ``residual_df`` (as in :func:`mrd_pit`)."""
    from toolkit.mrd_estimands import filled_detection_limits, replicated_negative
    from toolkit.predictive import stored_predictive

    y_rep = stored_predictive(dt, "mrd_log10")
    if y_rep is None:
        return replicated_negative(dt["posterior"], inputs, **measurement_error_kwargs(residual_df))
    return y_rep < filled_detection_limits(inputs)[None, :]


def pit_datatree(pits: dict):
    """``{name: PIT values}`` as the DataTree ``arviz_plots.plot_ecdf_pit`` reads (group ``pit``)."""
    import xarray as xr

    return xr.DataTree.from_dict({"pit": xr.Dataset(
        {name: (("chain", "draw"), np.asarray(u, dtype=float)[None, :]) for name, u in pits.items()})})


def plot_pit_ecdf(pits: dict, *, title: str | None = None):
    """PIT-ECDF difference with ArviZ's simultaneous band and uniformity p-value, one panel per entry of
    ``pits``; returns the matplotlib Figure (the ArviZ PlotCollection draws it)."""
    import matplotlib.pyplot as plt
    from arviz_plots import plot_ecdf_pit

    pc = plot_ecdf_pit(pit_datatree(pits), group="pit", backend="matplotlib",
                       figure_kwargs={"figsize": (4.6 * len(pits), 3.2)})
    fig = pc.viz["figure"].item() if "figure" in pc.viz else plt.gcf()
    if title:
        fig.suptitle(title, fontsize=10)
    for ax in fig.axes:
        ax.set_ylabel("ECDF - uniform", fontsize=8)
    fig.tight_layout()
    return fig
