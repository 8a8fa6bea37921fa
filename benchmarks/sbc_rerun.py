"""Rerun one simulation of a calibration study as its Dask worker ran it, and print its record beside the stored one.

    python benchmarks/sbc_rerun.py STUDY SIM [SIM ...] [--spec SPEC] [--extend-sampling K] [--policy P] [--detail]

Regenerates simulation SIM of the `toolkit calibrate` study in STUDY (its prior draw and cohort, from the study's
seed and default_design folder) and runs it through the study's own code, ``toolkit.calibration.runner.
run_simulation``, with the study's settings and reruns (``extend_sampling``; give the study's ``--spec``: the
rebuilt problem must match the one stored in ``study.json``, as ``--resume`` requires), in a process set up as a
worker is (``worker_environment``: one thread each, empty compile caches; the script restarts itself so). Prints
the verdict, runs, R-hat, ESS, divergences and iterations a chain (tuning included) beside the stored record's, and
the CPU seconds the rerun took (all threads: machine load does not inflate them, as it does wall time).
``--policy`` reruns it under another rerun policy (``continue`` on a study stored under ``what-failed``: the
first run's draws are the stored first run's, the cost of what follows is the difference). Without arguments it
says so (so `make benchmarks` runs).

``--detail`` also prints where the kept run is hard: the verdict's worst elements (R-hat, bulk and tail ESS, by
variable and index), the sampler's leapfrog steps per draw and step size, the population parameters' true
values beside their posterior, and, after divergences, how the divergent draws of each scalar sit in its
posterior (their mean as a z-score); for the CAR-T model also the samples, true values and chain means of the
patient with the worst R-hat and of the one whose values the divergent draws push furthest out.
``--extend-sampling K`` overrides the study's reruns (0: the first run alone, to look at what the verdict first
sees); ``--set FIELD=VALUE`` a sampler setting (``--extend-sampling 0
--set draws=4000 --set target_accept=0.975 --run 3`` runs alone the fourth run of a study whose runs 2 and 3
failed, the third on divergences alone, under the rerun policy of ``toolkit.fitting.run_extending``).

How far it reproduces: to the last digit, when the model is compiled cold, as each study worker compiles it
(``start_local_cluster`` empties the workers' caches): the script restarts itself with empty PyTensor and numba
cache directories of its own (``worker_environment``) and the workers' thread settings. Compiled against a warm
cache the same seed samples other chains (CAR-T 1.2.1 study, simulation 6: min bulk ESS 1,507 warm, 1,237 cold
and stored); that is why, until December 2026, reruns matched the stored record only sometimes (simulation 10
of the 1.2.0 study in 4 of 6 tries). The cold compile adds a minute or two to the first simulation.
``benchmarks/cart_sbc_refit.py`` refits with the divergence record (its own sampler calls, not the study's).

``--kinetics-alone`` (a joint study) fits the CAR-T model alone to the simulation's CAR-T levels: the same prior
draw and the same levels as the joint fit (the joint generator draws the levels first, from the same random
stream; ``JointCalibration.kinetic_problem``), the CAR-T problem of the same design and kinetic priors. With
``--extend-sampling 0 --detail`` it shows what the relapse part does to the kinetic fit's step size and
divergences (docs/calibration.md, "Why the joint fits diverge less").
"""

from __future__ import annotations

import argparse
import os
import sys

