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

from toolkit.data import CohortValidationError, load_cohort

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
SPEC_DIR = Path(__file__).resolve().parent.parent / "models"
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
DEMO_FAST_SAMPLER = ["--chains", "2", "--tune", "150", "--draws", "150"]


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
                     "--spec", str(SPEC_DIR / spec), "--seed", str(args.seed)] + (DEMO_FAST_SAMPLER if args.fast else [])
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


def fit_command(args, console: Console) -> int:
    import dataclasses

    from toolkit.data.inputs import ModelDataError
    from toolkit.fitting import default_settings
    from toolkit.inference import RunFolderError
    from toolkit.specs import SpecError, load_spec, merged_options, merged_sampler

    plan = _fit_plan(args.model, args)
    if plan is None:
        console.print(f"[red]error:[/] model {args.model!r} is not available yet; available: durability, cart, mrd, joint")
        return EXIT_INVALID
    options_class, fit, overrides, write_figures = plan
    try:
        spec = load_spec(args.spec, model=args.model) if args.spec else None
        chosen = merged_options(spec, overrides)
        valid = [f.name for f in dataclasses.fields(options_class)]
        unknown = sorted(set(chosen) - set(valid))
        if unknown:
            raise SpecError(f"{args.spec or 'command line'}: option(s) {', '.join(unknown)} are not options of "
                            f"model {args.model}; valid: {', '.join(valid)}")
        try:
            options = options_class(**chosen)
        except ValueError as err:  # e.g. an unknown prior name: say which file it came from
            raise SpecError(f"{args.spec or 'command line'}: {err}") from err
        if hasattr(options, "prior_set"):  # an unknown prior name is named before any work starts
            try:
                options.prior_set()
            except ValueError as err:
                raise SpecError(f"{args.spec or 'command line'}: [priors] {err}") from err
        sampler = merged_sampler(spec, {"chains": args.chains, "tune": args.tune, "draws": args.draws,
                                        "seed": args.seed, "backend": args.backend,
                                        "target_accept": args.target_accept})
        settings = default_settings(args.model, **sampler)
    except (SpecError, ValueError, TypeError) as err:
        console.print(f"[red]error:[/] {escape(str(err))}")
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
                   "converged"]]
    _print_frame(console, "PSIS-LOO comparison (higher elpd is better; elpd_diff within ~2 dse is no clear difference)"
                 + (" - PROVISIONAL: not every run converged" if failed else ""),
                 shown.reset_index(names="run"), formats={c: "{:.2f}" for c in shown.columns})
    for name in failed:
        console.print(f"[bold red]NOT CONVERGED:[/] {escape(name)} failed its sampling diagnostics, so its LOO value "
                      "and this ranking are provisional; rerun it longer before choosing a model")
    bad = table[table["n_pareto_k_above_0.7"] > 0]
    for name, row in bad.iterrows():
        console.print(f"[yellow]warning:[/] {name}: {int(row['n_pareto_k_above_0.7'])} observation(s) with Pareto k > 0.7; "
                      "LOO is unreliable for them (influential patients)")
    return 0


