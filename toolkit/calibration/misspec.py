r"""Misspecification studies: an analysis (durability, CAR-T, MRD or joint) fitted to whole trials from the trial simulator.

SBC asks whether the fit is right *when the model is true*. Here the data come
from ``toolkit.simulate.simulate_trial``, a richer story than any one model
(relapse hazard moved by each patient's CAR-T kinetics and its loss, a cure
fraction, HSCT, death in remission, loss to follow-up), at the trial's design:
a design spec (``toolkit.design.spec``) gives the accrual, the final analysis
(``final_after_last_patient_days`` after the last infusion, which censors
every patient in calendar time), the analysis spec and its sampler, the
decision rule, and a grid of IFN-alpha effects as its ``[[scenarios]]``.
Interim looks of the spec are not analysed: each trial is analysed once, at
its final analysis, exactly as the analysis spec says (the design study's
compiled padded model, ``toolkit.design.padded.fit_padded``: same inputs,
estimands and convergence verdict as ``toolkit fit``). A design whose
analysis spec is a CAR-T spec (``models/design_misspecification_cart.toml``)
fits each trial's kinetics (every infused patient's transgene levels, the
samples up to the final analysis) with ``toolkit.fitting.fit_cart``, the very
path of ``toolkit fit cart`` (a build and a compile a trial); its rule is on
``cmax_gmr`` or ``auc28_gmr``. A design whose analysis spec is an MRD spec
(``models/design_misspecification_mrd.toml``) fits each trial's MRD
assessments (responders', up to the final analysis) with
``toolkit.fitting.fit_mrd``, the path of ``toolkit fit mrd``; its rule is on
``clearance_rate_ratio``. A design whose analysis spec is a joint spec
(``models/design_misspecification_joint.toml``) fits each trial's CAR-T
kinetics and relapse together (and MRD where the spec's associations include
``mrd_clearance``) with ``toolkit.fitting.fit_joint``, the path of ``toolkit fit
joint``; its rule is on a mediation hazard ratio (``hazard_ratio_total``,
``_direct``, ``_indirect``), whose truths ``compute_truth`` defines the same way.

Per scenario and estimand (names as in ``truth.json`` and ``summary.json``),
over the C trials with a result, with :math:`\hat\theta_c` the posterior median
and :math:`\theta^*` the truth (``toolkit.simulate.compute_truth``, the same
definitions as the estimands):

.. math::

    \text{bias} = \frac1C \sum_c (g(\hat\theta_c) - g(\theta^*)), \qquad
    \text{RMSE} = \Big(\frac1C \sum_c (g(\hat\theta_c) - g(\theta^*))^2\Big)^{1/2},

with :math:`g = \log` for ratios (``*hazard_ratio*``, ``*_gmr``, ``persistence_half_life_ratio``) and the identity
otherwise; coverage of the 90 % HDI :math:`\frac1C \sum_c 1[\theta^* \in
\mathrm{HDI}_{90,c}]` and its mean width; for each posterior probability
(``prob_*``), P(decision) = the share of trials where it exceeds the rule's
``success_probability`` (power at an effect, type I error at no effect).
Monte Carlo SEs: :math:`\sqrt{p(1-p)/C}` for shares, sd/:math:`\sqrt C` for means.

Where each truth sits in the prior: the analysis' prior on the design (a
simulated trial's final cohort), by the same estimand functions on prior
draws, gives each truth's prior percentile and its distance from the prior
median in prior SDs (on the scale g). A truth inside the prior's own 90 %
range is recovered by a posterior that ignores the data; the grid is chosen so
that some truths are not (``models/design_misspecification.toml``).

Trials run on the calibration runner's Dask machinery
(``toolkit.calibration.runner.map_tasks``) and are stored one Parquet file per
(scenario, trial), so ``--resume`` continues a study.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["misspecification_trial", "run_misspecification", "load_misspecification", "study_reference",
           "summarize_misspecification", "write_misspecification_report", "KEY_ESTIMANDS", "CART_KEY_ESTIMANDS",
           "MRD_KEY_ESTIMANDS", "JOINT_KEY_ESTIMANDS", "key_estimands", "analysis_tables"]

CONFIG_FILE = "misspecification.json"
REFERENCE_FILE = "reference.json"
#: prior draws behind each estimand's prior percentile and SD (Monte Carlo SE of a percentile <= 0.8 points)
PRIOR_DRAWS = 4000
#: the estimands the readable table, the figure and the sentences show (the CSV has every one with a truth)
KEY_ESTIMANDS = ("hazard_ratio_uncured", "cure_fraction_difference", "rfs_365d_difference",
                 "cir_365d_difference", "efs_365d_difference", "response_rate_difference")
#: the same for a CAR-T analysis (toolkit.estimands.cart_estimands, truths of toolkit.simulate.compute_truth)
CART_KEY_ESTIMANDS = ("cmax_gmr", "auc28_gmr", "persistence_half_life_ratio", "tmax_difference_days")
#: the same for an MRD analysis (toolkit.estimands.mrd.mrd_estimands; every one among responders)
MRD_KEY_ESTIMANDS = ("clearance_rate_ratio", "mrd_negative_28d_flow_control", "mrd_negative_28d_flow_experimental",
                     "mrd_recurrence_365d_difference")
#: the same for a joint analysis (toolkit.estimands.joint.joint_estimands; mediation over the first 365 days)
JOINT_KEY_ESTIMANDS = ("hazard_ratio_total", "hazard_ratio_direct", "hazard_ratio_indirect", "log_hr_per_log_cmax",
                       "log_hr_cart_loss", "cure_fraction_difference")
#: ratios compared on the log scale besides the hazard ratios
LOG_SCALE_RATIOS = ("cmax_gmr", "auc28_gmr", "persistence_half_life_ratio", "clearance_rate_ratio")
#: the cohort tables each analysis reads (validating the others is most of the time of a read)
ANALYSIS_TABLES = {"durability": ("patients", "outcomes"), "cart": ("patients", "outcomes", "cart_kinetics"),
                   "mrd": ("patients", "outcomes", "mrd"), "joint": ("patients", "outcomes", "cart_kinetics")}
#: a coverage this unlikely for a calibrated 90 % interval (two-sided binomial tail) is flagged
COVERAGE_ALPHA = 0.01


class MisspecificationError(ValueError):
    """A misspecification study that cannot run or resume (the message names the fix)."""


def key_estimands(design) -> tuple[str, ...]:
    """The estimands the readable table, the figure and the sentences show for the design's analysis."""
    return {"cart": CART_KEY_ESTIMANDS, "mrd": MRD_KEY_ESTIMANDS,
            "joint": JOINT_KEY_ESTIMANDS}.get(design.analysis_model, KEY_ESTIMANDS)


