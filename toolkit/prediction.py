r"""Dynamic prediction from a joint-model run: P(relapse by day h | kinetics seen up to a landmark).

For a new patient who responded and is alive, relapse-free and untransplanted at the landmark day L
(days since infusion), with CAR-T samples y up to L (and, for a run with the MRD association, MRD
detected before L), the posterior predictive probability of relapse by day h > L is

    P = E[ 1 - S(h) / S(L) | y, event-free at L ],

the expectation over the posterior of the population parameters phi (the fitted run) and the new
patient's kinetics theta. It is computed by importance sampling: for each of D posterior draws phi_d,
M proposals theta_dm are drawn from the population distribution of the patient's arm, and weighted by

    w_dm = p(y | theta_dm, phi_d) * S(L | theta_dm, phi_d),

the censored (M3) likelihood of the samples times the probability of being event-free at L (which
also updates the chance of being cured). Then P = sum w_dm q_dm / sum w_dm with q = 1 - S(h)/S(L);
the per-draw values P_d (weights normalised within draw d, draws weighted by their mean w) give a 90 %
interval for the patient's risk. ``ess`` = (sum w)^2 / sum w^2 reports how well the proposals cover the
patient's posterior (below 100 is flagged).

The risk is the cause-specific one of the joint model (death in remission is not a competing event
here). MRD after the landmark is not projected: a patient MRD-negative at L is taken as staying so,
which makes the MRD-based prediction optimistic for them (a landmarking approximation). For a run with
the MRD submodel (``mrd_clearance``), the new patient's MRD kill rate is drawn from the fitted population
of their arm and weighted only through S(L): their MRD values are not used to learn it (they enter
through the ``mrd`` marker association when the run has it), which widens, not biases, the prediction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from toolkit.data.inputs import DAYS_PER_YEAR, kinetic_cut_day, rows_after_kinetic_cut
from toolkit.data.joint_inputs import NO_CHANGE, first_mrd_positive_years
from toolkit.models import cart
from toolkit.models.joint import (
    LOG_CLEARANCE_REFERENCE,
    LOG_CMAX_REFERENCE,
    MRD_SUBMODEL,
    loss_delay,
    population_log_clearance,
    relapse_cumhaz,
)
from toolkit.models.kinetics import cart_curve

ESS_FLAG = 100.0


def _draws(posterior, name) -> np.ndarray:
    da = posterior[name]
    return da.to_numpy().reshape(-1, *da.shape[2:])


def eligible_at_landmark(cohort, landmark_day: float) -> pd.DataFrame:
    """Responders alive, relapse-free, untransplanted, without a new anti-CD19 therapy and still followed at
    ``landmark_day`` (with arm 0/1): the patients whose kinetics up to the landmark are the first infusion's
    natural course (the kinetic cut, ``toolkit.data.inputs.KINETIC_CUT_COLUMNS``)."""
    df = cohort.merged()
    inf = np.inf
    new_therapy = df["new_therapy_day"].fillna(inf) if "new_therapy_day" in df else pd.Series(inf, index=df.index)
    ok = (df["response"].isin(["CR", "CRi"]) & (df["response_day"] < landmark_day)
          & (df["relapse_day"].fillna(inf) > landmark_day) & (df["death_day"].fillna(inf) > landmark_day)
          & (df["hsct_day"].fillna(inf) > landmark_day) & (new_therapy > landmark_day)
          & (df["last_followup_day"] >= landmark_day))
    out = df.loc[ok, ["patient_id", "response_day"]].copy()
    out["arm"] = (df.loc[ok, "arm"] == cohort.experimental_arm).astype(int).to_numpy()
    return out.reset_index(drop=True)


def _survival(s_years, lp, changes, log_hrs, post, pi):
    """S(s) = pi + (1 - pi) exp(-H(s)) per (draw, proposal)."""
    h = relapse_cumhaz(np.full_like(lp, s_years), lp, post["log_shape"][:, None],
                       post["log_scale_years"][:, None], changes, log_hrs, lib=np)
    return pi + (1 - pi) * np.exp(-h)


def predict_relapse(run, cohort, *, landmark_day: float = 90.0, horizons=(365.0,), n_draws: int = 500,
                    n_proposals: int = 200, random_seed: int = 20261125, ci_prob: float = 0.9) -> pd.DataFrame:
    """One row per eligible patient: ``patient_id``, ``arm``, ``n_samples`` (CAR-T samples up to L),
    ``mrd_positive_before_landmark``, and per horizon h ``p_relapse_by_{h}d`` with ``_lo``/``_hi``, plus
    ``ess`` and ``ess_low`` (see the module docstring)."""
    summary = run.summary
    if summary["model"] != "joint":
        raise ValueError(f"toolkit predict needs a joint-model run, and this run is a {summary['model']!r} fit")
    horizons = [float(h) for h in horizons]
    if any(h <= landmark_day for h in horizons):
        raise ValueError(f"every horizon must come after the landmark day {landmark_day:g}; got {horizons}")
    options = summary["options"]
    if options.get("covariates"):
        raise ValueError("prediction from a run with relapse covariates is not supported yet; refit without them")
    posterior = run.posterior["posterior"]
    rng = np.random.default_rng(random_seed)
    total = _draws(posterior, "log_hr").shape[0]
    pick = np.sort(rng.choice(total, size=min(n_draws, total), replace=False))
    names = ["mu_kinetic", "omega_kinetic", "sigma_log", "log_hr", "log_shape", "log_scale_years"]
    names += [n for n in ("log_hr_per_log_cmax", "log_hr_cart_loss", "log_hr_mrd_recurrence", "logit_cure",
                          "cure_log_or", "log_hr_per_log_clearance") if n in posterior]
    if "log_hr_per_log_clearance" in posterior:
        names += [f"{MRD_SUBMODEL}::{n}" for n in ("log_clearance", "clearance_log_ratio", "clearance_sd")]
    post = {n: _draws(posterior, n)[pick] for n in names}
    delta = cart.arm_effects_full(posterior)[pick]
    patients = eligible_at_landmark(cohort, landmark_day)
    cart_rows = cohort.cart.copy()
    cart_rows["patient_id"] = cart_rows["patient_id"].astype(str)
    # the fit's kinetic cut (a no-op for eligible patients, whose first event comes after the landmark)
    cart_rows = cart_rows.loc[~rows_after_kinetic_cut(cart_rows, kinetic_cut_day(cohort))]
    lloq_default = float(np.nanmedian(cart_rows["lloq_used"].to_numpy(float)))
    z_key = "log_hr_mrd_recurrence" in post
    rows = []
    for _, patient in patients.iterrows():
        pid, arm, response_day = str(patient["patient_id"]), int(patient["arm"]), float(patient["response_day"])
        samples = cart_rows[(cart_rows["patient_id"] == pid) & (cart_rows["day"] <= landmark_day)]
        lloq = samples["lloq_used"].to_numpy(float)
        patient_lloq = float(np.nanmedian(lloq)) if np.isfinite(lloq).any() else lloq_default
        theta = (post["mu_kinetic"][:, None, :] + arm * delta[:, None, :]
                 + post["omega_kinetic"][:, None, :] * rng.standard_normal((len(pick), n_proposals, 6)))
        p = cart.natural_parameters_np(theta)
        loglik = np.zeros(theta.shape[:2])
        sigma = post["sigma_log"][:, None]
        for day, value, below, limit in zip(samples["day"].to_numpy(float), samples["value"].to_numpy(float),
                                            samples["below_lloq"].to_numpy(bool), lloq):
            log_c = np.log(cart_curve(day, p["cmax"], p["tmax"], p["foldx"], p["alpha"], p["beta"], p["fb"]))
            loglik += (stats.norm.logcdf(np.log(limit), log_c, sigma) if below
                       else stats.norm.logpdf(np.log(value), log_c, sigma))
        lp = post["log_hr"][:, None] * arm
        if "log_hr_per_log_cmax" in post:
            lp = lp + post["log_hr_per_log_cmax"][:, None] * (theta[..., 0] - LOG_CMAX_REFERENCE)
        if "log_hr_per_log_clearance" in post:  # the arm's population of MRD kill rates (module docstring)
            sub = lambda n: post[f"{MRD_SUBMODEL}::{n}"][:, None]  # noqa: E731
            log_k = population_log_clearance(sub("log_clearance"), sub("clearance_log_ratio"), sub("clearance_sd"),
                                             arm, rng.standard_normal(theta.shape[:2]))
            lp = lp + post["log_hr_per_log_clearance"][:, None] * (log_k - LOG_CLEARANCE_REFERENCE)
        changes, log_hrs = [], []
        if "log_hr_cart_loss" in post:
            u = loss_delay(theta[..., 0], p["alpha"], p["beta"], theta[..., 4], np.log(patient_lloq), lib=np)
            changes.append(np.maximum(p["tmax"] + u - response_day, 0.0) / DAYS_PER_YEAR)
            log_hrs.append(post["log_hr_cart_loss"][:, None])
        mrd_seen = False
        if z_key:  # the fit's definition, with follow-up ending at the landmark
            first, _ = first_mrd_positive_years(cohort, [pid], np.array([response_day]),
                                                np.array([(landmark_day - response_day) / DAYS_PER_YEAR]))
            mrd_seen = bool(first[0] < NO_CHANGE)
            changes.append(np.full_like(lp, first[0]))
            log_hrs.append(post["log_hr_mrd_recurrence"][:, None])
        if "logit_cure" in post:
            pi = 1 / (1 + np.exp(-(post["logit_cure"] + arm * post["cure_log_or"])))[:, None]
        else:
            pi = np.zeros((len(pick), 1))
        s_l = _survival((landmark_day - response_day) / DAYS_PER_YEAR, lp, changes, log_hrs, post, pi)
        log_w = loglik + np.log(s_l)
        w = np.exp(log_w - log_w.max())
        ess = float(w.sum() ** 2 / np.sum(w ** 2))
        draw_weight = w.sum(axis=1)
        row = {"patient_id": pid, "arm": arm, "n_samples": len(samples), "mrd_positive_before_landmark": mrd_seen}
        for h in horizons:
            s_h = _survival((h - response_day) / DAYS_PER_YEAR, lp, changes, log_hrs, post, pi)
            q = 1 - s_h / s_l
            p_draw = (w * q).sum(axis=1) / np.maximum(draw_weight, 1e-300)
            key = f"p_relapse_by_{h:g}d"
            row[key] = float((w * q).sum() / w.sum())
            lo, hi = _weighted_quantiles(p_draw, draw_weight, [(1 - ci_prob) / 2, (1 + ci_prob) / 2])
            row[f"{key}_lo"], row[f"{key}_hi"] = lo, hi
        row["ess"] = ess
        row["ess_low"] = ess < ESS_FLAG
        rows.append(row)
    return pd.DataFrame(rows)


def _weighted_quantiles(values, weights, qs):
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    cum = cum / cum[-1]
    return [float(values[order][np.searchsorted(cum, q)]) for q in qs]


def brier_and_auc(predicted: np.ndarray, relapsed: np.ndarray) -> dict:
    """Brier score and AUC (probability a relapsing patient has a higher predicted risk than a non-relapsing
    one; ties count half) of predictions against known 0/1 outcomes."""
    predicted, relapsed = np.asarray(predicted, float), np.asarray(relapsed, bool)
    brier = float(np.mean((predicted - relapsed) ** 2))
    pos, neg = predicted[relapsed], predicted[~relapsed]
    if len(pos) == 0 or len(neg) == 0:
        return {"brier": brier, "auc": float("nan"), "n": int(predicted.size), "events": int(relapsed.sum())}
    greater = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    return {"brier": brier, "auc": float(greater), "n": int(predicted.size), "events": int(relapsed.sum())}


def calibration_table(predicted: np.ndarray, relapsed: np.ndarray, bins: int = 5) -> pd.DataFrame:
    """Observed vs mean predicted risk in ``bins`` groups of equal size by predicted risk."""
    frame = pd.DataFrame({"predicted": predicted, "relapsed": np.asarray(relapsed, float)})
    frame["group"] = pd.qcut(frame["predicted"].rank(method="first"), bins, labels=False)
    return frame.groupby("group").agg(n=("predicted", "size"), mean_predicted=("predicted", "mean"),
                                      observed=("relapsed", "mean")).reset_index(drop=True)
