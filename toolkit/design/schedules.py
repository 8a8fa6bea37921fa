r"""Sampling-schedule design: which schedule of CAR-T and MRD samples identifies which quantity.

A schedule study (``models/design_schedules.toml``) names sampling schedules
(days since infusion of CAR-T qPCR, flow MRD and NGS MRD samples), the trial
the simulator draws (patients, IFN-alpha effects, story parameters), the
analyses to fit (each with its analysis spec in ``models/``) and the target
estimands. For each schedule s and cohort c:

1. simulate a trial with ``toolkit.simulate.simulate_trial`` at seed (study
   seed, c) and schedule s. The patients (every latent quantity) depend on the
   seed only, so all schedules see the same patients (common random numbers:
   differences between schedules carry less Monte Carlo noise);
2. fit each analysis (``toolkit.fitting.fit_cart``, ``fit_mrd``, ``fit_joint``)
   with the spec's options and the study's sampler settings (the CAR-T and joint
   analyses on the patients with at least one CAR-T sample, :func:`with_cart_samples`,
   as a trial on a sparse CAR-T schedule would; the count left out is kept);
3. per target estimand θ: posterior SD, 90 % HDI and whether it covers the
   simulator's truth (``truth.json`` names), and the prior SD of the same
   estimand on the same cohort: the estimand function of that analysis applied
   to draws from the model's prior (``pm.sample_prior_predictive``).

Per (schedule, analysis, estimand), over the C cohorts:

.. math::

    \text{contraction} = \frac{1}{C}\sum_c \frac{\mathrm{sd}_c(\theta \mid y)}{\mathrm{sd}_c(\theta)},
    \qquad \text{coverage} = \frac{1}{C}\sum_c 1[\theta^* \in \mathrm{HDI}_{90,c}],

with Monte Carlo standard errors sd(ratios)/sqrt(C) and sqrt(q (1 - q) / C)
(q = 0.9, the nominal level, so the error does not vanish when every interval
covers). A quantity is **identified** by a schedule when contraction < 0.5
(the data halve the prior SD) and coverage is not below 0.9 - 2 sqrt(0.09 / C);
**partly learned** when 0.5 <= contraction < 0.8; **prior-dominated**
otherwise. Fits that fail the toolkit's convergence verdict are kept and
counted per row (``not_converged``), never dropped.

Every (schedule, cohort) is one task on Dask (``toolkit.calibration.runner.map_tasks``)
and is stored as ``results/<schedule>__c<cohort>.parquet`` (written atomically),
so an interrupted study resumes with only the missing tasks.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["ESTIMAND_MODELS", "Schedule", "ScheduleSpecError", "ScheduleStudy", "load_results", "load_schedule_spec",
           "paired_differences", "run_schedules", "schedule_task", "summarize_schedules", "with_cart_samples",
           "write_outputs"]

#: target estimands and the analyses that report them (names as in truth.json / summary.json)
ESTIMAND_MODELS = {"cmax_gmr": ("cart", "joint"), "clearance_rate_ratio": ("mrd", "joint"),
                   "log_hr_per_log_clearance": ("joint",), "hazard_ratio_indirect_mrd": ("joint",)}
MODELS = ("cart", "mrd", "joint")
CONTRACTION_IDENTIFIED = 0.5
CONTRACTION_PARTLY = 0.8
NOMINAL = 0.9
RESULTS = "results"
STUDY_FILE = "study.json"
SPEC_KEYS = ("title", "rationale", "trial", "models", "sampler", "estimands", "prior_draws", "schedule")


class ScheduleSpecError(ValueError):
    """A schedule spec or study that cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Schedule:
    """One sampling schedule: days since infusion of each kind of sample (None: the simulator's default)."""

    name: str
    description: str = ""
    cart_days: tuple[int, ...] | None = None
    flow_days: tuple[int, ...] | None = None
    ngs_days: tuple[int, ...] | None = None

    def days(self) -> dict:
        from toolkit.simulate import CART_DAYS, FLOW_DAYS, NGS_DAYS

        return {"cart_days": list(self.cart_days or CART_DAYS), "flow_days": list(self.flow_days or FLOW_DAYS),
                "ngs_days": list(self.ngs_days or NGS_DAYS)}


