"""Online calibration of the transport model from per-chunk outcomes.

The split and the heuristic predict how long a chunk of ``b`` bits takes on a stream whose measured rate is
``r`` bit/s and RTT ``R`` s (:mod:`itp.transport`)::

    t(b) = S R + u(b; W, eta r, R)

    u(b) = R log2(1 + b / W)            for b <= rho        (slow start from a window of W bits)
    u(b) = s + (b - rho) / (eta r)      for b >  rho        (then the full rate)
    with  s = R log2(eta r R / W),  rho = eta r R - W   when eta r R > W,  else s = rho = 0

with three transport parameters: ``S`` (set-up and propagation, in RTTs), ``W`` (the window a chunk starts
from, bits: 10 segments for a fresh connection, a bandwidth-delay product or more for a warm persistent
stream) and ``eta`` (delivered rate over measured rate). The defaults (``S = 2``, ``W = 10 x 1460 B``,
``eta = 1``) are the fresh-connection physics of :mod:`itp.sim`; a deployment with warm persistent streams,
slow-start restart after idle, or rate estimates that are biased has other values. This module fits them
from what the deployment reports.

**Estimator.** Each stream keeps its last ``capacity`` chunk observations ``(b_i, t_i, r_i, R_i, at_i)``
(bounded memory). A fit minimises a weighted Huber loss of the log ratio ``e_i = log(t_i / t(b_i; theta))``
(scale-free: a 64 KiB chunk and a 1 GiB chunk count alike)::

    theta* = argmin sum_i w_i huber(e_i, delta)      w_i = 2^(-(now - at_i) / half_life_s)

by a coarse-to-fine grid search: ``S`` in [0, 4] (step 0.25), ``log2 W`` from one segment to 2^30 bits
(24 points), ``log eta`` over [eta_min, eta_max] (25 points), then a 9 x 9 x 9 grid around the best point.
A grid, not gradient steps: the loss is flat in ``W`` wherever no chunk is in slow start, and a grid cannot
diverge. Huber loss bounds the influence of stragglers; the decay forgets an old regime with the given
half life.

**Known start windows.** A persistent TCP stream keeps its congestion window between chunks unless it
sat idle longer than its RTO (Linux's slow-start restart), so two chunks of one stream may start from very
different windows. A sender that knows the window a chunk started from (``TCP_INFO``; see
:func:`itp.transport.start_window_bits`) reports it (``ChunkOutcome.start_window_bits``); such a chunk is
modelled from ``max(W, its start window)``, so ``W`` is fitted on what the sender does not know (the cold
starts) instead of averaging warm and cold chunks into a window that is wrong for both. At decision time
the partitioner applies the same rule with the start window of ``update_stream``.

**Confidence and pooling.** Per stream and per deployment: the pooled fit uses every stream's
observations; a stream's own fit is blended with the pooled one in log space with weight
``n_eff / (n_eff + prior_strength)``, ``n_eff = (sum w)^2 / sum w^2`` its effective number of recent
observations, so a stream with few chunks borrows from the others and a well-observed stream stands on its
own. With no observations at all the defaults are returned.

**Persistence.** :meth:`TransportCalibrator.save` writes the held observations (their ages, not the
process's monotonic clock) to a JSON file, atomically; :meth:`TransportCalibrator.load` puts them back in a
new process, aged by the wall-clock time that passed in between, so a deployment that runs ``itp send``
once per batch keeps what it fitted (``itp send --learn`` does this).

**Failure model.** A chunk's attempt of data time ``D = 8 b / r`` (seconds at the decision's measured
rate) fails with probability ``q(D) = 1 - (1 - q0) exp(-lam D)``: a per-attempt probability ``q0`` and a
hazard ``lam`` per second of transfer. A chunk reported with ``retries`` failed attempts before it was
delivered has likelihood ``q(D)^retries (1 - q(D))``; :func:`fit_failure_model` maximises the decayed,
weighted log-likelihood over ``(a, lam) = (-ln(1 - q0), lam) >= 0``, where it is concave (projected Newton
steps with backtracking), per stream, and each stream's fit is blended with the pooled one as above.
The partitioner can score splits with it (``TaskPartitioner(model_failures=True)``, ``itp.heuristic``):
with a hazard per second, a large chunk on a lossy stream fails far more often than the success rate
measured mostly on smaller chunks says, and each failure costs its whole chunk. ``lam`` absorbs the
stream's efficiency (``D`` is at the measured rate, as the split sees it). A chunk that was never
delivered counts as delivered after its retries (a slight underestimate).

**Error.** :meth:`TransportCalibrator.prediction_error` reports ``median |t_measured / t_predicted - 1|``
over the recent observations, with the default parameters and with the fitted ones: the figure that shows
the model learning the network.

Thread-safety: every method of :class:`TransportCalibrator` may be called from any thread (one lock;
``fit`` computes outside it on a snapshot). Observing is O(1); a fit is O(grid x observations): measured
2.0 s for 4 x 512 observations on a busy 2-core VM. It is meant for a background thread or every few
hundred outcomes, never the decision path.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from itp.transport import DEFAULT_TRANSPORT_PARAMS, SEGMENT_BITS, TransportParams

__all__ = [
    "DEFAULT_TRANSPORT_PARAMS",
    "NO_FAILURES",
    "CalibrationError",
    "ChunkObservation",
    "FailureModel",
    "TransportCalibrator",
    "TransportParams",
    "chunk_time_s",
    "fit_failure_model",
]

FloatArray = npt.NDArray[np.float64]

_STATE_FORMAT: Final = "itp-transport-calibrator/1"
"""``format`` of the files :meth:`TransportCalibrator.save` writes."""
_S_GRID: Final = np.linspace(0.0, 4.0, 17)
_LOG2_W_GRID: Final = np.linspace(math.log2(SEGMENT_BITS), 30.0, 24)


def chunk_time_s(
    bits: npt.ArrayLike,
    rate_bps: npt.ArrayLike,
    rtt_s: npt.ArrayLike,
    params: TransportParams = DEFAULT_TRANSPORT_PARAMS,
    start_window_bits: npt.ArrayLike = 0.0,
) -> FloatArray:
    """Predicted seconds for chunks of ``bits`` at measured ``rate_bps`` and ``rtt_s`` (broadcasting),
    each starting from ``max(params.initial_window_bits, start_window_bits)`` (0: unknown).

    With the default parameters this is :func:`itp.transport.transport_chunk_time` (same formula;
    a test checks them against each other). +inf where the rate is 0; 0 for 0 bits (no chunk is sent,
    so it pays no set-up either, as the native model).
    """
    b = np.asarray(bits, dtype=np.float64)
    r_meas = np.asarray(rate_bps, dtype=np.float64)
    rtt = np.asarray(rtt_s, dtype=np.float64)
    w = np.maximum(params.initial_window_bits, np.asarray(start_window_bits, dtype=np.float64))
    t = _model_time(b, r_meas * params.efficiency, rtt, params.setup_rtts, w)
    return np.where(b > 0.0, t, 0.0)


def _model_time(b: FloatArray, r: FloatArray, rtt: FloatArray, s_rtts: Any, w: Any) -> FloatArray:
    """t = S R + u(b) at effective rate ``r`` (arrays broadcast; S and W may be arrays too)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        bdp = r * rtt
        ramp = bdp > w
        rho = np.where(ramp, bdp - w, 0.0)
        s = np.where(ramp, rtt * np.log2(np.where(ramp, bdp / w, 1.0)), 0.0)
        slow = rtt * np.log2(1.0 + b / w)
        fast = s + (b - rho) / r
        u = np.where(b <= rho, slow, fast)
        out: FloatArray = s_rtts * rtt + u
    return np.where(r > 0.0, out, np.inf)


