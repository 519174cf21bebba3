"""The sending end of an itp transfer: N persistent streams, one split decision per task, resume on faults.

Architecture (threads, all daemon; one lock ``_lock`` with condition ``_cv`` guards the scheduling state):

* a **dispatcher** takes submitted tasks in order while fewer than ``window`` are in flight, sets the
  partitioner's queue depth to the number still waiting, asks the policy for the split
  (:class:`itp.transfer.policy.SplitPolicy`), and puts one chunk per used stream (contiguous byte ranges,
  in stream order) on that stream's queue;
* per stream a **writer** keeps the connection up (connect in the stream's namespace / from its source
  address, HMAC handshake, optional TLS; exponential backoff ``backoff_initial_s * 2**k`` capped at
  ``backoff_max_s``, giving up after ``reconnect_timeout_s`` of continuous failure) and works through its
  queue: CHUNK header, the payload in pieces of ``piece_bytes`` (``os.preadv`` into one reusable buffer
  for the CRC-32C, then ``os.sendfile`` of the same range from the page cache; ``sendall`` under TLS), the
  CHUNK_END trailer. A writer whose own queue is empty takes chunks queued on streams that are down;
  it also sends the COMMIT of tasks whose chunks are all acknowledged;
* per connection a **reader** takes CHUNK_ACK and TASK_ACK frames;
* a **telemetry** thread samples ``TCP_INFO`` of every connection every ``telemetry_interval_s`` and feeds
  the estimators (:class:`itp.transfer.telemetry.StreamEstimator`), which feed ``update_stream``; each
  chunk acknowledgement does too.

Faults. When a connection dies (reset, EOF, timeout, a failed send), its chunks in flight go back to the
front of its queue (``retries`` + 1), where surviving streams take them; the stream reconnects with
backoff. A receiver restart is seen as a new receiver instance id in the handshake: every task not yet
acknowledged is restarted whole (its acknowledged chunks lived in a temporary file that the receiver
removed); tasks already acknowledged are never sent again. A COMMIT answered INCOMPLETE also restarts
the task. Limits: ``max_chunk_retries`` per chunk and ``max_task_attempts`` per task, then the task fails.

Outcomes. When the receiver acknowledges a task (fsynced under its final name), the outcome goes to
``report_outcome`` (learning policies), to the task listeners, and to the task's future. Completion time
and goodput are defined in :mod:`itp.transfer.report`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import math
import os
import secrets
import select
import socket
import ssl
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from itp.state import NUM_STREAMS
from itp.transfer import auth
from itp.transfer.checksum import crc32c
from itp.transfer.connect import StreamEndpoint, connect_stream, parse_host_port
from itp.transfer.policy import Placement, SplitPolicy
from itp.transfer.protocol import (
    NONCE_BYTES,
    Auth,
    AuthOk,
    Challenge,
    ChunkAck,
    ChunkEnd,
    ChunkHeader,
    ChunkStatus,
    Commit,
    ErrorFrame,
    Hello,
    ProtocolError,
    TaskAck,
    TaskStatus,
    encode,
    name_components,
    recv_frame,
)
from itp.transfer.report import ChunkReport, SendReport, StreamReport, TaskReport, totals_of
from itp.transfer.telemetry import StreamEstimator, TcpInfo, read_tcp_info, start_window_from_tcp_info

__all__ = ["ScheduledFile", "Sender", "SenderClosedError", "send_files"]

logger = logging.getLogger(__name__)

_PIECE_BYTES: Final = 4 << 20


class SenderClosedError(RuntimeError):
    """The sender was closed before the task finished."""


@dataclass(frozen=True, slots=True)
class ScheduledFile:
    """A file to submit ``start_s`` seconds after the session starts (``--schedule``).

    Attributes:
        path: local file.
        start_s: offset from the session start, seconds (>= 0).
        name: name at the receiver (default: the file's base name).
    """

    path: str
    start_s: float = 0.0
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"path must be a non-empty str, got {self.path!r}")
        s = self.start_s
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not (math.isfinite(s) and s >= 0):
            raise ValueError(f"start_s must be a finite number >= 0, got {s!r}")


class _State(enum.Enum):
    QUEUED = 0
    INFLIGHT = 1
    DONE = 2


class _Chunk:
    __slots__ = ("first_byte_s", "length", "offset", "retries", "seconds", "start_window_bits", "state",
                 "stream_id", "task")

    def __init__(self, task: _Task, offset: int, length: int, stream_id: int) -> None:
        self.task = task
        self.offset = offset
        self.length = length
        self.stream_id = stream_id
        self.retries = 0
        self.state = _State.QUEUED
        self.first_byte_s = 0.0
        self.seconds = 0.0
        self.start_window_bits = 0.0  # the window its final attempt started from (bits; 0: unknown)


class _Task:
    __slots__ = ("attempts", "chunks", "committing", "dispatched_s", "error", "fd", "file", "finished",
                 "future", "id", "name", "path", "placement", "remaining", "size_bytes", "submitted_s")

    def __init__(self, task_id: int, path: str, name: str, submitted_s: float) -> None:
        self.id = task_id
        self.path = path
        self.name = name
        self.submitted_s = submitted_s
        self.dispatched_s = 0.0
        self.size_bytes = 0
        self.fd = -1
        self.file: BinaryIO | None = None
        self.placement: Placement | None = None
        self.chunks: list[_Chunk] = []
        self.remaining = 0
        self.committing = False
        self.attempts = 0
        self.finished = False
        self.error: str | None = None
        self.future: Future[TaskReport] = Future()


class _Stream:
    __slots__ = ("bytes_ok", "chunks_ok", "commits", "connects", "dead", "endpoint", "estimator", "failures",
                 "generation", "id", "inflight", "last_info", "queue", "sock", "tried", "writer")

    def __init__(self, stream_id: int, endpoint: StreamEndpoint) -> None:
        self.id = stream_id
        self.endpoint = endpoint
        self.sock: socket.socket | None = None
        self.generation = 0
        self.queue: deque[_Chunk] = deque()
        self.inflight: dict[tuple[int, int], _Chunk] = {}
        self.commits: set[int] = set()
        self.estimator = StreamEstimator()
        self.connects = 0
        self.failures = 0
        self.chunks_ok = 0
        self.bytes_ok = 0
        self.dead = False
        self.tried = False
        self.last_info: TcpInfo | None = None
        self.writer: threading.Thread | None = None


def _endpoints(
    destinations: str | Sequence[str] | Sequence[tuple[str, int]] | Sequence[StreamEndpoint],
    streams: int,
    netns: Sequence[str] | None,
    bind: Sequence[str] | None,
) -> list[StreamEndpoint]:
    items = [destinations] if isinstance(destinations, str) else list(destinations)
    if not items:
        raise ValueError("destinations must name at least one HOST:PORT")
    if len(items) not in (1, streams):
        raise ValueError(f"destinations: give 1 or {streams} (one per stream), got {len(items)}")
    for name, seq in (("netns", netns), ("bind", bind)):
        if seq is not None and len(seq) not in (0, 1, streams):
            raise ValueError(f"{name}: give 1 or {streams} (one per stream), got {len(seq)}")
    out: list[StreamEndpoint] = []
    for i in range(streams):
        item = items[i if len(items) > 1 else 0]
        ns = (netns[i if len(netns) > 1 else 0]) if netns else None
        src = (bind[i if len(bind) > 1 else 0]) if bind else None
        if isinstance(item, StreamEndpoint):
            out.append(StreamEndpoint(item.host, item.port, ns or item.netns, src or item.bind))
            continue
        if isinstance(item, str):
            host, port = parse_host_port(item)
        elif isinstance(item, tuple) and len(item) == 2:
            host, port = item
        else:
            raise TypeError(f"destination must be 'HOST:PORT', (host, port) or StreamEndpoint, got {item!r}")
        out.append(StreamEndpoint(host, port, ns, src))
    return out


def _slow_start_after_idle(path: str = "/proc/sys/net/ipv4/tcp_slow_start_after_idle") -> bool:
    """This network namespace's ``net.ipv4.tcp_slow_start_after_idle`` (True, the kernel default, when it
    cannot be read): whether an idle connection restarts from the initial window."""
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip() != "0"
    except (OSError, ValueError):
        return True


def _positive(name: str, value: float) -> float:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _int_at_least(name: str, value: int, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    return value


class Sender:
    """Sends files to an itp receiver over ``streams`` persistent TCP connections (see the module docs).

    Args:
        destinations: ``"HOST:PORT"``, ``(host, port)`` or :class:`StreamEndpoint` — one for all streams,
            or one per stream.
        streams: number of streams, 1..4 (the partitioner decides over 4; with fewer, bytes decided for a
            missing stream go to the present streams).
        policy: a policy name (:data:`itp.transfer.policy.POLICY_NAMES`) or a :class:`SplitPolicy`.
        secret: the shared secret (bytes) or None (only a receiver without a secret accepts that).
        partitioner: an existing :class:`itp.TaskPartitioner` for the policy (its model, learner, table).
        model_path: with ``policy="itp"``: a ``.onnx`` model instead of the bundled one.
        netns: network-namespace path per stream (one for all, or one per stream), or None.
        bind: source address per stream (one for all, or one per stream), or None.
        tls: an ``ssl.SSLContext`` for the client side (see :func:`itp.transfer.auth.client_tls_context`).
        tls_server_name: host name to verify in the receiver's certificate (default: the destination host).
        window: tasks in flight at once (>= 1); the rest wait (that count is the partitioner's queue depth).
        piece_bytes: bytes read and checksummed per ``sendfile`` call (>= 4096).
        connect_timeout_s, io_timeout_s: connect and per-operation socket timeouts, seconds.
        backoff_initial_s, backoff_max_s: reconnect backoff, seconds.
        reconnect_timeout_s: a stream failing to connect this long is given up, seconds.
        max_chunk_retries, max_task_attempts: resend limits before a task fails.
        telemetry_interval_s: TCP_INFO sampling period, seconds.
        priority: priority given to every task's decision, in [0, 1].
        report_history: finished tasks :meth:`report` keeps (the oldest are forgotten first, so a
            long-lived sender's memory stays bounded); listeners and futures see every task.
        chunk_hook: called ``hook(stream_id, sock, chunk_offset, task_name)`` on the writer thread right
            after a chunk's header is sent (tests use it to cut a connection mid-chunk); None in production.

    Raises:
        ValueError / TypeError: naming the bad argument; nothing is started.

    Thread-safety: ``submit``, ``add_task_listener``, ``report`` and ``close`` may be called from any
    thread. Construction connects nothing; streams connect on the first task.
    """

    def __init__(
        self,
        destinations: str | Sequence[str] | Sequence[tuple[str, int]] | Sequence[StreamEndpoint],
        *,
        streams: int = NUM_STREAMS,
        policy: str | SplitPolicy = "itp",
        secret: bytes | None = None,
        partitioner: object | None = None,
        model_path: str | os.PathLike[str] | None = None,
        netns: Sequence[str] | None = None,
        bind: Sequence[str] | None = None,
        tls: ssl.SSLContext | None = None,
        tls_server_name: str | None = None,
        window: int = 8,
        piece_bytes: int = _PIECE_BYTES,
        connect_timeout_s: float = 10.0,
        io_timeout_s: float = 60.0,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
        reconnect_timeout_s: float = 30.0,
        max_chunk_retries: int = 8,
        max_task_attempts: int = 4,
        telemetry_interval_s: float = 0.25,
        priority: float = 0.5,
        report_history: int = 100_000,
        chunk_hook: Callable[[int, socket.socket, int, str], None] | None = None,
    ) -> None:
        _int_at_least("streams", streams, 1)
        if streams > NUM_STREAMS:
            raise ValueError(
                f"streams must be in 1..{NUM_STREAMS} (the partitioner's stream count), got {streams}"
            )
        self._endpoints = _endpoints(destinations, streams, netns, bind)
        if secret is not None and not isinstance(secret, bytes):
            raise TypeError(f"secret must be bytes or None, got {type(secret).__name__}")
        if tls is not None and not isinstance(tls, ssl.SSLContext):
            raise TypeError(f"tls must be an ssl.SSLContext or None, got {type(tls).__name__}")
        if isinstance(policy, SplitPolicy):
            if partitioner is not None or model_path is not None:
                raise ValueError("give partitioner/model_path to the SplitPolicy, not to Sender")
            self._policy = policy
        elif isinstance(policy, str):
            from itp.partitioner import TaskPartitioner

            if partitioner is not None and not isinstance(partitioner, TaskPartitioner):
                raise TypeError(f"partitioner must be a TaskPartitioner, got {type(partitioner).__name__}")
            self._policy = SplitPolicy(policy, model_path=model_path, partitioner=partitioner)
        else:
            raise TypeError(f"policy must be a name or a SplitPolicy, got {type(policy).__name__}")
        self._window = _int_at_least("window", window, 1)
        self._piece_bytes = _int_at_least("piece_bytes", piece_bytes, 4096)
        self._connect_timeout_s = _positive("connect_timeout_s", connect_timeout_s)
        self._io_timeout_s = _positive("io_timeout_s", io_timeout_s)
        self._backoff_initial_s = _positive("backoff_initial_s", backoff_initial_s)
        self._backoff_max_s = _positive("backoff_max_s", backoff_max_s)
        self._reconnect_timeout_s = _positive("reconnect_timeout_s", reconnect_timeout_s)
        self._max_chunk_retries = _int_at_least("max_chunk_retries", max_chunk_retries, 0)
        self._max_task_attempts = _int_at_least("max_task_attempts", max_task_attempts, 1)
        self._telemetry_interval_s = _positive("telemetry_interval_s", telemetry_interval_s)
        self._slow_start_after_idle = _slow_start_after_idle()
        if isinstance(priority, bool) or not isinstance(priority, (int, float)) or not 0 <= priority <= 1:
            raise ValueError(f"priority must be in [0, 1], got {priority!r}")
        self._priority = float(priority)
        self._secret = secret
        self._tls = tls
        self._tls_server_name = tls_server_name
        self._chunk_hook = chunk_hook
        self._session_id = secrets.token_bytes(16)
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._closing = False
        self._started = False
        self._streams = [_Stream(i, ep) for i, ep in enumerate(self._endpoints)]
        self._waiting: deque[_Task] = deque()
        self._active: dict[int, _Task] = {}
        self._commit_queue: deque[_Task] = deque()
        self._all: deque[_Task] = deque(maxlen=_int_at_least("report_history", report_history, 1))
        self._next_id = 1
        self._instance_id: bytes | None = None
        self._max_task_bytes: int | None = None
        self._listeners: list[Callable[[TaskReport], None]] = []
        self._chunk_listeners: list[Callable[[ChunkReport], None]] = []
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        # Serialises _publish: reading a stream's state and writing it to the partitioner are one step, so
        # a telemetry sample that read the stream up cannot overwrite the "down" its failure published.
        self._publish_lock = threading.Lock()
        for s in self._streams:
            self._publish(s)

    # ----------------------------------------------------------------------------- public API
    @property
    def policy(self) -> SplitPolicy:
        """The split policy (and through it the partitioner)."""
        return self._policy

    @property
    def session_start_s(self) -> float:
        """``time.monotonic()`` at construction: the origin of every ``*_s`` time in the reports."""
        return self._t0

    @property
    def endpoints(self) -> tuple[StreamEndpoint, ...]:
        """Each stream's destination."""
        return tuple(self._endpoints)

    def add_task_listener(self, listener: Callable[[TaskReport], None]) -> None:
        """Call ``listener(report)`` when each task finishes (delivered or failed), on a sender thread.
        It must be quick; an exception is logged and swallowed."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {type(listener).__name__}")
        with self._lock:
            self._listeners.append(listener)

    def add_chunk_listener(self, listener: Callable[[ChunkReport], None]) -> None:
        """Call ``listener(chunk)`` on every chunk acknowledgement, as it happens (same rules)."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {type(listener).__name__}")
        with self._lock:
            self._chunk_listeners.append(listener)

    def submit(self, path: str | os.PathLike[str], name: str | None = None) -> Future[TaskReport]:
        """Queue a file for sending; returns at once with a future of its :class:`TaskReport`.

        Args:
            path: a regular file (read when the task is dispatched; its size then is the task size).
            name: name at the receiver, a relative path (default: the file's base name).

        Raises:
            FileNotFoundError / ValueError: the file is missing or not a regular file, or the name is
                invalid (absolute, ``..``, NUL, too long). SenderClosedError: after ``close``.
        """
        p = os.fspath(path)
        st = os.stat(p)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"path {p!r} is not a regular file")
        task_name = Path(p).name if name is None else name
        try:
            name_components(task_name)
        except ProtocolError as exc:
            raise ValueError(f"name: {exc}") from None
        with self._cv:
            if self._closing:
                raise SenderClosedError("Sender is closed")
            task = _Task(self._next_id, p, task_name, self._now())
            self._next_id += 1
            self._waiting.append(task)
            self._all.append(task)
            self._start_locked()
            self._cv.notify_all()
        return task.future

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until every submitted task has finished; False if ``timeout_s`` passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cv:
            while self._waiting or self._active:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left if left is not None else 1.0)
        return True

    def report(self) -> SendReport:
        """The session report so far: the last ``report_history`` tasks in submission order (unfinished
        tasks are left out)."""
        with self._lock:
            tasks = [t for t in self._all if t.finished]
        reports = tuple(t.future.result() for t in tasks if t.future.done() and not t.future.cancelled())
        return SendReport(self._policy.name, reports, self._stream_reports(), totals_of(reports))

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop: unfinished tasks fail with :class:`SenderClosedError`, connections close, threads end."""
        with self._cv:
            if self._closing:
                return
            self._closing = True
            pending = list(self._waiting) + list(self._active.values())
            self._cv.notify_all()
        for task in pending:
            self._fail(task, "sender closed before the task finished")
        for s in self._streams:
            with self._lock:
                sock = s.sock
            if sock is not None:
                self._shutdown(sock)
        # Writers spawn a reader as their connection comes up, possibly after the snapshot below: join until
        # no thread is left that was not joined, so every reader has published its stream down on return.
        deadline = time.monotonic() + timeout_s
        joined: set[threading.Thread] = {threading.current_thread()}  # close() from a listener's thread
        while True:
            with self._threads_lock:
                threads = [t for t in self._threads if t not in joined]
            if not threads:
                break
            for t in threads:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
                joined.add(t)

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------- internals
    def _now(self) -> float:
        return time.monotonic() - self._t0

    def _start_locked(self) -> None:
        if self._started:
            return
        self._started = True
        self._spawn(self._dispatch_loop, "itp-send-dispatch")
        self._spawn(self._telemetry_loop, "itp-send-telemetry")
        for s in self._streams:
            s.writer = self._spawn(self._writer_loop, f"itp-send-stream{s.id}", s)

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> threading.Thread:
        t = threading.Thread(target=target, name=name, args=args, daemon=True)
        with self._threads_lock:  # writers spawn readers concurrently
            # Forget finished threads (one reader per reconnect), so a long-lived sender stays bounded. The
            # thread starts under the lock: one not yet started is not alive, and a concurrent spawn would
            # forget it, so close() would not wait for it.
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
            t.start()
        return t

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    # ---------------------------------------------------------------------------- dispatch
    def _dispatch_loop(self) -> None:
        while True:
            with self._cv:
                while not self._closing and (
                    not self._waiting or len(self._active) >= self._window or not self._ready_locked()
                ):
                    self._cv.wait()
                if self._closing:
                    return
                task = self._waiting.popleft()
                waiting = len(self._waiting)
                self._active[task.id] = task
            try:
                self._policy.partitioner.set_queue_depth(waiting)
                self._dispatch(task)
            except Exception as exc:  # a file that vanished, a policy fault: this task fails, others go on
                logger.error("task %s could not be dispatched: %s", task.name, exc)
                self._fail(task, f"could not dispatch: {exc}")

    def _ready_locked(self) -> bool:
        """The first decision waits until every stream has tried to connect once (up, or failed), so
        that the stream table it sees is real; afterwards (reconnects) decisions never wait."""
        return self._max_task_bytes is not None and all(s.tried for s in self._streams)

    def _dispatch(self, task: _Task) -> None:
        fd = os.open(task.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            limit = self._max_task_bytes
            if limit is not None and size > limit:
                raise ValueError(f"{size} bytes is over the receiver's limit of {limit}")
            if self._policy.learns:
                for s in self._streams:  # the window each stream would start a chunk from, now
                    self._publish(s, fresh_window=True)
            placement = self._policy.place(size, priority=self._priority)
        except BaseException:
            os.close(fd)
            raise
        with self._cv:
            task.fd = fd
            task.file = open(fd, "rb", buffering=0, closefd=False)  # noqa: SIM115 - closed in _finish
            task.size_bytes = size
            task.placement = placement
            task.dispatched_s = self._now()
            if self._closing or task.finished:
                return
            self._plan_locked(task)
            self._cv.notify_all()
        logger.debug("task %s: %d bytes, action %s, bytes per stream %s, expected %.4g s (%s)",
                     task.name, size, placement.action, placement.chunk_bytes, placement.expected_time_s,
                     placement.source)

    def _plan_locked(self, task: _Task) -> None:
        """(Re)build a task's chunks from its placement and queue them. Caller holds the lock."""
        assert task.placement is not None
        task.attempts += 1
        task.committing = False
        chunks: list[_Chunk] = []
        offset = 0
        n = len(self._streams)
        for i, nbytes in enumerate(task.placement.chunk_bytes):
            if nbytes <= 0:
                continue
            target = i if i < n else self._shortest_queue_locked()
            chunks.append(_Chunk(task, offset, nbytes, target))
            offset += nbytes
        if not chunks:  # empty file: one empty chunk creates it at the receiver
            chunks.append(_Chunk(task, 0, 0, 0))
        old = {c.offset: c.retries for c in task.chunks}
        for c in chunks:
            c.retries = old.get(c.offset, 0)
        task.chunks = chunks
        task.remaining = len(chunks)
        for c in chunks:
            self._streams[c.stream_id].queue.append(c)

    def _shortest_queue_locked(self) -> int:
        """The present stream with the fewest queued bytes (for bytes decided for a missing stream)."""
        return min(range(len(self._streams)), key=lambda j: sum(q.length for q in self._streams[j].queue))

    # ---------------------------------------------------------------------------- writers
    def _take_locked(self, s: _Stream) -> _Chunk | _Task | None:
        while s.queue:
            c = s.queue.popleft()
            if not c.task.finished and c.state is _State.QUEUED:
                return c
        if self._commit_queue:
            return self._commit_queue.popleft()
        for other in self._streams:
            if other is s or (other.sock is not None and not other.dead):
                continue
            while other.queue:
                c = other.queue.popleft()
                if not c.task.finished and c.state is _State.QUEUED:
                    return c
        return None

    def _writer_loop(self, s: _Stream) -> None:
        down_since: float | None = None
        attempt = 0
        while True:
            with self._cv:
                if self._closing:
                    return
                connected = s.sock is not None
                if connected and not self._has_work_locked(s):
                    self._cv.wait()
                    continue
                if not connected and not self._needs_streams_locked():
                    self._cv.wait()
                    continue
            if not connected:
                try:
                    self._connect(s)
                    down_since, attempt = None, 0
                except (OSError, ProtocolError, ssl.SSLError) as exc:
                    now = time.monotonic()
                    down_since = now if down_since is None else down_since
                    with self._cv:
                        s.failures += 1
                        s.tried = True
                        s.estimator.observe_failure()
                        self._cv.notify_all()
                    self._publish(s)
                    permanent = isinstance(exc, (_AuthError, ssl.SSLCertVerificationError))
                    if now - down_since > self._reconnect_timeout_s or permanent:
                        self._give_up(s, str(exc))
                        down_since = None  # keep the long backoff; try again while there is work
                    delay = min(self._backoff_max_s, self._backoff_initial_s * (2.0 ** attempt))
                    attempt += 1
                    logger.info("stream %d: connect to %s failed (%s); retry in %.2f s", s.id, s.endpoint,
                                exc, delay)
                    with self._cv:
                        self._cv.wait_for(lambda: self._closing, timeout=delay)
                continue
            with self._cv:
                sock, gen = s.sock, s.generation
                job = self._take_locked(s) if sock is not None else None
                if isinstance(job, _Chunk):
                    job.state = _State.INFLIGHT
                    job.stream_id = s.id
                    s.inflight[(job.task.id, job.offset)] = job
                elif isinstance(job, _Task):
                    s.commits.add(job.id)
            if job is None or sock is None:
                continue
            try:
                if isinstance(job, _Chunk):
                    self._send_chunk(s, sock, job)
                else:
                    sock.sendall(encode(Commit(job.id, job.size_bytes, job.name)))
            except (OSError, ValueError) as exc:
                self._stream_failed(s, gen, f"send failed: {exc}")

    def _has_work_locked(self, s: _Stream) -> bool:
        if any(c.state is _State.QUEUED and not c.task.finished for c in s.queue) or self._commit_queue:
            return True
        return any(o.queue for o in self._streams if o is not s and (o.sock is None or o.dead))

    def _needs_streams_locked(self) -> bool:
        return bool(self._active or self._waiting)

    def _give_up(self, s: _Stream, why: str) -> None:
        logger.info("stream %d to %s given up: %s", s.id, s.endpoint, why)
        with self._cv:
            s.dead = True
            self._cv.notify_all()
            alive = [o for o in self._streams if not o.dead]
            doomed = [] if alive else list(self._active.values()) + list(self._waiting)
        self._publish(s)
        for task in doomed:
            self._fail(task, f"no stream can reach the receiver: {why}")

    def _connect(self, s: _Stream) -> None:
        raw, connect_s = connect_stream(s.endpoint, timeout_s=self._connect_timeout_s)
        sock: socket.socket = raw
        try:
            if self._tls is not None:
                sock = self._tls.wrap_socket(raw, server_hostname=self._tls_server_name or s.endpoint.host)
            client_nonce = secrets.token_bytes(NONCE_BYTES)
            sock.sendall(encode(Hello(client_nonce, self._session_id, s.id)))
            challenge = recv_frame(sock)
            if isinstance(challenge, ErrorFrame):
                raise ConnectionRefusedError(f"receiver refused the connection: {challenge.message}")
            if not isinstance(challenge, Challenge):
                raise ProtocolError(f"expected CHALLENGE, got {type(challenge).__name__}")
            expected = auth.server_mac(self._secret, client_nonce, challenge.server_nonce, self._session_id)
            if not auth.macs_equal(challenge.server_mac, expected):
                raise _AuthError("the receiver did not prove the shared secret (wrong secret file?)")
            mac = auth.client_mac(self._secret, client_nonce, challenge.server_nonce, self._session_id)
            sock.sendall(encode(Auth(mac)))
            ok = recv_frame(sock)
            if isinstance(ok, ErrorFrame):
                raise _AuthError(f"receiver refused: {ok.message}")
            if not isinstance(ok, AuthOk):
                raise ProtocolError(f"expected AUTH_OK, got {type(ok).__name__}")
            sock.settimeout(self._io_timeout_s)
        except BaseException:
            sock.close()
            raise
        s.estimator.observe_connect(connect_s)
        with self._cv:
            if self._closing:  # close() already shut the connections down: this one must not outlive it
                self._shutdown(sock)
                sock.close()
                return
            if self._instance_id is not None and challenge.instance_id != self._instance_id:
                self._receiver_restarted_locked()
            self._instance_id = challenge.instance_id
            self._max_task_bytes = ok.max_task_bytes
            s.sock = sock
            s.generation += 1
            s.connects += 1
            s.dead = False
            gen = s.generation
        self._sample(s)  # the table shows the stream up before any decision can see it
        with self._cv:
            s.tried = True
            self._cv.notify_all()
        logger.info("stream %d connected to %s in %.2f ms", s.id, s.endpoint, connect_s * 1e3,
                    extra={"event": "stream_up", "stream_id": s.id})
        self._spawn(self._reader_loop, f"itp-send-reader{s.id}", s, sock, gen)

    def _receiver_restarted_locked(self) -> None:
        """A new receiver instance: every unacknowledged task restarts whole (its temp file is gone)."""
        restarted = 0
        for task in self._active.values():
            if task.finished or task.placement is None:
                continue
            if any(c.state is _State.DONE for c in task.chunks) or task.committing:
                self._restart_task_locked(task, "receiver restarted")
                restarted += 1
        self._commit_queue = deque(t for t in self._commit_queue if not t.finished and t.committing)
        if restarted:
            logger.warning("receiver restarted: resending %d unacknowledged tasks", restarted)

    def _restart_task_locked(self, task: _Task, why: str) -> None:
        if task.attempts >= self._max_task_attempts:
            self._fail_locked_later(task, f"{why}; gave up after {task.attempts} attempts")
            return
        for c in task.chunks:
            if c.state is _State.QUEUED:
                c.state = _State.DONE  # drop the queued copy; the new plan queues fresh chunks
            c.retries += 1
        for s in self._streams:
            for key in [k for k in s.inflight if k[0] == task.id]:
                s.inflight.pop(key).state = _State.DONE
        self._plan_locked(task)
        self._cv.notify_all()

    def _send_chunk(self, s: _Stream, sock: socket.socket, c: _Chunk) -> None:
        task = c.task
        header = encode(ChunkHeader(task.id, task.size_bytes, c.offset, c.length, task.name))
        buf = bytearray(min(self._piece_bytes, max(c.length, 1)))
        view = memoryview(buf)
        c.start_window_bits = self._start_window(sock)
        c.first_byte_s = time.monotonic()
        sock.sendall(header)
        if self._chunk_hook is not None:
            self._chunk_hook(s.id, sock, c.offset, task.name)
        crc = 0
        pos = c.offset
        end = c.offset + c.length
        plain = not isinstance(sock, ssl.SSLSocket)
        file = task.file
        assert file is not None
        while pos < end:
            n = min(len(buf), end - pos)
            got = os.preadv(task.fd, [view[:n]], pos)
            if got != n:
                raise OSError(f"{task.path}: file shrank while sending ({got} of {n} bytes at {pos})")
            crc = crc32c(view[:n], crc)
            if plain:  # zero-copy from the page cache; honours the socket timeout
                sent = sock.sendfile(file, pos, n)
                if sent != n:
                    raise ConnectionError(f"sendfile sent {sent} of {n} bytes (connection closed)")
            else:
                sock.sendall(view[:n])
            pos += n
        sock.sendall(encode(ChunkEnd(crc)))

    # ---------------------------------------------------------------------------- readers
    def _reader_loop(self, s: _Stream, sock: socket.socket, gen: int) -> None:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        last_progress = time.monotonic()
        poll_ms = int(min(self._io_timeout_s, 1.0) * 1000)
        try:
            while True:
                pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
                if not pending and not poller.poll(poll_ms):
                    # Idle connections are fine; a silent receiver while work is in flight is not.
                    with self._cv:
                        if s.generation != gen:
                            return
                        busy = bool(s.inflight or s.commits)
                    if not busy:
                        last_progress = time.monotonic()
                    elif time.monotonic() - last_progress > self._io_timeout_s:
                        raise TimeoutError(f"no acknowledgement for {self._io_timeout_s:.0f} s")
                    continue
                frame = recv_frame(sock)
                last_progress = time.monotonic()
                if isinstance(frame, ChunkAck):
                    self._on_chunk_ack(s, gen, frame)
                elif isinstance(frame, TaskAck):
                    self._on_task_ack(s, gen, frame)
                elif isinstance(frame, ErrorFrame):
                    raise ConnectionError(f"receiver closed the stream: {frame.message}")
                else:
                    raise ProtocolError(f"unexpected {type(frame).__name__} from the receiver")
        except (OSError, ValueError, ProtocolError, ssl.SSLError) as exc:
            self._stream_failed(s, gen, str(exc) or type(exc).__name__)

    def _stream_failed(self, s: _Stream, gen: int, why: str) -> None:
        with self._cv:
            if s.generation != gen or s.sock is None:
                return
            sock, s.sock = s.sock, None
            s.generation += 1
            closing = self._closing
            busy = bool(s.inflight or s.commits)
            if not closing:
                s.failures += 1
                s.estimator.observe_failure()
            # In-flight chunks go back to the front of this stream's queue; survivors take them from there.
            for c in sorted(s.inflight.values(), key=lambda c: c.offset, reverse=True):
                if c.state is _State.INFLIGHT and not c.task.finished:
                    c.state = _State.QUEUED
                    c.retries += 1
                    if c.retries > self._max_chunk_retries:
                        why_failed = f"chunk at {c.offset} failed {c.retries} times: {why}"
                        self._fail_locked_later(c.task, why_failed)
                    else:
                        s.queue.appendleft(c)
            s.inflight.clear()
            for tid in s.commits:
                task = self._active.get(tid)
                if task is not None and not task.finished and task not in self._commit_queue:
                    self._commit_queue.append(task)
            s.commits.clear()
            self._cv.notify_all()
        self._shutdown(sock)
        sock.close()
        if not closing:
            # An idle connection closed by the receiver (its idle timeout) is routine; lost work is not.
            level = logging.WARNING if busy else logging.INFO
            logger.log(level, "stream %d to %s failed: %s; its chunks go to the other streams, reconnecting",
                       s.id, s.endpoint, why, extra={"event": "stream_down", "stream_id": s.id})
        self._publish(s)

    def _on_chunk_ack(self, s: _Stream, gen: int, ack: ChunkAck) -> None:
        now = time.monotonic()
        report: ChunkReport | None = None
        fail: str | None = None
        with self._cv:
            if s.generation != gen:
                return
            c = s.inflight.pop((ack.task_id, ack.offset), None)
            if c is None or c.state is not _State.INFLIGHT:
                return
            task = c.task
            if ack.status is ChunkStatus.OK:
                c.state = _State.DONE
                c.seconds = now - c.first_byte_s
                s.chunks_ok += 1
                s.bytes_ok += c.length
                task.remaining -= 1
                if task.remaining == 0 and not task.finished:
                    task.committing = True
                    self._commit_queue.append(task)
                    self._cv.notify_all()
                report = ChunkReport(task.name, s.id, c.offset, c.length, c.seconds, c.retries, True)
                listeners = list(self._chunk_listeners)
            elif ack.status is ChunkStatus.CHECKSUM:
                c.state = _State.QUEUED
                c.retries += 1
                if c.retries > self._max_chunk_retries:
                    fail = f"chunk at {c.offset} failed its checksum {c.retries} times"
                else:
                    s.queue.appendleft(c)
                    self._cv.notify_all()
            else:
                fail = f"the receiver refused task {task.name!r} (see the receiver's log)"
        if report is not None:
            s.estimator.observe_chunk(report.size_bytes, report.seconds, ok=True)
            self._sample(s)
            for listener in listeners:
                try:
                    listener(report)
                except Exception:
                    logger.exception("chunk listener failed")
        else:
            s.estimator.observe_chunk(c.length, 0.0, ok=False)
            self._publish(s)
        if fail is not None:
            self._fail(task, fail)

    def _on_task_ack(self, s: _Stream, gen: int, ack: TaskAck) -> None:
        with self._cv:
            s.commits.discard(ack.task_id)
            task = self._active.get(ack.task_id)
            if task is None or task.finished or not task.committing:
                return
            if ack.status is TaskStatus.INCOMPLETE:
                logger.warning("receiver does not hold task %s complete (%s); resending it", task.name,
                               ack.message)
                self._restart_task_locked(task, f"receiver reported incomplete: {ack.message}")
                return
        if ack.status is TaskStatus.FAILED:
            self._fail(task, f"receiver failed to store the task: {ack.message}")
            return
        self._complete(task)

    # ---------------------------------------------------------------------------- outcomes
    def _complete(self, task: _Task) -> None:
        acked_s = self._now()
        with self._cv:
            if task.finished:
                return
            task.finished = True  # leaves _active only once its report is published (see _finish)
        placement = task.placement
        assert placement is not None
        seconds = max(acked_s - task.dispatched_s, 1e-9)
        goodput = 8.0 * task.size_bytes / seconds
        retries = sum(c.retries for c in task.chunks)
        report = self._task_report(task, acked_s, seconds, goodput, retries, ok=True)
        try:
            reward = self._policy.report(placement, throughput_bps=goodput, latency_s=seconds, success=True,
                                         retransmissions=retries, chunks=report.chunks)
        except ValueError as exc:  # e.g. the decision expired: the transfer still succeeded
            logger.warning("outcome of %s not reported to the partitioner: %s", task.name, exc)
        else:
            report = dataclasses.replace(report, reward=reward)
        logger.info("delivered %s: %d bytes in %.3f s (%.1f Mbit/s)", task.name, task.size_bytes, seconds,
                    goodput / 1e6, extra={"event": "task_delivered", "size_bytes": task.size_bytes})
        self._finish(task, report)

    def _fail_locked_later(self, task: _Task, why: str) -> None:
        """Mark a task failed from inside the lock; the outcome is published by a helper thread."""
        if task.finished:
            return
        task.error = why
        threading.Thread(target=self._fail, args=(task, why), daemon=True).start()

    def _fail(self, task: _Task, why: str) -> None:
        now = self._now()
        with self._cv:
            if task.finished:
                return
            task.finished = True
            task.error = why
            if task in self._waiting:  # never dispatched: it must not be dispatched now
                self._waiting.remove(task)
                self._active[task.id] = task
        retries = sum(c.retries for c in task.chunks)
        dispatched = task.dispatched_s or now
        report = self._task_report(task, None, max(now - dispatched, 0.0), 0.0, retries, ok=False)
        if task.placement is not None and task.placement.decision is not None:
            try:
                reward = self._policy.report(
                    task.placement, throughput_bps=0.0, latency_s=max(now - dispatched, 1e-9), success=False,
                    retransmissions=retries, chunks=report.chunks,
                )
            except ValueError as exc:
                logger.debug("failed outcome of %s not reported: %s", task.name, exc)
            else:
                report = dataclasses.replace(report, reward=reward)
        logger.info("task %s failed: %s", task.name, why, extra={"event": "task_failed"})
        self._finish(task, report)

    def _finish(self, task: _Task, report: TaskReport) -> None:
        if task.file is not None:
            task.file.close()
            task.file = None
        if task.fd >= 0:
            os.close(task.fd)
            task.fd = -1
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(report)
            except Exception:
                logger.exception("task listener failed")
        task.future.set_result(report)
        # Only now does the task leave the window: wait() and report() then see its published outcome.
        with self._cv:
            self._active.pop(task.id, None)
            self._cv.notify_all()

    def _task_report(
        self, task: _Task, acked_s: float | None, seconds: float, goodput: float, retries: int, *, ok: bool
    ) -> TaskReport:
        p = task.placement
        d = p.decision if p is not None else None
        chunks = tuple(
            ChunkReport(
                task.name, c.stream_id, c.offset, c.length, c.seconds, c.retries, c.state is _State.DONE,
                c.start_window_bits,
            )
            for c in task.chunks
        )
        dispatched = task.dispatched_s if task.dispatched_s else (acked_s or self._now())
        return TaskReport(
            name=task.name,
            path=task.path,
            size_bytes=task.size_bytes,
            submitted_s=task.submitted_s,
            dispatched_s=dispatched,
            acked_s=acked_s,
            seconds=seconds,
            queued_s=max(dispatched - task.submitted_s, 0.0),
            goodput_bps=goodput,
            policy=self._policy.name,
            action=p.action if p is not None else None,
            source=p.source if p is not None else "none",
            stream_ids=p.stream_ids if p is not None else (),
            bytes_per_stream=p.chunk_bytes if p is not None else (0, 0, 0, 0),
            predicted_s=p.expected_time_s if p is not None else 0.0,
            chunks=chunks,
            retries=retries,
            attempts=task.attempts,
            ok=ok,
            error=None if ok else task.error,
            arm=d.arm if d is not None else None,
            model_version=d.model_version if d is not None else None,
        )

    # ---------------------------------------------------------------------------- telemetry
    def _telemetry_loop(self) -> None:
        while True:
            with self._cv:
                if self._cv.wait_for(lambda: self._closing, timeout=self._telemetry_interval_s):
                    return
            for s in self._streams:
                self._sample(s)

    def _sample(self, s: _Stream) -> None:
        """Read TCP_INFO of the stream's connection (if up), fold it in, publish to the partitioner."""
        sock = s.sock
        if sock is not None:
            try:
                info = read_tcp_info(sock)
            except (OSError, ValueError):
                info = None
            if info is not None:
                s.last_info = info
                s.estimator.observe_tcp_info(info)
        self._publish(s)

    def _start_window(self, sock: socket.socket | None) -> float:
        """The window (bits) a chunk sent now on ``sock`` starts from, from a fresh ``TCP_INFO`` read
        (cwnd, RTO, idle time; ``itp.transport.start_window_bits``); 0.0 when unknown."""
        if sock is None:
            return 0.0
        try:
            info = read_tcp_info(sock)
        except (OSError, ValueError):
            return 0.0
        return start_window_from_tcp_info(info, slow_start_after_idle=self._slow_start_after_idle)

    def _publish(self, s: _Stream, *, fresh_window: bool = False) -> None:
        """``update_stream`` with the estimate; a stream that is down advertises no bandwidth. The start
        window comes from the last ``TCP_INFO`` sample, or a fresh read with ``fresh_window`` (just before
        a decision: the idle time decides whether the window survived)."""
        with self._publish_lock:
            est = s.estimator.estimate()
            sock = s.sock
            up = sock is not None and not s.dead
            if not up:
                window = 0.0
            elif fresh_window:
                window = self._start_window(sock)
            elif s.last_info is not None:
                window = start_window_from_tcp_info(
                    s.last_info, slow_start_after_idle=self._slow_start_after_idle
                )
            else:
                window = 0.0
            self._policy.partitioner.update_stream(
                s.id,
                bandwidth_bps=est.bandwidth_bps if up else 0.0,
                latency_s=est.latency_s,
                congestion=est.congestion if up else 1.0,
                success_rate=est.success_rate,
                start_window_bits=window,
            )

    def _stream_reports(self) -> tuple[StreamReport, ...]:
        out = []
        for s in self._streams:
            est = s.estimator.estimate()
            out.append(StreamReport(
                stream_id=s.id, destination=str(s.endpoint), up=s.sock is not None, connects=s.connects,
                failures=s.failures, chunks_ok=s.chunks_ok, bytes_ok=s.bytes_ok,
                bandwidth_bps=est.bandwidth_bps, latency_s=est.latency_s, congestion=est.congestion,
                success_rate=est.success_rate, tcp_info=s.last_info,
            ))
        return tuple(out)


