"""The decision guard and warm-stream start windows.

* Guard (``DecisionEngine.guard_margin`` / ``TaskPartitioner(guard_margin=)``): the native choice and its
  logged propensity against a slow pure-Python reference (heuristic scores from ``transport_split``), the
  empirical action frequencies against those propensities, the override counter, validation.
* Start windows (``update_stream(start_window_bits=)``): the split and ``expected_time`` start a stream
  from ``max(fitted W, start window)``, validation leaves the table untouched, the Linux restart rule
  (``itp.transport.start_window_bits``) and its ``TCP_INFO`` form.
"""

from __future__ import annotations

import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import itp
from itp import _native
from itp.actions import NUM_ACTIONS
from itp.learning.offpolicy import decode_guard_verdicts, epsilon_greedy_probabilities, valid_guard_verdicts
from itp.transfer.telemetry import parse_tcp_info, start_window_from_tcp_info
from itp.transport import (
    INITIAL_WINDOW_BITS,
    SEGMENT_BITS,
    TransportParams,
    production_split,
    start_window_bits,
    transport_split,
)
from tests.model_factory import write_constant_model
from tests.test_heuristic import params_lists, raw_state, raw_states


def reference_scores(raw: np.ndarray, params: list[TransportParams] | None) -> list[float]:
    """score_a = T_a x (1 + failure mass of the streams a uses), from the Python-facing split."""
    size = max(1, round(float(raw[17])))
    rate = [float(raw[i]) * float(raw[12 + i]) for i in range(4)]
    rtt = [float(raw[4 + i]) for i in range(4)]
    out = []
    for a in range(NUM_ACTIONS):
        split = transport_split(size, a, rate, rtt, params)
        out.append(split.expected_time_s * (1.0 + sum(1.0 - float(raw[12 + i]) for i in split.stream_ids)))
    return out


def reference_guarded_greedy(
    raw: np.ndarray, q: np.ndarray, margin: float, params: list[TransportParams] | None
) -> int:
    greedy = int(np.argmax(q))  # first maximum: ties to the lower index, as the engine
    scores = reference_scores(raw, params)
    best = min(range(NUM_ACTIONS), key=lambda a: (scores[a], a))
    if best != greedy and scores[greedy] > (1.0 + margin) * scores[best]:
        return best
    return greedy


def reference_propensity(action: int, greedy: int, q: np.ndarray, eps: float, k: int) -> float:
    top = sorted(range(NUM_ACTIONS), key=lambda a: (-float(q[a]), a))[:k]
    return (1.0 - eps if action == greedy else 0.0) + (eps / k if action in top else 0.0)


def guarded_engine(margin: float | None, *, eps: float = 0.0, k: int = 15, seed: int = 3) -> object:
    e = _native.DecisionEngine(seed)
    e.epsilon = eps
    e.explore_top_k = k
    e.guard_margin = margin
    return e


q_vectors = st.lists(st.floats(-5.0, 5.0, width=32), min_size=NUM_ACTIONS, max_size=NUM_ACTIONS).map(
    lambda v: np.array(v, dtype=np.float32)
)


@settings(max_examples=300, deadline=None)
@given(raw_states, q_vectors, st.floats(0.0, 0.5), st.one_of(st.none(), params_lists))
def test_guarded_choice_and_propensity_equal_the_reference(
    raw: np.ndarray, q: np.ndarray, margin: float, params: list[TransportParams] | None
) -> None:
    e = guarded_engine(margin)
    if params is not None:
        rows = [[p.setup_rtts, p.initial_window_bits, p.efficiency] for p in params]
        e.set_transport_params(np.array(rows))
    out = e.decide_raw(raw, False, q)
    want = reference_guarded_greedy(raw, q, margin, params)
    assert out[0] == want
    assert out[1] == 0  # source stays "model"
    assert out[8] == 1.0
    assert e.guard_overrides == (1 if want != int(np.argmax(q)) else 0)
    # The guard never changes the split of the action it keeps: the production split of that action.
    assert tuple(out[2]) == production_split(raw, want, params).chunk_bytes


