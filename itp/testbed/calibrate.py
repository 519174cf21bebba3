"""The simulator against the testbed: predicted vs measured completion times, and a fit of its transport.

For every task a testbed run measured, the simulator (``itp.sim.physics.simulate_task``) is given the
*same* conditions: the chunks the policy chose (bytes per stream), the task's dispatch time on the
rate controller's clock, each path's floored rate series (``itp.testbed.rates.rate_trajectory``: the
exact rates the ``tbf`` applied) and its propagation RTT, no jitter and no random failures (loss on the
testbed is packet loss that TCP repairs, not the simulator's chunk failures). Its prediction ``p`` is
compared with the measured completion time ``m``::

    relative error  e = (p - m) / m        (negative: the simulator is optimistic)

and summarised per size class (``itp.testbed.schedule.SIZE_CLASS_NAMES``) by the median and 90th
percentile of ``|e|`` and the median of ``e`` (the bias).

Fit (``fit_transport``). The simulator's transport parameters ``theta = (setup_rtts,
initial_window_bytes, slow_start, stream_efficiency)`` (``itp.sim.physics.SimConfig``) are chosen on a
grid to minimise the mean absolute log error over the measured tasks::

    L(theta) = mean_k | ln p_k(theta) - ln m_k |

(robust to the few tasks a loss burst or a scheduler hiccup stretched; symmetric in over- and
under-prediction). The grid (``FitGrid``) holds set-up RTTs 0..3 by 0.25, initial windows of 4..80
segments of 1460 bytes, slow start on and off, and efficiencies 0.50..1.00 by 0.01; with slow start
off the initial window does not matter and is evaluated once. Cost: O(grid x tasks x chunks x log n);
a few seconds for a few hundred tasks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from itp.sim.physics import SimConfig, StreamParams, StreamTrajectory, simulate_task
from itp.testbed.rates import RateSeries, rate_trajectory
from itp.testbed.schedule import SIZE_CLASS_NAMES, size_class
from itp.testbed.stats import percentile

__all__ = [
    "CalibrationCase",
    "ClassError",
    "FitGrid",
    "FitResult",
    "PathModel",
    "TransportParams",
    "class_errors",
    "fit_transport",
    "predict_seconds",
]

SEGMENT_BYTES = 1460
_MAX_ATTEMPTS = 1


@dataclass(frozen=True)
class TransportParams:
    """The simulator's transport parameters (``SimConfig`` fields of the same names)."""

    setup_rtts: float = 1.5
    initial_window_bytes: int = 14600
    slow_start: bool = True
    stream_efficiency: float = 1.0

    def sim_config(self) -> SimConfig:
        """A ``SimConfig`` with these parameters and no random failures (see the module docstring)."""
        return SimConfig(
            setup_rtts=self.setup_rtts,
            initial_window_bytes=self.initial_window_bytes,
            slow_start=self.slow_start,
            stream_efficiency=self.stream_efficiency,
            max_attempts=_MAX_ATTEMPTS,
            loss_base=0.0,
            loss_congestion=0.0,
            hazard_base_per_s=0.0,
            hazard_congestion_per_s=0.0,
            jitter_fraction=0.0,
        )

    def to_dict(self) -> dict[str, float | int | bool]:
        """JSON-ready."""
        return {
            "setup_rtts": self.setup_rtts,
            "initial_window_bytes": self.initial_window_bytes,
            "slow_start": self.slow_start,
            "stream_efficiency": self.stream_efficiency,
        }


@dataclass(frozen=True, eq=False)
class PathModel:
    """One path as the simulator sees it: the applied ``series`` and the propagation ``rtt_s`` (seconds)."""

    series: RateSeries
    rtt_s: float
    trajectory: StreamTrajectory = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rtt_s) and self.rtt_s > 0):
            raise ValueError(f"PathModel.rtt_s must be finite and > 0, got {self.rtt_s!r}")
        object.__setattr__(self, "trajectory", rate_trajectory(self.series))


@dataclass(frozen=True)
class CalibrationCase:
    """One measured task with the paths it ran on.

    Attributes:
        size_bytes: task size, bytes.
        start_s: dispatch time on the rate controller's clock (0 = the series' first step), seconds.
        chunk_bytes: bytes per stream (one entry per path; 0 = unused).
        measured_s: measured completion time, seconds (> 0).
        paths: the repeat's paths (``PathModel``), one per stream.
    """

    size_bytes: int
    start_s: float
    chunk_bytes: tuple[int, ...]
    measured_s: float
    paths: tuple[PathModel, ...]

    def __post_init__(self) -> None:
        if len(self.chunk_bytes) != len(self.paths):
            raise ValueError(
                f"CalibrationCase.chunk_bytes has {len(self.chunk_bytes)} entries for {len(self.paths)} paths"
            )
        if any(c < 0 for c in self.chunk_bytes) or sum(self.chunk_bytes) != self.size_bytes:
            raise ValueError(
                f"CalibrationCase.chunk_bytes {self.chunk_bytes} must be >= 0 and sum to size_bytes "
                f"{self.size_bytes}"
            )
        if not (math.isfinite(self.measured_s) and self.measured_s > 0):
            raise ValueError(f"CalibrationCase.measured_s must be finite and > 0, got {self.measured_s!r}")
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise ValueError(f"CalibrationCase.start_s must be finite and >= 0, got {self.start_s!r}")