def analysis_tables(design) -> tuple[str, ...]:
    """The cohort tables the design's analysis reads (a joint analysis with ``mrd_clearance`` also MRD)."""
    tables = ANALYSIS_TABLES[design.analysis_model]
    if design.analysis_model == "joint":
        from toolkit.design.spec import analysis_settings

        if "mrd_clearance" in analysis_settings(design)[0].associations:
            tables = (*tables, "mrd")
    return tables


def log_scale(name: str) -> bool:
    """Whether an estimand is a ratio, compared on the log scale (g = log in the module docstring)."""
    return "hazard_ratio" in name or name in LOG_SCALE_RATIOS


def _g(name: str, x):
    x = np.asarray(x, dtype=float)
    if not log_scale(name):
        return x
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan)


# --------------------------------------------------------------------------- one trial


def trial_fit_seed(design, scenario_index: int, trial: int) -> int:
    """The sampler seed of one trial's fit (distinct from the simulator's seed of that trial)."""
    from toolkit.design.trials import trial_seed

    return int((trial_seed(design, scenario_index, trial) + 1) % 2**31)


def final_cohort(design, scenario_index: int, trial: int, folder: Path):
    """One simulated trial of the design, cut at its final analysis and written to ``folder``; returns
    ``(cohort, counts)`` with the cohort read back through ``load_cohort`` (the same validation as
    ``toolkit fit``)."""
    from toolkit.data import load_cohort
    from toolkit.design.trials import censor_at, final_day, simulate_calendar_trial, write_cut

    sim, enrol = simulate_calendar_trial(design, design.scenarios[scenario_index], scenario_index, trial)
    cut, counts = censor_at(sim, enrol, final_day(design, enrol))
    write_cut(cut, folder, tables=analysis_tables(design))  # what the analysis reads
    return load_cohort(folder), counts


