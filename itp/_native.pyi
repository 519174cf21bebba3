"""Type stubs for the private extension ``itp._native`` (built from ``cpp/bindings/*.cpp``).

Users call the typed wrappers in ``itp`` (``itp.replay``, ``itp.ring``, ``itp.state``, ``itp.actions``,
``itp.transport``, ``itp.heuristic``, ``itp.agent``); these stubs let ``mypy --strict`` check those wrappers
against the compiled signatures. ``tests/test_native_stubs.py`` checks them against the built module: the
same public names, classes with the same members, and the same parameter names and defaults as the
pybind11 signatures. A binding added or renamed without updating this file fails that test.

Argument types are what the bindings accept, not only what they return: integer arguments parsed with
``__index__`` accept Python and numpy integers (``SupportsIndex``, never bool); real arguments accept any
real number (``float``); array arguments accept anything numpy converts (``ArrayLike``) and are checked for
shape, dtype and values in C++, raising ``ValueError``/``TypeError`` that name the argument. Output buffers
(``sample``, ``decide_batch``, ``normalize_states(out=...)``) must already have the exact dtype, be
C-contiguous and writeable: they are filled in place, never copied.
"""

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, SupportsIndex

import numpy as np
import numpy.typing as npt

_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]
_U8 = npt.NDArray[np.uint8]
_U64 = npt.NDArray[np.uint64]
# (chunk bytes of streams 0..3, expected completion time in seconds)
_SplitTuple = tuple[tuple[int, int, int, int], float]
# (action, source, chunk bytes 0..3, expected_time_s, confidence, state f32[20], raw f64[20], model_fault,
#  propensity)
# (action, source, chunk bytes, expected time s, confidence, state, raw state, model fault, propensity,
#  guard verdicts: bits 0..14 the actions the guard lets through, bits 16..19 the heuristic's action; -1 none)
_DecisionTuple = tuple[int, int, tuple[int, int, int, int], float, float, _F32, _F64, bool | None, float, int]
# (states f32[N, 20], actions i64[N], rewards f32[N], next_states f32[N, 20], dones f32[N])
_TransitionTuple = tuple[_F32, _I64, _F32, _F32, _F32]
_RingTuple = tuple[_F32, _I64, _F32, _F32, _F32, _F32, npt.NDArray[np.int32]]

# ---- register_state.cpp: the 20-feature state ------------------------------------------------------

NUM_STREAMS: int
NUM_FEATURES: int
STATE_LAYOUT_VERSION: int
FEATURE_NAMES: tuple[str, ...]
BANDWIDTH_SCALE_BPS: float  # bits per second that normalise to 1
LATENCY_SCALE_S: float  # seconds that normalise to 1
QUEUE_DEPTH_SCALE: float  # tasks that normalise to 1
TASK_SIZE_LOG2_SCALE: float  # log2(bytes) that normalises to 1

def normalize_state(raw_state: npt.ArrayLike) -> _F32: ...
def normalize_states(raw_states: npt.ArrayLike, out: _F32 | None = None) -> _F32: ...
def task_size_feature(size_bytes: float) -> float: ...

# ---- register_actions.cpp: the action table and the equal-finish split -------------------------------

NUM_ACTIONS: int
MAX_TASK_BYTES: int
ACTION_STREAMS: tuple[tuple[int, ...], ...]

def decode_action(action: SupportsIndex) -> tuple[int, ...]: ...
def encode_streams(streams: Iterable[SupportsIndex]) -> int: ...
def split_task(
    size_bytes: SupportsIndex, action: SupportsIndex, rate_bps: npt.ArrayLike, latency_s: npt.ArrayLike
) -> _SplitTuple: ...

# ---- register_replay.cpp: sum tree and prioritized replay ---------------------------------------------

MAX_REPLAY_CAPACITY: int
MIN_PRIORITY: float
MAX_PRIORITY: float

