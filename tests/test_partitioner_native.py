"""The native decision path (issue 14) against the pure-Python reference, and what it adds.

* Differential: the same decision/outcome sequence (single and batch decisions, reports, stream updates,
  clock steps that expire decisions, bad calls) through :class:`itp.partitioner.TaskPartitioner` and
  ``reference_partitioner.TaskPartitioner`` (the Python implementation it replaced) gives identical
  decisions, rewards, metrics and ring transitions, for a natively served model with exploration, the
  heuristic, an ONNX Runtime model and a canary.
* The native Decision: immutable, picklable (a pickled copy is a different decision), readable repr,
  constructor validation naming the field.
* Propensity of the behaviour policy, stored with the decision and handed to outcome listeners.
* Array batches (``partition_arrays``) and outcome batches (``report_outcomes``): same results as single
  calls, all or nothing on bad input.
* Real threads on the array and batch paths: counters add up exactly.
"""

from __future__ import annotations

import copy
import itertools
import math
import pickle
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import reference_partitioner as ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_factory import write_model, write_nan_region_model, write_raising_model

import itp
from itp.model_loading import LoadedModel, load_model
from itp.partitioner import Decision, OutcomeRecord, Task, TaskPartitioner

STREAMS = [
    (800e6, 0.012, 0.1, 0.99),
    (400e6, 0.030, 0.2, 0.95),
    (100e6, 0.100, 0.0, 0.90),
    (900e6, 0.020, 0.5, 0.50),
]

Factory = Callable[..., Any]


def setup(p: Any) -> Any:
    for i, (bw, lat, cong, succ) in enumerate(STREAMS):
        p.update_stream(i, bandwidth_bps=bw, latency_s=lat, congestion=cong, success_rate=succ)
    p.set_queue_depth(3)
    return p


class Clock:
    """Injectable hour and monotonic clocks that the test steps."""

    def __init__(self) -> None:
        self.hour = 13.5
        self.now_s = 1000.0

    def hour_fn(self) -> float:
        return self.hour

    def mono_fn(self) -> float:
        return self.now_s


_LOADED: dict[Path, LoadedModel] = {}


def pair(model: Path | None, **kw: Any) -> tuple[TaskPartitioner, Any, Clock]:
    """A native partitioner and a reference one with the same settings, model and clocks. A model file is
    loaded (and verified) once per module; both get the same LoadedModel, as a rollout would set it."""
    clock = Clock()
    args = {"clock": clock.hour_fn, "monotonic": clock.mono_fn, **kw}
    native = setup(TaskPartitioner(None, **args))
    python = setup(ref.TaskPartitioner(None, **args))
    if model is not None:
        loaded = _LOADED.get(model) or _LOADED.setdefault(model, load_model(model))
        native.set_model(loaded)
        python.set_model(loaded)
    return native, python, clock


def same_decision(a: Decision, b: Any) -> None:
    assert (a.task_id, a.action, a.stream_ids, a.chunk_sizes, a.source, a.model_version) == (
        b.task_id,
        b.action,
        b.stream_ids,
        b.chunk_sizes,
        b.source,
        b.model_version,
    )
    assert a.expected_time == b.expected_time
    assert a.confidence == b.confidence
    assert a.bytes_per_stream == b.bytes_per_stream


def same_metrics(a: TaskPartitioner, b: Any) -> None:
    ma, mb = a.get_metrics().as_dict(), b.get_metrics().as_dict()
    assert ma == mb


def same_ring(a: TaskPartitioner, b: Any) -> None:
    ba, bb = a.ring.drain(1 << 16), b.ring.drain(1 << 16)
    for name in ("states", "actions", "rewards", "next_states", "dones"):
        np.testing.assert_array_equal(getattr(ba, name), getattr(bb, name), err_msg=name)


def outcome_of(i: int) -> dict[str, Any]:
    return {
        "throughput_bps": float(1e5 + (i * 7919) % 10**9),
        "latency_s": 0.001 + (i % 97) / 10.0,
        "success": i % 5 != 0,
        "retransmissions": i % 3,
    }


