r"""Operating characteristics of a design: simulate trials, analyse every look, apply the rule, aggregate.

Every look of every trial is analysed, whether or not an earlier look would
have stopped it: stopping is applied afterwards, from the stored table, so
flip-flops (an interim that crosses the success boundary in a trial whose
final analysis fails) are observed, and boundaries can be changed without
refitting. One task is one trial (all its looks); results are stored one
Parquet file per (scenario, trial), so ``--resume`` continues a study.

Monte Carlo error: a proportion p over n trials has SE sqrt(p (1 - p) / n);
a mean of x over n trials has SE sd(x) / sqrt(n).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

from toolkit.design.spec import ANALYTIC, Design, analysis_settings  # noqa: F401 - public here too
from toolkit.design.trials import (censor_at, event_calendar_days, final_day, look_day, simulate_calendar_trial,
                                   write_cut)

CONFIG_FILE = "design.json"
RESULTS_DIR = "trials"
FINAL = "final"
#: the error text of an interim look whose trigger came after the final analysis (not a failure)
NOT_REACHED = "look not reached before the final analysis"


class DesignStudyError(ValueError):
    """A design study folder that cannot be used (e.g. --resume with a different design)."""


# --------------------------------------------------------------------------- the analyses


def exponential_jeffreys(tte: pd.DataFrame, *, threshold: float = 1.0, seed=0) -> dict:
    r"""Conjugate analysis of exponential event times per arm, the design's analytic rule.

    With d_a events over exposure T_a in arm a and Jeffreys' prior pi(lambda) ∝ lambda^{-1/2},
    lambda_a | data ~ Gamma(d_a + 1/2, T_a). For HR = lambda_1 / lambda_0,

        P(HR < h | data) = I_{h T_1 / (h T_1 + T_0)}(d_1 + 1/2, d_0 + 1/2)

    (regularized incomplete beta: X = T_1 lambda_1 and Y = T_0 lambda_0 are independent Gamma
    variables, and X / (X + Y) ~ Beta). Returns ``q`` = P(HR < threshold), the posterior median of HR and
    the event counts.
    """
    arm = tte["arm"].to_numpy(int)
    t = tte["time"].to_numpy(float)
    e = tte["event"].to_numpy(int)
    d = np.array([e[arm == a].sum() for a in (0, 1)], float) + 0.5
    exposure = np.array([t[arm == a].sum() for a in (0, 1)], float)
    h = threshold
    q = float(special.betainc(d[1], d[0], h * exposure[1] / (h * exposure[1] + exposure[0])))
    rng = np.random.default_rng(seed)
    hr = (rng.gamma(d[1], 1 / exposure[1], 4000)) / (rng.gamma(d[0], 1 / exposure[0], 4000))
    return {"q": q, "estimate": float(np.median(hr)), "events": int(e.sum()), "events_control": int(d[0] - 0.5),
            "events_experimental": int(d[1] - 0.5), "converged": True}


def _analyse_analytic(design: Design, cut) -> dict:
    from toolkit.data import Cohort
    from toolkit.data.endpoints import time_to_event

    outcomes = cut.outcomes.copy()
    for col in ("response_day", "relapse_day", "hsct_day", "death_day", "last_followup_day"):
        outcomes[col] = pd.to_numeric(outcomes[col], errors="coerce")
    cohort = Cohort(path=Path("."), study=cut.study, patients=cut.patients, outcomes=outcomes)
    tte = time_to_event(cohort, endpoint="rfs", hsct="censor")
    if len(tte) == 0 or tte["arm"].nunique() < 2:
        raise ValueError("no responders in one arm yet")
    return exponential_jeffreys(tte, threshold=design.threshold)


#: fit each look with the worker's compiled padded model (toolkit.design.padded, always nutpie: compiled once,
#: its sampling is the fast part); False: ``fit_durability`` with the analysis' own backend, which builds and
#: compiles a model per look (the reference the padded path is tested against)
COMPILE_ONCE = True


def _analyse_model(design: Design, cut, *, workdir: Path, look_seed: int, overrides: dict):
    """Fit the design's analysis to a look's cut; returns (the look's record, the fit, the cut's cohort)."""
    from dataclasses import replace

    from toolkit.data import load_cohort
    from toolkit.design.padded import fit_padded
    from toolkit.fitting import fit_durability

    options, settings = analysis_settings(design, **overrides)
    settings = replace(settings, random_seed=look_seed, cores=1)
    folder = Path(tempfile.mkdtemp(dir=workdir))
    write_cut(cut, folder, tables=("patients", "outcomes"))  # what the durability analysis reads
    cohort = load_cohort(folder)  # the same validation as `toolkit fit`
    if COMPILE_ONCE:
        # only the rule's estimand and its probability are read from a look's fit (the record below)
        result = fit_padded(cohort, options, settings, n_max=design.max_patients,
                            estimands={design.estimand, design.probability_key})
    else:
        result = fit_durability(cohort, options, settings, spec=design.analysis_spec)
    est = result.summary["estimands"]
    diag = result.summary["diagnostics"]
    estimate = est.get(design.estimand, {})
    return {"q": float(est[design.probability_key]),
            "estimate": float(estimate["median"]) if isinstance(estimate, dict) else math.nan,
            "events": int(sum(v["events"] for v in result.summary["data"]["per_arm"].values())),
            "events_control": int(result.summary["data"]["per_arm"]["control"]["events"]),
            "events_experimental": int(result.summary["data"]["per_arm"]["experimental"]["events"]),
            "converged": bool(diag["converged"]), "max_rhat": float(diag.get("max_rhat") or math.nan),
            "divergences": int(diag.get("divergences") or 0)}, result, cohort


def _look_pos(design: Design, cohort, fit, *, seed: int) -> dict:
    """PoS at an interim look from that look's fit (:func:`toolkit.design.interim.look_predictive_probability`,
    ``design.pos_imputations`` imputed completed trials), with its Monte Carlo SE."""
    from toolkit.design.interim import look_predictive_probability

    pos, se, _ = look_predictive_probability(cohort, design, fit, imputations=design.pos_imputations, seed=seed,
                                             frames=False)  # the imputed trials are not kept
    return {"pos": pos, "pos_mc_se": se, "pos_imputations": design.pos_imputations}


def run_trial(design: Design, scenario_index: int, trial: int, *, overrides: dict | None = None,
              workdir: str | None = None) -> dict:
    """Simulate one trial, analyse each look and the final analysis; one record per look.

    A look whose analysis fails (e.g. no events yet) is recorded with its error and no ``q``.
    """
    scenario = design.scenarios[scenario_index]
    sim, enrol = simulate_calendar_trial(design, scenario, scenario_index, trial)
    events = event_calendar_days(sim, enrol)
    fin = final_day(design, enrol)
    looks = [(i, lk.name, look_day(lk, enrol, events)) for i, lk in enumerate(design.looks)]
    looks.append((len(design.looks), FINAL, fin))
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for index, name, day in looks:
            row = {"scenario": scenario.name, "trial": trial, "look": index, "look_name": name, "day": day,
                   "enrolled": 0, "analysed": 0, "events": 0, "events_control": 0,
                   "events_experimental": 0, "q": math.nan, "estimate": math.nan,
                   "converged": False, "max_rhat": math.nan, "divergences": 0, "error": "", "seconds": 0.0,
                   "pos": math.nan, "pos_mc_se": math.nan, "pos_imputations": 0}
            if name != FINAL and not (math.isfinite(day) and day < fin):
                row["error"] = NOT_REACHED
                rows.append(row)
                continue
            t0 = time.perf_counter()
            cut, counts = censor_at(sim, enrol, day)
            row.update(counts)
            try:
                if design.analysis_spec is None:
                    row.update(_analyse_analytic(design, cut))
                else:
                    seed = int((design.seed * 1_000_003 + trial * 101 + index) % 2**31)
                    record, fit, cohort = _analyse_model(design, cut, workdir=Path(tmp), overrides=overrides or {},
                                                         look_seed=seed)
                    row.update(record)
                    if name != FINAL:  # the PoS at every interim look, whichever kind of boundary the design uses
                        row.update(_look_pos(design, cohort, fit, seed=seed + 1))
            except Exception as exc:  # noqa: BLE001 - one failed analysis is recorded, the study goes on
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
    return {"scenario": scenario.name, "trial": trial, "rows": rows}


# --------------------------------------------------------------------------- the store


def _trial_path(out: Path, scenario: str, trial: int) -> Path:
    return out / RESULTS_DIR / f"{scenario}__{trial:06d}.parquet"


def load_results(out: str | Path) -> pd.DataFrame:
    """Every stored (trial, look) record of a design study."""
    files = sorted((Path(out) / RESULTS_DIR).glob("*__*.parquet"))  # trial files, not a temporary one a kill left
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _config(design: Design) -> dict:
    from toolkit.calibration.runner import model_versions

    return {"design": design.path, "analysis": design.analysis, "rule": design.rule_text(),
            "pos_imputations": design.pos_imputations,
            "seed": design.seed, "scenarios": [s.name for s in design.scenarios],
            "looks": [lk.name for lk in design.looks], "sampler": design.sampler,
            # the analytic rule fits no model
            "model_versions": {} if design.analysis_spec is None else model_versions(design.analysis_model)}


def run_scenario_study(task, design: Design, trials: int, out: str | Path, *, config_file: str, config: dict,
                       what: str, error: type[Exception], failed_row, workers: int | None = 0,
                       scheduler: str | None = None, resume: bool = False, overrides: dict | None = None,
                       progress=None) -> Path:
    """``trials`` simulated trials per scenario of ``design`` (resumable), one task ``task(design, scenario
    index, trial, overrides=) -> {"scenario", "trial", "rows"}`` per trial, via the calibration runner's
    :func:`toolkit.calibration.runner.map_tasks` (in-process, a local Dask cluster or ``scheduler``); each
    trial's rows are stored as one Parquet file, so a resumed study skips the trials it holds. A task whose
    worker died is stored as the single row ``failed_row(design, scenario index, trial, message)``.
    Shared by design studies (:func:`run_design`) and misspecification studies
    (``toolkit.calibration.misspec``)."""
    from toolkit.calibration.runner import _write_atomic, map_tasks, open_study, record_study_run, write_study_file

    out = Path(out)
    path = out / config_file
    previous = open_study(path, config, resume=resume, what=what, compare=tuple(config), error=error)
    write_study_file(path, {**config, **previous})
    (out / RESULTS_DIR).mkdir(parents=True, exist_ok=True)
    # trial-major order: a study stopped early holds about as many trials of every scenario
    todo = [(design, i, t) for t in range(trials) for i, s in enumerate(design.scenarios)
            if not _trial_path(out, s.name, t).exists()]

    def store(record: dict) -> None:
        # a killed study leaves whole files only
        _write_atomic(pd.DataFrame(record["rows"]), _trial_path(out, record["scenario"], record["trial"]))
        if progress is not None:
            progress(record)

    def failed(item, message):
        design_, i, t = item
        return {"scenario": design_.scenarios[i].name, "trial": t, "rows": [failed_row(design_, i, t, message)]}

    t0 = time.perf_counter()
    info = map_tasks(task, todo, kwargs={"overrides": overrides or {}}, on_result=store, on_error=failed,
                     workers=workers, scheduler=scheduler, cache_root=out / ".worker-caches", broadcast_first=True)
    record_study_run(path, {**info, "tasks": len(todo), "wall_seconds": time.perf_counter() - t0})
    return out


def run_design(design: Design, trials: int, out: str | Path, *, workers: int | None = 0,
               scheduler: str | None = None, resume: bool = False, overrides: dict | None = None,
               progress=None) -> Path:
    """Simulate ``trials`` trials per scenario and analyse every look (:func:`run_trial`), resumable
    (:func:`run_scenario_study`)."""

    def failed_row(design_, i, t, message):
        return {"scenario": design_.scenarios[i].name, "trial": t, "look": len(design_.looks), "look_name": FINAL,
                "day": math.nan, "enrolled": 0, "analysed": 0, "events": 0, "q": math.nan, "estimate": math.nan,
                "converged": False, "max_rhat": math.nan, "divergences": 0, "error": message, "seconds": 0.0,
                "pos": math.nan, "pos_mc_se": math.nan, "pos_imputations": 0}

    return run_scenario_study(run_trial, design, trials, out, config_file=CONFIG_FILE,
                              config=_config(design) | {"overrides": overrides or {}}, what="design",
                              error=DesignStudyError, failed_row=failed_row, workers=workers, scheduler=scheduler,
                              resume=resume, overrides=overrides, progress=progress)


# --------------------------------------------------------------------------- operating characteristics


def proportion(k: float, n: int) -> tuple[float, float]:
    """Estimate and Monte Carlo SE of a proportion k / n: sqrt(p (1 - p) / n)."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    return p, math.sqrt(p * (1 - p) / n)


