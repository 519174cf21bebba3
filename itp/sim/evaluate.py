"""Evaluate policies on identical simulated episodes and tabulate the results.

Every policy plays the same episodes: episode e is ``env.reset(seed=episode_seed(seed, e))``, and the
realised future of an episode does not depend on the actions (``itp.sim.env``), so differences between
rows come from the decisions only. Per policy, over all tasks of all episodes:

* completion time (decision to last chunk done): mean, p50, p95 (``numpy.percentile``, linear);
* mean goodput: mean over tasks of ``delivered bits / completion time`` (bit/s);
* success rate: fraction of tasks with every chunk delivered;
* mean reward (``itp.reward.compute_reward``);
* goodput relative to the heuristic and to round-robin: ratio of mean goodputs (when those rows exist).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from itp.sim.env import PartitionEnv
from itp.sim.physics import SimConfig
from itp.sim.policy import Policy, decide

__all__ = ["EvaluationTable", "PolicyResult", "episode_seed", "evaluate"]

logger = logging.getLogger(__name__)


def episode_seed(seed: int, episode: int) -> int:
    """The ``reset`` seed of episode ``episode`` of an evaluation seeded with ``seed`` (63-bit int)."""
    state = np.random.SeedSequence([seed, episode]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


@dataclass(frozen=True)
class PolicyResult:
    """One row of the table (times in seconds, rates in bit/s; relative goodputs are ratios)."""

    name: str
    tasks: int
    mean_completion_time_s: float
    p50_completion_time_s: float
    p95_completion_time_s: float
    mean_goodput_bps: float
    success_rate: float
    mean_reward: float
    goodput_vs_heuristic: float | None = None
    goodput_vs_round_robin: float | None = None


def _fmt_time(t_s: float) -> str:
    return f"{t_s * 1e3:.1f} ms" if t_s < 1.0 else f"{t_s:.2f} s"


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}x"


_HEADERS = (
    "policy",
    "mean time",
    "p50 time",
    "p95 time",
    "mean goodput",
    "success",
    "mean reward",
    "goodput / heuristic",
    "goodput / round-robin",
)


@dataclass(frozen=True)
class EvaluationTable:
    """Results of ``evaluate``: one ``PolicyResult`` per policy, plus how they were obtained."""

    rows: tuple[PolicyResult, ...]
    episodes: int
    seed: int
    tasks_per_episode: int
    mode: str
    trace_files: tuple[str, ...] = ()
    source: str = ""

    def row(self, name: str) -> PolicyResult:
        """The row of the policy called ``name``. Raises KeyError if absent."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def _cells(self) -> list[list[str]]:
        return [
            [
                r.name,
                _fmt_time(r.mean_completion_time_s),
                _fmt_time(r.p50_completion_time_s),
                _fmt_time(r.p95_completion_time_s),
                f"{r.mean_goodput_bps / 1e6:.1f} Mbit/s",
                f"{100.0 * r.success_rate:.1f}%",
                f"{r.mean_reward:.3f}",
                _fmt_ratio(r.goodput_vs_heuristic),
                _fmt_ratio(r.goodput_vs_round_robin),
            ]
            for r in self.rows
        ]

    def _caption(self) -> str:
        if self.source:
            src = self.source
        else:
            src = f"{len(self.trace_files)} trace files" if self.trace_files else "synthetic streams"
        return (
            f"{self.episodes} episodes x {self.tasks_per_episode} tasks, seed {self.seed}, "
            f"{self.mode} mode: {src}"
        )

    def to_markdown(self) -> str:
        """A GitHub markdown table (numbers right-aligned) with a one-line caption."""
        lines = [
            "| " + " | ".join(_HEADERS) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(_HEADERS) - 1)) + "|",
        ]
        lines += ["| " + " | ".join(c) + " |" for c in self._cells()]
        return "\n".join(lines) + f"\n\n{self._caption()}\n"

    def to_text(self) -> str:
        """A fixed-width plain-text table with a caption."""
        rows = [list(_HEADERS), *self._cells()]
        widths = [max(len(r[j]) for r in rows) for j in range(len(_HEADERS))]
        out = []
        for n, r in enumerate(rows):
            cells = zip(r, widths, strict=True)
            out.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(cells)))
            if n == 0:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(out) + f"\n{self._caption()}\n"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready; seconds and bit/s)."""
        return {
            "episodes": self.episodes,
            "seed": self.seed,
            "tasks_per_episode": self.tasks_per_episode,
            "mode": self.mode,
            "trace_files": list(self.trace_files),
            "source": self.source,
            "rows": [asdict(r) for r in self.rows],
        }

    def to_json(self) -> str:
        """``to_dict`` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)


