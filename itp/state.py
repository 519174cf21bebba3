"""The 20-feature decision state: raw values in caller units and their native normalisation.

Layout (raw unit -> normalised, each clamped into [0, 1]); the single source of truth is
``cpp/include/itp/state.hpp`` and this module only adds types and docs:

====== ================ ================= ==========================
index  feature          raw unit          normalisation
====== ================ ================= ==========================
0-3    bandwidth[i]     bits per second   x / 1e9
4-7    latency[i]       seconds (RTT)     x / 0.1
8-11   congestion[i]    fraction 0..1     x
12-15  success_rate[i]  fraction 0..1     x
16     queue_depth      tasks             x / 100
17     task_size        bytes             log2(max(x, 1)) / 40
18     priority         fraction 0..1     x
19     time_of_day      hours [0, 24)     x / 24
====== ================ ================= ==========================

The log task-size scale keeps 64 KiB (0.40), 1 MiB (0.50), 100 MiB (0.66) and 4 GiB (0.80) apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from itp import _native

NUM_STREAMS: int = int(_native.NUM_STREAMS)
NUM_FEATURES: int = int(_native.NUM_FEATURES)
STATE_LAYOUT_VERSION: int = int(_native.STATE_LAYOUT_VERSION)
FEATURE_NAMES: tuple[str, ...] = tuple(_native.FEATURE_NAMES)

__all__ = [
    "FEATURE_NAMES",
    "NUM_FEATURES",
    "NUM_STREAMS",
    "STATE_LAYOUT_VERSION",
    "RawState",
    "normalize_state",
    "normalize_states",
    "task_size_feature",
]


@dataclass(frozen=True)
class RawState:
    """One decision state in caller units (see the module table).

    Attributes:
        bandwidth_bps: estimated available rate per stream, bits per second (4 values, >= 0).
        latency_s: measured round-trip time per stream, seconds (4 values, >= 0).
        congestion: queueing delay over base RTT per stream, fraction in [0, 1].
        success_rate: recent chunk success rate per stream, fraction in [0, 1].
        queue_depth: tasks waiting at the sender (>= 0).
        task_size_bytes: size of the task to place, bytes (>= 0).
        priority: task priority in [0, 1].
        time_of_day_h: local hour in [0, 24).
    """

    bandwidth_bps: tuple[float, float, float, float]
    latency_s: tuple[float, float, float, float]
    congestion: tuple[float, float, float, float]
    success_rate: tuple[float, float, float, float]
    queue_depth: float
    task_size_bytes: float
    priority: float
    time_of_day_h: float

    def to_array(self) -> npt.NDArray[np.float64]:
        """The raw state as float64[20] in layout order (caller units)."""
        return np.array(
            [
                *self.bandwidth_bps,
                *self.latency_s,
                *self.congestion,
                *self.success_rate,
                self.queue_depth,
                self.task_size_bytes,
                self.priority,
                self.time_of_day_h,
            ],
            dtype=np.float64,
        )

    def normalized(self) -> npt.NDArray[np.float32]:
        """The normalised float32[20] model input. Raises ValueError naming a NaN/inf/negative field."""
        return normalize_state(self.to_array())


def normalize_state(raw_state: Sequence[float] | npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Normalise one raw state (20 numbers in caller units) into float32[20] in [0, 1].

    Args:
        raw_state: 20 finite, non-negative numbers in the layout of the module table: bandwidths in
            bits per second, latencies in seconds, congestion and success rates as fractions, queue
            depth in tasks, task size in bytes, priority as a fraction, local hour in [0, 24).

    Returns:
        A new float32[20] array, every feature clamped into [0, 1].

    Raises:
        TypeError: if ``raw_state`` is not numeric.
        ValueError: wrong shape, or a field that is NaN, infinite or negative (the message names it,
            e.g. ``state field latency_s[2] must be finite and >= 0, got nan``).

    O(20), native; thread-safe (no shared state).
    """
    return _native.normalize_state(raw_state)


def normalize_states(
    raw_states: npt.ArrayLike, out: npt.NDArray[np.float32] | None = None
) -> npt.NDArray[np.float32]:
    """Normalise N raw states (float64[N, 20]) in one native call, GIL released.

    Every row is validated before any is written, so a bad row leaves ``out`` untouched.

    Args:
        raw_states: array-like of shape (N, 20), caller units (see :func:`normalize_state`); other
            numeric dtypes are converted to float64 once.
        out: optional float32[N, 20] C-contiguous writeable buffer to fill (no allocation).

    Returns:
        ``out`` (or a new float32[N, 20] array).

    Raises:
        ValueError: wrong shape or an invalid field (row and field named); ``out`` is left untouched.
        TypeError: non-numeric input or an ``out`` of the wrong dtype.

    O(20 N), native; thread-safe as long as no other thread writes ``out``.
    """
    return _native.normalize_states(raw_states, out)


def task_size_feature(size_bytes: float) -> float:
    """The [0, 1] task-size feature: ``log2(max(size_bytes, 1)) / 40``, clamped (1 TiB -> 1).

    Monotone non-decreasing in ``size_bytes`` (bytes, finite and >= 0; ValueError otherwise); 64 KiB ->
    0.40, 1 MiB -> 0.50, 100 MiB -> 0.66, 4 GiB -> 0.80. O(1), thread-safe.
    """
    return float(_native.task_size_feature(size_bytes))
