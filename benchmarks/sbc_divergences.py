"""Where a calibration study's divergent transitions start and end, coordinate by coordinate.

    python benchmarks/sbc_divergences.py STUDY SIM [--spec SPEC] [--chains N] [--draws N] [--seed S]

Regenerates simulation SIM of the `toolkit calibrate` study in STUDY (its prior draw and cohort, as
``sbc_rerun.py`` does), samples the study's compiled fit model on it once with nutpie's ``store_divergences``
(the study's tune, draws and target_accept; 2 chains on 2 threads by default), and prints, for each divergent
transition, its energy error, the five unconstrained coordinates (free variable[index]) that sit furthest
from the posterior where the divergent stretch of the trajectory started, and the five that moved most along
it, as z-scores (posterior mean and SD of that coordinate over the run's draws) at its start and its end. A divergence that starts 25 posterior
SDs out on one patient's latency has a different cause from one at a funnel's neck (small SD, centred values).
``sbc_rerun.py --detail`` gives where the divergent *draws* sit (the states kept), this the integrator's own
points. It samples the model this toolkit builds, which may be a newer version than the study's (both are
printed): the same cohort under a changed model. Not bit-identical to the study's run (another chain count and thread layout). Without arguments it says
so (so `make benchmarks` runs).
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?")
    parser.add_argument("sim", nargs="?", type=int)
    parser.add_argument("--spec", help="the spec the study was made with (default: none, as toolkit calibrate)")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--draws", type=int, help="draws a chain (default: the study's)")
    parser.add_argument("--seed", type=int, help="sampler seed (default: the study's)")
    parser.add_argument("--top", type=int, default=5, help="coordinates shown per divergence")
    args = parser.parse_args()
    if args.study is None or args.sim is None:
        print("no study and simulation given; usage: python benchmarks/sbc_divergences.py STUDY SIM")
        return 0
    import nutpie
    import numpy as np

    from toolkit.calibration.api import reopen_study
    from toolkit.calibration.runner import StudyError, _prepared, compiled_with_data, simulated_data, versions_line

    try:
        study = reopen_study(args.study, args.spec)
    except StudyError as exc:
        print(exc)
        return 2
    problem, settings = study.problem, study.settings
    print(versions_line(study))
    theta = study.prior_draws([args.sim])[args.sim]
    prep = _prepared(problem)
    compiled = compiled_with_data(problem, prep, simulated_data(problem, args.sim, theta, seed=study.seed))
    dt = nutpie.sample(compiled, draws=args.draws or settings.draws, tune=settings.tune, chains=args.chains,
                       cores=args.chains, seed=study.seed if args.seed is None else args.seed, progress_bar=False,
                       target_accept=settings.target_accept, store_divergences=True, store_unconstrained=True)
    stats = dt.sample_stats
    diverging = stats["diverging"].values.astype(bool)
    print(f"simulation {args.sim}: {int(diverging.sum())} divergent transitions in {args.chains} chains x "
          f"{diverging.shape[1]} draws; median leapfrog steps a draw {np.median(stats['n_steps'].values):.0f}")
    labels = [f"{name}[{j}]" for name in prep["value_names"] for j in range(np.asarray(prep["start"][name]).size)]
    flat = stats["unconstrained_draw"].values.reshape(-1, len(labels))
    mean, sd = flat.mean(axis=0), flat.std(axis=0)
    sd = np.where(sd > 0, sd, np.inf)
    for chain, draw in zip(*np.nonzero(diverging)):
        start = (stats["divergence_start"].values[chain, draw] - mean) / sd
        end = (stats["divergence_end"].values[chain, draw] - mean) / sd
        far, moved = np.argsort(-np.abs(start))[:args.top], np.argsort(-np.abs(end - start))[:args.top]
        print(f"  chain {chain} draw {draw}: energy error "
              f"{float(stats['divergence_energy_error'].values[chain, draw]):.0f}\n    furthest out: "
              + ", ".join(f"{labels[k]} {start[k]:+.1f} -> {end[k]:+.1f}" for k in far)
              + "\n    moved most: " + ", ".join(f"{labels[k]} {start[k]:+.1f} -> {end[k]:+.1f}" for k in moved))
    return 0


if __name__ == "__main__":
    sys.exit(main())
