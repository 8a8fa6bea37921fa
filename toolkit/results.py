"""One Python API for a fitted analysis, in memory or read from disk.

:class:`toolkit.fitting.FitResult` (what ``fit_*`` returns) and
:class:`toolkit.inference.Run` (what ``load_run`` returns) share this base,
so a notebook or a script handles both the same way:

- ``result.summary`` is the ``summary.json`` mapping (``result.summary["diagnostics"]``
  works as before) and, called, ``result.summary()`` is the estimands as a
  numeric table (:func:`estimands_frame`);
- ``result.estimand(name)`` one decision quantity;
- ``result.figures()`` the model's check figures as ``{name: matplotlib Figure}``;
- ``result.save(path)`` a run folder (see :func:`toolkit.inference.save_run`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

ESTIMAND_COLUMNS = ["estimand", "median", "mean", "sd", "lo", "hi", "level", "probability"]
_INTERVAL_KEY = re.compile(r"^hdi_(\d+)$")


def estimands_frame(summary: dict) -> pd.DataFrame:
    """The ``estimands`` of a ``summary.json`` as a tidy numeric table, one row per estimand.

    An interval estimand ``{mean, median, sd, hdi_90: [lo, hi]}`` fills ``median``, ``mean``,
    ``sd``, ``lo``, ``hi`` and ``level`` (0.90 for ``hdi_90``); a probability fills
    ``probability``. Missing values are NaN, so every column but ``estimand`` is float.
    """
    rows = []
    for name, value in summary.get("estimands", {}).items():
        row = dict.fromkeys(ESTIMAND_COLUMNS[1:], np.nan) | {"estimand": name}
        if isinstance(value, dict):
            for key in ("median", "mean", "sd"):
                row[key] = _float(value.get(key))
            for key, bounds in value.items():
                match = _INTERVAL_KEY.match(key)
                if match and isinstance(bounds, (list, tuple)) and len(bounds) == 2:
                    row["lo"], row["hi"] = _float(bounds[0]), _float(bounds[1])
                    row["level"] = int(match.group(1)) / 100
        else:
            row["probability"] = _float(value)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=ESTIMAND_COLUMNS)
    return frame.astype({c: float for c in ESTIMAND_COLUMNS[1:]})


def _float(value) -> float:
    try:
        return float(value) if value is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


class Summary(dict):
    """``summary.json`` as a mapping that, called, gives the estimands table (:func:`estimands_frame`)."""

    def __call__(self) -> pd.DataFrame:
        return estimands_frame(self).set_index("estimand")


def figure_builders(result) -> dict:
    """``{file name: callable drawing one figure}`` of a result's model (the figures a run folder holds)."""
    from toolkit.plots import durability_figure_builders
    from toolkit.plots.cart import cart_figure_builders
    from toolkit.plots.joint import joint_figure_builders
    from toolkit.plots.mrd import mrd_figure_builders

    builders = {"durability": durability_figure_builders, "cart": cart_figure_builders,
                "mrd": mrd_figure_builders, "joint": joint_figure_builders}
    model = result.summary["model"]
    if model not in builders:
        raise ValueError(f"no figures for model {model!r}; models with figures: {', '.join(builders)}")
    return builders[model](result)


def figure_writer(model: str):
    """``write(run, folder)`` saving the figures of ``model`` as PNGs (what ``save_run`` calls)."""
    from toolkit.plots import save_figures

    def write(run, folder):
        return save_figures(figure_builders(run), folder)

    return write


class ResultMethods:
    """Methods shared by :class:`~toolkit.fitting.FitResult` and :class:`~toolkit.inference.Run`.

    Subclasses hold ``model_name``, ``posterior`` (DataTree), ``summary`` (a :class:`Summary`) and
    ``provenance``.
    """

    @property
    def converged(self) -> bool:
        return bool(self.summary["diagnostics"]["converged"])

    def estimand(self, name: str):
        """One estimand: a dict ``{mean, median, sd, hdi_90}`` or, for a probability, a float.

        A name the result does not have raises ``KeyError`` listing the ones it has.
        """
        estimands = self.summary["estimands"]
        if name not in estimands:
            raise KeyError(f"no estimand {name!r} in this {self.summary['model']} result; it has: "
                           f"{', '.join(estimands)}")
        return estimands[name]

    def figures(self) -> dict:
        """The model's check figures (the ones saved in a run's ``figures/``) as ``{name: Figure}``."""
        import matplotlib.pyplot as plt

        out = {}
        for name, draw in figure_builders(self).items():
            drawn = draw()
            out[Path(name).stem] = drawn if isinstance(drawn, plt.Figure) else drawn.figure
        return out

    def save(self, run_dir: str | Path, *, overwrite: bool = False, figures=None) -> Path:
        """Write a run folder whole or not at all (:func:`toolkit.inference.save_run`), with the parameter
        summary table ``parameter_summary.csv`` (:func:`toolkit.review.write_summary_table`).

        ``figures``: True draws the model's figures into ``run_dir/figures``, None (default) skips them, a
        callable ``figures(run, folder)`` draws its own.
        """
        from toolkit.inference import save_run

        from toolkit.review import write_summary_table

        writer = figure_writer(self.summary["model"]) if figures is True else (figures or None)

        def extras(run, folder):  # the parameter summary table goes in before the manifest seals the folder
            write_summary_table(run)
            if writer is not None:
                writer(run, folder)

        return save_run(run_dir, self.posterior, dict(self.summary), self.provenance, overwrite=overwrite,
                        figures=extras)


def inputs_from_run(run):
    """A saved run's model inputs rebuilt from its posterior file (no cohort needed); None for joint runs."""
    model = run.summary["model"]
    if model == "durability":
        from toolkit.fitting import durability_inputs_from_run

        return durability_inputs_from_run(run)
    if model == "cart":
        from toolkit.plots.cart import cart_inputs_from_run

        return cart_inputs_from_run(run)
    if model == "mrd":
        from toolkit.mrd_estimands import mrd_inputs_from_run

        return mrd_inputs_from_run(run)
    return None


def load_analysis(folder: str | Path, name: str):
    """The run of analysis ``name`` (a spec's file stem, e.g. ``durability_primary``) made on the command line.

    ``folder`` is the output of ``toolkit analyze`` (the run is ``folder/runs/<name>``), a folder of
    runs (``folder/<name>``) or one run folder (``toolkit fit --out``). Raises FileNotFoundError
    naming what was looked for.
    """
    from toolkit.inference import load_run

    folder = Path(folder)
    for candidate in (folder / "runs" / name, folder / name):
        if candidate.is_dir():
            return load_run(candidate)
    if (folder / "summary.json").is_file():
        return load_run(folder)
    raise FileNotFoundError(f"no run of analysis {name!r} in {folder}: expected {folder / 'runs' / name} (the "
                            f"output of `toolkit analyze`), {folder / name}, or a run folder; set run_dir = None "
                            "to fit in the notebook instead")
