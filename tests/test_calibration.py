"""Transport calibration: the model equals the native chunk time at the defaults; known parameters are
recovered from synthetic chunk timings (with noise and stragglers); the error falls as outcomes arrive;
old regimes decay; pooling; validation."""

from __future__ import annotations

import math
from pathlib import Path

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


def mixed_warm_and_cold(n: int, seed: int) -> tuple[list[ChunkObservation], np.ndarray]:
    """Chunks of persistent streams with slow-start restart: half start warm from a known window of
    2..64 Mbit (a sender reads it from TCP_INFO), half cold from RESTART's initial window; timed exactly
    by the model. Returns the observations with their windows known, and the windows."""
    rng = np.random.default_rng(seed)
    cold = synthetic(RESTART, n, seed, noise=0.02, straggler_share=0.0)
    warm = rng.random(n) < 0.5
    w0 = np.where(warm, 2.0 ** rng.uniform(21, 26, n), 0.0)
    out = []
    for o, w in zip(cold, w0, strict=True):
        t = float(chunk_time_s(o.size_bytes * 8.0, o.rate_bps, o.rtt_s, RESTART, w))
        t *= o.seconds / float(chunk_time_s(o.size_bytes * 8.0, o.rate_bps, o.rtt_s, RESTART))  # same noise
        out.append(ChunkObservation(0, o.size_bytes, t, o.rate_bps, o.rtt_s, o.at_s, float(w)))
    return out, w0


def test_known_start_windows_keep_the_cold_window_right() -> None:
    obs, _ = mixed_warm_and_cold(400, seed=21)
    told = TransportCalibrator(1, capacity=400)
    told.observe_many(obs)
    told.fit()
    got = told.params(0)
    # Cold starts are fitted from the restart window; warm ones are explained by their known window.
    assert got.initial_window_bits < 4 * RESTART.initial_window_bits
    assert got.efficiency == pytest.approx(RESTART.efficiency, rel=0.06)
    assert told.prediction_error().fitted_error < 0.05
    # Without the windows the same chunks average into one window that is wrong for both kinds.
    blind = TransportCalibrator(1, capacity=400)
    blind.observe_many(
        [ChunkObservation(o.stream_id, o.size_bytes, o.seconds, o.rate_bps, o.rtt_s, o.at_s) for o in obs]
    )
    blind.fit()
    assert blind.prediction_error().fitted_error > 2 * told.prediction_error().fitted_error
    fresh, w_fresh = mixed_warm_and_cold(200, seed=22)
    pred = np.array([
        told.predict_s(0, o.size_bytes, o.rate_bps, o.rtt_s, w) for o, w in zip(fresh, w_fresh, strict=True)
    ])
    meas = np.array([o.seconds for o in fresh])
    assert float(np.median(np.abs(meas / pred - 1.0))) < 0.05


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
        ({"stream_id": 0, "start_window_bits": -1.0}, "start_window_bits must be finite and >= 0"),
        ({"stream_id": 0, "start_window_bits": math.inf}, "start_window_bits must be finite"),
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


# ---------------------------------------------------------------------------------------- persistence
def test_save_and_load_keep_the_observations_and_the_fit(tmp_path: Path) -> None:
    cal = TransportCalibrator(2, capacity=300)
    cal.observe_many(synthetic(WARM, 200, seed=3, stream_id=0, t0=1000.0))
    cal.observe_many(synthetic(WARM, 50, seed=4, stream_id=1, t0=1000.0))
    cal.fit()
    path = tmp_path / "cal.json"
    assert cal.save(path, now_s=1300.0) == 250
    again = TransportCalibrator(2, capacity=300)
    assert again.load(path, now_s=50.0) == 250
    assert [again.observation_count(i) for i in range(2)] == [200, 50]
    again.fit()
    for sid in range(2):
        assert again.params(sid).efficiency == pytest.approx(cal.params(sid).efficiency, rel=1e-9)
        assert again.params(sid).setup_rtts == pytest.approx(cal.params(sid).setup_rtts, abs=1e-9)
    # Ages are kept (relative order and spacing), moved onto the new clock.
    old = [o.at_s for o in synthetic(WARM, 200, seed=3, stream_id=0, t0=1000.0)]
    new = [o.at_s for o in again._obs[0]]
    assert np.allclose(np.diff(new), np.diff(old), atol=0.05)
    assert new[-1] == pytest.approx(50.0 - (1300.0 - old[-1]), abs=0.05)