# An operation: (kind, argument). Kinds: decide one, decide a batch, report the k-th pending decision
# (wrongly: with another task's decision), update a stream, step the clocks, expire now, bad decide.
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("decide"), st.integers(1, 2**40), st.floats(0.0, 1.0)),
        st.tuples(st.just("batch"), st.integers(1, 12), st.floats(0.0, 1.0)),
        st.tuples(st.just("report"), st.integers(0, 10**6), st.booleans()),
        st.tuples(st.just("stream"), st.integers(0, 3), st.floats(0.0, 2e9)),
        st.tuples(st.just("step"), st.floats(0.0, 40.0), st.floats(0.0, 23.9)),
        st.tuples(st.just("expire"), st.just(0), st.just(0.0)),
        st.tuples(st.just("again"), st.integers(0, 10**6), st.just(0.0)),
    ),
    min_size=1,
    max_size=60,
)


def run_sequence(native: TaskPartitioner, python: Any, clock: Clock, ops: list[tuple[Any, ...]]) -> None:
    """Apply ops to both; every result and every error must agree."""
    pending: list[tuple[str, Decision, Any]] = []
    counter = 0

    def both(fn_n: Callable[[], Any], fn_p: Callable[[], Any]) -> tuple[Any, Any]:
        try:
            rn = fn_n()
        except (ValueError, TypeError) as exc:
            with pytest.raises(type(exc)):
                fn_p()
            return None, None
        return rn, fn_p()

    for kind, x, y in ops:
        if kind == "decide":
            tid = f"t{counter}"
            counter += 1
            task = Task(tid, x, y)
            dn, dp = both(partial(native.partition_task, task), partial(python.partition_task, task))
            if dn is not None:
                same_decision(dn, dp)
                pending.append((tid, dn, dp))
        elif kind == "batch":
            tasks = [Task(f"t{counter + k}", 1 + (counter + k) * 104729 % 2**33, y) for k in range(x)]
            counter += x
            dsn, dsp = both(partial(native.partition_tasks, tasks), partial(python.partition_tasks, tasks))
            if dsn is not None:
                for t, dn, dp in zip(tasks, dsn, dsp, strict=True):
                    same_decision(dn, dp)
                    pending.append((t.id, dn, dp))
        elif kind == "report" and pending:
            tid, dn, dp = pending.pop(x % len(pending))
            if y and pending:  # wrong decision for the id: both refuse, nothing changes
                other_n, other_p = pending[0][1], pending[0][2]
                both(
                    partial(native.report_outcome, tid, other_n, **outcome_of(x)),
                    partial(python.report_outcome, tid, other_p, **outcome_of(x)),
                )
            rn, rp = both(
                partial(native.report_outcome, tid, dn, **outcome_of(x)),
                partial(python.report_outcome, tid, dp, **outcome_of(x)),
            )
            assert rn == rp  # identical reward (or both refused: expired)
        elif kind == "stream":
            for p in (native, python):
                p.update_stream(x, bandwidth_bps=y, latency_s=0.01 + x / 50, congestion=0.2, success_rate=0.9)
        elif kind == "step":
            clock.now_s += x
            clock.hour = y
        elif kind == "expire":
            assert native.expire_decisions() == python.expire_decisions()
        elif kind == "again" and pending:  # an id that is pending: both refuse
            tid = pending[x % len(pending)][0]
            both(partial(native.partition_task, Task(tid, 10)), partial(python.partition_task, Task(tid, 10)))
        same_metrics(native, python)
    assert sorted(native._pending) == sorted(python._pending)
    same_ring(native, python)


@pytest.fixture(scope="module")
def native_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("diff") / "m.onnx", seed=3, version="3.1.4")


@pytest.fixture(scope="module")
def ort_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_raising_model(tmp_path_factory.mktemp("diff_ort") / "ort.onnx", seed=2)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, epsilon=st.sampled_from([0.0, 0.3, 1.0]), seed=st.integers(0, 2**31))
def test_native_model_matches_reference(
    native_model: Path, ops: list[tuple[Any, ...]], epsilon: float, seed: int
) -> None:
    native, python, clock = pair(native_model, epsilon=epsilon, seed=seed, decision_ttl_s=30.0)
    assert native.model is not None and native.model.backend == "native"
    run_sequence(native, python, clock, ops)