SHOWN = ("status", "converged", "first_converged", "runs", "max_rhat", "min_ess_bulk", "min_ess_tail",
         "divergences", "seconds")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?")
    parser.add_argument("sim", nargs="*", type=int)
    parser.add_argument("--spec", help="the spec the study was made with (default: none, as toolkit calibrate)")
    parser.add_argument("--extend-sampling", type=int, help="reruns allowed (default: the study's)")
    parser.add_argument("--detail", action="store_true", help="also print where the kept run is hard")
    parser.add_argument("--save", metavar="DIR", help="with --detail: write the kept run (posterior and sampler "
                        "statistics) to DIR/sim_<SIM>.nc for a closer look")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a sampler setting of the study (draws, tune, chains, target_accept; not the "
                             "seed, which also draws the cohort: see --run), e.g. --extend-sampling 0 "
                             "--set draws=4000")
    parser.add_argument("--policy", choices=("continue", "what-failed", "doubling"),
                        help="rerun policy (default: the study's; toolkit.inference.RERUN_POLICIES), e.g. "
                             "--policy continue on a study stored under what-failed to compare their cost")
    parser.add_argument("--run", type=int, default=0, metavar="K",
                        help="sample from the K-th rerun's seed (the study's seed + K; the cohort stays the "
                             "study's): with --extend-sampling 0 and --set, one rerun of the study alone")
    parser.add_argument("--kinetics-alone", action="store_true",
                        help="a joint study: fit the CAR-T model alone to the simulation's CAR-T levels")
    args = parser.parse_args()
    if args.study is None or not args.sim:
        print("no study and simulation given; usage: python benchmarks/sbc_rerun.py STUDY SIM")
        return 0
    from toolkit.calibration.runner import worker_environment

    if "TOOLKIT_RERUN_CACHES" not in os.environ:  # before numpy and numba load: restart as a cold worker
        import tempfile

        caches = tempfile.mkdtemp(prefix="sbc-rerun-")
        env = {**os.environ, **worker_environment(caches, "rerun"), "TOOLKIT_RERUN_CACHES": caches}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    import resource
    from dataclasses import replace

    import pandas as pd

    from toolkit.calibration.api import reopen_study
    from toolkit.calibration.runner import (StudyError, _sim_path, iterations_per_chain, rerun_policy_of,
                                            run_simulation, versions_line)

    try:
        study = reopen_study(args.study, args.spec)
    except StudyError as exc:
        print(exc)
        return 2
    problem, stored, settings = study.problem, study.config["settings"], study.settings
    if args.kinetics_alone:
        if not hasattr(problem, "kinetic_problem"):
            parser.error("--kinetics-alone takes a joint study")
        problem = problem.kinetic_problem()
        print("fitting the CAR-T model alone to the joint study's CAR-T levels")
    print(versions_line(study))
    if args.set:
        fields = dict(item.split("=", 1) for item in args.set)
        if not set(fields) <= {"draws", "tune", "chains", "target_accept"}:
            parser.error("--set takes draws, tune, chains or target_accept")
        settings = replace(settings, **{k: (float(v) if k == "target_accept" else int(v)) for k, v in fields.items()})
        print("settings:", settings)
    extensions = int(stored.get("extend_sampling", 0)) if args.extend_sampling is None else args.extend_sampling
    study_seed = study.seed  # draws the prior values and the cohorts
    thetas = study.prior_draws(args.sim)
    settings = replace(settings, random_seed=study_seed + args.run)  # --run K: the K-th rerun's sampler seed
    for sim in args.sim:
        keep = {"problem": problem} if args.detail else None
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        record = run_simulation(problem, sim, thetas[sim], settings=settings, extensions=extensions,
                                policy=args.policy or rerun_policy_of(stored), keep=keep, cohort_seed=study_seed)
        used = resource.getrusage(resource.RUSAGE_SELF)
        print(f"simulation {sim}")
        print("rerun: ", {k: record[k] for k in SHOWN}, record["error"] or "",
              "iterations a chain:", iterations_per_chain(record["run_history"], settings.tune, settings.chains),
              f"CPU seconds (all threads): {used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime:.0f}")
        path = _sim_path(study.path, sim)
        if path.exists():
            row = pd.read_parquet(path).iloc[0]
            print("stored (the joint fit):" if args.kinetics_alone else "stored:", row[list(SHOWN)].to_dict(),
                  "iterations a chain:",
                  iterations_per_chain(row.get("run_history"), settings.tune, settings.chains))
        if keep and "posterior" in keep:
            print_detail(keep, thetas[sim])
            if args.save:
                os.makedirs(args.save, exist_ok=True)
                keep["posterior"].to_netcdf(os.path.join(args.save, f"sim_{sim}.nc"))
        sys.stdout.flush()
    return 0


def print_detail(keep: dict, theta: dict, top: int = 8) -> None:
    """Where the kept run is hard: worst elements, sampler statistics, population truths, divergent draws."""
    import numpy as np

    from toolkit.calibration.runner import divergent_z, divergent_z_of
    from toolkit.inference import element_rows

    post, stats = keep["posterior"]["posterior"].to_dataset(), keep["posterior"]["sample_stats"].to_dataset()
    for attempt in keep.get("attempts", []):
        print("  run:", {k: attempt[k] for k in ("draws", "target_accept", "converged", "max_rhat", "min_ess_bulk",
                                                  "divergences")})
    rows = element_rows(post, keep["names"])  # as diagnose judges them
    for label, key in (("min(bulk, tail) ESS", lambda r: min(r[3], r[4])), ("R-hat", lambda r: -r[2])):
        print(f"  worst {top} elements by {label} (variable[index]: R-hat, bulk ESS, tail ESS):")
        for name, j, rhat, bulk, tail in sorted(rows, key=key)[:top]:
            print(f"    {name}[{j}]: {rhat:.3f}, {bulk:.0f}, {tail:.0f}")
    worst = min((r for r in rows if r[0] == "theta_patient"), key=lambda r: -r[2], default=None)
    if worst is not None and hasattr(keep["problem"], "simulated_inputs"):
        print_patient(keep, post, theta, int(worst[1]))
    steps = np.asarray(stats["n_steps"]) if "n_steps" in stats else None
    if steps is not None:
        print(f"  leapfrog steps per draw: median {np.median(steps):.0f}, 90th pct {np.percentile(steps, 90):.0f}, "
              f"max {steps.max():.0f}; step size per chain: "
              + ", ".join(f"{v:.3g}" for v in np.asarray(stats["step_size"]).mean(axis=1)))
    diverging = (np.asarray(stats["diverging"].transpose("chain", "draw")).astype(bool) if "diverging" in stats
                 else np.zeros(1, bool))
    where = divergent_z(keep["problem"], post, diverging, keep["names"]) if diverging.any() else {}
    print("  population parameters (true value: posterior mean, SD; divergent draws' mean as z):")
    for name in keep["names"]:
        values = post[name].transpose("chain", "draw", ...).values
        if values.ndim != 2:
            continue
        line = f"    {name}: true {float(np.ravel(theta[name])[0]):.3g}: {values.mean():.3g}, {values.std():.3g}"
        if name in where:
            line += f"; divergent z {where[name]:+.2f}"
        print(line)
    if diverging.any():
        print(f"  {int(diverging.sum())} divergent draws in chains {sorted(set(np.nonzero(diverging)[0].tolist()))}")
        print("  patient values whose divergent draws sit furthest out (variable[index]: z):")
        for name in ("theta_patient", "theta_raw"):
            if name in post:
                z = np.nan_to_num(divergent_z_of(post[name].transpose("chain", "draw", ...).values, diverging))
                print("    " + ", ".join(f"{name}[{j}] {z[j]:+.2f}" for j in np.argsort(-np.abs(z))[:6]))
                if name == "theta_patient" and hasattr(keep["problem"], "simulated_inputs"):
                    print_patient(keep, post, theta, int(np.argmax(np.abs(z))), "where the divergences sit")
        if "patient_clearance_log10_per_day" in post:
            print_mrd_patients(keep, post, theta, diverging)


