"""``calibrate``: a whole SBC study from a model name, a spec and a design (the CLI and notebooks call this)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.calibration.runner import (STUDY_FILE, StudyError, load_results, prior_draws, run_study,
                                        simulated_data, study_settings)
from toolkit.inference import SamplerSettings

__all__ = ["CALIBRATED_MODELS", "build_problem", "calibrate", "reopen_study"]

#: models with an own generator; the others are named with what is missing
CALIBRATED_MODELS = ("durability", "cart", "joint", "mrd")
#: models whose generator is still to be written (none at present)
PLANNED_MODELS = ()


def build_problem(model: str, *, spec: dict | None = None, design_cohort=None, variant: str | None = None,
                  work_dir: str | Path | None = None):
    """The calibration problem of ``model`` under ``spec`` at the design of ``design_cohort``.

    ``design_cohort``: a loaded Cohort, a folder path, or None for the default
    simulated trial (written to ``work_dir/default_design``).
    """
    if model in PLANNED_MODELS:
        raise StudyError(f"model {model!r} has no calibration generator yet (available: "
                         f"{', '.join(CALIBRATED_MODELS)}): its builder fixes which assessments are censored, so a "
                         "compiled fit cannot take new simulated data; see docs/calibration.md for what remains")
    if model not in CALIBRATED_MODELS:
        raise StudyError(f"unknown model {model!r}; valid: {', '.join(CALIBRATED_MODELS + PLANNED_MODELS)}")
    if model == "mrd" and variant is not None:  # refused before a default design is written
        raise StudyError("--variant is a durability or joint option; the MRD model has none")
    from toolkit.calibration.generators import DurabilityCalibration, default_design_cohort, durability_design
    from toolkit.data import load_cohort
    from toolkit.fitting import DurabilityOptions

    if design_cohort is None:
        design_cohort = default_design_cohort(Path(work_dir or ".") / "default_design")
    elif not hasattr(design_cohort, "merged"):
        design_cohort = load_cohort(design_cohort)
    if model in ("cart", "joint"):
        return _kinetic_problem(model, spec, design_cohort, variant)
    if model == "mrd":
        return _mrd_problem(spec, design_cohort)
    options = _spec_options(spec, DurabilityOptions, {"variant": variant})
    if options.endpoint not in ("rfs", "efs") or options.hsct != "censor":
        raise StudyError(f"the durability generator covers endpoints 'rfs' and 'efs' with HSCT 'censor' (the "
                         f"primary analyses); this spec asks for endpoint {options.endpoint!r}, HSCT {options.hsct!r}")
    design = durability_design(design_cohort, covariates=options.covariates)
    return DurabilityCalibration(design, variant=options.variant, priors=options.prior_set(),
                                 days=tuple(options.days), endpoint=options.endpoint)


def _spec_options(spec: dict | None, options_class, overrides: dict | None = None):
    """The spec's ``[options]`` (with ``overrides``) as ``options_class``, keeping the fields it knows."""
    from toolkit.specs import merged_options

    options = merged_options(spec, overrides or {})
    known = set(options_class.__dataclass_fields__)
    return options_class(**{k: v for k, v in options.items() if k in known})


def _design(make_design, cohort, covariates, label: str):
    """``make_design(cohort, covariates=...)``; a cohort that cannot carry the model is a StudyError."""
    from toolkit.data.inputs import ModelDataError

    try:
        return make_design(cohort, covariates=covariates)
    except ModelDataError as err:
        raise StudyError(f"the design cohort cannot carry the {label} model: {err}") from err


def _mrd_problem(spec: dict | None, cohort):
    """The MRD calibration problem with the spec's covariates and priors at the cohort's design."""
    from toolkit.calibration.mrd import MrdCalibration, mrd_design
    from toolkit.fitting import MrdOptions

    options = _spec_options(spec, MrdOptions)
    design = _design(mrd_design, cohort, options.covariates, "MRD")
    return MrdCalibration(design, priors=options.prior_set())


