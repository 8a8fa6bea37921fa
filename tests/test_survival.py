import numpy as np
import pytest

from toolkit.survival import kaplan_meier, median_survival, survival_at


def test_kaplan_meier_matches_r_survfit():
    """Reference: R survival::survfit(Surv(c(1,2,2,3,4,5), c(1,1,0,1,0,1)) ~ 1, conf.int=0.9, conf.type='log-log')."""
    km = kaplan_meier([1, 2, 2, 3, 4, 5], [1, 1, 0, 1, 0, 1])
    assert km["time"].tolist() == [0, 1, 2, 3, 4, 5]
    assert km["n_at_risk"].tolist() == [6, 6, 5, 3, 2, 1]
    np.testing.assert_allclose(km["survival"], [1, 5 / 6, 2 / 3, 4 / 9, 4 / 9, 0], atol=1e-12)
    # Greenwood by hand at t=2: var log S = 1/(6*5) + 1/(5*4) = 0.08333; log-log interval with z=1.645
    s, v = 2 / 3, 1 / 30 + 1 / 20
    half = 1.6448536269514722 * np.sqrt(v) / np.log(s)
    assert km.loc[2, "lower"] == pytest.approx(s ** np.exp(-half))
    assert km.loc[2, "upper"] == pytest.approx(s ** np.exp(half))
    assert median_survival(km) == 3
    np.testing.assert_allclose(survival_at(km, [0.5, 2.5, 4.9]), [1, 2 / 3, 4 / 9])
    assert np.isnan(survival_at(km, [6])[0])


def test_kaplan_meier_rejects_bad_times():
    with pytest.raises(ValueError, match="times must be finite and non-negative"):
        kaplan_meier([1, -1], [1, 0])
