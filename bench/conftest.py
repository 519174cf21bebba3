"""Shared set-up for the benchmarks in bench/ (pytest-benchmark).

Run: ``pytest bench/ --benchmark-only`` (the README cites the command and the machine). Every file named
``bench_*.py`` here is collected (the hook below), so no ``-o python_files`` is needed; the main test
suite (``pytest``, testpaths = tests) never collects them.

Conventions (CONVENTIONS.md, "Benchmarks"):

* buffers are built and filled here, outside any timing, once per session;
* one pytest-benchmark ``group`` per operation, holding the itp test and its anchor (cpprb, numpy or the
  standard library) on the same data in the same process, so the group table compares them directly;
* every benchmark asserts its result, so a fast wrong answer fails;
* each test records ``extra_info["role"]`` (``"itp"`` or ``"anchor"``) and, where the issue sets one,
  ``extra_info["target_speedup"]``; ``python bench/report.py RESULTS.json`` turns a
  ``--benchmark-json`` file into the README table of medians and speed-ups.

Data: ``bench/replay_data.py`` (1M transitions of 20-float observations, periodic rows, fixed-seed
priorities); the fixtures below build the buffers from it once per session.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

_BENCH_DIR = str(Path(__file__).resolve().parent)
if _BENCH_DIR not in sys.path:  # --import-mode=importlib: make bench/replay_data.py importable
    sys.path.insert(0, _BENCH_DIR)

from replay_data import (  # noqa: E402
    ALPHA,
    BETA,
    CAPACITY,
    EPSILON,
    NUM_FEATURES,
    PERIOD,
    SEED,
    ReplayData,
    as_cpprb,
    make_replay_data,
)

import itp  # noqa: E402


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collect bench/bench_*.py as test modules (pytest's default only matches test_*.py). A file named
    on the command line is collected by pytest itself, so it is left to pytest here."""
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        module: pytest.Module = pytest.Module.from_parent(parent, path=file_path)
        return module
    return None


@pytest.fixture(scope="session")
def replay_data() -> ReplayData:
    return make_replay_data()


@pytest.fixture(scope="session")
def itp_replay(replay_data: ReplayData) -> Iterator[itp.PrioritizedReplay]:
    """itp.PrioritizedReplay(1M, alpha 0.6), full, priorities (|td| + 1e-6)^0.6 from replay_data."""
    buf = itp.PrioritizedReplay(CAPACITY, alpha=ALPHA, epsilon=EPSILON, seed=SEED)
    for start in range(0, CAPACITY, PERIOD):
        buf.add_batch(**replay_data.batch(start, PERIOD))
    buf.update_priorities(np.arange(CAPACITY), replay_data.td_abs)
    assert buf.size == CAPACITY and buf.cursor == 0
    yield buf


@pytest.fixture(scope="session")
def cpprb_replay(replay_data: ReplayData) -> Iterator[Any]:
    """cpprb.PrioritizedReplayBuffer(1M, alpha 0.6, eps 1e-6) holding the same rows and priorities."""
    cpprb = pytest.importorskip("cpprb")
    rb = cpprb.PrioritizedReplayBuffer(
        CAPACITY,
        {
            "obs": {"shape": NUM_FEATURES, "dtype": np.float32},
            "act": {"dtype": np.int64},
            "rew": {"dtype": np.float32},
            "next_obs": {"shape": NUM_FEATURES, "dtype": np.float32},
            "done": {"dtype": np.float32},
        },
        alpha=ALPHA,
        eps=EPSILON,
    )
    for start in range(0, CAPACITY, PERIOD):
        rb.add(**as_cpprb(replay_data.batch(start, PERIOD)))
    rb.update_priorities(np.arange(CAPACITY), replay_data.td_abs)
    assert rb.get_stored_size() == CAPACITY and rb.get_next_index() == 0
    yield rb


@pytest.fixture(scope="session")
def update_batches(itp_replay: itp.PrioritizedReplay) -> list[tuple[Any, Any]]:
    """64 batches of (indices int64[256], |td| float64[256]): indices drawn as training draws them
    (proportional samples of itp_replay), |td| fresh lognormal. Shared by every update benchmark, so
    itp and cpprb update the very same slots with the very same values."""
    rng = np.random.default_rng(SEED + 1)
    out = itp.SampleBatch.allocate(256)
    batches = []
    for _ in range(64):
        itp_replay.sample(256, BETA, out)
        batches.append((out.indices.copy(), np.abs(rng.lognormal(mean=-1.0, sigma=1.0, size=256))))
    return batches
