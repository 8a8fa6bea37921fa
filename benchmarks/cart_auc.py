r"""CAR-T AUC0-28 in numpy: the closed form (``toolkit.models.kinetics.cart_auc``, incomplete beta on the peak
clock) against Gauss-Legendre quadrature (``quadrature_auc``, the rule of the model's graph), on patients drawn
from the default priors with their between-patient spread widened 1.5-fold. Prints the seconds per 100,000
patients and the largest relative error against 400-node quadrature (patients with alpha < 50/day, where 400
nodes resolve the fall).

    .venv/bin/python benchmarks/cart_auc.py [--patients 20000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patients", type=int, default=20000)
    args = p.parse_args(argv)

    from toolkit.models.cart import CartPriors, natural_parameters_np
    from toolkit.models.kinetics import cart_auc, quadrature_auc

    rng = np.random.default_rng(1)
    mu, omega = CartPriors().mu(), CartPriors().omega()
    n = args.patients
    theta = (mu[:, 0] + mu[:, 1] * rng.standard_normal((n, 6))
             + 1.5 * np.exp(np.log(omega[:, 0]) + omega[:, 1] * rng.standard_normal((n, 6))) * rng.standard_normal((n, 6)))
    nat = natural_parameters_np(theta)
    logs = (theta[:, 0], nat["tmax"], theta[:, 2], nat["alpha"], nat["beta"], theta[:, 4])
    reference = quadrature_auc(28.0, *logs, nodes=400)
    sane = nat["alpha"] < 50
    rows = [("closed form", lambda: cart_auc(28.0, **nat))]
    rows += [(f"quadrature, {k} nodes a phase", lambda k=k: quadrature_auc(28.0, *logs, nodes=k)) for k in (20, 40)]
    print(f"{n} patients (prior spread x1.5); seconds per 100,000 patients, max relative error vs 400 nodes")
    for name, fn in rows:
        fn()  # warm (imports)
        t0 = time.perf_counter()
        value = fn()
        seconds = (time.perf_counter() - t0) * 100_000 / n
        error = np.max(np.abs(value[sane] / reference[sane] - 1))
        print(f"  {name:32s} {seconds:6.2f} s   {error:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