MRD_PATIENT_VALUES = {"clearance": "patient_clearance_log10_per_day", "floor": "patient_floor_log10",
                      "latency": "patient_relapse_day", "doubling": "patient_doubling_time_days",
                      "baseline": "patient_baseline_log10"}
MRD_LOG_SCALE = ("clearance", "latency", "doubling")  # positive values, compared on the log scale


def print_mrd_patients(keep: dict, post, theta: dict, diverging, top: int = 6) -> None:
    """MRD model: the patient values (log scale) whose divergent draws sit furthest out, whether each is sampled
    centred, and the data and true class of the patient furthest out."""
    import numpy as np

    from toolkit.calibration.runner import divergent_z_of

    updates = keep["problem"].data_updates(keep["data"])
    found = []
    for kind, name in MRD_PATIENT_VALUES.items():
        values = post[name].transpose("chain", "draw", ...).values
        z = np.nan_to_num(divergent_z_of(np.log(values) if kind in MRD_LOG_SCALE else values, diverging))
        found += [(abs(z[j]), kind, j, z[j]) for j in range(z.size)]
    print("  MRD patient values whose divergent draws sit furthest out (value[patient]: z, centred?, true):")
    for _, kind, j, z in sorted(found, reverse=True)[:top]:
        name = MRD_PATIENT_VALUES[kind]
        centred = bool(updates[f"centred_{kind}"][j]) if f"centred_{kind}" in updates else "never"
        print(f"    {kind}[{j}]: {z:+.2f}, centred {centred}, "
              f"true {float(np.asarray(theta[name])[j]):.3g}, posterior mean "
              f"{float(post[name].values[..., j].mean()):.3g}")
    patient = sorted(found, reverse=True)[0][2]
    inputs = keep["problem"].inputs()
    rows = np.flatnonzero(inputs.assessment_patient == patient)
    code = np.asarray(keep["data"]["censoring"])
    y = np.asarray(keep["data"]["log10_value"])
    marks = {0: "", 1: " <LoD", 2: " PNQ"}
    print(f"  patient {patient} (recurrence class {int(np.asarray(keep['data']['recurrence'])[patient])}, arm "
          f"{int(inputs.arm[patient])}), assessments (day: log10 value, method):")
    print("    " + ", ".join(f"{inputs.day[r]:g}: {y[r]:.2f}{marks[int(code[r])]} {inputs.methods[inputs.method[r]]}"
                             for r in rows))


def print_patient(keep: dict, post, theta: dict, element: int, why: str = "of the worst R-hat") -> None:
    """The patient of ``theta_patient``'s flat ``element``: their samples, and their values per chain beside the
    truth."""
    import numpy as np

    values = post["theta_patient"].transpose("chain", "draw", "patient", "kinetic")
    patient = element // values.shape[-1]
    inputs = keep["problem"].simulated_inputs(keep["data"])
    rows = np.flatnonzero(inputs.sample_patient == patient)
    print(f"  patient {patient} ({why}), samples (day: log level, * below the LLOQ):")
    print("    " + ", ".join(f"{inputs.day[r]:g}: {inputs.log_value[r]:.2f}{'*' if inputs.censored[r] else ''}"
                             for r in rows))
    print("    kinetic value: true; mean per chain")
    for k, name in enumerate(values.coords["kinetic"].values):
        chains = values.values[:, :, patient, k].mean(axis=1)
        print(f"    {name}: {np.asarray(theta['theta_patient'])[patient, k]:.3g}; "
              + ", ".join(f"{c:.3g}" for c in chains))


if __name__ == "__main__":
    sys.exit(main())