def _kinetic_problem(model: str, spec: dict | None, cohort, variant: str | None):
    """The CAR-T or joint calibration problem with the spec's options and priors at the cohort's design."""
    from toolkit.calibration.kinetics import CartCalibration, JointCalibration, cart_design, joint_design
    from toolkit.fitting import CartOptions, JointOptions

    if model == "cart":
        if variant is not None:
            raise StudyError("--variant is a durability or joint option; the CAR-T model has none")
        options = _spec_options(spec, CartOptions)
        design = _design(cart_design, cohort, options.covariates, "CAR-T")
        return CartCalibration(design, priors=options.prior_set(design.inputs.unit),
                               effects_on=tuple(options.effects_on))
    options = _spec_options(spec, JointOptions, {"variant": variant})
    if options.kinetics != "joint" or "mrd" in options.associations:
        raise StudyError(f"the joint generator covers kinetics 'joint' with the associations log_cmax, cart_loss "
                         f"and mrd_clearance; this spec asks for kinetics {options.kinetics!r}, associations "
                         f"{', '.join(options.associations)} (MRD recurrence, 'mrd', is an observed marker the "
                         "model does not generate)")
    with_mrd = "mrd_clearance" in options.associations
    design = _design(lambda c, covariates: joint_design(c, covariates=covariates, mrd_submodel=with_mrd), cohort,
                     options.covariates, "joint")
    return JointCalibration(design=design, priors=options.prior_set(),
                            cart_priors=options.cart_prior_set(design.cart.inputs.unit), variant=options.variant,
                            associations=tuple(options.associations), tau_days=float(options.tau_days))


def _extensions(spec: dict | None, given: int | None) -> int:
    """Reruns allowed per simulation: ``given``, else the spec's ``extend_sampling``, else 0."""
    from toolkit.fitting import check_extend_sampling
    from toolkit.specs import merged_options

    value = given if given is not None else merged_options(spec, {}).get("extend_sampling", 0)
    try:
        return check_extend_sampling(value)
    except ValueError as err:
        raise StudyError(f"{err} (the spec's [options] extend_sampling, or --extend-sampling)") from None


def calibrate(model: str, *, simulations: int, out: str | Path, spec: str | Path | dict | None = None,
              design=None, variant: str | None = None, workers: int | None = None, scheduler: str | None = None,
              resume: bool = False, draws: int | None = None, tune: int | None = None, chains: int | None = None,
              seed: int | None = None, target_accept: float | None = None, extend_sampling: int | None = None,
              report: bool = True, progress: bool = True) -> dict:
    """Run (or resume) the SBC study of ``model`` and write its summary; returns the overview dict.

    Sampler settings are the spec's ``[sampler]`` (the settings the analysis is
    run with), overridden by the keyword arguments; so are its reruns of a fit that
    fails its verdict (the spec's ``[options] extend_sampling``, 0 where it has none).
    """
    from toolkit.calibration.runner import done_simulations
    from toolkit.specs import load_spec

    # what can be refused before any work is refused first
    if simulations < 1:
        raise StudyError(f"--simulations must be at least 1, got {simulations}")
    if workers is not None and workers < 0:
        raise StudyError(f"--workers must be 0 (in this process) or more, got {workers}")
    if Path(out).exists() and not Path(out).is_dir():
        raise StudyError(f"{out}: is a file, not a folder; give --out a new or existing study folder")
    if not resume and ((Path(out) / STUDY_FILE).exists() or done_simulations(out)):
        raise StudyError(f"{out} already holds a calibration study; pass --resume to continue it, "
                         "or choose a new --out folder")
    if isinstance(spec, (str, Path)):
        spec = load_spec(spec, model=model)
    sampler = dict((spec or {}).get("sampler", {}))
    given = {"draws": draws, "tune": tune, "chains": chains, "seed": seed, "target_accept": target_accept}
    sampler.update({k: v for k, v in given.items() if v is not None})
    settings = study_settings(sampler)
    extensions = _extensions(spec, extend_sampling)
    out = Path(out)
    problem = build_problem(model, spec=spec, design_cohort=design, variant=variant, work_dir=out)
    run_study(problem, simulations, out, settings=settings, workers=workers, scheduler=scheduler, resume=resume,
              progress=progress, extensions=extensions)
    if not report:
        from toolkit.calibration.metrics import summarize_study

        return summarize_study(load_results(out))[1]
    from toolkit.calibration.report import write_calibration_report

    write_calibration_report(out)
    return json.loads((out / "calibration.json").read_text())["overview"]


