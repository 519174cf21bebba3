"""How much an adaptation benchmark network leaves to win: non-learned bounds against the best baseline.

Usage::

    python bench/adapt_bounds.py                           # warm ss-restart lossy collapse sim, 5000 tasks
    python bench/adapt_bounds.py --networks collapse --tasks 2000 --seed 1

Per network of ``itp.sim.networks`` (rates replaying the held-out traces, every policy on the same tasks
as ``itp evaluate --adapt``), mean per-task goodput and p95 completion time of three reference policies,
each over the best baseline (the strongest of rate-proportional, the heuristic and the best fixed stream
subset chosen with hindsight, over the whole run):

* ``true physics``: the heuristic with the network's *true* transport parameters (set-up, slow start or
  not, each persistent stream's start window by the restart rule) on the sender's measured rates: what a
  perfectly calibrated transport model gives without any learned policy;
* ``true physics + current rates``: the same on every stream's true available rate at the decision
  (clairvoyant about the present: no sender measures it exactly; a bound on what better rate estimates
  could give);
* ``true physics + measured-rate forecast``: the same on a forecast of each stream's mean rate over the
  task's expected duration ``D`` (``8 size / sum of measured rates``) made from the sender's measurements
  alone: the measured rate ``r`` pulled toward its own slow mean ``m`` (an EWMA with a 300 s time
  constant) as a rate excursion with a 30 s correlation time is expected to fade over ``D``:
  ``m + (r - m) (tau / D) (1 - exp(-D / tau))`` (what features of the measured rates' history, such as
  their trend and slow mean, can tell about the next ``D`` seconds);
* ``true physics + future mean rates``: the same on each stream's *true* mean available rate over the
  next ``D`` seconds (clairvoyant about the rates, not about failures);
* ``true physics + true failure model``: the heuristic on the true physics and measured rates, but
  scoring each action by the expected completion time under each stream's *true* failure model (the
  simulator's ``q0`` and hazard at the current congestion; a failed chunk is resent whole after an
  RTO): ``T + max_i q_i / (1 - q_i) (D_i / 2 + rto_i)``, with ``D_i`` the chunk's data time and
  ``q_i = 1 - (1 - q0_i) exp(-hazard_i D_i)``, instead of its ``T (1 + sum_i (1 - success_i))``: what a
  failure model fitted from per-chunk retries could give;
* ``oracle``: the clairvoyant per-task oracle of ``itp.sim.baselines`` (sees the future: rates and
  failures; it picks the best of the 15 actions, each split by the production rule on the measured rates or
  in equal parts).

Nothing here learns; it says how far the targets of the adaptation table (goodput >= 1.05 x the best
baseline, p95 <= its) are from what the observable state can support on each network.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from itp.heuristic import HeuristicPolicy, failure_penalty_reference, heuristic_action
from itp.sim.adapt import AdaptConfig, FixedSubsetPolicy, adaptation_trace_files
from itp.sim.baselines import OraclePolicy, RateProportionalPolicy
from itp.sim.env import PartitionEnv
from itp.sim.evaluate import episode_seed
from itp.sim.networks import NETWORK_NAMES
from itp.sim.physics import SimConfig
from itp.sim.policy import decide
from itp.transport import INITIAL_WINDOW_BITS, TransportParams, production_split, start_window_bits

DEFAULT_NETWORKS = ("warm", "ss-restart", "lossy", "collapse", "sim")
NO_SLOW_START_BITS = 2.0**40


class TruePhysicsPolicy:
    """The heuristic on the network's true transport model (optionally on the true current rates).

    ``bind(env)`` before each episode. Transport: set-up ``setup_rtts + 0.5`` RTTs (the last byte's
    propagation), no slow start (window 2^40 bits) when the network has none, else the initial window,
    raised per persistent stream to the window its last chunk ended with while it has not been idle
    longer than ``max(rto_min_s, 2 x smoothed RTT)``; each stream's true efficiency
    (``stream_efficiency x path_efficiency[i]``: 0.3 on ``lossy``'s stream 0, 1 elsewhere) applied to its
    measured rate (a seldom used stream's measured rate comes from probes of the available rate), or to
    its true rate with ``current_rates``.
    """

    def __init__(self, config: SimConfig, *, current_rates: bool) -> None:
        self.config = config
        self.current_rates = current_rates
        self.name = "true physics + current rates" if current_rates else "true physics"
        self._env: PartitionEnv | None = None

    def bind(self, env: PartitionEnv) -> None:
        self._env = env

    def _state(self, raw: np.ndarray) -> tuple[np.ndarray, list[TransportParams]]:
        env, cfg = self._env, self.config
        assert env is not None
        setup = cfg.setup_rtts + 0.5
        cold = INITIAL_WINDOW_BITS if cfg.slow_start else NO_SLOW_START_BITS
        windows = env.stream_windows()
        params = []
        for i in range(4):
            w = cold
            if windows is not None and windows[i][0] > 0.0 and cfg.slow_start:
                rto = max(cfg.rto_min_s, 2.0 * float(raw[4 + i]))
                w = max(cold, start_window_bits(windows[i][0], min(windows[i][1], 1e9), rto))
            params.append(TransportParams(setup, w, cfg.stream_efficiency * cfg.path_efficiency[i]))
        out = raw.copy()
        if self.current_rates:
            t = env.time_s
            for i, traj in enumerate(env.streams):
                out[i] = traj.rate_at(t)
        return out, params

    def select_action(self, raw: np.ndarray) -> int:
        state, params = self._state(raw)
        return heuristic_action(state, params)

    def chunk_bytes(self, raw: np.ndarray, action: int) -> tuple[int, int, int, int]:
        state, params = self._state(raw)
        return production_split(state, action, params).chunk_bytes


class HorizonRatePolicy(TruePhysicsPolicy):
    """The true-physics heuristic on each stream's rate over the task's expected duration (module doc).

    ``future=True``: the true mean available rate over the next ``D`` seconds (16 samples); else the
    forecast from the measured rates (slow mean ``slow_s`` seconds, correlation time ``tau_s`` seconds).
    """

    def __init__(
        self, config: SimConfig, *, future: bool, tau_s: float = 30.0, slow_s: float = 300.0
    ) -> None:
        super().__init__(config, current_rates=False)
        self.future = future
        self.name = "true physics + future mean rates" if future else "true physics + measured-rate forecast"
        self.tau_s, self.slow_s = tau_s, slow_s
        self._mean: np.ndarray | None = None
        self._last_s = 0.0

    def reset(self) -> None:
        """A new episode: new streams, so the slow means start again."""
        self._mean = None

    def _state(self, raw: np.ndarray) -> tuple[np.ndarray, list[TransportParams]]:
        out, params = super()._state(raw)
        env = self._env
        assert env is not None
        t = env.time_s
        measured = np.asarray(out[:4], dtype=np.float64)
        horizon_s = 8.0 * env.task_size_bytes / max(float(measured.sum()), 1.0)
        if self.future:
            for i, traj in enumerate(env.streams):
                at = t + np.linspace(0.0, horizon_s, 16)
                out[i] = float(np.mean([traj.rate_at(float(x)) for x in at]))
            return out, params
        if self._mean is None:
            self._mean = measured.copy()
        else:
            self._mean += (1.0 - np.exp(-max(t - self._last_s, 0.0) / self.slow_s)) * (measured - self._mean)
        self._last_s = t
        fade = self.tau_s / horizon_s * -np.expm1(-horizon_s / self.tau_s) if horizon_s > 0 else 1.0
        out[:4] = self._mean + (measured - self._mean) * fade
        return out, params


class FailureAwarePolicy(TruePhysicsPolicy):
    """The true-physics heuristic scoring actions with the true per-stream failure model (module doc)."""

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config, current_rates=False)
        self.name = "true physics + true failure model"

    def select_action(self, raw: np.ndarray) -> int:
        state, params = self._state(raw)
        env, cfg = self._env, self.config
        assert env is not None
        t = env.time_s
        # The simulator's true q0 and hazard per stream at the current congestion (itp.sim.physics).
        models = np.zeros((4, 2))
        for i, par in enumerate(env.stream_params):
            c = env.streams[i].congestion_at(t)
            models[i, 0] = min(0.9, par.loss_multiplier * (cfg.loss_base + cfg.loss_congestion * c)
                               + par.extra_loss_probability)
            models[i, 1] = (par.loss_multiplier * (cfg.hazard_base_per_s + cfg.hazard_congestion_per_s * c)
                            + par.extra_hazard_per_s)
        # Data times at the delivered rate (the true efficiency included), RTOs from the measured RTTs.
        rates = [max(float(state[i]) * float(raw[12 + i]) * params[i].efficiency, 1.0) for i in range(4)]
        rtts = [float(raw[4 + i]) for i in range(4)]
        best, best_score = 0, math.inf
        for action in range(15):
            split = production_split(state, action, params)
            score = split.expected_time_s + failure_penalty_reference(split.chunk_bytes, rates, rtts, models)
            if score < best_score:
                best, best_score = action, score
        return best


def play(policy: Any, config: SimConfig, files: Sequence[str], seed: int, n: int) -> tuple[float, float]:
    """Mean per-task goodput (bit/s) and p95 completion time (s) of ``n`` tasks of the run's stream."""
    env = PartitionEnv(config, trace_files=list(files))
    bind = getattr(policy, "bind", None)
    if callable(bind):
        bind(env)
    goodput, times = [], []
    e = 0
    while len(goodput) < n:
        env.reset(seed=episode_seed(seed, e))
        reset = getattr(policy, "reset", None)
        if callable(reset):
            reset()
        e += 1
        for _ in range(min(config.tasks_per_episode, n - len(goodput))):
            _, _, _, _, info = env.step_decision(decide(policy, env.raw_state))
            goodput.append(float(info["goodput_bps"]))
            times.append(float(info["completion_time_s"]))
    return float(np.mean(goodput)), float(np.percentile(times, 95))


def main(argv: list[str] | None = None) -> int:
    """Print one markdown row per network; returns 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--networks", nargs="+", choices=NETWORK_NAMES, default=list(DEFAULT_NETWORKS))
    p.add_argument("--tasks", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    files, _, description = adaptation_trace_files()
    print("| network | best baseline | true physics: goodput / p95 | + current rates: goodput / p95 | "
          "+ measured-rate forecast: goodput / p95 | + future mean rates: goodput / p95 | "
          "+ true failure model: goodput / p95 | oracle: goodput / p95 |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.networks:
        t0 = time.monotonic()
        config = AdaptConfig(network=name, trace_files=files).sim_config()
        baselines = [RateProportionalPolicy(), HeuristicPolicy(), *(FixedSubsetPolicy(a) for a in range(15))]
        base = {pol.name: play(pol, config, files, args.seed, args.tasks) for pol in baselines}
        fixed = max((k for k in base if k.startswith("fixed-")), key=lambda k: base[k][0])
        best = max(("rate-proportional", "heuristic", fixed), key=lambda k: base[k][0])
        best_p95 = min(base[k][1] for k in ("rate-proportional", "heuristic", fixed))
        cells = []
        bounds = (TruePhysicsPolicy(config, current_rates=False),
                  TruePhysicsPolicy(config, current_rates=True), HorizonRatePolicy(config, future=False),
                  HorizonRatePolicy(config, future=True), FailureAwarePolicy(config), OraclePolicy())
        for pol in bounds:
            g, p95 = play(pol, config, files, args.seed, args.tasks)
            cells.append(f"{g / base[best][0]:.3f} / {p95 / best_p95:.3f}")
        label = best if best != fixed else f"best fixed ({fixed})"
        print(f"| {name} | {label} | " + " | ".join(cells) + f" |  <!-- {time.monotonic() - t0:.0f} s -->")
    print(f"\n{args.tasks} tasks per policy, seed {args.seed}; network traces: {description}; "
          f"`python bench/adapt_bounds.py --networks {' '.join(args.networks)} --tasks {args.tasks} "
          f"--seed {args.seed}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
