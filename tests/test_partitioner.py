"""TaskPartitioner: the public contract, bad input, faults, expiry, and real-thread concurrency."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import numpy as np
import pytest

import itp
from itp.partitioner import Decision, Task, TaskPartitioner

STREAMS = [
    (800e6, 0.012, 0.1, 0.99),
    (400e6, 0.030, 0.2, 0.95),
    (100e6, 0.100, 0.0, 0.90),
    (900e6, 0.020, 0.5, 0.50),
]


def make(model_path: object = None, **kw: object) -> TaskPartitioner:
    p = TaskPartitioner(model_path, clock=lambda: 13.5, **kw)  # type: ignore[arg-type]
    for i, (bw, lat, cong, succ) in enumerate(STREAMS):
        p.update_stream(i, bandwidth_bps=bw, latency_s=lat, congestion=cong, success_rate=succ)
    p.set_queue_depth(3)
    return p


def test_decision_contract_heuristic_only() -> None:
    p = make()
    task = Task(id="task-123", size=100 * 1024 * 1024, priority=0.8)
    d = p.partition_task(task)
    assert d.source == "heuristic"
    assert 0 <= d.action < 15
    assert set(d.stream_ids) <= set(itp.decode_action(d.action))
    assert sum(d.chunk_sizes) == task.size
    assert all(c > 0 for c in d.chunk_sizes)
    assert len(d.chunk_sizes) == len(d.stream_ids)
    assert 0.0 <= d.confidence <= 1.0
    assert 0.0 < d.expected_time < math.inf
    # The split is the native equal-finish split over effective rates (bandwidth x success rate).
    rates = [bw * s for bw, _, _, s in STREAMS]
    lat = [lt for _, lt, _, _ in STREAMS]
    ref = itp.split_task(task.size, d.action, rates, lat)
    assert d.bytes_per_stream == ref.chunk_bytes
    assert d.expected_time == pytest.approx(ref.expected_time_s)


def test_small_tasks_use_few_streams_large_tasks_many() -> None:
    p = make()
    small = p.partition_task(Task("s", 4096, 0.5))
    large = p.partition_task(Task("l", 4 * 2**30, 0.5))
    assert len(small.stream_ids) <= len(large.stream_ids)
    assert len(large.stream_ids) >= 2


def test_report_outcome_records_state_at_decision_time() -> None:
    p = make()
    d = p.partition_task(Task("t1", 50 * 2**20, 0.3))
    state_then = itp.normalize_state(
        [s[0] for s in STREAMS] + [s[1] for s in STREAMS] + [s[2] for s in STREAMS]
        + [s[3] for s in STREAMS] + [3, 50 * 2**20, 0.3, 13.5]
    )
    p.update_stream(0, bandwidth_bps=1e6, latency_s=0.5, congestion=1.0, success_rate=0.1)  # changes later
    reward = p.report_outcome("t1", d, throughput_bps=1.2e9, latency_s=0.4, success=True)
    assert math.isfinite(reward)
    batch = p.ring.drain(10)
    assert len(batch.actions) == 1
    np.testing.assert_array_equal(batch.states[0], state_then)
    assert int(batch.actions[0]) == d.action
    assert batch.rewards[0] == pytest.approx(reward)
    assert batch.next_states[0][0] == pytest.approx(1e6 / 1e9)  # the state now
    m = p.get_metrics()
    assert m.reported_outcomes == 1 and m.successful_tasks == 1 and m.success_rate == 1.0
    assert m.avg_reward == pytest.approx(reward)
    assert m.pushed_transitions == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bandwidth_bps": -1.0, "latency_s": 0.01}, "bandwidth_bps"),
        ({"bandwidth_bps": float("nan"), "latency_s": 0.01}, "bandwidth_bps"),
        ({"bandwidth_bps": 1e6, "latency_s": float("inf")}, "latency_s"),
        ({"bandwidth_bps": 1e6, "latency_s": 0.01, "congestion": 1.5}, "congestion"),
        ({"bandwidth_bps": 1e6, "latency_s": 0.01, "success_rate": -0.1}, "success_rate"),
    ],
)
def test_bad_stream_metrics_rejected_and_nothing_changes(kwargs: dict[str, float], field: str) -> None:
    p = make()
    before = p._engine.stream(1)
    with pytest.raises(ValueError, match=field):
        p.update_stream(1, **kwargs)
    assert p._engine.stream(1) == before


def test_bad_stream_id_and_queue_depth() -> None:
    p = make()
    with pytest.raises(ValueError, match="stream_id"):
        p.update_stream(4, bandwidth_bps=1e6, latency_s=0.01)
    with pytest.raises(TypeError, match="stream_id"):
        p.update_stream("0", bandwidth_bps=1e6, latency_s=0.01)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="queue_depth"):
        p.set_queue_depth(-1)


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (("", 10, 0.5), ValueError, "id"),
        (("a", 0, 0.5), ValueError, "size"),
        (("a", -5, 0.5), ValueError, "size"),
        (("a", 2**50 + 1, 0.5), ValueError, "size"),
        (("a", 10.0, 0.5), TypeError, "size"),
        (("a", 10, 1.5), ValueError, "priority"),
        (("a", 10, float("nan")), ValueError, "priority"),
    ],
)
def test_bad_tasks_rejected(args: tuple[object, ...], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        Task(*args)  # type: ignore[arg-type]


def test_bad_reports_rejected_and_nothing_changes() -> None:
    p = make()
    d1 = p.partition_task(Task("a", 10_000_000, 0.5))
    d2 = p.partition_task(Task("b", 10_000_000, 0.5))
    with pytest.raises(ValueError, match="unknown"):
        p.report_outcome("zzz", d1, throughput_bps=1e8, latency_s=0.1, success=True)
    with pytest.raises(ValueError, match="does not belong"):
        p.report_outcome("a", d2, throughput_bps=1e8, latency_s=0.1, success=True)
    with pytest.raises(ValueError, match="throughput_bps"):
        p.report_outcome("a", d1, throughput_bps=-1.0, latency_s=0.1, success=True)
    with pytest.raises(ValueError, match="latency_s"):
        p.report_outcome("a", d1, throughput_bps=1e8, latency_s=float("nan"), success=True)
    assert p.get_metrics().outstanding_decisions == 2
    assert p.get_metrics().reported_outcomes == 0
    p.report_outcome("a", d1, throughput_bps=1e8, latency_s=0.1, success=True)
    with pytest.raises(ValueError, match="already reported"):
        p.report_outcome("a", d1, throughput_bps=1e8, latency_s=0.1, success=True)
    with pytest.raises(ValueError, match="pending"):
        p.partition_task(Task("b", 10, 0.5))


def test_unreported_decisions_expire_and_are_counted() -> None:
    now = [100.0]
    p = make(decision_ttl_s=5.0, monotonic=lambda: now[0])
    for i in range(10):
        p.partition_task(Task(f"t{i}", 1000, 0.5))
    now[0] += 6.0
    p.partition_task(Task("late", 1000, 0.5))
    m = p.get_metrics()
    assert m.expired_decisions == 10
    assert m.outstanding_decisions == 1


def test_missing_model_falls_back_to_heuristic(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        p = make(tmp_path / "nope.onnx")
    d = p.partition_task(Task("x", 10**8, 0.5))
    assert d.source == "heuristic"
    m = p.get_metrics()
    assert m.fallback_count == 1 and m.model_faults == 1 and m.model_version is None
    assert sum("model not loaded" in r.message for r in caplog.records) == 1


def test_corrupt_model_falls_back(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    p = make(bad)
    assert p.partition_task(Task("x", 10**8, 0.5)).source == "heuristic"
    assert p.get_metrics().fallback_count == 1


def test_batch_equals_single_decisions() -> None:
    p1, p2 = make(), make()
    tasks = [Task(f"t{i}", 1 + (i * 7919) ** 3 % (8 * 2**30), (i % 10) / 10) for i in range(300)]
    batch = p1.partition_tasks(tasks)
    single = [p2.partition_task(t) for t in tasks]
    for a, b in zip(batch, single):
        assert (a.action, a.stream_ids, a.chunk_sizes, a.source) == (b.action, b.stream_ids, b.chunk_sizes, b.source)
        assert a.expected_time == b.expected_time and a.confidence == pytest.approx(b.confidence)
    with pytest.raises(ValueError, match="twice"):
        p1.partition_tasks([Task("dup", 10), Task("dup", 10)])


def test_threads_metrics_add_up_exactly() -> None:
    n_threads, per_thread = 16, 2000
    p = make(ring_capacity=1 << 16)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(per_thread):
                d = p.partition_task(Task(f"{k}-{i}", 1 + i * 1000, 0.5))
                p.report_outcome(f"{k}-{i}", d, throughput_bps=1e8, latency_s=0.05, success=i % 4 != 0)
                if i % 100 == 0:
                    p.update_stream(k % 4, bandwidth_bps=1e8 + i, latency_s=0.01, congestion=0.1, success_rate=0.9)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    drained: list[int] = []
    stop = threading.Event()

    def drainer() -> None:
        while not stop.is_set() or p.ring.size:
            drained.append(len(p.ring.drain(4096).actions))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    dt = threading.Thread(target=drainer)
    dt.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    dt.join()
    assert not errors
    total = n_threads * per_thread
    m = p.get_metrics()
    assert m.total_decisions == total
    assert m.reported_outcomes == total
    assert m.successful_tasks == total - n_threads * (per_thread // 4)
    assert m.outstanding_decisions == 0
    assert m.pushed_transitions + m.dropped_transitions == total
    assert sum(drained) == m.pushed_transitions


def test_decision_is_immutable() -> None:
    d = make().partition_task(Task("x", 100, 0.5))
    assert isinstance(d, Decision)
    with pytest.raises(AttributeError):
        d.action = 3  # type: ignore[misc]
