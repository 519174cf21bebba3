"""TaskPartitioner: the API latency-critical callers import.

One call decides one task: which streams, how many bytes on each, the predicted completion time. The
whole decision and its bookkeeping run in one native call with the GIL released
(``itp._native.PartitionerCore``, over the native ``DecisionEngine``): validation of the task, state
snapshot, normalisation, Q-network forward pass, epsilon-greedy, heuristic fallback, equal-finish-time split
over effective rates ``e_i = bandwidth_i * success_rate_i`` (bit/s), the pending-decision table and the
counters; the returned :class:`Decision` is a native immutable value built after the native work. Models
that the engine cannot run itself (ONNX Runtime graphs) and canary candidates are answered by
:class:`itp.agent.Agent` from Python, and the result is recorded by the same native table.

Propensity: every decision carries the probability the behaviour policy gave the executed action,
``(1 - eps) + eps / k`` for the greedy action and ``eps / k`` for any other of the k best by Q under
epsilon-greedy with rate ``eps`` exploring among the ``k = explore_top_k`` best actions (default 15: all),
and 1 for the (deterministic) heuristic; it is kept with the pending decision and handed to
the outcome listeners (:class:`OutcomeRecord`) for off-policy corrections.

Learning signal: ``report_outcome`` is one native call: it computes the reward (the same native function
as :mod:`itp.reward`, the simulator and the trainer) from the raw state *as it was at decision time*, the
executed action and the reported outcome, and pushes the transition ``(state then, action, reward, state
now)`` into the lock-free ring (:class:`itp.ring.ExperienceRing`). Decisions that are never reported expire
after ``decision_ttl_s`` seconds and are counted. Batch forms: :meth:`TaskPartitioner.partition_tasks`
(Decision objects), :meth:`TaskPartitioner.partition_arrays` (numpy in and out) and
:meth:`TaskPartitioner.report_outcomes`.

Transport model: the split, the heuristic's choice and ``expected_time`` use per-stream transport
parameters (:class:`itp.transport.TransportParams`: set-up RTTs, initial window, rate efficiency), the
fresh-connection defaults until :meth:`TaskPartitioner.set_transport_params` replaces them. With
``calibrate_transport=True`` (or a :class:`itp.calibration.TransportCalibrator`) the partitioner fits them
itself: per-chunk outcomes (:class:`ChunkOutcome`, passed to ``report_outcome(..., chunks=...)``) become
:class:`itp.calibration.ChunkObservation` s with the stream's effective rate and RTT *at decision time*
(appending is O(1)); every ``calibration_interval`` observations a background thread refits (up to
~2 s for 2048 observations) and pushes the fitted parameters into the native engine, never on the
decision path. The state layout (v1) does not depend on the transport parameters: no feature is a
predicted time.

Faults: a model that is missing, unreadable, corrupt, of the wrong shape or layout, whose inference
raises, or that outputs NaN/inf never reaches the caller: the decision comes from the heuristic
(``source="heuristic"``), ``fallback_count`` rises and a warning is logged once per cause. Bad *caller*
input raises ``ValueError``/``TypeError`` naming the field and the value, and changes nothing.

Thread-safety: every public method may be called from any number of threads at once. The native table is
sharded by task id (16 shards, each under its own mutex held for a few map operations); counters are
atomics, the outcome statistics change together under one small mutex.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt

from itp import _native
from itp.actions import MAX_TASK_BYTES
from itp.agent import ARMS, SOURCES, Agent, EvaluationReport, evaluate_model
from itp.calibration import ChunkObservation, TransportCalibrator
from itp.model_loading import LoadedModel

# The reward the native report path computes is this one function's formula (native reward_terms); it is
# importable from here so one check (tests/test_reward.py) can pin that production and simulation agree.
from itp.reward import trusted_reward  # noqa: F401
from itp.ring import ExperienceRing
from itp.state import NUM_STREAMS
from itp.transport import TransportParams, transport_params_array

__all__ = [
    "DEFAULT_MODEL",
    "ChunkOutcome",
    "Decision",
    "DecisionArrays",
    "OutcomeRecord",
    "PartitionerMetrics",
    "Task",
    "TaskPartitioner",
    "default_model_path",
    "local_hour",
]

logger = logging.getLogger(__name__)

_SOURCES: Final = SOURCES


def default_model_path() -> Path:
    """The model bundled in the wheel (``itp/models/dqn_v1.onnx``)."""
    return Path(__file__).resolve().parent / "models" / "dqn_v1.onnx"


class _Default:
    """Sentinel: 'use the bundled model'."""

    def __repr__(self) -> str:
        return "DEFAULT_MODEL"


DEFAULT_MODEL: Final = _Default()


def local_hour() -> float:
    """Local time of day in hours, [0, 24): the default clock."""
    now = time.time()
    offset = -time.altzone if time.localtime(now).tm_isdst > 0 else -time.timezone
    return ((now + offset) % 86400.0) / 3600.0


@dataclass(frozen=True, slots=True)
class Task:
    """A transfer task to place.

    Attributes:
        id: caller's unique id (non-empty str).
        size: bytes to move, int in 1..2**50.
        priority: in [0, 1] (1 = most urgent).
    """

    id: str
    size: int
    priority: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"Task.id must be a non-empty str, got {self.id!r}")
        if not isinstance(self.size, (int, np.integer)) or isinstance(self.size, bool):
            raise TypeError(f"Task.size must be an int number of bytes, got {type(self.size).__name__}")
        if not 1 <= self.size <= MAX_TASK_BYTES:
            raise ValueError(f"Task.size must be in 1..2**50 bytes, got {self.size}")
        p = self.priority
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
            raise TypeError(f"Task.priority must be a number, got {type(p).__name__}")
        if not 0.0 <= float(p) <= 1.0:  # also rejects NaN
            raise ValueError(f"Task.priority must be in [0, 1], got {p}")


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    """How one chunk of a decided task went on one stream (for :meth:`TaskPartitioner.report_outcome`).

    Attributes:
        stream_id: the stream that carried it, one of the decision's ``stream_ids``.
        size_bytes: bytes of the chunk, int >= 1. A stream's share may be sent as several chunks; the
            chunks of a stream sum to the bytes the decision put there (at most that for a failed task).
        seconds: first byte sent to the receiver's acknowledgement of the chunk (its final attempt),
            finite, > 0.
        retries: attempts before the final one, int >= 0.
        start_window_bits: the congestion window the chunk started from, bits, when the sender knows it
            (a warm persistent stream: ``itp.transport.start_window_bits``), finite and >= 0; 0 (default):
            unknown. The calibrator then models this chunk from that window instead of fitting it as a
            cold start (``itp.calibration``).

    Raises:
        TypeError, ValueError: naming the bad field and value.
    """

    stream_id: int
    size_bytes: int
    seconds: float
    retries: int = 0
    start_window_bits: float = 0.0

    def __post_init__(self) -> None:
        for name in ("stream_id", "size_bytes", "retries"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"ChunkOutcome.{name} must be an int, got {type(v).__name__}")
        if not 0 <= self.stream_id < NUM_STREAMS:
            raise ValueError(f"ChunkOutcome.stream_id must be in 0..{NUM_STREAMS - 1}, got {self.stream_id}")
        if self.size_bytes < 1:
            raise ValueError(f"ChunkOutcome.size_bytes must be >= 1, got {self.size_bytes}")
        if self.retries < 0:
            raise ValueError(f"ChunkOutcome.retries must be >= 0, got {self.retries}")
        v = self.seconds
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            raise TypeError(f"ChunkOutcome.seconds must be a number, got {type(v).__name__}")
        if not (math.isfinite(v) and v > 0.0):
            raise ValueError(f"ChunkOutcome.seconds must be finite and > 0, got {v!r}")
        w = self.start_window_bits
        if isinstance(w, bool) or not isinstance(w, (int, float, np.floating, np.integer)):
            raise TypeError(f"ChunkOutcome.start_window_bits must be a number, got {type(w).__name__}")
        if not (math.isfinite(w) and w >= 0.0):
            raise ValueError(f"ChunkOutcome.start_window_bits must be finite and >= 0, got {w!r}")


def _checked_chunks(
    chunks: Sequence[ChunkOutcome], plan: tuple[int, int, int, int], success: bool, name: str
) -> tuple[ChunkOutcome, ...]:
    """The chunks of one task, checked against its plan (bytes per stream); ValueError/TypeError naming
    ``name`` and the element. A successful task's chunks sum to the plan on every used stream."""
    if isinstance(chunks, (str, bytes)) or not isinstance(chunks, Sequence):
        raise TypeError(f"{name} must be a sequence of ChunkOutcome or None, got {type(chunks).__name__}")
    out = tuple(chunks)
    sums = [0, 0, 0, 0]
    for k, c in enumerate(out):
        if not isinstance(c, ChunkOutcome):
            raise TypeError(f"{name}[{k}] must be a ChunkOutcome, got {type(c).__name__}")
        if plan[c.stream_id] == 0:
            used = tuple(i for i in range(NUM_STREAMS) if plan[i] > 0)
            raise ValueError(
                f"{name}[{k}].stream_id {c.stream_id} is not used by the decision (streams {used})"
            )
        sums[c.stream_id] += int(c.size_bytes)
    for i in range(NUM_STREAMS):
        if sums[i] > plan[i] or (success and out and sums[i] != plan[i]):
            raise ValueError(
                f"{name}: the chunks on stream {i} sum to {sums[i]} bytes, the decision put {plan[i]} there"
                + ("" if success else " (a failed task may report fewer, never more)")
            )
    return out


