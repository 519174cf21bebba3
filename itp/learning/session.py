"""A learning deployment in one object: the exploring, self-calibrating partitioner and its online learner,
kept in one folder across process restarts.

:class:`LearningSession` is what ``itp send --learn DIR`` and the testbed's learning runs use; a library
user with their own transport can use it the same way::

    with LearningSession("itp-learning") as s:          # the folder persists between runs
        d = s.partitioner.partition_task(task)
        ...                                             # move the bytes, report_outcome(..., chunks=...)

What persists in the folder, and why each part is needed for a deployment that runs one process per batch
of files (a new ``itp send`` each time):

* the model registry (``ModelRegistry``): the version that serves, the candidates, the history; a new
  session serves the registry's current version, not the bundled model it started from;
* the experience store (``experience.sqlite3``): every reported transition with its behaviour propensity;
  the newest rows are reloaded into the replay buffer and count towards the next retrain;
* the transport calibration (``calibration.json``, :meth:`itp.calibration.TransportCalibrator.save`): the
  per-chunk observations the split's physics are fitted from, aged by the time between sessions, so the
  first decisions of a session already use the fitted set-up, window and efficiency.

Retraining needs torch (the ``train`` extra); without it experience is still collected and stored
(``OnlineLearner`` reports why). ``close(wait_for_retrain_s=...)`` lets a running retrain, or one the last
outcomes made due, finish and its gate verdict be recorded; one still running at the close is cancelled
(its rows stay in the store and count towards the next retrain, which then starts in the next session). A
candidate whose canary the close interrupts is canaried again by the next session, continuing from the
stage and the counts the interrupted canary had gathered (``OnlineLearner`` resumes it from the
registry's history), so a canary needs the outcomes of a verdict over all sessions, not in one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Final

from itp.learning.learner import LearnerConfig, OnlineLearner
from itp.learning.rollout import CanaryConfig, GateConfig

__all__ = ["CALIBRATION_FILE", "LearningSession", "learning_config"]

logger = logging.getLogger(__name__)

CALIBRATION_FILE: Final = "calibration.json"
"""The transport calibrator's state inside a session folder."""


def learning_config(retrain_every: int = 1000, *, seed: int = 0) -> LearnerConfig:
    """The learner settings of a session, those the adaptation benchmark measured (``itp.sim.adapt``):
    a retrain every ``retrain_every`` stored outcomes, small fine-tunes (400 steps, 4 simulator episodes,
    the newest 10 000 logged rows, 30% of them held back for the off-policy gate; a retrain takes
    seconds to a minute on 2 cores), a 4-episode simulator gate, and a canary sized for a deployment that
    reports hundreds, not millions, of outcomes (50% then 100% of the traffic, 100 to 1 000 outcomes per
    stage).

    Raises:
        ValueError: ``retrain_every`` is not an int >= 1.
    """
    if isinstance(retrain_every, bool) or not isinstance(retrain_every, int) or retrain_every < 1:
        raise ValueError(f"retrain_every must be an int >= 1, got {retrain_every!r}")
    return LearnerConfig(
        min_experiences=retrain_every,
        finetune={"steps": 400, "sim_episodes": 4, "logged_rows": 10_000, "holdout_fraction": 0.3},
        gate=GateConfig(episodes=4, seed=seed + 12345),
        canary=CanaryConfig(shares=(0.5, 1.0), min_outcomes_per_stage=100, max_outcomes_per_stage=1000),
        seed=seed,
    )