@settings(max_examples=200, deadline=None)
@given(raw_states, q_vectors, st.floats(0.0, 0.3), st.floats(0.01, 1.0), st.integers(1, NUM_ACTIONS))
def test_guarded_exploration_logs_the_guarded_policys_propensity(
    raw: np.ndarray, q: np.ndarray, margin: float, eps: float, k: int
) -> None:
    e = guarded_engine(margin, eps=eps, k=k)
    greedy = reference_guarded_greedy(raw, q, margin, None)
    for _ in range(5):
        out = e.decide_raw(raw, True, q)
        assert out[8] == pytest.approx(reference_propensity(int(out[0]), greedy, q, eps, k), rel=1e-12)


def test_guarded_actions_follow_their_propensities() -> None:
    # A small task on four streams whose model prefers the slowest single stream: the guard replaces it.
    raw = raw_state([4e8, 3e8, 2e8, 1e6], [0.02, 0.03, 0.04, 0.30], [1.0, 1.0, 1.0, 1.0], 64 << 20)
    q = np.zeros(NUM_ACTIONS, dtype=np.float32)
    q[3] = 1.0  # stream 3 alone: far slower than the heuristic's choice
    q[14], q[13] = 0.9, 0.8
    greedy = reference_guarded_greedy(raw, q, 0.05, None)
    assert greedy != 3
    eps, k, n = 0.3, 3, 20000
    e = guarded_engine(0.05, eps=eps, k=k, seed=11)
    draws = np.array([e.decide_raw(raw, True, q)[0] for _ in range(n)])
    counts = np.bincount(draws, minlength=NUM_ACTIONS)
    p = np.array([reference_propensity(a, greedy, q, eps, k) for a in range(NUM_ACTIONS)])
    assert p.sum() == pytest.approx(1.0)
    support = p > 0
    assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(support))
    assert stats.chisquare(counts[support], n * p[support]).pvalue > 1e-3
    # Overrides are the non-exploring decisions (the guard's pick), Binomial(n, 1 - eps).
    sd = math.sqrt(n * eps * (1.0 - eps))
    assert abs(e.guard_overrides - n * (1.0 - eps)) < 5.0 * sd
    assert e.guard_overrides <= int((draws == greedy).sum())


def test_guard_off_is_the_plain_argmax() -> None:
    raw = raw_state([4e8, 3e8, 2e8, 1e6], [0.02, 0.03, 0.04, 0.30], [1.0] * 4, 64 << 20)
    q = np.zeros(NUM_ACTIONS, dtype=np.float32)
    q[3] = 1.0
    e = guarded_engine(None)
    assert e.guard_margin is None
    assert e.decide_raw(raw, False, q)[0] == 3
    assert e.guard_overrides == 0
    e.guard_margin = 0.05
    assert e.decide_raw(raw, False, q)[0] != 3
    assert e.guard_overrides == 1


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_engine_guard_margin_rejects_bad_values(bad: float) -> None:
    e = guarded_engine(0.1)
    with pytest.raises(ValueError, match="guard_margin"):
        e.guard_margin = bad
    assert e.guard_margin == pytest.approx(0.1)


# ------------------------------------------------------------------------------- guarded exploration
def reference_allowed(raw: np.ndarray, margin: float, params: list[TransportParams] | None) -> list[bool]:
    """The actions the guard lets through: score <= (1 + margin) x the best score (the best always)."""
    scores = reference_scores(raw, params)
    best = min(range(NUM_ACTIONS), key=lambda a: (scores[a], a))
    return [a == best or not scores[a] > (1.0 + margin) * scores[best] for a in range(NUM_ACTIONS)]


def reference_guarded_explore_propensity(
    action: int, greedy: int, q: np.ndarray, eps: float, k: int, allowed: list[bool]
) -> float:
    pool = sorted((a for a in range(NUM_ACTIONS) if allowed[a]), key=lambda a: (-float(q[a]), a))
    top = pool[: min(k, len(pool))]
    return (1.0 - eps if action == greedy else 0.0) + (eps / len(top) if action in top else 0.0)