def cmd_report(args) -> int:
    from toolkit.report import write_report

    console = _console()
    try:
        out = write_report(args.runs, args.out, show_small_cells=args.show_small_cells, pdf=args.pdf,
                           calibration=args.calibration)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        console.print(f"[red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    console.print(f"Report written to {out}" + (f" and {out.with_suffix('.pdf')}" if args.pdf else ""))
    return 0


def cmd_run_notebooks(args) -> int:
    from rich.progress import Progress

    from toolkit.inference import RunFolderError, check_writable_destination
    from toolkit.notebooks import list_notebooks, run_notebooks

    console = _console()
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
    notebooks = list_notebooks()
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("notebooks", total=len(notebooks))

        def step(name):
            progress.update(task, description=f"running {name}")

        records = run_notebooks(args.data, args.out, fast=args.fast, seed=args.seed, progress=step)
        progress.update(task, completed=len(notebooks), description="done")
    for r in records:
        mark = "[green]ok[/]" if r["ok"] else f"[red]FAILED[/] {escape(r['error'] or '')}"
        console.print(f"{r['notebook']}: {mark}  ->  {r['html']}")
    return 0 if all(r["ok"] for r in records) else 1


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
                             seed=args.seed)
    except (SpecError, StudyError, ValueError) as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}")
        return EXIT_INVALID
    verdict = ("[green]calibrated[/]" if overview["passed"] else "[bold red]NOT calibrated[/]" if overview["failing"]
               else "[yellow]inconclusive (failed simulations)[/]")
    console.print(f"{args.model}: {verdict}; {overview['succeeded']} simulations, {overview['failed']} failed, "
                  f"{overview['not_converged']} not converged; failing: {', '.join(overview['failing']) or 'none'}")
    console.print(f"summary: {Path(args.out) / 'calibration.html'}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toolkit", description="Bayesian modeling of patient response to CAR-T.")
    sub = parser.add_subparsers(dest="command", required=True)

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
    p.add_argument("--spec", help="analysis spec file (models/*.toml); command-line options override it")
    p.add_argument("--no-figures", action="store_true", help="skip writing RUN/figures/*.png")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run at --out (kept until the new run is complete)")
    g = p.add_argument_group("sampler")
    g.add_argument("--seed", type=_seed)
    g.add_argument("--draws", type=int)
    g.add_argument("--tune", type=int)
    g.add_argument("--chains", type=int)
    g.add_argument("--backend", choices=["nutpie", "pymc", "numpyro"])
    g.add_argument("--target-accept", type=float)
    g = p.add_argument_group("durability")
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

    p = sub.add_parser("report", help="self-contained HTML report of one or more runs")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--pdf", action="store_true", help="also print it to PDF with headless Chromium")
    p.add_argument("--show-small-cells", action="store_true", help="show counts below 5 in summary tables")
    p.add_argument("--calibration", action="append", metavar="STUDY",
                   help="add the summary of a `toolkit calibrate` study folder (repeatable)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("run-notebooks", help="execute every analysis notebook on a cohort (executed .ipynb + HTML)")
    p.add_argument("--data", required=True, help="cohort folder")
    p.add_argument("--out", required=True, help="folder for the executed notebooks and their HTML")
    p.add_argument("--fast", action="store_true", help="fewer draws (for a quick look, not for decisions)")
    p.add_argument("--seed", type=_seed, default=DEFAULT_SEED)
    p.set_defaults(func=cmd_run_notebooks)

    p = sub.add_parser("calibrate", help="simulation-based calibration of a model at the trial's design (Dask)")
    p.add_argument("model", help="durability, cart or joint (mrd: not yet)")
    p.add_argument("--spec", help="analysis spec (models/*.toml): priors, options, sampler settings")
    p.add_argument("--simulations", type=int, required=True, help="number of simulations the study should hold")
    p.add_argument("--out", required=True, help="results folder (resumable with --resume)")
    p.add_argument("--design", help="cohort folder whose design is used (default: the default simulated trial)")
    p.add_argument("--variant", choices=["weibull", "cure"], help="durability or joint variant (overrides the spec)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--workers", type=int, help="local worker processes (default: one per core; 0: in-process)")
    group.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--resume", action="store_true", help="continue the study stored in --out")
    p.add_argument("--draws", type=int)
    p.add_argument("--tune", type=int)
    p.add_argument("--chains", type=int)
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("demo", help="simulate the default trial and run the analyses")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--fast", action="store_true", help="few draws (a smoke run; results not for decisions)")
    p.add_argument("--overwrite", action="store_true", help="replace the output of an earlier demo at --out")
    p.add_argument("--seed", type=_seed, default=DEFAULT_SEED)
    p.set_defaults(func=cmd_demo)

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
