"""The one place where the look of every figure is decided: arm colours, file formats, resolution.

Arm colours come from the Okabe-Ito palette (Okabe & Ito 2008, "Color
Universal Design"), which stays distinguishable under the common forms of
colour-vision deficiency and in greyscale print: blue for the control arm,
orange for the experimental arm, in every figure of the package, the
notebooks and the report.

Every figure written to disk is written twice, as PNG at :data:`DPI` dots per
inch (for slides and the report) and as SVG (vector, for a journal's
production), by :func:`save_figure`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

#: Okabe-Ito palette (name -> hex), in the order of the original publication.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

#: Colour of each arm by its index in the model inputs (0 = control, 1 = experimental).
ARM_COLORS = (OKABE_ITO["blue"], OKABE_ITO["orange"])

#: Resolution of every PNG written to disk (journals ask for at least 300 dpi).
DPI = 300

#: Formats every saved figure is written in: a raster for reading, a vector for publishing.
FORMATS = ("png", "svg")


def arm_palette(arm_labels) -> dict:
    """``{arm label: colour}`` for seaborn's ``palette=``, in the order (control, experimental)."""
    labels = list(arm_labels)
    if len(labels) != len(ARM_COLORS):
        raise ValueError(f"expected {len(ARM_COLORS)} arm labels (control, experimental), got {labels!r}")
    return dict(zip(labels, ARM_COLORS))


def save_figure(fig, path, *, formats=FORMATS, dpi: int = DPI) -> list[Path]:
    """Write ``fig`` once per format, as ``path`` with each format's suffix; returns the paths.

    ``path`` may carry a suffix (``forest.png``) or not (``forest``); it is
    replaced. The figure is not closed (the caller owns it).
    """
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower().lstrip(".") in FORMATS + ("pdf",) else path
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        target = stem.with_name(f"{stem.name}.{fmt}")
        # SVG text stays text (editable in a journal's tools); no timestamp, so two saves compare equal
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            fig.savefig(target, format=fmt, dpi=dpi, metadata={"Date": None} if fmt == "svg" else None)
        out.append(target)
    return out
