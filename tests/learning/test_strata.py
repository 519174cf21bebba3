"""Post-stratified comparison of two arms: a slow reference, the pooled special case, and its statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itp.learning.strata import (
    DEFAULT_SIZE_STRATA_BYTES,
    Moments,
    check_size_strata,
    compare_arms,
    pooled_moments,
    size_stratum,
    stratified_difference,
    stratified_ratio,
)


def _moments(values: list[float]) -> Moments:
    n = len(values)
    mean = sum(values) / n if n else 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return Moments(n, mean, var)


def _reference(cand: list[list[float]], cur: list[list[float]]) -> tuple[float, float, float, float]:
    """Slow, literal: (difference, its se, ratio, log-ratio se) over strata with >= 2 values per arm."""
    used = [k for k in range(len(cand)) if len(cand[k]) >= 2 and len(cur[k]) >= 2]
    n_used = sum(len(cand[k]) + len(cur[k]) for k in used)
    mc = mu = vc = vu = 0.0
    for k in used:
        w = (len(cand[k]) + len(cur[k])) / n_used
        a, b = _moments(cand[k]), _moments(cur[k])
        mc += w * a.mean
        mu += w * b.mean
        vc += w * w * a.variance / a.n
        vu += w * w * b.variance / b.n
    return mc - mu, math.sqrt(vc + vu), mc / mu, math.sqrt(vc / mc**2 + vu / mu**2)


values = st.lists(st.floats(0.1, 100.0, allow_nan=False), min_size=0, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5).flatmap(lambda k: st.tuples(st.lists(values, min_size=k, max_size=k),
                                                     st.lists(values, min_size=k, max_size=k))))
def test_matches_the_slow_reference(arms: tuple[list[list[float]], list[list[float]]]) -> None:
    cand, cur = arms
    d = stratified_difference([_moments(v) for v in cand], [_moments(v) for v in cur])
    r = stratified_ratio([_moments(v) for v in cand], [_moments(v) for v in cur])
    used = [k for k in range(len(cand)) if len(cand[k]) >= 2 and len(cur[k]) >= 2]
    if not used:
        assert math.isnan(d.value) and math.isnan(r.value) and d.strata_used == 0 and d.coverage == 0.0
        return
    diff, se, ratio, log_se = _reference(cand, cur)
    assert d.value == pytest.approx(diff, rel=1e-9, abs=1e-9)
    assert d.se == pytest.approx(se, rel=1e-9, abs=1e-12)
    assert r.value == pytest.approx(ratio, rel=1e-9) and r.se == pytest.approx(log_se, rel=1e-9, abs=1e-12)
    assert d.strata_used == len(used)
    total = sum(len(a) + len(b) for a, b in zip(cand, cur, strict=True))
    assert d.coverage == pytest.approx(sum(len(cand[k]) + len(cur[k]) for k in used) / total)
    assert d.df > 0


def test_one_stratum_is_welchs_comparison_of_the_pooled_means() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, 40), rng.normal(0.5, 1.0, 70)
    d = stratified_difference([_moments(list(a))], [_moments(list(b))])
    va, vb = a.var(ddof=1) / 40, b.var(ddof=1) / 70
    assert d.value == pytest.approx(a.mean() - b.mean()) and d.se == pytest.approx(math.sqrt(va + vb))
    assert d.df == pytest.approx((va + vb) ** 2 / (va**2 / 39 + vb**2 / 69))


Arms = tuple[list[list[float]], list[list[float]]]


def _canary_draw(rng: np.random.Generator, n: int, effect: float) -> Arms:
    """n tasks routed by a fair coin; a task's value depends on its size class (1, 10 or 50) far more
    than on its arm (the candidate multiplies it by 1 + effect), with 20% noise."""
    level = np.array([1.0, 10.0, 50.0])
    cls = rng.integers(0, 3, n)
    cand = rng.random(n) < 0.5
    v = level[cls] * (1.0 + effect * cand) * rng.lognormal(0.0, 0.2, n)
    return ([list(v[cand & (cls == k)]) for k in range(3)], [list(v[~cand & (cls == k)]) for k in range(3)])


def test_stratified_estimates_are_unbiased_narrower_and_cover() -> None:
    """Statistical: 2000 simulated canaries of 200 tasks. The traffic's mean of the candidate's value
    exceeds the current's by 10%; the pooled and stratified ratios both estimate it, the stratified one
    with a much smaller spread, and its 95% interval covers the truth about 95% of the time."""
    rng = np.random.default_rng(11)
    truth = 1.1
    pooled, strat, covered = [], [], 0
    for _ in range(2000):
        cand, cur = _canary_draw(rng, 200, 0.1)
        s = stratified_ratio([_moments(v) for v in cand], [_moments(v) for v in cur])
        flat_cand, flat_cur = [x for v in cand for x in v], [x for v in cur for x in v]
        p = stratified_ratio([_moments(flat_cand)], [_moments(flat_cur)])
        pooled.append(p.value)
        strat.append(s.value)
        covered += abs(math.log(s.value / truth)) <= 1.96 * s.se
    assert np.mean(strat) == pytest.approx(truth, abs=0.01)
    assert np.mean(pooled) == pytest.approx(truth, abs=0.02)
    assert np.std(strat) < 0.3 * np.std(pooled)  # the size mix's noise is gone
    assert 0.93 <= covered / 2000 <= 0.97


def test_size_strata_bounds_and_errors() -> None:
    assert check_size_strata([1, 5], "f") == (1, 5) and check_size_strata((), "f") == ()
    b = DEFAULT_SIZE_STRATA_BYTES
    sizes = (0, b[0] - 1, b[0], b[1], b[2] - 1, b[2], 2**50)
    assert [size_stratum(x, b) for x in sizes] == [0, 0, 1, 2, 2, 3, 3]
    for bad in ((5, 1), (1, 1), (0, 4), (-3,)):
        with pytest.raises(ValueError, match="f must be strictly ascending"):
            check_size_strata(bad, "f")
    for bad_type in ((1.5,), ("a",), (True,)):
        with pytest.raises(TypeError, match="f must hold ints"):
            check_size_strata(bad_type, "f")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="f must be a sequence"):
        check_size_strata(5, "f")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same strata"):
        stratified_difference([Moments(2, 0.0, 1.0)], [])


@settings(max_examples=200, deadline=None)
@given(st.lists(values, min_size=1, max_size=5))
def test_pooled_moments_are_those_of_all_the_values(parts: list[list[float]]) -> None:
    everything = [x for p in parts for x in p]
    got = pooled_moments([_moments(p) for p in parts])
    want = _moments(everything)
    assert got.n == want.n
    assert got.mean == pytest.approx(want.mean, rel=1e-9, abs=1e-9)
    assert got.variance == pytest.approx(want.variance, rel=1e-7, abs=1e-7)


def test_compare_arms_falls_back_to_the_pooled_means() -> None:
    a, b = [[1.0, 2.0, 3.0], [10.0]], [[2.0], [11.0, 12.0, 13.0]]  # no stratum has 2 on both arms
    e, how = compare_arms([_moments(v) for v in a], [_moments(v) for v in b])
    assert how == "pooled" and e.value == pytest.approx(16.0 / 4 - 38.0 / 4)
    cand, cur = [[1.0, 3.0], [5.0, 7.0]], [[2.0, 2.0], [4.0, 6.0]]  # the second stratum differs by +1
    e, how = compare_arms([_moments(v) for v in cand], [_moments(v) for v in cur])
    assert how == "stratified" and e.value == pytest.approx(0.5) and e.strata_used == 2
    r, how = compare_arms([_moments([2.0, 4.0])], [_moments([1.0, 3.0])], ratio=True)
    assert how == "pooled" and r.value == pytest.approx(1.5)  # one stratum is the pooled comparison
