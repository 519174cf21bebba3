"""Fitted physics: calibrated transport parameters map onto the simulator's transport settings."""

from __future__ import annotations

import pytest

from itp.calibration import DEFAULT_TRANSPORT_PARAMS, TransportParams
from itp.learning.fitted_physics import sim_config_from_params, transport_params_of
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
