"""TaskPartitioner: the public contract, bad input, faults, expiry, and real-thread concurrency."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from model_factory import (
    RAISING_PRIORITY,
    build_onnx,
    random_layers,
    save_with_metadata,
    write_model,
    write_nan_region_model,
    write_raising_model,
    write_wrong_input_model,
)

import itp
from itp import _native
from itp.model_loading import load_model
from itp.model_metadata import metadata_path_for
from itp.partitioner import Decision, Task, TaskPartitioner
from itp.sim import SimConfig

STREAMS = [
    (800e6, 0.012, 0.1, 0.99),
    (400e6, 0.030, 0.2, 0.95),
    (100e6, 0.100, 0.0, 0.90),
    (900e6, 0.020, 0.5, 0.50),
]


def production_split(raw: np.ndarray, action: int) -> tuple[tuple[int, ...], float]:
    """The engine's production split (the transport-aware one where the build has it, else the plain
    equal-finish split over bandwidth x success rate that older builds use)."""
    native = getattr(_native, "production_split", None)
    if native is not None:
        chunks, expected_s = native(raw, action)
        return tuple(chunks), float(expected_s)
    ref = itp.split_task(int(raw[17]), action, raw[0:4] * raw[12:16], raw[4:8])
    return ref.chunk_bytes, ref.expected_time_s


def raw_state(size_bytes: int, priority: float, queue_depth: float = 3, hour: float = 13.5) -> np.ndarray:
    """The raw state the partitioner built from STREAMS (caller units)."""
    cols = list(zip(*STREAMS, strict=False))
    return np.array([*cols[0], *cols[1], *cols[2], *cols[3], queue_depth, size_bytes, priority, hour])


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
    # The split is the engine's production split of the executed action for the state at decision time.
    chunks, expected_s = production_split(raw_state(task.size, task.priority), d.action)
    assert d.bytes_per_stream == tuple(chunks)
    assert d.expected_time == pytest.approx(expected_s)


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
        [s[0] for s in STREAMS]
        + [s[1] for s in STREAMS]
        + [s[2] for s in STREAMS]
        + [s[3] for s in STREAMS]
        + [3, 50 * 2**20, 0.3, 13.5]
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


def test_batch_equals_single_decisions() -> None:
    p1, p2 = make(), make()
    tasks = [Task(f"t{i}", 1 + (i * 7919) ** 3 % (8 * 2**30), (i % 10) / 10) for i in range(300)]
    batch = p1.partition_tasks(tasks)
    single = [p2.partition_task(t) for t in tasks]
    for a, b in zip(batch, single, strict=False):
        assert (a.action, a.stream_ids, a.chunk_sizes, a.source) == (
            b.action,
            b.stream_ids,
            b.chunk_sizes,
            b.source,
        )
        assert a.expected_time == b.expected_time and a.confidence == pytest.approx(b.confidence)
    with pytest.raises(ValueError, match="twice"):
        p1.partition_tasks([Task("dup", 10), Task("dup", 10)])


def test_decision_is_immutable() -> None:
    d = make().partition_task(Task("x", 100, 0.5))
    assert isinstance(d, Decision)
    with pytest.raises(AttributeError):
        d.action = 3  # type: ignore[misc]


# ------------------------------------------------------------------------------ state untouched


def live_state(p: TaskPartitioner) -> tuple[object, ...]:
    """Everything a failed call must leave unchanged."""
    m = p.get_metrics().as_dict()
    return (
        [p.get_stream(i) for i in range(4)],
        p.queue_depth,
        sorted(p._pending),
        m,
        p.ring.size,
    )


def test_bad_calls_change_nothing() -> None:
    p = make()
    d = p.partition_task(Task("a", 10_000_000, 0.5))
    before = live_state(p)
    bad_calls: list[tuple[Callable[[], object], type[Exception], str]] = [
        (lambda: p.update_stream(-1, bandwidth_bps=1e6, latency_s=0.01), ValueError, "stream_id"),
        (lambda: p.update_stream(0, bandwidth_bps="1e6", latency_s=0.01), TypeError, "bandwidth_bps"),  # type: ignore[arg-type]
        (lambda: p.update_stream(0, bandwidth_bps=1e6, latency_s=-0.01), ValueError, "latency_s"),
        (
            lambda: p.update_stream(0, bandwidth_bps=1e6, latency_s=0.01, congestion=float("nan")),
            ValueError,
            "congestion",
        ),
        (
            lambda: p.update_stream(0, bandwidth_bps=1e6, latency_s=0.01, success_rate=1.01),
            ValueError,
            "success_rate",
        ),
        (lambda: p.update_stream(0, bandwidth_bps=float("inf"), latency_s=0.01), ValueError, "bandwidth_bps"),
        (lambda: p.set_queue_depth(float("nan")), ValueError, "queue_depth"),
        (lambda: p.partition_task("a"), TypeError, "Task"),  # type: ignore[arg-type]
        (lambda: p.partition_task(Task("a", 10, 0.5)), ValueError, "pending"),
        (lambda: p.partition_tasks([Task("x1", 10), Task("a", 10)]), ValueError, "pending"),
        (
            lambda: p.report_outcome("a", d, throughput_bps=1e8, latency_s=0.0, success=True),
            ValueError,
            "latency_s",
        ),
        (
            lambda: p.report_outcome("a", d, throughput_bps=float("inf"), latency_s=0.1, success=True),
            ValueError,
            "throughput_bps",
        ),
        (
            lambda: p.report_outcome("a", d, throughput_bps=1e8, latency_s=0.1, success="yes"),
            TypeError,
            "success",
        ),  # type: ignore[arg-type]
        (
            lambda: p.report_outcome(
                "a", d, throughput_bps=1e8, latency_s=0.1, success=True, retransmissions=-1
            ),
            ValueError,
            "retransmissions",
        ),
        (
            lambda: p.report_outcome(7, d, throughput_bps=1e8, latency_s=0.1, success=True),
            ValueError,
            "unknown",
        ),  # type: ignore[arg-type]
    ]
    for call, exc, match in bad_calls:
        with pytest.raises(exc, match=match):
            call()
        assert live_state(p) == before


def test_partition_tasks_is_all_or_nothing() -> None:
    p = make()
    p.partition_task(Task("taken", 100, 0.5))
    with pytest.raises(ValueError, match="taken"):
        p.partition_tasks([Task("new1", 100), Task("taken", 100), Task("new2", 100)])
    assert p.get_metrics().outstanding_decisions == 1
    assert p.get_metrics().total_decisions == 1


# ------------------------------------------------------------------------------------ faults


def _unreadable_metadata(tmp: Path) -> Path:
    path = write_model(tmp / "m.onnx")
    meta = metadata_path_for(path)
    meta.unlink()
    meta.mkdir()  # reading it raises IsADirectoryError: unreadable even for root
    return path


def _truncated(tmp: Path) -> Path:
    path = write_model(tmp / "m.onnx")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupt_bytes(tmp: Path) -> Path:
    path = write_model(tmp / "m.onnx")
    path.write_bytes(b"not an onnx file")
    return path


def _corrupt_with_matching_sha(tmp: Path) -> Path:
    """Garbage whose metadata sha256 matches: ONNX Runtime itself must refuse it."""
    path = write_model(tmp / "m.onnx")
    path.write_bytes(b"\x08\x07garbage" * 50)
    meta = metadata_path_for(path)
    data = json.loads(meta.read_text())
    from itp.model_metadata import file_sha256

    data["onnx_sha256"] = file_sha256(path)
    meta.write_text(json.dumps(data))
    return path


def _wrong_layout(tmp: Path) -> Path:
    path = write_model(tmp / "m.onnx")
    meta = metadata_path_for(path)
    data = json.loads(meta.read_text())
    data["state_layout_version"] = 999
    meta.write_text(json.dumps(data))
    return path


def _wrong_output(tmp: Path) -> Path:
    w, b = random_layers(0)
    w[-1], b[-1] = w[-1][:10], b[-1][:10]
    model = build_onnx(w, b)
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 10
    return save_with_metadata(model, tmp / "m.onnx")


def _nan_weights(tmp: Path) -> Path:
    w, b = random_layers(0)
    b[-1][3] = np.nan
    return write_model(tmp / "m.onnx", weights=w, biases=b)


LOAD_FAULTS: dict[str, Callable[[Path], Path]] = {
    "missing": lambda tmp: tmp / "absent.onnx",
    "unreadable": _unreadable_metadata,
    "truncated": _truncated,
    "corrupt": _corrupt_bytes,
    "corrupt_sha_ok": _corrupt_with_matching_sha,
    "wrong_layout_version": _wrong_layout,
    "wrong_output_shape": _wrong_output,
    "wrong_input_shape": lambda tmp: write_wrong_input_model(tmp / "m.onnx"),
    "nan_on_probes": _nan_weights,
}


@pytest.mark.parametrize("fault", sorted(LOAD_FAULTS))
def test_model_load_faults_fall_back_counted_warned_once(
    fault: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = LOAD_FAULTS[fault](tmp_path)
    with caplog.at_level(logging.WARNING, logger="itp"):
        p = make(path)
        decisions = [p.partition_task(Task(f"x{i}", 10**8, 0.5)) for i in range(3)]
    assert all(d.source == "heuristic" and d.model_version is None for d in decisions)
    m = p.get_metrics()
    assert m.fallback_count == 3
    assert m.model_faults == 1 and m.faults_by_cause["load"] == 1
    assert m.model_version is None
    assert sum("model not loaded" in r.getMessage() for r in caplog.records) == 1


def test_unreadable_file_permissions(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode; covered by the unreadable-metadata case")
    path = write_model(tmp_path / "m.onnx")
    path.chmod(0)
    p = make(path)
    assert p.partition_task(Task("x", 100, 0.5)).source == "heuristic"
    assert p.get_metrics().faults_by_cause["load"] == 1


def test_nan_output_at_run_time_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = make(write_nan_region_model(tmp_path / "nan.onnx"))
    assert p.model is not None and p.model.backend == "native"
    assert p.partition_task(Task("ok", 10**6, 0.5)).source == "model"
    for i in range(4):
        p.update_stream(i, bandwidth_bps=1e6, latency_s=0.01)
    with caplog.at_level(logging.WARNING, logger="itp"):
        ds = [p.partition_task(Task(f"big{i}", 2**39, 0.5)) for i in range(3)]
    assert all(d.source == "heuristic" for d in ds)
    m = p.get_metrics()
    assert m.faults_by_cause["nan_output"] == 3 and m.fallback_count == 3
    assert sum("NaN" in r.getMessage() for r in caplog.records) == 1
    # Reporting a fallback decision works like any other.
    p.report_outcome("big0", ds[0], throughput_bps=1e5, latency_s=10.0, success=True)


def test_inference_raising_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = make(write_raising_model(tmp_path / "raise.onnx"))
    assert p.model is not None and p.model.backend == "onnxruntime"
    good = p.partition_task(Task("good", 10**6, 0.5))
    assert good.source == "model" and good.model_version == "0.0.1"
    with caplog.at_level(logging.WARNING, logger="itp"):
        ds = [p.partition_task(Task(f"bad{i}", 10**6, RAISING_PRIORITY)) for i in range(3)]
    assert all(d.source == "heuristic" for d in ds)
    m = p.get_metrics()
    assert m.faults_by_cause["inference_error"] == 3 and m.fallback_count == 3
    assert m.faults_by_cause["nan_output"] == 0
    assert sum("inference failed" in r.getMessage() for r in caplog.records) == 1


def test_default_model_absent_falls_back_cleanly() -> None:
    from itp.partitioner import default_model_path

    p = TaskPartitioner(clock=lambda: 1.0)
    d = p.partition_task(Task("x", 1000, 0.5))
    if default_model_path().is_file():
        assert d.source == "model"
    else:
        assert d.source == "heuristic"
        assert p.get_metrics().faults_by_cause["load"] == 1


# -------------------------------------------------------------------------------- model paths


def test_onnxruntime_served_model_decides_by_argmax(tmp_path: Path) -> None:
    path = write_raising_model(tmp_path / "ort.onnx", seed=4)
    p = make(path)
    ort = load_model(path, allow_native=False)
    for i in range(20):
        size = 1000 + 7919 * i**3
        d = p.partition_task(Task(f"t{i}", size, 0.4))
        q = ort.q_values(itp.normalize_state(raw_state(size, 0.4)))
        assert d.action == int(np.argmax(q)) and d.source == "model"


def test_native_model_matches_reference_argmax(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.onnx", seed=5, version="2.1.0")
    p = make(path)
    ort = load_model(path, allow_native=False)
    for i in range(20):
        size = 1000 + 7919 * i**3
        d = p.partition_task(Task(f"t{i}", size, 0.7))
        q = ort.q_values(itp.normalize_state(raw_state(size, 0.7)))
        assert d.action == int(np.argmax(q)) and d.model_version == "2.1.0"
        # confidence is softmax(Q)[action]
        e = np.exp(q.astype(np.float64) - q.max())
        assert d.confidence == pytest.approx(e[d.action] / e.sum(), rel=1e-4)


@pytest.mark.statistical
def test_epsilon_greedy_explores_at_the_configured_rate(tmp_path: Path) -> None:
    """Binomial check (n=4000, eps=0.25): |k - n eps| < 4.5 sd, false-alarm rate ~7e-6 with seed 11."""
    p = make(write_model(tmp_path / "m.onnx"), epsilon=0.25, seed=11)
    n = 4000
    ds = [p.partition_task(Task(f"t{i}", 10**7, 0.5)) for i in range(n)]
    k = sum(d.source == "explore" for d in ds)
    sd = math.sqrt(n * 0.25 * 0.75)
    assert abs(k - n * 0.25) < 4.5 * sd
    explored = [d.action for d in ds if d.source == "explore"]
    assert len(set(explored)) == 15  # every action is reachable


@pytest.mark.statistical
def test_canary_share_routes_decisions(tmp_path: Path) -> None:
    """Binomial check of the canary share (n=4000, s=0.3, 4.5 sd, false-alarm rate ~7e-6)."""
    p = make(write_model(tmp_path / "cur.onnx", version="1.0.0"))
    cand = load_model(write_model(tmp_path / "cand.onnx", seed=9, version="1.1.0"))
    p.set_candidate(cand, 0.3)
    n = 4000
    ds = [p.partition_task(Task(f"t{i}", 10**7, 0.5)) for i in range(n)]
    k = sum(d.model_version == "1.1.0" for d in ds)
    assert abs(k - 0.3 * n) < 4.5 * math.sqrt(n * 0.3 * 0.7)
    records: list[object] = []
    p.add_outcome_listener(records.append)
    for d in ds[:200]:
        p.report_outcome(d.task_id, d, throughput_bps=1e8, latency_s=0.5, success=True)
    arms = {r.arm for r in records}  # type: ignore[attr-defined]
    assert arms == {"current", "candidate"}
    assert p.get_metrics().outcomes_by_arm["candidate"] == sum(d.model_version == "1.1.0" for d in ds[:200])
    p.promote_candidate()
    assert p.model is cand and p.candidate is None and p.canary_share == 0.0
    assert p.partition_task(Task("after", 10**7, 0.5)).model_version == "1.1.0"


# -------------------------------------------------------------------------------- evaluation


def test_evaluate_is_greedy_deterministic_and_leaves_live_state_alone(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.onnx", seed=2)
    cfg = SimConfig(tasks_per_episode=16)
    p = make(path, epsilon=0.3, seed=5)
    twin = make(path, epsilon=0.3, seed=5)
    p.partition_task(Task("pending", 10**6, 0.5))
    twin.partition_task(Task("pending", 10**6, 0.5))
    before = live_state(p)
    r1 = p.evaluate(3, seed=1, config=cfg)
    r2 = p.evaluate(3, seed=1, config=cfg)
    assert live_state(p) == before
    assert r1.as_dict() == r2.as_dict()
    assert r1.episodes == 3 and r1.tasks == 48 and r1.model_version == "0.0.1"
    assert math.isfinite(r1.mean_reward) and 0.0 <= r1.success_rate <= 1.0
    assert r1.p50_completion_time_s <= r1.p95_completion_time_s
    assert r1.fallback_decisions == 0
    # Exploration draws were not consumed: the next live decisions equal the twin's.
    for i in range(50):
        a = p.partition_task(Task(f"n{i}", 10**6 + i, 0.5))
        b = twin.partition_task(Task(f"n{i}", 10**6 + i, 0.5))
        assert (a.action, a.source) == (b.action, b.source)


def test_evaluate_heuristic_and_baselines() -> None:
    p = make()
    r = p.evaluate(2, seed=3, config=SimConfig(tasks_per_episode=8), baselines=("round-robin",))
    assert r.policy == "heuristic" and r.model_version is None
    assert {row.name for row in r.table.rows} == {"heuristic", "round-robin"}
    with pytest.raises(ValueError, match="episodes"):
        p.evaluate(0)


# ------------------------------------------------------------------------------- concurrency


@pytest.mark.slow
def test_threads_16x50k_metrics_add_up_and_no_transition_lost_or_duplicated(tmp_path: Path) -> None:
    """16 threads x 50k decide+report (plus stream updates), a concurrent drainer; every transition
    carries a unique id in its priority feature (uid / 2**20, exact in float32)."""
    n_threads, per_thread = 16, 50_000
    total = n_threads * per_thread
    assert total < 2**20
    p = make(write_model(tmp_path / "m.onnx"), epsilon=0.1, ring_capacity=1 << 16)
    errors: list[BaseException] = []
    expected: list[dict[int, tuple[int, float]]] = [{} for _ in range(n_threads)]
    successes = [0] * n_threads

    def worker(k: int) -> None:
        try:
            mine = expected[k]
            for i in range(per_thread):
                uid = k * per_thread + i
                tid = f"{k}-{i}"
                d = p.partition_task(Task(tid, 1 + (uid * 7919) % (1 << 32), uid / 2**20))
                ok = i % 4 != 0
                r = p.report_outcome(tid, d, throughput_bps=1e8, latency_s=0.05, success=ok)
                mine[uid] = (d.action, r)
                successes[k] += ok
                if i % 500 == 0:
                    p.update_stream(
                        k % 4, bandwidth_bps=1e8 + i, latency_s=0.01, congestion=0.1, success_rate=0.9
                    )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    drained_ids: list[np.ndarray] = []
    drained_actions: list[np.ndarray] = []
    drained_rewards: list[np.ndarray] = []
    stop = threading.Event()

    def drainer() -> None:
        while True:
            done = stop.is_set()
            batch = p.ring.drain(8192)
            if len(batch):
                drained_ids.append(np.rint(batch.states[:, 18].astype(np.float64) * 2**20).astype(np.int64))
                drained_actions.append(batch.actions)
                drained_rewards.append(batch.rewards)
            elif done:
                return

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
    m = p.get_metrics()
    assert m.total_decisions == total == sum(m.decisions_by_source.values())
    assert m.reported_outcomes == total
    assert m.successful_tasks == sum(successes) == total - n_threads * (per_thread // 4)
    assert m.outstanding_decisions == 0 and m.expired_decisions == 0
    assert m.pushed_transitions + m.dropped_transitions == total
    ids = np.concatenate(drained_ids)
    assert len(ids) == m.pushed_transitions == p.ring.drained
    assert len(np.unique(ids)) == len(ids)  # no duplicates
    truth = {uid: ar for part in expected for uid, ar in part.items()}
    assert len(truth) == total
    actions = np.concatenate(drained_actions)
    rewards = np.concatenate(drained_rewards)
    for uid, a, r in zip(ids.tolist(), actions.tolist(), rewards.tolist(), strict=False):
        assert truth[uid][0] == a and r == pytest.approx(truth[uid][1], rel=1e-6, abs=1e-6)
    reward_sum = sum(r for _, r in truth.values())
    assert m.avg_reward * total == pytest.approx(reward_sum, rel=1e-9)
    if m.dropped_transitions == 0:
        assert set(ids.tolist()) == set(truth)


def test_expiry_frees_memory_and_refuses_late_reports() -> None:
    now = [0.0]
    p = make(decision_ttl_s=2.0, monotonic=lambda: now[0])
    ds = [p.partition_task(Task(f"t{i}", 1000, 0.5)) for i in range(100)]
    now[0] = 1.0
    fresh = p.partition_task(Task("fresh", 1000, 0.5))
    now[0] = 2.5
    assert p.expire_decisions() == 100
    assert p.get_metrics().outstanding_decisions == 1
    with pytest.raises(ValueError, match="expired"):
        p.report_outcome("t0", ds[0], throughput_bps=1e8, latency_s=0.1, success=True)
    p.report_outcome("fresh", fresh, throughput_bps=1e8, latency_s=0.1, success=True)
    assert len(p._pending) == 0
    assert p.get_metrics().expired_decisions == 100
