"""Command line: ``toolkit <command>`` (also ``python -m toolkit``).

Subcommands mirror the data flow: validate, simulate, describe, demo,
templates. ``main(argv)`` returns the exit code and is what tests call.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolkit import __version__, resources
from toolkit.data import CohortValidationError, load_cohort
from toolkit.specs import analysis_plan_dir

EXIT_INVALID = 2
EXIT_BUG = 1


class UsageError(Exception):
    """A misused command line (a malformed option value, an unusable path): exit 2 with this message."""


def _seed(text: str) -> int:
    """argparse type of --seed: a whole number NumPy accepts (0 to 2**32 - 1)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expects a whole number from 0 to 4294967295, got {text!r}")
    return value


MAX_PATIENTS = 100_000  # a simulated trial larger than this is a typo, not a design
EFFECT_RANGE = (0.01, 100.0)  # a ratio outside it is beyond any trial and overflows the simulator
SPEC_DIR = analysis_plan_dir()  # the checkout's models/, or the copy inside an installed wheel
DEFAULT_SEED = 20261125


def _console() -> Console:
    # Not a terminal (a pipe, CI log): wide enough for the summary tables.
    width = shutil.get_terminal_size((140, 24)).columns
    return Console(highlight=False, width=max(width, 100), soft_wrap=True)  # messages never hard-wrapped


def _print_frame(console: Console, title: str, frame, *, formats: dict | None = None) -> None:
    table = Table(title=title, title_justify="left")
    for column in frame.columns:
        table.add_column(str(column))
    for _, row in frame.iterrows():
        cells = []
        for column, value in row.items():
            if isinstance(value, float):
                fmt = (formats or {}).get(column, "{:.3g}" if abs(value) < 1 else "{:.0f}")
                cells.append("—" if value != value else fmt.format(value))
            else:
                cells.append(str(value))
        table.add_row(*cells)
    console.print(table)


def _load_or_report(folder: str, console: Console):
    try:
        return load_cohort(folder)
    except CohortValidationError as err:
        console.print(f"[bold red]{len(err.problems)} problem(s)[/] in cohort {folder}:")
        for problem in err.problems:
            console.print(f"  - {problem}", markup=False)
        return None


def cmd_validate(args) -> int:
    console = _console()
    cohort = _load_or_report(args.dir, console)
    if cohort is None:
        return EXIT_INVALID
    extra = [n for n, t in (("cart_kinetics", cohort.cart), ("mrd", cohort.mrd)) if t is not None]
    console.print(f"[green]OK[/]: {cohort.name}: {len(cohort.patients)} patients"
                  + (f", with {', '.join(extra)}" if extra else "") + "; no problems found.")
    return 0


def _parse_effects(items: list[str]) -> dict[str, float]:
    effects = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name.strip() or not math.isfinite(number):
            raise UsageError(f"--effect expects NAME=VALUE with a finite number (e.g. cmax_gmr=1.5), got {item!r}")
        effects[name.strip()] = number
    return effects


def _new_file(out: str, option: str = "--out") -> Path:
    """A file that does not exist yet, in an existing folder: never written over a user's file."""
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"{option} {out} is a folder; give the name of a new file, e.g. {path / 'predictions.csv'}")
    if path.exists() or path.is_symlink():
        raise UsageError(f"{option} {out} already exists; give a new file name (existing files are never overwritten)")
    if not path.absolute().parent.is_dir():
        raise UsageError(f"{option} {out}: the folder {path.absolute().parent} does not exist; create it first")
    return path


def _new_folder(out: str, option: str = "--out") -> Path:
    """A folder that does not exist yet, or is empty: a command never writes over a user's files."""
    path = Path(out)
    if path.is_symlink() and not path.exists():
        raise UsageError(f"{option} {out} is a link to nothing; give a new folder name")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {out} is an existing file; give the name of a new folder")
    if path.is_dir() and any(path.iterdir()):
        raise UsageError(f"{option} {out} already exists and is not empty; give a new folder name "
                         "(existing files are never overwritten)")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{option} {out}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise UsageError(f"{option} {out}: no permission to write in {parent}")
            break
    return path


def cmd_simulate(args) -> int:
    from toolkit.simulate import Effects, simulate_trial

    console = _console()
    if not 2 <= args.patients <= MAX_PATIENTS:
        raise UsageError(f"--patients must be from 2 (one patient an arm) to {MAX_PATIENTS}, got {args.patients}")
    chosen = _parse_effects(args.effect)
    try:
        effects = Effects().with_overrides(chosen)
    except ValueError as err:
        console.print(f"[red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    for name, value in chosen.items():
        if not EFFECT_RANGE[0] <= value <= EFFECT_RANGE[1]:
            raise UsageError(f"--effect {name}={value:g}: an effect is a ratio between {EFFECT_RANGE[0]:g} and "
                             f"{EFFECT_RANGE[1]:g} (1 = no effect)")
    _new_folder(args.out)
    trial = simulate_trial(args.patients, seed=args.seed, effects=effects)
    out = trial.write(args.out)
    console.print(f"Wrote a simulated trial of {args.patients} patients (seed {args.seed}) to {out}; "
                  f"true values in {out / 'truth.json'}.")
    return 0


def describe(folder: str, console: Console) -> int:
    from toolkit.data.describe import describe_cohort

    cohort = _load_or_report(folder, console)
    if cohort is None:
        return EXIT_INVALID
    tables = describe_cohort(cohort)
    console.print(f"[bold]{cohort.name}[/]  ({cohort.path})")
    _print_frame(console, "Patients, response and events by arm", tables["arms"],
                 formats={"response rate": "{:.0%}"})
    _print_frame(console, "Relapse-free survival from remission (Kaplan-Meier, 90% CI; censored at HSCT)",
                 tables["rfs"])
    if len(tables["samples"]):
        _print_frame(console, "Kinetic samples", tables["samples"], formats={"share below limit": "{:.0%}"})
    return 0


def cmd_describe(args) -> int:
    return describe(args.dir, _console())


def cmd_templates(args) -> int:
    from toolkit.data.schema import TABLES
    from toolkit.data.templates import STUDY_TEMPLATE, write_templates

    folder = Path(args.out)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} is an existing file; give the name of a new folder")
    # Regenerating templates is fine; writing them over a filled-in cohort is not.
    for name in [f"{t}.csv" for t in TABLES] + ["study.toml"]:
        path = folder / name
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        filled = (len([line for line in text.splitlines() if line.strip()]) > 1 if name.endswith(".csv")
                  else text != STUDY_TEMPLATE)
        if filled:
            raise UsageError(f"templates --out {folder} holds {name} with data; choose a new folder "
                             "(templates never overwrite data)")
    out = write_templates(args.out)
    _console().print(f"Wrote empty templates and DATA_DICTIONARY.md to {out}")
    return 0


DEMO_RUNS = {  # run name -> (model, spec file)
    "durability_cure": ("durability", "durability_primary.toml"),
    "durability_weibull": ("durability", "durability_weibull.toml"),
    "cart": ("cart", "cart_primary.toml"),
    "mrd": ("mrd", "mrd_primary.toml"),
    "joint": ("joint", "joint_primary.toml"),
}
def _fast_sampler_args() -> list[str]:
    from toolkit.fitting import FAST_SAMPLER  # one definition of --fast, shared with `toolkit analyze`

    return [arg for key, value in FAST_SAMPLER.items() for arg in (f"--{key}", str(value))]




def _interval(est: dict, key: str, fmt: str = "+.2f") -> str:
    lo, hi = est[key]["hdi_90"]
    return f"{format(est[key]['median'], fmt)} (90% interval {format(lo, fmt)} to {format(hi, fmt)})"