def _fit_final(design, cohort, options, settings):
    """The analysis of one trial's final cohort: the durability design's compiled padded model, or
    ``fit_cart`` / ``fit_mrd`` / ``fit_joint`` (``toolkit fit``'s path) for a model analysis. Returns the fit
    and its event count (relapses among the analysed patients; 0 for a kinetic analysis)."""
    if design.analysis_model in ("cart", "mrd"):
        from toolkit.fitting import fit_cart, fit_mrd

        fit_kinetics = fit_cart if design.analysis_model == "cart" else fit_mrd
        return fit_kinetics(cohort, options, settings, spec=design.analysis_spec), 0
    if design.analysis_model == "joint":
        from toolkit.fitting import fit_joint

        fit = fit_joint(cohort, options, settings, spec=design.analysis_spec)
        return fit, int(cohort.outcomes["relapse_day"].notna().sum())
    from toolkit.design.padded import fit_padded

    fit = fit_padded(cohort, options, settings, n_max=design.max_patients)
    return fit, int(sum(v["events"] for v in fit.summary["data"]["per_arm"].values()))


def misspecification_trial(design, scenario_index: int, trial: int, *, overrides: dict | None = None) -> dict:
    """Simulate one trial at a scenario, fit its final analysis, one row per estimand; a failure is one
    row with its error (the study goes on)."""
    from toolkit.design.spec import analysis_settings

    scenario = design.scenarios[scenario_index].name
    base = {"scenario": scenario, "trial": trial, "error": "", "converged": False, "max_rhat": math.nan,
            "divergences": 0, "events": 0, "analysed": 0}
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cohort, counts = final_cohort(design, scenario_index, trial, Path(tmp) / "cohort")
            options, settings = analysis_settings(design, **(overrides or {}))
            settings = replace(settings, random_seed=trial_fit_seed(design, scenario_index, trial), cores=1)
            fit, events = _fit_final(design, cohort, options, settings)
        diag = fit.summary["diagnostics"]
        base.update(converged=bool(diag["converged"]), max_rhat=float(diag.get("max_rhat") or math.nan),
                    divergences=int(diag.get("divergences") or 0), analysed=counts["analysed"], events=events)
        rows = []
        for name, value in fit.summary["estimands"].items():
            row = {**base, "estimand": name, "median": math.nan, "lo": math.nan, "hi": math.nan,
                   "probability": math.nan}
            if isinstance(value, dict) and "hdi_90" in value:
                row.update(median=float(value["median"]), lo=float(value["hdi_90"][0]), hi=float(value["hdi_90"][1]))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                row["probability"] = float(value)
            else:
                continue
            rows.append(row)
    except Exception as exc:  # noqa: BLE001 - a failed trial is recorded, the study goes on
        rows = [{**base, "error": f"{type(exc).__name__}: {exc}"[:300], "estimand": "", "median": math.nan,
                 "lo": math.nan, "hi": math.nan, "probability": math.nan}]
    seconds = time.perf_counter() - t0
    for row in rows:
        row["seconds"] = seconds
    return {"scenario": scenario, "trial": trial, "rows": rows}


# --------------------------------------------------------------------------- the study


def _config(design) -> dict:
    from toolkit.calibration.runner import model_versions

    return {"design": design.path, "analysis": design.analysis, "rule": design.rule_text(), "seed": design.seed,
            "scenarios": [s.name for s in design.scenarios], "sampler": design.sampler,
            "effects": {s.name: s.effects for s in design.scenarios},
            "model_versions": model_versions(design.analysis_model)}


def check_design(design) -> None:
    """A design a misspecification study can use: a model analysis (not the analytic rule); a joint analysis
    with its kinetics in the joint model (the prior reference needs the kinetics' prior). Checked before any
    trial runs."""
    if design.analysis_spec is None:
        raise MisspecificationError(f"{design.path}: [analysis] spec is the analytic rule; a misspecification "
                                    "study fits a model: name an analysis spec such as "
                                    "\"models/durability_primary.toml\"")
    if design.analysis_model == "joint":
        from toolkit.design.spec import spec_options
        from toolkit.fitting import JointOptions

        if spec_options(JointOptions, design.analysis_spec).kinetics != "joint":
            raise MisspecificationError(f"{design.path}: the joint analysis' prior reference (each estimand's "
                                        "distance from its prior) needs kinetics = \"joint\" in the analysis "
                                        "spec; the two-stage alternative has no prior on the kinetics")