class _CalibrationWorker:
    """Refits a :class:`TransportCalibrator` off the decision path and pushes the result into the engine.

    ``observed(n)`` (O(1), on the reporting thread) counts new observations; every ``interval`` of them it
    wakes a daemon thread (started on first use) that runs ``fit()`` (up to ~2 s) and
    ``engine.set_transport_params`` (a 96-byte copy under the stream-table lock). Holds no reference to the
    partitioner, so a dropped partitioner is collected and its ``weakref.finalize`` stops the thread.
    """

    def __init__(
        self, calibrator: TransportCalibrator, engine: Any, interval: int, model_failures: bool = False
    ) -> None:
        self.calibrator = calibrator
        self._engine = engine
        self.interval = interval
        self.model_failures = model_failures
        self._lock = threading.Lock()
        self._fit_lock = threading.Lock()
        self._wake = threading.Event()
        self._since_fit = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self.pushes = 0
        self.last_error: Any = None

    def observed(self, n: int) -> None:
        with self._lock:
            self._since_fit += n
            if self._since_fit < self.interval or self._closed:
                return
            self._since_fit = 0
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="itp-transport-calibration", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            try:
                self.fit_and_push()
            except Exception:  # a failed fit must never stop calibration or reach a caller
                logger.exception("transport calibration failed; keeping the current parameters")

    def fit_and_push(self) -> tuple[TransportParams, ...]:
        """One fit and push, now, on the calling thread (serialised with the background thread)."""
        with self._fit_lock:
            self.calibrator.fit()
            params = tuple(self.calibrator.params(i) for i in range(NUM_STREAMS))
            self._engine.set_transport_params(transport_params_array(params))
            # The failure models are charged once there is something to fit them on.
            if self.model_failures and (
                self.calibrator.observation_count() >= self.calibrator.min_observations
            ):
                models = [self.calibrator.failure_model(i) for i in range(NUM_STREAMS)]
                self._engine.set_failure_models(
                    np.array([[m.fail_probability, m.hazard_per_s] for m in models], dtype=np.float64)
                )
            self.last_error = self.calibrator.prediction_error()
            self.pushes += 1
        logger.debug("transport parameters recalibrated: %s", [p.as_dict() for p in params])
        return params

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)


#: Where a task's bytes go: the native, immutable value every decision call returns (picklable; equality
#: is identity, so :meth:`TaskPartitioner.report_outcome` accepts only the object it handed out).
#:
#: Attributes:
#:     task_id: the task this decision belongs to.
#:     action: the action executed, 0..14.
#:     stream_ids: streams that carry bytes, ascending.
#:     chunk_sizes: bytes per used stream (aligned with stream_ids); sums to the task size.
#:     expected_time: predicted completion time in seconds (equal finish time of the split).
#:     confidence: in [0, 1]. Model and explore decisions: softmax(Q)[action], the probability the model's
#:         Q-values (reward units, temperature 1) put on the executed action. Heuristic decisions:
#:         min_a T_a / T_action, how close the executed action's predicted time is to the fastest
#:         predicted over all 15 actions.
#:     source: ``"model"``, ``"explore"`` (epsilon-greedy random action) or ``"heuristic"``.
#:     model_version: version of the model that was consulted, or None.
#:     propensity: probability in (0, 1] the behaviour policy gave the executed action (see the module
#:         docstring).
#:     arm: ``"current"`` or ``"candidate"`` (the canary arm that decided).
#:     bytes_per_stream: bytes for each of the 4 streams (0 where unused).
Decision: TypeAlias = _native.Decision


