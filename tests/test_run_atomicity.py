"""Runs are written whole or not at all: a save killed at any step leaves the previous or the new run.

Each fault is a real process killed with SIGKILL at a named point of ``save_run``
(``TOOLKIT_FAULT_POINT``) or in the middle of a write (a patched writer kills its
own process half-way). After the kill, ``--out`` must hold the previous complete
run or the new complete one (``load_run`` succeeds and matches one of them), and
nothing else is ever accepted as a run. Fake posteriors keep the matrix fast;
three real ``toolkit fit`` processes check the command end to end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from toolkit import inference
from toolkit.cli import main
from toolkit.inference import RunFolderError, load_run, save_run, verify_run
from toolkit.testing import EXAMPLE, edit_run_file, folder_digest

ROOT = Path(__file__).resolve().parent.parent

# One process imports the toolkit once, then forks a child per fault: the child saves run version 2
# (over version 1, or over nothing) and is killed where it is told; the parent reports how each child ended.
CHILD = textwrap.dedent(r"""
    import json, os, shutil, signal, sys, traceback
    from pathlib import Path
    import numpy as np, xarray as xr
    from toolkit import inference

    MODES = {"during_posterior", "during_figures", "during_old_removal", "no_fault"}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def save(out, mode):
        def figures(run, folder):
            folder.mkdir()
            (folder / "a.png").write_bytes(b"A" * 2000 * int(run.summary["version"]))
            if mode == "during_figures":
                die()
            (folder / "b.png").write_bytes(b"B" * 2000)

        if mode not in MODES:
            os.environ[inference.FAULT_ENV] = mode
        if mode == "during_posterior":  # half a netCDF file on disk, then the kill
            def half_written(self, path, *args, **kwargs):
                Path(path).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 500)
                die()
            xr.DataTree.to_netcdf = half_written
        if mode == "during_old_removal":  # the old run half deleted, then the kill
            real_rmtree = shutil.rmtree
            def half_removed(path, *args, **kwargs):
                if inference._OLD_MARK in Path(path).name:
                    (Path(path) / "summary.json").unlink()
                    die()
                real_rmtree(path, *args, **kwargs)
            inference.shutil.rmtree = half_removed
        post = xr.Dataset({"mu": (("chain", "draw"), np.full((2, 30), 2.0))})
        inference.save_run(out, xr.DataTree.from_dict({"posterior": post}), {"version": 2}, {"version": 2},
                           overwrite=True, figures=figures)

    codes = {}
    for out, mode in json.loads(sys.argv[1]):
        pid = os.fork()
        if pid == 0:
            try:
                save(out, mode)
                os._exit(0)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
        codes[out] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])  # -9: killed by SIGKILL
    print(json.dumps(codes))
