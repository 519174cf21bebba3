"""Kernel telemetry of a TCP connection and the estimators that turn it into partitioner inputs.

``read_tcp_info(sock)`` reads Linux ``struct tcp_info`` (``getsockopt(IPPROTO_TCP, TCP_INFO)``) and parses
it by the documented offsets of ``include/uapi/linux/tcp.h``. The kernel copies ``min(len, sizeof)``
bytes, so an older kernel returns a shorter struct: fields past the returned length are ``None``.

Offsets used (bytes; u8 = 1, u32 = 4, u64 = 8, native endianness)::

    7   u8   delivery_rate_app_limited (bit 0)   8   u32 rto (us)          44  u32 last_data_sent (ms)
    68  u32  rtt (us)                            72  u32 rttvar (us)
    80  u32  snd_cwnd (segments)                 16  u32 snd_mss (bytes)   100 u32 total_retrans (segments)
    120 u64  bytes_acked                         148 u32 min_rtt (us)      160 u64 delivery_rate (bytes/s)
    168 u64  busy_time (us)  176 u64 rwnd_limited (us)  184 u64 sndbuf_limited (us)  200 u64 bytes_sent

:class:`StreamEstimator` turns those samples and per-chunk outcomes into the four numbers
``TaskPartitioner.update_stream`` takes:

* ``bandwidth_bps`` (bits/s): EWMA with weight ``alpha`` (default 0.25) over rate samples. A sample is
  ``8 * tcpi_delivery_rate`` when the kernel's rate sample is not application-limited, otherwise the
  chunk goodput ``8 * chunk_bytes / chunk_s`` of a chunk of at least ``min_goodput_chunk_bytes``
  (default 256 KiB; smaller chunks measure set-up, not rate); both kinds of sample feed the same EWMA
  (``est += alpha * (sample - est)``, the first sample initialises it). Before the
  first sample the estimator reports ``initial_bandwidth_bps`` (default 100 Mbit/s), the same prior on
  every stream, so the first decisions are not biased towards any stream.
* ``latency_s`` (s): the kernel's smoothed RTT ``tcpi_rtt * 1e-6`` (already an EWMA with gain 1/8,
  RFC 6298); before the first sample, the measured connect time.
* ``congestion`` (fraction [0, 1]): queueing delay over the smoothed RTT,
  ``clamp((tcpi_rtt - tcpi_min_rtt) / tcpi_rtt, 0, 1)`` (``tcpi_min_rtt`` is the kernel's windowed
  minimum RTT, the base RTT).
* ``success_rate`` (fraction [0, 1]): delivered / attempted over the last ``window`` (default 32) chunk
  outcomes on that stream; a connection failure counts as one failed attempt. 1.0 before any outcome.

Thread-safety: ``read_tcp_info`` is safe on any socket; a ``StreamEstimator`` guards its state with a
lock, so observations and reads may come from different threads.
"""

from __future__ import annotations

import math
import socket
import struct
import sys
import threading
from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = [
    "TCP_INFO_MAX_BYTES",
    "StreamEstimate",
    "StreamEstimator",
    "TcpInfo",
    "parse_tcp_info",
    "read_tcp_info",
    "start_window_from_tcp_info",
]

TCP_INFO_MAX_BYTES: Final = 256
"""Bytes requested from the kernel (larger than every struct tcp_info released so far)."""

_TCP_INFO_OPT: Final = getattr(socket, "TCP_INFO", 11)
_BO: Final = "<" if sys.byteorder == "little" else ">"

