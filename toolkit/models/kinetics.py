r"""Forward functions of the CAR-T kinetic model (Stein et al. 2019), in numpy.

The piecewise curve of one patient with peak ``cmax`` at day ``tmax``,
fold-expansion ``foldx`` and a biphasic contraction (fast rate ``alpha``,
slow rate ``beta``, slow fraction ``fb``):

.. math::

    C(t) = \frac{C_{max}}{F} e^{\rho t} \ (t < T_{max}),\qquad
    C(t) = C_{max}\left[(1-f_b) e^{-\alpha (t-T_{max})} + f_b e^{-\beta (t-T_{max})}\right] \ (t \ge T_{max}),

with :math:`\rho = \log F / T_{max}`. The model (:mod:`toolkit.models.cart`,
whose pytensor graph is the same curve), the estimands, the figures and the
simulator (:mod:`toolkit.simulate`) all use these functions, so the science
does not depend on the synthetic-data code.

Stein AM, Grupp SA, Levine JE, et al. Tisagenlecleucel model-based cellular
kinetic analysis of chimeric antigen receptor-T cells. CPT Pharmacometrics
Syst Pharmacol. 2019;8(5):285-295.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cart_auc", "cart_curve", "time_below"]


def cart_curve(t, cmax, tmax, foldx, alpha, beta, fb):
    """Stein 2019 piecewise CAR-T curve C(t) (copies/ug), vectorised over patients."""
    t = np.asarray(t, dtype=float)
    rho = np.log(foldx) / tmax
    expansion = cmax / foldx * np.exp(rho * np.minimum(t, tmax))
    dt = np.maximum(t - tmax, 0.0)
    contraction = cmax * ((1 - fb) * np.exp(-alpha * dt) + fb * np.exp(-beta * dt))
    return np.where(t < tmax, expansion, contraction)


def cart_auc(t_end, cmax, tmax, foldx, alpha, beta, fb):
    r"""AUC of the Stein curve from 0 to ``t_end`` in closed form.

    AUC = (Cmax - R0)/rho  [expansion, if t_end >= Tmax]
        + Cmax [(1-FB)(1-e^{-alpha d})/alpha + FB (1-e^{-beta d})/beta],  d = t_end - Tmax.
    """
    rho = np.log(foldx) / tmax
    r0 = cmax / foldx
    t1 = np.minimum(t_end, tmax)
    expansion = r0 * (np.exp(rho * t1) - 1.0) / rho
    d = np.maximum(t_end - tmax, 0.0)
    contraction = cmax * ((1 - fb) * -np.expm1(-alpha * d) / alpha + fb * -np.expm1(-beta * d) / beta)
    return expansion + contraction


def time_below(level, cmax, tmax, foldx, alpha, beta, fb, horizon=20 * 365.0):
    """Day the contraction phase falls below ``level`` (Tmax if the peak is below; inf if never)."""
    cmax, tmax = np.broadcast_arrays(np.asarray(cmax, float), np.asarray(tmax, float))
    lo, hi = tmax.copy(), tmax + horizon
    never = cart_curve(hi, cmax, tmax, foldx, alpha, beta, fb) >= level
    for _ in range(60):  # bisection: C is decreasing after Tmax
        mid = 0.5 * (lo + hi)
        above = cart_curve(mid, cmax, tmax, foldx, alpha, beta, fb) >= level
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    out = np.where(cmax < level, tmax, hi)
    return np.where(never, np.inf, out)
