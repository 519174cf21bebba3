"""The best non-learned policy: the production fallback and the bar a learned model has to clear.

Rule (implemented natively in ``cpp/src/heuristic.cpp``; :func:`heuristic_action_reference` is the slow,
obviously right pure-Python copy the tests compare it against):

* Effective rate of stream i: ``e_i = bandwidth_i * success_rate_i`` (bit/s). A chunk that fails is resent,
  so on average ``1 / success_i`` sends carry each byte.
* For each of the 15 actions, the transport-aware equal-finish split over the effective rates and the
  measured RTTs (``itp.transport``: set-up and slow start included) predicts a completion time ``T_a``
  (seconds).
* A split is only as fast as its slowest chunk, and every stream used is one more chance for a failed
  chunk to become the straggler, so the rule scores ``score_a = T_a * (1 + sum_{i used} (1 - success_i))``
  and picks the lowest score; ties go to the lower action index (fewer streams).

With perfect streams (success 1) this is the fastest predicted split: all four streams for large tasks,
and for small ones only the streams whose set-up ends well before the finish time. Modelling set-up and slow
start is what lifts it above the plain rate-proportional split (about +10% mean goodput on the real
traces; see the README's evaluation table).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from itp import _native
from itp.actions import NUM_ACTIONS
from itp.state import NUM_STREAMS
from itp.transport import TransportParamsLike, transport_params_array, transport_split

__all__ = ["HeuristicPolicy", "failure_penalty_reference", "heuristic_action", "heuristic_action_reference"]

FloatArray = npt.NDArray[np.float64]

_BANDWIDTH: Final = 0
_LATENCY: Final = 4
_SUCCESS: Final = 12
_TASK_SIZE: Final = 17


def _size_bytes(raw_state: FloatArray) -> int:
    return max(1, round(float(raw_state[_TASK_SIZE])))


def heuristic_action(
    raw_state: npt.ArrayLike, params: TransportParamsLike = None, failure_models: npt.ArrayLike | None = None
) -> int:
    """The heuristic's action (0..14) for a raw state (float64[20], caller units, ``itp.state`` layout),
    with the given transport parameters (:class:`itp.transport.TransportParams`, one or 4; None: defaults)
    and optionally per-stream failure models (float64[4, 2]: fail_probability in [0, 1), hazard_per_s
    >= 0; :class:`itp.calibration.FailureModel`), which add the expected time of the resends to each
    score: ``T (1 + sum_i (1 - success_i)) + max_i q_i / (1 - q_i) (D_i / 2 + max(0.2 s, 2 rtt_i))``,
    ``D_i = 8 bytes_i / r_i``, ``q_i = 1 - (1 - fail_probability_i) exp(-hazard_per_s_i D_i)`` (at most
    0.99).

    Raises:
        ValueError: a NaN, infinite or negative feature (named), a task size outside 1..2**50, or a bad
            failure model (stream and field named).

    Native, O(15 splits), thread-safe, GIL released.
    """
    return int(_native.heuristic_action(raw_state, transport_params_array(params), failure_models))


def failure_penalty_reference(
    chunk_bytes: Sequence[int], rate: Sequence[float], rtt: Sequence[float], failure_models: npt.ArrayLike
) -> float:
    """Python copy of the failure-model penalty of one split, seconds (see :func:`heuristic_action`)."""
    models = np.asarray(failure_models, dtype=np.float64)
    worst = 0.0
    for i, b in enumerate(chunk_bytes):
        q0, hazard = float(models[i, 0]), float(models[i, 1])
        if b == 0 or (q0 <= 0.0 and hazard <= 0.0):
            continue
        if rate[i] <= 0.0:
            return math.inf
        data_s = 8.0 * b / rate[i]
        q = min(0.99, 1.0 - (1.0 - q0) * math.exp(-hazard * data_s))
        worst = max(worst, q / (1.0 - q) * (0.5 * data_s + max(0.2, 2.0 * rtt[i])))
    return worst


def heuristic_action_reference(
    raw_state: npt.ArrayLike, params: TransportParamsLike = None, failure_models: npt.ArrayLike | None = None
) -> int:
    """Python copy of the scoring rule over the native split (slow; for tests and documentation)."""
    raw = np.asarray(raw_state, dtype=np.float64)
    size = _size_bytes(raw)
    rate = [float(raw[_BANDWIDTH + i]) * float(raw[_SUCCESS + i]) for i in range(NUM_STREAMS)]
    rtt = [float(raw[_LATENCY + i]) for i in range(NUM_STREAMS)]
    best, best_score = 0, math.inf
    for a in range(NUM_ACTIONS):
        split = transport_split(size, a, rate, rtt, params)
        fail_mass = sum(1.0 - float(raw[_SUCCESS + i]) for i in split.stream_ids)
        score = split.expected_time_s * (1.0 + fail_mass)
        if failure_models is not None:
            score += failure_penalty_reference(split.chunk_bytes, rate, rtt, failure_models)
        if score < best_score:
            best, best_score = a, score
    return best


class HeuristicPolicy:
    """The heuristic as a simulator policy (``itp.sim.policy.Policy``); stateless, thread-safe."""

    name = "heuristic"

    def select_action(self, raw_state: FloatArray) -> int:
        """The heuristic's action for a raw state (see :func:`heuristic_action`)."""
        return heuristic_action(raw_state)