def mean_se(x) -> tuple[float, float]:
    """Mean and Monte Carlo SE sd / sqrt(n) (NaN for n < 2)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan


def trial_outcomes(design: Design, results: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: where it stopped and why, under the design's boundaries (stopping applied in
    look order; an interim whose analysis failed takes no decision). ``decision`` is ``success``,
    ``futility`` (stopped at an interim), ``failure`` (final not successful) or ``error`` (final failed).

    The interim boundaries apply to ``design.boundary_column``: the posterior probability ``q`` or the
    predictive probability of success ``pos``; the final analysis always applies the rule to ``q``."""
    stat = design.boundary_column
    if stat not in results.columns:  # a study stored before the PoS was recorded
        results = results.assign(**{stat: math.nan})
    rows = []
    for (scenario, trial), g in results.groupby(["scenario", "trial"], sort=False):
        g = g.sort_values("look")
        final = g[g["look_name"] == FINAL]
        final = final.iloc[0] if len(final) else None
        stop, decision = None, None
        crossed = False
        for _, r in g[g["look_name"] != FINAL].iterrows():
            if r["error"] or not math.isfinite(r[stat]):
                continue
            if r[stat] > design.interim_success:
                crossed = True
                if stop is None:
                    stop, decision = r, "success"
            elif r[stat] < design.interim_futility and stop is None:
                stop, decision = r, "futility"
        if stop is None:
            stop = final
            if final is None or final["error"] or not math.isfinite(final["q"]):
                decision = "error"
            else:
                decision = "success" if final["q"] > design.success_probability else "failure"
        final_ok = final is not None and not final["error"] and math.isfinite(final["q"])
        rows.append({"scenario": scenario, "trial": trial, "decision": decision,
                     "stop_look": int(stop["look"]) if stop is not None else -1,
                     "stop_look_name": stop["look_name"] if stop is not None else "",
                     "n": int(stop["enrolled"]) if stop is not None else 0,
                     "duration_days": float(stop["day"]) if stop is not None else math.nan,
                     "estimate": float(stop["estimate"]) if stop is not None else math.nan,
                     "flip_flop": bool(crossed and final_ok and final["q"] <= design.success_probability),
                     "crossed_interim_success": crossed,
                     "not_converged_fits": int((~g["converged"].astype(bool) & (g["error"] == "")).sum()),
                     "failed_fits": int(((g["error"] != "") & ~g["error"].str.startswith("look not reached")).sum())})
    return pd.DataFrame(rows)