def _summarise(name: str, times: list[float], goodputs: list[float], successes: list[bool],
               rewards: list[float]) -> PolicyResult:
    t = np.asarray(times)
    return PolicyResult(
        name=name,
        tasks=len(times),
        mean_completion_time_s=float(t.mean()),
        p50_completion_time_s=float(np.percentile(t, 50)),
        p95_completion_time_s=float(np.percentile(t, 95)),
        mean_goodput_bps=float(np.mean(goodputs)),
        success_rate=float(np.mean(successes)),
        mean_reward=float(np.mean(rewards)),
    )


def _with_relative(rows: list[PolicyResult]) -> tuple[PolicyResult, ...]:
    by_name = {r.name: r for r in rows}
    heur = by_name.get("heuristic")
    rr = by_name.get("round-robin")
    out = []
    for r in rows:
        vs_h = r.mean_goodput_bps / heur.mean_goodput_bps if heur and heur.mean_goodput_bps > 0 else None
        vs_rr = r.mean_goodput_bps / rr.mean_goodput_bps if rr and rr.mean_goodput_bps > 0 else None
        out.append(
            PolicyResult(**{**asdict(r), "goodput_vs_heuristic": vs_h, "goodput_vs_round_robin": vs_rr})
        )
    return tuple(out)


def evaluate(
    policies: Sequence[Policy | str],
    *,
    episodes: int,
    seed: int,
    trace_files: Sequence[str | os.PathLike[str]] | None = None,
    config: SimConfig | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> EvaluationTable:
    """Run every policy on the same ``episodes`` episodes and tabulate the results.

    Args:
        policies: ``Policy`` objects, or names / ``*.onnx`` paths for ``itp.sim.baselines.make_policy``.
        episodes: number of episodes (>= 1).
        seed: evaluation seed (episode e uses ``episode_seed(seed, e)``).
        trace_files: trace mode with these files; None or empty: synthetic mode.
        config: simulator configuration (default ``SimConfig()``).
        progress: optional callback ``(policy name, episodes done)`` after each episode.

    Returns:
        The ``EvaluationTable`` (same arguments -> identical numbers).

    Raises:
        ValueError: bad ``episodes``, an unknown policy name, duplicate policy names, or an invalid
            decision from a policy.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be an int >= 1, got {episodes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    from itp.sim.baselines import make_policy

    resolved: list[Policy] = [make_policy(p) if isinstance(p, (str, Path)) else p for p in policies]
    if not resolved:
        raise ValueError("policies must not be empty")
    names = [p.name for p in resolved]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate policy names: {dupes}")
    files = [Path(f) for f in (trace_files or ())]
    env = PartitionEnv(config, trace_files=files)
    cfg = env.config
    rows: list[PolicyResult] = []
    for policy in resolved:
        times: list[float] = []
        goodputs: list[float] = []
        successes: list[bool] = []
        rewards: list[float] = []
        reset_hook = getattr(policy, "reset", None)
        bind_hook = getattr(policy, "bind", None)
        for e in range(episodes):
            env.reset(seed=episode_seed(seed, e))
            if callable(bind_hook):
                bind_hook(env)
            if callable(reset_hook):
                reset_hook()
            for _ in range(cfg.tasks_per_episode):
                d = decide(policy, env.raw_state)
                _, reward, _, _, info = env.step_decision(d)
                times.append(info["completion_time_s"])
                goodputs.append(info["goodput_bps"])
                successes.append(info["success"])
                rewards.append(float(reward))
            if progress is not None:
                progress(policy.name, e + 1)
        row = _summarise(policy.name, times, goodputs, successes, rewards)
        if not all(math.isfinite(v) for v in (row.mean_completion_time_s, row.mean_reward)):
            logger.warning("policy %s produced non-finite results", policy.name)
        rows.append(row)
    return EvaluationTable(
        rows=_with_relative(rows),
        episodes=episodes,
        seed=seed,
        tasks_per_episode=cfg.tasks_per_episode,
        mode="trace" if files else "synthetic",
        trace_files=tuple(f.name for f in files),
    )