def run_misspecification(design, trials: int, out: str | Path, *, workers: int | None = None,
                         scheduler: str | None = None, resume: bool = False, overrides: dict | None = None,
                         progress=None) -> Path:
    """``trials`` simulated trials per scenario of ``design`` (resumable), one task per trial, on
    :func:`toolkit.calibration.runner.map_tasks` (in-process with ``workers=0``, a local Dask cluster,
    or ``scheduler``)."""
    from toolkit.design.operating import run_scenario_study

    check_design(design)

    def failed_row(design_, i, t, message):
        return {"scenario": design_.scenarios[i].name, "trial": t, "error": message, "converged": False,
                "max_rhat": math.nan, "divergences": 0, "events": 0, "analysed": 0, "estimand": "",
                "median": math.nan, "lo": math.nan, "hi": math.nan, "probability": math.nan, "seconds": 0.0}

    return run_scenario_study(misspecification_trial, design, trials, out, config_file=CONFIG_FILE,
                              config=_config(design) | {"overrides": overrides or {}}, what="misspecification",
                              error=MisspecificationError, failed_row=failed_row, workers=workers,
                              scheduler=scheduler, resume=resume, overrides=overrides, progress=progress)


def load_misspecification(out: str | Path) -> pd.DataFrame:
    """Every stored row of a misspecification study (one per trial and estimand; one per failed trial)."""
    from toolkit.design.operating import load_results

    return load_results(out)


# --------------------------------------------------------------------------- truth and prior


def _prior_draws(design, overrides: dict | None = None) -> dict[str, np.ndarray]:
    """Draws of every estimand under the analysis' prior on the design (the first scenario's trial 0 at its
    final analysis), by the same estimand functions as the fits (durability, CAR-T or MRD)."""
    import warnings

    from toolkit.design.schedules import prior_estimands
    from toolkit.design.spec import analysis_settings
    from toolkit.review import recording_estimand_draws

    options, _ = analysis_settings(design, **(overrides or {}))
    with tempfile.TemporaryDirectory() as tmp:
        cohort, _ = final_cohort(design, 0, 0, Path(tmp) / "cohort")
    if design.analysis_model == "cart":
        from toolkit.data.inputs import to_cart_inputs
        from toolkit.estimands import cart_estimands
        from toolkit.models.cart import build_cart_model

        inputs = to_cart_inputs(cohort, covariates=options.covariates)
        model = build_cart_model(inputs, options.prior_set(inputs.unit), effects_on=options.effects_on)

        def estimands(prior, inp):
            return cart_estimands(prior, inp)
    elif design.analysis_model == "joint":
        from toolkit.data.joint_inputs import to_joint_inputs
        from toolkit.estimands.joint import joint_estimands
        from toolkit.models.joint import build_joint_model

        check_design(design)  # kinetics = "joint": the two-stage alternative has no prior on the kinetics
        inputs = to_joint_inputs(cohort, covariates=options.covariates,
                                 mrd_submodel="mrd_clearance" in options.associations)
        model = build_joint_model(inputs, options.prior_set(), variant=options.variant,
                                  associations=options.associations,
                                  cart_priors=options.cart_prior_set(inputs.cart.unit))

        def estimands(prior, inp):
            return joint_estimands(prior, inp, tau_days=options.tau_days, hr_below=options.hr_below)
    elif design.analysis_model == "mrd":
        from toolkit.data.mrd_inputs import to_mrd_inputs
        from toolkit.estimands.mrd import mrd_estimands
        from toolkit.models.mrd import build_mrd_model

        inputs = to_mrd_inputs(cohort, covariates=options.covariates)
        priors = options.prior_set()
        model = build_mrd_model(inputs, priors)

        def estimands(prior, inp):
            return mrd_estimands(prior, inp, priors=priors)
    else:
        from toolkit.data.inputs import to_durability_inputs
        from toolkit.estimands import durability_estimands
        from toolkit.models.durability import build_durability_model

        inputs = to_durability_inputs(cohort, endpoint=options.endpoint, hsct=options.hsct,
                                      covariates=options.covariates)
        model = build_durability_model(inputs, options.prior_set(), variant=options.variant)

        def estimands(prior, inp):
            return durability_estimands(prior, inp, variant=options.variant, days=options.days,
                                        hr_below=options.hr_below, rfs_difference_above=options.rfs_difference_above)
    with warnings.catch_warnings(), recording_estimand_draws() as record:
        warnings.simplefilter("ignore")
        est = prior_estimands(model, inputs, estimands, draws=PRIOR_DRAWS, random_seed=design.seed)
    # the recorder keys each summary's draws by the summary's id
    return {name: record[id(value)][1] for name, value in est.items() if id(value) in record}


