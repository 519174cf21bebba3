"""Helpers of the transfer tests: a hand-written authenticated client, chunk sender, file utilities."""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from pathlib import Path

from itp.transfer import auth
from itp.transfer.checksum import crc32c
from itp.transfer.protocol import Auth, Challenge, ChunkEnd, ChunkHeader, Frame, Hello, encode, recv_frame

SECRET = b"0123456789abcdef0123456789abcdef"


def handshake(
    port: int, secret: bytes | None = SECRET, session: bytes | None = None
) -> tuple[socket.socket, Frame]:
    """Connect and authenticate like a sender; returns the socket and the receiver's last frame."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    nonce = secrets.token_bytes(32)
    sid = session or secrets.token_bytes(16)
    sock.sendall(encode(Hello(nonce, sid, 0)))
    ch = recv_frame(sock)
    assert isinstance(ch, Challenge)
    sock.sendall(encode(Auth(auth.client_mac(secret, nonce, ch.server_nonce, sid))))
    return sock, recv_frame(sock)


def send_chunk(
    sock: socket.socket, task_id: int, name: str, data: bytes, *, task_bytes: int | None = None,
    offset: int = 0, crc: int | None = None,
) -> Frame:
    """Send one chunk (header, payload, trailer) and return the receiver's answer."""
    total = len(data) if task_bytes is None else task_bytes
    sock.sendall(encode(ChunkHeader(task_id, total, offset, len(data), name)))
    sock.sendall(data)
    sock.sendall(encode(ChunkEnd(crc32c(data) if crc is None else crc)))
    return recv_frame(sock)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def make_file(path: Path, size_bytes: int) -> Path:
    """A file of ``size_bytes`` random bytes (written in 1 MiB blocks)."""
    with path.open("wb") as f:
        left = size_bytes
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    return path


def all_files(root: Path) -> list[str]:
    """Every path under ``root``, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))
