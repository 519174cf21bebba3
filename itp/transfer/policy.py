"""How a transfer's split is chosen: the partitioner (learned model or heuristic) or a baseline.

Every policy shares one stream table: a :class:`itp.TaskPartitioner` that the sender's telemetry feeds
with ``update_stream`` (bandwidth, RTT, congestion, success rate per stream) and ``set_queue_depth``.

* ``itp`` (the bundled model, or ``model_path``) and ``heuristic``: ``TaskPartitioner.partition_task``
  decides and ``report_outcome`` learns from the result (the learner path).
* Baselines (``rate-proportional``, ``round-robin``, ``best-single``, ``equal-split``): the action comes
  from :mod:`itp.sim.baselines` on the *same* raw state the partitioner would see (its stream table, queue
  depth, the task size, priority and local hour), and the bytes from the same production split
  (:func:`itp.production_split`); ``equal-split`` puts equal bytes on all four streams. So a comparison
  between policies differs only in the decision. Baseline outcomes are not fed to the learner.

An empty task (0 bytes) needs no decision: it becomes one empty chunk on stream 0 (source ``empty``).

Per-chunk outcomes: :meth:`SplitPolicy.report` hands the sender's acknowledged chunks (first byte to the
receiver's acknowledgement, per chunk) to ``report_outcome(..., chunks=...)`` when they decompose the
decision's plan (every chunk on a stream the decision used, each stream's chunks summing to its planned
bytes, fewer for a failed task); a chunk that was moved to another stream after a stream failure breaks
that decomposition, and then the task is reported without chunks (logged at DEBUG).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from itp.partitioner import DEFAULT_MODEL, ChunkOutcome, Decision, Task, TaskPartitioner, _Default, local_hour
from itp.sim.baselines import (
    BestSinglePolicy,
    EqualSplitPolicy,
    RateProportionalPolicy,
    equal_chunks,
)
from itp.state import NUM_STREAMS, RawState
from itp.transfer.report import ChunkReport
from itp.transport import production_split, transport_chunk_time

logger = logging.getLogger(__name__)

__all__ = ["BASELINE_POLICIES", "POLICY_NAMES", "Placement", "SplitPolicy", "chunk_outcomes"]

BASELINE_POLICIES: Final = ("rate-proportional", "round-robin", "best-single", "equal-split")
POLICY_NAMES: Final = ("itp", "heuristic", *BASELINE_POLICIES)
"""Names accepted by :class:`SplitPolicy` (and ``itp send --policy``)."""


@dataclass(frozen=True, slots=True, eq=False)
class Placement:
    """A task's split.

    Attributes:
        action: 0..14, or None for an empty task.
        chunk_bytes: bytes per stream (4 values) summing to the task size.
        expected_time_s: predicted completion time, seconds.
        source: ``model``/``explore``/``heuristic`` (partitioner), ``baseline`` or ``empty``.
        decision: the partitioner's :class:`itp.Decision` (to report the outcome), or None.
    """

    action: int | None
    chunk_bytes: tuple[int, int, int, int]
    expected_time_s: float
    source: str
    decision: Decision | None

    @property
    def stream_ids(self) -> tuple[int, ...]:
        """Streams that carry bytes, ascending."""
        return tuple(i for i, b in enumerate(self.chunk_bytes) if b > 0)


class _Baseline(Protocol):
    def select_action(self, raw_state: npt.NDArray[np.float64]) -> int: ...


class SplitPolicy:
    """A named split policy over the partitioner's stream table.

    Args:
        name: one of :data:`POLICY_NAMES`.
        model_path: for ``itp``: a ``.onnx`` model instead of the bundled one.
        partitioner: use this partitioner (its model, learner and stream table) instead of a new one;
            for ``heuristic`` and the baselines it only serves as the stream table.

    Raises:
        ValueError: unknown name, or ``model_path`` with a policy other than ``itp``.

    Thread-safety: ``place`` and ``report`` may be called from any thread (the partitioner is
    thread-safe; the round-robin cursor is an atomic ``itertools.count``).
    """

    def __init__(
        self,
        name: str = "itp",
        *,
        model_path: str | os.PathLike[str] | None = None,
        partitioner: TaskPartitioner | None = None,
    ) -> None:
        if name not in POLICY_NAMES:
            raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(POLICY_NAMES)}")
        if model_path is not None and name != "itp":
            raise ValueError(f"model_path is only used by the 'itp' policy, not {name!r}")
        if partitioner is not None and not isinstance(partitioner, TaskPartitioner):
            raise TypeError(f"partitioner must be a TaskPartitioner, got {type(partitioner).__name__}")
        self._name = name
        if partitioner is None:
            model: Path | _Default | None = None
            if name == "itp":
                model = DEFAULT_MODEL if model_path is None else Path(model_path)
            partitioner = TaskPartitioner(model)
        self._partitioner = partitioner
        self._ids = itertools.count()
        self._round_robin = itertools.count()
        baselines: dict[str, _Baseline] = {
            "rate-proportional": RateProportionalPolicy(),
            "best-single": BestSinglePolicy(),
            "equal-split": EqualSplitPolicy(),
        }
        self._baseline = baselines.get(name)

    @property
    def name(self) -> str:
        """The policy name."""
        return self._name

    @property
    def partitioner(self) -> TaskPartitioner:
        """The partitioner holding the stream table (and, for ``itp``/``heuristic``, deciding)."""
        return self._partitioner

    @property
    def learns(self) -> bool:
        """True when outcomes go to the partitioner (``itp`` and ``heuristic``)."""
        return self._name in ("itp", "heuristic")

    def raw_state(self, size_bytes: int, priority: float) -> RawState:
        """The raw decision state the partitioner would see for a task of ``size_bytes`` now."""
        streams = [self._partitioner.get_stream(i) for i in range(NUM_STREAMS)]
        return RawState(
            bandwidth_bps=(streams[0][0], streams[1][0], streams[2][0], streams[3][0]),
            latency_s=(streams[0][1], streams[1][1], streams[2][1], streams[3][1]),
            congestion=(streams[0][2], streams[1][2], streams[2][2], streams[3][2]),
            success_rate=(streams[0][3], streams[1][3], streams[2][3], streams[3][3]),
            queue_depth=self._partitioner.queue_depth,
            task_size_bytes=float(size_bytes),
            priority=priority,
            time_of_day_h=local_hour(),
        )

    def place(self, size_bytes: int, *, priority: float = 0.5) -> Placement:
        """Decide the split of a task of ``size_bytes`` (int, 0..2**50).

        Raises:
            ValueError / TypeError: a bad size or priority (named).
        """
        if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes < 0:
            raise ValueError(f"size_bytes must be an int >= 0, got {size_bytes!r}")
        if size_bytes == 0:
            return Placement(None, (0, 0, 0, 0), 0.0, "empty", None)
        if self.learns:
            task = Task(f"transfer-{next(self._ids)}", size_bytes, priority)
            d = self._partitioner.partition_task(task)
            return Placement(d.action, d.bytes_per_stream, d.expected_time, d.source, d)
        Task("check", size_bytes, priority)  # same validation as the learner path
        raw = self.raw_state(size_bytes, priority).to_array()
        if self._name == "round-robin":
            action = next(self._round_robin) % NUM_STREAMS
        else:
            assert self._baseline is not None
            action = int(self._baseline.select_action(raw))
        if self._name == "equal-split":
            chunks = equal_chunks(size_bytes, action)
            expected = _predicted_s(raw, chunks)
        else:
            split = production_split(raw, action)
            chunks, expected = split.chunk_bytes, split.expected_time_s
        return Placement(action, chunks, expected, "baseline", None)

    def report(
        self,
        placement: Placement,
        *,
        throughput_bps: float,
        latency_s: float,
        success: bool,
        retransmissions: int,
        chunks: Sequence[ChunkReport] = (),
    ) -> float | None:
        """Report a task's outcome to the learner (``itp``/``heuristic``); returns the reward, or None
        for baselines and empty tasks. Arguments as :meth:`itp.TaskPartitioner.report_outcome`;
        ``chunks``: the sender's per-chunk reports of the task (see the module docstring)."""
        d = placement.decision
        if d is None:
            return None
        return self._partitioner.report_outcome(
            d.task_id, d, throughput_bps=throughput_bps, latency_s=max(latency_s, 1e-9), success=success,
            retransmissions=retransmissions, chunks=chunk_outcomes(chunks, d.bytes_per_stream, success),
        )


