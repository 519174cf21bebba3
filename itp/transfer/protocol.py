"""The itp transfer wire format: versioned, length-prefixed binary frames, and a parser safe to fuzz.

Every frame starts with a fixed 8-byte header (network byte order)::

    magic  2s   b"IT"
    version B   PROTOCOL_VERSION (2: CRC-32C trailers; 1 had zlib CRC-32); any other value is a protocol error
    type    B   one of FrameType
    length  I   body bytes that follow; each type has an exact or maximum body size (MAX_BODY_BYTES)

Bodies (network byte order; ``name`` is UTF-8 of ``name_len`` bytes, at most MAX_NAME_BYTES)::

    HELLO      S->R  client_nonce 32s, session_id 16s, stream_index B
    CHALLENGE  R->S  server_nonce 32s, instance_id 16s, server_mac 32s
    AUTH       S->R  client_mac 32s
    AUTH_OK    R->S  max_task_bytes Q, max_chunk_bytes Q
    CHUNK      S->R  task_id Q, task_bytes Q, offset Q, length Q, name_len H, name
                     followed by ``length`` raw payload bytes (not part of the frame body: streamed,
                     never buffered whole), then a CHUNK_END frame
    CHUNK_END  S->R  crc32c I  (CRC-32C of the payload, itp.transfer.checksum)
    CHUNK_ACK  R->S  task_id Q, offset Q, status B  (ChunkStatus)
    COMMIT     S->R  task_id Q, task_bytes Q, name_len H, name
    TASK_ACK   R->S  task_id Q, status B (TaskStatus), msg_len H, message (UTF-8, at most MAX_MESSAGE_BYTES)
    ERROR      R->S  msg_len H, message  (sent before the receiver closes a connection it refuses)

A connection is: HELLO, CHALLENGE, AUTH, AUTH_OK (see :mod:`itp.transfer.auth`), then any number of
CHUNK+payload+CHUNK_END and COMMIT frames from the sender, answered by CHUNK_ACK and TASK_ACK frames.

Every decoding function raises :class:`ProtocolError` on anything malformed (bad magic, version, type,
body size, trailing bytes, invalid UTF-8, chunk outside its task, length over the limits); the caller
closes the connection. The decoder never allocates more than MAX_BODY_BYTES[type] for a body.
"""

from __future__ import annotations

import enum
import socket
import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "HEADER",
    "MAGIC",
    "MAX_BODY_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_NAME_BYTES",
    "NONCE_BYTES",
    "PROTOCOL_VERSION",
    "Auth",
    "AuthOk",
    "Challenge",
    "ChunkAck",
    "ChunkEnd",
    "ChunkHeader",
    "ChunkStatus",
    "Commit",
    "ErrorFrame",
    "Frame",
    "FrameType",
    "Hello",
    "ProtocolError",
    "TaskAck",
    "TaskStatus",
    "decode_body",
    "decode_frame",
    "decode_header",
    "encode",
    "name_components",
    "recv_exact",
    "recv_frame",
]

MAGIC: Final = b"IT"
PROTOCOL_VERSION: Final = 2
HEADER: Final = struct.Struct("!2sBBI")
NONCE_BYTES: Final = 32
MAC_BYTES: Final = 32
SESSION_BYTES: Final = 16
MAX_NAME_BYTES: Final = 4096
"""Longest task name (relative path, UTF-8 bytes)."""
MAX_COMPONENT_BYTES: Final = 255
MAX_MESSAGE_BYTES: Final = 1024


class ProtocolError(Exception):
    """A malformed or unexpected frame; the connection it came from must be closed."""


class FrameType(enum.IntEnum):
    """Frame type codes (the header's ``type`` byte)."""

    HELLO = 1
    CHALLENGE = 2
    AUTH = 3
    AUTH_OK = 4
    CHUNK = 5
    CHUNK_END = 6
    CHUNK_ACK = 7
    COMMIT = 8
    TASK_ACK = 9
    ERROR = 10


class ChunkStatus(enum.IntEnum):
    """CHUNK_ACK status: OK (verified and written), CHECKSUM (mismatch: resend), REJECTED (task refused)."""

    OK = 0
    CHECKSUM = 1
    REJECTED = 2


class TaskStatus(enum.IntEnum):
    """TASK_ACK status: OK (fsynced under its final name), INCOMPLETE (resend the task), FAILED (give up)."""

    OK = 0
    INCOMPLETE = 1
    FAILED = 2


