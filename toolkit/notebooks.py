"""The analysis notebooks: copy them for a user, run each on a cohort (papermill) and render it to HTML (nbconvert).

The notebooks name the default ``python3`` kernel, which Jupyter resolves to
the environment it runs in; so they open in JupyterLab from a plain
``pip install "cart-toolkit[notebooks]"`` with no kernel to register.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from toolkit import resources

try:
    NOTEBOOK_DIR = resources.path("notebooks")
except resources.ResourceError:  # a broken install: list_notebooks finds none and the commands say so
    NOTEBOOK_DIR = resources.INSTALLED / "notebooks"
KERNEL = "python3"
#: The folder, beside the copied notebooks, that receives the example cohort (their default ``cohort_path``).
EXAMPLE_COPY = "example_cohort"
NOTEBOOKS_EXTRA = 'pip install "cart-toolkit[notebooks]"'


def list_notebooks(folder: Path | None = None) -> list[Path]:
    """The analysis notebooks (``NN_name.ipynb``) in ``folder`` (default: the shipped ones), sorted."""
    return sorted(p for p in Path(folder or NOTEBOOK_DIR).glob("[0-9][0-9]_*.ipynb"))


def _kernel_name() -> str:
    """The kernel papermill starts: ``python3``, which Jupyter maps to the running environment."""
    return KERNEL


def copy_notebooks(dest: str | Path) -> list[Path]:
    """Copy every shipped notebook and the example cohort into ``dest`` (new or empty); return the notebooks.

    Each copy's ``cohort_path`` parameter points at ``dest/example_cohort`` (the
    synthetic example, which the user replaces with their own cohort folder),
    and the copy is unpaired from its jupytext twin, which stays in the repository.
    """
    dest = Path(dest)
    notebooks = list_notebooks()
    if not notebooks:
        raise resources.ResourceError(f"no notebooks found in {NOTEBOOK_DIR}; reinstall the package")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(resources.path("data_templates/example"), dest / EXAMPLE_COPY)
    copies = []
    for notebook in notebooks:
        nb = json.loads(notebook.read_text(encoding="utf-8"))
        nb.get("metadata", {}).pop("jupytext", None)
        for cell in nb["cells"]:
            if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
                source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
                cell["source"] = re.sub(r"^cohort_path = .*$", f'cohort_path = "{EXAMPLE_COPY}"  # your cohort folder',
                                        source, count=1, flags=re.MULTILINE)
                break
        copy = dest / notebook.name
        copy.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        copies.append(copy)
    return copies


def run_notebooks(data: str | Path, out: str | Path, *, fast: bool = False, seed: int = 20261125,
                  notebooks: list[Path] | None = None, progress=None, parameters: dict | None = None) -> list[dict]:
    """Execute each notebook with ``cohort_path`` set to ``data``; write executed .ipynb and .html to ``out``.

    ``parameters`` adds papermill parameters (e.g. ``{"run_dir": ...}`` to load runs made by ``toolkit analyze``).

    Returns one record per notebook: name, executed path, html path, ok, error.
    A failing notebook is still written (with the error in it) and reported; the others still run.
    """
    try:
        import nbformat
        import papermill as pm
        from nbconvert import HTMLExporter
    except ImportError as err:
        raise ImportError(f"running notebooks needs JupyterLab and papermill: {NOTEBOOKS_EXTRA}") from err

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(data).resolve()
    kernel = _kernel_name()
    records = []
    for notebook in notebooks or list_notebooks():
        executed = out / notebook.name
        record = {"notebook": notebook.name, "executed": str(executed), "html": str(executed.with_suffix(".html")),
                  "ok": True, "error": None}
        if progress:
            progress(notebook.name)
        try:
            pm.execute_notebook(str(notebook), str(executed), parameters={"cohort_path": str(data), "fast": fast,
                                                                          "seed": seed} | (parameters or {}),
                                kernel_name=kernel, cwd=str(notebook.parent), progress_bar=False)
        except Exception as exc:  # noqa: BLE001 - reported per notebook; the executed copy shows where it failed
            record.update(ok=False, error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}")
        if executed.exists():
            body, _ = HTMLExporter(embed_images=True).from_notebook_node(nbformat.read(executed, as_version=4))
            executed.with_suffix(".html").write_text(body, encoding="utf-8")
        records.append(record)
    return records
