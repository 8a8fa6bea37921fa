r"""Forward functions of the CAR-T kinetic model (Stein et al. 2019, with a rounded peak), in numpy.

One patient's curve with peak ``cmax`` at day ``tmax``, fold-expansion ``foldx`` from day 0 to the peak,
and a biphasic contraction (fast rate ``alpha``, slow rate ``beta``, slow fraction ``fb``):

.. math::

    C(t) = C_{max}\, e^{-\rho\, u(t - T_{max})} \ (t < T_{max}),\qquad
    C(t) = C_{max}\left[(1-f_b) e^{-\alpha u(t-T_{max})} + f_b e^{-\beta u(t-T_{max})}\right] \ (t \ge T_{max}),

    u(d) = h \log\cosh(d/h),\qquad \rho = \log F / u(T_{max}).

``u`` is the *peak clock*: u(d) = d^2/(2h) near the peak and |d| - h log 2 beyond a few h, with
h = ``PEAK_ROUNDING_DAYS``. Stein's piecewise curve is the limit h -> 0 (u(d) = |d|). With h > 0 the
curve's slope is continuous (0 at Tmax from both sides), so (Tmax, Cmax) is still exactly the curve's
maximum, C(0) = Cmax/foldx still holds, and the half-lives ln2/alpha, ln2/beta are the same rates; the
contraction runs h log 2 (1.4 days) behind Stein's kinked curve. Why: Stein's kink made the log density
non-differentiable in Tmax, and the leapfrog integrator's energy error at a patient's Tmax crossing a sample
day set the sampler's step size (docs/priors.md#cart-rounded-peak).

The model (:mod:`toolkit.models.cart`, whose pytensor graph is the same curve), the estimands, the figures
and the simulator (:mod:`toolkit.simulate`) all use these functions, so the science does not depend on the
synthetic-data code.

Stein AM, Grupp SA, Levine JE, et al. Tisagenlecleucel model-based cellular
kinetic analysis of chimeric antigen receptor-T cells. CPT Pharmacometrics
Syst Pharmacol. 2019;8(5):285-295.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PEAK_ROUNDING_DAYS", "cart_auc", "cart_curve", "clock_integral", "log_cart_curve", "peak_clock",
           "peak_clock_inverse", "peak_rounding", "quadrature_auc", "time_below"]

# h of the peak clock u(d) = h log cosh(d/h): the peak is rounded over about +-2h days. 2 days: at h = 1 a fit
# of the example cohort at target_accept 0.9 had 36 divergences (h = 2: 1); docs/priors.md#cart-rounded-peak
PEAK_ROUNDING_DAYS = 2.0
# Gauss-Legendre nodes per phase for the pytensor AUC (the numpy one is closed form; agreement tested)
AUC_NODES = 40


def peak_rounding(h: float | None) -> float:
    """``h``, or ``PEAK_ROUNDING_DAYS`` read when called (a diagnosis script may set it for a whole process)."""
    return PEAK_ROUNDING_DAYS if h is None else h


def _tensor(x, lib):
    """``x`` as an array of ``lib`` (numpy or pytensor.tensor)."""
    return np.asarray(x, dtype=float) if lib is np else lib.as_tensor_variable(x)


def peak_clock(d, h: float | None = None, *, lib=np):
    """u(d) = h log cosh(d/h) = h [log(1 + e^{2d/h}) - d/h - log 2] (stable), even, u(0) = u'(0) = 0
    (``lib`` numpy or pytensor.tensor)."""
    h = peak_rounding(h)
    d = _tensor(d, lib)
    return h * (lib.logaddexp(0.0, 2.0 * d / h) - d / h - np.log(2.0))


def peak_clock_inverse(u, h: float | None = None, *, lib=np):
    """d >= 0 with u(d) = u >= 0: h acosh(e^{u/h}) = u + h log1p(sqrt(1 - e^{-2u/h})) (stable; ``lib`` numpy or
    pytensor.tensor)."""
    h = peak_rounding(h)
    return u + h * lib.log1p(lib.sqrt(-lib.expm1(-2.0 * u / h)))


def cart_curve(t, cmax, tmax, foldx, alpha, beta, fb, *, h: float | None = None):
    """The CAR-T curve C(t) (copies/ug; module docstring), vectorised over patients; ``h`` -> 0 is Stein's curve."""
    t = np.asarray(t, dtype=float)
    u = peak_clock(t - tmax, h)
    rho = np.log(foldx) / peak_clock(tmax, h)
    expansion = cmax * np.exp(-rho * u)
    contraction = cmax * ((1 - fb) * np.exp(-alpha * u) + fb * np.exp(-beta * u))
    return np.where(t < tmax, expansion, contraction)


