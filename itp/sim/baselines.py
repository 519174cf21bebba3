"""Reference policies: simple baselines, the heuristic, and the clairvoyant oracle.

* ``round-robin``: one stream per task, cycling 0, 1, 2, 3 (ignores the state).
* ``best-single``: the single stream with the highest measured rate (``bandwidth_i``).
* ``equal-split``: all four streams, equal bytes (``S // 4`` each, the remainder on the first streams).
* ``rate-proportional``: all four streams, production chunking (equal predicted finish time over
  effective rates, ``itp.sim.policy.default_split``).
* ``heuristic``: ``itp.heuristic.HeuristicPolicy`` (the production fallback).
* ``oracle``: tries every candidate decision on the realised future with ``env.simulate_action`` and
  keeps the one that completes first: the 15 actions with production chunking plus the 11 multi-stream
  actions with equal bytes (so no baseline above can beat it on a decision). Ties go to fewer streams.
  A reference upper bound only: it sees the future.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from itp.actions import ACTION_STREAMS, NUM_ACTIONS
from itp.heuristic import HeuristicPolicy
from itp.sim.policy import OnnxPolicy, Policy, task_size_bytes

if TYPE_CHECKING:
    from itp.sim.env import PartitionEnv, TaskOutcome

__all__ = [
    "BASELINE_NAMES",
    "BestSinglePolicy",
    "EqualSplitPolicy",
    "OraclePolicy",
    "RateProportionalPolicy",
    "RoundRobinPolicy",
    "equal_chunks",
    "make_policy",
]

FloatArray = npt.NDArray[np.float64]
ALL_STREAMS_ACTION = NUM_ACTIONS - 1


def equal_chunks(size_bytes: int, action: int) -> tuple[int, int, int, int]:
    """``size_bytes`` split into equal parts over the streams of ``action`` (remainder to the lowest ids)."""
    streams = ACTION_STREAMS[action]
    base, rem = divmod(size_bytes, len(streams))
    out = [0, 0, 0, 0]
    for j, i in enumerate(streams):
        out[i] = base + (1 if j < rem else 0)
    return out[0], out[1], out[2], out[3]


class RoundRobinPolicy:
    """One stream per task, cycling 0, 1, 2, 3; ``reset`` restarts at 0."""

    name = "round-robin"

    def __init__(self) -> None:
        self._next = 0

    def reset(self) -> None:
        """Restart the cycle at stream 0."""
        self._next = 0

    def select_action(self, raw_state: FloatArray) -> int:
        """The next stream of the cycle (actions 0-3 are the single streams)."""
        a = self._next
        self._next = (a + 1) % 4
        return a


class BestSinglePolicy:
    """The single stream with the highest measured rate (lowest id on ties)."""

    name = "best-single"

    def select_action(self, raw_state: FloatArray) -> int:
        """argmax of ``bandwidth_bps`` over the 4 streams."""
        return int(np.argmax(raw_state[0:4]))


class EqualSplitPolicy:
    """All four streams with equal bytes."""

    name = "equal-split"

    def select_action(self, raw_state: FloatArray) -> int:
        """Always action 14 (all streams)."""
        return ALL_STREAMS_ACTION

    def chunk_bytes(self, raw_state: FloatArray, action: int) -> tuple[int, int, int, int]:
        """Equal bytes over the action's streams."""
        return equal_chunks(task_size_bytes(raw_state), action)


class RateProportionalPolicy:
    """All four streams, production chunking (equal predicted finish time over effective rates)."""

    name = "rate-proportional"

    def select_action(self, raw_state: FloatArray) -> int:
        """Always action 14 (all streams)."""
        return ALL_STREAMS_ACTION


class OraclePolicy:
    """Clairvoyant reference: the candidate decision that completes the current task first.

    Needs ``bind(env)`` before each episode (``itp.sim.evaluate`` does it). Candidates: 15 actions with
    production chunking + 11 multi-stream actions with equal bytes; key ``(failed, completion time,
    number of streams)``. ~26 simulations per decision (about 1 ms).
    """

    name = "oracle"

    def __init__(self) -> None:
        self._env: PartitionEnv | None = None
        self._chunks: tuple[int, int, int, int] | None = None
        self.last_outcome: TaskOutcome | None = None

    def bind(self, env: PartitionEnv) -> None:
        """Attach the environment whose realised future the oracle reads."""
        self._env = env

    def reset(self) -> None:
        """Forget the pending chunk choice."""
        self._chunks = None
        self.last_outcome = None

    def best_outcome(self) -> TaskOutcome:
        """The best candidate outcome for the environment's current task."""
        env = self._env
        if env is None:
            raise RuntimeError("OraclePolicy needs bind(env) before select_action")
        size = task_size_bytes(env.raw_state)
        best: TaskOutcome | None = None
        best_key: tuple[bool, float, int] | None = None
        for a in range(NUM_ACTIONS):
            n_streams = len(ACTION_STREAMS[a])
            candidates = [None] if n_streams == 1 else [None, equal_chunks(size, a)]
            for chunks in candidates:
                o = env.simulate_action(a, chunks)
                key = (not o.success, o.completion_time_s, n_streams)
                if best_key is None or key < best_key:
                    best, best_key = o, key
        assert best is not None
        return best

    def select_action(self, raw_state: FloatArray) -> int:
        """The best candidate's action (its chunks are returned by ``chunk_bytes``)."""
        best = self.best_outcome()
        self.last_outcome = best
        self._chunks = best.chunk_bytes
        return best.action

    def chunk_bytes(self, raw_state: FloatArray, action: int) -> tuple[int, int, int, int] | None:
        """The chunks of the candidate chosen by the last ``select_action``."""
        return self._chunks


BASELINE_NAMES: tuple[str, ...] = (
    "round-robin",
    "best-single",
    "equal-split",
    "rate-proportional",
    "heuristic",
    "oracle",
)


def make_policy(spec: str | os.PathLike[str]) -> Policy:
    """A policy by name (``BASELINE_NAMES``) or from a ``*.onnx`` model file.

    Raises:
        ValueError: unknown name.
        FileNotFoundError: a model path that does not exist.
    """
    s = str(spec)
    if s.endswith(".onnx"):
        return OnnxPolicy(Path(s))
    factories: dict[str, type] = {
        "round-robin": RoundRobinPolicy,
        "best-single": BestSinglePolicy,
        "equal-split": EqualSplitPolicy,
        "rate-proportional": RateProportionalPolicy,
        "heuristic": HeuristicPolicy,
        "oracle": OraclePolicy,
    }
    if s not in factories:
        raise ValueError(
            f"unknown policy {s!r}; expected one of {', '.join(BASELINE_NAMES)} or a *.onnx file"
        )
    policy: Policy = factories[s]()
    return policy