@dataclass(frozen=True)
class ScheduleStudy:
    """A schedule comparison as read from its spec (see the module docstring)."""

    schedules: tuple[Schedule, ...]
    models: dict = field(default_factory=lambda: {m: f"{m}_primary.toml" for m in MODELS})
    estimands: tuple[str, ...] = tuple(ESTIMAND_MODELS)
    patients: int = 60
    seed: int = 20261125
    effects: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    sampler: dict = field(default_factory=lambda: {"chains": 2, "tune": 300, "draws": 300})
    prior_draws: int = 400
    title: str = ""
    path: str = ""

    def describe(self) -> dict:
        """What identifies the study (stored in study.json; a resume must match it)."""
        out = asdict(self)
        out.pop("path")
        out.pop("title")
        return json.loads(json.dumps(out))

    def subset(self, *, schedules=None, models=None) -> ScheduleStudy:
        """The same study restricted to some schedules and analyses (names checked)."""
        from dataclasses import replace

        chosen = self.schedules
        if schedules:
            known = [s.name for s in self.schedules]
            unknown = sorted(set(schedules) - set(known))
            if unknown:
                raise ScheduleSpecError(f"unknown schedule(s) {', '.join(unknown)}; the spec has: {', '.join(known)}")
            chosen = tuple(s for s in self.schedules if s.name in schedules)
        fitted = self.models
        if models:
            unknown = sorted(set(models) - set(self.models))
            if unknown:
                raise ScheduleSpecError(f"unknown analysis(es) {', '.join(unknown)}; the spec fits: "
                                        f"{', '.join(self.models)}")
            fitted = {m: p for m, p in self.models.items() if m in models}
        return replace(self, schedules=chosen, models=fitted)


def _days(value, where: str) -> tuple[int, ...]:
    if not (isinstance(value, list) and value and all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                                      for d in value)):
        raise ScheduleSpecError(f"{where} must be a non-empty list of whole days after infusion (> 0), e.g. "
                                f"[7, 14, 28, 56]; got {value!r}")
    return tuple(sorted(set(value)))


