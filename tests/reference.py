"""Slow, obviously right pure-Python references for the native state, action and split routines.

Each function restates the specification directly, and differently from the C++ where that makes
the check independent:

* ``normalize_state_ref``: the feature table, one line per row, in double precision, then one
  rounding to float32 (the C++ also rounds once from double, so linear features match bit for bit).
* ``ACTION_STREAMS_REF``: the 15 stream sets are generated, not typed in: all 1-, 2-, 3- and
  4-subsets of {0, 1, 2, 3} in lexicographic order, which is exactly the issue's table.
* ``split_ref``: exact rational arithmetic (``fractions.Fraction`` converts every float exactly).
  The fluid finish time T* is the root of ``f(T) = sum_i r_i max(0, T - L_i) = 8 S`` over the
  positive-rate streams of the set. For any non-empty subset U of them,
  ``T_U = (8 S + sum_U r_i L_i) / sum_U r_i`` satisfies ``f(T_U) >= 8 S``, so ``T_U >= T*``, and
  the subset actually used attains it; hence ``T* = min_U T_U``, by brute force over <= 15 subsets,
  with no sorting or water filling (the C++ water-fills by latency). Shares are
  ``c_i = r_i max(0, T* - L_i) / 8``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

NUM_STREAMS = 4
NUM_FEATURES = 20
MAX_TASK_BYTES = 2**50

FEATURE_NAMES_REF: tuple[str, ...] = (
    *(f"bandwidth_bps[{i}]" for i in range(4)),
    *(f"latency_s[{i}]" for i in range(4)),
    *(f"congestion[{i}]" for i in range(4)),
    *(f"success_rate[{i}]" for i in range(4)),
    "queue_depth",
    "task_size_bytes",
    "priority",
    "time_of_day_h",
)

# The log-scale feature is compared with this absolute tolerance: math.log2 and std::log2 may
# differ in the last bit of the double, which can move the float32 result by one ulp (<= 6e-8).
LOG_FEATURE_ATOL = 1.2e-7


def clamp01(x: float) -> float:
    """Clamp a double into [0, 1]."""
    return min(1.0, max(0.0, x))


def task_size_feature_ref(size_bytes: float) -> float:
    """log2(max(size_bytes, 1)) / 40, clamped into [0, 1] (1 B -> 0, 1 TiB -> 1)."""
    return clamp01(math.log2(max(size_bytes, 1.0)) / 40.0)


def first_invalid_feature_ref(raw: Sequence[float]) -> int:
    """Index of the first NaN, infinite or negative raw feature, or -1."""
    for i, x in enumerate(raw):
        if math.isnan(x) or math.isinf(x) or x < 0.0:
            return i
    return -1


def normalize_state_ref(raw: Sequence[float]) -> np.ndarray:
    """The normalised float32[20] state of a valid raw state (20 floats in caller units)."""
    assert len(raw) == NUM_FEATURES
    assert first_invalid_feature_ref(raw) == -1
    x = [float(v) for v in raw]
    out: list[float] = []
    out += [clamp01(x[i] / 1e9) for i in range(0, 4)]  # bandwidth, bit/s; 1 Gbit/s -> 1
    out += [clamp01(x[i] / 0.1) for i in range(4, 8)]  # latency, s; 100 ms -> 1
    out += [clamp01(x[i]) for i in range(8, 12)]  # congestion fraction
    out += [clamp01(x[i]) for i in range(12, 16)]  # success-rate fraction
    out.append(clamp01(x[16] / 100.0))  # queue depth, tasks
    out.append(task_size_feature_ref(x[17]))  # task size, bytes, log scale
    out.append(clamp01(x[18]))  # priority fraction
    out.append(clamp01(x[19] / 24.0))  # hour of day
    return np.array(out, dtype=np.float32)


ACTION_STREAMS_REF: tuple[tuple[int, ...], ...] = tuple(
    combo
    for k in range(1, NUM_STREAMS + 1)
    for combo in itertools.combinations(range(NUM_STREAMS), k)
)


def decode_action_ref(action: int) -> tuple[int, ...]:
    """Stream ids of ``action`` (0..14), ascending."""
    return ACTION_STREAMS_REF[action]


def encode_streams_ref(streams: Sequence[int]) -> int:
    """The action whose stream set is ``streams`` (distinct ids 0..3, any order)."""
    return ACTION_STREAMS_REF.index(tuple(sorted(streams)))


@dataclass(frozen=True)
class SplitRef:
    """Exact fluid split.

    Attributes:
        time_s: the fluid equal finish time T* in seconds (exact), or None when no stream of the
            set has a positive rate (the native code reports +inf then).
        share_bytes: exact fluid bytes per stream 0..3 (0 off the set, for rate 0, or for
            L_i >= T*).
        fallback_stream: with no positive rate, the lowest-latency stream of the set (lowest id on
            ties); None otherwise.
    """

    time_s: Fraction | None
    share_bytes: tuple[Fraction, Fraction, Fraction, Fraction]
    fallback_stream: int | None


def split_ref(
    size_bytes: int, streams: Sequence[int], rate_bps: Sequence[float], latency_s: Sequence[float]
) -> SplitRef:
    """Exact equal-finish-time split of ``size_bytes`` over ``streams`` (see module docstring)."""
    assert 1 <= size_bytes <= MAX_TASK_BYTES
    r = [Fraction(v) for v in rate_bps]
    lat = [Fraction(v) for v in latency_s]
    live = [i for i in streams if r[i] > 0]
    zero = Fraction(0)
    if not live:
        fallback = min(streams, key=lambda i: (lat[i], i))
        return SplitRef(None, (zero, zero, zero, zero), fallback)
    bits = 8 * Fraction(size_bytes)
    t_star = min(
        (bits + sum(r[i] * lat[i] for i in subset)) / sum(r[i] for i in subset)
        for k in range(1, len(live) + 1)
        for subset in itertools.combinations(live, k)
    )
    shares = [zero] * NUM_STREAMS
    for i in live:
        shares[i] = r[i] * max(zero, t_star - lat[i]) / 8
    assert sum(shares) == size_bytes  # the definition of T*, checked exactly
    return SplitRef(t_star, (shares[0], shares[1], shares[2], shares[3]), None)


def streams_time_ref(
    size_bytes: int, streams: Sequence[int], rate_bps: Sequence[float], latency_s: Sequence[float]
) -> float:
    """The exact fluid finish time in seconds as a float (+inf when no positive rate in the set)."""
    t = split_ref(size_bytes, streams, rate_bps, latency_s).time_s
    return math.inf if t is None else float(t)