def cmd_demo(args) -> int:
    """Simulate the default trial, validate and describe it, fit every model, compare, report."""
    import json

    from toolkit.simulate import simulate_trial

    console = _console()
    start = time.perf_counter()
    out = Path(args.out)
    error = _check_demo_out(out, overwrite=args.overwrite)
    if error:
        console.print(f"[red]error:[/] {escape(error)}")
        return EXIT_INVALID
    cohort_dir = out / "cohort"
    console.rule("[bold]toolkit demo" + (" (fast: few draws, not for decisions)" if args.fast else ""))
    console.print(f"1. Simulating the default trial (60 patients, seed {args.seed}) into {cohort_dir} ...")
    simulate_trial(60, seed=args.seed).write(cohort_dir)
    console.print("2. Validating ...")
    if cmd_validate(argparse.Namespace(dir=str(cohort_dir))) != 0:
        return EXIT_INVALID
    console.print("3. Describing the cohort ...")
    describe(str(cohort_dir), console)
    summaries = {}
    for step, (name, (model, spec)) in enumerate(DEMO_RUNS.items(), start=4):
        console.print(f"{step}. Fitting {name} (spec models/{spec}) ...")
        code = main(["fit", model, "--data", str(cohort_dir), "--out", str(out / "runs" / name),
                     "--spec", str(SPEC_DIR / spec), "--seed", str(args.seed)] + (_fast_sampler_args() if args.fast else [])
                    + (["--overwrite"] if args.overwrite else []))
        if code != 0:
            return code
        summaries[name] = json.loads((out / "runs" / name / "summary.json").read_text())
    console.print(f"{step + 1}. Comparing the two durability models (PSIS-LOO) ...")
    main(["compare", str(out / "runs" / "durability_cure"), str(out / "runs" / "durability_weibull")])
    report = out / "report.html"
    console.print(f"{step + 2}. Writing the investigator report ...")
    main(["report"] + [str(out / "runs" / n) for n in DEMO_RUNS] + ["--out", str(report)])
    truth = json.loads((cohort_dir / "truth.json").read_text())["estimands"]
    est = summaries["durability_cure"]["estimands"]
    console.rule("[bold]Headline (true values of the simulation in brackets)")
    console.print(f"Probability that IFN-a lowers the relapse hazard of patients not cured: {est['prob_hr_below_1']:.2f}")
    if "rfs_365d_difference" in est:
        console.print(f"RFS at 365 days, IFN-a minus control: {_interval(est, 'rfs_365d_difference')} "
                      f"[{truth['rfs_365d_difference']:+.2f}]")
    console.print(f"Cure fraction, IFN-a minus control: {_interval(est, 'cure_fraction_difference')} "
                  f"[{truth['cure_fraction_difference']:+.2f}]")
    kin = summaries["cart"]["estimands"]
    console.print(f"CAR-T Cmax, geometric-mean ratio IFN-a / control: {_interval(kin, 'cmax_gmr', '.2f')} "
                  f"[{truth['cmax_gmr']:.2f}]")
    mrd = summaries["mrd"]["estimands"]
    console.print(f"MRD clearance rate ratio: {_interval(mrd, 'clearance_rate_ratio', '.2f')} "
                  f"[{truth['clearance_rate_ratio']:.2f}]")
    joint = summaries["joint"]["estimands"]
    console.print(f"Relapse hazard ratio, total: {_interval(joint, 'hazard_ratio_total', '.2f')} "
                  f"[{truth['hazard_ratio_total']:.2f}]; through CAR-T kinetics: "
                  f"{_interval(joint, 'hazard_ratio_indirect', '.2f')} [{truth['hazard_ratio_indirect']:.2f}]")
    failed = [n for n, s in summaries.items() if not s["diagnostics"]["converged"]]
    console.print("Every fit passed its diagnostics." if not failed else
                  f"[bold red]NOT CONVERGED (provisional): {', '.join(failed)}[/]")
    console.print(f"Runs in {out / 'runs'}; figures in each run's figures/ folder.")
    console.print(f"[bold]Report: {report.resolve()}[/]")
    console.print(f"Demo finished in {time.perf_counter() - start:.0f} s.")
    return 0


DEMO_CONTENTS = {"cohort", "runs", "report.html", "report.pdf"}


def _check_demo_out(out: Path, *, overwrite: bool) -> str | None:
    """Why ``demo --out`` cannot be written (checked before simulating), or None."""
    from toolkit.inference import RunFolderError, check_writable_destination

    if out.exists() and not out.is_dir():
        return f"--out {out} exists and is a file; choose a new folder for the demo"
    if out.is_dir():
        names = {p.name for p in out.iterdir()}
        if names and not overwrite:
            return (f"demo folder {out} already exists; add --overwrite to replace its cohort, runs and report, "
                    "or choose another --out")
        if names - DEMO_CONTENTS:
            return (f"{out} is not a demo folder (it holds {len(names - DEMO_CONTENTS)} other file(s) or "
                    "folder(s)); --overwrite replaces only a demo's own output: choose another --out")
    try:
        check_writable_destination(out / "cohort", what="demo folder")
    except RunFolderError as err:
        return str(err)
    return None


_LISTS = {  # option -> (what each item is, example)
    "--days": ("a whole number of days above 0", "180,365"),
    "--horizons": ("a day above 0", "365,730"),
    "--prob-hr-below": ("a hazard ratio above 0", "1,0.7"),
    "--prob-rfs-difference-above": ("a difference between -1 and 1", "0,0.1"),
}


