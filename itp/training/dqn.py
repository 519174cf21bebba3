"""Double DQN with prioritized experience replay on ``itp/Partition-v0``, trained on real traces.

Update (one gradient step on a batch of B transitions ``(s, a, r, s', d)`` drawn by PER)::

    a*      = argmax_a Q_online(s', a)                      (online net selects, eval mode)
    y       = r + gamma * (1 - d) * Q_target(s', a*)        (target net evaluates)
    delta   = y - Q_online(s, a)                            (train mode: BatchNorm + dropout)
    loss    = mean_b( w_b * huber(delta_b; huber_delta) )   (w: PER importance weights in (0, 1])
    priorities[idx] <- |delta| (the buffer adds epsilon and applies alpha)

With ``task_weight_floor < 1`` each state's term is also weighted by ``clip(size / pivot, floor, 1)``
(normalised to batch mean 1): large tasks dominate mean goodput and p95 completion time, and a per-state
weight changes only where the network spends its approximation error, never which action is best.

With ``counterfactual`` (full-information replay, simulator only) every stored state also carries the
reward all 15 actions earned on the same realised future (``PartitionEnv.simulate_action``), and the
update regresses every action at once::

    y_a     = r_a + gamma * (1 - d) * Q_target(s', a*)       for a = 0..14 (s' of the executed action)
    loss    = mean_b( w_b * mean_a huber(y_{b,a} - Q_online(s_b, a)) )
    priorities[idx] <- mean_a |y_{b,a} - Q_online(s_b, a)|

The 15 targets of a state share its realised future (common random numbers), so their differences, which
decide the argmax, carry far less noise than 15 independent samples would.

followed by gradient clipping to ``max_grad_norm``, an Adam step and a target update (Polyak
``theta' <- tau theta + (1 - tau) theta'`` after every step, or a hard copy every N steps). ``d`` is
``terminated`` only: episodes end by truncation (a fixed number of tasks), which is not a terminal state.
Schedules (epsilon, beta) are functions of the global episode index (``itp.training.config``).

Data: the trace files are split by file into train/eval (``itp.sim.traces.split_trace_files``); training
episodes and periodic validation only ever see the train files, the final evaluation only the eval files.

Determinism: for a seed, a run on CPU is bit-for-bit repeatable (``torch.manual_seed``,
``torch.use_deterministic_algorithms(True)``, a fixed thread count, per-episode seeds derived with
``numpy.random.SeedSequence`` for the environment and exploration, and the replay's own seeded RNG).
A checkpoint holds everything else (weights, optimiser, counters, torch RNG, history); the replay is
saved beside the most recent checkpoint (``<stem>.replay.npz``), so resuming from it continues exactly
as the uninterrupted run would. Resuming from an older checkpoint (whose replay file was superseded)
starts with an empty buffer and refills it for ``learning_starts`` steps.

Files in ``output_dir``: ``dqn_checkpoint_<episode>.{onnx,pt}`` every ``checkpoint_every`` episodes;
``<model_name>.{onnx,pt,metadata.json}`` at the end (last weights); ``dqn_best.*`` (best validation
weights); ``training_history.json`` and ``training_history.png``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from itp import _native
from itp.actions import NUM_ACTIONS
from itp.model_metadata import ModelMetadata
from itp.replay import PrioritizedReplay, SampleBatch
from itp.state import FEATURE_NAMES, NUM_FEATURES, normalize_state
from itp.training.config import TrainConfig
from itp.training.export import export_model
from itp.training.history import EpisodeRecord, TrainingHistory, plot_history
from itp.training.network import QNetwork, fold_batchnorm, folded_forward

__all__ = [
    "CHECKPOINT_FORMAT",
    "GreedyPolicy",
    "LearnerState",
    "TrainResult",
    "batch_tensors",
    "evaluate_model",
    "gradient_step",
    "load_checkpoint",
    "load_network",
    "resolve_stem",
    "torch_settings",
    "trace_split",
    "train",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "itp-dqn-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
BEST_NAME = "dqn_best"
HISTORY_NAME = "training_history"
#: Baselines shown during validation and compared against at the end (the oracle only at the end).
VALIDATION_BASELINES: tuple[str, ...] = ("heuristic", "round-robin", "rate-proportional")
EVAL_BASELINES: tuple[str, ...] = (
    "round-robin", "best-single", "equal-split", "rate-proportional", "heuristic", "oracle",
)
# Seed-stream tags: training episodes, exploration, validation never share a SeedSequence.
_TAG_ENV, _TAG_EXPLORE, _TAG_VALIDATION = 1, 2, 3
#: Relative margin below the best validation goodput still counted as converged.
CONVERGENCE_MARGIN = 0.01


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` produced.

    Attributes:
        model_path: ``<output>/<model_name>.onnx`` (last weights).
        checkpoint_path: ``<output>/<model_name>.pt``.
        best_model_path: ``<output>/dqn_best.onnx`` (best validation), None without validation.
        episodes_run: global episodes completed (including those before a resume).
        steps: global environment steps.
        converged_at_episode: first validated episode within 1 % of the best validation goodput.
        wall_time_s: wall time of this invocation, seconds.
        history_path: ``training_history.json``.
        evaluation: the final evaluation table as a dict (None if skipped).
    """

    model_path: Path
    checkpoint_path: Path
    best_model_path: Path | None
    episodes_run: int
    steps: int
    converged_at_episode: int | None
    wall_time_s: float
    history_path: Path
    evaluation: dict[str, Any] | None


