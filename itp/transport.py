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

**Warm streams.** A persistent stream keeps its congestion window between chunks unless it sat idle
longer than its retransmission timeout (Linux ``tcp_slow_start_after_idle = 1``, the default: the window
is then cut to the restart window, RFC 2861 / RFC 5681 section 4.1). :func:`start_window_bits` turns what a
sender reads from ``TCP_INFO`` (cwnd, MSS, RTO, time since data was last sent) into the window a chunk
sent now starts from; passed to :meth:`itp.TaskPartitioner.update_stream` it lifts that stream's initial
window for the next decisions, and in :class:`itp.partitioner.ChunkOutcome` it tells the calibrator which
chunks started warm.

**Runtime parameters.** ``SETUP_RTTS`` and ``INITIAL_WINDOW_BITS`` are the defaults of three per-stream
parameters (:class:`TransportParams`): the set-up cost ``S`` in RTTs, the initial window ``W`` in bits and a
rate efficiency ``eta`` (the model uses the rate ``eta * r``). A warm persistent stream without slow start
is a window at or above its bandwidth-delay product (e.g. ``2**30`` bits). Every function here takes
optional parameters (one :class:`TransportParams` for all streams or a sequence of 4); with the defaults the
results are bit-identical to the constants. :mod:`itp.calibration` fits them online and
:meth:`itp.TaskPartitioner.set_transport_params` makes the live split, heuristic and ``expected_time``
use them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt

from itp import _native
from itp.actions import Split

__all__ = [
    "DEFAULT_TRANSPORT_PARAMS",
    "INITIAL_WINDOW_BITS",
    "SEGMENT_BITS",
    "SETUP_RTTS",
    "TransportParams",
    "TransportParamsLike",
    "production_split",
    "start_window_bits",
    "transport_chunk_time",
    "transport_params_array",
    "transport_split",
]

SETUP_RTTS: Final[float] = float(_native.SETUP_RTTS)
"""Fixed cost of one chunk, in RTTs (handshake + request + last byte's propagation)."""
INITIAL_WINDOW_BITS: Final[float] = float(_native.INITIAL_WINDOW_BITS)
"""Slow-start initial window, bits (10 segments of 1460 bytes)."""
SEGMENT_BITS: Final[float] = 1460.0 * 8.0
"""One TCP segment, bits: the smallest initial window a :class:`TransportParams` accepts."""


@dataclass(frozen=True)
class TransportParams:
    """Transport parameters of one stream's chunk-time model (see the module docstring).

    Attributes:
        setup_rtts: fixed cost of a chunk in RTTs, finite, >= 0 (default model: 2).
        initial_window_bits: window a chunk starts from, bits, finite, >= one segment (11 680); at or above
            the bandwidth-delay product there is no slow start (a warm persistent stream).
        efficiency: delivered rate over measured rate, finite, > 0 (default model: 1).

    Raises:
        ValueError: naming the bad field and value.
    """

    setup_rtts: float
    initial_window_bits: float
    efficiency: float

    def __post_init__(self) -> None:
        for name, low in (("setup_rtts", 0.0), ("initial_window_bits", SEGMENT_BITS), ("efficiency", 0.0)):
            v = getattr(self, name)
            number = isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)
            if not number or not math.isfinite(v):
                raise ValueError(f"TransportParams.{name} must be a finite number, got {v!r}")
            if v < low or (name == "efficiency" and v <= 0.0):
                raise ValueError(f"TransportParams.{name} must be >= {low:g} (efficiency > 0), got {v!r}")

    def as_dict(self) -> dict[str, float]:
        """Plain data."""
        return {k: float(getattr(self, k)) for k in self.__dataclass_fields__}


DEFAULT_TRANSPORT_PARAMS: Final = TransportParams(SETUP_RTTS, INITIAL_WINDOW_BITS, 1.0)
"""The fresh-connection physics the split and the bundled model assume."""

TransportParamsLike: TypeAlias = "TransportParams | Sequence[TransportParams] | None"
"""One parameter set for all 4 streams, one per stream, or None for the defaults."""


def transport_params_array(params: TransportParamsLike) -> npt.NDArray[np.float64] | None:
    """``params`` as the native float64[4, 3] table (rows: streams; columns: setup_rtts,
    initial_window_bits, efficiency), or None for None.

    Raises:
        TypeError: not a TransportParams, a sequence of them, or None.
        ValueError: a sequence whose length is not 4.
    """
    if params is None:
        return None
    if isinstance(params, TransportParams):
        rows: list[TransportParams] = [params] * 4
    elif isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        rows = list(params)
        for k, p in enumerate(rows):
            if not isinstance(p, TransportParams):
                raise TypeError(f"params[{k}] must be a TransportParams, got {type(p).__name__}")
        if len(rows) != 4:
            raise ValueError(f"params must hold one TransportParams per stream (4), got {len(rows)}")
    else:
        raise TypeError(
            f"params must be a TransportParams, a sequence of 4, or None, got {type(params).__name__}"
        )
    return np.array(
        [[p.setup_rtts, p.initial_window_bits, p.efficiency] for p in rows], dtype=np.float64
    )