""")

# (fault point or mode, version --out must hold afterwards: 1 = previous run, 2 = new run)
FAULTS = [
    ("save_started", 1),
    ("tmp_created", 1),
    ("during_posterior", 1),
    ("posterior_written", 1),
    ("json_written", 1),
    ("during_figures", 1),
    ("figures_written", 1),
    ("manifest_written", 1),
    ("old_moved_aside", 1),  # nothing at --out until the next call renames the previous run back
    ("new_renamed_in", 2),
    ("during_old_removal", 2),
    ("old_removed", 2),
    ("no_fault", 2),
]
MODES = {"during_posterior", "during_figures", "during_old_removal", "no_fault"}
FRESH = ("save_started", "during_figures", "manifest_written", "new_renamed_in", "no_fault")  # also with no previous run


def _tree(version: int) -> xr.DataTree:
    post = xr.Dataset({"mu": (("chain", "draw"), np.full((2, 30), float(version)))})
    return xr.DataTree.from_dict({"posterior": post})


def _figures(run, folder):
    folder.mkdir()
    (folder / "a.png").write_bytes(b"A" * 2000 * int(run.summary["version"]))
    (folder / "b.png").write_bytes(b"B" * 2000)


def _save(out: Path, version: int, **kwargs) -> Path:
    return save_run(out, _tree(version), {"version": version}, {"version": version}, figures=_figures, **kwargs)


def _version_of(out: Path) -> int:
    """Load the run (checked against its manifest) and say which version it is; both files must agree."""
    run = load_run(out)
    version = run.summary["version"]
    assert run.provenance["version"] == version
    assert np.all(run.posterior["posterior"]["mu"].to_numpy() == version)
    assert (out / "figures" / "a.png").stat().st_size == 2000 * version
    return version


def _child_env(point: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop(inference.FAULT_ENV, None)
    if point not in MODES:
        env[inference.FAULT_ENV] = point
    return env


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """Every fault, each in its own folder over a previous run (and some over nothing), each a killed process."""
    base = tmp_path_factory.mktemp("faults")
    jobs = {}
    for point, _ in FAULTS:
        for previous in (True, False) if point in FRESH else (True,):
            out = base / f"{point}-{'over' if previous else 'fresh'}" / "run"
            out.parent.mkdir()
            if previous:
                _save(out, 1)
            jobs[point, previous] = out
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps([[str(o), p] for (p, _), o in jobs.items()])],
                          env=_child_env("no_fault"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    codes = json.loads(proc.stdout.strip().splitlines()[-1])
    return {key: (out, codes[str(out)], proc.stderr) for key, out in jobs.items()}


@pytest.mark.parametrize("point,expected", FAULTS, ids=[p for p, _ in FAULTS])
def test_killed_save_leaves_the_previous_or_the_new_run(killed, point, expected):
    out, code, output = killed[point, True]
    # the process really died at that point (a checkpoint that was never reached fails here)
    assert code == (0 if point == "no_fault" else -signal.SIGKILL), output
    if point == "old_moved_aside":
        assert not out.exists()  # the only moment without a run at --out: repaired by the next call
    else:
        verify_run(out)  # complete on disk before any toolkit call repairs anything
    assert _version_of(out) == expected
    # a scratch folder left by the kill is never taken for a run, and the next save clears it
    for scratch in out.parent.iterdir():
        if scratch != out:
            with pytest.raises(RunFolderError, match="scratch folder"):
                load_run(scratch)
    _save(out, 3, overwrite=True)
    assert _version_of(out) == 3
    assert [p.name for p in out.parent.iterdir()] == ["run"]


@pytest.mark.parametrize("point", FRESH)
def test_killed_first_save_leaves_no_run_or_the_new_run(killed, point):
    out, code, output = killed[point, False]
    assert code == (0 if point == "no_fault" else -signal.SIGKILL), output
    if point in ("save_started", "during_figures", "manifest_written"):
        assert not out.exists()
        with pytest.raises(FileNotFoundError, match="does not exist"):
            load_run(out)
    else:
        assert _version_of(out) == 2
    _save(out, 3, overwrite=out.exists())  # scratch folders cleared
    assert [p.name for p in out.parent.iterdir()] == ["run"]


# --------------------------------------------------------------------------- the manifest catches what the old code let through


def test_figures_written_after_the_save_are_refused(tmp_path):
    """The reported bug: a fit killed while drawing left a run whose figures were not all written."""
    out = save_run(tmp_path / "run", _tree(1), {"version": 1}, {"version": 1})  # no figures in the manifest
    (out / "figures").mkdir()
    (out / "figures" / "a.png").write_bytes(b"A" * 10)  # the old code drew here, after the rename
    with pytest.raises(RunFolderError, match=r"figures/a.png is not part of the run.*re-fit it with"):
        load_run(out)


def test_missing_changed_and_unsealed_files_are_refused(tmp_path):
    out = _save(tmp_path / "run", 1)
    (out / "figures" / "b.png").unlink()
    with pytest.raises(RunFolderError, match=rf"run folder {out} does not match its manifest.json: "
                                             r"figures/b.png is missing\. The run is incomplete or was edited; "
                                             rf"re-fit it with `toolkit fit MODEL --data COHORT --out {out} --overwrite`"):
        load_run(out)
    out = _save(tmp_path / "run2", 1)
    (out / "summary.json").write_text(json.dumps({"version": 2}))
    with pytest.raises(RunFolderError, match="summary.json was changed after the fit"):
        load_run(out)
    (out / ".DS_Store").write_bytes(b"x")  # hidden files a file browser leaves are not a mismatch
    edit_run_file(out, "summary.json", json.dumps({"version": 1}))
    assert load_run(out).summary == {"version": 1}


def test_run_without_manifest_is_refused_with_the_fix(tmp_path):
    """Runs from before manifests cannot be told from a half-written one: refused, with the re-fit command."""
    out = _save(tmp_path / "run", 1)
    (out / "manifest.json").unlink()
    with pytest.raises(RunFolderError, match=r"has no manifest.json: it was written by an older toolkit or its "
                                             r"save did not finish.*--overwrite`"):
        load_run(out)
    (out / "posterior.nc").unlink()
    with pytest.raises(RunFolderError, match=r"incomplete \(missing posterior.nc\)"):
        load_run(out)


def test_sealed_but_unreadable_files_are_refused(tmp_path):
    out = _save(tmp_path / "run", 1)
    edit_run_file(out, "summary.json", "{not json")
    with pytest.raises(RunFolderError, match=r"summary.json is not valid JSON \(Expecting property name"):
        load_run(out)
    edit_run_file(out, "summary.json", "[1, 2]")
    with pytest.raises(RunFolderError, match="summary.json is not a JSON object"):
        load_run(out)
    edit_run_file(out, "posterior.nc", "garbage")
    with pytest.raises(RunFolderError, match="posterior.nc cannot be read"):
        load_run(out)


def test_overwrite_never_replaces_a_folder_that_is_not_a_run(tmp_path):
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me")
    with pytest.raises(RunFolderError, match="is not a run folder"):
        _save(precious, 1, overwrite=True)
    assert (precious / "todo.txt").read_text() == "keep me"


# --------------------------------------------------------------------------- the command line, end to end


FIT = ["fit", "durability", "--data", str(EXAMPLE), "--no-spec", "--variant", "weibull", "--chains", "1", "--tune", "60",
       "--draws", "60"]

# A real `toolkit fit` that dies right after its first figure file is written.
KILL_AT_FIRST_FIGURE = textwrap.dedent("""
    import os, signal, sys
    import matplotlib.figure
    real = matplotlib.figure.Figure.savefig
    def savefig(self, *args, **kwargs):
        real(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    matplotlib.figure.Figure.savefig = savefig
    from toolkit.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """One real durability run (the previous analysis), and a digest of its folder."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(FIT + ["--out", str(out), "--seed", "1"]) == 0
    return out


def _cli_child(args: list[str], *, point: str | None = None, script: str | None = None):
    env = _child_env(point or "no_fault")
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "toolkit", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_fit_killed_while_drawing_keeps_the_previous_run(previous, tmp_path, capsys):
    out = tmp_path / "run"
    import shutil

    shutil.copytree(previous, out)
    before = folder_digest(out)
    result = _cli_child(FIT + ["--out", str(out), "--seed", "2", "--overwrite"], script=KILL_AT_FIRST_FIGURE)
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    assert folder_digest(out) == before
    assert load_run(out).summary == load_run(previous).summary
    assert main(["report", str(out), "--out", str(tmp_path / "report.html")]) == 0


def test_fit_killed_between_the_renames_is_repaired_by_the_next_command(previous, tmp_path, capsys):
    out = tmp_path / "run"
    import shutil

    shutil.copytree(previous, out)
    result = _cli_child(FIT + ["--out", str(out), "--seed", "2", "--overwrite", "--no-figures"],
                        point="old_moved_aside")
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    assert not out.exists()
    assert main(["report", str(out), "--out", str(tmp_path / "report.html")]) == 0  # restores the previous run
    assert load_run(out).summary == load_run(previous).summary
    # and an uninterrupted --overwrite replaces it, leaving no scratch folder behind
    assert main(FIT + ["--out", str(out), "--seed", "3", "--overwrite"]) == 0
    assert load_run(out).provenance["settings"]["random_seed"] == 3
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        f"{name}.{fmt}" for name in ("decisions", "forest", "km_at_risk", "pit", "rfs_overlay") for fmt in ("png", "svg"))
    assert [p.name for p in tmp_path.iterdir() if p.name != "report.html"] == ["run"]


def _refused(capsys, args, *expected):
    assert main(args) == 2
    printed = capsys.readouterr().out
    flat = " ".join(printed.split())
    for text in expected:
        assert text in flat, printed
    assert "Traceback" not in printed
    return flat


def test_fit_refuses_its_output_path_before_any_work(previous, tmp_path, capsys, monkeypatch):
    from toolkit import fitting

    def never(*args, **kwargs):
        raise AssertionError("the cohort was loaded or the model sampled before the output path was checked")

    monkeypatch.setattr(fitting, "fit_durability", never)
    monkeypatch.setattr("toolkit.cli.load_cohort", never)
    before = folder_digest(previous)
    _refused(capsys, FIT + ["--out", str(previous)],
             f"run folder {previous} already exists; add --overwrite to replace it (the old run is kept until "
             "the new one is complete) or choose another --out")
    assert folder_digest(previous) == before
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    _refused(capsys, FIT + ["--out", str(a_file)], f"run folder {a_file} exists and is a file, not a folder; "
                                                   "choose a new name for the run (--out)")
    _refused(capsys, FIT + ["--out", str(a_file / "run")],
             f"cannot write run folder {a_file / 'run'}: {a_file} is a file, not a folder")
    assert a_file.read_text() == "keep me"
    _refused(capsys, FIT + ["--out", str(EXAMPLE / "runs" / "x")], "is inside the cohort folder")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        _refused(capsys, FIT + ["--out", str(locked / "run")], f"no write permission in {locked}")


def test_report_refuses_a_folder_and_leaves_no_temporary_file(previous, tmp_path, capsys):
    folder = tmp_path / "report.html"
    folder.mkdir()
    _refused(capsys, ["report", str(previous), "--out", str(folder)],
             f"--out {folder} is a folder; give a file name for the report")
    assert list(tmp_path.rglob("*")) == [folder]


def test_report_write_is_atomic(previous, tmp_path, monkeypatch):
    from toolkit import report

    out = tmp_path / "report.html"
    out.write_text("the previous report")

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(Path, "write_text", crash)
    with pytest.raises(OSError, match="simulated"):
        report.write_report([previous], out)
    monkeypatch.undo()
    assert out.read_text() == "the previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    report.write_report([previous], out)
    umask = os.umask(0)
    os.umask(umask)
    assert out.read_text().startswith("<!DOCTYPE html>") and out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_report_on_a_damaged_run_is_a_clear_error(previous, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(previous, run)
    summary = json.loads((run / "summary.json").read_text())
    report = str(tmp_path / "r.html")
    (run / "summary.json").write_text("{}")  # edited by hand
    _refused(capsys, ["report", str(run), "--out", report], "summary.json was changed after the fit")
    edit_run_file(run, "summary.json", "{}")  # edited and re-sealed
    _refused(capsys, ["report", str(run), "--out", report],
             f"{run / 'summary.json'} lacks model, arms.control, arms.experimental, estimands, diagnostics.converged")
    del summary["estimands"]["hazard_ratio"]
    edit_run_file(run, "summary.json", json.dumps(summary))
    _refused(capsys, ["report", str(run), "--out", report], "lacks 'hazard_ratio', which the report needs")
    edit_run_file(run, "summary.json", "not json")
    _refused(capsys, ["report", str(run), "--out", report], "summary.json is not valid JSON")
    (run / "manifest.json").unlink()
    _refused(capsys, ["report", str(run), "--out", report], "has no manifest.json")
    assert not list(tmp_path.glob("*.html")) and not list(tmp_path.glob(".*"))


def test_demo_and_run_notebooks_refuse_their_output_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "x.txt"
    a_file.write_text("keep me")
    _refused(capsys, ["demo", "--out", str(a_file)], f"--out {a_file} exists and is a file")
    _refused(capsys, ["run-notebooks", "--data", str(EXAMPLE), "--out", str(a_file)],
             f"--out {a_file} exists and is a file")
    done = tmp_path / "demo"
    (done / "runs").mkdir(parents=True)
    _refused(capsys, ["demo", "--out", str(done)], f"demo folder {done} already exists; add --overwrite")
    (done / "thesis.docx").write_text("keep me")
    _refused(capsys, ["demo", "--out", str(done), "--overwrite"], "is not a demo folder")
    assert a_file.read_text() == "keep me" and (done / "thesis.docx").read_text() == "keep me"


def test_scratch_folders_of_a_live_save_are_left_alone(tmp_path):
    """Only scratch folders of dead processes (or older than any save takes: PIDs are reused) are cleared."""
    import time

    from toolkit.inference import recover_run

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    now, hours = time.time_ns(), 3600 * 10**9
    out = _save(tmp_path / "run", 1)
    live = tmp_path / f".run.tmp-{os.getpid()}-{now}-a"
    stale = tmp_path / f".run.tmp-{os.getpid()}-{now - 7 * hours}-b"
    dead = tmp_path / f".run.tmp-{finished.pid}-{now}-c"
    for folder in (live, stale, dead):
        folder.mkdir()
    recover_run(out)
    assert live.exists() and not stale.exists() and not dead.exists()
    # a run moved aside by a save still in progress is not taken back; one left by a dead save is
    moving = tmp_path / f".run.old-{os.getpid()}-{now}"
    out.rename(moving)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(out)
    left = tmp_path / f".run.old-{finished.pid}-{now}"
    moving.rename(left)
    assert _version_of(out) == 1 and not left.exists()
