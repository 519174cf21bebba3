"""What per-stream rate history could add to the decision state (the optional state v2), measured first.

Usage::

    python bench/history_features.py                          # collapse sim warm lossy, seed 0
    python bench/history_features.py --networks collapse --train-episodes 200 --seed 1

Why: the issue's optional state v2 would add, per stream, the measured rate's trend and volatility over
the recent window and the time since the stream was last busy. The state runs through every native
structure (decision, pending table, ring, replay, store, the exported model's input), so a new layout is
built only if the features can pay. This measures an upper-end estimate of what they can pay, with
*full information*: on each network of ``itp.sim.networks`` it collects decisions on the training traces
(half of them the heuristic's action, half uniform, so every action's neighbourhood is visited), records
the counterfactual reward of **all 15 actions** at each (``PartitionEnv.simulate_action``, clairvoyant and
pure), and fits two regressors of those 15 rewards with the same MLP and budget: one on the v1 state
(20 features), one on v1 plus the 12 history features. Each then plays greedily on the held-out traces
(the same episodes for every policy), next to the heuristic, all 4 streams with the production split and
the per-task oracle (the best action by its realised reward). No learner ever has this much information:
if the history features gain little here, they gain less in a deployment that sees one action per task.

History features per stream ``i``, from what the sender measures (the raw state's rates at each decision,
the decision times and the tasks' completions), each in [0, 1]:

* trend: ``(f_i - s_i) / 4 + 0.5``, with ``f_i`` and ``s_i`` time-weighted EWMAs of the log measured rate
  with time constants 3 s and 30 s;
* volatility: ``sqrt(v_i) / 2``, ``v_i`` the 30 s EWMA of ``(log r_i - s_i)^2``;
* idle time: ``log1p(t - busy_until_i) / log1p(60)``, seconds since the stream's last chunk finished.

Prints a markdown table: per network and policy the mean per-task goodput over the heuristic's and the
mean per-task reward. Needs torch (the ``train`` extra); CPU, one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from itp.heuristic import heuristic_action
from itp.sim.adapt import adaptation_trace_files
from itp.sim.env import PartitionEnv
from itp.sim.networks import NETWORK_NAMES, network_config
from itp.state import NUM_STREAMS, normalize_state

FloatArray = npt.NDArray[np.float64]
HISTORY_FEATURES = 3 * NUM_STREAMS
FAST_TAU_S = 3.0
SLOW_TAU_S = 30.0
IDLE_SCALE_S = 60.0


class RateHistory:
    """The 12 history features of one episode, updated at each decision (module docstring)."""

    def __init__(self) -> None:
        self._t: float | None = None
        self._fast = np.zeros(NUM_STREAMS)
        self._slow = np.zeros(NUM_STREAMS)
        self._var = np.zeros(NUM_STREAMS)
        self._busy_until = np.zeros(NUM_STREAMS)

    def features(self, t: float, raw: FloatArray) -> npt.NDArray[np.float32]:
        """The features at decision time ``t`` (seconds) with raw state ``raw`` (caller units)."""
        log_rate = np.log(np.maximum(raw[:NUM_STREAMS], 1e3))
        if self._t is None:
            self._fast, self._slow, self._t = log_rate.copy(), log_rate.copy(), t
        dt = max(0.0, t - self._t)
        self._t = t
        a_fast, a_slow = 1.0 - math.exp(-dt / FAST_TAU_S), 1.0 - math.exp(-dt / SLOW_TAU_S)
        self._fast += a_fast * (log_rate - self._fast)
        dev = log_rate - self._slow
        self._slow += a_slow * dev
        self._var += a_slow * (dev * dev - self._var)
        trend = np.clip((self._fast - self._slow) / 4.0 + 0.5, 0.0, 1.0)
        volatility = np.clip(np.sqrt(self._var) / 2.0, 0.0, 1.0)
        idle = np.clip(np.log1p(np.maximum(0.0, t - self._busy_until)) / math.log1p(IDLE_SCALE_S), 0.0, 1.0)
        return np.concatenate([trend, volatility, idle]).astype(np.float32)

    def finished(self, start_s: float, info: dict[str, object]) -> None:
        """Record a placed task: its streams are busy until it completes."""
        chunks = info["bytes_per_stream"]
        assert isinstance(chunks, tuple)
        done = start_s + float(info["completion_time_s"])  # type: ignore[arg-type]
        for i, c in enumerate(chunks):
            if c > 0:
                self._busy_until[i] = done


Chooser = Callable[[PartitionEnv, FloatArray, npt.NDArray[np.float32]], int]


def collect(
    config: object, files: Sequence[str], episodes: int, seed: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(v1 states, history features, rewards of all 15 actions) of every decision of ``episodes``,
    played half by the heuristic and half uniformly."""
    rng = np.random.default_rng(seed)
    v1, hist, rewards = [], [], []

    def record_and_choose(env: PartitionEnv, raw: FloatArray, features: npt.NDArray[np.float32]) -> int:
        hist.append(features)
        v1.append(normalize_state(raw))
        rewards.append([env.simulate_action(a).reward for a in range(15)])
        return int(rng.integers(15)) if rng.random() < 0.5 else heuristic_action(raw)

    play(config, files, episodes, seed * 1_000_003, record_and_choose)
    return np.array(v1, np.float32), np.array(hist, np.float32), np.array(rewards, np.float32)