_HELLO = struct.Struct("!32s16sB")
_CHALLENGE = struct.Struct("!32s16s32s")
_AUTH = struct.Struct("!32s")
_AUTH_OK = struct.Struct("!QQ")
_CHUNK = struct.Struct("!QQQQH")
_CHUNK_END = struct.Struct("!I")
_CHUNK_ACK = struct.Struct("!QQB")
_COMMIT = struct.Struct("!QQH")
_TASK_ACK = struct.Struct("!QBH")
_ERROR = struct.Struct("!H")

MAX_BODY_BYTES: Final[dict[int, int]] = {
    FrameType.HELLO: _HELLO.size,
    FrameType.CHALLENGE: _CHALLENGE.size,
    FrameType.AUTH: _AUTH.size,
    FrameType.AUTH_OK: _AUTH_OK.size,
    FrameType.CHUNK: _CHUNK.size + MAX_NAME_BYTES,
    FrameType.CHUNK_END: _CHUNK_END.size,
    FrameType.CHUNK_ACK: _CHUNK_ACK.size,
    FrameType.COMMIT: _COMMIT.size + MAX_NAME_BYTES,
    FrameType.TASK_ACK: _TASK_ACK.size + MAX_MESSAGE_BYTES,
    FrameType.ERROR: _ERROR.size + MAX_MESSAGE_BYTES,
}
"""Largest body of each frame type, bytes (fixed-size types: exactly this)."""
_FIXED: Final = frozenset(
    {FrameType.HELLO, FrameType.CHALLENGE, FrameType.AUTH, FrameType.AUTH_OK, FrameType.CHUNK_END,
     FrameType.CHUNK_ACK}
)


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame of a connection: the sender's nonce, its session id and which stream this is."""

    client_nonce: bytes
    session_id: bytes
    stream_index: int


@dataclass(frozen=True, slots=True)
class Challenge:
    """The receiver's nonce, its instance id (new on every start) and its proof of the secret."""

    server_nonce: bytes
    instance_id: bytes
    server_mac: bytes


@dataclass(frozen=True, slots=True)
class Auth:
    """The sender's proof of the secret."""

    client_mac: bytes


@dataclass(frozen=True, slots=True)
class AuthOk:
    """Authenticated; the receiver's limits (bytes)."""

    max_task_bytes: int
    max_chunk_bytes: int


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    """A chunk of ``length`` bytes at ``offset`` of task ``task_id`` (``task_bytes`` long, named ``name``)."""

    task_id: int
    task_bytes: int
    offset: int
    length: int
    name: str


@dataclass(frozen=True, slots=True)
class ChunkEnd:
    """Trailer after a chunk's payload: its CRC-32C (:func:`itp.transfer.checksum.crc32c`)."""

    crc32c: int


@dataclass(frozen=True, slots=True)
class ChunkAck:
    """The receiver verified (or refused) the chunk at ``offset`` of ``task_id``."""

    task_id: int
    offset: int
    status: ChunkStatus


@dataclass(frozen=True, slots=True)
class Commit:
    """The sender has every chunk acknowledged and asks for the task's acknowledgement."""

    task_id: int
    task_bytes: int
    name: str


@dataclass(frozen=True, slots=True)
class TaskAck:
    """The task is durable under its final name (OK), must be resent (INCOMPLETE), or failed (FAILED)."""

    task_id: int
    status: TaskStatus
    message: str


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """Why the receiver is closing the connection."""

    message: str


Frame = Hello | Challenge | Auth | AuthOk | ChunkHeader | ChunkEnd | ChunkAck | Commit | TaskAck | ErrorFrame


def name_components(name: str) -> tuple[str, ...]:
    """Split a task name (a relative path with ``/`` separators) into checked components.

    Raises:
        ProtocolError: empty, absolute, over MAX_NAME_BYTES / MAX_COMPONENT_BYTES, or with an empty,
            ``.`` or ``..`` component, a NUL or a backslash.
    """
    if not isinstance(name, str):
        raise ProtocolError(f"name must be a str, got {type(name).__name__}")
    encoded = name.encode("utf-8", "surrogatepass")
    if not encoded or len(encoded) > MAX_NAME_BYTES:
        raise ProtocolError(f"name must be 1..{MAX_NAME_BYTES} bytes, got {len(encoded)}")
    if "\x00" in name or "\\" in name:
        raise ProtocolError(f"name {name!r} contains NUL or a backslash")
    if name.startswith("/"):
        raise ProtocolError(f"name {name!r} is absolute")
    parts = tuple(name.split("/"))
    for part in parts:
        if part in ("", ".", ".."):
            raise ProtocolError(f"name {name!r} has an empty, '.' or '..' component")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            raise ProtocolError(f"name {name!r} has a component over {MAX_COMPONENT_BYTES} bytes")
    return parts


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not valid UTF-8") from None


