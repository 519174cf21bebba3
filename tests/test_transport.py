"""The transport-aware split (itp.transport) against a bisection reference and the simulator's physics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import reference_transport as ref
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from itp import _native
from itp.actions import ACTION_STREAMS, split_task
from itp.calibration import chunk_time_s
from itp.sim.physics import SimConfig, StreamParams, StreamTrajectory, simulate_chunk
from itp.transport import (
    DEFAULT_TRANSPORT_PARAMS,
    INITIAL_WINDOW_BITS,
    SEGMENT_BITS,
    SETUP_RTTS,
    TransportParams,
    production_split,
    transport_chunk_time,
    transport_split,
)

rates = st.one_of(st.just(0.0), st.floats(1e3, 1e11))
rtts = st.one_of(st.just(0.0), st.floats(1e-4, 2.0))
sizes = st.one_of(st.integers(1, 1 << 20), st.integers(1, 1 << 50))
actions = st.integers(0, 14)


def test_constants_are_the_documented_tcp_model() -> None:
    assert SETUP_RTTS == ref.SETUP_RTTS == 2.0
    assert INITIAL_WINDOW_BITS == ref.W_BITS == 8 * 14600


@given(st.floats(0.0, 2.0**53), st.floats(1e3, 1e11), rtts)
def test_chunk_time_matches_reference(bits: float, rate: float, rtt: float) -> None:
    assert transport_chunk_time(bits, rate, rtt) == pytest.approx(ref.chunk_time(bits, rate, rtt), rel=1e-12)


def test_chunk_time_of_a_small_chunk_is_rtts_not_rate() -> None:
    # 64 KiB stays inside slow start on a 500 Mbit/s, 20 ms stream: 2 RTT + log2(1 + b/W) RTTs.
    bits = 8 * 65536
    want = 0.02 * (2.0 + math.log2(1.0 + bits / (8 * 14600)))
    assert transport_chunk_time(bits, 5e8, 0.02) == pytest.approx(want, rel=1e-12)
    assert transport_chunk_time(bits, 5e9, 0.02) == pytest.approx(want, rel=1e-12)
    assert transport_chunk_time(bits, 0.0, 0.02) == math.inf


@settings(max_examples=300, deadline=None)
@given(sizes, actions, st.lists(rates, min_size=4, max_size=4), st.lists(rtts, min_size=4, max_size=4))
def test_split_matches_bisection_reference(
    size: int, action: int, rate: list[float], rtt: list[float]
) -> None:
    got = transport_split(size, action, rate, rtt)
    want_chunks, want_t = ref.transport_split(size, ACTION_STREAMS[action], rate, rtt)
    assert sum(got.chunk_bytes) == size
    assert all(c >= 0 for c in got.chunk_bytes)
    assert all(got.chunk_bytes[i] == 0 for i in range(4) if i not in ACTION_STREAMS[action])
    if math.isinf(want_t):
        assert math.isinf(got.expected_time_s)
        assert got.chunk_bytes == want_chunks
        return
    assert got.expected_time_s == pytest.approx(want_t, rel=1e-9, abs=1e-12)
    tolerance = 2 + 1e-8 * size
    for g, w in zip(got.chunk_bytes, want_chunks, strict=True):
        assert abs(g - w) <= tolerance


@settings(max_examples=200, deadline=None)
@given(sizes, st.lists(st.floats(1e3, 1e11), min_size=4, max_size=4), st.lists(rtts, min_size=4, max_size=4))
def test_more_streams_never_raise_the_finish_time(size: int, rate: list[float], rtt: list[float]) -> None:
    times = [transport_split(size, a, rate, rtt).expected_time_s for a in range(15)]
    for a, streams in enumerate(ACTION_STREAMS):
        for b, more in enumerate(ACTION_STREAMS):
            if set(streams) < set(more):
                assert times[b] <= times[a] * (1 + 1e-12)


@settings(max_examples=200, deadline=None)
@given(st.integers(1 << 34, 1 << 50), st.lists(st.floats(1e6, 1e10), min_size=4, max_size=4),
       st.lists(st.floats(1e-3, 0.5), min_size=4, max_size=4))
def test_past_the_ramp_it_is_the_plain_split_with_ramp_latency(
    size: int, rate: list[float], rtt: list[float]
) -> None:
    """For chunks past slow start, t = a + s - rho/r + b/r exactly: the plain split with that latency.

    A large task alone does not put every chunk past its ramp: a fast stream with a long RTT ramps over up
    to r * R bits (5 Gbit/s at 500 ms: 306 MB), more than its share can be (hypothesis found 16 GiB over
    1 Mbit/s, 4.9 and twice 9.8 Gbit/s). Such draws are outside the claim and are skipped."""
    latency, ramp_bits = [], []
    for r, R in zip(rate, rtt, strict=True):
        bdp = r * R
        ramp = (R * math.log2(bdp / ref.W_BITS), bdp - ref.W_BITS) if bdp > ref.W_BITS else (0.0, 0.0)
        latency.append(ref.SETUP_RTTS * R + ramp[0] - ramp[1] / r)
        ramp_bits.append(ramp[1])
    got = transport_split(size, 14, rate, rtt)
    plain = split_task(size, 14, rate, latency)
    assume(all(8.0 * c >= 1.001 * b for c, b in zip(plain.chunk_bytes, ramp_bits, strict=True)))
    assert got.expected_time_s == pytest.approx(plain.expected_time_s, rel=1e-9)
    for g, w in zip(got.chunk_bytes, plain.chunk_bytes, strict=True):
        assert abs(g - w) <= 2 + 1e-8 * size


def test_no_usable_stream_puts_everything_on_the_lowest_rtt() -> None:
    got = transport_split(1000, 14, [0.0, 0.0, 0.0, 0.0], [0.3, 0.1, 0.2, 0.1])
    assert got.chunk_bytes == (0, 1000, 0, 0)
    assert math.isinf(got.expected_time_s)


def test_a_stream_whose_setup_outlasts_the_task_is_dropped() -> None:
    got = transport_split(64 * 1024, 14, [1e9, 1e9, 1e9, 1e9], [0.01, 0.01, 0.01, 1.0])
    assert got.chunk_bytes[3] == 0
    assert got.stream_ids == (0, 1, 2)


@pytest.mark.parametrize("size", [64 * 1024, 1 << 20, 100 << 20, 4 << 30])
@pytest.mark.parametrize("n_streams", [1, 2, 4])
def test_model_agrees_with_the_simulator_on_a_steady_lossless_stream(size: int, n_streams: int) -> None:
    """With constant rates, no jitter, no congestion and no loss the simulator's chunk physics and the
    transport model are the same formula: every chunk finishes at the predicted time."""
    rate, rtt = [3e8, 7e8, 1e8, 9e8], [0.03, 0.08, 0.01, 0.05]
    action = {1: 0, 2: 4, 4: 14}[n_streams]
    split = transport_split(size, action, rate, rtt)
    cfg = SimConfig(loss_base=0.0, loss_congestion=0.0, hazard_base_per_s=0.0, hazard_congestion_per_s=0.0,
                    jitter_fraction=0.0, queueing_factor=0.0, setup_rtts=1.5)
    zeros = np.zeros(cfg.max_attempts)
    for i in split.stream_ids:
        traj = StreamTrajectory(np.full(10, rate[i]), np.zeros(10), bin_s=cfg.bin_s)
        res = simulate_chunk(traj, StreamParams(rtt[i], 0.0, 1.0), cfg, 0.0, split.chunk_bytes[i],
                             np.ones(cfg.max_attempts), zeros, zeros)
        assert res.success
        # Integer rounding moves a finish time by at most one byte's worth of transfer, which in slow
        # start takes up to R / (W ln 2) seconds per bit.
        per_bit_s = max(1.0 / rate[i], rtt[i] / (math.log(2) * ref.W_BITS))
        assert res.finish_s == pytest.approx(split.expected_time_s, rel=1e-9, abs=8.0 * per_bit_s)


def test_production_split_uses_effective_rates_and_rtts() -> None:
    raw = np.zeros(20)
    raw[0:4] = [4e8, 8e8, 2e8, 1e8]
    raw[4:8] = [0.02, 0.04, 0.03, 0.1]
    raw[12:16] = [1.0, 0.5, 0.9, 1.0]
    raw[17] = 50 << 20
    for a in range(15):
        got = production_split(raw, a)
        want = transport_split(50 << 20, a, raw[0:4] * raw[12:16], raw[4:8])
        assert got == want


ONES, ZEROS = [1.0] * 4, [0.0] * 4


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: transport_split(0, 14, ONES, ZEROS), ValueError, r"size_bytes must be in .*, got 0$"),
        (lambda: transport_split(2**51, 14, ONES, ZEROS), ValueError, "size_bytes"),
        (lambda: transport_split(1.5, 14, ONES, ZEROS), TypeError, "size_bytes must be an int"),
        (lambda: transport_split(10, 15, ONES, ZEROS), ValueError, r"action must be in 0\.\.14, got 15"),
        (lambda: transport_split(10, True, ONES, ZEROS), TypeError, "action must be an int"),
        (lambda: transport_split(10, 1, [1.0, -1.0, 1.0, 1.0], ZEROS), ValueError, "rate_bps must be finite"),
        (lambda: transport_split(10, 1, ONES, [0.0, 0.0, math.nan, 0.0]), ValueError, "rtt_s must be finite"),
        (lambda: transport_split(10, 1, [1.0] * 3, ZEROS), ValueError, r"rate_bps must have shape \(4,\)"),
        (lambda: transport_chunk_time(-1.0, 1.0, 0.1), ValueError, "bits must be finite and >= 0"),
        (lambda: production_split(np.zeros(20), 3), ValueError, "task_size_bytes must be in"),
        (lambda: production_split(np.full(20, np.inf), 3), ValueError, "bandwidth_bps"),
    ],
)
def test_bad_input_is_named(call: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_native_constants_exposed() -> None:
    assert _native.SETUP_RTTS == 2.0


# ------------------------------------------------------------------------------ runtime parameters
setup_rtts_st = st.floats(0.0, 6.0)
window_st = st.one_of(st.floats(SEGMENT_BITS, 2.0**40), st.just(math.inf))
efficiency_st = st.floats(0.05, 4.0)
params_st = st.tuples(setup_rtts_st, window_st, efficiency_st)


def _table(params: list[tuple[float, float, float]]) -> np.ndarray:
    return np.array(params, dtype=np.float64)


@settings(max_examples=300, deadline=None)
@given(sizes, actions, st.lists(rates, min_size=4, max_size=4), st.lists(rtts, min_size=4, max_size=4),
       st.lists(params_st, min_size=4, max_size=4))
def test_split_with_arbitrary_params_matches_bisection_reference(
    size: int, action: int, rate: list[float], rtt: list[float], params: list[tuple[float, float, float]]
) -> None:
    chunks, t = _native.transport_split(size, action, rate, rtt, _table(params))
    want_chunks, want_t = ref.transport_split(size, ACTION_STREAMS[action], rate, rtt, params)
    assert sum(chunks) == size
    assert all(chunks[i] == 0 for i in range(4) if i not in ACTION_STREAMS[action])
    if math.isinf(want_t):
        assert math.isinf(t)
        assert tuple(chunks) == want_chunks
        return
    assert t == pytest.approx(want_t, rel=1e-9, abs=1e-12)
    for g, w in zip(chunks, want_chunks, strict=True):
        assert abs(g - w) <= 2 + 1e-8 * size


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 2.0**53), st.floats(1e3, 1e11), rtts, params_st)
def test_chunk_time_with_params_matches_reference(
    bits: float, rate: float, rtt: float, params: tuple[float, float, float]
) -> None:
    got = _native.transport_chunk_time(bits, rate, rtt, *params)
    assert got == pytest.approx(ref.chunk_time(bits, rate, rtt, params), rel=1e-12)
    if math.isfinite(params[1]):
        p = TransportParams(*params)
        assert transport_chunk_time(bits, rate, rtt, p) == got
        assert float(chunk_time_s(bits, rate, rtt, p)) == pytest.approx(got, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(sizes, actions, st.lists(rates, min_size=4, max_size=4), st.lists(rtts, min_size=4, max_size=4))
def test_default_params_are_bit_identical_to_no_params(
    size: int, action: int, rate: list[float], rtt: list[float]
) -> None:
    default = [DEFAULT_TRANSPORT_PARAMS] * 4
    assert transport_split(size, action, rate, rtt, default) == transport_split(size, action, rate, rtt)
    assert transport_split(size, action, rate, rtt, DEFAULT_TRANSPORT_PARAMS) == transport_split(
        size, action, rate, rtt
    )


def test_warm_stream_without_slow_start_is_the_plain_split() -> None:
    """W = inf and S = 0.5: a chunk costs 0.5 RTT + b / (eta r), the plain split with latency 0.5 R."""
    rate, rtt = [3e8, 7e8, 1e8, 9e8], [0.03, 0.08, 0.01, 0.05]
    table = _table([(0.5, math.inf, 0.8)] * 4)
    chunks, t = _native.transport_split(64 * 1024, 14, rate, rtt, table)
    plain = split_task(64 * 1024, 14, [0.8 * r for r in rate], [0.5 * r for r in rtt])
    assert t == pytest.approx(plain.expected_time_s, rel=1e-9)
    for g, w in zip(chunks, plain.chunk_bytes, strict=True):
        assert abs(g - w) <= 2


def test_production_split_uses_the_params() -> None:
    raw = np.zeros(20)
    raw[0:4] = [4e8, 8e8, 2e8, 1e8]
    raw[4:8] = [0.02, 0.04, 0.03, 0.1]
    raw[12:16] = [1.0, 0.5, 0.9, 1.0]
    raw[17] = 1 << 20
    p = [TransportParams(0.5, 2.0**30, 1.0), TransportParams(1.0, 1e6, 0.5), DEFAULT_TRANSPORT_PARAMS,
         TransportParams(3.0, SEGMENT_BITS, 2.0)]
    for a in range(15):
        assert production_split(raw, a, p) == transport_split(1 << 20, a, raw[0:4] * raw[12:16], raw[4:8], p)
    assert production_split(raw, 14, p) != production_split(raw, 14)


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ((-1.0, 1e5, 1.0), r"transport_params\[2\]\.setup_rtts must be finite and >= 0, got -1"),
        ((math.nan, 1e5, 1.0), r"transport_params\[2\]\.setup_rtts"),
        ((2.0, 0.0, 1.0), r"transport_params\[2\]\.initial_window_bits must be > 0"),
        ((2.0, math.nan, 1.0), r"transport_params\[2\]\.initial_window_bits"),
        ((2.0, 1e5, 0.0), r"transport_params\[2\]\.efficiency must be finite and > 0, got 0"),
        ((2.0, 1e5, math.inf), r"transport_params\[2\]\.efficiency"),
    ],
)
def test_bad_params_are_named(row: tuple[float, float, float], match: str) -> None:
    table = _table([(2.0, 1e5, 1.0), (2.0, 1e5, 1.0), row, (2.0, 1e5, 1.0)])
    with pytest.raises(ValueError, match=match):
        _native.transport_split(10, 14, ONES, ZEROS, table)
    engine = _native.DecisionEngine(0)
    before = engine.transport_params().copy()
    with pytest.raises(ValueError, match=match):
        engine.set_transport_params(table)
    assert np.array_equal(engine.transport_params(), before)


def test_params_must_be_four_transport_params() -> None:
    with pytest.raises(ValueError, match=r"one TransportParams per stream \(4\), got 3"):
        transport_split(10, 14, ONES, ZEROS, [DEFAULT_TRANSPORT_PARAMS] * 3)
    with pytest.raises(TypeError, match=r"params\[1\] must be a TransportParams, got tuple"):
        transport_split(10, 14, ONES, ZEROS, [DEFAULT_TRANSPORT_PARAMS, (2.0, 1.0, 1.0)] * 2)  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"transport_params must have shape \(4, 3\)"):
        _native.transport_split(10, 14, ONES, ZEROS, np.ones((4, 2)))
    with pytest.raises(ValueError, match="efficiency must be finite and > 0"):
        _native.transport_chunk_time(8.0, 1.0, 0.1, 2.0, 1e5, -1.0)
