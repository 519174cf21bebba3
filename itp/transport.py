"""The transport-aware equal-finish split: the production chunking rule of every itp decision.

A stream is a TCP-like connection, so a chunk of ``b`` bits on stream i (effective rate ``r`` bit/s,
smoothed RTT ``R`` s) takes

    t(b) = SETUP_RTTS * R + u(b)

``SETUP_RTTS = 2``: 1 RTT handshake + 0.5 RTT request before data, and the last byte lands 0.5 RTT after it
is sent. ``u`` is slow start from an initial window ``W = INITIAL_WINDOW_BITS`` (10 x 1460 bytes, RFC 6928)
doubling each RTT up to the bandwidth-delay product ``r R``, then the full rate::

    if r R > W:  ramp s = R log2(r R / W) carrying rho = r R - W bits, else s = rho = 0
    u(b) = R log2(1 + b / W)      for b <= rho
    u(b) = s + (b - rho) / r      for b >  rho

The split over a set of streams finds the common finish time ``T`` at which the bits every stream has
delivered sum to ``8 S`` (Newton's method on a convex, non-decreasing function, from the right), gives each
stream ``S * B_i(T) / sum B(T)`` bytes rounded by largest remainder (summing exactly to ``S``), and drops
streams whose set-up alone outlasts ``T``. For small chunks this differs sharply from the plain
``latency + bytes / rate`` split (``itp.actions.split_task``): a 64 KiB chunk spends ~4.5 RTTs whatever the
rate, so spreading it over several short-RTT streams pays off; for chunks past the ramp it equals the plain
split with latency ``2 R + s - rho / r``.

Implemented natively (``cpp/src/transport.cpp``); ``production_split`` applies it to a raw decision state
with effective rates ``bandwidth_i * success_rate_i``, exactly as ``TaskPartitioner`` and the heuristic do.
"""

from __future__ import annotations

from typing import Final

import numpy.typing as npt

from itp import _native
from itp.actions import Split

__all__ = [
    "INITIAL_WINDOW_BITS",
    "SETUP_RTTS",
    "production_split",
    "transport_chunk_time",
    "transport_split",
]

SETUP_RTTS: Final[float] = float(_native.SETUP_RTTS)
"""Fixed cost of one chunk, in RTTs (handshake + request + last byte's propagation)."""
INITIAL_WINDOW_BITS: Final[float] = float(_native.INITIAL_WINDOW_BITS)
"""Slow-start initial window, bits (10 segments of 1460 bytes)."""


def _split(result: tuple[tuple[int, ...], float]) -> Split:
    chunks, expected = result
    return Split(
        chunk_bytes=(int(chunks[0]), int(chunks[1]), int(chunks[2]), int(chunks[3])),
        expected_time_s=float(expected),
    )


def transport_split(
    size_bytes: int, action: int, rate_bps: npt.ArrayLike, rtt_s: npt.ArrayLike
) -> Split:
    """Split ``size_bytes`` over the streams of ``action`` so that transport-model finish times are equal.

    Args:
        size_bytes: task size, an int in 1..2**50 bytes.
        action: 0..14 (``itp.actions.ACTION_STREAMS``).
        rate_bps: 4 effective rates, bits per second, finite and >= 0.
        rtt_s: 4 smoothed round-trip times, seconds, finite and >= 0.

    Returns:
        The chunks (bytes per stream, summing to ``size_bytes``) and the predicted completion time in
        seconds (+inf, with every byte on the lowest-RTT stream, when no chosen stream has a positive rate).

    Raises:
        TypeError, ValueError: naming the bad argument.

    O(1) (a few Newton steps over at most 4 streams), native, thread-safe.
    """
    return _split(_native.transport_split(size_bytes, action, rate_bps, rtt_s))


def transport_chunk_time(bits: float, rate_bps: float, rtt_s: float) -> float:
    """Seconds one chunk of ``bits`` takes on one stream (set-up and slow start included; +inf at rate 0).

    Raises:
        ValueError: a negative, NaN or infinite argument (named).
    """
    return float(_native.transport_chunk_time(bits, rate_bps, rtt_s))


def production_split(raw_state: npt.ArrayLike, action: int) -> Split:
    """The split ``TaskPartitioner`` executes for ``action`` in a raw decision state (float64[20], caller
    units): :func:`transport_split` over ``bandwidth_i * success_rate_i`` and the measured RTTs.

    Raises:
        ValueError: a NaN/infinite/negative feature (named), a task size outside 1..2**50, a bad action.
    """
    return _split(_native.production_split(raw_state, action))
