"""The bad-input figures: run the corpus of broken cohorts and the misuse list, count the outcomes.

    python scripts/bad_input_figures.py [--out DIR]

Prints cases tried, clean errors (exit 2 with the expected message), tracebacks,
silent acceptances (exit 0), user files changed and anything else (a wrong
exit code or message). With ``--out``, every case's output is written to
DIR/<case>.txt so that ``grep -r Traceback DIR`` can confirm there is none.
The same cases run as tests in tests/test_bad_input_corpus.py and
tests/test_cli_misuse.py.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import test_bad_input_corpus as corpus  # noqa: E402
import test_cli_misuse as misuse  # noqa: E402

from toolkit.testing import copy_example, folder_digest, run_cli  # noqa: E402


def _outcome(code: int, output: str, changed: bool, clean: bool) -> str:
    if "Traceback" in output:
        return "traceback"
    if changed:
        return "file changed"
    if code == 0:
        return "silent acceptance"
    return "clean error" if code == 2 and clean else "other"


def run_corpus(work: Path, record) -> Counter:
    counts = Counter()
    for case in corpus.CASES:
        folder = copy_example(work / case.id / "cohort")
        expected = case.plant(folder)
        prefixes = sorted(corpus._prefix(e) for e in expected)
        with pytest.MonkeyPatch.context() as mp:
            if case.patch is not None:
                case.patch(mp, folder)
            before = folder_digest(folder)
            for command in ("validate", "describe") if case.describe else ("validate",):
                try:
                    code, output = run_cli([command, folder])
                except BaseException as exc:  # noqa: BLE001 - counted, not raised
                    code, output = -1, f"Traceback (escaped main): {type(exc).__name__}"
                lines = sorted(corpus._problem_lines(output))
                clean = len(lines) == len(prefixes) and all(
                    line.startswith(p + " (value ") or line.startswith(p + ". Fix: ") for p, line in zip(prefixes, lines))
                clean = clean and not any(s in output for s in case.secrets)
                outcome = _outcome(code, output, folder_digest(folder) != before, clean)
                counts[outcome] += 1
                record(f"cohort-{case.id}-{command}", output, outcome)
    return counts


def run_misuse(work: Path, record) -> Counter:
    counts = Counter()
    place = work / "place"
    place.mkdir(parents=True)
    (place / "a_file.txt").write_text("not a folder\n")
    (place / "full").mkdir()
    (place / "full" / "keep.txt").write_text("user data\n")
    (place / "spec_folder").mkdir()
    for name, text in misuse.SPECS.items():
        if text is not None:
            (place / name).write_text(text)
    (place / "latin1.toml").write_bytes('model = "durability"\ntitle = "Étude"\n'.encode("latin-1"))
    copy_example(place / "cohort")
    for id_, argv, pattern in misuse.MISUSES:
        new = work / "new" / id_
        new.mkdir(parents=True)
        values = {"place": place, "cohort": place / "cohort", "new": new}
        before = folder_digest(place)
        try:
            code, output = run_cli([a.format(**values) for a in argv])
        except BaseException as exc:  # noqa: BLE001
            code, output = -1, f"Traceback (escaped main): {type(exc).__name__}"
        changed = folder_digest(place) != before or any(new.iterdir())
        outcome = _outcome(code, output, changed, bool(re.search(pattern, output)))
        counts[outcome] += 1
        record(f"misuse-{id_}", output, outcome)
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for each case's output")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    failures = []

    def record(name, output, outcome):
        if out:
            (out / f"{name}.txt").write_text(output, encoding="utf-8")
        if outcome != "clean error":
            failures.append(f"{name}: {outcome}")

    with tempfile.TemporaryDirectory() as tmp:
        cohorts = run_corpus(Path(tmp) / "corpus", record)
        commands = run_misuse(Path(tmp) / "misuse", record)
    for label, counts in (("broken cohorts (validate, and describe where relevant)", cohorts),
                          ("misused command lines", commands)):
        print(f"{label}: tried {sum(counts.values())}, clean errors {counts['clean error']}, "
              f"tracebacks {counts['traceback']}, silent acceptances {counts['silent acceptance']}, "
              f"files changed {counts['file changed']}, other {counts['other']}")
    for failure in failures:
        print("  -", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
