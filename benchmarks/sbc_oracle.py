"""How much of a CAR-T study's verdict on an arm's typical value is fixed by its prior draws, before any fit?

    python benchmarks/sbc_oracle.py STUDY [--spec SPEC]
    python benchmarks/sbc_oracle.py STUDY --draws N [--seed SEED]   # the oracle alone, N fresh prior draws
    python benchmarks/sbc_oracle.py STUDY --store    # write oracle_pit into a study stored before it was recorded

The typical patient's value of a kinetic parameter in an arm, L = mu + delta (arm) on the log scale (Cmax, Tmax,
persistence half-life: ``cmax_copies_per_ug_*``, ``tmax_days_*``, ``half_life_persistence_days_*``, each exp of
it), is learned from the arm's n patients. When their data pin each patient's value theta_i, the posterior of L
is close to that of an oracle that knows every theta_i:

    L | theta ~ Normal(mean_i theta_i, omega^2 / n)  (flat prior on L),  oracle z = (L - mean_i theta_i) / (omega / sqrt n),

a function of the prior draw alone. A study's z = (truth - posterior mean) / posterior SD for L then follows the
oracle z, and its rank test tests how the prior draws happened to fall as much as it tests the fits. Per arm and
parameter this prints, from the stored study and its regenerated prior draws (no fit): the oracle z's SD and KS
p of Phi(oracle z); the fitted z's SD and the KS p of the stored PIT; their correlation; the median share of the
posterior variance the oracle accounts for, omega^2 / (n s^2) (s: posterior SD of L, from the stored mean and
SD by a log-normal match); and the ratio of the fitted to the oracle z's SD with a bootstrap 95% interval (over
simulations): what the fits add to the draws' own spread (about 1 where the fits are right). With ``--draws N``
it prints only the oracle z's SD, for every kinetic parameter and arm, over the first N prior draws of ``--seed``
(default the study's) at the study's design: how far the draws alone stray from 1 by chance. ``--store`` adds
the oracle's PIT to each stored simulation that lacks it (``StoredStudy.add_oracle_pits``), so the study's
summary (``toolkit calibrate ... --resume``, or ``write_calibration_report``) shows ``p_oracle``.
docs/calibration.md, "Why tmax_days_experimental failed", reads the CAR-T 1.2.0 study with it.
Without arguments it says so (so `make benchmarks` runs).
"""

from __future__ import annotations

import argparse
import sys

#: kinetic parameter -> the stored arm quantity that is exp of its typical value
ARM_QUANTITY = {"cmax": "cmax_copies_per_ug", "tmax": "tmax_days", "persistence": "half_life_persistence_days"}
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
    from toolkit.models.cart import ARMS, KINETIC_PARAMETERS

    study = reopen_study(args.study, args.spec)
    arm_of_patient = study.problem.inputs().arm
    effects_on = study.problem.effects_on

    def oracle_z(th, k: int, code: int) -> tuple[float, float, float]:
        """(oracle z, typical value L, latent SD omega / sqrt n) of parameter k in arm ``code`` at draw ``th``."""
        members = arm_of_patient == code
        effect = dict(zip(effects_on, np.atleast_1d(th.get("arm_effect", []))))
        typical = float(th["mu_kinetic"][k]) + code * float(effect.get(KINETIC_PARAMETERS[k], 0.0))
        latent_sd = float(th["omega_kinetic"][k]) / np.sqrt(members.sum())
        return (typical - float(np.mean(np.asarray(th["theta_patient"])[members, k]))) / latent_sd, typical, latent_sd

    if args.store:
        print(f"{args.study}: oracle_pit written into {study.add_oracle_pits()} stored simulations")
        return 0
    if args.draws:
        seed = study.seed if args.seed is None else args.seed
        thetas = prior_draws(study.problem, list(range(args.draws)), seed=seed)
        print(f"oracle z SD over {args.draws} prior draws of seed {seed} (control, experimental):")
        for k, name in enumerate(KINETIC_PARAMETERS):
            sds = [np.std([oracle_z(th, k, code)[0] for th in thetas.values()], ddof=1) for code in (0, 1)]
            print(f"  {name}: {sds[0]:.3f}, {sds[1]:.3f}")
        return 0
    results = study.results()
    sims = sorted(results["sim"].unique().tolist())
    thetas = study.prior_draws(sims)
    rng = np.random.default_rng(0)
    wide = results.pivot_table(index="sim", columns="quantity", values=["prior_value", "pit", "post_mean", "post_sd"])
    print(f"{args.study}: {len(sims)} simulations")
    for name, stored in ARM_QUANTITY.items():
        k = KINETIC_PARAMETERS.index(name)
        for code, arm in enumerate(ARMS):
            q = f"{stored}_{arm}"
            oracle, fitted, shares = [], [], []
            for sim in sims:
                oz, typical, latent_sd = oracle_z(thetas[sim], k, code)
                mean, sd = wide["post_mean"][q][sim], wide["post_sd"][q][sim]
                s = np.sqrt(np.log1p((sd / mean) ** 2))  # log-normal with the stored mean and SD
                z = (typical - (np.log(mean) - s**2 / 2)) / s
                share = (latent_sd / s) ** 2
                oracle.append(oz)
                fitted.append(z)
                shares.append(share)
            oracle, fitted = np.asarray(oracle), np.asarray(fitted)
            resample = rng.integers(0, len(sims), (BOOTSTRAP, len(sims)))
            ratio = fitted[resample].std(axis=1, ddof=1) / oracle[resample].std(axis=1, ddof=1)
            pit = wide["pit"][q].to_numpy()
            print(f"{q}: oracle z SD {oracle.std(ddof=1):.3f}, KS p {kstest(norm.cdf(oracle), 'uniform').pvalue:.4f}"
                  f" | fitted z SD {fitted.std(ddof=1):.3f}, KS p (PIT) {kstest(pit, 'uniform').pvalue:.4f}"
                  f" | correlation {np.corrcoef(oracle, fitted)[0, 1]:.2f}, oracle share of posterior variance"
                  f" (median) {np.median(shares):.2f} | SD ratio fitted / oracle "
                  f"{fitted.std(ddof=1) / oracle.std(ddof=1):.3f} ({np.quantile(ratio, 0.025):.3f}-"
                  f"{np.quantile(ratio, 0.975):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
