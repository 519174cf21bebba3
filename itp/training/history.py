"""Training history: per-episode curves and periodic validation points, as JSON and a PNG plot.

``training_history.json`` (beside the model)::

    {"format": "itp-training-history", "format_version": 1,
     "episodes":   [{"episode", "reward", "mean_loss", "epsilon", "beta", "steps",
                     "mean_goodput_bps", "mean_completion_time_s"}, ...],
     "validation": [{"episode", "policy": {"mean_goodput_bps", "p95_completion_time_s", ...},
                     "baselines": {name: {...}, ...}}, ...]}

``episode`` counts from 1 over the whole run (a resumed run continues the count). The PNG has four
panels: episode reward (raw and a moving average), loss (log scale), epsilon, and validation goodput
of the greedy policy against each baseline's.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EpisodeRecord", "TrainingHistory", "plot_history"]

_FORMAT = "itp-training-history"


@dataclass(frozen=True)
class EpisodeRecord:
    """One training episode.

    Attributes:
        episode: 1-based global episode number.
        reward: sum of rewards over the episode.
        mean_loss: mean TD loss of the gradient steps taken during it (NaN when none).
        epsilon: exploration rate used.
        beta: PER importance exponent used.
        steps: global environment steps after it.
        mean_goodput_bps: mean task goodput in the episode, bits per second.
        mean_completion_time_s: mean task completion time, seconds.
    """

    episode: int
    reward: float
    mean_loss: float
    epsilon: float
    beta: float
    steps: int
    mean_goodput_bps: float
    mean_completion_time_s: float


@dataclass
class TrainingHistory:
    """Mutable log owned by the trainer; saved with the model and restored on resume."""

    episodes: list[EpisodeRecord] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)

    def add_episode(self, record: EpisodeRecord) -> None:
        """Append one episode's record."""
        self.episodes.append(record)

    def add_validation(
        self,
        episode: int,
        policy: Mapping[str, float],
        baselines: Mapping[str, Mapping[str, float]],
    ) -> None:
        """Append a validation point: the greedy policy's KPIs and each baseline's."""
        self.validation.append(
            {
                "episode": int(episode),
                "policy": {k: float(v) for k, v in policy.items()},
                "baselines": {
                    name: {k: float(v) for k, v in kpis.items()} for name, kpis in baselines.items()
                },
            }
        )

    def truncated(self, episode: int) -> TrainingHistory:
        """A copy holding only the episodes and validation points up to ``episode`` (inclusive)."""
        return TrainingHistory(
            episodes=[r for r in self.episodes if r.episode <= episode],
            validation=[dict(v) for v in self.validation if v["episode"] <= episode],
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN losses become null)."""
        return {
            "format": _FORMAT,
            "format_version": 1,
            "episodes": [
                {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in vars(rec).items()}
                for rec in self.episodes
            ],
            "validation": self.validation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingHistory:
        """Inverse of :meth:`to_dict`. Raises ValueError on a foreign file."""
        if data.get("format") != _FORMAT:
            raise ValueError(f"not a training history (format {data.get('format')!r})")
        episodes = [_episode_from_dict(i, rec) for i, rec in enumerate(data.get("episodes", []))]
        validation = list(data.get("validation", []))
        for i, point in enumerate(validation):
            if not (
                isinstance(point, dict)
                and isinstance(point.get("episode"), int)
                and isinstance(point.get("policy"), dict)
                and isinstance(point.get("baselines"), dict)
            ):
                raise ValueError(
                    f"training history validation[{i}] must hold episode, policy and baselines, got {point!r}"
                )
        return cls(episodes=episodes, validation=validation)

    def save(self, path: str | Path) -> Path:
        """Write the JSON file (atomically) and return its path."""
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n", "utf-8")
        tmp.replace(target)
        return target

    @classmethod
    def load(cls, path: str | Path) -> TrainingHistory:
        """Read a file written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text("utf-8")))


_INT_FIELDS = frozenset({"episode", "steps"})


def _episode_from_dict(index: int, rec: Any) -> EpisodeRecord:
    """One ``episodes[index]`` entry of a history file; ValueError naming the entry and the field."""
    names = [f.name for f in dataclasses.fields(EpisodeRecord)]
    if not isinstance(rec, Mapping) or set(rec) != set(names):
        got = sorted(rec) if isinstance(rec, Mapping) else type(rec).__name__
        raise ValueError(f"training history episodes[{index}] must have the fields {names}, got {got}")
    values: dict[str, Any] = {}
    for name in names:
        value = rec[name]
        if name in _INT_FIELDS:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            value = math.nan if value is None else value  # NaN losses are stored as null
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        if not ok:
            raise ValueError(f"training history episodes[{index}].{name} is not a number: {value!r}")
        values[name] = value
    return EpisodeRecord(**values)


def _moving_average(values: list[float], window: int) -> list[float]:
    out: list[float] = []
    total = 0.0
    count = 0
    for i, v in enumerate(values):
        total += v
        count += 1
        if i >= window:
            total -= values[i - window]
            count -= 1
        out.append(total / count)
    return out


def plot_history(history: TrainingHistory, path: str | Path) -> Path:
    """Render the four-panel PNG (matplotlib, Agg backend) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    eps = [r.episode for r in history.episodes]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    rewards = [r.reward for r in history.episodes]
    ax.plot(eps, rewards, color="tab:blue", alpha=0.3, lw=0.8, label="episode")
    ax.plot(eps, _moving_average(rewards, 50), color="tab:blue", label="moving mean (50)")
    ax.set_title("episode reward")
    ax.set_xlabel("episode")
    ax.legend(loc="lower right")

    ax = axes[0][1]
    loss_points = [(r.episode, r.mean_loss) for r in history.episodes
                   if math.isfinite(r.mean_loss) and r.mean_loss > 0]
    if loss_points:
        ax.plot([p[0] for p in loss_points], [p[1] for p in loss_points], color="tab:red", lw=0.8)
        ax.set_yscale("log")
    ax.set_title("mean TD loss (Huber, IS-weighted)")
    ax.set_xlabel("episode")

    ax = axes[1][0]
    ax.plot(eps, [r.epsilon for r in history.episodes], color="tab:green", label="epsilon")
    ax.plot(eps, [r.beta for r in history.episodes], color="tab:purple", label="PER beta")
    ax.set_ylim(0, 1.05)
    ax.set_title("schedules")
    ax.set_xlabel("episode")
    ax.legend(loc="center right")

    ax = axes[1][1]
    if history.validation:
        v_eps = [v["episode"] for v in history.validation]
        ax.plot(v_eps, [v["policy"]["mean_goodput_bps"] / 1e6 for v in history.validation],
                marker="o", color="black", label="DQN (greedy)")
        names = sorted({n for v in history.validation for n in v["baselines"]})
        for name in names:
            ys = [v["baselines"].get(name, {}).get("mean_goodput_bps", math.nan) / 1e6
                  for v in history.validation]
            ax.plot(v_eps, ys, ls="--", label=name)
        ax.legend(loc="lower right", fontsize="small")
    ax.set_title("validation mean goodput (Mbit/s)")
    ax.set_xlabel("episode")
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # episodes are whole numbers
    # Fixed margins instead of tight_layout(): the layout never changes and tight_layout() costs a
    # full extra draw (~40 % of the plot's CPU time).
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.07, top=0.95, wspace=0.18, hspace=0.3)
    target = Path(path)
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target