def study_reference(design, out: str | Path, *, overrides: dict | None = None) -> dict:
    """Truth per scenario (``compute_truth``) and where it sits in the prior, computed once per study and
    kept in ``reference.json``: ``{"truth": {scenario: {name: value}}, "prior": {name: {median, sd, lo, hi,
    scale}}, "prior_percentile": {scenario: {name: %}}, "prior_sds": {scenario: {name: z}}}`` (z on the scale
    g; lo, hi: the prior's central 90 % range)."""
    from toolkit.design.operating import scenario_truths

    path = Path(out) / REFERENCE_FILE
    if path.exists():
        return json.loads(path.read_text())
    truth = scenario_truths(design)
    draws = _prior_draws(design, overrides)
    prior, percentile, sds = {}, {s: {} for s in truth}, {s: {} for s in truth}
    for name, x in draws.items():
        gx = _g(name, x)
        gx = gx[np.isfinite(gx)]
        if gx.size < 100:
            continue
        lo, med, hi = np.quantile(x[np.isfinite(x)], [0.05, 0.5, 0.95])
        prior[name] = {"median": float(med), "sd": float(np.std(gx)), "lo": float(lo), "hi": float(hi),
                       "scale": "log" if log_scale(name) else "natural"}
        for s, values in truth.items():
            if name in values:
                percentile[s][name] = float(100 * np.mean(x[np.isfinite(x)] <= values[name]))
                sds[s][name] = float((_g(name, values[name]) - np.median(gx)) / np.std(gx)) if np.std(gx) > 0 \
                    else math.nan
    reference = {"truth": truth, "prior": prior, "prior_percentile": percentile, "prior_sds": sds,
                 "prior_draws": PRIOR_DRAWS}
    path.write_text(json.dumps(reference, indent=2) + "\n")
    return reference


# --------------------------------------------------------------------------- summary


def coverage_flag(k: int, n: int, level: float = 0.9, alpha: float = COVERAGE_ALPHA) -> str:
    """``"low"`` / ``"high"`` when k of n covered trials is that unlikely for a calibrated ``level`` interval
    (one binomial tail below ``alpha / 2``), else ``""``."""
    from scipy.stats import binom

    if n == 0:
        return ""
    if binom.cdf(k, n, level) < alpha / 2:
        return "low"
    if binom.sf(k - 1, n, level) < alpha / 2:
        return "high"
    return ""