@settings(max_examples=200, deadline=None)
@given(
    raw_states, q_vectors, st.floats(0.0, 0.3), st.floats(0.01, 1.0), st.integers(1, NUM_ACTIONS),
    st.one_of(st.none(), params_lists),
)
def test_guarded_exploration_draws_only_what_the_guard_allows(
    raw: np.ndarray, q: np.ndarray, margin: float, eps: float, k: int, params: list[TransportParams] | None
) -> None:
    e = guarded_engine(margin, eps=eps, k=k)
    e.guard_exploration = True
    if params is not None:
        rows = [[p.setup_rtts, p.initial_window_bits, p.efficiency] for p in params]
        e.set_transport_params(np.array(rows))
    greedy = reference_guarded_greedy(raw, q, margin, params)
    allowed = reference_allowed(raw, margin, params)
    assert allowed[greedy]
    for _ in range(5):
        out = e.decide_raw(raw, True, q)
        a = int(out[0])
        assert allowed[a], (a, allowed)
        want = reference_guarded_explore_propensity(a, greedy, q, eps, k, allowed)
        assert out[8] == pytest.approx(want, rel=1e-12)


def test_guarded_exploration_follows_its_propensities() -> None:
    # The model's favourites are three single streams, the slowest first: unguarded top-3 exploration would
    # draw them; guarded, it draws among the best actions the guard lets through.
    raw = raw_state([4e8, 3e8, 2e8, 1e6], [0.02, 0.03, 0.04, 0.30], [1.0, 1.0, 1.0, 1.0], 64 << 20)
    q = np.zeros(NUM_ACTIONS, dtype=np.float32)
    q[3], q[2], q[14], q[13], q[12] = 1.0, 0.95, 0.9, 0.8, 0.7
    margin, eps, k, n = 0.05, 0.3, 3, 20000
    allowed = reference_allowed(raw, margin, None)
    assert not allowed[3] and allowed[14]
    greedy = reference_guarded_greedy(raw, q, margin, None)
    e = guarded_engine(margin, eps=eps, k=k, seed=5)
    e.guard_exploration = True
    draws = np.array([e.decide_raw(raw, True, q)[0] for _ in range(n)])
    counts = np.bincount(draws, minlength=NUM_ACTIONS)
    p = np.array(
        [reference_guarded_explore_propensity(a, greedy, q, eps, k, allowed) for a in range(NUM_ACTIONS)]
    )
    assert p.sum() == pytest.approx(1.0)
    assert counts[3] == 0
    support = p > 0
    assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(support))
    assert stats.chisquare(counts[support], n * p[support]).pvalue > 1e-3


def test_guarded_exploration_without_the_guard_draws_as_before() -> None:
    raw = raw_state([4e8, 3e8, 2e8, 1e6], [0.02, 0.03, 0.04, 0.30], [1.0] * 4, 64 << 20)
    q = np.linspace(-1.0, 1.0, NUM_ACTIONS, dtype=np.float32)[::-1].copy()
    plain, flagged = guarded_engine(None, eps=0.5, k=4, seed=9), guarded_engine(None, eps=0.5, k=4, seed=9)
    flagged.guard_exploration = True
    for _ in range(200):
        assert plain.decide_raw(raw, True, q)[:2] == flagged.decide_raw(raw, True, q)[:2]


def reference_verdicts(raw: np.ndarray, margin: float, params: list[TransportParams] | None) -> int:
    scores = reference_scores(raw, params)
    best = min(range(NUM_ACTIONS), key=lambda a: (scores[a], a))
    mask = sum(1 << a for a, ok in enumerate(reference_allowed(raw, margin, params)) if ok)
    return mask | (best << 16)