# ----------------------------------------------------------------------------- helpers


def _derived_seed(seed: int, tag: int, index: int) -> int:
    """A 63-bit seed for stream ``tag``, item ``index`` (independent across tags and indices)."""
    state = np.random.SeedSequence([seed, tag, index]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def _validation_seed(seed: int) -> int:
    return _derived_seed(seed, _TAG_VALIDATION, 0) % (2**31)


def trace_split(config: TrainConfig) -> tuple[list[Path], list[Path]]:
    """(train files, eval files) of the configured trace folder, split by file.

    Raises:
        ValueError: no trace folder is configured or found, or it holds no trace files.
    """
    from itp.sim.traces import default_traces_dir, discover_trace_files, split_trace_files

    folder = Path(config.traces_dir) if config.traces_dir else default_traces_dir()
    if folder is None:
        raise ValueError(
            "no trace folder: pass --traces DIR or set ITP_TRACES_DIR (expected <repo>/../shared/traces)"
        )
    try:
        files = discover_trace_files(folder)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    if not files:
        raise ValueError(f"trace folder {folder} holds no trace files")
    train_files, eval_files = split_trace_files(
        files, eval_fraction=config.eval_fraction, seed=config.split_seed
    )
    if not train_files:
        raise ValueError(f"trace folder {folder}: the train split is empty")
    return train_files, eval_files


class GreedyPolicy:
    """Greedy policy of a Q-network for ``itp.sim.evaluate``: argmax of the folded network's Q-values.

    Uses the BatchNorm-folded weights in numpy (identical to the exported ONNX graph up to float32
    rounding) so that evaluation costs a few microseconds per decision. Not thread-safe.
    """

    def __init__(self, net: QNetwork, name: str = "dqn") -> None:
        self.name = name
        self._layers = fold_batchnorm(net)

    def q_values(self, raw_state: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
        """Q-values float32[15] of one raw state (caller units)."""
        x = normalize_state(raw_state).reshape(1, NUM_FEATURES)
        q: npt.NDArray[np.float32] = folded_forward(self._layers, x)[0]
        return q

    def select_action(self, raw_state: npt.NDArray[np.float64]) -> int:
        """argmax of the Q-values (lowest index on ties)."""
        return int(np.argmax(self.q_values(raw_state)))


@contextlib.contextmanager
def torch_settings(num_threads: int) -> Iterator[None]:
    """Deterministic single-process torch for the duration of a run; restores the caller's settings."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def resolve_stem(path: str | Path) -> Path:
    """``X``, ``X.pt``, ``X.onnx`` or ``X.metadata.json`` -> the stem path ``X``."""
    p = Path(path)
    name = p.name
    for suffix in (".metadata.json", ".replay.npz", ".onnx", ".pt"):
        if name.endswith(suffix):
            return p.with_name(name[: -len(suffix)])
    return p


def _replay_path(stem: Path) -> Path:
    return stem.with_name(stem.name + ".replay.npz")


def _rewards_path(stem: Path) -> Path:
    """The counterfactual reward table saved beside a replay file (float32[capacity, 15], by slot)."""
    return stem.with_name(stem.name + ".rewards.npy")


# ----------------------------------------------------------------------------- checkpoints


_REQUIRED_KEYS = {
    "format": str,
    "format_version": int,
    "config": dict,
    "online": dict,
    "target": dict,
    "optimizer": dict,
    "episode": int,
    "global_step": int,
    "gradient_steps": int,
    "epsilon": float,
    "torch_rng": torch.Tensor,
    "history": dict,
    "best": dict,
    "train_files": list,
}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a ``.pt`` checkpoint (``torch.load(weights_only=True)``: no code runs).

    Args:
        path: the checkpoint, or its stem (``.pt`` is added).

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line naming the file: truncated, corrupt, not a checkpoint, or a missing or
            mistyped field.
    """
    p = resolve_stem(path)
    p = p.with_name(p.name + ".pt")
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, pickle/zip errors, EOFError...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"checkpoint {p} is corrupt or truncated ({reason[:160]})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {p} is not an itp DQN checkpoint")
    for key, kind in _REQUIRED_KEYS.items():
        if not isinstance(data.get(key), kind):
            raise ValueError(f"checkpoint {p} field {key} is missing or not a {kind.__name__}")
    if data["format_version"] != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {p} has format_version {data['format_version']}, "
            f"expected {CHECKPOINT_FORMAT_VERSION}"
        )
    return data


