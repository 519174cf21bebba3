"""``itp evaluate``: compare policies on identical simulated episodes and print one table.

Examples::

    itp evaluate                                    # every baseline, default traces, 20 episodes
    itp evaluate --policy heuristic models/itp.onnx --episodes 50 --seed 7
    itp evaluate --policy oracle --traces ../shared/traces --split eval --json
    itp evaluate --synthetic --tasks-per-episode 16
    itp evaluate --adapt warm --outcomes 3000 --json adapt-warm.json --plot adapt-warm.png

With ``--adapt NETWORK`` it runs the adaptation benchmark instead (``itp.sim.adapt``): the bundled model
learning online on a simulated network whose physics differ from training (``itp.sim.networks``:
``warm``, ``ss-restart``, ``lossy``, ``collapse``, or ``sim``), against rate-proportional, the heuristic
and the best fixed stream subset (chosen with hindsight) on the same tasks, every ``--checkpoint``
outcomes.

Policies are baseline names (``round-robin``, ``best-single``, ``equal-split``, ``rate-proportional``,
``heuristic``, ``oracle``) or ``*.onnx`` Q-network files; ``heuristic`` and ``round-robin`` are always
added as the references of the relative-goodput columns. Default traces: the held-out evaluation files
of the shared corpus (``$ITP_TRACES_DIR`` or ``<repo>/../shared/traces``) when it exists, else the
traces shipped in the package (``itp.sim.shipped_traces_dir()``). All the logic lives in
``itp.sim.evaluate`` and ``itp.sim.adapt``; this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from itp.cli import CLIError, guard_margin_arg, int_at_least

__all__ = ["add_parser", "run"]

REFERENCE_POLICIES: tuple[str, ...] = ("heuristic", "round-robin")
DEFAULT_EPISODES = 20
#: ``--adapt`` defaults: outcomes, window, retrain period, exploration, wall-time budget (seconds).
DEFAULT_ADAPT_OUTCOMES = 5000
DEFAULT_CHECKPOINT = 500
DEFAULT_RETRAIN_EVERY = 1000
DEFAULT_ADAPT_EPSILON = 0.05
DEFAULT_TIME_BUDGET_S = 900.0


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}") from None
    if not (value > 0.0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


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
        "--episodes", type=int_at_least(1), default=None,
        help=f"episodes per policy (default {DEFAULT_EPISODES}; not with --adapt)",
    )
    p.add_argument("--seed", type=int_at_least(0), default=0, help="evaluation seed (default 0)")
    p.add_argument(
        "--tasks-per-episode", type=int_at_least(1), default=None, metavar="K",
        help="decisions per episode (default: the simulator's, 64)",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument(
        "--json", nargs="?", const="-", default=None, metavar="OUT",
        help="print the results as JSON (with OUT: write them to that file and print the text report)",
    )
    fmt.add_argument("--markdown", action="store_true", help="print a GitHub markdown table")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal; needs tqdm for a bar)",
    )
    from itp.sim.networks import NETWORK_NAMES

    ad = p.add_argument_group("adaptation benchmark (itp.sim.adapt, docs/simulator.md)")
    ad.add_argument(
        "--adapt", metavar="NETWORK", choices=NETWORK_NAMES,
        help=f"run the adaptation benchmark on this network ({', '.join(NETWORK_NAMES)})",
    )
    ad.add_argument(
        "--outcomes", type=int_at_least(1), default=None, metavar="K",
        help=f"outcomes the learner sees (default {DEFAULT_ADAPT_OUTCOMES})",
    )
    ad.add_argument(
        "--checkpoint", type=int_at_least(1), default=None, metavar="N",
        help=f"outcomes per reported window (default {DEFAULT_CHECKPOINT})",
    )
    ad.add_argument(
        "--retrain-every", type=int_at_least(1), default=None, metavar="N",
        help=f"outcomes between retrains (default {DEFAULT_RETRAIN_EVERY})",
    )
    ad.add_argument(
        "--epsilon", type=_probability, default=None,
        help=f"exploration rate of the learning partitioner (default {DEFAULT_ADAPT_EPSILON})",
    )
    ad.add_argument(
        "--top-k", type=int, default=None, metavar="K",
        help="its exploration picks among the K best actions by Q, 1..15 (default 15: any action)",
    )
    ad.add_argument(
        "--guard-margin", type=_guard_option, default=None, metavar="M",
        help="the learning partitioner's decision guard, a number >= 0 or off "
        "(default 0.05, as LearningSession)",
    )
    ad.add_argument(
        "--guard-exploration", action=argparse.BooleanOptionalAction, default=None,
        help="explore only among the splits the guard lets through (default off, as LearningSession)",
    )
    ad.add_argument(
        "--explore-max-bytes", type=int_at_least(1), default=None, metavar="N",
        help="never explore on a task larger than N bytes (default: no limit, as LearningSession)",
    )
    ad.add_argument(
        "--model-failures", action=argparse.BooleanOptionalAction, default=None,
        help="fit each stream's failure model from the chunks' retries and score splits with it "
        "(default off, as LearningSession)",
    )
    ad.add_argument(
        "--time-budget", type=_seconds, default=None, metavar="SECONDS",
        help=f"wall-time budget of the learning run; past it the run stops early and says so "
        f"(default {DEFAULT_TIME_BUDGET_S:.0f})",
    )
    ad.add_argument("--plot", metavar="PNG", help="write the goodput/p95 curves (needs matplotlib)")
    p.set_defaults(handler=run)
    return p


def _guard_option(text: str) -> float | str:
    """``--guard-margin`` of ``--adapt``: a number >= 0, or ``"off"`` (kept as text: None means unset)."""
    value = guard_margin_arg(text)
    return "off" if value is None else value


_ADAPT_ONLY = ("outcomes", "checkpoint", "retrain_every", "epsilon", "top_k", "guard_margin",
               "guard_exploration", "explore_max_bytes", "model_failures", "time_budget", "plot")


def _check_mode(args: argparse.Namespace) -> None:
    """Reject options of the other mode (usage errors, exit 2)."""
    if args.adapt is None:
        for name in _ADAPT_ONLY:
            if getattr(args, name) is not None:
                raise CLIError(f"--{name.replace('_', '-')} needs --adapt NETWORK", status=2)
        return
    for name, flag in (("policy", "--policy"), ("episodes", "--episodes")):
        if getattr(args, name) is not None:
            raise CLIError(f"{flag} cannot be used with --adapt", status=2)
    if args.markdown:
        raise CLIError("--markdown cannot be used with --adapt", status=2)


def _adapt_progress(enabled: bool) -> tuple[Callable[[str, int, int], None] | None, Callable[[], None]]:
    """A one-line progress display on stderr for ``--adapt`` (stage, done/total, elapsed)."""
    if not enabled:
        return None, lambda: None
    start = time.monotonic()
    shown = [False]

    def update(stage: str, done: int, total: int) -> None:
        shown[0] = True
        sys.stderr.write(
            f"\ritp evaluate --adapt: {stage:<18} {done:>6}/{total} tasks, {time.monotonic() - start:6.0f} s"
        )
        sys.stderr.flush()

    def close() -> None:
        if shown[0]:
            sys.stderr.write("\n")

    return update, close


def _run_adapt(args: argparse.Namespace) -> int:
    """``--adapt``: run the benchmark, print the report (or JSON), write JSON/PNG files if asked."""
    from itp.sim.adapt import AdaptConfig, adaptation_trace_files, run_adaptation

    files: tuple[str, ...] = ()
    learner_files: tuple[str, ...] = ()
    if not args.synthetic:
        try:
            files, learner_files, _ = adaptation_trace_files(args.traces, args.split)
        except (FileNotFoundError, ValueError) as exc:
            raise CLIError(str(exc)) from None
    kwargs: dict[str, Any] = {
        "network": args.adapt,
        "outcomes": args.outcomes or DEFAULT_ADAPT_OUTCOMES,
        "checkpoint": args.checkpoint or DEFAULT_CHECKPOINT,
        "retrain_every": args.retrain_every or DEFAULT_RETRAIN_EVERY,
        "epsilon": DEFAULT_ADAPT_EPSILON if args.epsilon is None else args.epsilon,
        "time_budget_s": args.time_budget or DEFAULT_TIME_BUDGET_S,
        "seed": args.seed,
        "trace_files": files,
        "learner_trace_files": learner_files,
    }
    if args.tasks_per_episode is not None:
        kwargs["tasks_per_episode"] = args.tasks_per_episode
    if args.top_k is not None:
        kwargs["explore_top_k"] = args.top_k
    if args.guard_margin is not None:
        kwargs["guard_margin"] = None if args.guard_margin == "off" else args.guard_margin
    if args.guard_exploration is not None:
        kwargs["guard_exploration"] = args.guard_exploration
    if args.explore_max_bytes is not None:
        kwargs["explore_max_bytes"] = args.explore_max_bytes
    if args.model_failures is not None:
        kwargs["model_failures"] = args.model_failures
    try:
        config = AdaptConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc), status=2) from None
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CLIError(
                "--plot needs matplotlib, which is not installed (pip install matplotlib)"
            ) from None
    show = sys.stderr.isatty() if args.progress is None else bool(args.progress)
    callback, close = _adapt_progress(show)
    try:
        result = run_adaptation(config, progress=callback)
    except (ValueError, RuntimeError) as exc:
        raise CLIError(str(exc)) from None
    finally:
        close()
    if args.json == "-":
        sys.stdout.write(result.to_json() + "\n")
    else:
        sys.stdout.write(result.to_text())
        if args.json is not None:
            try:
                Path(args.json).write_text(result.to_json() + "\n")
            except OSError as exc:
                raise CLIError(f"--json {args.json}: {exc.strerror or exc}") from None
            sys.stderr.write(f"itp evaluate: wrote {args.json}\n")
    if args.plot is not None:
        try:
            result.plot(args.plot)
        except OSError as exc:
            raise CLIError(f"--plot {args.plot}: {exc.strerror or exc}") from None
        sys.stderr.write(f"itp evaluate: wrote {args.plot}\n")
    return 0


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
    """Evaluate (or, with ``--adapt``, run the adaptation benchmark) and print; returns 0."""
    _check_mode(args)
    if args.adapt is not None:
        return _run_adapt(args)
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
    episodes = DEFAULT_EPISODES if args.episodes is None else args.episodes
    callback, close = _progress(show, episodes, len(policies))
    try:
        table = evaluate(
            policies, episodes=episodes, seed=args.seed, trace_files=files, config=config,
            progress=callback,
        )
    except ValueError as exc:  # a bad trace file (names file and line) or an invalid model decision
        raise CLIError(str(exc)) from None
    finally:
        close()
    table = dataclasses.replace(table, source=source)
    if args.json is not None and args.json != "-":
        try:
            Path(args.json).write_text(table.to_json() + "\n")
        except OSError as exc:
            raise CLIError(f"--json {args.json}: {exc.strerror or exc}") from None
        sys.stdout.write(table.to_text())
    elif args.json is not None:
        sys.stdout.write(table.to_json() + "\n")
    elif args.markdown:
        sys.stdout.write(table.to_markdown())
    else:
        sys.stdout.write(table.to_text())
    return 0
