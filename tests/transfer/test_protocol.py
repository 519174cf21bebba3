"""Wire format: every frame round-trips; the parser turns any malformed input into ProtocolError only."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itp.transfer.protocol import (
    HEADER,
    MAGIC,
    MAX_BODY_BYTES,
    MAX_NAME_BYTES,
    PROTOCOL_VERSION,
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
    FrameType,
    Hello,
    ProtocolError,
    TaskAck,
    TaskStatus,
    decode_frame,
    decode_header,
    encode,
    name_components,
)

u64 = st.integers(0, 2**64 - 1)
b32 = st.binary(min_size=32, max_size=32)
b16 = st.binary(min_size=16, max_size=16)
component = st.text(
    st.characters(blacklist_characters="/\\\x00", blacklist_categories=("Cs",)), min_size=1, max_size=20
).filter(lambda c: c not in (".", ".."))
names = st.lists(component, min_size=1, max_size=4).map("/".join)


@st.composite
def chunk_headers(draw: st.DrawFn) -> ChunkHeader:
    task_bytes = draw(st.integers(0, 2**50))
    offset = draw(st.integers(0, task_bytes))
    length = draw(st.integers(0, task_bytes - offset))
    return ChunkHeader(draw(u64), task_bytes, offset, length, draw(names))


frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(Hello, b32, b16, st.integers(0, 255)),
    st.builds(Challenge, b32, b16, b32),
    st.builds(Auth, b32),
    st.builds(AuthOk, u64, u64),
    chunk_headers(),
    st.builds(ChunkEnd, st.integers(0, 2**32 - 1)),
    st.builds(ChunkAck, u64, u64, st.sampled_from(ChunkStatus)),
    st.builds(Commit, u64, u64, names),
    st.builds(TaskAck, u64, st.sampled_from(TaskStatus), st.text(max_size=100)),
    st.builds(ErrorFrame, st.text(max_size=100)),
)


@given(frames)
def test_every_frame_round_trips(frame: Frame) -> None:
    data = encode(frame)
    decoded, used = decode_frame(data + b"trailing")
    assert decoded == frame
    assert used == len(data)


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_random_bytes_raise_only_protocol_error(data: bytes) -> None:
    try:
        frame, used = decode_frame(data)
    except ProtocolError:
        return
    assert 0 < used <= len(data)
    assert encode(frame) == data[:used]  # whatever decodes is canonical


@given(frames, st.data())
@settings(max_examples=500)
def test_mutated_frames_raise_only_protocol_error(frame: Frame, data: st.DataObject) -> None:
    raw = bytearray(encode(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        try:
            decoded, used = decode_frame(candidate)
        except ProtocolError:
            continue
        assert encode(decoded) == candidate[:used]


def test_header_checks() -> None:
    good = encode(ChunkEnd(7))
    with pytest.raises(ProtocolError, match="magic"):
        decode_header(b"XX" + good[2:8])
    with pytest.raises(ProtocolError, match="version"):
        decode_header(HEADER.pack(MAGIC, PROTOCOL_VERSION + 1, FrameType.CHUNK_END, 4))
    with pytest.raises(ProtocolError, match="unknown frame type"):
        decode_header(HEADER.pack(MAGIC, PROTOCOL_VERSION, 99, 0))
    with pytest.raises(ProtocolError, match="limit"):  # fixed-size body of the wrong size
        decode_header(HEADER.pack(MAGIC, PROTOCOL_VERSION, FrameType.CHUNK_END, 5))
    too_big = MAX_BODY_BYTES[FrameType.CHUNK] + 1
    with pytest.raises(ProtocolError, match="limit"):  # a huge length is refused before any allocation
        decode_header(HEADER.pack(MAGIC, PROTOCOL_VERSION, FrameType.CHUNK, too_big))
    with pytest.raises(ProtocolError, match="8 bytes"):
        decode_header(good[:7])


def test_chunk_outside_its_task_is_refused() -> None:
    body = struct.pack("!QQQQH", 1, 100, 90, 20, 1) + b"a"
    data = HEADER.pack(MAGIC, PROTOCOL_VERSION, FrameType.CHUNK, len(body)) + body
    with pytest.raises(ProtocolError, match="outside"):
        decode_frame(data)


def test_name_length_field_must_match_body() -> None:
    body = struct.pack("!QQQQH", 1, 100, 0, 10, 5) + b"abc"
    data = HEADER.pack(MAGIC, PROTOCOL_VERSION, FrameType.CHUNK, len(body)) + body
    with pytest.raises(ProtocolError, match="does not match"):
        decode_frame(data)


def test_invalid_utf8_name_is_refused() -> None:
    body = struct.pack("!QQH", 1, 1, 2) + b"\xff\xfe"
    data = HEADER.pack(MAGIC, PROTOCOL_VERSION, FrameType.COMMIT, len(body)) + body
    with pytest.raises(ProtocolError, match="UTF-8"):
        decode_frame(data)


@pytest.mark.parametrize(
    "name",
    ["", "/etc/passwd", "../x", "a/../b", "a/./b", "a//b", "a/", ".", "..", "a\x00b", "a\\b",
     "x" * 256, "a/" * 2048 + "b"],
)
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ProtocolError):
        name_components(name)


def test_good_names_split_into_components() -> None:
    assert name_components("a") == ("a",)
    assert name_components("dir/sub/file.bin") == ("dir", "sub", "file.bin")
    assert name_components("..hidden") == ("..hidden",)
    assert len("é".encode()) == 2 and name_components("é" * 127) == ("é" * 127,)


def test_encode_rejects_out_of_range_fields() -> None:
    with pytest.raises(ValueError, match="client_nonce"):
        encode(Hello(b"short", b"s" * 16, 0))
    with pytest.raises(ValueError, match="out of range"):
        encode(ChunkAck(-1, 0, ChunkStatus.OK))
    with pytest.raises(ValueError, match="name"):
        encode(Commit(1, 1, "x" * (MAX_NAME_BYTES + 1)))
    with pytest.raises(TypeError):
        encode("not a frame")  # type: ignore[arg-type]
