"""How much of a calibration study's verdict on an arm's typical value is fixed by its prior draws, before any fit?

    python benchmarks/sbc_oracle.py STUDY [--spec SPEC]
    python benchmarks/sbc_oracle.py STUDY --draws N [--seed SEED]   # the oracle alone, N fresh prior draws
    python benchmarks/sbc_oracle.py STUDY --store    # write oracle_pit into a study stored before it was recorded

An arm's typical value L of a patient-level parameter (CAR-T: log Cmax, log Tmax, ...; MRD: log kill rate, ...)
is learned from the arm's n patients. When their data pin each patient's value theta_i, the posterior of L is
close to that of an oracle that knows every theta_i, L | theta ~ Normal(mean_i theta_i, omega^2 / n), whose
z = (L - mean_i theta_i) / (omega / sqrt n) is a function of the prior draw alone (the problem's
``oracle_pits``, ``toolkit.calibration.generators.arm_oracle_pits``). A study's rank of L then follows the
oracle's, and its rank test tests how the prior draws happened to fall as much as it tests the fits.

For each quantity with an oracle this prints, from the stored study and its regenerated prior draws (no fit):
the SD of the oracle's z and the KS p of its PIT; the SD of the fit's z = Phi^-1(stored PIT) and the KS p of
that PIT; their correlation and the least-squares slope of the fit's z on the oracle's; the ratio of the two SDs with a bootstrap 95% interval over simulations (what the
fits add to the draws' own spread: about 1 where the fits are right); and, for the CAR-T arm quantities that
are exp(L) (``cmax_copies_per_ug_*``, ``tmax_days_*``, ``half_life_persistence_days_*``), the median share of
the posterior variance of L the oracle accounts for, omega^2 / (n s^2) (s: posterior SD of L, from the stored
mean and SD by a log-normal match). With ``--draws N`` it prints only the oracle z's SD per quantity over the
first N prior draws of ``--seed`` (default the study's) at the study's design: how far the draws alone stray
from 1 by chance. ``--store`` adds the oracle's PIT to each stored simulation that lacks it
(``StoredStudy.add_oracle_pits``), so the study's summary shows ``p_oracle``.
docs/calibration.md, "Why tmax_days_experimental failed", reads the CAR-T 1.2.0 study with it.
Without arguments it says so (so `make benchmarks` runs).
"""

from __future__ import annotations

import argparse
import sys

BOOTSTRAP = 2000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?")
    parser.add_argument("--spec", default="models/cart_primary.toml", help="the spec the study was made with")
    parser.add_argument("--draws", type=int, help="the oracle alone, over this many prior draws (no stored fits)")
    parser.add_argument("--seed", type=int, help="with --draws: the seed of the prior draws (default the study's)")
    parser.add_argument("--store", action="store_true", help="write oracle_pit into stored simulations lacking it")
    args = parser.parse_args()
    if args.study is None:
        print("no study given; usage: python benchmarks/sbc_oracle.py STUDY [--spec SPEC]")
        return 0
    import numpy as np
    from scipy.stats import kstest, norm

    from toolkit.calibration.api import reopen_study
    from toolkit.calibration.runner import prior_draws

    study = reopen_study(args.study, args.spec)
    problem = study.problem
    if not hasattr(problem, "oracle_pits"):
        print(f"{args.study}: the {study.config['problem']['model']} problem has no oracle")
        return 0
    if args.store:
        print(f"{args.study}: oracle_pit written into {study.add_oracle_pits()} stored simulations")
        return 0
    z_of = lambda pit: norm.ppf(np.clip(pit, 1e-9, 1 - 1e-9))  # noqa: E731
    if args.draws:
        seed = study.seed if args.seed is None else args.seed
        pits = [problem.oracle_pits(t) for t in prior_draws(problem, list(range(args.draws)), seed=seed).values()]
        print(f"oracle z SD over {args.draws} prior draws of seed {seed}:")
        for q in pits[0]:
            print(f"  {q}: {np.std(z_of(np.array([p[q] for p in pits])), ddof=1):.3f}")
        return 0
    results = study.results()
    sims = sorted(results["sim"].unique().tolist())
    thetas = study.prior_draws(sims)
    oracle = {sim: problem.oracle_pits(thetas[sim]) for sim in sims}
    wide = results.pivot_table(index="sim", columns="quantity", values=["pit", "post_mean", "post_sd"])
    rng = np.random.default_rng(0)
    print(f"{args.study}: {len(sims)} simulations")
    for q in oracle[sims[0]]:
        oz = z_of(np.array([oracle[sim][q] for sim in sims]))
        pit = wide["pit"][q].reindex(sims).to_numpy(float)
        fz = z_of(pit)
        resample = rng.integers(0, len(sims), (BOOTSTRAP, len(sims)))
        ratio = fz[resample].std(axis=1, ddof=1) / oz[resample].std(axis=1, ddof=1)
        line = (f"{q}: oracle z SD {oz.std(ddof=1):.3f}, KS p {kstest(norm.cdf(oz), 'uniform').pvalue:.4f} | fitted z "
                f"SD {fz.std(ddof=1):.3f}, KS p {kstest(pit, 'uniform').pvalue:.4f} | correlation "
                f"{np.corrcoef(oz, fz)[0, 1]:.2f}, slope {np.polyfit(oz, fz, 1)[0]:.2f} | SD ratio fitted / oracle {fz.std(ddof=1) / oz.std(ddof=1):.3f} "
                f"({np.quantile(ratio, 0.025):.3f}-{np.quantile(ratio, 0.975):.3f})")
        share = _oracle_share(problem, thetas, wide, sims, q)
        print(line + (f" | oracle share of posterior variance (median) {share:.2f}" if share is not None else ""))
    return 0


def _oracle_share(problem, thetas, wide, sims, q):
    """Median omega^2 / (n s^2) for a CAR-T quantity exp(L) of one arm (None for other quantities)."""
    import numpy as np

    from toolkit.calibration.kinetics import TYPICAL_ARM_QUANTITIES
    from toolkit.models.cart import ARMS, KINETIC_PARAMETERS

    for name, stored in TYPICAL_ARM_QUANTITIES.items():
        if name == "fb":  # a sigmoid, not exp(L): no log-normal match
            continue
        for code, arm in enumerate(ARMS):
            if q == f"{stored}_{arm}":
                k, n = KINETIC_PARAMETERS.index(name), int(np.sum(problem.inputs().arm == code))
                mean, sd = wide["post_mean"][q].reindex(sims).to_numpy(), wide["post_sd"][q].reindex(sims).to_numpy()
                s2 = np.log1p((sd / mean) ** 2)  # variance of the log-normal with the stored mean and SD
                omega = np.array([float(thetas[sim]["omega_kinetic"][k]) for sim in sims])
                return float(np.median(omega**2 / n / s2))
    return None


if __name__ == "__main__":
    sys.exit(main())
