"""``itp train``: train, resume or evaluate the Double DQN (the logic is in ``itp.training.dqn``).

Examples::

    itp train --episodes 1000 --batch-size 32                     # a fresh run into models/
    itp train --load-model models/dqn_checkpoint_500 --episodes 500  # resume: 500 more episodes
    itp train --load-model models/dqn_final --evaluate            # evaluate on the held-out traces

``training/train_dqn.py`` is the same command as a script. Needs the ``train`` extra
(``pip install 'itp[train]'``: torch, onnx, tqdm, matplotlib).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from itp.cli import CLIError, int_at_least

__all__ = ["add_arguments", "add_parser", "run"]

logger = logging.getLogger(__name__)

# CLI flag -> TrainConfig field, for the flags that map one to one (None default = "not given").
_FIELDS: dict[str, str] = {
    "episodes": "episodes",
    "batch_size": "batch_size",
    "lr": "lr",
    "seed": "seed",
    "gamma": "gamma",
    "traces": "traces_dir",
    "output": "output_dir",
    "checkpoint_every": "checkpoint_every",
    "eval_episodes": "eval_episodes",
    "val_every": "val_every",
    "model_name": "model_name",
    "model_version": "model_version",
    "threads": "num_threads",
    "counterfactual": "counterfactual",
}


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The training flags (shared by ``itp train`` and ``training/train_dqn.py``)."""
    p.add_argument("--episodes", type=int_at_least(1), help="episodes to run (on resume: this many more)")
    p.add_argument("--batch-size", type=int_at_least(1), help="transitions per gradient step (default 32)")
    p.add_argument("--lr", type=_positive_float, help="Adam learning rate (default 1e-3)")
    p.add_argument("--gamma", type=float, help="discount factor in [0, 1) (default 0.2)")
    p.add_argument("--seed", type=int_at_least(0), help="seed of every random stream (default 0)")
    p.add_argument(
        "--traces", metavar="DIR", help="trace folder (default: $ITP_TRACES_DIR or ../shared/traces)"
    )
    p.add_argument("--output", metavar="DIR", help="folder for checkpoints, model, history (default models)")
    p.add_argument("--load-model", metavar="PATH", help="checkpoint stem or .pt file to resume or evaluate")
    p.add_argument("--evaluate", action="store_true", help="with --load-model: only evaluate that model")
    p.add_argument(
        "--checkpoint-every", type=int_at_least(0), help="write dqn_checkpoint_<ep> every N episodes"
    )
    p.add_argument(
        "--eval-episodes", type=int_at_least(0), help="episodes of the final evaluation (default 100)"
    )
    p.add_argument("--val-every", type=int_at_least(0), help="validate every N episodes (0: never)")
    p.add_argument("--model-name", help="stem of the final model files (default dqn_final)")
    p.add_argument("--model-version", help="semantic version written into the metadata (default 1.0.0)")
    p.add_argument("--threads", type=int_at_least(1), help="torch intra-op threads (default 1)")
    p.add_argument(
        "--counterfactual", action=argparse.BooleanOptionalAction, default=None,
        help="store the simulated reward of every action per step (full-information replay)",
    )
    p.add_argument("--config", metavar="JSON", help="a JSON file of TrainConfig fields (flags override it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``train`` on the subparsers action ``sub``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "train",
        help="train, resume or evaluate the Double DQN on trace-driven simulation",
        description=(
            "Train a Double DQN with prioritized replay on the simulator driven by the train split of the "
            "trace folder, export ONNX + metadata, and evaluate against the baselines on held-out files."
        ),
    )
    add_arguments(p)
    p.set_defaults(handler=run)
    return p


def _config_from_args(args: argparse.Namespace, base: dict[str, Any]) -> Any:
    from itp.training.config import TrainConfig

    data = dict(base)
    if args.config:
        try:
            loaded = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CLIError(f"cannot read --config {args.config}: {exc}") from None
        if not isinstance(loaded, dict):
            raise CLIError(f"--config {args.config} must hold a JSON object of TrainConfig fields")
        data.update(loaded)
    for flag, field in _FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            data[field] = value
    if args.no_progress:
        data["progress"] = False
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """Train, resume (``--load-model``) or evaluate (``--load-model --evaluate``); returns 0 on success."""
    try:
        from itp.training import dqn
    except ImportError as exc:
        raise CLIError(f"training needs the train extra: pip install 'itp[train]' ({exc})") from None
    command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    if args.evaluate:
        return _evaluate(args, dqn)
    base: dict[str, Any] = {}
    if args.load_model:
        try:
            checkpoint = dqn.load_checkpoint(args.load_model)
        except (FileNotFoundError, ValueError) as exc:
            raise CLIError(str(exc)) from None
        base = dict(checkpoint["config"])
    config = _config_from_args(args, base)
    try:
        result = dqn.train(config, resume_from=args.load_model, command=command)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    out = sys.stdout
    out.write(f"model: {result.model_path}\n")
    if result.best_model_path is not None:
        out.write(f"best validation model: {result.best_model_path}\n")
    out.write(
        f"episodes: {result.episodes_run}, steps: {result.steps}, wall time: {result.wall_time_s:.1f} s\n"
    )
    if result.converged_at_episode is not None:
        out.write(
            "converged (validation goodput within 1% of its best) at episode "
            f"{result.converged_at_episode}\n"
        )
    if result.evaluation is not None:
        out.write("\nEvaluation on held-out trace files:\n\n" + result.evaluation["markdown"])
    return 0


def _training_split(onnx_path: Path) -> tuple[dict[str, Any], set[str]]:
    """The split fields of the model's training config and the names of the files it trained on.

    Evaluation must hold out what the model did not see: the split is recomputed with the model's own
    ``eval_fraction`` / ``split_seed`` (and its ``eval_seed``, to reproduce its metadata table), and any
    file it was trained on is dropped. Empty when the model has no readable itp metadata.
    """
    from itp.model_metadata import metadata_path_for, read_metadata

    try:
        training = read_metadata(metadata_path_for(onnx_path)).training
    except (OSError, ValueError):
        return {}, set()
    config = training.get("config")
    split = {k: config[k] for k in ("eval_fraction", "split_seed", "eval_seed")
             if isinstance(config, dict) and k in config}
    names = training.get("train_trace_files")
    return split, {str(n) for n in names} if isinstance(names, list) else set()


def _evaluate(args: argparse.Namespace, dqn: Any) -> int:
    if not args.load_model:
        raise CLIError("--evaluate needs --load-model PATH", status=2)
    stem = dqn.resolve_stem(args.load_model)
    onnx_path = stem.with_name(stem.name + ".onnx")
    if not onnx_path.is_file():
        raise CLIError(f"model not found: {onnx_path}")
    split, trained_on = _training_split(onnx_path)
    config = _config_from_args(args, split)
    try:
        _, eval_files = dqn.trace_split(config)
        held_out = [f for f in eval_files if f.name not in trained_on]
        if not held_out:
            raise ValueError(f"every evaluation trace file was used to train {onnx_path}")
        if len(held_out) < len(eval_files):
            logger.warning("skipping %d evaluation file(s) that %s was trained on",
                           len(eval_files) - len(held_out), onnx_path)
        eval_files = held_out
        table = dqn.evaluate_model(
            onnx_path, episodes=args.eval_episodes or config.eval_episodes or 100, seed=config.eval_seed,
            trace_files=eval_files, name=stem.name,
        )
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    sys.stdout.write(table.to_text() + "\n")
    return 0
