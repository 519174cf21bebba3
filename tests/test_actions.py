"""The action table, encode/decode and the equal-finish-time split (itp.actions) against the exact
pure-Python references in tests/reference.py."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from reference import (
    ACTION_STREAMS_REF,
    MAX_TASK_BYTES,
    decode_action_ref,
    encode_streams_ref,
    split_ref,
)

import itp
from itp import _native

# The table exactly as the issue states it, typed in, next to the generated reference.
ISSUE_TABLE = (
    (0,), (1,), (2,), (3,),
    (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3),
    (0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3),
    (0, 1, 2, 3),
)  # fmt: skip

# An integer chunk is floor or floor + 1 of the native real-valued share, whose rounding error is
# below 1e-3 byte (see cpp/src/actions.cpp), so it is within 1 byte (+ that slack) of the exact
# share.
ONE_BYTE = 1 + Fraction(1, 1000)
TIME_RTOL = 1e-12


# --- table, encode, decode ------------------------------------------------------------------------


def test_action_table_matches_issue_order() -> None:
    assert ACTION_STREAMS_REF == ISSUE_TABLE
    assert itp.ACTION_STREAMS == ISSUE_TABLE
    assert itp.NUM_ACTIONS == 15
    assert itp.MAX_TASK_BYTES == MAX_TASK_BYTES == 2**50
    assert [itp.decode_action(a) for a in range(15)] == list(ISSUE_TABLE)


@pytest.mark.parametrize("action", range(15))
def test_decode_encode_are_exact_inverses(action: int) -> None:
    streams = itp.decode_action(action)
    assert streams == decode_action_ref(action)
    assert list(streams) == sorted(set(streams))  # ascending, distinct
    for perm in itertools.permutations(streams):
        assert itp.encode_streams(perm) == action == encode_streams_ref(perm)
        assert itp.encode_streams(list(perm)) == action
        assert itp.encode_streams(iter(perm)) == action


def test_encode_covers_every_non_empty_subset_once() -> None:
    subsets = [combo for k in range(1, 5) for combo in itertools.combinations(range(4), k)]
    actions = [itp.encode_streams(s) for s in subsets]
    assert sorted(actions) == list(range(15))


@pytest.mark.parametrize(
    ("action", "exc", "pattern"),
    [
        (-1, ValueError, r"action must be in 0\.\.14, got -1"),
        (15, ValueError, r"action must be in 0\.\.14, got 15"),
        (10**6, ValueError, r"action must be in 0\.\.14, got 1000000"),
        (1.0, TypeError, r"action"),
        ("1", TypeError, r"action"),
        (None, TypeError, r"action"),
    ],
)
def test_decode_rejects_bad_actions(action: object, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        itp.decode_action(action)  # type: ignore[arg-type]


def test_decode_rejects_huge_int() -> None:
    with pytest.raises((TypeError, ValueError), match="action"):
        itp.decode_action(2**70)


def test_decode_accepts_numpy_integer() -> None:
    assert itp.decode_action(np.int64(13)) == (1, 2, 3)


def test_decode_rejects_bool_action() -> None:
    with pytest.raises(TypeError, match="action"):
        itp.decode_action(True)


@pytest.mark.parametrize(
    ("streams", "exc", "pattern"),
    [
        ([], ValueError, r"at least one stream id"),
        ((), ValueError, r"at least one stream id"),
        ([0, 0], ValueError, r"stream id 0 appears twice"),
        ([3, 1, 3], ValueError, r"stream id 3 appears twice"),
        ([4], ValueError, r"stream id must be in 0\.\.3, got 4"),
        ([-1], ValueError, r"stream id must be in 0\.\.3, got -1"),
        ([0, 2**40], ValueError, r"stream id must be in 0\.\.3"),
        ([1.0], TypeError, r"stream id must be an int, got float"),
        ([True], TypeError, r"stream id must be an int, got bool"),
        ("01", TypeError, r"stream id must be an int, got str"),
        ([None], TypeError, r"stream id must be an int, got NoneType"),
    ],
)
def test_encode_rejects_bad_streams(streams: object, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        itp.encode_streams(streams)  # type: ignore[arg-type]


def test_encode_rejects_non_iterable() -> None:
    with pytest.raises(TypeError):
        itp.encode_streams(3)  # type: ignore[arg-type]


def test_encode_accepts_numpy_integers() -> None:
    assert itp.encode_streams(np.array([2, 0])) == 5


# --- split: properties against the exact reference ------------------------------------------------

sizes = st.one_of(
    st.integers(1, 1000),
    st.integers(1, MAX_TASK_BYTES),
    st.sampled_from([1, 2, 3, 2**20, MAX_TASK_BYTES - 1, MAX_TASK_BYTES]),
)
rates = st.one_of(
    st.just(0.0),
    st.floats(1.0, 1e12),  # 1 bit/s .. 1 Tbit/s
    st.floats(1e-3, 1e15),
    st.sampled_from([1e6, 1e9, 8.0]),  # repeated values make rate ties
)
latencies = st.one_of(
    st.floats(0.0, 0.5),
    st.floats(0.0, 1e6),
    st.sampled_from([0.0, 0.01, 0.02, 0.1]),  # latency ties and zero
)
stream_metrics = (
    st.tuples(rates, rates, rates, rates),
    st.tuples(latencies, latencies, latencies, latencies),
)


def check_split(
    size_bytes: int, action: int, rate_bps: tuple[float, ...], latency_s: tuple[float, ...]
) -> None:
    """Every property of one split, checked against the exact reference."""
    split = itp.split_task(size_bytes, action, list(rate_bps), list(latency_s))
    chunks = split.chunk_bytes
    streams = ACTION_STREAMS_REF[action]
    ref = split_ref(size_bytes, streams, rate_bps, latency_s)

    assert len(chunks) == 4
    assert all(type(c) is int and c >= 0 for c in chunks)
    assert sum(chunks) == size_bytes
    for i in range(4):
        if i not in streams:
            assert chunks[i] == 0, f"stream {i} is not in action {action}"

    if ref.time_s is None:  # no positive rate in the set
        assert ref.fallback_stream is not None
        assert split.expected_time_s == math.inf
        assert chunks[ref.fallback_stream] == size_bytes
        assert split.stream_ids == (ref.fallback_stream,)
        return

    t = ref.time_s
    try:
        t_float = float(t)
    except OverflowError:  # T beyond the double range (e.g. a subnormal rate): reported as +inf
        t_float = math.inf
    if math.isinf(t_float):
        assert split.expected_time_s == math.inf
    else:
        assert math.isclose(split.expected_time_s, t_float, rel_tol=TIME_RTOL, abs_tol=0.0)
    for i in streams:
        r = Fraction(rate_bps[i])
        lat = Fraction(latency_s[i])
        if r == 0:
            assert chunks[i] == 0, f"stream {i} has rate 0"
            continue
        if lat >= t:
            assert chunks[i] == 0, f"stream {i}: latency {latency_s[i]} >= T {float(t)}"
        assert abs(chunks[i] - ref.share_bytes[i]) <= ONE_BYTE, (
            i,
            chunks[i],
            float(ref.share_bytes[i]),
        )
        if chunks[i] > 0:
            # Finish time of the integer chunk: T up to the time of one byte on that stream.
            finish = lat + 8 * Fraction(chunks[i]) / r
            assert abs(finish - t) <= 8 * ONE_BYTE / r + Fraction(TIME_RTOL) * t
    assert split.stream_ids == tuple(i for i in range(4) if chunks[i] > 0)


@settings(max_examples=1000, deadline=None)
@given(size_bytes=sizes, action=st.integers(0, 14), metrics=st.tuples(*stream_metrics))
@example(size_bytes=1, action=14, metrics=((1e9, 2e9, 0.0, 5e8), (0.01, 0.02, 0.0, 0.1)))
@example(size_bytes=2**50, action=14, metrics=((1e9, 2e9, 0.0, 5e8), (0.01, 0.02, 0.0, 0.1)))
@example(size_bytes=2**50, action=14, metrics=((1e15, 1e15, 1e-3, 1e-3), (1e6, 1e6, 0.0, 1e6)))
@example(size_bytes=10, action=14, metrics=((0.0, 0.0, 0.0, 0.0), (0.3, 0.1, 0.2, 0.1)))
def test_split_matches_exact_reference(
    size_bytes: int, action: int, metrics: tuple[tuple[float, ...], tuple[float, ...]]
) -> None:
    check_split(size_bytes, action, *metrics)


@settings(max_examples=200, deadline=None)
@given(size_bytes=sizes, metrics=st.tuples(*stream_metrics))
def test_adding_a_positive_rate_stream_never_raises_the_time(
    size_bytes: int, metrics: tuple[tuple[float, ...], tuple[float, ...]]
) -> None:
    rate_bps, latency_s = metrics
    times = [
        itp.split_task(size_bytes, a, list(rate_bps), list(latency_s)).expected_time_s
        for a in range(15)
    ]
    pairs = 0
    for a, b in itertools.product(range(15), repeat=2):
        small, big = set(ACTION_STREAMS_REF[a]), set(ACTION_STREAMS_REF[b])
        if small < big and all(rate_bps[i] > 0 for i in big - small):
            pairs += 1
            assert times[b] <= times[a] * (1 + TIME_RTOL), (a, b, times[a], times[b])
    assert (pairs > 0) == any(r > 0 for r in rate_bps)


# --- split: worked examples and edges -------------------------------------------------------------


def test_latency_alone_beyond_finish_time_gets_nothing() -> None:
    # 1000 bytes, each stream 8000 bit/s (1000 B/s). {0}: T = 1.0; {0,1}: T = 0.75 (0.5 s head start
    # for stream 0); stream 2 starts at 1.0 >= 0.75, stream 3 at 2.0: both unused.
    split = itp.split_task(1000, 14, [8000.0] * 4, [0.0, 0.5, 1.0, 2.0])
    assert split.chunk_bytes == (750, 250, 0, 0)
    assert split.expected_time_s == 0.75
    # Boundary: stream 1's latency equals the single-stream finish time exactly, so it is not used.
    split = itp.split_task(1000, 4, [8000.0, 8000.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0])
    assert split.chunk_bytes == (1000, 0, 0, 0)
    assert split.expected_time_s == 1.0


def test_equal_streams_share_equally() -> None:
    split = itp.split_task(2**50, 14, [1e9] * 4, [0.0] * 4)
    assert split.chunk_bytes == (2**48,) * 4
    assert split.expected_time_s == 8 * 2**48 / 1e9
    odd = itp.split_task(7, 14, [1e9] * 4, [0.01] * 4)
    assert sorted(odd.chunk_bytes) == [1, 2, 2, 2]


@pytest.mark.parametrize("size_bytes", [1, 2, 3, 1000, 2**32 + 1, 2**50 - 1, 2**50])
def test_sizes_across_the_whole_range(size_bytes: int) -> None:
    check_split(size_bytes, 14, (1e8, 3e8, 7e8, 0.0), (0.02, 0.001, 0.3, 0.0))
    check_split(size_bytes, 12, (1e8, 3e8, 7e8, 2e9), (0.02, 0.001, 0.3, 0.0))


@pytest.mark.parametrize("action", range(15))
def test_all_zero_rate_set_uses_lowest_latency_stream(action: int) -> None:
    streams = ACTION_STREAMS_REF[action]
    rate_bps = [0.0 if i in streams else 1e9 for i in range(4)]
    latency_s = [0.4, 0.1, 0.3, 0.2]
    split = itp.split_task(12345, action, rate_bps, latency_s)
    best = min(streams, key=lambda i: latency_s[i])
    assert split.chunk_bytes[best] == 12345 and sum(split.chunk_bytes) == 12345
    assert split.expected_time_s == math.inf
    # Latency ties go to the lowest stream id.
    tied = itp.split_task(5, action, rate_bps, [0.1] * 4)
    assert tied.chunk_bytes[min(streams)] == 5


def test_zero_rate_streams_get_nothing_beside_live_ones() -> None:
    split = itp.split_task(10**9, 14, [0.0, 1e9, 0.0, 1e6], [0.0, 0.05, 0.0, 0.06])
    assert split.chunk_bytes[0] == split.chunk_bytes[2] == 0
    check_split(10**9, 14, (0.0, 1e9, 0.0, 1e6), (0.0, 0.05, 0.0, 0.06))


@pytest.mark.parametrize(
    ("rate_bps", "latency_s"),
    [
        # Latencies at the top of the double range: the two live streams are identical and must
        # share equally (a cancellation-prone formula put every byte on one of them).
        ((0.0, 1.15e253, 1.7e308, 1.7e308), (1.7e308, 0.0, 1.7e308, 1.7e308)),
        ((1e15, 2723.0, 1.06e11, 1e15), (1e6, 1e-9, 0.0, 1e6)),
        ((5e-324, 1e-300, 1e300, 1.0), (0.0, 1e-300, 1e300, 5e-324)),
        ((1e300, 1e300, 1e300, 1e300), (0.0, 1e-300, 2e-300, 3e-300)),
    ],
)
@pytest.mark.parametrize("size_bytes", [1, 99991, 2**50])
def test_extreme_magnitudes_stay_exact(
    size_bytes: int, rate_bps: tuple[float, ...], latency_s: tuple[float, ...]
) -> None:
    for action in range(15):
        check_split(size_bytes, action, rate_bps, latency_s)


def test_split_accepts_numpy_and_int_metrics() -> None:
    a = itp.split_task(
        10**6, 14, np.array([1e6, 2e6, 3e6, 4e6]), np.array([0.01, 0.02, 0.03, 0.04])
    )
    b = itp.split_task(
        10**6, 14, [10**6, 2 * 10**6, 3 * 10**6, 4 * 10**6], (0.01, 0.02, 0.03, 0.04)
    )
    assert a == b
    strided = np.zeros((4, 2))
    strided[:, 0] = [1e6, 2e6, 3e6, 4e6]
    assert itp.split_task(10**6, 14, strided[:, 0], [0.01, 0.02, 0.03, 0.04]) == a


# --- split: bad input -----------------------------------------------------------------------------

GOOD_RATES = [1e9, 1e9, 1e9, 1e9]
GOOD_LATENCIES = [0.01, 0.01, 0.01, 0.01]


@pytest.mark.parametrize(
    ("size_bytes", "exc", "pattern"),
    [
        (0, ValueError, r"size_bytes must be in 1\.\.2\*\*50, got 0"),
        (-1, ValueError, r"size_bytes must be in 1\.\.2\*\*50, got -1"),
        (2**50 + 1, ValueError, r"size_bytes must be in 1\.\.2\*\*50, got 1125899906842625"),
        (2**64, ValueError, r"size_bytes must be in 1\.\.2\*\*50"),
        (-(2**70), ValueError, r"size_bytes must be in 1\.\.2\*\*50"),
        (1.0, TypeError, r"size_bytes must be an int, got float"),
        (True, TypeError, r"size_bytes must be an int, got bool"),
        ("10", TypeError, r"size_bytes must be an int, got str"),
        (None, TypeError, r"size_bytes must be an int, got NoneType"),
    ],
)
def test_split_rejects_bad_size(size_bytes: object, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        itp.split_task(size_bytes, 14, GOOD_RATES, GOOD_LATENCIES)  # type: ignore[arg-type]


@pytest.mark.parametrize("action", [-1, 15])
def test_split_rejects_bad_action(action: int) -> None:
    with pytest.raises(ValueError, match=rf"action must be in 0\.\.14, got {action}"):
        itp.split_task(100, action, GOOD_RATES, GOOD_LATENCIES)


@pytest.mark.parametrize("field", ["rate_bps", "latency_s"])
@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize(
    ("bad", "shown"), [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf"), (-1.0, "-1")]
)
def test_split_rejects_bad_stream_metric(field: str, index: int, bad: float, shown: str) -> None:
    values = {"rate_bps": list(GOOD_RATES), "latency_s": list(GOOD_LATENCIES)}
    values[field][index] = bad
    with pytest.raises(
        ValueError, match=rf"^{field}\[{index}\] must be finite and >= 0, got {shown}$"
    ):
        itp.split_task(100, 14, values["rate_bps"], values["latency_s"])


@pytest.mark.parametrize("field", ["rate_bps", "latency_s"])
@pytest.mark.parametrize(
    ("value", "exc", "pattern"),
    [
        ([1.0] * 3, ValueError, r"must have shape \(4,\), got \(3,\)"),
        ([1.0] * 5, ValueError, r"must have shape \(4,\), got \(5,\)"),
        (np.ones((2, 4)), ValueError, r"must have shape \(4,\), got \(2, 4\)"),
        (1.0, ValueError, r"must have shape \(4,\)"),
        (["a", "b", "c", "d"], TypeError, r"must hold numbers"),
        (None, TypeError, r""),
    ],
)
def test_split_rejects_bad_metric_shapes(
    field: str, value: object, exc: type, pattern: str
) -> None:
    values: dict[str, object] = {"rate_bps": GOOD_RATES, "latency_s": GOOD_LATENCIES}
    values[field] = value
    with pytest.raises(exc, match=f"{field}.*{pattern}" if pattern else field):
        itp.split_task(100, 14, values["rate_bps"], values["latency_s"])  # type: ignore[arg-type]


# --- the private native timing loop (figures belong in bench/; here only its correctness) ---------


def test_native_decision_core_bench_is_deterministic_and_exact() -> None:
    a = _native._bench_decision_core(5000, 3)
    b = _native._bench_decision_core(5000, 3)
    c = _native._bench_decision_core(5000, 4)
    assert a["checksum"] == b["checksum"] != c["checksum"]
    assert math.isfinite(a["checksum"]) and a["checksum"] > 0
    assert a["bytes_placed"] == a["bytes_requested"] > 0
    assert a["invalid_states"] == 0 and a["iterations"] == 5000
    for key in ("ns_per_call_mean", "ns_per_call_p50", "ns_per_call_p99"):
        assert a[key] > 0 and math.isfinite(a[key])
    assert a["ns_per_call_p50"] <= a["ns_per_call_p99"]
    with pytest.raises(ValueError, match="iterations"):
        _native._bench_decision_core(0, 1)
    with pytest.raises(ValueError, match="seed"):
        _native._bench_decision_core(10, -1)
