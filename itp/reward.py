"""The one reward: used by the simulator, by training and by the online learner in production.

Inputs are only what a production caller has: the raw decision state (caller units, float64[20]), the
decision (bytes per stream, predicted completion time) and the reported outcome (goodput, completion
time, success, retransmission count). With task size ``S = sum(chunk_bytes)`` bytes, effective rate
``e_i = bandwidth_i * min(success_rate_i, 1)`` bit/s and latency ``L_i`` s (raw state), the terms are:

* ``throughput_improvement = clip(log2(throughput_bps / g_ref), -3, 3)`` with the reference goodput
  ``g_ref = 8 S / T_ref`` of the best single stream as predicted at decision time,
  ``T_ref = min_{i: e_i > 0} (L_i + 8 S / e_i)``. For a successful task ``throughput = 8 S / latency_s``,
  so the term is ``log2(T_ref / latency_s)``: strictly decreasing in completion time, scale-free (one
  point per doubling of goodput over the best single stream), meaningful for small tasks too (T_ref
  includes latency). 0 when no stream has a positive estimated rate (nothing to compare with);
  -3 when nothing was delivered.
* ``latency_penalty = clip((latency_s - expected_time_s) / expected_time_s, 0, 2)``: relative excess of
  the realised completion time over the decision's own prediction (stragglers, rate drops, failed
  chunks); it pushes towards decisions whose completion is predictable, i.e. a short p95 tail.
  0 if the prediction is +inf; 2 if it is 0 and the task took any time.
* ``stream_imbalance``: spread of the predicted per-stream finish times
  ``f_i = transport_chunk_time(8 c_i, e_i, L_i)`` (``itp.transport``: set-up, slow start, then the rate;
  the model the production split equalises) over the streams that carry bytes:
  ``(max f - min f) / max f`` in [0, 1] (1 if a used stream has e_i = 0 or never finishes; 0 for a
  single stream). The production split (``itp.transport.production_split``) scores ~0; chunking that
  ignores rates or set-up (e.g. equal bytes on unequal streams) is penalised.
* ``completion_bonus = 1`` if the task succeeded, else 0.
* ``retransmission_penalty = min(retransmissions / n_used_streams, 1)``: resends per chunk.

``reward = w_t * throughput_improvement - w_l * latency_penalty - w_i * stream_imbalance
+ w_c * completion_bonus - w_r * retransmission_penalty`` with default weights (1.0, 0.5, 0.3, 2.0, 1.0).

Why these agree with the evaluation (mean goodput, p95 completion time): for a given state the dominant
term is monotone in the task's goodput, failure costs the bonus and the -3 floor, and the penalties
only fire on tail events (late completion, resends, unbalanced chunks) that also lengthen p95.
``docs/reward.md`` has the rationale and a check on the simulator.

The formula is implemented once, natively (``cpp/src/reward.cpp``, about 1 us); this module validates the
inputs and names the terms. The tests restate it in Python and compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from itp import _native
from itp.state import FEATURE_NAMES, NUM_FEATURES, NUM_STREAMS

__all__ = [
    "DEFAULT_REWARD_WEIGHTS",
    "REWARD_SPEC_VERSION",
    "Outcome",
    "RewardTerms",
    "RewardWeights",
    "compute_reward",
    "reward_terms",
    "trusted_reward",
]

REWARD_SPEC_VERSION: int = 2
"""Bumped whenever a term's definition or a default weight changes; copied into model metadata.

History: 1 initial; 2 ``stream_imbalance`` measures finish times with the transport model of the
production split (``itp.transport``) instead of ``L_i + 8 c_i / e_i``, so production's own chunks
score ~0 again."""

THROUGHPUT_CLIP: float = float(_native.THROUGHPUT_CLIP)
LATENCY_CLIP: float = float(_native.LATENCY_CLIP)


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the five reward terms (all finite, >= 0)."""

    throughput: float = 1.0
    latency: float = 0.5
    imbalance: float = 0.3
    completion: float = 2.0
    retransmission: float = 1.0

    def __post_init__(self) -> None:
        for name in ("throughput", "latency", "imbalance", "completion", "retransmission"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"RewardWeights.{name} must be a finite number >= 0, got {v!r}")


DEFAULT_REWARD_WEIGHTS = RewardWeights()


@dataclass(frozen=True)
class Outcome:
    """What the caller reports after a task.

    Attributes:
        throughput_bps: achieved goodput, delivered bits / completion time (bit/s, >= 0).
        latency_s: completion time from decision to the last chunk done (s, > 0).
        success: every chunk was delivered.
        retransmissions: chunk resends over all streams (>= 0).
    """

    throughput_bps: float
    latency_s: float
    success: bool
    retransmissions: int = 0


@dataclass(frozen=True)
class RewardTerms:
    """The five unweighted terms (see the module docstring) and the weighted total."""

    throughput_improvement: float
    latency_penalty: float
    stream_imbalance: float
    completion_bonus: float
    retransmission_penalty: float
    total: float


