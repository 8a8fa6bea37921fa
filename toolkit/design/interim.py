r"""Predictive probability of success (PoS) of a trial in progress.

Time on study. The cohort format has no calendar dates, so a patient's time on
study at the data cut is read from ``last_followup_day``: every patient
without a death is taken to be followed up to the data cut (no one lost to
follow-up before it). Patients still to be enrolled arrive after the cut as a
Poisson process at the design's accrual rate, allocated so that the arms end
as equal as possible; the final analysis is ``final_after_last_patient_days``
after the last patient's infusion, F days after the cut.

Imputation (one completed trial per posterior draw j, durability model):

- non-responder, relapse, death, or HSCT in remission (censored at HSCT, the
  primary analysis' policy): fixed as observed;
- responder in remission s = last_followup_day - response_day days after
  response: event time T with P(T > t | T > s) = S_j(t) / S_j(s), S_j the
  arm's relapse-free survival of draw j (cure model: the mixture, so the
  probability of cure is updated by survival to s); observed if T <= s + F,
  else censored at s + F. Relapse or death in remission by
  P(relapse | event at t) = dCIR_j(t) / (dCIR_j(t) + dNRM_j(t));
- a new patient: response ~ Bernoulli(p_arm,j); a responder's RFS drawn from
  S_j, censored at F - a_k - response_day (a_k: days from cut to enrolment).

Final rule. The fast approximation (what ``toolkit interim`` reports) replaces
the refit of each completed trial by a normal approximation to the final
posterior of the rule's estimand: for ``rfs_{D}d_difference`` the difference
of Kaplan-Meier estimates among responders at D days after response, with
Greenwood variances, q = Phi((diff - x) / se) (``efs_{D}d_difference``:
Kaplan-Meier of EFS from infusion among every patient, non-response an event
on day 0); for ``hazard_ratio`` the exponential maximum-likelihood log-HR with
variance 1/d0 + 1/d1, q = Phi((log x - log HR_hat) / se). Success if q > the
design's ``success_probability``. PoS = mean of success over M imputations,
Monte Carlo SE sqrt(PoS (1 - PoS) / M). :func:`brute_force` refits imputed
trials with the real analysis and rule (the validator).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from toolkit.design.spec import DAYS_PER_MONTH, Design


class InterimError(ValueError):
    """An interim request that cannot be answered (e.g. more patients than the design allows)."""


def check_cohort(cohort, design: Design) -> None:
    n = len(cohort.patients)
    if n > design.max_patients:
        raise InterimError(f"cohort {cohort.path} has {n} patients, more than the design's maximum of "
                           f"{design.max_patients} ([accrual] max_patients in {design.path}); use the design the "
                           "trial runs under, or raise its maximum sample size")
    if design.analysis_spec is None:
        raise InterimError(f"{design.path}: the interim predictive probability needs a model analysis "
                           "([analysis] spec = an analysis spec such as models/durability_primary.toml)")
    if not (design.estimand == "hazard_ratio" or re.fullmatch(r"(rfs|efs)_\d+d_difference", design.estimand)):
        raise InterimError(f"{design.path}: no fast approximation for the rule's estimand {design.estimand!r} "
                           "(supported: hazard_ratio, rfs_<D>d_difference, efs_<D>d_difference)")


# --------------------------------------------------------------------------- the approximation of the final rule


def km_at(time: np.ndarray, event: np.ndarray, day: float) -> tuple[float, float]:
    """Kaplan-Meier S(day) and its Greenwood variance S^2 sum d / (n (n - d)) over event times <= day."""
    t = np.asarray(time, float)
    e = np.asarray(event, bool)
    times = np.unique(t[e & (t <= day)])
    if times.size == 0:
        return 1.0, 0.0
    n_risk = (t[None, :] >= times[:, None]).sum(axis=1)
    d = ((t[None, :] == times[:, None]) & e[None, :]).sum(axis=1)
    s = float(np.prod(1 - d / n_risk))
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(n_risk > d, d / (n_risk * (n_risk - d)), np.inf).sum()
    return s, float(s * s * g) if s > 0 else 0.0


def approximate_q(design: Design, trial: pd.DataFrame) -> float:
    """Normal approximation to the final posterior probability of the rule (module docstring).

    ``trial`` has one row a patient: ``arm`` (0/1), ``responder``, ``time`` (days since response;
    ignored for non-responders), ``event`` (relapse or death in remission); a DataFrame or a mapping of
    column name to array (``impute_completed_trials(frames=False)``).
    """
    name, x = design.estimand, design.threshold
    m = re.fullmatch(r"(rfs|efs)_(\d+)d_difference", name)
    if m:
        day = float(m.group(2))
        est, var = [], []
        arm_all, resp_all = np.asarray(trial["arm"]), np.asarray(trial["responder"], bool)
        time_all, event_all = np.asarray(trial["time"], float), np.asarray(trial["event"], bool)
        for a in (0, 1):
            in_arm = arm_all == a
            resp, time_, event = resp_all[in_arm], time_all[in_arm], event_all[in_arm]
            if m.group(1) == "rfs":
                s, v = km_at(time_[resp], event[resp], day)
            else:  # EFS from infusion: non-response an event at day 0, responders from the response day
                rd_arm = np.asarray(trial["response_day"], float)[in_arm][resp]
                rd = float(np.median(rd_arm)) if resp.any() else 28.0
                t = np.where(resp, time_ + rd, 0.0)
                ev = np.where(resp, event, True)
                s, v = km_at(t, ev, day)
            est.append(s)
            var.append(v)
        diff, se = est[1] - est[0], math.sqrt(var[0] + var[1])
        if se == 0:
            return float(diff > x)
        z = (diff - x) / se
        return float(stats.norm.cdf(z if design.direction == "above" else -z))
    if name == "hazard_ratio":
        trial = trial if isinstance(trial, pd.DataFrame) else pd.DataFrame(trial)
        r = trial[trial["responder"]]
        d = np.array([r.loc[r["arm"] == a, "event"].sum() for a in (0, 1)], float) + 0.5
        expo = np.array([r.loc[r["arm"] == a, "time"].sum() for a in (0, 1)], float)
        log_hr = math.log(d[1] / expo[1]) - math.log(d[0] / expo[0])
        z = (math.log(x) - log_hr) / math.sqrt(1 / d[0] + 1 / d[1])
        return float(stats.norm.cdf(z if design.direction == "below" else -z))
    raise InterimError(f"{design.path}: no fast approximation for estimand {name!r} (supported: hazard_ratio, "
                       "rfs_<D>d_difference, efs_<D>d_difference)")


# --------------------------------------------------------------------------- imputation


def current_state(cohort) -> pd.DataFrame:
    """One row a patient at the data cut: arm, responder, days since response, event/cause, and whether the
    follow-up is still open (in remission, not censored at HSCT)."""
    df = cohort.merged()
    arm = (df["arm"] == cohort.experimental_arm).astype(int).to_numpy()
    responder = df["response"].isin(["CR", "CRi"]).to_numpy()
    rd = df["response_day"].to_numpy(float)
    relapse, death, hsct = (df[c].to_numpy(float) for c in ("relapse_day", "death_day", "hsct_day"))
    last = df["last_followup_day"].to_numpy(float)
    first = np.fmin(relapse, death)
    hsct_first = np.isfinite(hsct) & ~(first <= hsct)
    cause = np.where(np.isfinite(first) & ~hsct_first, np.where(relapse <= np.fmin(death, np.inf), "relapse",
                                                                 "death"), "")
    cause = np.where(responder, cause, "")  # a non-responder's course is fixed; it enters as non-response
    end = np.where(cause != "", first, np.where(hsct_first, hsct, last))
    open_ = responder & (cause == "") & ~hsct_first
    return pd.DataFrame({"patient_id": df["patient_id"].astype(str).to_numpy(), "arm": arm,
                         "responder": responder, "response_day": np.where(responder, rd, np.nan),
                         "time": np.where(responder, end - np.nan_to_num(rd), 0.0),
                         "event": cause != "", "cause": cause, "open": open_, "on_study_days": last})


def _subset(posterior, idx):
    import xarray as xr

    data = {}
    for name, da in posterior.data_vars.items():
        flat = da.to_numpy().reshape(-1, *da.shape[2:])[idx][None]
        data[name] = (("chain", "draw") + tuple(da.dims[2:]), flat)
    return xr.Dataset(data)


def impute_completed_trials(fit, state: pd.DataFrame, design: Design, *, imputations: int, seed,
                            frames: bool = True) -> list[pd.DataFrame] | list[dict]:
    """Completed trials at the final analysis, one per posterior draw (module docstring).

    ``frames=False``: each trial as a dict of column arrays (the same values; its ``final_days_after_cut``
    under that key), which :func:`approximate_q` reads as it reads a DataFrame; building 200 DataFrames
    was most of the time of a design study's PoS at a look.
    """
    from toolkit.models.durability import cumulative_incidences, response_probabilities

    rng = np.random.default_rng(seed)
    post = fit.posterior["posterior"]
    n_draws = post.sizes["chain"] * post.sizes["draw"]
    idx = rng.choice(n_draws, imputations, replace=imputations > n_draws)
    sub = _subset(post, idx)
    rate = design.patients_per_month / DAYS_PER_MONTH
    n_new = design.max_patients - len(state)
    on_study = state["on_study_days"].to_numpy(float)
    rd_typical = float(np.nanmedian(state["response_day"])) if state["responder"].any() else 28.0
    # arrivals of the new patients (days after the cut), per imputation; horizon of the survival grid
    arrivals = np.cumsum(rng.exponential(1 / rate, (imputations, n_new)), axis=1) if n_new else \
        np.zeros((imputations, 0))
    last_infusion = arrivals[:, -1] if n_new else np.full(imputations, -float(np.nanmin(on_study)))
    final = np.maximum(last_infusion + design.final_after_last_patient_days, 0.0)
    horizon = float(np.nanmax(state["time"].to_numpy(float), initial=0.0) + final.max() + 2)
    curves = {}
    for a in (0, 1):
        grid, cir, nrm = cumulative_incidences(sub, fit.inputs, horizon, arm=a)
        curves[a] = (1 - cir - nrm, np.diff(cir, axis=1), np.diff(nrm, axis=1))
    p_resp = {a: response_probabilities(sub, arm=a) if "logit_response" in sub else
              np.full(imputations, state["responder"][state["arm"] == a].mean()) for a in (0, 1)}
    # arms of the new patients: fill the arms to equal size, in random order
    counts = np.bincount(state["arm"], minlength=2)
    target = np.array([design.max_patients // 2 + design.max_patients % 2, design.max_patients // 2])
    need = np.maximum(target - counts, 0)
    base_arms = np.concatenate([np.zeros(need[0], int), np.ones(need[1], int)])[:n_new]
    base_arms = np.concatenate([base_arms, rng.integers(0, 2, n_new - base_arms.size)])

    def draw_time(j, a, s_from, s_to):
        """Event day since response for patients in remission at s_from, censored at s_to (grid days)."""
        surv = curves[a][0][j]
        s_from = np.clip(np.floor(s_from).astype(int), 0, grid.size - 1)
        s_to = np.clip(np.floor(s_to).astype(int), 0, grid.size - 1)
        u = rng.random(s_from.size) * surv[s_from]
        # first grid day with S <= u S(s_from); S is non-increasing
        t = np.searchsorted(-surv, -u, side="left")
        event = (t <= s_to) & (t > s_from)
        t = np.where(event, t, s_to)
        dc, dn = curves[a][1][j], curves[a][2][j]
        k = np.clip(t - 1, 0, dc.size - 1)
        p_rel = np.where(dc[k] + dn[k] > 0, dc[k] / np.maximum(dc[k] + dn[k], 1e-300), 1.0)
        cause = np.where(event, np.where(rng.random(t.size) < p_rel, "relapse", "death"), "")
        return t.astype(float), event, cause

    # numpy columns, one DataFrame per imputed trial at the end (pandas row assignment was the slow part)
    columns = {c: state[c].to_numpy() for c in state.columns}
    open_arm = {a: columns["open"].astype(bool) & (columns["arm"] == a) for a in (0, 1)}
    new_ids = np.array([f"NEW{k + 1:03d}" for k in range(n_new)], dtype=object)
    trials = []
    for j in range(imputations):
        time_, event, cause_ = (columns["time"].astype(float).copy(), columns["event"].astype(bool).copy(),
                                columns["cause"].astype(object).copy())
        for a in (0, 1):
            rows = open_arm[a]
            if rows.any():
                s = time_[rows]
                time_[rows], event[rows], cause_[rows] = draw_time(j, a, s, s + final[j])
        t = {**columns, "time": time_, "event": event, "cause": cause_}
        if n_new:
            arms = rng.permutation(base_arms)
            resp = rng.random(n_new) < np.where(arms == 1, p_resp[1][j], p_resp[0][j])
            new = {"patient_id": new_ids, "arm": arms, "responder": resp,
                   "response_day": np.where(resp, rd_typical, np.nan), "time": np.zeros(n_new),
                   "event": np.zeros(n_new, bool), "cause": np.full(n_new, "", dtype=object),
                   "open": np.zeros(n_new, bool), "on_study_days": final[j] - arrivals[j]}
            for a in (0, 1):
                rows = resp & (arms == a)
                if rows.any():
                    cens = np.maximum(final[j] - arrivals[j][rows] - rd_typical, 0.0)
                    new["time"][rows], new["event"][rows], new["cause"][rows] = draw_time(
                        j, a, np.zeros(rows.sum()), cens)
            t = {c: np.concatenate([np.asarray(t[c], dtype=object if c in ("patient_id", "cause") else None),
                                    np.asarray(new[c])]) for c in state.columns}
        if not frames:
            trials.append({**{c: t[c] for c in state.columns}, "final_days_after_cut": float(final[j])})
            continue
        t = pd.DataFrame(t, columns=state.columns)
        t.attrs["final_days_after_cut"] = float(final[j])
        trials.append(t)
    return trials


def fit_current(cohort, design: Design, overrides: dict | None = None):
    """The design's analysis fitted to the cohort (the same path as ``toolkit fit``)."""
    from toolkit.design.spec import analysis_settings
    from toolkit.fitting import fit_durability

    options, settings = analysis_settings(design, **(overrides or {}))
    return fit_durability(cohort, options, settings, spec=design.analysis_spec)


