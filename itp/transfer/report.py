"""What a transfer reports: per chunk, per task, per stream and in total (JSON-ready frozen dataclasses).

Times are seconds. ``submitted_s``/``dispatched_s``/``acked_s`` are offsets from the sender's session
start (``time.monotonic`` at :class:`itp.transfer.Sender` construction). A task's completion time is
``seconds = acked_s - dispatched_s``: from the moment the split is decided and its chunks are queued on the
streams to the moment the receiver's TASK_ACK (file fsynced under its final name) is read by the sender;
``queued_s = dispatched_s - submitted_s`` is the wait for a slot in the sender's window. Goodput is
``8 * size_bytes / seconds`` bits per second. A chunk's ``seconds`` runs from its first payload byte handed
to the kernel to the receiver's CHUNK_ACK (checksum verified, bytes written).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itp.transfer.telemetry import TcpInfo

__all__ = ["ChunkReport", "SendReport", "SendTotals", "StreamReport", "TaskReport"]


@dataclass(frozen=True, slots=True)
class ChunkReport:
    """One chunk's outcome.

    Attributes:
        task_name: the task's name at the receiver.
        stream_id: stream that carried the final attempt, 0..3.
        offset: first byte of the chunk in the task, bytes.
        size_bytes: chunk length, bytes.
        seconds: first byte sent to the receiver's chunk acknowledgement (final attempt), seconds.
        retries: attempts before the final one (stream failures, checksum mismatches, receiver restarts).
        ok: delivered and verified.
        start_window_bits: the congestion window the final attempt started from, bits, read from
            ``TCP_INFO`` when it was sent (``itp.transport.start_window_bits``); 0.0: unknown.
    """

    task_name: str
    stream_id: int
    offset: int
    size_bytes: int
    seconds: float
    retries: int
    ok: bool
    start_window_bits: float = 0.0


@dataclass(frozen=True, slots=True)
class TaskReport:
    """One task's outcome (see the module docstring for the time definitions).

    Attributes:
        name, path: the receiver-side name and the local file.
        size_bytes: task size, bytes.
        submitted_s, dispatched_s, acked_s: session offsets, seconds (acked_s None if it failed).
        seconds: completion time ``acked_s - dispatched_s`` (time to failure if it failed).
        queued_s: ``dispatched_s - submitted_s``.
        goodput_bps: ``8 * size_bytes / seconds`` (0 for a failed task).
        policy: the policy that chose the split.
        action: 0..14, or None for an empty file (no decision).
        source: ``model``/``explore``/``heuristic`` (partitioner), ``baseline``, or ``empty``.
        stream_ids: streams the decision used.
        bytes_per_stream: decided bytes per stream (4 values).
        predicted_s: the decision's expected completion time, seconds.
        chunks: per-chunk outcomes.
        retries: chunk resends in total.
        attempts: times the task was (re)started (>1 after a receiver restart or an INCOMPLETE commit).
        ok: delivered (receiver acknowledged the durable file).
        error: why it failed, or None.
        arm: the canary arm whose model decided (``"current"``, or ``"candidate"`` while a canary routes a
            share of decisions to a candidate model); None for baselines and empty tasks. Kept per task
            so that the canary's two arms can be compared on what the transfer measured, not only on the
            learner's reward.
        model_version: version of the model that decided, or None (heuristic-only partitioner, baseline).
        reward: what ``report_outcome`` returned for the task (:func:`itp.reward.compute_reward`), or None
            when it was not reported (baselines, empty tasks, an expired decision).
    """

    name: str
    path: str
    size_bytes: int
    submitted_s: float
    dispatched_s: float
    acked_s: float | None
    seconds: float
    queued_s: float
    goodput_bps: float
    policy: str
    action: int | None
    source: str
    stream_ids: tuple[int, ...]
    bytes_per_stream: tuple[int, int, int, int]
    predicted_s: float
    chunks: tuple[ChunkReport, ...]
    retries: int
    attempts: int
    ok: bool
    error: str | None
    arm: str | None = None
    model_version: str | None = None
    reward: float | None = None


@dataclass(frozen=True, slots=True)
class StreamReport:
    """One stream at the end of a session.

    Attributes:
        stream_id: 0..3.
        destination: ``HOST:PORT`` (plus netns / bind).
        up: connected at the end.
        connects, failures: successful connections and connection failures.
        chunks_ok: chunks acknowledged on this stream.
        bytes_ok: payload bytes acknowledged on this stream.
        bandwidth_bps, latency_s, congestion, success_rate: the estimator's last output (what the
            partitioner saw).
        tcp_info: the last kernel sample, or None.
    """

    stream_id: int
    destination: str
    up: bool
    connects: int
    failures: int
    chunks_ok: int
    bytes_ok: int
    bandwidth_bps: float
    latency_s: float
    congestion: float
    success_rate: float
    tcp_info: TcpInfo | None


@dataclass(frozen=True, slots=True)
class SendTotals:
    """Session totals.

    Attributes:
        tasks, delivered, failed: task counts.
        bytes: bytes of the delivered tasks.
        seconds: first dispatch to last acknowledgement, seconds.
        aggregate_goodput_bps: ``8 * bytes / seconds``.
        mean_task_goodput_bps: mean of the delivered tasks' goodput.
        retries: chunk resends.
    """

    tasks: int
    delivered: int
    failed: int
    bytes: int
    seconds: float
    aggregate_goodput_bps: float
    mean_task_goodput_bps: float
    retries: int


@dataclass(frozen=True, slots=True)
class SendReport:
    """A whole session: tasks in submission order, streams, totals."""

    policy: str
    tasks: tuple[TaskReport, ...]
    streams: tuple[StreamReport, ...]
    totals: SendTotals

    @property
    def ok(self) -> bool:
        """Every task delivered."""
        return self.totals.failed == 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts and lists (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def write_json(self, path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> None:
        """Write :meth:`to_dict` as indented JSON (atomically: temporary file, then rename); ``extra``:
        more top-level keys (e.g. ``learning``, the summary of ``itp send --learn``)."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        doc = self.to_dict()
        if extra:
            clash = sorted(set(extra) & set(doc))
            if clash:
                raise ValueError(f"extra must not replace the report's keys, got {clash}")
            doc.update(extra)
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, target)


def totals_of(tasks: tuple[TaskReport, ...]) -> SendTotals:
    """The totals of a set of task reports."""
    done = [t for t in tasks if t.ok]
    total_bytes = sum(t.size_bytes for t in done)
    if done:
        start = min(t.dispatched_s for t in tasks)
        end = max(t.acked_s for t in done if t.acked_s is not None)
        seconds = max(end - start, 0.0)
    else:
        seconds = 0.0
    return SendTotals(
        tasks=len(tasks),
        delivered=len(done),
        failed=len(tasks) - len(done),
        bytes=total_bytes,
        seconds=seconds,
        aggregate_goodput_bps=8.0 * total_bytes / seconds if seconds > 0 else 0.0,
        mean_task_goodput_bps=sum(t.goodput_bps for t in done) / len(done) if done else 0.0,
        retries=sum(t.retries for t in tasks),
    )
