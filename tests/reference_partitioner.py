"""Pure-Python reference of TaskPartitioner: the implementation before the bookkeeping moved into C++
(issue 14), kept as the slow, obviously right model that tests/test_partitioner_native.py runs the same
decision/outcome sequences through and compares with the native path (decisions, rewards, metrics and the
ring's transitions must be identical).

It drives the same :class:`itp.agent.Agent` (native engine, same seed -> same exploration and canary draws)
and the same native reward, but keeps the pending table, the Decision objects and the counters in Python,
under one lock, exactly as before. Not part of the package.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import compress
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from itp import _native
from itp.agent import ARMS, Agent, EvaluationReport, evaluate_model
from itp.model_loading import LoadedModel
from itp.partitioner import Task
from itp.reward import trusted_reward
from itp.ring import ExperienceRing
from itp.state import NUM_STREAMS
from itp.transport import DEFAULT_TRANSPORT_PARAMS

__all__ = [
    "DEFAULT_MODEL",
    "Decision",
    "OutcomeRecord",
    "PartitionerMetrics",
    "Task",
    "TaskPartitioner",
    "default_model_path",
    "local_hour",
]

logger = logging.getLogger(__name__)

_SOURCES: Final = ("model", "explore", "heuristic")
_STREAM_IDS: Final = tuple(range(NUM_STREAMS))


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


@dataclass(frozen=True, slots=True, eq=False)
class Decision:
    """Where a task's bytes go.

    Attributes:
        task_id: the task this decision belongs to.
        action: the action executed, 0..14.
        stream_ids: streams that carry bytes, ascending.
        chunk_sizes: bytes per used stream (aligned with stream_ids); sums to the task size.
        expected_time: predicted completion time in seconds (equal finish time of the split).
        confidence: in [0, 1]. Model and explore decisions: softmax(Q)[action], the probability the model's
            Q-values (reward units, temperature 1) put on the executed action. Heuristic decisions:
            min_a T_a / T_action, how close the executed action's predicted time is to the fastest
            predicted over all 15 actions.
        source: ``"model"``, ``"explore"`` (epsilon-greedy random action) or ``"heuristic"``.
        model_version: version of the model that was consulted, or None.
    """

    task_id: str
    action: int
    stream_ids: tuple[int, ...]
    chunk_sizes: tuple[int, ...]
    expected_time: float
    confidence: float
    source: str
    model_version: str | None

    @property
    def bytes_per_stream(self) -> tuple[int, int, int, int]:
        """Bytes for each of the 4 streams (0 where unused)."""
        out = [0, 0, 0, 0]
        for s, c in zip(self.stream_ids, self.chunk_sizes, strict=False):
            out[s] = c
        return (out[0], out[1], out[2], out[3])


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
    """

    arm: str
    model_version: str | None
    source: str
    reward: float
    success: bool
    latency_s: float
    throughput_bps: float
    expected_time_s: float


class _Pending:
    """A decision awaiting its outcome (the transition's first half)."""

    __slots__ = (
        "arm",
        "chunk_bytes",
        "created_s",
        "decision",
        "priority",
        "raw",
        "size_bytes",
        "source",
        "state",
    )

    def __init__(
        self,
        decision: Decision,
        state: npt.NDArray[np.float32],
        raw: npt.NDArray[np.float64],
        chunk_bytes: Sequence[int],
        size_bytes: int,
        priority: float,
        arm: int,
        source: int,
    ) -> None:
        self.decision = decision
        self.source = source
        self.state = state
        self.raw = raw
        self.chunk_bytes = chunk_bytes
        self.size_bytes = size_bytes
        self.priority = priority
        self.arm = arm
        self.created_s = 0.0


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


