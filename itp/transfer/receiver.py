"""The receiving end of an itp transfer: authenticated connections, verified chunks, atomic files.

One :class:`Receiver` listens on one TCP port and serves any number of sender sessions, each over up to
``max_connections`` persistent connections (a thread each). For every chunk it reads the CHUNK header,
streams the payload through one fixed buffer per connection (``buffer_bytes``: memory is bounded by
``max_connections * buffer_bytes``) into the CRC-32C (:mod:`itp.transfer.checksum`) and ``os.pwrite`` at
the chunk's offset of the task's temporary file, and compares the CRC of the CHUNK_END trailer before it
acknowledges.

Durability and atomicity. A task's bytes go to ``DIR/<parent>/.itp-part-<random>`` (created with
``O_CREAT | O_EXCL | O_NOFOLLOW``, sized with ``ftruncate``). When the verified chunks cover the whole task
(interval union, so a chunk resent after a stream failure is not counted twice), the receiver
calls ``fsync`` on the file, ``rename`` onto its final name (atomic), ``fsync`` on the directory, and only
then acknowledges the chunk that completed it; a COMMIT frame is answered OK only for such a task. A
partial file therefore never appears under a final name. Temporary files of a session whose connections
are all gone are removed, and stale ones (a crash) are removed when the receiver starts.

Containment. Names are relative paths checked by :func:`itp.transfer.protocol.name_components` (no
absolute paths, ``..``, ``.``, empty components, NUL or backslash). Directories are walked with
``openat``-style calls relative to the open DIR descriptor, each opened with ``O_NOFOLLOW | O_DIRECTORY``:
a symlink anywhere on the path is refused, so nothing is written outside DIR. Final names that are
symlinks are replaced (``rename`` does not follow them), never written through.

Limits: task size (``max_task_bytes``), chunk size, concurrent tasks, connections, per-connection buffer.
Every malformed frame (see :mod:`itp.transfer.protocol`) closes its connection and is counted in
:meth:`Receiver.metrics` and logged; an unauthenticated connection never reaches the file system.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import socket
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from itp.actions import MAX_TASK_BYTES
from itp.transfer import auth
from itp.transfer.checksum import crc32c
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
    Frame,
    Hello,
    ProtocolError,
    TaskAck,
    TaskStatus,
    encode,
    name_components,
    recv_frame,
)

__all__ = ["TEMP_PREFIX", "Receiver", "ReceiverMetrics", "is_loopback_host"]

logger = logging.getLogger(__name__)

TEMP_PREFIX: Final = ".itp-part-"
"""Name prefix of temporary files (never a valid final name)."""
_FINISHED_MEMORY: Final = 65536


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` of ``fd`` to disk, without waiting.

    Why: a task is acknowledged only after ``fsync``. Left alone, the page cache keeps a whole file dirty
    (the default dirty limits are gigabytes), and the final ``fsync`` then writes all of it while the
    sender waits: 1 GiB took ~3.6 s on the development VM's disk, 13% of a 1 GiB transfer at 320 Mbit/s.
    Starting writeback of each window as soon as it is complete overlaps the disk with the network, so the
    final ``fsync`` only waits for the last window. ``POSIX_FADV_DONTNEED`` starts asynchronous writeback
    of the range's dirty pages (Linux) and drops pages already clean; it is advice: an error or an
    unsupported file system (tmpfs) changes nothing, and durability still comes from the ``fsync``.
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    with contextlib.suppress(OSError):
        advise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _recv_written(
    sock: socket.socket, fd: int, start: int, end: int, view: memoryview, writeback_bytes: int = 0
) -> tuple[int, OSError | None]:
    """Receive bytes [start, end) of a chunk through ``view`` and ``os.pwrite`` them to ``fd`` (skipped
    when fd < 0: a refused chunk is drained); returns (CRC-32C, first write error or None). With
    ``writeback_bytes`` > 0, writeback of each completed window of that many bytes starts while the rest
    arrives (:func:`_start_writeback`)."""
    crc = 0
    pos = start
    flushed = start
    write_error: OSError | None = None
    size = len(view)
    while pos < end:
        n = sock.recv_into(view, min(size, end - pos))
        if n == 0:
            raise ConnectionError(f"connection closed inside a chunk ({end - pos} bytes missing)")
        piece = view[:n]
        crc = crc32c(piece, crc)
        if fd >= 0 and write_error is None:
            try:
                written = os.pwrite(fd, piece, pos)
                if written != n:
                    raise OSError(f"short write ({written} of {n} bytes)")
            except OSError as exc:
                write_error = exc
        pos += n
        if writeback_bytes and fd >= 0 and write_error is None and pos - flushed >= writeback_bytes:
            _start_writeback(fd, flushed, pos - flushed)
            flushed = pos
    return crc, write_error


@dataclass(frozen=True, slots=True)
class ReceiverMetrics:
    """Counters of a :class:`Receiver` since it started.

    Attributes:
        connections_accepted: authenticated connections.
        connections_active: connections open now.
        connections_refused: refused for the connection limit.
        auth_failures: connections that failed the secret check (nothing written).
        protocol_errors: connections closed for a malformed or unexpected frame.
        chunks_ok, chunks_bad_checksum, chunks_rejected: chunk outcomes.
        tasks_completed: tasks made durable under their final names.
        tasks_rejected: tasks refused (bad name, symlink, size, too many tasks, write error).
        tasks_aborted: unfinished tasks whose session went away (temporary file removed).
        bytes_written: payload bytes written and verified.
        stale_temp_files_removed: temporary files removed at start-up.
    """

    connections_accepted: int
    connections_active: int
    connections_refused: int
    auth_failures: int
    protocol_errors: int
    chunks_ok: int
    chunks_bad_checksum: int
    chunks_rejected: int
    tasks_completed: int
    tasks_rejected: int
    tasks_aborted: int
    bytes_written: int
    stale_temp_files_removed: int


class _Rejected(Exception):
    """A task the receiver refuses (the chunk is drained and answered REJECTED)."""


def is_loopback_host(host: str) -> bool:
    """True if every address ``host`` resolves to is a loopback address (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


class _Task:
    """One task being received: its temporary file and the verified byte intervals."""

    __slots__ = ("covered", "fd", "finished", "intervals", "key", "leaf", "lock", "name", "parent_fd",
                 "size_bytes", "tmp_name")

    def __init__(self, key: tuple[bytes, int], name: str, size_bytes: int, parent_fd: int, leaf: str,
                 tmp_name: str, fd: int) -> None:
        self.key = key
        self.name = name
        self.size_bytes = size_bytes
        self.parent_fd = parent_fd
        self.leaf = leaf
        self.tmp_name = tmp_name
        self.fd = fd
        self.intervals: list[tuple[int, int]] = []
        self.covered = 0
        self.finished = False
        self.lock = threading.Lock()

    def add(self, start: int, end: int) -> int:
        """Add a verified interval [start, end); returns the bytes now covered. Caller holds ``lock``."""
        merged: list[tuple[int, int]] = []
        placed = False
        for s, e in self.intervals:
            if e < start or s > end:
                if s > end and not placed:
                    merged.append((start, end))
                    placed = True
                merged.append((s, e))
            else:
                start, end = min(s, start), max(e, end)
        if not placed:
            merged.append((start, end))
        merged.sort()
        self.intervals = merged
        self.covered = sum(e - s for s, e in merged)
        return self.covered

    def discard(self) -> None:
        """Close and unlink the temporary file (idempotent). Caller holds ``lock``."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp_name, dir_fd=self.parent_fd)
        if self.parent_fd >= 0:
            os.close(self.parent_fd)
            self.parent_fd = -1


class Receiver:
    """Receives tasks into a directory; see the module docstring for the guarantees.

    Args:
        directory: existing directory the files go to (DIR).
        host: address to listen on (default 127.0.0.1).
        port: TCP port, 0 for any free port (read :attr:`port` after :meth:`start`).
        secret: shared secret (bytes, at least 16) every connection must prove; None: no secret, only
            allowed on a loopback address unless ``insecure`` is True.
        insecure: allow listening without a secret on a non-loopback address.
        tls: an ``ssl.SSLContext`` for the server side (see :func:`itp.transfer.auth.server_tls_context`).
        max_task_bytes: largest accepted task, bytes (1..2**50).
        max_chunk_bytes: largest accepted chunk, bytes (>= 1).
        max_concurrent_tasks: tasks being received at once (>= 1); more are rejected.
        max_connections: connections at once (>= 1); more are refused.
        buffer_bytes: per-connection receive buffer, bytes (>= 4096).
        writeback_bytes: start the disk writeback of every this many bytes received on a connection while
            the rest arrives, so the fsync before the acknowledgement has little left to write (0: only
            the final fsync). Default 16 MiB.
        idle_timeout_s: a connection silent this long is closed, seconds (> 0).
        handshake_timeout_s: time allowed for the authentication handshake, seconds (> 0).

    Raises:
        ValueError / TypeError: naming the bad argument (nothing is opened).

    Thread-safety: ``start``, ``close`` and ``metrics`` may be called from any thread.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        secret: bytes | None = None,
        insecure: bool = False,
        tls: ssl.SSLContext | None = None,
        max_task_bytes: int = MAX_TASK_BYTES,
        max_chunk_bytes: int = MAX_TASK_BYTES,
        max_concurrent_tasks: int = 256,
        max_connections: int = 64,
        buffer_bytes: int = 1 << 20,
        writeback_bytes: int = 16 << 20,
        idle_timeout_s: float = 600.0,
        handshake_timeout_s: float = 10.0,
    ) -> None:
        path = Path(directory)
        if not path.is_dir():
            raise ValueError(f"directory {os.fspath(directory)!r} is not an existing directory")
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty str, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in 0..65535, got {port!r}")
        if secret is not None:
            if not isinstance(secret, bytes):
                raise TypeError(f"secret must be bytes or None, got {type(secret).__name__}")
            if len(secret) < auth.MIN_SECRET_BYTES:
                raise ValueError(f"secret must be at least {auth.MIN_SECRET_BYTES} bytes, got {len(secret)}")
        elif not insecure and not is_loopback_host(host):
            raise ValueError(
                f"refusing to listen on non-loopback host {host!r} without a secret (give a secret, or "
                "insecure=True / --insecure to accept unauthenticated writes)"
            )
        if tls is not None and not isinstance(tls, ssl.SSLContext):
            raise TypeError(f"tls must be an ssl.SSLContext or None, got {type(tls).__name__}")
        for name, value, lo, hi in (
            ("max_task_bytes", max_task_bytes, 1, MAX_TASK_BYTES),
            ("max_chunk_bytes", max_chunk_bytes, 1, MAX_TASK_BYTES),
            ("max_concurrent_tasks", max_concurrent_tasks, 1, 1 << 20),
            ("max_connections", max_connections, 1, 1 << 16),
            ("buffer_bytes", buffer_bytes, 4096, 1 << 30),
            ("writeback_bytes", writeback_bytes, 0, 1 << 40),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name} must be an int in {lo}..{hi}, got {value!r}")
        timeouts = (("idle_timeout_s", idle_timeout_s), ("handshake_timeout_s", handshake_timeout_s))
        for name, fvalue in timeouts:
            if isinstance(fvalue, bool) or not isinstance(fvalue, (int, float)) or not 0 < fvalue < 1e9:
                raise ValueError(f"{name} must be a positive number of seconds, got {fvalue!r}")
        self._directory = path.resolve()
        self._host = host
        self._port = port
        self._secret = secret
        self._tls = tls
        self._max_task_bytes = max_task_bytes
        self._max_chunk_bytes = max_chunk_bytes
        self._max_tasks = max_concurrent_tasks
        self._max_connections = max_connections
        self._buffer_bytes = buffer_bytes
        self._writeback_bytes = writeback_bytes
        self._idle_timeout_s = float(idle_timeout_s)
        self._handshake_timeout_s = float(handshake_timeout_s)
        self._instance_id = secrets.token_bytes(16)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listener: socket.socket | None = None
        self._dir_fd = -1
        self._accept_thread: threading.Thread | None = None
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._session_conns: dict[bytes, int] = {}
        self._tasks: dict[tuple[bytes, int], _Task] = {}
        self._finished: OrderedDict[tuple[bytes, int], tuple[TaskStatus, str, int, str]] = OrderedDict()
        self._counts: dict[str, int] = dict.fromkeys(ReceiverMetrics.__dataclass_fields__, 0)

    # ------------------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        """The bound TCP port (the real one after :meth:`start`, also when 0 was asked for)."""
        return self._port

    @property
    def host(self) -> str:
        """The listening address."""
        return self._host

    @property
    def directory(self) -> Path:
        """The resolved destination directory."""
        return self._directory

    def start(self) -> None:
        """Clean stale temporary files, bind, listen and accept connections on a background thread.

        Raises:
            RuntimeError: already started or closed. OSError: the address cannot be bound.
        """
        with self._lock:
            if self._listener is not None or self._closed.is_set():
                raise RuntimeError("Receiver.start: already started or closed")
            self._dir_fd = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._counts["stale_temp_files_removed"] = self._remove_stale()
            infos = socket.getaddrinfo(
                self._host, self._port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
            family, _, _, _, addr = infos[0]
            listener = socket.socket(family, socket.SOCK_STREAM)
            try:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(addr)
                listener.listen(128)
            except BaseException:
                listener.close()
                os.close(self._dir_fd)
                self._dir_fd = -1
                raise
            self._listener = listener
            self._port = int(listener.getsockname()[1])
            self._accept_thread = threading.Thread(
                target=self._accept_loop, name="itp-receiver-accept", daemon=True
            )
            self._accept_thread.start()
        logger.info("receiving into %s on %s:%d", self._directory, self._host, self._port,
                    extra={"event": "listen", "port": self._port})

    def serve_forever(self, poll_s: float = 0.5) -> None:
        """Start if needed and block until :meth:`close` (from another thread or a signal handler).

        Waits in slices of ``poll_s`` seconds so that signal handlers run in the calling thread.
        """
        if self._listener is None and not self._closed.is_set():
            self.start()
        while not self._closed.wait(poll_s):
            pass

    def close(self) -> None:
        """Stop accepting, close every connection, remove unfinished temporary files. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            listener, self._listener = self._listener, None
            conns = list(self._conns.items())
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock, _ in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5.0)
        for _, thread in conns:
            thread.join(timeout=5.0)
        with self._lock:
            tasks = list(self._tasks.values())
            self._tasks.clear()
        for task in tasks:
            with task.lock:
                task.discard()
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
        logger.info("receiver on port %d closed", self._port)

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def metrics(self) -> ReceiverMetrics:
        """A consistent snapshot of the counters."""
        with self._lock:
            counts = dict(self._counts)
            counts["connections_active"] = len(self._conns)
        return ReceiverMetrics(**counts)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _remove_stale(self) -> int:
        removed = 0
        for root, dirs, files in os.walk(self._directory, followlinks=False):
            for f in files:
                if f.startswith(TEMP_PREFIX):
                    try:
                        os.unlink(os.path.join(root, f))
                        removed += 1
                    except OSError as exc:
                        logger.warning("could not remove stale temporary file %s: %s", f, exc)
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        if removed:
            logger.info("removed %d stale temporary files", removed)
        return removed

    # ------------------------------------------------------------------------------ connections
    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._closed.is_set():
            try:
                sock, peer = listener.accept()
            except OSError:
                if self._closed.is_set():
                    return
                continue
            with self._lock:
                full = len(self._conns) >= self._max_connections
                if not full and not self._closed.is_set():
                    thread = threading.Thread(target=self._serve, args=(sock, peer), name="itp-receiver-conn",
                                              daemon=True)
                    self._conns[sock] = thread
                    thread.start()  # under the lock: close() joins what it finds in _conns, started or not
            if full or self._closed.is_set():
                self._count("connections_refused")
                logger.warning("refused connection from %s: %d connections open", peer, self._max_connections)
                self._send_error(sock, f"too many connections (limit {self._max_connections})")
                sock.close()
                continue

    @staticmethod
    def _send_error(sock: socket.socket, message: str) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(encode(ErrorFrame(message)))

    def _serve(self, raw: socket.socket, peer: object) -> None:
        sock: socket.socket = raw
        session: bytes | None = None
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.settimeout(self._handshake_timeout_s)
            if self._tls is not None:
                sock = self._tls.wrap_socket(raw, server_side=True)
            session = self._handshake(sock, peer)
            if session is None:
                return
            sock.settimeout(self._idle_timeout_s)
            self._serve_frames(sock, session)
        except ProtocolError as exc:
            self._count("protocol_errors")
            logger.warning("protocol error from %s: %s (connection closed)", peer, exc,
                           extra={"event": "protocol_error"})
            self._send_error(sock, f"protocol error: {exc}")
        except (ConnectionError, TimeoutError, ssl.SSLError, OSError) as exc:
            if not self._closed.is_set():
                logger.info("connection from %s ended: %s", peer, exc)
        finally:
            try:
                sock.close()
            finally:
                raw.close()
                with self._lock:
                    self._conns.pop(raw, None)
                if session is not None:
                    self._leave_session(session)

    def _handshake(self, sock: socket.socket, peer: object) -> bytes | None:
        hello = recv_frame(sock)
        if not isinstance(hello, Hello):
            raise ProtocolError(f"expected HELLO, got {type(hello).__name__}")
        server_nonce = secrets.token_bytes(NONCE_BYTES)
        mac = auth.server_mac(self._secret, hello.client_nonce, server_nonce, hello.session_id)
        sock.sendall(encode(Challenge(server_nonce, self._instance_id, mac)))
        reply = recv_frame(sock)
        if not isinstance(reply, Auth):
            raise ProtocolError(f"expected AUTH, got {type(reply).__name__}")
        expected = auth.client_mac(self._secret, hello.client_nonce, server_nonce, hello.session_id)
        if not auth.macs_equal(reply.client_mac, expected):
            self._count("auth_failures")
            logger.warning("authentication failed from %s (wrong secret); connection closed", peer,
                           extra={"event": "auth_failure"})
            self._send_error(sock, "authentication failed")
            return None
        sock.sendall(encode(AuthOk(self._max_task_bytes, self._max_chunk_bytes)))
        with self._lock:
            self._counts["connections_accepted"] += 1
            self._session_conns[hello.session_id] = self._session_conns.get(hello.session_id, 0) + 1
        return hello.session_id

    def _leave_session(self, session: bytes) -> None:
        with self._lock:
            left = self._session_conns.get(session, 1) - 1
            if left > 0:
                self._session_conns[session] = left
                return
            self._session_conns.pop(session, None)
            orphans = [t for k, t in self._tasks.items() if k[0] == session]
            for t in orphans:
                del self._tasks[t.key]
        for task in orphans:
            with task.lock:
                task.discard()
        if orphans:
            self._count("tasks_aborted", len(orphans))
            logger.info("session ended with %d unfinished tasks; temporary files removed", len(orphans))

    def _serve_frames(self, sock: socket.socket, session: bytes) -> None:
        buf = bytearray(self._buffer_bytes)
        view = memoryview(buf)
        while not self._closed.is_set():
            try:
                frame: Frame = recv_frame(sock)
            except ConnectionError:
                return
            if isinstance(frame, ChunkHeader):
                status = self._receive_chunk(sock, session, frame, view)
                sock.sendall(encode(ChunkAck(frame.task_id, frame.offset, status)))
            elif isinstance(frame, Commit):
                sock.sendall(encode(self._commit(session, frame)))
            else:
                raise ProtocolError(f"unexpected {type(frame).__name__} frame after authentication")

    # ------------------------------------------------------------------------------ chunks
    def _receive_chunk(
        self, sock: socket.socket, session: bytes, h: ChunkHeader, view: memoryview
    ) -> ChunkStatus:
        if h.task_bytes > self._max_task_bytes:
            raise ProtocolError(f"task of {h.task_bytes} bytes over the limit of {self._max_task_bytes}")
        if h.length > self._max_chunk_bytes:
            raise ProtocolError(f"chunk of {h.length} bytes over the limit of {self._max_chunk_bytes}")
        task: _Task | None
        try:
            task = self._task_for(session, h)
        except _Rejected as exc:
            logger.warning("task %r refused: %s", h.name, exc, extra={"event": "task_rejected"})
            self._count("tasks_rejected")
            task = None
        fd = task.fd if task is not None else -1
        end = h.offset + h.length
        write_error: OSError | None = None
        crc, write_error = _recv_written(sock, fd, h.offset, end, view, self._writeback_bytes)
        trailer = recv_frame(sock)
        if not isinstance(trailer, ChunkEnd):
            raise ProtocolError(f"expected CHUNK_END, got {type(trailer).__name__}")
        if task is None:
            self._count("chunks_rejected")
            return ChunkStatus.REJECTED
        if write_error is not None:
            logger.error("writing task %r failed: %s", h.name, write_error)
            self._fail_task(task, f"write failed: {write_error}")
            self._count("chunks_rejected")
            return ChunkStatus.REJECTED
        if trailer.crc32c != crc:
            self._count("chunks_bad_checksum")
            logger.warning("checksum mismatch in task %r at offset %d (chunk not counted)", h.name, h.offset,
                           extra={"event": "bad_checksum"})
            return ChunkStatus.CHECKSUM
        with task.lock:
            if task.fd < 0 and not task.finished:  # aborted meanwhile (session end / close)
                return ChunkStatus.REJECTED
            covered = task.add(h.offset, end)
            if covered == task.size_bytes and not task.finished:
                try:
                    self._finalize_locked(task)
                except OSError as exc:
                    logger.error("finalising task %r failed: %s", h.name, exc)
                    self._fail_task_locked(task, f"finalising failed: {exc}")
                    self._count("chunks_rejected")
                    return ChunkStatus.REJECTED
        self._count("chunks_ok")
        self._count("bytes_written", h.length)
        return ChunkStatus.OK

    def _task_for(self, session: bytes, h: ChunkHeader) -> _Task:
        key = (session, h.task_id)
        with self._lock:
            task = self._tasks.get(key)
            if task is not None:
                if task.name != h.name or task.size_bytes != h.task_bytes:
                    raise ProtocolError(f"chunk of task {h.task_id} disagrees with its name or size")
                return task
            done = self._finished.get(key)
            if done is not None and done[0] is TaskStatus.OK:
                raise _Rejected(f"task {h.task_id} is already complete")
            if len(self._tasks) >= self._max_tasks:
                raise _Rejected(f"too many concurrent tasks (limit {self._max_tasks})")
            task = self._create_task(key, h)
            self._tasks[key] = task
            return task

    def _create_task(self, key: tuple[bytes, int], h: ChunkHeader) -> _Task:
        parts = name_components(h.name)
        if parts[-1].startswith(TEMP_PREFIX):
            raise _Rejected(f"name {h.name!r} uses the reserved prefix {TEMP_PREFIX!r}")
        parent = os.dup(self._dir_fd)
        try:
            for comp in parts[:-1]:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(comp, 0o755, dir_fd=parent)
                dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                child = os.open(comp, dir_flags, dir_fd=parent)
                os.close(parent)
                parent = child
            tmp = TEMP_PREFIX + secrets.token_hex(8)
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(tmp, flags, 0o600, dir_fd=parent)
            try:
                os.ftruncate(fd, h.task_bytes)
            except OSError:
                os.close(fd)
                os.unlink(tmp, dir_fd=parent)
                raise
        except OSError as exc:
            os.close(parent)
            raise _Rejected(f"cannot create {h.name!r} inside the directory: {exc.strerror or exc}") from None
        return _Task(key, h.name, h.task_bytes, parent, parts[-1], tmp, fd)

    def _finalize_locked(self, task: _Task) -> None:
        os.fchmod(task.fd, 0o644)
        os.fsync(task.fd)
        os.close(task.fd)
        task.fd = -1
        os.replace(task.tmp_name, task.leaf, src_dir_fd=task.parent_fd, dst_dir_fd=task.parent_fd)
        os.fsync(task.parent_fd)
        os.close(task.parent_fd)
        task.parent_fd = -1
        task.finished = True
        with self._lock:
            self._tasks.pop(task.key, None)
            self._remember(task.key, TaskStatus.OK, task.name, task.size_bytes, "")
            self._counts["tasks_completed"] += 1
        logger.info("received %s (%d bytes)", task.name, task.size_bytes,
                    extra={"event": "task_complete", "size_bytes": task.size_bytes})

    def _remember(self, key: tuple[bytes, int], status: TaskStatus, name: str, size: int, msg: str) -> None:
        self._finished[key] = (status, name, size, msg)
        while len(self._finished) > _FINISHED_MEMORY:
            self._finished.popitem(last=False)

    def _fail_task(self, task: _Task, message: str) -> None:
        with task.lock:
            self._fail_task_locked(task, message)

    def _fail_task_locked(self, task: _Task, message: str) -> None:
        task.discard()
        with self._lock:
            self._tasks.pop(task.key, None)
            self._remember(task.key, TaskStatus.FAILED, task.name, task.size_bytes, message)
            self._counts["tasks_rejected"] += 1

    def _commit(self, session: bytes, c: Commit) -> TaskAck:
        key = (session, c.task_id)
        with self._lock:
            done = self._finished.get(key)
        if done is None:
            return TaskAck(c.task_id, TaskStatus.INCOMPLETE, "task not complete here")
        status, name, size, msg = done
        if status is TaskStatus.OK and (name != c.name or size != c.task_bytes):
            raise ProtocolError(f"COMMIT of task {c.task_id} disagrees with its name or size")
        return TaskAck(c.task_id, status, msg)