def _split(result: tuple[tuple[int, ...], float]) -> Split:
    chunks, expected = result
    return Split(
        chunk_bytes=(int(chunks[0]), int(chunks[1]), int(chunks[2]), int(chunks[3])),
        expected_time_s=float(expected),
    )


def transport_split(
    size_bytes: int,
    action: int,
    rate_bps: npt.ArrayLike,
    rtt_s: npt.ArrayLike,
    params: TransportParamsLike = None,
) -> Split:
    """Split ``size_bytes`` over the streams of ``action`` so that transport-model finish times are equal.

    Args:
        size_bytes: task size, an int in 1..2**50 bytes.
        action: 0..14 (``itp.actions.ACTION_STREAMS``).
        rate_bps: 4 effective rates, bits per second, finite and >= 0.
        rtt_s: 4 smoothed round-trip times, seconds, finite and >= 0.
        params: transport parameters (one for all streams, 4, or None for the defaults).

    Returns:
        The chunks (bytes per stream, summing to ``size_bytes``) and the predicted completion time in
        seconds (+inf, with every byte on the lowest-RTT stream, when no chosen stream has a positive rate).

    Raises:
        TypeError, ValueError: naming the bad argument.

    O(1) (a few Newton steps over at most 4 streams), native, thread-safe.
    """
    return _split(
        _native.transport_split(size_bytes, action, rate_bps, rtt_s, transport_params_array(params))
    )


def transport_chunk_time(
    bits: float, rate_bps: float, rtt_s: float, params: TransportParams | None = None
) -> float:
    """Seconds one chunk of ``bits`` takes on one stream of measured rate ``rate_bps`` (bit/s) and RTT
    ``rtt_s`` (s): set-up and slow start included, +inf at rate 0; ``params`` None for the defaults.

    Raises:
        ValueError: a negative, NaN or infinite argument (named).
    """
    if params is None:
        return float(_native.transport_chunk_time(bits, rate_bps, rtt_s))
    if not isinstance(params, TransportParams):
        raise TypeError(f"params must be a TransportParams or None, got {type(params).__name__}")
    return float(
        _native.transport_chunk_time(
            bits, rate_bps, rtt_s, params.setup_rtts, params.initial_window_bits, params.efficiency
        )
    )


def production_split(raw_state: npt.ArrayLike, action: int, params: TransportParamsLike = None) -> Split:
    """The split ``TaskPartitioner`` executes for ``action`` in a raw decision state (float64[20], caller
    units): :func:`transport_split` over ``bandwidth_i * success_rate_i`` and the measured RTTs, with the
    given transport parameters (None: the defaults; the partitioner uses its current ones, see
    :meth:`itp.TaskPartitioner.transport_params`).

    Raises:
        ValueError: a NaN/infinite/negative feature (named), a task size outside 1..2**50, a bad action.
    """
    return _split(_native.production_split(raw_state, action, transport_params_array(params)))


def start_window_bits(
    cwnd_bits: float,
    idle_s: float,
    rto_s: float,
    *,
    restart_window_bits: float = INITIAL_WINDOW_BITS,
    slow_start_after_idle: bool = True,
) -> float:
    """The congestion window (bits) a chunk sent now on a persistent TCP stream starts from.

    Linux keeps the window of a connection that sent data within the last RTO; after a longer idle gap,
    with ``net.ipv4.tcp_slow_start_after_idle = 1`` (the default), it restarts from
    ``min(cwnd, restart window)`` (``tcp_cwnd_restart``: the window is halved once per RTO of idle time
    down to the restart window; this returns that floor, the common case for gaps of several RTOs).

    Args:
        cwnd_bits: the stream's congestion window now, bits (``tcpi_snd_cwnd * tcpi_snd_mss * 8``), >= 0.
        idle_s: seconds since the stream last sent data (``tcpi_last_data_sent / 1000``), >= 0.
        rto_s: the stream's retransmission timeout, seconds (``tcpi_rto / 1e6``), > 0.
        restart_window_bits: the restart window, bits (default 10 segments of 1460 bytes, RFC 6928).
        slow_start_after_idle: the sysctl's value; False keeps the window whatever the gap.

    Returns:
        ``cwnd_bits`` while ``idle_s <= rto_s`` (or always, with ``slow_start_after_idle=False``), else
        ``min(cwnd_bits, restart_window_bits)``.

    Raises:
        ValueError: a negative, NaN or infinite argument, or ``rto_s <= 0`` (named).
    """
    for name, v in (("cwnd_bits", cwnd_bits), ("idle_s", idle_s), ("rto_s", rto_s),
                    ("restart_window_bits", restart_window_bits)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name} must be a number, got {type(v).__name__}")
        if not (math.isfinite(v) and v >= 0.0):
            raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
    if not rto_s > 0.0:
        raise ValueError(f"rto_s must be > 0, got {rto_s!r}")
    if not slow_start_after_idle or idle_s <= rto_s:
        return float(cwnd_bits)
    return float(min(cwnd_bits, restart_window_bits))