def look_predictive_probability(cohort, design: Design, fit, *, imputations: int, seed,
                                state: pd.DataFrame | None = None, frames: bool = True) -> tuple[float, float, list]:
    r"""PoS of a cohort given its fit, by the fast approximation, with its Monte Carlo SE.

    PoS = (1/M) sum_j 1[q_j > success_probability], q_j the approximate final posterior probability of the
    j-th imputed completed trial; SE = sqrt(PoS (1 - PoS) / M). The same function serves ``toolkit interim``
    and every interim look of a design study. Returns (PoS, SE, the imputed trials: DataFrames, or dicts of
    column arrays with ``frames=False``, the same PoS).
    """
    state = current_state(cohort) if state is None else state
    trials = impute_completed_trials(fit, state, design, imputations=imputations, seed=seed, frames=frames)
    success = np.array([approximate_q(design, t) for t in trials]) > design.success_probability
    pos = float(success.mean())
    return pos, math.sqrt(pos * (1 - pos) / imputations), trials


def predictive_probability_of_success(cohort, design: Design, *, imputations: int = 1000, seed=20261125,
                                      overrides: dict | None = None, fit=None) -> dict:
    """PoS of the cohort's trial under ``design`` by the fast approximation (module docstring)."""
    check_cohort(cohort, design)
    fit = fit or fit_current(cohort, design, overrides)
    state = current_state(cohort)
    pos, se, trials = look_predictive_probability(cohort, design, fit, imputations=imputations, seed=seed,
                                                  state=state)
    q_now_model = float(fit.summary["estimands"][design.probability_key])
    q_now_approx = approximate_q(design, state)
    n, n_new = len(state), design.max_patients - len(state)
    result = {"cohort": str(cohort.path), "design": design.path, "rule": design.rule_text(),
              "method": "fast approximation: imputed completed trials from the posterior predictive, final rule "
                        "by a normal approximation to the final posterior (Kaplan-Meier/Greenwood or "
                        "exponential log-HR), no refit",
              "patients_enrolled": n, "patients_to_enrol": n_new, "imputations": imputations,
              "pos": pos, "pos_mc_se": se,
              "final_days_after_cut_mean": float(np.mean([t.attrs["final_days_after_cut"] for t in trials])),
              "current_posterior_probability": q_now_model, "current_posterior_probability_approx": q_now_approx,
              "fit_converged": bool(fit.converged), "fit_diagnostics": fit.summary["diagnostics"]}
    lines = [f"With {n} of {design.max_patients} patients enrolled, the predictive probability that the trial "
             f"succeeds at its final analysis ({design.rule_text()}) is {100 * pos:.1f}% "
             f"(± {100 * se:.1f} points Monte Carlo error, {imputations} imputed completed trials).",
             f"Today the posterior probability is {q_now_model:.3f} (the fast approximation gives "
             f"{q_now_approx:.3f} on the same data).",
             f"The final analysis is expected about {result['final_days_after_cut_mean'] / DAYS_PER_MONTH:.1f} "
             f"months from the data cut ({n_new} patients still to enrol at {design.patients_per_month:g} a month, "
             f"then {design.final_after_last_patient_days:g} days of follow-up)."]
    if not fit.converged:
        lines.insert(0, "WARNING: the fit to the current cohort did not pass its convergence diagnostics; the "
                        "predictive probability is provisional.")
    result["sentences"] = lines
    return result


