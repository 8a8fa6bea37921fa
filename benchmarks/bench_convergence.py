"""The convergence verdict's statistics: ``toolkit.convergence`` (all elements at once) beside ArviZ (one
element at a time), on the same draws.

Rank-normalised R-hat, bulk ESS and tail ESS of 4 chains x 1000 draws for E elements (11: the durability
model's parameters; 300: a 60-patient CAR-T fit's patient-level values; 3000: 600 patients), CPU seconds per
verdict (best of ``--repeat``), and whether the two give the same numbers (they must, bit for bit)::

    .venv/bin/python benchmarks/bench_convergence.py
    .venv/bin/python benchmarks/bench_convergence.py --elements 11,300 --repeat 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _arviz(draws, prob):
    from arviz_stats.base import array_stats

    axes = {"chain_axis": 0, "draw_axis": 1}
    return (np.ravel(array_stats.ess(draws, method="bulk", **axes)),
            np.ravel(array_stats.ess(draws, method="tail", prob=prob, **axes)),
            np.ravel(array_stats.rhat(draws, method="rank", **axes)))


def _best(fn, repeat: int) -> tuple[float, tuple]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        times.append(time.process_time() - t0)
    return min(times), out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--elements", default="11,300,3000")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)

    from arviz_stats.validate import validate_ci_prob

    from toolkit.convergence import rank_statistics

    prob = validate_ci_prob(None)
    rng = np.random.default_rng(1)
    print(f"{'elements':>8} | {'toolkit s':>9} | {'ArviZ s':>8} | {'speed-up':>8} | same values")
    for n in [int(e) for e in args.elements.split(",")]:
        # AR(1) chains with a spread of autocorrelations, as a posterior's elements have
        phi = rng.uniform(0.0, 0.9, size=n)
        eps = rng.normal(size=(4, 1000, n))
        draws = np.empty_like(eps)
        draws[:, 0] = eps[:, 0]
        for t in range(1, 1000):
            draws[:, t] = phi * draws[:, t - 1] + eps[:, t]
        rank_statistics(draws[..., :2], prob), _arviz(draws[..., :2], prob)  # imports and first calls
        ours_s, ours = _best(lambda: rank_statistics(draws, prob), args.repeat)
        theirs_s, theirs = _best(lambda: _arviz(draws, prob), args.repeat)
        same = all(np.array_equal(a, b) for a, b in zip(ours, theirs))
        print(f"{n:>8} | {ours_s:>9.4f} | {theirs_s:>8.4f} | {theirs_s / ours_s:>7.1f}x | {same}")
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