def load_network(path: str | Path) -> tuple[QNetwork, dict[str, Any]]:
    """The online network of a checkpoint (eval mode) and the checkpoint dict.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_checkpoint`; ValueError also when the weights
            do not fit the network.
    """
    data = load_checkpoint(path)
    net = QNetwork()
    try:
        net.load_state_dict(data["online"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"checkpoint {path} weights do not fit the network: {first}") from None
    net.eval()
    return net, data


@dataclass
class LearnerState:
    """Mutable training state (what a checkpoint holds besides the replay)."""

    online: QNetwork
    target: QNetwork
    optimizer: torch.optim.Optimizer
    episode: int = 0  # global episodes completed
    global_step: int = 0
    gradient_steps: int = 0
    epsilon: float = 1.0
    best_goodput_bps: float = -math.inf
    best_episode: int = 0
    best_weights: dict[str, torch.Tensor] | None = None


def _checkpoint_dict(
    state: LearnerState, config: TrainConfig, history: TrainingHistory, train_files: list[Path]
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config": config.to_dict(),
        "online": state.online.state_dict(),
        "target": state.target.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "episode": state.episode,
        "global_step": state.global_step,
        "gradient_steps": state.gradient_steps,
        "epsilon": float(state.epsilon),
        "torch_rng": torch.get_rng_state(),
        "history": history.to_dict(),
        "best": {
            "goodput_bps": float(state.best_goodput_bps) if state.best_episode else 0.0,
            "episode": state.best_episode,
            "weights": state.best_weights if state.best_weights is not None else {},
        },
        "train_files": [f.name for f in train_files],
    }


def _save_checkpoint(
    stem: Path,
    state: LearnerState,
    config: TrainConfig,
    history: TrainingHistory,
    train_files: list[Path],
    replay: PrioritizedReplay | None,
    training_meta: dict[str, Any],
    all_rewards: npt.NDArray[np.float32] | None = None,
) -> None:
    """``<stem>.pt`` and ``<stem>.onnx`` (+ metadata); the replay (and reward table) beside it if given."""
    pt = stem.with_name(stem.name + ".pt")
    tmp = pt.with_name(pt.name + ".tmp")
    torch.save(_checkpoint_dict(state, config, history, train_files), tmp)
    tmp.replace(pt)
    export_model(
        state.online,
        stem.with_name(stem.name + ".onnx"),
        version=config.model_version,
        training=training_meta,
    )
    if replay is not None:
        replay.save(_replay_path(stem))
        if all_rewards is not None:
            tmp_rewards = stem.with_name(stem.name + ".rewards.tmp.npy")
            np.save(tmp_rewards, all_rewards)
            tmp_rewards.replace(_rewards_path(stem))


# ----------------------------------------------------------------------------- learning step


def _soft_update(target: QNetwork, online: QNetwork, tau: float) -> None:
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters(), strict=True):
            t.lerp_(o, tau)
        for tb, ob in zip(target.buffers(), online.buffers(), strict=True):
            if tb.dtype.is_floating_point:
                tb.lerp_(ob, tau)
            else:
                tb.copy_(ob)


