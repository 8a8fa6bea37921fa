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


def test_aalen_johansen_matches_lifelines_on_untied_data():
    """Reference: lifelines AalenJohansenFitter (untied times, so it does not jitter)."""
    from lifelines import AalenJohansenFitter

    from toolkit.survival import aalen_johansen

    rng = np.random.default_rng(3)
    time = rng.exponential(1.0, 80)
    cause = rng.choice([0, 1, 2], size=80, p=[0.3, 0.5, 0.2])
    aj = aalen_johansen(time, cause, event_of_interest=1)
    ref = AalenJohansenFitter(calculate_variance=False).fit(time, cause, event_of_interest=1)
    ref_cif = ref.cumulative_density_.iloc[:, 0]
    idx = np.searchsorted(aj["time"].to_numpy(), ref_cif.index.to_numpy(), side="right") - 1
    np.testing.assert_allclose(aj["cif"].to_numpy()[idx], ref_cif.to_numpy(), atol=1e-12)
    assert aj["cif"].iloc[-1] > 0.3


def test_aalen_johansen_with_ties_by_hand():
    """time 1,1,2,3,3,4 cause 1,2,1,0,2,1: at t=1 n=6, d1=1, d=2 -> CIF 1/6, S 4/6; t=2 n=4: CIF += 4/6 * 1/4;
    t=3 n=3, d1=0, d=1 -> S 4/6 * 2/4 * 2/3; t=4 n=1: CIF += S(3) * 1."""
    from toolkit.survival import aalen_johansen

    aj = aalen_johansen([1, 1, 2, 3, 3, 4], [1, 2, 1, 0, 2, 1])
    s3 = 4 / 6 * 3 / 4 * 2 / 3
    np.testing.assert_allclose(aj["cif"], [0, 1 / 6, 1 / 6 + 1 / 6, 1 / 3, 1 / 3 + s3], atol=1e-12)
    # cause 2's incidence and the all-cause survival add up to one with cause 1's
    other = aalen_johansen([1, 1, 2, 3, 3, 4], [1, 2, 1, 0, 2, 1], event_of_interest=2)
    np.testing.assert_allclose(aj["cif"] + other["cif"] + aj["survival"], 1.0, atol=1e-12)


def test_cumulative_incidence_of_constant_hazards_is_closed_form():
    """h_c = a, h_o = b: CIF_c(t) = a / (a + b) (1 - exp(-(a + b) t))."""
    from toolkit.survival import cumulative_incidence, incidence_grid

    a, b = 0.8 / 365, 0.1 / 365
    grid = incidence_grid(730)
    assert grid[1] - grid[0] == pytest.approx(1.0) and grid[-1] == 730
    cif = cumulative_incidence(np.exp(-a * grid), np.exp(-b * grid))
    np.testing.assert_allclose(cif, a / (a + b) * -np.expm1(-(a + b) * grid), rtol=1e-6, atol=1e-12)
    # a cure mixture as the cause's survival: pi never has the event
    pi = 0.4
    cif = cumulative_incidence(pi + (1 - pi) * np.exp(-a * grid), np.exp(-b * grid))
    np.testing.assert_allclose(cif, (1 - pi) * a / (a + b) * -np.expm1(-(a + b) * grid), rtol=1e-6, atol=1e-12)


def test_cumulative_incidence_at_chosen_grid_points_is_the_running_sum_there():
    """``at`` gives CIF at grid indices (any order, repeats, 0 and the end) without the running total;
    surv_other may broadcast against surv_cause either way (rows x grid against one row)."""
    from toolkit.survival import cumulative_incidence, incidence_grid

    grid = incidence_grid(730)
    rng = np.random.default_rng(0)
    k, rate = rng.uniform(0.4, 2.5, (5, 3, 1)), rng.uniform(0.05, 3, (5, 3, 1))
    sc = 0.3 + 0.7 * np.exp(-rate * (grid / 365.25) ** k)
    so = np.exp(-0.05 * (grid / 365.25) ** 1.3)[None, None, :]
    full = cumulative_incidence(sc, so)
    assert full.shape == sc.shape and np.all(full[..., 0] == 0)
    at = [365, 0, 180, 730, 180]
    np.testing.assert_allclose(cumulative_incidence(sc, so, at=at), full[..., at], rtol=0, atol=1e-14)
    np.testing.assert_allclose(cumulative_incidence(so, sc, at=at), cumulative_incidence(so, sc)[..., at],
                               rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="grid indices"):
        cumulative_incidence(sc, so, at=[731])


def test_first_crossing_is_the_exact_median():
    from toolkit.survival import first_crossing

    rates = np.array([0.01, 0.002, 1e-6])
    med = first_crossing(lambda t: np.exp(-rates * t), 3, 0.0, 7305.0)
    np.testing.assert_allclose(med[:2], np.log(2) / rates[:2], rtol=1e-9)
    assert np.isinf(med[2])