class SumTree:
    """Float64 sum tree + min tree (cpp/include/itp/sum_tree.hpp). Not thread-safe."""

    def __init__(self, capacity: SupportsIndex) -> None: ...
    @property
    def capacity(self) -> int: ...
    @property
    def leaf_count(self) -> int: ...
    @property
    def total(self) -> float: ...
    @property
    def min(self) -> float: ...
    def get(self, index: SupportsIndex) -> float: ...
    def set(self, index: SupportsIndex, value: float) -> None: ...
    def set_many(self, indices: npt.ArrayLike, values: npt.ArrayLike) -> None: ...
    def find_prefix(self, mass: float) -> int: ...
    def find_prefix_many(self, masses: npt.ArrayLike) -> tuple[_I64, _F64]: ...
    def check_invariants(self) -> bool: ...

class PrioritizedReplay:
    """Columnar prioritized replay (cpp/include/itp/replay.hpp); every method atomic (one mutex)."""

    def __init__(
        self,
        capacity: SupportsIndex,
        alpha: float = 0.6,
        epsilon: float = 1e-06,
        prioritized: bool = True,
        seed: SupportsIndex = 0,
    ) -> None: ...
    @property
    def capacity(self) -> int: ...
    @property
    def alpha(self) -> float: ...
    @property
    def epsilon(self) -> float: ...
    @property
    def prioritized(self) -> bool: ...
    @property
    def seed(self) -> int: ...
    @property
    def bytes_per_transition(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def cursor(self) -> int: ...
    @property
    def max_priority(self) -> float: ...
    @property
    def total_priority(self) -> float: ...
    @property
    def min_priority(self) -> float: ...
    @property
    def stale_updates(self) -> int: ...
    @property
    def rejected_records(self) -> int: ...
    def add(
        self,
        state: npt.ArrayLike,
        action: SupportsIndex,
        reward: float,
        next_state: npt.ArrayLike,
        done: float,
    ) -> int: ...
    def add_batch(
        self,
        states: npt.ArrayLike,
        actions: npt.ArrayLike,
        rewards: npt.ArrayLike,
        next_states: npt.ArrayLike,
        dones: npt.ArrayLike,
    ) -> int: ...
    def sample(
        self,
        batch_size: SupportsIndex,
        beta: float,
        states: _F32,
        actions: _I64,
        rewards: _F32,
        next_states: _F32,
        dones: _F32,
        weights: _F32,
        indices: _I64,
        generations: _U64,
    ) -> None: ...
    def update_priorities(
        self, indices: npt.ArrayLike, td_errors: npt.ArrayLike, generations: npt.ArrayLike | None = None
    ) -> int: ...
    def get_priorities(self, indices: npt.ArrayLike) -> _F64: ...
    def check_invariants(self) -> bool: ...
    def snapshot(self) -> dict[str, Any]: ...
    @staticmethod
    def from_snapshot(snapshot: dict[str, Any]) -> PrioritizedReplay: ...

# ---- register_ring.cpp: lock-free experience ring -------------------------------------------------------

MAX_RING_CAPACITY: int

class ExperienceRing:
    """Bounded lock-free MPSC ring of transition records (cpp/include/itp/ring.hpp)."""

    def __init__(self, capacity: SupportsIndex) -> None: ...
    @property
    def capacity(self) -> int: ...
    @property
    def pushed(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def drained(self) -> int: ...
    @property
    def size(self) -> int: ...
    def try_push(
        self,
        state: npt.ArrayLike,
        action: SupportsIndex,
        reward: float,
        next_state: npt.ArrayLike,
        done: float,
        propensity: float | None = None,
        guard_verdicts: SupportsIndex = -1,
    ) -> bool: ...
    def push_batch(
        self,
        states: npt.ArrayLike,
        actions: npt.ArrayLike,
        rewards: npt.ArrayLike,
        next_states: npt.ArrayLike,
        dones: npt.ArrayLike,
        propensities: npt.ArrayLike | None = None,
        guard_verdicts: npt.ArrayLike | None = None,
    ) -> int: ...
    def drain(self, max_records: SupportsIndex) -> _RingTuple: ...
    def drain_into(self, replay: PrioritizedReplay, max_records: SupportsIndex) -> int: ...

def _ring_push_benchmark(
    ring: ExperienceRing,
    n_threads: SupportsIndex,
    records_per_thread: SupportsIndex,
    batch_records: SupportsIndex = 256,
) -> float: ...

# ---- register_policy.cpp: fused MLP, heuristic, transport split, decision engine -----------------------

SETUP_RTTS: float  # fixed cost of one chunk, in round-trip times
INITIAL_WINDOW_BITS: float  # slow-start initial window, bits

class FusedMlp:
    """Native dense ReLU chain (the folded Q-network)."""

    kernel_name: ClassVar[str]
    def __init__(self, weights: list[Any], biases: list[Any]) -> None: ...
    def forward(self, state: npt.ArrayLike) -> _F32: ...
    def forward_batch(self, states: npt.ArrayLike, out: _F32 | None = None) -> _F32: ...
    @property
    def input_dim(self) -> int: ...
    @property
    def output_dim(self) -> int: ...
    @property
    def num_layers(self) -> int: ...

def transport_split(
    size_bytes: int,
    action: int,
    rate_bps: npt.ArrayLike,
    rtt_s: npt.ArrayLike,
    transport_params: npt.ArrayLike | None = None,
) -> _SplitTuple: ...
def transport_chunk_time(
    bits: float,
    rate_bps: float,
    rtt_s: float,
    setup_rtts: float = ...,
    initial_window_bits: float = ...,
    efficiency: float = 1.0,
) -> float: ...
def production_split(
    raw_state: npt.ArrayLike, action: int, transport_params: npt.ArrayLike | None = None
) -> _SplitTuple: ...
def heuristic_action(
    raw_state: npt.ArrayLike, transport_params: npt.ArrayLike | None = None,
    failure_models: npt.ArrayLike | None = None,
) -> int: ...

# ---- register_reward.cpp: the reward ----------------------------------------------------------------------

THROUGHPUT_CLIP: float  # |throughput_improvement| bound
LATENCY_CLIP: float  # latency_penalty bound

def reward_terms(
    raw_state: npt.ArrayLike,
    chunk_bytes: npt.ArrayLike,
    expected_time_s: float,
    throughput_bps: float,
    latency_s: float,
    success: bool,
    retransmissions: int,
    weights: tuple[float, float, float, float, float],
) -> tuple[float, float, float, float, float, float]: ...

class DecisionEngine:
    """Native decision path: stream table, optional model, epsilon-greedy, split (decision.hpp)."""

    def __init__(self, seed: int) -> None: ...
    def update_stream(
        self, stream_id: int, bandwidth_bps: float, latency_s: float, congestion: float, success_rate: float,
        start_window_bits: float = 0.0,
    ) -> None: ...
    def start_window_bits(self, stream_id: int) -> float: ...
    @property
    def guard_margin(self) -> float | None: ...
    @guard_margin.setter
    def guard_margin(self, value: float | None) -> None: ...
    @property
    def guard_overrides(self) -> int: ...
    @property
    def guard_exploration(self) -> bool: ...
    @guard_exploration.setter
    def guard_exploration(self, value: bool) -> None: ...
    def set_queue_depth(self, queue_depth: float) -> None: ...
    @property
    def queue_depth(self) -> float: ...
    def set_transport_params(self, transport_params: npt.ArrayLike) -> None: ...
    def transport_params(self) -> _F64: ...
    def set_failure_models(self, failure_models: npt.ArrayLike | None) -> None: ...
    def failure_models(self) -> _F64 | None: ...
    def stream(self, stream_id: int) -> tuple[float, float, float, float]: ...
    def set_model(self, model: FusedMlp | None) -> None: ...
    @property
    def epsilon(self) -> float: ...
    @epsilon.setter
    def epsilon(self, value: float) -> None: ...
    @property
    def explore_top_k(self) -> int: ...
    @explore_top_k.setter
    def explore_top_k(self, value: int) -> None: ...
    @property
    def explore_max_bytes(self) -> int | None: ...
    @explore_max_bytes.setter
    def explore_max_bytes(self, value: int | None) -> None: ...
    def decide(
        self,
        size_bytes: int,
        priority: float,
        hour: float,
        explore: bool = True,
        q_values: npt.ArrayLike | None = None,
    ) -> _DecisionTuple: ...
    def decide_raw(
        self, raw_state: npt.ArrayLike, explore: bool = False, q_values: npt.ArrayLike | None = None
    ) -> _DecisionTuple: ...
    def decide_batch(
        self,
        sizes_bytes: npt.ArrayLike,
        priorities: npt.ArrayLike,
        hour: float,
        explore: bool,
        actions: _I64,
        sources: _U8,
        chunks: _U64,
        expected_times_s: _F64,
        confidences: _F64,
        states: _F32,
    ) -> None: ...
    def snapshot(self, size_bytes: float, priority: float, hour: float) -> _F64: ...

# ---- register_partitioner.cpp: the native decision value and the partitioner's bookkeeping -------------

class Decision:
    """Where a task's bytes go: an immutable value (equality is identity), picklable."""

    def __init__(
        self,
        task_id: str,
        action: int,
        stream_ids: Sequence[int],
        chunk_sizes: Sequence[int],
        expected_time: float,
        confidence: float,
        source: str,
        model_version: str | None,
        propensity: float = 1.0,
        arm: str = "current",
    ) -> None: ...
    @property
    def task_id(self) -> str: ...
    @property
    def action(self) -> int: ...
    @property
    def stream_ids(self) -> tuple[int, ...]: ...
    @property
    def chunk_sizes(self) -> tuple[int, ...]: ...
    @property
    def expected_time(self) -> float: ...
    @property
    def confidence(self) -> float: ...
    @property
    def source(self) -> str: ...
    @property
    def model_version(self) -> str | None: ...
    @property
    def propensity(self) -> float: ...
    @property
    def arm(self) -> str: ...
    @property
    def bytes_per_stream(self) -> tuple[int, int, int, int]: ...

class PartitionerCore:
    """Native bookkeeping of TaskPartitioner: pending table, decisions, outcomes, counters."""

    def __init__(
        self,
        engine: DecisionEngine,
        ring: ExperienceRing,
        decision_ttl_s: float,
        task_type: type,
        clock: Callable[[], float] | None,
        monotonic: Callable[[], float] | None,
        on_nan_fault: Callable[[int], None] | None,
    ) -> None: ...
    def set_serving(
        self, model: FusedMlp | None, version: str | None, model_wanted: bool, native: bool
    ) -> None: ...
    def partition_task(self, task: Any) -> Decision | None: ...
    def check_task(self, task: Any) -> None: ...
    def commit(self, task: Any, decision: _DecisionTuple, arm: int, version: str | None) -> Decision: ...
    def partition_tasks(self, tasks: Sequence[Any]) -> list[Decision] | None: ...
    def partition_arrays(
        self,
        task_ids: Sequence[str],
        sizes_bytes: npt.ArrayLike,
        priorities: npt.ArrayLike,
        actions: _I64,
        chunk_bytes: _U64,
        expected_time_s: _F64,
        confidence: _F64,
        propensity: _F64,
        sources: _U8,
    ) -> bool: ...
    def report_outcome(
        self,
        task_id: str,
        decision: Decision,
        throughput_bps: float,
        latency_s: float,
        success: bool,
        retransmissions: int,
        with_streams: bool = False,
    ) -> Any: ...
    def report_outcomes(
        self,
        task_ids: Sequence[str],
        decisions: Sequence[Decision] | None,
        throughput_bps: npt.ArrayLike,
        latency_s: npt.ArrayLike,
        success: npt.ArrayLike,
        retransmissions: npt.ArrayLike | None,
        details: bool = False,
    ) -> Any: ...
    def expire_decisions(self) -> int: ...
    def stats(self) -> dict[str, Any]: ...
    def pending_ids(self) -> list[str]: ...

# ---- register_checksum.cpp: CRC-32C ---------------------------------------------------------------------

_BytesLike = bytes | bytearray | memoryview | npt.NDArray[Any]

def crc32c(data: _BytesLike, value: int = 0) -> int: ...
def crc32c_portable(data: _BytesLike, value: int = 0) -> int: ...
def crc32c_hardware() -> bool: ...

# ---- register_bench.cpp: private native timer -----------------------------------------------------------

def _bench_decision_core(iterations: int, seed: int) -> dict[str, Any]: ...