def load_schedule_spec(path: str | Path) -> ScheduleStudy:
    """Read and check a schedule spec (``models/design_schedules.toml``); errors name the file and key."""
    from toolkit.simulate import Effects, TrialParameters

    from toolkit.specs import read_toml

    path = Path(path)
    raw = read_toml(path, error=ScheduleSpecError,
                    folder_hint="give a schedule spec such as models/design_schedules.toml",
                    missing="schedule spec not found")
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise ScheduleSpecError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(SPEC_KEYS)}")
    trial = raw.get("trial", {})
    if not isinstance(trial, dict):
        raise ScheduleSpecError(f"{path}: trial must be a [trial] table")
    bad = sorted(set(trial) - {"patients", "seed", "effects", "parameters"})
    if bad:
        raise ScheduleSpecError(f"{path}: unknown [trial] key(s) {', '.join(bad)}; valid: patients, seed, effects, "
                                "parameters")
    patients = trial.get("patients", 60)
    if not (isinstance(patients, int) and 4 <= patients <= 10_000):
        raise ScheduleSpecError(f"{path}: [trial] patients must be a whole number from 4 to 10000, got {patients!r}")
    effects = dict(trial.get("effects", {}))
    try:
        Effects().with_overrides(effects)
    except (ValueError, TypeError) as err:
        raise ScheduleSpecError(f"{path}: [trial.effects] {err}") from err
    parameters = dict(trial.get("parameters", {}))
    valid = set(asdict(TrialParameters()))
    bad = sorted(set(parameters) - valid)
    if bad:
        raise ScheduleSpecError(f"{path}: unknown [trial.parameters] {', '.join(bad)}; valid: the fields of "
                                "toolkit.simulate.TrialParameters (e.g. log_hr_per_log_clearance)")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in parameters.values()):
        raise ScheduleSpecError(f"{path}: [trial.parameters] values must be finite numbers")
    models = raw.get("models", {m: f"{m}_primary.toml" for m in MODELS})
    if not (isinstance(models, dict) and models and set(models) <= set(MODELS)
            and all(isinstance(v, str) for v in models.values())):
        raise ScheduleSpecError(f"{path}: [models] maps analyses ({', '.join(MODELS)}) to their spec files, e.g. "
                                f'mrd = "mrd_primary.toml"; got {models!r}')
    for name, spec in models.items():
        spec_path = (path.parent / spec) if not Path(spec).is_absolute() else Path(spec)
        if not spec_path.is_file():
            raise ScheduleSpecError(f"{path}: [models] {name} = {spec!r}: no such spec file next to it "
                                    f"({spec_path})")
    estimands = raw.get("estimands", list(ESTIMAND_MODELS))
    if not (isinstance(estimands, list) and estimands and set(estimands) <= set(ESTIMAND_MODELS)):
        raise ScheduleSpecError(f"{path}: estimands must be a list of: {', '.join(ESTIMAND_MODELS)}; "
                                f"got {estimands!r}")
    reported = {e for e in estimands if set(ESTIMAND_MODELS[e]) & set(models)}
    if not reported:
        raise ScheduleSpecError(f"{path}: none of the estimands is reported by the analyses in [models]")
    sampler = dict(raw.get("sampler", {"chains": 2, "tune": 300, "draws": 300}))
    bad = sorted(set(sampler) - {"chains", "tune", "draws", "target_accept"})
    if bad:
        raise ScheduleSpecError(f"{path}: unknown [sampler] key(s) {', '.join(bad)}; valid: chains, tune, draws, "
                                "target_accept")
    for key in ("chains", "tune", "draws"):
        if key in sampler and not (isinstance(sampler[key], int) and sampler[key] >= 1):
            raise ScheduleSpecError(f"{path}: [sampler] {key} must be a whole number >= 1, got {sampler[key]!r}")
    prior_draws = raw.get("prior_draws", 400)
    if not (isinstance(prior_draws, int) and prior_draws >= 20):
        raise ScheduleSpecError(f"{path}: prior_draws must be a whole number >= 20, got {prior_draws!r}")
    items = raw.get("schedule", [])
    if not (isinstance(items, list) and len(items) >= 1):
        raise ScheduleSpecError(f"{path}: give at least one [[schedule]] table with a name and its days")
    schedules = []
    for k, item in enumerate(items, start=1):
        where = f"{path}: [[schedule]] #{k}"
        name = item.get("name")
        if not (isinstance(name, str) and name and all(c.isalnum() or c in "-_" for c in name)):
            raise ScheduleSpecError(f"{where}: name must be letters, digits, '-' or '_' (it names files), "
                                    f"got {name!r}")
        bad = sorted(set(item) - {"name", "description", "cart_days", "flow_days", "ngs_days"})
        if bad:
            raise ScheduleSpecError(f"{where} ({name}): unknown key(s) {', '.join(bad)}; valid: name, description, "
                                    "cart_days, flow_days, ngs_days")
        days = {key: _days(item[key], f"{where} ({name}) {key}") if key in item else None
                for key in ("cart_days", "flow_days", "ngs_days")}
        schedules.append(Schedule(name=name, description=str(item.get("description", "")), **days))
    names = [s.name for s in schedules]
    if len(set(names)) != len(names):
        raise ScheduleSpecError(f"{path}: schedule names must be distinct, got {', '.join(names)}")
    return ScheduleStudy(schedules=tuple(schedules), models={m: str(models[m]) for m in MODELS if m in models},
                         estimands=tuple(estimands), patients=patients, seed=int(trial.get("seed", 20261125)),
                         effects=effects, parameters=parameters, sampler=sampler, prior_draws=prior_draws,
                         title=str(raw.get("title", "")), path=str(path))


# --------------------------------------------------------------------------- one task


def _analysis(study: ScheduleStudy, model: str):
    """(options, fit function, estimand function) of an analysis, from its spec file."""
    from toolkit import fitting
    from toolkit.specs import load_spec, merged_options

    spec_path = Path(study.models[model])
    if not spec_path.is_absolute():
        spec_path = Path(study.path).parent / spec_path
    spec = load_spec(spec_path, model=model)
    options_class, fit = {"cart": (fitting.CartOptions, fitting.fit_cart), "mrd": (fitting.MrdOptions, fitting.fit_mrd),
                          "joint": (fitting.JointOptions, fitting.fit_joint)}[model]
    options = options_class(**merged_options(spec, {}))
    return options, fit


def _estimand_function(model: str, options):
    if model == "cart":
        from toolkit.estimands import cart_estimands

        return lambda post, inputs: cart_estimands(post, inputs)
    if model == "mrd":
        from toolkit.mrd_estimands import mrd_estimands

        return lambda post, inputs: mrd_estimands(post, inputs, n_simulated=200, warnings_out=[])
    from toolkit.joint_estimands import joint_estimands

    return lambda post, inputs: joint_estimands(post, inputs, tau_days=options.tau_days, hr_below=options.hr_below,
                                                warnings_out=[])


def prior_estimands(model, inputs, estimand_fn, *, draws: int, random_seed: int) -> dict:
    """``estimand_fn(prior, inputs)`` on ``draws`` draws of every free variable and Deterministic of ``model``'s prior."""
    import pymc as pm

    var_names = [v.name for v in model.free_RVs] + [v.name for v in model.deterministics]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = pm.sample_prior_predictive(draws=draws, model=model, var_names=var_names, random_seed=random_seed)
        return estimand_fn(prior["prior"], inputs)