def write_interim_report(result: dict, out: str | Path) -> dict:
    """``interim.json`` and a small ``interim.html`` section in ``out``."""
    import html

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "interim.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    body = "".join(f"<p>{html.escape(s)}</p>" for s in result["sentences"])
    (out / "interim.html").write_text("<!doctype html><html><head><meta charset='utf-8'><title>Interim predictive "
                                      f"probability</title></head><body><section id='interim'><h2>Predictive "
                                      f"probability of success</h2>{body}<p><small>{html.escape(result['method'])}"
                                      "</small></p></section></body></html>\n")
    return {"json": out / "interim.json", "html": out / "interim.html"}


# --------------------------------------------------------------------------- the brute-force validator


def completed_cohort(trial: pd.DataFrame, cohort, folder: str | Path) -> Path:
    """Write an imputed completed trial as a cohort folder (durability columns only) for a refit."""
    from toolkit.data.io import write_study

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_study(folder, {"name": "imputed completed trial", "control_arm": cohort.control_arm,
                         "experimental_arm": cohort.experimental_arm})
    arms = np.where(trial["arm"] == 1, cohort.experimental_arm, cohort.control_arm)
    ids = [f"P{i + 1:03d}" for i in range(len(trial))]
    pd.DataFrame({"patient_id": ids, "arm": arms}).to_csv(folder / "patients.csv", index=False)

    def day(x):
        return "" if not np.isfinite(x) else str(int(round(x)))

    rd = trial["response_day"].to_numpy(float)
    abs_t = np.where(trial["responder"], rd + np.maximum(trial["time"].to_numpy(float), 1.0), np.nan)
    state_death = trial["cause"].to_numpy() == "death"
    state_rel = trial["cause"].to_numpy() == "relapse"
    old = cohort.merged().set_index(cohort.merged()["patient_id"].astype(str))
    rows = []
    for i, (pid, r) in enumerate(trial.iterrows()):
        orig = old.loc[r["patient_id"]] if r["patient_id"] in old.index else None
        if not r["responder"]:
            last = orig["last_followup_day"] if orig is not None else max(r["on_study_days"], 1.0)
            death = orig["death_day"] if orig is not None else np.nan
            rows.append((ids[i], "NR", "", "", "", "", day(death), day(last)))
            continue
        hsct = orig["hsct_day"] if orig is not None and not r["open"] and r["cause"] == "" else np.nan
        rel = abs_t[i] if state_rel[i] else np.nan
        death = abs_t[i] if state_death[i] else np.nan
        if orig is not None and not r["open"]:  # fixed as observed
            rel, death, hsct = orig["relapse_day"], orig["death_day"], orig["hsct_day"]
            last = orig["last_followup_day"]
        else:
            last = abs_t[i]
        rows.append((ids[i], "CR", day(rd[i]), day(rel), "unknown" if np.isfinite(rel) else "", day(hsct),
                     day(death), day(last)))
    pd.DataFrame(rows, columns=["patient_id", "response", "response_day", "relapse_day", "relapse_cd19",
                                "hsct_day", "death_day", "last_followup_day"]).to_csv(folder / "outcomes.csv",
                                                                                      index=False)
    return folder


