"""The heuristic (itp.heuristic): native rule vs its Python copy, behaviour on clear-cut states, errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itp import _native
from itp.heuristic import HeuristicPolicy, heuristic_action, heuristic_action_reference
from itp.transport import SEGMENT_BITS, TransportParams, production_split


def raw_state(
    bandwidth: list[float], rtt: list[float], success: list[float], size: int, congestion: float = 0.0
) -> np.ndarray:
    raw = np.zeros(20)
    raw[0:4] = bandwidth
    raw[4:8] = rtt
    raw[8:12] = congestion
    raw[12:16] = success
    raw[16] = 3
    raw[17] = size
    raw[18] = 0.5
    raw[19] = 12.0
    return raw


raw_states = st.builds(
    raw_state,
    st.lists(st.one_of(st.just(0.0), st.floats(1e5, 1e10)), min_size=4, max_size=4),
    st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
    st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
    st.integers(1, 1 << 40),
    st.floats(0.0, 1.0),
)


@settings(max_examples=300, deadline=None)
@given(raw_states)
def test_native_rule_equals_python_copy(raw: np.ndarray) -> None:
    assert heuristic_action(raw) == heuristic_action_reference(raw)


params_lists = st.lists(
    st.builds(TransportParams, st.floats(0.0, 6.0), st.floats(SEGMENT_BITS, 2.0**40), st.floats(0.05, 4.0)),
    min_size=4, max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(raw_states, params_lists)
def test_native_rule_with_params_equals_python_copy(raw: np.ndarray, params: list[TransportParams]) -> None:
    assert heuristic_action(raw, params) == heuristic_action_reference(raw, params)


def test_params_change_the_choice_where_they_should() -> None:
    """A 1 MiB task on fresh connections: the fast 100 ms stream would spend 0.2 s on set-up alone, so the
    heuristic keeps to the three 5 ms streams; on warm streams (no set-up, no slow start) it uses all 4."""
    raw = raw_state([1e9, 5e7, 5e7, 5e7], [0.1, 0.005, 0.005, 0.005], [1.0] * 4, 1 << 20)
    assert _native.ACTION_STREAMS[heuristic_action(raw)] == (1, 2, 3)
    warm = TransportParams(0.0, 2.0**40, 1.0)
    assert _native.ACTION_STREAMS[heuristic_action(raw, warm)] == (0, 1, 2, 3)
    assert heuristic_action(raw, warm) == heuristic_action_reference(raw, [warm] * 4)


@settings(max_examples=200, deadline=None)
@given(raw_states)
def test_engine_fallback_decides_like_the_heuristic(raw: np.ndarray) -> None:
    """With no model, the decision engine's action and chunks are the heuristic's and the production split."""
    engine = _native.DecisionEngine(0)
    action, source, chunks, expected, confidence, *_ = engine.decide_raw(raw, False, None)
    assert source == 2
    assert action == heuristic_action(raw)
    split = production_split(raw, action)
    assert tuple(chunks) == split.chunk_bytes
    assert expected == split.expected_time_s or (math.isinf(expected) and math.isinf(split.expected_time_s))
    assert 0.0 <= confidence <= 1.0


def test_large_task_on_healthy_streams_uses_all_four() -> None:
    raw = raw_state([8e8, 5e8, 3e8, 9e8], [0.02, 0.05, 0.03, 0.08], [1.0] * 4, 4 << 30)
    assert heuristic_action(raw) == 14


def test_small_task_avoids_a_long_rtt_stream() -> None:
    raw = raw_state([8e8, 5e8, 3e8, 9e8], [0.02, 0.02, 0.02, 0.8], [1.0] * 4, 64 << 10)
    assert 3 not in _native.ACTION_STREAMS[heuristic_action(raw)]


def test_unreliable_stream_is_left_out_when_it_barely_helps() -> None:
    raw = raw_state([8e8, 8e8, 8e8, 5e7], [0.02] * 4, [1.0, 1.0, 1.0, 0.3], 1 << 30)
    assert heuristic_action(raw) == 10  # streams (0, 1, 2)


def test_dead_streams_are_never_chosen_when_a_live_one_exists() -> None:
    raw = raw_state([0.0, 0.0, 2e8, 0.0], [0.01, 0.01, 0.05, 0.01], [1.0] * 4, 10 << 20)
    assert heuristic_action(raw) == 2


def test_policy_interface() -> None:
    policy = HeuristicPolicy()
    raw = raw_state([8e8, 5e8, 3e8, 9e8], [0.02, 0.05, 0.03, 0.08], [1.0] * 4, 4 << 30)
    assert policy.name == "heuristic"
    assert policy.select_action(raw) == heuristic_action(raw)


@pytest.mark.parametrize(
    ("raw", "exc", "match"),
    [
        (np.zeros(19), ValueError, r"raw_state must have shape \(20,\)"),
        (np.full(20, math.nan), ValueError, "bandwidth_bps"),
        (raw_state([1e8] * 4, [0.01] * 4, [1.0] * 4, 0), ValueError, "task_size_bytes must be in"),
        ("not a state", TypeError, "raw_state must"),
    ],
)
def test_bad_state_is_rejected_with_its_name(raw: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        heuristic_action(raw)


def test_no_usable_stream_still_places_every_byte() -> None:
    """All rates 0: no finite score; the fallback is action 0 with every byte on it, time +inf."""
    raw = raw_state([0.0] * 4, [0.01, 0.02, 0.03, 0.04], [1.0] * 4, 4_000_000_000)
    action, source, chunks, expected, *_ = _native.DecisionEngine(0).decide_raw(raw, False, None)
    assert (action, source) == (0, 2)
    assert tuple(chunks) == (4_000_000_000, 0, 0, 0)
    assert math.isinf(expected)
