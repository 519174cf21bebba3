"""Benchmark data shared by bench/*.py: the replay columns, constants and cpprb name mapping.

Capacity 1,000,000 transitions of 20-float observations, as in issue 2. The columns are periodic with
period ``PERIOD`` rows (slot s holds row ``s % PERIOD`` of a random base), so a benchmark that keeps adding
rows can write each slot's own row back and every later sample can still be checked against the data;
the gathers themselves still touch 1M distinct slots. Priorities come from a fixed-seed lognormal
|TD error| per slot, identical for every implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

import itp

CAPACITY = 1_000_000
NUM_FEATURES = itp.NUM_FEATURES
PERIOD = 2000
ALPHA = 0.6
BETA = 0.4
EPSILON = 1e-6
SEED = 20240601


@dataclass(frozen=True)
class ReplayData:
    """Periodic transition columns; slot s of a full buffer holds base row ``s % PERIOD``.

    Each column holds the PERIOD base rows twice over (2 * PERIOD rows), so the rows of any
    ``PERIOD``-or-fewer consecutive slots are one contiguous view.
    """

    states: npt.NDArray[np.float32]  # [2 PERIOD, 20]
    actions: npt.NDArray[np.int64]  # [2 PERIOD]
    rewards: npt.NDArray[np.float32]  # [2 PERIOD]
    next_states: npt.NDArray[np.float32]  # [2 PERIOD, 20]
    dones: npt.NDArray[np.float32]  # [2 PERIOD], 0.0 / 1.0
    td_abs: npt.NDArray[np.float64]  # [CAPACITY], |TD error| per slot (the priority source)
    # Per-row Python objects for single adds (built once, so no benchmark pays for indexing).
    rows: tuple[tuple[npt.NDArray[np.float32], int, float, npt.NDArray[np.float32], bool], ...]

    def batch(self, start: int, n: int) -> dict[str, Any]:
        """Columns (views, keyword names of ``add_batch``) for slots [start, start + n), n <= PERIOD."""
        i = start % PERIOD
        return {
            "states": self.states[i : i + n],
            "actions": self.actions[i : i + n],
            "rewards": self.rewards[i : i + n],
            "next_states": self.next_states[i : i + n],
            "dones": self.dones[i : i + n],
        }

    def expected_rows(self, slots: npt.NDArray[Any]) -> dict[str, Any]:
        """The columns a sample of ``slots`` must return."""
        r = np.asarray(slots, dtype=np.int64) % PERIOD
        return {
            "states": self.states[r],
            "actions": self.actions[r],
            "rewards": self.rewards[r],
            "next_states": self.next_states[r],
            "dones": self.dones[r],
        }


def make_replay_data(seed: int = SEED) -> ReplayData:
    rng = np.random.default_rng(seed)
    states = rng.random((PERIOD, NUM_FEATURES), dtype=np.float32)
    next_states = rng.random((PERIOD, NUM_FEATURES), dtype=np.float32)
    actions = rng.integers(0, itp.NUM_ACTIONS, PERIOD).astype(np.int64)
    rewards = rng.normal(size=PERIOD).astype(np.float32)
    dones = (rng.random(PERIOD) < 0.05).astype(np.float32)
    td_abs = np.abs(rng.lognormal(mean=-1.0, sigma=1.0, size=CAPACITY))
    rows = tuple(
        (states[i], int(actions[i]), float(rewards[i]), next_states[i], bool(dones[i])) for i in range(PERIOD)
    )

    def twice(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.ascontiguousarray(np.concatenate([a, a]))

    return ReplayData(
        twice(states), twice(actions), twice(rewards), twice(next_states), twice(dones), td_abs, rows
    )


def as_cpprb(columns: dict[str, Any]) -> dict[str, Any]:
    """itp column names -> cpprb env_dict names (same arrays)."""
    return {
        "obs": columns["states"],
        "act": columns["actions"],
        "rew": columns["rewards"],
        "next_obs": columns["next_states"],
        "done": columns["dones"],
    }
