"""Analysis spec files (``models/*.toml``): pre-specified, executable choices.

A spec holds ``model`` (which model), ``[options]`` (analysis choices, the
fields of that model's Options dataclass), ``[priors]`` (departures from the
default priors, ``name = [mu, sigma]``), ``[decision]`` (thresholds) and
``[sampler]`` (chains, tune, draws, seed, backend, target_accept, adaptation, logp_callback), and
optionally ``primary = true``: the analysis that answers the trial's
question, whose result opens the report (``toolkit.report.primary_run``).
Command-line options override the spec; the run records what was used.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

SECTIONS = ("model", "title", "rationale", "primary", "options", "priors", "decision", "sampler")
SAMPLER_KEYS = {"chains": "chains", "tune": "tune", "draws": "draws", "seed": "random_seed",
                "backend": "backend", "target_accept": "target_accept", "adaptation": "adaptation",
                "logp_callback": "logp_callback"}


def analysis_plan_dir() -> Path:
    """The toolkit's own analysis plan: the folder of pre-specified analysis specs (``models/``).

    The checkout's ``models/``, or the copy inside an installed wheel (:mod:`toolkit.resources`).
    """
    from toolkit import resources

    try:
        return resources.path("models")
    except resources.ResourceError:  # a broken install: a command that needs a spec names the missing file
        return resources.INSTALLED / "models"


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the file and the key."""


def shipped_spec(path: str | Path) -> Path:
    """``path`` if it exists, else the spec of that name shipped with the toolkit, if there is one.

    ``models/durability_primary.toml``, ``durability_primary.toml`` and
    ``durability_primary`` all name the shipped spec when no such file exists
    where the command runs, so the commands in the README work from an
    installed wheel as from a clone. The run records the path used.
    """
    path = Path(path)
    if path.exists() or path.parent not in (Path("."), Path("models")):
        return path
    from toolkit import resources

    try:
        shipped = resources.path("models") / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
    except resources.ResourceError:
        return path
    return shipped if shipped.is_file() else path


def _shipped_names() -> str:
    from toolkit import resources

    try:
        return ", ".join(p.stem for p in sorted(resources.path("models").glob("*.toml")))
    except resources.ResourceError:
        return "none found"


def read_toml(path: str | Path, *, error: type[Exception], folder_hint: str, missing: str) -> dict:
    """A TOML file's table (a byte-order mark accepted, as in the cohort files), or ``error`` naming the file
    and the fix: a folder (``folder_hint``), a missing file (``missing``), unreadable, not UTF-8, not TOML."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a folder; {folder_hint}")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError as exc:
        raise error(f"{path}: {missing}") from exc
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or type(exc).__name__}); check its permissions") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{path}: is not UTF-8 text; save it as UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc})") from exc


def load_spec(path: str | Path, *, model: str | None = None) -> dict:
    """Read and check a spec file; ``model`` (if given) must match its ``model`` key."""
    path = shipped_spec(path)
    spec = read_toml(path, error=SpecError,
                     folder_hint="--spec expects a spec file such as models/durability_primary.toml",
                     missing=f"spec file not found; give a spec file, or the name of one shipped with the toolkit "
                             f"({_shipped_names()})")
    unknown = sorted(set(spec) - set(SECTIONS))
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(SECTIONS)}")
    for section in ("options", "priors", "decision", "sampler"):
        if not isinstance(spec.get(section, {}), dict):
            raise SpecError(f"{path}: {section} must be a [{section}] table of `key = value` lines")
    if not isinstance(spec.get("primary", False), bool):
        raise SpecError(f"{path}: primary must be true or false (true marks the analysis that answers the trial's "
                        f"question), got {spec['primary']!r}")
    if model is not None and spec.get("model") != model:
        raise SpecError(f"{path}: is a spec for model {spec.get('model')!r}, not {model!r}")
    bad = sorted(set(spec.get("sampler", {})) - set(SAMPLER_KEYS))
    if bad:
        raise SpecError(f"{path}: unknown [sampler] key(s) {', '.join(bad)}; valid: {', '.join(SAMPLER_KEYS)}")
    for name, value in spec.get("priors", {}).items():
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
                and value[1] > 0):
            raise SpecError(f"{path}: [priors] {name} must be [mu, sigma] with sigma > 0, got {value!r}")
    spec["path"] = str(path)
    return spec


def merged_options(spec: dict | None, overrides: dict) -> dict:
    """Spec ``[options]`` + ``[decision]`` + ``[priors]``, then command-line overrides (None = not given)."""
    merged = {}
    if spec:
        merged.update(spec.get("options", {}))
        merged.update(spec.get("decision", {}))
        if spec.get("priors"):
            merged["priors"] = dict(spec["priors"])
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return merged


def merged_sampler(spec: dict | None, overrides: dict) -> dict:
    """Sampler settings from the spec, then command-line overrides, as SamplerSettings keywords."""
    out = {SAMPLER_KEYS[k]: v for k, v in (spec or {}).get("sampler", {}).items()}
    out.update({SAMPLER_KEYS[k]: v for k, v in overrides.items() if v is not None})
    return out
