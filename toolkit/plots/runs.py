"""A run's check figures: which figures each model draws, from the run's own files.

The wiring from a run (``summary["model"]``) to the figure modules; every figure
module takes a run (posterior and summary) and rebuilds its inputs in the data
layer (:mod:`toolkit.data.from_run`), so nothing here imports the fitting or
the run-folder code.
"""

from __future__ import annotations

from toolkit.plots import durability_figure_builders, save_figures
from toolkit.plots.cart import cart_figure_builders
from toolkit.plots.joint import joint_figure_builders
from toolkit.plots.mrd import mrd_figure_builders


def figure_builders(result) -> dict:
    """``{file name: callable drawing one figure}`` of a result's model (the figures a run folder holds)."""
    builders = {"durability": durability_figure_builders, "cart": cart_figure_builders,
                "mrd": mrd_figure_builders, "joint": joint_figure_builders}
    model = result.summary["model"]
    if model not in builders:
        raise ValueError(f"no figures for model {model!r}; models with figures: {', '.join(builders)}")
    return builders[model](result)


def figure_writer(model: str):
    """``write(run, folder)`` saving the figures of ``model`` as PNGs (what ``save_run`` calls)."""
    def write(run, folder):
        return save_figures(figure_builders(run), folder)

    return write