class _AuthError(OSError):
    """The receiver failed to prove the secret or refused ours: retrying cannot help."""


def send_files(
    paths: Iterable[str | os.PathLike[str] | ScheduledFile],
    to: str | Sequence[str] | Sequence[tuple[str, int]] | Sequence[StreamEndpoint],
    *,
    timeout_s: float | None = None,
    on_task: Callable[[TaskReport], None] | None = None,
    **sender_options: object,
) -> SendReport:
    """Send files and wait for all of them: one :class:`Sender` session, closed on return.

    Args:
        paths: files (submitted at once) or :class:`ScheduledFile` entries (submitted at their
            ``start_s`` offsets from the session start, in ``start_s`` order).
        to: destinations, as for :class:`Sender`.
        timeout_s: give up waiting after this many seconds (unfinished tasks fail), or None.
        on_task: called with each finished task's report.
        **sender_options: passed to :class:`Sender` (``streams``, ``policy``, ``secret``, ...).

    Returns:
        The :class:`SendReport` (``report.ok`` is True when every task was delivered).
    """
    entries = [p if isinstance(p, ScheduledFile) else ScheduledFile(os.fspath(p)) for p in paths]
    entries.sort(key=lambda e: e.start_s)
    sender = Sender(to, **sender_options)  # type: ignore[arg-type]
    try:
        if on_task is not None:
            sender.add_task_listener(on_task)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        start = time.monotonic()
        for e in entries:
            delay = start + e.start_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sender.submit(e.path, e.name)
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        sender.wait(left)
    finally:
        sender.close()
    return sender.report()
