"""The Gymnasium environment ``itp/Partition-v0``: place each task of an episode on 4 network streams.

Episode realisation (drawn at ``reset`` from the episode seed, independent of every action):
``np.random.SeedSequence(episode_seed).spawn(8)`` gives independent generators for the 4 streams (rate
trajectory, base RTT, jitter, loss multiplier; in trace mode also the trace file, start offset and
operating mean), the shared congestion level, the task sequence (sizes, priorities, arrival gaps, start
hour) and the per-(task, stream, attempt) draws (failure uniform, failure point, RTT jitter) plus the
per-(task, stream) measurement noises. Task k uses only row k of those arrays, whatever happened before,
so ``simulate_action`` evaluates any action on the same future and equal seeds give equal numbers
across policies.

Sender (observation) model, updated only from what a sender measures:

* rate estimate ``b_i <- (1 - a) b_i + a * x`` with ``x`` the steady-phase throughput of the last
  attempt of a chunk on stream i (times a log-normal measurement noise), or a probe: a stream not
  measured for ``probe_interval_s`` is probed at the next decision, measuring the mean available rate
  over the last ``probe_window_s`` with a noisier log-normal error.
* RTT: ``srtt_i`` EWMA of RTT samples (chunks and probes); ``min_rtt_i`` their minimum;
  congestion ``= clip((srtt_i - min_rtt_i) / min_rtt_i, 0, 1)`` (queueing delay over base RTT).
* success rate: EWMA over attempts (1 = delivered, 0 = failed), probes included.
* queue depth: tasks that arrived (Poisson, mean gap ``mean_interarrival_s``) but have not started;
  task k starts at ``max(arrival_k, completion of task k-1)``.

Persistent windows (``SimConfig.persistent_window``): the environment remembers, per stream, the window
its last chunk ended with and when that chunk finished; the next chunk on the stream starts from that
window when the gap is at most an RTO (``itp.sim.physics``). ``simulate_action`` reads this memory and
only ``step`` updates it, so any action is still evaluated on the same state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces

from itp.actions import NUM_ACTIONS
from itp.reward import Outcome, reward_terms
from itp.sim.physics import (
    ChunkResult,
    SimConfig,
    StreamParams,
    StreamTrajectory,
    apply_path_overrides,
    collapse_trajectory,
    draw_stream_params,
    shared_congestion,
    simulate_task,
    synthetic_stream,
    trace_stream,
)
from itp.sim.policy import Decision, check_chunks, default_split, predicted_time_s
from itp.sim.traces import Trace, load_trace
from itp.state import NUM_FEATURES, NUM_STREAMS, normalize_state

__all__ = ["PartitionEnv", "TaskOutcome", "make_vector_env"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TaskOutcome:
    """What happens to the current task under one decision (from ``simulate_action`` or ``step``).

    Attributes:
        action: the action (0..14).
        chunk_bytes: bytes per stream.
        expected_time_s: the decision-time prediction (seconds).
        completion_time_s: decision to last chunk done (seconds, > 0).
        goodput_bps: delivered bits / completion time (bit/s).
        success: every chunk delivered.
        retransmissions: chunk resends over all streams.
        reward: ``itp.reward.compute_reward`` of this decision and outcome.
        chunks: per-stream results (None for unused streams).
    """

    action: int
    chunk_bytes: tuple[int, int, int, int]
    expected_time_s: float
    completion_time_s: float
    goodput_bps: float
    success: bool
    retransmissions: int
    reward: float
    chunks: tuple[ChunkResult | None, ...]


@dataclass
class _Realisation:
    streams: list[StreamTrajectory]
    params: list[StreamParams]
    start_hour: float
    sizes_bytes: list[int]
    priorities: list[float]
    arrivals_s: FloatArray
    fail_u: FloatArray  # (tasks + 1, 4, attempts)
    fail_frac: FloatArray
    jitter_z: FloatArray
    probe_noise: FloatArray  # (tasks + 1, 4) standard normal
    probe_jitter_z: FloatArray  # (tasks + 1, 4) Exp(1)
    probe_fail_u: FloatArray  # (tasks + 1, 4) U(0, 1)
    sample_noise: FloatArray  # (tasks + 1, 4) standard normal


def _draw_realisation(episode_seed: int, config: SimConfig, traces: Sequence[Trace]) -> _Realisation:
    children = np.random.SeedSequence(episode_seed).spawn(8)
    task_rng = np.random.default_rng(children[5])
    n = config.tasks_per_episode + 1  # one extra task: the state after the last decision
    start_hour = float(task_rng.uniform(0.0, 24.0))
    g = shared_congestion(np.random.default_rng(children[4]), config)
    streams: list[StreamTrajectory] = []
    params: list[StreamParams] = []
    for i in range(NUM_STREAMS):
        rng = np.random.default_rng(children[i])
        params.append(draw_stream_params(rng, config))
        if traces:
            streams.append(trace_stream(rng, config, traces[int(rng.integers(len(traces)))]))
        else:
            streams.append(synthetic_stream(rng, config, g, start_hour))
        # Network variants (SimConfig.path_*, collapse_*) transform the draws without drawing anything,
        # so every other number of the realisation stays what the default physics gives.
        params[i] = apply_path_overrides(params[i], config, i)
        if config.collapse_stream == i:
            streams[i] = collapse_trajectory(streams[i], config)
    if config.fixed_task_size_bytes is not None:
        sizes = [config.fixed_task_size_bytes] * n
    else:
        lo, hi = math.log(config.task_size_min_bytes), math.log(config.task_size_max_bytes)
        sizes = [
            min(max(round(math.exp(x)), config.task_size_min_bytes), config.task_size_max_bytes)
            for x in task_rng.uniform(lo, hi, n)
        ]
    priorities = task_rng.uniform(0.0, 1.0, n).tolist()
    gaps = task_rng.exponential(config.mean_interarrival_s, n)
    gaps[0] = 0.0
    arrivals = np.cumsum(gaps)
    d = np.random.default_rng(children[6])
    shape = (n, NUM_STREAMS, config.max_attempts)
    fail_u, fail_frac, jitter_z = d.random(shape), d.random(shape), d.exponential(1.0, shape)
    m = np.random.default_rng(children[7])
    small = (n, NUM_STREAMS)
    return _Realisation(
        streams=streams,
        params=params,
        start_hour=start_hour,
        sizes_bytes=sizes,
        priorities=priorities,
        arrivals_s=arrivals,
        fail_u=fail_u,
        fail_frac=fail_frac,
        jitter_z=jitter_z,
        probe_noise=m.standard_normal(small),
        probe_jitter_z=m.exponential(1.0, small),
        probe_fail_u=m.random(small),
        sample_noise=m.standard_normal(small),
    )


class PartitionEnv(gym.Env[npt.NDArray[np.float32], np.int64]):
    """Split each transfer task over 4 parallel network streams.

    ## Description
    A sender has 4 network streams with time-varying available rates (synthetic regime switching or
    replayed real traces scaled to 50-1000 Mbit/s), RTTs with jitter and queueing, per-chunk set-up and
    slow start, and a loss process that makes chunks fail and be resent (``itp.sim.physics``). Tasks
    (default sizes log-uniform 64 KiB - 4 GiB, priority U[0, 1]) arrive as a Poisson process; for each
    one the agent chooses which streams carry it; the bytes are split over the chosen streams exactly as
    production splits them (``itp.transport.production_split``: equal predicted finish time with set-up
    and slow start, over effective rates; ``itp.sim.policy.default_split``) and the task completes when
    its last chunk does.

    ## Action Space
    ``Discrete(15)``: 0-3 a single stream, 4-9 the pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3), 10-13 the
    triples (0,1,2) (0,1,3) (0,2,3) (1,2,3), 14 all four (``itp.actions.ACTION_STREAMS``).

    ## Observation Space
    ``Box(0, 1, (20,), float32)``: the sender's estimates at decision time (never the future), natively
    normalised (``itp.normalize_state``): rate estimate x4 (/1e9 bit/s), smoothed RTT x4 (/0.1 s),
    congestion x4, success rate x4, queue depth (/100), log2(task size)/40, priority, hour/24. The raw
    values in caller units are ``env.raw_state`` (float64[20]) and ``info["raw_state"]``.

    ## Rewards
    ``itp.reward.compute_reward`` (one definition for simulation, training and production): log2 goodput
    over the best single stream's predicted goodput, minus penalties for lateness vs. the prediction,
    unbalanced chunks and resends, plus a bonus for completion. See ``docs/reward.md``.

    ## Starting State
    A fresh realisation per ``reset``: random stream means and RTTs, trace files/offsets (trace mode), start
    hour U[0, 24); every stream probed once at t = 0; task 0 arrives at t = 0.

    ## Episode End
    Never terminated; truncated after ``config.tasks_per_episode`` decisions (default 64). The final
    observation describes the next (unplayed) task.

    ## Arguments
    * ``config``: ``SimConfig`` (defaults documented there).
    * ``trace_files``: trace paths (Mahimahi or Pensieve format); each stream replays one, chosen per
      episode. None or empty: synthetic mode.
    * ``render_mode``: None or ``"ansi"`` (a one-line summary of the last step).

    ``info`` of ``step``: completion_time_s, goodput_bps, bytes_per_stream (4-tuple), retransmissions,
    success, expected_time_s, action, raw_state (at decision), task_index, start_time_s.

    ## Version History
    * v0: initial version (reward spec 1, state layout 1). Since then, without a new id (no model had
      been released): chunk failures made causal (same failure events, failure times no longer depend
      on later rates); chunks placed by the transport-aware production split; reward spec 2. Network
      variants (``SimConfig.persistent_window``, ``path_*``, ``collapse_*``; ``itp.sim.networks``) added
      with defaults that leave every number of v0 unchanged.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        trace_files: Sequence[str | Path] | None = None,
        render_mode: str | None = None,
    ) -> None:
        if config is None:
            config = SimConfig()
        if not isinstance(config, SimConfig):
            raise TypeError(f"config must be a SimConfig or None, got {type(config).__name__}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.config = config
        self.render_mode = render_mode
        self.traces: tuple[Trace, ...] = tuple(
            load_trace(p, bin_s=config.bin_s) for p in (trace_files or ())
        )
        self.action_space = spaces.Discrete(NUM_ACTIONS)
        self.observation_space = spaces.Box(0.0, 1.0, (NUM_FEATURES,), np.float32)
        self._real: _Realisation | None = None
        self._k = 0
        self._t = 0.0
        self._raw: FloatArray = np.zeros(NUM_FEATURES)
        self._last: TaskOutcome | None = None
        # Sender estimates (Python lists: scalar work is faster than numpy on 4 values).
        self._rate = [0.0] * NUM_STREAMS
        self._srtt = [0.0] * NUM_STREAMS
        self._min_rtt = [0.0] * NUM_STREAMS
        self._succ = [1.0] * NUM_STREAMS
        self._last_meas = [0.0] * NUM_STREAMS
        # Persistent windows: per stream, the window its last chunk ended with (bits) and that chunk's
        # finish time (seconds); read only when config.persistent_window.
        self._window_bits = [0.0] * NUM_STREAMS
        self._busy_until_s = [-math.inf] * NUM_STREAMS

    # ------------------------------------------------------------------ properties
    @property
    def task_arrival_s(self) -> float:
        """Arrival time of the task awaiting a decision, seconds since the episode start (action-free)."""
        return float(self._require_reset().arrivals_s[self._k])

    @property
    def last_outcome(self) -> TaskOutcome | None:
        """The outcome of the last ``step`` (per-chunk results included), None before the first one."""
        return self._last

    @property
    def task_size_bytes(self) -> int:
        """Size of the task awaiting a decision, bytes (action-free)."""
        return int(self._require_reset().sizes_bytes[self._k])

    @property
    def raw_state(self) -> FloatArray:
        """The current decision state in caller units (float64[20], a copy)."""
        self._require_reset()
        out: FloatArray = self._raw.copy()
        return out

    @property
    def task_index(self) -> int:
        """Index of the task awaiting a decision (0 .. tasks_per_episode)."""
        return self._k

    @property
    def time_s(self) -> float:
        """Simulated time of the current decision, seconds since the episode start."""
        return self._t

    def stream_windows(self) -> tuple[tuple[float, float], ...] | None:
        """Per stream, ``(window_bits, idle_s)``: the congestion window its last chunk ended with (bits;
        0 before its first chunk) and the seconds since that chunk finished (inf before it) -- what a
        sender of persistent streams reads from ``TCP_INFO`` (cwnd, time since data was last sent).
        None unless ``SimConfig.persistent_window`` (every chunk is a fresh connection)."""
        if not self.config.persistent_window:
            return None
        self._require_reset()
        return tuple(
            (float(w), max(self._t - b, 0.0))
            for w, b in zip(self._window_bits, self._busy_until_s, strict=True)
        )

    @property
    def streams(self) -> tuple[StreamTrajectory, ...]:
        """This episode's stream trajectories (the realised future; for analysis and tests)."""
        return tuple(self._require_reset().streams)

    @property
    def stream_params(self) -> tuple[StreamParams, ...]:
        """This episode's per-stream constants."""
        return tuple(self._require_reset().params)

    def _require_reset(self) -> _Realisation:
        if self._real is None:
            raise RuntimeError("call reset() before using the environment")
        return self._real

    # ------------------------------------------------------------------ Gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        """Start an episode (see the class docstring). ``options`` is not used (must be None or empty)."""
        super().reset(seed=seed)
        if options:
            raise ValueError(f"PartitionEnv.reset takes no options, got {sorted(options)}")
        episode_seed = int(self.np_random.integers(0, 2**63 - 1))
        self._real = _draw_realisation(episode_seed, self.config, self.traces)
        self._k = 0
        self._t = 0.0
        self._last = None
        self._window_bits = [0.0] * NUM_STREAMS
        self._busy_until_s = [-math.inf] * NUM_STREAMS
        cfg = self.config
        for i in range(NUM_STREAMS):
            rate, rtt, ok = self._probe(i, 0, 0.0)
            self._rate[i] = rate
            self._srtt[i] = rtt
            self._min_rtt[i] = rtt
            self._succ[i] = 1.0 - cfg.success_ewma_alpha * (0.0 if ok else 1.0)
            self._last_meas[i] = 0.0
        self._build_raw()
        return normalize_state(self._raw), {"raw_state": self._raw.copy(), "task_index": 0}

    def step(
        self, action: int | np.integer[Any]
    ) -> tuple[npt.NDArray[np.float32], SupportsFloat, bool, bool, dict[str, Any]]:
        """Place the current task with ``action`` (production chunking) and advance to the next task."""
        return self.step_decision(Decision(self._check_action(action)))

    def step_decision(
        self, decision: Decision
    ) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """Like ``step`` but with an optional explicit chunking (``Decision.chunk_bytes``)."""
        real = self._require_reset()
        if self._k >= self.config.tasks_per_episode:
            raise RuntimeError("episode is over (truncated); call reset()")
        raw = self._raw
        out = self._simulate(self._check_action(decision.action), decision.chunk_bytes)
        k, t0 = self._k, self._t
        self._observe_chunks(out)
        if self.config.persistent_window:
            for i, r in enumerate(out.chunks):
                if r is not None:
                    self._window_bits[i] = r.end_window_bits
                    self._busy_until_s[i] = r.finish_s
        done_t = t0 + out.completion_time_s
        self._k = k + 1
        self._t = max(float(real.arrivals_s[self._k]), done_t)
        self._probe_stale()
        self._build_raw()
        self._last = out
        info = {
            "completion_time_s": out.completion_time_s,
            "goodput_bps": out.goodput_bps,
            "bytes_per_stream": out.chunk_bytes,
            "retransmissions": out.retransmissions,
            "success": out.success,
            "expected_time_s": out.expected_time_s,
            "action": out.action,
            "raw_state": raw,
            "task_index": k,
            "start_time_s": t0,
        }
        truncated = self._k >= self.config.tasks_per_episode
        return normalize_state(self._raw), out.reward, False, truncated, info

    def simulate_action(
        self, action: int, chunk_bytes: Sequence[int] | None = None
    ) -> TaskOutcome:
        """What the current task would give under ``action`` (and optional chunks), without advancing.

        Uses the episode's realised future, so it is clairvoyant: for the oracle and for analysis only.
        Pure: calling it any number of times changes nothing. ~20-60 us.
        """
        self._require_reset()
        if self._k >= self.config.tasks_per_episode:
            raise RuntimeError("episode is over (truncated); call reset()")
        a = self._check_action(action)
        if chunk_bytes is None:
            return self._simulate(a, None)
        real = self._require_reset()
        return self._simulate(a, check_chunks(list(chunk_bytes), a, real.sizes_bytes[self._k]))

    def render(self) -> str | None:
        """``"ansi"``: one line about the last step; None otherwise."""
        if self.render_mode != "ansi":
            return None
        if self._last is None:
            return f"task {self._k} at t={self._t:.3f}s: no step yet"
        o = self._last
        return (
            f"task {self._k - 1}: action {o.action} bytes {o.chunk_bytes} -> "
            f"{o.completion_time_s * 1e3:.1f} ms, {o.goodput_bps / 1e6:.1f} Mbit/s, "
            f"success={o.success}, retransmissions={o.retransmissions}, reward={o.reward:.3f}"
        )

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _check_action(action: object) -> int:
        if isinstance(action, np.ndarray) and action.shape == () and np.issubdtype(action.dtype, np.integer):
            action = action.item()  # a 0-d integer array, as vector envs and samplers produce
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
            raise TypeError(f"action must be an int in 0..{NUM_ACTIONS - 1}, got {action!r}")
        a = int(action)
        if not 0 <= a < NUM_ACTIONS:
            raise ValueError(f"action must be in 0..{NUM_ACTIONS - 1}, got {a}")
        return a

    def _simulate(self, action: int, chunk_bytes: tuple[int, int, int, int] | None) -> TaskOutcome:
        real = self._real
        assert real is not None
        raw = self._raw
        k, t0 = self._k, self._t
        size = real.sizes_bytes[k]
        sender = self.config.sender_transport_params
        if chunk_bytes is None:
            split = default_split(raw, action, sender)
            chunks, expected = split.chunk_bytes, split.expected_time_s
        else:
            chunks = check_chunks(chunk_bytes, action, size)
            expected = predicted_time_s(raw, chunks, sender)
        if self.config.persistent_window:
            res = simulate_task(
                real.streams, real.params, self.config, t0, chunks,
                real.fail_u[k], real.fail_frac[k], real.jitter_z[k],
                prior_window_bits=self._window_bits,
                idle_s=[t0 - b for b in self._busy_until_s],
            )
        else:
            res = simulate_task(
                real.streams, real.params, self.config, t0, chunks,
                real.fail_u[k], real.fail_frac[k], real.jitter_z[k],
            )
        completion = max(res.finish_s - t0, 1e-9)
        success, retrans = res.success, res.retransmissions
        goodput = 8.0 * res.delivered_bytes / completion
        reward = reward_terms(
            raw, chunks, expected, Outcome(goodput, completion, success, retrans), self.config.reward_weights,
            validate=False,
        ).total
        return TaskOutcome(
            action, chunks, expected, completion, goodput, success, retrans, reward, res.chunks
        )

    def _probe(self, i: int, k: int, t: float) -> tuple[float, float, bool]:
        """A light probe of stream i at time t (task row k): (rate sample, RTT sample, delivered)."""
        real = self._real
        assert real is not None
        cfg = self.config
        traj, par = real.streams[i], real.params[i]
        sig = cfg.probe_noise_sigma
        rate = traj.mean_rate_between(t - cfg.probe_window_s, t) * math.exp(
            sig * float(real.probe_noise[k, i]) - 0.5 * sig * sig
        )
        cong = traj.congestion_at(t)
        rtt = par.base_rtt_s * (1.0 + cfg.queueing_factor * cong) + par.jitter_s * float(
            real.probe_jitter_z[k, i]
        )
        q0 = min(0.9, par.loss_multiplier * (cfg.loss_base + cfg.loss_congestion * cong))
        return rate, rtt, float(real.probe_fail_u[k, i]) >= q0

    def _probe_stale(self) -> None:
        cfg = self.config
        t, k = self._t, self._k
        for i in range(NUM_STREAMS):
            if t - self._last_meas[i] >= cfg.probe_interval_s:
                rate, rtt, ok = self._probe(i, k, t)
                self._update(i, rate, rtt, 0 if ok else 1, ok)
                self._last_meas[i] = t

    def _update(self, i: int, rate_bps: float, rtt_s: float, failures: int, delivered: bool) -> None:
        cfg = self.config
        if rate_bps == rate_bps:  # not NaN
            a = cfg.rate_ewma_alpha
            self._rate[i] = (1.0 - a) * self._rate[i] + a * rate_bps
        a = cfg.rtt_ewma_alpha
        self._srtt[i] = (1.0 - a) * self._srtt[i] + a * rtt_s
        self._min_rtt[i] = min(self._min_rtt[i], rtt_s)
        a = cfg.success_ewma_alpha
        s = self._succ[i] * (1.0 - a) ** failures
        if delivered:
            s = (1.0 - a) * s + a
        self._succ[i] = s

    def _observe_chunks(self, out: TaskOutcome) -> None:
        real = self._real
        assert real is not None
        sig = self.config.sample_noise_sigma
        for i, r in enumerate(out.chunks):
            if r is None:
                continue
            rate = r.rate_sample_bps
            if rate == rate:
                rate *= math.exp(sig * float(real.sample_noise[self._k, i]) - 0.5 * sig * sig)
            self._update(i, rate, r.rtt_sample_s, r.failures, r.success)
            self._last_meas[i] = max(self._last_meas[i], r.finish_s)

    def _build_raw(self) -> None:
        real = self._real
        assert real is not None
        raw = np.empty(NUM_FEATURES)
        raw[0:4] = self._rate
        raw[4:8] = self._srtt
        raw[8:12] = [
            min(max((s - m) / m, 0.0), 1.0) if m > 0.0 else 0.0
            for s, m in zip(self._srtt, self._min_rtt, strict=True)
        ]
        raw[12:16] = self._succ
        k = self._k
        arrived = int(np.searchsorted(real.arrivals_s, self._t, side="right"))
        raw[16] = max(0, arrived - (k + 1))
        raw[17] = real.sizes_bytes[k]
        raw[18] = real.priorities[k]
        raw[19] = (real.start_hour + self._t / 3600.0) % 24.0
        self._raw = raw


def make_vector_env(
    num_envs: int,
    config: SimConfig | None = None,
    *,
    trace_files: Sequence[str | Path] | None = None,
    autoreset_mode: gym.vector.AutoresetMode = gym.vector.AutoresetMode.NEXT_STEP,
) -> gym.vector.SyncVectorEnv:
    """``num_envs`` independent ``PartitionEnv`` stepped together (Gymnasium ``SyncVectorEnv``).

    ``reset(seed=s)`` seeds copy i with ``s + i`` (Gymnasium's rule), so copy i replays exactly the
    episode of a single ``PartitionEnv`` reset with ``s + i``. Observations are stacked into
    float32[num_envs, 20]; ``info`` values into arrays. Traces are parsed once (cached) and shared
    read-only by all copies. Gymnasium's equivalent is ``gym.make_vec("itp/Partition-v0", num_envs,
    vectorization_mode="sync")``.

    Args:
        num_envs: number of copies, >= 1.
        config: simulator configuration shared by the copies (default ``SimConfig()``).
        trace_files: trace mode with these files (None or empty: synthetic).
        autoreset_mode: what happens after a copy's episode ends; the default ``NEXT_STEP`` resets it
            on the following ``step`` (whose action is ignored and reward is 0), ``SAME_STEP`` resets
            it at once and puts the final observation in ``info["final_obs"]``.

    Raises:
        ValueError: ``num_envs`` is not an int >= 1.
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
    files = list(trace_files or ())
    return gym.vector.SyncVectorEnv(
        [lambda: PartitionEnv(config, trace_files=files) for _ in range(num_envs)],
        autoreset_mode=autoreset_mode,
    )
