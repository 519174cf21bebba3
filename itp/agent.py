"""The agent: serves Q-networks for live decisions, with epsilon-greedy exploration and counted fallback.

One :class:`Agent` owns the native decision engine (``itp._native.DecisionEngine``: stream table, state
normalisation, fused model forward pass, epsilon-greedy, heuristic, equal-finish-time split) and decides
which model answers each decision:

* the **current** model, served natively when its graph is the exported Gemm/Relu chain (the engine runs
  the fused kernel inside the same GIL-free call) or by ONNX Runtime otherwise (thread-local I/O
  binding, see :mod:`itp.model_loading`); its Q-values then enter the engine as ``external_q``;
* a **candidate** model during a canary: a share ``s`` in [0, 1] of decisions, drawn independently per
  decision (``U < s``, seeded), is answered by the candidate instead;
* the **heuristic** (:mod:`itp.heuristic`) when no model is loaded, or as the fallback of a model fault.

Exploration is epsilon-greedy inside the engine: with probability ``epsilon`` an action drawn uniformly
among the ``explore_top_k`` best by Q (default 15: any action) replaces the argmax (``source="explore"``);
draws come from a counter-based generator seeded by ``seed``.

Faults never reach the caller. A model that cannot be loaded, inference that raises, or Q-values that are
NaN/inf make the decision come from the heuristic; the cause is counted (``faults_by_cause``), each cause
is logged once as a warning, and fault listeners (the online learner's rollout) are told which arm
faulted. While a model is wanted (one was asked for), every heuristic decision counts as a fallback.

Thread-safety: every method may be called from any number of threads. Serving state (current model,
candidate, share) is one immutable snapshot swapped under a writer lock; a decision reads it under a
sequence number and retries if a swap raced with it, so a decision's reported model version is always the
model that answered. Stream-table writes are versioned the same way so a batch decision can tell whether
the table changed while it ran.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from itp import _native
from itp.actions import NUM_ACTIONS
from itp.model_loading import LoadedModel, ModelLoadError, load_model
from itp.state import NUM_FEATURES, NUM_STREAMS
from itp.transport import TransportParamsLike, transport_params_array

__all__ = [
    "ARMS",
    "FAULT_CAUSES",
    "SOURCES",
    "Agent",
    "AgentPolicy",
    "EvaluationReport",
    "evaluate_model",
]

logger = logging.getLogger(__name__)

#: Decision sources, indexed by the engine's source code.
SOURCES: Final = ("model", "explore", "heuristic")
#: Canary arms, indexed by arm code.
ARMS: Final = ("current", "candidate")
#: Counted model-fault causes.
FAULT_CAUSES: Final = ("load", "inference_error", "nan_output")

_HEURISTIC = 2
_TASK_SIZE, _PRIORITY, _HOUR = 17, 18, 19

QFn = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
#: The engine's decision tuple: (action, source code, chunk bytes[4], expected_time_s, confidence,
#: state f32[20], raw f64[20] or None, model_fault).
RawDecision = tuple[Any, ...]
FaultListener = Callable[[str, str, "str | None"], None]


@dataclass(frozen=True)
class _Serving:
    """What answers decisions now (immutable; replaced as a whole)."""

    current: LoadedModel | None
    current_q: QFn | None  # set when the current model is served outside the engine (ONNX Runtime)
    candidate: LoadedModel | None
    share: float


class Agent:
    """Model serving for the decision path (see the module docstring).

    Args:
        seed: seed of exploration draws and canary routing (int >= 0).
        epsilon: exploration rate in [0, 1].
        explore_top_k: exploration draws among the k actions with the highest Q-values, 1..15
            (15: uniform over every action).

    Raises:
        ValueError: bad ``seed``, ``epsilon`` or ``explore_top_k``.
    """

    def __init__(self, seed: int = 0, *, epsilon: float = 0.0, explore_top_k: int = 15) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.engine: Any = _native.DecisionEngine(seed)
        self.epsilon = epsilon
        self.explore_top_k = explore_top_k
        self._write_lock = threading.Lock()  # serialises serving swaps and stream-table writes
        self._count_lock = threading.Lock()  # fault and fallback counters
        self._serving = _Serving(None, None, None, 0.0)
        self._serving_seq = 0  # even: stable; odd: a swap is in progress
        self._table_seq = 0  # same protocol for the stream table
        self._canary_rng = random.Random(seed ^ 0x5EED)
        self._model_wanted = False
        self._fallbacks = 0
        self._faults = dict.fromkeys(FAULT_CAUSES, 0)
        self._arm_faults = [0, 0]
        self._warned: set[str] = set()
        self._fault_listeners: list[FaultListener] = []
        self._core: Any = None  # a native PartitionerCore kept in step with the serving snapshot

    # ------------------------------------------------------------------------------ settings
    @property
    def epsilon(self) -> float:
        """Exploration rate of live decisions, in [0, 1]."""
        return float(self.engine.epsilon)

    @epsilon.setter
    def epsilon(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"epsilon must be a number in [0, 1], got {value!r}")
        self.engine.epsilon = float(value)

    @property
    def explore_top_k(self) -> int:
        """How many of the best actions by Q an exploration draw chooses among (15: all, uniformly)."""
        return int(self.engine.explore_top_k)

    @explore_top_k.setter
    def explore_top_k(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= NUM_ACTIONS:
            raise ValueError(f"explore_top_k must be an int in 1..{NUM_ACTIONS}, got {value!r}")
        self.engine.explore_top_k = value

    @property
    def model(self) -> LoadedModel | None:
        """The current model, or None (heuristic only)."""
        return self._serving.current

    @property
    def candidate(self) -> LoadedModel | None:
        """The canary model, or None."""
        return self._serving.candidate

    @property
    def canary_share(self) -> float:
        """Share of live decisions routed to the candidate, in [0, 1]."""
        return self._serving.share

    @property
    def model_wanted(self) -> bool:
        """Whether a model was asked for (then heuristic decisions count as fallbacks)."""
        return self._model_wanted

    # ---------------------------------------------------------------------------- stream table
    def update_stream(
        self,
        stream_id: int,
        bandwidth_bps: float,
        latency_s: float,
        congestion: float,
        success_rate: float,
        start_window_bits: float = 0.0,
    ) -> None:
        """Validated natively (ValueError naming the field; the table is unchanged on error)."""
        with self._write_lock:
            self._table_seq += 1
            try:
                self.engine.update_stream(
                    stream_id, bandwidth_bps, latency_s, congestion, success_rate, start_window_bits
                )
            finally:
                self._table_seq += 1

    def set_queue_depth(self, queue_depth: float) -> None:
        """Tasks waiting at the sender (finite, >= 0; ValueError otherwise, nothing changes)."""
        with self._write_lock:
            self._table_seq += 1
            try:
                self.engine.set_queue_depth(queue_depth)
            finally:
                self._table_seq += 1

    # ---------------------------------------------------------------------------------- models
    def load(self, path: str | Path) -> LoadedModel | None:
        """Load ``path`` and make it current. On any fault: log once, count a ``load`` fault, serve the
        heuristic (the previous model is dropped: the caller asked for *this* model) and return None."""
        self._model_wanted = True
        try:
            loaded = load_model(path)
        except ModelLoadError as exc:
            self.record_fault("current", "load", None, f"model not loaded, using the heuristic: {exc}")
            self.set_model(None)
            return None
        self.set_model(loaded)
        return loaded

    def set_model(self, loaded: LoadedModel | None) -> None:
        """Make a loaded, verified model current for new decisions at once (None: heuristic only)."""
        if loaded is not None and not isinstance(loaded, LoadedModel):
            raise TypeError(f"model must be a LoadedModel or None, got {type(loaded).__name__}")
        with self._write_lock:
            old = self._serving
            if loaded is not None:
                self._model_wanted = True  # before the swap: the native core reads it there
            self._swap(
                _Serving(loaded, _external_q(loaded), old.candidate, old.share),
                native=loaded.native if loaded is not None and loaded.backend == "native" else None,
                set_native=True,
            )
        if loaded is not None:
            logger.info(
                "model %s is current (%s backend, %s)", loaded.version, loaded.backend, loaded.path,
                extra={
                    "event": "model_current", "model_version": loaded.version,
                    "backend": loaded.backend, "model_path": str(loaded.path),
                },
            )

    def set_candidate(self, loaded: LoadedModel | None, share: float = 0.1) -> None:
        """Route ``share`` (in [0, 1]) of decisions to ``loaded`` (None ends the canary).

        Raises:
            ValueError: ``share`` outside [0, 1]; TypeError: not a LoadedModel. Nothing changes.
        """
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be a number in [0, 1], got {share!r}")
        if loaded is not None and not isinstance(loaded, LoadedModel):
            raise TypeError(f"candidate must be a LoadedModel or None, got {type(loaded).__name__}")
        with self._write_lock:
            old = self._serving
            share_f = float(share) if loaded is not None else 0.0
            self._swap(_Serving(old.current, old.current_q, loaded, share_f), native=None, set_native=False)

    def promote_candidate(self) -> LoadedModel:
        """Make the candidate current and end the canary, atomically for new decisions.

        Raises:
            ValueError: there is no candidate.
        """
        with self._write_lock:
            cand = self._serving.candidate
            if cand is None:
                raise ValueError("there is no candidate model to promote")
            self._swap(
                _Serving(cand, _external_q(cand), None, 0.0),
                native=cand.native if cand.backend == "native" else None,
                set_native=True,
            )
        logger.info(
            "candidate %s promoted to current", cand.version,
            extra={"event": "candidate_promoted", "model_version": cand.version},
        )
        return cand

    def _swap(self, serving: _Serving, *, native: Any, set_native: bool) -> None:
        # Caller holds _write_lock. Odd sequence number while the engine and the snapshot disagree.
        self._serving_seq += 1
        try:
            if set_native:
                self.engine.set_model(native)
            self._serving = serving
            self._sync_core()
        finally:
            self._serving_seq += 1

    # ------------------------------------------------------------------------- native partitioner
    def attach_core(self, core: Any) -> None:
        """Keep a native ``PartitionerCore`` serving what this agent serves: after every swap it gets the
        natively served network with its version (one atomic snapshot), whether a model is wanted
        (heuristic decisions then count as fallbacks), and whether it may decide alone (no canary, no
        ONNX Runtime model; otherwise it hands the decision back to :meth:`decide`)."""
        with self._write_lock:
            self._core = core
            self._sync_core()

    def _sync_core(self) -> None:
        # Caller holds _write_lock.
        core = self._core
        if core is None:
            return
        s = self._serving
        native_ok = s.candidate is None and s.current_q is None
        current = s.current
        core.set_serving(
            current.native if current is not None and current.backend == "native" else None,
            current.version if current is not None else None,
            self._model_wanted,
            native_ok,
        )

    def native_nan_fault(self, arm: int) -> None:
        """Called by the native core (GIL held, after its decision) when the model answered NaN/inf and the
        heuristic decided: counted, warned once and passed to the fault listeners like any fault."""
        model = self._serving.candidate if arm == 1 else self._serving.current
        self.record_fault(
            ARMS[arm], "nan_output", model, "model returned NaN/inf Q-values, using the heuristic"
        )

    # ------------------------------------------------------------------------------- decisions
    def decide(
        self, size_bytes: int, priority: float, hour: float
    ) -> tuple[RawDecision, int, LoadedModel | None]:
        """Decide one task on the live stream table.

        Returns:
            (engine decision tuple, arm code 0 current / 1 candidate, the model that answered or None).
        """
        while True:
            seq = self._serving_seq
            serving = self._serving
            if seq & 1:  # a swap is in progress (microseconds): yield the GIL to it, then retry
                time.sleep(0)
                continue
            cand = serving.candidate
            if cand is not None and self._canary_rng.random() < serving.share:
                out = self._decide_external(cand.q_values, size_bytes, priority, hour, "candidate", cand)
                arm = 1
                model_used: LoadedModel | None = cand
            else:
                q_fn = serving.current_q
                if q_fn is None:
                    out = self.engine.decide(size_bytes, priority, hour, True, None)
                else:
                    out = self._decide_external(q_fn, size_bytes, priority, hour, "current", serving.current)
                arm, model_used = 0, serving.current
            if self._serving_seq == seq:
                break
        if out[1] == _HEURISTIC:
            self._count_heuristic(out, arm, model_used)
        return out, arm, model_used

    def _decide_external(
        self, q_fn: QFn, size_bytes: int, priority: float, hour: float, arm: str, model: LoadedModel | None
    ) -> RawDecision:
        raw = self.engine.snapshot(float(size_bytes), float(priority), hour)
        state = _native.normalize_state(raw)
        try:
            q = q_fn(state)
        except Exception as exc:  # a model fault must never reach the caller
            self.record_fault(
                arm, "inference_error", model, f"model inference failed, using the heuristic: {exc}"
            )
            out = list(self.engine.decide_raw(raw, False, None))
            out[7] = None  # fault already counted; not a NaN output
            return tuple(out)
        return tuple(self.engine.decide_raw(raw, True, q))

    def _count_heuristic(self, out: RawDecision, arm: int, model: LoadedModel | None) -> None:
        if out[7]:  # the model answered NaN/inf: the engine fell back to the heuristic
            self.record_fault(
                ARMS[arm], "nan_output", model, "model returned NaN/inf Q-values, using the heuristic"
            )
        if self._model_wanted:
            with self._count_lock:
                self._fallbacks += 1

    def decide_batch(
        self, sizes: npt.NDArray[np.uint64], priorities: npt.NDArray[np.float64], hour: float
    ) -> tuple[list[RawDecision], list[int], list[LoadedModel | None]] | None:
        """Decide N tasks in one native call (GIL released for the batch) on one stream table.

        Returns None when the batch cannot be served natively in one go (a candidate is active, the
        current model is served by ONNX Runtime, or the stream table changed while the batch ran); the
        caller then decides task by task. Otherwise the decisions, with raw states rebuilt from the one
        table snapshot the whole batch saw.
        """
        serving = self._serving
        if serving.candidate is not None or serving.current_q is not None:
            return None
        seq, tseq = self._serving_seq, self._table_seq
        if seq & 1 or tseq & 1:
            return None
        n = int(sizes.shape[0])
        actions = np.empty(n, dtype=np.int64)
        sources = np.empty(n, dtype=np.uint8)
        chunks = np.empty((n, NUM_STREAMS), dtype=np.uint64)
        times = np.empty(n, dtype=np.float64)
        conf = np.empty(n, dtype=np.float64)
        states = np.empty((n, NUM_FEATURES), dtype=np.float32)
        self.engine.decide_batch(sizes, priorities, hour, True, actions, sources, chunks, times, conf, states)
        base = self.engine.snapshot(1.0, 0.0, hour)
        if self._serving_seq != seq or self._table_seq != tseq:
            return None  # the model or the table changed mid-batch: the raw states would be uncertain
        raws = np.repeat(base[None, :], n, axis=0)
        raws[:, _TASK_SIZE] = sizes
        raws[:, _PRIORITY] = priorities
        model = serving.current
        out: list[RawDecision] = []
        arms = [0] * n
        models: list[LoadedModel | None] = [model] * n
        chunk_rows = chunks.tolist()
        action_list = actions.tolist()
        source_list = sources.tolist()
        time_list = times.tolist()
        conf_list = conf.tolist()
        for i in range(n):
            src = source_list[i]
            d = (
                action_list[i],
                src & 0x7F,
                chunk_rows[i],
                time_list[i],
                conf_list[i],
                states[i],
                raws[i],
                bool(src & 0x80),
            )
            if src & 0x7F == _HEURISTIC:
                self._count_heuristic(d, 0, model)
            out.append(d)
        return out, arms, models

    # ---------------------------------------------------------------------------------- faults
    def add_fault_listener(self, listener: FaultListener) -> None:
        """Call ``listener(arm, cause, model_version)`` on every model fault (on the deciding thread;
        it must be quick; exceptions are logged and swallowed)."""
        self._fault_listeners.append(listener)

    def record_fault(self, arm: str, cause: str, model: LoadedModel | None, message: str) -> None:
        """Count a model fault, warn once per cause, and notify the fault listeners."""
        with self._count_lock:
            self._faults[cause] += 1
            self._arm_faults[ARMS.index(arm)] += 1
            first = cause not in self._warned
            self._warned.add(cause)
        version = model.version if model is not None else None
        if first:
            logger.warning(
                message, extra={"event": "model_fault", "arm": arm, "cause": cause, "model_version": version}
            )
        for listener in self._fault_listeners:
            try:
                listener(arm, cause, version)
            except Exception:
                logger.exception("fault listener failed")

    def counters(self) -> dict[str, Any]:
        """Fault and fallback counters (a consistent snapshot; fallbacks include those of decisions the
        attached native core made alone)."""
        native_fallbacks = int(self._core.stats()["fallbacks"]) if self._core is not None else 0
        with self._count_lock:
            return {
                "fallback_count": self._fallbacks + native_fallbacks,
                "model_faults": sum(self._faults.values()),
                "faults_by_cause": dict(self._faults),
                "faults_by_arm": dict(zip(ARMS, self._arm_faults, strict=False)),
            }


def _external_q(loaded: LoadedModel | None) -> QFn | None:
    """The Q-function to call from Python, or None when the engine runs the model natively."""
    if loaded is None or loaded.backend == "native":
        return None
    return loaded.q_values


# ------------------------------------------------------------------------------ evaluation


class AgentPolicy:
    """A model (or the heuristic) as a greedy simulator policy (``itp.sim.policy.Policy``), deciding
    through its own native engine exactly as the live path does (same normalisation, argmax, fallback and
    equal-finish split) but with no exploration and no shared state.

    Args:
        model: a loaded model, or None for the heuristic.
        name: display name (default: ``model <version>`` or ``heuristic``).
        transport_params: the transport parameters its split, its heuristic and its predicted times use
            (one :class:`itp.transport.TransportParams` for all streams or 4, as
            :meth:`itp.TaskPartitioner.set_transport_params` takes them); None: the defaults. Give the
            deployment's (``TaskPartitioner.transport_params()``) to play the model as it is deployed.

    Not thread-safe (one instance per evaluation).
    """

    def __init__(
        self,
        model: LoadedModel | None,
        name: str | None = None,
        *,
        transport_params: TransportParamsLike = None,
    ) -> None:
        self.model = model
        self.name = name or (f"model {model.version}" if model is not None else "heuristic")
        self._engine: Any = _native.DecisionEngine(0)
        self._engine.epsilon = 0.0
        table = transport_params_array(transport_params)
        if table is not None:
            self._engine.set_transport_params(table)
        self._q: QFn | None = None
        if model is not None:
            if model.backend == "native":
                self._engine.set_model(model.native)
            else:
                self._q = model.q_values
        self._last: tuple[int, tuple[int, int, int, int]] | None = None
        self.decisions = 0
        self.fallbacks = 0

    def select_action(self, raw_state: npt.NDArray[np.float64]) -> int:
        """The greedy action for a raw state (float64[20], caller units)."""
        q = None
        if self._q is not None:
            try:
                q = self._q(_native.normalize_state(raw_state))
            except Exception as exc:  # counted below as a fallback, like a NaN output
                logger.debug("model inference failed during evaluation: %s", exc)
        out = self._engine.decide_raw(raw_state, False, q)
        self.decisions += 1
        if self.model is not None and out[1] == _HEURISTIC:
            self.fallbacks += 1
        self._last = (int(out[0]), tuple(int(c) for c in out[2]))  # type: ignore[assignment]
        return int(out[0])

    def chunk_bytes(
        self, raw_state: npt.NDArray[np.float64], action: int
    ) -> tuple[int, int, int, int] | None:
        """The engine's split of the last decision (the live path's chunking)."""
        if self._last is None or self._last[0] != action:
            return None
        return self._last[1]


@dataclass(frozen=True)
class EvaluationReport:
    """Greedy results of one policy on simulated episodes (:func:`evaluate_model`).

    Attributes:
        policy: the policy's display name.
        model_version: the evaluated model's version, or None (heuristic).
        episodes: episodes played; seed: the evaluation seed (episode e uses
            ``itp.sim.evaluate.episode_seed(seed, e)``); tasks: decisions made.
        mean_reward: mean per-task reward (``itp.reward``).
        mean_goodput_bps: mean per-task goodput, bits per second.
        mean_completion_time_s, p50_completion_time_s, p95_completion_time_s: seconds.
        success_rate: fraction of tasks fully delivered.
        fallback_decisions: decisions the heuristic made because the model faulted.
        table: the full ``itp.sim.evaluate.EvaluationTable`` (with any baselines asked for).
    """

    policy: str
    model_version: str | None
    episodes: int
    seed: int
    tasks: int
    mean_reward: float
    mean_goodput_bps: float
    mean_completion_time_s: float
    p50_completion_time_s: float
    p95_completion_time_s: float
    success_rate: float
    fallback_decisions: int
    table: Any

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers (JSON-ready), without the table."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "table"}


def evaluate_model(
    model: LoadedModel | None,
    episodes: int = 100,
    *,
    seed: int = 0,
    trace_files: Sequence[str | Path] | None = None,
    config: Any = None,
    baselines: Sequence[str] = (),
) -> EvaluationReport:
    """Play ``episodes`` simulated episodes greedily with ``model`` (None: the heuristic).

    Same ``seed`` -> same episodes for every model, so two reports with equal seeds compare decisions
    only. Nothing live is touched (own engine, own simulator).

    Args:
        model: the model to evaluate, or None.
        episodes: int >= 1.
        seed: int >= 0.
        trace_files: trace-driven episodes from these files (None: synthetic).
        config: an ``itp.sim.SimConfig`` (default: the simulator's).
        baselines: extra policies by name (``itp.sim.baselines``) added to ``table``.

    Raises:
        ValueError: bad ``episodes``/``seed``/baseline name.
    """
    from itp.sim.evaluate import evaluate

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be an int >= 1, got {episodes!r}")
    # The model plays with the sender's transport parameters of the configuration (a deployment's, on
    # physics fitted to it): its split and predicted times then match the simulator's sender.
    sender = getattr(config, "sender_transport_params", None)
    policy = AgentPolicy(model, transport_params=sender)
    table = evaluate(
        [policy, *baselines], episodes=episodes, seed=seed, trace_files=trace_files, config=config
    )
    row = table.row(policy.name)
    for name in ("mean_reward", "mean_goodput_bps"):
        if not math.isfinite(getattr(row, name)):
            logger.warning("evaluation of %s produced a non-finite %s", policy.name, name)
    return EvaluationReport(
        policy=policy.name,
        model_version=model.version if model is not None else None,
        episodes=episodes,
        seed=seed,
        tasks=row.tasks,
        mean_reward=row.mean_reward,
        mean_goodput_bps=row.mean_goodput_bps,
        mean_completion_time_s=row.mean_completion_time_s,
        p50_completion_time_s=row.p50_completion_time_s,
        p95_completion_time_s=row.p95_completion_time_s,
        success_rate=row.success_rate,
        fallback_decisions=policy.fallbacks,
        table=table,
    )