@dataclass(frozen=True)
class PartitionerMetrics:
    """A snapshot of the partitioner's counters (see :meth:`TaskPartitioner.get_metrics`).

    Decisions and outcomes:
        total_decisions, decisions_by_source ("model"/"explore"/"heuristic"), reported_outcomes,
        successful_tasks, success_rate (of reported tasks), avg_reward (mean reward of reported tasks),
        outstanding_decisions (pending), expired_decisions (never reported within the TTL).
    Model serving:
        agent_epsilon, model_version, model_backend ("native"/"onnxruntime"/None), fallback_count
        (heuristic decisions while a model was wanted), model_faults and faults_by_cause ("load",
        "inference_error", "nan_output"), candidate_version, canary_share, reward_by_arm and
        outcomes_by_arm ("current"/"candidate", cumulative).
    Experience and learning (zeros/None without a learner):
        pushed_transitions (into the ring), dropped_transitions (ring full, plus any the learner's store
        had to drop), experience_count (transitions durably stored), buffer_size (replay), the learner's
        learner_is_training, learner_update_count, last_update (UTC ISO time or None),
        time_until_update (seconds or None), rollbacks, and ``learner`` (all of its metrics).
    Transport model:
        transport_params (the parameters in use per stream, as dicts) and transport_calibration (empty
        without a calibrator; else ``observations`` held, ``fits`` pushed, ``interval``, and the
        calibrator's median ``|measured / predicted - 1|`` over its chunk observations with the default
        parameters (``default_error``) and the fitted ones (``fitted_error``), as of the last fit);
        guard_overrides (model decisions the guard replaced by the heuristic's action; 0 while off).
    """

    total_decisions: int
    decisions_by_source: dict[str, int]
    reported_outcomes: int
    successful_tasks: int
    success_rate: float
    avg_reward: float
    agent_epsilon: float
    fallback_count: int
    model_faults: int
    faults_by_cause: dict[str, int]
    model_version: str | None
    model_backend: str | None
    outstanding_decisions: int
    expired_decisions: int
    pushed_transitions: int
    dropped_transitions: int
    learner_is_training: bool
    learner_update_count: int
    experience_count: int
    buffer_size: int
    last_update: str | None
    time_until_update: float | None
    candidate_version: str | None
    canary_share: float
    reward_by_arm: dict[str, float]
    outcomes_by_arm: dict[str, int]
    rollbacks: int
    learner: dict[str, Any]
    transport_params: list[dict[str, float]] = field(default_factory=list)
    transport_calibration: dict[str, Any] = field(default_factory=dict)
    guard_overrides: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The metrics as a plain dict (for logging, JSON or Prometheus)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def __getitem__(self, name: str) -> Any:
        """``metrics["total_decisions"]`` works like ``metrics.total_decisions``."""
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """What outcome listeners receive after each accepted :meth:`TaskPartitioner.report_outcome`.

    Attributes:
        arm: ``"current"`` or ``"candidate"`` (the canary arm that made the decision).
        model_version: version of the model that decided, or None for heuristic-only decisions.
        source: ``"model"``, ``"explore"`` or ``"heuristic"``.
        reward: the reward computed by :func:`itp.reward.compute_reward`.
        success: whether the task succeeded.
        latency_s: reported completion time, seconds.
        throughput_bps: reported goodput, bits per second.
        expected_time_s: the decision's predicted completion time, seconds.
        propensity: probability in (0, 1] the behaviour policy gave the executed action (1 for the
            heuristic; see the module docstring), for off-policy corrections.
        chunks: the per-chunk outcomes reported with it (empty when none were).
        size_bytes: the task's size, bytes (the decision's chunks summed; 0 where a listener's record was
            made without one). The canary compares its arms within task-size strata
            (:class:`itp.learning.rollout.CanaryConfig`).
    """

    arm: str
    model_version: str | None
    source: str
    reward: float
    success: bool
    latency_s: float
    throughput_bps: float
    expected_time_s: float
    propensity: float = 1.0
    chunks: tuple[ChunkOutcome, ...] = ()
    size_bytes: int = 0


@dataclass(frozen=True, eq=False)
class DecisionArrays:
    """Decisions of :meth:`TaskPartitioner.partition_arrays`, one row per task (numpy, caller-owned).

    Attributes:
        task_ids: the ids, in order.
        actions: int64[N], 0..14.
        chunk_bytes: uint64[N, 4], bytes per stream (0 where unused); each row sums to the task size.
        expected_time_s: float64[N], predicted completion time, seconds.
        confidence: float64[N], in [0, 1] (as :attr:`Decision.confidence`).
        propensity: float64[N], in (0, 1] (as :attr:`Decision.propensity`).
        sources: uint8[N], 0 model, 1 explore, 2 heuristic (names in :data:`itp.agent.SOURCES`).
    """

    task_ids: tuple[str, ...]
    actions: npt.NDArray[np.int64]
    chunk_bytes: npt.NDArray[np.uint64]
    expected_time_s: npt.NDArray[np.float64]
    confidence: npt.NDArray[np.float64]
    propensity: npt.NDArray[np.float64]
    sources: npt.NDArray[np.uint8]

    def __len__(self) -> int:
        return len(self.task_ids)


def _log_decision(d: Decision, size_bytes: int) -> None:
    """One DEBUG record per decision, with its fields as structured ``extra`` attributes."""
    logger.debug(
        "decision %s: action %d, streams %s, %d bytes, expected %.4g s (%s)",
        d.task_id, d.action, d.stream_ids, size_bytes, d.expected_time, d.source,
        extra={
            "event": "decision",
            "task_id": d.task_id,
            "action": d.action,
            "stream_ids": d.stream_ids,
            "chunk_sizes": d.chunk_sizes,
            "size_bytes": size_bytes,
            "expected_time_s": d.expected_time,
            "confidence": d.confidence,
            "source": d.source,
            "model_version": d.model_version,
        },
    )


def _as_array(values: npt.ArrayLike, dtype: type[np.generic], name: str) -> npt.NDArray[Any]:
    """``values`` as a C-contiguous 1-D array of ``dtype`` (no copy when it already is one).

    Integer sizes are range-checked before the cast, so a negative size is reported, not wrapped."""
    if isinstance(values, np.ndarray) and values.dtype == dtype and values.flags.c_contiguous:
        return values
    arr = np.asarray(values)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be an array of numbers, got dtype {arr.dtype}")
    if dtype is np.uint64:
        if arr.dtype.kind == "f":
            raise TypeError(f"{name} must hold integer byte counts, got dtype {arr.dtype}")
        if arr.size and arr.min() < 1:
            raise ValueError(f"{name} must be in 1..2**50, got {arr.min()}")
    return np.ascontiguousarray(arr, dtype=dtype)