def _check_metric(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0.0 or (positive and v == 0.0):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {value!r}")
    return v


class TaskPartitioner:
    """Decides how to split tasks over 4 streams, and learns from the outcomes.

    Args:
        model_path: path to a ``.onnx`` model (with ``.metadata.json`` beside it); the default is the model
            bundled in the wheel; None runs the heuristic only.
        epsilon: exploration rate in [0, 1] for live decisions (0 = always greedy).
        seed: seed of the exploration draws and canary routing (deterministic for a seed and call order).
        decision_ttl_s: seconds after which an unreported decision expires (counted, memory freed).
        ring_capacity: transitions the experience ring holds before pushes are dropped (and counted).
        clock: returns the local hour of day in [0, 24) (injectable for simulation and tests).
        monotonic: returns seconds on a monotonic clock (injectable for tests of expiry).
        learner: an optional online learner (see :meth:`attach_learner`).

    Raises:
        ValueError: for out-of-range arguments. A bad *model* never raises: it is logged and counted,
            and decisions come from the heuristic.
    """

    def __init__(
        self,
        model_path: str | Path | _Default | None = DEFAULT_MODEL,
        *,
        epsilon: float = 0.0,
        seed: int = 0,
        decision_ttl_s: float = 600.0,
        ring_capacity: int = 1 << 16,
        clock: Callable[[], float] = local_hour,
        monotonic: Callable[[], float] = time.monotonic,
        learner: Any = None,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        ttl_ok = isinstance(decision_ttl_s, (int, float)) and not isinstance(decision_ttl_s, bool)
        if not (ttl_ok and decision_ttl_s > 0 and math.isfinite(decision_ttl_s)):
            raise ValueError(f"decision_ttl_s must be a positive number of seconds, got {decision_ttl_s!r}")
        if not callable(clock) or not callable(monotonic):
            raise TypeError("clock and monotonic must be callables returning floats")
        self._agent = Agent(seed, epsilon=epsilon)
        self._engine = self._agent.engine
        self._clock = clock
        self._monotonic = monotonic
        self._ttl_s = float(decision_ttl_s)
        self._ring = ExperienceRing(ring_capacity)
        self._learner: Any = None
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._by_source = [0, 0, 0]
        self._reported = 0
        self._successes = 0
        self._reward_sum = 0.0
        self._arm_count = [0, 0]
        self._arm_reward = [0.0, 0.0]
        self._expired = 0
        self._listeners: list[Callable[[OutcomeRecord], None]] = []
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

    # --------------------------------------------------------------------------- stream table
    def update_stream(
        self,
        stream_id: int,
        *,
        bandwidth_bps: float,
        latency_s: float,
        congestion: float = 0.0,
        success_rate: float = 1.0,
    ) -> None:
        """Record the latest measurements of one stream.

        Args:
            stream_id: 0..3.
            bandwidth_bps: estimated available rate, bits per second, finite and >= 0.
            latency_s: measured round-trip time, seconds, finite and >= 0.
            congestion: queueing delay over base RTT, in [0, 1].
            success_rate: recent chunk success rate, in [0, 1].

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
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        self._agent.update_stream(int(stream_id), bandwidth_bps, latency_s, congestion, success_rate)

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
    def partition_task(self, task: Task) -> Decision:
        """Decide one task: streams, bytes per stream, predicted completion time.

        Raises:
            TypeError: ``task`` is not a :class:`Task`.
            ValueError: the task id is already pending (decided and not yet reported); nothing changes.

        One native call (GIL released) for the decision; thread-safe.
        """
        if not isinstance(task, Task):
            raise TypeError(f"task must be an itp.Task, got {type(task).__name__}")
        hour = self._hour()
        if task.id in self._pending:  # cheap early refusal; re-checked under the lock
            raise ValueError(f"task id {task.id!r} already has a pending decision")
        out, arm, model = self._agent.decide(task.size, task.priority, hour)
        pending = self._pending_for(task, out, arm, model)
        with self._lock:
            if task.id in self._pending:
                raise ValueError(f"task id {task.id!r} already has a pending decision")
            self._insert_locked(task.id, pending)
        if logger.isEnabledFor(logging.DEBUG):  # one cached level check on the hot path
            _log_decision(pending.decision, task.size)
        return pending.decision

    def partition_tasks(self, tasks: Sequence[Task]) -> list[Decision]:
        """Decide many tasks; with a natively served model (or the heuristic) in one native call with the
        GIL released for the whole batch, on one snapshot of the stream table.

        All-or-nothing: if any task is invalid, appears twice, or is already pending, none is decided
        (ValueError/TypeError naming it). Returns the decisions in task order.
        """
        tasks = list(tasks)
        n = len(tasks)
        if n == 0:
            return []
        ids: set[str] = set()
        for t in tasks:
            if not isinstance(t, Task):
                raise TypeError(f"tasks must hold itp.Task, got {type(t).__name__}")
            if t.id in ids:
                raise ValueError(f"task id {t.id!r} appears twice in the batch")
            ids.add(t.id)
        self._check_not_pending(tasks)
        hour = self._hour()
        sizes = np.fromiter((t.size for t in tasks), dtype=np.uint64, count=n)
        prios = np.fromiter((t.priority for t in tasks), dtype=np.float64, count=n)
        batch = self._agent.decide_batch(sizes, prios, hour)
        if batch is None:
            outs, arms, models = [], [], []
            for t in tasks:
                out, arm, model = self._agent.decide(t.size, t.priority, hour)
                outs.append(out)
                arms.append(arm)
                models.append(model)
        else:
            outs, arms, models = batch
        pendings = [
            self._pending_for(t, o, a, m) for t, o, a, m in zip(tasks, outs, arms, models, strict=True)
        ]
        with self._lock:
            self._check_not_pending(tasks, locked=True)
            now = self._monotonic()
            self._expire_locked(now)
            table = self._pending
            by_source = self._by_source
            for t, pending in zip(tasks, pendings, strict=True):
                pending.created_s = now
                table[t.id] = pending
                by_source[pending.source] += 1
        if logger.isEnabledFor(logging.DEBUG):
            for t, pending in zip(tasks, pendings, strict=True):
                _log_decision(pending.decision, t.size)
        return [p.decision for p in pendings]

    def _check_not_pending(self, tasks: Sequence[Task], locked: bool = False) -> None:
        pending = self._pending
        dup = next((t.id for t in tasks if t.id in pending), None)
        if dup is not None:
            raise ValueError(f"task id {dup!r} already has a pending decision")

    def _pending_for(self, task: Task, out: tuple[Any, ...], arm: int, model: LoadedModel | None) -> _Pending:
        action, source, chunks, expected, confidence, state, raw = out[:7]
        # chunks: 4 Python ints from the engine; compress/filter keep the used streams at C speed.
        decision = Decision(
            task.id,
            action,
            tuple(compress(_STREAM_IDS, chunks)),
            tuple(filter(None, chunks)),
            expected,
            confidence,
            _SOURCES[source],
            model.version if model is not None else None,
        )
        return _Pending(decision, state, raw, chunks, task.size, float(task.priority), arm, source)

    def _insert_locked(self, task_id: str, pending: _Pending) -> None:
        now = self._monotonic()
        pending.created_s = now
        self._expire_locked(now)
        self._pending[task_id] = pending
        self._by_source[pending.source] += 1

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
    ) -> float:
        """Report how a decided task went; returns the reward it earned.

        The transition ``(state at decision time, executed action, reward, state now)`` is pushed into
        the experience ring (lock-free; when the ring is full it is dropped and counted).

        Args:
            task_id: the id given to :meth:`partition_task`.
            decision: the :class:`Decision` returned for that task.
            throughput_bps: achieved goodput, bits per second (finite, >= 0).
            latency_s: completion time of the task, seconds (finite, > 0).
            success: whether every byte arrived (bool).
            retransmissions: chunks resent (int >= 0).

        Raises:
            ValueError: unknown or already-reported (or expired) task id, a decision that does not belong
                to the task, or a bad metric (named); nothing changes.
            TypeError: a metric of the wrong type (named); nothing changes.
        """
        throughput = _check_metric("throughput_bps", throughput_bps)
        latency = _check_metric("latency_s", latency_s, positive=True)
        if not isinstance(success, (bool, np.bool_)):
            raise TypeError(f"success must be a bool, got {type(success).__name__}")
        if isinstance(retransmissions, bool) or not isinstance(retransmissions, (int, np.integer)):
            raise TypeError(f"retransmissions must be an int, got {type(retransmissions).__name__}")
        if retransmissions < 0:
            raise ValueError(f"retransmissions must be >= 0, got {retransmissions}")
        with self._lock:
            pending = self._pending.get(task_id) if isinstance(task_id, str) else None
            if pending is None:
                raise ValueError(f"task_id {task_id!r} is unknown, already reported or expired")
            if pending.decision is not decision:
                raise ValueError(f"decision does not belong to task {task_id!r}")
            del self._pending[task_id]
        try:
            # Inputs were validated above and the raw state came from the engine: the same native reward
            # function as the simulator, without re-validating.
            reward = trusted_reward(
                pending.raw, pending.chunk_bytes, decision.expected_time, throughput, latency,
                bool(success), int(retransmissions),
            )
        except BaseException:
            with self._lock:  # put it back: a failed report changes nothing
                self._pending[task_id] = pending
            raise
        arm = pending.arm
        with self._lock:
            self._reported += 1
            self._successes += 1 if success else 0
            self._reward_sum += reward
            self._arm_count[arm] += 1
            self._arm_reward[arm] += reward
        next_state = _native.normalize_state(
            self._engine.snapshot(float(pending.size_bytes), pending.priority, self._hour())
        )
        # The old bookkeeping logged every decision as deterministic (it predates propensities).
        self._ring.try_push(pending.state, decision.action, reward, next_state, False, 1.0)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "outcome %s: reward %.3f, %s in %.4g s (expected %.4g s)",
                task_id, reward, "delivered" if success else "failed", latency, decision.expected_time,
                extra={
                    "event": "outcome",
                    "task_id": task_id,
                    "reward": reward,
                    "success": bool(success),
                    "latency_s": latency,
                    "throughput_bps": throughput,
                    "expected_time_s": decision.expected_time,
                    "model_version": decision.model_version,
                },
            )
        if self._listeners:
            record = OutcomeRecord(
                arm=ARMS[arm],
                model_version=decision.model_version,
                source=decision.source,
                reward=reward,
                success=bool(success),
                latency_s=latency,
                throughput_bps=throughput,
                expected_time_s=decision.expected_time,
                size_bytes=int(sum(decision.bytes_per_stream)),
            )
            for listener in self._listeners:
                try:
                    listener(record)
                except Exception:  # a listener must never break the caller's data path
                    logger.exception("outcome listener failed")
        return reward

    def expire_decisions(self) -> int:
        """Drop pending decisions older than ``decision_ttl_s`` now; returns how many expired.

        Expiry also runs on every new decision, so memory stays bounded by the decisions of one TTL."""
        with self._lock:
            return self._expire_locked(self._monotonic())

    def _expire_locked(self, now_s: float) -> int:
        # Insertion order is creation order (created_s is taken under the lock), so the oldest is first.
        cutoff = now_s - self._ttl_s
        pending = self._pending
        n = 0
        while pending:
            first = next(iter(pending.values()))
            if first.created_s > cutoff:
                break
            pending.popitem(last=False)
            n += 1
        if n:
            self._expired += n
            logger.debug("%d unreported decisions expired", n)
        return n

    # -------------------------------------------------------------------------------- metrics
    def get_metrics(self) -> PartitionerMetrics:
        """A snapshot of the counters (each group consistent; exact once callers are quiet)."""
        learner = self._learner
        # Read the learner outside our lock: it may call back into the partitioner.
        lm: dict[str, Any] = dict(learner.metrics()) if learner is not None else {}
        agent = self._agent.counters()
        model, cand = self._agent.model, self._agent.candidate
        with self._lock:
            reported = self._reported
            arm_reward = {
                arm: (self._arm_reward[i] / self._arm_count[i] if self._arm_count[i] else 0.0)
                for i, arm in enumerate(ARMS)
            }
            arm_count = dict(zip(ARMS, self._arm_count, strict=False))
            return PartitionerMetrics(
                total_decisions=sum(self._by_source),
                decisions_by_source=dict(zip(_SOURCES, self._by_source, strict=False)),
                reported_outcomes=reported,
                successful_tasks=self._successes,
                success_rate=self._successes / reported if reported else 0.0,
                avg_reward=self._reward_sum / reported if reported else 0.0,
                agent_epsilon=self.epsilon,
                fallback_count=agent["fallback_count"],
                model_faults=agent["model_faults"],
                faults_by_cause=agent["faults_by_cause"],
                model_version=model.version if model is not None else None,
                model_backend=model.backend if model is not None else None,
                outstanding_decisions=len(self._pending),
                expired_decisions=self._expired,
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
                reward_by_arm=arm_reward,
                outcomes_by_arm=arm_count,
                rollbacks=int(lm.get("rollbacks", 0)),
                learner=lm,
                # The reference models the default transport (no set_transport_params, no calibrator).
                transport_params=[DEFAULT_TRANSPORT_PARAMS.as_dict()] * 4,
                transport_calibration={},
                guard_overrides=0,  # nor the guard (off by default)
            )

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
