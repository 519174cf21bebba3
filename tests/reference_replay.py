"""Slow, obviously right pure-Python references for the sum tree, PER sampling and the ring.

They follow the native specification step for step (same tree shape, same descent rule, same
xoshiro256** stream, same float64 arithmetic order), so tests can demand exact equality of indices,
totals and generations, not just statistical agreement.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

MASK64 = (1 << 64) - 1
NUM_FEATURES = 20
NUM_ACTIONS = 15
MIN_PRIORITY = 1e-150
MAX_PRIORITY = 1e150


class Xoshiro256:
    """xoshiro256** seeded by splitmix64, as in cpp/include/itp/sum_tree.hpp."""

    def __init__(self, seed: int) -> None:
        x = seed & MASK64
        self.s: list[int] = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & MASK64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
            self.s.append(z ^ (z >> 31))

    @staticmethod
    def _rotl(x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & MASK64

    def next(self) -> int:
        s = self.s
        result = (self._rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def uniform(self) -> float:
        return (self.next() >> 11) * 2.0**-53


class ReferenceSumTree:
    """Sum tree over max(2, next_pow2(capacity)) leaves in a Python list; min by brute force."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        leaves = 2
        while leaves < capacity:
            leaves *= 2
        self.leaves = leaves
        self.sums = [0.0] * (2 * leaves)

    def set(self, index: int, value: float) -> None:
        node = self.leaves + index
        self.sums[node] = value
        node //= 2
        while node >= 1:
            self.sums[node] = self.sums[2 * node] + self.sums[2 * node + 1]
            node //= 2

    def get(self, index: int) -> float:
        return self.sums[self.leaves + index]

    def total(self) -> float:
        return self.sums[1]

    def min_positive(self) -> float:
        positive = [v for v in self.sums[self.leaves :] if v > 0.0]
        return min(positive) if positive else math.inf

    def find_prefix(self, mass: float) -> int:
        node = 1
        while node < self.leaves:
            left = self.sums[2 * node]
            if not (mass < left) and self.sums[2 * node + 1] > 0.0:
                mass -= left
                node = 2 * node + 1
            else:
                node = 2 * node
        return node - self.leaves


@dataclass
class Row:
    state: npt.NDArray[np.float32]
    action: int
    reward: float
    next_state: npt.NDArray[np.float32]
    done: bool


def make_rows(n: int, seed: int, num_features: int = 20) -> dict[str, Any]:
    """n random transitions as the columns ``add_batch`` / ``push_batch`` take (fixed seed)."""
    rng = np.random.default_rng(seed)
    return {
        "states": rng.random((n, num_features), dtype=np.float32),
        "actions": rng.integers(0, 15, n).astype(np.int64),
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_states": rng.random((n, num_features), dtype=np.float32),
        "dones": (rng.random(n) < 0.2).astype(np.float32),
    }


def rows_of(cols: dict[str, Any]) -> list[Row]:
    """The same transitions as reference ``Row`` objects."""
    return [
        Row(
            state=cols["states"][i].copy(),
            action=int(cols["actions"][i]),
            reward=float(cols["rewards"][i]),
            next_state=cols["next_states"][i].copy(),
            done=bool(cols["dones"][i]),
        )
        for i in range(len(cols["actions"]))
    ]


@dataclass
class RefSample:
    indices: list[int]
    weights: list[float]
    generations: list[int]
    rows: list[Row]


@dataclass
class ReferenceReplay:
    """Prioritized replay as specified in replay.hpp, one Python operation at a time."""

    capacity: int
    alpha: float = 0.6
    epsilon: float = 1e-6
    prioritized: bool = True
    seed: int = 0
    size: int = 0
    cursor: int = 0
    max_priority: float = 1.0
    stale_updates: int = 0
    rows: dict[int, Row] = field(default_factory=dict)
    generations: list[int] = field(default_factory=list)
    tree: ReferenceSumTree = field(init=False)
    rng: Xoshiro256 = field(init=False)

    def __post_init__(self) -> None:
        self.tree = ReferenceSumTree(self.capacity)
        self.rng = Xoshiro256(self.seed)
        self.generations = [0] * self.capacity

    def priority(self, td_abs: float) -> float:
        base = td_abs + self.epsilon
        if self.alpha == 1.0:
            p = base
        elif self.alpha == 0.0:
            p = 1.0
        else:
            p = base**self.alpha
        return max(p, MIN_PRIORITY)

    def add(self, row: Row) -> int:
        slot = self.cursor
        self.cursor = (slot + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.rows[slot] = row
        self.generations[slot] += 1
        self.tree.set(slot, self.max_priority)
        return slot

    def sample(self, batch: int, beta: float) -> RefSample:
        assert 1 <= batch <= self.size
        indices: list[int] = []
        weights: list[float] = []
        if self.prioritized:
            segment = self.tree.total() / batch
            p_min = self.tree.min_positive()
            for b in range(batch):
                mass = (b + self.rng.uniform()) * segment
                i = self.tree.find_prefix(mass)
                indices.append(i)
                w = 1.0 if beta == 0.0 else (p_min / self.tree.get(i)) ** beta
                weights.append(float(np.float32(w)))
        else:
            for _ in range(batch):
                i = min(int(self.rng.uniform() * self.size), self.size - 1)
                indices.append(i)
                weights.append(1.0)
        return RefSample(
            indices=indices,
            weights=weights,
            generations=[self.generations[i] for i in indices],
            rows=[self.rows[i] for i in indices],
        )

    def update_priorities(
        self, indices: list[int], td_errors: list[float], generations: list[int] | None
    ) -> int:
        for i, td in zip(indices, td_errors, strict=True):
            if not 0 <= i < self.size:
                raise ValueError(f"indices: {i} out of range")
            if not math.isfinite(td):
                raise ValueError(f"td_errors: {td}")
            if not self.priority(abs(td)) <= MAX_PRIORITY:
                raise ValueError("priority above limit")
        applied = 0
        for k, (i, td) in enumerate(zip(indices, td_errors, strict=True)):
            if generations is not None and generations[k] != self.generations[i]:
                self.stale_updates += 1
                continue
            p = self.priority(abs(td))
            self.tree.set(i, p)
            self.max_priority = max(self.max_priority, p)
            applied += 1
        return applied


@dataclass
class ReferenceRing:
    """Bounded FIFO that rejects (never overwrites) when full; capacity rounded to a power of 2."""

    min_capacity: int
    pushed: int = 0
    dropped: int = 0
    drained: int = 0
    queue: deque[Row] = field(default_factory=deque)

    @property
    def capacity(self) -> int:
        c = 2
        while c < self.min_capacity:
            c *= 2
        return c

    def try_push(self, row: Row) -> bool:
        if len(self.queue) == self.capacity:
            self.dropped += 1
            return False
        self.queue.append(row)
        self.pushed += 1
        return True

    def push_batch(self, rows: list[Row]) -> int:
        k = min(len(rows), self.capacity - len(self.queue))
        self.queue.extend(rows[:k])
        self.pushed += k
        self.dropped += len(rows) - k
        return k

    def drain(self, max_records: int) -> list[Row]:
        out = [self.queue.popleft() for _ in range(min(max_records, len(self.queue)))]
        self.drained += len(out)
        return out
