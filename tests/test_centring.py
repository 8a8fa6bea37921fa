"""Mask-as-data centring (toolkit.models.centring): theta has the same distribution in either form."""

import numpy as np
import pymc as pm
import pytest

from toolkit.models.centring import mask_centred


@pytest.mark.parametrize("family,scales", [("normal", (1.0, 1.0)), ("normal", (5.0, 2.0)), ("log_weibull", (1.0, 1.0))])
def test_both_forms_draw_the_same_distribution(family, scales):
    """Centred and non-centred halves of one variable give theta with the family's mean and SD (location 1.5,
    scale 0.7); a wrong form (the non-centred half left unscaled) would fail the SD check."""
    n = 20_000
    mask = np.r_[np.ones(n), np.zeros(n)]
    with pm.Model() as model:
        pm.Deterministic("theta", mask_centred("raw", 1.5, 0.7, mask, family=family, scale_centred=scales[0],
                                                       scale_noncentred=scales[1]))
    draws = pm.draw(model["theta"], random_seed=1)
    # log Weibull with shape 1/sd: mean mu - sd gamma (Euler), SD sd pi / sqrt(6)
    mean, sd = (1.5, 0.7) if family == "normal" else (1.5 - 0.7 * np.euler_gamma, 0.7 * np.pi / np.sqrt(6))
    for half in (draws[:n], draws[n:]):
        assert abs(half.mean() - mean) < 4 * sd / np.sqrt(n)
        assert abs(half.std() / sd - 1) < 0.03


def test_a_start_value_is_the_free_variables_initial_point():
    with pm.Model() as model:
        mask_centred("raw", 0.0, 1.0, np.array([1.0, 0.0]), scale_centred=5.0, scale_noncentred=2.0,
                     start=np.array([3.0, -1.0]))
    np.testing.assert_allclose(model.initial_point()["raw"], [3.0, -1.0])
    with pytest.raises(ValueError, match="no start value or scales"), pm.Model():
        mask_centred("raw", 0.0, 1.0, np.array([1.0]), family="log_weibull", start=np.array([0.0]))
