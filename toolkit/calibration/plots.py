"""Calibration figures: ECDF-difference plots with simultaneous bands, rank histograms.

Both take the long results table (``toolkit.calibration.runner.load_results``)
and return a matplotlib Figure; nothing is shown.
"""

from __future__ import annotations

import numpy as np

from toolkit.calibration.metrics import ALPHA, ecdf_band

__all__ = ["plot_ecdf_differences", "plot_rank_histograms"]


def _grid(n: int, ncols: int = 4):
    import matplotlib.pyplot as plt

    ncols = min(ncols, max(n, 1))
    nrows = int(np.ceil(n / ncols)) if n else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 2.4 * nrows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _pits(results, quantities=None) -> dict[str, np.ndarray]:
    ok = results[(results["status"] == "ok") & (results["quantity"] != "")]
    names = quantities or list(dict.fromkeys(ok["quantity"]))
    return {q: ok.loc[ok["quantity"] == q, "pit"].to_numpy(float) for q in names}


VERDICT_COLOURS = {"calibrated": "C0", "suspect": "C1", "fails": "C3"}


def plot_ecdf_differences(results, *, quantities=None, alpha: float = ALPHA, verdicts: dict | None = None):
    """ECDF of the PIT values minus the uniform CDF, per quantity, with the simultaneous 1 - alpha band.

    Säilynoja, Bürkner & Vehtari (2022): under calibration the whole curve stays
    inside the band with probability 1 - alpha. A curve below the band in the
    middle (an S shape) means an over-dispersed posterior, above it too narrow;
    a curve wholly above or below, a shifted one. Colours: ``VERDICT_COLOURS`` by ``verdicts``.
    """
    pits = _pits(results, quantities)
    fig, axes = _grid(len(pits))
    for ax, (name, u) in zip(axes, pits.items()):
        if u.size < 2:
            ax.set_title(f"{name}\n(too few)", fontsize=8)
            continue
        z, lo, hi = ecdf_band(u.size, alpha=alpha)
        ax.fill_between(z, lo - z, hi - z, step="mid", color="0.85", label=f"{100 * (1 - alpha):.0f}% band")
        grid = np.linspace(0, 1, 201)
        ecdf = np.searchsorted(np.sort(u), grid, side="right") / u.size
        inside = np.all((np.interp(z, grid, ecdf) >= lo - 1e-12) & (np.interp(z, grid, ecdf) <= hi + 1e-12))
        verdict = (verdicts or {}).get(name, "")
        # the colour follows the study's verdict where there is one (which also weighs the chi-square test
        # and the number of quantities: blue calibrated, orange suspect, red fails), else this curve's band
        ax.plot(grid, ecdf - grid, color=VERDICT_COLOURS.get(verdict) or ("C0" if inside else "C3"), lw=1.2)
        ax.axhline(0, color="0.4", lw=0.6)
        ax.set_title(f"{name}{' (' + verdict + ')' if verdict else ''}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.supxlabel("fractional rank (PIT)", fontsize=9)
    fig.supylabel("ECDF - uniform", fontsize=9)
    fig.tight_layout()
    return fig


def plot_rank_histograms(results, *, quantities=None, bins: int | None = None):
    """Histogram of PIT values per quantity, with the 99% range of a bin count under uniformity."""
    from scipy.stats import binom

    pits = _pits(results, quantities)
    fig, axes = _grid(len(pits))
    for ax, (name, u) in zip(axes, pits.items()):
        b = int(bins or min(20, max(4, u.size // 5)))
        ax.hist(u, bins=b, range=(0, 1), color="C0", alpha=0.8)
        if u.size:
            lo, hi = binom.ppf([0.005, 0.995], u.size, 1 / b)
            ax.axhspan(lo, hi, color="0.85", zorder=0)
            ax.axhline(u.size / b, color="0.4", lw=0.6)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.supxlabel("fractional rank (PIT)", fontsize=9)
    fig.tight_layout()
    return fig
