"""Seeded fixtures and helpers shared by the tests (and handy in notebooks)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit import resources

EXAMPLE = resources.path("data_templates/example")


def copy_example(dest: str | Path) -> Path:
    """Copy the example cohort (without truth.json) to ``dest``."""
    dest = Path(dest)
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("truth.json"))
    return dest


def read_raw(folder: Path, name: str) -> pd.DataFrame:
    """A cohort CSV as text, index = spreadsheet row number (header is row 1)."""
    frame = pd.read_csv(folder / f"{name}.csv", dtype=str, keep_default_na=False)
    frame.index = range(2, len(frame) + 2)
    return frame


def write_raw(folder: Path, name: str, frame: pd.DataFrame) -> None:
    frame.to_csv(folder / f"{name}.csv", index=False, lineterminator="\n")


def set_cell(folder: Path, name: str, row: int, column: str, value: str) -> None:
    """Overwrite one cell, addressed by spreadsheet row number."""
    frame = read_raw(folder, name)
    frame.loc[row, column] = value
    write_raw(folder, name, frame)


def row_of(folder: Path, name: str, **match) -> int:
    """Spreadsheet row of the first row whose columns equal ``match``."""
    frame = read_raw(folder, name)
    mask = pd.Series(True, index=frame.index)
    for column, value in match.items():
        mask &= frame[column] == value
    return int(frame.index[mask][0])


def folder_digest(folder: Path) -> str:
    """Hash of every file's name and bytes: proves nothing was changed on disk."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def tiny_cli_fit(model: str, data: str | Path, out: str | Path, *, chains: int = 2, tune: int = 100,
                 draws: int = 100, seed: int = 7) -> Path:
    """``toolkit fit MODEL`` with few draws (figures written by the command); asserts it exits 0."""
    from toolkit.cli import main

    code = main(["fit", model, "--data", str(data), "--out", str(out), "--chains", str(chains), "--tune", str(tune),
                 "--draws", str(draws), "--seed", str(seed)])
    assert code == 0, f"toolkit fit {model} exited {code}"
    return Path(out)


def edit_run_file(run_dir: str | Path, name: str, text: str) -> None:
    """Replace one file of a saved run and re-seal its manifest (a deliberately edited run, for tests).

    ``toolkit.inference.load_run`` refuses a run edited without re-sealing; this
    is how a test builds a run that is intact but carries an unusual summary.
    """
    from toolkit.inference import _write_manifest

    run_dir = Path(run_dir)
    (run_dir / name).write_text(text, encoding="utf-8")
    _write_manifest(run_dir)


def set_cells(folder: Path, name: str, row: int, **cells: str) -> None:
    """Overwrite several cells of one row, addressed by spreadsheet row number."""
    frame = read_raw(folder, name)
    for column, value in cells.items():
        frame.loc[row, column] = value
    write_raw(folder, name, frame)


def edit_text(folder: Path, file: str, edit) -> None:
    """Replace a cohort file's text by ``edit(text)`` (bytes in, bytes out when ``edit`` takes bytes)."""
    path = Path(folder) / file
    path.write_bytes(edit(path.read_bytes()))


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``toolkit.cli.main(argv)`` with stdout and stderr captured: (exit code, everything printed)."""
    import contextlib
    import io

    from toolkit.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        code = main([str(a) for a in argv])
    return code, buffer.getvalue()


def coverage_problems(covered, *, level: float = 0.90, lower: float = 0.8, alpha: float = 0.01,
                      sd_ratios=None, max_sd_ratio: float = 0.95) -> list[str]:
    r"""What is wrong with a recovery study's interval coverage, in both directions (empty list: nothing).

    ``covered``: per cohort, whether the ``level`` interval covered the truth (k of n).

    - too low: k/n < ``lower``;
    - too high: P(X >= k | X ~ Binomial(n, level)) < ``alpha`` (k so high that a calibrated interval would
      rarely reach it; at n = 40 and level 0.9 only 40 of 40 comes near, at n = 20 nothing can);
    - inert: median over cohorts of posterior SD / prior SD of the parameter the estimand is a function of
      (``sd_ratios``) above ``max_sd_ratio``: intervals about as wide as the prior's cover the truth
      whatever the data say, so a high coverage proves nothing (the calibration studies measure the same
      ratio as "contraction", docs/calibration.md).
    """
    from scipy.stats import binom

    covered = np.asarray(covered, dtype=bool)
    n, k = covered.size, int(covered.sum())
    problems = []
    if n == 0:
        return ["no cohorts"]
    if k / n < lower:
        problems.append(f"coverage {k}/{n} = {k / n:.2f} below {lower}")
    p_high = float(binom.sf(k - 1, n, level))
    if p_high < alpha:
        problems.append(f"coverage {k}/{n} too high for a {level:.0%} interval (P = {p_high:.4f} < {alpha})")
    if sd_ratios is not None:
        ratio = float(np.median(np.asarray(sd_ratios, dtype=float)))
        if ratio > max_sd_ratio:
            problems.append(f"median posterior/prior SD {ratio:.2f} > {max_sd_ratio}: the intervals are the "
                            "prior's, so covering the truth says nothing about the data")
    return problems
