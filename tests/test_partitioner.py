"""TaskPartitioner: the public contract, bad input, faults, expiry, and real-thread concurrency."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
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
from itp import DEFAULT_TRANSPORT_PARAMS, ChunkOutcome, TransportParams, _native
from itp.calibration import TransportCalibrator, chunk_time_s
from itp.heuristic import heuristic_action
from itp.model_loading import load_model
from itp.model_metadata import metadata_path_for
from itp.partitioner import Decision, Task, TaskPartitioner
from itp.sim import SimConfig
from itp.sim.prediction import prediction_errors
from itp.transport import production_split as split_with_params

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


# ------------------------------------------------------------------------- transport parameters

WARM = TransportParams(0.5, 2.0**30, 0.8)


def _raw_of(p: TaskPartitioner, size: int, priority: float = 0.5, hour: float = 12.0) -> np.ndarray:
    raw = np.zeros(20)
    for i in range(4):
        raw[i], raw[4 + i], raw[8 + i], raw[12 + i] = p.get_stream(i)
    raw[16], raw[17], raw[18], raw[19] = p.queue_depth, size, priority, hour
    return raw


def _fed(p: TaskPartitioner) -> TaskPartitioner:
    for i, (bw, lat, cong, ok) in enumerate(STREAMS):
        p.update_stream(i, bandwidth_bps=bw, latency_s=lat, congestion=cong, success_rate=ok)
    return p


def test_transport_params_round_trip_and_reach_split_heuristic_and_expected_time() -> None:
    p = _fed(TaskPartitioner(None, clock=lambda: 12.0))
    assert p.transport_params() == (DEFAULT_TRANSPORT_PARAMS,) * 4
    per_stream = (WARM, TransportParams(1.0, 1e6, 1.2), DEFAULT_TRANSPORT_PARAMS,
                  TransportParams(3.0, 2e4, 0.5))
    p.set_transport_params(per_stream)
    assert p.transport_params() == per_stream
    assert p.get_metrics().transport_params == [q.as_dict() for q in per_stream]
    for k, size in enumerate((64 * 1024, 4 << 20, 256 << 20)):
        d = p.partition_task(Task(f"h{k}", size))
        raw = _raw_of(p, size)
        assert d.action == heuristic_action(raw, per_stream)
        want = split_with_params(raw, d.action, per_stream)
        assert d.bytes_per_stream == want.chunk_bytes
        assert d.expected_time == want.expected_time_s
    p.set_transport_params(WARM)
    assert p.transport_params() == (WARM,) * 4


def test_model_path_splits_with_the_params() -> None:
    p = _fed(TaskPartitioner(clock=lambda: 12.0))  # the bundled model, served natively
    assert p.model is not None
    p.set_transport_params(WARM)
    for k, size in enumerate((64 * 1024, 4 << 20, 256 << 20)):
        d = p.partition_task(Task(f"m{k}", size))
        assert d.source == "model"
        want = split_with_params(_raw_of(p, size), d.action, WARM)
        assert (d.bytes_per_stream, d.expected_time) == (want.chunk_bytes, want.expected_time_s)
    arrays = p.partition_arrays(["a0", "a1"], [1 << 20, 1 << 28], [0.5, 0.5])
    for k, size in enumerate((1 << 20, 1 << 28)):
        want = split_with_params(_raw_of(p, size), int(arrays.actions[k]), WARM)
        assert tuple(int(c) for c in arrays.chunk_bytes[k]) == want.chunk_bytes


@pytest.mark.parametrize(
    ("params", "exc", "match"),
    [
        (None, TypeError, "params must be a TransportParams or a sequence of 4, got None"),
        ((2.0, 1e5, 1.0), TypeError, r"params\[0\] must be a TransportParams, got float"),
        ([DEFAULT_TRANSPORT_PARAMS] * 3, ValueError, r"one TransportParams per stream \(4\), got 3"),
        ("warm", TypeError, "params must be a TransportParams, a sequence of 4, or None, got str"),
    ],
)
def test_bad_transport_params_change_nothing(params: object, exc: type[Exception], match: str) -> None:
    p = TaskPartitioner(None)
    p.set_transport_params(WARM)
    with pytest.raises(exc, match=match):
        p.set_transport_params(params)  # type: ignore[arg-type]
    assert p.transport_params() == (WARM,) * 4
    with pytest.raises(ValueError, match=r"TransportParams\.efficiency must be >= 0 \(efficiency > 0\)"):
        TransportParams(2.0, 1e5, 0.0)


def test_calibration_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="calibration_interval must be an int >= 1, got 0"):
        TaskPartitioner(None, calibrate_transport=True, calibration_interval=0)
    with pytest.raises(ValueError, match="calibrate_transport must observe 4 streams, got 2"):
        TaskPartitioner(None, calibrate_transport=TransportCalibrator(2))
    with pytest.raises(TypeError, match="calibrate_transport must be a bool or a TransportCalibrator"):
        TaskPartitioner(None, calibrate_transport="yes")  # type: ignore[arg-type]
    p = TaskPartitioner(None)
    assert p.calibrator is None and p.get_metrics().transport_calibration == {}
    with pytest.raises(RuntimeError, match="no calibrator"):
        p.recalibrate()


def _chunks_of(d: Decision, seconds: float = 0.1) -> list[ChunkOutcome]:
    return [ChunkOutcome(s, c, seconds) for s, c in zip(d.stream_ids, d.chunk_sizes, strict=True)]


def _three_streams(p: TaskPartitioner) -> TaskPartitioner:
    """Three equal healthy streams and a dead one: a 100 MiB task uses exactly streams 0, 1, 2."""
    for i in range(3):
        p.update_stream(i, bandwidth_bps=5e8, latency_s=0.02)
    p.update_stream(3, bandwidth_bps=0.0, latency_s=0.02)
    return p


def test_chunk_outcomes_are_validated_and_a_bad_one_changes_nothing() -> None:
    seen: list[itp.OutcomeRecord] = []
    p = _three_streams(TaskPartitioner(None, calibrate_transport=True))
    p.add_outcome_listener(seen.append)
    d = p.partition_task(Task("t", 100 << 20))
    assert d.stream_ids == (0, 1, 2)
    unused = next(i for i in range(4) if i not in d.stream_ids)
    first, second = d.stream_ids[0], d.stream_ids[1]
    half = d.bytes_per_stream[first] // 2
    bad = [
        ([ChunkOutcome(unused, 10, 0.1)], ValueError, rf"chunks\[0\]\.stream_id {unused} is not used"),
        (_chunks_of(d)[:-1], ValueError, r"chunks on stream \d sum to 0 bytes, the decision put \d+ there"),
        ([*_chunks_of(d), ChunkOutcome(first, 1, 0.1)], ValueError, rf"chunks on stream {first} sum to"),
        ([(first, 1, 0.1)], TypeError, r"chunks\[0\] must be a ChunkOutcome, got tuple"),
        ("abc", TypeError, "chunks must be a sequence of ChunkOutcome or None, got str"),
    ]
    for chunks, exc, match in bad:
        with pytest.raises(exc, match=match):
            p.report_outcome("t", d, throughput_bps=1e8, latency_s=0.5, success=True, chunks=chunks)  # type: ignore[arg-type]
    assert p.calibrator is not None and p.calibrator.observation_count() == 0
    assert p.get_metrics().reported_outcomes == 0
    with pytest.raises(ValueError, match=r"ChunkOutcome\.seconds must be finite and > 0, got nan"):
        ChunkOutcome(0, 10, math.nan)
    with pytest.raises(ValueError, match=r"ChunkOutcome\.stream_id must be in 0\.\.3, got 4"):
        ChunkOutcome(4, 10, 1.0)
    with pytest.raises(TypeError, match=r"ChunkOutcome\.retries must be an int, got float"):
        ChunkOutcome(0, 10, 1.0, 0.5)  # type: ignore[arg-type]
    # A stream's share in two chunks, and a failed task reporting only what arrived, are accepted.
    rest = d.bytes_per_stream[first] - half
    ok = [ChunkOutcome(first, half, 0.05), ChunkOutcome(first, rest, 0.06, retries=1)]
    ok += [c for c in _chunks_of(d) if c.stream_id != first]
    p.report_outcome("t", d, throughput_bps=1e8, latency_s=0.5, success=True, chunks=ok)
    assert p.calibrator.observation_count() == len(ok)
    assert seen[-1].chunks == tuple(ok)
    d2 = p.partition_task(Task("u", 100 << 20))
    partial = [ChunkOutcome(second, 1000, 0.05)]
    p.report_outcome("u", d2, throughput_bps=0.0, latency_s=0.5, success=False, chunks=partial)
    assert seen[-1].chunks == tuple(partial)
    assert p.calibrator.observation_count() == len(ok) + 1


def test_chunks_in_report_outcomes() -> None:
    seen: list[itp.OutcomeRecord] = []
    p = _three_streams(TaskPartitioner(None, calibrate_transport=True))
    p.add_outcome_listener(seen.append)
    ds = p.partition_tasks([Task(f"b{k}", 100 << 20) for k in range(3)])
    ids = [d.task_id for d in ds]
    args = dict(throughput_bps=[1e8] * 3, latency_s=[0.5] * 3, success=np.array([True] * 3))
    with pytest.raises(ValueError, match="chunks need decisions"):
        p.report_outcomes(ids, None, chunks=[None] * 3, **args)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"chunks\[1\]: the chunks on stream"):
        p.report_outcomes(ids, ds, chunks=[None, _chunks_of(ds[1])[:1], None], **args)  # type: ignore[arg-type]
    assert p.get_metrics().reported_outcomes == 0
    p.report_outcomes(ids, ds, chunks=[_chunks_of(ds[0]), None, _chunks_of(ds[2])], **args)  # type: ignore[arg-type]
    assert p.calibrator is not None
    assert p.calibrator.observation_count() == len(ds[0].stream_ids) + len(ds[2].stream_ids)
    assert [r.chunks for r in seen] == [tuple(_chunks_of(ds[0])), (), tuple(_chunks_of(ds[2]))]


def _random_table(p: TaskPartitioner, rng: np.random.Generator) -> None:
    for i in range(4):
        p.update_stream(i, bandwidth_bps=float(10 ** rng.uniform(7, 9.3)),
                        latency_s=float(10 ** rng.uniform(-2.3, -0.8)), congestion=0.1, success_rate=1.0)


def test_known_params_are_recovered_through_the_partitioner_and_pushed_into_the_core() -> None:
    """Chunk timings generated from known per-stream parameters (plus 5 % noise) are reported with the
    decisions; the fit pushed into the core predicts them and recovers the parameters."""
    truth = (TransportParams(0.5, 1e6, 0.8), TransportParams(0.5, 1e6, 0.8),
             TransportParams(1.0, 4e5, 0.6), TransportParams(0.5, 1e6, 0.8))
    rng = np.random.default_rng(5)
    p = TaskPartitioner(None, calibrate_transport=TransportCalibrator(prior_strength=10.0),
                        calibration_interval=10**9, monotonic=lambda: 100.0)
    for k in range(400):
        _random_table(p, rng)
        d = p.partition_task(Task(f"k{k}", int(2 ** rng.uniform(15, 28))))
        chunks = []
        for s, c in zip(d.stream_ids, d.chunk_sizes, strict=True):
            bw, rtt, _, ok = p.get_stream(s)
            t = float(chunk_time_s(8.0 * c, bw * ok, rtt, truth[s])) * float(rng.lognormal(0.0, 0.05))
            chunks.append(ChunkOutcome(s, c, t))
        p.report_outcome(f"k{k}", d, throughput_bps=1e8, latency_s=max(c.seconds for c in chunks),
                         success=True, chunks=chunks)
    assert p.transport_params() == (DEFAULT_TRANSPORT_PARAMS,) * 4  # nothing pushed before a fit
    pushed = p.recalibrate()
    assert p.transport_params() == pushed
    for s in (0, 2):
        got, want = pushed[s], truth[s]
        assert got.setup_rtts == pytest.approx(want.setup_rtts, abs=0.3)
        assert got.efficiency == pytest.approx(want.efficiency, rel=0.08)
        assert 0.5 < got.initial_window_bits / want.initial_window_bits < 2.0
    err = p.get_metrics().transport_calibration
    assert err["fits"] == 1
    assert err["fitted_error"] < 0.06 < 0.3 < err["default_error"]


def test_background_thread_refits_every_interval_and_close_stops_it() -> None:
    rng = np.random.default_rng(2)
    p = TaskPartitioner(None, calibrate_transport=True, calibration_interval=40)
    for k in range(30):
        _random_table(p, rng)
        d = p.partition_task(Task(f"k{k}", int(2 ** rng.uniform(16, 26))))
        chunks = []
        for s, c in zip(d.stream_ids, d.chunk_sizes, strict=True):
            bw, rtt, _, _ = p.get_stream(s)
            chunks.append(ChunkOutcome(s, c, float(chunk_time_s(8.0 * c, bw, rtt, WARM))))
        p.report_outcome(f"k{k}", d, throughput_bps=1e8, latency_s=1.0, success=True, chunks=chunks)
    deadline = time.monotonic() + 30.0
    while p.get_metrics().transport_calibration["fits"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.get_metrics().transport_calibration["fits"] >= 1
    assert p.transport_params() != (DEFAULT_TRANSPORT_PARAMS,) * 4
    assert [t for t in threading.enumerate() if t.name == "itp-transport-calibration"]
    p.close()
    p.close()
    assert not [t for t in threading.enumerate() if t.name == "itp-transport-calibration" and t.is_alive()]


@pytest.mark.parametrize(
    "config",
    [
        SimConfig(slow_start=False, setup_rtts=0.5, loss_base=0.0, hazard_base_per_s=0.0,
                  loss_congestion=0.0, hazard_congestion_per_s=0.0),
        SimConfig(stream_efficiency=0.8, setup_rtts=0.5, loss_base=0.0, hazard_base_per_s=0.0,
                  loss_congestion=0.0, hazard_congestion_per_s=0.0),
    ],
    ids=["warm-no-slow-start", "restart-efficiency-0.8"],
)
def test_prediction_error_falls_as_outcomes_arrive_on_other_physics(config: SimConfig) -> None:
    """Same network, same tasks: calibration off vs on. The first 50 tasks are identical (no fit yet);
    over the last 150 the calibrated partitioner's own expected_time is far closer to the measured time."""
    off = prediction_errors(config, calibrate=False, n_tasks=300, seed=11)
    on = prediction_errors(config, calibrate=True, n_tasks=300, seed=11)
    assert off[:50] == on[:50]
    late_off, late_on = float(np.median(off[150:])), float(np.median(on[150:]))
    assert late_on < 0.5 * late_off
    assert late_on < float(np.median(on[:50]))