def chunk_outcomes(
    chunks: Sequence[ChunkReport], plan: tuple[int, int, int, int], success: bool
) -> list[ChunkOutcome] | None:
    """The delivered chunks of a task as :class:`itp.ChunkOutcome` s, or None when there are none or they
    do not decompose the plan (bytes per stream; see the module docstring)."""
    out = [
        ChunkOutcome(c.stream_id, c.size_bytes, c.seconds, c.retries, c.start_window_bits)
        for c in chunks
        if c.ok and c.size_bytes > 0 and c.seconds > 0.0 and math.isfinite(c.seconds)
    ]
    if not out:
        return None
    sums = [0] * NUM_STREAMS
    for c in out:
        sums[c.stream_id] += c.size_bytes
    fits = all(
        (sums[i] == plan[i]) if success else (sums[i] <= plan[i]) for i in range(NUM_STREAMS)
    )
    if not fits:
        logger.debug("chunks %s do not decompose the plan %s: reported without chunks", sums, plan)
        return None
    return out


def _predicted_s(raw: npt.NDArray[np.float64], chunks: tuple[int, int, int, int]) -> float:
    """Transport-model finish time of an arbitrary split: the slowest chunk's time (seconds)."""
    worst = 0.0
    for i, b in enumerate(chunks):
        if b <= 0:
            continue
        rate = float(raw[i]) * float(raw[12 + i])
        t = transport_chunk_time(8.0 * b, rate, float(raw[4 + i]))
        worst = max(worst, t)
    return worst if math.isfinite(worst) else float("inf")

