"""The online learner: durable experience, background retraining, gated rollout, rollback.

Data flow::

    report_outcome ──push──> ExperienceRing (native, lock-free)
                                 │ drained every poll_interval_s by the learner thread
                                 ├──> PrioritizedReplay (native; what a retrain samples first)
                                 └──> ExperienceStore (SQLite WAL; one transaction per flush interval)

The learner thread (one daemon thread, started by :meth:`OnlineLearner.start`) also expires unreported
decisions, starts retraining when due, collects its result, runs the canary and acts on it. Nothing of
this runs on a caller's thread except :meth:`flush`, :meth:`close` and :meth:`rollback`, which the caller
asks for.

Durability: :meth:`flush` returns once every transition pushed before the call is committed; a clean
:meth:`close` flushes first. After a crash (``kill -9``) at most the rows of the last
``flush_interval_s`` (default 1 s) are lost and the store opens intact (SQLite WAL). On start the newest
``reload_limit`` rows are loaded back into the replay buffer. When the store cannot be written (disk
full...) rows are kept in memory and retried; beyond ``max_pending_rows`` the oldest are dropped and
counted (``store_dropped``), never silently. Ring overflow is counted by the ring
(``dropped_transitions`` in the partitioner's metrics).

Retraining is due when ``min_experiences`` rows were stored since the last retrain, when
``update_interval_s`` (default 24 h) has passed since the last one, or on :meth:`request_update`
(``TaskPartitioner.force_model_update``). It runs :mod:`itp.training.finetune` in a separate process,
niced, with one torch thread (``retrain_mode="process"``, the default), or in a niced background thread
(``"thread"``, for tests). It needs torch (the ``train`` extra); without it the learner still collects and
stores experience and reports ``retraining_available = False`` with the reason (logged once).

Each job carries what the deployment knows: the store's rows with their behaviour propensities (the
offline gate judges the candidate off-policy on the newest held-back rows), the exploration rate the
partitioner runs at (the gate's target policies, unless ``GateConfig.target_epsilon`` is set), and the
transport physics fitted to the deployment (the ``calibrator`` argument, else the partitioner's
``calibrator`` attribute when it has one; :mod:`itp.learning.fitted_physics`), on which the job's simulator
rollouts and simulator gate run.

A finished job carries its offline-gate verdict (:func:`itp.learning.rollout.offline_gate`). A rejected
candidate is discarded and the reason recorded in the registry's history; an accepted one is published
into the registry (atomic, sha256-verified), loaded, and canaried (:class:`~itp.learning.rollout.
CanaryRollout`): promoted (and made current in the registry) when not worse with confidence, rolled back
when worse or on any model fault. :meth:`rollback` makes any registered version current at once.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np

from itp.calibration import DEFAULT_TRANSPORT_PARAMS, TransportParams
from itp.learning.fitted_physics import stream_efficiencies_of, transport_params_of
from itp.learning.registry import ModelRegistry, RegistryError
from itp.learning.rollout import CanaryConfig, CanaryRollout, GateConfig
from itp.learning.store import ExperienceStore
from itp.model_loading import LoadedModel, ModelLoadError
from itp.model_metadata import utc_timestamp
from itp.replay import PrioritizedReplay
from itp.ring import TransitionBatch
from itp.state import NUM_STREAMS

__all__ = ["LearnerConfig", "OnlineLearner", "retraining_status"]

_T = TypeVar("_T")

logger = logging.getLogger(__name__)

_STORE_NAME: Final = "experience.sqlite3"
#: The retraining process: nice itself before importing anything (no preexec_fn: it is unsafe in a
#: threaded parent), then run ``itp.training.finetune.main(JOB, RESULT)``.
_CHILD_BOOT: Final = (
    "import os, sys; os.nice(int(sys.argv[1])); "
    "import logging; logging.basicConfig(level=logging.INFO, format='%(asctime)s finetune %(message)s'); "
    "from itp.training.finetune import main; raise SystemExit(main(sys.argv[2:]))"
)


def retraining_status() -> tuple[bool, str]:
    """(available, reason): retraining needs torch (``pip install 'itp[train]'``). Checked without
    importing torch (only ``itp.training`` imports it)."""
    try:
        blocked = "torch" in sys.modules and sys.modules["torch"] is None
        found = not blocked and importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return False, "retraining is unavailable: torch is not installed (pip install 'itp[train]')"
    return True, ""


@dataclass(frozen=True)
class LearnerConfig:
    """Online-learning settings (times in seconds).

    Attributes:
        flush_interval_s: at most this long between store commits (the crash-loss bound), > 0.
        poll_interval_s: how often the learner thread drains the ring, > 0.
        replay_capacity: transitions in the replay buffer.
        reload_limit: newest stored rows loaded into the replay on start.
        store_max_rows: rows kept in the store (None: all).
        max_pending_rows: uncommitted rows kept in memory while the store cannot be written.
        min_experiences: new stored rows that trigger a retrain (>= 1).
        update_interval_s: time since the last retrain that triggers one (default 24 h).
        retrain: False disables retraining (experience is still collected).
        retrain_mode: ``"process"`` (separate niced process) or ``"thread"`` (niced thread).
        nice: niceness added to the retraining process/thread (0..19).
        finetune: overrides of :class:`itp.training.finetune.FinetuneJob` fields (steps, lr, ...).
        gate: the offline gate; canary: the canary.
        expire_interval_s: how often pending decisions are checked for expiry.
        seed: seed of the replay buffer and the retraining jobs (job k uses seed + k).
    """

    flush_interval_s: float = 1.0
    poll_interval_s: float = 0.05
    replay_capacity: int = 200_000
    reload_limit: int = 100_000
    store_max_rows: int | None = 10_000_000
    max_pending_rows: int = 1_000_000
    min_experiences: int = 10_000
    update_interval_s: float = 86_400.0
    retrain: bool = True
    retrain_mode: str = "process"
    nice: int = 10
    finetune: dict[str, Any] = field(default_factory=dict)
    gate: GateConfig = field(default_factory=GateConfig)
    canary: CanaryConfig = field(default_factory=CanaryConfig)
    expire_interval_s: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("flush_interval_s", "poll_interval_s", "update_interval_s", "expire_interval_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                raise ValueError(f"LearnerConfig.{name} must be a finite number of seconds > 0, got {v!r}")
        for name in ("replay_capacity", "min_experiences", "max_pending_rows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"LearnerConfig.{name} must be an int >= 1, got {v!r}")
        if self.reload_limit < 0:
            raise ValueError(f"LearnerConfig.reload_limit must be >= 0, got {self.reload_limit!r}")
        if self.retrain_mode not in ("process", "thread"):
            raise ValueError(
                f"LearnerConfig.retrain_mode must be 'process' or 'thread', got {self.retrain_mode!r}"
            )
        if not 0 <= self.nice <= 19:
            raise ValueError(f"LearnerConfig.nice must be in 0..19, got {self.nice!r}")


class _Job:
    """A running retrain (process or thread) and where its result will be."""

    def __init__(self, index: int, version: str, folder: Path, job_json: str) -> None:
        self.index = index
        self.version = version
        self.folder = folder
        self.job_path = folder / "job.json"
        self.result_path = folder / "result.json"
        self.job_path.write_text(job_json, "utf-8")
        self.proc: subprocess.Popen[bytes] | None = None
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()  # thread mode: polled by the job between gradient steps
        self.started_s = time.monotonic()

    def done(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is not None
        return self.thread is not None and not self.thread.is_alive()

    def result(self) -> dict[str, Any]:
        try:
            data = json.loads(self.result_path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            code = self.proc.returncode if self.proc is not None else None
            return {"error": f"no result from the retraining job (exit status {code}): {exc}"}
        return data if isinstance(data, dict) else {"error": "malformed result"}

    def cancel(self, timeout_s: float = 30.0) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout_s)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _niced_thread_main(job: _Job, nice: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)  # Linux: this thread only
    except (AttributeError, OSError) as exc:
        logger.debug("could not nice the retraining thread: %s", exc)
    from itp.training.finetune import main as finetune_main

    finetune_main([str(job.job_path), str(job.result_path)], job.stop.is_set)


class OnlineLearner:
    """Continuous learning for one :class:`itp.partitioner.TaskPartitioner` (see the module docstring).

    Args:
        partitioner: the live partitioner (the learner attaches itself to it).
        registry: a :class:`ModelRegistry` or its folder (default ``models``).
        store: an :class:`ExperienceStore`, its path, or None for ``<registry>/experience.sqlite3``.
        config: settings.
        start: start the learner thread now.
        calibrator: the deployment's fitted transport physics for retraining: a
            :class:`itp.calibration.TransportParams`, or anything with ``pooled_params`` (the property of
            an :class:`itp.calibration.TransportCalibrator`, or a method) giving one, read when each retrain
            starts. None: the partitioner's ``calibrator`` attribute if it has one, else the built-in
            physics.

    Raises:
        itp.learning.store.StoreError: the store is not usable.
        TypeError: ``calibrator`` is neither of these.
    """

    def __init__(
        self,
        partitioner: Any,
        *,
        registry: ModelRegistry | str | Path = "models",
        store: ExperienceStore | str | Path | None = None,
        config: LearnerConfig | None = None,
        start: bool = True,
        calibrator: Any = None,
    ) -> None:
        if calibrator is not None and not (
            isinstance(calibrator, TransportParams) or hasattr(calibrator, "pooled_params")
        ):
            raise TypeError(
                "calibrator must be None, a TransportParams or have pooled_params, got "
                f"{type(calibrator).__name__}"
            )
        self._calibrator = calibrator
        self._last_transport: dict[str, float] | None = None
        self._last_stream_efficiencies: tuple[float, ...] | None = None
        self.config = config or LearnerConfig()
        cfg = self.config
        self._p = partitioner
        self.registry = registry if isinstance(registry, ModelRegistry) else ModelRegistry(registry)
        self.registry.clean()
        if isinstance(store, ExperienceStore):
            self.store = store
        else:
            self.store = ExperienceStore(
                store or self.registry.root / _STORE_NAME, max_rows=cfg.store_max_rows
            )
        self.replay = PrioritizedReplay(cfg.replay_capacity, seed=cfg.seed)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        # experience
        self._pending: list[TransitionBatch] = []
        self._pending_rows = 0
        self._drained = 0
        self._committed = 0
        self._store_dropped = 0
        self._store_errors = 0
        self._flushes = 0
        self._last_commit_s = time.monotonic()
        self._flush_target = 0
        # retraining
        available, reason = retraining_status()
        if not cfg.retrain:
            available, reason = False, "retraining is disabled (LearnerConfig.retrain=False)"
        self._retrain_available = available
        self._retrain_reason = reason
        self._warned_unavailable = False
        self._force = False
        self._job: _Job | None = None
        self._jobs_started = 0
        self._update_count = 0
        self._last_update: str | None = None
        self._last_update_s = time.monotonic()
        self._rows_at_last_update = len(self.store)
        self._last_gate: dict[str, Any] | None = None
        self._last_error: str | None = None
        self._gate_rejections = 0
        # rollout
        self._canary: CanaryRollout | None = None
        self._canary_resumed = False
        self._rollout_lock = threading.RLock()  # canary steps vs manual rollback
        self._promotions = 0
        self._rollbacks = 0
        self._last_expire_s = time.monotonic()
        self._reload()
        self._restore_schedule()
        self._sync_model()
        partitioner.add_outcome_listener(self._on_outcome)
        partitioner.add_fault_listener(self._on_fault)
        partitioner.attach_learner(self)
        self._resume_canary()
        if not available:
            logger.warning("online learner: %s; experience is still collected and stored", reason)
            self._warned_unavailable = True
        if start:
            self.start()

    # ----------------------------------------------------------------------------- lifecycle
    def _reload(self) -> None:
        limit = min(self.config.reload_limit, self.config.replay_capacity)
        if limit <= 0 or len(self.store) == 0:
            return
        rows = self.store.recent(limit)
        if len(rows):
            self.replay.add_batch(rows.states, rows.actions, rows.rewards, rows.next_states, rows.dones)
        logger.info("online learner: reloaded %d stored transitions into the replay buffer", len(rows))

    def _restore_schedule(self) -> None:
        """Continue the retrain schedule across restarts from the registry history: the interval counts
        from the last retrain's start, and rows stored since then count towards ``min_experiences``; with
        no retrain ever, every stored row counts (a deployment that runs one short process per batch
        reaches ``min_experiences`` over several processes, not within one). A retrain that a close
        cancelled (``retrain_cancelled``) does not count: its rows were never trained on."""
        cancelled: set[Any] = set()
        last = None
        for e in reversed(self.registry.history()):
            if e.get("event") == "retrain_cancelled":
                cancelled.add(e.get("version"))
            elif e.get("event") == "retrain_started" and e.get("version") not in cancelled:
                last = e
                break
        if last is None:
            self._rows_at_last_update = 0
            return
        try:
            started = datetime.fromisoformat(str(last["time"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            return
        elapsed_s = max(0.0, (datetime.now(timezone.utc) - started).total_seconds())
        self._last_update_s = time.monotonic() - elapsed_s
        upto = last.get("upto_id")
        if isinstance(upto, int):
            self._rows_at_last_update = len(self.store) - max(0, self.store.last_id - upto)

    def _sync_model(self) -> None:
        """Serve the registry's current version; or seed an empty registry with the partitioner's model."""
        current = self.registry.current_version()
        if current is not None:
            loaded = self.registry.load_current()
            if loaded is not None:
                self._p.set_model(loaded)
            return
        model = self._p.model
        if model is None:
            return
        version = (
            model.version if model.version not in self.registry.versions() else self.registry.next_version()
        )
        try:
            version = self.registry.publish(model.path, version, note="initial model of the partitioner")
            self._p.set_model(self.registry.set_current(version, reason="initial model"))
        except (RegistryError, ModelLoadError) as exc:
            logger.error("online learner: could not register the partitioner's model: %s", exc)

    def _resume_canary(self) -> None:
        """Canary again the candidate whose canary the previous learner's close interrupted.

        Only when the registry's last rollout event is that interruption (``canary_aborted`` with
        ``resumable``), the version is still registered and not already current; the candidate is loaded
        and verified again. Anything else (a later promotion, rollback or manual change) wins."""
        rollout_events = ("canary_started", "canary_stage", "canary_aborted", "canary_promoted",
                          "canary_rolled_back", "promotion_refused", "rollback", "current")
        last = next((e for e in reversed(self.registry.history()) if e.get("event") in rollout_events), None)
        if last is None or last.get("event") != "canary_aborted" or not last.get("resumable"):
            return
        version = str(last.get("version"))
        if version not in self.registry.versions() or version == self.registry.current_version():
            return
        try:
            candidate = self.registry.load(version)
        except (RegistryError, ModelLoadError) as exc:
            logger.error("online learner: interrupted canary of %s not resumed: %s", version, exc)
            self.registry.record("canary_not_resumed", version=version, error=str(exc))
            return
        evidence = last.get("evidence")
        with self._rollout_lock:
            try:
                canary = self.start_canary(candidate, resumed=True, evidence=evidence)
            except ValueError as exc:  # counted under other settings, or damaged: start over
                logger.warning("online learner: the interrupted canary of %s starts over: %s", version, exc)
                self.registry.record("canary_evidence_dropped", version=version, error=str(exc))
                canary = self.start_canary(candidate, resumed=True)
        logger.info("online learner: resumed the interrupted canary of %s (%d candidate outcomes carried)",
                    version, canary.candidate_outcomes,
                    extra={"event": "canary_resumed", "model_version": version})

    def wait_for_retrain(self, timeout_s: float, *, start_due: bool = False) -> bool:
        """Wait (bounded) until no retrain is running and a finished one's verdict has been acted on
        (gate recorded, candidate canaried or discarded). Returns True when none is running any more.
        For a process that is about to close and would otherwise cancel the retrain.

        ``start_due``: a retrain that is due but not started yet (the last outcomes just reached
        ``min_experiences``; call :meth:`flush` first so they are counted) is started by the learner
        thread and waited for as well."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        if start_due and self._retrain_available:
            while (
                self._job is None
                and self._canary is None
                and self._due() is not None
                and self._thread is not None
                and self._thread.is_alive()
                and time.monotonic() < deadline
            ):
                self._wake.set()  # the learner thread starts it on its next iteration
                time.sleep(0.02)
        while self._job is not None:
            if time.monotonic() >= deadline or self._thread is None or not self._thread.is_alive():
                return self._job is None
            self._wake.set()
            time.sleep(0.05)
        return True

    def start(self) -> None:
        """Start the learner thread (idempotent)."""
        if self._thread is not None:
            return
        if self._closed:
            raise RuntimeError("the learner is closed")
        self._thread = threading.Thread(target=self._run, name="itp-learner", daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Block until every transition reported before this call is durably stored.

        Returns False if that did not happen within ``timeout_s`` (store errors; see metrics).
        """
        ring = self._p.ring
        with self._lock:
            # Rows this learner has drained, plus every row accepted by the ring and not drained yet.
            target = self._drained + int(ring.pushed) - int(ring.drained)
        deadline = time.monotonic() + timeout_s
        if self._thread is None:  # not started: do the work on this thread
            while self._committed < target and time.monotonic() < deadline:
                self._drain()
                self._commit()
            return self._committed >= target
        with self._cond:
            self._flush_target = max(self._flush_target, target)
            self._wake.set()
            while self._committed < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
                self._wake.set()
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush, stop the learner thread, cancel a running retrain, close the store (idempotent).

        Outcomes reported after close stay in the ring (they are not stored)."""
        if self._closed:
            return
        self.flush(timeout_s)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._rollout_lock:  # after the thread stopped: it cannot finish this canary as a rollback
            canary = self._canary
            if canary is not None:
                evidence = canary.evidence()
                canary.abort("the online learner was closed")
                # resumable: the next learner on this registry continues this canary from its evidence
                # (its stage and both arms' counts; a deployment that runs one process per batch must not
                # lose gated candidates, nor the outcomes that judge them). The counts grow toward a
                # verdict, bounded by max_outcomes_per_stage; a resumed canary that counted nothing in
                # its process is not resumed again, so a canary without traffic cannot stall retraining.
                self.registry.record(
                    "canary_aborted", version=canary.candidate.version, reason="learner closed",
                    resumable=not self._canary_resumed or canary.candidate_outcomes_counted > 0,
                    evidence=evidence,
                )
                self._canary = None
        self._closed = True
        if self._job is not None:
            self._job.cancel(timeout_s)
            # Its rows were never trained on: the next learner counts them again (_restore_schedule).
            self.registry.record("retrain_cancelled", version=self._job.version, reason="learner closed")
            self._job = None
        self.store.close()

    def __enter__(self) -> OnlineLearner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ requests
    def request_update(self) -> None:
        """Retrain as soon as possible (in the background; returns at once)."""
        if not self._retrain_available:
            logger.warning("force_model_update ignored: %s", self._retrain_reason)
            return
        self._force = True
        self._wake.set()

    def rollback(self, version: str, *, reason: str = "manual rollback") -> LoadedModel:
        """Make registered ``version`` current now (ends any canary); returns the loaded model.

        Raises:
            RegistryError: unknown version. ModelLoadError: its files do not verify (nothing changes).
        """
        loaded = self.registry.set_current(version, reason=reason)
        with self._rollout_lock:
            canary = self._canary
            if canary is not None:
                canary.abort(f"manual rollback to {version}")
                self._canary = None
            self._p.set_model(loaded)
        with self._lock:
            self._rollbacks += 1
        self.registry.record("rollback", version=version, reason=reason)
        return loaded

    # -------------------------------------------------------------------------------- thread
    def _run(self) -> None:
        cfg = self.config
        while True:
            stopping = self._stop.is_set()
            try:
                self._drain()
                now = time.monotonic()
                if self._pending_rows and (
                    stopping
                    or self._flush_target > self._committed
                    or now - self._last_commit_s >= cfg.flush_interval_s
                ):
                    self._commit()
                if now - self._last_expire_s >= cfg.expire_interval_s:
                    self._p.expire_decisions()
                    self._last_expire_s = now
                if not stopping:
                    self._training_step()
                    self._canary_step()
            except Exception:  # the learner must survive anything; every failure is logged
                logger.exception("online learner iteration failed")
            if stopping and not self._pending_rows:
                return
            self._wake.wait(cfg.poll_interval_s)
            self._wake.clear()

    def _drain(self) -> None:
        ring = self._p.ring
        while True:
            with self._lock:  # drained-by-ring and drained-by-us move together (see flush)
                batch = ring.drain(8192)
                n = len(batch)
                if n == 0:
                    return
                self._pending.append(batch)
                self._pending_rows += n
                self._drained += n
                over = self._pending_rows - self.config.max_pending_rows
                while over > 0 and self._pending:
                    oldest = self._pending[0]
                    if len(oldest) <= over:
                        self._pending.pop(0)
                        self._pending_rows -= len(oldest)
                        self._store_dropped += len(oldest)
                        self._committed += len(oldest)  # accounted for: dropped, counted
                        over -= len(oldest)
                    else:
                        break
            self.replay.add_batch(batch.states, batch.actions, batch.rewards, batch.next_states, batch.dones)
            if n < 8192:
                return

    def _commit(self) -> None:
        with self._lock:
            batches, rows = self._pending, self._pending_rows
        if not rows:
            self._last_commit_s = time.monotonic()
            return
        merged = _concat(batches)
        try:
            self.store.append(merged)
        except Exception as exc:
            with self._lock:
                self._store_errors += 1
                self._last_error = f"store write failed: {exc}"
            logger.error("experience store write failed (%d rows kept for retry): %s", rows, exc)
            self._last_commit_s = time.monotonic()
            return
        with self._cond:
            del self._pending[: len(batches)]
            self._pending_rows -= rows
            self._committed += rows
            self._flushes += 1
            self._cond.notify_all()
        self._last_commit_s = time.monotonic()

    # ---------------------------------------------------------------------------- retraining
    def _due(self) -> str | None:
        if self._force:
            return "forced"
        if len(self.store) - self._rows_at_last_update >= self.config.min_experiences:
            return "min_experiences"
        if time.monotonic() - self._last_update_s >= self.config.update_interval_s:
            return "interval"
        return None

    def _training_step(self) -> None:
        job = self._job
        if job is not None:
            if job.done():
                try:
                    self._finish_job(job)
                finally:
                    # Cleared after the verdict is acted on: whoever sees no job also sees its outcome.
                    self._job = None
            return
        if self._canary is not None or not self._retrain_available:
            return
        why = self._due()
        if why is None:
            return
        self._force = False
        self._start_job(why)

    def _start_job(self, why: str) -> None:
        from itp.learning.registry import parse_version

        cfg = self.config
        index = self._jobs_started
        self._jobs_started += 1
        current = self._p.model
        version = self.registry.next_version()
        parse_version(version)
        # Every path the job holds is absolute: the retraining process runs in the job's own folder
        # (``_spawn_job``), where a path relative to this process's working directory (a registry or a
        # store opened as "dep/...", as ``itp send --learn dep`` does) names nothing.
        folder = (self.registry.staging_dir() / f"job-{os.getpid()}-{index}").absolute()
        folder.mkdir(parents=True, exist_ok=True)
        gate = {
            k: v for k, v in dataclasses.asdict(cfg.gate).items() if k not in ("sim_config", "trace_files")
        }
        if gate.get("target_epsilon") is None:  # judge the policies as this deployment runs them
            gate["target_epsilon"] = float(getattr(self._p, "epsilon", 0.0))
        if gate.get("target_top_k") is None:  # and with the deployment's exploration set
            gate["target_top_k"] = int(getattr(self._p, "explore_top_k", 15))
        if gate.get("target_explore_max_bytes") is None:  # and its exploration size limit
            gate["target_explore_max_bytes"] = getattr(self._p, "explore_max_bytes", None)
        guarded_exploration = getattr(self._p, "guard_margin", None) is not None and bool(
            getattr(self._p, "guard_exploration", False)
        )
        if gate.get("target_guard") is None:
            # Scored as the guard lets them act where exploration is guarded: the logs then hold no
            # refused split, and an unguarded score would rest on the reward model's extrapolation. With
            # unguarded exploration the refused splits are logged, and the unguarded score stays: it also
            # counts against a candidate the splits it prefers and today's verdicts happen to refuse
            # (measured: docs/lifecycle.md).
            gate["target_guard"] = guarded_exploration
        if gate.get("target_guard_exploration") is None:
            gate["target_guard_exploration"] = guarded_exploration
        transport = self._fitted_transport()
        self._last_transport = transport
        efficiencies = self._fitted_stream_efficiencies() if transport is not None else None
        self._last_stream_efficiencies = efficiencies
        sender = self._sender_transport_params()
        job_fields: dict[str, Any] = {
            "output": str(folder / f"dqn_v{version}.onnx"),
            "version": version,
            "base_model": str(Path(current.path).absolute()) if current is not None else None,
            "store": str(Path(self.store.path).absolute()),
            "upto_id": self.store.last_id,
            "seed": cfg.seed + index,
            "gate": gate,
            "trace_files": [str(Path(f).absolute()) for f in cfg.gate.trace_files],
            "transport_params": transport,
            "stream_efficiencies": list(efficiencies) if efficiencies is not None else None,
            "sender_transport_params": sender,
            **cfg.finetune,
        }
        job = _Job(index, version, folder, json.dumps(job_fields, indent=2))
        rows_now = len(self.store)
        try:
            self._spawn_job(job)
            self._job = job
        finally:
            # The schedule counts this retrain only once the job is visible (wait_for_retrain relies on
            # "no job and not due" meaning none is coming); counted even when the spawn failed, so a
            # failing spawn is not retried on every poll.
            self._rows_at_last_update = rows_now
            self._last_update_s = time.monotonic()
        self.registry.record(
            "retrain_started",
            version=version,
            trigger=why,
            base=current.version if current else None,
            upto_id=self.store.last_id,
            transport_params=transport,
            stream_efficiencies=list(efficiencies) if efficiencies is not None else None,
            sender_transport_params=sender,
            target_epsilon=gate["target_epsilon"],
            target_top_k=gate["target_top_k"],
            target_guard=gate["target_guard"],
            target_guard_exploration=gate["target_guard_exploration"],
            target_explore_max_bytes=gate["target_explore_max_bytes"],
        )
        logger.info(
            "online learner: retraining started (%s), candidate version %s", why, version,
            extra={"event": "retrain_started", "model_version": version, "trigger": why},
        )

    def _spawn_job(self, job: _Job) -> None:
        """Start the retrain in its niced process (or thread, ``retrain_mode="thread"``)."""
        cfg = self.config
        if cfg.retrain_mode == "process":
            log = open(job.folder / "log.txt", "wb")  # noqa: SIM115 - owned by the child for its lifetime
            nice = cfg.nice
            job.proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD_BOOT, str(nice), str(job.job_path), str(job.result_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own folder as cwd: a source checkout in the caller's cwd must not shadow the
                # installed package (python -c puts cwd first on sys.path).
                cwd=job.folder,
                env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
            )
            log.close()
        else:
            job.thread = threading.Thread(
                target=_niced_thread_main, args=(job, cfg.nice), name=f"itp-retrain-{job.index}", daemon=True
            )
            job.thread.start()

    def _read_calibrator(self, read: Callable[[Any], _T], unusable: str) -> _T | None:
        """``read`` of the deployment's calibrator (``calibrator=``, else the partitioner's own). A
        calibrator that fails is logged and ignored: retraining on the built-in physics beats not
        retraining."""
        source = self._calibrator if self._calibrator is not None else getattr(self._p, "calibrator", None)
        try:
            return read(source)
        except Exception as exc:  # a third-party calibrator must not stop the learner
            logger.warning("online learner: %s: %s", unusable, exc)
            return None

    def _fitted_transport(self) -> dict[str, float] | None:
        """The deployment's fitted transport parameters now (None: built-in physics)."""
        params = self._read_calibrator(transport_params_of, "calibrator unusable, built-in physics used")
        return params.as_dict() if params is not None else None

    def _sender_transport_params(self) -> list[dict[str, float]] | None:
        """The transport parameters the partitioner splits and predicts with now, one per stream, for
        the simulator's sender (``FinetuneJob.sender_transport_params``); None when the partitioner does
        not expose them, they are unreadable, or they are the defaults (the simulator's own sender).

        Why: the rollouts and the simulator gate play the models; with the built-in sender they would
        split each task as a fresh connection per chunk and predict its time so, while the deployment
        splits and predicts with its calibrated parameters (the reward's latency term compares the time
        taken with that prediction)."""
        read = getattr(self._p, "transport_params", None)
        if not callable(read):
            return None
        try:
            params = tuple(read())
        except Exception as exc:  # a duck-typed partitioner must not stop the learner
            logger.warning("online learner: partitioner transport parameters unreadable: %s", exc)
            return None
        if len(params) != NUM_STREAMS or not all(isinstance(x, TransportParams) for x in params):
            return None
        if all(x == DEFAULT_TRANSPORT_PARAMS for x in params):
            return None
        return [x.as_dict() for x in params]

    def _fitted_stream_efficiencies(self) -> tuple[float, ...] | None:
        """Each stream's fitted efficiency when one stands apart (None: streams kept alike, or the
        calibrator's stream count is not the simulator's)."""
        eff = self._read_calibrator(
            stream_efficiencies_of, "per-stream calibration unusable, streams kept alike"
        )
        return eff if eff is not None and len(eff) == NUM_STREAMS else None

    def _finish_job(self, job: _Job) -> None:
        try:
            self._handle_result(job, job.result())
        finally:
            # Counted last, so whoever sees the count also sees the verdict in the history.
            self._last_update = utc_timestamp()
            self._update_count += 1

    def _handle_result(self, job: _Job, result: dict[str, Any]) -> None:
        if "error" in result:
            self._last_error = str(result["error"])
            self.registry.record("retrain_failed", version=job.version, error=result["error"])
            logger.error(
                "online learner: retraining failed: %s", result["error"],
                extra={"event": "retrain_failed", "model_version": job.version},
            )
            _remove_tree(job.folder)
            return
        gate = result.get("gate", {})
        self._last_gate = gate
        if not gate.get("passed", False):
            self._gate_rejections += 1
            self.registry.record("gate_rejected", version=job.version, reason=gate.get("reason"), gate=gate)
            logger.warning(
                "online learner: candidate %s rejected by the offline gate: %s",
                job.version,
                gate.get("reason"),
                extra={"event": "gate_rejected", "model_version": job.version},
            )
            _remove_tree(job.folder)
            return
        try:
            version = self.registry.publish(Path(result["output"]), job.version, note="retrained candidate")
            candidate = self.registry.load(version)
        except (RegistryError, ModelLoadError, OSError) as exc:
            self._last_error = f"candidate not published: {exc}"
            self.registry.record("publish_failed", version=job.version, error=str(exc))
            logger.error(
                "online learner: candidate %s not published: %s", job.version, exc,
                extra={"event": "publish_failed", "model_version": job.version},
            )
            _remove_tree(job.folder)
            return
        _remove_tree(job.folder)
        self.registry.record("gate_passed", version=version, reason=gate.get("reason"), gate=gate)
        logger.info(
            "online learner: candidate %s passed the offline gate: %s", version, gate.get("reason"),
            extra={"event": "gate_passed", "model_version": version},
        )
        self.start_canary(candidate)

    def start_canary(
        self, candidate: LoadedModel, *, resumed: bool = False, evidence: Mapping[str, Any] | None = None
    ) -> CanaryRollout:
        """Canary a verified candidate now (also used by tests and operators with a hand-made model);
        ``resumed``: it continues a canary an earlier learner's close interrupted; ``evidence``: what that
        canary had gathered (:meth:`CanaryRollout.evidence`), to continue from.

        Raises:
            ValueError: ``evidence`` does not fit this candidate and config (nothing started).
        """
        canary = CanaryRollout(self._p, candidate, self.config.canary, evidence=evidence)
        self._canary = canary
        self._canary_resumed = resumed
        self.registry.record(
            "canary_started", version=candidate.version, share=canary.share, resumed=resumed,
            carried_outcomes=canary.candidate_outcomes if evidence is not None else 0,
        )
        return canary

    def step_canary(self) -> str | None:
        """Act on a running canary's statistics now, on the calling thread: advance, promote or roll back.

        The learner thread does this every ``poll_interval_s``; a caller that reports outcomes from one
        thread and steps after each report makes every verdict land on the same outcome, whatever the
        threads' timing (the adaptation benchmark does, for runs that reproduce). Thread-safe with the
        learner thread (one lock); O(1). Returns the canary's state afterwards (``"running"``,
        ``"promoted"``, ``"rolled_back"``), or None when no canary runs.
        """
        with self._rollout_lock:
            canary = self._canary
            if canary is None:
                return None
            self._canary_step_locked()
            return canary.state

    def _canary_step(self) -> None:
        with self._rollout_lock:
            self._canary_step_locked()

    def _canary_step_locked(self) -> None:
        canary = self._canary
        if canary is None:
            return
        before = canary.share
        state = canary.step()
        if state == "running":
            if canary.share != before:
                self.registry.record("canary_stage", version=canary.candidate.version, share=canary.share)
            return
        try:
            self._finish_canary(canary, state)
        finally:
            # Cleared last: whoever sees no canary also sees its verdict in the history and counters.
            self._canary = None

    def _finish_canary(self, canary: CanaryRollout, state: str) -> None:
        version = canary.candidate.version
        if state == "promoted":
            try:
                self.registry.set_current(version, reason=f"canary passed: {canary.reason}")
            except (RegistryError, ModelLoadError) as exc:
                # The registry refuses it now (damaged on disk): serve the registry's current again.
                logger.error("online learner: promoted %s cannot be made current: %s", version, exc)
                self._p.set_model(self.registry.load_current())
                self._rollbacks += 1
                self.registry.record("promotion_refused", version=version, error=str(exc))
                return
            self._promotions += 1
            self.registry.record(
                "canary_promoted", version=version, reason=canary.reason, stages=canary.stages_passed
            )
        else:
            self._rollbacks += 1
            self.registry.record(
                "canary_rolled_back", version=version, reason=canary.reason,
                stats=canary.final_stats if canary.final_stats is not None else canary.stats(),
            )

    def _on_outcome(self, record: Any) -> None:
        canary = self._canary
        if canary is not None:
            canary.on_outcome(record)

    def _on_fault(self, arm: str, cause: str, version: str | None) -> None:
        canary = self._canary
        if canary is not None:
            canary.on_fault(arm, cause, version)
            self._wake.set()

    # ------------------------------------------------------------------------------- metrics
    @property
    def is_training(self) -> bool:
        """A retrain is running."""
        return self._job is not None

    @property
    def update_count(self) -> int:
        """Retrains completed (whatever their verdict)."""
        return self._update_count

    @property
    def canary(self) -> CanaryRollout | None:
        """The running canary, or None."""
        return self._canary

    def metrics(self) -> dict[str, Any]:
        """The learner's numbers (merged into ``TaskPartitioner.get_metrics``)."""
        cfg = self.config
        canary = self._canary
        with self._lock:
            pending = self._pending_rows
            drained, committed = self._drained, self._committed
            store_dropped, store_errors, flushes = self._store_dropped, self._store_errors, self._flushes
        if self._retrain_available and self._job is None and canary is None:
            new = len(self.store) - self._rows_at_last_update
            if self._force or new >= cfg.min_experiences:
                until: float | None = 0.0
            else:
                until = max(0.0, cfg.update_interval_s - (time.monotonic() - self._last_update_s))
        else:
            until = None
        arms = canary.stats()["arms"] if canary is not None else {}
        return {
            "experience_count": len(self.store),
            "buffer_size": len(self.replay),
            "drained_transitions": drained,
            "committed_transitions": committed,
            "uncommitted_transitions": pending,
            "store_dropped": store_dropped,
            "store_errors": store_errors,
            "flushes": flushes,
            "is_training": self.is_training,
            "update_count": self._update_count,
            "last_update": self._last_update,
            "time_until_update": until,
            "retraining_available": self._retrain_available,
            "retraining_unavailable_reason": self._retrain_reason or None,
            "candidate_version": canary.candidate.version if canary is not None else None,
            "canary_share": canary.share if canary is not None else 0.0,
            "canary_arms": arms,
            "promotions": self._promotions,
            "rollbacks": self._rollbacks,
            "gate_rejections": self._gate_rejections,
            "last_gate": self._last_gate,
            "fitted_transport_params": self._last_transport,
            "fitted_stream_efficiencies": (
                list(self._last_stream_efficiencies) if self._last_stream_efficiencies is not None else None
            ),
            "last_error": self._last_error,
            "registry_current_version": self.registry.current_version(),
        }


def _concat(batches: list[TransitionBatch]) -> TransitionBatch:
    """One batch; propensities kept where known (NaN for batches without them, None if none has them),
    guard verdicts likewise (-1 for batches without them)."""
    if len(batches) == 1:
        return batches[0]
    propensities = _optional_column(batches, "propensities", np.nan, np.float32)
    guards = _optional_column(batches, "guard_verdicts", -1, np.int32)
    return TransitionBatch(
        states=np.concatenate([b.states for b in batches]),
        actions=np.concatenate([b.actions for b in batches]),
        rewards=np.concatenate([b.rewards for b in batches]),
        next_states=np.concatenate([b.next_states for b in batches]),
        dones=np.concatenate([b.dones for b in batches]),
        propensities=propensities,
        guard_verdicts=guards,
    )


def _optional_column(batches: list[TransitionBatch], name: str, missing: float, dtype: Any) -> Any:
    """The optional column ``name`` of ``batches`` concatenated, ``missing`` for the batches without it;
    None when no batch has it."""
    columns = [getattr(b, name) for b in batches]
    if all(c is None for c in columns):
        return None
    parts = [
        c if c is not None else np.full(len(b), missing, dtype) for b, c in zip(batches, columns, strict=True)
    ]
    return np.concatenate(parts).astype(dtype)


def _remove_tree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