def prior_sd(model, inputs, estimand_fn, names, *, draws: int, random_seed: int,
             errors: list[str] | None = None) -> dict[str, float]:
    """SD of each estimand under the prior on this cohort's design: the estimand function on prior draws.

    An estimand the function cannot compute on prior draws gets NaN (its contraction is then "no
    result"), and why is appended to ``errors`` when a list is given.
    """
    try:
        est = prior_estimands(model, inputs, estimand_fn, draws=draws, random_seed=random_seed)
    except Exception as exc:  # noqa: BLE001 - an estimand that cannot be computed on prior draws has no prior SD
        est = {}
        if errors is not None:
            errors.append(f"prior SD: {type(exc).__name__}: {exc}")
    out = {n: float(est[n]["sd"]) if isinstance(est.get(n), dict) else math.nan for n in names}
    missing = [n for n in names if n in est and not math.isfinite(out[n])]
    if errors is not None and missing:
        errors.append(f"prior SD not finite for {', '.join(missing)}")
    return out


def default_fitter(model: str, cohort, study: ScheduleStudy, *, random_seed: int) -> dict:
    """Fit one analysis to a cohort; returns ``{"converged", "estimands": {name: summary}, "prior_sd": {...}}``."""
    from toolkit.fitting import default_settings

    options, fit = _analysis(study, model)
    settings = default_settings(model, cores=1, progressbar=False, random_seed=random_seed, **study.sampler)
    result = fit(cohort, options, settings)
    names = [e for e in study.estimands if model in ESTIMAND_MODELS[e]]
    errors: list[str] = []
    sds = prior_sd(result.model, result.inputs, _estimand_function(model, options), names,
                   draws=study.prior_draws, random_seed=random_seed, errors=errors)
    return {"converged": result.converged, "estimands": result.summary["estimands"], "prior_sd": sds,
            "prior_sd_error": "; ".join(errors)}


_TRUTH: dict[str, dict] = {}


def study_truth(study: ScheduleStudy) -> dict[str, float]:
    """The simulator's true estimands for the study's effects and parameters (computed once per process)."""
    from toolkit.simulate import Effects, TrialParameters, compute_truth

    key = json.dumps([study.effects, study.parameters], sort_keys=True)
    if key not in _TRUTH:
        _TRUTH[key] = compute_truth(Effects().with_overrides(study.effects), TrialParameters(**study.parameters))
    return _TRUTH[key]


def cohort_seed(study: ScheduleStudy, cohort: int) -> int:
    """The simulator seed of cohort ``cohort``: the same for every schedule (same patients)."""
    return int((study.seed * 100_003 + cohort) % 2**32)


def schedule_task(study: ScheduleStudy, schedule_name: str, cohort: int, *, fitter=None) -> list[dict]:
    """Simulate cohort ``cohort`` under one schedule, fit every analysis, one row per (analysis, estimand).

    Never raises: a failed fit is a row with ``status = "error"`` and its message, and the study goes on.
    """
    from toolkit.data import load_cohort
    from toolkit.simulate import Effects, TrialParameters, simulate_trial

    fitter = fitter or default_fitter
    schedule = next(s for s in study.schedules if s.name == schedule_name)
    base = {"schedule": schedule_name, "cohort": int(cohort), "seed": cohort_seed(study, cohort)}
    # the cohort folder lives until every fit is done (a run's provenance hashes it)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            truth = study_truth(study)
            trial = simulate_trial(study.patients, seed=base["seed"],
                                   effects=Effects().with_overrides(study.effects),
                                   parameters=TrialParameters(**study.parameters), with_truth=False,
                                   cart_days=schedule.cart_days, flow_days=schedule.flow_days,
                                   ngs_days=schedule.ngs_days)
            cohort_data = load_cohort(trial.write(Path(tmp) / "cohort"))
            mrd = cohort_data.mrd
            base["mrd_before_day_28"] = int((mrd["day"].astype(float) < 28).sum()) if mrd is not None else 0
        except Exception as exc:  # noqa: BLE001
            return [{**base, "model": "", "estimand": "", "status": "error", "error": f"{type(exc).__name__}: {exc}"}]
        return _fit_all(study, cohort_data, truth, base, fitter)


