"""The whole analysis plan on one cohort: ``toolkit analyze DATA --out DIR``.

Steps: validate the cohort (stop before any fit if it is invalid); fit every
analysis spec of the plan folder (default ``models/``) into ``DIR/runs/<spec
stem>``; compare the durability models by PSIS-LOO; write one investigator
report ``DIR/report.html``; the estimands of every run as one tidy table
(``estimands.csv``, ``estimands.xlsx``); and ``manifest.json``.

Which files are analyses: every ``*.toml`` directly in the plan folder whose
top level has a ``model`` key (an analysis spec, :mod:`toolkit.specs`). Other
TOML files there (a trial-design spec such as ``design_*.toml``, which has
no ``model`` key) are listed as skipped, never fitted.

Resuming: an analysis is refitted only if its run is missing or unreadable,
or its provenance differs from now in the cohort's data hash, the spec
file's SHA-256, the toolkit version or the fast mode. A call that would
change nothing writes nothing and says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from toolkit.specs import SpecError, analysis_plan_dir, load_spec

MANIFEST_FORMAT = "toolkit-analyze-manifest/1"
MANIFEST = "manifest.json"
OUTPUTS = ("runs", "report.html", "estimands.csv", "estimands.xlsx", MANIFEST)
MODELS = ("durability", "cart", "mrd", "joint")
FAST_ENV = "TOOLKIT_NOTEBOOK_FAST"
ESTIMAND_TABLE_COLUMNS = ["analysis", "model", "estimand", "median", "mean", "sd", "lo", "hi", "level",
                          "probability", "converged", "fast"]


class AnalyzeError(ValueError):
    """A problem with the plan folder, the output folder or an analysis: exit 2 with this message."""


@dataclass
class PlanEntry:
    """One analysis spec of the plan: its name (file stem), file, model, parsed spec and SHA-256."""

    name: str
    path: Path
    model: str
    spec: dict
    sha256: str


@dataclass
class Plan:
    folder: Path
    analyses: list[PlanEntry]
    skipped: dict[str, str] = field(default_factory=dict)  # file name -> why it is not an analysis


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_plan(folder: str | Path | None = None) -> Plan:
    """The analysis specs of a plan folder (default: the toolkit's ``models/``), checked before any fit.

    Raises :class:`AnalyzeError` for a missing folder, a folder without any analysis spec, or a spec
    that cannot be used (the message names the file and the key, :func:`toolkit.specs.load_spec`).
    """
    folder = Path(folder) if folder is not None else analysis_plan_dir()
    if not folder.is_dir():
        raise AnalyzeError(f"--sap {folder}: not a folder; give the folder of analysis specs (e.g. models/)")
    analyses, skipped, problems = [], {}, []
    for path in sorted(folder.glob("*.toml")):
        try:
            top = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"{path}: not valid UTF-8 TOML ({exc})")
            continue
        if "model" not in top:
            skipped[path.name] = "not an analysis spec (no top-level `model` key; e.g. a design spec)"
            continue
        try:
            spec = load_spec(path)
            if spec["model"] not in MODELS:
                raise SpecError(f"{path}: model {spec['model']!r} is unknown; models: {', '.join(MODELS)}")
            from toolkit.fitting import resolve_options

            resolve_options(spec["model"], spec)  # an unusable option or prior is named now, not mid-plan
            _sampler_settings(spec, fast=False)
        except (SpecError, ValueError, TypeError) as exc:
            problems.append(str(exc))
            continue
        analyses.append(PlanEntry(path.stem, path, spec["model"], spec, sha256_file(path)))
    if problems:
        raise AnalyzeError("the analysis plan cannot be used; nothing was fitted:\n" +
                           "\n".join(f"  - {p}" for p in problems))
    if not analyses:
        raise AnalyzeError(f"--sap {folder}: holds no analysis spec (a *.toml file with a `model = ...` line); "
                           "give the folder of analysis specs (e.g. models/)")
    return Plan(folder=folder, analyses=analyses, skipped=skipped)


def _sampler_settings(spec: dict, *, fast: bool, overrides: dict | None = None):
    from toolkit.fitting import FAST_SAMPLER, default_settings
    from toolkit.specs import merged_sampler

    chosen = dict(FAST_SAMPLER) if fast else {}
    chosen.update(overrides or {})
    return default_settings(spec["model"], **merged_sampler(spec, chosen))


def toolkit_version() -> str:
    """The toolkit version as every run's provenance records it (``versions.toolkit``)."""
    from toolkit.inference import package_versions

    return str(package_versions()["toolkit"])


def environment_flags() -> dict:
    """Environment variables that change what a fit does, as set now (recorded and printed, never silent)."""
    return {FAST_ENV: os.environ[FAST_ENV]} if FAST_ENV in os.environ else {}


def check_out(out: Path, data: Path) -> None:
    """Refuse an ``--out`` that is a file, inside the cohort, or a non-empty folder not written by analyze."""
    out_abs, data_abs = out.resolve(), data.resolve()
    if out_abs == data_abs or data_abs in out_abs.parents:
        raise AnalyzeError(f"--out {out} is inside the cohort folder {data}; write the analysis outside the data")
    if out.exists() and not out.is_dir():
        raise AnalyzeError(f"--out {out} is an existing file; give the name of a new folder")
    if out.is_dir() and any(out.iterdir()):
        names = {p.name for p in out.iterdir() if not p.name.startswith(".")}  # dot files: our scratch
        if not (out / MANIFEST).is_file() or names - set(OUTPUTS):
            foreign = sorted(names - set(OUTPUTS))
            raise AnalyzeError(f"--out {out} already exists and is not the output of `toolkit analyze` "
                               f"({len(foreign) or 'no'} other file(s) or folder(s)"
                               f"{'' if foreign else ', no manifest.json'}); give a new folder name "
                               "(existing files are never overwritten)")
        try:
            manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            manifest = {}
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise AnalyzeError(f"--out {out}: manifest.json is not a `toolkit analyze` manifest; give a new folder")
    for parent in [out_abs, *out_abs.parents]:
        if parent.exists():
            if not os.access(parent, os.W_OK):
                raise AnalyzeError(f"--out {out}: no permission to write in {parent}")
            break


def up_to_date(run_dir: Path, entry: PlanEntry, *, data_hash: str, fast: bool, version: str) -> tuple[bool, str]:
    """Whether the run at ``run_dir`` was made from this data, spec, toolkit version and mode; and why not."""
    from toolkit.inference import load_run

    if not run_dir.exists():
        return False, "not fitted yet"
    try:
        run = load_run(run_dir)
    except (ValueError, OSError) as exc:
        return False, f"the existing run cannot be read ({str(exc).split(';')[0]})"
    prov = run.provenance
    record = prov.get("analyze") or {}
    if prov.get("data_hash") != data_hash:
        return False, "the cohort data changed"
    if record.get("spec_sha256") != entry.sha256:
        return False, "the spec changed"
    if (prov.get("versions") or {}).get("toolkit") != version:
        return False, "the toolkit version changed"
    if bool(record.get("fast")) != fast:
        return False, "fast mode changed"
    return True, "up to date"


def estimands_table(runs: dict) -> pd.DataFrame:
    """Every run's estimands as one tidy table (:func:`toolkit.results.estimands_frame`), one row each."""
    from toolkit.results import estimands_frame

    frames = []
    for name, run in runs.items():
        frame = estimands_frame(run.summary)
        frame.insert(0, "model", run.summary["model"])
        frame.insert(0, "analysis", name)
        frame["converged"] = bool(run.summary["diagnostics"]["converged"])
        frame["fast"] = bool((run.provenance.get("analyze") or {}).get("fast", False))
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=ESTIMAND_TABLE_COLUMNS)
    return pd.concat(frames, ignore_index=True)[ESTIMAND_TABLE_COLUMNS]


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class _StderrHandler(logging.Handler):
    def __init__(self, say):
        super().__init__(logging.INFO)
        self.say = say

    def emit(self, record):
        self.say(f"    {record.getMessage()}")


