"""The 15-action table and the equal-finish-time split of a task's bytes over streams.

Actions: 0-3 one stream; 4-9 pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3); 10-13 triples (0,1,2) (0,1,3)
(0,2,3) (1,2,3); 14 all four. ``decode_action`` and ``encode_streams`` are exact inverses.

Split physics: with rate r_i (bit/s) and latency L_i (s), every used stream finishes at the same
time ``T = (8 S + sum r_i L_i) / sum r_i``; stream i carries ``c_i = r_i (T - L_i) / 8`` bytes. Streams
are admitted by latency; one whose latency alone reaches T (or whose rate is 0) gets nothing and is
dropped. Chunks are rounded by largest remainder so they sum exactly to S. Implemented natively
(``cpp/src/actions.cpp``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy.typing as npt

from itp import _native

NUM_ACTIONS: int = int(_native.NUM_ACTIONS)
MAX_TASK_BYTES: int = int(_native.MAX_TASK_BYTES)
ACTION_STREAMS: tuple[tuple[int, ...], ...] = tuple(tuple(s) for s in _native.ACTION_STREAMS)

__all__ = [
    "ACTION_STREAMS",
    "MAX_TASK_BYTES",
    "NUM_ACTIONS",
    "Split",
    "decode_action",
    "encode_streams",
    "split_task",
]


@dataclass(frozen=True)
class Split:
    """A task's bytes placed on streams.

    Attributes:
        chunk_bytes: bytes per stream 0..3 (0 for unused streams); sums to the task size.
        expected_time_s: predicted completion time in seconds (the equal finish time; +inf when no
            chosen stream has a positive rate).
    """

    chunk_bytes: tuple[int, int, int, int]
    expected_time_s: float

    @property
    def stream_ids(self) -> tuple[int, ...]:
        """Streams that carry at least one byte, ascending."""
        return tuple(i for i, c in enumerate(self.chunk_bytes) if c > 0)


def decode_action(action: int) -> tuple[int, ...]:
    """Stream ids (ascending) of ``action``, the inverse of :func:`encode_streams`.

    Args:
        action: an int (Python or numpy integer, not bool) in 0..14.

    Raises:
        TypeError: ``action`` is not an int.
        ValueError: ``action`` is outside 0..14 (the value is named).

    O(1), thread-safe.
    """
    return tuple(_native.decode_action(action))


def encode_streams(streams: Iterable[int]) -> int:
    """The action (0..14) whose stream set is ``streams``, the inverse of :func:`decode_action`.

    Args:
        streams: one to four distinct stream ids in 0..3, any order.

    Raises:
        TypeError: an id is not an int.
        ValueError: no ids, an id outside 0..3, or an id given twice (named).

    O(1), thread-safe.
    """
    return int(_native.encode_streams(list(streams)))


def split_task(size_bytes: int, action: int, rate_bps: npt.ArrayLike, latency_s: npt.ArrayLike) -> Split:
    """Split ``size_bytes`` (1..2**50) over the streams of ``action`` so that finish times are equal.

    Args:
        size_bytes: task size in bytes, an int in 1..2**50.
        action: 0..14.
        rate_bps: 4 rate estimates, bits per second, finite and >= 0.
        latency_s: 4 latencies, seconds, finite and >= 0.

    Raises:
        TypeError, ValueError: naming the bad argument.

    Complexity O(1); thread-safe; native.
    """
    chunks, expected = _native.split_task(size_bytes, action, rate_bps, latency_s)
    return Split(
        chunk_bytes=(int(chunks[0]), int(chunks[1]), int(chunks[2]), int(chunks[3])),
        expected_time_s=float(expected),
    )
