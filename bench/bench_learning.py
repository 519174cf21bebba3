"""Decision latency while the online learner drains, stores and retrains (issue: lifecycle).

Run: ``pytest bench/bench_learning.py --benchmark-only`` (the README cites the figures).

Each test times ``partition_task`` alone over >= 100k calls (p50/p99 in ``benchmark.extra_info``), with
every decision reported in between, untimed, so the learner thread has real traffic to drain and commit:

* ``idle``: no learner attached (the baseline);
* ``learner``: learner attached (ring drained every 50 ms, SQLite commit every second), no training;
* ``training_process``: a retrain running in a separate process (niced, one torch thread) throughout the
  measurement (the default mode);
* ``training_thread``: the same retrain in a niced thread of this process (it competes for the GIL).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from model_factory import write_model
from partitioner_data import N_CALLS, make_partitioner, summary_us, tasks

from itp.learning import GateConfig, LearnerConfig, OnlineLearner
from itp.partitioner import Task, TaskPartitioner

#: A retrain long enough to outlast the measurement (it is cancelled at close).
LONG_FINETUNE = {"steps": 200_000, "batch_size": 64, "sim_episodes": 2, "sim_tasks_per_episode": 16}


def make(model: Path) -> TaskPartitioner:
    return make_partitioner(model, ring_capacity=1 << 16)



def measure(p: TaskPartitioner, prefix: str, n: int = N_CALLS) -> dict[str, float]:
    """p50/p99/mean (us) of partition_task over n calls; every decision is reported, untimed."""
    gen = tasks(prefix)
    samples = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(n):
        t = next(gen)
        t0 = clock()
        d = p.partition_task(t)
        samples[i] = clock() - t0
        p.report_outcome(t.id, d, throughput_bps=5e8, latency_s=0.2, success=True)
    return summary_us(samples)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("bench") / "qnet.onnx", seed=0, version="1.0.0")


def _learner(p: TaskPartitioner, root: Path, mode: str) -> OnlineLearner:
    cfg = LearnerConfig(
        min_experiences=10**12, retrain_mode=mode, finetune=LONG_FINETUNE, gate=GateConfig(episodes=1)
    )
    return OnlineLearner(p, registry=root, config=cfg)


def _run(benchmark: Any, p: TaskPartitioner, prefix: str, learner: OnlineLearner | None) -> None:
    info = benchmark.extra_info
    info.update(measure(p, prefix))
    if learner is not None:
        info["still_training_at_end"] = learner.is_training
        info["stored_transitions"] = len(learner.store)
    gen = tasks(prefix + "b")

    def one() -> Any:
        t = next(gen)
        d = p.partition_task(t)
        p.report_outcome(t.id, d, throughput_bps=5e8, latency_s=0.2, success=True)
        return d

    d = benchmark(one)
    assert d.source == "model"


@pytest.mark.benchmark(group="decision_while_learning")
def test_idle(benchmark: Any, model_file: Path) -> None:
    _run(benchmark, make(model_file), "i", None)


@pytest.mark.benchmark(group="decision_while_learning")
def test_learner(benchmark: Any, model_file: Path, tmp_path: Path) -> None:
    p = make(model_file)
    with _learner(p, tmp_path / "models", "process") as learner:
        _run(benchmark, p, "l", learner)


@pytest.mark.parametrize("mode", ["process", "thread"])
@pytest.mark.benchmark(group="decision_while_learning")
def test_training(benchmark: Any, model_file: Path, tmp_path: Path, mode: str) -> None:
    p = make(model_file)
    with _learner(p, tmp_path / "models", mode) as learner:
        for i in range(500):
            d = p.partition_task(Task(f"w{i}", 10**6, 0.5))
            p.report_outcome(d.task_id, d, throughput_bps=5e8, latency_s=0.2, success=True)
        learner.flush()
        p.force_model_update()
        deadline = time.monotonic() + 60
        while not learner.is_training and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(6.0)  # past torch's import and the rollouts: the gradient loop is running
        assert learner.is_training
        _run(benchmark, p, "t" + mode, learner)
        assert benchmark.extra_info["still_training_at_end"]
