"""Decision-path latency and throughput of TaskPartitioner (issue 14 targets) and where the time goes.

Run: ``pytest bench/bench_partitioner.py --benchmark-only --benchmark-json=bp.json``; the README cites the
``extra_info`` of each benchmark (``python bench/report.py bp.json`` prints the groups).

Latency: besides pytest-benchmark's statistics (rounds of calls), each latency test times >= 100k single
calls with ``perf_counter_ns`` and stores p50/p99 in microseconds in ``benchmark.extra_info``, since the
tail per call is what a caller on the data path sees. Tasks are built before timing (a caller already has
its task), and every decision timed is reported outside the timed region, so the pending table stays
small as in production.

* ``partition_task``: warm (back-to-back calls) for the natively served model, the heuristic and an ONNX
  Runtime model; ``cold_*``: the same with the caches evicted before every call (INFERENCE-NOTES.md: a
  decision comes once per task with other work in between) by writing one byte per cache line of a buffer
  of ``EVICT_BYTES`` (4x the last-level cache of the development VM) outside the timed region.
* ``report_outcome``: the native reward + ring push, timed alone.
* ``partition_tasks`` / ``partition_arrays``: batches of 256, decisions per second.
* ``threads``: aggregate decide+report throughput of 1, 2, 4, 8 and 16 caller threads (the curve is in
  ``extra_info``; on a machine with C cores it can only scale up to about C).
* ``*_before``: the same measurements through ``tests/reference_partitioner.py``, the Python bookkeeping
  this issue replaced (same engine, same machine, same run), as the "before" column.
* ``breakdown``: each stage alone from Python (normalise, native forward pass, split, the engine's
  decision), to show what is left above the native floor.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from model_factory import write_model
from partitioner_data import N_CALLS, make_partitioner, summary_us

import itp
from itp import _native
from itp.partitioner import Decision, Task

#: Bytes written between calls by the cold-cache benchmarks (the VM has an 8 MiB L3).
EVICT_BYTES = 32 << 20
BATCH = 256
THREAD_COUNTS = (1, 2, 4, 8, 16)
THREAD_CALLS = 200_000  # decide+report pairs per thread-count point, split over the threads


def task_list(prefix: str, n: int) -> list[Task]:
    """n tasks with unique ids and sizes spread over 64 KiB .. 4 GiB (built outside timing)."""
    return [Task(f"{prefix}{i}", 64 * 1024 + (i * 2654435761) % (4 * 2**30), 0.5) for i in range(n)]


def report(p: Any, d: Any) -> float:
    return p.report_outcome(d.task_id, d, throughput_bps=5e8, latency_s=0.2, success=True)


def percentiles_us(
    fn: Callable[[int], Any], n: int = N_CALLS, between: Callable[[int], Any] | None = None
) -> dict[str, float]:
    """p50/p99/mean in microseconds over n single calls of fn(i); between(i) runs untimed after each."""
    samples = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        fn(i)
        samples[i] = clock() - t0
        if between is not None:
            between(i)
    return summary_us(samples)


class Evictor:
    """Evicts the CPU caches by writing one byte per 64-byte line of a buffer larger than the LLC."""

    def __init__(self, nbytes: int = EVICT_BYTES) -> None:
        self.buf = np.zeros(nbytes, dtype=np.uint8)
        self.lines = self.buf[::64]
        self.k = 0

    def __call__(self, _: int = 0) -> None:
        self.k = (self.k + 1) & 0xFF
        self.lines[:] = self.k


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundled = Path(itp.__file__).parent / "models" / "dqn_v1.onnx"
    if bundled.is_file():
        return bundled
    return write_model(tmp_path_factory.mktemp("bench") / "qnet.onnx", seed=0)


@pytest.fixture(scope="module")
def ort_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that is not a plain chain: served by ONNX Runtime (thread-local I/O binding)."""
    from model_factory import write_raising_model

    return write_raising_model(tmp_path_factory.mktemp("ort") / "ort.onnx")


def reference_partitioner(model: Path | None) -> Any:
    """The pre-issue-14 Python bookkeeping (tests/reference_partitioner.py) with make_partitioner's set-up."""
    import reference_partitioner as ref
    from partitioner_data import STREAMS

    p = ref.TaskPartitioner(model, clock=lambda: 12.0, decision_ttl_s=1e9, ring_capacity=1 << 17)
    for i, (bw, lat, c, s) in enumerate(STREAMS):
        p.update_stream(i, bandwidth_bps=bw, latency_s=lat, congestion=c, success_rate=s)
    return p


