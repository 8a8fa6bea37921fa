"""CAR-T assay units: a vocabulary with a prior centre per unit, refusals that name the supported units, and
spec ``[priors]`` for the CAR-T, MRD and joint analyses."""

from __future__ import annotations

import math

import pytest

from toolkit.cli import main
from toolkit.data import CohortValidationError, load_cohort
from toolkit.data.inputs import ModelDataError, to_cart_inputs
from toolkit.data.units import CART_UNITS, find_cart_unit
from toolkit.fitting import CartOptions, JointOptions, MrdOptions
from toolkit.models.cart import CartPriors
from toolkit.testing import read_raw, write_raw


def _set_units(folder, unit: str, rows=None):
    cart = read_raw(folder, "cart_kinetics")
    if rows is None:
        cart["unit"] = unit
    else:
        cart.loc[rows, "unit"] = unit
    write_raw(folder, "cart_kinetics", cart)
    return cart


def test_unknown_unit_is_a_validation_problem_naming_file_row_column_and_fix(cohort_dir, capsys):
    _set_units(cohort_dir, "copies/mL")
    with pytest.raises(CohortValidationError) as err:
        load_cohort(cohort_dir)
    problems = [p for p in err.value.problems if p.message == "is not a unit the toolkit knows"]
    assert len(problems) == len(read_raw(cohort_dir, "cart_kinetics"))
    first = problems[0]
    assert (first.file, first.row, first.column, first.value) == ("cart_kinetics.csv", 2, "unit", "copies/mL")
    assert first.fix.startswith("write one of the supported units: copies/ug (qPCR, transgene copies per microgram "
                                "of genomic DNA); cells/uL (flow cytometry, CAR-positive cells per microlitre of blood)")
    assert "add it to toolkit/data/units.py" in first.fix
    assert main(["validate", str(cohort_dir)]) == 2
    assert "Traceback" not in capsys.readouterr().out


def test_mixed_units_are_refused(cohort_dir):
    _set_units(cohort_dir, "cells/uL", rows=[5])
    with pytest.raises(CohortValidationError) as err:
        load_cohort(cohort_dir)
    (problem,) = err.value.problems
    assert (problem.row, problem.column) == (5, "unit") and problem.message.startswith("mixes units")


def test_spellings_map_to_one_unit_and_each_unit_has_a_sourced_centre(cohort_dir):
    assert find_cart_unit(" Copies/µg gDNA ").name == "copies/ug" and find_cart_unit("CELLS/µL").name == "cells/uL"
    assert find_cart_unit("copies/mL") is None
    for unit in CART_UNITS:
        assert unit.source and len(unit.log_cmax_prior) == 2 and unit.log_cmax_prior[1] > 0
        assert CartPriors.for_unit(unit.name).mu_cmax == unit.log_cmax_prior
    assert CartPriors.for_unit("copies/ug") == CartPriors()  # the qPCR default is unchanged
    _set_units(cohort_dir, "copies/µg")
    assert to_cart_inputs(load_cohort(cohort_dir)).unit == "copies/ug"
    with pytest.raises(ValueError, match=r"^unknown CAR-T unit 'copies/mL': write one of the supported units"):
        CartPriors.for_unit("copies/mL")


def test_a_flow_cohort_is_fitted_against_the_flow_prior_centre(cohort_dir, monkeypatch):
    """fit_cart builds the model with the centre of the cohort's unit (and the spec's departures on top)."""
    import toolkit.models.cart as cart_module
    from toolkit.fitting import fit_cart

    cart = read_raw(cohort_dir, "cart_kinetics")
    cart["unit"] = "cells/uL"
    write_raw(cohort_dir, "cart_kinetics", cart)
    seen = {}

    class Stop(Exception):
        pass

    def capture(inputs, priors, **kwargs):
        seen["unit"], seen["priors"] = inputs.unit, priors
        raise Stop

    monkeypatch.setattr(cart_module, "build_cart_model", capture)
    with pytest.raises(Stop):
        fit_cart(load_cohort(cohort_dir), CartOptions(priors={"sigma": [math.log(0.4), 0.3]}))
    assert seen["unit"] == "cells/uL"
    assert seen["priors"].mu_cmax == (math.log(30.0), 1.0) and seen["priors"].sigma == (math.log(0.4), 0.3)
    assert seen["priors"].mu_tmax == CartPriors().mu_tmax


def test_joint_model_refuses_a_non_qpcr_unit(cohort_dir):
    from toolkit.fitting import fit_joint

    _set_units(cohort_dir, "cells/uL")
    with pytest.raises(ModelDataError, match=r"^the joint model is defined on qPCR levels \(copies/ug\) and this "
                                             r"cohort's CAR-T unit is cells/uL"):
        fit_joint(load_cohort(cohort_dir))


def test_spec_priors_for_cart_mrd_and_joint(tmp_path, capsys):
    from toolkit.specs import load_spec, merged_options

    spec_path = tmp_path / "cart.toml"
    spec_path.write_text('model = "cart"\n[priors]\nmu_cmax = [10.5, 0.4]\n')
    options = CartOptions(**merged_options(load_spec(spec_path, model="cart"), {}))
    assert options.prior_set("copies/ug").mu_cmax == (10.5, 0.4)
    assert options.prior_set("cells/uL").mu_cmax == (10.5, 0.4)  # an explicit departure wins over the unit centre
    with pytest.raises(ValueError, match=r"^unknown prior\(s\) mu_peak; valid: covariate_effect, effect_alpha"):
        CartOptions(priors={"mu_peak": [1.0, 1.0]})
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "cart"\n[priors]\nmu_peak = [10.5, 0.4]\n')
    assert main(["fit", "cart", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run"),
                 "--spec", str(bad)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "bad.toml: unknown prior(s) mu_peak; valid:" in out and "Traceback" not in out

    assert MrdOptions(priors={"log_clearance": [-1.0, 0.3]}).prior_set().log_clearance == (-1.0, 0.3)
    with pytest.raises(ValueError, match=r"^unknown or not overridable MRD prior\(s\) relapse_sd; a \[priors\] "
                                         r"entry is \[mu, sigma\] of one of: baseline_log10_fallback"):
        MrdOptions(priors={"relapse_sd": [0.3, 0.1]})

    joint = JointOptions(priors={"log_hr": [0.0, 0.3], "mu_cmax": [10.0, 0.5]})
    assert joint.prior_set().log_hr == (0.0, 0.3) and joint.cart_prior_set().mu_cmax == (10.0, 0.5)
    with pytest.raises(ValueError, match=r"^unknown prior\(s\) nope; valid: .*\(the relapse part's and the CAR-T "):
        JointOptions(priors={"nope": [0.0, 1.0]})