_TASK_SIZE_FEATURE = FEATURE_NAMES.index("task_size_bytes")
_TASK_SIZE_LOG2_SCALE = float(_native.TASK_SIZE_LOG2_SCALE)


def batch_tensors(batch: SampleBatch) -> dict[str, torch.Tensor]:
    """Zero-copy torch views of a sample batch's arrays: ``replay.sample(out=batch)`` refills them in
    place, so the tensors see every new batch without a copy."""
    names = ("states", "next_states", "actions", "rewards", "dones", "weights")
    return {name: torch.from_numpy(getattr(batch, name)) for name in names}


def _task_weights(states: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """Per-state loss weights ``clip(size / pivot, floor, 1)`` normalised to batch mean 1 (see
    ``TrainConfig.task_weight_floor``). The size comes back from the normalised feature, log2(bytes)/40."""
    log2_size = states[:, _TASK_SIZE_FEATURE] * _TASK_SIZE_LOG2_SCALE
    w = torch.exp2(log2_size - math.log2(config.task_weight_pivot_bytes))
    w = w.clamp(config.task_weight_floor, 1.0)
    return w / w.mean()


def gradient_step(
    state: LearnerState,
    config: TrainConfig,
    replay: PrioritizedReplay,
    batch: SampleBatch,
    tensors: dict[str, torch.Tensor],
    beta: float,
    all_rewards: npt.NDArray[np.float32] | None = None,
    penalty: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """One Double-DQN update on a PER batch; returns the (weighted Huber) loss.

    ``all_rewards`` (float32[capacity, 15], by slot): the full-information targets of the counterfactual
    mode (see the module docstring); None: the executed action's reward only. ``penalty(states, q_all)``
    (``q_all`` the online network's Q-values of the batch states, float32[B, 15], with gradients): a scalar
    added to the loss (fine-tuning's pull toward the deployed model, ``itp.training.finetune``); the
    returned loss includes it.
    """
    replay.sample(config.batch_size, beta, out=batch)
    states, next_states = tensors["states"], tensors["next_states"]
    actions, rewards = tensors["actions"], tensors["rewards"]
    dones, weights = tensors["dones"], tensors["weights"]
    online, target = state.online, state.target
    with torch.no_grad():
        if all_rewards is not None:
            rewards = torch.from_numpy(all_rewards[batch.indices])  # [B, 15], a small gather copy
        if config.gamma > 0.0:
            online.eval()
            next_actions = online(next_states).argmax(dim=1, keepdim=True)
            next_q = target(next_states).gather(1, next_actions).squeeze(1)
            bootstrap = config.gamma * (1.0 - dones) * next_q
            y = rewards + (bootstrap.unsqueeze(1) if all_rewards is not None else bootstrap)
        else:
            y = rewards.clone()
    online.train()
    weights = weights * _task_weights(states, config) if config.task_weight_floor < 1.0 else weights
    if all_rewards is not None:
        q = online(states)
        td = (y - q).abs().mean(dim=1)
        per_state = F.huber_loss(q, y, reduction="none", delta=config.huber_delta).mean(dim=1)
        loss = (weights * per_state).mean()
        if penalty is not None:
            loss = loss + penalty(states, q)
    else:
        q_all = online(states)
        q = q_all.gather(1, actions.unsqueeze(1)).squeeze(1)
        td = y - q
        loss = (weights * F.huber_loss(q, y, reduction="none", delta=config.huber_delta)).mean()
        if penalty is not None:
            loss = loss + penalty(states, q_all)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    torch.nn.utils.clip_grad_norm_(online.parameters(), config.max_grad_norm)
    state.optimizer.step()
    replay.update_priorities(batch.indices, td.detach().numpy(), batch.generations)
    state.gradient_steps += 1
    if config.target_update == "polyak":
        _soft_update(target, online, config.tau)
    elif state.gradient_steps % config.target_update_steps == 0:
        target.load_state_dict(online.state_dict())
    return float(loss.item())


# ----------------------------------------------------------------------------- evaluation


def _kpis(row: Any) -> dict[str, float]:
    return {
        "mean_goodput_bps": float(row.mean_goodput_bps),
        "p95_completion_time_s": float(row.p95_completion_time_s),
        "mean_completion_time_s": float(row.mean_completion_time_s),
        "success_rate": float(row.success_rate),
        "mean_reward": float(row.mean_reward),
    }


def evaluate_model(
    model: QNetwork | str | Path,
    *,
    episodes: int,
    seed: int,
    trace_files: list[Path],
    baselines: tuple[str, ...] = EVAL_BASELINES,
    name: str = "dqn",
) -> Any:
    """Evaluate a network (or an ``.onnx`` file, through ONNX Runtime) against baselines.

    Returns:
        The ``itp.sim.evaluate.EvaluationTable`` (the model's row is ``name``).
    """
    from itp.sim.evaluate import evaluate
    from itp.sim.policy import OnnxPolicy

    policy: Any
    if isinstance(model, QNetwork):
        policy = GreedyPolicy(model, name=name)
    else:
        policy = OnnxPolicy(Path(model), name=name)
    return evaluate(
        [policy, *baselines], episodes=episodes, seed=seed, trace_files=trace_files
    )


def _converged_at(history: TrainingHistory) -> int | None:
    """First validation episode whose goodput is within CONVERGENCE_MARGIN of the best one."""
    if not history.validation:
        return None
    best = max(v["policy"]["mean_goodput_bps"] for v in history.validation)
    for v in history.validation:
        if v["policy"]["mean_goodput_bps"] >= (1.0 - CONVERGENCE_MARGIN) * best:
            return int(v["episode"])
    return None


# ----------------------------------------------------------------------------- train


def train(
    config: TrainConfig,
    *,
    resume_from: str | Path | None = None,
    command: str | None = None,
) -> TrainResult:
    """Train (or resume) a Double DQN and write the model files; see the module docstring.

    Args:
        config: the run's configuration (on resume, normally the checkpoint's with a new
            ``episodes``; the caller decides).
        resume_from: a checkpoint stem or ``.pt`` file to continue from.
        command: the command line, recorded in the metadata.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: bad configuration, missing traces, or a corrupt checkpoint (one line).
    """
    wall_start = time.perf_counter()
    with torch_settings(config.num_threads):
        return _train(config, resume_from, command, wall_start)


def _train(
    config: TrainConfig, resume_from: str | Path | None, command: str | None, wall_start: float
) -> TrainResult:
    from itp.sim.env import PartitionEnv
    from itp.sim.evaluate import evaluate

    # --- args
    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(resume_from) if resume_from is not None else None
    train_files, eval_files = trace_split(config)

    # --- seeding
    torch.manual_seed(config.seed)

    # --- env
    env = PartitionEnv(trace_files=train_files)
    tasks_per_episode = env.config.tasks_per_episode

    # --- network
    online = QNetwork()
    target = QNetwork()
    target.load_state_dict(online.state_dict())
    target.eval()
    optimizer = torch.optim.Adam(online.parameters(), lr=config.lr)
    state = LearnerState(online=online, target=target, optimizer=optimizer, epsilon=config.epsilon(0))
    history = TrainingHistory()
    if checkpoint is not None:
        online.load_state_dict(checkpoint["online"])
        target.load_state_dict(checkpoint["target"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = config.lr
        state.episode = checkpoint["episode"]
        state.global_step = checkpoint["global_step"]
        state.gradient_steps = checkpoint["gradient_steps"]
        state.epsilon = checkpoint["epsilon"]
        torch.set_rng_state(checkpoint["torch_rng"])
        history = TrainingHistory.from_dict(checkpoint["history"])
        if checkpoint["best"]["episode"]:
            state.best_goodput_bps = float(checkpoint["best"]["goodput_bps"])
            state.best_episode = int(checkpoint["best"]["episode"])
            state.best_weights = checkpoint["best"].get("weights") or None
        logger.info("resuming from %s at episode %d", resume_from, state.episode)

    # --- buffer
    replay: PrioritizedReplay | None = None
    if resume_from is not None and _replay_path(resolve_stem(resume_from)).is_file():
        replay = PrioritizedReplay.load(_replay_path(resolve_stem(resume_from)))
        if replay.capacity != config.buffer_capacity:
            logger.warning("replay capacity %d differs from the config's", replay.capacity)
    elif resume_from is not None:
        logger.warning("no replay file beside %s: resuming with an empty buffer", resume_from)
    if replay is None:
        replay = PrioritizedReplay(
            config.buffer_capacity,
            alpha=config.per_alpha,
            prioritized=config.prioritized,
            seed=config.seed,
        )
    all_rewards: npt.NDArray[np.float32] | None = None
    if config.counterfactual:
        all_rewards = np.zeros((replay.capacity, NUM_ACTIONS), dtype=np.float32)
        rewards_file = _rewards_path(resolve_stem(resume_from)) if resume_from is not None else None
        if len(replay) and rewards_file is not None and rewards_file.is_file():
            saved = np.load(rewards_file)
            if saved.shape != all_rewards.shape or saved.dtype != np.float32:
                raise ValueError(
                    f"{rewards_file}: reward table has shape {saved.shape} {saved.dtype}, expected "
                    f"{all_rewards.shape} float32"
                )
            all_rewards[:] = saved
        elif len(replay):
            raise ValueError(
                f"counterfactual resume needs the reward table {rewards_file} beside the replay file"
            )
    batch = SampleBatch.allocate(config.batch_size)
    tensors = batch_tensors(batch)
    # Learning starts at a global step: a resumed run with its replay continues exactly; one with an
    # empty buffer first refills it for learning_starts steps.
    learn_from_step = config.learning_starts
    if checkpoint is not None and len(replay) == 0:
        learn_from_step = state.global_step + config.learning_starts

    # --- validation baselines (fixed seeds: computed once)
    val_seed = _validation_seed(config.seed)
    baseline_kpis: dict[str, dict[str, float]] = {}
    if config.val_every:
        table = evaluate(
            list(VALIDATION_BASELINES),
            episodes=config.val_episodes,
            seed=val_seed,
            trace_files=train_files,
        )
        baseline_kpis = {r.name: _kpis(r) for r in table.rows}

    training_meta: dict[str, Any] = {
        "config": config.to_dict(),
        "seed": config.seed,
        "train_trace_files": [f.name for f in train_files],
        "resumed_from": str(resume_from) if resume_from is not None else None,
        "torch_version": torch.__version__,
    }

    # --- loop
    first_episode = state.episode
    last_episode = first_episode + config.episodes
    bar = _progress(config, first_episode, last_episode)
    state_t = torch.empty((1, NUM_FEATURES), dtype=torch.float32)
    val_note = ""
    try:
        for episode in range(first_episode, last_episode):
            eps = config.epsilon(episode)
            beta = config.beta(episode)
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate(episode)
            state.epsilon = eps
            explore = np.random.default_rng(_derived_seed(config.seed, _TAG_EXPLORE, episode))
            obs, _ = env.reset(seed=_derived_seed(config.seed, _TAG_ENV, episode))
            ep_reward = 0.0
            losses: list[float] = []
            goodputs: list[float] = []
            times: list[float] = []
            online.eval()
            for _ in range(tasks_per_episode):
                if explore.random() < eps:
                    action = int(explore.integers(NUM_ACTIONS))
                else:
                    with torch.no_grad():
                        state_t[0] = torch.from_numpy(obs)
                        action = int(online(state_t)[0].argmax())
                if all_rewards is not None:
                    # Every action's reward on the same realised future (before the step advances it).
                    row = [env.simulate_action(a).reward for a in range(NUM_ACTIONS)]
                next_obs, reward, terminated, truncated, info = env.step(action)
                slot = replay.add(obs, action, float(reward), next_obs, bool(terminated))
                if all_rewards is not None:
                    all_rewards[slot] = row
                obs = next_obs
                state.global_step += 1
                ep_reward += float(reward)
                goodputs.append(float(info["goodput_bps"]))
                times.append(float(info["completion_time_s"]))
                if (
                    state.global_step >= learn_from_step
                    and len(replay) >= config.batch_size
                    and state.global_step % config.train_frequency == 0
                ):
                    losses.append(
                        gradient_step(state, config, replay, batch, tensors, beta, all_rewards)
                    )
                    online.eval()
                if terminated or truncated:
                    break
            state.episode = episode + 1
            history.add_episode(
                EpisodeRecord(
                    episode=state.episode,
                    reward=ep_reward,
                    mean_loss=float(np.mean(losses)) if losses else math.nan,
                    epsilon=eps,
                    beta=beta,
                    steps=state.global_step,
                    mean_goodput_bps=float(np.mean(goodputs)),
                    mean_completion_time_s=float(np.mean(times)),
                )
            )
            if config.val_every and state.episode % config.val_every == 0:
                val_note = _validate(state, config, history, baseline_kpis, val_seed, train_files)
            if config.checkpoint_every and state.episode % config.checkpoint_every == 0:
                stem = out_dir / f"dqn_checkpoint_{state.episode}"
                _save_checkpoint(
                    stem, state, config, history, train_files, replay,
                    {**training_meta, "episodes_run": state.episode}, all_rewards,
                )
                _drop_older_replays(out_dir, keep=_replay_path(stem))
            if bar is not None:
                loss_txt = f"{history.episodes[-1].mean_loss:.3g}" if losses else "-"
                bar.set_postfix_str(
                    f"R={ep_reward:.1f} loss={loss_txt} eps={eps:.3f}{val_note}", refresh=False
                )
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    # --- save
    wall_time_s = time.perf_counter() - wall_start
    converged = _converged_at(history)
    training_meta.update(
        episodes_run=state.episode,
        steps=state.global_step,
        gradient_steps=state.gradient_steps,
        converged_at_episode=converged,
        wall_time_s=round(wall_time_s, 3),
        num_threads=config.num_threads,
    )
    final_stem = out_dir / config.model_name
    _save_checkpoint(
        final_stem, state, config, history, train_files, replay, training_meta, all_rewards
    )
    _drop_older_replays(out_dir, keep=_replay_path(final_stem))

    best_path: Path | None = None
    best_net: QNetwork | None = None
    if state.best_weights is not None:
        best_net = QNetwork()
        best_net.load_state_dict(state.best_weights)
        best_net.eval()
        best_state = LearnerState(
            online=best_net, target=best_net, optimizer=optimizer, episode=state.best_episode,
            global_step=state.global_step, gradient_steps=state.gradient_steps,
            epsilon=state.epsilon, best_goodput_bps=state.best_goodput_bps,
            best_episode=state.best_episode,
        )
        best_stem = out_dir / BEST_NAME
        # The best checkpoint is at best_episode: its history stops there too, so that resuming from it
        # continues the episode count instead of repeating episodes already in the history.
        _save_checkpoint(
            best_stem, best_state, config, history.truncated(state.best_episode), train_files, None,
            {**training_meta, "selected_at_episode": state.best_episode},
        )
        best_path = best_stem.with_name(best_stem.name + ".onnx")

    evaluation: dict[str, Any] | None = None
    if config.eval_episodes and eval_files:
        evaluation = _final_evaluation(
            config, final_stem, best_path, eval_files, command, training_meta
        )
    history_path = history.save(out_dir / f"{HISTORY_NAME}.json")
    plot_history(history, out_dir / f"{HISTORY_NAME}.png")
    return TrainResult(
        model_path=final_stem.with_name(final_stem.name + ".onnx"),
        checkpoint_path=final_stem.with_name(final_stem.name + ".pt"),
        best_model_path=best_path,
        episodes_run=state.episode,
        steps=state.global_step,
        converged_at_episode=converged,
        wall_time_s=time.perf_counter() - wall_start,
        history_path=history_path,
        evaluation=evaluation,
    )


def _validate(
    state: LearnerState,
    config: TrainConfig,
    history: TrainingHistory,
    baseline_kpis: Mapping[str, Mapping[str, float]],
    val_seed: int,
    train_files: list[Path],
) -> str:
    """Evaluate the greedy policy on validation episodes; track the best weights. Returns a note."""
    from itp.sim.evaluate import evaluate

    table = evaluate(
        [GreedyPolicy(state.online)],
        episodes=config.val_episodes,
        seed=val_seed,
        trace_files=train_files,
    )
    kpis = _kpis(table.rows[0])
    history.add_validation(state.episode, kpis, baseline_kpis)
    goodput = kpis["mean_goodput_bps"]
    if goodput > state.best_goodput_bps:
        state.best_goodput_bps = goodput
        state.best_episode = state.episode
        state.best_weights = copy.deepcopy(state.online.state_dict())
    heuristic = baseline_kpis.get("heuristic", {}).get("mean_goodput_bps")
    if heuristic:
        return f" val/heur={goodput / heuristic:.3f}"
    return f" val={goodput / 1e6:.1f}Mb/s"


def _final_evaluation(
    config: TrainConfig,
    final_stem: Path,
    best_path: Path | None,
    eval_files: list[Path],
    command: str | None,
    training_meta: dict[str, Any],
) -> dict[str, Any]:
    """Evaluate the exported final (and best) model on the eval split; rewrite their metadata."""
    from itp.model_metadata import metadata_path_for, read_metadata, write_metadata
    from itp.sim.evaluate import evaluate
    from itp.sim.policy import OnnxPolicy

    final_onnx = final_stem.with_name(final_stem.name + ".onnx")
    policies: list[Any] = [OnnxPolicy(final_onnx, name=config.model_name)]
    if best_path is not None:
        policies.append(OnnxPolicy(best_path, name=BEST_NAME))
    table = evaluate(
        [*policies, *EVAL_BASELINES],
        episodes=config.eval_episodes,
        seed=config.eval_seed,
        trace_files=eval_files,
    )
    evaluation = {
        "split": "eval",
        "table": table.to_dict(),
        "markdown": table.to_markdown(),
        "command": command or "",
    }
    logger.info("evaluation on the eval split:\n%s", table.to_markdown())
    for onnx_path, row in ((final_onnx, config.model_name), (best_path, BEST_NAME)):
        if onnx_path is None:
            continue
        meta_path = metadata_path_for(onnx_path)
        meta = read_metadata(meta_path)
        write_metadata(meta_path, _with_evaluation(meta, {**evaluation, "model_row": row}))
    return evaluation


def _with_evaluation(meta: ModelMetadata, evaluation: dict[str, Any]) -> ModelMetadata:
    return dataclasses.replace(meta, evaluation=evaluation)


def _drop_older_replays(out_dir: Path, keep: Path) -> None:
    """Replay files are large: keep only the newest one (and its reward table) beside the newest
    checkpoint."""
    keep_rewards = _rewards_path(resolve_stem(keep))
    for p in [*out_dir.glob("*.replay.npz"), *out_dir.glob("*.rewards.npy")]:
        if p not in (keep, keep_rewards):
            p.unlink(missing_ok=True)


def _progress(config: TrainConfig, first: int, last: int) -> Any:
    if not config.progress:
        return None
    from tqdm import tqdm

    return tqdm(
        total=last - first, initial=0, desc=f"DQN ep {first + 1}-{last}", unit="ep",
        dynamic_ncols=True, leave=True,
    )