def with_cart_samples(cohort):
    """The cohort without patients who have no usable CAR-T sample, and how many were left out.

    Under a sparse CAR-T schedule (first sample on day 28) a patient who dies, relapses or is
    transplanted before the first sample has none, and the CAR-T and joint analyses refuse such a
    patient (``to_cart_inputs``: "add their samples ... or remove them from the analysis"). A trial
    on that schedule would analyse the patients who have samples, so the study does the same for
    those two analyses and counts the patients left out (``patients_left_out``). A patient without
    samples adds no kinetic likelihood term; what is lost is their relapse follow-up in the joint
    model (usually none: such patients rarely reach remission).
    """
    from dataclasses import replace

    from toolkit.data.inputs import kinetic_cut_day, rows_after_kinetic_cut

    if cohort.cart is None or not len(cohort.cart):
        return cohort, 0
    cart = cohort.cart.loc[~rows_after_kinetic_cut(cohort.cart, kinetic_cut_day(cohort))]
    sampled = set(cart["patient_id"].astype(str))
    keep = cohort.patients["patient_id"].astype(str).isin(sampled)
    if keep.all():
        return cohort, 0
    ids = set(cohort.patients.loc[keep, "patient_id"].astype(str))

    def only(table):
        return None if table is None else table[table["patient_id"].astype(str).isin(ids)]

    return (replace(cohort, patients=cohort.patients[keep], outcomes=only(cohort.outcomes), cart=only(cohort.cart),
                    mrd=only(cohort.mrd)), int((~keep).sum()))