@dataclass(frozen=True)
class StoredStudy:
    """A `toolkit calibrate` study reopened from its folder, to look again at its simulations without refitting
    them (``benchmarks/sbc_*.py``): its problem rebuilt at the stored design, its settings, its results."""

    path: Path
    config: dict
    problem: object
    settings: SamplerSettings

    @property
    def seed(self) -> int:
        """The study seed: it draws the prior values and the cohorts."""
        return int(self.settings.random_seed)

    def results(self):
        return load_results(self.path)

    def prior_draws(self, sims) -> dict[int, dict]:
        return prior_draws(self.problem, list(sims), seed=self.seed)

    def data(self, sim: int, theta: dict) -> dict[str, np.ndarray]:
        return simulated_data(self.problem, sim, theta, seed=self.seed)

    def add_oracle_pits(self) -> int:
        """Write the fit-free oracle's PIT (``oracle_pit``, ``problem.oracle_pits``) into each stored simulation
        that lacks it (a study stored before it was recorded), from the regenerated prior draws; the fits'
        records are left as they are. Each file is rewritten whole under a temporary name, then renamed.
        Returns how many files were written (0 for a problem without an oracle)."""
        import pandas as pd

        from toolkit.calibration.runner import _sim_path, _write_atomic, done_simulations

        if not hasattr(self.problem, "oracle_pits"):
            return 0
        todo = []
        for sim in sorted(done_simulations(self.path)):
            frame = pd.read_parquet(_sim_path(self.path, sim))
            if "oracle_pit" not in frame or not np.isfinite(frame["oracle_pit"].to_numpy(float)).any():
                todo.append((sim, frame))
        thetas = self.prior_draws([sim for sim, _ in todo])
        for sim, frame in todo:
            oracle = self.problem.oracle_pits(thetas[sim])
            frame["oracle_pit"] = [oracle.get(q, np.nan) if status == "ok" else np.nan
                                   for q, status in zip(frame["quantity"], frame["status"])]
            _write_atomic(frame, _sim_path(self.path, sim))
        return len(todo)


def reopen_study(path: str | Path, spec: str | Path | None = None, design: str | Path | None = None) -> StoredStudy:
    """The study in ``path``, its problem rebuilt under the spec file ``spec`` (None: no spec, as `toolkit
    calibrate` without ``--spec``) at the design cohort ``design`` (default: the study's ``default_design``
    folder; give the ``--design`` of a study made with one). Raises :class:`StudyError` when the rebuilt problem
    is not the stored one (another spec, variant or design), as ``--resume`` would."""
    from toolkit.data import load_cohort
    from toolkit.specs import SpecError, load_spec

    path = Path(path)
    config = json.loads((path / STUDY_FILE).read_text())
    model = config["problem"]["model"]
    design = path / "default_design" if design is None else Path(design)
    if not design.is_dir():
        raise StudyError(f"{path}: no design cohort at {design}; give the --design the study was made with")
    variant = config["problem"].get("variant") if model in ("durability", "joint") else None
    try:
        loaded = load_spec(spec, model=model) if spec else None
    except SpecError as err:
        raise StudyError(f"{path}: a study of model {model!r}; {err}") from err
    problem = build_problem(model, spec=loaded, variant=variant, design_cohort=load_cohort(design))
    if json.loads(json.dumps(problem.describe(), default=str)) != config["problem"]:  # as write_study_file stores it
        raise StudyError(f"{path}: the study was made with another spec, variant or design than {spec or 'no spec'}"
                         f" at {design}; give its own")
    return StoredStudy(path=path, config=config, problem=problem, settings=study_settings(config["settings"]))
