"""ExperienceRing (itp/ring.py, cpp/include/itp/ring.hpp): FIFO semantics against ReferenceRing,
bad input, drain_into, and real-thread concurrency with every record counted and checksummed."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from reference_replay import ReferenceRing, Row, make_rows, rows_of

from itp import ExperienceRing, PrioritizedReplay, TransitionBatch, _native

F = 20




def assert_batch_equals(batch: TransitionBatch, rows: list[Row]) -> None:
    assert len(batch) == len(rows)
    if not rows:
        return
    np.testing.assert_array_equal(batch.states, np.stack([r.state for r in rows]))
    np.testing.assert_array_equal(batch.next_states, np.stack([r.next_state for r in rows]))
    assert batch.actions.tolist() == [r.action for r in rows]
    assert batch.rewards.tolist() == [r.reward for r in rows]
    assert batch.dones.tolist() == [float(r.done) for r in rows]


@pytest.mark.parametrize(
    ("asked", "real"), [(1, 2), (2, 2), (3, 4), (1000, 1024), (1024, 1024), (2**16 + 1, 2**17)]
)
def test_capacity_rounds_up_to_a_power_of_two(asked: int, real: int) -> None:
    ring = ExperienceRing(asked)
    assert ring.capacity == real
    assert (ring.pushed, ring.dropped, ring.drained, ring.size) == (0, 0, 0, 0)


class RingMachine(RuleBasedStateMachine):
    """Single-threaded interleavings of pushes and drains against a bounded deque."""

    def __init__(self) -> None:
        super().__init__()
        self.ring: ExperienceRing
        self.ref: ReferenceRing

    @initialize(capacity=st.integers(1, 20))
    def init(self, capacity: int) -> None:
        self.ring = ExperienceRing(capacity)
        self.ref = ReferenceRing(capacity)

    @rule(seed=st.integers(0, 2**32))
    def try_push(self, seed: int) -> None:
        (row,) = rows_of(make_rows(1, seed))
        ok = self.ring.try_push(row.state, row.action, row.reward, row.next_state, row.done)
        assert ok == self.ref.try_push(row)

    @rule(n=st.integers(0, 25), seed=st.integers(0, 2**32))
    def push_batch(self, n: int, seed: int) -> None:
        cols = make_rows(n, seed)
        assert self.ring.push_batch(**cols) == self.ref.push_batch(rows_of(cols))

    @rule(max_records=st.integers(0, 30))
    def drain(self, max_records: int) -> None:
        assert_batch_equals(self.ring.drain(max_records), self.ref.drain(max_records))

    @invariant()
    def counters_agree(self) -> None:
        if not hasattr(self, "ref"):
            return
        assert self.ring.capacity == self.ref.capacity
        assert self.ring.pushed == self.ref.pushed
        assert self.ring.dropped == self.ref.dropped
        assert self.ring.drained == self.ref.drained
        assert self.ring.size == len(self.ring) == len(self.ref.queue)


TestRingMachine = RingMachine.TestCase
TestRingMachine.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)


def test_full_ring_rejects_without_overwriting() -> None:
    ring = ExperienceRing(4)
    cols = make_rows(6, 1)
    assert ring.push_batch(**cols) == 4  # stops at the first that does not fit
    assert ring.dropped == 2
    s = cols["states"][5]
    assert ring.try_push(s, 1, 0.0, s, False) is False
    assert ring.dropped == 3
    assert_batch_equals(ring.drain(10), rows_of(cols)[:4])  # the first four, untouched
    assert ring.size == 0


def test_drain_into_replay_preserves_order_and_counts() -> None:
    ring = ExperienceRing(64)
    replay = PrioritizedReplay(100, alpha=1.0)
    cols = make_rows(50, 2)
    assert ring.push_batch(**cols) == 50
    assert ring.drain_into(replay, 30) == 30
    assert ring.drain_into(replay, 1000) == 20
    assert ring.drain_into(replay, 1000) == 0
    assert (ring.drained, ring.size, len(replay), replay.rejected_records) == (50, 0, 50, 0)
    snap = replay._native_buffer.snapshot()
    np.testing.assert_array_equal(snap["states"], cols["states"])
    np.testing.assert_array_equal(snap["next_states"], cols["next_states"])
    assert snap["actions"].tolist() == cols["actions"].tolist()
    assert snap["rewards"].tolist() == cols["rewards"].tolist()
    assert snap["dones"].tolist() == cols["dones"].astype(np.uint8).tolist()
    assert replay.priorities(np.arange(50)).tolist() == [1.0] * 50
    assert replay.check_invariants()


@pytest.mark.parametrize("capacity", [1, 37, 256, 1000])
def test_drain_into_equals_adding_one_by_one_across_wraps(capacity: int) -> None:
    """drain_into writes rows one by one but updates the tree once per contiguous run of slots; the
    buffer (rows, generations, cursor, priorities, exact tree total) must equal the one built by add()
    calls, including chunks that wrap around the buffer several times."""
    ring = ExperienceRing(1024)
    fast = PrioritizedReplay(capacity, alpha=1.0, seed=3)
    slow = PrioritizedReplay(capacity, alpha=1.0, seed=3)
    for step in range(3):
        cols = make_rows(300, 10 + step)
        assert ring.push_batch(**cols) == 300
        assert ring.drain_into(fast, 1000) == 300
        for row in rows_of(cols):
            slow.add(row.state, row.action, row.reward, row.next_state, row.done)
        # Raise the running max between drains, so later runs carry a different new-item priority.
        both = np.arange(min(3, capacity))
        fast.update_priorities(both, np.full(len(both), 2.0 + step))
        slow.update_priorities(both, np.full(len(both), 2.0 + step))
    a, b = fast._native_buffer.snapshot(), slow._native_buffer.snapshot()
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key
    assert fast.total_priority == slow.total_priority and fast.min_priority == slow.min_priority
    assert fast.check_invariants() and slow.check_invariants()


def _good() -> list[Any]:
    return [np.full(F, 0.5, np.float32), 3, 1.0, np.full(F, 0.25, np.float32), False]


def _with(pos: int, value: Any) -> list[Any]:
    args = _good()
    args[pos] = value
    return args


BAD_PUSH: list[tuple[list[Any], type[Exception], str]] = [
    (_with(0, np.zeros(21)), ValueError, r"state must have shape \(20,\), got \(21,\)"),
    (_with(0, np.full(F, np.nan)), ValueError, r"state\[0\] must be finite, got nan"),
    (_with(3, "abc"), TypeError, "next_state must hold numbers"),
    (_with(1, 15), ValueError, "action must be in 0..14, got 15"),
    (_with(1, 2.0), TypeError, "action must be an int, got float"),
    (_with(2, math.inf), ValueError, "reward must be finite"),
    (_with(4, 3), ValueError, "done must be a bool"),
]


@pytest.mark.parametrize(("args", "exc", "match"), BAD_PUSH)
def test_bad_try_push_is_rejected_and_counts_nothing(
    args: list[Any], exc: type[Exception], match: str
) -> None:
    ring = ExperienceRing(8)
    with pytest.raises(exc, match=match):
        ring.try_push(*args)
    assert (ring.pushed, ring.dropped, ring.size) == (0, 0, 0)


def _poke(key: str, index: Any, value: Any) -> dict[str, Any]:
    cols = make_rows(5, 0)
    arr = cols[key].copy()
    arr[index] = value
    cols[key] = arr
    return cols


BAD_PUSH_BATCH: list[tuple[dict[str, Any], type[Exception], str]] = [
    (_poke("states", (4, 19), np.nan), ValueError, r"states\[4, 19\] must be finite, got nan"),
    (_poke("actions", 0, -1), ValueError, r"actions\[0\] must be in 0..14, got -1"),
    (_poke("dones", 2, 7), ValueError, r"dones\[2\] must be 0 or 1, got 7"),
    (
        {**make_rows(5, 0), "actions": np.zeros(5, np.float32)},
        TypeError,
        "actions must have an integer dtype, got float32",
    ),
    ({**make_rows(5, 0), "rewards": np.zeros(4)}, ValueError, r"rewards must have shape \(5,\)"),
]


@pytest.mark.parametrize(("cols", "exc", "match"), BAD_PUSH_BATCH)
def test_bad_push_batch_pushes_nothing(cols: dict[str, Any], exc: type[Exception], match: str) -> None:
    ring = ExperienceRing(8)
    with pytest.raises(exc, match=match):
        ring.push_batch(**cols)
    assert (ring.pushed, ring.dropped, ring.size) == (0, 0, 0)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda r: r.drain(-1), ValueError, "max_records must be in 0..2147483647, got -1"),
        (lambda r: r.drain(1.5), TypeError, "max_records must be an int, got float"),
        (lambda r: r.drain_into(object(), 5), TypeError, "replay must be a PrioritizedReplay"),
        (lambda r: r.drain_into(PrioritizedReplay(4), -2), ValueError, "max_records must be in"),
    ],
)
def test_bad_drain_arguments(call: Any, exc: type[Exception], match: str) -> None:
    ring = ExperienceRing(8)
    ring.push_batch(**make_rows(3, 0))
    with pytest.raises(exc, match=match):
        call(ring)
    assert (ring.size, ring.drained) == (3, 0)


@pytest.mark.parametrize(
    ("capacity", "exc", "match"),
    [
        (0, ValueError, "capacity must be in 1..4194304, got 0"),
        (2**22 + 1, ValueError, "capacity must be in 1..4194304, got 4194305"),
        (8.0, TypeError, "capacity must be an int, got float"),
    ],
)
def test_bad_capacity(capacity: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        ExperienceRing(capacity)


def test_native_push_benchmark_checks_every_record() -> None:
    ring = _native.ExperienceRing(1024)
    for batch in (1, 64):
        seconds = _native._ring_push_benchmark(ring, 2, 50_000, batch)
        assert seconds > 0
    assert ring.pushed == ring.drained == 200_000
    assert ring.size == 0
    ring.try_push(np.zeros(F, np.float32), 0, 0.0, np.zeros(F, np.float32), False)
    with pytest.raises(ValueError, match="the ring must be empty"):
        _native._ring_push_benchmark(ring, 2, 10, 1)
    with pytest.raises(ValueError, match=r"n_threads must be in 1\.\.64, got 0"):
        _native._ring_push_benchmark(_native.ExperienceRing(8), 0, 10, 1)


def test_eight_python_producers_one_consumer_every_record_exactly_once() -> None:
    """8 threads push 1,000,000 records each (push_batch, chunks of 10k, retrying what did not fit)
    while one thread drains. Each record carries (producer, sequence); every one must arrive once,
    in its producer's order, with a matching checksum; pushed == drained; rejections counted."""
    n_producers, per_producer, chunk = 8, 1_000_000, 10_000
    total = n_producers * per_producer
    ring = ExperienceRing(1 << 16)
    rejected = [0] * n_producers
    errors: list[BaseException] = []

    def producer(t: int) -> None:
        try:
            states = np.zeros((chunk, F), np.float32)
            states[:, 1] = t
            actions = np.full(chunk, t % 15, np.int64)
            dones = np.zeros(chunk, np.float32)
            for start in range(0, per_producer, chunk):
                seq = np.arange(start, start + chunk)
                states[:, 0] = seq  # exact in float32 below 2**24
                rewards = (seq % 997).astype(np.float32)
                offset = 0
                while offset < chunk:
                    k = ring.push_batch(
                        states[offset:],
                        actions[offset:],
                        rewards[offset:],
                        states[offset:],
                        dones[offset:],
                    )
                    rejected[t] += chunk - offset - k
                    offset += k
                    if k == 0:
                        time.sleep(0.0005)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    producers = [threading.Thread(target=producer, args=(t,)) for t in range(n_producers)]
    for p in producers:
        p.start()
    tids: list[np.ndarray] = []
    seqs: list[np.ndarray] = []
    checksum = np.zeros(n_producers)
    received = 0
    deadline = time.monotonic() + 120
    while received < total and time.monotonic() < deadline:
        batch = ring.drain(1 << 16)
        if len(batch) == 0:
            time.sleep(0.0002)
            continue
        received += len(batch)
        tid = batch.states[:, 1].astype(np.int64)
        assert np.array_equal(batch.actions, tid % 15)
        assert np.array_equal(batch.next_states, batch.states)
        tids.append(tid.astype(np.int8))
        seqs.append(batch.states[:, 0].astype(np.int32))
        checksum += np.bincount(tid, weights=batch.rewards, minlength=n_producers)
    for p in producers:
        p.join()
    assert not errors, errors
    assert received == total
    assert ring.pushed == ring.drained == total
    assert ring.size == 0
    assert ring.dropped == sum(rejected)
    all_tids, all_seqs = np.concatenate(tids), np.concatenate(seqs)
    expected_seq = np.arange(per_producer)
    for t in range(n_producers):
        # Exactly once and in the producer's order: the sequence seen is 0, 1, 2, ...
        np.testing.assert_array_equal(all_seqs[all_tids == t], expected_seq)
    assert checksum.tolist() == [float(np.sum(expected_seq % 997))] * n_producers


