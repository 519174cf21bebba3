"""Group-sequential boundaries (itp.learning.sequential) against exact references and a simulation."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal

from itp.learning.sequential import bonferroni_quantile, constant_boundary, crossing_probability

DEFAULT_LOOKS = (200, 400, 800, 1600, 3200, 6400, 12800, 20000)  # CanaryConfig's defaults


def reference_crossing(c: float, information: tuple[float, ...]) -> float:
    """1 - P(all Z_k < c), Z multivariate normal with corr(Z_j, Z_k) = sqrt(I_j / I_k) (scipy's Genz)."""
    k = len(information)
    cov = np.array([[math.sqrt(min(a, b) / max(a, b)) for b in information] for a in information])
    below = multivariate_normal.cdf(
        np.full(k, c), mean=np.zeros(k), cov=cov, maxpts=200_000 * k, abseps=1e-7, releps=1e-7,
        rng=np.random.default_rng(1),
    )
    return 1.0 - float(below)


def test_one_look_is_the_plain_quantile() -> None:
    z = NormalDist().inv_cdf(0.95)
    assert constant_boundary([500], 0.05) == pytest.approx(z, abs=1e-12)
    assert crossing_probability(z, [500]) == pytest.approx(0.05, abs=1e-6)
    assert bonferroni_quantile(1, 0.05) == pytest.approx(z, abs=1e-12)
    assert bonferroni_quantile(8, 0.05) == pytest.approx(NormalDist().inv_cdf(1 - 0.05 / 8), abs=1e-12)


@pytest.mark.parametrize(
    "information",
    [(1.0, 2.0), (100.0, 400.0), (1.0, 1.05), (200.0, 400.0, 800.0), (1.0, 2.0, 3.0, 4.0)],
)
@pytest.mark.parametrize("c", [1.7, 2.1, 2.5])
def test_crossing_matches_the_multivariate_normal(information: tuple[float, ...], c: float) -> None:
    assert crossing_probability(c, information) == pytest.approx(reference_crossing(c, information), abs=2e-5)


@settings(max_examples=25, deadline=None)
@given(
    first=st.floats(1.0, 1e4),
    ratios=st.lists(st.floats(1.01, 8.0), min_size=1, max_size=3),
    c=st.floats(1.0, 3.0),
)
def test_crossing_matches_the_multivariate_normal_for_any_schedule(
    first: float, ratios: list[float], c: float
) -> None:
    info = [first]
    for r in ratios:
        info.append(info[-1] * r)
    assert crossing_probability(c, info) == pytest.approx(reference_crossing(c, tuple(info)), abs=3e-5)


def test_the_boundary_spends_alpha_and_lies_between_one_look_and_bonferroni() -> None:
    for alpha in (0.01, 0.05, 0.1):
        c = constant_boundary(DEFAULT_LOOKS, alpha)
        assert NormalDist().inv_cdf(1 - alpha) < c < bonferroni_quantile(len(DEFAULT_LOOKS), alpha)
        assert crossing_probability(c, DEFAULT_LOOKS) == pytest.approx(alpha, abs=1e-6)
        assert crossing_probability(c, DEFAULT_LOOKS) <= alpha + 1e-9  # rounded toward spending less
    assert constant_boundary(DEFAULT_LOOKS, 0.05) == pytest.approx(2.3687, abs=5e-4)
    # More looks, or a last look later, need a higher boundary; looks closer together a lower one.
    assert constant_boundary(DEFAULT_LOOKS[:4], 0.05) < constant_boundary(DEFAULT_LOOKS, 0.05)
    assert constant_boundary((*DEFAULT_LOOKS[:-1], 14000), 0.05) < constant_boundary(DEFAULT_LOOKS, 0.05)
    assert constant_boundary((1, 2, 3, 4, 5), 0.05) < constant_boundary((1, 2, 4, 8, 16), 0.05)


def test_the_grid_is_fine_enough() -> None:
    c = constant_boundary(DEFAULT_LOOKS, 0.05)
    assert crossing_probability(c, DEFAULT_LOOKS) == pytest.approx(
        crossing_probability(c, DEFAULT_LOOKS, cells=2000), abs=1e-5
    )


@pytest.mark.statistical
def test_simulated_paths_cross_the_boundary_alpha_of_the_time() -> None:
    """400 000 driftless random walks observed at the default looks: the share crossing c is 0.05 within
    four standard errors (0.0014)."""
    rng = np.random.default_rng(5)
    info = np.array(DEFAULT_LOOKS, dtype=float)
    crossed = 0
    n = 400_000
    c = constant_boundary(DEFAULT_LOOKS, 0.05)
    for _ in range(4):
        steps = rng.standard_normal((n // 4, info.size)) * np.sqrt(np.diff(np.r_[0.0, info]))
        z = np.cumsum(steps, axis=1) / np.sqrt(info)
        crossed += int((z.max(axis=1) >= c).sum())
    assert abs(crossed / n - 0.05) < 4 * math.sqrt(0.05 * 0.95 / n)


@pytest.mark.parametrize(
    ("information", "alpha", "match"),
    [
        ((), 0.05, "information"),
        ((1.0, 1.0), 0.05, "information"),
        ((2.0, 1.0), 0.05, "information"),
        ((0.0, 1.0), 0.05, "information"),
        ((1.0, math.inf), 0.05, "information"),
        ((1.0, 2.0), 0.0, "alpha"),
        ((1.0, 2.0), 0.5, "alpha"),
        ((1.0, 2.0), True, "alpha"),
    ],
)
def test_bad_input_names_the_field(information: tuple[float, ...], alpha: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        constant_boundary(information, alpha)


def test_bad_crossing_input_names_the_field() -> None:
    with pytest.raises(ValueError, match="c must be finite"):
        crossing_probability(math.nan, (1.0, 2.0))
    with pytest.raises(ValueError, match="cells"):
        crossing_probability(2.0, (1.0, 2.0), cells=3)
    with pytest.raises(ValueError, match="looks"):
        bonferroni_quantile(0, 0.05)
