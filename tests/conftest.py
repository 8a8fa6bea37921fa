import shutil
from pathlib import Path

import pytest
from filelock import FileLock

from toolkit.testing import EXAMPLE, copy_example, tiny_cli_fit

# the tiny joint fit shared by the joint tests: a simulated trial with MRD data, all three associations
JOINT_TRIAL = {"n_patients": 40, "seed": 11}
JOINT_FIT = ["--chains", "2", "--tune", "150", "--draws", "150", "--seed", "7", "--target-accept", "0.8",
             "--associations", "log_cmax,cart_loss,mrd_clearance"]


@pytest.fixture
def cohort_dir(tmp_path):
    """A writable copy of the example cohort."""
    return copy_example(tmp_path / "cohort")


@pytest.fixture(scope="session")
def shared_folder(tmp_path_factory, worker_id) -> Path:
    """A folder every pytest-xdist worker of this session sees (the parent of the workers' base folders)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def made_once(root: Path, name: str, make) -> Path:
    """The folder ``name`` under ``root``, filled by ``make(folder)`` once for the whole session: the first worker
    to ask makes it under a file lock, the others wait for it and reuse it (a failed ``make`` leaves nothing, so
    the next to ask tries again)."""
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def example_cli_run(shared_folder):
    """``example_cli_run(model)``: the run folder of one tiny ``toolkit fit MODEL`` of the example cohort
    (:func:`toolkit.testing.tiny_cli_fit`, figures written by the command), made once per test session (across
    workers) and shared by every test that only reads it (figures, reports, the CLI smoke test, compare). Do not
    write into it."""
    def run(model: str) -> Path:
        return made_once(shared_folder, f"example_{model}",
                         lambda folder: tiny_cli_fit(model, EXAMPLE, folder / "run")) / "run"

    return run


@pytest.fixture(scope="session")
def joint_trial():
    """The simulated trial (with its latent truths) whose cohort the shared joint fit reads."""
    from toolkit.simulate import simulate_trial

    return simulate_trial(JOINT_TRIAL["n_patients"], seed=JOINT_TRIAL["seed"], with_truth=False)


@pytest.fixture(scope="session")
def joint_cli_run(shared_folder, joint_trial) -> tuple[Path, Path]:
    """(cohort folder, run folder) of one tiny ``toolkit fit joint`` with the MRD submodel and all three
    associations, of ``joint_trial``'s cohort; made once per test session and shared by the joint tests
    that only read it. Do not write into either folder."""
    from toolkit.cli import main

    def make(folder: Path) -> None:
        cohort = joint_trial.write(folder / "cohort")
        assert main(["fit", "joint", "--data", str(cohort), "--out", str(folder / "run"), *JOINT_FIT]) == 0

    folder = made_once(shared_folder, "joint", make)
    return folder / "cohort", folder / "run"
