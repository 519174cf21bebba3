"""Decision-path latency of TaskPartitioner and where the time goes.

Run: ``pytest bench/bench_partitioner.py --benchmark-only`` (the README cites the figures).

Besides pytest-benchmark's statistics (rounds of many calls), each test times >= 100k single calls with
``perf_counter_ns`` and stores p50/p99 in microseconds in ``benchmark.extra_info`` (printed at the end of
the run), since tail latency per call is what a caller on the data path sees. The breakdown measures each
stage alone from Python: normalise (native), model forward (native fused MLP / ORT), decode+split
(native), the whole native decision (``DecisionEngine.decide``), and ``partition_task``; Python overhead
is partition_task minus the native decision.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from model_factory import write_model
from partitioner_data import N_CALLS, make_partitioner, summary_us, tasks

import itp
from itp import _native
from itp.partitioner import TaskPartitioner


def percentiles_us(fn: Callable[[int], Any], n: int = N_CALLS) -> dict[str, float]:
    """p50/p99/mean in microseconds over n single calls of fn(i)."""
    samples = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        fn(i)
        samples[i] = clock() - t0
    return summary_us(samples)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundled = Path(itp.__file__).parent / "models" / "dqn_v1.onnx"
    if bundled.is_file():
        return bundled
    return write_model(tmp_path_factory.mktemp("bench") / "qnet.onnx", seed=0)


def make(model: Path | None, ttl_s: float = 1e9) -> TaskPartitioner:
    return make_partitioner(model, ttl_s=ttl_s)



def _single(benchmark: Any, model: Path | None, prefix: str) -> None:
    p = make(model)
    gen = tasks(prefix)

    # Bounded pending table: report every decision so memory stays flat over 100k+ calls.
    def decide_and_report(_: int) -> None:
        t = next(gen)
        d = p.partition_task(t)
        p.report_outcome(t.id, d, throughput_bps=5e8, latency_s=0.2, success=True)

    def decide_only(_: int) -> None:
        t = next(gen)
        p.partition_task(t)
        p._pending.popitem(last=False)  # keep the table small; not part of the timed decision cost

    benchmark.extra_info.update({f"decision_{k}": v for k, v in percentiles_us(decide_only).items()})
    d = benchmark(lambda: p.partition_task(next(gen)))
    assert sum(d.chunk_sizes) > 0
    expected = "heuristic" if model is None else "model"
    assert d.source == expected
    benchmark.extra_info.update(
        {f"decide_and_report_{k}": v for k, v in percentiles_us(decide_and_report, 20_000).items()}
    )


@pytest.mark.benchmark(group="partition_task")
def test_partition_task_model(benchmark: Any, model_file: Path) -> None:
    _single(benchmark, model_file, "m")


@pytest.mark.benchmark(group="partition_task")
def test_partition_task_heuristic(benchmark: Any) -> None:
    _single(benchmark, None, "h")


@pytest.mark.benchmark(group="partition_task")
def test_partition_task_onnxruntime(benchmark: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A model that is not a plain chain: served by ONNX Runtime (thread-local I/O binding)."""
    from model_factory import write_raising_model

    _single(benchmark, write_raising_model(tmp_path_factory.mktemp("ort") / "ort.onnx"), "o")


@pytest.mark.benchmark(group="partition_tasks_256")
def test_partition_tasks_batch(benchmark: Any, model_file: Path) -> None:
    p = make(model_file)
    gen = tasks("b")

    def run() -> list[Any]:
        ds = p.partition_tasks([next(gen) for _ in range(256)])
        p._pending.clear()
        return ds

    ds = benchmark(run)
    assert len(ds) == 256 and all(d.source == "model" for d in ds)
    benchmark.extra_info["decisions_per_s"] = 256 / benchmark.stats.stats.median


@pytest.mark.benchmark(group="report_outcome")
def test_report_outcome(benchmark: Any) -> None:
    p = make(None)
    gen = tasks("r")
    pending = [(t.id, p.partition_task(t)) for t in (next(gen) for _ in range(N_CALLS + 200_000))]
    it = iter(pending)

    def report(_: int = 0) -> float:
        tid, d = next(it)
        return p.report_outcome(tid, d, throughput_bps=5e8, latency_s=0.2, success=True)

    benchmark.extra_info.update(percentiles_us(report))
    p.ring.drain(1 << 20)
    r = benchmark.pedantic(report, rounds=50_000, iterations=1)
    assert np.isfinite(r)


@pytest.mark.benchmark(group="breakdown")
def test_breakdown(benchmark: Any, model_file: Path) -> None:
    """Each stage alone, from Python, p50/p99 over 100k calls."""
    from itp.model_loading import load_model

    p = make(model_file)
    m = load_model(model_file)
    engine = p._engine
    raw = engine.snapshot(1e8, 0.5, 12.0)
    state = _native.normalize_state(raw)
    info = benchmark.extra_info
    gen = tasks("o")
    task = next(gen)

    def whole(_: int) -> None:
        p.partition_task(task)
        p._pending.clear()

    stages = {
        "normalize": lambda _: _native.normalize_state(raw),
        "forward_native": lambda _: m.q_values(state),
        "decode_split": lambda _: _native.production_split(raw, 14),
        "engine_decide_model": lambda _: engine.decide(task.size, 0.5, 12.0, True, None),
        "partition_task": whole,
    }
    for name, fn in stages.items():
        info.update({f"{name}_{k}": v for k, v in percentiles_us(fn).items() if k != "calls"})
    # Python overhead: what partition_task adds around the native decision (validation, pending table,
    # Decision object).
    info["python_overhead_p50_us"] = info["partition_task_p50_us"] - info["engine_decide_model_p50_us"]
    ort = load_model(model_file, allow_native=False)
    info.update(
        {
            f"forward_ort_{k}": v
            for k, v in percentiles_us(lambda _: ort.q_values(state), 20_000).items()
            if k != "calls"
        }
    )
    out = benchmark(lambda: engine.decide(task.size, 0.5, 12.0, True, None))
    assert 0 <= out[0] < 15