def log_cart_curve(t, log_cmax, tmax, log_foldx, alpha, beta, logit_fb, *, h: float | None = None, lib=np):
    """log C(t), stable on the log scale, from log Cmax, Tmax, log foldx, alpha, beta and logit FB (broadcasts;
    ``lib`` numpy or pytensor.tensor, so the model's graph and the numpy code evaluate one definition):
    log Cmax - rho u before Tmax, log Cmax + log((1-FB) e^{-alpha u} + FB e^{-beta u}) after, u = peak_clock(t - Tmax),
    rho = log foldx / peak_clock(Tmax); ``h`` -> 0 is Stein's kinked curve."""
    t = _tensor(t, lib)
    u = peak_clock(t - tmax, h, lib=lib)
    expansion = log_cmax - log_foldx / peak_clock(tmax, h, lib=lib) * u
    log_fb = -lib.logaddexp(0.0, -logit_fb)
    log_1m_fb = -lib.logaddexp(0.0, logit_fb)
    contraction = log_cmax + lib.logaddexp(log_1m_fb - alpha * u, log_fb - beta * u)
    return lib.where(t < tmax, expansion, contraction)


def gauss_legendre_nodes(n: int = AUC_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1.0) / 2.0, w / 2.0


def quadrature_auc(t_end, log_cmax, tmax, log_foldx, alpha, beta, logit_fb, *, h: float | None = None, lib=np,
                   nodes: int = AUC_NODES):
    """AUC0-t_end of :func:`log_cart_curve` by Gauss-Legendre quadrature, ``nodes`` on each phase ([0, min(t_end,
    Tmax)] and [Tmax, max(t_end, Tmax)]; the curve is analytic within each). The model's graph uses it
    (``lib=pytensor.tensor``); in numpy :func:`cart_auc` is exact and uses it only for flat curves."""
    x, w = (_tensor(a, lib) for a in gauss_legendre_nodes(nodes))
    args = [_tensor(a, lib)[..., None] for a in (log_cmax, tmax, log_foldx, alpha, beta, logit_fb)]
    tmax_ = args[1]
    t_end = _tensor(t_end, lib)[..., None]
    t1 = lib.minimum(t_end, tmax_)
    expansion = (t1 * w * lib.exp(log_cart_curve(t1 * x, *args, h=h, lib=lib))).sum(axis=-1)
    span = lib.maximum(t_end - tmax_, 0.0)
    contraction = (span * w * lib.exp(log_cart_curve(tmax_ + span * x, *args, h=h, lib=lib))).sum(axis=-1)
    return expansion + contraction


def clock_integral(d0, d1, rate, h: float | None = None):
    r"""int_{d0}^{d1} e^{-rate u(d)} dd for 0 <= d0 <= d1 and rate h > 0, in closed form.

    With y = e^{-2d/h}, e^{-a u} = 2^{c} y^{c/2} (1+y)^{-c} (c = a h), and z = y/(1+y) turns the integral
    into a regularized incomplete beta function:

        int = 2^c (h/2) B(c/2, c/2) [I_{z(d0)}(c/2, c/2) - I_{z(d1)}(c/2, c/2)],   z(d) = 1/(1 + e^{2d/h}).

    Where d0 > 15 h (z underflows), u = d - h log 2 to within e^{-30}, so the integral is
    2^c e^{-a d0} (1 - e^{-a (d1 - d0)}) / a.
    """
    from scipy.special import betainc, betaln, expit

    h = peak_rounding(h)
    d0, d1, a = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (d0, d1, rate)))
    c = a * h
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        scale = np.exp(c * np.log(2.0) + betaln(c / 2, c / 2)) * (h / 2)
        exact = scale * (betainc(c / 2, c / 2, expit(-2.0 * d0 / h)) - betainc(c / 2, c / 2, expit(-2.0 * d1 / h)))
        far = np.exp(c * np.log(2.0) - a * d0) * -np.expm1(-a * (d1 - d0)) / a
    return np.where(d0 > 15.0 * h, far, exact)


def cart_auc(t_end, cmax, tmax, foldx, alpha, beta, fb, *, h: float | None = None):
    r"""AUC of the curve from 0 to ``t_end``, in closed form (:func:`clock_integral`):

    AUC = Cmax int_{Tmax - t1}^{Tmax} e^{-rho u} + Cmax [(1-FB) int_0^S e^{-alpha u} + FB int_0^S e^{-beta u}],
    t1 = min(t_end, Tmax), S = max(t_end - Tmax, 0).

    A curve whose rate times h is below 1e-6 (foldx <= 1, which no prior makes plausible) is integrated by
    Gauss-Legendre quadrature instead (``AUC_NODES`` a phase).
    """
    h = peak_rounding(h)
    t_end, cmax, tmax, foldx, alpha, beta, fb = np.broadcast_arrays(
        *(np.asarray(v, dtype=float) for v in (t_end, cmax, tmax, foldx, alpha, beta, fb)))
    rho = np.log(foldx) / peak_clock(tmax, h)
    t1, span = np.minimum(t_end, tmax), np.maximum(t_end - tmax, 0.0)
    closed = cmax * (clock_integral(tmax - t1, tmax, rho, h)
                     + (1 - fb) * clock_integral(0.0, span, alpha, h) + fb * clock_integral(0.0, span, beta, h))
    flat = np.minimum(rho, beta) * h <= 1e-6
    if np.any(flat):
        closed = np.array(closed)
        closed[flat] = quadrature_auc(t_end[flat], np.log(cmax[flat]), tmax[flat], np.log(foldx[flat]), alpha[flat],
                                      beta[flat], np.log(fb[flat]) - np.log1p(-fb[flat]), h=h)
    return closed


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
