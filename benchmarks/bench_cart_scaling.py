"""How the CAR-T kinetic model's cost grows with the number of patients: 60, 600 and 6,000.

For each size, a simulated trial (``simulate_trial(n, seed=31)``, the trial's sampling schedule, about
12 samples a patient) is built into ``build_cart_model`` and measured:

1. **compile s**: nutpie's compile of the model inside ``toolkit.inference.sample`` (warm PyTensor/numba
   caches after the first size, so mostly graph work that grows with size);
2. **gradient ms**: one log-density gradient evaluation (``model.compile_dlogp()``, PyTensor's numba
   mode, mean of repeated calls), the unit of NUTS's work;
3. **sampling**: a short nutpie run (``--chains`` x ``--draws`` tune and draws each; default 2 x 150 for
   60 and 600 patients, 1 x 40 for 6,000) giving leapfrog steps per draw and sampling seconds;
4. **extrapolated 4 x 1000 + 1000 s** = per-gradient sampling cost (sampling s / gradients done, per
   core) x steps per draw x 2000 iterations x 4 chains / 2 cores: what a full fit would take, *estimated,
   not run* (say so when quoting it); steps per draw from a short run are a rough guide.

Run from the repository root: ``.venv/bin/python benchmarks/bench_cart_scaling.py [--sizes 60,600,6000]
[--json F]``. Short runs do not converge; only time and steps are read from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def measure(n: int, chains: int, draws: int, tmp: Path) -> dict:
    from toolkit.data import load_cohort
    from toolkit.data.inputs import to_cart_inputs
    from toolkit.inference import SamplerSettings, sample
    from toolkit.models.cart import RECOMMENDED_TARGET_ACCEPT, build_cart_model
    from toolkit.simulate import simulate_trial

    cohort = load_cohort(simulate_trial(n, seed=31, with_truth=False).write(tmp / f"n{n}"))
    sampled = cohort.patients["patient_id"].isin(cohort.cart["patient_id"])
    inputs = to_cart_inputs(dataclasses.replace(cohort, patients=cohort.patients[sampled]))
    model = build_cart_model(inputs)
    dlogp = model.compile_dlogp()
    point = model.initial_point()
    dlogp(point)
    calls = max(20, min(2000, int(2e5 / max(n, 1))))
    t0 = time.perf_counter()
    for _ in range(calls):
        dlogp(point)
    grad_ms = 1000 * (time.perf_counter() - t0) / calls
    settings = SamplerSettings(chains=chains, tune=draws, draws=draws, progressbar=False,
                               target_accept=RECOMMENDED_TARGET_ACCEPT)
    dt = sample(model, settings, log_likelihood=False)
    steps = dt["sample_stats"]["n_steps"].to_numpy() if "n_steps" in dt["sample_stats"] else None
    steps_per_draw = float(np.mean(steps)) if steps is not None else float("nan")
    sampling_s = float(dt.attrs["sampling_seconds"])
    per_grad_sampling_ms = 1000 * sampling_s * min(chains, 2) / (chains * 2 * draws * steps_per_draw)
    unit_ms = per_grad_sampling_ms  # what sampling really costs per gradient (includes nutpie's overhead)
    return {"patients": len(inputs.patient_ids), "samples": int(inputs.day.size),
            "compile_seconds": float(dt.attrs["compile_seconds"]),
            "gradient_ms": grad_ms, "sampling_run": f"{chains} x {draws}+{draws}", "sampling_seconds": sampling_s,
            "steps_per_draw": steps_per_draw, "gradient_ms_in_sampling": per_grad_sampling_ms,
            "extrapolated_full_fit_seconds": unit_ms / 1000 * steps_per_draw * 2000 * 4 / 2}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="60,600,6000")
    p.add_argument("--json")
    args = p.parse_args()
    import tempfile

    rows = []
    print(f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench_cart_scaling_") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            chains, draws = (1, 40) if n >= 6000 else (2, 150)
            r = measure(n, chains, draws, Path(tmp))
            rows.append(r)
            print(f"  {r['patients']:5d} patients {r['samples']:6d} samples: compile {r['compile_seconds']:6.1f} s, "
                  f"gradient {r['gradient_ms']:7.3f} ms (in sampling {r['gradient_ms_in_sampling']:7.3f} ms), "
                  f"{r['sampling_run']} sampling {r['sampling_seconds']:7.1f} s, {r['steps_per_draw']:5.0f} "
                  f"steps/draw -> 4 x 1000+1000 estimated {r['extrapolated_full_fit_seconds']:8.0f} s", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
