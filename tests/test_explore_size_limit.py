"""The exploration size limit (``explore_max_bytes``): larger tasks are decided greedily, with
propensity 1, and the off-policy gate recomputes from a logged state alone whether its task could
explore (``itp.learning.offpolicy.exploring_rows``), so it scores both models exactly as deployed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import itp
from itp import _native
from itp.actions import NUM_ACTIONS
from itp.learning.offpolicy import epsilon_greedy_probabilities, exploring_rows
from itp.learning.rollout import GateConfig
from itp.state import task_size_feature

EXPLORE = 1  # DecisionSource: 0 model, 1 explore, 2 heuristic


def raw_for(size_bytes: int) -> np.ndarray:
    return np.array(
        [4e8, 3e8, 2e8, 1e8, 0.02, 0.03, 0.04, 0.05, 0.1, 0.1, 0.2, 0.2, 1.0, 1.0, 1.0, 1.0,
         2.0, float(size_bytes), 0.5, 12.0],
        dtype=np.float64,
    )


def engine(eps: float, k: int, limit: int | None, seed: int = 5) -> object:
    e = _native.DecisionEngine(seed)
    e.epsilon = eps
    e.explore_top_k = k
    e.explore_max_bytes = limit
    return e


def slow_may_explore(size_bytes: int, limit: int | None) -> bool:
    """The rule, written out: the float32 size features compared (clamped to [0, 1] as the state)."""
    if limit is None:
        return True

    def f32(x: float) -> np.float32:
        return np.float32(min(1.0, max(0.0, math.log2(max(x, 1.0)) / 40.0)))

    return bool(f32(float(size_bytes)) <= f32(float(limit)))


sizes = st.one_of(
    st.integers(1, 2**44),
    st.sampled_from([1, 2**16, 2**20, 2**20 + 1, 2**20 + 30, 2**28, 2**28 + 300, 2**32, 2**40, 2**41]),
)
limits = st.one_of(st.none(), st.integers(1, 2**42), st.sampled_from([2**20, 2**28, 2**40]))


@settings(max_examples=300, deadline=None)
@given(
    size=sizes, limit=limits,
    q=st.lists(st.sampled_from([-1.0, 0.0, 0.25, 0.5, 2.0]), min_size=NUM_ACTIONS, max_size=NUM_ACTIONS),
    eps=st.sampled_from([0.05, 0.5, 1.0]), k=st.integers(1, NUM_ACTIONS), seed=st.integers(0, 2**32),
)
def test_the_engine_explores_exactly_where_the_gate_says_it_could(
    size: int, limit: int | None, q: list[float], eps: float, k: int, seed: int
) -> None:
    qa = np.array(q, dtype=np.float32)
    e = engine(eps, k, limit, seed)
    for _ in range(4):
        action, source, _c, _t, _conf, state, _raw, _fault, propensity, _g = e.decide_raw(  # type: ignore[attr-defined]
            raw_for(size), True, qa
        )
        rows = exploring_rows(np.asarray(state)[None, :], limit)
        assert bool(rows[0]) == slow_may_explore(size, limit)
        if not rows[0]:  # above the limit: the greedy action, certainly
            assert source != EXPLORE and propensity == 1.0 and action == int(np.argmax(qa))
        probs = epsilon_greedy_probabilities(qa[None, :].astype(np.float64), eps, k, explore_rows=rows)[0]
        assert probs.sum() == pytest.approx(1.0)
        assert probs[action] == pytest.approx(propensity, rel=1e-9)


def test_at_the_limit_a_task_explores_and_just_above_it_does_not() -> None:
    q = np.arange(NUM_ACTIONS, dtype=np.float32)
    e = engine(1.0, 3, 2**20)
    assert e.decide_raw(raw_for(2**20), True, q)[1] == EXPLORE  # type: ignore[attr-defined]
    # 2**20 + 1 byte: its float32 feature rounds above 0.5, the limit's.
    assert task_size_feature(2**20 + 1) > task_size_feature(2**20)
    out = e.decide_raw(raw_for(2**20 + 1), True, q)  # type: ignore[attr-defined]
    assert out[1] != EXPLORE and out[8] == 1.0 and out[0] == NUM_ACTIONS - 1
    # No limit: every size may explore, with the draws of an engine that never had one.
    free, plain = engine(0.5, 3, None, seed=9), _native.DecisionEngine(9)
    plain.epsilon, plain.explore_top_k = 0.5, 3
    for size in (2**16, 2**30, 2**40):
        assert free.decide_raw(raw_for(size), True, q)[:2] == plain.decide_raw(raw_for(size), True, q)[:2]  # type: ignore[attr-defined]


def test_the_partitioner_logs_greedy_propensities_above_the_limit() -> None:
    p = itp.TaskPartitioner(None, epsilon=1.0, seed=1, explore_max_bytes=1 << 20)
    try:
        # No model: heuristic decisions (propensity 1) whatever the limit; the setting is still kept.
        assert p.explore_max_bytes == 1 << 20
        d = p.partition_task(itp.Task(id="a", size=1 << 30))
        assert d.propensity == 1.0
    finally:
        p.close()
    p = itp.TaskPartitioner(epsilon=1.0, explore_top_k=3, seed=1, explore_max_bytes=1 << 20)
    try:
        for i in range(4):
            p.update_stream(i, bandwidth_bps=50e6 * (i + 1), latency_s=0.04)
        small = [p.partition_task(itp.Task(id=f"s{i}", size=1 << 16)) for i in range(20)]
        large = [p.partition_task(itp.Task(id=f"l{i}", size=1 << 30)) for i in range(20)]
        assert all(d.source == "explore" for d in small)
        assert all(d.source == "model" and d.propensity == 1.0 for d in large)
        # The batch path keeps the limit too.
        sizes = np.array([1 << 16, 1 << 30] * 5, dtype=np.uint64)
        arr = p.partition_arrays([f"b{i}" for i in range(10)], sizes, np.full(10, 0.5))
        assert arr.sources.tolist() == [EXPLORE, 0] * 5
        assert np.all(arr.propensity[1::2] == 1.0) and np.all(arr.propensity[0::2] < 1.0)
        p.explore_max_bytes = None  # settable: now the large tasks explore too
        assert p.partition_task(itp.Task(id="x", size=1 << 30)).source == "explore"
    finally:
        p.close()


@pytest.mark.parametrize(("bad", "exc"), [
    (0, ValueError), (-5, ValueError), (2**64 - 1, ValueError), (2**70, ValueError),
    (1.5, TypeError), (True, TypeError), ("1", TypeError),
])
def test_a_bad_limit_names_the_field_and_changes_nothing(bad: object, exc: type[Exception]) -> None:
    e = engine(0.1, 3, 4096)
    with pytest.raises(exc, match="explore_max_bytes"):
        e.explore_max_bytes = bad  # type: ignore[attr-defined]
    assert e.explore_max_bytes == 4096  # type: ignore[attr-defined]
    p = itp.TaskPartitioner(None, explore_max_bytes=4096)
    try:
        with pytest.raises(exc, match="explore_max_bytes"):
            p.explore_max_bytes = bad  # type: ignore[assignment]
        assert p.explore_max_bytes == 4096
    finally:
        p.close()
    with pytest.raises(exc, match="explore_max_bytes"):
        itp.TaskPartitioner(None, explore_max_bytes=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"GateConfig\.target_explore_max_bytes"):
        GateConfig(target_explore_max_bytes=bad)  # type: ignore[arg-type]


def test_exploring_rows_and_the_target_probabilities_check_their_input() -> None:
    states = np.zeros((3, 20), dtype=np.float32)
    states[:, 17] = [task_size_feature(2**10), task_size_feature(2**20), task_size_feature(2**30)]
    assert exploring_rows(states, None).tolist() == [True, True, True]
    assert exploring_rows(states, 2**20).tolist() == [True, True, False]
    with pytest.raises(ValueError, match="states"):
        exploring_rows(np.zeros((3, 19)), 2**20)
    with pytest.raises(TypeError, match="explore_max_bytes"):
        exploring_rows(states, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="explore_max_bytes"):
        exploring_rows(states, 0)
    q = np.arange(3 * NUM_ACTIONS, dtype=np.float64).reshape(3, NUM_ACTIONS)
    probs = epsilon_greedy_probabilities(q, 0.3, 3, explore_rows=np.array([True, False, True]))
    assert probs[1, NUM_ACTIONS - 1] == 1.0 and probs[1].sum() == 1.0  # greedy where it may not explore
    np.testing.assert_allclose(probs[[0, 2]], epsilon_greedy_probabilities(q[[0, 2]], 0.3, 3))
    # With guard verdicts the rows keep their limit too.
    guarded = epsilon_greedy_probabilities(
        q, 0.3, 3, guard_verdicts=np.full(3, -1), explore_rows=np.array([True, False, True])
    )
    np.testing.assert_allclose(guarded, probs)
    for bad in (np.array([1, 0, 1]), np.array([True, False])):
        with pytest.raises(ValueError, match="explore_rows"):
            epsilon_greedy_probabilities(q, 0.3, 3, explore_rows=bad)
