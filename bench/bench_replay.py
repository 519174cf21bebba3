"""itp.PrioritizedReplay against numpy, same data, same process (capacity 1M, 20-float observations).

The anchor is what a user writes without a native buffer (REPLAY-NOTES.md, "vectorised numpy sum tree"):
float64 sum and min trees over ``L = next_pow2(C)`` leaves in flat arrays, each batch operation one numpy
expression per tree level, columns gathered with ``np.take(..., out=...)`` into preallocated arrays. It is
built from the same priorities as ``itp_replay`` and checked against ``itp._native.SumTree`` (identical
prefix searches on the same masses, identical root), so the groups compare equal work:

* ``sample 256 vs numpy``: stratified sample + importance weights + row gather;
* ``update_priorities 256 vs numpy``: ``(|td| + eps) ** alpha`` and both trees updated;
* ``uniform sample 256``: ``prioritized=False`` against ``rng.integers`` + ``np.take``.

Run: ``pytest bench/bench_replay.py --benchmark-only``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from replay_data import ALPHA, BETA, CAPACITY, EPSILON, PERIOD, SEED, ReplayData

import itp
from itp import _native

pytest.importorskip("pytest_benchmark")

BATCH = 256


class NumpySumTree:
    """Vectorised numpy sum tree + min tree (the anchor). Node i has children 2i, 2i+1; leaves at L + s."""

    def __init__(self, priorities: npt.NDArray[np.float64]) -> None:
        capacity = len(priorities)
        self.leaves = max(2, 1 << (capacity - 1).bit_length())
        self.depth = self.leaves.bit_length() - 1
        self.sum = np.zeros(2 * self.leaves)
        self.min = np.full(2 * self.leaves, np.inf)
        self.sum[self.leaves : self.leaves + capacity] = priorities
        self.min[self.leaves : self.leaves + capacity] = priorities
        for level in range(self.depth - 1, -1, -1):
            lo, hi = 1 << level, 2 << level
            self.sum[lo:hi] = self.sum[2 * lo : 2 * hi : 2] + self.sum[2 * lo + 1 : 2 * hi : 2]
            self.min[lo:hi] = np.minimum(self.min[2 * lo : 2 * hi : 2], self.min[2 * lo + 1 : 2 * hi : 2])

    def update(self, slots: npt.NDArray[np.int64], priorities: npt.NDArray[np.float64]) -> None:
        nodes = slots + self.leaves
        self.sum[nodes] = priorities
        self.min[nodes] = priorities
        for _ in range(self.depth):
            nodes = np.unique(nodes >> 1)
            self.sum[nodes] = self.sum[2 * nodes] + self.sum[2 * nodes + 1]
            self.min[nodes] = np.minimum(self.min[2 * nodes], self.min[2 * nodes + 1])

    def find(self, masses: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        nodes = np.ones(len(masses), dtype=np.int64)
        mass = masses.copy()
        for _ in range(self.depth):
            left = self.sum[2 * nodes]
            right = (mass >= left) & (self.sum[2 * nodes + 1] > 0)
            mass = np.where(right, mass - left, mass)
            nodes = 2 * nodes + right
        slots: npt.NDArray[np.int64] = nodes - self.leaves
        return slots


class NumpyReplay:
    """The anchor buffer: full 1M-row numpy columns (tiled from ReplayData) + NumpySumTree."""

    def __init__(self, data: ReplayData, priorities: npt.NDArray[np.float64]) -> None:
        reps = CAPACITY // PERIOD
        self.states = np.tile(data.states[:PERIOD], (reps, 1))
        self.actions = np.tile(data.actions[:PERIOD], reps)
        self.rewards = np.tile(data.rewards[:PERIOD], reps)
        self.next_states = np.tile(data.next_states[:PERIOD], (reps, 1))
        self.dones = np.tile(data.dones[:PERIOD], reps)
        self.tree = NumpySumTree(priorities)
        self.rng = np.random.default_rng(SEED)

    def sample(self, batch: int, beta: float, out: itp.SampleBatch) -> itp.SampleBatch:
        total = self.tree.sum[1]
        masses = (np.arange(batch) + self.rng.random(batch)) * (total / batch)
        idx = self.tree.find(masses)
        p = self.tree.sum[self.tree.leaves + idx]
        out.weights[:] = (self.tree.min[1] / p) ** beta
        out.indices[:] = idx
        np.take(self.states, idx, axis=0, out=out.states)
        np.take(self.actions, idx, out=out.actions)
        np.take(self.rewards, idx, out=out.rewards)
        np.take(self.next_states, idx, axis=0, out=out.next_states)
        np.take(self.dones, idx, out=out.dones)
        return out

    def update_priorities(self, idx: npt.NDArray[np.int64], td: npt.NDArray[np.float64]) -> None:
        self.tree.update(idx, (np.abs(td) + EPSILON) ** ALPHA)


@pytest.fixture(scope="module")
def numpy_replay(replay_data: ReplayData) -> Iterator[NumpyReplay]:
    priorities = (replay_data.td_abs + EPSILON) ** ALPHA
    anchor = NumpyReplay(replay_data, priorities)
    # The anchor is a correct sum tree: same root and same prefix searches as itp's native SumTree.
    tree = _native.SumTree(CAPACITY)
    tree.set_many(np.arange(CAPACITY), priorities)
    assert tree.total == anchor.tree.sum[1] and tree.min == anchor.tree.min[1]
    masses = np.random.default_rng(1).random(4096) * tree.total
    np.testing.assert_array_equal(tree.find_prefix_many(masses)[0], anchor.tree.find(masses))
    yield anchor


def check_sample(out: itp.SampleBatch, data: ReplayData) -> None:
    want = data.expected_rows(out.indices)
    np.testing.assert_array_equal(out.states, want["states"])
    np.testing.assert_array_equal(out.actions, want["actions"])
    np.testing.assert_array_equal(out.rewards, want["rewards"])
    np.testing.assert_array_equal(out.next_states, want["next_states"])
    np.testing.assert_array_equal(out.dones, want["dones"])
    assert np.all((out.weights > 0) & (out.weights <= 1))


def tag(benchmark: Any, role: str) -> None:
    benchmark.extra_info["role"] = role


# ------------------------------------------------------------------------------------ sample 256


@pytest.mark.benchmark(group="sample 256 vs numpy")
def test_sample_itp(benchmark: Any, itp_replay: itp.PrioritizedReplay, replay_data: ReplayData) -> None:
    out = itp.SampleBatch.allocate(BATCH)
    sample = itp_replay.sample
    benchmark(lambda: sample(BATCH, BETA, out))
    check_sample(out, replay_data)
    tag(benchmark, "itp")


@pytest.mark.benchmark(group="sample 256 vs numpy")
def test_sample_numpy(benchmark: Any, numpy_replay: NumpyReplay, replay_data: ReplayData) -> None:
    out = itp.SampleBatch.allocate(BATCH)
    benchmark(lambda: numpy_replay.sample(BATCH, BETA, out))
    check_sample(out, replay_data)
    tag(benchmark, "anchor")


# ----------------------------------------------------------------------------------- update 256


@pytest.mark.benchmark(group="update_priorities 256 vs numpy")
def test_update_itp(
    benchmark: Any, itp_replay: itp.PrioritizedReplay, update_batches: list[tuple[Any, Any]]
) -> None:
    cycle = itertools.cycle(update_batches)
    update = itp_replay.update_priorities
    applied = benchmark(lambda: update(*next(cycle)))
    assert applied == BATCH
    assert itp_replay.check_invariants()
    tag(benchmark, "itp")


@pytest.mark.benchmark(group="update_priorities 256 vs numpy")
def test_update_numpy(
    benchmark: Any, numpy_replay: NumpyReplay, update_batches: list[tuple[Any, Any]]
) -> None:
    cycle = itertools.cycle(update_batches)
    last: list[Any] = []

    def run() -> None:
        batch = next(cycle)
        last[:] = batch
        numpy_replay.update_priorities(*batch)

    benchmark(run)
    tree = numpy_replay.tree
    idx, td = last
    np.testing.assert_array_equal(tree.sum[tree.leaves + idx[-1]], (abs(td[-1]) + EPSILON) ** ALPHA)
    assert tree.sum[1] == pytest.approx(tree.sum[tree.leaves : tree.leaves + CAPACITY].sum(), rel=1e-9)
    tag(benchmark, "anchor")


# --------------------------------------------------------------------------- uniform sample 256


@pytest.fixture(scope="module")
def itp_uniform(replay_data: ReplayData) -> Iterator[itp.PrioritizedReplay]:
    buf = itp.PrioritizedReplay(CAPACITY, prioritized=False, seed=SEED)
    for start in range(0, CAPACITY, PERIOD):
        buf.add_batch(**replay_data.batch(start, PERIOD))
    yield buf


@pytest.mark.benchmark(group="uniform sample 256")
def test_uniform_sample_itp(
    benchmark: Any, itp_uniform: itp.PrioritizedReplay, replay_data: ReplayData
) -> None:
    out = itp.SampleBatch.allocate(BATCH)
    sample = itp_uniform.sample
    benchmark(lambda: sample(BATCH, BETA, out))
    check_sample(out, replay_data)
    assert np.all(out.weights == 1.0)
    tag(benchmark, "itp")


@pytest.mark.benchmark(group="uniform sample 256")
def test_uniform_sample_numpy(benchmark: Any, numpy_replay: NumpyReplay, replay_data: ReplayData) -> None:
    out = itp.SampleBatch.allocate(BATCH)
    rng = np.random.default_rng(SEED)
    a = numpy_replay

    def run() -> itp.SampleBatch:
        idx = rng.integers(0, CAPACITY, BATCH)
        out.indices[:] = idx
        np.take(a.states, idx, axis=0, out=out.states)
        np.take(a.actions, idx, out=out.actions)
        np.take(a.rewards, idx, out=out.rewards)
        np.take(a.next_states, idx, axis=0, out=out.next_states)
        np.take(a.dones, idx, out=out.dones)
        out.weights[:] = 1.0
        return out

    benchmark(run)
    check_sample(out, replay_data)
    tag(benchmark, "anchor")
