"""One Python API for a fitted analysis, in memory or read from disk.

:class:`toolkit.fitting.FitResult` (what ``fit_*`` returns) and
:class:`toolkit.inference.Run` (what ``load_run`` returns) share one base,
:class:`ResultMethods` (defined with the run folder in :mod:`toolkit.inference`),
so a notebook or a script handles both the same way:

- ``result.summary`` is the ``summary.json`` mapping (``result.summary["diagnostics"]``
  works as before) and, called, ``result.summary()`` is the estimands as a
  numeric table (:func:`estimands_frame`);
- ``result.estimand(name)`` one decision quantity;
- ``result.figures()`` the model's check figures as ``{name: matplotlib Figure}``;
- ``result.save(path)`` a run folder (see :func:`toolkit.inference.save_run`).

This module sits on top of the run folder (:mod:`toolkit.inference`), the figures
(:mod:`toolkit.plots.runs`) and the inputs rebuild (:mod:`toolkit.data.from_run`);
the names it re-exports keep the paths they have always had.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.data.from_run import inputs_from_run
from toolkit.inference import ResultMethods, load_run
from toolkit.plots.runs import figure_builders, figure_writer
from toolkit.summary import ESTIMAND_COLUMNS, Summary, estimands_frame

__all__ = ["ESTIMAND_COLUMNS", "ResultMethods", "Summary", "estimands_frame", "figure_builders", "figure_writer",
           "inputs_from_run", "load_analysis"]


def load_analysis(folder: str | Path, name: str):
    """The run of analysis ``name`` (a spec's file stem, e.g. ``durability_primary``) made on the command line.

    ``folder`` is the output of ``toolkit analyze`` (the run is ``folder/runs/<name>``), a folder of
    runs (``folder/<name>``) or one run folder (``toolkit fit --out``). Raises FileNotFoundError
    naming what was looked for.
    """
    folder = Path(folder)
    for candidate in (folder / "runs" / name, folder / name):
        if candidate.is_dir():
            return load_run(candidate)
    if (folder / "summary.json").is_file():
        return load_run(folder)
    raise FileNotFoundError(f"no run of analysis {name!r} in {folder}: expected {folder / 'runs' / name} (the "
                            f"output of `toolkit analyze`), {folder / name}, or a run folder; set run_dir = None "
                            "to fit in the notebook instead")