# ------------------------------------------------------------------------------ propensities
def test_propensities_round_trip_and_default_to_unknown() -> None:
    """A producer that gives no propensity logs "unknown" (NaN), never a made-up 1.0 (deterministic)."""
    ring = ExperienceRing(16)
    cols = make_rows(4, seed=3)
    r0 = rows_of(cols)[0]
    assert ring.try_push(r0.state, r0.action, r0.reward, r0.next_state, r0.done, propensity=0.25)
    assert ring.try_push(r0.state, r0.action, r0.reward, r0.next_state, r0.done)
    assert ring.try_push(r0.state, r0.action, r0.reward, r0.next_state, r0.done, propensity=None)
    assert ring.try_push(r0.state, r0.action, r0.reward, r0.next_state, r0.done, propensity=np.float32(1.0))
    assert ring.push_batch(**cols, propensities=[0.5, 1.0, 1.0 / 15.0, 1e-30]) == 4
    assert ring.push_batch(**cols) == 4
    batch = ring.drain(100)
    assert batch.propensities is not None
    nan = math.nan
    want = np.array([0.25, nan, nan, 1.0, 0.5, 1.0, 1.0 / 15.0, 1e-30, nan, nan, nan, nan], dtype=np.float32)
    np.testing.assert_array_equal(batch.propensities, want)  # NaN == NaN here
    assert batch.actions.tolist() == [r0.action] * 4 + cols["actions"].tolist() * 2
    empty = ring.drain(10)
    assert empty.propensities is not None and empty.propensities.shape == (0,)


