"""Network physics of the simulator: 4 parallel streams, time-varying rates, set-up, slow start, losses.

Everything here is a pure function of a *realisation* (rate trajectories, per-task random draws) drawn
once per episode from the seed; nothing depends on the actions taken, so any action can be evaluated on
the same future (``PartitionEnv.simulate_action``).

Rate trajectories
-----------------
Each stream i has an available rate ``r_i(t)`` (bit/s), piecewise constant on bins of ``bin_s`` seconds
(default 0.1 s) and looped with period ``P_i = n_i * bin_s``. With ``R[k] = r[k] * bin_s`` (bits per bin)
and prefix sums ``C[k] = sum_{j<k} R[j]`` (one loop carries ``B = C[n]`` bits), the capacity delivered
from time 0 to t is exact::

    k = floor(t / bin_s),  (q, m) = divmod(k, n)
    Cap(t) = q * B + C[m] + (t / bin_s - k) * R[m]

A transfer of b bits starting at t0 ends at the earliest ``t`` with ``Cap(t) - Cap(t0) = b``: with
``y = Cap(t0) + b``, ``q = ceil(y / B) - 1``, ``z = y - q B`` in (0, B], the bin is
``m = min{k: C[k+1] >= z}``
(a binary search, ``np.searchsorted``) and ``t = (q n + m + (z - C[m]) / R[m]) * bin_s``. So a rate drop
mid-chunk slows that chunk exactly, and an outage (zero bins) stalls it until the rate returns.

* **Synthetic** (``synthetic_stream``): per stream, a regime chain normal -> degraded/outage with
  exponential dwell times (means ``dwell_s``, the normal dwell scaled per stream by a log-uniform
  stability factor), multiplying an operating mean rate ``m_i ~ LogU[rate_min_bps, rate_max_bps]``:
  ``r(t) = m_i * f_regime * (1 - 0.4 g(t)) * (1 - diurnal_amplitude * D(h)) * exp(s n(t) - s^2/2)``
  with ``f = (1, 0.35, 0.03)``, ``g`` a shared (cross-stream correlated) congestion level, ``n`` a
  unit-variance 1-s-correlated noise, and ``D(h) = (1 + cos(2 pi (h - 20) / 24)) / 2`` the diurnal load
  (peak at 20:00). Congestion ``c_i(t) = clip(rho g + (1 - rho) h_i + c_regime + 0.2 D, 0, 1)`` with
  ``c_regime = (0, 0.5, 0.9)``; ``g, h_i`` are smoothed Gaussian processes (time constant
  ``congestion_tau_s``) mapped through ``clip(0.15 + 0.15 z, 0, 1)``.
* **Trace** (``trace_stream``): ``r_i(t) = m_i / mean(trace) * trace(t + offset_i)`` (shape kept, scaled to
  the operating mean, random start offset, looped); congestion
  ``c_i = clip(1 - smooth_1s(trace) / mean, 0, 1)``.

Per-chunk physics (``simulate_chunk``)
-------------------------------------
A chunk of S bytes on stream i starting at t0, attempt j = 0, 1, ..., ``max_attempts - 1``:

* RTT: ``rtt = base_rtt_i * (1 + queueing_factor * c_i(t)) + jitter_i * z_j``, ``z_j ~ Exp(1)``.
* Set-up (connection/request): ``setup_rtts * rtt``; data starts at ``t_d = t + setup_rtts * rtt``.
* Rate a stream achieves: ``e * r_i(t)``, with ``e = stream_efficiency`` in (0, 1] (1 = the transport
  fills the available rate; below 1 for header overhead, pacing and queue dynamics measured on real
  TCP, ``docs/testbed.md``). Sending b bits at ``e r`` takes as long as ``b / e`` bits at ``r``, so the
  integral below runs on ``b / e``.
* Slow start (``slow_start=True``) from an initial window ``W = 8 * initial_window_bytes`` bits, doubling
  per RTT up to the rate available at ``t_d`` (``r0 = e r_i(t_d)``): ``n = log2(r0 rtt / W)`` rounds carry
  ``B_ramp = r0 rtt - W`` bits (0 if ``r0 rtt <= W``). If ``8 S <= B_ramp`` the data ends at
  ``t_d + rtt * log2(1 + 8 S / W)``; otherwise the rest ``8 S - B_ramp`` is integrated over ``e r_i`` from
  ``t_d + n rtt`` (formula above). With ``slow_start=False`` (a warm persistent connection that keeps its
  window, e.g. ``tcp_slow_start_after_idle = 0``) there is no ramp: ``B_ramp = 0``, ``n = 0``.
* Regimes (``docs/simulator.md``, "transport regimes"): the defaults (``setup_rtts=1.5``,
  ``slow_start=True``, ``stream_efficiency=1``) are a fresh connection per chunk; a persistent stream
  restarting from the initial window after idle is ``setup_rtts`` about 0.5 (request and acknowledgement,
  no handshake) with ``slow_start=True``; a persistent stream without slow-start restart is
  ``slow_start=False``.
* Loss, with ``q0 = min(0.9, l_i (loss_base + loss_congestion c))`` and ``lam = l_i (hazard_base_per_s
  + hazard_congestion_per_s c)`` (c at the attempt start, ``l_i`` a per-stream loss multiplier) and one
  uniform draw ``u_j``: if ``u_j < q0`` the attempt is doomed and dies once a fraction ``f_j ~ U(0, 1)``
  of its bits has been sent; otherwise it dies at ``t_d + tau`` with
  ``tau = -ln(1 - (u_j - q0) / (1 - q0)) / lam ~ Exp(lam)`` if that comes before its end. So an attempt
  of data duration D fails with probability ``q = 1 - (1 - q0) exp(-lam D)`` (exactly when
  ``u_j < q``), and whether and when it fails depends only on the rates up to the failure (causal: a
  sender observing a failure learns nothing about later rates). The chunk is resent whole after
  ``rto = max(rto_min_s, 2 rtt)``. Each resend is one retransmission. After ``max_attempts`` failed
  attempts the chunk (hence the task) fails.
* Completion: the last byte arrives half an RTT after it is sent: ``finish = t_end + rtt / 2``.
* Persistent windows (``persistent_window=True``, with ``slow_start``): a stream keeps its congestion
  window between chunks, like Linux with ``tcp_slow_start_after_idle = 1``. The first attempt of a chunk
  starts from ``W0 = max(W, W_prev)`` (``W_prev`` the window the stream's previous chunk ended with) when
  the stream was idle for at most an RTO (``idle_s <= max(rto_min_s, 2 rtt)``), else from ``W`` (slow-start
  restart after idle); the ramp then carries ``B_ramp = r0 rtt - W0`` bits in ``log2(r0 rtt / W0)``
  rounds. A resend follows an RTO, so it always restarts from ``W``. A chunk ends with window
  ``W0 + 8 S`` if it finished inside the ramp (doubling: ``W0 2^n`` after sending ``W0 (2^n - 1)``), else
  ``max(W0, r0 rtt)`` (``ChunkResult.end_window_bits``; ``W`` after a failed last attempt).
* Per-path overrides (``StreamParams``, set from ``SimConfig.path_*``): a stream's efficiency is
  ``stream_efficiency * efficiency_factor`` (TCP under random packet loss stays below the available
  rate, Mathis et al. 1997: ``rate ~ MSS / (rtt sqrt(p))``), and its loss terms gain
  ``q0 += extra_loss_probability`` (still capped at 0.9) and ``lam += extra_hazard_per_s``.
* Periodic collapse (``collapse_stream`` set): that stream's rate is multiplied by
  ``collapse_rate_factor`` during the first ``collapse_duration_s`` of every ``collapse_period_s`` of its
  loop (loop time ``b * bin_s`` of bin b; a loop not a multiple of the period shortens its last cycle),
  and its congestion is raised to at least ``1 - collapse_rate_factor`` there (queueing and losses grow as
  in an outage). No random draw is added, so every other number of a realisation is unchanged.

A task's chunks run in parallel; it completes when its last chunk does:
``completion_time_s = max_i finish_i - t0``; goodput = delivered bytes * 8 / completion_time_s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from itp.reward import DEFAULT_REWARD_WEIGHTS, RewardWeights
from itp.sim.traces import Trace
from itp.transport import TransportParams

_FourParams = tuple[TransportParams, TransportParams, TransportParams, TransportParams]

__all__ = [
    "ChunkResult",
    "SimConfig",
    "StreamParams",
    "StreamTrajectory",
    "TaskResult",
    "apply_path_overrides",
    "collapse_trajectory",
    "diurnal_load",
    "draw_stream_params",
    "shared_congestion",
    "simulate_chunk",
    "simulate_task",
    "synthetic_stream",
    "trace_stream",
]

FloatArray = npt.NDArray[np.float64]

# Regimes of the synthetic chain: 0 normal, 1 degraded, 2 outage.
_REGIME_RATE_FACTOR = np.array([1.0, 0.35, 0.03])
_REGIME_CONGESTION = np.array([0.0, 0.5, 0.9])
# Transition probabilities out of each regime (rows: from; columns: to), no self-loops.
_REGIME_NEXT = ((0.0, 0.7, 0.3), (0.7, 0.0, 0.3), (0.5, 0.5, 0.0))
_REGIME_NEXT_CUM = tuple((row[0], row[0] + row[1]) for row in _REGIME_NEXT)


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = math.isfinite(value) and (value >= 0.0 if allow_zero else value > 0.0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"SimConfig.{name} must be finite and {bound}, got {value!r}")


@dataclass(frozen=True)
class SimConfig:
    """Every knob of the simulator (units in the names). Defaults are the documented environment.

    Episode and tasks:
        tasks_per_episode: decisions per episode (the episode is truncated after them).
        task_size_min_bytes, task_size_max_bytes: bounds of the log-uniform task size.
        fixed_task_size_bytes: if set, every task has this size (tests, sweeps).
        mean_interarrival_s: mean of the exponential gaps between task arrivals (queue depth follows
            from arrivals while the sender is busy).
    Streams:
        bin_s: rate bin width, seconds.
        synthetic_period_s: loop length of a synthetic trajectory, seconds.
        rate_min_bps, rate_max_bps: log-uniform range of each stream's operating mean rate.
        base_rtt_min_s, base_rtt_max_s: log-uniform range of each stream's base RTT.
        jitter_fraction: mean RTT jitter as a fraction of the base RTT.
        queueing_factor: RTT inflation at full congestion (rtt = base (1 + factor c)).
        dwell_s: mean dwell (normal, degraded, outage) of the synthetic regime chain, seconds.
        stability_max: normal dwell is scaled per stream by LogU[1/stability_max, stability_max].
        congestion_correlation: weight rho of the shared congestion level.
        congestion_tau_s: time constant of the congestion processes, seconds.
        diurnal_amplitude: rate reduction at the diurnal peak (20:00), fraction.
        rate_noise_sigma: log-sd of the fast (1 s) rate noise.
    Transport:
        setup_rtts: connection/request set-up per chunk attempt, in RTTs.
        initial_window_bytes: slow-start initial window (10 x 1460 B).
        slow_start: every chunk attempt ramps up from the initial window (False: starts at full rate).
        stream_efficiency: fraction of the available rate a stream achieves, in (0, 1].
        rto_min_s: minimum retransmission timeout.
        max_attempts: attempts per chunk before the task fails.
        loss_base, loss_congestion: per-attempt failure probability q0 = l (base + congestion * c).
        hazard_base_per_s, hazard_congestion_per_s: failure hazard per second of data transfer.
        loss_multiplier_max: per-stream loss multiplier l ~ LogU[1/sqrt(max), max].
        persistent_window: streams keep their congestion window between chunks; a chunk restarts slow
            start from the initial window only after an idle gap longer than an RTO (needs
            ``slow_start``; see the module docstring).
        path_efficiency: per-stream factor on ``stream_efficiency``, each in (0, 1].
        path_loss_probability: per-stream probability added to each attempt's failure probability q0,
            each in [0, 0.9].
        path_loss_hazard_per_s: per-stream failure hazard added to lam, per second of transfer, >= 0.
        collapse_stream: the stream (0..3) whose rate collapses periodically, or None.
        collapse_period_s, collapse_duration_s: a collapse starts every period and lasts the duration
            (0 < duration < period), seconds of the stream's loop.
        collapse_rate_factor: the collapsed stream's rate is multiplied by this, in (0, 1).
    Observation (the sender's estimates):
        rate_ewma_alpha, rtt_ewma_alpha, success_ewma_alpha: EWMA weights of new samples.
        probe_interval_s: a stream not measured for this long is probed at the next decision.
        probe_window_s: a probe measures the mean rate over the last this many seconds.
        probe_noise_sigma, sample_noise_sigma: log-sd of probe and chunk throughput measurements.
    The sender's transport model:
        sender_transport_params: the transport parameters the simulated sender splits with and predicts
            each task's completion time by (one :class:`itp.transport.TransportParams` per stream), as
            ``TaskPartitioner.transport_params()`` gives them; None: the built-in defaults (a fresh
            connection per chunk). They are the sender's belief, not the network: the physics above
            decides what happens. Why: physics fitted to a deployment (:mod:`itp.learning.fitted_physics`)
            is played to retrain and gate the deployment's models; its sender must split and predict as
            the deployment's partitioner does (with its calibrated parameters), or the rollouts' chunks
            and rewards (the latency term compares the time taken with the prediction) are those of
            another policy.
    reward_weights: weights of ``itp.reward.compute_reward``.
    """

    tasks_per_episode: int = 64
    task_size_min_bytes: int = 64 * 1024
    task_size_max_bytes: int = 4 * 1024**3
    fixed_task_size_bytes: int | None = None
    mean_interarrival_s: float = 2.0
    bin_s: float = 0.1
    synthetic_period_s: float = 1800.0
    rate_min_bps: float = 50e6
    rate_max_bps: float = 1e9
    base_rtt_min_s: float = 0.01
    base_rtt_max_s: float = 0.15
    jitter_fraction: float = 0.1
    queueing_factor: float = 1.0
    dwell_s: tuple[float, float, float] = (45.0, 10.0, 2.0)
    stability_max: float = 3.0
    congestion_correlation: float = 0.6
    congestion_tau_s: float = 20.0
    diurnal_amplitude: float = 0.3
    rate_noise_sigma: float = 0.15
    setup_rtts: float = 1.5
    initial_window_bytes: int = 14600
    slow_start: bool = True
    stream_efficiency: float = 1.0
    rto_min_s: float = 0.2
    max_attempts: int = 4
    loss_base: float = 0.002
    loss_congestion: float = 0.05
    hazard_base_per_s: float = 0.0002
    hazard_congestion_per_s: float = 0.004
    loss_multiplier_max: float = 4.0
    persistent_window: bool = False
    path_efficiency: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    path_loss_probability: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    path_loss_hazard_per_s: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    collapse_stream: int | None = None
    collapse_period_s: float = 30.0
    collapse_duration_s: float = 4.0
    collapse_rate_factor: float = 0.05
    rate_ewma_alpha: float = 0.3
    rtt_ewma_alpha: float = 0.25
    success_ewma_alpha: float = 0.1
    probe_interval_s: float = 5.0
    probe_window_s: float = 1.0
    probe_noise_sigma: float = 0.25
    sample_noise_sigma: float = 0.05
    sender_transport_params: _FourParams | None = None
    reward_weights: RewardWeights = field(default=DEFAULT_REWARD_WEIGHTS)

    def __post_init__(self) -> None:
        for name in ("tasks_per_episode", "task_size_min_bytes", "task_size_max_bytes", "max_attempts",
                     "initial_window_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"SimConfig.{name} must be an int >= 1, got {v!r}")
        if self.task_size_min_bytes > self.task_size_max_bytes:
            raise ValueError(
                f"SimConfig.task_size_min_bytes ({self.task_size_min_bytes}) must be <= "
                f"task_size_max_bytes ({self.task_size_max_bytes})"
            )
        if self.task_size_max_bytes > 2**50:
            raise ValueError(
                f"SimConfig.task_size_max_bytes must be <= 2**50, got {self.task_size_max_bytes}"
            )
        f = self.fixed_task_size_bytes
        if f is not None and (not isinstance(f, int) or isinstance(f, bool) or not 1 <= f <= 2**50):
            raise ValueError(f"SimConfig.fixed_task_size_bytes must be None or an int in 1..2**50, got {f!r}")
        for name in ("mean_interarrival_s", "bin_s", "synthetic_period_s", "rate_min_bps", "rate_max_bps",
                     "base_rtt_min_s", "base_rtt_max_s", "congestion_tau_s", "rto_min_s",
                     "probe_interval_s", "probe_window_s"):
            _check_positive(name, getattr(self, name))
        for name in ("jitter_fraction", "queueing_factor", "setup_rtts", "rate_noise_sigma", "loss_base",
                     "loss_congestion", "hazard_base_per_s", "hazard_congestion_per_s",
                     "probe_noise_sigma", "sample_noise_sigma"):
            _check_positive(name, getattr(self, name), allow_zero=True)
        for name in ("congestion_correlation", "diurnal_amplitude"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"SimConfig.{name} must be in [0, 1], got {v!r}")
        if not isinstance(self.slow_start, bool):
            raise TypeError(f"SimConfig.slow_start must be a bool, got {self.slow_start!r}")
        e = self.stream_efficiency
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not (
            math.isfinite(e) and 0.0 < e <= 1.0
        ):
            raise ValueError(f"SimConfig.stream_efficiency must be in (0, 1], got {e!r}")
        for name in ("rate_ewma_alpha", "rtt_ewma_alpha", "success_ewma_alpha"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 < v <= 1.0):
                raise ValueError(f"SimConfig.{name} must be in (0, 1], got {v!r}")
        if self.rate_min_bps > self.rate_max_bps:
            raise ValueError(f"SimConfig.rate_min_bps ({self.rate_min_bps}) must be <= rate_max_bps")
        if self.base_rtt_min_s > self.base_rtt_max_s:
            raise ValueError(f"SimConfig.base_rtt_min_s ({self.base_rtt_min_s}) must be <= base_rtt_max_s")
        if len(self.dwell_s) != 3 or not all(math.isfinite(d) and d > 0 for d in self.dwell_s):
            raise ValueError(f"SimConfig.dwell_s must be 3 positive durations, got {self.dwell_s!r}")
        for name in ("stability_max", "loss_multiplier_max"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 1.0):
                raise ValueError(f"SimConfig.{name} must be >= 1, got {v!r}")
        if not isinstance(self.reward_weights, RewardWeights):
            raise TypeError(f"SimConfig.reward_weights must be a RewardWeights, got {self.reward_weights!r}")
        self._check_transport_variants()
        p = self.sender_transport_params
        if p is not None and (
            not isinstance(p, tuple) or len(p) != 4 or not all(isinstance(x, TransportParams) for x in p)
        ):
            raise TypeError(
                f"SimConfig.sender_transport_params must be None or a tuple of 4 TransportParams, got {p!r}"
            )

    def _check_transport_variants(self) -> None:
        """Validate the options of the network variants (persistent windows, per-path overrides, collapse)."""
        if not isinstance(self.persistent_window, bool):
            raise TypeError(f"SimConfig.persistent_window must be a bool, got {self.persistent_window!r}")
        bounds = {
            "path_efficiency": (0.0, 1.0, False),
            "path_loss_probability": (0.0, 0.9, True),
            "path_loss_hazard_per_s": (0.0, math.inf, True),
        }
        for name, (lo, hi, lo_closed) in bounds.items():
            v = getattr(self, name)
            if not isinstance(v, tuple) or len(v) != 4:
                raise ValueError(f"SimConfig.{name} must be a tuple of 4 numbers, got {v!r}")
            for x in v:
                ok = (
                    not isinstance(x, bool)
                    and isinstance(x, (int, float))
                    and math.isfinite(x)
                    and (x >= lo if lo_closed else x > lo)
                    and x <= hi
                )
                if not ok:
                    rng = f"{'[' if lo_closed else '('}{lo}, {hi}]"
                    raise ValueError(f"SimConfig.{name} values must be in {rng}, got {v!r}")
        c = self.collapse_stream
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 3):
            raise ValueError(f"SimConfig.collapse_stream must be None or an int in 0..3, got {c!r}")
        _check_positive("collapse_period_s", self.collapse_period_s)
        _check_positive("collapse_duration_s", self.collapse_duration_s)
        if self.collapse_duration_s >= self.collapse_period_s:
            raise ValueError(
                f"SimConfig.collapse_duration_s ({self.collapse_duration_s}) must be < collapse_period_s "
                f"({self.collapse_period_s})"
            )
        f = self.collapse_rate_factor
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not (math.isfinite(f) and 0.0 < f < 1.0):
            raise ValueError(f"SimConfig.collapse_rate_factor must be in (0, 1), got {f!r}")


class StreamTrajectory:
    """One stream's looped, piecewise-constant available rate and congestion level.

    The arrays may be shared between trajectories (traces are parsed once); ``scale`` and ``offset_s``
    turn a trace into this stream's rate without copying: ``r(t) = scale * base_rate(t + offset_s)``.

    Not thread-safe to mutate (it is never mutated after construction); O(log n) queries.
    """

    __slots__ = ("_congestion", "_loop_bits", "_n", "_prefix", "_rate", "bin_s", "offset_s", "scale")

    def __init__(
        self,
        base_rate_bps: FloatArray,
        congestion: FloatArray,
        *,
        bin_s: float,
        scale: float = 1.0,
        offset_s: float = 0.0,
        prefix_bits: FloatArray | None = None,
    ) -> None:
        if base_rate_bps.ndim != 1 or base_rate_bps.size == 0:
            raise ValueError(f"base_rate_bps must be a non-empty 1-D array, got shape {base_rate_bps.shape}")
        if congestion.shape != base_rate_bps.shape:
            raise ValueError(f"congestion shape {congestion.shape} != rate shape {base_rate_bps.shape}")
        if not (scale > 0.0 and math.isfinite(scale)):
            raise ValueError(f"scale must be finite and > 0, got {scale}")
        self._rate = base_rate_bps
        self._congestion = congestion
        self.bin_s = float(bin_s)
        self.scale = float(scale)
        self.offset_s = float(offset_s)
        self._n = int(base_rate_bps.size)
        if prefix_bits is None:
            prefix_bits = _prefix_bits(base_rate_bps, self.bin_s)
        self._prefix = prefix_bits
        self._loop_bits = float(prefix_bits[-1])
        if not self._loop_bits > 0.0:
            raise ValueError("a stream trajectory needs some positive rate")

    @property
    def period_s(self) -> float:
        """Loop length, seconds."""
        return self._n * self.bin_s

    @property
    def mean_rate_bps(self) -> float:
        """Mean available rate over one loop, bit/s."""
        return self.scale * self._loop_bits / (self._n * self.bin_s)

    def base_arrays(self) -> tuple[FloatArray, FloatArray]:
        """The (read-only, possibly shared) unscaled rate per bin (bit/s) and congestion per bin."""
        return self._rate, self._congestion

    def _bin(self, t_s: float) -> int:
        return math.floor((t_s + self.offset_s) / self.bin_s) % self._n

    def rate_at(self, t_s: float) -> float:
        """Available rate at time ``t_s`` (bit/s)."""
        return self.scale * float(self._rate[self._bin(t_s)])

    def congestion_at(self, t_s: float) -> float:
        """Congestion level in [0, 1] at time ``t_s``."""
        return float(self._congestion[self._bin(t_s)])

    def capacity_bits(self, t_s: float) -> float:
        """``Cap(t)``: bits the stream can carry from time 0 to ``t_s`` (any real t, loops included)."""
        x = (t_s + self.offset_s) / self.bin_s
        k = math.floor(x)
        q, m = divmod(k, self._n)
        return self.scale * (
            q * self._loop_bits + float(self._prefix[m]) + (x - k) * float(self._rate[m]) * self.bin_s
        )

    def mean_rate_between(self, t0_s: float, t1_s: float) -> float:
        """Mean available rate over [t0, t1] (bit/s); the rate at t0 if the interval is empty."""
        if t1_s <= t0_s:
            return self.rate_at(t0_s)
        return (self.capacity_bits(t1_s) - self.capacity_bits(t0_s)) / (t1_s - t0_s)

    def finish_time(self, t0_s: float, bits: float) -> float:
        """Earliest time at which ``bits`` sent from ``t0_s`` at the available rate have all been sent."""
        if bits <= 0.0:
            return t0_s
        y = (self.capacity_bits(t0_s) + bits) / self.scale
        b = self._loop_bits
        q = math.ceil(y / b) - 1
        z = y - q * b
        if z <= 0.0:  # rounding at a loop boundary
            q -= 1
            z += b
        z = min(z, b)
        m = int(self._prefix.searchsorted(z)) - 1
        m = min(max(m, 0), self._n - 1)
        bin_bits = float(self._rate[m]) * self.bin_s
        frac = (z - float(self._prefix[m])) / bin_bits if bin_bits > 0.0 else 0.0
        frac = min(max(frac, 0.0), 1.0)
        return (q * self._n + m + frac) * self.bin_s - self.offset_s


def _prefix_bits(rate_bps: FloatArray, bin_s: float) -> FloatArray:
    out = np.empty(rate_bps.size + 1)
    out[0] = 0.0
    np.cumsum(rate_bps * bin_s, out=out[1:])
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class StreamParams:
    """Per-stream constants of one realisation.

    Attributes:
        base_rtt_s: propagation RTT, seconds.
        jitter_s: mean of the exponential RTT jitter, seconds.
        loss_multiplier: scales the stream's failure probability and hazard.
        efficiency_factor: multiplies ``SimConfig.stream_efficiency`` on this stream, in (0, 1].
        extra_loss_probability: added to each attempt's failure probability q0 (cap 0.9 kept).
        extra_hazard_per_s: added to the failure hazard lam, per second of transfer.
    """

    base_rtt_s: float
    jitter_s: float
    loss_multiplier: float
    efficiency_factor: float = 1.0
    extra_loss_probability: float = 0.0
    extra_hazard_per_s: float = 0.0


class ChunkResult(NamedTuple):
    """Outcome of one chunk on one stream (a NamedTuple: cheap to build in the inner loop).

    Attributes:
        finish_s: absolute time the chunk completed (or was given up), seconds.
        success: delivered (False after ``max_attempts`` failed attempts).
        attempts: attempts made (>= 1).
        retransmissions: resends (attempts - 1).
        failures: failed attempts.
        rate_sample_bps: throughput measured over the steady (post slow-start) phase of the last attempt
            that had one, or NaN if no attempt got past slow start.
        sample_start_s, sample_end_s: the interval that sample covers.
        rtt_sample_s: RTT of the last attempt, seconds.
        end_window_bits: congestion window the stream holds after the chunk, bits (the initial window
            after a failed last attempt); what a persistent stream's next chunk may start from.
    """

    finish_s: float
    success: bool
    attempts: int
    retransmissions: int
    failures: int
    rate_sample_bps: float
    sample_start_s: float
    sample_end_s: float
    rtt_sample_s: float
    end_window_bits: float = math.nan


def simulate_chunk(
    traj: StreamTrajectory,
    params: StreamParams,
    config: SimConfig,
    t0_s: float,
    size_bytes: int,
    fail_u: FloatArray,
    fail_frac: FloatArray,
    jitter_z: FloatArray,
    *,
    prior_window_bits: float = 0.0,
    idle_s: float = math.inf,
) -> ChunkResult:
    """Simulate one chunk (see the module docstring). Pure: the same inputs give the same result.

    Args:
        traj, params: the stream.
        config: the physics constants.
        t0_s: start time, seconds.
        size_bytes: chunk size, bytes (>= 1).
        fail_u, fail_frac, jitter_z: per-attempt draws, each of length ``config.max_attempts``.
        prior_window_bits: the window the stream's previous chunk ended with, bits (0: none); used only
            with ``config.persistent_window``.
        idle_s: seconds the stream was idle before ``t0_s`` (inf: never used); with
            ``config.persistent_window`` a gap of at most an RTO keeps ``prior_window_bits``.

    Complexity: O(max_attempts * log n).
    """
    w_init = 8.0 * config.initial_window_bytes
    bits = 8.0 * size_bytes
    eff = config.stream_efficiency
    if params.efficiency_factor != 1.0:
        eff *= params.efficiency_factor
    ramps = config.slow_start
    keep_window = config.persistent_window and prior_window_bits > 0.0
    t = t0_s
    failures = 0
    rate_sample = math.nan
    s_start = s_end = t0_s
    rtt = params.base_rtt_s
    attempts = 0
    for j in range(config.max_attempts):
        attempts = j + 1
        cong = traj.congestion_at(t)
        rtt = params.base_rtt_s * (1.0 + config.queueing_factor * cong) + params.jitter_s * float(jitter_z[j])
        t_data = t + config.setup_rtts * rtt
        r0 = eff * traj.rate_at(t_data)
        bdp = r0 * rtt
        w_bits = w_init
        if keep_window and j == 0 and idle_s <= max(config.rto_min_s, 2.0 * rtt):
            w_bits = max(w_init, prior_window_bits)
        steady_start = math.nan
        if ramps and bdp > w_bits:
            ramp_bits = bdp - w_bits
            ramp_s = rtt * math.log2(bdp / w_bits)
        else:
            ramp_bits = 0.0
            ramp_s = 0.0
        if bits <= ramp_bits:
            t_end = t_data + rtt * math.log2(1.0 + bits / w_bits)
        else:
            steady_start = t_data + ramp_s
            t_end = traj.finish_time(steady_start, (bits - ramp_bits) / eff)
        lm = params.loss_multiplier
        q0 = min(0.9, lm * (config.loss_base + config.loss_congestion * cong) + params.extra_loss_probability)
        lam = lm * (config.hazard_base_per_s + config.hazard_congestion_per_s * cong)
        lam += params.extra_hazard_per_s
        u = float(fail_u[j])
        t_fail = math.inf
        if u < q0:
            # Doomed from the start: dies once a fraction f of its bits has been sent.
            sent = float(fail_frac[j]) * bits
            if sent <= ramp_bits:
                t_fail = t_data + rtt * math.log2(1.0 + sent / w_bits)
            else:
                t_fail = traj.finish_time(steady_start, (sent - ramp_bits) / eff)
        elif lam > 0.0:
            # Hazard lam per second of transfer: the failure time tau ~ Exp(lam) (from the same uniform,
            # rescaled); the attempt fails if tau comes before its end. Causal: whether and when it fails
            # depends on the rates up to the failure only.
            x = (u - q0) / (1.0 - q0)
            tau = -math.log1p(-x) / lam if x < 1.0 else math.inf
            if t_data + tau < t_end:
                t_fail = t_data + tau
        if t_fail < math.inf:
            failures += 1
            if steady_start == steady_start and t_fail > steady_start:  # not NaN: had a steady phase
                rate_sample = eff * traj.mean_rate_between(steady_start, t_fail)
                s_start, s_end = steady_start, t_fail
            if j + 1 < config.max_attempts:
                t = t_fail + max(config.rto_min_s, 2.0 * rtt)
                continue
            return ChunkResult(
                t_fail, False, attempts, attempts - 1, failures, rate_sample, s_start, s_end, rtt, w_init
            )
        if steady_start == steady_start and t_end > steady_start:
            rate_sample = (bits - ramp_bits) / (t_end - steady_start)
            s_start, s_end = steady_start, t_end
        end_window = w_bits + bits if bits <= ramp_bits else max(w_bits, bdp)
        return ChunkResult(
            t_end + 0.5 * rtt, True, attempts, attempts - 1, failures, rate_sample, s_start, s_end, rtt,
            end_window,
        )
    raise AssertionError("unreachable: max_attempts >= 1")  # pragma: no cover


class TaskResult(NamedTuple):
    """Outcome of one task split over the streams (``simulate_task``).

    Attributes:
        finish_s: absolute time the last chunk completed (or was given up), seconds (t0 if no chunk).
        delivered_bytes: bytes of the chunks that were delivered.
        retransmissions: chunk resends over all streams.
        success: every non-empty chunk was delivered.
        chunks: per-stream results (None for streams that carry no bytes).
    """

    finish_s: float
    delivered_bytes: int
    retransmissions: int
    success: bool
    chunks: tuple[ChunkResult | None, ...]


def simulate_task(
    streams: Sequence[StreamTrajectory],
    params: Sequence[StreamParams],
    config: SimConfig,
    t0_s: float,
    chunk_bytes: Sequence[int],
    fail_u: FloatArray,
    fail_frac: FloatArray,
    jitter_z: FloatArray,
    *,
    prior_window_bits: Sequence[float] | None = None,
    idle_s: Sequence[float] | None = None,
) -> TaskResult:
    """Simulate a task's chunks in parallel, each on its own stream from ``t0_s``.

    The streams carry their chunks independently (the rates are the streams' own), so the aggregate rate
    is the sum over the streams used, and the task completes when its last chunk does:
    ``finish_s = max_i finish_i``. A failed chunk (after ``max_attempts``) fails the task.

    Args:
        streams, params: one per stream (same length as ``chunk_bytes``).
        config: the physics constants.
        t0_s: decision time, seconds.
        chunk_bytes: bytes per stream (>= 0; 0 = stream unused).
        fail_u, fail_frac, jitter_z: per-(stream, attempt) draws, shape ``(streams, max_attempts)``.
        prior_window_bits, idle_s: per stream, the window its last chunk ended with (bits) and the
            seconds it has been idle (persistent windows, see ``simulate_chunk``); None: fresh streams.

    Complexity: O(streams * max_attempts * log n). Pure.
    """
    results: list[ChunkResult | None] = [None] * len(chunk_bytes)
    finish = t0_s
    delivered = 0
    retrans = 0
    success = True
    for i, c in enumerate(chunk_bytes):
        if c <= 0:
            continue
        if prior_window_bits is None or idle_s is None:
            r = simulate_chunk(streams[i], params[i], config, t0_s, c, fail_u[i], fail_frac[i], jitter_z[i])
        else:
            r = simulate_chunk(
                streams[i], params[i], config, t0_s, c, fail_u[i], fail_frac[i], jitter_z[i],
                prior_window_bits=prior_window_bits[i], idle_s=idle_s[i],
            )
        results[i] = r
        finish = max(finish, r.finish_s)
        retrans += r.retransmissions
        if r.success:
            delivered += c
        else:
            success = False
    return TaskResult(finish, delivered, retrans, success, tuple(results))


@lru_cache(maxsize=16)
def _second_index(n: int, bin_s: float, n_sec: int) -> npt.NDArray[np.int64]:
    """Index of the 1-s grid point of each of n bins (cached: it only depends on the config)."""
    idx = np.minimum((np.arange(n) * bin_s).astype(np.int64), n_sec - 1)
    idx.setflags(write=False)
    return idx


def _smooth_noise(rng: np.random.Generator, n: int, tau_steps: float) -> FloatArray:
    """Unit-variance Gaussian noise with exponential autocorrelation time ``tau_steps`` (n values)."""
    if tau_steps <= 1.0:
        out: FloatArray = rng.standard_normal(n)
        return out
    k_len = min(int(4 * tau_steps) + 1, 4 * n + 1)
    kernel = np.exp(-np.arange(k_len) / tau_steps)
    kernel /= math.sqrt(float(np.sum(kernel**2)))
    white = rng.standard_normal(n + k_len - 1)
    smoothed: FloatArray = np.convolve(white, kernel, mode="valid")
    return smoothed


def diurnal_load(hour: FloatArray | float) -> FloatArray | float:
    """Diurnal load D(h) in [0, 1], peak at 20:00: ``(1 + cos(2 pi (h - 20) / 24)) / 2``."""
    load: FloatArray | float = 0.5 + 0.5 * np.cos(2.0 * np.pi * (np.asarray(hour) - 20.0) / 24.0)
    return load


def shared_congestion(rng: np.random.Generator, config: SimConfig) -> FloatArray:
    """The cross-stream congestion level g (one value per second of the synthetic period), in [0, 1]."""
    n_sec = math.ceil(config.synthetic_period_s)
    z = _smooth_noise(rng, n_sec, config.congestion_tau_s)
    g: FloatArray = np.clip(0.15 + 0.15 * z, 0.0, 1.0)
    return g


def synthetic_stream(
    rng: np.random.Generator, config: SimConfig, shared_g: FloatArray, start_hour: float
) -> StreamTrajectory:
    """One synthetic stream trajectory (regime switching, shared congestion, diurnal load, fast noise).

    Args:
        rng: this stream's generator.
        config: the physics constants.
        shared_g: shared congestion level per second (``shared_congestion``).
        start_hour: time of day at t = 0, hours.
    """
    bin_s = config.bin_s
    n = max(1, math.ceil(config.synthetic_period_s / bin_s))
    n_sec = shared_g.size
    mean_rate = math.exp(rng.uniform(math.log(config.rate_min_bps), math.log(config.rate_max_bps)))
    stability = math.exp(rng.uniform(-math.log(config.stability_max), math.log(config.stability_max)))
    dwell_mean = (config.dwell_s[0] * stability, config.dwell_s[1], config.dwell_s[2])
    # Regime chain, segment by segment (draws taken in blocks: far faster than one call per segment).
    regimes: list[int] = []
    lengths: list[int] = []
    total = 0
    regime = 0 if rng.random() < 0.8 else 1
    exp_draws: list[float] = []
    u_draws: list[float] = []
    j = 0
    while total < n:
        if j >= len(exp_draws):
            exp_draws = rng.standard_exponential(128).tolist()
            u_draws = rng.random(128).tolist()
            j = 0
        length = max(1, round(exp_draws[j] * dwell_mean[regime] / bin_s))
        regimes.append(regime)
        lengths.append(length)
        total += length
        row = _REGIME_NEXT_CUM[regime]
        u = u_draws[j]
        regime = 0 if u < row[0] else (1 if u < row[1] else 2)
        j += 1
    per_bin = np.repeat(np.asarray(regimes), lengths)[:n]
    # Slow components live on a 1-s grid (cheap), then are spread to the bins.
    sec_idx = _second_index(n, bin_s, n_sec)
    h_i = np.clip(0.15 + 0.15 * _smooth_noise(rng, n_sec, config.congestion_tau_s), 0.0, 1.0)
    load = np.asarray(diurnal_load(start_hour + np.arange(n_sec) / 3600.0))
    rho = config.congestion_correlation
    sigma = config.rate_noise_sigma
    # Fast noise: 70% of the variance correlated over ~1 s, 30% white per bin (unit variance overall).
    slow = math.sqrt(0.7) * _smooth_noise(rng, n_sec, 1.0)
    per_sec_rate = (
        mean_rate
        * (1.0 - 0.4 * shared_g)
        * (1.0 - config.diurnal_amplitude * load)
        * np.exp(sigma * slow - 0.5 * sigma * sigma)
    )
    per_sec_cong = rho * shared_g + (1.0 - rho) * h_i + 0.2 * load
    white = rng.standard_normal(n)
    white *= sigma * math.sqrt(0.3)
    rate = per_sec_rate[sec_idx] * _REGIME_RATE_FACTOR[per_bin] * np.exp(white)
    congestion = np.clip(per_sec_cong[sec_idx] + _REGIME_CONGESTION[per_bin], 0.0, 1.0)
    rate.setflags(write=False)
    congestion.setflags(write=False)
    return StreamTrajectory(rate, congestion, bin_s=bin_s)


_TRACE_ARRAYS: dict[int, tuple[Trace, FloatArray, FloatArray]] = {}


def _trace_arrays(trace: Trace) -> tuple[FloatArray, FloatArray]:
    """(prefix bits, congestion) of a trace, computed once per parsed trace (keyed by identity)."""
    hit = _TRACE_ARRAYS.get(id(trace))
    if hit is not None and hit[0] is trace:
        return hit[1], hit[2]
    rate = trace.rate_bps
    prefix = _prefix_bits(rate, trace.bin_s)
    w = max(1, round(1.0 / trace.bin_s))
    kernel = np.full(w, 1.0 / w)
    padded = np.concatenate((rate[-(w - 1):], rate)) if w > 1 and rate.size >= w else rate
    smooth = np.convolve(padded, kernel, mode="valid")[-rate.size:] if padded.size >= w else rate
    congestion = np.clip(1.0 - smooth / max(trace.mean_rate_bps, 1e-12), 0.0, 1.0)
    congestion.setflags(write=False)
    if len(_TRACE_ARRAYS) >= 1024:
        _TRACE_ARRAYS.clear()
    _TRACE_ARRAYS[id(trace)] = (trace, prefix, congestion)
    return prefix, congestion


def trace_stream(rng: np.random.Generator, config: SimConfig, trace: Trace) -> StreamTrajectory:
    """A stream replaying ``trace``: random start offset, looped, scaled to LogU[rate_min, rate_max] mean."""
    prefix, congestion = _trace_arrays(trace)
    mean_rate = math.exp(rng.uniform(math.log(config.rate_min_bps), math.log(config.rate_max_bps)))
    offset_s = float(rng.uniform(0.0, trace.period_s))
    loop_mean = float(prefix[-1]) / trace.period_s
    return StreamTrajectory(
        trace.rate_bps,
        congestion,
        bin_s=trace.bin_s,
        scale=mean_rate / loop_mean,
        offset_s=offset_s,
        prefix_bits=prefix,
    )


def draw_stream_params(rng: np.random.Generator, config: SimConfig) -> StreamParams:
    """Base RTT ~ LogU[base_rtt_min_s, base_rtt_max_s], jitter = fraction * base, loss multiplier."""
    base = math.exp(rng.uniform(math.log(config.base_rtt_min_s), math.log(config.base_rtt_max_s)))
    lm_max = config.loss_multiplier_max
    loss_mult = math.exp(rng.uniform(-0.5 * math.log(lm_max), math.log(lm_max)))
    return StreamParams(base_rtt_s=base, jitter_s=config.jitter_fraction * base, loss_multiplier=loss_mult)


def collapse_trajectory(traj: StreamTrajectory, config: SimConfig) -> StreamTrajectory:
    """``traj`` with its rate collapsed periodically (``config.collapse_*``; module docstring).

    Bin b (loop time ``b * bin_s``) is collapsed when ``(b * bin_s) mod collapse_period_s <
    collapse_duration_s``: its rate is multiplied by ``collapse_rate_factor`` and its congestion raised to
    at least ``1 - collapse_rate_factor``. Scale and offset are kept, so outside the collapses the stream
    is exactly ``traj``. O(n) in the loop's bins (new arrays; ``traj`` is not touched).
    """
    base, congestion = traj.base_arrays()
    loop_t = np.arange(base.size) * traj.bin_s
    down = np.mod(loop_t, config.collapse_period_s) < config.collapse_duration_s
    rate = np.where(down, base * config.collapse_rate_factor, base)
    cong = np.where(down, np.maximum(congestion, 1.0 - config.collapse_rate_factor), congestion)
    rate.setflags(write=False)
    cong.setflags(write=False)
    return StreamTrajectory(rate, cong, bin_s=traj.bin_s, scale=traj.scale, offset_s=traj.offset_s)


def apply_path_overrides(params: StreamParams, config: SimConfig, stream_id: int) -> StreamParams:
    """``params`` with stream ``stream_id``'s ``path_*`` overrides of ``config`` (the same object if none)."""
    eff = float(config.path_efficiency[stream_id])
    loss = float(config.path_loss_probability[stream_id])
    hazard = float(config.path_loss_hazard_per_s[stream_id])
    if eff == 1.0 and loss == 0.0 and hazard == 0.0:
        return params
    return StreamParams(
        base_rtt_s=params.base_rtt_s,
        jitter_s=params.jitter_s,
        loss_multiplier=params.loss_multiplier,
        efficiency_factor=eff,
        extra_loss_probability=loss,
        extra_hazard_per_s=hazard,
    )
