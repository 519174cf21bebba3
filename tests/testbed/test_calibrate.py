"""Calibration: predictions on the applied rates, per-class errors, the fit recovering known parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest

from itp.testbed.calibrate import (
    CalibrationCase,
    FitGrid,
    PathModel,
    TransportParams,
    class_errors,
    fit_transport,
    predict_seconds,
)
from itp.testbed.rates import RateSeries
from itp.testbed.schedule import SIZE_CLASS_NAMES


def _synthetic_cases(
    truth: TransportParams, *, n: int, seed: int, noise_sigma: float
) -> list[CalibrationCase]:
    """Tasks on random paths whose "measured" time is the simulator's under ``truth`` (times noise)."""
    rng = np.random.default_rng(seed)
    cases: list[CalibrationCase] = []
    for r in range(max(1, n // 10)):
        paths = tuple(
            PathModel(
                RateSeries(0.1, rng.uniform(5e6, 100e6) * rng.uniform(0.3, 1.7, 600)),
                rtt_s=float(rng.choice([0.01, 0.04, 0.1, 0.15])),
            )
            for _ in range(4)
        )
        for k in range(10):
            size = int(math.exp(rng.uniform(math.log(16 * 1024), math.log(64 * 1024**2))))
            used = rng.random(4) < 0.6
            if not used.any():
                used[r % 4] = True
            weights = np.where(used, rng.uniform(0.2, 1.0, 4), 0.0)
            chunks = np.floor(size * weights / weights.sum()).astype(int)
            chunks[int(np.argmax(chunks))] += size - int(chunks.sum())
            start = float(k * 5.0 + rng.uniform(0, 1))
            probe = CalibrationCase(size, start, tuple(int(c) for c in chunks), 1.0, paths)
            true_s = predict_seconds([probe], truth)[0]
            measured = true_s * math.exp(float(rng.normal(0.0, noise_sigma))) if noise_sigma else true_s
            cases.append(CalibrationCase(size, start, probe.chunk_bytes, measured, paths))
    return cases[:n]


def test_prediction_follows_the_applied_rates() -> None:
    # One path at a constant 8 Mbit/s, 100 ms RTT, no set-up, no slow start, full efficiency: 1 MB takes
    # 1 s of transmission plus half an RTT for the last byte.
    path = PathModel(RateSeries(0.1, np.full(100, 8e6)), rtt_s=0.1)
    case = CalibrationCase(1_000_000, 0.0, (1_000_000,), 1.05, (path,))
    fluid = TransportParams(setup_rtts=0.0, slow_start=False, stream_efficiency=1.0)
    assert predict_seconds([case], fluid)[0] == pytest.approx(1.05)
    half = TransportParams(setup_rtts=0.0, slow_start=False, stream_efficiency=0.5)
    assert predict_seconds([case], half)[0] == pytest.approx(2.05)
    # Set-up adds setup_rtts RTTs; slow start from a small window adds ramp time.
    assert predict_seconds([case], TransportParams(1.0, 14600, False, 1.0))[0] == pytest.approx(1.15)
    assert predict_seconds([case], TransportParams(0.0, 14600, True, 1.0))[0] > 1.05
    # The rate series, not a constant: starting where the rate halves doubles the time.
    slow_later = PathModel(RateSeries(0.1, np.concatenate((np.full(10, 8e6), np.full(100, 4e6)))), rtt_s=0.1)
    late = CalibrationCase(1_000_000, 1.0, (1_000_000,), 1.0, (slow_later,))
    assert predict_seconds([late], fluid)[0] == pytest.approx(2.05)


def test_class_errors() -> None:
    path = PathModel(RateSeries(0.1, np.full(10, 8e6)), rtt_s=0.1)
    cases = [
        CalibrationCase(s, 0.0, (s,), m, (path,))
        for s, m in ((1000, 1.0), (2000, 2.0), (1_000_000, 1.0), (100_000_000, 10.0))
    ]
    errs = class_errors(cases, [1.5, 1.0, 1.0, 9.0])
    assert [e.name for e in errs] == [*SIZE_CLASS_NAMES, "all"]
    small, medium, large, everything = errs
    assert small.n == 2 and small.median_abs == pytest.approx(0.5)
    assert small.median_signed == pytest.approx(0.0)
    assert medium.n == 1 and medium.median_abs == 0.0
    assert large.n == 1 and large.median_signed == pytest.approx(-0.1)
    assert everything.n == 4 and everything.p90_abs == pytest.approx(0.5)
    assert everything.to_dict()["n"] == 4
    with pytest.raises(ValueError, match="predictions"):
        class_errors(cases, [1.0])


@pytest.mark.parametrize(
    "truth",
    [
        TransportParams(1.0, 20 * 1460, True, 0.9),
        TransportParams(0.25, 14600, False, 0.95),
        TransportParams(2.0, 4 * 1460, True, 0.75),
    ],
)
def test_fit_recovers_known_parameters_exactly(truth: TransportParams) -> None:
    cases = _synthetic_cases(truth, n=60, seed=1, noise_sigma=0.0)
    grid = FitGrid(
        setup_rtts=(0.0, 0.25, 0.5, 1.0, 1.5, 2.0), initial_window_bytes=(4 * 1460, 14600, 20 * 1460)
    )
    fit = fit_transport(cases, grid)
    # Without slow start the initial window plays no part (the fit reports the grid's first one).
    got = (
        fit.params
        if truth.slow_start
        else fit.params.__class__(
            fit.params.setup_rtts,
            truth.initial_window_bytes,
            fit.params.slow_start,
            fit.params.stream_efficiency,
        )
    )
    assert got == truth
    assert fit.loss == pytest.approx(0.0, abs=1e-9)
    assert fit.cases == 60 and fit.default_loss > 0.0


def test_fit_is_close_under_measurement_noise() -> None:
    truth = TransportParams(1.0, 14600, True, 0.9)
    cases = _synthetic_cases(truth, n=100, seed=2, noise_sigma=0.03)
    fit = fit_transport(cases, FitGrid(initial_window_bytes=(4 * 1460, 14600, 40 * 1460)))
    assert abs(fit.params.stream_efficiency - 0.9) <= 0.02
    assert abs(fit.params.setup_rtts - 1.0) <= 0.5
    assert fit.loss < fit.default_loss


def test_bad_cases() -> None:
    path = PathModel(RateSeries(0.1, np.full(10, 8e6)), rtt_s=0.1)
    with pytest.raises(ValueError, match="chunk_bytes"):
        CalibrationCase(10, 0.0, (5,), 1.0, (path,))
    with pytest.raises(ValueError, match="chunk_bytes"):
        CalibrationCase(10, 0.0, (5, 5), 1.0, (path,))
    with pytest.raises(ValueError, match="measured_s"):
        CalibrationCase(10, 0.0, (10,), 0.0, (path,))
    with pytest.raises(ValueError, match="start_s"):
        CalibrationCase(10, -1.0, (10,), 1.0, (path,))
    with pytest.raises(ValueError, match="rtt_s"):
        PathModel(RateSeries(0.1, np.full(10, 8e6)), rtt_s=0.0)
    with pytest.raises(ValueError, match="at least one"):
        fit_transport([])