def _encode_text(text: str, limit: int, what: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > limit:
        raise ValueError(f"{what} must be at most {limit} UTF-8 bytes, got {len(data)}")
    return data


def encode(frame: Frame) -> bytes:
    """The frame's bytes (header + body). For CHUNK, the payload and CHUNK_END follow separately.

    Raises:
        ValueError: a field out of range (names over MAX_NAME_BYTES, negative integers, wrong nonce sizes).
    """
    try:
        if isinstance(frame, Hello):
            t, body = FrameType.HELLO, _HELLO.pack(frame.client_nonce, frame.session_id, frame.stream_index)
            _check_len(frame.client_nonce, NONCE_BYTES, "client_nonce")
            _check_len(frame.session_id, SESSION_BYTES, "session_id")
        elif isinstance(frame, Challenge):
            _check_len(frame.server_nonce, NONCE_BYTES, "server_nonce")
            _check_len(frame.instance_id, SESSION_BYTES, "instance_id")
            _check_len(frame.server_mac, MAC_BYTES, "server_mac")
            t = FrameType.CHALLENGE
            body = _CHALLENGE.pack(frame.server_nonce, frame.instance_id, frame.server_mac)
        elif isinstance(frame, Auth):
            _check_len(frame.client_mac, MAC_BYTES, "client_mac")
            t, body = FrameType.AUTH, _AUTH.pack(frame.client_mac)
        elif isinstance(frame, AuthOk):
            t, body = FrameType.AUTH_OK, _AUTH_OK.pack(frame.max_task_bytes, frame.max_chunk_bytes)
        elif isinstance(frame, ChunkHeader):
            name = _encode_text(frame.name, MAX_NAME_BYTES, "name")
            t = FrameType.CHUNK
            body = _CHUNK.pack(frame.task_id, frame.task_bytes, frame.offset, frame.length, len(name)) + name
        elif isinstance(frame, ChunkEnd):
            t, body = FrameType.CHUNK_END, _CHUNK_END.pack(frame.crc32c)
        elif isinstance(frame, ChunkAck):
            t, body = FrameType.CHUNK_ACK, _CHUNK_ACK.pack(frame.task_id, frame.offset, int(frame.status))
        elif isinstance(frame, Commit):
            name = _encode_text(frame.name, MAX_NAME_BYTES, "name")
            t, body = FrameType.COMMIT, _COMMIT.pack(frame.task_id, frame.task_bytes, len(name)) + name
        elif isinstance(frame, TaskAck):
            msg = _encode_text(frame.message, MAX_MESSAGE_BYTES, "message")
            t, body = FrameType.TASK_ACK, _TASK_ACK.pack(frame.task_id, int(frame.status), len(msg)) + msg
        elif isinstance(frame, ErrorFrame):
            msg = _encode_text(frame.message, MAX_MESSAGE_BYTES, "message")
            t, body = FrameType.ERROR, _ERROR.pack(len(msg)) + msg
        else:
            raise TypeError(f"frame must be a protocol frame, got {type(frame).__name__}")
    except struct.error as exc:
        raise ValueError(f"{type(frame).__name__} field out of range: {exc}") from None
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, int(t), len(body)) + body


def _check_len(value: bytes, n: int, what: str) -> None:
    if len(value) != n:
        raise ValueError(f"{what} must be {n} bytes, got {len(value)}")


def decode_header(header: bytes) -> tuple[FrameType, int]:
    """``(type, body_length)`` of an 8-byte header.

    Raises:
        ProtocolError: wrong size, magic or version, unknown type, or a body length over the type's limit.
    """
    if len(header) != HEADER.size:
        raise ProtocolError(f"frame header must be {HEADER.size} bytes, got {len(header)}")
    magic, version, type_code, length = HEADER.unpack(header)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {version} (this side speaks {PROTOCOL_VERSION})")
    try:
        ftype = FrameType(type_code)
    except ValueError:
        raise ProtocolError(f"unknown frame type {type_code}") from None
    limit = MAX_BODY_BYTES[ftype]
    if length > limit or (ftype in _FIXED and length != limit):
        raise ProtocolError(f"{ftype.name} body of {length} bytes (limit {limit})")
    return ftype, length