@settings(max_examples=200, deadline=None)
@given(
    raw_states, q_vectors, st.floats(0.0, 0.3), st.floats(0.0, 1.0), st.integers(1, NUM_ACTIONS),
    st.booleans(), st.one_of(st.none(), params_lists),
)
def test_logged_verdicts_let_the_gate_recompute_the_behaviour_propensity(
    raw: np.ndarray, q: np.ndarray, margin: float, eps: float, k: int, explore_guarded: bool,
    params: list[TransportParams] | None,
) -> None:
    """The guard's verdicts logged with a decision are the reference ones, and from them the gate's
    target probabilities (``epsilon_greedy_probabilities(guard_verdicts=)``) of the very policy that
    decided give back the propensity the engine logged: the gate scores a policy as it acts."""
    e = guarded_engine(margin, eps=eps, k=k)
    e.guard_exploration = explore_guarded
    if params is not None:
        rows = [[p.setup_rtts, p.initial_window_bits, p.efficiency] for p in params]
        e.set_transport_params(np.array(rows))
    want = reference_verdicts(raw, margin, params)
    for _ in range(3):
        out = e.decide_raw(raw, True, q)
        assert out[9] == want
        probs = epsilon_greedy_probabilities(
            q[None, :], eps, k, guard_verdicts=np.array([out[9]]), guard_exploration=explore_guarded
        )[0]
        assert probs.sum() == pytest.approx(1.0)
        assert probs[int(out[0])] == pytest.approx(out[8], rel=1e-9)
    # Guard off, or no model: no verdicts.
    assert guarded_engine(None, eps=eps, k=k).decide_raw(raw, True, q)[9] == -1
    assert guarded_engine(margin).decide_raw(raw, False, None)[9] == -1


def test_guard_verdicts_decode_and_validate() -> None:
    allowed, heuristic = decode_guard_verdicts(np.array([-1, (14 << 16) | (1 << 14) | 1], dtype=np.int32))
    assert allowed[0].all() and heuristic[0] == -1
    assert list(np.flatnonzero(allowed[1])) == [0, 14] and heuristic[1] == 14
    for bad in (-2, 1 << 15, (3 << 16) | 1, 15 << 16):
        assert not valid_guard_verdicts(bad)
        with pytest.raises(ValueError, match="guard_verdicts"):
            decode_guard_verdicts(np.array([bad]))
    q = np.zeros((1, NUM_ACTIONS))
    with pytest.raises(ValueError, match="guard_verdicts"):
        epsilon_greedy_probabilities(q, 0.1, 3, guard_verdicts=np.array([-1, -1]))
    with pytest.raises(TypeError, match="guard_exploration"):
        epsilon_greedy_probabilities(q, 0.1, 3, guard_verdicts=np.array([-1]), guard_exploration=1)  # type: ignore[arg-type]


def test_reported_decisions_carry_their_verdicts_into_the_ring(tmp_path: Path) -> None:
    path = write_constant_model(tmp_path / "m.onnx", 3)
    table = [(4e8, 0.02), (3e8, 0.03), (2e8, 0.04), (1e6, 0.3)]
    size = 64 << 20
    raw = raw_state([b for b, _ in table], [r for _, r in table], [1.0] * 4, size)
    guarded = itp.TaskPartitioner(path, guard_margin=0.1)
    plain = itp.TaskPartitioner(path)
    for p in (guarded, plain):
        for i, (bw, rtt) in enumerate(table):
            p.update_stream(i, bandwidth_bps=bw, latency_s=rtt)
        for k in range(3):
            d = p.partition_task(itp.Task(f"t{k}", size))
            p.report_outcome(d.task_id, d, throughput_bps=1e8, latency_s=0.5, success=True)
    logged = guarded.ring.drain(100)
    assert logged.guard_verdicts is not None
    np.testing.assert_array_equal(logged.guard_verdicts, np.full(3, reference_verdicts(raw, 0.1, None)))
    np.testing.assert_array_equal(plain.ring.drain(100).guard_verdicts, np.full(3, -1))


@pytest.mark.parametrize("bad", [1, None, "yes"])
def test_engine_guard_exploration_must_be_a_bool(bad: object) -> None:
    e = guarded_engine(0.1)
    e.guard_exploration = True
    with pytest.raises(TypeError, match="guard_exploration"):
        e.guard_exploration = bad
    assert e.guard_exploration is True


@pytest.mark.parametrize(
    ("bad", "exc"), [(-1.0, ValueError), (math.nan, ValueError), (True, TypeError), ("0.1", TypeError)]
)
def test_partitioner_guard_margin_is_validated(bad: object, exc: type[Exception]) -> None:
    p = itp.TaskPartitioner(None, guard_margin=0.2)
    with pytest.raises(exc, match="guard_margin"):
        p.guard_margin = bad  # type: ignore[assignment]
    assert p.guard_margin == pytest.approx(0.2)
    with pytest.raises(exc, match="guard_margin"):
        itp.TaskPartitioner(None, guard_margin=bad)  # type: ignore[arg-type]