def _predict(case: CalibrationCase, config: SimConfig) -> float:
    n = len(case.paths)
    zeros = np.zeros((n, config.max_attempts))
    res = simulate_task(
        [p.trajectory for p in case.paths],
        [StreamParams(base_rtt_s=p.rtt_s, jitter_s=0.0, loss_multiplier=1.0) for p in case.paths],
        config,
        case.start_s,
        case.chunk_bytes,
        zeros,
        zeros,
        zeros,
    )
    return max(res.finish_s - case.start_s, 1e-9)


def predict_seconds(cases: Sequence[CalibrationCase], params: TransportParams) -> list[float]:
    """The simulator's completion time of each case under ``params``, seconds."""
    config = params.sim_config()
    return [_predict(c, config) for c in cases]


@dataclass(frozen=True)
class ClassError:
    """Relative errors of one size class: ``n`` tasks, median and p90 of |e|, median of e (bias)."""

    name: str
    n: int
    median_abs: float
    p90_abs: float
    median_signed: float

    def to_dict(self) -> dict[str, float | int | str | None]:
        """JSON-ready (NaN as None)."""

        def num(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {
            "class": self.name,
            "n": self.n,
            "median_abs_rel_error": num(self.median_abs),
            "p90_abs_rel_error": num(self.p90_abs),
            "median_rel_error": num(self.median_signed),
        }


def class_errors(cases: Sequence[CalibrationCase], predicted_s: Sequence[float]) -> list[ClassError]:
    """Per size class (and "all" last): the relative-error summary of ``predicted_s`` against the cases."""
    if len(cases) != len(predicted_s):
        raise ValueError(f"{len(predicted_s)} predictions for {len(cases)} cases")
    errs: list[list[float]] = [[] for _ in SIZE_CLASS_NAMES]
    for c, p in zip(cases, predicted_s, strict=True):
        errs[size_class(c.size_bytes)].append((p - c.measured_s) / c.measured_s)
    out = []
    for name, e in [*zip(SIZE_CLASS_NAMES, errs, strict=True), ("all", [x for group in errs for x in group])]:
        a = [abs(x) for x in e]
        out.append(ClassError(name, len(e), percentile(a, 50), percentile(a, 90), percentile(e, 50)))
    return out


@dataclass(frozen=True)
class FitGrid:
    """The candidate values ``fit_transport`` searches (module docstring)."""

    setup_rtts: tuple[float, ...] = tuple(0.25 * k for k in range(13))
    initial_window_bytes: tuple[int, ...] = tuple(s * SEGMENT_BYTES for s in (4, 10, 20, 40, 80))
    slow_start: tuple[bool, ...] = (True, False)
    stream_efficiency: tuple[float, ...] = tuple(round(0.5 + 0.01 * k, 2) for k in range(51))

    def candidates(self) -> list[TransportParams]:
        """Every distinct parameter set (slow start off: one initial window)."""
        out = []
        for ss in self.slow_start:
            for iw in self.initial_window_bytes if ss else self.initial_window_bytes[:1]:
                for s in self.setup_rtts:
                    for e in self.stream_efficiency:
                        out.append(TransportParams(s, iw, ss, e))
        return out


@dataclass(frozen=True)
class FitResult:
    """The fitted parameters, their loss, and the loss of the simulator's defaults on the same cases."""

    params: TransportParams
    loss: float
    default_loss: float
    cases: int


def _loss(cases: Sequence[CalibrationCase], config: SimConfig) -> float:
    return float(np.mean([abs(math.log(_predict(c, config) / c.measured_s)) for c in cases]))


def fit_transport(cases: Sequence[CalibrationCase], grid: FitGrid | None = None) -> FitResult:
    """Grid-search the transport parameters that minimise the mean absolute log error (module docstring).

    The efficiency is searched last for each (set-up, window, slow start) by a coarse-to-fine walk over
    the sorted efficiency values (the loss is unimodal in it for fixed others in practice), so the cost
    is about ``(setup x window x slow start) x (sqrt(E) + ...)`` evaluations instead of the full grid.
    Ties go to the first candidate in grid order.

    Raises:
        ValueError: no cases.
    """
    if not cases:
        raise ValueError("fit_transport needs at least one measured task")
    grid = grid or FitGrid()
    effs = sorted(set(grid.stream_efficiency))
    best: tuple[float, TransportParams] | None = None
    bases = {replace(c, stream_efficiency=1.0) for c in grid.candidates()}
    for base in sorted(bases, key=lambda p: (not p.slow_start, p.initial_window_bytes, p.setup_rtts)):
        cache: dict[float, float] = {}

        def loss_at(e: float, base: TransportParams = base, cache: dict[float, float] = cache) -> float:
            if e not in cache:
                cache[e] = _loss(cases, replace(base, stream_efficiency=e).sim_config())
            return cache[e]

        # Coarse pass every `step` values, then the full neighbourhood of the coarse minimum.
        step = max(1, int(math.sqrt(len(effs))))
        coarse = list(range(0, len(effs), step))
        if coarse[-1] != len(effs) - 1:
            coarse.append(len(effs) - 1)
        k_best = min(coarse, key=lambda k: (loss_at(effs[k]), k))
        lo, hi = max(0, k_best - step), min(len(effs) - 1, k_best + step)
        k_best = min(range(lo, hi + 1), key=lambda k: (loss_at(effs[k]), k))
        candidate = (loss_at(effs[k_best]), replace(base, stream_efficiency=effs[k_best]))
        if best is None or candidate[0] < best[0]:
            best = candidate
    assert best is not None
    return FitResult(
        params=best[1],
        loss=best[0],
        default_loss=_loss(cases, TransportParams().sim_config()),
        cases=len(cases),
    )
