import pytest

from toolkit.testing import copy_example


@pytest.fixture
def cohort_dir(tmp_path):
    """A writable copy of the example cohort."""
    return copy_example(tmp_path / "cohort")