def _latency(
    benchmark: Any, model: Path | None, prefix: str, expected: str, *, cold: bool, before: bool = False,
    guarded: bool = False, failures: bool = False,
) -> None:
    p = reference_partitioner(model) if before else make_partitioner(model)
    if guarded:
        # The decision guard (one heuristic pass per model decision) and guarded exploration's mask.
        p.guard_margin = 0.05
        p.guard_exploration = True
    if failures:
        # Failure models on every stream: the guard's scores charge each split its expected resend time.
        p.set_failure_models(np.array([[0.2, 0.05], [0.01, 0.002], [0.02, 0.003], [0.01, 0.001]]))
    n = N_CALLS // 5 if cold else N_CALLS  # an eviction costs ~1 ms: fewer calls, still >= 1000 in the 1 %
    tasks = task_list(prefix, n)
    last: list[Any] = []

    def decide(i: int) -> None:
        last.append(p.partition_task(tasks[i]))

    def settle(i: int) -> None:
        report(p, last.pop())
        if cold:
            evict()

    evict = Evictor()
    info = percentiles_us(decide, n, settle)
    benchmark.extra_info.update(info)
    benchmark.extra_info["cold_cache"] = cold
    p.ring.drain(1 << 20)
    more = iter(task_list(prefix + "b", 200_000))

    def one() -> Any:
        d = p.partition_task(next(more))
        report(p, d)
        return d

    d = benchmark.pedantic(
        one, rounds=20_000 if not cold else 2_000, iterations=1, setup=evict if cold else None
    )
    assert d.source == expected and sum(d.chunk_sizes) > 0
    assert p.get_metrics().outstanding_decisions == 0


@pytest.mark.benchmark(group="partition_task warm")
def test_partition_task_model(benchmark: Any, model_file: Path) -> None:
    _latency(benchmark, model_file, "m", "model", cold=False)


@pytest.mark.benchmark(group="partition_task warm")
def test_partition_task_model_guarded(benchmark: Any, model_file: Path) -> None:
    _latency(benchmark, model_file, "mg", "model", cold=False, guarded=True)


@pytest.mark.benchmark(group="partition_task warm")
def test_partition_task_model_guarded_failure_models(benchmark: Any, model_file: Path) -> None:
    _latency(benchmark, model_file, "mf", "model", cold=False, guarded=True, failures=True)


@pytest.mark.benchmark(group="partition_task warm")
def test_partition_task_heuristic(benchmark: Any) -> None:
    _latency(benchmark, None, "h", "heuristic", cold=False)


@pytest.mark.benchmark(group="partition_task warm")
def test_partition_task_onnxruntime(benchmark: Any, ort_file: Path) -> None:
    _latency(benchmark, ort_file, "o", "model", cold=False)


@pytest.mark.benchmark(group="partition_task warm")
def test_partition_task_model_before(benchmark: Any, model_file: Path) -> None:
    _latency(benchmark, model_file, "mb", "model", cold=False, before=True)


@pytest.mark.benchmark(group="partition_task warm")
def test_partition_task_heuristic_before(benchmark: Any) -> None:
    _latency(benchmark, None, "hb", "heuristic", cold=False, before=True)


@pytest.mark.benchmark(group="partition_task cold cache")
def test_partition_task_model_cold_before(benchmark: Any, model_file: Path) -> None:
    _latency(benchmark, model_file, "mcb", "model", cold=True, before=True)


@pytest.mark.benchmark(group="partition_task cold cache")
def test_partition_task_model_cold(benchmark: Any, model_file: Path) -> None:
    _latency(benchmark, model_file, "mc", "model", cold=True)


@pytest.mark.benchmark(group="partition_task cold cache")
def test_partition_task_heuristic_cold(benchmark: Any) -> None:
    _latency(benchmark, None, "hc", "heuristic", cold=True)


@pytest.mark.benchmark(group="report_outcome")
@pytest.mark.parametrize("before", [False, True], ids=["native", "before"])
def test_report_outcome(benchmark: Any, model_file: Path, before: bool) -> None:
    p = reference_partitioner(model_file) if before else make_partitioner(model_file)
    n = N_CALLS
    decided = [p.partition_task(t) for t in task_list("r", n + 30_000)]  # decided outside timing
    p.ring.drain(1 << 20)

    def one(i: int) -> float:
        return report(p, decided[i])

    def drain(i: int) -> None:
        if i % 50_000 == 0:
            p.ring.drain(1 << 20)  # the ring never fills: every push is a real push

    benchmark.extra_info.update(percentiles_us(one, n, drain))
    p.ring.drain(1 << 20)
    rest: Iterator[Any] = iter(decided[n:])
    r = benchmark.pedantic(lambda: report(p, next(rest)), rounds=25_000, iterations=1)
    assert np.isfinite(r) and p.get_metrics().reported_outcomes == n + 25_000


@pytest.mark.benchmark(group="partition_tasks 256")
@pytest.mark.parametrize("before", [False, True], ids=["native", "before"])
def test_partition_tasks_batch(benchmark: Any, model_file: Path, before: bool) -> None:
    p = reference_partitioner(model_file) if before else make_partitioner(model_file)
    batches = iter([task_list(f"b{k}-", BATCH) for k in range(3000)])

    def run() -> list[Any]:
        ds: list[Any] = p.partition_tasks(next(batches))
        return ds

    ds = benchmark.pedantic(run, rounds=2500, iterations=1)
    assert len(ds) == BATCH and all(d.source == "model" for d in ds)
    benchmark.extra_info["decisions_per_s"] = BATCH / benchmark.stats.stats.median