class TaskPartitioner:
    """Decides how to split tasks over 4 streams, and learns from the outcomes.

    Args:
        model_path: path to a ``.onnx`` model (with ``.metadata.json`` beside it); the default is the model
            bundled in the wheel; None runs the heuristic only.
        epsilon: exploration rate in [0, 1] for live decisions (0 = always greedy).
        explore_top_k: an exploration draw picks uniformly among the k actions with the highest Q-values,
            int in 1..15. 15 (default): among all 15 actions. A smaller k keeps exploration near what the
            model already rates well: far cheaper in goodput and tail time (a random single stream for a
            large task is what uniform exploration pays for), and it logs the alternatives a fine-tuned
            candidate moves to, which the off-policy gate needs (``docs/lifecycle.md``).
        seed: seed of the exploration draws and canary routing (deterministic for a seed and call order).
        decision_ttl_s: seconds after which an unreported decision expires (counted, memory freed).
        ring_capacity: transitions the experience ring holds before pushes are dropped (and counted).
        clock: returns the local hour of day in [0, 24) (injectable for simulation and tests).
        monotonic: returns seconds on a monotonic clock (injectable for tests of expiry); also the clock
            of the calibration's decay.
        learner: an optional online learner (see :meth:`attach_learner`).
        calibrate_transport: False (default: the transport parameters change only through
            :meth:`set_transport_params`), True (a default :class:`TransportCalibrator`), or a calibrator
            (4 streams) to feed: per-chunk outcomes are fitted and pushed into the decision path.
        calibration_interval: chunk observations between two background refits (int >= 1).
        guard_margin: None (default: off) or a number >= 0. On, a model decision whose predicted time under
            the transport model in use (x the heuristic's failure penalty) exceeds ``1 + guard_margin``
            times the heuristic's best is replaced by the heuristic's action (counted in
            ``get_metrics().guard_overrides``; the propensity logged is the guarded policy's). Meant for a
            deployment that calibrates its transport model: a model fitted to other physics then cannot
            pick a split its own calibrated prediction says is clearly slower. Costs one heuristic pass
            (about 2 us) per model decision.
        guard_exploration: False (default) or True. True, while the guard is on: exploration draws only
            among the actions the guard lets through (the ``explore_top_k`` best of them by Q), so a random
            draw never takes a split the calibrated transport model scores clearly slower either; the
            propensity logged is that policy's. Actions the guard refuses are then never logged, so an
            attached learner's gate scores candidates as the guard lets them act, from the guard's verdicts
            logged with every decision (``docs/lifecycle.md``).
        explore_max_bytes: None (default: any task may explore) or an int >= 1: tasks larger than this
            many bytes are decided greedily (propensity 1), so exploration never spends the time of a large
            task, and the largest tasks, which set the p95, never take an exploratory split. The limit is
            compared on the state's float32 size feature, so a size up to about 2 parts per million above
            it counts as at it; the gate recomputes which logged rows could explore from their states.
        model_failures: False (default) or True (needs ``calibrate_transport``). True: the calibrator also
            fits each stream's failure model from the per-chunk retries (``itp.calibration``: a failure
            probability per attempt and a hazard per second of transfer), and once it holds
            ``min_observations`` chunks the guard's and the heuristic's scores use it: each split is
            also charged the expected time its resends add (a failed chunk is resent whole;
            ``itp.heuristic``). Why: a large chunk on a lossy stream fails far more often than the success
            rate measured mostly on smaller chunks says.

    Raises:
        ValueError: for out-of-range arguments. A bad *model* never raises: it is logged and counted,
            and decisions come from the heuristic.
    """

    def __init__(
        self,
        model_path: str | Path | _Default | None = DEFAULT_MODEL,
        *,
        epsilon: float = 0.0,
        explore_top_k: int = 15,
        seed: int = 0,
        decision_ttl_s: float = 600.0,
        ring_capacity: int = 1 << 16,
        clock: Callable[[], float] = local_hour,
        monotonic: Callable[[], float] = time.monotonic,
        learner: Any = None,
        calibrate_transport: bool | TransportCalibrator = False,
        calibration_interval: int = 200,
        guard_margin: float | None = None,
        guard_exploration: bool = False,
        explore_max_bytes: int | None = None,
        model_failures: bool = False,
    ) -> None:
        if not isinstance(model_failures, bool):
            raise TypeError(f"model_failures must be a bool, got {type(model_failures).__name__}")
        if model_failures and calibrate_transport is False:
            raise ValueError("model_failures=True needs calibrate_transport (the model is fitted there)")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        ttl_ok = isinstance(decision_ttl_s, (int, float)) and not isinstance(decision_ttl_s, bool)
        if not (ttl_ok and decision_ttl_s > 0 and math.isfinite(decision_ttl_s)):
            raise ValueError(f"decision_ttl_s must be a positive number of seconds, got {decision_ttl_s!r}")
        if not callable(clock) or not callable(monotonic):
            raise TypeError("clock and monotonic must be callables returning floats")
        if isinstance(calibration_interval, bool) or not isinstance(calibration_interval, int) or (
            calibration_interval < 1
        ):
            raise ValueError(f"calibration_interval must be an int >= 1, got {calibration_interval!r}")
        calibrator: TransportCalibrator | None
        if isinstance(calibrate_transport, TransportCalibrator):
            if calibrate_transport.num_streams != NUM_STREAMS:
                raise ValueError(
                    f"calibrate_transport must observe {NUM_STREAMS} streams, "
                    f"got {calibrate_transport.num_streams}"
                )
            calibrator = calibrate_transport
        elif isinstance(calibrate_transport, bool):
            calibrator = TransportCalibrator(NUM_STREAMS) if calibrate_transport else None
        else:
            raise TypeError(
                "calibrate_transport must be a bool or a TransportCalibrator, got "
                f"{type(calibrate_transport).__name__}"
            )
        self._agent = Agent(seed, epsilon=epsilon, explore_top_k=explore_top_k)
        self._engine = self._agent.engine
        self.guard_margin = guard_margin
        self.guard_exploration = guard_exploration
        self.explore_max_bytes = explore_max_bytes
        self._clock = clock
        self._monotonic = monotonic
        self._ttl_s = float(decision_ttl_s)
        self._ring = ExperienceRing(ring_capacity)
        self._learner: Any = None
        self._listeners: list[Callable[[OutcomeRecord], None]] = []
        # The default clocks are read natively (no Python call per decision); injected ones are called.
        self._core: Any = _native.PartitionerCore(
            self._engine,
            self._ring._impl,
            self._ttl_s,
            Task,
            None if clock is local_hour else clock,
            None if monotonic is time.monotonic else monotonic,
            self._agent.native_nan_fault,
        )
        self._agent.attach_core(self._core)
        self._calibration: _CalibrationWorker | None = None
        if calibrator is not None:
            self._calibration = _CalibrationWorker(
                calibrator, self._engine, calibration_interval, model_failures=model_failures
            )
            weakref.finalize(self, self._calibration.close)
        if isinstance(model_path, _Default):
            model_path = default_model_path()
        if model_path is not None:
            self._agent.load(model_path)
        if learner is not None:
            self.attach_learner(learner)

    # ----------------------------------------------------------------------------------- model
    @property
    def agent(self) -> Agent:
        """The model-serving agent (current/candidate models, fault counters)."""
        return self._agent

    def load_model(self, model_path: str | Path) -> bool:
        """Load (or replace) the current model. Returns True if it loaded; on any fault keeps deciding with
        the heuristic (the previous model is dropped), logs a warning once and counts the fault."""
        return self._agent.load(model_path) is not None

    def set_model(self, loaded: LoadedModel | None) -> None:
        """Make an already loaded and verified model current, at once and atomically for new decisions;
        None means heuristic only. Used by rollout and rollback."""
        self._agent.set_model(loaded)

    def set_candidate(self, loaded: LoadedModel | None, share: float = 0.1) -> None:
        """Route ``share`` (in [0, 1]) of live decisions to a candidate model (the canary arm); None ends
        the canary. Outcomes of each arm reach the outcome listeners with ``arm`` set."""
        self._agent.set_candidate(loaded, share)

    def promote_candidate(self) -> LoadedModel:
        """Make the candidate the current model and end the canary; returns the promoted model."""
        return self._agent.promote_candidate()

    @property
    def candidate(self) -> LoadedModel | None:
        """The canary model, or None."""
        return self._agent.candidate

    @property
    def canary_share(self) -> float:
        """Share of live decisions routed to the candidate, in [0, 1]."""
        return self._agent.canary_share

    @property
    def model(self) -> LoadedModel | None:
        """The current :class:`itp.model_loading.LoadedModel`, or None (heuristic only)."""
        return self._agent.model

    @property
    def epsilon(self) -> float:
        """Exploration rate of live decisions, in [0, 1]."""
        return self._agent.epsilon

    @epsilon.setter
    def epsilon(self, value: float) -> None:
        self._agent.epsilon = value

    @property
    def guard_margin(self) -> float | None:
        """The guard's margin (None: off); see the constructor."""
        m = self._engine.guard_margin
        return None if m is None else float(m)

    @guard_margin.setter
    def guard_margin(self, value: float | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer))
        ):
            raise TypeError(f"guard_margin must be None or a number, got {type(value).__name__}")
        if value is not None and not (math.isfinite(value) and value >= 0.0):
            raise ValueError(f"guard_margin must be None or a finite number >= 0, got {value!r}")
        self._engine.guard_margin = None if value is None else float(value)

    @property
    def guard_exploration(self) -> bool:
        """Whether exploration draws only among the actions the guard lets through; see the constructor."""
        return bool(self._engine.guard_exploration)

    @guard_exploration.setter
    def guard_exploration(self, value: bool) -> None:
        self._engine.guard_exploration = value  # the engine refuses a non-bool (TypeError naming the field)

    @property
    def model_failures(self) -> bool:
        """Whether the calibrated failure models score the splits (see the constructor)."""
        return self._calibration is not None and self._calibration.model_failures

    def failure_models(self) -> npt.NDArray[np.float64] | None:
        """The failure models the guard and the heuristic score with now, float64[4, 2] (per stream:
        fail_probability, hazard_per_s), or None while none is set (no resend charge)."""
        models = self._engine.failure_models()
        return None if models is None else np.asarray(models, dtype=np.float64)

    def set_failure_models(self, models: npt.ArrayLike | None) -> None:
        """Charge splits the resends of these per-stream failure models (float64[4, 2]: fail_probability
        in [0, 1), hazard_per_s >= 0; ``itp.heuristic``), or None for no such charge. For a caller with
        its own estimates; with ``model_failures=True`` the next refit replaces them.

        Raises:
            ValueError: a bad shape or value (the stream and field named); nothing changes then.
        """
        self._engine.set_failure_models(None if models is None else np.asarray(models, dtype=np.float64))

    @property
    def explore_max_bytes(self) -> int | None:
        """Largest task that may explore, bytes (None: no limit); see the constructor. Settable."""
        m = self._engine.explore_max_bytes
        return None if m is None else int(m)

    @explore_max_bytes.setter
    def explore_max_bytes(self, value: int | None) -> None:
        # The engine refuses a non-int (TypeError) or an int outside 1..2**64 - 2 (ValueError), named.
        self._engine.explore_max_bytes = value

    @property
    def explore_top_k(self) -> int:
        """How many of the best actions by Q an exploration draw picks among (15: all); settable."""
        return self._agent.explore_top_k

    @explore_top_k.setter
    def explore_top_k(self, value: int) -> None:
        self._agent.explore_top_k = value

    @property
    def ring(self) -> ExperienceRing:
        """The experience ring that reported transitions are pushed into (drained by a learner)."""
        return self._ring

    def add_outcome_listener(self, listener: Callable[[OutcomeRecord], None]) -> None:
        """Call ``listener(record)`` after every accepted outcome, on the reporting thread. It must be
        quick and must not raise (an exception is logged and swallowed)."""
        self._listeners.append(listener)

    def add_fault_listener(self, listener: Callable[[str, str, str | None], None]) -> None:
        """Call ``listener(arm, cause, model_version)`` on every model fault (:class:`itp.agent.Agent`)."""
        self._agent.add_fault_listener(listener)

    def attach_learner(self, learner: Any) -> None:
        """Attach the online learner whose state :meth:`get_metrics` reports and which
        :meth:`force_model_update` triggers (an object with ``request_update()`` and ``metrics()``)."""
        if not (
            callable(getattr(learner, "request_update", None)) and callable(getattr(learner, "metrics", None))
        ):
            raise TypeError(f"learner must have request_update() and metrics(), got {type(learner).__name__}")
        self._learner = learner

    # ------------------------------------------------------------------------------ transport
    def set_transport_params(self, params: TransportParams | Sequence[TransportParams]) -> None:
        """Replace the transport parameters the split, the heuristic's choice and ``expected_time`` use.

        Args:
            params: one :class:`itp.transport.TransportParams` for all 4 streams, or a sequence of 4 (one
                per stream). ``DEFAULT_TRANSPORT_PARAMS`` restores the fresh-connection model.

        Raises:
            TypeError, ValueError: not TransportParams, or not 4 of them (named); nothing changes.

        Takes effect for every decision that starts afterwards; a decision in flight uses one consistent
        set. A copy of 12 doubles under the stream-table lock (never blocks a decision for longer);
        thread-safe. With a calibrator attached, its next fit overwrites them.
        """
        if params is None:
            raise TypeError("params must be a TransportParams or a sequence of 4, got None")
        self._engine.set_transport_params(transport_params_array(params))

    def transport_params(self) -> tuple[TransportParams, ...]:
        """The transport parameters in use, one per stream (4)."""
        arr = self._engine.transport_params()
        return tuple(TransportParams(float(r[0]), float(r[1]), float(r[2])) for r in arr)

    @property
    def calibrator(self) -> TransportCalibrator | None:
        """The transport calibrator fed by per-chunk outcomes, or None (``calibrate_transport=False``)."""
        return self._calibration.calibrator if self._calibration is not None else None

    def recalibrate(self) -> tuple[TransportParams, ...]:
        """Fit the calibrator now, on the calling thread, and push the result (up to ~2 s; never call it
        on a latency-critical path). Returns the parameters pushed, one per stream.

        Raises:
            RuntimeError: no calibrator is attached.
        """
        if self._calibration is None:
            raise RuntimeError("recalibrate: this partitioner has no calibrator (calibrate_transport=False)")
        return self._calibration.fit_and_push()

    def close(self) -> None:
        """Stop the background calibration thread, if any (idempotent). Deciding and reporting keep
        working; observations are still recorded but no longer refitted automatically."""
        if self._calibration is not None:
            self._calibration.close()

    def _observe_chunks(
        self, chunks: tuple[ChunkOutcome, ...], streams: tuple[tuple[float, ...], tuple[float, ...]]
    ) -> None:
        """Chunk outcomes -> calibrator observations with the decision-time rate and RTT (O(chunks))."""
        assert self._calibration is not None
        rates, rtts = streams
        at_s = float(self._monotonic())
        obs = [
            ChunkObservation(c.stream_id, int(c.size_bytes), float(c.seconds), rates[c.stream_id],
                             rtts[c.stream_id], at_s, float(c.start_window_bits), int(c.retries))
            for c in chunks
            if rates[c.stream_id] > 0.0  # a stream with no rate had no model prediction
        ]
        if obs:
            self._calibration.calibrator.observe_many(obs)
            self._calibration.observed(len(obs))

    # --------------------------------------------------------------------------- stream table
    def update_stream(
        self,
        stream_id: int,
        *,
        bandwidth_bps: float,
        latency_s: float,
        congestion: float = 0.0,
        success_rate: float = 1.0,
        start_window_bits: float | None = None,
    ) -> None:
        """Record the latest measurements of one stream.

        Args:
            stream_id: 0..3.
            bandwidth_bps: estimated available rate, bits per second, finite and >= 0.
            latency_s: measured round-trip time, seconds, finite and >= 0.
            congestion: queueing delay over base RTT, in [0, 1].
            success_rate: recent chunk success rate, in [0, 1].
            start_window_bits: the congestion window a chunk sent on this stream now would start from,
                bits (finite, >= 0), when the sender knows it: a persistent TCP stream keeps its window
                while it has not been idle longer than its RTO (Linux ``tcp_slow_start_after_idle``), so
                a warm stream skips most of slow start. :func:`itp.transport.start_window_bits` computes
                it from ``TCP_INFO`` (cwnd, RTO, idle time). The split, the heuristic and
                ``expected_time`` then start this stream from ``max(fitted initial window, this)``.
                None or 0: unknown (the transport parameters alone decide).

        Raises:
            TypeError: a non-int ``stream_id`` or a non-number metric.
            ValueError: naming the bad field and value; nothing changes.
        """
        if isinstance(stream_id, bool) or not isinstance(stream_id, (int, np.integer)):
            raise TypeError(f"stream_id must be an int, got {type(stream_id).__name__}")
        for name, value in (
            ("bandwidth_bps", bandwidth_bps),
            ("latency_s", latency_s),
            ("congestion", congestion),
            ("success_rate", success_rate),
            ("start_window_bits", 0.0 if start_window_bits is None else start_window_bits),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        self._agent.update_stream(
            int(stream_id), bandwidth_bps, latency_s, congestion, success_rate,
            0.0 if start_window_bits is None else float(start_window_bits),
        )

    def set_queue_depth(self, queue_depth: float) -> None:
        """Tasks waiting at the sender (finite, >= 0). Raises ValueError/TypeError; nothing changes."""
        if isinstance(queue_depth, bool) or not isinstance(
            queue_depth, (int, float, np.floating, np.integer)
        ):
            raise TypeError(f"queue_depth must be a number, got {type(queue_depth).__name__}")
        self._agent.set_queue_depth(queue_depth)

    def get_stream(self, stream_id: int) -> tuple[float, float, float, float]:
        """The stored ``(bandwidth_bps, latency_s, congestion, success_rate)`` of a stream."""
        out: tuple[float, float, float, float] = tuple(self._engine.stream(stream_id))
        return out

    @property
    def queue_depth(self) -> float:
        """The stored queue depth (tasks)."""
        return float(self._engine.queue_depth)

    # ------------------------------------------------------------------------------ decisions
    # ------------------------------------------------------------------------------ decisions
    def partition_task(self, task: Task) -> Decision:
        """Decide one task: streams, bytes per stream, predicted completion time.

        Raises:
            TypeError: ``task`` is not a :class:`Task`.
            ValueError: the task id is already pending (decided and not yet reported); nothing changes.

        One native call (GIL released for the decision and the pending-table insert) when the model is
        served natively or there is none; ONNX Runtime models and canary candidates add their Python
        inference. O(1); thread-safe.
        """
        d: Decision | None = self._core.partition_task(task)
        if d is None:  # the serving model is answered from Python (ONNX Runtime, canary)
            d = self._partition_external(task)
        if logger.isEnabledFor(logging.DEBUG):  # one cached level check on the hot path
            _log_decision(d, sum(d.chunk_sizes))
        return d

    def _partition_external(self, task: Task) -> Decision:
        self._core.check_task(task)  # type and early pending refusal (re-checked natively on insert)
        out, arm, model = self._agent.decide(task.size, task.priority, self._hour())
        decision: Decision = self._core.commit(task, out, arm, model.version if model is not None else None)
        return decision

    def partition_tasks(self, tasks: Sequence[Task]) -> list[Decision]:
        """Decide many tasks; with a natively served model (or the heuristic) in one native call with the
        GIL released for the whole batch, on one snapshot of the stream table.

        All-or-nothing: if any task is invalid, appears twice, or is already pending, none is decided
        (ValueError/TypeError naming it). Returns the decisions in task order. O(N); thread-safe.
        """
        decisions: list[Decision] | None = self._core.partition_tasks(tasks)
        if decisions is None:
            decisions = self._partition_external_batch(list(tasks))
        if logger.isEnabledFor(logging.DEBUG):
            for d in decisions:
                _log_decision(d, sum(d.chunk_sizes))
        return decisions

    def _partition_external_batch(self, tasks: list[Task]) -> list[Decision]:
        ids: set[str] = set()
        for t in tasks:
            self._core.check_task(t)
            if t.id in ids:
                raise ValueError(f"task id {t.id!r} appears twice in the batch")
            ids.add(t.id)
        return [self._partition_external(t) for t in tasks]

    def partition_arrays(
        self,
        task_ids: Sequence[str],
        sizes_bytes: npt.ArrayLike,
        priorities: npt.ArrayLike,
    ) -> DecisionArrays:
        """Decide N tasks given as arrays, without building a :class:`Decision` per task.

        Args:
            task_ids: N distinct non-empty str ids (list or tuple), none pending.
            sizes_bytes: N task sizes in bytes, integers in 1..2**50 (uint64 array, or array-like).
            priorities: N priorities in [0, 1] (float64 array, or array-like).

        Returns:
            A :class:`DecisionArrays` with one row per task. The tasks become pending like any other;
            report them with :meth:`report_outcomes` (``decisions=None``) or :meth:`report_outcome`
            (any Decision is refused for them: none was handed out, so pass ``decisions=None`` in a batch).

        Raises:
            TypeError/ValueError: naming the bad argument or element; nothing is decided (all or nothing).

        One native call with the GIL released for the batch when the model is served natively; else one
        Python-served decision per task. O(N); thread-safe.
        """
        ids = list(task_ids) if not isinstance(task_ids, (list, tuple)) else task_ids
        n = len(ids)
        sizes = _as_array(sizes_bytes, np.uint64, "sizes_bytes")
        prios = _as_array(priorities, np.float64, "priorities")
        out = DecisionArrays(
            tuple(ids),
            np.empty(n, dtype=np.int64),
            np.empty((n, NUM_STREAMS), dtype=np.uint64),
            np.empty(n, dtype=np.float64),
            np.empty(n, dtype=np.float64),
            np.empty(n, dtype=np.float64),
            np.empty(n, dtype=np.uint8),
        )
        done = self._core.partition_arrays(
            ids, sizes, prios, out.actions, out.chunk_bytes, out.expected_time_s, out.confidence,
            out.propensity, out.sources,
        )
        if not done:
            rows = zip(ids, sizes.tolist(), prios.tolist(), strict=True)
            tasks = [Task(i, int(s), float(p)) for i, s, p in rows]
            for k, d in enumerate(self._partition_external_batch(tasks)):
                out.actions[k] = d.action
                out.chunk_bytes[k] = d.bytes_per_stream
                out.expected_time_s[k] = d.expected_time
                out.confidence[k] = d.confidence
                out.propensity[k] = d.propensity
                out.sources[k] = SOURCES.index(d.source)
        return out

    @property
    def _pending(self) -> list[str]:
        """Ids of the pending decisions (any order); a snapshot, for tests and debugging."""
        ids: list[str] = self._core.pending_ids()
        return ids

    # -------------------------------------------------------------------------------- outcomes
    def report_outcome(
        self,
        task_id: str,
        decision: Decision,
        *,
        throughput_bps: float,
        latency_s: float,
        success: bool,
        retransmissions: int = 0,
        chunks: Sequence[ChunkOutcome] | None = None,
    ) -> float:
        """Report how a decided task went; returns the reward it earned.

        The transition ``(state at decision time, executed action, reward, state now)`` is pushed into
        the experience ring (lock-free; when the ring is full it is dropped and counted). One native call
        with the GIL released for the table, the reward and the push; O(1); thread-safe.

        Args:
            task_id: the id given to :meth:`partition_task`.
            decision: the :class:`Decision` returned for that task.
            throughput_bps: achieved goodput, bits per second (finite, >= 0).
            latency_s: completion time of the task, seconds (finite, > 0).
            success: whether every byte arrived (bool).
            retransmissions: chunks resent (int >= 0).
            chunks: optional per-chunk outcomes (:class:`ChunkOutcome`): only streams the decision used,
                summing per stream to the bytes the decision put there (at most that if ``success`` is
                False). They reach the outcome listeners and, with a calibrator, the transport fit (with
                the streams' rates and RTTs at decision time). O(len(chunks)).

        Raises:
            ValueError: unknown or already-reported (or expired) task id, a decision that does not belong
                to the task, a bad metric or chunk (named); nothing changes.
            TypeError: a metric or chunk of the wrong type (named); nothing changes.
        """
        checked: tuple[ChunkOutcome, ...] = ()
        if chunks is not None:
            if not isinstance(decision, _native.Decision):
                raise TypeError(f"decision must be a Decision, got {type(decision).__name__}")
            if not isinstance(success, (bool, np.bool_)):
                raise TypeError(f"success must be a bool, got {type(success).__name__}")
            checked = _checked_chunks(chunks, decision.bytes_per_stream, bool(success), "chunks")
        if checked and self._calibration is not None:
            reward, streams = self._core.report_outcome(
                task_id, decision, throughput_bps, latency_s, success, retransmissions, True
            )
            self._observe_chunks(checked, streams)
        else:
            reward = self._core.report_outcome(
                task_id, decision, throughput_bps, latency_s, success, retransmissions
            )
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "outcome %s: reward %.3f, %s in %.4g s (expected %.4g s)",
                task_id, reward, "delivered" if success else "failed", latency_s, decision.expected_time,
                extra={
                    "event": "outcome",
                    "task_id": task_id,
                    "reward": reward,
                    "success": bool(success),
                    "latency_s": float(latency_s),
                    "throughput_bps": float(throughput_bps),
                    "expected_time_s": decision.expected_time,
                    "model_version": decision.model_version,
                },
            )
        if self._listeners:
            self._notify(
                OutcomeRecord(
                    arm=decision.arm,
                    model_version=decision.model_version,
                    source=decision.source,
                    reward=reward,
                    success=bool(success),
                    latency_s=float(latency_s),
                    throughput_bps=float(throughput_bps),
                    expected_time_s=decision.expected_time,
                    propensity=decision.propensity,
                    chunks=checked,
                    size_bytes=int(sum(decision.bytes_per_stream)),
                )
            )
        return float(reward)

    def report_outcomes(
        self,
        task_ids: Sequence[str],
        decisions: Sequence[Decision] | None,
        *,
        throughput_bps: npt.ArrayLike,
        latency_s: npt.ArrayLike,
        success: npt.ArrayLike,
        retransmissions: npt.ArrayLike | None = None,
        chunks: Sequence[Sequence[ChunkOutcome] | None] | None = None,
    ) -> npt.NDArray[np.float64]:
        """Report N outcomes at once; returns their rewards (float64[N]), in order.

        Args:
            task_ids: N distinct ids (list or tuple of str) with pending decisions.
            decisions: the Decision of each task (aligned with ``task_ids``), or None for tasks decided
                by :meth:`partition_arrays` (then the id alone identifies the decision).
            throughput_bps: N goodputs, bits per second (finite, >= 0).
            latency_s: N completion times, seconds (finite, > 0).
            success: N bools (a bool array).
            retransmissions: N chunk resend counts (ints >= 0), or None for zeros.
            chunks: None, or N entries each None or a sequence of :class:`ChunkOutcome` (rules as
                :meth:`report_outcome`). Needs ``decisions`` (the plan each chunk list is checked
                against).

        Raises:
            TypeError/ValueError: naming the bad argument and element (unknown id, a decision that does
                not belong, a bad metric or chunk); nothing changes (all or nothing).

        One native call with the GIL released for the batch; O(N); thread-safe.
        """
        ids = list(task_ids) if not isinstance(task_ids, (list, tuple)) else task_ids
        checked: list[tuple[ChunkOutcome, ...]] | None = None
        if chunks is not None:
            checked = self._checked_batch_chunks(ids, decisions, chunks, success)
        want = bool(self._listeners) or (checked is not None and self._calibration is not None)
        result = self._core.report_outcomes(
            ids, decisions, throughput_bps, latency_s, success, retransmissions, want
        )
        if not want:
            rewards: npt.NDArray[np.float64] = result
            return rewards
        rewards, rows = result
        if checked is not None and self._calibration is not None:
            for k, row in enumerate(rows):
                if checked[k]:
                    self._observe_chunks(checked[k], row[5])
        if not self._listeners:
            return rewards
        thr = np.asarray(throughput_bps, dtype=np.float64)
        lat = np.asarray(latency_s, dtype=np.float64)
        ok = np.asarray(success, dtype=bool)
        for k, (arm, version, source, expected_s, propensity, _, size_bytes) in enumerate(rows):
            self._notify(
                OutcomeRecord(
                    arm=arm,
                    model_version=version,
                    source=source,
                    reward=float(rewards[k]),
                    success=bool(ok[k]),
                    latency_s=float(lat[k]),
                    throughput_bps=float(thr[k]),
                    expected_time_s=expected_s,
                    propensity=propensity,
                    chunks=checked[k] if checked is not None else (),
                    size_bytes=int(size_bytes),
                )
            )
        return rewards

    @staticmethod
    def _checked_batch_chunks(
        ids: Sequence[str],
        decisions: Sequence[Decision] | None,
        chunks: Sequence[Sequence[ChunkOutcome] | None],
        success: npt.ArrayLike,
    ) -> list[tuple[ChunkOutcome, ...]]:
        if decisions is None:
            raise ValueError("chunks need decisions (the plan each task's chunks are checked against)")
        if isinstance(chunks, (str, bytes)) or not isinstance(chunks, Sequence):
            raise TypeError(
                f"chunks must be a sequence (one entry per task) or None, got {type(chunks).__name__}"
            )
        if len(chunks) != len(ids):
            raise ValueError(f"chunks must have the same length as task_ids ({len(ids)}), got {len(chunks)}")
        if not isinstance(decisions, Sequence) or len(decisions) != len(ids):
            raise ValueError("decisions must be a sequence aligned with task_ids")
        ok = np.asarray(success)
        if ok.dtype != np.bool_ or ok.shape != (len(ids),):
            raise TypeError("success must be an array of bools aligned with task_ids")
        out: list[tuple[ChunkOutcome, ...]] = []
        for k, entry in enumerate(chunks):
            d = decisions[k]
            if entry is None:
                out.append(())
                continue
            if not isinstance(d, _native.Decision):
                raise TypeError(f"decisions[{k}] must be a Decision, got {type(d).__name__}")
            out.append(_checked_chunks(entry, d.bytes_per_stream, bool(ok[k]), f"chunks[{k}]"))
        return out

    def _notify(self, record: OutcomeRecord) -> None:
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:  # a listener must never break the caller's data path
                logger.exception("outcome listener failed")

    def expire_decisions(self) -> int:
        """Drop pending decisions older than ``decision_ttl_s`` now; returns how many expired.

        Expiry also runs on every new decision that finds the oldest pending one due, so memory stays
        bounded by the decisions of one TTL."""
        n: int = self._core.expire_decisions()
        if n:
            logger.debug("%d unreported decisions expired", n)
        return n

    # -------------------------------------------------------------------------------- metrics
    def get_metrics(self) -> PartitionerMetrics:
        """A snapshot of the counters (each group consistent; exact once callers are quiet)."""
        learner = self._learner
        # Read the learner outside any lock: it may call back into the partitioner.
        lm: dict[str, Any] = dict(learner.metrics()) if learner is not None else {}
        agent = self._agent.counters()
        model, cand = self._agent.model, self._agent.candidate
        st = self._core.stats()
        reported = int(st["reported"])
        successes = int(st["successes"])
        arm_count = [int(c) for c in st["arm_count"]]
        arm_reward_sum = [float(r) for r in st["arm_reward"]]
        by_source = [int(c) for c in st["decisions_by_source"]]
        return PartitionerMetrics(
            total_decisions=sum(by_source),
            decisions_by_source=dict(zip(_SOURCES, by_source, strict=True)),
            reported_outcomes=reported,
            successful_tasks=successes,
            success_rate=successes / reported if reported else 0.0,
            avg_reward=float(st["reward_sum"]) / reported if reported else 0.0,
            agent_epsilon=self.epsilon,
            fallback_count=agent["fallback_count"],
            model_faults=agent["model_faults"],
            faults_by_cause=agent["faults_by_cause"],
            model_version=model.version if model is not None else None,
            model_backend=model.backend if model is not None else None,
            outstanding_decisions=int(st["outstanding"]),
            expired_decisions=int(st["expired"]),
            pushed_transitions=int(self._ring.pushed),
            dropped_transitions=int(self._ring.dropped) + int(lm.get("store_dropped", 0)),
            learner_is_training=bool(lm.get("is_training", False)),
            learner_update_count=int(lm.get("update_count", 0)),
            experience_count=int(lm.get("experience_count", 0)),
            buffer_size=int(lm.get("buffer_size", 0)),
            last_update=lm.get("last_update"),
            time_until_update=lm.get("time_until_update"),
            candidate_version=cand.version if cand is not None else None,
            canary_share=self._agent.canary_share,
            reward_by_arm={
                arm: (arm_reward_sum[i] / arm_count[i] if arm_count[i] else 0.0) for i, arm in enumerate(ARMS)
            },
            outcomes_by_arm=dict(zip(ARMS, arm_count, strict=True)),
            rollbacks=int(lm.get("rollbacks", 0)),
            learner=lm,
            transport_params=[p.as_dict() for p in self.transport_params()],
            transport_calibration=self._calibration_metrics(),
            guard_overrides=int(self._engine.guard_overrides),
        )

    def _calibration_metrics(self) -> dict[str, Any]:
        c = self._calibration
        if c is None:
            return {}
        err = c.last_error
        return {
            "observations": c.calibrator.observation_count(),
            "fits": c.pushes,
            "interval": c.interval,
            "default_error": err.default_error if err is not None else math.nan,
            "fitted_error": err.fitted_error if err is not None else math.nan,
        }

    def force_model_update(self) -> bool:
        """Ask the attached online learner to retrain now (in the background; returns at once).
        Returns False (and logs a warning) if no learner is attached."""
        if self._learner is None:
            logger.warning("force_model_update: no online learner is attached")
            return False
        self._learner.request_update()
        return True

    # ------------------------------------------------------------------------------ evaluation
    def evaluate(
        self,
        episodes: int = 100,
        *,
        seed: int = 0,
        trace_files: Sequence[str | Path] | None = None,
        config: Any = None,
        baselines: Sequence[str] = (),
    ) -> EvaluationReport:
        """Evaluate the current model greedily on the simulator (``itp.sim``).

        Runs on a private engine and simulator: the live stream table, pending decisions, counters,
        exploration draws and the experience ring are not touched. Equal seeds give equal episodes, so
        reports of different models (or of the heuristic) compare decisions only.

        Args:
            episodes: simulated episodes (int >= 1), each ``SimConfig.tasks_per_episode`` tasks.
            seed: evaluation seed (int >= 0).
            trace_files: trace-driven episodes from these files; None: synthetic streams.
            config: an ``itp.sim.SimConfig``.
            baselines: baseline policy names (``itp.sim.baselines``) to add to ``report.table``.

        Returns:
            An :class:`itp.agent.EvaluationReport` (``mean_reward``, goodput, completion-time
            percentiles, success rate, fallbacks, and the full table).
        """
        return evaluate_model(
            self._agent.model,
            episodes,
            seed=seed,
            trace_files=trace_files,
            config=config,
            baselines=baselines,
        )

    # -------------------------------------------------------------------------------- helpers
    def _hour(self) -> float:
        hour = float(self._clock())
        if not 0.0 <= hour < 24.0:
            raise ValueError(f"clock must return an hour in [0, 24), got {hour}")
        return hour