def fit(x: npt.NDArray[np.float32], rewards: npt.NDArray[np.float32], steps: int, seed: int) -> object:
    """An MLP (128-128) regressing the 15 rewards, Huber loss, Adam; the same budget for every input."""
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 15),
    )
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    xt, rt = torch.from_numpy(x), torch.from_numpy(rewards)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (256,), generator=gen)
        loss = torch.nn.functional.smooth_l1_loss(model(xt[idx]), rt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def greedy(model: object, with_history: bool) -> Chooser:
    import torch

    def choose(env: PartitionEnv, raw: FloatArray, hist: npt.NDArray[np.float32]) -> int:
        x = normalize_state(raw)
        if with_history:
            x = np.concatenate([x, hist])
        with torch.no_grad():
            return int(model(torch.from_numpy(x[None].astype(np.float32))).argmax())  # type: ignore[operator]

    return choose


def play(
    config: object, files: Sequence[str], episodes: int, first_seed: int, choose: Chooser
) -> tuple[float, float]:
    """(mean per-task reward, mean per-task goodput bit/s) of ``choose`` on ``episodes`` episodes (seeds
    ``first_seed``, ``first_seed + 1``, ...)."""
    rewards, goodputs = [], []
    for ep in range(episodes):
        env = PartitionEnv(config, trace_files=list(files))  # type: ignore[arg-type]
        env.reset(seed=first_seed + ep)
        history = RateHistory()
        while True:
            raw, t = env.raw_state.copy(), env.time_s
            a = choose(env, raw, history.features(t, raw))
            _, r, _, truncated, info = env.step(a)
            history.finished(t, info)
            rewards.append(float(r))
            goodputs.append(float(info["goodput_bps"]))  # type: ignore[arg-type]
            if truncated:
                break
    return float(np.mean(rewards)), float(np.mean(goodputs))


def run_network(
    name: str, train_episodes: int, eval_episodes: int, steps: int, seed: int
) -> dict[str, tuple[float, float]]:
    """Per policy (mean reward, mean goodput bit/s) on the held-out traces of network ``name``."""
    network_files, learner_files, _ = adaptation_trace_files()
    config = dataclasses.replace(network_config(name), tasks_per_episode=64)
    v1, hist, rewards = collect(config, learner_files, train_episodes, seed)
    plain = fit(v1, rewards, steps, seed)
    with_history = fit(np.concatenate([v1, hist], axis=1), rewards, steps, seed)
    policies: dict[str, Chooser] = {
        "heuristic": lambda env, raw, hist: heuristic_action(raw),
        "all 4 streams": lambda env, raw, hist: 14,
        "v1, full information": greedy(plain, False),
        "v1 + history, full information": greedy(with_history, True),
        "oracle": lambda env, raw, hist: int(np.argmax([env.simulate_action(a).reward for a in range(15)])),
    }
    first = seed * 1_000_003 + 500_000
    return {k: play(config, network_files, eval_episodes, first, c) for k, c in policies.items()}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--networks", nargs="+", default=["collapse", "sim", "warm", "lossy"], choices=NETWORK_NAMES
    )
    ap.add_argument(
        "--train-episodes", type=int, default=400, help="64-task episodes collected (default 400)"
    )
    ap.add_argument("--eval-episodes", type=int, default=100, help="64-task episodes played (default 100)")
    ap.add_argument("--steps", type=int, default=6000, help="gradient steps per regressor (default 6000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for name in ("train_episodes", "eval_episodes", "steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        import torch
    except ImportError:
        ap.error("needs torch: pip install '.[train]'")
    torch.set_num_threads(1)
    rows = []
    for name in args.networks:
        t0 = time.perf_counter()
        res = run_network(name, args.train_episodes, args.eval_episodes, args.steps, args.seed)
        base = res["heuristic"][1]
        rows.append((name, res, base, time.perf_counter() - t0))
    names = list(rows[0][1])
    print("| network | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for name, res, base, _ in rows:
        cells = [f"{g / base:.3f} ({r:.3f})" for r, g in res.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("cells: mean per-task goodput / the heuristic's (mean per-task reward); seed "
          f"{args.seed}; " + ", ".join(f"{n} {s:.0f} s" for n, _, _, s in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