@settings(max_examples=25, deadline=None)
@given(ops=OPS)
def test_heuristic_matches_reference(ops: list[tuple[Any, ...]]) -> None:
    native, python, clock = pair(None, decision_ttl_s=30.0)
    run_sequence(native, python, clock, ops)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, epsilon=st.sampled_from([0.0, 0.5]))
def test_onnxruntime_model_matches_reference(
    ort_model: Path, ops: list[tuple[Any, ...]], epsilon: float
) -> None:
    native, python, clock = pair(ort_model, epsilon=epsilon, seed=7, decision_ttl_s=30.0)
    assert native.model is not None and native.model.backend == "onnxruntime"
    run_sequence(native, python, clock, ops)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_canary_matches_reference(
    native_model: Path, tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[Any, ...]]
) -> None:
    cand_path = write_model(tmp_path_factory.mktemp("cand") / "c.onnx", seed=8, version="4.0.0")
    native, python, clock = pair(native_model, seed=11, decision_ttl_s=30.0)
    for p in (native, python):
        p.set_candidate(load_model(cand_path), 0.4)
    run_sequence(native, python, clock, ops)
    for p in (native, python):
        p.promote_candidate()
    run_sequence(native, python, clock, ops)  # the native path serves the promoted model alone again


def test_nan_faults_counted_like_the_reference(tmp_path: Path) -> None:
    native, python, clock = pair(write_nan_region_model(tmp_path / "nan.onnx"))
    for p in (native, python):
        for i in range(4):
            p.update_stream(i, bandwidth_bps=1e6, latency_s=0.01)
    ops: list[tuple[Any, ...]] = [("decide", 2**39, 0.5)] * 3 + [("batch", 4, 0.5), ("decide", 1000, 0.5)]
    run_sequence(native, python, clock, ops)
    m = native.get_metrics()
    assert m.faults_by_cause["nan_output"] >= 3 and m.fallback_count == m.faults_by_cause["nan_output"]


# ------------------------------------------------------------------------------------ Decision


def test_decision_is_an_immutable_picklable_value() -> None:
    p = setup(TaskPartitioner(None, clock=lambda: 12.0))
    d = p.partition_task(Task("x", 10**7, 0.5))
    for name in ("task_id", "action", "stream_ids", "chunk_sizes", "expected_time", "source", "propensity"):
        with pytest.raises(AttributeError):
            setattr(d, name, getattr(d, name))
    with pytest.raises(AttributeError):
        d.extra = 1  # type: ignore[attr-defined]
    for clone in (pickle.loads(pickle.dumps(d)), copy.copy(d), copy.deepcopy(d)):
        assert isinstance(clone, Decision) and clone is not d and clone != d  # equality is identity
        assert repr(clone) == repr(d)
        assert (clone.bytes_per_stream, clone.expected_time, clone.propensity, clone.arm) == (
            d.bytes_per_stream,
            d.expected_time,
            d.propensity,
            d.arm,
        )
    assert d == d and hash(d) == hash(d)
    # A copy is not the decision that was handed out: it cannot complete the task.
    with pytest.raises(ValueError, match="does not belong"):
        p.report_outcome("x", pickle.loads(pickle.dumps(d)), throughput_bps=1e8, latency_s=0.1, success=True)
    p.report_outcome("x", d, throughput_bps=1e8, latency_s=0.1, success=True)


def test_decision_repr_reads_like_the_dataclass() -> None:
    d = Decision("job-1", 4, (0, 1), (600, 400), 0.25, 0.5, "model", "1.0.0", 0.9, "candidate")
    assert repr(d) == (
        "Decision(task_id='job-1', action=4, stream_ids=(0, 1), chunk_sizes=(600, 400), expected_time=0.25, "
        "confidence=0.5, source='model', model_version='1.0.0', propensity=0.9, arm='candidate')"
    )
    assert d.bytes_per_stream == (600, 400, 0, 0)
    plain = Decision("j", 0, [0], [5], 1.0, 1.0, "heuristic", None)
    assert plain.propensity == 1.0 and plain.arm == "current" and plain.model_version is None


