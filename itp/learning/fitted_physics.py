"""Simulator physics fitted to the deployment: calibrated transport parameters -> ``itp.sim.SimConfig``.

Why: retraining plays simulator episodes to complement the logs with broad coverage, and the simulator
gate scores candidates on simulated episodes. With the built-in physics (a fresh connection per chunk: set-up
and slow start every time) both pull the model back to a network the deployment may not have. When the
deployment's transport has been calibrated (:class:`itp.calibration.TransportCalibrator`, fitted from
per-chunk outcomes), the rollouts and the gate run on those parameters instead.

The calibrator fits the chunk-time model of :mod:`itp.calibration`::

    t(b) = S R + u(b; W, eta r, R)       (S in RTTs, W in bits, eta = delivered rate / measured rate)

and the simulator (:mod:`itp.sim.physics`) has ``setup_rtts``, ``initial_window_bytes``, ``slow_start`` and
``stream_efficiency``. The mapping (:func:`sim_config_from_params`):

* ``setup_rtts = max(0, S - 0.5)``: the calibrator's ``S`` includes the half RTT the last byte spends in
  flight (``itp.transport``: 1 handshake + 0.5 request + 0.5 last byte = 2), the simulator's ``setup_rtts``
  counts only what precedes the data (1.5 for the same fresh connection). The defaults map onto each other.
* ``initial_window_bytes = round(W / 8)`` (at least 1);
* ``slow_start = W < rate_max_bps * base_rtt_max_s * (1 + queueing_factor)``: a fitted window at least the
  largest bandwidth-delay product the simulator can produce means no chunk ever ramps (a warm persistent
  stream), which the simulator expresses as ``slow_start=False``;
* ``stream_efficiency = min(1, eta)``: the simulator's efficiency is at most 1 (a stream cannot deliver more
  than the available rate); ``eta > 1`` (the deployment's rate estimates run low) is clipped, and logged.

With per-stream efficiencies (``stream_efficiencies``: each stream's own fit, :func:`stream_efficiencies_of`,
given only when some stream delivers less than 85% of the best one's efficiency; the calibrator blends a
stream with few observations toward the pooled fit), the simulator's streams differ
as the deployment's do: ``stream_efficiency = min(1, max_i eta_i)`` and ``path_efficiency_i =
min(1, eta_i) / stream_efficiency`` (at least 0.001), so stream i delivers ``min(1, eta_i)`` of its rate.
Why: one slow or lossy path (its chunks take far longer than its measured rate predicts) is invisible in a
pooled fit, and a simulator where every stream is alike judges a candidate that learned to avoid that path
as merely leaving bandwidth unused.

Everything else (rates, RTTs, loss, tasks) stays as in the base configuration. With the default parameters
(``S = 2``, ``W = 10 x 1460 B``, ``eta = 1``) the result equals the base configuration.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from itp.calibration import TransportParams

if TYPE_CHECKING:
    from itp.sim.physics import SimConfig

__all__ = [
    "DISTINCT_STREAM_RATIO",
    "LAST_BYTE_RTTS",
    "sim_config_from_params",
    "stream_efficiencies_of",
    "transport_params_of",
]

logger = logging.getLogger(__name__)

#: RTTs of the calibrator's set-up term that the simulator does not count as set-up (the last byte's flight).
LAST_BYTE_RTTS: Final = 0.5
#: Smallest per-path efficiency given to the simulator (its ``path_efficiency`` must be > 0).
MIN_PATH_EFFICIENCY: Final = 0.001
#: A stream is modelled on its own only when its efficiency is below this share of the best stream's.
DISTINCT_STREAM_RATIO: Final = 0.85


def transport_params_of(source: Any) -> TransportParams | None:
    """The pooled fitted parameters of ``source``.

    Args:
        source: None, a :class:`TransportParams`, or anything whose ``pooled_params`` (a property, as on
            :class:`itp.calibration.TransportCalibrator`, or a method) gives ``TransportParams``.

    Returns:
        The parameters, or None for ``source=None``.

    Raises:
        TypeError: ``source`` is none of these, or ``pooled_params`` gave something else.
    """
    if source is None:
        return None
    if isinstance(source, TransportParams):
        return source
    # itp.calibration.TransportCalibrator exposes ``pooled_params`` as a property; a duck type may make it
    # a method. Both are accepted.
    pooled = getattr(source, "pooled_params", None)
    if pooled is None or not (isinstance(pooled, TransportParams) or callable(pooled)):
        raise TypeError(
            "calibrator must be a TransportParams or have pooled_params (a property or a method) -> "
            f"TransportParams, got {type(source).__name__}"
        )
    params = pooled if isinstance(pooled, TransportParams) else pooled()
    if not isinstance(params, TransportParams):
        raise TypeError(
            f"calibrator.pooled_params must return TransportParams, got {type(params).__name__}"
        )
    return params


def stream_efficiencies_of(
    source: Any, distinct_ratio: float = DISTINCT_STREAM_RATIO
) -> tuple[float, ...] | None:
    """Each stream's fitted efficiency ``eta_i`` of a calibrator, when some stream stands apart.

    Returns None when ``source`` has no per-stream fit (None, a :class:`TransportParams`, or an object
    without ``num_streams`` and ``params(stream_id)``), or when every stream's ``min(1, eta_i)`` is at least
    ``distinct_ratio`` times the best stream's: differences of a few percent are calibration noise, and
    modelling them only flips simulator verdicts that sit near the margin (measured on the adaptation
    benchmark's warm network: fitted efficiencies 0.97-1.02, no real difference between the paths, and the
    promotions of 2 runs out of 2 became 0 out of 3), where a path at 0.69 (heavy loss) is a real one.

    Raises:
        TypeError: ``params(i)`` gave something other than :class:`TransportParams`.
    """
    if source is None or isinstance(source, TransportParams):
        return None
    n = getattr(source, "num_streams", None)
    per_stream = getattr(source, "params", None)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or not callable(per_stream):
        return None
    out: list[float] = []
    for i in range(n):
        p = per_stream(i)
        if not isinstance(p, TransportParams):
            raise TypeError(f"calibrator.params({i}) must return TransportParams, got {type(p).__name__}")
        out.append(float(p.efficiency))
    clipped = [min(1.0, e) for e in out]
    if min(clipped) >= distinct_ratio * max(clipped):
        return None
    return tuple(out)


def _checked_efficiencies(values: Sequence[float], n: int) -> list[float]:
    if isinstance(values, (str, bytes)) or len(values) != n:
        raise ValueError(f"stream_efficiencies must be {n} numbers, got {values!r}")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise ValueError(f"stream_efficiencies[{i}] must be a finite number > 0, got {v!r}")
        out.append(float(v))
    return out


def sim_config_from_params(
    params: TransportParams, base: SimConfig | None = None, stream_efficiencies: Sequence[float] | None = None
) -> SimConfig:
    """``base`` (default ``SimConfig()``) with its transport replaced by ``params`` and, when given, each
    stream's efficiency by ``stream_efficiencies`` (one per simulated stream; module docstring).

    Raises:
        TypeError: ``params`` is not a :class:`TransportParams`.
        ValueError: ``stream_efficiencies`` is not one finite number > 0 per stream.
    """
    from itp.sim.physics import SimConfig

    if not isinstance(params, TransportParams):
        raise TypeError(f"params must be TransportParams, got {type(params).__name__}")
    cfg = base if base is not None else SimConfig()
    no_ramp_bits = cfg.rate_max_bps * cfg.base_rtt_max_s * (1.0 + cfg.queueing_factor)
    efficiency = min(1.0, float(params.efficiency))
    if params.efficiency > 1.0:
        logger.info(
            "fitted efficiency %.3f > 1 (rate estimates run low) clipped to 1 for the simulator",
            params.efficiency,
        )
    path_efficiency = cfg.path_efficiency
    if stream_efficiencies is not None:
        own = [min(1.0, e) for e in _checked_efficiencies(stream_efficiencies, len(cfg.path_efficiency))]
        efficiency = max(own)
        p0, p1, p2, p3 = (max(MIN_PATH_EFFICIENCY, e / efficiency) for e in own)
        path_efficiency = (p0, p1, p2, p3)
    return dataclasses.replace(
        cfg,
        setup_rtts=max(0.0, float(params.setup_rtts) - LAST_BYTE_RTTS),
        initial_window_bytes=max(1, round(float(params.initial_window_bits) / 8.0)),
        slow_start=bool(params.initial_window_bits < no_ramp_bits),
        stream_efficiency=efficiency,
        path_efficiency=path_efficiency,
    )
