"""Training configuration: one frozen dataclass, one docstring per field (CleanRL ``Args`` style).

Schedules (owned by the trainer, defined in absolute episodes so that a resumed run follows the same
curve as an uninterrupted one, whatever ``episodes`` the resumed run asks for):

* exploration: ``eps(e) = eps_end + (eps_start - eps_end) * max(0, 1 - e / epsilon_decay_episodes)``
  (linear in the episode index ``e`` counted from 0 over the whole training history);
* importance sampling: ``beta(e) = beta_start + (beta_end - beta_start) * min(1, e / beta_anneal_episodes)``;
* learning rate (optional): ``lr(e) = lr_end + (lr - lr_end) (1 + cos(pi min(1, e / lr_decay_episodes)))/2``.

Why ``gamma`` is small: a decision places one task; the next task's size, priority and the links' trace
rates do not depend on the action, only the short-lived load it leaves on the chosen streams does. The
problem is therefore close to a contextual bandit, and a long horizon would only add the variance of
unrelated future tasks to every target. ``gamma = 0.2`` keeps a little credit for the congestion an action
leaves behind (its effect decays within a few tasks) while the targets stay dominated by the immediate
reward, which is what goodput is made of.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from itp.model_metadata import _SEMVER

__all__ = ["TrainConfig"]

#: Stems the trainer writes besides the final model (``itp.training.dqn``): best model, history.
_RESERVED_STEMS: tuple[str, ...] = ("dqn_best", "training_history")


def _is_number(value: object) -> bool:
    """An int or float, but not a bool (``True`` is an int to Python, never a learning rate)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (with the seed, the run is bit-for-bit repeatable)."""

    episodes: int = 1000
    """Episodes to run in this invocation (a resumed run runs this many *more*)."""
    batch_size: int = 32
    """Transitions per gradient step."""
    seed: int = 0
    """Seed of every random stream: torch, exploration, replay sampling, episode seeds."""
    lr: float = 1e-3
    """Adam learning rate (at episode 0)."""
    lr_end: float | None = None
    """If set, the learning rate follows a cosine from ``lr`` down to ``lr_end`` over
    ``lr_decay_episodes`` (then stays there); None keeps it constant."""
    lr_decay_episodes: int = 1000
    """Episodes of the cosine learning-rate decay (used when ``lr_end`` is set)."""
    gamma: float = 0.2
    """Discount factor in [0, 1) (small: the task is close to a contextual bandit, see module doc)."""
    buffer_capacity: int = 100_000
    """Replay capacity in transitions."""
    prioritized: bool = True
    """Prioritized experience replay (False: uniform sampling, weights 1)."""
    per_alpha: float = 0.6
    """PER priority exponent alpha in [0, 1]."""
    per_beta_start: float = 0.4
    """PER importance-sampling exponent at episode 0."""
    per_beta_end: float = 1.0
    """PER importance-sampling exponent after ``beta_anneal_episodes``."""
    beta_anneal_episodes: int = 1000
    """Episodes over which beta rises linearly from start to end."""
    epsilon_start: float = 1.0
    """Exploration rate at episode 0."""
    epsilon_end: float = 0.01
    """Exploration floor."""
    epsilon_decay_episodes: int = 500
    """Episodes over which epsilon falls linearly from start to end."""
    counterfactual: bool = False
    """Full-information replay: after each step also store, for every other action, the reward it would
    have earned on the same realised future (``PartitionEnv.simulate_action``), with the executed step's
    next state. A simulator-only shortcut that removes the exploration bottleneck (15 labelled actions per
    state instead of 1); the online learner in production stores executed actions only."""
    learning_starts: int = 1000
    """Environment steps collected before the first gradient step."""
    train_frequency: int = 1
    """Environment steps per gradient step."""
    target_update: str = "polyak"
    """``"hard"``: copy every ``target_update_steps`` gradient steps; ``"polyak"``: soft update by tau."""
    target_update_steps: int = 500
    """Gradient steps between hard target copies (used when target_update is "hard")."""
    tau: float = 0.01
    """Polyak rate: target <- tau * online + (1 - tau) * target after each gradient step."""
    max_grad_norm: float = 10.0
    """Global L2 norm the gradients are clipped to."""
    huber_delta: float = 1.0
    """Huber (smooth L1) loss threshold, in reward units."""
    task_weight_pivot_bytes: int = 1 << 28
    """Tasks of at least this size (bytes) get full weight in the loss; see ``task_weight_floor``."""
    task_weight_floor: float = 1.0
    """Each state's loss is weighted ``clip(task_size / task_weight_pivot_bytes, floor, 1)`` (then
    normalised by the batch mean). 1.0 weighs every state equally. Mean goodput and p95 completion time
    are dominated by large tasks, and a per-state weight never changes which action is best for a state,
    only where the network spends its approximation error; the shipped model uses 1/16."""
    checkpoint_every: int = 0
    """Write ``dqn_checkpoint_<episode>.{onnx,pt}`` every this many episodes (0: none)."""
    val_every: int = 50
    """Validate the greedy policy every this many episodes (0: never; then no convergence point)."""
    val_episodes: int = 10
    """Episodes per periodic validation (train-split files, episode seeds never used in training)."""
    eval_episodes: int = 100
    """Episodes of the final evaluation on the eval split, written into the metadata (0: skip)."""
    eval_seed: int = 0
    """Seed of the final evaluation's episodes (``itp.sim.evaluate``)."""
    traces_dir: str | None = None
    """Trace folder (default: ``$ITP_TRACES_DIR`` or ``<repo>/../shared/traces``)."""
    eval_fraction: float = 0.3
    """Fraction of trace files held out for evaluation (split by file)."""
    split_seed: int = 0
    """Seed of the train/eval file split (fixed, so every run holds out the same files)."""
    output_dir: str = "models"
    """Folder for checkpoints, the final model, training_history.json and the plot."""
    model_name: str = "dqn_final"
    """Stem of the final model files in ``output_dir``."""
    model_version: str = "1.0.0"
    """Semantic version written into the final model's metadata."""
    num_threads: int = 1
    """torch intra-op threads (1 or 2: the machine is shared and the network is small)."""
    progress: bool = True
    """Show a tqdm progress bar (stderr)."""

    def __post_init__(self) -> None:
        """Reject values no run could use; the message names the field and the value."""
        positive = ("episodes", "batch_size", "buffer_capacity", "train_frequency",
                    "target_update_steps", "beta_anneal_episodes", "epsilon_decay_episodes",
                    "val_episodes", "num_threads", "task_weight_pivot_bytes", "lr_decay_episodes")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 1, got {value!r}")
        non_negative = ("seed", "learning_starts", "checkpoint_every", "val_every",
                        "eval_episodes", "eval_seed", "split_seed")
        for name in non_negative:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 0, got {value!r}")
        ranges: dict[str, tuple[float, float, bool]] = {
            # name: (low, high, high inclusive)
            "gamma": (0.0, 1.0, False),
            "per_alpha": (0.0, 1.0, True),
            "per_beta_start": (0.0, 1.0, True),
            "per_beta_end": (0.0, 1.0, True),
            "epsilon_start": (0.0, 1.0, True),
            "epsilon_end": (0.0, 1.0, True),
            "tau": (0.0, 1.0, True),
            "eval_fraction": (0.0, 1.0, False),
        }
        for name, (low, high, inclusive) in ranges.items():
            value = getattr(self, name)
            ok = _is_number(value) and math.isfinite(value) and value >= low
            ok = ok and (value <= high if inclusive else value < high)
            if not ok:
                bracket = "]" if inclusive else ")"
                raise ValueError(
                    f"TrainConfig.{name} must be in [{low}, {high}{bracket}, got {value!r}"
                )
        if self.lr_end is not None and not (
            _is_number(self.lr_end) and math.isfinite(self.lr_end) and 0 <= self.lr_end <= self.lr
        ):
            raise ValueError(f"TrainConfig.lr_end must be None or in [0, lr], got {self.lr_end!r}")
        if not (_is_number(self.task_weight_floor) and 0.0 < self.task_weight_floor <= 1.0):
            raise ValueError(
                f"TrainConfig.task_weight_floor must be in (0, 1], got {self.task_weight_floor!r}"
            )
        for name in ("lr", "max_grad_norm", "huber_delta"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"TrainConfig.{name} must be a finite number > 0, got {value!r}")
        for name in ("prioritized", "counterfactual", "progress"):
            # A JSON config's "false" (a non-empty string) would otherwise switch the option on.
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"TrainConfig.{name} must be a bool, got {value!r}")
        if self.batch_size > self.buffer_capacity:
            raise ValueError(
                f"TrainConfig.batch_size ({self.batch_size}) must not exceed buffer_capacity "
                f"({self.buffer_capacity}): no batch could ever be sampled"
            )
        if not isinstance(self.model_version, str) or not _SEMVER.match(self.model_version):
            # Checked here, not only when the metadata is written at the end of a long run.
            raise ValueError(
                f"TrainConfig.model_version must be a semantic version MAJOR.MINOR.PATCH, "
                f"got {self.model_version!r}"
            )
        if self.epsilon_end > self.epsilon_start:
            raise ValueError(
                f"TrainConfig.epsilon_end ({self.epsilon_end}) must not exceed epsilon_start "
                f"({self.epsilon_start})"
            )
        if self.target_update not in ("hard", "polyak"):
            raise ValueError(
                f"TrainConfig.target_update must be 'hard' or 'polyak', got {self.target_update!r}"
            )
        if (
            not isinstance(self.model_name, str)
            or not self.model_name
            or "/" in self.model_name
            or self.model_name.startswith(".")
        ):
            raise ValueError(f"TrainConfig.model_name must be a bare stem, got {self.model_name!r}")
        if self.model_name in _RESERVED_STEMS or self.model_name.startswith("dqn_checkpoint_"):
            # The trainer writes these files itself; the final model would overwrite them (or they it).
            raise ValueError(
                f"TrainConfig.model_name {self.model_name!r} is reserved for another output file "
                f"({', '.join(_RESERVED_STEMS)}, dqn_checkpoint_<episode>)"
            )

    def epsilon(self, episode: int) -> float:
        """Exploration rate for (0-based, global) ``episode``; see the module docstring."""
        frac = max(0.0, 1.0 - episode / self.epsilon_decay_episodes)
        return self.epsilon_end + (self.epsilon_start - self.epsilon_end) * frac

    def learning_rate(self, episode: int) -> float:
        """Adam learning rate for (0-based, global) ``episode``: constant, or the cosine to ``lr_end``."""
        if self.lr_end is None:
            return self.lr
        frac = min(1.0, episode / self.lr_decay_episodes)
        return self.lr_end + (self.lr - self.lr_end) * 0.5 * (1.0 + math.cos(math.pi * frac))

    def beta(self, episode: int) -> float:
        """PER importance-sampling exponent for (0-based, global) ``episode``."""
        frac = min(1.0, episode / self.beta_anneal_episodes)
        return self.per_beta_start + (self.per_beta_end - self.per_beta_start) * frac

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON-safe), for metadata and checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TrainConfig has no field(s) {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)
