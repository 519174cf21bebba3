"""itp: Intelligent Task Partitioning.

Decides, per task, which of 4 parallel network streams to use and how many bytes to put on each, predicts
the completion time, and learns from reported outcomes. The public names are re-exported here; the native
extension ``itp._native`` is private.
"""

from __future__ import annotations

try:
    from itp import _native as _native
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "itp's native extension itp._native is not built or does not load "
        f"({exc}). Build and install it with `pip install .` from the repository root."
    ) from exc

from itp.actions import (
    ACTION_STREAMS,
    MAX_TASK_BYTES,
    NUM_ACTIONS,
    Split,
    decode_action,
    encode_streams,
    split_task,
)
from itp.agent import EvaluationReport
from itp.heuristic import HeuristicPolicy, heuristic_action
from itp.partitioner import (
    DEFAULT_MODEL,
    ChunkOutcome,
    Decision,
    OutcomeRecord,
    PartitionerMetrics,
    Task,
    TaskPartitioner,
)
from itp.replay import MAX_REPLAY_CAPACITY, PrioritizedReplay, SampleBatch
from itp.ring import MAX_RING_CAPACITY, ExperienceRing, TransitionBatch
from itp.state import (
    FEATURE_NAMES,
    NUM_FEATURES,
    NUM_STREAMS,
    STATE_LAYOUT_VERSION,
    RawState,
    normalize_state,
    normalize_states,
    task_size_feature,
)
from itp.transport import DEFAULT_TRANSPORT_PARAMS, TransportParams, production_split, transport_split

__version__ = "0.1.0"

__all__ = [
    "ACTION_STREAMS",
    "DEFAULT_MODEL",
    "DEFAULT_TRANSPORT_PARAMS",
    "FEATURE_NAMES",
    "MAX_REPLAY_CAPACITY",
    "MAX_RING_CAPACITY",
    "MAX_TASK_BYTES",
    "NUM_ACTIONS",
    "NUM_FEATURES",
    "NUM_STREAMS",
    "STATE_LAYOUT_VERSION",
    "ChunkOutcome",
    "Decision",
    "EvaluationReport",
    "ExperienceRing",
    "HeuristicPolicy",
    "OutcomeRecord",
    "PartitionerMetrics",
    "PrioritizedReplay",
    "RawState",
    "SampleBatch",
    "Split",
    "Task",
    "TaskPartitioner",
    "TransitionBatch",
    "TransportParams",
    "__version__",
    "decode_action",
    "encode_streams",
    "heuristic_action",
    "normalize_state",
    "normalize_states",
    "production_split",
    "split_task",
    "task_size_feature",
    "transport_split",
]
