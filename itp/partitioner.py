"""TaskPartitioner: the API latency-critical callers import.

One call decides one task: which streams, how many bytes on each, the predicted completion time. The whole
decision — state snapshot, native normalisation, Q-network forward pass, epsilon-greedy, heuristic fallback,
equal-finish-time split over effective rates (bandwidth x success rate) — runs in one native call with the
GIL released (``itp._native.DecisionEngine``); Python only validates the task, records the pending
decision and builds the result.

Learning signal: ``report_outcome`` computes the reward with :func:`itp.reward.compute_reward` (the same
function the simulator and the trainer use) from the state *as it was at decision time*, the executed
action and the reported outcome, and pushes the transition into the native lock-free ring
(:class:`itp.ring.ExperienceRing`) without taking a lock or the GIL inside the push. Decisions that are
never reported expire after ``decision_ttl_s`` and are counted.

Faults: a model that is missing, unreadable, corrupt, of the wrong layout, or that outputs NaN/inf never
reaches the caller: the decision comes from the heuristic (``source="heuristic"``), ``fallback_count``
rises and a warning is logged once per cause. Bad *caller* input raises ``ValueError``/``TypeError`` and
changes nothing.

Thread-safety: every public method may be called from any number of threads at once. The engine is
thread-safe natively; the pending-decision table and the counters are guarded by one lock held for a few
dictionary operations.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from itp import _native
from itp.actions import MAX_TASK_BYTES
from itp.reward import Outcome, compute_reward
from itp.ring import ExperienceRing
from itp.state import NUM_FEATURES, NUM_STREAMS

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
        for s, c in zip(self.stream_ids, self.chunk_sizes):
            out[s] = c
        return (out[0], out[1], out[2], out[3])


@dataclass(frozen=True)
class PartitionerMetrics:
    """A consistent snapshot of the partitioner's counters (see :meth:`TaskPartitioner.get_metrics`)."""

    total_decisions: int
    decisions_by_source: dict[str, int]
    reported_outcomes: int
    successful_tasks: int
    success_rate: float
    avg_reward: float
    agent_epsilon: float
    fallback_count: int
    model_faults: int
    model_version: str | None
    model_backend: str | None
    outstanding_decisions: int
    expired_decisions: int
    pushed_transitions: int
    dropped_transitions: int
    learner_is_training: bool
    learner_update_count: int
    candidate_version: str | None
    canary_share: float
    learner: dict[str, Any]

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


@dataclass(slots=True)
class _Pending:
    decision: Decision
    state: npt.NDArray[np.float32]
    raw: npt.NDArray[np.float64]
    chunk_bytes: tuple[int, int, int, int]
    size_bytes: int
    priority: float
    created_s: float
    arm: str


