"""Where the files shipped with the toolkit are: analysis specs, data templates, example cohort, notebooks.

In a checkout they are the top-level folders ``models/``, ``data_templates/``
and ``notebooks/``. A wheel carries copies of them under
``toolkit/_resources/`` (``setup.py`` copies them at build time, by glob, so
new files are picked up without a list to update). ``path`` finds them in
either place, installed copy first, so every command and notebook works the
same from a clone, an editable install and a plain ``pip install``.
"""

from __future__ import annotations

from pathlib import Path

#: Shipped folders and the files of each that go into the wheel (globs relative to the folder).
RESOURCES: dict[str, tuple[str, ...]] = {
    "models": ("*.toml", "sensitivity/*.toml"),
    "data_templates": ("*.csv", "*.toml", "*.md", "*.xlsx", "example/*.csv", "example/*.toml", "example/*.json",
                       "example/*.xlsx"),
    "notebooks": ("*.ipynb", "*.py"),
}

_PACKAGE = Path(__file__).resolve().parent
INSTALLED = _PACKAGE / "_resources"
CHECKOUT = _PACKAGE.parent


class ResourceError(FileNotFoundError):
    """A shipped folder is missing: the installation is incomplete."""


def path(name: str) -> Path:
    """The folder (or a file in it) shipped as ``name``, e.g. ``path("models")``, ``path("data_templates/example")``.

    Parameters
    ----------
    name : str
        ``models``, ``data_templates`` or ``notebooks``, optionally followed by ``/`` and a path inside.

    Raises
    ------
    ResourceError
        If ``name`` is not a shipped folder, or neither the installed copy nor the checkout holds it.
    """
    top, _, rest = name.strip("/").partition("/")
    if top not in RESOURCES:
        raise ResourceError(f"{name!r} is not a folder shipped with the toolkit; use one of {', '.join(RESOURCES)}")
    for root in (INSTALLED, CHECKOUT):
        folder = root / top
        if folder.is_dir():
            return folder / rest if rest else folder
    raise ResourceError(f"the toolkit's {top}/ folder is missing (looked in {INSTALLED} and {CHECKOUT}); "
                        "reinstall the package (pip install --force-reinstall cart-toolkit) or use a full clone")


def files(root: Path, top: str) -> list[Path]:
    """Every file of the shipped folder ``top`` under ``root`` that belongs in the wheel, sorted."""
    found: set[Path] = set()
    for pattern in RESOURCES[top]:
        found.update(p for p in (root / top).glob(pattern) if p.is_file() and not p.name.startswith("."))
    return sorted(found)
