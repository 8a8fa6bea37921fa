r"""What sets a model's leapfrog step size: a diagnosis fit on bench_scaling's simulated cohort.

Fits ``--model`` (``cart``, the default, ``mrd`` or ``joint``; default options and priors, nutpie, the model's
default target acceptance) to ``bench_scaling``'s cohort of ``--patients`` patients, storing nutpie's
unconstrained draws and adapted mass matrix, and prints:

- steps per draw, step size, divergences, sampling seconds, min bulk ESS and max R-hat
  (:func:`toolkit.inference.diagnose`);
- per free coordinate, posterior SD / the sampler's adapted scale (:func:`toolkit.inference.adapted_scales`):
  1 where the diagonal mass matrix fits;
- the coordinates with the smallest bulk ESS (and their R-hat);
- with ``--stiffness N``: the largest curvature of the log density at N posterior draws and the coordinates
  that make up its direction (:func:`toolkit.inference.stiffness`), those that set the step size;
- the smallest and the largest eigenvalues of the posterior covariance in the sampler's scaled coordinates
  (x / scale), with the variables that make them up, and the strongest pairwise correlations.

Up to 4 December 2026 this script divided by the square root of nutpie's stored ``mass_matrix_inv``, which is
already a standard deviation: the ratios and eigenvalues it printed then, quoted in benchmarks/README.md before
that date's correction, were wrong.

``--peak-rounding H`` (CAR-T and joint) fits with the curve's peak rounded over H days instead of the model's
``PEAK_ROUNDING_DAYS`` (``toolkit.models.kinetics``; a tiny H such as 1e-6 is Stein's kinked curve, the model
before version 1.1.0). At H -> 0 the log density is not differentiable in Tmax (a gradient jump whenever a
patient's Tmax crosses one of their sample days), and that kink set the step size (benchmarks/README.md).

Run from the repository root (heavy: under ``nice``; outputs under /tmp only)::

    nice -n 15 .venv/bin/python benchmarks/step_size.py --patients 60 --chains 4 --tune 500 --draws 500
    nice -n 15 .venv/bin/python benchmarks/step_size.py --patients 60 --peak-rounding 1e-6
    nice -n 15 .venv/bin/python benchmarks/step_size.py --model mrd --patients 600 --tune 1000 --draws 1000

``--sbc-design DIR --sim N`` fits simulation N of a CAR-T calibration study instead (``toolkit calibrate cart
--spec models/cart_primary.toml --out OUT``; DIR is ``OUT/default_design`` or the study's ``--design``): the
same prior draw and simulated data as the study, swapped into the compiled model with the study's
data-informed starts (``toolkit.calibration.runner``), so a simulation that failed its verdict can be examined
at another peak rounding::

    nice -n 15 .venv/bin/python benchmarks/step_size.py --sbc-design /tmp/calib/cartx/default_design \
        --sim 2 --tune 1000 --draws 1000 [--peak-rounding 1e-6]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def sbc_compiled(design: str, sim: int):
    """Simulation ``sim`` of a CAR-T calibration study at ``design`` under the primary spec: (model, compiled
    model with the simulation's data and starts, number of observations)."""
    from toolkit.calibration import runner
    from toolkit.calibration.api import build_problem
    from toolkit.specs import load_spec, shipped_spec

    spec = load_spec(shipped_spec("models/cart_primary.toml"), model="cart")
    problem = build_problem("cart", spec=spec, design_cohort=design)
    settings = runner.study_settings(spec["sampler"])
    theta = runner.prior_draws(problem, [sim], seed=settings.random_seed)[sim]
    prep = runner._prepared(problem)  # noqa: SLF001 - the study's own compiled model, as a worker holds it
    data = runner.simulated_data(problem, sim, theta, seed=settings.random_seed)
    return problem.fit_model(), runner.compiled_with_data(problem, prep, data), data["log_value"].size


def coordinate_labels(model) -> list[str]:
    """One label per entry of nutpie's unconstrained vector (free variables in ``model.free_RVs`` order)."""
    point = model.initial_point()
    labels = []
    for rv in model.free_RVs:
        value = model.rvs_to_values[rv]
        v = np.asarray(point[value.name])
        dims = model.named_vars_to_dims.get(rv.name) or ()
        if v.ndim == 1 and dims:
            names = [str(c) for c in model.coords[dims[0]]]
        elif v.ndim == 2 and len(dims) == 2:
            names = [f"{a}/{b}" for a in model.coords[dims[0]] for b in model.coords[dims[1]]]
        else:
            names = [str(i) for i in range(v.size)] if v.ndim else [""]
        labels += [f"{rv.name}[{n}]" for n in names]
    return labels


def direction(vector: np.ndarray, labels: list[str], n: int = 4) -> str:
    """The ``n`` coordinates with the largest weight in a direction, with their signed weights."""
    return ", ".join(f"{labels[i]} ({vector[i]:+.2f})" for i in np.argsort(-np.abs(vector))[:n])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("cart", "mrd", "joint"), default="cart")
    p.add_argument("--patients", type=int, default=60)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--tune", type=int, default=500)
    p.add_argument("--draws", type=int, default=500)
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--adaptation", default="diag", help="nutpie adaptation: diag, draw_diag, low_rank")
    p.add_argument("--peak-rounding", type=float, default=None, metavar="H",
                   help="round the curve's peak over H days instead of the model's (1e-6: Stein's kinked curve)")
    p.add_argument("--top", type=int, default=12, help="rows in each printed list")
    p.add_argument("--sbc-design", metavar="DIR", help="fit a CAR-T calibration study's simulation at this design")
    p.add_argument("--sim", type=int, default=0, help="with --sbc-design: which simulation")
    p.add_argument("--stiffness", type=int, default=0, metavar="N",
                   help="also find the stiffest direction of the log density at N posterior draws")
    args = p.parse_args(argv)

    import nutpie

    import bench_scaling
    from toolkit.fitting import default_settings
    from toolkit.inference import adapted_scales, diagnose, element_diagnostics, stiffness
    from toolkit.models import kinetics

    if args.peak_rounding:
        kinetics.PEAK_ROUNDING_DAYS = args.peak_rounding  # read when the graph is built (this process only)
    if args.sbc_design and args.model != "cart":
        p.error("--sbc-design takes a CAR-T study only")
    if args.sbc_design:
        model, compiled, n_obs = sbc_compiled(args.sbc_design, args.sim)
    else:
        with tempfile.TemporaryDirectory(prefix="step_size_") as tmp:
            model, n_obs = bench_scaling._build(args.model, args.patients, Path(tmp) / "cohort")
        compiled = nutpie.compile_pymc_model(model)
    labels = coordinate_labels(model)
    settings = default_settings(args.model)
    t0 = time.perf_counter()
    dt = nutpie.sample(compiled, draws=args.draws, tune=args.tune, chains=args.chains, cores=2, seed=args.seed,
                       target_accept=settings.target_accept, adaptation=args.adaptation, progress_bar=False,
                       store_unconstrained=True, store_mass_matrix=True)
    sampling = time.perf_counter() - t0
    stats = dt["sample_stats"]
    d = diagnose(dt)
    where = (f"SBC simulation {args.sim} at {args.sbc_design}" if args.sbc_design
             else f"{args.model}, patients {args.patients}")
    print(f"{where}, observations {n_obs}, {args.chains}x{args.tune}+{args.draws}, "
          f"adaptation {args.adaptation}, peak rounding {kinetics.PEAK_ROUNDING_DAYS} days, load {os.getloadavg()[0]:.1f}")
    print(f"steps/draw {stats['n_steps'].to_numpy().mean():.1f}  step size {stats['step_size'].to_numpy().mean():.4f}  "
          f"divergences {int(stats['diverging'].to_numpy().sum())}  sampling s {sampling:.1f}  "
          f"min ESS {d.min_ess_bulk:.0f}  max R-hat {d.max_rhat:.3f}  converged {d.converged}")

    u = stats["unconstrained_draw"].to_numpy()  # (chain, draw, coordinate)
    ess, _, rhat = element_diagnostics(u)
    rhat = np.full(ess.shape, np.nan) if rhat is None else rhat  # one chain
    print("\nslowest coordinates (bulk ESS, R-hat on the unconstrained scale):")
    for i in np.argsort(ess)[:args.top]:
        print(f"  ESS {ess[i]:6.0f}  R-hat {rhat[i]:.3f}  {labels[i]}")
    scale = adapted_scales(dt)  # (chain, coordinate): nutpie's adapted SD per coordinate
    ratio = (u.std(axis=1) / scale).mean(axis=0)
    order = np.argsort(ratio)
    print("\nposterior SD / adapted scale: smallest (mass matrix too wide: steps too large there)")
    for i in order[:args.top]:
        print(f"  {ratio[i]:.2f}  {labels[i]}")
    print("largest (mass matrix too narrow: trajectories too short there)")
    for i in order[::-1][:args.top]:
        print(f"  {ratio[i]:.2f}  {labels[i]}")
    if args.stiffness:
        step = float(stats["step_size"].to_numpy().mean())
        t1 = time.perf_counter()
        lam, vec = stiffness(model, u, scale, args.stiffness, args.seed)
        print(f"\nstiffest direction at {args.stiffness} draws (power iteration on the scaled Hessian, "
              f"{time.perf_counter() - t1:.0f} s; 1 = Gaussian the diagonal fits): largest eigenvalue median "
              f"{np.median(lam):.0f}, 90th percentile {np.quantile(lam, 0.9):.0f}, max {lam.max():.0f}; "
              f"step {step:.4f} x sqrt(max) = {step * np.sqrt(max(lam.max(), 0.0)):.2f}")
        weight = np.zeros(len(labels))
        for k in np.argsort(-lam)[:max(1, len(lam) // 4)]:  # the stiffest quarter of the draws
            weight += vec[k] ** 2
        print("  coordinates making up the stiffest directions (share of the stiffest quarter's eigenvectors):")
        for i in np.argsort(-weight)[:args.top]:
            print(f"    {weight[i] / weight.sum():.2f}  {labels[i]}")
        for k in np.argsort(-lam)[:3]:
            print(f"  lambda {lam[k]:.0f}: {direction(vec[k], labels)}")
    y = ((u - u.mean(axis=1, keepdims=True)) / scale[:, None, :]).reshape(-1, u.shape[-1])
    if y.shape[0] < 2 * y.shape[1]:
        # fewer draws than twice the coordinates: the sample covariance is (near) singular and its extreme
        # eigenvalues are noise
        print(f"\n{y.shape[0]} draws for {y.shape[1]} coordinates: no covariance eigenvalues or correlations")
        return 0
    w, v = np.linalg.eigh(np.cov(y, rowvar=False))
    print(f"\nscaled covariance: eigenvalues {w[0]:.4f} ... {w[-1]:.2f} (sqrt ratio {np.sqrt(w[-1] / w[0]):.1f});"
          " smallest and their main variables:")
    for k in range(min(args.top // 2, len(w))):
        print(f"  {w[k]:.4f}: {direction(v[:, k], labels)}")
    print("largest (the directions a trajectory must cross: steps a draw ~ sqrt(largest) / step size):")
    for k in range(len(w) - 1, max(len(w) - 1 - args.top // 2, -1), -1):
        print(f"  {w[k]:.2f}: {direction(v[:, k], labels)}")
    r = np.corrcoef(y, rowvar=False)
    iu = np.triu_indices_from(r, 1)
    print("\nstrongest correlations:")
    for t in np.argsort(-np.abs(r[iu]))[:args.top]:
        a, b = iu[0][t], iu[1][t]
        print(f"  {r[a, b]:+.2f}  {labels[a]} ~ {labels[b]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