def _fit_all(study: ScheduleStudy, cohort_data, truth: dict, base: dict, fitter) -> list[dict]:
    rows = []
    for model in study.models:
        names = [e for e in study.estimands if model in ESTIMAND_MODELS[e]]
        if not names:
            continue
        t0 = time.perf_counter()
        try:
            data, left_out = with_cart_samples(cohort_data) if model in ("cart", "joint") else (cohort_data, 0)
            fitted = fitter(model, data, study, random_seed=base["seed"])
        except Exception as exc:  # noqa: BLE001 - one failed fit is recorded, the rest go on
            rows += [{**base, "model": model, "estimand": n, "status": "error",
                      "error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - t0} for n in names]
            continue
        for name in names:
            est = fitted["estimands"].get(name)
            row = {**base, "model": model, "estimand": name, "status": "ok", "error": "",
                   "patients_left_out": left_out,
                   "converged": bool(fitted["converged"]), "truth": float(truth.get(name, math.nan)),
                   "prior_sd": float(fitted["prior_sd"].get(name, math.nan)), "seconds": time.perf_counter() - t0}
            if not math.isfinite(row["prior_sd"]):
                # kept as an "ok" fit (its posterior is usable); the contraction is "no result" and this says why
                row["error"] = fitted.get("prior_sd_error") or f"no prior SD of {name}"
            if isinstance(est, dict):
                lo, hi = est["hdi_90"]
                row.update(post_mean=est["mean"], post_median=est["median"], post_sd=est["sd"], lo=lo, hi=hi)
            else:
                row.update(status="error", error=f"{model} did not report {name}")
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- a study


def _task_path(out: Path, schedule: str, cohort: int) -> Path:
    return out / RESULTS / f"{schedule}__c{cohort:04d}.parquet"


def load_results(out: str | Path):
    """Every stored task of a schedule study, one row per (schedule, cohort, analysis, estimand)."""
    import pandas as pd

    files = sorted((Path(out) / RESULTS).glob("*.parquet"))
    if not files:
        raise ScheduleSpecError(f"{out}: no results (results/*.parquet); run the study first")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def run_schedules(study: ScheduleStudy, cohorts: int, out: str | Path, *, workers: int | None = None,
                  scheduler: str | None = None, resume: bool = False, fitter=None, progress=None):
    """Run (or resume) the schedule study: ``cohorts`` simulated cohorts per schedule, stored under ``out``.

    ``workers=0`` runs in this process; otherwise a local Dask cluster (one process per core) or the
    cluster at ``scheduler``. Returns the table of every stored task (:func:`load_results`).
    """
    import pandas as pd

    from toolkit.calibration.runner import _write_atomic, map_tasks, open_study, record_study_run, write_study_file

    if cohorts < 1:
        raise ScheduleSpecError(f"--cohorts must be at least 1, got {cohorts}")
    out = Path(out)
    config = {"study": study.describe(), "cohorts": int(cohorts)}
    path = out / STUDY_FILE
    if not path.exists() and out.exists() and any(out.iterdir()):
        raise ScheduleSpecError(f"{out} is not empty and holds no schedule study; choose a new --out folder")
    previous = open_study(path, config, resume=resume, what="schedule", compare=("study",), error=ScheduleSpecError)
    write_study_file(path, {**config, "title": study.title, "spec": study.path, **previous})
    items = [(study, s.name, c) for s in study.schedules for c in range(cohorts)
             if not _task_path(out, s.name, c).exists()]

    def store(rows: list[dict]) -> None:
        _write_atomic(pd.DataFrame(rows), _task_path(out, rows[0]["schedule"], rows[0]["cohort"]))
        if progress is not None:
            progress(rows)

    if not items:  # everything stored already: no cluster to start
        return load_results(out)
    t0 = time.perf_counter()
    map_tasks(schedule_task, items, kwargs={"fitter": fitter}, on_result=store,
              on_error=lambda item, err: [{"schedule": item[1], "cohort": item[2], "model": "", "estimand": "",
                                           "status": "error", "error": err}],
              workers=workers, scheduler=scheduler, cache_root=out / ".worker-caches", broadcast_first=True)
    record_study_run(path, {"tasks": len(items), "wall_seconds": time.perf_counter() - t0, "workers": workers,
                            "scheduler": scheduler})
    return load_results(out)


def verdict(contraction: float, coverage: float, n: int) -> str:
    """identified / learned, under-covered / partly learned / prior-dominated (module docstring)."""
    if not np.isfinite(contraction):
        return "no result"
    floor = NOMINAL - 2 * math.sqrt(NOMINAL * (1 - NOMINAL) / max(n, 1))
    if contraction < CONTRACTION_IDENTIFIED:
        return "identified" if coverage >= floor else "learned, under-covered"
    return "partly learned" if contraction < CONTRACTION_PARTLY else "prior-dominated"


def summarize_schedules(table, schedules: list[str] | None = None):
    """Per (schedule, analysis, estimand): contraction and 90 % coverage with Monte Carlo errors, verdict."""
    import pandas as pd

    rows = []
    ok = table[table["status"] == "ok"] if len(table) else table
    order = schedules or list(dict.fromkeys(table["schedule"]))
    for (schedule, model, estimand), part in ok.groupby(["schedule", "model", "estimand"], sort=False):
        ratio = (part["post_sd"] / part["prior_sd"]).to_numpy(float)
        ratio = ratio[np.isfinite(ratio)]
        n = len(part)
        covered = ((part["lo"] <= part["truth"]) & (part["truth"] <= part["hi"])).to_numpy(bool)
        c = float(ratio.mean()) if ratio.size else math.nan
        cov = float(covered.mean())
        failed = int(((table["schedule"] == schedule) & (table["model"] == model) & (table["estimand"] == estimand)
                      & (table["status"] != "ok")).sum())
        left_out = part["patients_left_out"] if "patients_left_out" in part else None
        rows.append({"schedule": schedule, "model": model, "estimand": estimand, "cohorts": n, "failed": failed,
                     "not_converged": int((~part["converged"].astype(bool)).sum()),
                     # cohorts (of n) with patients left out for lack of CAR-T samples, and how many in all
                     "cohorts_with_patients_left_out": int((left_out.fillna(0) > 0).sum()) if left_out is not None
                     else 0,
                     "patients_left_out": int(left_out.fillna(0).sum()) if left_out is not None else 0,
                     "truth": float(part["truth"].mean()), "posterior_sd": float(part["post_sd"].mean()),
                     "prior_sd": float(part["prior_sd"].mean()), "contraction": c,
                     "contraction_se": float(ratio.std(ddof=1) / math.sqrt(ratio.size)) if ratio.size > 1 else math.nan,
                     "coverage_90": cov, "coverage_se": math.sqrt(NOMINAL * (1 - NOMINAL) / n),
                     "bias": float((part["post_median"] - part["truth"]).mean()),
                     "verdict": verdict(c, cov, n)})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["_s"] = frame["schedule"].map({s: k for k, s in enumerate(order)})
        frame["_e"] = frame["estimand"].map({e: k for k, e in enumerate(ESTIMAND_MODELS)})
        frame = frame.sort_values(["_e", "model", "_s"]).drop(columns=["_s", "_e"]).reset_index(drop=True)
    return frame


def _markdown(frame) -> str:
    cols = ["estimand", "model", "schedule", "cohorts", "contraction", "coverage_90", "bias", "not_converged",
            "verdict"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in frame.itertuples():
        cells = [r.estimand, r.model, r.schedule, str(r.cohorts),
                 f"{r.contraction:.2f} ± {r.contraction_se:.2f}" if np.isfinite(r.contraction_se)
                 else f"{r.contraction:.2f}",
                 f"{r.coverage_90:.2f} ± {r.coverage_se:.2f}", f"{r.bias:+.3g}", str(r.not_converged), r.verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_differences(table, reference: str | None = None):
    """Per (analysis, estimand, schedule): mean over cohorts of the contraction difference from ``reference``.

    The schedules see the same simulated patients (common random numbers), so the difference is taken
    cohort by cohort, d_c = r_{s,c} - r_{ref,c}, and its Monte Carlo SE is sd(d) / sqrt(C) over the C
    cohorts both schedules have: smaller than the two schedules' own errors combined.
    ``reference`` defaults to the first schedule in the table.
    """
    import pandas as pd

    cols = ["model", "estimand", "schedule", "reference", "cohorts", "difference", "difference_se"]
    ok = table[table["status"] == "ok"] if len(table) else table
    if not len(ok):
        return pd.DataFrame(columns=cols)
    reference = reference or next(iter(dict.fromkeys(table["schedule"])))
    ratio = ok.assign(ratio=ok["post_sd"] / ok["prior_sd"])
    rows = []
    for (model, estimand), part in ratio.groupby(["model", "estimand"], sort=False):
        wide = part.pivot_table(index="cohort", columns="schedule", values="ratio", aggfunc="first")
        if reference not in wide:
            continue
        for schedule in wide.columns:
            if schedule == reference:
                continue
            d = (wide[schedule] - wide[reference]).to_numpy(float)
            d = d[np.isfinite(d)]
            rows.append({"model": model, "estimand": estimand, "schedule": schedule, "reference": reference,
                         "cohorts": int(d.size), "difference": float(d.mean()) if d.size else math.nan,
                         "difference_se": float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else math.nan})
    return pd.DataFrame(rows, columns=cols)


def _pm(value: float, se: float) -> str:
    # one cohort has no spread to estimate a Monte Carlo error from: say so rather than print a bare number
    return f"{value:.2f} ± {se:.2f}" if np.isfinite(se) else f"{value:.2f} (one cohort: no MC error)"


def summary_words(frame, differences=None) -> list[str]:
    """One sentence per (estimand, analysis): which schedules identify it and which do not, with MC errors.

    Each schedule is quoted with its contraction and 90 % coverage (± Monte Carlo SE over cohorts) and,
    when ``differences`` (:func:`paired_differences`) is given, the paired contraction difference from
    the reference schedule.
    """
    out = []
    for (estimand, model), part in frame.groupby(["estimand", "model"], sort=False):
        def figures(r) -> str:
            if r.verdict == "no result":
                return "no result: no finite prior SD, see the error column of schedules.csv"
            return (f"contraction {_pm(r.contraction, r.contraction_se)}, "
                    f"90% coverage {_pm(r.coverage_90, r.coverage_se)}")

        ident = [f"{r.schedule} ({figures(r)})" for r in part.itertuples() if r.verdict == "identified"]
        rest = [f"{r.schedule} ({r.verdict}: {figures(r)})" if r.verdict != "no result"
                else f"{r.schedule} ({figures(r)})" for r in part.itertuples() if r.verdict != "identified"]
        text = (f"{estimand} ({model} model): identified by {', '.join(ident)}" if ident
                else f"{estimand} ({model} model): identified by no schedule compared")
        text += (f"; not by {', '.join(rest)}." if rest else ".")
        if differences is not None and len(differences):
            diff = differences[(differences["model"] == model) & (differences["estimand"] == estimand)
                               & np.isfinite(differences["difference"])]
            if len(diff):
                text += " Paired on the same cohorts, contraction " + "; ".join(
                    f"{d.schedule} minus {d.reference} {d.difference:+.2f}"
                    + (f" ± {d.difference_se:.2f}" if np.isfinite(d.difference_se) else "")
                    + f" ({d.cohorts} cohorts)" for d in diff.itertuples()) + "."
        for r in part.itertuples():
            if r.verdict != "no result" and r.coverage_90 < NOMINAL - r.coverage_se:
                # "identified" only asks coverage not to fall 2 MC SE short; a shortfall of 1 SE is said too
                text += (f" Under {r.schedule} the 90% intervals covered the truth in only "
                         f"{round(r.coverage_90 * r.cohorts)} of {r.cohorts} cohorts.")
            if getattr(r, "patients_left_out", 0):
                text += (f" Under {r.schedule}, {r.patients_left_out} patient(s) in {r.cohorts_with_patients_left_out} "
                         f"of {r.cohorts} cohorts had no CAR-T sample (an event before the first one) and were left "
                         f"out of the {model} fit.")
        bad = int(part["not_converged"].sum())
        if bad:
            total = int(part["cohorts"].sum())
            text += (f" {bad} of the {total} fits behind these numbers did not pass the convergence checks "
                     "(kept and counted: read the figures as indicative).")
        out.append(text)
    return out


def plot_contraction(frame, path: Path) -> Path:
    """Contraction by schedule (± 2 MC SE), one panel per estimand, one marker per analysis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    estimands = list(dict.fromkeys(frame["estimand"]))
    schedules = list(dict.fromkeys(frame["schedule"]))
    fig, axes = plt.subplots(1, len(estimands), figsize=(3.6 * len(estimands), 3.4), squeeze=False, sharey=True)
    for ax, estimand in zip(axes[0], estimands):
        part = frame[frame["estimand"] == estimand]
        models = list(dict.fromkeys(part["model"]))
        for k, model in enumerate(models):
            sub = part[part["model"] == model]
            x = np.array([schedules.index(s) for s in sub["schedule"]]) + (k - (len(models) - 1) / 2) * 0.15
            ax.errorbar(x, sub["contraction"], yerr=2 * sub["contraction_se"].fillna(0), fmt="o", capsize=3,
                        label=model)
        ax.axhline(CONTRACTION_IDENTIFIED, color="grey", ls="--", lw=1)
        ax.axhline(1.0, color="grey", ls=":", lw=1)
        ax.set_xticks(range(len(schedules)), schedules, rotation=30, ha="right")
        ax.set_title(estimand, fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("posterior SD / prior SD")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(table, study: ScheduleStudy, out: str | Path) -> dict[str, Path]:
    """schedules.csv, schedules.md (table), contraction.png, differences.csv (paired contraction differences
    from the spec's first schedule), summary.md and summary.html (in words, with Monte Carlo errors)."""
    import html

    out = Path(out)
    frame = summarize_schedules(table, [s.name for s in study.schedules])
    paths = {"csv": out / "schedules.csv", "markdown": out / "schedules.md", "figure": out / "contraction.png",
             "summary": out / "summary.md", "html": out / "summary.html", "differences": out / "differences.csv"}
    frame.to_csv(paths["csv"], index=False)
    paths["markdown"].write_text(_markdown(frame))
    if len(frame):
        plot_contraction(frame, paths["figure"])
    cohorts = int(frame["cohorts"].max()) if len(frame) else 0
    failed = int((table["status"] != "ok").sum())
    differences = paired_differences(table, study.schedules[0].name)
    differences.to_csv(paths["differences"], index=False)
    words = summary_words(frame, differences)
    schedules = "\n".join(f"- **{s.name}**: {s.description} (CAR-T days {s.days()['cart_days']}; flow MRD days "
                          f"{s.days()['flow_days']}; NGS days {s.days()['ngs_days']})" for s in study.schedules)
    intro = (f"{study.title or 'Sampling-schedule comparison'}: {cohorts} simulated cohort(s) of {study.patients} "
             f"patients per schedule, fitted with {', '.join(study.models)} "
             f"({study.sampler.get('chains', '?')} chains x {study.sampler.get('draws', '?')} draws). "
             f"Contraction = posterior SD / prior SD of the estimand (below {CONTRACTION_IDENTIFIED} the data "
             f"halve the prior's uncertainty); coverage = share of 90% intervals containing the simulator's truth. "
             f"± is the Monte Carlo standard error over cohorts; with few cohorts these figures are rough.")
    md = (f"# Sampling schedules\n\n{intro}\n\n## Schedules\n\n{schedules}\n\n## What each schedule identifies\n\n"
          + "\n".join(f"- {w}" for w in words) + (f"\n\n{failed} result row(s) failed; see schedules.csv.\n"
                                                   if failed else "\n")
          + f"\n## Table\n\n{_markdown(frame)}\n![contraction](contraction.png)\n")
    paths["summary"].write_text(md)
    body = (f"<h1>Sampling schedules</h1><p>{html.escape(intro)}</p><h2>Schedules</h2><ul>"
            + "".join(f"<li><b>{html.escape(s.name)}</b>: {html.escape(s.description)}</li>" for s in study.schedules)
            + "</ul><h2>What each schedule identifies</h2><ul>"
            + "".join(f"<li>{html.escape(w)}</li>" for w in words) + "</ul>"
            + frame.to_html(index=False, float_format=lambda v: f"{v:.3g}")
            + '<p><img src="contraction.png" alt="contraction by schedule"></p>')
    paths["html"].write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>Sampling schedules</title>"
                             f"</head><body>{body}</body></html>\n")
    return paths
