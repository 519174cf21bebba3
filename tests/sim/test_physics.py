"""Physics of the simulator: exact capacity integration, parallel chunks, stragglers, slow start, loss.

Every check builds streams with known rates (``StreamTrajectory`` over hand-made arrays) and fixed
per-attempt draws, so each expected number follows from the formulas in ``itp.sim.physics``'s
docstring. The capacity integral and its inverse are also checked against a slow bin-by-bin walk in
exact rational arithmetic.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itp.actions import encode_streams, split_task
from itp.sim.physics import (
    SimConfig,
    StreamParams,
    StreamTrajectory,
    diurnal_load,
    draw_stream_params,
    shared_congestion,
    simulate_chunk,
    simulate_task,
    synthetic_stream,
    trace_stream,
)
from itp.sim.traces import parse_trace_text

BIN_S = 0.1
GIB = 1024**3
LOSSLESS = SimConfig(
    loss_base=0.0, loss_congestion=0.0, hazard_base_per_s=0.0, hazard_congestion_per_s=0.0,
    jitter_fraction=0.0,
)
ATTEMPTS = LOSSLESS.max_attempts


def stream(rates_bps: list[float] | np.ndarray, congestion: float = 0.0) -> StreamTrajectory:
    """A looped stream with the given per-bin rates (bins of 0.1 s) and constant congestion."""
    r = np.asarray(rates_bps, dtype=np.float64)
    return StreamTrajectory(r, np.full(r.size, congestion), bin_s=BIN_S)


def flat(rate_bps: float, period_s: float = 100.0) -> StreamTrajectory:
    return stream(np.full(round(period_s / BIN_S), rate_bps))


def piecewise(pieces: list[tuple[float, float]]) -> StreamTrajectory:
    """A stream from ``(duration_s, rate_bps)`` pieces (durations multiples of 0.1 s)."""
    return stream(np.concatenate([np.full(round(d / BIN_S), r) for d, r in pieces]))


def params(rtt_s: float = 0.02) -> StreamParams:
    return StreamParams(base_rtt_s=rtt_s, jitter_s=0.0, loss_multiplier=1.0)


def ok_draws() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-attempt draws under which no attempt fails (u = 1 is never < q) and jitter is 0."""
    return np.ones(ATTEMPTS), np.zeros(ATTEMPTS), np.zeros(ATTEMPTS)


