r"""Misspecification studies: the durability analysis fitted to trials from the trial simulator.

SBC asks whether the fit is right *when the model is true*. Here the data come
from ``toolkit.simulate.simulate_trial``, a richer story than any one model
(relapse hazard moved by CAR-T kinetics and its loss, HSCT, death in remission,
loss to follow-up), over a grid of IFN-alpha effects, and each trial is analysed
exactly as the spec says (``toolkit.fitting.fit_durability``). Per grid point and
estimand (names as in ``truth.json`` and ``summary.json``), over trials:

- bias = mean(posterior median - truth), RMSE = sqrt(mean((median - truth)^2));
- coverage of the 90 % HDI, and its mean width;
- P(decision): share of trials whose posterior probability (e.g. ``prob_hr_below_1``)
  exceeds a threshold (default 0.9): the power at an effect, the type I error at no effect.

Trials run on the same Dask machinery as SBC (``runner.map_tasks``) and are
stored one Parquet file per (grid point, trial) so a study resumes.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from toolkit.calibration.runner import _write_atomic, map_tasks

__all__ = ["misspecification_trial", "run_misspecification", "summarize_misspecification"]


def misspecification_trial(point: int, effects: dict, trial: int, *, options: dict, sampler: dict,
                           n_patients: int, seed: int) -> list[dict]:
    """Simulate one trial at ``effects``, fit it as the spec says, and compare estimands with the truth."""
    from toolkit.data import load_cohort
    from toolkit.fitting import DurabilityOptions, default_settings, fit_durability
    from toolkit.simulate import simulate_trial

    base = {"point": point, "trial": trial, "effects": json.dumps(effects, sort_keys=True), "status": "ok",
            "error": "", "converged": False}
    t0 = time.perf_counter()
    try:
        sim = simulate_trial(n_patients, seed=int(seed * 100_003 + point * 1009 + trial) % 2**32, effects=effects)
        with tempfile.TemporaryDirectory() as tmp:
            cohort = load_cohort(sim.write(Path(tmp) / "cohort"))
            settings = default_settings("durability", cores=1, progressbar=False, **sampler)
            result = fit_durability(cohort, DurabilityOptions(**options), settings)
        base["converged"] = result.converged
        rows = []
        truth = sim.truth.get("estimands", {})
        for name, value in result.summary["estimands"].items():
            true = truth.get(name)
            row = {**base, "estimand": name, "truth": float(true) if isinstance(true, (int, float)) else np.nan}
            if isinstance(value, dict):
                lo, hi = value["hdi_90"]
                row.update(median=value["median"], lo=lo, hi=hi, probability=np.nan)
            else:
                row.update(median=np.nan, lo=np.nan, hi=np.nan, probability=float(value))
            rows.append(row)
    except Exception as exc:  # noqa: BLE001 - a failed trial is recorded, the study goes on
        rows = [{**base, "status": "error", "error": f"{type(exc).__name__}: {exc}", "estimand": ""}]
    for row in rows:
        row["seconds"] = time.perf_counter() - t0
    return rows


def run_misspecification(grid: list[dict], trials: int, out: str | Path, *, options: dict | None = None,
                         sampler: dict | None = None, n_patients: int = 60, seed: int = 20261125,
                         workers: int | None = None, scheduler: str | None = None):
    """Run ``trials`` simulated trials at each effect setting of ``grid``; returns the stored table."""
    import pandas as pd

    out = Path(out)
    store_dir = out / "trials"
    store_dir.mkdir(parents=True, exist_ok=True)
    (out / "misspecification.json").write_text(json.dumps(
        {"grid": grid, "trials": trials, "options": options or {}, "sampler": sampler or {},
         "n_patients": n_patients, "seed": seed}, indent=2) + "\n")
    done = {p.stem for p in store_dir.glob("*.parquet")}
    items = [(i, effects, t) for i, effects in enumerate(grid) for t in range(trials)
             if f"p{i:03d}_t{t:04d}" not in done]

    def store(rows):
        frame = pd.DataFrame(rows)
        _write_atomic(frame, store_dir / f"p{rows[0]['point']:03d}_t{rows[0]['trial']:04d}.parquet")

    map_tasks(misspecification_trial, items,
              kwargs={"options": options or {}, "sampler": sampler or {}, "n_patients": n_patients, "seed": seed},
              on_result=store, on_error=lambda item, err: [{"point": item[0], "trial": item[2], "status": "error",
                                                            "error": err, "estimand": "",
                                                            "effects": json.dumps(item[1])}],
              workers=workers, scheduler=scheduler, cache_root=out / ".worker-caches")
    return pd.concat([pd.read_parquet(p) for p in sorted(store_dir.glob("*.parquet"))], ignore_index=True)


def summarize_misspecification(table, *, decision_threshold: float = 0.9):
    """Per (effects, estimand): bias, RMSE, 90 % coverage, width; for probabilities P(decision)."""
    import pandas as pd

    ok = table[(table["status"] == "ok") & (table["estimand"] != "")]
    rows = []
    for (effects, name), part in ok.groupby(["effects", "estimand"], sort=False):
        row = {"effects": effects, "estimand": name, "trials": len(part),
               "not_converged": int((~part["converged"].astype(bool)).sum())}
        if part["probability"].notna().all():
            row["p_decision"] = float((part["probability"] > decision_threshold).mean())
        truth = part["truth"].to_numpy(float)
        if np.isfinite(truth).all() and part["median"].notna().all():
            err = part["median"].to_numpy(float) - truth
            row.update(truth=float(truth.mean()), bias=float(err.mean()), rmse=float(np.sqrt(np.mean(err ** 2))),
                       coverage_90=float(((part["lo"] <= truth) & (truth <= part["hi"])).mean()),
                       width_90=float((part["hi"] - part["lo"]).mean()))
        rows.append(row)
    return pd.DataFrame(rows)