def test_start_windows_survive_save_and_load_and_old_rows_load_as_unknown(tmp_path: Path) -> None:
    cal = TransportCalibrator(1)
    cal.observe(ChunkObservation(0, 1000, 0.01, 1e6, 0.01, at_s=10.0, start_window_bits=3e6))
    path = tmp_path / "cal.json"
    cal.save(path, now_s=10.0)
    again = TransportCalibrator(1)
    again.load(path, now_s=10.0)
    assert again._obs[0][0].start_window_bits == 3e6
    # A file written before start windows were recorded (6 numbers per row) loads them as unknown.
    old = tmp_path / "old.json"
    old.write_text('{"format": "itp-transport-calibrator/1", "num_streams": 1, "saved_unix_s": 0,'
                   ' "observations": [[0, 10, 0.1, 1e6, 0.01, 1.0]]}')
    legacy = TransportCalibrator(1)
    assert legacy.load(old) == 1
    assert legacy._obs[0][0].start_window_bits == 0.0


def test_load_ages_by_the_wall_clock_time_in_between(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time as time_module

    cal = TransportCalibrator(1)
    cal.observe(ChunkObservation(0, 1000, 0.01, 1e6, 0.01, at_s=10.0))
    path = tmp_path / "cal.json"
    cal.save(path, now_s=10.0)
    real_time = time_module.time
    monkeypatch.setattr(time_module, "time", lambda: real_time() + 3600.0)
    again = TransportCalibrator(1)
    again.load(path, now_s=100.0)
    assert again._obs[0][0].at_s == pytest.approx(100.0 - 3600.0, abs=1.0)


def test_load_respects_the_capacity(tmp_path: Path) -> None:
    cal = TransportCalibrator(1, capacity=100)
    cal.observe_many(synthetic(WARM, 100, seed=5))
    path = tmp_path / "cal.json"
    cal.save(path)
    small = TransportCalibrator(1, capacity=40)
    assert small.load(path) == 100
    assert small.observation_count() == 40


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("not json", "invalid JSON"),
        ('{"format": "other"}', "not a calibrator state"),
        ('{"format": "itp-transport-calibrator/1", "num_streams": 4, "saved_unix_s": 0, "observations": []}',
         "num_streams is 4"),
        ('{"format": "itp-transport-calibrator/1", "num_streams": 2, "saved_unix_s": "x",'
         ' "observations": []}', "saved_unix_s"),
        ('{"format": "itp-transport-calibrator/1", "num_streams": 2, "saved_unix_s": 0, "observations": {}}',
         "observations must be a list"),
        ('{"format": "itp-transport-calibrator/1", "num_streams": 2, "saved_unix_s": 0,'
         ' "observations": [[0, 10, 0.1, 1e6, 0.01, 1.0], [0, 10, 0.1]]}',
         r"observations\[1\] must be a list of 6 to 8"),
        ('{"format": "itp-transport-calibrator/1", "num_streams": 2, "saved_unix_s": 0,'
         ' "observations": [[0, 10, 0.1, 1e6, 0.01, 1.0], [0, 0, 0.1, 1e6, 0.01, 1.0]]}', "size_bytes"),
        ('{"format": "itp-transport-calibrator/1", "num_streams": 2, "saved_unix_s": 0,'
         ' "observations": [[0, 10, 0.1, 1e6, 0.01, -1.0]]}', "age"),
        ('{"format": "itp-transport-calibrator/1", "num_streams": 2, "saved_unix_s": 0,'
         ' "observations": [[0, 10, 0.1, 1e6, 0.01, 1.0], [5, 10, 0.1, 1e6, 0.01, 1.0]]}', "stream_id"),
    ],
)
def test_a_bad_state_file_is_refused_and_adds_nothing(tmp_path: Path, doc: str, message: str) -> None:
    path = tmp_path / "cal.json"
    path.write_text(doc)
    cal = TransportCalibrator(2)
    with pytest.raises(ValueError, match=message):
        cal.load(path)
    assert cal.observation_count() == 0


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    cal = TransportCalibrator(1)
    cal.observe_many(synthetic(WARM, 10, seed=6))
    path = tmp_path / "cal.json"
    path.write_text("previous")
    cal.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["cal.json"]
    assert TransportCalibrator(1).load(path) == 10