def test_unknown_propensities_reach_the_store_as_unknown(tmp_path: Path) -> None:
    """Ring -> experience store: unknown stays unknown (NULL); the off-policy gate leaves such rows out."""
    from itp.learning.store import ExperienceStore

    ring = ExperienceRing(16)
    cols = make_rows(3, seed=4)
    assert ring.push_batch(**cols) == 3
    assert ring.push_batch(**cols, propensities=[0.5, 1.0, 0.25]) == 3
    with ExperienceStore(tmp_path / "x.sqlite3") as store:
        store.append(ring.drain(10))
        got = store.recent(10)
    assert got.propensities is not None
    np.testing.assert_array_equal(got.propensities, np.array([math.nan] * 3 + [0.5, 1.0, 0.25], np.float32))


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, math.nan, math.inf])
def test_bad_propensity_pushes_nothing(bad: float) -> None:
    ring = ExperienceRing(8)
    cols = make_rows(2, seed=1)
    r = rows_of(cols)[0]
    with pytest.raises(ValueError, match=r"propensity must be in \(0, 1\]"):
        ring.try_push(r.state, r.action, r.reward, r.next_state, r.done, propensity=bad)
    with pytest.raises(ValueError, match=r"propensities\[1\] must be in \(0, 1\]"):
        ring.push_batch(**cols, propensities=[1.0, bad])
    with pytest.raises(TypeError, match="propensity must be a number or None, got str"):
        ring.try_push(r.state, r.action, r.reward, r.next_state, r.done, propensity="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"propensities must have shape \(2,\)"):
        ring.push_batch(**cols, propensities=[1.0])
    assert ring.pushed == 0 and ring.dropped == 0


def test_drain_into_ignores_propensities() -> None:
    ring = ExperienceRing(8)
    replay = PrioritizedReplay(8)
    cols = make_rows(3, seed=2)
    assert ring.push_batch(**cols, propensities=[0.1, 1.0, 0.5]) == 3
    assert ring.drain_into(replay, 10) == 3
    assert len(replay) == 3


# ------------------------------------------------------------------------------------ guard verdicts
GUARD_CODE = (14 << 16) | (1 << 14) | (1 << 2)  # actions 2 and 14 let through, the heuristic's is 14


def test_guard_verdicts_travel_through_the_ring() -> None:
    ring = ExperienceRing(16)
    rows = make_rows(4, 0)
    assert ring.try_push(rows["states"][0], 1, 0.5, rows["next_states"][0], False, 0.5, GUARD_CODE)
    assert ring.try_push(rows["states"][1], 1, 0.5, rows["next_states"][1], False, 0.5)
    codes = np.array([GUARD_CODE, -1], dtype=np.int32)
    tail = {k: v[2:] for k, v in rows.items()}
    head = {k: v[:1] for k, v in rows.items()}
    assert ring.push_batch(
        tail["states"], tail["actions"], tail["rewards"], tail["next_states"], tail["dones"],
        np.full(2, 0.25, np.float32), codes,
    ) == 2
    assert ring.push_batch(*(head[k] for k in ("states", "actions", "rewards", "next_states", "dones"))) == 1
    got = ring.drain(10)
    assert got.guard_verdicts is not None and got.guard_verdicts.dtype == np.int32
    np.testing.assert_array_equal(got.guard_verdicts, [GUARD_CODE, -1, GUARD_CODE, -1, -1])


@pytest.mark.parametrize("bad", [-2, 1 << 15, (3 << 16) | 1, 15 << 16])
def test_invalid_guard_verdicts_are_refused_and_push_nothing(bad: int) -> None:
    ring = ExperienceRing(8)
    rows = make_rows(2, 0)
    with pytest.raises(ValueError, match="guard_verdicts"):
        ring.try_push(rows["states"][0], 1, 0.5, rows["next_states"][0], False, 0.5, bad)
    with pytest.raises(ValueError, match="guard_verdicts"):
        ring.push_batch(rows["states"], rows["actions"], rows["rewards"], rows["next_states"], rows["dones"],
                        None, np.array([-1, bad], dtype=np.int32))
    with pytest.raises(TypeError, match="guard_verdicts"):
        ring.try_push(rows["states"][0], 1, 0.5, rows["next_states"][0], False, 0.5, 1.5)  # type: ignore[arg-type]
    assert (ring.pushed, ring.dropped, ring.size) == (0, 0, 0)