@dataclass(frozen=True)
class ChunkObservation:
    """One chunk as it went on one stream.

    Attributes:
        stream_id: 0..num_streams-1.
        size_bytes: bytes of the chunk, >= 1.
        seconds: first byte sent to the receiver's acknowledgement, > 0.
        rate_bps: the stream's measured rate when the chunk was decided (bit/s, > 0; what the split used,
            i.e. bandwidth x success rate).
        rtt_s: the stream's measured RTT then (s, >= 0).
        at_s: when it completed, on the caller's monotonic clock (s); drives the decay.
        start_window_bits: the window the chunk started from when the sender knew it (bits, finite,
            >= 0; 0: unknown, the fitted ``W`` applies).
        retries: failed attempts before the chunk was delivered (int >= 0; the failure model's data).
    """

    stream_id: int
    size_bytes: int
    seconds: float
    rate_bps: float
    rtt_s: float
    at_s: float
    start_window_bits: float = 0.0
    retries: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.stream_id, bool) or not isinstance(self.stream_id, (int, np.integer)):
            raise TypeError(f"stream_id must be an int, got {type(self.stream_id).__name__}")
        if isinstance(self.size_bytes, bool) or not isinstance(self.size_bytes, (int, np.integer)):
            raise TypeError(f"size_bytes must be an int, got {type(self.size_bytes).__name__}")
        if self.size_bytes < 1:
            raise ValueError(f"size_bytes must be >= 1, got {self.size_bytes}")
        for name, positive in (("seconds", True), ("rate_bps", True), ("rtt_s", False), ("at_s", False),
                               ("start_window_bits", False)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                raise TypeError(f"{name} must be a number, got {type(v).__name__}")
            if not math.isfinite(v) or (v <= 0.0 if positive else (v < 0.0 and name != "at_s")):
                raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {v!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, (int, np.integer)):
            raise TypeError(f"retries must be an int, got {type(self.retries).__name__}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")


@dataclass(frozen=True)
class FailureModel:
    """One stream's chunk-failure model (module docstring): an attempt of data time ``D`` seconds fails
    with probability ``1 - (1 - fail_probability) exp(-hazard_per_s D)``.

    Attributes:
        fail_probability: per attempt, whatever its length, in [0, 1).
        hazard_per_s: per second of data time, finite, >= 0.
    """

    fail_probability: float = 0.0
    hazard_per_s: float = 0.0

    def __post_init__(self) -> None:
        p, h = self.fail_probability, self.hazard_per_s
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (
            math.isfinite(p) and 0.0 <= p < 1.0
        ):
            raise ValueError(f"fail_probability must be in [0, 1), got {p!r}")
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not (math.isfinite(h) and h >= 0.0):
            raise ValueError(f"hazard_per_s must be finite and >= 0, got {h!r}")

    def as_dict(self) -> dict[str, float]:
        """JSON-ready."""
        return {"fail_probability": self.fail_probability, "hazard_per_s": self.hazard_per_s}


NO_FAILURES: Final = FailureModel()


def _failure_loglik(a: float, lam: float, d: FloatArray, r: FloatArray, w: FloatArray) -> float:
    x = np.maximum(a + lam * d, 1e-300)
    return float(np.sum(w * (r * np.log(-np.expm1(-x)) - x)))


def fit_failure_model(
    data_s: npt.ArrayLike, retries: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> FailureModel:
    """Weighted maximum-likelihood failure model from chunks (module docstring).

    Args:
        data_s: each chunk's data time ``8 b / r``, seconds (finite, >= 0).
        retries: each chunk's failed attempts before delivery (>= 0).
        weights: each chunk's weight (finite, >= 0; None: 1).

    Returns:
        The fitted model; no failures at all give :data:`NO_FAILURES`.

    Raises:
        ValueError: arrays of different lengths, or a value out of range (named).
    """
    d = np.asarray(data_s, dtype=np.float64)
    r = np.asarray(retries, dtype=np.float64)
    w = np.ones_like(d) if weights is None else np.asarray(weights, dtype=np.float64)
    if d.ndim != 1 or r.shape != d.shape or w.shape != d.shape:
        raise ValueError(f"data_s, retries and weights must be 1-D of one length, got {d.shape}, {r.shape}, "
                         f"{w.shape}")
    for name, v in (("data_s", d), ("retries", r), ("weights", w)):
        if not np.all(np.isfinite(v) & (v >= 0.0)):
            raise ValueError(f"{name} must be finite and >= 0")
    if d.size == 0 or float(np.sum(w * r)) <= 0.0:
        return NO_FAILURES
    # Start inside the domain: a from the mean failures per attempt, no hazard.
    a = math.log1p(float(np.sum(w * r)) / max(float(np.sum(w)), 1e-300))
    lam = 0.0
    ll = _failure_loglik(a, lam, d, r, w)
    for _ in range(100):
        x = np.maximum(a + lam * d, 1e-12)
        em1 = np.expm1(x)
        g = w * (r / em1 - 1.0)                       # d ll / d x
        h = -w * r * (em1 + 1.0) / (em1 * em1)        # d2 ll / d x2 (<= 0)
        grad = np.array([np.sum(g), np.sum(g * d)])
        hess = np.array([[np.sum(h), np.sum(h * d)], [np.sum(h * d), np.sum(h * d * d)]])
        try:
            step = -np.linalg.solve(hess - 1e-12 * np.eye(2), grad)
        except np.linalg.LinAlgError:
            step = grad * 1e-3
        if not np.all(np.isfinite(step)):
            break
        t = 1.0
        improved = False
        while t > 1e-10:
            a_new, lam_new = max(a + t * step[0], 0.0), max(lam + t * step[1], 0.0)
            ll_new = _failure_loglik(a_new, lam_new, d, r, w)
            if ll_new >= ll - 1e-12 * abs(ll):
                improved = ll_new > ll + 1e-12 * abs(ll)
                a, lam, ll = a_new, lam_new, ll_new
                break
            t *= 0.5
        if not improved:
            break
    return FailureModel(fail_probability=min(float(-math.expm1(-a)), 0.99), hazard_per_s=float(lam))


@dataclass(frozen=True)
class CalibrationError:
    """Median ``|measured / predicted - 1|`` over recent chunks, default vs fitted parameters."""

    observations: int
    default_error: float
    fitted_error: float

    def as_dict(self) -> dict[str, float | int]:
        """Plain data."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class _Fit:
    params: TransportParams
    effective_observations: float


def _huber(e: FloatArray, delta: float) -> FloatArray:
    a = np.abs(e)
    out: FloatArray = np.where(a <= delta, 0.5 * e * e, delta * (a - 0.5 * delta))
    return out


def _fit(
    b: FloatArray, t: FloatArray, r: FloatArray, rtt: FloatArray, w: FloatArray,
    eta_bounds: tuple[float, float], delta: float, w0: FloatArray | None = None,
) -> _Fit:
    """Weighted robust grid fit (coarse S x W grid, eta on a log grid, then one finer pass); ``w0``: the
    observations' known start windows (bits, 0 where unknown), a floor under the fitted ``W``."""
    floor = np.zeros_like(b) if w0 is None else w0
    n_eff = float(w.sum() ** 2 / np.dot(w, w))
    log_t = np.log(t)
    lo, hi = math.log(eta_bounds[0]), math.log(eta_bounds[1])

    def search(s_vals: FloatArray, lw_vals: FloatArray, le_vals: FloatArray) -> tuple[float, float, float]:
        best = (math.inf, 0.0, 0.0, 0.0)
        for le in le_vals:
            r_eff = r * math.exp(le)
            # [S, W, obs] in one broadcast per eta.
            pred = _model_time(
                b[None, None, :], r_eff[None, None, :], rtt[None, None, :],
                s_vals[:, None, None], np.maximum(np.exp2(lw_vals)[None, :, None], floor[None, None, :]),
            )
            loss = (_huber(log_t[None, None, :] - np.log(pred), delta) * w[None, None, :]).sum(axis=2)
            i, j = np.unravel_index(int(np.argmin(loss)), loss.shape)
            if loss[i, j] < best[0]:
                best = (float(loss[i, j]), float(s_vals[i]), float(lw_vals[j]), float(le))
        return best[1], best[2], best[3]

    s0, lw0, le0 = search(_S_GRID, _LOG2_W_GRID, np.linspace(lo, hi, 25))
    ds = float(_S_GRID[1] - _S_GRID[0])
    dw = float(_LOG2_W_GRID[1] - _LOG2_W_GRID[0])
    de = (hi - lo) / 24.0
    s1, lw1, le1 = search(
        np.clip(np.linspace(s0 - ds, s0 + ds, 9), 0.0, 4.0),
        np.clip(np.linspace(lw0 - dw, lw0 + dw, 9), _LOG2_W_GRID[0], _LOG2_W_GRID[-1]),
        np.clip(np.linspace(le0 - de, le0 + de, 9), lo, hi),
    )
    # 2**log2(one segment) can round a hair below one segment: clamp to the grid's own bounds.
    window_bits = min(max(float(2.0**lw1), SEGMENT_BITS), float(2.0 ** _LOG2_W_GRID[-1]))
    return _Fit(TransportParams(s1, window_bits, float(math.exp(le1))), n_eff)


class TransportCalibrator:
    """Per-stream and per-deployment fit of :class:`TransportParams` from chunk outcomes.

    Args:
        num_streams: streams observed (>= 1).
        capacity: observations kept per stream (>= 8); the oldest go first.
        half_life_s: decay half life of an observation's weight, seconds (> 0).
        prior_strength: effective observations at which a stream's own fit and the pooled fit weigh the
            same (>= 0; 0: per-stream fits only).
        min_observations: a stream (or the deployment) needs this many before it is fitted (>= 3).
        efficiency_bounds: allowed range of ``efficiency`` (0 < low < 1 < high).
        huber_delta: Huber threshold on the log-ratio error (> 0; 0.3 ~ 35 %).
    """

    def __init__(
        self,
        num_streams: int = 4,
        *,
        capacity: int = 512,
        half_life_s: float = 600.0,
        prior_strength: float = 30.0,
        min_observations: int = 8,
        efficiency_bounds: tuple[float, float] = (0.05, 4.0),
        huber_delta: float = 0.3,
    ) -> None:
        for name, v, low in (("num_streams", num_streams, 1), ("capacity", capacity, 8),
                             ("min_observations", min_observations, 3)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
        for name, x in (("half_life_s", half_life_s), ("huber_delta", huber_delta)):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {x!r}")
        if isinstance(prior_strength, bool) or not isinstance(prior_strength, (int, float)) or not (
            math.isfinite(prior_strength) and prior_strength >= 0
        ):
            raise ValueError(f"prior_strength must be a finite number >= 0, got {prior_strength!r}")
        low_e, high_e = efficiency_bounds
        if not (0.0 < low_e < 1.0 < high_e and math.isfinite(high_e)):
            raise ValueError(f"efficiency_bounds must satisfy 0 < low < 1 < high, got {efficiency_bounds!r}")
        self.num_streams = num_streams
        self.capacity = capacity
        self.half_life_s = float(half_life_s)
        self.prior_strength = float(prior_strength)
        self.min_observations = min_observations
        self.efficiency_bounds = (float(low_e), float(high_e))
        self.huber_delta = float(huber_delta)
        self._lock = threading.Lock()
        self._obs: list[deque[ChunkObservation]] = [deque(maxlen=capacity) for _ in range(num_streams)]
        self._params: list[TransportParams] = [DEFAULT_TRANSPORT_PARAMS] * num_streams
        self._pooled = DEFAULT_TRANSPORT_PARAMS
        self._failures: list[FailureModel] = [NO_FAILURES] * num_streams
        self._pooled_failures = NO_FAILURES
        self._fits = 0

    # ------------------------------------------------------------------------------ observing
    def observe(self, observation: ChunkObservation) -> None:
        """Record one chunk outcome. O(1). Raises ValueError for an unknown stream (nothing recorded)."""
        if not isinstance(observation, ChunkObservation):
            raise TypeError(f"observation must be a ChunkObservation, got {type(observation).__name__}")
        if not 0 <= observation.stream_id < self.num_streams:
            raise ValueError(
                f"stream_id must be in 0..{self.num_streams - 1}, got {observation.stream_id}"
            )
        with self._lock:
            self._obs[observation.stream_id].append(observation)

    def observe_many(self, observations: Iterable[ChunkObservation]) -> None:
        """Record several outcomes (all validated first: all or nothing)."""
        obs = list(observations)
        for o in obs:
            if not isinstance(o, ChunkObservation):
                raise TypeError(f"observations must be ChunkObservation, got {type(o).__name__}")
            if not 0 <= o.stream_id < self.num_streams:
                raise ValueError(f"stream_id must be in 0..{self.num_streams - 1}, got {o.stream_id}")
        with self._lock:
            for o in obs:
                self._obs[o.stream_id].append(o)

    def observation_count(self, stream_id: int | None = None) -> int:
        """Observations held (one stream, or all)."""
        with self._lock:
            if stream_id is None:
                return sum(len(q) for q in self._obs)
            return len(self._obs[stream_id])

    # ------------------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str], *, now_s: float | None = None) -> int:
        """Write the held observations to ``path`` (JSON, atomically: temp file + fsync + rename).

        Each observation is stored with its age ``now_s - at_s`` (seconds, clamped at 0) and the file
        with the wall-clock time of the save, so :meth:`load` can age them in another process.

        Args:
            path: the file to write (its folder must exist).
            now_s: the observations' clock now (default ``time.monotonic()``, the partitioner's clock).

        Returns:
            The number of observations written.
        """
        ref = time.monotonic() if now_s is None else float(now_s)
        with self._lock:
            rows = [
                [o.stream_id, int(o.size_bytes), o.seconds, o.rate_bps, o.rtt_s, max(ref - o.at_s, 0.0),
                 o.start_window_bits, int(o.retries)]
                for q in self._obs
                for o in q
            ]
        doc = {
            "format": _STATE_FORMAT,
            "num_streams": self.num_streams,
            "saved_unix_s": time.time(),
            "observations": rows,
        }
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            with tmp.open("w", encoding="utf-8") as f:
                json.dump(doc, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return len(rows)

    def load(self, path: str | os.PathLike[str], *, now_s: float | None = None) -> int:
        """Add the observations saved by :meth:`save` (all or nothing), aged by the time since the save.

        An observation saved ``a`` seconds old ``d`` wall-clock seconds ago gets ``at_s = now_s - a - d``.
        The per-stream capacity still applies (the newest are kept). Call ``fit`` (or the partitioner's
        ``recalibrate``) afterwards to use them.

        Raises:
            OSError: the file cannot be read.
            ValueError: not a calibrator state of this format and stream count, or an invalid observation
                (named); nothing is added then.
        """
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a calibrator state (invalid JSON: {exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != _STATE_FORMAT:
            raise ValueError(f"{path}: not a calibrator state (format {_STATE_FORMAT!r} expected)")
        if doc.get("num_streams") != self.num_streams:
            raise ValueError(
                f"{path}: num_streams is {doc.get('num_streams')!r}, this calibrator has {self.num_streams}"
            )
        saved = doc.get("saved_unix_s")
        rows = doc.get("observations")
        if isinstance(saved, bool) or not isinstance(saved, (int, float)) or not math.isfinite(saved):
            raise ValueError(f"{path}: saved_unix_s must be a finite number, got {saved!r}")
        if not isinstance(rows, list):
            raise ValueError(f"{path}: observations must be a list, got {type(rows).__name__}")
        ref = time.monotonic() if now_s is None else float(now_s)
        offline_s = max(time.time() - float(saved), 0.0)
        obs = []
        for i, row in enumerate(rows):
            # 8 numbers; 7 in files written before retries were recorded (0), 6 before start windows
            # were (unknown: 0).
            if not isinstance(row, list) or len(row) not in (6, 7, 8):
                raise ValueError(f"{path}: observations[{i}] must be a list of 6 to 8 numbers, got {row!r}")
            sid, size, seconds, rate, rtt, age = row[:6]
            start_window = row[6] if len(row) >= 7 else 0.0
            retries = row[7] if len(row) == 8 else 0
            if isinstance(age, bool) or not isinstance(age, (int, float)) or not (
                math.isfinite(age) and age >= 0
            ):
                raise ValueError(f"{path}: observations[{i}] age must be a finite number >= 0, got {age!r}")
            try:
                obs.append(ChunkObservation(sid, size, seconds, rate, rtt, ref - float(age) - offline_s,
                                            start_window, retries))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}: observations[{i}]: {exc}") from None
        self.observe_many(obs)
        return len(obs)

    # ------------------------------------------------------------------------------ fitting
    @staticmethod
    def _arrays(
        obs: list[ChunkObservation],
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        b = np.array([o.size_bytes * 8.0 for o in obs])
        t = np.array([o.seconds for o in obs])
        r = np.array([o.rate_bps for o in obs])
        rtt = np.array([o.rtt_s for o in obs])
        at = np.array([o.at_s for o in obs])
        w0 = np.array([o.start_window_bits for o in obs])
        return b, t, r, rtt, at, w0

    def fit(self, now_s: float | None = None) -> dict[str, Any]:
        """Refit every stream and the pooled (deployment) parameters; returns a JSON-ready summary.

        Args:
            now_s: the decay reference on the observations' clock (default: the newest observation).
        """
        with self._lock:
            snapshot = [list(q) for q in self._obs]
        every = [o for q in snapshot for o in q]
        if not every:
            return self.summary()
        ref = max(o.at_s for o in every) if now_s is None else float(now_s)

        def fit_of(obs: list[ChunkObservation]) -> tuple[_Fit, FailureModel] | None:
            """The transport fit and the failure model of these observations, on the same weights."""
            if len(obs) < self.min_observations:
                return None
            b, t, r, rtt, at, w0 = self._arrays(obs)
            w = np.exp2(-np.maximum(ref - at, 0.0) / self.half_life_s)
            retries = np.array([o.retries for o in obs], dtype=np.float64)
            return (_fit(b, t, r, rtt, w, self.efficiency_bounds, self.huber_delta, w0),
                    fit_failure_model(b / r, retries, w))

        pooled_fits = fit_of(every)
        pooled, pooled_failures = (
            (pooled_fits[0].params, pooled_fits[1]) if pooled_fits is not None
            else (DEFAULT_TRANSPORT_PARAMS, NO_FAILURES)
        )
        params: list[TransportParams] = []
        failures: list[FailureModel] = []
        for obs in snapshot:
            own = fit_of(obs)
            if own is None:
                params.append(pooled)
                failures.append(pooled_failures)
                continue
            fit, model = own
            k = fit.effective_observations / (fit.effective_observations + self.prior_strength)
            params.append(_blend(fit.params, pooled, k))
            failures.append(FailureModel(
                fail_probability=k * model.fail_probability + (1.0 - k) * pooled_failures.fail_probability,
                hazard_per_s=k * model.hazard_per_s + (1.0 - k) * pooled_failures.hazard_per_s,
            ))
        with self._lock:
            self._pooled = pooled
            self._params = params
            self._pooled_failures = pooled_failures
            self._failures = failures
            self._fits += 1
        return self.summary()

    # ------------------------------------------------------------------------------ using
    def params(self, stream_id: int) -> TransportParams:
        """The fitted parameters of a stream (the defaults before any fit)."""
        if not 0 <= stream_id < self.num_streams:
            raise ValueError(f"stream_id must be in 0..{self.num_streams - 1}, got {stream_id}")
        with self._lock:
            return self._params[stream_id]

    def failure_model(self, stream_id: int) -> FailureModel:
        """The fitted failure model of a stream (no failures before any fit)."""
        if not 0 <= stream_id < self.num_streams:
            raise ValueError(f"stream_id must be in 0..{self.num_streams - 1}, got {stream_id}")
        with self._lock:
            return self._failures[stream_id]

    @property
    def pooled_params(self) -> TransportParams:
        """The deployment-wide fit (every stream's observations)."""
        with self._lock:
            return self._pooled

    def predict_s(
        self, stream_id: int, size_bytes: int, rate_bps: float, rtt_s: float, start_window_bits: float = 0.0
    ) -> float:
        """Predicted seconds of one chunk on ``stream_id`` with its fitted parameters (from
        ``max(fitted W, start_window_bits)``)."""
        return float(
            chunk_time_s(size_bytes * 8.0, rate_bps, rtt_s, self.params(stream_id), start_window_bits)
        )

    def prediction_error(self, last: int | None = None) -> CalibrationError:
        """Median ``|measured / predicted - 1|`` over the last ``last`` observations of every stream
        (default: all held), with the default and with the fitted parameters (each chunk from its known
        start window, as the decision path would have predicted it)."""
        with self._lock:
            snapshot = [list(q)[-last:] if last else list(q) for q in self._obs]
            params = list(self._params)
        default_err: list[float] = []
        fitted_err: list[float] = []
        for sid, obs in enumerate(snapshot):
            if not obs:
                continue
            b, t, r, rtt, _, w0 = self._arrays(obs)
            default = chunk_time_s(b, r, rtt, DEFAULT_TRANSPORT_PARAMS, w0)
            default_err.extend(np.abs(t / default - 1.0).tolist())
            fitted_err.extend(np.abs(t / chunk_time_s(b, r, rtt, params[sid], w0) - 1.0).tolist())
        if not default_err:
            return CalibrationError(0, math.nan, math.nan)
        return CalibrationError(
            len(default_err), float(np.median(default_err)), float(np.median(fitted_err))
        )

    def summary(self) -> dict[str, Any]:
        """Fitted parameters per stream and pooled, observations held, fits done (JSON-ready)."""
        with self._lock:
            return {
                "fits": self._fits,
                "pooled": self._pooled.as_dict(),
                "streams": [p.as_dict() for p in self._params],
                "failure_models": [f.as_dict() for f in self._failures],
                "pooled_failure_model": self._pooled_failures.as_dict(),
                "observations": [len(q) for q in self._obs],
            }


def _blend(own: TransportParams, pooled: TransportParams, k: float) -> TransportParams:
    """Geometric blend (log space for W and eta, linear for S) with weight ``k`` on ``own``."""
    return TransportParams(
        setup_rtts=k * own.setup_rtts + (1.0 - k) * pooled.setup_rtts,
        # exp(log(.)) may round a hair below one segment; both inputs are >= one segment.
        initial_window_bits=max(SEGMENT_BITS, math.exp(
            k * math.log(own.initial_window_bits) + (1.0 - k) * math.log(pooled.initial_window_bits)
        )),
        efficiency=math.exp(k * math.log(own.efficiency) + (1.0 - k) * math.log(pooled.efficiency)),
    )
