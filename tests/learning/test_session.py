"""LearningSession: the partitioner + learner + calibration kept in one folder across processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itp import ChunkOutcome, Task
from itp.learning.learner import LearnerConfig
from itp.learning.registry import ModelRegistry
from itp.learning.session import CALIBRATION_FILE, LearningSession, learning_config

NO_RETRAIN = LearnerConfig(retrain=False, flush_interval_s=0.05, poll_interval_s=0.01)


def _run(session: LearningSession, n: int, *, first: int = 0) -> None:
    """n decisions and their outcomes with per-chunk timings (4 healthy streams, warm-network timings)."""
    p = session.partitioner
    for i in range(4):
        p.update_stream(i, bandwidth_bps=2e8, latency_s=0.02)
    for k in range(first, first + n):
        size = (k % 7 + 1) << 20
        d = p.partition_task(Task(f"t{k}", size))
        chunks = [
            ChunkOutcome(s, c, 0.005 + 8.0 * c / 1.8e8)
            for s, c in zip(d.stream_ids, d.chunk_sizes, strict=True)
        ]
        seconds = max(c.seconds for c in chunks)
        p.report_outcome(d.task_id, d, throughput_bps=8.0 * size / seconds, latency_s=seconds,
                         success=True, chunks=chunks)


def test_a_second_session_continues_where_the_first_stopped(tmp_path: Path) -> None:
    folder = tmp_path / "dep"
    first = LearningSession(folder, config=NO_RETRAIN, seed=1)
    assert first.restored_observations == 0
    _run(first, 40)
    summary = first.close()
    assert summary["experience_count"] == 40
    assert summary["registry_current_version"] == ModelRegistry(folder).current_version()
    held = sum(summary["calibration"]["observations"])
    assert held > 40  # several chunks per task
    state = json.loads((folder / CALIBRATION_FILE).read_text())
    assert len(state["observations"]) == held
    assert first.close() == {}  # idempotent

    second = LearningSession(folder, config=NO_RETRAIN, seed=2)
    try:
        assert second.restored_observations == held
        # The restored observations were fitted at once: the split already uses warm-network physics.
        pooled = second.partitioner.calibrator.pooled_params  # type: ignore[union-attr]
        assert pooled.setup_rtts < 1.0 and pooled.efficiency == pytest.approx(0.9, rel=0.1)
        _run(second, 10, first=40)
    finally:
        summary = second.close()
    assert summary["experience_count"] == 50
    assert summary["restored_calibration_observations"] == held


def test_the_registry_version_serves_not_the_starting_model(tmp_path: Path) -> None:
    folder = tmp_path / "dep"
    LearningSession(folder, config=NO_RETRAIN).close()
    registry = ModelRegistry(folder)
    current = registry.current_version()
    assert current is not None
    model_file = next(folder.glob("*.onnx"))
    registry.publish(model_file, "9.9.9", note="a later version")
    registry.set_current("9.9.9", reason="test")
    s = LearningSession(folder, config=NO_RETRAIN)
    try:
        assert s.partitioner.model is not None and s.partitioner.model.version == "9.9.9"
    finally:
        s.close()


def test_a_corrupt_calibration_file_is_set_aside(tmp_path: Path) -> None:
    folder = tmp_path / "dep"
    folder.mkdir()
    (folder / CALIBRATION_FILE).write_text("{broken")
    s = LearningSession(folder, config=NO_RETRAIN)
    try:
        assert s.restored_observations == 0
        assert (folder / f"{CALIBRATION_FILE}.corrupt").read_text() == "{broken"
    finally:
        s.close()
    assert json.loads((folder / CALIBRATION_FILE).read_text())["observations"] == []


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"epsilon": 2.0}, ValueError, "epsilon"),
        ({"explore_top_k": 0}, ValueError, "explore_top_k"),
        ({"guard_exploration": 1}, TypeError, "guard_exploration"),
        ({"explore_max_bytes": 0}, ValueError, "explore_max_bytes"),
        ({"explore_max_bytes": 2.0}, TypeError, "explore_max_bytes"),
        ({"model_failures": 1}, TypeError, "model_failures"),
        ({"config": "fast"}, TypeError, "config must be a LearnerConfig"),
        ({"model_path": "/nonexistent/model.onnx"}, ValueError, "model_path"),
    ],
)
def test_bad_arguments_create_nothing(tmp_path: Path, kwargs: dict[str, object], exc: type[Exception],
                                      message: str) -> None:
    with pytest.raises(exc, match=message):
        LearningSession(tmp_path / "dep", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "dep").exists()


def test_learning_config() -> None:
    cfg = learning_config(250, seed=3)
    assert cfg.min_experiences == 250 and cfg.seed == 3
    assert cfg.canary.shares == (0.5, 1.0)
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match="retrain_every must be an int >= 1"):
            learning_config(bad)  # type: ignore[arg-type]
