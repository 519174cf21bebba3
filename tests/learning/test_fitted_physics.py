"""Fitted physics: calibrated transport parameters map onto the simulator's transport settings."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from itp.calibration import (
    DEFAULT_TRANSPORT_PARAMS,
    ChunkObservation,
    TransportCalibrator,
    TransportParams,
    chunk_time_s,
)
from itp.learning.fitted_physics import (
    MIN_PATH_EFFICIENCY,
    sim_config_from_params,
    stream_efficiencies_of,
    transport_params_of,
)
from itp.sim import SimConfig


class FakeCalibrator:
    """Anything with pooled_params() (the duck type the learner accepts)."""

    def __init__(self, params: object) -> None:
        self.params = params
        self.calls = 0

    def pooled_params(self) -> object:
        self.calls += 1
        return self.params


def test_default_parameters_map_to_the_default_simulator() -> None:
    base = SimConfig(tasks_per_episode=8)
    assert sim_config_from_params(DEFAULT_TRANSPORT_PARAMS, base) == base


def test_warm_persistent_streams_have_no_slow_start_and_no_handshake() -> None:
    warm = TransportParams(setup_rtts=0.5, initial_window_bits=2.0**30, efficiency=0.9)
    cfg = sim_config_from_params(warm, SimConfig(tasks_per_episode=8))
    assert cfg.setup_rtts == 0.0 and not cfg.slow_start and cfg.stream_efficiency == pytest.approx(0.9)
    assert cfg.initial_window_bytes == 2**27 and cfg.tasks_per_episode == 8


def test_restart_after_idle_keeps_slow_start_from_the_fitted_window() -> None:
    restart = TransportParams(setup_rtts=1.0, initial_window_bits=8.0 * 29200, efficiency=1.3)
    cfg = sim_config_from_params(restart)
    assert cfg.slow_start and cfg.initial_window_bytes == 29200 and cfg.setup_rtts == pytest.approx(0.5)
    assert cfg.stream_efficiency == 1.0  # clipped: the simulator's efficiency is at most 1


def test_sources_are_duck_typed_and_checked() -> None:
    p = TransportParams(1.0, 1e6, 0.8)
    assert transport_params_of(None) is None
    assert transport_params_of(p) is p
    fake = FakeCalibrator(p)
    assert transport_params_of(fake) is p and fake.calls == 1
    with pytest.raises(TypeError, match="pooled_params"):
        transport_params_of(object())
    with pytest.raises(TypeError, match="must return TransportParams"):
        transport_params_of(FakeCalibrator({"setup_rtts": 1.0}))
    with pytest.raises(TypeError, match="params must be TransportParams"):
        sim_config_from_params({"setup_rtts": 1.0})  # type: ignore[arg-type]


def test_the_real_calibrator_is_accepted() -> None:
    """``TransportCalibrator.pooled_params`` is a property, not a method: both forms are read."""
    from itp.calibration import TransportCalibrator

    cal = TransportCalibrator(4)
    assert transport_params_of(cal) == cal.pooled_params == DEFAULT_TRANSPORT_PARAMS


# ------------------------------------------------------------------------- per-stream efficiencies
def test_per_stream_efficiencies_become_path_efficiencies() -> None:
    """Stream i delivers min(1, eta_i) of its rate: the best stream sets stream_efficiency, the others
    are the ratio to it; everything else as with the pooled parameters alone."""
    params = TransportParams(setup_rtts=0.5, initial_window_bits=2.0**30, efficiency=0.9)
    pooled = sim_config_from_params(params)
    cfg = sim_config_from_params(params, None, (0.3, 0.9, 1.4, 0.45))
    assert cfg.stream_efficiency == 1.0  # 1.4 clipped: a stream cannot deliver more than its rate
    assert cfg.path_efficiency == pytest.approx((0.3, 0.9, 1.0, 0.45))
    assert dataclasses.replace(cfg, stream_efficiency=pooled.stream_efficiency,
                               path_efficiency=pooled.path_efficiency) == pooled
    slow = sim_config_from_params(params, None, (0.2, 0.5, 0.5, 0.5))
    assert slow.stream_efficiency == 0.5 and slow.path_efficiency == pytest.approx((0.4, 1.0, 1.0, 1.0))
    products = [slow.stream_efficiency * e for e in slow.path_efficiency]
    assert products == pytest.approx([0.2, 0.5, 0.5, 0.5])
    tiny = sim_config_from_params(params, None, (1e-9, 1.0, 1.0, 1.0))
    assert tiny.path_efficiency[0] == MIN_PATH_EFFICIENCY  # the simulator needs > 0


def test_equal_stream_efficiencies_equal_the_pooled_fit() -> None:
    params = TransportParams(setup_rtts=1.0, initial_window_bits=8.0 * 29200, efficiency=0.8)
    assert sim_config_from_params(params, None, (0.8,) * 4) == sim_config_from_params(params)


@pytest.mark.parametrize(
    ("bad", "match"),
    [((0.5, 0.5, 0.5), "must be 4 numbers"), ((0.5, 0.0, 0.5, 0.5), r"stream_efficiencies\[1\]"),
     ((0.5, 0.5, math.nan, 0.5), r"stream_efficiencies\[2\]"), ((0.5, 0.5, 0.5, True), r"\[3\]"),
     ("abcd", "must be 4 numbers")],
)
def test_bad_stream_efficiencies_are_refused(bad: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sim_config_from_params(DEFAULT_TRANSPORT_PARAMS, None, bad)  # type: ignore[arg-type]


def test_stream_efficiencies_come_from_a_calibrators_per_stream_fit() -> None:
    """Recovered from synthetic chunk timings: stream 0 delivers 40% of its measured rate, the others
    95%; the per-stream fit (not the pooled one) tells them apart."""
    cal = TransportCalibrator(4, min_observations=8, prior_strength=1.0)
    rng = np.random.default_rng(3)
    truth = [0.4, 0.95, 0.95, 0.95]
    for k in range(400):
        sid = k % 4
        size = int(2 ** rng.uniform(20, 26))
        rate, rtt = 100e6, 0.02
        t = float(chunk_time_s(size * 8.0, rate, rtt, TransportParams(2.0, 8.0 * 14600, truth[sid])))
        cal.observe(ChunkObservation(sid, size, t, rate, rtt, float(k)))
    cal.fit(now_s=400.0)
    eff = stream_efficiencies_of(cal)
    assert eff is not None and len(eff) == 4
    assert eff[0] == pytest.approx(0.4, rel=0.1)
    assert all(e == pytest.approx(0.95, rel=0.1) for e in eff[1:])
    assert cal.pooled_params.efficiency > 0.6  # pooled, stream 0 is averaged away


def test_stream_efficiencies_of_other_sources() -> None:
    assert stream_efficiencies_of(None) is None
    assert stream_efficiencies_of(DEFAULT_TRANSPORT_PARAMS) is None
    assert stream_efficiencies_of(FakeCalibrator(DEFAULT_TRANSPORT_PARAMS)) is None  # pooled only

    class Broken:
        num_streams = 2

        def params(self, stream_id: int) -> object:
            return {"efficiency": 1.0}

    with pytest.raises(TypeError, match=r"params\(0\) must return TransportParams"):
        stream_efficiencies_of(Broken())


def test_streams_within_calibration_noise_are_kept_alike() -> None:
    """Per-stream efficiencies only when a stream stands apart from the best one (below 85% of it)."""

    class Fitted:
        num_streams = 4

        def __init__(self, eff: tuple[float, ...]) -> None:
            self.eff = eff

        def params(self, stream_id: int) -> TransportParams:
            return TransportParams(2.0, 8.0 * 14600, self.eff[stream_id])

    assert stream_efficiencies_of(Fitted((0.974, 0.974, 1.017, 1.017))) is None  # warm network, measured
    assert stream_efficiencies_of(Fitted((0.90, 1.0, 1.3, 1.0))) is None  # 1.3 counts as 1: ratio 0.90
    assert stream_efficiencies_of(Fitted((0.686, 1.012, 0.969, 0.969))) == (0.686, 1.012, 0.969, 0.969)
    assert stream_efficiencies_of(Fitted((0.86, 1.0, 1.0, 1.0)), distinct_ratio=0.9) is not None
