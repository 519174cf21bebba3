"""``itp demo``: a short trace-driven session through the real ``TaskPartitioner`` API, then the baselines.

Examples::

    itp demo                                 # bundled model (or the heuristic, said so), shipped traces
    itp demo --model models/dqn_final.onnx --tasks 128 --show 12
    itp demo --heuristic --episodes 5 --json

What it does, in order:

1. builds ``itp.TaskPartitioner()`` with the bundled default model (``itp/models/dqn_v1.onnx``), a model
   given with ``--model``, or the heuristic only (``--heuristic``). A bundled model that is missing or
   does not verify is not an error: the partitioner decides with its heuristic fallback, and the demo
   says so;
2. plays one simulated episode of ``--tasks`` tasks on 4 streams whose rates replay the FCC traces
   shipped in the package (``itp.sim.shipped_traces_dir()``, or ``--traces DIR``). Per task it feeds the
   sender's measurements to ``update_stream``/``set_queue_depth``, calls ``partition_task``, transfers
   the bytes exactly as decided in the simulator, and calls ``report_outcome`` with what happened;
3. prints the first ``--show`` decisions (streams, bytes per stream, predicted vs simulated completion
   time, source), the session's counters from ``get_metrics()``;
4. evaluates the same policy greedily against every baseline on ``--episodes`` identical episodes
   (what ``itp evaluate`` does) and prints the table.

Needs nothing beyond ``pip install .``; the defaults finish in a few seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from itp.cli import CLIError, int_at_least, progress

__all__ = ["add_parser", "format_bytes", "format_rate", "format_time", "run"]

DEFAULT_TASKS = 64
DEFAULT_SHOW = 8
DEFAULT_EPISODES = 20


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``demo`` on the subparsers action ``sub``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run a short trace-driven session with the bundled model and compare it to the baselines",
        description=(
            "Drive a TaskPartitioner (bundled model, --model, or --heuristic) through one simulated "
            "episode on 4 streams replaying real FCC broadband traces, print its decisions and "
            "counters, then evaluate it against the baselines on identical episodes."
        ),
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--model", metavar="MODEL.onnx",
        help="a model file (with MODEL.metadata.json beside it) instead of the bundled one",
    )
    which.add_argument("--heuristic", action="store_true", help="no model: the heuristic decides")
    p.add_argument(
        "--traces", metavar="DIR",
        help="folder of trace files (Mahimahi or Pensieve format); default: the traces shipped in itp",
    )
    p.add_argument(
        "--tasks", type=int_at_least(1), default=DEFAULT_TASKS,
        help=f"tasks in the live session (default {DEFAULT_TASKS})",
    )
    p.add_argument(
        "--show", type=int_at_least(0), default=DEFAULT_SHOW,
        help=f"decisions to print (default {DEFAULT_SHOW})",
    )
    p.add_argument(
        "--episodes", type=int_at_least(0), default=DEFAULT_EPISODES,
        help=f"episodes of 64 tasks per policy for the baseline table (default {DEFAULT_EPISODES}; 0: skip)",
    )
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the session and evaluation")
    p.add_argument("--json", action="store_true", help="print everything as one JSON object")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    p.set_defaults(handler=run)
    return p


# ------------------------------------------------------------------------------------ formatting
def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"`` (binary units)."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def format_time(t_s: float) -> str:
    """Seconds as ``"12.3 ms"`` below one second, ``"4.56 s"`` above."""
    if not math.isfinite(t_s):
        return "inf"
    return f"{t_s * 1e3:.1f} ms" if t_s < 1.0 else f"{t_s:.2f} s"


def format_rate(bps: float) -> str:
    """Bits per second as Mbit/s or Gbit/s."""
    return f"{bps / 1e9:.2f} Gbit/s" if bps >= 1e9 else f"{bps / 1e6:.1f} Mbit/s"


# ------------------------------------------------------------------------------------ the session
def _trace_files(folder: str | None) -> tuple[list[Path], str]:
    from itp.sim.traces import discover_trace_files, shipped_traces_dir

    directory = Path(folder) if folder else shipped_traces_dir()
    if not directory.is_dir():
        raise CLIError(f"--traces {directory} is not a folder")
    files = discover_trace_files(directory)
    if not files:
        raise CLIError(f"no trace files in {directory} (expected Mahimahi or Pensieve traces)")
    where = "the traces shipped with itp" if folder is None else str(directory)
    return files, f"{len(files)} trace files ({where})"


def _partitioner(args: argparse.Namespace, clock: Any) -> tuple[Any, str, str | None]:
    """The partitioner, a one-line description of what decides, and a note when it fell back."""
    from itp.model_loading import ModelLoadError, load_model
    from itp.partitioner import DEFAULT_MODEL, TaskPartitioner, default_model_path

    note = None
    if args.heuristic:
        p = TaskPartitioner(None, seed=args.seed, clock=clock)
        return p, "the heuristic (--heuristic: no model)", None
    if args.model is not None:
        # An explicit model that does not load is the user's mistake: say so instead of falling back.
        try:
            load_model(args.model)
        except ModelLoadError as exc:
            raise CLIError(f"--model {args.model}: {str(exc).splitlines()[0]}") from None
        p = TaskPartitioner(args.model, seed=args.seed, clock=clock)
    else:
        p = TaskPartitioner(DEFAULT_MODEL, seed=args.seed, clock=clock)
        if p.model is None:
            bundled = default_model_path()
            why = "is not installed" if not bundled.is_file() else "did not load (see the warning above)"
            note = (
                f"the bundled model {bundled} {why}: every decision comes from the heuristic, "
                "itp's built-in fallback policy"
            )
    model = p.model
    if model is None:
        return p, "the heuristic (fallback)", note
    return p, f"model {model.version} ({model.path}, {model.backend} backend)", note


def _environment(files: list[Path], tasks: int) -> Any:
    """The simulator replaying ``files`` (parsed now, so a bad trace is reported before anything runs)."""
    from itp.sim.env import PartitionEnv
    from itp.sim.physics import SimConfig

    try:
        return PartitionEnv(SimConfig(tasks_per_episode=tasks), trace_files=files)
    except ValueError as exc:  # a malformed trace file: the message names file and line
        raise CLIError(str(exc)) from None


def _session(p: Any, env: Any, tasks: int, seed: int, hour: list[float]) -> list[dict[str, Any]]:
    """Play one episode through the partitioner's public API; one record per task."""
    from itp.partitioner import Task
    from itp.sim.policy import Decision as SimDecision
    from itp.state import NUM_STREAMS

    env.reset(seed=seed)
    records: list[dict[str, Any]] = []
    for k in range(tasks):
        raw = env.raw_state  # what the sender measured so far (never the future)
        for i in range(NUM_STREAMS):
            p.update_stream(
                i,
                bandwidth_bps=float(raw[i]),
                latency_s=float(raw[4 + i]),
                congestion=float(raw[8 + i]),
                success_rate=float(raw[12 + i]),
            )
        p.set_queue_depth(float(raw[16]))
        hour[0] = float(raw[19])
        task = Task(id=f"task-{k}", size=int(raw[17]), priority=float(raw[18]))
        d = p.partition_task(task)
        # Move the bytes exactly as decided; the simulator reports what a sender would observe.
        _, _, _, _, info = env.step_decision(SimDecision(d.action, d.bytes_per_stream))
        reward = p.report_outcome(
            task.id,
            d,
            throughput_bps=float(info["goodput_bps"]),
            latency_s=float(info["completion_time_s"]),
            success=bool(info["success"]),
            retransmissions=int(info["retransmissions"]),
        )
        records.append(
            {
                "task_id": task.id,
                "size_bytes": task.size,
                "priority": task.priority,
                "source": d.source,
                "action": d.action,
                "stream_ids": list(d.stream_ids),
                "chunk_sizes": list(d.chunk_sizes),
                "confidence": d.confidence,
                "expected_time_s": d.expected_time,
                "completion_time_s": float(info["completion_time_s"]),
                "goodput_bps": float(info["goodput_bps"]),
                "success": bool(info["success"]),
                "retransmissions": int(info["retransmissions"]),
                "reward": reward,
            }
        )
    return records