class TaskPartitioner:
    """Decides how to split tasks over 4 streams, and learns from the outcomes.

    Args:
        model_path: path to a ``.onnx`` model (with ``.metadata.json`` beside it); the default is the model
            bundled in the wheel; None runs the heuristic only.
        epsilon: exploration rate in [0, 1] for live decisions (0 = always greedy).
        seed: seed of the exploration draws (deterministic for a seed and call order).
        decision_ttl_s: seconds after which an unreported decision expires (counted, memory freed).
        ring_capacity: transitions the experience ring holds before pushes are dropped (and counted).
        clock: returns the local hour of day in [0, 24) (injectable for simulation and tests).
        monotonic: returns seconds on a monotonic clock (injectable for tests of expiry).
        learner: an optional online learner (``request_update()``, ``is_training``, ``update_count``).

    Raises:
        ValueError: for out-of-range arguments. A bad *model* never raises: it is logged and counted,
            and decisions come from the heuristic.
    """

    def __init__(
        self,
        model_path: str | Path | None | _Default = DEFAULT_MODEL,
        *,
        epsilon: float = 0.0,
        seed: int = 0,
        decision_ttl_s: float = 600.0,
        ring_capacity: int = 1 << 16,
        clock: Callable[[], float] = local_hour,
        monotonic: Callable[[], float] = time.monotonic,
        learner: Any = None,
    ) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if not (isinstance(decision_ttl_s, (int, float)) and decision_ttl_s > 0 and math.isfinite(decision_ttl_s)):
            raise ValueError(f"decision_ttl_s must be a positive number of seconds, got {decision_ttl_s!r}")
        self._engine = _native.DecisionEngine(seed)
        self.epsilon = epsilon  # validated by the property
        self._clock = clock
        self._monotonic = monotonic
        self._ttl_s = float(decision_ttl_s)
        self._ring = ExperienceRing(ring_capacity)
        self._learner = learner
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._by_source = [0, 0, 0]
        self._reported = 0
        self._successes = 0
        self._reward_sum = 0.0
        self._fallbacks = 0
        self._model_faults = 0
        self._expired = 0
        self._warned: set[str] = set()
        self._model: Any = None
        self._model_q: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]] | None = None
        self._candidate: Any = None
        self._canary_share = 0.0
        self._canary_rng = random.Random(seed ^ 0x5EED)
        self._listeners: list[Callable[[OutcomeRecord], None]] = []
        # A model was asked for: from now on every heuristic decision is a fallback (counted).
        self._model_wanted = model_path is not None
        if isinstance(model_path, _Default):
            model_path = default_model_path()
        if model_path is not None:
            self.load_model(model_path)

    # ----------------------------------------------------------------------------------- model
    def load_model(self, model_path: str | Path) -> bool:
        """Load (or replace) the current model. Returns True if it loaded; on any fault keeps deciding with
        the heuristic (the previous model is dropped), logs a warning once and counts the fault."""
        from itp.model_loading import ModelLoadError, load_model

        self._model_wanted = True
        try:
            loaded = load_model(model_path)
        except ModelLoadError as exc:
            self._warn_once("load", f"model not loaded, using the heuristic: {exc}")
            with self._lock:
                self._model_faults += 1
            self.set_model(None)
            return False
        self.set_model(loaded)
        return True

    def set_model(self, loaded: Any) -> None:
        """Make an already loaded and verified model (:class:`itp.model_loading.LoadedModel`) current, at
        once and atomically for new decisions; None means heuristic only. Used by rollout and rollback."""
        with self._lock:
            self._model = loaded
            self._model_q = None if loaded is None or loaded.backend == "native" else loaded.q_values
            self._engine.set_model(loaded.native if loaded is not None and loaded.backend == "native" else None)
        if loaded is not None:
            logger.info(
                "model loaded",
                extra={"model_version": loaded.version, "backend": loaded.backend, "path": str(loaded.path)},
            )

    def set_candidate(self, loaded: Any, share: float = 0.1) -> None:
        """Route ``share`` (in [0, 1]) of live decisions to a candidate model (the canary arm); None ends
        the canary. Outcomes of each arm reach the outcome listeners with ``arm`` set."""
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be a number in [0, 1], got {share!r}")
        with self._lock:
            self._candidate = loaded
            self._canary_share = float(share) if loaded is not None else 0.0

    def promote_candidate(self) -> Any:
        """Make the candidate the current model and end the canary; returns the promoted model."""
        with self._lock:
            cand = self._candidate
            if cand is None:
                raise ValueError("there is no candidate model to promote")
            self._candidate = None
            self._canary_share = 0.0
        self.set_model(cand)
        return cand

    @property
    def candidate(self) -> Any:
        """The canary model, or None."""
        return self._candidate

    @property
    def canary_share(self) -> float:
        """Share of live decisions routed to the candidate, in [0, 1]."""
        return self._canary_share

    def add_outcome_listener(self, listener: Callable[[OutcomeRecord], None]) -> None:
        """Call ``listener(record)`` after every accepted outcome, on the reporting thread. It must be
        quick and must not raise (an exception is logged and swallowed)."""
        self._listeners.append(listener)

    def attach_learner(self, learner: Any) -> None:
        """Attach the online learner whose state :meth:`get_metrics` reports and which
        :meth:`force_model_update` triggers."""
        self._learner = learner

    @property
    def model(self) -> Any:
        """The loaded :class:`itp.model_loading.LoadedModel`, or None (heuristic only)."""
        return self._model

    @property
    def epsilon(self) -> float:
        """Exploration rate of live decisions, in [0, 1]."""
        return float(self._engine.epsilon)

    @epsilon.setter
    def epsilon(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"epsilon must be a number in [0, 1], got {value!r}")
        self._engine.epsilon = float(value)

    @property
    def ring(self) -> ExperienceRing:
        """The experience ring that reported transitions are pushed into (drained by a learner)."""
        return self._ring

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
            ValueError: naming the bad field; nothing changes.
        """
        if isinstance(stream_id, bool) or not isinstance(stream_id, (int, np.integer)):
            raise TypeError(f"stream_id must be an int, got {type(stream_id).__name__}")
        self._engine.update_stream(int(stream_id), bandwidth_bps, latency_s, congestion, success_rate)

    def set_queue_depth(self, queue_depth: float) -> None:
        """Tasks waiting at the sender (>= 0)."""
        self._engine.set_queue_depth(queue_depth)

    # ------------------------------------------------------------------------------ decisions
    def partition_task(self, task: Task) -> Decision:
        """Decide one task: streams, bytes per stream, predicted completion time.

        Raises:
            TypeError: ``task`` is not a :class:`Task`.
            ValueError: the task id is already pending (decided and not yet reported).
        """
        if not isinstance(task, Task):
            raise TypeError(f"task must be an itp.Task, got {type(task).__name__}")
        hour = self._hour()
        cand = self._candidate
        if cand is not None and self._canary_rng.random() < self._canary_share:
            return self._record(task, self._decide_with_q(cand.q_values, task, hour), cand)
        q_fn = self._model_q
        if q_fn is None:
            out = self._engine.decide(task.size, float(task.priority), hour, True, None)
        else:
            out = self._decide_with_q(q_fn, task, hour)
        return self._record(task, out)

    def partition_tasks(self, tasks: Sequence[Task]) -> list[Decision]:
        """Decide many tasks in one native call (GIL released for the whole batch).

        The stream table is read once per task, so concurrent ``update_stream`` calls may land between
        tasks. Raises like :meth:`partition_task`; if any task is invalid or duplicated, none is decided.
        """
        tasks = list(tasks)
        n = len(tasks)
        if n == 0:
            return []
        ids = set()
        for t in tasks:
            if not isinstance(t, Task):
                raise TypeError(f"tasks must hold itp.Task, got {type(t).__name__}")
            if t.id in ids:
                raise ValueError(f"task id {t.id!r} appears twice in the batch")
            ids.add(t.id)
        with self._lock:
            dup = next((t.id for t in tasks if t.id in self._pending), None)
        if dup is not None:
            raise ValueError(f"task id {dup!r} already has a pending decision")
        hour = self._hour()
        if self._model_q is not None or self._candidate is not None:
            return [self.partition_task(t) for t in tasks]
        sizes = np.fromiter((t.size for t in tasks), dtype=np.uint64, count=n)
        prios = np.fromiter((t.priority for t in tasks), dtype=np.float64, count=n)
        actions = np.empty(n, dtype=np.int64)
        sources = np.empty(n, dtype=np.uint8)
        chunks = np.empty((n, NUM_STREAMS), dtype=np.uint64)
        times = np.empty(n, dtype=np.float64)
        conf = np.empty(n, dtype=np.float64)
        states = np.empty((n, NUM_FEATURES), dtype=np.float32)
        self._engine.decide_batch(sizes, prios, hour, True, actions, sources, chunks, times, conf, states)
        chunk_rows = chunks.tolist()
        results = []
        for i, t in enumerate(tasks):
            src = int(sources[i])
            out = (
                int(actions[i]), src & 0x7F, tuple(chunk_rows[i]), float(times[i]), float(conf[i]),
                states[i].copy(), None, bool(src & 0x80),
            )
            results.append(self._record(t, out))
        return results

    def _decide_with_q(
        self, q_fn: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]], task: Task, hour: float
    ) -> tuple[Any, ...]:
        raw = self._engine.snapshot(float(task.size), float(task.priority), hour)
        state = _native.normalize_state(raw)
        try:
            q = q_fn(state)
        except Exception as exc:  # a model fault must never reach the caller
            self._warn_once("inference", f"model inference failed, using the heuristic: {exc}")
            return self._fallback(raw)
        return tuple(self._engine.decide_raw(raw, True, q))

    def _fallback(self, raw: npt.NDArray[np.float64]) -> tuple[Any, ...]:
        out = list(self._engine.decide_raw(raw, False, None))
        out[7] = True  # a model fault: counted like NaN output
        return tuple(out)

    def _record(self, task: Task, out: tuple[Any, ...], candidate: Any = None) -> Decision:
        action, source, chunks, expected, confidence, state, raw, fault = out
        used = tuple(i for i in range(NUM_STREAMS) if chunks[i] > 0)
        model = candidate if candidate is not None else self._model
        decision = Decision(
            task_id=task.id,
            action=action,
            stream_ids=used,
            chunk_sizes=tuple(int(chunks[i]) for i in used),
            expected_time=expected,
            confidence=confidence,
            source=_SOURCES[source],
            model_version=model.version if model is not None else None,
        )
        if raw is None:
            raw = self._engine.snapshot(float(task.size), float(task.priority), self._hour())
        pending = _Pending(
            decision, state, raw, chunks, task.size, float(task.priority), self._monotonic(),
            "candidate" if candidate is not None else "current",
        )
        if fault:
            self._warn_once("nan", "model returned NaN/inf Q-values, using the heuristic")
        with self._lock:
            if task.id in self._pending:
                raise ValueError(f"task id {task.id!r} already has a pending decision")
            self._expire_locked(pending.created_s)
            self._pending[task.id] = pending
            self._by_source[source] += 1
            if source == 2 and self._model_wanted:
                self._fallbacks += 1
            if fault:
                self._model_faults += 1
        return decision

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

        Args:
            task_id: the id given to :meth:`partition_task`.
            decision: the :class:`Decision` returned for that task.
            throughput_bps: achieved goodput, bits per second (finite, >= 0).
            latency_s: completion time of the task, seconds (finite, >= 0).
            success: whether every byte arrived.
            retransmissions: chunks resent (int >= 0).

        Raises:
            ValueError: unknown or already-reported (or expired) task id, a decision that does not belong
                to the task, or a bad metric; nothing changes.
        """
        outcome = Outcome(
            throughput_bps=throughput_bps, latency_s=latency_s, success=success,
            retransmissions=retransmissions,
        )
        with self._lock:
            pending = self._pending.get(task_id)
            if pending is None:
                raise ValueError(f"task_id {task_id!r} is unknown, already reported or expired")
            if pending.decision is not decision:
                raise ValueError(f"decision does not belong to task {task_id!r}")
            reward = compute_reward(pending.raw, pending.chunk_bytes, pending.decision.expected_time, outcome)
            del self._pending[task_id]
            self._reported += 1
            self._successes += 1 if success else 0
            self._reward_sum += reward
        next_raw = self._engine.snapshot(float(pending.size_bytes), pending.priority, self._hour())
        next_state = _native.normalize_state(next_raw)
        self._ring.try_push(pending.state, decision.action, reward, next_state, False)
        if self._listeners:
            record = OutcomeRecord(
                arm=pending.arm, model_version=decision.model_version, source=decision.source,
                reward=reward, success=bool(success), latency_s=float(latency_s),
                throughput_bps=float(throughput_bps), expected_time_s=decision.expected_time,
            )
            for listener in self._listeners:
                try:
                    listener(record)
                except Exception:  # a listener must never break the caller's data path
                    logger.exception("outcome listener failed")
        return reward

    def expire_decisions(self) -> int:
        """Drop pending decisions older than ``decision_ttl_s`` now; returns how many expired."""
        with self._lock:
            return self._expire_locked(self._monotonic())

    def _expire_locked(self, now_s: float) -> int:
        cutoff = now_s - self._ttl_s
        n = 0
        while self._pending:
            first = next(iter(self._pending.values()))
            if first.created_s > cutoff:
                break
            self._pending.popitem(last=False)
            n += 1
        self._expired += n
        return n

    # -------------------------------------------------------------------------------- metrics
    def get_metrics(self) -> PartitionerMetrics:
        """A consistent snapshot of the counters."""
        learner = self._learner
        # Read the learner outside our lock: it may call back into the partitioner.
        learner_metrics = dict(learner.metrics()) if hasattr(learner, "metrics") else {}
        with self._lock:
            model = self._model
            reported = self._reported
            return PartitionerMetrics(
                total_decisions=sum(self._by_source),
                decisions_by_source=dict(zip(_SOURCES, self._by_source)),
                reported_outcomes=reported,
                successful_tasks=self._successes,
                success_rate=self._successes / reported if reported else 0.0,
                avg_reward=self._reward_sum / reported if reported else 0.0,
                agent_epsilon=self.epsilon,
                fallback_count=self._fallbacks,
                model_faults=self._model_faults,
                model_version=model.version if model is not None else None,
                model_backend=model.backend if model is not None else None,
                outstanding_decisions=len(self._pending),
                expired_decisions=self._expired,
                pushed_transitions=int(self._ring.pushed),
                dropped_transitions=int(self._ring.dropped),
                learner_is_training=bool(getattr(learner, "is_training", False)),
                learner_update_count=int(getattr(learner, "update_count", 0)),
                candidate_version=self._candidate.version if self._candidate is not None else None,
                canary_share=self._canary_share,
                learner=learner_metrics,
            )

    def force_model_update(self) -> bool:
        """Ask the attached online learner to retrain now. Returns False if no learner is attached."""
        if self._learner is None:
            logger.warning("force_model_update: no online learner is attached")
            return False
        self._learner.request_update()
        return True

    # -------------------------------------------------------------------------------- helpers
    def _hour(self) -> float:
        hour = float(self._clock())
        if not 0.0 <= hour < 24.0:
            raise ValueError(f"clock must return an hour in [0, 24), got {hour}")
        return hour

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