def summarize_misspecification(design, results: pd.DataFrame, reference: dict) -> pd.DataFrame:
    """Per (scenario, estimand): trials, not converged, truth, its prior percentile and distance in prior
    SDs, mean posterior median, bias and RMSE on the scale g (with SE), 90 % coverage (with SE and a flag),
    mean 90 % width, the prior's 90 % width; for probabilities P(decision) = share of trials above the
    rule's ``success_probability``. Non-converged fits are counted, and kept (a real analysis would report
    them, labelled). Monte Carlo SEs as a design study's (``toolkit.design.operating.proportion``,
    ``mean_se``)."""
    from toolkit.design.operating import mean_se, proportion

    ok = results[(results["error"] == "") & (results["estimand"] != "")] if len(results) else results
    rows = []
    order = {s.name: i for i, s in enumerate(design.scenarios)}
    for (scenario, name), part in ok.groupby(["scenario", "estimand"], sort=False):
        trials = int(part["trial"].nunique())
        row = {"scenario": scenario, "estimand": name, "trials": trials,
               "not_converged": int((~part["converged"].astype(bool)).sum())}
        if part["probability"].notna().all():
            row["p_decision"], row["p_decision_se"] = proportion(
                float((part["probability"] > design.success_probability).sum()), len(part))
        truth = reference["truth"].get(scenario, {}).get(name)
        if truth is not None and part["median"].notna().all():
            err = _g(name, part["median"]) - _g(name, truth)
            covered = int(((part["lo"] <= truth) & (truth <= part["hi"])).sum())
            cov, cov_se = proportion(covered, len(part))
            bias, bias_se = mean_se(err)
            prior = reference["prior"].get(name, {})
            row.update(truth=float(truth), scale="log" if log_scale(name) else "natural",
                       prior_percentile=reference["prior_percentile"].get(scenario, {}).get(name, math.nan),
                       prior_sds=reference["prior_sds"].get(scenario, {}).get(name, math.nan),
                       mean_median=float(part["median"].mean()), bias=bias, bias_se=bias_se,
                       rmse=float(np.sqrt(np.mean(err ** 2))), coverage_90=cov, coverage_90_se=cov_se,
                       coverage_flag=coverage_flag(covered, len(part)),
                       width_90=float((part["hi"] - part["lo"]).mean()),
                       prior_width_90=float(prior["hi"] - prior["lo"]) if prior else math.nan)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame):
        frame = frame.sort_values(["scenario", "estimand"], key=lambda c: c.map(order) if c.name == "scenario"
                                  else c).reset_index(drop=True)
    return frame


def readable_table(design, summary: pd.DataFrame, estimands=None) -> pd.DataFrame:
    """The key estimands per scenario (default :func:`key_estimands`), as a reader sees them (figures with their
    Monte Carlo SE); bias and RMSE of an estimand marked (log) are on the log scale."""
    estimands = key_estimands(design) if estimands is None else estimands
    rows = []
    for _, r in summary[summary["estimand"].isin(estimands)].iterrows():
        flag = {"low": " (too low)", "high": " (too high)"}.get(r.get("coverage_flag") or "", "")
        scale = " (log)" if r.get("scale") == "log" else ""
        rows.append({"scenario": r["scenario"], "estimand": r["estimand"] + scale, "truth": f"{r['truth']:.3g}",
                     "prior pct / SDs": f"{r['prior_percentile']:.0f} / {r['prior_sds']:+.1f}",
                     "mean median": f"{r['mean_median']:.3g}",
                     "bias": f"{r['bias']:+.3f} ± {r['bias_se']:.3f}", "RMSE": f"{r['rmse']:.3f}",
                     "90% coverage": f"{100 * r['coverage_90']:.0f}% ± {100 * r['coverage_90_se']:.0f}{flag}",
                     "width (prior's)": f"{r['width_90']:.3g} ({r['prior_width_90']:.3g})",
                     "not converged": f"{int(r['not_converged'])}/{int(r['trials'])}"})
    decision = summary[summary["estimand"] == design.probability_key]
    out = pd.DataFrame(rows)
    if len(decision):
        p = {r["scenario"]: f"{100 * r['p_decision']:.0f}% ± {100 * r['p_decision_se']:.0f}"
             for _, r in decision.iterrows()}
        out["P(rule met)"] = out["scenario"].map(p)
    return out


def sentences(design, summary: pd.DataFrame) -> list[str]:
    """What the study found, in words: per scenario the rule's P(success), then every flagged coverage."""
    out = []
    decision = summary[summary["estimand"] == design.probability_key]
    for _, r in decision.iterrows():
        out.append(f"Scenario {r['scenario']}: the rule {design.rule_text()} is met in "
                   f"{100 * r['p_decision']:.0f}% ± {100 * r['p_decision_se']:.0f} of {int(r['trials'])} trials.")
    flags = summary["coverage_flag"].fillna("") if "coverage_flag" in summary else pd.Series("", summary.index)
    flagged = summary[(flags != "") & summary["estimand"].isin(key_estimands(design))]
    for _, r in flagged.iterrows():
        out.append(f"{r['estimand']} under {r['scenario']}: 90% intervals cover the truth in "
                   f"{100 * r['coverage_90']:.0f}% of trials, {r['coverage_flag']} for a calibrated interval "
                   f"(bias {r['bias']:+.3f}{' on the log scale' if r['scale'] == 'log' else ''}).")
    if flagged.empty and len(summary):
        out.append("Every key estimand's 90% coverage is consistent with 90% in every scenario "
                   f"(two-sided binomial test at {COVERAGE_ALPHA}).")
    return out


