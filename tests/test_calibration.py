"""Transport calibration: the model equals the native chunk time at the defaults; known parameters are
recovered from synthetic chunk timings (with noise and stragglers); the error falls as outcomes arrive;
old regimes decay; pooling; validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itp.calibration import (
    DEFAULT_TRANSPORT_PARAMS,
    ChunkObservation,
    TransportCalibrator,
    TransportParams,
    chunk_time_s,
)
from itp.transport import SEGMENT_BITS, transport_chunk_time

WARM = TransportParams(setup_rtts=1.0, initial_window_bits=2.0**26, efficiency=0.8)
RESTART = TransportParams(setup_rtts=1.0, initial_window_bits=14600 * 8.0, efficiency=0.95)


@given(
    bits=st.floats(8.0, 8.0 * 2**34),
    rate=st.floats(1e5, 1e10),
    rtt=st.floats(1e-4, 1.0),
)
@settings(max_examples=300, deadline=None)
def test_default_model_is_the_native_chunk_time(bits: float, rate: float, rtt: float) -> None:
    ours = float(chunk_time_s(bits, rate, rtt))
    assert ours == pytest.approx(transport_chunk_time(bits, rate, rtt), rel=1e-9)


def test_zero_rate_is_infinite() -> None:
    assert math.isinf(float(chunk_time_s(8000.0, 0.0, 0.01)))


def synthetic(
    params: TransportParams, n: int, seed: int, *, stream_id: int = 0, t0: float = 0.0,
    noise: float = 0.05, straggler_share: float = 0.05,
) -> list[ChunkObservation]:
    """Chunks of 16 KiB..64 MiB at 10..200 Mbit/s and 10..100 ms, timed by ``params`` with log-normal
    noise and a share of 3x stragglers."""
    rng = np.random.default_rng(seed)
    size = np.exp(rng.uniform(math.log(16 * 1024), math.log(64 * 2**20), n)).astype(np.int64)
    rate = np.exp(rng.uniform(math.log(10e6), math.log(200e6), n))
    rtt = rng.uniform(0.01, 0.1, n)
    t = chunk_time_s(size * 8.0, rate, rtt, params) * np.exp(noise * rng.standard_normal(n))
    t = np.where(rng.random(n) < straggler_share, 3.0 * t, t)
    return [
        ChunkObservation(stream_id, int(size[i]), float(t[i]), float(rate[i]), float(rtt[i]), t0 + i)
        for i in range(n)
    ]


@pytest.mark.parametrize("truth", [WARM, RESTART, DEFAULT_TRANSPORT_PARAMS], ids=["warm", "restart", "fresh"])
def test_known_parameters_are_recovered(truth: TransportParams) -> None:
    cal = TransportCalibrator(1, capacity=400)
    cal.observe_many(synthetic(truth, 400, seed=1))
    cal.fit()
    got = cal.params(0)
    assert got.efficiency == pytest.approx(truth.efficiency, rel=0.06)
    assert got.setup_rtts == pytest.approx(truth.setup_rtts, abs=0.35)
    # Predictions on fresh chunks: the fitted model is within a few % (the noise is 5 %).
    fresh = synthetic(truth, 300, seed=2, noise=0.0, straggler_share=0.0)
    pred = np.array([cal.predict_s(0, o.size_bytes, o.rate_bps, o.rtt_s) for o in fresh])
    meas = np.array([o.seconds for o in fresh])
    assert float(np.median(np.abs(meas / pred - 1.0))) < 0.04


def test_error_falls_as_outcomes_arrive() -> None:
    cal = TransportCalibrator(1, capacity=512)
    chunks = synthetic(WARM, 600, seed=3)
    errors = []
    for start in range(0, 600, 100):
        cal.observe_many(chunks[start : start + 100])
        cal.fit()
        errors.append(cal.prediction_error(last=100))
    assert errors[0].default_error > 0.2  # the fresh-connection model is far off on warm streams
    assert errors[-1].fitted_error < 0.06
    assert errors[-1].fitted_error < errors[-1].default_error / 5


def test_old_regime_decays() -> None:
    cal = TransportCalibrator(1, capacity=512, half_life_s=50.0)
    cal.observe_many(synthetic(WARM, 250, seed=4, t0=0.0))
    cal.fit()
    assert cal.params(0).efficiency == pytest.approx(0.8, rel=0.06)
    # 1000 s later the network changed: efficiency 0.5. Old chunks weigh 2^-20 by then.
    changed = TransportParams(1.0, 2.0**26, 0.5)
    cal.observe_many(synthetic(changed, 250, seed=5, t0=1000.0))
    cal.fit()
    assert cal.params(0).efficiency == pytest.approx(0.5, rel=0.06)


def test_pooling_and_per_stream_fits() -> None:
    cal = TransportCalibrator(3, prior_strength=30.0)
    slow = TransportParams(1.0, 2.0**26, 0.5)
    cal.observe_many(synthetic(WARM, 300, seed=6, stream_id=0))
    cal.observe_many(synthetic(slow, 300, seed=7, stream_id=1))
    summary = cal.fit()
    assert summary["observations"] == [300, 300, 0]
    # A stream with no observations borrows the deployment's fit.
    assert cal.params(2) == cal.pooled_params
    # Well-observed streams stand (mostly) on their own: n_eff 300 vs prior 30.
    assert cal.params(0).efficiency == pytest.approx(0.8, rel=0.1)
    assert cal.params(1).efficiency == pytest.approx(0.5, rel=0.1)
    assert 0.5 < cal.pooled_params.efficiency < 0.8


def test_defaults_before_any_fit_and_with_too_few_observations() -> None:
    cal = TransportCalibrator(2, min_observations=8)
    assert cal.params(0) == DEFAULT_TRANSPORT_PARAMS
    assert math.isnan(cal.prediction_error().default_error)
    cal.observe_many(synthetic(WARM, 5, seed=8))
    cal.fit()
    assert cal.params(0) == DEFAULT_TRANSPORT_PARAMS and cal.pooled_params == DEFAULT_TRANSPORT_PARAMS


def test_capacity_bounds_memory() -> None:
    cal = TransportCalibrator(1, capacity=16)
    cal.observe_many(synthetic(WARM, 100, seed=9))
    assert cal.observation_count() == 16 == cal.observation_count(0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stream_id": 0, "size_bytes": 0}, "size_bytes must be >= 1"),
        ({"stream_id": 0, "seconds": 0.0}, "seconds must be finite and > 0"),
        ({"stream_id": 0, "rate_bps": math.nan}, "rate_bps must be finite"),
        ({"stream_id": 0, "rtt_s": -1.0}, "rtt_s must be finite and >= 0"),
        ({"stream_id": 1.5}, "stream_id must be an int"),
    ],
)
def test_bad_observation_names_the_field(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "stream_id": 0, "size_bytes": 1000, "seconds": 0.1, "rate_bps": 1e6, "rtt_s": 0.01, "at_s": 0.0,
    }
    base.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        ChunkObservation(**base)  # type: ignore[arg-type]


def test_unknown_stream_changes_nothing() -> None:
    cal = TransportCalibrator(2)
    good = ChunkObservation(0, 1000, 0.1, 1e6, 0.01, 0.0)
    bad = ChunkObservation(5, 1000, 0.1, 1e6, 0.01, 0.0)
    with pytest.raises(ValueError, match=r"stream_id must be in 0\.\.1"):
        cal.observe(bad)
    with pytest.raises(ValueError, match=r"stream_id must be in 0\.\.1"):
        cal.observe_many([good, bad])
    assert cal.observation_count() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capacity": 2}, "capacity must be an int >= 8"),
        ({"half_life_s": 0.0}, "half_life_s must be"),
        ({"prior_strength": -1.0}, "prior_strength must be"),
        ({"efficiency_bounds": (0.5, 0.9)}, "efficiency_bounds"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TransportCalibrator(**kwargs)  # type: ignore[arg-type]


def test_params_validation() -> None:
    with pytest.raises(ValueError, match="initial_window_bits"):
        TransportParams(1.0, 10.0, 1.0)
    with pytest.raises(ValueError, match="efficiency"):
        TransportParams(1.0, 2.0**20, 0.0)


def test_a_fit_at_the_smallest_window_stays_a_valid_parameter_set() -> None:
    """Regression: 2**log2(one segment) rounded below one segment and the fit raised."""
    c = TransportCalibrator()
    rng = np.random.default_rng(0)
    for k in range(256):
        c.observe(ChunkObservation(k % 4, int(2 ** rng.uniform(14, 26)), float(rng.uniform(0.01, 1.0)),
                                   1e8, 0.02, float(k)))
    c.fit()
    for i in range(4):
        assert c.params(i).initial_window_bits >= SEGMENT_BITS
