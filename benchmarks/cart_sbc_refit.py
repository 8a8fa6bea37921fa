"""Refit one simulation of a CAR-T calibration study and say where its divergences are.

    python benchmarks/cart_sbc_refit.py STUDY SIM [--spec models/cart_primary.toml] [--target-accept 0.95]

Regenerates simulation SIM of the `toolkit calibrate cart` study in STUDY (its prior draw and cohort, from the
study's seed and its default_design folder), fits it once at the study's settings with nutpie's divergence
record, prints the verdict, steps per draw and step size, and the posterior coordinates whose divergent draws
differ most from the others (mean shift in posterior SDs), and for the patients whose parameters shift most: which
of their parameters are sampled centred (the mask of the simulated data, model 1.1.1), their true curve (contraction
half-life, Tmax, FB) and their simulated samples (quantified or below the LLOQ). Without arguments it says so (so
`make benchmarks` runs). A study made before model 1.1.1 regenerates other prior draws (the free patient
variable changed), so SIM names a simulation of a study made with the current model.

Its chains are not necessarily the study's: simulation 10 of the CAR-T 1.2.0 study, refitted here run by run,
converged at the second run, where the study's failed its third. ``benchmarks/sbc_rerun.py`` reran it through
the study's own code and gave the stored record in 4 of 5 tries (without the divergence record).
"""

from __future__ import annotations

import argparse
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?")
    parser.add_argument("sim", nargs="?", type=int)
    parser.add_argument("--spec", default="models/cart_primary.toml")
    parser.add_argument("--target-accept", type=float)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--patients", type=int, default=4)
    args = parser.parse_args()
    if args.study is None or args.sim is None:
        print("no study and simulation given; usage: python benchmarks/cart_sbc_refit.py STUDY SIM")
        return 0
    import nutpie
    import numpy as np

    from toolkit.calibration.api import reopen_study
    from toolkit.calibration.runner import _prepared, compiled_with_data
    from toolkit.inference import diagnose

    study = reopen_study(args.study, args.spec)
    problem, settings, seed, sim = study.problem, study.config["settings"], study.seed, args.sim
    target = args.target_accept or float(settings["target_accept"])
    theta = study.prior_draws([sim])[sim]
    data = study.data(sim, theta)
    prep = _prepared(problem)
    compiled = compiled_with_data(problem, prep, data)
    t0 = time.perf_counter()
    dt = nutpie.sample(compiled, draws=settings["draws"], tune=settings["tune"], chains=settings["chains"], cores=1,
                       seed=int((seed * 1_000_003 + sim) % 2**63), progress_bar=False, save_warmup=False,
                       target_accept=target, store_divergences=True)
    stats = dt["sample_stats"]
    div = stats["diverging"].values.reshape(-1)
    print(f"simulation {sim}, target_accept {target}: {int(div.sum())} divergences, "
          f"{time.perf_counter() - t0:.0f} s, {stats['n_steps'].values.mean():.0f} steps/draw, "
          f"step size {stats['step_size'].values.mean():.3f}")
    print(diagnose(dt, var_names=prep["names"]).as_dict())
    print("prior draw:", {k: np.round(v, 2).tolist() for k, v in theta.items() if k.startswith(("mu", "omega"))})
    if div.any():
        shifts = []
        for name, var in dt["posterior"].data_vars.items():
            x = var.values.reshape(div.size, -1)
            sd = x[~div].std(0) + 1e-12
            z = (x[div].mean(0) - x[~div].mean(0)) / sd
            shifts += [(abs(z[j]), f"{name}[{j}]" if x.shape[1] > 1 else name, z[j]) for j in range(x.shape[1])]
        print("coordinates whose divergent draws differ most (mean shift in posterior SDs):")
        for _, label, z in sorted(shifts, reverse=True)[:args.top]:
            print(f"  {label:32s} {z:+.2f}")
        print_patients(problem, theta, data, dt, div, args.patients)
    return 0


def print_patients(problem, theta, data, dt, div, top: int) -> None:
    """The ``top`` patients whose kinetic parameters shift most in the divergent draws: centring, truth, data."""
    import numpy as np

    from toolkit.models.cart import KINETIC_PARAMETERS, centering_mask, natural_parameters_np

    inputs = problem.simulated_inputs(data)
    mask = centering_mask(inputs)
    th = dt["posterior"]["theta_patient"].values.reshape(div.size, inputs.n_patients, -1)
    shift = np.abs(th[div].mean(0) - th[~div].mean(0)) / (th[~div].std(0) + 1e-12)
    truth = natural_parameters_np(np.asarray(theta["theta_patient"], float))
    print(f"patients whose parameters shift most (of {inputs.n_patients}):")
    for p in np.argsort(-shift.max(1))[:top]:
        rows = np.flatnonzero(inputs.sample_patient == p)
        quantified = inputs.censored[rows] == 0
        centred = [k for k, c in zip(KINETIC_PARAMETERS, mask[p]) if c] or ["none"]
        print(f"  patient {p}: largest shift {shift[p].max():.2f} SD ({KINETIC_PARAMETERS[int(shift[p].argmax())]}); "
              f"centred: {', '.join(centred)}; truth: contraction half-life "
              f"{24 * np.log(2) / truth['alpha'][p]:.3g} h, Tmax {truth['tmax'][p]:.1f} d, FB {truth['fb'][p]:.2g}")
        print("    samples (day: log level, or BLQ): " + ", ".join(
            f"{d:.0f}: {v:.1f}" if q else f"{d:.0f}: BLQ" for d, v, q in zip(inputs.day[rows],
                                                                         inputs.log_value[rows], quantified)))


if __name__ == "__main__":
    sys.exit(main())