def test_params_set_from_one_thread_while_8_threads_decide_are_never_torn() -> None:
    """Every decision splits with one whole parameter set (A or B), never a mix of the two."""
    p = _fed(TaskPartitioner(None, clock=lambda: 12.0))
    a = (WARM, TransportParams(1.0, 1e6, 1.2), DEFAULT_TRANSPORT_PARAMS, TransportParams(3.0, 2e4, 0.5))
    b = tuple(reversed(a))
    sizes = [64 * 1024, 1 << 20, 32 << 20]
    want = {
        (size, which): {split_with_params(_raw_of(p, size), act, params)
                        for act in range(15)}
        for size in sizes for which, params in (("a", a), ("b", b))
    }
    stop = threading.Event()
    errors: list[str] = []
    sets = [0]

    def setter() -> None:
        while not stop.is_set():
            p.set_transport_params(a if sets[0] % 2 == 0 else b)
            sets[0] += 1

    def decider(t: int) -> None:
        for k in range(400):
            size = sizes[k % 3]
            d = p.partition_task(Task(f"{t}-{k}", size))
            split = itp.Split(d.bytes_per_stream, d.expected_time)
            if split not in want[(size, "a")] and split not in want[(size, "b")]:
                errors.append(f"{d} matches neither parameter set")
            p.report_outcome(d.task_id, d, throughput_bps=1e8, latency_s=0.5, success=True)

    s = threading.Thread(target=setter)
    s.start()
    threads = [threading.Thread(target=decider, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    s.join()
    assert errors == []
    assert sets[0] > 1
    m = p.get_metrics()
    assert m.total_decisions == m.reported_outcomes == 8 * 400


def test_decision_propensities_reach_the_ring() -> None:
    p = _fed(TaskPartitioner(epsilon=0.3, seed=4, clock=lambda: 12.0))
    decisions = [p.partition_task(Task(f"e{k}", 1 << 20)) for k in range(200)]
    for d in decisions:
        p.report_outcome(d.task_id, d, throughput_bps=1e8, latency_s=0.5, success=True)
    batch = p.ring.drain(1000)
    assert batch.propensities is not None
    want = np.array([d.propensity for d in decisions], dtype=np.float32)
    np.testing.assert_array_equal(batch.propensities, want)
    assert batch.actions.tolist() == [d.action for d in decisions]
    assert {round(float(x), 6) for x in want} == {round(0.7 + 0.3 / 15, 6), round(0.3 / 15, 6)}
    h = _fed(TaskPartitioner(None))
    d = h.partition_task(Task("h", 1 << 20))
    h.report_outcome("h", d, throughput_bps=1e8, latency_s=0.5, success=True)
    assert h.ring.drain(10).propensities.tolist() == [1.0]  # type: ignore[union-attr]


def test_outcome_records_carry_the_task_size() -> None:
    """Listeners (the canary compares its arms within size strata) get each task's size, bytes, from a
    single report, a batch with decisions and a batch of array-decided tasks alike."""
    seen: list[itp.OutcomeRecord] = []
    p = _three_streams(TaskPartitioner(None))
    p.add_outcome_listener(seen.append)
    d = p.partition_task(Task("one", 123_457))
    p.report_outcome("one", d, throughput_bps=1e8, latency_s=0.5, success=True)
    ds = p.partition_tasks([Task("b0", 1), Task("b1", 5 << 30)])
    p.report_outcomes(["b0", "b1"], ds, throughput_bps=[1e8] * 2, latency_s=[0.5] * 2,
                      success=np.array([True, False]))
    p.partition_arrays(["a0", "a1"], [777, 1 << 40], [0.5, 0.5])
    p.report_outcomes(["a0", "a1"], None, throughput_bps=[1e8] * 2, latency_s=[0.5] * 2,
                      success=np.array([True, True]))
    assert [r.size_bytes for r in seen] == [123_457, 1, 5 << 30, 777, 1 << 40]