def _evaluate(
    p: Any, files: list[Path], episodes: int, seed: int, show_progress: bool | None
) -> Any:
    """Greedy evaluation of the partitioner's policy and every baseline on identical episodes."""
    from itp.agent import AgentPolicy
    from itp.sim.baselines import BASELINE_NAMES
    from itp.sim.evaluate import evaluate

    model = p.model
    # Without a model, itp *is* the heuristic: its row is the baseline called "heuristic".
    policies: list[Any] = list(BASELINE_NAMES)
    if model is not None:
        policies.insert(0, AgentPolicy(model, name=f"itp model {model.version}"))
    update, close = progress(show_progress, episodes * len(policies), desc="demo: baselines", unit="episode")
    try:
        return evaluate(
            policies, episodes=episodes, seed=seed, trace_files=files,
            progress=lambda name, done: update(1, name),
        )
    finally:
        close()


# ------------------------------------------------------------------------------------ output
def _decision_lines(records: list[dict[str, Any]], show: int) -> list[str]:
    header = ["task", "size", "prio", "source", "conf", "streams", "bytes per stream"]
    header += ["expected", "simulated", "ok"]
    rows = [header]
    for r in records[:show]:
        per_stream = " + ".join(
            f"{s}:{format_bytes(c)}" for s, c in zip(r["stream_ids"], r["chunk_sizes"], strict=True)
        )
        rows.append(
            [
                r["task_id"],
                format_bytes(r["size_bytes"]),
                f"{r['priority']:.2f}",
                r["source"],
                f"{r['confidence']:.2f}",
                ",".join(str(s) for s in r["stream_ids"]),
                per_stream,
                format_time(r["expected_time_s"]),
                format_time(r["completion_time_s"]),
                "yes" if r["success"] else "no",
            ]
        )
    widths = [max(len(row[j]) for row in rows) for j in range(len(header))]
    right = {1, 2, 4, 7, 8}
    lines = []
    for n, row in enumerate(rows):
        cells = zip(row, widths, strict=True)
        line = "  ".join(c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(cells))
        lines.append(line.rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _summary(records: list[dict[str, Any]], metrics: Any) -> list[str]:
    by_source = ", ".join(f"{k} {v}" for k, v in metrics.decisions_by_source.items() if v)
    errors = [
        abs(r["completion_time_s"] / r["expected_time_s"] - 1.0)
        for r in records
        if r["expected_time_s"] > 0 and math.isfinite(r["expected_time_s"])
    ]
    goodput = statistics.fmean(r["goodput_bps"] for r in records)
    lines = [
        f"decisions      {metrics.total_decisions} ({by_source}); model faults {metrics.model_faults}, "
        f"heuristic fallbacks {metrics.fallback_count}",
        f"outcomes       {metrics.reported_outcomes} reported, {metrics.successful_tasks} delivered "
        f"({100 * metrics.success_rate:.1f}%), mean reward {metrics.avg_reward:.3f}, "
        f"mean goodput {format_rate(goodput)}",
    ]
    if errors:
        lines.append(
            f"prediction     |simulated / expected - 1|: median {100 * statistics.median(errors):.1f}%, "
            f"max {100 * max(errors):.1f}%"
        )
    lines.append(
        f"experience     {metrics.pushed_transitions} transitions pushed into the ring "
        f"({metrics.dropped_transitions} dropped), ready for an online learner"
    )
    return lines


def run(args: argparse.Namespace) -> int:
    """Run the session and the comparison; print text (or JSON) on stdout; returns 0."""
    files, source = _trace_files(args.traces)
    env = _environment(files, args.tasks)
    hour = [12.0]  # the partitioner's clock reads the simulated time of day
    p, who, note = _partitioner(args, lambda: hour[0])
    records = _session(p, env, args.tasks, args.seed, hour)
    metrics = p.get_metrics()
    table = None
    if args.episodes > 0:
        try:
            table = _evaluate(p, files, args.episodes, args.seed, args.progress)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    if args.json:
        doc = {
            "policy": who,
            "note": note,
            "traces": [str(f) for f in files],
            "session": {"tasks": args.tasks, "seed": args.seed, "decisions": records},
            "metrics": {k: v for k, v in metrics.as_dict().items() if k != "learner"},
            "evaluation": table.to_dict() if table is not None else None,
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    out: list[str] = [
        f"itp demo: {args.tasks} tasks on 4 streams replaying {source}, seed {args.seed}",
        f"deciding:  {who}",
    ]
    if note:
        out.append(f"note:      {note}")
    if args.show:
        shown = min(args.show, len(records))
        out += ["", f"First {shown} decisions (partition_task -> simulated transfer):", ""]
        out += _decision_lines(records, args.show)
    out += ["", "Session (p.get_metrics()):", ""]
    out += _summary(records, metrics)
    if table is not None:
        out += [
            "",
            f"Against the baselines ({args.episodes} episodes per policy, identical for every policy; "
            "`itp evaluate` for more):",
            "",
            table.to_text().rstrip("\n"),
        ]
        if p.model is None:
            out.append("(itp served the heuristic, so its row is `heuristic`; the oracle sees the future)")
        else:
            out.append("(the oracle sees the future: an upper bound, not a deployable policy)")
    sys.stdout.write("\n".join(out) + "\n")
    return 0
