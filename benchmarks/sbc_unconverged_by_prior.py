"""Where in the prior a calibration study's unconverged fits lie (toolkit.calibration.metrics.unconverged_by_prior).

    python benchmarks/sbc_unconverged_by_prior.py STUDY_FOLDER [--top 0.15]

Prints, per ranked parameter, the unconverged share in the upper tail of its prior draws against the rest,
with Fisher's exact p. Without a study folder it reports that none was given (so `make benchmarks` runs).
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", help="folder of a `toolkit calibrate` study")
    parser.add_argument("--top", type=float, default=0.15, help="upper tail share of the prior draws")
    args = parser.parse_args()
    if not args.study:
        print("no study folder given; usage: python benchmarks/sbc_unconverged_by_prior.py STUDY [--top 0.15]")
        return 0
    from toolkit.calibration.metrics import unconverged_by_prior
    from toolkit.calibration.runner import load_results

    table = unconverged_by_prior(load_results(args.study), top=args.top)
    print(f"unconverged fits by prior draw (upper {args.top:.0%} of each parameter's draws vs the rest)")
    for _, r in table.iterrows():
        print(f"{r['parameter']:32s} > {r['upper_tail_above']:8.3g}: {r['unconverged_upper']:3d}/"
              f"{r['simulations_upper']:<4d} vs {r['unconverged_rest']:3d}/{r['simulations_rest']:<4d} "
              f"Fisher p = {r['p_fisher']:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
