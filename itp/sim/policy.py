"""The policy protocol, the production chunking rule, and an ONNX Q-network policy.

A policy maps a raw decision state (float64[20], caller units, ``itp.state`` layout) to one of the 15
actions. By default the task's bytes are then placed by the *production chunking rule*
(``default_split``), exactly the split ``TaskPartitioner`` executes (``itp.transport.production_split``):
the transport-aware equal-finish split (connection set-up and slow start included) over the effective
rates ``e_i = bandwidth_i * success_rate_i`` (a chunk that fails is resent, so on average
``1 / success_i`` sends carry each byte) and the measured RTTs. So the simulator trains and scores a
policy on the chunks production would send. A policy that wants its own chunking (e.g. equal bytes)
also defines ``chunk_bytes(raw_state, action)``; ``decide`` calls it when present, and the prediction
for such chunks is ``predicted_time_s`` (the same transport model, per stream).

Optional hooks: ``reset()`` (called at each episode start) and ``bind(env)`` (called once per episode
with the ``PartitionEnv``; only the clairvoyant oracle uses it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from itp.actions import ACTION_STREAMS, NUM_ACTIONS, Split
from itp.state import NUM_FEATURES, NUM_STREAMS, normalize_states
from itp.transport import TransportParams, production_split, transport_chunk_time

__all__ = [
    "ChunkingPolicy",
    "Decision",
    "OnnxPolicy",
    "Policy",
    "decide",
    "default_split",
    "effective_rates",
    "predicted_time_s",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
TASK_SIZE_INDEX = 17


@runtime_checkable
class Policy(Protocol):
    """Anything with a ``name`` and ``select_action(raw_state) -> int`` (0..14)."""

    name: str

    def select_action(self, raw_state: FloatArray) -> int:
        """The action for a raw state (float64[20], caller units)."""
        ...


@runtime_checkable
class ChunkingPolicy(Policy, Protocol):
    """A policy that also chooses the bytes per stream (None -> the production chunking)."""

    def chunk_bytes(self, raw_state: FloatArray, action: int) -> tuple[int, int, int, int] | None:
        """Bytes on streams 0..3 for ``action`` (summing to the task size), or None."""
        ...


@dataclass(frozen=True)
class Decision:
    """An action and, optionally, explicit bytes per stream (None: production chunking)."""

    action: int
    chunk_bytes: tuple[int, int, int, int] | None = None


def task_size_bytes(raw_state: FloatArray) -> int:
    """The task size of a raw state as an int >= 1 (bytes)."""
    return max(1, round(float(raw_state[TASK_SIZE_INDEX])))


def effective_rates(raw_state: FloatArray) -> list[float]:
    """``bandwidth_i * min(success_rate_i, 1)`` for the 4 streams, bit/s."""
    return [
        float(raw_state[i]) * min(float(raw_state[12 + i]), 1.0) for i in range(NUM_STREAMS)
    ]


def default_split(
    raw_state: FloatArray, action: int, params: Sequence[TransportParams] | None = None
) -> Split:
    """The production chunking of ``action`` in ``raw_state``: ``itp.transport.production_split`` with the
    sender's transport parameters ``params`` (one per stream; None: the defaults).

    Returns the bytes per stream (summing to the task size) and the predicted completion time, seconds.
    """
    return production_split(raw_state, action, params)


def predicted_time_s(
    raw_state: FloatArray,
    chunk_bytes: tuple[int, int, int, int],
    params: Sequence[TransportParams] | None = None,
) -> float:
    """Transport-model prediction for explicit chunks, seconds (+inf if a used stream has ``e_i = 0``).

    ``max over used i of transport_chunk_time(8 c_i, e_i, rtt_i, params_i)``: the same per-chunk model as
    the production split (``itp.transport``), so explicit chunks and production chunks are predicted
    alike; ``params`` the sender's transport parameters, one per stream (None: the defaults).
    """
    eff = effective_rates(raw_state)
    worst = 0.0
    for i, c in enumerate(chunk_bytes):
        if c > 0:
            if eff[i] <= 0.0:
                return float("inf")
            p = params[i] if params is not None else None
            worst = max(worst, transport_chunk_time(8.0 * c, eff[i], float(raw_state[4 + i]), p))
    return worst


def _check_action(action: object, who: str) -> int:
    if isinstance(action, bool) or not isinstance(action, (int, np.integer)):
        raise TypeError(f"{who} returned a non-int action {action!r}")
    a = int(action)
    if not 0 <= a < NUM_ACTIONS:
        raise ValueError(f"{who} returned action {a}, must be in 0..{NUM_ACTIONS - 1}")
    return a


def check_chunks(
    chunk_bytes: tuple[int, ...] | list[int], action: int, size_bytes: int
) -> tuple[int, int, int, int]:
    """Validate explicit chunks against the action's streams and the task size.

    Raises:
        ValueError: wrong length, negative bytes, bytes on a stream outside the action, wrong sum.
    """
    if len(chunk_bytes) != NUM_STREAMS:
        raise ValueError(f"chunk_bytes must have {NUM_STREAMS} entries, got {len(chunk_bytes)}")
    out = tuple(int(c) for c in chunk_bytes)
    allowed = ACTION_STREAMS[action]
    for i, c in enumerate(out):
        if c < 0:
            raise ValueError(f"chunk_bytes[{i}] must be >= 0, got {c}")
        if c > 0 and i not in allowed:
            raise ValueError(f"chunk_bytes[{i}] = {c} but stream {i} is not in action {action} {allowed}")
    if sum(out) != size_bytes:
        raise ValueError(f"chunk_bytes must sum to the task size {size_bytes}, got {sum(out)}")
    return out  # type: ignore[return-value]


def decide(policy: Policy, raw_state: FloatArray) -> Decision:
    """Ask ``policy`` for a decision on ``raw_state``; use its ``chunk_bytes`` hook if it has one.

    Raises:
        TypeError, ValueError: if the policy returns an invalid action or invalid chunks.
    """
    action = _check_action(policy.select_action(raw_state), f"policy {policy.name!r}")
    hook = getattr(policy, "chunk_bytes", None)
    if hook is None:
        return Decision(action)
    chunks = hook(raw_state, action)
    if chunks is None:
        return Decision(action)
    return Decision(action, check_chunks(chunks, action, task_size_bytes(raw_state)))


def _width_ok(shape: Any, width: int) -> bool:
    """A rank-2 ONNX shape whose second dimension is ``width`` or symbolic/unknown."""
    return len(shape) == 2 and (isinstance(shape[1], str) or shape[1] in (width, None))


class OnnxPolicy:
    """Greedy policy of an exported Q-network (``.onnx``), run with ONNX Runtime.

    The model takes input ``"state"``: float32[N, 20] natively normalised (``itp.normalize_states``) and
    returns ``"q_values"``: float32[N, 15]; the action is the argmax (lowest index on ties).

    Args:
        path: the ``.onnx`` file.
        name: display name (default: the file's stem).

    Raises:
        FileNotFoundError: missing file.
        ValueError: the file is not a loadable ONNX model, or the graph lacks the ``state`` input or
            ``q_values`` output, or has the wrong widths (the message names the file).

    Not thread-safe per instance (one scratch buffer); ~10 us per decision.
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None) -> None:
        import onnxruntime as ort  # optional heavy import, only when a model is evaluated

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"model file not found: {p}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self._session: Any = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for unreadable or invalid graphs
            raise ValueError(f"{p}: not a loadable ONNX model ({exc})") from None
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        if "state" not in inputs:
            raise ValueError(f"{p}: model has no input named 'state' (inputs: {sorted(inputs)})")
        if "q_values" not in outputs:
            raise ValueError(f"{p}: model has no output named 'q_values' (outputs: {sorted(outputs)})")
        in_shape = inputs["state"].shape
        out_shape = outputs["q_values"].shape
        if not _width_ok(in_shape, NUM_FEATURES):
            raise ValueError(f"{p}: input 'state' must be [N, {NUM_FEATURES}], got {in_shape}")
        if not _width_ok(out_shape, NUM_ACTIONS):
            raise ValueError(f"{p}: output 'q_values' must be [N, {NUM_ACTIONS}], got {out_shape}")
        self.path = p
        self.name = name if name is not None else p.stem
        self._buf = np.empty((1, NUM_FEATURES), dtype=np.float32)

    def q_values(self, raw_states: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Q-values float32[N, 15] for raw states float64[N, 20] (caller units)."""
        x = normalize_states(np.atleast_2d(np.asarray(raw_states, dtype=np.float64)))
        q: npt.NDArray[np.float32] = self._session.run(["q_values"], {"state": x})[0]
        if q.ndim != 2 or q.shape[1] != NUM_ACTIONS:
            raise ValueError(f"{self.path}: q_values has shape {q.shape}, expected (N, {NUM_ACTIONS})")
        return q

    def select_action(self, raw_state: FloatArray) -> int:
        """argmax of the Q-values of one raw state."""
        normalize_states(np.asarray(raw_state, dtype=np.float64).reshape(1, NUM_FEATURES), out=self._buf)
        q = self._session.run(["q_values"], {"state": self._buf})[0]
        return int(np.argmax(q[0]))