def _check_number(name: str, value: float, *, positive: bool = False, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf) or v < 0.0 or (positive and v == 0.0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'} and finite, got {value!r}")
    return v


def _validate(
    raw_state: npt.ArrayLike, chunk_bytes: Sequence[int], expected_time_s: float, outcome: Outcome
) -> tuple[npt.NDArray[np.float64], list[int], float]:
    raw = np.asarray(raw_state, dtype=np.float64)
    if raw.shape != (NUM_FEATURES,):
        raise ValueError(f"raw_state must have shape ({NUM_FEATURES},), got {raw.shape}")
    bad = np.flatnonzero(~np.isfinite(raw) | (raw < 0.0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"raw_state field {FEATURE_NAMES[i]} must be finite and >= 0, got {raw[i]!r}")
    if len(chunk_bytes) != NUM_STREAMS:
        raise ValueError(f"chunk_bytes must have {NUM_STREAMS} entries, got {len(chunk_bytes)}")
    chunks: list[int] = []
    for i, c in enumerate(chunk_bytes):
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise TypeError(f"chunk_bytes[{i}] must be an int, got {type(c).__name__}")
        if c < 0:
            raise ValueError(f"chunk_bytes[{i}] must be >= 0, got {c}")
        chunks.append(int(c))
    if sum(chunks) < 1:
        raise ValueError(f"chunk_bytes must sum to >= 1 byte, got {chunks}")
    expected = _check_number("expected_time_s", expected_time_s, allow_inf=True)
    if not isinstance(outcome, Outcome):
        raise TypeError(f"outcome must be an Outcome, got {type(outcome).__name__}")
    _check_number("outcome.throughput_bps", outcome.throughput_bps)
    _check_number("outcome.latency_s", outcome.latency_s, positive=True)
    r = outcome.retransmissions
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
        raise ValueError(f"outcome.retransmissions must be an int >= 0, got {r!r}")
    return raw, chunks, expected


def reward_terms(
    raw_state: npt.ArrayLike,
    chunk_bytes: Sequence[int],
    expected_time_s: float,
    outcome: Outcome,
    weights: RewardWeights = DEFAULT_REWARD_WEIGHTS,
    *,
    validate: bool = True,
) -> RewardTerms:
    """The reward's terms and total for one decision and its outcome (arguments as ``compute_reward``).

    ``validate=False`` skips the input checks, for trusted callers that built the inputs themselves
    (the simulator's inner loop); the formula is the same.
    """
    if validate:
        raw, chunks, expected = _validate(raw_state, chunk_bytes, expected_time_s, outcome)
    else:
        raw, chunks, expected = raw_state, list(chunk_bytes), float(expected_time_s)  # type: ignore[assignment]
    terms = _native.reward_terms(
        raw, chunks, expected, float(outcome.throughput_bps), float(outcome.latency_s),
        bool(outcome.success), int(outcome.retransmissions),
        (weights.throughput, weights.latency, weights.imbalance, weights.completion, weights.retransmission),
    )
    return RewardTerms(*terms)


def trusted_reward(
    raw_state: npt.NDArray[np.float64],
    chunk_bytes: Sequence[int],
    expected_time_s: float,
    throughput_bps: float,
    latency_s: float,
    success: bool,
    retransmissions: int,
    weights: RewardWeights = DEFAULT_REWARD_WEIGHTS,
) -> float:
    """The total reward for inputs the caller has already validated (the partitioner's report path):
    the same native formula as :func:`reward_terms`, without building a :class:`RewardTerms` (~1 us)."""
    return _native.reward_terms(
        raw_state, chunk_bytes, expected_time_s, throughput_bps, latency_s, success, retransmissions,
        (weights.throughput, weights.latency, weights.imbalance, weights.completion, weights.retransmission),
    )[5]


def compute_reward(
    raw_state: npt.ArrayLike,
    chunk_bytes: Sequence[int],
    expected_time_s: float,
    outcome: Outcome,
    weights: RewardWeights = DEFAULT_REWARD_WEIGHTS,
) -> float:
    """The scalar reward of one decision (see the module docstring for every term).

    Args:
        raw_state: the decision state, float64[20] in caller units (``itp.state`` layout).
        chunk_bytes: bytes placed on streams 0..3 (ints >= 0, sum >= 1).
        expected_time_s: the decision's predicted completion time, seconds (>= 0, may be +inf).
        outcome: the reported result.
        weights: term weights.

    Returns:
        The reward, a finite float in [-(3 w_t + 2 w_l + w_i + w_r), 3 w_t + w_c].

    Raises:
        ValueError: a NaN/infinite/negative field (named), wrong lengths, an empty decision.
        TypeError: non-numeric arguments.

    Complexity O(1) (~10 us in CPython); thread-safe (pure).
    """
    return reward_terms(raw_state, chunk_bytes, expected_time_s, outcome, weights).total
