"""Online learning and the model lifecycle: durable experience, retraining, gated rollout, registry.

* :class:`~itp.learning.learner.OnlineLearner` — attaches to a ``TaskPartitioner``; drains its experience
  ring into the replay buffer and the durable store, retrains in the background, gates and canaries
  candidates, rolls back.
* :class:`~itp.learning.store.ExperienceStore` — SQLite (WAL) store of every reported transition.
* :class:`~itp.learning.registry.ModelRegistry` — versioned models, current pointer, backups, history.
* :mod:`itp.learning.rollout` — offline gate (off-policy on the deployment's held-back logs, simulator
  fallback) and canary statistics.
* :mod:`itp.learning.offpolicy` — SNIPS and doubly robust estimators, paired comparison with an interval.
* :mod:`itp.learning.fitted_physics` — calibrated transport parameters -> the simulator's physics.
* :mod:`itp.learning.prometheus` — optional Prometheus exposition (``prometheus_client``).

See ``docs/lifecycle.md``.
"""

from __future__ import annotations

from itp.learning.learner import LearnerConfig, OnlineLearner, retraining_status
from itp.learning.registry import ModelRegistry, RegistryError, VersionInfo
from itp.learning.rollout import CanaryConfig, CanaryRollout, GateConfig, GateResult, offline_gate
from itp.learning.store import ExperienceStore, StoreError

__all__ = [
    "CanaryConfig",
    "CanaryRollout",
    "ExperienceStore",
    "GateConfig",
    "GateResult",
    "LearnerConfig",
    "ModelRegistry",
    "OnlineLearner",
    "RegistryError",
    "StoreError",
    "VersionInfo",
    "offline_gate",
    "retraining_status",
]
