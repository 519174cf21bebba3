"""Native SumTree (cpp/include/itp/sum_tree.hpp) against the pure-Python ReferenceSumTree.

The reference builds the same power-of-two tree with the same float64 additions in the same order,
so totals, leaves and prefix-search results must match bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_replay import ReferenceSumTree

from itp import _native

priorities = st.one_of(
    st.just(0.0),
    st.floats(min_value=1e-12, max_value=1e6, allow_nan=False, allow_infinity=False),
)


@st.composite
def tree_ops(draw: st.DrawFn) -> tuple[int, list[tuple[int, float]]]:
    capacity = draw(st.integers(min_value=1, max_value=70))
    ops = draw(
        st.lists(st.tuples(st.integers(0, capacity - 1), priorities), min_size=0, max_size=120)
    )
    return capacity, ops


def build(capacity: int, ops: list[tuple[int, float]]) -> tuple[Any, ReferenceSumTree]:
    tree = _native.SumTree(capacity)
    ref = ReferenceSumTree(capacity)
    for i, v in ops:
        tree.set(i, v)
        ref.set(i, v)
    return tree, ref


@settings(max_examples=200, deadline=None)
@given(tree_ops())
def test_set_matches_reference_exactly(case: tuple[int, list[tuple[int, float]]]) -> None:
    capacity, ops = case
    tree, ref = build(capacity, ops)
    assert tree.capacity == capacity
    assert tree.leaf_count == ref.leaves
    assert tree.total == ref.total()
    assert tree.min == ref.min_positive()
    for i in range(capacity):
        assert tree.get(i) == ref.get(i)
    assert tree.check_invariants()


@settings(max_examples=200, deadline=None)
@given(tree_ops(), st.lists(st.floats(0.0, 1.01), min_size=1, max_size=40))
def test_find_prefix_matches_reference(
    case: tuple[int, list[tuple[int, float]]], fractions: list[float]
) -> None:
    capacity, ops = case
    tree, ref = build(capacity, ops)
    if ref.total() <= 0.0:
        return
    masses = np.array([f * ref.total() for f in fractions], dtype=np.float64)
    idx, values = tree.find_prefix_many(masses)
    for k, mass in enumerate(masses):
        expected = ref.find_prefix(float(mass))
        assert tree.find_prefix(float(mass)) == expected
        assert idx[k] == expected
        assert values[k] == ref.get(expected)
        # Never an empty leaf, even for masses at or beyond the total.
        assert ref.get(expected) > 0.0


@settings(max_examples=100, deadline=None)
@given(tree_ops())
def test_set_many_equals_sequential_sets(case: tuple[int, list[tuple[int, float]]]) -> None:
    capacity, ops = case
    tree = _native.SumTree(capacity)
    ref = ReferenceSumTree(capacity)
    for i, v in ops:  # duplicates included: the last value wins, as with sequential sets
        ref.set(i, v)
    tree.set_many(
        np.array([i for i, _ in ops], dtype=np.int64),
        np.array([v for _, v in ops], dtype=np.float64),
    )
    assert tree.total == ref.total()
    assert [tree.get(i) for i in range(capacity)] == [ref.get(i) for i in range(capacity)]
    assert tree.check_invariants()


def test_prefix_boundaries_follow_cumulative_sums() -> None:
    tree = _native.SumTree(5)
    for i, v in enumerate([1.0, 2.0, 0.0, 3.0, 4.0]):
        tree.set(i, v)
    # Cumulative: [0,1) -> 0, [1,3) -> 1, slot 2 empty, [3,6) -> 3, [6,10) -> 4.
    masses = (0.0, 0.999, 1.0, 2.999, 3.0, 5.999, 6.0, 9.999)
    assert [tree.find_prefix(m) for m in masses] == [0, 0, 1, 1, 3, 3, 4, 4]
    # At or past the total (rounding), the last positive leaf.
    assert tree.find_prefix(10.0) == 4
    assert tree.find_prefix(1e300) == 4
    assert tree.total == 10.0
    assert tree.min == 1.0


def test_empty_tree_reports_infinite_min_and_refuses_search() -> None:
    tree = _native.SumTree(3)
    assert tree.total == 0.0
    assert tree.min == math.inf
    with pytest.raises(ValueError, match="positive total"):
        tree.find_prefix(0.0)


def test_large_tree_is_exact_against_numpy_sum() -> None:
    n = 1 << 16
    rng = np.random.default_rng(3)
    values = rng.random(n)
    tree = _native.SumTree(n)
    tree.set_many(np.arange(n, dtype=np.int64), values)
    # Pairwise tree order: compare against the same pairwise reduction done with numpy.
    level = values.copy()
    while level.size > 1:
        level = level[0::2] + level[1::2]
    assert tree.total == level[0]
    assert tree.min == values.min()
    assert tree.check_invariants()


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda t: t.set(8, 1.0), ValueError, "index = 8 is out of range"),
        (lambda t: t.set(-1, 1.0), ValueError, "index = -1"),
        (lambda t: t.set(0, -1.0), ValueError, "value must be finite and >= 0, got -1"),
        (lambda t: t.set(0, float("nan")), ValueError, "value must be finite.*nan"),
        (lambda t: t.set(0, float("inf")), ValueError, "value must be finite.*inf"),
        (lambda t: t.set(1.5, 1.0), TypeError, "index must be an int, got float"),
        (lambda t: t.set(0, "x"), TypeError, "value must be a real number, got str"),
        (lambda t: t.set_many([1, 9], [1.0, 1.0]), ValueError, r"indices\[1\] = 9"),
        (lambda t: t.set_many([1.0], [1.0]), TypeError, "indices must have an integer dtype"),
        (lambda t: t.set_many([1], [1.0, 2.0]), ValueError, "values must have shape"),
        (lambda t: t.find_prefix(-1.0), ValueError, "mass must be finite and >= 0"),
    ],
)
def test_bad_input_raises_and_leaves_tree_untouched(
    call: Callable[[Any], object], exc: type[Exception], match: str
) -> None:
    tree = _native.SumTree(8)
    tree.set(3, 2.0)
    with pytest.raises(exc, match=match):
        call(tree)
    assert tree.total == 2.0
    assert [tree.get(i) for i in range(8)] == [0, 0, 0, 2.0, 0, 0, 0, 0]


@pytest.mark.parametrize("capacity", [0, -5, 2**31 + 1])
def test_bad_capacity(capacity: int) -> None:
    with pytest.raises(ValueError, match=f"capacity must be in 1..2147483648, got {capacity}"):
        _native.SumTree(capacity)