def _named(body: bytes, fixed: struct.Struct, what: str) -> tuple[tuple[int, ...], str]:
    if len(body) < fixed.size:
        raise ProtocolError(f"{what} body too short ({len(body)} bytes)")
    values = fixed.unpack_from(body)
    n = values[-1]
    if len(body) != fixed.size + n:
        raise ProtocolError(f"{what} text length {n} does not match body of {len(body)} bytes")
    return values, _text(body[fixed.size:], what)


def decode_body(ftype: FrameType, body: bytes) -> Frame:
    """Decode a body whose header :func:`decode_header` accepted.

    Raises:
        ProtocolError: any inconsistency (sizes, UTF-8, a chunk outside its task, bad status, bad name).
    """
    if len(body) > MAX_BODY_BYTES[ftype] or (ftype in _FIXED and len(body) != MAX_BODY_BYTES[ftype]):
        raise ProtocolError(f"{ftype.name} body of {len(body)} bytes")
    if ftype is FrameType.HELLO:
        nonce, session, index = _HELLO.unpack(body)
        return Hello(nonce, session, index)
    if ftype is FrameType.CHALLENGE:
        return Challenge(*_CHALLENGE.unpack(body))
    if ftype is FrameType.AUTH:
        return Auth(*_AUTH.unpack(body))
    if ftype is FrameType.AUTH_OK:
        return AuthOk(*_AUTH_OK.unpack(body))
    if ftype is FrameType.CHUNK:
        (task_id, task_bytes, offset, length, _), name = _named(body, _CHUNK, "CHUNK")
        if offset + length > task_bytes:
            raise ProtocolError(f"chunk [{offset}, {offset + length}) outside a task of {task_bytes} bytes")
        name_components(name)
        return ChunkHeader(task_id, task_bytes, offset, length, name)
    if ftype is FrameType.CHUNK_END:
        return ChunkEnd(*_CHUNK_END.unpack(body))
    if ftype is FrameType.CHUNK_ACK:
        task_id, offset, status = _CHUNK_ACK.unpack(body)
        try:
            return ChunkAck(task_id, offset, ChunkStatus(status))
        except ValueError:
            raise ProtocolError(f"unknown chunk status {status}") from None
    if ftype is FrameType.COMMIT:
        (task_id, task_bytes, _), name = _named(body, _COMMIT, "COMMIT")
        name_components(name)
        return Commit(task_id, task_bytes, name)
    if ftype is FrameType.TASK_ACK:
        (task_id, status, _), message = _named(body, _TASK_ACK, "TASK_ACK")
        try:
            return TaskAck(task_id, TaskStatus(status), message)
        except ValueError:
            raise ProtocolError(f"unknown task status {status}") from None
    (_,), message = _named(body, _ERROR, "ERROR")
    return ErrorFrame(message)


def decode_frame(data: bytes) -> tuple[Frame, int]:
    """Decode the first frame of ``data``: ``(frame, bytes consumed)``.

    Raises:
        ProtocolError: malformed, or ``data`` holds less than one whole frame.
    """
    if len(data) < HEADER.size:
        raise ProtocolError(f"truncated header ({len(data)} bytes)")
    ftype, length = decode_header(bytes(data[: HEADER.size]))
    end = HEADER.size + length
    if len(data) < end:
        raise ProtocolError(f"truncated {ftype.name} body ({len(data) - HEADER.size} of {length} bytes)")
    return decode_body(ftype, bytes(data[HEADER.size:end])), end


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from ``sock``.

    Raises:
        ConnectionError: the peer closed the connection first (EOF).
        OSError: socket errors and timeouts.
    """
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError(f"connection closed after {got} of {n} bytes")
        got += k
    return bytes(buf)


def recv_frame(sock: socket.socket) -> Frame:
    """Read and decode one frame from ``sock`` (at most 8 + MAX_BODY_BYTES[type] bytes are read).

    Raises:
        ProtocolError: malformed frame. ConnectionError/OSError: transport failure.
    """
    ftype, length = decode_header(recv_exact(sock, HEADER.size))
    return decode_body(ftype, recv_exact(sock, length) if length else b"")