def test_partitioner_counts_guard_overrides(tmp_path: Path) -> None:
    # A model that always answers stream 3 alone, on a table where stream 3 is far the slowest.
    path = write_constant_model(tmp_path / "m.onnx", 3)
    p = itp.TaskPartitioner(path, guard_margin=0.1)
    for i, (bw, rtt) in enumerate([(4e8, 0.02), (3e8, 0.03), (2e8, 0.04), (1e6, 0.3)]):
        p.update_stream(i, bandwidth_bps=bw, latency_s=rtt)
    d = p.partition_task(itp.Task("t", 64 << 20))
    assert d.action != 3 and d.source == "model"
    assert p.get_metrics().guard_overrides == 1
    p.guard_margin = None
    assert p.partition_task(itp.Task("u", 64 << 20)).action == 3
    assert p.get_metrics().guard_overrides == 1


def test_partitioner_guarded_exploration_never_draws_a_refused_split(tmp_path: Path) -> None:
    # The model's three favourites by Q are stream 3 alone (far the slowest), then streams 0 and 1 alone.
    path = write_constant_model(tmp_path / "m.onnx", 3)
    table = [(4e8, 0.02), (3e8, 0.03), (2e8, 0.04), (1e6, 0.3)]
    size = 64 << 20
    raw = raw_state([b for b, _ in table], [r for _, r in table], [1.0] * 4, size)
    allowed = reference_allowed(raw, 0.1, None)
    assert not allowed[3]
    plain = itp.TaskPartitioner(path, epsilon=1.0, explore_top_k=3, guard_margin=0.1, seed=2)
    guarded = itp.TaskPartitioner(
        path, epsilon=1.0, explore_top_k=3, guard_margin=0.1, guard_exploration=True, seed=2
    )
    assert guarded.guard_exploration and not plain.guard_exploration
    for p in (plain, guarded):
        for i, (bw, rtt) in enumerate(table):
            p.update_stream(i, bandwidth_bps=bw, latency_s=rtt)
    plain_actions = {plain.partition_task(itp.Task(f"p{k}", size)).action for k in range(300)}
    assert 3 in plain_actions  # unguarded exploration does draw the refused split
    decisions = [guarded.partition_task(itp.Task(f"g{k}", size)) for k in range(300)]
    assert all(allowed[d.action] for d in decisions)
    q = np.zeros(NUM_ACTIONS, dtype=np.float32)
    q[3] = 1.0
    greedy = reference_guarded_greedy(raw, q, 0.1, None)
    for d in decisions:
        assert d.propensity == pytest.approx(
            reference_guarded_explore_propensity(d.action, greedy, q, 1.0, 3, allowed), rel=1e-9
        )


@pytest.mark.parametrize("bad", [1, None, "true"])
def test_partitioner_guard_exploration_is_validated(bad: object) -> None:
    p = itp.TaskPartitioner(None, guard_margin=0.1, guard_exploration=True)
    with pytest.raises(TypeError, match="guard_exploration"):
        p.guard_exploration = bad  # type: ignore[assignment]
    assert p.guard_exploration is True
    with pytest.raises(TypeError, match="guard_exploration"):
        itp.TaskPartitioner(None, guard_exploration=bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- start windows
def table_partitioner(start_windows: list[float | None]) -> itp.TaskPartitioner:
    p = itp.TaskPartitioner(None)
    for i, (bw, rtt) in enumerate([(4e8, 0.05), (3e8, 0.06), (2e8, 0.08), (1e8, 0.1)]):
        p.update_stream(i, bandwidth_bps=bw, latency_s=rtt, start_window_bits=start_windows[i])
    return p


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.floats(0.0, 2.0**34)), min_size=4, max_size=4),
    st.integers(1, 1 << 32),
    st.integers(0, NUM_ACTIONS - 1),
)
def test_a_known_start_window_raises_the_streams_initial_window(
    windows: list[float | None], size: int, action: int
) -> None:
    p = table_partitioner(windows)
    params = [
        TransportParams(2.0, max(INITIAL_WINDOW_BITS, w or 0.0), 1.0) for w in windows
    ]
    raw = raw_state([4e8, 3e8, 2e8, 1e8], [0.05, 0.06, 0.08, 0.1], [1.0] * 4, size)
    raw[8:12], raw[16] = 0.0, 0.0
    want_action = itp.heuristic.heuristic_action(raw, params)
    d = p.partition_task(itp.Task("t", size))
    assert d.action == want_action
    want = production_split(raw, want_action, params)
    assert d.bytes_per_stream == want.chunk_bytes
    assert d.expected_time == pytest.approx(want.expected_time_s, rel=1e-12)
    del action