# (field, offset, struct code, scale to the unit in the field name)
_U32_FIELDS: Final = (
    ("rto_s", 8, 1e-6),
    ("snd_mss_bytes", 16, 1.0),
    ("unacked_segments", 24, 1.0),
    ("lost_segments", 32, 1.0),
    ("last_data_sent_s", 44, 1e-3),
    ("rtt_s", 68, 1e-6),
    ("rttvar_s", 72, 1e-6),
    ("snd_cwnd_segments", 80, 1.0),
    ("total_retrans_segments", 100, 1.0),
    ("min_rtt_s", 148, 1e-6),
)
_U64_FIELDS: Final = (
    ("bytes_acked", 120, 1.0),
    ("delivery_rate_bps", 160, 8.0),
    ("busy_time_s", 168, 1e-6),
    ("rwnd_limited_s", 176, 1e-6),
    ("sndbuf_limited_s", 184, 1e-6),
    ("bytes_sent", 200, 1.0),
)


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """One ``struct tcp_info`` sample in SI units (None: the kernel's struct is too short for the field).

    Attributes:
        state: TCP state number (1 = ESTABLISHED).
        delivery_rate_app_limited: the last rate sample was limited by the application, not the network.
        rto_s: retransmission timeout, seconds.
        last_data_sent_s: time since the connection last sent data, seconds (millisecond resolution).
        snd_mss_bytes: sender maximum segment size, bytes.
        unacked_segments, lost_segments: segments in flight / presumed lost now.
        rtt_s, rttvar_s: smoothed RTT and its mean deviation, seconds.
        snd_cwnd_segments: congestion window, segments.
        total_retrans_segments: segments retransmitted over the connection's life.
        min_rtt_s: windowed minimum RTT (base RTT), seconds.
        bytes_acked: bytes acknowledged by the peer over the connection's life.
        delivery_rate_bps: the kernel's most recent delivery-rate sample, bits per second.
        busy_time_s, rwnd_limited_s, sndbuf_limited_s: time spent sending data / limited by the peer's
            receive window / limited by the local send buffer, seconds (cumulative).
        bytes_sent: data bytes sent including retransmissions.
        length_bytes: how many bytes of the struct the kernel returned.
    """

    state: int
    delivery_rate_app_limited: bool
    rto_s: float | None
    last_data_sent_s: float | None
    snd_mss_bytes: int | None
    unacked_segments: int | None
    lost_segments: int | None
    rtt_s: float | None
    rttvar_s: float | None
    snd_cwnd_segments: int | None
    total_retrans_segments: int | None
    min_rtt_s: float | None
    bytes_acked: int | None
    delivery_rate_bps: float | None
    busy_time_s: float | None
    rwnd_limited_s: float | None
    sndbuf_limited_s: float | None
    bytes_sent: int | None
    length_bytes: int


def parse_tcp_info(raw: bytes) -> TcpInfo:
    """Parse the bytes of a ``struct tcp_info`` (any length >= 8; shorter structs leave fields None).

    Raises:
        TypeError: ``raw`` is not bytes-like.
        ValueError: fewer than 8 bytes (not even the fixed u8 header).
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise TypeError(f"raw must be bytes, got {type(raw).__name__}")
    data = bytes(raw)
    n = len(data)
    if n < 8:
        raise ValueError(f"struct tcp_info needs at least 8 bytes, got {n}")
    values: dict[str, float | int | None] = {}
    for name, off, scale in _U32_FIELDS:
        if off + 4 > n:
            values[name] = None
            continue
        (v,) = struct.unpack_from(_BO + "I", data, off)
        values[name] = v * scale if name.endswith("_s") else int(v)
    for name, off, scale in _U64_FIELDS:
        if off + 8 > n:
            values[name] = None
            continue
        (v,) = struct.unpack_from(_BO + "Q", data, off)
        values[name] = float(v * scale) if name.endswith(("_s", "_bps")) else int(v)
    return TcpInfo(
        state=data[0],
        delivery_rate_app_limited=bool(data[7] & 1),
        length_bytes=n,
        **values,  # type: ignore[arg-type]
    )


def read_tcp_info(sock: socket.socket) -> TcpInfo:
    """Read the kernel's ``TCP_INFO`` of a connected TCP socket (Linux).

    Works on a plain or an ``ssl`` socket (the option is read from the underlying descriptor).

    Raises:
        TypeError: ``sock`` is not a socket.
        OSError: the socket is closed or the platform has no ``TCP_INFO``.
    """
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a socket.socket, got {type(sock).__name__}")
    return parse_tcp_info(sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO_OPT, TCP_INFO_MAX_BYTES))


def start_window_from_tcp_info(info: TcpInfo, *, slow_start_after_idle: bool = True) -> float:
    """The window (bits) a chunk sent now on this connection starts from (``itp.transport.
    start_window_bits`` over ``snd_cwnd x snd_mss``, ``last_data_sent`` and ``rto``); 0.0 (unknown) when
    the kernel's struct lacks one of them or a value is 0."""
    from itp.transport import start_window_bits

    cwnd, mss, rto, idle = info.snd_cwnd_segments, info.snd_mss_bytes, info.rto_s, info.last_data_sent_s
    if cwnd is None or mss is None or rto is None or idle is None or not (cwnd > 0 and mss > 0 and rto > 0):
        return 0.0
    return start_window_bits(8.0 * cwnd * mss, idle, rto, slow_start_after_idle=slow_start_after_idle)


@dataclass(frozen=True, slots=True)
class StreamEstimate:
    """The partitioner inputs of one stream (see the module docstring for the formulas).

    Attributes:
        bandwidth_bps: estimated available rate, bits per second (>= 0).
        latency_s: smoothed round-trip time, seconds (>= 0).
        congestion: queueing delay over the smoothed RTT, fraction in [0, 1].
        success_rate: windowed chunk success rate, fraction in [0, 1].
        rate_samples: rate samples folded into ``bandwidth_bps`` so far.
    """

    bandwidth_bps: float
    latency_s: float
    congestion: float
    success_rate: float
    rate_samples: int