def scenario_truths(design: Design) -> dict[str, dict[str, float]]:
    """Every finite true estimand per scenario, ``{scenario: {name: value}}`` (``toolkit.simulate.compute_truth``
    on the scenario's effects and parameters; it simulates a large population, a few seconds a scenario)."""
    from toolkit.simulate import compute_truth

    out = {}
    for s in design.scenarios:
        truth = compute_truth(s.effects_obj(), s.parameters_obj(no_admin_censoring=False))
        out[s.name] = {k: float(v) for k, v in truth.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    return out


def scenario_truth(design: Design) -> dict[str, float]:
    """The true value of the rule's estimand per scenario (:func:`scenario_truths`; NaN where it has none)."""
    return {name: values.get(design.estimand, math.nan) for name, values in scenario_truths(design).items()}


def study_truth(design: Design, out: str | Path) -> dict[str, float]:
    """:func:`scenario_truth`, computed once per study and kept in ``truth.json`` (it takes a while:
    ``compute_truth`` simulates a large population per scenario)."""
    path = Path(out) / "truth.json"
    if path.exists():
        return {k: (math.nan if v is None else v) for k, v in json.loads(path.read_text()).items()}
    truth = scenario_truth(design)
    path.write_text(json.dumps({k: (None if not math.isfinite(v) else v) for k, v in truth.items()}, indent=2)
                    + "\n")
    return truth


def operating_characteristics(design: Design, results: pd.DataFrame, truth: dict | None = None) -> pd.DataFrame:
    """Per scenario: P(success) (type I error under no effect, power under benefit), P(stop) per look,
    expected N and duration, flip-flops, bias of the estimate at stopping, non-converged and failed fits;
    every figure with its Monte Carlo SE (columns ``*_se``)."""
    outcomes = trial_outcomes(design, results)
    truth = truth or {}
    rows = []
    for s in design.scenarios:
        o = outcomes[outcomes["scenario"] == s.name]
        valid = o[o["decision"] != "error"]
        n = len(valid)
        row = {"scenario": s.name, "trials": len(o), "trials_with_result": n}
        row["p_success"], row["p_success_se"] = proportion((valid["decision"] == "success").sum(), n)
        for i, lk in enumerate(design.looks):
            at = valid["stop_look"] == i
            row[f"p_stop_success_{i + 1}"], row[f"p_stop_success_{i + 1}_se"] = proportion(
                (at & (valid["decision"] == "success")).sum(), n)
            row[f"p_stop_futility_{i + 1}"], row[f"p_stop_futility_{i + 1}_se"] = proportion(
                (at & (valid["decision"] == "futility")).sum(), n)
        row["expected_n"], row["expected_n_se"] = mean_se(valid["n"])
        row["expected_months"], row["expected_months_se"] = mean_se(valid["duration_days"] / (365.25 / 12))
        row["p_flip_flop"], row["p_flip_flop_se"] = proportion(valid["flip_flop"].sum(), n)
        row["truth"] = truth.get(s.name, math.nan)
        row["bias_at_stop"], row["bias_at_stop_se"] = mean_se(valid["estimate"] - row["truth"])
        sub = results[results["scenario"] == s.name]
        fits = sub[~sub["error"].str.startswith("look not reached")]
        row["fits"] = len(fits)
        row["fits_not_converged"] = int((~fits["converged"].astype(bool) & (fits["error"] == "")).sum())
        row["fits_failed"] = int((fits["error"] != "").sum())
        rows.append(row)
    return pd.DataFrame(rows)