class LearningSession:
    """The partitioner and its learner over one persistent folder (module docstring).

    Args:
        folder: the session folder (created if missing): registry, store, calibration.
        model_path: the model to start from when the registry is empty (default: the bundled model);
            once the registry has a current version, that version serves.
        epsilon: exploration rate of live decisions, in [0, 1] (default 0.1).
        explore_top_k: an exploration draw picks among the k best actions by Q, 1..15 (default 3: far
            cheaper than uniform exploration, and the alternatives a candidate moves to get logged).
        config: learner settings (default :func:`learning_config`).
        guard_margin: the partitioner's decision guard (``TaskPartitioner(guard_margin=)``; default 0.05:
            a model choice the calibrated transport model predicts more than 5% slower than the heuristic's
            is replaced by it; None: off). The adaptation benchmark measured it (README).
        guard_exploration: exploration draws only among the actions the guard lets through
            (``TaskPartitioner(guard_exploration=)``; default False; the learner's gate then scores both
            models as the guard lets them act). Measured in the adaptation benchmark (README): no
            measurable change of goodput (six seeds).
        explore_max_bytes: tasks larger than this many bytes are decided greedily, never explored
            (``TaskPartitioner(explore_max_bytes=)``; default None: any task may explore; the learner's
            gate scores both models with the same limit).
        model_failures: the calibrator also fits each stream's failure model from the per-chunk retries,
            and the guard and the heuristic score splits with it (``TaskPartitioner(model_failures=)``;
            default False).
        seed: the partitioner's exploration seed, an int >= 0 (None: drawn from the OS, so that two
            processes of one deployment do not repeat each other's exploration draws).

    Raises:
        ValueError / TypeError: a bad argument (named); nothing is created then.
        itp.learning.store.StoreError: the folder's store is not usable.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        model_path: str | os.PathLike[str] | None = None,
        epsilon: float = 0.1,
        explore_top_k: int = 3,
        config: LearnerConfig | None = None,
        guard_margin: float | None = 0.05,
        guard_exploration: bool = False,
        explore_max_bytes: int | None = None,
        model_failures: bool = False,
        seed: int | None = None,
    ) -> None:
        from itp.partitioner import DEFAULT_MODEL, TaskPartitioner

        if config is not None and not isinstance(config, LearnerConfig):
            raise TypeError(f"config must be a LearnerConfig, got {type(config).__name__}")
        self.folder = Path(folder)
        model: Any = DEFAULT_MODEL if model_path is None else Path(model_path)
        # The partitioner validates epsilon, explore_top_k and the guard before anything is written.
        self.partitioner = TaskPartitioner(
            model, epsilon=epsilon, explore_top_k=explore_top_k, calibrate_transport=True,
            guard_margin=guard_margin, guard_exploration=guard_exploration,
            explore_max_bytes=explore_max_bytes, model_failures=model_failures,
            seed=int.from_bytes(os.urandom(4), "little") >> 1 if seed is None else seed,
        )
        if self.partitioner.model is None:
            self.partitioner.close()
            raise ValueError(f"model_path: the starting model {model_path or 'bundled'} did not load")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.restored_observations = self._restore_calibration()
        try:
            self.learner = OnlineLearner(
                self.partitioner, registry=self.folder, config=config or learning_config()
            )
        except BaseException:
            self.partitioner.close()
            raise
        self._closed = False

    @property
    def calibration_path(self) -> Path:
        """Where the transport calibrator's observations are kept."""
        return self.folder / CALIBRATION_FILE

    def _restore_calibration(self) -> int:
        """Load the saved observations and fit them once; a corrupt file is logged and set aside."""
        path = self.calibration_path
        calibrator = self.partitioner.calibrator
        if calibrator is None or not path.exists():
            return 0
        try:
            n = calibrator.load(path)
        except (OSError, ValueError) as exc:
            aside = path.with_name(f"{path.name}.corrupt")
            logger.warning("learning session: %s; moved to %s, calibration starts afresh", exc, aside)
            os.replace(path, aside)
            return 0
        if n:
            self.partitioner.recalibrate()
        return n

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the serving version, experience, retrains and verdicts, the fitted transport."""
        m = self.learner.metrics()
        calibrator = self.partitioner.calibrator
        keys = ("registry_current_version", "experience_count", "update_count", "gate_rejections",
                "promotions", "rollbacks", "retraining_available", "retraining_unavailable_reason",
                "last_error")
        out = {k: m[k] for k in keys}
        out["folder"] = str(self.folder)
        out["restored_calibration_observations"] = self.restored_observations
        out["calibration"] = calibrator.summary() if calibrator is not None else None
        out["guard_margin"] = self.partitioner.guard_margin
        out["guard_exploration"] = self.partitioner.guard_exploration
        out["explore_max_bytes"] = self.partitioner.explore_max_bytes
        out["model_failures"] = self.partitioner.model_failures
        out["guard_overrides"] = self.partitioner.get_metrics().guard_overrides
        return out

    def close(self, timeout_s: float = 30.0, *, wait_for_retrain_s: float = 0.0) -> dict[str, Any]:
        """Flush and close the learner, save the calibration, stop the partitioner's calibration thread.

        Args:
            timeout_s: bound of the flush and of the learner's shutdown, seconds.
            wait_for_retrain_s: first let a running or due retrain finish and its verdict be acted on,
                for at most this long (seconds; 0: cancel a running one).

        Returns:
            :meth:`summary` taken after the flush, with ``retrain_cancelled`` (a second call returns
            ``{}``).
        """
        if self._closed:
            return {}
        self._closed = True
        try:
            self.learner.flush(timeout_s)
            if wait_for_retrain_s > 0:
                # Including one the last outcomes just made due: a session of exactly retrain_every
                # outcomes would otherwise start it during the close and cancel it at once.
                self.learner.wait_for_retrain(wait_for_retrain_s, start_due=True)
            summary = self.summary()
            summary["retrain_cancelled"] = self.learner.is_training
            self.learner.close(timeout_s)
            calibrator = self.partitioner.calibrator
            if calibrator is not None:
                try:
                    calibrator.save(self.calibration_path)
                except OSError as exc:  # the learned experience is in the store; only the fit is lost
                    logger.error("learning session: could not save the calibration: %s", exc)
            return summary
        finally:
            self.partitioner.close()

    def __enter__(self) -> LearningSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