def _csv_list(text: str | None, cast=str, option: str | None = None):
    """A comma-separated option value; numbers are checked against what ``option`` means."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if cast is str:
        return items  # an empty list is a choice: e.g. --effects-on "" (no arm effect)
    what, example = _LISTS.get(option, ("a number", "1,2"))
    problem = UsageError(f"{option} expects a comma-separated list, each {what} (e.g. {option} {example}); "
                         f"got {text!r}")
    try:
        values = [float(t) for t in items]
    except ValueError as exc:
        raise problem from exc
    bad = not values or not all(math.isfinite(v) for v in values)
    if option in ("--days", "--horizons", "--prob-hr-below"):
        bad = bad or any(v <= 0 for v in values)
    if option == "--days":
        bad = bad or any(not v.is_integer() for v in values)
    if option == "--prob-rfs-difference-above":
        bad = bad or any(not -1 < v < 1 for v in values)
    if bad:
        raise problem
    return [cast(v) for v in values]


def print_fit_summary(console: Console, summary: dict, run_dir: Path | None = None) -> None:
    """The short table a user reads after a fit: estimands, then the diagnostics verdict."""
    from toolkit.narrative import estimands_table

    title = f"{summary['model']} ({summary.get('variant', '')}): {summary['arms']['experimental']} vs {summary['arms']['control']}"
    _print_frame(console, title, estimands_table(summary))
    d = summary["diagnostics"]
    verdict = "[green]converged[/]" if d["converged"] else "[bold red]NOT CONVERGED: results are provisional[/]"
    def num(x, fmt):
        return "n/a" if x is None else format(x, fmt)  # R-hat needs 2+ chains

    console.print(f"Diagnostics: {verdict}  (max R-hat {num(d['max_rhat'], '.3f')}, min bulk ESS "
                  f"{num(d['min_ess_bulk'], '.0f')}, min tail ESS {num(d['min_ess_tail'], '.0f')}, "
                  f"divergences {d['divergences']})")
    for problem in d.get("problems", []):
        console.print(f"  - {problem}", markup=False)
    if not d["converged"] and run_dir is not None:
        from toolkit.review import failure_level_of_run

        where = failure_level_of_run(run_dir)
        if where:
            console.print(f"  {where}", markup=False)
    loo = summary.get("model_checks", {}).get("loo", {})
    if "error" in loo:
        console.print(f"[yellow]PSIS-LOO failed:[/] {escape(str(loo['error']))} (the fit itself is kept; the model "
                      "cannot be compared by LOO)")
    if "elpd_loo" in loo:
        flag = (f"  [yellow]{loo['n_pareto_k_above_0.7']} observation(s) with Pareto k > 0.7: LOO is unreliable "
                "for them[/]" if loo["n_pareto_k_above_0.7"] else "")
        console.print(f"PSIS-LOO: elpd {loo['elpd_loo']:.1f} (SE {loo['se']:.1f}), max Pareto k {loo['max_pareto_k']:.2f}{flag}")
    for warning in summary.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    if run_dir is not None:
        console.print(f"Run written to {run_dir}")


def _fit_plan(model: str, args):
    """(Options class, fit function, command-line option overrides, figure writer) for a model."""
    from toolkit import fitting

    if model == "durability":
        from toolkit.plots import write_durability_figures

        overrides = {"variant": args.variant, "endpoint": args.endpoint, "hsct": args.hsct, "prior": args.prior,
                     "covariates": _csv_list(args.covariates, option="--covariates"),
                     "days": _csv_list(args.days, int, "--days"),
                     "hr_below": _csv_list(args.prob_hr_below, float, "--prob-hr-below"),
                     "rfs_difference_above": _csv_list(args.prob_rfs_difference_above, float,
                                                       "--prob-rfs-difference-above")}
        return fitting.DurabilityOptions, fitting.fit_durability, overrides, write_durability_figures
    if model == "cart":
        from toolkit.plots.cart import write_cart_figures

        overrides = {"covariates": _csv_list(args.covariates, option="--covariates"),
                     "effects_on": _csv_list(args.effects_on, option="--effects-on")}
        return fitting.CartOptions, fitting.fit_cart, overrides, write_cart_figures
    if model == "mrd":
        from toolkit.plots.mrd import write_mrd_figures

        overrides = {"covariates": _csv_list(args.covariates, option="--covariates"), "prior": args.prior}
        return fitting.MrdOptions, fitting.fit_mrd, overrides, write_mrd_figures
    if model == "joint":
        from toolkit.plots.joint import write_joint_figures

        overrides = {"variant": args.variant, "covariates": _csv_list(args.covariates, option="--covariates"),
                     "kinetics": args.kinetics, "associations": _csv_list(args.associations, option="--associations")}
        return fitting.JointOptions, fitting.fit_joint, overrides, write_joint_figures
    return None


MODEL_OPTIONS = {  # fit options (argparse dest) each model uses besides --covariates and the sampler options
    "durability": ["variant", "endpoint", "hsct", "days", "prior", "prob_hr_below", "prob_rfs_difference_above"],
    "cart": ["effects_on"],
    "mrd": ["prior"],
    "joint": ["variant", "kinetics", "associations"],
}


def _option_flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _refuse_ignored_options(args) -> None:
    """A model option given to a model that does not use it is refused (exit 2), not silently dropped."""
    all_options = sorted({d for ds in MODEL_OPTIONS.values() for d in ds})
    ignored = [d for d in all_options if d not in MODEL_OPTIONS[args.model] and getattr(args, d, None) is not None]
    if ignored:
        takes = ", ".join(_option_flag(d) for d in ["covariates", *MODEL_OPTIONS[args.model]])
        raise UsageError(f"fit {args.model} does not use {', '.join(_option_flag(d) for d in ignored)}; the options "
                         f"of fit {args.model} are {takes}, the sampler options (--seed --draws --tune --chains "
                         "--backend --target-accept) and --spec (see toolkit fit --help)")


def default_spec(model: str) -> Path | None:
    """The primary analysis spec of ``model`` (``<model>_primary.toml`` in the analysis plan), if there is one."""
    path = SPEC_DIR / f"{model}_primary.toml"
    return path if path.is_file() else None


def fit_command(args, console: Console) -> int:
    from toolkit.data.inputs import ModelDataError
    from toolkit.fitting import default_settings, resolve_options
    from toolkit.inference import RunFolderError, backend_unavailable
    from toolkit.specs import SpecError, load_spec, merged_sampler

    plan = _fit_plan(args.model, args)
    if plan is None:
        console.print(f"[red]error:[/] model {args.model!r} is not available yet; available: durability, cart, mrd, joint")
        return EXIT_INVALID
    _refuse_ignored_options(args)
    if args.spec and args.no_spec:
        raise UsageError("--spec and --no-spec exclude each other; give one")
    spec_path = args.spec or (None if args.no_spec else default_spec(args.model))
    if spec_path is not None and not args.spec:
        console.print(f"No --spec: fitting the pre-specified primary analysis {spec_path.name} "
                      "(--no-spec fits the model's built-in defaults instead)")
    options_class, fit, overrides, write_figures = plan
    try:
        spec = load_spec(spec_path, model=args.model) if spec_path else None
        options = resolve_options(args.model, spec, overrides, source=str(args.spec or spec_path or "command line"))
        sampler = merged_sampler(spec, {"chains": args.chains, "tune": args.tune, "draws": args.draws,
                                        "seed": args.seed, "backend": args.backend,
                                        "target_accept": args.target_accept})
        settings = default_settings(args.model, **sampler)
    except (SpecError, ValueError, TypeError) as err:
        console.print(f"[red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    unavailable = backend_unavailable(settings.backend)  # an optional extra not installed: before any work
    if unavailable:
        console.print(f"[red]error:[/] {escape(unavailable)}")
        return EXIT_INVALID
    error = _check_run_out(args.out, args.data, overwrite=args.overwrite)
    if error:
        console.print(f"[red]error:[/] {escape(error)}")
        return EXIT_INVALID
    cohort = _load_or_report(args.data, console)
    if cohort is None:
        return EXIT_INVALID
    try:
        result = fit(cohort, options, settings, spec=spec)
    except ModelDataError as err:
        console.print(f"[red]cannot fit {args.model}:[/] {escape(str(err))}")
        return EXIT_INVALID
    try:  # figures are drawn inside the save, so a run is never left without them
        run_dir = result.save(args.out, overwrite=args.overwrite,
                              figures=None if args.no_figures else write_figures)
    except RunFolderError as err:
        console.print(f"[red]error:[/] the fit was not saved: {escape(str(err))}")
        return EXIT_INVALID
    print_fit_summary(console, result.summary, run_dir)
    return 0


def cmd_analyze(args) -> int:
    """Validate, fit every analysis spec, compare, report (logic in toolkit.analyze)."""
    from toolkit.analyze import AnalyzeError, analyze

    console = _console()
    try:
        sampler = None if args.seed is None else {"random_seed": args.seed}
        manifest = analyze(args.data, args.out, sap=args.sap, fast=args.fast, overwrite=args.overwrite,
                           sampler=sampler)
    except CohortValidationError as err:
        console.print(f"[bold red]{len(err.problems)} problem(s)[/] in cohort {escape(args.data)}; nothing was fitted:")
        for problem in err.problems:
            console.print(f"  - {problem}", markup=False)
        return EXIT_INVALID
    except AnalyzeError as err:
        console.print(f"[red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    out = Path(args.out)
    rows = [(name, a["status"]) for name, a in manifest["analyses"].items()]
    width = max(len(n) for n, _ in rows)
    for name, status in rows:
        console.print(f"  {name:<{width}}  {status}", markup=False)
    if manifest.get("unchanged"):
        console.print("Nothing to do: every analysis is up to date and the outputs are current.")
    if manifest["fast"]:
        console.print("[bold yellow]fast mode: short sampler settings; a smoke run, not for decisions[/]")
    failed = [n for n, a in manifest["analyses"].items() if a["converged"] is False]
    if failed:
        console.print(f"[bold red]NOT CONVERGED (provisional): {', '.join(failed)}[/]")
    console.print(f"Report: {out / 'report.html'}; estimands: {out / 'estimands.csv'} and .xlsx; "
                  f"manifest: {out / 'manifest.json'}", markup=False)
    not_fitted = [n for n, a in manifest["analyses"].items() if a["status"].startswith("not fitted")]
    if not_fitted:
        console.print(f"[red]error:[/] {len(not_fitted)} analysis(es) could not be fitted on this cohort: "
                      f"{', '.join(not_fitted)} (reasons above and in manifest.json)")
        return EXIT_INVALID
    return 0


def _check_run_out(out: str, data: str, *, overwrite: bool) -> str | None:
    """Why ``fit --out`` cannot be written (checked before any work), or None."""
    from toolkit.inference import RunFolderError, check_run_destination

    out_path, data_path = Path(out).resolve(), Path(data).resolve()
    if out_path == data_path or data_path in out_path.parents:
        return f"--out {out} is inside the cohort folder {data}; write runs outside the data (choose another --out)"
    try:
        check_run_destination(out_path, overwrite=overwrite)
    except RunFolderError as err:
        return str(err)
    return None


def cmd_fit(args) -> int:
    return fit_command(args, _console())

def cmd_predict(args) -> int:
    from toolkit.inference import load_run
    from toolkit.prediction import ESS_FLAG, predict_relapse

    console = _console()
    if not (math.isfinite(args.landmark_day) and 0 <= args.landmark_day <= 7305):
        raise UsageError(f"--landmark-day expects days since infusion between 0 and 7305, got {args.landmark_day:g}")
    horizons = _csv_list(args.horizons, float, "--horizons")
    if args.out:
        _new_file(args.out)
    try:
        run = load_run(args.run)
    except (FileNotFoundError, ValueError) as err:
        console.print(f"[red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    cohort = _load_or_report(args.patient_data, console)
    if cohort is None:
        return EXIT_INVALID
    try:
        table = predict_relapse(run, cohort, landmark_day=args.landmark_day,
                                horizons=horizons, random_seed=args.seed)
    except ValueError as err:
        console.print(f"[red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    if not run.summary["diagnostics"]["converged"]:
        console.print("[bold red]The run failed its diagnostics: these predictions are provisional.[/]")
    if len(table) == 0:
        console.print(f"No patient is in remission and followed at day {args.landmark_day:g}.")
        return 0
    _print_frame(console, f"Posterior probability of relapse, given follow-up to day {args.landmark_day:g} "
                          "(90% interval)", table, formats={c: "{:.2f}" for c in table.columns if c.startswith("p_")})
    low = table[table["ess_low"]]
    if len(low):
        console.print(f"[yellow]warning:[/] {len(low)} patient(s) with importance-sampling ESS < {ESS_FLAG:g}: "
                      "their probabilities are less precise")
    if args.out:
        table.to_csv(args.out, index=False)
        console.print(f"Predictions written to {args.out}")
    return 0


def cmd_compare(args) -> int:
    from toolkit.fitting import compare_runs
    from toolkit.inference import load_run

    console = _console()
    names = [Path(r).resolve().name for r in args.runs]
    if len(set(names)) < len(names):
        console.print("[red]error:[/] two runs have the same folder name; give each run folder a distinct name")
        return EXIT_INVALID
    try:
        runs = {name: load_run(r) for name, r in zip(names, args.runs)}
        table = compare_runs(runs)
    except (ValueError, FileNotFoundError, KeyError) as err:
        console.print(f"[red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    table["converged"] = table["converged"].map({True: "yes", False: "NO (provisional)"})
    failed = [name for name, run in runs.items() if not run.summary["diagnostics"]["converged"]]
    shown = table[["rank", "elpd", "se", "elpd_diff", "dse", "p", "weight", "max_pareto_k", "n_pareto_k_above_0.7",
                   "moment_matched", "moment_matching", "converged"]].copy()
    shown["moment_matching"] = shown["moment_matching"].map(lambda note: str(note).split(" (")[0])  # reason below
    _print_frame(console, "PSIS-LOO comparison (higher elpd is better; elpd_diff within ~2 dse is no clear difference)"
                 + (" - PROVISIONAL: not every run converged" if failed else ""),
                 shown.reset_index(names="run"), formats={c: "{:.2f}" for c in shown.columns})
    for name in failed:
        console.print(f"[bold red]NOT CONVERGED:[/] {escape(name)} failed its sampling diagnostics, so its LOO value "
                      "and this ranking are provisional; rerun it longer before choosing a model")
    for name, note in table["moment_matching"].items():
        if str(note).startswith("plain PSIS-LOO"):
            console.print(f"[yellow]warning:[/] {name}: {escape(str(note))}")
    bad = table[table["n_pareto_k_above_0.7"] > 0]
    for name, row in bad.iterrows():
        console.print(f"[yellow]warning:[/] {name}: {int(row['n_pareto_k_above_0.7'])} observation(s) with Pareto k > 0.7; "
                      "LOO is unreliable for them (influential patients)")
    return 0


def cmd_sensitivity(args) -> int:
    """Power-scaling prior sensitivity of one run (``toolkit.review``), with other prior sets' runs beside it."""
    from toolkit.inference import RunFolderError, load_run
    from toolkit.review import SensitivityUnavailable, prior_set_name, sensitivity_table, write_summary_table

    console = _console()
    out = _new_folder(args.out) if args.out else None
    try:
        run = load_run(args.run)
        alternatives = {}
        for other_dir in args.compare_with or []:
            other = load_run(other_dir)
            if other.summary.get("model") != run.summary.get("model"):
                raise UsageError(f"--compare-with {other_dir} is a {other.summary.get('model')} run and {args.run} "
                                 f"a {run.summary.get('model')} run; give runs of the same model fitted with "
                                 "another prior set (--prior)")
            alternatives[prior_set_name(other)] = other
        table = sensitivity_table(run, alternatives=alternatives)
    except SensitivityUnavailable as err:
        console.print(f"[red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    except (RunFolderError, FileNotFoundError) as err:
        console.print(f"[red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    shown = table.reset_index()
    _print_frame(console, f"Power-scaling prior sensitivity of {Path(args.run).name} (Kallioinen et al. 2024; "
                 "0.05 or more is sensitive)", shown, formats={c: "{:.3f}" for c in ("prior", "likelihood")})
    flagged = table[table["diagnosis"].isin(["prior-data conflict", "prior-dominated"])]
    if not run.summary.get("diagnostics", {}).get("converged", False):
        console.print("[bold red]NOT CONVERGED:[/] the run failed its sampling diagnostics; these sensitivities "
                      "are provisional")
    console.print(f"{len(flagged)} of {len(table)} quantities flagged (prior-data conflict or prior-dominated)")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "sensitivity.csv", float_format="%.6g")
        write_summary_table(run, out)
        console.print(f"Tables written to {out}")
    return 0


def cmd_report(args) -> int:
    from toolkit.report import write_report

    console = _console()
    try:
        out = write_report(args.runs, args.out, show_small_cells=args.show_small_cells, pdf=args.pdf,
                           template_dir=args.templates, calibration=args.calibration)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        console.print(f"[red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    console.print(f"Report written to {out}" + (f" and {out.with_suffix('.pdf')}" if args.pdf else ""))
    return 0


def cmd_run_notebooks(args) -> int:
    from rich.progress import Progress

    from toolkit.inference import RunFolderError, check_writable_destination
    from toolkit.notebooks import NOTEBOOK_DIR, NOTEBOOKS_EXTRA, list_notebooks, run_notebooks

    console = _console()
    folder = Path(args.notebooks) if args.notebooks else NOTEBOOK_DIR
    if args.notebooks and not folder.is_dir():
        raise UsageError(f"--notebooks {args.notebooks} is not a folder; give the folder holding the notebooks "
                         "(e.g. one written by `toolkit notebooks DIR`)")
    notebooks = list_notebooks(folder)
    if not notebooks:  # running nothing and exiting 0 would pass for success
        raise UsageError(f"no notebooks (NN_name.ipynb) found in {folder}; "
                         + ("give the folder written by `toolkit notebooks DIR`" if args.notebooks else
                            "the installation is incomplete: reinstall cart-toolkit"))
    try:
        import nbconvert  # noqa: F401
        import papermill  # noqa: F401
    except ImportError:
        raise UsageError(f"run-notebooks needs JupyterLab and papermill, which are not installed: "
                         f"{NOTEBOOKS_EXTRA}") from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        console.print(f"[red]error:[/] --out {escape(str(out))} exists and is a file; choose a folder for the "
                      "executed notebooks")
        return EXIT_INVALID
    try:
        check_writable_destination(out / "notebook.ipynb", what="executed notebooks in")
    except RunFolderError as err:
        console.print(f"[red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    if _load_or_report(args.data, console) is None:
        return EXIT_INVALID
    if os.environ.get("TOOLKIT_NOTEBOOK_FAST") == "1" and not args.fast:  # never a silent downgrade
        console.print("[bold yellow]warning:[/] TOOLKIT_NOTEBOOK_FAST=1 is set in the environment, so every notebook "
                      "runs in fast mode (few draws, not for decisions) although --fast was not given; unset it "
                      "for a real analysis")
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("notebooks", total=len(notebooks))

        def step(name):
            progress.update(task, description=f"running {name}")

        records = run_notebooks(args.data, args.out, fast=args.fast, seed=args.seed, notebooks=notebooks,
                                progress=step)
        progress.update(task, completed=len(notebooks), description="done")
    for r in records:
        mark = "[green]ok[/]" if r["ok"] else f"[red]FAILED[/] {escape(r['error'] or '')}"
        console.print(f"{r['notebook']}: {mark}  ->  {r['html']}")
    return 0 if all(r["ok"] for r in records) else 1


def cmd_notebooks(args) -> int:
    """Copy the analysis notebooks and the example cohort into a new folder, for JupyterLab."""
    from toolkit.notebooks import EXAMPLE_COPY, copy_notebooks

    folder = _new_folder(args.dir, option="notebooks")
    try:
        copies = copy_notebooks(folder)
    except resources.ResourceError as err:
        raise UsageError(str(err)) from None
    console = _console()
    console.print(f"Copied {len(copies)} notebooks to {escape(str(folder))}, with the synthetic example cohort in "
                  f"{escape(str(folder / EXAMPLE_COPY))}:")
    for copy in copies:
        console.print(f"  {escape(copy.name)}")
    console.print(f"Open them with `jupyter lab {escape(str(folder))}` (kernel: Python 3) and set `cohort_path` in "
                  "each first cell to your cohort folder; `toolkit run-notebooks --notebooks "
                  f"{escape(str(folder))} --data COHORT --out OUT` runs them all.")
    return 0


def cmd_calibrate(args) -> int:
    """Simulation-based calibration of a model at the trial's design (toolkit.calibration)."""
    from toolkit.calibration.api import calibrate
    from toolkit.calibration.runner import StudyError
    from toolkit.specs import SpecError

    console = _console()
    design = None
    if args.design:
        design = _load_or_report(args.design, console)
        if design is None:
            return EXIT_INVALID
    try:
        overview = calibrate(args.model, simulations=args.simulations, out=args.out, spec=args.spec, design=design,
                             variant=args.variant, workers=args.workers, scheduler=args.scheduler,
                             resume=args.resume, draws=args.draws, tune=args.tune, chains=args.chains,
                             seed=args.seed, extend_sampling=args.extend_sampling)
    except (SpecError, StudyError, ValueError) as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    verdict = ("[green]calibrated[/]" if overview["passed"] else "[bold red]NOT calibrated[/]" if overview["failing"]
               else "[yellow]inconclusive (failed simulations)[/]")
    console.print(f"{args.model}: {verdict}; {overview['succeeded']} simulations, {overview['failed']} failed, "
                  f"{overview['not_converged']} not converged; failing: {', '.join(overview['failing']) or 'none'}")
    if overview.get("extended"):
        console.print(f"{overview['extended']} fit(s) failed their first run and were extended "
                      f"(extend_sampling); {overview['not_converged']} still failed")
    if overview.get("unconverged_population_recorded"):
        console.print(f"of the unconverged fits that record it, {overview['unconverged_population_passed']} of "
                      f"{overview['unconverged_population_recorded']} had every population-level quantity passing "
                      "R-hat and ESS")
    console.print(f"summary: {Path(args.out) / 'calibration.html'}")
    return 0


def _sampler_overrides(args) -> dict:
    """The sampler settings given on the command line (``--draws``, ``--tune``, ``--chains``)."""
    return {k: v for k, v in (("draws", args.draws), ("tune", args.tune), ("chains", args.chains)) if v is not None}


def _design_or_none(path, console):
    """The design spec at ``path``, or None after printing what is wrong with it."""
    from toolkit.design.spec import DesignError, load_design

    try:
        return load_design(path)
    except DesignError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}")
        return None


def _scenario_study_setup(args, console, check=None):
    """The common start of a study over a design spec's scenarios (``design``, ``misspecify``): checked
    ``--trials``/``--workers``, the loaded design (``check(design)`` may refuse it before anything is written),
    the ``--out`` folder, the sampler overrides and a progress printer. Returns ``(design, out, overrides,
    progress)``, or None after printing why the design cannot be used."""
    if args.trials < 1:
        raise UsageError(f"--trials must be a positive number of trials per scenario, got {args.trials}")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be 0 (in this process) or more, got {args.workers}")
    design = _design_or_none(args.spec, console)
    if design is None:
        return None
    if check is not None:
        try:
            check(design)
        except ValueError as err:
            console.print(f"[bold red]error:[/] {escape(str(err))}")
            return None
    out = Path(args.out)
    if not args.resume:
        _new_folder(args.out)
    elif out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out} is an existing file; give the study's folder")
    done = [0]
    started = time.perf_counter()

    def progress(record):
        done[0] += 1
        rate = done[0] / max(time.perf_counter() - started, 1e-9) * 60
        console.print(f"  trial {record['scenario']}/{record['trial']}: {done[0]} done this run, "
                      f"{rate:.1f} trials/min", markup=False)

    return design, out, _sampler_overrides(args), progress


def cmd_design(args) -> int:
    """Operating characteristics of a design spec by simulated trials (toolkit.design)."""
    from toolkit.design.operating import DesignStudyError, load_results, operating_characteristics, run_design, \
        study_truth
    from toolkit.design.report import write_design_report

    from toolkit.design.spec import require_durability_analysis

    console = _console()
    setup = _scenario_study_setup(args, console, check=lambda d: require_durability_analysis(d, "toolkit design"))
    if setup is None:
        return EXIT_INVALID
    design, out, overrides, progress = setup
    total = args.trials * len(design.scenarios)
    console.print(f"{design.title}: {args.trials} trial(s) x {len(design.scenarios)} scenario(s) = {total}; "
                  f"rule {design.rule_text()}", markup=False)
    try:
        run_design(design, args.trials, out, workers=args.workers, scheduler=args.scheduler, resume=args.resume,
                   overrides=overrides, progress=progress)
    except (DesignStudyError, ValueError) as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    results = load_results(out)
    oc = operating_characteristics(design, results, study_truth(design, out))
    command = "toolkit design " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["design"] else ""
    paths = write_design_report(design, oc, out, command=command)
    from toolkit.design.report import oc_table, sentences

    _print_frame(console, "Operating characteristics (± Monte Carlo SE)", oc_table(design, oc))
    for line in sentences(design, oc):
        console.print(line, markup=False)
    console.print(f"table: {paths['csv']}, {paths['md']}; figure: {paths['figure']}; HTML: {paths['html']}",
                  markup=False)
    _warn_failed_analyses(console, results)
    return 0


def cmd_misspecify(args) -> int:
    """The primary analysis fitted to trials of the trial simulator over a design's scenarios
    (toolkit.calibration.misspec): bias, RMSE, coverage and P(decision) per estimand."""
    from toolkit.calibration.misspec import (check_design, load_misspecification, readable_table,
                                             run_misspecification, sentences, study_reference,
                                             summarize_misspecification, write_misspecification_report)

    console = _console()
    setup = _scenario_study_setup(args, console, check=check_design)  # refused before anything is written
    if setup is None:
        return EXIT_INVALID
    design, out, overrides, progress = setup
    console.print(f"{design.title}: {args.trials} trial(s) x {len(design.scenarios)} scenario(s), each analysed "
                  "at its final analysis" + (" (the spec's interim looks are not analysed)" if design.looks else ""),
                  markup=False)
    try:
        run_misspecification(design, args.trials, out, workers=args.workers, scheduler=args.scheduler,
                             resume=args.resume, overrides=overrides, progress=progress)
    except ValueError as err:  # MisspecificationError among them (a study folder that cannot be resumed)
        console.print(f"[bold red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    results = load_misspecification(out)
    reference = study_reference(design, out, overrides=overrides)
    summary = summarize_misspecification(design, results, reference)
    command = "toolkit misspecify " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["misspecify"] else ""
    paths = write_misspecification_report(design, summary, out, command=command)
    table = readable_table(design, summary)
    if len(table):  # the full table is in the .md file
        _print_frame(console, "Misspecification study (± Monte Carlo SE)",
                     table[[c for c in table.columns if c in ("scenario", "estimand", "truth", "bias", "90% coverage",
                                                              "P(rule met)")]])
    for line in sentences(design, summary):
        console.print(line, markup=False)
    console.print(f"table: {paths['csv']}, {paths['md']}; figure: {paths['png']}", markup=False)
    _warn_failed_analyses(console, results.drop_duplicates(["scenario", "trial"]) if len(results) else results)
    return 0


def _warn_failed_analyses(console, results) -> None:
    """Say loudly when analyses of a design study failed (each is recorded, and the study goes on), with the
    most frequent error, so a study whose fits all failed is not read as a table of zeros."""
    from toolkit.design.operating import NOT_REACHED

    if results.empty or "error" not in results:
        return
    errors = results["error"].fillna("")
    failed = errors[(errors != "") & (errors != NOT_REACHED)]
    if len(failed):
        common = failed.value_counts()
        console.print(f"[bold red]{len(failed)} of {len(results)} analyses failed[/] (recorded, counted in the table "
                      f"as fits failed); most frequent error ({int(common.iloc[0])}x): {escape(common.index[0])}")


def cmd_interim(args) -> int:
    """Predictive probability of success of a trial in progress (toolkit.design.interim)."""
    from toolkit.data.inputs import ModelDataError
    from toolkit.design.interim import InterimError, predictive_probability_of_success

    console = _console()
    if args.imputations < 10:
        raise UsageError(f"--imputations must be at least 10, got {args.imputations}")
    design = _design_or_none(args.design, console)
    if design is None:
        return EXIT_INVALID
    from toolkit.design.spec import require_durability_analysis

    try:
        require_durability_analysis(design, "toolkit interim")
    except ValueError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    out = _new_folder(args.out)
    cohort = _load_or_report(args.cohort, console)
    if cohort is None:
        return EXIT_INVALID
    overrides = _sampler_overrides(args)
    try:
        result = predictive_probability_of_success(cohort, design, imputations=args.imputations, seed=args.seed,
                                                   overrides=overrides)
    except (InterimError, ModelDataError) as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    from toolkit.design.interim import write_interim_report

    paths = write_interim_report(result, out)
    for line in result["sentences"]:
        console.print(line, markup=False)
    console.print(f"summary: {paths['json']}; HTML: {paths['html']}", markup=False)

def cmd_design_binary(args) -> int:
    """Predictive probability of success for a binary response (Lee & Liu 2008); two arms by Monte Carlo."""
    from toolkit.design.binary import (BinaryDesignError, decision_boundaries, operating_characteristics,
                                       predictive_probability, two_arm_predictive_probability)

    console = _console()
    two_arm = args.control_responses is not None or args.control_patients is not None
    if two_arm and (args.control_responses is None or args.control_patients is None):
        raise UsageError("a two-arm trial needs both --control-responses and --control-patients")
    if args.looks_from is not None and not 1 <= args.looks_from <= args.max_patients:
        raise UsageError(f"--looks-from must be a number of patients from 1 to --max-patients "
                         f"({args.max_patients}), got {args.looks_from}")
    prior = (args.prior_a, args.prior_b)
    try:
        if two_arm:
            result = two_arm_predictive_probability(
                args.responses, args.patients, args.control_responses, args.control_patients, args.max_patients,
                prior_e=prior, prior_c=prior, threshold=args.threshold, margin=args.margin, draws=args.draws,
                random_seed=args.seed)
            console.print(f"Two-arm randomized trial, {result['remaining']} patients still to be randomized 1:1; "
                          f"success at the end if P(p_E - p_C > {args.margin:g}) > {args.threshold:g}.")
            console.print(f"Predictive probability of success: [bold]{result['pp']:.3f}[/] (Monte Carlo SE "
                          f"{result['mc_se']:.3f}, {result['draws']} draws)")
            return 0
        pp = predictive_probability(args.responses, args.patients, args.max_patients, prior=prior, p0=args.p0,
                                    threshold=args.threshold)
        looks = range(args.looks_from or max(1, args.patients), args.max_patients + 1)
        bounds = decision_boundaries(args.max_patients, prior=prior, p0=args.p0, threshold=args.threshold,
                                     futility=args.futility, efficacy=args.efficacy, looks=looks)
        ocs = [operating_characteristics(args.max_patients, rate, prior=prior, p0=args.p0, threshold=args.threshold,
                                         futility=args.futility, efficacy=args.efficacy, looks=looks)
               for rate in [args.p0] + ([args.p1] if args.p1 is not None else [])]
    except BinaryDesignError as err:
        raise UsageError(str(err)) from err
    decision = ("stop for futility" if pp < args.futility else "stop for efficacy" if pp > args.efficacy
                else "continue")
    console.print(f"{args.responses} responses in {args.patients} patients (maximum {args.max_patients}), prior "
                  f"Beta({args.prior_a:g}, {args.prior_b:g}); success at the end if P(p > {args.p0:g}) > "
                  f"{args.threshold:g}.")
    console.print(f"Predictive probability of success: [bold]{pp:.4f}[/] -> {decision} (futility if PP < "
                  f"{args.futility:g}, efficacy if PP > {args.efficacy:g}).")
    _print_frame(console, "Stopping boundaries: stop for futility if responses <= r, for efficacy if >= s",
                 bounds.assign(**{
                     "r (futility)": [str(r) if r >= 0 else "none" for r in bounds["futility_max_responses"]],
                     "s (efficacy)": [str(e) if e <= n else "none"
                                      for e, n in zip(bounds["efficacy_min_responses"], bounds["patients"])]})
                 [["patients", "r (futility)", "s (efficacy)"]])
    for oc in ocs:
        what = "type I error" if oc["response_rate"] == args.p0 else "power"
        console.print(f"True response rate {oc['response_rate']:g}: P(declare efficacy) = {oc['prob_efficacy']:.4f} "
                      f"({what}), P(stop for futility) = {oc['prob_stop_futility']:.4f}, expected patients "
                      f"{oc['expected_patients']:.1f} (exact, looks from {looks.start} patients on)")
    return 0


def cmd_schedules(args) -> int:
    """Compare sampling schedules by simulation: contraction and coverage per estimand (toolkit.design.schedules)."""
    from toolkit.calibration.runner import StudyError
    from toolkit.design.schedules import ScheduleSpecError, load_schedule_spec, run_schedules, write_outputs

    console = _console()
    if args.cohorts < 1:
        raise UsageError(f"--cohorts must be at least 1, got {args.cohorts}")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be 0 (in this process) or more, got {args.workers}")
    try:
        study = load_schedule_spec(args.spec).subset(schedules=_csv_list(args.schedules),
                                                     models=_csv_list(args.models))
        if not args.resume:
            _new_folder(args.out)

        def progress(rows):
            row = rows[0]
            console.print(f"  {row['schedule']} cohort {row['cohort']}: "
                          + ("ok" if all(r["status"] == "ok" for r in rows) else "[red]failed[/] (recorded)"))

        table = run_schedules(study, args.cohorts, args.out, workers=args.workers, scheduler=args.scheduler,
                              resume=args.resume, progress=progress)
    except (ScheduleSpecError, StudyError) as err:
        console.print(f"[red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    paths = write_outputs(table, study, args.out)
    console.print(paths["summary"].read_text().split("## Table")[0], markup=False)
    console.print(f"Table: {paths['csv']} and {paths['markdown']}; figure: {paths['figure']}; "
                  f"summary: {paths['html']}")
    return 0


def cmd_import(args) -> int:
    """Write a cohort folder from NONMEM-style, ADaM or one-workbook data (logic in toolkit.importers)."""
    from toolkit.importers.cli import run_import
    from toolkit.importers.common import ImportDataError

    console = _console()
    try:
        result = run_import(args)
    except ImportDataError as err:  # problems name file, row and column, never a cell's content
        console.print(f"[bold red]{len(err.problems)} problem(s)[/]; nothing was written:")
        for problem in err.problems:
            console.print(f"  - {problem}", markup=False)
        return EXIT_INVALID
    written = ", ".join(f"{k} ({v} rows)" for k, v in result.report.written.items())
    left = sum(len(e["rows"]) for e in result.report.left_out)
    console.print(f"Wrote cohort {result.folder}: {written}; it validates.", markup=False)
    console.print(f"Mapping report: {result.folder / 'import_report.md'} ({left} source row(s) left out, "
                  "each with its reason).", markup=False)
    for note in result.report.not_derived:
        console.print(f"[yellow]not derived:[/] {escape(note)}")
    if result.key_file is not None:
        console.print(f"[bold]Key from source IDs to patient codes: {escape(str(result.key_file))}: keep it "
                      "private, apart from the cohort.[/]")
    return 0


class _HelpFormatter(argparse.HelpFormatter):
    """``--help`` shows each option's default (options whose default is "not given" show none)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" not in text and action.option_strings and action.default not in (None, False)
                and action.default is not argparse.SUPPRESS):  # a help text that names its default keeps it
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def format_help(self):
        # an option without help text still shows its default
        for action in self._actions:
            if action.help is None and action.option_strings and action.default not in (None, False):
                action.help = "default: %(default)s"
        return super().format_help()


def _add_study_options(p) -> None:
    """Where a many-fit study (calibrate, design, schedules) runs, and ``--resume``."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--workers", type=int, help="local Dask worker processes (default: one per core; 0: in-process)")
    group.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--resume", action="store_true", help="continue the study stored in --out")


def _add_sampler_overrides(p, over: str) -> None:
    """``--draws``, ``--tune``, ``--chains`` over the sampler settings of ``over`` (see ``_sampler_overrides``)."""
    p.add_argument("--draws", type=int, help=f"sampler draws per chain of each fit (overrides {over})")
    p.add_argument("--tune", type=int, help=f"tuning steps per chain (overrides {over})")
    p.add_argument("--chains", type=int, help=f"chains per fit (overrides {over})")


def _add_scenario_study_arguments(p, over: str) -> None:
    """``--trials``, ``--out``, where the study runs and the sampler overrides of a study over a design spec's
    scenarios (``design``, ``misspecify``)."""
    p.add_argument("--trials", type=int, required=True, help="simulated trials per scenario")
    p.add_argument("--out", required=True, help="results folder (resumable with --resume)")
    _add_study_options(p)
    _add_sampler_overrides(p, over)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="toolkit", description="Bayesian modeling of patient response to CAR-T.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("validate", help="check a cohort folder; exit 0 if clean, 2 listing every problem")
    p.add_argument("dir")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("simulate", help="write a synthetic trial with known truth")
    p.add_argument("--out", required=True)
    p.add_argument("--patients", type=int, default=60)
    p.add_argument("--seed", type=_seed, default=DEFAULT_SEED)
    p.add_argument("--effect", action="append", metavar="NAME=VALUE",
                   help="IFN-alpha effect, e.g. cmax_gmr=1.5 (repeatable)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("describe", help="cohort summary tables")
    p.add_argument("dir")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("templates", help="write empty templates and the data dictionary")
    p.add_argument("--out", default="data_templates")
    p.set_defaults(func=cmd_templates)

    p = sub.add_parser("fit", help="fit a model to a cohort and write a run folder")
    p.add_argument("model", choices=["cart", "mrd", "durability", "joint"])
    p.add_argument("--data", required=True, help="cohort folder")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--spec", help="analysis spec file (models/*.toml); command-line options override it "
                                   "(default: the model's primary analysis, models/MODEL_primary.toml)")
    p.add_argument("--no-spec", action="store_true",
                   help="fit with the model's built-in defaults only, not its primary analysis spec")
    p.add_argument("--no-figures", action="store_true", help="skip writing RUN/figures/*.png")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run at --out (kept until the new run is complete)")
    g = p.add_argument_group("sampler (default: the spec's [sampler], else 4 chains x 1000 tuning + 1000 draws, "
                             "nutpie, target_accept 0.9 (0.95 for cart and joint), seed 20261125)")
    g.add_argument("--seed", type=_seed)
    g.add_argument("--draws", type=int)
    g.add_argument("--tune", type=int)
    g.add_argument("--chains", type=int)
    g.add_argument("--backend", choices=["nutpie", "pymc", "numpyro"])
    g.add_argument("--target-accept", type=float)
    g = p.add_argument_group("durability (default of each option: the spec's value)")
    g.add_argument("--variant", choices=["weibull", "cure"])
    g.add_argument("--covariates", help="comma-separated numeric columns of patients.csv")
    g.add_argument("--hsct", choices=["censor", "timevarying"])
    g.add_argument("--endpoint", choices=["rfs", "relapse", "efs"])
    g.add_argument("--days", help="RFS horizons in days, e.g. 180,365")
    g.add_argument("--prior", choices=["default", "skeptical", "optimistic"])
    g.add_argument("--prob-hr-below", help="thresholds for P(HR < x), e.g. 1,0.7")
    g.add_argument("--prob-rfs-difference-above", help="thresholds for P(RFS difference > x), e.g. 0,0.1")
    g = p.add_argument_group("cart")
    g.add_argument("--effects-on", help="kinetic parameters with an arm effect, e.g. cmax,persistence "
                                        "(default: cmax,tmax,foldx,alpha,fb,persistence)")
    g = p.add_argument_group("joint")
    g.add_argument("--kinetics", choices=["joint", "two-stage"],
                   help="one posterior (default) or the two-stage plug-in alternative")
    g.add_argument("--associations", help="kinetic terms in the relapse hazard, e.g. log_cmax,cart_loss "
                                          "(default); add mrd_clearance for the MRD submodel (the MRD kill "
                                          "rate as a mediator), mrd for the MRD marker (prediction)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("predict", help="relapse risk after a landmark day from a joint-model run")
    p.add_argument("run", help="joint-model run folder")
    p.add_argument("--patient-data", required=True, help="cohort folder with the patients to predict for")
    p.add_argument("--landmark-day", type=float, default=90.0, help="days since infusion (default 90)")
    p.add_argument("--horizons", default="365", help="days since infusion, e.g. 365,730 (default 365)")
    p.add_argument("--out", help="CSV file for the predictions (default: print only)")
    p.add_argument("--seed", type=_seed, default=DEFAULT_SEED)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("compare", help="PSIS-LOO comparison of runs fitted to the same data")
    p.add_argument("runs", nargs="+")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("sensitivity", help="power-scaling prior sensitivity of a run's estimands and hyperparameters")
    p.add_argument("run")
    p.add_argument("--compare-with", nargs="+", metavar="RUN",
                   help="runs of the same model fitted with other prior sets (--prior): their estimands beside")
    p.add_argument("--out", help="new folder for sensitivity.csv and parameter_summary.csv")
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("report", help="self-contained HTML report of one or more runs")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--pdf", action="store_true", help="also print it to PDF with headless Chromium")
    p.add_argument("--show-small-cells", action="store_true", help="show counts below 5 in summary tables")
    p.add_argument("--templates", metavar="DIR", help="folder with reworded copies of report templates "
                   "(toolkit/templates/report/*.html.j2); each file found there replaces the original")
    p.add_argument("--calibration", action="append", metavar="STUDY",
                   help="add the summary of a `toolkit calibrate` study folder (repeatable)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("run-notebooks", help="execute every analysis notebook on a cohort (executed .ipynb + HTML)")
    p.add_argument("--data", required=True, help="cohort folder")
    p.add_argument("--out", required=True, help="folder for the executed notebooks and their HTML")
    p.add_argument("--fast", action="store_true", help="fewer draws (for a quick look, not for decisions)")
    p.add_argument("--seed", type=_seed, default=DEFAULT_SEED)
    p.add_argument("--notebooks", metavar="DIR",
                   help="run the notebooks in DIR (e.g. copies from `toolkit notebooks`) instead of the shipped ones")
    p.set_defaults(func=cmd_run_notebooks)

    p = sub.add_parser("notebooks", help="copy the analysis notebooks and the example cohort into a new folder")
    p.add_argument("dir", help="new (or empty) folder for the notebooks")
    p.set_defaults(func=cmd_notebooks)

    p = sub.add_parser("calibrate", help="simulation-based calibration of a model at the trial's design (Dask)")
    p.add_argument("model", help="durability, cart, joint or mrd")
    p.add_argument("--spec", help="analysis spec (models/*.toml): priors, options, sampler settings")
    p.add_argument("--simulations", type=int, required=True, help="number of simulations the study should hold")
    p.add_argument("--out", required=True, help="results folder (resumable with --resume)")
    p.add_argument("--design", help="cohort folder whose design is used (default: the default simulated trial)")
    p.add_argument("--variant", choices=["weibull", "cure"], help="durability or joint variant (overrides the spec)")
    _add_study_options(p)
    p.add_argument("--draws", type=int)
    p.add_argument("--tune", type=int)
    p.add_argument("--chains", type=int)
    p.add_argument("--seed", type=int, help="study seed: prior draws, cohorts and samplers (default: the spec's)")
    p.add_argument("--extend-sampling", type=int, metavar="N",
                   help="extensions while a fit fails its diagnostics, as `toolkit fit` does (its chains continued "
                        "to twice the draws after R-hat or ESS failed, a new run at a higher target_accept after "
                        "divergences; default: the spec's extend_sampling, else 0)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("analyze", help="the whole analysis plan on a cohort: validate, fit every spec, compare, "
                                       "report, estimands table, manifest; resumable")
    p.add_argument("data", help="cohort folder")
    p.add_argument("--out", required=True, help="output folder (new, or an earlier analyze output to resume)")
    p.add_argument("--sap", help="folder of analysis specs (default: the toolkit's models/); TOML files without "
                                 "a `model` key (e.g. design specs) are skipped")
    p.add_argument("--fast", action="store_true", help="short sampler settings (a smoke run, labelled so; "
                                                       "not for decisions)")
    p.add_argument("--overwrite", action="store_true", help="refit every analysis, even those up to date")
    p.add_argument("--seed", type=_seed, help="sampler seed of every analysis (default: each spec's, else 20261125); "
                                             "recorded in each run's provenance; a new seed refits every analysis")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("design", help="operating characteristics of a trial design by simulated trials (Dask)")
    p.add_argument("spec", help="design spec, e.g. models/design_primary.toml")
    _add_scenario_study_arguments(p, "the design spec")
    p.set_defaults(func=cmd_design)

    p = sub.add_parser("misspecify", help="the primary analysis on trials of the trial simulator over a grid of "
                                          "effects: bias, RMSE, coverage, P(decision) per estimand (Dask)")
    p.add_argument("spec", help="design spec whose scenarios are the grid, e.g. models/design_misspecification.toml")
    _add_scenario_study_arguments(p, "the analysis spec")
    p.set_defaults(func=cmd_misspecify)

    p = sub.add_parser("interim", help="predictive probability of success of a trial in progress")
    p.add_argument("cohort", help="cohort folder at the data cut (last_followup_day = days on study at the cut)")
    p.add_argument("--design", required=True, help="design spec, e.g. models/design_primary.toml")
    p.add_argument("--out", required=True, help="new folder for interim.json and interim.html")
    p.add_argument("--imputations", type=int, default=1000, help="imputed completed trials (default 1000)")
    p.add_argument("--seed", type=_seed, default=DEFAULT_SEED)
    _add_sampler_overrides(p, "the analysis spec")
    p.set_defaults(func=cmd_interim)

    p = sub.add_parser("demo", help="simulate the default trial and run the analyses")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--fast", action="store_true", help="few draws (a smoke run; results not for decisions)")
    p.add_argument("--overwrite", action="store_true", help="replace the output of an earlier demo at --out")
    p.add_argument("--seed", type=_seed, default=DEFAULT_SEED)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("design-binary", help="predictive probability of success for a binary response "
                                             "(Lee & Liu 2008), boundaries and exact type I error / power")
    p.add_argument("--responses", type=int, required=True, help="responses so far (experimental arm if two arms)")
    p.add_argument("--patients", type=int, required=True, help="patients evaluated so far (experimental arm)")
    p.add_argument("--max-patients", type=int, required=True, help="maximum sample size (both arms together)")
    p.add_argument("--prior-a", type=float, default=0.6, help="Beta prior a (default 0.6)")
    p.add_argument("--prior-b", type=float, default=0.4, help="Beta prior b (default 0.4)")
    p.add_argument("--p0", type=float, default=0.6, help="response rate to beat (single arm; default 0.6)")
    p.add_argument("--p1", type=float, help="response rate hoped for: also report the power at it")
    p.add_argument("--threshold", type=float, default=0.9, help="theta_T: success if P(p > p0) > it (default 0.9)")
    p.add_argument("--futility", type=float, default=0.05, help="theta_L: stop if PP < it (default 0.05)")
    p.add_argument("--efficacy", type=float, default=1.0, help="theta_U: stop if PP > it (default 1: never)")
    p.add_argument("--looks-from", type=int, help="first interim look, in patients (default: --patients)")
    g = p.add_argument_group("two arms (randomized; Monte Carlo)")
    g.add_argument("--control-responses", type=int)
    g.add_argument("--control-patients", type=int)
    g.add_argument("--margin", type=float, default=0.0, help="success if P(p_E - p_C > margin) > threshold")
    g.add_argument("--draws", type=int, default=20_000)
    g.add_argument("--seed", type=_seed, default=DEFAULT_SEED)
    p.set_defaults(func=cmd_design_binary)

    p = sub.add_parser("schedules", help="compare sampling schedules by simulation: which identifies which "
                                         "estimand (posterior contraction, coverage)")
    p.add_argument("spec", help="schedule spec, e.g. models/design_schedules.toml")
    p.add_argument("--cohorts", type=int, required=True, help="simulated cohorts per schedule")
    p.add_argument("--out", required=True, help="results folder (resumable with --resume)")
    _add_study_options(p)
    p.add_argument("--schedules", help="only these schedules of the spec, e.g. current,early_mrd")
    p.add_argument("--models", help="only these analyses of the spec, e.g. mrd,joint")
    p.set_defaults(func=cmd_schedules)

    from toolkit.importers.cli import add_import_parser

    add_import_parser(sub, cmd_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0 done, 2 a user error, 1 a bug in the toolkit).

    Every user error is caught where it arises and named with its fix (exit
    2). The last guard only turns an unexpected exception, a bug, into a
    short request to report it instead of a traceback (``TOOLKIT_DEBUG=1``
    prints the traceback).
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed the usage and the error (exit 2), or --help (0)
        return exit_.code if isinstance(exit_.code, int) else EXIT_INVALID
    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        _console().print(f"[red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the guard: a bug is reported, never shown as a traceback
        if os.environ.get("TOOLKIT_DEBUG"):
            traceback.print_exc()
        # Only the exception's type: its text could quote the user's data.
        print(f"internal error ({type(exc).__name__}) in 'toolkit {args.command}': this is a bug in the toolkit, "
              "not a problem with your data. Please report it with the command you ran; set TOOLKIT_DEBUG=1 to "
              "see the details.", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
