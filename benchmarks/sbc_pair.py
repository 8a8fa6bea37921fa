"""Two calibration studies of the same seed and design, simulation by simulation: how their fits ran.

    python benchmarks/sbc_pair.py STUDY_A STUDY_B

At the same seed, simulation k of two studies draws the same prior values (and, for the same model, the same
cohort), so two model versions or rerun policies compare paired. For the simulations stored in both, prints
how many fits diverged in their first run and in any run, converged at the first run, and stayed unconverged
(with the simulations that differ), the divergent draws over all runs, and the runs, worker seconds and
iterations a chain spent (``toolkit.calibration.runner.iterations_per_chain``; also what the same verdicts
would have cost under the rerun policy "continue" or "what-failed": give one study twice to see what its
own policy saved).
Reads each simulation's ``run_history`` (studies since December 2026; older ones lack per-run divergences).
Without arguments it says so (so `make benchmarks` runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def fits(study: str) -> dict[int, dict]:
    """Per stored simulation: verdicts, runs, seconds, and each run's divergences."""
    from toolkit.calibration.runner import STUDY_FILE, iterations_per_chain, load_results

    settings = json.loads((Path(study) / STUDY_FILE).read_text())["settings"]
    tune, chains = int(settings["tune"]), int(settings["chains"])
    out = {}
    for sim, row in load_results(study).groupby("sim").first().iterrows():
        history = json.loads(row["run_history"]) if isinstance(row.get("run_history"), str) and row["run_history"] \
            else []
        out[int(sim)] = {"converged": bool(row["converged"]), "first": bool(row["first_converged"]),
                         "runs": int(row["runs"]), "seconds": float(row["seconds"]),
                         "divergences": [int(r["divergences"]) for r in history],
                         "iterations": iterations_per_chain(row.get("run_history"), tune, chains),
                         **{policy: iterations_per_chain(row.get("run_history"), tune, chains, as_if=policy)
                            for policy in ("continue", "what-failed")}}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="*")
    args = parser.parse_args()
    if len(args.studies) != 2:
        print("give two studies; usage: python benchmarks/sbc_pair.py STUDY_A STUDY_B")
        return 0
    a, b = (fits(s) for s in args.studies)
    common = sorted(set(a) & set(b))
    print(f"{len(common)} simulations stored in both ({args.studies[0]} vs {args.studies[1]})")
    checks = {"first run diverged": lambda f: bool(f["divergences"]) and f["divergences"][0] > 0,
              "any run diverged": lambda f: sum(f["divergences"]) > 0,
              "converged at the first run": lambda f: f["first"],
              "unconverged": lambda f: not f["converged"]}
    for name, check in checks.items():
        only_a = [s for s in common if check(a[s]) and not check(b[s])]
        only_b = [s for s in common if check(b[s]) and not check(a[s])]
        print(f"  {name}: {sum(check(a[s]) for s in common)} vs {sum(check(b[s]) for s in common)} "
              f"(only the first: {only_a}; only the second: {only_b})")
    for label, sums in (("divergent draws in all runs", lambda f: sum(f["divergences"])),
                        ("runs", lambda f: f["runs"]), ("worker seconds", lambda f: round(f["seconds"])),
                        ("iterations a chain, tuning included", lambda f: round(f["iterations"] or 0)),
                        ("the same verdicts had each run continued the one before unless it diverged "
                         "(policy \"continue\", no draws past checkpoints)", lambda f: round(f["continue"] or 0)),
                        ("the same verdicts had every run been a new one (policy \"what-failed\")",
                         lambda f: round(f["what-failed"] or 0))):
        print(f"  {label}: {sum(sums(a[s]) for s in common)} vs {sum(sums(b[s]) for s in common)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
