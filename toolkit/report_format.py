"""Helpers shared by the report and its per-analysis sections (``toolkit.report_*``).

The report (:mod:`toolkit.report`) imports the sections, and the sections
import these helpers from here, never the report back: the dependency runs
report -> report_* -> report_format only.
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.inference import Run


def _e(text) -> str:
    return html.escape(str(text))


def _png(ax) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png", dpi=110)  # for the screen; RUN/figures has the 300-dpi PNG and SVG
    plt.close(ax.figure)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(ax, caption: str) -> str:
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{_png(ax)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def decision_figures(run: Run) -> list[str]:
    """The posterior density of each decision estimand of a run, thresholds marked, P(effect) written on it."""
    from toolkit.plots.publication import decision_densities, plot_decision_densities

    decisions = decision_densities(run)
    if not decisions:
        return []
    return [_figure(plot_decision_densities(decisions).axes[0],
                    "Posterior distribution of each decision quantity (experimental vs control): the dashed lines "
                    "are the decision thresholds of the analysis plan, the shaded area is the probability of any "
                    "benefit, and each probability written on the panel is the one reported above.")]


def pit_figure(pits: dict) -> str:
    """The censored-data PIT check of :mod:`toolkit.plots.ppc` as a report figure."""
    from toolkit.plots.ppc import PIT_TITLE, plot_pit_ecdf

    return _figure(plot_pit_ecdf(pits, title=PIT_TITLE).axes[0],
                   "Model check from the posterior draws: the probability integral transform (PIT) of each "
                   "observation under the fitted model, censored observations drawn uniformly over the values "
                   "they allow, shown as the difference between their empirical distribution and the uniform. "
                   "A model that reproduces the data stays near 0; p (ArviZ's uniformity test) below 0.01 "
                   "flags a misfit, and highlighted points are the observations that contribute most to it.")