def analyze(data: str | Path, out: str | Path, *, sap: str | Path | None = None, fast: bool = False,
            overwrite: bool = False, sampler: dict | None = None, say=None) -> dict:
    """Run the analysis plan on a cohort folder; returns the manifest (also written to ``out/manifest.json``).

    Parameters
    ----------
    data, out : path
        Cohort folder; output folder (new, empty, or an earlier analyze output to resume).
    sap : path, optional
        Plan folder of analysis specs (default: the toolkit's ``models/``).
    fast : bool
        Short sampler settings (``toolkit.fitting.FAST_SAMPLER``): a smoke run, labelled so in the
        runs' provenance, the manifest, the estimands table and the report.
    overwrite : bool
        Refit every analysis, even those up to date.
    sampler : dict, optional
        Sampler overrides for every analysis (``SamplerSettings`` keywords; for tests and quick looks;
        recorded in each run's provenance and counted as a change of spec for resuming).
    say : callable, optional
        Where progress lines go (default: stderr).

    Raises
    ------
    toolkit.data.CohortValidationError
        The cohort is invalid (nothing fitted, nothing written).
    AnalyzeError
        A plan, output or fit problem named with its fix.
    """
    from toolkit.data import load_cohort
    from toolkit.data.inputs import ModelDataError
    from toolkit.fitting import fit_plan, resolve_options
    from toolkit.inference import PROGRESS, RunFolderError, hash_folder, load_run
    from toolkit.results import figure_writer

    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    data, out = Path(data), Path(out)
    check_out(out, data)
    plan = read_plan(sap)
    cohort = load_cohort(data)  # CohortValidationError: stops before anything is fitted or written
    data_hash = hash_folder(data)
    version = toolkit_version()
    env = environment_flags()
    if env:
        say(f"note: {FAST_ENV}={env[FAST_ENV]} is set in the environment; `toolkit analyze` ignores it (only "
            "--fast shortens sampling) and records it in the manifest")
    mode = "FAST mode: short sampler settings, not for decisions" if fast else "full sampler settings"
    say(f"Analysis plan {plan.folder}: {len(plan.analyses)} analyses ({mode}); cohort {cohort.name}, "
        f"{len(cohort.patients)} patients")
    for name, why in plan.skipped.items():
        say(f"  skipping {name}: {why}")
    sampler_key = hashlib.sha256(json.dumps(sampler or {}, sort_keys=True).encode()).hexdigest()[:12]

    statuses, runs, fitted = {}, {}, 0
    handler = _StderrHandler(say)
    PROGRESS.addHandler(handler)
    old_level = PROGRESS.level
    PROGRESS.setLevel(logging.INFO)
    try:
        for i, entry in enumerate(plan.analyses, start=1):
            run_dir = out / "runs" / entry.name
            label = f"[{i}/{len(plan.analyses)}] {entry.name} ({entry.model}, {entry.path.name})"
            # sampler overrides count as part of the spec: a run made with other settings is not reused
            entry_hash = entry.sha256 if not sampler else f"{entry.sha256}+sampler:{sampler_key}"
            current = PlanEntry(entry.name, entry.path, entry.model, entry.spec, entry_hash)
            ok, why = up_to_date(run_dir, current, data_hash=data_hash, fast=fast, version=version)
            if ok and not overwrite:
                say(f"{label}: up to date, skipped")
                statuses[entry.name] = "up to date, skipped"
                runs[entry.name] = load_run(run_dir)
                continue
            say(f"{label}: fitting ({'--overwrite' if ok else why})")
            options = resolve_options(entry.model, entry.spec)
            settings = _sampler_settings(entry.spec, fast=fast, overrides=sampler)
            settings = type(settings)(**(settings.as_dict() | {"progressbar": False}))
            _, fit = fit_plan(entry.model)
            say("    building the model from the cohort")
            try:
                result = fit(cohort, options, settings, spec=entry.spec)
            except ModelDataError as exc:
                say(f"    cannot fit {entry.name}: {exc}")
                statuses[entry.name] = f"not fitted: {exc}"
                continue
            result.provenance["analyze"] = {"spec_sha256": entry_hash, "spec_file": entry.path.name,
                                            "fast": fast, "environment": env}
            if fast:
                result.provenance["fast"] = True
            say("    drawing figures and writing the run")
            try:
                result.save(run_dir, overwrite=True, figures=figure_writer(entry.model))
            except RunFolderError as exc:
                raise AnalyzeError(f"{entry.name}: the fit was not saved: {exc}") from exc
            verdict = "converged" if result.converged else "NOT CONVERGED (provisional)"
            say(f"    done: {verdict}")
            statuses[entry.name] = "fitted" if result.converged else "fitted, not converged (provisional)"
            runs[entry.name] = load_run(run_dir)
            fitted += 1
    finally:
        PROGRESS.removeHandler(handler)
        PROGRESS.setLevel(old_level)

    manifest = {
        "format": MANIFEST_FORMAT,
        "toolkit_version": version,
        "data": {"path": str(data.resolve()), "sha256": data_hash},
        "plan": {"folder": str(plan.folder.resolve()),
                 "specs": {e.path.name: e.sha256 for e in plan.analyses}, "skipped": plan.skipped},
        "fast": fast,
        "sampler_overrides": sampler or {},
        "environment": env,
        "analyses": {e.name: {"spec": e.path.name, "model": e.model, "run": f"runs/{e.name}",
                              "status": statuses[e.name],
                              "converged": (runs[e.name].converged if e.name in runs else None)}
                     for e in plan.analyses},
        "comparison": _compare(runs),
        "report": "report.html",
        "estimands": ["estimands.csv", "estimands.xlsx"],
    }
    previous = _read_manifest(out)
    outputs_there = all((out / name).exists() for name in OUTPUTS)
    if fitted == 0 and outputs_there and previous is not None and _same(previous, manifest):
        say("Everything is up to date: nothing was refitted or rewritten.")
        return manifest | {"created_utc": previous.get("created_utc"), "unchanged": True}

    out.mkdir(parents=True, exist_ok=True)
    if runs:
        say("Writing the investigator report ...")
        from toolkit.report import write_report

        write_report([out / "runs" / name for name in runs], out / "report.html")
    table = estimands_table(runs)
    _atomic_write(out / "estimands.csv", lambda tmp: table.to_csv(tmp, index=False))
    _atomic_write(out / "estimands.xlsx", lambda tmp: _write_xlsx(table, tmp, manifest))
    manifest["created_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
    _atomic_write(out / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n",
                                                              encoding="utf-8"))
    not_fitted = [n for n, s in statuses.items() if s.startswith("not fitted")]
    say(f"Done: {fitted} fitted, {sum(s == 'up to date, skipped' for s in statuses.values())} up to date"
        + (f", {len(not_fitted)} could not be fitted ({', '.join(not_fitted)})" if not_fitted else "")
        + f". Report: {out / 'report.html'}")
    return manifest


