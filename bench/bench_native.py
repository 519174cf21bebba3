"""Per-task decision core: normalise one state, decode its action, split its bytes.

Issue target: normalise + decode + split of one state in under 1 us natively. The
``decision_core`` group measures that loop inside C++ (``itp._native._bench_decision_core``:
steady_clock around batches of 64 calls, GIL released, inputs generated before timing) and reports
ns per call in ``extra_info``; the other groups time the same operations one call at a time from
Python, next to a pure-Python/numpy anchor on the same data, so the cost of crossing the binding is
visible.

Run: ``pytest bench/bench_native.py --benchmark-only`` (or the whole ``pytest bench/ --benchmark-only``;
bench/conftest.py collects every bench_*.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import itp
from itp import _native

pytest.importorskip("pytest_benchmark")

N_STATES = 256
NATIVE_ITERATIONS = 1_000_000  # one round = 1e6 calls, so the table's ms read as ns per call
NATIVE_SEED = 12345
ISSUE_TARGET_NS = 1000.0


def _make_states(seed: int = 7) -> npt.NDArray[np.float64]:
    """Varied raw states in caller units, like the native bench's (rates 1 Mbit/s..10 Gbit/s, some
    dead streams, RTT 1..300 ms, sizes log-uniform 1 B..1 TiB)."""
    rng = np.random.default_rng(seed)
    raw = np.empty((N_STATES, itp.NUM_FEATURES), dtype=np.float64)
    raw[:, 0:4] = 10.0 ** rng.uniform(6, 10, (N_STATES, 4)) * (rng.random((N_STATES, 4)) > 0.1)
    raw[:, 4:8] = rng.uniform(0.001, 0.3, (N_STATES, 4))
    raw[:, 8:16] = rng.random((N_STATES, 8))
    raw[:, 16] = np.floor(rng.uniform(0, 200, N_STATES))
    raw[:, 17] = np.maximum(1.0, np.floor(2.0 ** rng.uniform(0, 40, N_STATES)))
    raw[:, 18] = rng.random(N_STATES)
    raw[:, 19] = rng.uniform(0, 24, N_STATES) * 0.999999
    return raw


STATES = _make_states()
ACTIONS = np.random.default_rng(8).integers(0, itp.NUM_ACTIONS, N_STATES)
SCALE = np.array([1e9] * 4 + [0.1] * 4 + [1.0] * 8 + [100.0, 1.0, 1.0, 24.0])


def normalize_numpy(raw: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """Anchor: the feature table as a numpy expression on one state."""
    x = raw / SCALE
    x[17] = np.log2(max(raw[17], 1.0)) / 40.0
    out: npt.NDArray[np.float32] = np.clip(x, 0.0, 1.0).astype(np.float32)
    return out


def split_python(
    size_bytes: int, streams: tuple[int, ...], rate_bps: list[float], latency_s: list[float]
) -> tuple[list[int], float]:
    """Anchor: textbook water filling in Python floats plus largest-remainder rounding."""
    live = sorted((i for i in streams if rate_bps[i] > 0), key=lambda i: latency_s[i])
    if not live:
        chunks = [0] * 4
        chunks[min(streams, key=lambda i: latency_s[i])] = size_bytes
        return chunks, math.inf
    bits = 8.0 * size_bytes
    used: list[int] = []
    t = 0.0
    for i in live:
        if used and latency_s[i] >= t:
            break
        used.append(i)
        t = (bits + sum(rate_bps[j] * latency_s[j] for j in used)) / sum(rate_bps[j] for j in used)
    shares = {i: rate_bps[i] * (t - latency_s[i]) / 8.0 for i in used}
    chunks = [0] * 4
    for i, s in shares.items():
        chunks[i] = int(s)
    rest = size_bytes - sum(chunks)
    for i in sorted(used, key=lambda j: shares[j] - int(shares[j]), reverse=True):
        if rest <= 0:
            break
        chunks[i] += 1
        rest -= 1
    chunks[used[0]] += rest
    return chunks, t


class _Cycle:
    """Round-robin over the prepared states so successive timed calls see different inputs."""

    def __init__(self) -> None:
        self.i = 0

    def next(self) -> int:
        self.i = (self.i + 1) % N_STATES
        return self.i


# --- normalize_state ------------------------------------------------------------------------------


@pytest.mark.benchmark(group="normalize_state")
def test_normalize_state_itp(benchmark: Any) -> None:
    cyc = _Cycle()
    rows = [STATES[i] for i in range(N_STATES)]
    out = benchmark(lambda: itp.normalize_state(rows[cyc.next()]))
    np.testing.assert_allclose(out, normalize_numpy(rows[cyc.i]), rtol=0, atol=1.2e-7)
    benchmark.extra_info["role"] = "itp"


@pytest.mark.benchmark(group="normalize_state")
def test_normalize_state_numpy_anchor(benchmark: Any) -> None:
    cyc = _Cycle()
    rows = [STATES[i] for i in range(N_STATES)]
    out = benchmark(lambda: normalize_numpy(rows[cyc.next()]))
    np.testing.assert_allclose(out, itp.normalize_state(rows[cyc.i]), rtol=0, atol=1.2e-7)
    benchmark.extra_info["role"] = "anchor"


# --- split_task -----------------------------------------------------------------------------------

SPLIT_ARGS = [
    (int(STATES[i, 17]), int(ACTIONS[i]), STATES[i, 0:4].tolist(), STATES[i, 4:8].tolist())
    for i in range(N_STATES)
]


@pytest.mark.benchmark(group="split_task")
def test_split_task_itp(benchmark: Any) -> None:
    cyc = _Cycle()
    split = benchmark(lambda: itp.split_task(*SPLIT_ARGS[cyc.next()]))
    size_bytes, action, rate_bps, latency_s = SPLIT_ARGS[cyc.i]
    chunks, t = split_python(size_bytes, itp.decode_action(action), rate_bps, latency_s)
    assert sum(split.chunk_bytes) == size_bytes
    assert all(abs(a - b) <= 1 for a, b in zip(split.chunk_bytes, chunks, strict=True))
    assert split.expected_time_s == pytest.approx(t, rel=1e-9)
    benchmark.extra_info["role"] = "itp"


@pytest.mark.benchmark(group="split_task")
def test_split_task_python_anchor(benchmark: Any) -> None:
    cyc = _Cycle()
    streams = [itp.decode_action(a) for _, a, _, _ in SPLIT_ARGS]

    def run() -> tuple[list[int], float]:
        size_bytes, _, rate_bps, latency_s = SPLIT_ARGS[cyc.next()]
        return split_python(size_bytes, streams[cyc.i], rate_bps, latency_s)

    chunks, t = benchmark(run)
    size_bytes, action, rate_bps, latency_s = SPLIT_ARGS[cyc.i]
    assert sum(chunks) == size_bytes
    native = itp.split_task(size_bytes, action, rate_bps, latency_s)
    assert t == pytest.approx(native.expected_time_s)
    benchmark.extra_info["role"] = "anchor"


# --- decision core: normalise + decode + split ----------------------------------------------------


@pytest.mark.benchmark(group="decision_core")
def test_decision_core_native_loop(benchmark: Any) -> None:
    results: list[dict[str, Any]] = []

    def run() -> dict[str, Any]:
        r: dict[str, Any] = _native._bench_decision_core(NATIVE_ITERATIONS, NATIVE_SEED)
        results.append(r)
        return r

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    checksums = {r["checksum"] for r in results}
    assert len(checksums) == 1, "same seed must give the same checksum"
    checksum = checksums.pop()
    assert math.isfinite(checksum) and checksum > 0
    for r in results:
        assert r["bytes_placed"] == r["bytes_requested"] > 0
        assert r["invalid_states"] == 0 and r["iterations"] == NATIVE_ITERATIONS
    best = min(results, key=lambda r: r["ns_per_call_mean"])
    median = sorted(results, key=lambda r: r["ns_per_call_mean"])[len(results) // 2]
    benchmark.extra_info.update(
        {
            "iterations_per_round": NATIVE_ITERATIONS,
            "ns_per_call_mean_median_round": median["ns_per_call_mean"],
            "ns_per_call_p50_median_round": median["ns_per_call_p50"],
            "ns_per_call_p99_median_round": median["ns_per_call_p99"],
            "ns_per_call_mean_best_round": best["ns_per_call_mean"],
            "checksum": checksum,
            "issue_target_ns": ISSUE_TARGET_NS,
        }
    )
    benchmark.extra_info["role"] = "itp"


@pytest.mark.benchmark(group="decision_core")
def test_decision_core_from_python(benchmark: Any) -> None:
    """The same three steps, one Python call each: a caller's cost per task through the binding."""
    cyc = _Cycle()
    rows = [STATES[i] for i in range(N_STATES)]

    def run() -> itp.Split:
        i = cyc.next()
        itp.normalize_state(rows[i])
        itp.decode_action(SPLIT_ARGS[i][1])
        return itp.split_task(*SPLIT_ARGS[i])

    split = benchmark(run)
    assert sum(split.chunk_bytes) == SPLIT_ARGS[cyc.i][0]
    benchmark.extra_info["role"] = "itp"


