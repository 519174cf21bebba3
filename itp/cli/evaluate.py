"""``itp evaluate``: compare policies on identical simulated episodes and print one table.

Examples::

    itp evaluate                                    # every baseline, default traces, 20 episodes
    itp evaluate --policy heuristic models/itp.onnx --episodes 50 --seed 7
    itp evaluate --policy oracle --traces ../shared/traces --split eval --json
    itp evaluate --synthetic --tasks-per-episode 16

Policies are baseline names (``round-robin``, ``best-single``, ``equal-split``, ``rate-proportional``,
``heuristic``, ``oracle``) or ``*.onnx`` Q-network files; ``heuristic`` and ``round-robin`` are always
added as the references of the relative-goodput columns. Default traces: the held-out evaluation files
of the shared corpus (``$ITP_TRACES_DIR`` or ``<repo>/../shared/traces``) when it exists, else the
traces shipped in the package (``itp.sim.shipped_traces_dir()``). All the logic lives in
``itp.sim.evaluate``; this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from itp.cli import CLIError, int_at_least

__all__ = ["add_parser", "run"]

REFERENCE_POLICIES: tuple[str, ...] = ("heuristic", "round-robin")
DEFAULT_EPISODES = 20


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``evaluate`` on the subparsers action ``sub``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "evaluate",
        help="compare policies on identical simulated episodes",
        description=(
            "Run each policy on the same simulated episodes (same seeds -> same numbers) and print "
            "per policy: mean/p50/p95 completion time, mean goodput, success rate, mean reward, and "
            "goodput relative to the heuristic and to round-robin."
        ),
    )
    p.add_argument(
        "--policy",
        nargs="+",
        action="extend",
        metavar="NAME|MODEL.onnx",
        help="policies to evaluate (repeatable; default: every baseline). heuristic and round-robin "
        "are always added as references",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--traces",
        metavar="DIR",
        help="folder of trace files (Mahimahi or Pensieve format). Default: the held-out evaluation "
        "files of $ITP_TRACES_DIR or <repo>/../shared/traces if present, else the shipped traces",
    )
    src.add_argument("--synthetic", action="store_true", help="synthetic streams instead of traces")
    p.add_argument(
        "--split",
        choices=("auto", "all", "train", "eval"),
        default="auto",
        help="part of the trace folder to use (default auto: eval for the default shared corpus, "
        "all for --traces DIR or the shipped traces)",
    )
    p.add_argument(
        "--episodes", type=int_at_least(1), default=DEFAULT_EPISODES,
        help=f"episodes per policy (default {DEFAULT_EPISODES})",
    )
    p.add_argument("--seed", type=int_at_least(0), default=0, help="evaluation seed (default 0)")
    p.add_argument(
        "--tasks-per-episode", type=int_at_least(1), default=None, metavar="K",
        help="decisions per episode (default: the simulator's, 64)",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the results as JSON")
    fmt.add_argument("--markdown", action="store_true", help="print a GitHub markdown table")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal; needs tqdm for a bar)",
    )
    p.set_defaults(handler=run)
    return p


def _policy_specs(requested: list[str] | None) -> list[str]:
    from itp.sim.baselines import BASELINE_NAMES

    specs = list(requested) if requested else list(BASELINE_NAMES)
    for s in specs:
        if not s.endswith(".onnx") and s not in BASELINE_NAMES:
            raise CLIError(
                f"unknown policy {s!r}; expected one of {', '.join(BASELINE_NAMES)} or a *.onnx file",
                status=2,
            )
    unique = list(dict.fromkeys(specs))  # drop repeats, keep the order given
    return unique + [r for r in REFERENCE_POLICIES if r not in unique]


def _progress(
    enabled: bool, episodes: int, n_policies: int
) -> tuple[Callable[[str, int], None] | None, Callable[[], None]]:
    """A progress callback for ``evaluate`` and a function that closes it.

    A tqdm bar on stderr when tqdm is installed (it is an optional dependency); without it, one line
    per finished policy, which is enough to show that a long run is alive.
    """
    if not enabled:
        return None, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:

        def line(name: str, done: int) -> None:
            if done == episodes:
                sys.stderr.write(f"itp evaluate: {name}: {episodes} episodes done\n")

        return line, lambda: None

    bar = tqdm(
        total=episodes * n_policies, unit="episode", desc="evaluate", file=sys.stderr,
        dynamic_ncols=True,
    )

    def update(name: str, done: int) -> None:
        del done
        bar.set_postfix_str(name, refresh=False)
        bar.update(1)

    return update, bar.close


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table (or JSON) on stdout; returns 0."""
    from itp.sim.baselines import make_policy
    from itp.sim.evaluate import evaluate
    from itp.sim.physics import SimConfig
    from itp.sim.traces import select_trace_files

    specs = _policy_specs(args.policy)
    try:
        policies = [make_policy(s) for s in specs]
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from None

    files: tuple[Any, ...] = ()
    source = "synthetic streams"
    if not args.synthetic:
        try:
            selection = select_trace_files(args.traces, split=args.split)
        except (FileNotFoundError, ValueError) as exc:
            raise CLIError(str(exc)) from None
        files, source = selection.files, selection.description
    config = SimConfig() if args.tasks_per_episode is None else SimConfig(
        tasks_per_episode=args.tasks_per_episode
    )

    show = sys.stderr.isatty() if args.progress is None else bool(args.progress)
    callback, close = _progress(show, args.episodes, len(policies))
    try:
        table = evaluate(
            policies, episodes=args.episodes, seed=args.seed, trace_files=files, config=config,
            progress=callback,
        )
    except ValueError as exc:  # a bad trace file (names file and line) or an invalid model decision
        raise CLIError(str(exc)) from None
    finally:
        close()
    table = dataclasses.replace(table, source=source)
    if args.json:
        sys.stdout.write(table.to_json() + "\n")
    elif args.markdown:
        sys.stdout.write(table.to_markdown())
    else:
        sys.stdout.write(table.to_text())
    return 0