def _write_xlsx(table: pd.DataFrame, path: Path, manifest: dict) -> None:
    about = pd.DataFrame({"key": ["toolkit_version", "fast", "data_sha256"],
                          "value": [manifest["toolkit_version"], str(manifest["fast"]), manifest["data"]["sha256"]]})
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        table.to_excel(writer, sheet_name="estimands", index=False)
        about.to_excel(writer, sheet_name="about", index=False)


def _read_manifest(out: Path) -> dict | None:
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _same(previous: dict, manifest: dict) -> bool:
    """Whether two manifests describe the same outputs (what was done this time, ``status``, aside)."""
    def content(m):
        m = json.loads(json.dumps(m))
        m.pop("created_utc", None)
        for record in (m.get("analyses") or {}).values():
            if isinstance(record, dict):
                record.pop("status", None)
        return m

    return content(previous) == content(manifest)


def _compare(runs: dict) -> dict:
    """PSIS-LOO of the durability runs (when two or more were fitted): rank, elpd, difference, or why not."""
    from toolkit.fitting import compare_runs

    durability = {name: run for name, run in runs.items() if run.summary["model"] == "durability"}
    if len(durability) < 2:
        return {"runs": list(durability), "note": "fewer than two durability analyses: nothing to compare"}
    try:
        table = compare_runs(durability)
    except ValueError as exc:
        return {"runs": list(durability), "error": str(exc)}
    cols = ["rank", "elpd", "se", "elpd_diff", "dse", "weight", "max_pareto_k", "n_pareto_k_above_0.7", "converged"]
    rows = table[[c for c in cols if c in table.columns]]
    return {"runs": list(durability), "method": "PSIS-LOO",
            "table": {name: {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
                      for name, row in rows.iterrows()}}