def _positive_finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not (math.isfinite(v) and v > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


class StreamEstimator:
    """EWMA / windowed estimators of one stream's bandwidth, latency, congestion and success rate.

    Args:
        alpha: EWMA weight of a new rate sample, in (0, 1].
        window: chunk outcomes the success rate is computed over (int >= 1).
        initial_bandwidth_bps: reported before the first rate sample, bits per second (> 0).
        min_goodput_chunk_bytes: smallest chunk whose goodput counts as a rate sample (int >= 1).

    Raises:
        ValueError, TypeError: naming the bad argument.
    """

    def __init__(
        self,
        *,
        alpha: float = 0.25,
        window: int = 32,
        initial_bandwidth_bps: float = 100e6,
        min_goodput_chunk_bytes: int = 256 * 1024,
    ) -> None:
        a = _positive_finite("alpha", alpha)
        if a > 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        if isinstance(min_goodput_chunk_bytes, bool) or not isinstance(min_goodput_chunk_bytes, int) or (
            min_goodput_chunk_bytes < 1
        ):
            raise ValueError(f"min_goodput_chunk_bytes must be an int >= 1, got {min_goodput_chunk_bytes!r}")
        self._alpha = a
        self._prior_bps = _positive_finite("initial_bandwidth_bps", initial_bandwidth_bps)
        self._min_chunk_bytes = min_goodput_chunk_bytes
        self._lock = threading.Lock()
        self._rate_bps: float | None = None
        self._samples = 0
        self._rtt_s = 0.0
        self._congestion = 0.0
        self._outcomes: deque[bool] = deque(maxlen=window)

    def observe_connect(self, connect_s: float) -> None:
        """Seed the latency with a connect (handshake) time in seconds, until the kernel reports an RTT."""
        if not (math.isfinite(connect_s) and connect_s >= 0.0):
            raise ValueError(f"connect_s must be finite and >= 0, got {connect_s!r}")
        with self._lock:
            if self._rtt_s == 0.0:
                self._rtt_s = float(connect_s)

    def observe_tcp_info(self, info: TcpInfo) -> None:
        """Fold a kernel sample in: RTT, congestion, and a delivery-rate sample if not app-limited."""
        with self._lock:
            if info.rtt_s is not None and info.rtt_s > 0.0:
                self._rtt_s = info.rtt_s
                if info.min_rtt_s is not None and info.min_rtt_s > 0.0:
                    self._congestion = min(1.0, max(0.0, (info.rtt_s - info.min_rtt_s) / info.rtt_s))
            rate = info.delivery_rate_bps
            if rate is not None and rate > 0.0 and not info.delivery_rate_app_limited:
                self._add_rate_locked(rate)

    def observe_chunk(self, size_bytes: int, seconds: float, *, ok: bool) -> None:
        """Record one chunk outcome: its success, and (if large enough and ok) its goodput as a rate sample.

        Args:
            size_bytes: chunk bytes (int >= 0).
            seconds: first byte sent to the receiver's chunk acknowledgement, seconds (>= 0).
            ok: whether the chunk was delivered and verified.
        """
        if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes < 0:
            raise ValueError(f"size_bytes must be an int >= 0, got {size_bytes!r}")
        if not (math.isfinite(seconds) and seconds >= 0.0):
            raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
        with self._lock:
            self._outcomes.append(bool(ok))
            if ok and size_bytes >= self._min_chunk_bytes and seconds > 0.0:
                self._add_rate_locked(8.0 * size_bytes / seconds)

    def observe_failure(self) -> None:
        """A connection failure: one failed attempt in the success window."""
        with self._lock:
            self._outcomes.append(False)

    def _add_rate_locked(self, sample_bps: float) -> None:
        if self._rate_bps is None:
            self._rate_bps = sample_bps
        else:
            self._rate_bps += self._alpha * (sample_bps - self._rate_bps)
        self._samples += 1

    def estimate(self) -> StreamEstimate:
        """The current estimate (thread-safe snapshot)."""
        with self._lock:
            n = len(self._outcomes)
            return StreamEstimate(
                bandwidth_bps=self._prior_bps if self._rate_bps is None else self._rate_bps,
                latency_s=self._rtt_s,
                congestion=self._congestion,
                success_rate=(sum(self._outcomes) / n) if n else 1.0,
                rate_samples=self._samples,
            )
