"""Statistics against published tables and closed forms."""

from __future__ import annotations

import math

import pytest

from intersection_meta.stats import Interval, mean_ci, t_cdf, t_quantile, wilson_interval

#: Two-sided 95% Student-t critical values t_{0.975, df} from printed tables (3 decimals).
T975_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 10: 2.228, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}


@pytest.mark.parametrize("df", sorted(T975_TABLE))
def test_t_quantile_matches_the_table(df):
    assert t_quantile(0.975, df) == pytest.approx(T975_TABLE[df], abs=6e-4)


def test_t_quantile_closed_forms_and_limits():
    for p in (0.6, 0.9, 0.975, 0.999):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-11)  # Cauchy
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-11)
        assert t_quantile(1 - p, 7) == pytest.approx(-t_quantile(p, 7), rel=1e-12)
    assert t_quantile(0.975, 5000) == pytest.approx(1.959964, abs=1e-3)  # tends to the normal quantile
    assert t_quantile(0.5, 9) == pytest.approx(0.0, abs=1e-12)


def test_t_cdf_is_a_cdf():
    xs = [-5.0, -1.0, 0.0, 0.3, 2.0, 10.0]
    for df in (1, 2, 3, 8):
        values = [t_cdf(x, df) for x in xs]
        assert values == sorted(values) and t_cdf(0.0, df) == pytest.approx(0.5)
        assert t_cdf(-1.3, df) == pytest.approx(1.0 - t_cdf(1.3, df), abs=1e-15)
    with pytest.raises(ValueError, match="positive integer"):
        t_cdf(1.0, 0)


def test_mean_ci_hand_computed():
    # values 1, 2, 3: mean 2, sample sd 1, half-width t_{0.975,2} / sqrt(3)
    ci = mean_ci([1.0, 2.0, 3.0])
    assert isinstance(ci, Interval) and ci.estimate == 2.0
    assert ci.half_width == pytest.approx(4.302653 / math.sqrt(3.0), rel=1e-6)
    assert (ci.low, ci.high) == pytest.approx((2.0 - ci.half_width, 2.0 + ci.half_width))
    single = mean_ci([4.0, float("nan")])  # NaN ignored; one value has no interval
    assert single.estimate == 4.0 and math.isnan(single.low) and math.isnan(single.half_width)
    assert all(math.isnan(x) for x in mean_ci([]))


def test_wilson_interval_reference_values():
    # Wilson (1927) score interval, z = 1.96: 3 of 10 -> [0.1078, 0.6032]; 0 of 20 -> [0, 0.1611]
    assert wilson_interval(3, 10) == pytest.approx((0.3, 0.1078, 0.6032), abs=1e-4)
    assert wilson_interval(0, 20) == pytest.approx((0.0, 0.0, 0.1611), abs=1e-4)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
