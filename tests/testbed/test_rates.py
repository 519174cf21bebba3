"""Trace -> rate series -> tbf settings: exact means, floor, looping, queue sizes, command lines."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itp.sim.traces import parse_trace_text
from itp.testbed.rates import (
    MIN_BURST_BYTES,
    MIN_LIMIT_BYTES,
    QUEUE_PACKET_BYTES,
    QueueSpec,
    RateSeries,
    rate_trajectory,
    scaled_rate_series,
    tbf_command,
    tbf_settings,
)


def _pensieve(values_mbps: list[float], dt_s: float = 1.0) -> str:
    # Line i carries the rate over (t[i-1], t[i]]; the first line only fixes the origin.
    return "\n".join(f"{i * dt_s} {v}" for i, v in enumerate([values_mbps[0], *values_mbps]))


def _reference_mean(bins: list[float], bin_s: float, scale: float, t0: float, t1: float) -> float:
    """Mean of the looped, scaled piecewise-constant rate over [t0, t1], walked bin by bin in rationals."""
    n = len(bins)
    b, a, z = Fraction(bin_s), Fraction(t0), Fraction(t1)
    total = Fraction(0)
    t = a
    while t < z:
        k = math.floor(t / b)
        end = min(Fraction(k + 1) * b, z)
        total += Fraction(bins[k % n]) * (end - t)
        t = end
    return float(total / (z - a)) * scale


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(0.0, 50.0), min_size=2, max_size=30).filter(lambda v: sum(v) > 0.5),
    mean_mbps=st.floats(1.0, 200.0),
    offset_s=st.floats(0.0, 100.0),
    step_s=st.sampled_from([0.05, 0.1, 0.25, 1.0]),
)
def test_each_step_is_the_exact_mean_of_the_scaled_trace(
    values: list[float], mean_mbps: float, offset_s: float, step_s: float
) -> None:
    trace = parse_trace_text(_pensieve(values), bin_s=0.1)
    series = scaled_rate_series(
        trace, mean_rate_bps=mean_mbps * 1e6, offset_s=offset_s, duration_s=3.0, step_s=step_s, floor_bps=1.0
    )
    assert series.rate_bps.size == math.ceil(3.0 / step_s - 1e-9)
    scale = mean_mbps * 1e6 / trace.mean_rate_bps
    bins = [float(x) for x in trace.rate_bps]
    for k in (0, series.rate_bps.size // 2, series.rate_bps.size - 1):
        ref = _reference_mean(bins, trace.bin_s, scale, offset_s + k * step_s, offset_s + (k + 1) * step_s)
        # Differences of large cumulative capacities: the absolute error scales with the mean rate.
        assert series.rate_bps[k] == pytest.approx(max(ref, 1.0), rel=1e-9, abs=1e-9 * mean_mbps * 1e6)


def test_full_loop_keeps_the_mean_and_the_shape() -> None:
    trace = parse_trace_text(_pensieve([1.0, 3.0, 2.0, 6.0]), bin_s=0.1)  # mean 3 Mbit/s, period 4 s
    series = scaled_rate_series(trace, mean_rate_bps=30e6, offset_s=0.0, duration_s=4.0, floor_bps=1.0)
    assert series.mean_rate_bps == pytest.approx(30e6)
    assert series.rate_at(0.05) == pytest.approx(10e6) and series.rate_at(3.5) == pytest.approx(60e6)
    # Offset by one trace second: the series starts at the second value; it loops after the period.
    shifted = scaled_rate_series(trace, mean_rate_bps=30e6, offset_s=1.0, duration_s=8.0, floor_bps=1.0)
    assert shifted.rate_at(0.0) == pytest.approx(30e6)
    assert shifted.rate_at(4.5) == pytest.approx(shifted.rate_at(0.5))


def test_outages_are_floored() -> None:
    trace = parse_trace_text(_pensieve([4.0, 0.0, 0.0, 4.0]), bin_s=0.1)
    series = scaled_rate_series(trace, mean_rate_bps=10e6, offset_s=0.0, duration_s=4.0)
    assert series.rate_bps.min() == pytest.approx(max(0.01 * 10e6, 64e3))
    assert np.all(series.rate_bps > 0)
    low = scaled_rate_series(trace, mean_rate_bps=1e6, offset_s=0.0, duration_s=4.0)
    assert low.rate_bps.min() == pytest.approx(64e3)  # the absolute floor beats 1% of the mean


def test_trajectory_matches_the_series_and_holds_the_last_rate() -> None:
    series = RateSeries(0.1, np.array([1e6, 2e6, 4e6]))
    traj = rate_trajectory(series)
    assert traj.rate_at(0.05) == 1e6 and traj.rate_at(0.15) == 2e6 and traj.rate_at(0.25) == 4e6
    assert traj.rate_at(100.0) == 4e6  # held, not looped back to 1e6
    # 0.7 Mbit over the series = 0.1 + 0.2 + 0.4; then 4 Mbit/s.
    assert traj.finish_time(0.0, 0.7e6) == pytest.approx(0.3)
    assert traj.finish_time(0.0, 0.7e6 + 4e6) == pytest.approx(1.3)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mean_rate_bps": 0.0}, "mean_rate_bps"),
        ({"duration_s": -1.0}, "duration_s"),
        ({"step_s": math.inf}, "step_s"),
        ({"offset_s": math.nan}, "offset_s"),
        ({"floor_bps": 0.0}, "floor_bps"),
    ],
)
def test_bad_series_arguments(kwargs: dict[str, float], field: str) -> None:
    trace = parse_trace_text(_pensieve([1.0, 2.0]), bin_s=0.1)
    args: dict[str, float] = {"mean_rate_bps": 1e6, "offset_s": 0.0, "duration_s": 1.0, **kwargs}
    with pytest.raises(ValueError, match=field):
        scaled_rate_series(trace, **args)  # type: ignore[arg-type]


def test_rate_series_validation() -> None:
    with pytest.raises(ValueError, match="step_s"):
        RateSeries(0.0, np.array([1.0]))
    with pytest.raises(ValueError, match="rate_bps"):
        RateSeries(0.1, np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="rate_bps"):
        RateSeries(0.1, np.array([]))


def test_queue_spec() -> None:
    assert QueueSpec.parse("100p") == QueueSpec(packets=100) == QueueSpec.parse("100")
    assert QueueSpec.parse("50ms") == QueueSpec(delay_s=0.05)
    assert QueueSpec(packets=100).limit_bytes(1e9) == 100 * QUEUE_PACKET_BYTES
    assert QueueSpec(delay_s=0.05).limit_bytes(80e6) == 500_000  # 80 Mbit/s x 50 ms / 8
    assert QueueSpec(delay_s=0.05).limit_bytes(64e3) == MIN_LIMIT_BYTES
    assert QueueSpec(packets=1).describe() == "1 packets" and QueueSpec(delay_s=0.02).describe() == "20 ms"
    for bad in ("", "abc", "-3p", "0", "xms", "0ms"):
        with pytest.raises(ValueError, match="queue"):
            QueueSpec.parse(bad)
    with pytest.raises(ValueError, match="exactly one"):
        QueueSpec()
    with pytest.raises(ValueError, match="exactly one"):
        QueueSpec(packets=3, delay_s=0.1)


def test_tbf_settings_and_command() -> None:
    s = tbf_settings(100e6, QueueSpec(delay_s=0.02))
    assert s.rate_bps == 100_000_000
    assert s.burst_bytes == 25_000  # 2 ms at 100 Mbit/s
    assert s.limit_bytes == 250_000
    assert tbf_settings(1e6, QueueSpec(packets=10)).burst_bytes == MIN_BURST_BYTES
    line = tbf_command("ingress", s, verb="replace")
    assert line == "qdisc replace dev ingress root handle 1: tbf rate 100000000bit burst 25000 limit 250000"
    assert tbf_command("ingress", s).startswith("qdisc change dev ingress ")
    with pytest.raises(ValueError, match="verb"):
        tbf_command("ingress", s, verb="add")
    for dev in ("", "x" * 16, "eth0; rm", "a b"):
        with pytest.raises(ValueError, match="device"):
            tbf_command(dev, s)
    for bad in (0.0, -1.0, math.nan, math.inf, True):
        with pytest.raises(ValueError, match="rate_bps"):
            tbf_settings(bad, QueueSpec(packets=1))
