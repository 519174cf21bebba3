"""itp.PrioritizedReplay against cpprb's PrioritizedReplayBuffer, same data, same process.

Issue 2 (capacity 1M, 20-float observations, alpha 0.6, beta 0.4): add single, add batch of 1024,
sample(32), sample(256) with beta, update_priorities(256). Targets (speed-up of itp over cpprb):
sample(256) >= 5x, update >= 2x, add single >= 10x, add batch >= 1x. Also, for context:

* ``update_priorities 256 (repeated batch)``: the same 256 indices and values every call. Both trees
  stop propagating at an unchanged node, so this measures only the per-call work; a fresh batch per
  call (the training loop's case) is the ``update_priorities 256`` group;
* ``dqn step``: add 1 + sample 256 + update_priorities of the sampled indices, the learner's inner loop.

Both buffers are built once in ``conftest.py`` (outside timing) with the same rows and the same
priorities, ``(|td| + 1e-6) ** 0.6`` (cpprb given ``eps=1e-6``). Each benchmark checks what it got:
sampled rows equal the stored data, weights lie in (0, 1] (and, for itp, equal
``(p_min / p_i) ** beta``), adds land in the expected slots with the running max priority.

Run: ``pytest bench/bench_vs_cpprb.py --benchmark-only``; ``python bench/report.py`` makes the table.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from replay_data import BETA, CAPACITY, EPSILON, PERIOD, ReplayData, as_cpprb

import itp

pytest.importorskip("pytest_benchmark")
pytest.importorskip("cpprb")

N_STEP_BATCHES = 64  # fresh td batches cycled through by the dqn-step benchmarks


def tag(benchmark: Any, role: str, target: float | None = None) -> None:
    benchmark.extra_info["role"] = role
    if target is not None:
        benchmark.extra_info["target_speedup"] = target


def check_rows(got: dict[str, Any], slots: npt.NDArray[Any], data: ReplayData) -> None:
    want = data.expected_rows(slots)
    for key, value in want.items():
        np.testing.assert_array_equal(np.asarray(got[key]).reshape(value.shape), value, err_msg=key)


# --------------------------------------------------------------------------------------- add 1


def cpprb_row(row: tuple[Any, ...]) -> dict[str, Any]:
    """One of ReplayData.rows (the exact objects itp.add gets) as cpprb keyword arguments."""
    state, action, reward, next_state, done = row
    return {"obs": state, "act": action, "rew": reward, "next_obs": next_state, "done": done}


@pytest.mark.benchmark(group="add 1")
def test_add_single_itp(benchmark: Any, itp_replay: itp.PrioritizedReplay, replay_data: ReplayData) -> None:
    buf = itp_replay
    start = buf.cursor
    rows = itertools.cycle(replay_data.rows[start % PERIOD :] + replay_data.rows[: start % PERIOD])
    calls = itertools.count(1)
    add = buf.add

    def run() -> int:
        next(calls)
        return add(*next(rows))

    slot = benchmark(run)
    n = next(calls) - 1
    assert slot == (start + n - 1) % CAPACITY
    assert buf.cursor == (start + n) % CAPACITY and buf.size == CAPACITY
    assert buf.priorities([slot])[0] == buf.max_priority  # new items get the running max
    tag(benchmark, "itp", 10)


@pytest.mark.benchmark(group="add 1")
def test_add_single_cpprb(benchmark: Any, cpprb_replay: Any, replay_data: ReplayData) -> None:
    rb = cpprb_replay
    start = rb.get_next_index()
    kwargs = [cpprb_row(row) for row in replay_data.rows]
    rows = itertools.cycle(kwargs[start % PERIOD :] + kwargs[: start % PERIOD])
    calls = itertools.count(1)
    add = rb.add

    def run() -> None:
        next(calls)
        add(**next(rows))

    benchmark(run)
    n = next(calls) - 1
    assert rb.get_next_index() == (start + n) % CAPACITY and rb.get_stored_size() == CAPACITY
    tag(benchmark, "anchor")


# --------------------------------------------------------------------------------- add batch 1024

BATCH_ROWS = 1024


def batch_cycle(data: ReplayData, start: int, convert: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """Batches of 1024 rows for consecutive cursor positions from ``start`` (period PERIOD / 16)."""
    period = PERIOD // int(np.gcd(BATCH_ROWS, PERIOD))
    return itertools.cycle([convert(data.batch(start + k * BATCH_ROWS, BATCH_ROWS)) for k in range(period)])


@pytest.mark.benchmark(group="add batch 1024")
def test_add_batch_itp(benchmark: Any, itp_replay: itp.PrioritizedReplay, replay_data: ReplayData) -> None:
    buf = itp_replay
    start = buf.cursor
    batches = batch_cycle(replay_data, start, lambda b: b)
    calls = itertools.count(1)
    add_batch = buf.add_batch

    def run() -> None:
        next(calls)
        add_batch(**next(batches))

    benchmark(run)
    n = next(calls) - 1
    assert buf.cursor == (start + n * BATCH_ROWS) % CAPACITY
    last = np.arange(buf.cursor - BATCH_ROWS, buf.cursor) % CAPACITY
    np.testing.assert_array_equal(buf.priorities(last), np.full(BATCH_ROWS, buf.max_priority))
    tag(benchmark, "itp", 1)


@pytest.mark.benchmark(group="add batch 1024")
def test_add_batch_cpprb(benchmark: Any, cpprb_replay: Any, replay_data: ReplayData) -> None:
    rb = cpprb_replay
    start = rb.get_next_index()
    batches = batch_cycle(replay_data, start, as_cpprb)
    calls = itertools.count(1)
    add = rb.add

    def run() -> None:
        next(calls)
        add(**next(batches))

    benchmark(run)
    n = next(calls) - 1
    assert rb.get_next_index() == (start + n * BATCH_ROWS) % CAPACITY
    tag(benchmark, "anchor")


# ------------------------------------------------------------------------------------- sample


def check_itp_sample(buf: itp.PrioritizedReplay, out: itp.SampleBatch, data: ReplayData) -> None:
    check_rows(
        {
            "states": out.states,
            "actions": out.actions,
            "rewards": out.rewards,
            "next_states": out.next_states,
            "dones": out.dones,
        },
        out.indices,
        data,
    )
    p = buf.priorities(out.indices)
    expected = ((buf.min_priority / p) ** BETA).astype(np.float32)
    np.testing.assert_array_equal(out.weights, expected)
    assert np.all((out.weights > 0) & (out.weights <= 1))


def check_cpprb_sample(batch: dict[str, Any], data: ReplayData) -> None:
    slots = np.asarray(batch["indexes"], dtype=np.int64)
    check_rows(
        {
            "states": batch["obs"],
            "actions": batch["act"],
            "rewards": batch["rew"],
            "next_states": batch["next_obs"],
            "dones": batch["done"],
        },
        slots,
        data,
    )
    w = np.asarray(batch["weights"])
    assert np.all((w > 0) & (w <= 1 + 1e-6))


@pytest.mark.parametrize("batch_size", [32, 256])
def test_sample_itp(
    benchmark: Any, itp_replay: itp.PrioritizedReplay, replay_data: ReplayData, batch_size: int
) -> None:
    benchmark.group = f"sample {batch_size}"
    buf = itp_replay
    out = itp.SampleBatch.allocate(batch_size)
    sample = buf.sample
    result = benchmark(lambda: sample(batch_size, BETA, out))
    assert result is out
    check_itp_sample(buf, out, replay_data)
    tag(benchmark, "itp", 5 if batch_size == 256 else None)


@pytest.mark.parametrize("batch_size", [32, 256])
def test_sample_cpprb(benchmark: Any, cpprb_replay: Any, replay_data: ReplayData, batch_size: int) -> None:
    benchmark.group = f"sample {batch_size}"
    sample = cpprb_replay.sample
    batch = benchmark(lambda: sample(batch_size, beta=BETA))
    assert len(batch["indexes"]) == batch_size
    check_cpprb_sample(batch, replay_data)
    tag(benchmark, "anchor")


# ---------------------------------------------------------------------------- update_priorities


def expected_priorities(indices: npt.NDArray[np.int64], td: Any, alpha: float) -> dict[int, float]:
    last: dict[int, float] = {}
    for i, t in zip(indices.tolist(), np.asarray(td).tolist(), strict=True):
        last[i] = (abs(t) + EPSILON) ** alpha  # a repeated index keeps its last value
    return last


@pytest.mark.parametrize("repeat", [False, True], ids=["fresh", "repeated"])
def test_update_priorities_itp(
    benchmark: Any, itp_replay: itp.PrioritizedReplay, update_batches: list[tuple[Any, Any]], repeat: bool
) -> None:
    benchmark.group = "update_priorities 256" + (" (repeated batch)" if repeat else "")
    buf = itp_replay
    batches = update_batches
    cycle = itertools.cycle(batches[:1] if repeat else batches)
    update = buf.update_priorities
    last: list[Any] = []

    def run() -> int:
        indices, td = next(cycle)
        last[:] = [indices, td]
        return update(indices, td)

    applied = benchmark(run)
    assert applied == 256
    want = expected_priorities(last[0], last[1], buf.alpha)
    got = buf.priorities(np.array(list(want)))
    np.testing.assert_array_equal(got, np.array(list(want.values())))
    assert buf.check_invariants()
    tag(benchmark, "itp", None if repeat else 2)


@pytest.mark.parametrize("repeat", [False, True], ids=["fresh", "repeated"])
def test_update_priorities_cpprb(
    benchmark: Any, cpprb_replay: Any, update_batches: list[tuple[Any, Any]], repeat: bool
) -> None:
    benchmark.group = "update_priorities 256" + (" (repeated batch)" if repeat else "")
    rb = cpprb_replay
    batches = update_batches  # the very same batches as the itp benchmark
    cycle = itertools.cycle(batches[:1] if repeat else batches)
    update = rb.update_priorities

    def run() -> None:
        indices, td = next(cycle)
        update(indices, td)

    benchmark(run)
    # cpprb exposes no per-slot priorities; its running max must have seen the largest |td| used.
    used = batches[:1] if repeat else batches
    assert rb.get_max_priority() >= max(float(td.max()) for _, td in used) * (1 - 1e-6)
    tag(benchmark, "anchor")


# ----------------------------------------------------------------------------------- dqn step


@pytest.mark.benchmark(group="dqn step (add 1 + sample 256 + update 256)")
def test_dqn_step_itp(benchmark: Any, itp_replay: itp.PrioritizedReplay, replay_data: ReplayData) -> None:
    buf = itp_replay
    start = buf.cursor
    rows = itertools.cycle(replay_data.rows[start % PERIOD :] + replay_data.rows[: start % PERIOD])
    rng = np.random.default_rng(5)
    tds = itertools.cycle([rng.normal(scale=0.5, size=256) for _ in range(N_STEP_BATCHES)])
    out = itp.SampleBatch.allocate(256)
    stale_before = buf.stale_updates

    def run() -> int:
        buf.add(*next(rows))
        buf.sample(256, BETA, out)
        return buf.update_priorities(out.indices, next(tds), out.generations)

    applied = benchmark(run)
    assert applied == 256 and buf.stale_updates == stale_before
    check_rows(
        {
            "states": out.states,
            "actions": out.actions,
            "rewards": out.rewards,
            "next_states": out.next_states,
            "dones": out.dones,
        },
        out.indices,
        replay_data,
    )
    assert buf.check_invariants()
    tag(benchmark, "itp")


@pytest.mark.benchmark(group="dqn step (add 1 + sample 256 + update 256)")
def test_dqn_step_cpprb(benchmark: Any, cpprb_replay: Any, replay_data: ReplayData) -> None:
    rb = cpprb_replay
    start = rb.get_next_index()
    kwargs = [cpprb_row(row) for row in replay_data.rows]
    rows = itertools.cycle(kwargs[start % PERIOD :] + kwargs[: start % PERIOD])
    rng = np.random.default_rng(5)
    tds = itertools.cycle([np.abs(rng.normal(scale=0.5, size=256)) for _ in range(N_STEP_BATCHES)])

    def run() -> dict[str, Any]:
        rb.add(**next(rows))
        batch: dict[str, Any] = rb.sample(256, beta=BETA)
        rb.update_priorities(batch["indexes"], next(tds))
        return batch

    batch = benchmark(run)
    check_cpprb_sample(batch, replay_data)
    tag(benchmark, "anchor")
