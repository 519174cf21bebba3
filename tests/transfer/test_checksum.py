"""CRC-32C (itp.transfer.checksum) against a slow bitwise reference, and its argument checks."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itp import _native
from itp.transfer.checksum import crc32c, crc32c_hardware

_POLY = 0x82F63B78


def reference_crc32c(data: bytes, value: int = 0) -> int:
    """Bit-at-a-time CRC-32C (reflected Castagnoli polynomial), zlib.crc32 conventions."""
    c = value ^ 0xFFFFFFFF
    for byte in data:
        c ^= byte
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def test_check_value_of_rfc_3720() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert reference_crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.integers(0, 2**32 - 1), st.integers(0, 7))
def test_matches_the_reference_at_any_length_alignment_and_start(data: bytes, value: int, skew: int) -> None:
    buf = memoryview(bytes(skew) + data)[skew:]  # misaligned start
    expected = reference_crc32c(data, value)
    assert crc32c(buf, value) == expected
    assert _native.crc32c_portable(buf, value) == expected


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=40_000), st.data())
def test_chaining_equals_the_whole(data: bytes, draw: st.DataObject) -> None:
    cut = draw.draw(st.integers(0, len(data)))
    assert crc32c(data[cut:], crc32c(data[:cut])) == crc32c(data) == _native.crc32c_portable(data)


def test_long_buffers_through_the_interleaved_path_match_the_table_path() -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, size=3 * 4096 * 5 + 3 * 256 * 2 + 77, dtype=np.uint8).tobytes()
    for start in (0, 1, 5, 4096, 12_289):
        assert crc32c(data[start:]) == _native.crc32c_portable(data[start:])
    assert isinstance(crc32c_hardware(), bool)


def test_accepts_every_contiguous_buffer() -> None:
    data = bytes(range(256)) * 300
    expected = crc32c(data)
    assert crc32c(bytearray(data)) == expected
    assert crc32c(memoryview(data)) == expected
    assert crc32c(np.frombuffer(data, dtype=np.uint8)) == expected


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="data"):
        crc32c("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data"):
        crc32c(memoryview(bytes(64))[::2])  # not contiguous
    with pytest.raises(ValueError, match="value"):
        crc32c(b"x", 2**32)
    with pytest.raises(ValueError, match="value"):
        crc32c(b"x", -1)
    with pytest.raises(TypeError, match="value"):
        crc32c(b"x", 1.0)  # type: ignore[arg-type]


def test_threads_checksum_concurrently_with_identical_results() -> None:
    """The GIL is released for large buffers: 8 threads on shared data all get the single-thread value."""
    data = np.random.default_rng(5).integers(0, 256, size=1 << 20, dtype=np.uint8).tobytes()
    expected = crc32c(data)
    results: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(20):
            value = crc32c(data)
            with lock:
                results.append(value)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 160
