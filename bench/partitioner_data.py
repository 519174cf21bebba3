"""Shared set-up of the decision-path benchmarks (bench_partitioner.py, bench_learning.py): the stream
table, the task stream and the percentile summary, so both measure the same thing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from itp.partitioner import Task, TaskPartitioner

#: Calls per latency measurement (p50/p99 need >= 100k).
N_CALLS = 100_000
#: (bandwidth_bps, latency_s, congestion, success_rate) of streams 0..3: unequal, one lossy.
STREAMS = [
    (800e6, 0.012, 0.1, 0.99),
    (400e6, 0.03, 0.2, 0.95),
    (100e6, 0.1, 0.0, 0.9),
    (900e6, 0.02, 0.5, 0.5),
]


def make_partitioner(
    model: Path | None, *, ttl_s: float = 1e9, ring_capacity: int = 1 << 17
) -> TaskPartitioner:
    """A partitioner with ``STREAMS`` set and a fixed clock (noon)."""
    p = TaskPartitioner(model, clock=lambda: 12.0, decision_ttl_s=ttl_s, ring_capacity=ring_capacity)
    for i, (bw, lat, c, s) in enumerate(STREAMS):
        p.update_stream(i, bandwidth_bps=bw, latency_s=lat, congestion=c, success_rate=s)
    return p


def tasks(prefix: str) -> Iterator[Task]:
    """Endless tasks with unique ids and sizes spread over 64 KiB .. 4 GiB."""
    i = 0
    while True:
        yield Task(f"{prefix}{i}", 64 * 1024 + (i * 2654435761) % (4 * 2**30), 0.5)
        i += 1


def summary_us(samples_ns: npt.NDArray[np.int64]) -> dict[str, float]:
    """p50/p99/mean in microseconds of per-call samples in nanoseconds."""
    return {
        "p50_us": float(np.percentile(samples_ns, 50)) / 1e3,
        "p99_us": float(np.percentile(samples_ns, 99)) / 1e3,
        "mean_us": float(samples_ns.mean()) / 1e3,
        "calls": int(samples_ns.size),
    }