def plot_misspecification(design, summary: pd.DataFrame, estimands=None):
    """Top row: per key estimand (default :func:`key_estimands`) and scenario, the truth (x) and the mean
    posterior median (o), and the share of trials meeting the rule (± 2 SE); bottom row: 90% coverage ± 2 SE
    against 0.9. Returns the Figure."""
    estimands = key_estimands(design) if estimands is None else estimands
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = [e for e in estimands if e in set(summary["estimand"])]
    scen = [s.name for s in design.scenarios if s.name in set(summary["scenario"])]
    x = np.arange(len(scen))
    fig, axes = plt.subplots(2, len(names) + 1, figsize=(3.1 * (len(names) + 1), 6.2), squeeze=False)
    for j, name in enumerate(names):
        part = summary[summary["estimand"] == name].set_index("scenario").reindex(scen)
        top, bottom = axes[0, j], axes[1, j]
        top.plot(x, part["truth"], "kx", ms=8, label="truth")
        top.plot(x, part["mean_median"], "o", color="tab:blue", label="mean posterior median")
        if log_scale(name):
            top.set_yscale("log")
        top.set_title(name, fontsize=9)
        cov, se = part["coverage_90"].to_numpy(float), part["coverage_90_se"].to_numpy(float)
        bottom.errorbar(x, cov, yerr=2 * se, fmt="o", color="tab:green")
        bottom.axhline(0.9, color="k", lw=0.8, ls="--")
        bottom.set_ylim(0.5, 1.02)
        bottom.set_ylabel("90% coverage" if j == 0 else "")
        for ax in (top, bottom):
            ax.set_xticks(x, scen, rotation=45, ha="right", fontsize=7)
    axes[0, 0].legend(fontsize=7)
    decision = summary[summary["estimand"] == design.probability_key].set_index("scenario").reindex(scen)
    ax = axes[0, -1]
    if len(decision):
        ax.bar(x, decision["p_decision"], yerr=2 * decision["p_decision_se"], color="tab:orange")
    ax.set_ylim(0, 1)
    ax.set_title(f"P(rule met)\n{design.rule_text()}", fontsize=8)
    ax.set_xticks(x, scen, rotation=45, ha="right", fontsize=7)
    axes[1, -1].axis("off")
    fig.tight_layout()
    return fig


def write_misspecification_report(design, summary: pd.DataFrame, out: str | Path, *, command: str = "") -> dict:
    """Write ``misspecification.csv`` (every estimand), ``misspecification.md`` (key estimands, in words)
    and ``misspecification.png`` into ``out``; returns their paths."""
    import matplotlib.pyplot as plt

    from toolkit.design.report import markdown_table

    out = Path(out)
    summary.to_csv(out / "misspecification.csv", index=False)
    table = readable_table(design, summary)
    effects = "\n".join(f"- `{s.name}`: {s.description or s.effects}" for s in design.scenarios)
    (out / "misspecification.md").write_text(
        f"# Misspecification study: {design.title}\n\nEach trial is simulated by the trial simulator (not the "
        f"model), censored at its final analysis, and fitted as `{Path(design.analysis).name}` says.\n\n"
        f"Scenarios:\n{effects}\n\nColumns: the truth; its percentile in the analysis' prior and its distance "
        "from the prior median in prior SDs; the mean posterior median; bias and RMSE of the posterior median "
        "(on the log scale for estimands marked (log)); the share of 90% HDIs covering the truth (flagged when "
        "a calibrated interval would rarely give it); the mean HDI width and the prior's 90% width; fits that "
        "failed the convergence verdict; the share of trials meeting the rule.\n\n"
        f"{markdown_table(table) if len(table) else 'No results yet.'}\n"
        + "\n".join(sentences(design, summary)) + "\n"
        + (f"\nCommand: `{command}`\n" if command else ""))
    fig = plot_misspecification(design, summary)
    fig.savefig(out / "misspecification.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return {k: out / f"misspecification.{k}" for k in ("csv", "md", "png")}
