"""Confidence intervals over repeats: Student's t quantiles against scipy, coverage, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itp.testbed.stats import Estimate, mean_ci, percentile, t_quantile_975

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df", [*range(1, 41), 50, 60, 100, 1000, 10**6])
def test_t_quantile_matches_scipy(df: int) -> None:
    assert t_quantile_975(df) == pytest.approx(float(scipy_stats.t.ppf(0.975, df)), abs=1.5e-4)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=40))
def test_interval_matches_scipy(values: list[float]) -> None:
    est = mean_ci(values)
    arr = np.asarray(values)
    assert est.n == len(values)
    assert est.mean == pytest.approx(float(arr.mean()), rel=1e-12, abs=1e-6)
    sem = float(scipy_stats.sem(arr)) if np.ptp(arr) > 0 else 0.0
    expected = float(scipy_stats.t.ppf(0.975, len(values) - 1)) * sem
    assert est.half_width == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert est.low <= est.mean <= est.high


@pytest.mark.statistical
def test_coverage_is_95_percent() -> None:
    # 4000 intervals of 5 normal draws: coverage ~ Binomial(4000, 0.95); |x - 0.95| < 0.02 is > 5 sd
    # (sd 0.0034), false alarm < 1e-6.
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(4000):
        e = mean_ci(rng.normal(3.0, 2.0, 5).tolist())
        covered += e.low <= 3.0 <= e.high
    assert abs(covered / 4000 - 0.95) < 0.02


def test_small_samples() -> None:
    e = mean_ci([])
    assert e.n == 0 and math.isnan(e.mean) and math.isnan(e.half_width)
    one = mean_ci([2.5])
    assert one == Estimate(2.5, one.half_width, 1) and math.isnan(one.half_width)
    assert one.to_dict() == {"mean": 2.5, "ci95_half_width": None, "n": 1}
    same = mean_ci([4.0, 4.0, 4.0])
    assert same.mean == 4.0 and same.half_width == 0.0


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"values\[1\]"):
        mean_ci([1.0, math.nan])
    with pytest.raises(ValueError, match="df"):
        t_quantile_975(0)
    with pytest.raises(ValueError, match="q"):
        percentile([1.0], 101.0)
    assert math.isnan(percentile([], 50.0))
    assert percentile([1.0, 2.0, 3.0, 4.0], 95.0) == pytest.approx(float(np.percentile([1, 2, 3, 4], 95)))
