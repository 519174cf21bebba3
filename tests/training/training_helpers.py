"""Shared pieces of the training tests: a tiny, fully pinned configuration, a small trace folder and
a seeded uniform-random policy (the "random" reference the issue's improvement test asks for)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from itp.actions import NUM_ACTIONS
from itp.sim.traces import shipped_traces_dir
from itp.training.config import TrainConfig

#: Every field that shapes learning, pinned, so that tuning TrainConfig's defaults cannot change what
#: these tests run. 64 tasks per episode (the simulator's default), so N episodes = 64 N steps.
PINNED: dict[str, Any] = {
    "batch_size": 64,
    "lr": 3e-3,
    "gamma": 0.2,
    "buffer_capacity": 10_000,
    "prioritized": True,
    "per_alpha": 0.6,
    "per_beta_start": 0.4,
    "per_beta_end": 1.0,
    "beta_anneal_episodes": 1000,
    "epsilon_start": 1.0,
    "epsilon_end": 0.01,
    "epsilon_decay_episodes": 3,
    "counterfactual": False,
    "learning_starts": 64,
    "train_frequency": 1,
    "target_update": "polyak",
    "target_update_steps": 500,
    "tau": 0.01,
    "max_grad_norm": 10.0,
    "huber_delta": 1.0,
    "checkpoint_every": 0,
    "val_every": 0,
    "val_episodes": 1,
    "eval_episodes": 0,
    "eval_seed": 0,
    "eval_fraction": 0.3,
    "split_seed": 0,
    "model_name": "dqn_final",
    "model_version": "1.0.0",
    "num_threads": 1,
    "progress": False,
}

TASKS_PER_EPISODE = 64


def copy_traces(target: Path) -> Path:
    """A private copy of the six shipped FCC traces (4 train / 2 eval files with eval_fraction 0.3)."""
    target.mkdir(parents=True, exist_ok=True)
    for f in sorted(shipped_traces_dir().iterdir()):
        if f.is_file() and f.name.startswith("trace_"):
            shutil.copy2(f, target / f.name)
    return target


def tiny_config(traces: Path, output: Path, **overrides: Any) -> TrainConfig:
    """The pinned configuration for ``traces``, writing into ``output``."""
    return TrainConfig(**{**PINNED, "traces_dir": str(traces), "output_dir": str(output), **overrides})


class RandomPolicy:
    """Uniformly random action, from its own seeded generator (``itp.sim.evaluate`` Policy protocol)."""

    name = "random"

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def select_action(self, raw_state: npt.NDArray[np.float64]) -> int:
        return int(self._rng.integers(NUM_ACTIONS))
