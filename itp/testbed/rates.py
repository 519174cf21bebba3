"""From a throughput trace to the kernel ``tbf`` settings that replay it on one emulated path.

Rate series. A path follows trace ``T`` (resampled by ``itp.sim.traces`` to 0.1 s bins), scaled to the
path's mean ``m`` and started at offset ``o``, exactly as the simulator's trace mode does:
``r(t) = m / mean(T) * T(t + o)`` (looped). The controller changes the rate every ``step_s`` seconds;
step k carries the exact mean of ``r`` over ``[k step, (k+1) step)`` (from the simulator's capacity
function, so a step that straddles two trace bins gets their time-weighted mean), floored at
``floor_bps``::

    rate[k] = max(floor_bps, (Cap((k+1) step) - Cap(k step)) / step)

The floor exists because ``tbf`` has no rate 0: an outage in the trace becomes a trickle of
``floor_bps`` (default ``max(1% of m, 64 kbit/s)``), long enough to stall a transfer as the trace
intends without making the qdisc invalid. The floored series, not the raw trace, is what the simulator
is given when it is calibrated against the testbed (``rate_trajectory``), so both see the same rates.

Token bucket. ``tbf rate R burst B limit L``: tokens accrue at R; a packet leaves when the bucket holds
its size; packets wait in a drop-tail queue of L bytes (the bottleneck buffer). Settings:

* ``burst_bytes = max(MIN_BURST_BYTES, R * BURST_S / 8)``: at least a few full frames so that a
  1500-byte packet always fits, and about 2 ms of data so the kernel timer granularity does not cap the
  rate (``tc`` warns below ``R / HZ``);
* ``limit_bytes``: the queue size, either ``packets * QUEUE_PACKET_BYTES`` or ``R * queue_delay_s / 8``
  (at least ``MIN_LIMIT_BYTES``), recomputed at every rate change when given in time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from itp.sim.physics import StreamTrajectory
from itp.sim.traces import Trace

__all__ = [
    "BURST_S",
    "MIN_BURST_BYTES",
    "MIN_LIMIT_BYTES",
    "QUEUE_PACKET_BYTES",
    "QueueSpec",
    "RateSeries",
    "TbfSettings",
    "rate_trajectory",
    "scaled_rate_series",
    "tbf_command",
    "tbf_settings",
]

FloatArray = npt.NDArray[np.float64]

BURST_S: float = 0.002
"""Token-bucket depth in seconds of data at the current rate."""
MIN_BURST_BYTES: int = 4 * 1514
"""Smallest bucket: a few full Ethernet-sized frames."""
QUEUE_PACKET_BYTES: int = 1514
"""Bytes one queued packet is counted as when the queue is given in packets."""
MIN_LIMIT_BYTES: int = 4 * 1514
"""Smallest queue: a few full frames (a queue given in ms at a trickle rate would hold none)."""
MIN_FLOOR_BPS: float = 64e3
"""Lowest rate the controller ever sets, bit/s (``tbf`` cannot be set to 0)."""


@dataclass(frozen=True, eq=False)
class RateSeries:
    """A piecewise-constant rate schedule: ``rate_bps[k]`` holds on ``[k step_s, (k+1) step_s)``.

    Attributes:
        step_s: length of one step, seconds (> 0).
        rate_bps: read-only float64 array, bits per second (> 0).
    """

    step_s: float
    rate_bps: FloatArray

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step_s) and self.step_s > 0):
            raise ValueError(f"RateSeries.step_s must be finite and > 0, got {self.step_s!r}")
        r = self.rate_bps
        if r.ndim != 1 or r.size == 0 or not np.all(np.isfinite(r)) or not np.all(r > 0):
            raise ValueError("RateSeries.rate_bps must be a non-empty 1-D array of finite rates > 0")

    @property
    def duration_s(self) -> float:
        """Seconds the series covers (after that the controller holds the last rate)."""
        return self.step_s * self.rate_bps.size

    @property
    def mean_rate_bps(self) -> float:
        """Time-mean rate of the series, bit/s."""
        return float(self.rate_bps.mean())

    def rate_at(self, t_s: float) -> float:
        """The rate in force at ``t_s`` seconds (the last step's after the end; the first before 0)."""
        k = min(max(math.floor(t_s / self.step_s), 0), self.rate_bps.size - 1)
        return float(self.rate_bps[k])


def scaled_rate_series(
    trace: Trace,
    *,
    mean_rate_bps: float,
    offset_s: float,
    duration_s: float,
    step_s: float = 0.1,
    floor_bps: float | None = None,
) -> RateSeries:
    """The controller's rate schedule for one path (module docstring).

    Args:
        trace: the parsed trace (``itp.sim.traces.load_trace``).
        mean_rate_bps: the trace's loop mean is scaled to this, bit/s (> 0).
        offset_s: start position in the trace, seconds (any real; the trace loops).
        duration_s: length of the schedule, seconds (> 0); rounded up to whole steps.
        step_s: controller period, seconds (> 0).
        floor_bps: lowest rate set, bit/s; default ``max(0.01 * mean_rate_bps, 64 kbit/s)``.

    Returns:
        The floored series, ``ceil(duration_s / step_s)`` steps.

    Raises:
        ValueError: a non-finite or non-positive rate, duration, step or floor (named).

    Complexity: O(steps * log(trace bins)).
    """
    for name, v in (("mean_rate_bps", mean_rate_bps), ("duration_s", duration_s), ("step_s", step_s)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be finite and > 0, got {v!r}")
    if not math.isfinite(offset_s):
        raise ValueError(f"offset_s must be finite, got {offset_s!r}")
    floor = max(0.01 * mean_rate_bps, MIN_FLOOR_BPS) if floor_bps is None else floor_bps
    if not (math.isfinite(floor) and floor > 0):
        raise ValueError(f"floor_bps must be finite and > 0, got {floor_bps!r}")
    traj = StreamTrajectory(
        trace.rate_bps,
        np.zeros_like(trace.rate_bps),
        bin_s=trace.bin_s,
        scale=mean_rate_bps / trace.mean_rate_bps,
        offset_s=offset_s,
    )
    n = max(1, math.ceil(duration_s / step_s - 1e-9))
    caps = np.array([traj.capacity_bits(k * step_s) for k in range(n + 1)])
    rates = np.maximum(np.diff(caps) / step_s, floor)
    rates.setflags(write=False)
    return RateSeries(step_s=float(step_s), rate_bps=rates)


def rate_trajectory(series: RateSeries, *, hold_s: float = 3600.0) -> StreamTrajectory:
    """The series as a simulator ``StreamTrajectory`` (congestion 0), the last rate held for ``hold_s``.

    The simulator loops trajectories; appending a long hold of the last rate (what the controller does
    after the series ends) keeps a simulated chunk that outlives the series from wrapping to its start.
    """
    extra = max(1, math.ceil(hold_s / series.step_s))
    rate = np.concatenate((series.rate_bps, np.full(extra, series.rate_bps[-1])))
    rate.setflags(write=False)
    cong = np.zeros_like(rate)
    cong.setflags(write=False)
    return StreamTrajectory(rate, cong, bin_s=series.step_s)


@dataclass(frozen=True)
class QueueSpec:
    """The bottleneck queue of a path: ``packets`` or ``delay_s`` (exactly one is set).

    Attributes:
        packets: queue size in full-size packets (>= 1), or None.
        delay_s: queue size in seconds of data at the current rate (> 0), or None.
    """

    packets: int | None = None
    delay_s: float | None = None

    def __post_init__(self) -> None:
        if (self.packets is None) == (self.delay_s is None):
            raise ValueError(
                f"QueueSpec needs exactly one of packets or delay_s, got packets={self.packets!r}, "
                f"delay_s={self.delay_s!r}"
            )
        if self.packets is not None and (
            isinstance(self.packets, bool) or not isinstance(self.packets, int) or self.packets < 1
        ):
            raise ValueError(f"QueueSpec.packets must be an int >= 1, got {self.packets!r}")
        if self.delay_s is not None and not (
            isinstance(self.delay_s, (int, float)) and math.isfinite(self.delay_s) and self.delay_s > 0
        ):
            raise ValueError(f"QueueSpec.delay_s must be finite and > 0, got {self.delay_s!r}")

    @classmethod
    def parse(cls, text: str) -> QueueSpec:
        """``"100p"`` / ``"100"`` (packets) or ``"50ms"`` (milliseconds of data); ValueError otherwise."""
        s = text.strip().lower()
        try:
            if s.endswith("ms"):
                return cls(delay_s=float(s[:-2]) / 1000.0)
            return cls(packets=int(s[:-1] if s.endswith("p") else s))
        except ValueError as exc:
            raise ValueError(f"queue must be like '100p' (packets) or '50ms', got {text!r}: {exc}") from None

    def limit_bytes(self, rate_bps: float) -> int:
        """The ``tbf limit`` in bytes at ``rate_bps``."""
        if self.packets is not None:
            return max(MIN_LIMIT_BYTES, self.packets * QUEUE_PACKET_BYTES)
        assert self.delay_s is not None
        return max(MIN_LIMIT_BYTES, math.ceil(rate_bps * self.delay_s / 8.0))

    def describe(self) -> str:
        """``"100 packets"`` or ``"50 ms"`` (for tables and logs)."""
        if self.packets is not None:
            return f"{self.packets} packets"
        assert self.delay_s is not None
        return f"{self.delay_s * 1000:g} ms"


@dataclass(frozen=True)
class TbfSettings:
    """One ``tbf`` configuration: ``rate_bps`` (bit/s), ``burst_bytes``, ``limit_bytes`` (queue)."""

    rate_bps: int
    burst_bytes: int
    limit_bytes: int


def tbf_settings(rate_bps: float, queue: QueueSpec) -> TbfSettings:
    """The ``tbf`` settings for ``rate_bps`` (bit/s, > 0) and the path's queue (module docstring)."""
    if (
        isinstance(rate_bps, bool)
        or not isinstance(rate_bps, (int, float))
        or not (math.isfinite(rate_bps) and rate_bps > 0)
    ):
        raise ValueError(f"rate_bps must be finite and > 0, got {rate_bps!r}")
    rate = max(1, round(rate_bps))
    burst = max(MIN_BURST_BYTES, math.ceil(rate * BURST_S / 8.0))
    return TbfSettings(rate_bps=rate, burst_bytes=burst, limit_bytes=queue.limit_bytes(rate))


def tbf_command(device: str, settings: TbfSettings, *, verb: str = "change") -> str:
    """One ``tc -batch`` line (no leading ``tc``) that installs or changes the root ``tbf`` of ``device``.

    Args:
        device: network device name (letters, digits, ``-_.``; at most 15 characters).
        settings: the token-bucket settings.
        verb: ``"replace"`` (install) or ``"change"`` (update in place, no queue flush).
    """
    if verb not in ("replace", "change"):
        raise ValueError(f"verb must be 'replace' or 'change', got {verb!r}")
    if not device or len(device) > 15 or not all(c.isalnum() or c in "-_." for c in device):
        raise ValueError(f"device must be a network device name, got {device!r}")
    return (
        f"qdisc {verb} dev {device} root handle 1: tbf rate {settings.rate_bps}bit "
        f"burst {settings.burst_bytes} limit {settings.limit_bytes}"
    )