@pytest.mark.parametrize(
    ("kwargs", "exc", "field"),
    [
        ({"task_id": ""}, ValueError, "task_id"),
        ({"action": 15}, ValueError, "action"),
        ({"action": 1.0}, TypeError, "action"),
        ({"stream_ids": (1, 0)}, ValueError, "stream_ids"),
        ({"stream_ids": (0,), "chunk_sizes": (1, 2)}, ValueError, "same length"),
        ({"chunk_sizes": (0, 1)}, ValueError, "chunk_sizes"),
        ({"expected_time": float("nan")}, ValueError, "expected_time"),
        ({"confidence": 1.5}, ValueError, "confidence"),
        ({"source": "oracle"}, ValueError, "source"),
        ({"model_version": 3}, TypeError, "model_version"),
        ({"propensity": 0.0}, ValueError, "propensity"),
        ({"arm": "left"}, ValueError, "arm"),
    ],
)
def test_decision_constructor_names_the_bad_field(
    kwargs: dict[str, Any], exc: type[Exception], field: str
) -> None:
    args: dict[str, Any] = {
        "task_id": "j",
        "action": 4,
        "stream_ids": (0, 1),
        "chunk_sizes": (3, 4),
        "expected_time": 1.0,
        "confidence": 0.5,
        "source": "model",
        "model_version": None,
    }
    args.update(kwargs)
    with pytest.raises(exc, match=field):
        Decision(**args)


# ---------------------------------------------------------------------------------- propensity


def test_propensity_is_the_behaviour_policy_probability(native_model: Path) -> None:
    eps = 0.4
    p = setup(TaskPartitioner(native_model, clock=lambda: 13.5, epsilon=eps, seed=5))
    ort = load_model(native_model, allow_native=False)
    records: list[OutcomeRecord] = []
    p.add_outcome_listener(records.append)
    greedy_p, other_p = (1 - eps) + eps / 15, eps / 15
    seen = set()
    for i in range(400):
        size = 1000 + 7919 * i**2
        d = p.partition_task(Task(f"t{i}", size, 0.3))
        q = ort.q_values(
            itp.normalize_state(
                np.array(
                    [
                        *[s[0] for s in STREAMS],
                        *[s[1] for s in STREAMS],
                        *[s[2] for s in STREAMS],
                        *[s[3] for s in STREAMS],
                        3,
                        size,
                        0.3,
                        13.5,
                    ]
                )
            )
        )
        want = greedy_p if d.action == int(np.argmax(q)) else other_p
        assert d.propensity == pytest.approx(want, rel=1e-12)
        seen.add((d.source, d.propensity == pytest.approx(greedy_p)))
        p.report_outcome(d.task_id, d, throughput_bps=1e8, latency_s=0.2, success=True)
        assert records[-1].propensity == d.propensity and records[-1].arm == "current"
    assert ("model", True) in seen and ("explore", False) in seen
    h = setup(TaskPartitioner(None, clock=lambda: 1.0, epsilon=0.9))
    assert h.partition_task(Task("h", 10**6)).propensity == 1.0


# ------------------------------------------------------------------------------------ batches


def test_partition_arrays_equals_single_decisions(native_model: Path) -> None:
    a = setup(TaskPartitioner(native_model, clock=lambda: 9.0, epsilon=0.2, seed=4))
    b = setup(TaskPartitioner(native_model, clock=lambda: 9.0, epsilon=0.2, seed=4))
    n = 300
    ids = [f"t{i}" for i in range(n)]
    sizes = np.array([1 + (i * 7919) ** 3 % (8 * 2**30) for i in range(n)], dtype=np.uint64)
    prios = np.linspace(0, 1, n)
    arr = a.partition_arrays(ids, sizes, prios)
    assert len(arr) == n
    singles = [b.partition_task(Task(i, int(s), float(q))) for i, s, q in zip(ids, sizes, prios, strict=True)]
    for k, d in enumerate(singles):
        assert int(arr.actions[k]) == d.action
        assert tuple(int(c) for c in arr.chunk_bytes[k]) == d.bytes_per_stream
        assert arr.expected_time_s[k] == d.expected_time and arr.confidence[k] == d.confidence
        assert arr.propensity[k] == d.propensity and itp.agent.SOURCES[arr.sources[k]] == d.source
    assert a.get_metrics().decisions_by_source == b.get_metrics().decisions_by_source
    # Outcomes in one batch (no Decision objects for array decisions) equal single reports.
    outs = [outcome_of(i) for i in range(n)]
    rewards = a.report_outcomes(
        ids,
        None,
        throughput_bps=np.array([o["throughput_bps"] for o in outs]),
        latency_s=np.array([o["latency_s"] for o in outs]),
        success=np.array([o["success"] for o in outs]),
        retransmissions=np.array([o["retransmissions"] for o in outs]),
    )
    singles_r = [b.report_outcome(d.task_id, d, **o) for d, o in zip(singles, outs, strict=True)]
    np.testing.assert_array_equal(rewards, np.array(singles_r))
    assert a.get_metrics().as_dict() == b.get_metrics().as_dict()
    same_ring(a, b)


