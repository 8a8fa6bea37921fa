"""Run every analysis notebook on a cohort (papermill) and render each to HTML (nbconvert)."""

from __future__ import annotations

from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL = "cart-toolkit"


def list_notebooks(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    return sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))


def _kernel_name() -> str:
    """The project kernel if registered, else the running interpreter's default kernel."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL if KERNEL in KernelSpecManager().find_kernel_specs() else "python3"


def run_notebooks(data: str | Path, out: str | Path, *, fast: bool = False, seed: int = 20261125,
                  notebooks: list[Path] | None = None, progress=None, parameters: dict | None = None) -> list[dict]:
    """Execute each notebook with ``cohort_path`` set to ``data``; write executed .ipynb and .html to ``out``.

    ``parameters`` adds papermill parameters (e.g. ``{"run_dir": ...}`` to load runs made by ``toolkit analyze``).

    Returns one record per notebook: name, executed path, html path, ok, error.
    A failing notebook is still written (with the error in it) and reported; the others still run.
    """
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

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
