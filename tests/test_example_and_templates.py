"""The shipped example cohort and templates are exactly what the code generates."""

import json

import pytest

from toolkit.data.templates import data_dictionary, write_templates
from toolkit.simulate import simulate_trial
from toolkit.testing import EXAMPLE

TEMPLATES = EXAMPLE.parent


def test_example_regenerates_identically(tmp_path):
    out = simulate_trial(60, seed=20261125).write(tmp_path / "example")
    for name in ("study.toml", "patients.csv", "outcomes.csv", "cart_kinetics.csv", "mrd.csv"):
        assert (out / name).read_bytes() == (EXAMPLE / name).read_bytes(), name
    fresh = json.loads((out / "truth.json").read_text())
    shipped = json.loads((EXAMPLE / "truth.json").read_text())
    assert fresh.keys() == shipped.keys()
    for name, value in shipped["estimands"].items():
        assert fresh["estimands"][name] == pytest.approx(value, rel=1e-9), name


def test_templates_and_dictionary_are_generated_from_the_schema(tmp_path):
    write_templates(tmp_path)
    for path in tmp_path.iterdir():
        assert path.read_bytes() == (TEMPLATES / path.name).read_bytes(), (
            f"{path.name} is out of date: run `toolkit templates --out data_templates`")
    text = data_dictionary()
    for column in ("patient_id", "relapse_cd19", "lloq", "lod_pct", "loq_pct", "last_followup_day"):
        assert f"`{column}`" in text