def test_partition_arrays_through_onnxruntime(ort_model: Path) -> None:
    p = setup(TaskPartitioner(ort_model, clock=lambda: 9.0))
    arr = p.partition_arrays(["a", "b"], [10**6, 10**9], [0.2, 0.7])
    assert arr.sources.tolist() == [0, 0] and p.get_metrics().outstanding_decisions == 2


def test_batches_are_all_or_nothing() -> None:
    p = setup(TaskPartitioner(None, clock=lambda: 9.0))
    d = p.partition_task(Task("taken", 1000))
    before = p.get_metrics().as_dict()
    bad_calls: list[tuple[Callable[[], object], type[Exception], str]] = [
        (lambda: p.partition_arrays(["n1", "taken"], [10, 10], [0.5, 0.5]), ValueError, "taken"),
        (lambda: p.partition_arrays(["n1", "n1"], [10, 10], [0.5, 0.5]), ValueError, "twice"),
        (lambda: p.partition_arrays(["n1", ""], [10, 10], [0.5, 0.5]), ValueError, r"task_ids\[1\]"),
        (lambda: p.partition_arrays(["n1", "n2"], [10, 0], [0.5, 0.5]), ValueError, "sizes_bytes"),
        (lambda: p.partition_arrays(["n1", "n2"], [10, 2**50 + 1], [0.5, 0.5]), ValueError, "sizes_bytes"),
        (lambda: p.partition_arrays(["n1", "n2"], [10, 10], [0.5, 1.5]), ValueError, "priorities"),
        (lambda: p.partition_arrays(["n1", "n2"], [10.5, 10], [0.5, 0.5]), TypeError, "sizes_bytes"),
        (lambda: p.partition_arrays(["n1", "n2"], [10], [0.5, 0.5]), ValueError, "sizes_bytes"),
        (lambda: p.partition_tasks([Task("n1", 10), "n2"]), TypeError, "Task"),  # type: ignore[list-item]
        (
            lambda: p.report_outcomes(
                ["taken", "nope"],
                None,
                throughput_bps=[1e6, 1e6],
                latency_s=[0.1, 0.1],
                success=np.array([True, True]),
            ),
            ValueError,
            "nope",
        ),
        (
            lambda: p.report_outcomes(
                ["taken"], [d], throughput_bps=[1e6], latency_s=[0.0], success=np.array([True])
            ),
            ValueError,
            "latency_s",
        ),
        (
            lambda: p.report_outcomes(
                ["taken"], [d], throughput_bps=[-1.0], latency_s=[0.1], success=np.array([True])
            ),
            ValueError,
            "throughput_bps",
        ),
        (
            lambda: p.report_outcomes(
                ["taken"],
                [d],
                throughput_bps=[1.0],
                latency_s=[0.1],
                success=np.array([True]),
                retransmissions=np.array([-1]),
            ),
            ValueError,
            "retransmissions",
        ),
        (
            lambda: p.report_outcomes(["taken"], [d], throughput_bps=[1.0], latency_s=[0.1], success=[1]),
            TypeError,
            "success",
        ),
        (
            lambda: p.report_outcomes(
                ["taken", "taken"],
                None,
                throughput_bps=[1.0, 1.0],
                latency_s=[0.1, 0.1],
                success=np.array([True, True]),
            ),
            ValueError,
            "twice",
        ),
    ]
    for call, exc, match in bad_calls:
        with pytest.raises(exc, match=match):
            call()
        assert p.get_metrics().as_dict() == before
        assert sorted(p._pending) == ["taken"]
    other = Decision(
        "taken", d.action, d.stream_ids, d.chunk_sizes, d.expected_time, d.confidence, d.source, None
    )
    with pytest.raises(ValueError, match=r"decisions\[0\] does not belong"):
        p.report_outcomes(["taken"], [other], throughput_bps=[1.0], latency_s=[0.1], success=np.array([True]))
    r = p.report_outcomes(["taken"], [d], throughput_bps=[1e8], latency_s=[0.1], success=np.array([True]))
    assert r.shape == (1,) and math.isfinite(r[0]) and p.get_metrics().reported_outcomes == 1