def task_draws(n: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.ones((n, ATTEMPTS)), np.zeros((n, ATTEMPTS)), np.zeros((n, ATTEMPTS))


def chunk_time(traj: StreamTrajectory, size_bytes: int, *, rtt_s: float = 0.02,
               config: SimConfig = LOSSLESS, t0_s: float = 0.0) -> float:
    return simulate_chunk(traj, params(rtt_s), config, t0_s, size_bytes, *ok_draws()).finish_s - t0_s


# ---------------------------------------------------------------------------------------------
# Parallel transfer, stragglers, rate changes


def test_two_equal_streams_halve_a_large_transfer() -> None:
    size = 4 * GIB
    r = 100e6
    streams = [flat(r), flat(r), flat(r), flat(r)]
    ps = [params()] * 4
    single = simulate_task(streams, ps, LOSSLESS, 0.0, (size, 0, 0, 0), *task_draws())
    # The production split puts exactly half on each of two equal streams.
    split = split_task(size, encode_streams([0, 1]), [r, r, 0.0, 0.0], [0.02] * 4)
    assert split.chunk_bytes == (size // 2, size - size // 2, 0, 0)
    pair = simulate_task(streams, ps, LOSSLESS, 0.0, split.chunk_bytes, *task_draws())
    assert single.success and pair.success
    assert single.finish_s == pytest.approx(8 * size / r, rel=1e-3)  # overheads are ~0.1 s of 344 s
    assert pair.finish_s / single.finish_s == pytest.approx(0.5, abs=1e-3)


def test_aggregate_rate_is_the_sum_of_the_streams_used() -> None:
    size = 4 * GIB
    rates = [100e6, 300e6, 50e6, 550e6]
    streams = [flat(r) for r in rates]
    split = split_task(size, 14, rates, [0.02] * 4)
    res = simulate_task(streams, [params()] * 4, LOSSLESS, 0.0, split.chunk_bytes, *task_draws())
    fluid = 8 * size / sum(rates)  # 34.4 s
    # Set-up (1.5 RTT), slow start (< 0.15 s at 550 Mbit/s and 20 ms) and the last half RTT on top.
    assert fluid < res.finish_s < fluid + 0.2
    assert res.delivered_bytes == size and res.retransmissions == 0


def test_task_completes_when_its_last_chunk_does() -> None:
    streams = [flat(100e6), flat(200e6), flat(50e6), flat(400e6)]
    chunks = (10_000_000, 5_000_000, 40_000_000, 1_000_000)
    res = simulate_task(streams, [params()] * 4, LOSSLESS, 3.0, chunks, *task_draws())
    finishes = [c.finish_s for c in res.chunks if c is not None]
    assert res.finish_s == max(finishes)
    assert res.chunks[2] is not None and res.finish_s == res.chunks[2].finish_s  # 3.2 s on stream 2


def test_unused_streams_are_not_simulated() -> None:
    streams = [flat(100e6)] * 4
    res = simulate_task(streams, [params()] * 4, LOSSLESS, 0.0, (0, 1000, 0, 0), *task_draws())
    assert [c is None for c in res.chunks] == [True, False, True, True]


def test_a_stream_that_dies_mid_transfer_is_the_straggler_of_a_split() -> None:
    size = GIB
    r = 200e6
    healthy = flat(r, period_s=200.0)
    dying = piecewise([(2.0, r), (60.0, 0.0), (138.0, r)])  # outage from 2 s to 62 s
    split = split_task(size, encode_streams([0, 1]), [r, r, 0.0, 0.0], [0.02] * 4)
    res = simulate_task([healthy, dying, healthy, healthy], [params()] * 4, LOSSLESS, 0.0,
                        split.chunk_bytes, *task_draws())
    alone = simulate_task([healthy] * 4, [params()] * 4, LOSSLESS, 0.0, (size, 0, 0, 0), *task_draws())
    c0, c1 = res.chunks[0], res.chunks[1]
    assert c0 is not None and c1 is not None
    assert res.finish_s == c1.finish_s > 62.0 > c0.finish_s  # the dead stream finishes last
    assert c1.finish_s - c0.finish_s == pytest.approx(60.0, abs=0.05)  # by the outage's length
    # Splitting onto the stream that died is worse than the healthy stream alone: the physics, not a
    # penalty, makes fewer streams better here.
    assert res.finish_s > alone.finish_s


def test_a_failed_chunk_is_resent_and_becomes_the_straggler() -> None:
    config = dataclasses.replace(LOSSLESS, loss_base=0.01)
    size = 100_000_000
    streams = [flat(100e6)] * 4
    ps = [params()] * 4
    u, frac, z = task_draws()
    clean = simulate_task(streams, ps, config, 0.0, (size // 2, size // 2, 0, 0), u, frac, z)
    u = u.copy()
    frac = frac.copy()
    u[1, 0] = 0.0  # stream 1's first attempt fails ...
    frac[1, 0] = 0.5  # ... half-way through its data
    res = simulate_task(streams, ps, config, 0.0, (size // 2, size // 2, 0, 0), u, frac, z)
    c0, c1 = res.chunks[0], res.chunks[1]
    assert c0 is not None and c1 is not None
    assert res.success and res.retransmissions == 1 and c1.failures == 1 and c1.attempts == 2
    assert res.finish_s == c1.finish_s > c0.finish_s == clean.finish_s
    # Lost: the failed attempt's set-up and the time to send half its bits (the rate is constant, so
    # that is its data phase less the second half's bits at the full rate), then the timeout.
    rtt = c0.rtt_sample_s
    data_s = clean.finish_s - 0.5 * rtt - config.setup_rtts * rtt  # ~4 s
    half_s = data_s - 8 * (size // 2) / 2 / 100e6
    lost = config.setup_rtts * rtt + half_s + max(config.rto_min_s, 2 * rtt)
    assert res.finish_s - clean.finish_s == pytest.approx(lost, rel=1e-9)


def test_a_rate_drop_mid_chunk_lengthens_it_exactly() -> None:
    r = 100e6
    size = int(10 * r / 8)  # ~10 s at the full rate
    ps = params()
    const = simulate_chunk(flat(r), ps, LOSSLESS, 0.0, size, *ok_draws())
    dropped = simulate_chunk(piecewise([(5.0, r), (95.0, r / 4)]), ps, LOSSLESS, 0.0, size, *ok_draws())
    # Same set-up and slow start; from 5 s on the rest goes 4x slower:
    # end_drop = 5 + 4 (end_const - 5)  =>  end_drop - end_const = 3 (end_const - 5).
    end_const = const.finish_s - 0.5 * const.rtt_sample_s
    assert dropped.finish_s - const.finish_s == pytest.approx(3.0 * (end_const - 5.0), rel=1e-9)
    assert dropped.rate_sample_bps < const.rate_sample_bps == pytest.approx(r)


def test_a_rate_rise_mid_chunk_shortens_it() -> None:
    r = 100e6
    size = int(10 * r / 8)
    ps = params()
    const = simulate_chunk(flat(r / 2), ps, LOSSLESS, 0.0, size, *ok_draws())
    rising = simulate_chunk(piecewise([(5.0, r / 2), (95.0, r)]), ps, LOSSLESS, 0.0, size, *ok_draws())
    assert rising.finish_s < const.finish_s


def test_an_outage_stalls_a_chunk_until_the_rate_returns() -> None:
    r = 100e6
    size = int(5 * r / 8)
    const = chunk_time(flat(r), size)
    stalled = chunk_time(piecewise([(2.0, r), (10.0, 0.0), (88.0, r)]), size)
    assert stalled - const == pytest.approx(10.0, abs=1e-9)


def test_a_chunk_starting_in_an_outage_waits_for_the_rate() -> None:
    r = 100e6
    traj = piecewise([(3.0, 0.0), (97.0, r)])
    size = 1_000_000
    t = chunk_time(traj, size)
    assert t == pytest.approx(3.0 + 8 * size / r + 0.5 * 0.02, abs=0.05)


def test_latency_dominates_small_tasks_and_rate_dominates_large_ones() -> None:
    """One nearby stream beats four far ones for 64 KiB; for 1 GiB all four win."""
    r = 500e6
    rtts = [0.01, 0.15, 0.15, 0.15]
    streams = [flat(r)] * 4
    ps = [params(x) for x in rtts]
    for size, four_better in ((64 * 1024, False), (GIB, True)):
        one = simulate_task(streams, ps, LOSSLESS, 0.0, (size, 0, 0, 0), *task_draws())
        split = split_task(size, 14, [r] * 4, rtts)
        four = simulate_task(streams, ps, LOSSLESS, 0.0, split.chunk_bytes, *task_draws())
        assert (four.finish_s < one.finish_s) is four_better


# ---------------------------------------------------------------------------------------------
# Per-chunk formulas


def test_slow_start_only_chunk_takes_log2_rounds() -> None:
    rtt = 0.05
    w_bits = 8.0 * LOSSLESS.initial_window_bytes
    size = 50_000  # far below r * rtt - W at 1 Gbit/s
    t = chunk_time(flat(1e9), size, rtt_s=rtt)
    expected = LOSSLESS.setup_rtts * rtt + rtt * math.log2(1.0 + 8 * size / w_bits) + 0.5 * rtt
    assert t == pytest.approx(expected, rel=1e-12)


def test_chunk_past_slow_start_integrates_the_rate() -> None:
    rtt, r = 0.05, 1e9
    w_bits = 8.0 * LOSSLESS.initial_window_bytes
    size = 500_000_000
    bdp = r * rtt
    res = simulate_chunk(flat(r), params(rtt), LOSSLESS, 0.0, size, *ok_draws())
    ramp_s = rtt * math.log2(bdp / w_bits)
    steady = (8 * size - (bdp - w_bits)) / r
    assert res.finish_s == pytest.approx(LOSSLESS.setup_rtts * rtt + ramp_s + steady + 0.5 * rtt)
    assert res.sample_start_s == pytest.approx(LOSSLESS.setup_rtts * rtt + ramp_s)
    assert res.rate_sample_bps == pytest.approx(r)


def test_rtt_includes_queueing_and_jitter() -> None:
    config = dataclasses.replace(LOSSLESS, queueing_factor=2.0)
    ps = StreamParams(base_rtt_s=0.04, jitter_s=0.004, loss_multiplier=1.0)
    u, f, _ = ok_draws()
    z = np.full(ATTEMPTS, 1.5)
    res = simulate_chunk(stream(np.full(100, 1e8), congestion=0.25), ps, config, 0.0, 1000, u, f, z)
    assert res.rtt_sample_s == pytest.approx(0.04 * (1 + 2.0 * 0.25) + 0.004 * 1.5)


def test_failure_probability_follows_the_formula() -> None:
    config = SimConfig(jitter_fraction=0.0)  # default loss model
    cong = 0.4
    traj = stream(np.full(1000, 1e8), congestion=cong)
    lm = 2.0
    ps = StreamParams(base_rtt_s=0.02, jitter_s=0.0, loss_multiplier=lm)
    size = 50_000_000
    ok = simulate_chunk(traj, ps, config, 0.0, size, *ok_draws())
    t_data = config.setup_rtts * ok.rtt_sample_s
    dur = ok.finish_s - 0.5 * ok.rtt_sample_s - t_data
    q0 = min(0.9, lm * (config.loss_base + config.loss_congestion * cong))
    lam = lm * (config.hazard_base_per_s + config.hazard_congestion_per_s * cong)
    q = 1.0 - (1.0 - q0) * math.exp(-lam * dur)
    _, f, z = ok_draws()
    below = simulate_chunk(traj, ps, config, 0.0, size, np.array([q * (1 - 1e-9), 1, 1, 1]), f, z)
    above = simulate_chunk(traj, ps, config, 0.0, size, np.array([q * (1 + 1e-9), 1, 1, 1]), f, z)
    assert below.failures == 1 and below.retransmissions == 1 and below.success
    assert above.failures == 0 and above.finish_s == ok.finish_s


@pytest.mark.parametrize("u", [0.0, 0.03])  # doomed at the start (u < q0) / hazard failure
def test_when_an_attempt_fails_does_not_depend_on_later_rates(u: float) -> None:
    """Causality: the failure time depends on the rates up to the failure, never on later ones."""
    config = SimConfig(jitter_fraction=0.0, max_attempts=1, hazard_base_per_s=0.01, loss_base=0.02)
    r = 100e6
    size = int(20 * r / 8)  # ~20 s of data
    ps = StreamParams(base_rtt_s=0.02, jitter_s=0.0, loss_multiplier=1.0)
    u_arr, f, z = np.array([u]), np.array([0.25]), np.zeros(1)
    same = simulate_chunk(flat(r, period_s=200.0), ps, config, 0.0, size, u_arr, f, z)
    assert not same.success  # failed (max_attempts = 1): finish_s is the failure time
    later_drop = piecewise([(same.finish_s // BIN_S * BIN_S + 0.2, r), (150.0, r / 10)])
    other = simulate_chunk(later_drop, ps, config, 0.0, size, u_arr, f, z)
    assert other.finish_s == same.finish_s and not other.success


def test_hazard_failure_time_is_exponential_in_seconds() -> None:
    config = SimConfig(jitter_fraction=0.0, max_attempts=1, loss_base=0.0, loss_congestion=0.0,
                       hazard_base_per_s=0.05, hazard_congestion_per_s=0.0)
    r = 100e6
    ps = StreamParams(base_rtt_s=0.02, jitter_s=0.0, loss_multiplier=1.0)
    u = 0.2
    res = simulate_chunk(flat(r), ps, config, 0.0, int(30 * r / 8), np.array([u]), np.zeros(1),
                         np.zeros(1))
    tau = -math.log(1.0 - u) / 0.05  # 4.46 s after the data starts
    assert res.finish_s == pytest.approx(config.setup_rtts * 0.02 + tau, rel=1e-12)
    assert res.rate_sample_bps == pytest.approx(r)  # measured over the steady part before failing


def test_a_chunk_that_fails_every_attempt_fails_the_task() -> None:
    config = SimConfig(jitter_fraction=0.0)
    streams = [flat(1e8)] * 4
    u, f, z = task_draws()
    u = u.copy()
    u[2, :] = 0.0  # every attempt on stream 2 fails
    f = np.full_like(f, 0.5)
    res = simulate_task(streams, [params()] * 4, config, 0.0, (1000, 0, 2000, 0), u, f, z)
    c2 = res.chunks[2]
    assert c2 is not None
    assert not res.success and not c2.success
    assert c2.attempts == c2.failures == config.max_attempts
    assert res.retransmissions == config.max_attempts - 1
    assert res.delivered_bytes == 1000


# ---------------------------------------------------------------------------------------------
# Exact capacity integration vs a slow reference


def ref_rate(rates: list[Fraction], offset: Fraction, t: Fraction) -> tuple[Fraction, Fraction]:
    """(rate at t, end of t's bin) of the looped piecewise-constant stream, exactly."""
    b = Fraction(BIN_S)
    k = math.floor((t + offset) / b)
    return rates[k % len(rates)], (k + 1) * b - offset


def ref_delivered(rates: list[Fraction], offset: Fraction, t0: Fraction, t1: Fraction) -> Fraction:
    """Bits carried from t0 to t1 >= t0, walking bin by bin."""
    total, t = Fraction(0), t0
    while t < t1:
        r, end = ref_rate(rates, offset, t)
        step_end = min(end, t1)
        total += r * (step_end - t)
        t = step_end
    return total


def ref_finish(rates: list[Fraction], offset: Fraction, t0: Fraction, bits: Fraction) -> Fraction:
    """Earliest t with ref_delivered(t0, t) == bits, walking bin by bin."""
    t, left = t0, bits
    while True:
        r, end = ref_rate(rates, offset, t)
        if r > 0 and r * (end - t) >= left:
            return t + left / r
        left -= r * (end - t)
        t = end


rate_lists = st.lists(
    st.one_of(st.just(0.0), st.floats(1e5, 1e9)), min_size=1, max_size=12
).filter(lambda xs: any(x > 0 for x in xs))


@settings(max_examples=150, deadline=None)
@given(
    rates=rate_lists,
    offset_frac=st.floats(0.0, 0.999),
    scale=st.floats(0.25, 8.0),
    t0=st.floats(-3.0, 20.0),
    span=st.floats(0.0, 7.0),
)
def test_capacity_integral_matches_a_bin_by_bin_walk(
    rates: list[float], offset_frac: float, scale: float, t0: float, span: float
) -> None:
    base = np.asarray(rates)
    offset = offset_frac * base.size * BIN_S
    traj = StreamTrajectory(base, np.zeros(base.size), bin_s=BIN_S, scale=scale, offset_s=offset)
    exact = [Fraction(scale) * Fraction(r) for r in rates]
    want = ref_delivered(exact, Fraction(offset), Fraction(t0), Fraction(t0) + Fraction(span))
    got = traj.capacity_bits(t0 + span) - traj.capacity_bits(t0)
    scale_bits = float(max(exact)) * (span + BIN_S)
    assert got == pytest.approx(float(want), abs=1e-9 * scale_bits + 1e-6)


@settings(max_examples=150, deadline=None)
@given(
    rates=rate_lists,
    offset_frac=st.floats(0.0, 0.999),
    scale=st.floats(0.25, 8.0),
    t0=st.floats(-3.0, 20.0),
    loops=st.floats(1e-6, 3.0),
)
def test_finish_time_is_the_exact_inverse_of_the_capacity(
    rates: list[float], offset_frac: float, scale: float, t0: float, loops: float
) -> None:
    base = np.asarray(rates)
    offset = offset_frac * base.size * BIN_S
    traj = StreamTrajectory(base, np.zeros(base.size), bin_s=BIN_S, scale=scale, offset_s=offset)
    loop_bits = scale * float(np.sum(base)) * BIN_S
    bits = loops * loop_bits
    t = traj.finish_time(t0, bits)
    exact = [Fraction(scale) * Fraction(r) for r in rates]
    t_ref = ref_finish(exact, Fraction(offset), Fraction(t0), Fraction(bits))
    tol = 1e-9 * loop_bits * (1 + loops)
    # Delivers exactly the bits ...
    assert float(ref_delivered(exact, Fraction(offset), Fraction(t0), Fraction(t))) == pytest.approx(
        bits, abs=tol
    )
    # ... at the earliest such time (any gap to the reference is a stretch of zero rate).
    lo, hi = sorted((Fraction(t), t_ref))
    assert float(ref_delivered(exact, Fraction(offset), lo, hi)) <= tol
    assert t >= t0


def test_mean_rate_between_and_rate_at() -> None:
    traj = piecewise([(1.0, 1e6), (1.0, 3e6)])
    assert traj.rate_at(0.5) == 1e6 and traj.rate_at(1.5) == 3e6 and traj.rate_at(2.5) == 1e6
    assert traj.mean_rate_between(0.5, 1.5) == pytest.approx(2e6)
    assert traj.mean_rate_between(1.2, 1.2) == 3e6  # empty interval: the rate there
    assert traj.period_s == pytest.approx(2.0) and traj.mean_rate_bps == pytest.approx(2e6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_rate_bps": np.zeros(0), "congestion": np.zeros(0)}, "non-empty"),
        ({"base_rate_bps": np.ones(3), "congestion": np.zeros(2)}, "congestion shape"),
        ({"base_rate_bps": np.zeros(3), "congestion": np.zeros(3)}, "positive rate"),
        ({"base_rate_bps": np.ones(3), "congestion": np.zeros(3), "scale": 0.0}, "scale"),
    ],
)
def test_stream_trajectory_rejects_bad_input(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StreamTrajectory(bin_s=BIN_S, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Synthetic and trace streams


def test_synthetic_streams_are_seeded_and_bounded() -> None:
    config = SimConfig()

    def make(seed: int) -> StreamTrajectory:
        rng = np.random.default_rng(seed)
        g = shared_congestion(np.random.default_rng(seed + 1000), config)
        return synthetic_stream(rng, config, g, start_hour=12.0)

    a, b, c = make(1), make(1), make(2)
    rates_a = np.array([a.rate_at(t) for t in np.arange(0.0, 1800.0, 0.1)])
    rates_b = np.array([b.rate_at(t) for t in np.arange(0.0, 1800.0, 0.1)])
    rates_c = np.array([c.rate_at(t) for t in np.arange(0.0, 1800.0, 0.1)])
    assert np.array_equal(rates_a, rates_b) and not np.array_equal(rates_a, rates_c)
    cong = np.array([a.congestion_at(t) for t in np.arange(0.0, 1800.0, 1.0)])
    assert np.all(rates_a >= 0.0) and np.all((cong >= 0.0) & (cong <= 1.0))
    assert a.period_s == pytest.approx(config.synthetic_period_s)


def test_synthetic_streams_switch_regimes_and_span_the_rate_range() -> None:
    """Over 40 streams: operating means cover 50-1000 Mbit/s and outages (3% of normal) occur."""
    config = SimConfig()
    g = shared_congestion(np.random.default_rng(0), config)
    means, outage_fraction = [], []
    for seed in range(40):
        traj = synthetic_stream(np.random.default_rng(seed), config, g, start_hour=3.0)
        r = np.array([traj.rate_at(t) for t in np.arange(0.05, 1800.0, 0.5)])
        med = float(np.median(r))
        means.append(traj.mean_rate_bps)
        outage_fraction.append(float(np.mean(r < 0.1 * med)))
    assert min(means) < 150e6 and max(means) > 500e6
    assert max(means) < config.rate_max_bps * 1.2
    assert np.mean(outage_fraction) > 0.005  # outage regimes happen, rarely
    assert np.mean(outage_fraction) < 0.2


def test_diurnal_load_peaks_at_20h() -> None:
    assert float(diurnal_load(20.0)) == pytest.approx(1.0)
    assert float(diurnal_load(8.0)) == pytest.approx(0.0, abs=1e-12)
    assert float(diurnal_load(44.0)) == pytest.approx(1.0)


def test_trace_stream_keeps_the_shape_and_scales_to_an_operating_rate() -> None:
    text = "".join(f"{5 * i} {1.0 + (i % 3)}\n" for i in range(40))
    trace = parse_trace_text(text, source="t")
    config = SimConfig()
    for seed in range(20):
        traj = trace_stream(np.random.default_rng(seed), config, trace)
        assert config.rate_min_bps <= traj.mean_rate_bps <= config.rate_max_bps
        assert 0.0 <= traj.offset_s < trace.period_s
        ts = np.arange(0.0, 200.0, 0.7)
        shape = np.array([traj.rate_at(t) for t in ts]) / traj.scale
        idx = np.floor((ts + traj.offset_s) / trace.bin_s).astype(int) % trace.rate_bps.size
        np.testing.assert_allclose(shape, trace.rate_bps[idx], rtol=1e-12)


def test_stream_params_are_drawn_in_range() -> None:
    config = SimConfig()
    for seed in range(50):
        p = draw_stream_params(np.random.default_rng(seed), config)
        assert config.base_rtt_min_s <= p.base_rtt_s <= config.base_rtt_max_s
        assert p.jitter_s == pytest.approx(config.jitter_fraction * p.base_rtt_s)
        assert 1 / math.sqrt(config.loss_multiplier_max) <= p.loss_multiplier <= config.loss_multiplier_max


# ---------------------------------------------------------------------------------------------
# SimConfig validation


def test_default_config_is_valid() -> None:
    c = SimConfig()
    assert c.task_size_min_bytes == 64 * 1024 and c.task_size_max_bytes == 4 * GIB


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tasks_per_episode", 0),
        ("tasks_per_episode", 1.5),
        ("tasks_per_episode", True),
        ("task_size_min_bytes", 0),
        ("task_size_max_bytes", 2**51),
        ("fixed_task_size_bytes", 0),
        ("mean_interarrival_s", 0.0),
        ("bin_s", -0.1),
        ("bin_s", math.nan),
        ("rate_min_bps", math.inf),
        ("jitter_fraction", -0.1),
        ("loss_base", math.nan),
        ("congestion_correlation", 1.5),
        ("diurnal_amplitude", -0.1),
        ("rate_ewma_alpha", 0.0),
        ("success_ewma_alpha", 1.1),
        ("dwell_s", (1.0, 2.0)),
        ("dwell_s", (1.0, 0.0, 2.0)),
        ("stability_max", 0.5),
        ("loss_multiplier_max", math.nan),
        ("max_attempts", 0),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SimConfig(**{field: value})  # type: ignore[arg-type]


def test_config_rejects_inverted_ranges() -> None:
    with pytest.raises(ValueError, match="task_size_min_bytes"):
        SimConfig(task_size_min_bytes=10, task_size_max_bytes=5)
    with pytest.raises(ValueError, match="rate_min_bps"):
        SimConfig(rate_min_bps=2e9)
    with pytest.raises(ValueError, match="base_rtt_min_s"):
        SimConfig(base_rtt_min_s=1.0)
    with pytest.raises(TypeError, match="reward_weights"):
        SimConfig(reward_weights=(1.0, 0.5))  # type: ignore[arg-type]