@pytest.mark.benchmark(group="partition_tasks 256")
def test_partition_arrays_batch(benchmark: Any, model_file: Path) -> None:
    p = make_partitioner(model_file)
    ids = iter([[f"a{k}-{i}" for i in range(BATCH)] for k in range(3000)])
    sizes = np.array([t.size for t in task_list("s", BATCH)], dtype=np.uint64)
    prios = np.full(BATCH, 0.5)

    def run() -> Any:
        return p.partition_arrays(next(ids), sizes, prios)

    out = benchmark.pedantic(run, rounds=2500, iterations=1)
    assert len(out) == BATCH and (out.sources == 0).all()
    assert (out.chunk_bytes.sum(axis=1) == sizes).all()
    benchmark.extra_info["decisions_per_s"] = BATCH / benchmark.stats.stats.median


@pytest.mark.benchmark(group="report_outcomes 256")
def test_report_outcomes_batch(benchmark: Any, model_file: Path) -> None:
    p = make_partitioner(model_file, ring_capacity=1 << 20)
    rounds = 1500
    batches = []
    sizes = np.array([t.size for t in task_list("s", BATCH)], dtype=np.uint64)
    for k in range(rounds + 10):
        ids = [f"o{k}-{i}" for i in range(BATCH)]
        p.partition_arrays(ids, sizes, np.full(BATCH, 0.5))
        batches.append(ids)
    it = iter(batches)
    thr, lat, ok = np.full(BATCH, 5e8), np.full(BATCH, 0.2), np.ones(BATCH, dtype=bool)

    def run() -> Any:
        return p.report_outcomes(next(it), None, throughput_bps=thr, latency_s=lat, success=ok)

    r = benchmark.pedantic(run, rounds=rounds, iterations=1)
    assert r.shape == (BATCH,) and np.isfinite(r).all()
    benchmark.extra_info["outcomes_per_s"] = BATCH / benchmark.stats.stats.median


@pytest.mark.benchmark(group="threads")
def test_threads_curve(benchmark: Any, model_file: Path) -> None:
    """Aggregate decide+report pairs per second with 1..16 caller threads (same total work per point)."""
    curve: dict[int, float] = {}

    def point(n_threads: int) -> float:
        p = make_partitioner(model_file, ring_capacity=1 << 20)
        per = THREAD_CALLS // n_threads
        lists = [task_list(f"{n_threads}-{k}-", per) for k in range(n_threads)]
        start = threading.Barrier(n_threads + 1)

        def worker(tasks: list[Task]) -> None:
            start.wait()
            for t in tasks:
                report(p, p.partition_task(t))

        threads = [threading.Thread(target=worker, args=(lst,)) for lst in lists]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        m = p.get_metrics()
        assert m.total_decisions == m.reported_outcomes == per * n_threads
        return per * n_threads / elapsed

    def run() -> dict[int, float]:
        for n in THREAD_COUNTS:
            curve[n] = point(n)
        return curve

    benchmark.pedantic(run, rounds=1, iterations=1)
    for n, rate in curve.items():
        benchmark.extra_info[f"threads_{n}_pairs_per_s"] = round(rate)
    assert all(rate > 0 for rate in curve.values())


@pytest.mark.benchmark(group="breakdown")
def test_breakdown(benchmark: Any, model_file: Path) -> None:
    """Each stage alone, from Python, p50/p99 over 100k calls."""
    from itp.model_loading import load_model

    p = make_partitioner(model_file)
    m = load_model(model_file)
    engine = p._engine
    raw = engine.snapshot(1e8, 0.5, 12.0)
    state = _native.normalize_state(raw)
    info = benchmark.extra_info
    tasks = task_list("k", N_CALLS)
    size = tasks[0].size
    last: list[Decision] = []
    stages: dict[str, tuple[Callable[[int], Any], Callable[[int], Any] | None]] = {
        "normalize": (lambda _: _native.normalize_state(raw), None),
        "forward_native": (lambda _: m.q_values(state), None),
        "decode_split": (lambda _: _native.production_split(raw, 14), None),
        "engine_decide_model": (lambda _: engine.decide(size, 0.5, 12.0, True, None), None),
        "partition_task": (
            lambda i: last.append(p.partition_task(tasks[i])),
            lambda _: report(p, last.pop()),
        ),
    }
    for name, (fn, between) in stages.items():
        info.update(
            {f"{name}_{k}": v for k, v in percentiles_us(fn, N_CALLS, between).items() if k != "calls"}
        )
    # What partition_task adds around the engine's decision: the task read, the pending-table insert and
    # the Decision object (the engine call itself builds a tuple and two numpy arrays, so this can be < 0).
    info["overhead_p50_us"] = info["partition_task_p50_us"] - info["engine_decide_model_p50_us"]
    out = benchmark(lambda: engine.decide(size, 0.5, 12.0, True, None))
    assert 0 <= out[0] < 15