# --- normalize_states: a batch of 1024 -------------------------------------------------------------

BATCH_STATES = np.tile(STATES, (1024 // N_STATES, 1))


def normalize_numpy_batch(raw: npt.NDArray[np.float64], out: npt.NDArray[np.float32]) -> None:
    """Anchor: the feature table over N rows in numpy (validation included, as normalize_states does)."""
    if not np.all(np.isfinite(raw) & (raw >= 0)):
        raise ValueError("bad raw state")
    x = raw / SCALE
    x[:, 17] = np.log2(np.maximum(raw[:, 17], 1.0)) / 40.0
    np.clip(x, 0.0, 1.0, out=x)
    out[:] = x


@pytest.mark.benchmark(group="normalize_states 1024")
def test_normalize_states_itp(benchmark: Any) -> None:
    out = np.empty((len(BATCH_STATES), itp.NUM_FEATURES), np.float32)
    result = benchmark(lambda: itp.normalize_states(BATCH_STATES, out))
    assert result is out
    want = np.empty_like(out)
    normalize_numpy_batch(BATCH_STATES, want)
    np.testing.assert_allclose(out, want, rtol=0, atol=1.2e-7)
    benchmark.extra_info["role"] = "itp"


@pytest.mark.benchmark(group="normalize_states 1024")
def test_normalize_states_numpy_anchor(benchmark: Any) -> None:
    out = np.empty((len(BATCH_STATES), itp.NUM_FEATURES), np.float32)
    benchmark(lambda: normalize_numpy_batch(BATCH_STATES, out))
    np.testing.assert_allclose(out, itp.normalize_states(BATCH_STATES), rtol=0, atol=1.2e-7)
    benchmark.extra_info["role"] = "anchor"