def test_warm_windows_shorten_the_prediction_of_a_medium_task() -> None:
    cold = table_partitioner([None] * 4).partition_task(itp.Task("c", 8 << 20))
    warm = table_partitioner([2.0**26] * 4).partition_task(itp.Task("w", 8 << 20))
    assert warm.expected_time < 0.8 * cold.expected_time


@pytest.mark.parametrize(
    ("bad", "exc"), [(-1.0, ValueError), (math.nan, ValueError), (math.inf, ValueError), (True, TypeError)]
)
def test_bad_start_window_is_named_and_changes_nothing(bad: object, exc: type[Exception]) -> None:
    p = table_partitioner([2.0**20] * 4)
    before = (p.get_stream(0), p._engine.start_window_bits(0))
    with pytest.raises(exc, match="start_window_bits"):
        p.update_stream(0, bandwidth_bps=1e6, latency_s=0.5, start_window_bits=bad)  # type: ignore[arg-type]
    assert (p.get_stream(0), p._engine.start_window_bits(0)) == before


def test_start_window_rule() -> None:
    assert start_window_bits(1e6, 0.1, 0.2) == 1e6  # sent within the RTO: the window survives
    assert start_window_bits(1e6, 0.2, 0.2) == 1e6
    assert start_window_bits(1e6, 0.3, 0.2) == INITIAL_WINDOW_BITS  # idle longer: restart window
    assert start_window_bits(5e3, 9.0, 0.2) == 5e3  # a window below the restart window stays
    assert start_window_bits(1e6, 9.0, 0.2, slow_start_after_idle=False) == 1e6
    assert start_window_bits(1e6, 9.0, 0.2, restart_window_bits=SEGMENT_BITS * 4) == SEGMENT_BITS * 4


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        ((-1.0, 0.0, 0.2), ValueError, "cwnd_bits"),
        ((1.0, math.nan, 0.2), ValueError, "idle_s"),
        ((1.0, 0.0, 0.0), ValueError, "rto_s"),
        ((1.0, 0.0, math.inf), ValueError, "rto_s"),
        (("1", 0.0, 0.2), TypeError, "cwnd_bits"),
    ],
)
def test_start_window_rule_rejects_bad_input(args: tuple, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        start_window_bits(*args)


def tcp_info_bytes(*, rto_us: int, last_data_sent_ms: int, mss: int, cwnd: int, length: int = 232) -> bytes:
    buf = bytearray(length)
    bo = "<" if sys.byteorder == "little" else ">"
    buf[0] = 1
    for off, v in ((8, rto_us), (16, mss), (44, last_data_sent_ms), (80, cwnd)):
        if off + 4 <= length:
            struct.pack_into(bo + "I", buf, off, v)
    return bytes(buf)


def test_tcp_info_gives_the_start_window() -> None:
    warm = parse_tcp_info(tcp_info_bytes(rto_us=204_000, last_data_sent_ms=50, mss=1448, cwnd=200))
    assert warm.rto_s == pytest.approx(0.204) and warm.last_data_sent_s == pytest.approx(0.05)
    assert start_window_from_tcp_info(warm) == 8.0 * 1448 * 200
    idle = parse_tcp_info(tcp_info_bytes(rto_us=204_000, last_data_sent_ms=900, mss=1448, cwnd=200))
    assert start_window_from_tcp_info(idle) == INITIAL_WINDOW_BITS
    assert start_window_from_tcp_info(idle, slow_start_after_idle=False) == 8.0 * 1448 * 200
    short = parse_tcp_info(
        tcp_info_bytes(rto_us=204_000, last_data_sent_ms=50, mss=1448, cwnd=200, length=40)
    )
    assert short.last_data_sent_s is None and start_window_from_tcp_info(short) == 0.0
