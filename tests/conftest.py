import pytest

from toolkit.testing import EXAMPLE, copy_example, tiny_cli_fit


@pytest.fixture
def cohort_dir(tmp_path):
    """A writable copy of the example cohort."""
    return copy_example(tmp_path / "cohort")


@pytest.fixture(scope="session")
def example_cli_run(tmp_path_factory):
    """``example_cli_run(model)``: the run folder of one tiny ``toolkit fit MODEL`` of the example cohort
    (:func:`toolkit.testing.tiny_cli_fit`, figures written by the command), made on first use and shared by
    every test that only reads it (figures, reports, the CLI smoke test, compare). Do not write into it."""
    made = {}

    def run(model: str):
        if model not in made:
            made[model] = tiny_cli_fit(model, EXAMPLE, tmp_path_factory.mktemp(f"example_{model}") / "run")
        return made[model]

    return run