def brute_force(cohort, design: Design, *, imputations: int, seed=20261125, overrides: dict | None = None,
                workdir: str | Path, fit=None) -> dict:
    """The validator: refit ``imputations`` imputed completed trials with the design's analysis and apply the
    real rule; returns both PoS (refit and fast approximation, same imputations) with Monte Carlo SEs, and
    the per-imputation agreement of the two decisions."""
    from toolkit.data import load_cohort
    from toolkit.fitting import fit_durability
    from toolkit.design.spec import analysis_settings

    check_cohort(cohort, design)
    fit = fit or fit_current(cohort, design, overrides)
    state = current_state(cohort)
    trials = impute_completed_trials(fit, state, design, imputations=imputations, seed=seed)
    options, settings = analysis_settings(design, **(overrides or {}))
    approx, refit, converged = [], [], []
    for j, t in enumerate(trials):
        approx.append(approximate_q(design, t))
        folder = completed_cohort(t, cohort, Path(workdir) / f"imputed_{j:04d}")
        r = fit_durability(load_cohort(folder), options, settings, spec=design.analysis_spec)
        refit.append(float(r.summary["estimands"][design.probability_key]))
        converged.append(r.converged)
    a = np.array(approx) > design.success_probability
    b = np.array(refit) > design.success_probability
    m = len(trials)

    def ps(x):
        p = float(np.mean(x))
        return p, math.sqrt(p * (1 - p) / m)

    return {"imputations": m, "pos_approx": ps(a), "pos_refit": ps(b), "agreement": float(np.mean(a == b)),
            "q_approx": approx, "q_refit": refit, "refits_converged": int(np.sum(converged)),
            "difference_se": math.sqrt(max(np.var(a.astype(float) - b.astype(float), ddof=1) / m, 0.0))
            if m > 1 else math.nan}
