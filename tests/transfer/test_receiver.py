"""Receiver: verified chunks, atomic files, containment in DIR, limits, and every malformed frame refused."""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import pytest
from conftest import RawClient
from transfer_helpers import SECRET, all_files, handshake, send_chunk

from itp.transfer import Receiver
from itp.transfer.protocol import (
    HEADER,
    MAGIC,
    PROTOCOL_VERSION,
    AuthOk,
    ChunkAck,
    ChunkStatus,
    Commit,
    ErrorFrame,
    FrameType,
    Hello,
    TaskAck,
    TaskStatus,
    encode,
    recv_frame,
)
from itp.transfer.receiver import TEMP_PREFIX


def commit(sock: socket.socket, task_id: int, name: str, size: int) -> TaskAck:
    sock.sendall(encode(Commit(task_id, size, name)))
    ack = recv_frame(sock)
    assert isinstance(ack, TaskAck)
    return ack


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the receiver has closed the connection (an ERROR frame may come first)."""
    sock.settimeout(5.0)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True


def wait_for(predicate: object, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_a_task_in_two_chunks_lands_atomically(
    receiver: Receiver, raw_client: RawClient, out_dir: Path
) -> None:
    sock = raw_client()
    data = os.urandom(3000)
    a1 = send_chunk(sock, 7, "sub/dir/file.bin", data[1000:], task_bytes=3000, offset=1000)
    assert a1 == ChunkAck(7, 1000, ChunkStatus.OK)
    assert not (out_dir / "sub/dir/file.bin").exists()  # nothing under the final name while partial
    assert commit(sock, 7, "sub/dir/file.bin", 3000).status is TaskStatus.INCOMPLETE
    a2 = send_chunk(sock, 7, "sub/dir/file.bin", data[:1000], task_bytes=3000, offset=0)
    assert a2 == ChunkAck(7, 0, ChunkStatus.OK)
    assert (out_dir / "sub/dir/file.bin").read_bytes() == data
    assert commit(sock, 7, "sub/dir/file.bin", 3000) == TaskAck(7, TaskStatus.OK, "")
    assert not [p for p in all_files(out_dir) if TEMP_PREFIX in p]
    m = receiver.metrics()
    assert (m.tasks_completed, m.chunks_ok, m.bytes_written) == (1, 2, 3000)


def test_a_resent_overlapping_chunk_is_counted_once(raw_client: RawClient, out_dir: Path) -> None:
    sock = raw_client()
    data = os.urandom(20)
    for _ in range(2):
        assert send_chunk(sock, 1, "f", data[:10], task_bytes=20).status is ChunkStatus.OK
    assert not (out_dir / "f").exists()
    assert send_chunk(sock, 1, "f", data[5:], task_bytes=20, offset=5).status is ChunkStatus.OK
    assert (out_dir / "f").read_bytes() == data


def test_empty_file(raw_client: RawClient, out_dir: Path) -> None:
    sock = raw_client()
    assert send_chunk(sock, 1, "empty", b"").status is ChunkStatus.OK
    assert (out_dir / "empty").read_bytes() == b""


def test_checksum_mismatch_is_not_counted(receiver: Receiver, raw_client: RawClient, out_dir: Path) -> None:
    sock = raw_client()
    ack = send_chunk(sock, 1, "f", b"hello", crc=12345)
    assert ack == ChunkAck(1, 0, ChunkStatus.CHECKSUM)
    assert not (out_dir / "f").exists()
    assert receiver.metrics().chunks_bad_checksum == 1
    assert send_chunk(sock, 1, "f", b"hello").status is ChunkStatus.OK  # the resend completes it
    assert (out_dir / "f").read_bytes() == b"hello"


def test_wrong_secret_writes_nothing(receiver: Receiver, out_dir: Path) -> None:
    sock, answer = handshake(receiver.port, secret=b"not the secret at all!!")
    assert isinstance(answer, ErrorFrame) and "authentication" in answer.message
    assert closed_by_peer(sock)
    sock.close()
    assert wait_for(lambda: receiver.metrics().auth_failures == 1)
    assert all_files(out_dir) == []
    assert receiver.metrics().connections_accepted == 0


def test_no_chunk_before_authentication(receiver: Receiver, out_dir: Path) -> None:
    sock = socket.create_connection(("127.0.0.1", receiver.port), timeout=5.0)
    from itp.transfer.protocol import ChunkHeader

    sock.sendall(encode(ChunkHeader(1, 5, 0, 5, "f")) + b"hello")
    assert closed_by_peer(sock)
    sock.close()
    assert wait_for(lambda: receiver.metrics().protocol_errors == 1)
    assert all_files(out_dir) == []


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd-itp", "a/../../escape", "a\x00b", ".."])
def test_path_traversal_is_a_protocol_error(
    receiver: Receiver, raw_client: RawClient, out_dir: Path, name: str
) -> None:
    sock = raw_client()
    body = struct.pack("!QQQQH", 1, 4, 0, 4, len(name.encode())) + name.encode()
    sock.sendall(HEADER.pack(MAGIC, PROTOCOL_VERSION, FrameType.CHUNK, len(body)) + body + b"evil")
    assert closed_by_peer(sock)
    assert wait_for(lambda: receiver.metrics().protocol_errors == 1)
    assert all_files(out_dir) == []
    assert not (out_dir.parent / "escape").exists()


def test_symlinks_out_of_dir_are_refused(receiver: Receiver, raw_client: RawClient, out_dir: Path) -> None:
    outside = out_dir.parent / "outside"
    outside.mkdir()
    (out_dir / "link").symlink_to(outside, target_is_directory=True)
    (outside / "target").write_bytes(b"precious")
    (out_dir / "file-link").symlink_to(outside / "target")
    sock = raw_client()
    assert send_chunk(sock, 1, "link/x", b"evil").status is ChunkStatus.REJECTED
    assert list(outside.iterdir()) == [outside / "target"]
    # A final name that is a symlink is replaced, never written through.
    assert send_chunk(sock, 2, "file-link", b"new").status is ChunkStatus.OK
    assert (outside / "target").read_bytes() == b"precious"
    assert not (out_dir / "file-link").is_symlink() and (out_dir / "file-link").read_bytes() == b"new"
    assert send_chunk(sock, 3, TEMP_PREFIX + "x", b"x").status is ChunkStatus.REJECTED
    assert receiver.metrics().tasks_rejected == 2


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00" * 8,
        HEADER.pack(b"IT", PROTOCOL_VERSION + 1, FrameType.COMMIT, 0),
        HEADER.pack(b"IT", PROTOCOL_VERSION, 99, 0),
        HEADER.pack(b"IT", PROTOCOL_VERSION, FrameType.COMMIT, 1 << 30),
        encode(Hello(b"n" * 32, b"s" * 16, 0)),  # a handshake frame after authentication
        encode(ChunkAck(1, 0, ChunkStatus.OK)),  # a receiver-to-sender frame
    ],
)
def test_malformed_frames_close_the_connection(
    receiver: Receiver, raw_client: RawClient, out_dir: Path, garbage: bytes
) -> None:
    sock = raw_client()
    sock.sendall(garbage)
    assert closed_by_peer(sock)
    assert wait_for(lambda: receiver.metrics().protocol_errors == 1)
    assert all_files(out_dir) == []
    assert wait_for(lambda: receiver.metrics().connections_active == 0)


def test_trailer_must_follow_the_payload(receiver: Receiver, raw_client: RawClient, out_dir: Path) -> None:
    from itp.transfer.protocol import ChunkHeader

    sock = raw_client()
    sock.sendall(encode(ChunkHeader(1, 3, 0, 3, "f")) + b"abc" + encode(Commit(1, 3, "f")))
    assert closed_by_peer(sock)
    assert wait_for(lambda: receiver.metrics().protocol_errors == 1)
    assert wait_for(lambda: all_files(out_dir) == [])  # the session's temporary file is removed


def test_a_session_that_goes_away_leaves_no_partial_file(
    receiver: Receiver, raw_client: RawClient, out_dir: Path
) -> None:
    sock = raw_client()
    assert send_chunk(sock, 1, "big", b"x" * 10, task_bytes=100).status is ChunkStatus.OK
    assert any(TEMP_PREFIX in p for p in all_files(out_dir))
    sock.close()
    assert wait_for(lambda: receiver.metrics().tasks_aborted == 1)
    assert all_files(out_dir) == []


def test_stale_temporary_files_are_removed_at_start(out_dir: Path) -> None:
    (out_dir / "d").mkdir()
    (out_dir / "d" / (TEMP_PREFIX + "abc")).write_bytes(b"partial")
    (out_dir / "keep").write_bytes(b"k")
    with Receiver(out_dir) as r:
        assert r.metrics().stale_temp_files_removed == 1
    assert all_files(out_dir) == ["d", "keep"]


def test_limits(out_dir: Path) -> None:
    with Receiver(out_dir, secret=SECRET, max_task_bytes=100, max_concurrent_tasks=1, max_connections=2) as r:
        a, ok = handshake(r.port)
        assert isinstance(ok, AuthOk)
        assert send_chunk(a, 1, "one", b"x", task_bytes=50).status is ChunkStatus.OK
        assert send_chunk(a, 2, "two", b"y", task_bytes=50).status is ChunkStatus.REJECTED  # 2nd task
        b, _ = handshake(r.port)
        c = socket.create_connection(("127.0.0.1", r.port), timeout=5.0)
        refused = recv_frame(c)
        assert isinstance(refused, ErrorFrame) and "too many connections" in refused.message
        c.close()
        from itp.transfer.protocol import ChunkHeader

        b.sendall(encode(ChunkHeader(3, 101, 0, 1, "big")))  # over max_task_bytes: protocol error
        assert closed_by_peer(b)
        assert wait_for(lambda: r.metrics().protocol_errors == 1)
        assert r.metrics().connections_refused == 1
        a.close()
        b.close()
    assert all_files(out_dir) == []


def test_constructor_checks(out_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an existing directory"):
        Receiver(tmp_path / "missing")
    with pytest.raises(ValueError, match="non-loopback"):
        Receiver(out_dir, host="0.0.0.0")
    Receiver(out_dir, host="0.0.0.0", insecure=True)  # allowed when asked for explicitly
    Receiver(out_dir, host="0.0.0.0", secret=SECRET)
    with pytest.raises(ValueError, match="at least 16"):
        Receiver(out_dir, secret=b"short")
    with pytest.raises(TypeError, match="secret"):
        Receiver(out_dir, secret="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="port"):
        Receiver(out_dir, port=70000)
    with pytest.raises(ValueError, match="buffer_bytes"):
        Receiver(out_dir, buffer_bytes=1)
    with pytest.raises(ValueError, match="idle_timeout_s"):
        Receiver(out_dir, idle_timeout_s=0)
    with pytest.raises(ValueError, match="writeback_bytes"):
        Receiver(out_dir, writeback_bytes=-1)
    r = Receiver(out_dir)
    r.start()
    with pytest.raises(RuntimeError):
        r.start()
    r.close()
    r.close()  # idempotent


@pytest.mark.parametrize("writeback_bytes", [0, 4096, 100_000])
def test_early_writeback_keeps_every_byte(tmp_path: Path, writeback_bytes: int) -> None:
    """Writeback started window by window (on a real disk-backed directory, not tmpfs) changes no byte,
    whatever the window against the chunk and buffer sizes (0: only the final fsync)."""
    out = tmp_path / "wb"
    out.mkdir()
    r = Receiver(out, secret=SECRET, buffer_bytes=8192, writeback_bytes=writeback_bytes)
    r.start()
    try:
        sock, ok = handshake(r.port)
        assert isinstance(ok, AuthOk)
        try:
            data = os.urandom(700_001)
            assert send_chunk(sock, 1, "f.bin", data[300_000:], task_bytes=len(data), offset=300_000) == (
                ChunkAck(1, 300_000, ChunkStatus.OK)
            )
            assert send_chunk(sock, 1, "f.bin", data[:300_000], task_bytes=len(data), offset=0) == (
                ChunkAck(1, 0, ChunkStatus.OK)
            )
            assert commit(sock, 1, "f.bin", len(data)) == TaskAck(1, TaskStatus.OK, "")
            assert (out / "f.bin").read_bytes() == data
        finally:
            sock.close()
    finally:
        r.close()


def test_start_writeback_is_only_advice(tmp_path: Path) -> None:
    """A bad descriptor or a file system without writeback raises nothing."""
    from itp.transfer.receiver import _start_writeback

    _start_writeback(-1, 0, 4096)
    f = tmp_path / "x"
    f.write_bytes(b"x" * 10_000)
    fd = os.open(f, os.O_RDWR)
    try:
        _start_writeback(fd, 0, 10_000)
    finally:
        os.close(fd)
    assert f.read_bytes() == b"x" * 10_000