def test_bad_clock_changes_nothing() -> None:
    hour = [1.0]
    p = setup(TaskPartitioner(None, clock=lambda: hour[0]))
    d = p.partition_task(Task("a", 1000))
    hour[0] = 24.0
    before = p.get_metrics().as_dict()
    with pytest.raises(ValueError, match="clock"):
        p.partition_task(Task("b", 1000))
    with pytest.raises(ValueError, match="clock"):
        p.report_outcome("a", d, throughput_bps=1e6, latency_s=0.1, success=True)
    assert p.get_metrics().as_dict() == before


def test_default_clocks_are_read_natively() -> None:
    p = setup(TaskPartitioner(None, decision_ttl_s=3600.0))
    d = p.partition_task(Task("a", 10**6))
    assert p.get_metrics().outstanding_decisions == 1
    assert p.expire_decisions() == 0  # a native monotonic clock, not a stale one
    # The native local hour agrees with itp.partitioner.local_hour (the next state's hour feature).
    p.report_outcome("a", d, throughput_bps=1e8, latency_s=0.1, success=True)
    hour_feature = float(p.ring.drain(1).next_states[0][19]) * 24.0
    assert (
        abs(hour_feature - itp.partitioner.local_hour()) < 0.05
        or abs(hour_feature - itp.partitioner.local_hour()) > 23.9
    )


# ---------------------------------------------------------------------------------- concurrency


def test_threads_on_batch_paths_add_up_exactly(native_model: Path) -> None:
    """8 threads x 40 batches of 64: arrays in, outcomes in batches, decisions and rewards counted."""
    p = setup(TaskPartitioner(native_model, clock=lambda: 12.0, epsilon=0.1, ring_capacity=1 << 16))
    n_threads, batches, per = 8, 40, 64
    errors: list[BaseException] = []
    sums = [0.0] * n_threads

    def worker(k: int) -> None:
        try:
            for b in range(batches):
                ids = [f"{k}-{b}-{i}" for i in range(per)]
                sizes = np.full(per, 10**6 + k, dtype=np.uint64)
                if b % 2:
                    p.partition_arrays(ids, sizes, np.full(per, 0.5))
                    decisions = None
                else:
                    decisions = p.partition_tasks([Task(i, int(s)) for i, s in zip(ids, sizes, strict=True)])
                r = p.report_outcomes(
                    ids,
                    decisions,
                    throughput_bps=np.full(per, 1e8),
                    latency_s=np.full(per, 0.05),
                    success=np.ones(per, dtype=bool),
                )
                sums[k] += float(r.sum())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    total = n_threads * batches * per
    m = p.get_metrics()
    assert m.total_decisions == total == sum(m.decisions_by_source.values()) == m.reported_outcomes
    assert m.outstanding_decisions == 0 and m.successful_tasks == total
    assert m.pushed_transitions + m.dropped_transitions == total
    assert m.avg_reward * total == pytest.approx(sum(sums), rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(
    widths=st.lists(st.integers(1, 70), min_size=2, max_size=5),
    n=st.integers(0, 13),
    seed=st.integers(0, 2**32 - 1),
)
def test_fused_mlp_batch_is_bit_identical_to_single(widths: list[int], n: int, seed: int) -> None:
    """forward_batch (four states per weight pass) equals forward row by row, bit for bit, for any layer
    widths (block tails included) and any batch size (group tails included)."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=(o, i)).astype(np.float32) for i, o in itertools.pairwise(widths)]
    biases = [rng.normal(size=o).astype(np.float32) for o in widths[1:]]
    mlp = itp._native.FusedMlp(weights, biases)
    x = rng.normal(size=(n, widths[0])).astype(np.float32)
    batch = mlp.forward_batch(x)
    single = np.array([mlp.forward(row) for row in x], dtype=np.float32).reshape(n, widths[-1])
    np.testing.assert_array_equal(batch, single)
