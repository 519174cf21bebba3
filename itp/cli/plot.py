"""``itp plot``: training curves and evaluation comparisons as PNG files (matplotlib).

Examples::

    itp plot models/                                    # every plottable file in a training folder
    itp plot models/training_history.json               # -> models/training_history.png
    itp evaluate --json > eval.json && itp plot eval.json --out-dir plots/   # -> plots/eval.png
    itp plot models/dqn_final.metadata.json             # the evaluation stored in a model's metadata

Inputs are recognised by content, not by name:

* a training history (``"format": "itp-training-history"``, written by ``itp train``): four panels,
  episode reward, TD loss, the epsilon/beta schedules and validation goodput against the baselines
  (``itp.training.history.plot_history``; needs no torch);
* an evaluation table (``itp evaluate --json``, or ``"table"`` inside ``itp demo --json``'s
  ``evaluation``): one bar per policy for mean goodput, mean completion time (with p50 and p95 marks)
  and mean reward;
* model metadata (``X.metadata.json``) whose ``evaluation`` holds the table ``itp train`` measured;
* a folder: its ``training_history.json`` and every ``*.metadata.json`` with an evaluation.

Each PNG is written beside its input (``X.json`` -> ``X.png``, ``X.metadata.json`` ->
``X.evaluation.png``) or into ``--out-dir``. Needs matplotlib (``pip install 'itp[train]'`` has it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from itp.cli import CLIError

__all__ = ["add_parser", "evaluation_table_of", "plot_evaluation", "run"]

_HISTORY_FORMAT = "itp-training-history"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``plot`` on the subparsers action ``sub``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "plot",
        help="plot training curves and evaluation comparisons to PNG",
        description=(
            "Plot training_history.json (reward, loss, schedules, validation goodput) and evaluation "
            "tables (itp evaluate --json, model metadata) as PNG files."
        ),
    )
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT",
        help="training_history.json, an evaluation JSON, a .metadata.json, or a training output folder",
    )
    p.add_argument("--out-dir", metavar="DIR", help="write the PNGs here (default: beside each input)")
    p.add_argument("--title", help="title of the evaluation charts (default: the table's caption)")
    p.set_defaults(handler=run)
    return p


# ------------------------------------------------------------------------------ recognising inputs
def evaluation_table_of(doc: Any) -> dict[str, Any] | None:
    """The evaluation table (``EvaluationTable.to_dict()`` shape) held by a decoded JSON document.

    Accepts the table itself (``itp evaluate --json``), ``{"evaluation": {"table": ...}}`` (model
    metadata, ``itp demo --json``) and ``{"evaluation": table}``. Returns None if there is none.
    """
    if not isinstance(doc, Mapping):
        return None
    if isinstance(doc.get("rows"), list):
        return dict(doc)
    evaluation = doc.get("evaluation")
    if isinstance(evaluation, Mapping):
        table = evaluation.get("table", evaluation)
        if isinstance(table, Mapping) and isinstance(table.get("rows"), list):
            return dict(table)
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CLIError(f"{path} is not valid JSON: {exc}") from None


def _jobs(inputs: list[str]) -> list[tuple[str, Path, Any]]:
    """``(kind, source, document)`` for every plot to draw; kind is ``history`` or ``evaluation``."""
    jobs: list[tuple[str, Path, Any]] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(path.glob("training_history.json")) + sorted(path.glob("*.metadata.json"))
            before = len(jobs)
            for f in found:
                doc = _read_json(f)
                if isinstance(doc, Mapping) and doc.get("format") == _HISTORY_FORMAT:
                    jobs.append(("history", f, doc))
                elif evaluation_table_of(doc) is not None:
                    jobs.append(("evaluation", f, evaluation_table_of(doc)))
            if len(jobs) == before:
                raise CLIError(
                    f"nothing to plot in {path}: no training_history.json and no model metadata with an "
                    "evaluation"
                )
            continue
        if not path.is_file():
            raise CLIError(f"no such file or folder: {path}")
        doc = _read_json(path)
        if isinstance(doc, Mapping) and doc.get("format") == _HISTORY_FORMAT:
            jobs.append(("history", path, doc))
            continue
        table = evaluation_table_of(doc)
        if table is None:
            raise CLIError(
                f"{path} is neither a training history nor an evaluation table (itp evaluate --json) "
                "nor model metadata with an evaluation"
            )
        jobs.append(("evaluation", path, table))
    return jobs


def _target(source: Path, kind: str, out_dir: Path | None) -> Path:
    name = source.name
    suffix = ".metadata.json"
    stem = name[: -len(suffix)] + ".evaluation" if name.endswith(suffix) else source.stem
    return (out_dir or source.parent) / f"{stem}.png"


# ------------------------------------------------------------------------------ drawing
def _number(row: Mapping[str, Any], key: str, where: str) -> float:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: field {key} must be a number, got {value!r}")
    return float(value)


def plot_evaluation(table: Mapping[str, Any], path: str | Path, *, title: str | None = None) -> Path:
    """Draw an evaluation table as three bar panels and save it as PNG (Agg backend).

    Panels: mean goodput (Mbit/s), mean completion time (s) with p50 and p95 marked, mean reward. The
    ``heuristic`` bar is the reference (dashed line across the goodput panel); the ``oracle`` bar is
    hatched, as it sees the future and is an upper bound only.

    Args:
        table: ``EvaluationTable.to_dict()`` (``rows`` with ``name``, ``mean_goodput_bps``,
            ``mean_completion_time_s``, ``p50_completion_time_s``, ``p95_completion_time_s``,
            ``mean_reward``; optional ``episodes``, ``tasks_per_episode``, ``mode``, ``source``).
        path: the PNG to write.
        title: the figure title (default: a caption from the table).

    Returns:
        ``path``.

    Raises:
        ValueError: no rows, or a row without the numbers above (the message names row and field).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.get("rows")
    if not isinstance(rows, list) or not rows:
        raise ValueError("evaluation table has no rows")
    names: list[str] = []
    goodput: list[float] = []
    mean_t: list[float] = []
    p50_t: list[float] = []
    p95_t: list[float] = []
    reward: list[float] = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or not isinstance(row.get("name"), str):
            raise ValueError(f"evaluation row {i} has no name")
        where = f"evaluation row {row['name']!r}"
        names.append(row["name"])
        goodput.append(_number(row, "mean_goodput_bps", where) / 1e6)
        mean_t.append(_number(row, "mean_completion_time_s", where))
        p50_t.append(_number(row, "p50_completion_time_s", where))
        p95_t.append(_number(row, "p95_completion_time_s", where))
        reward.append(_number(row, "mean_reward", where))
    colours = [
        "tab:gray" if n == "oracle" else "tab:orange" if n == "heuristic" else
        "tab:blue" if n.startswith(("itp", "model", "dqn")) else "tab:olive"
        for n in names
    ]
    hatches = ["//" if n == "oracle" else "" for n in names]
    xs = list(range(len(names)))
    fig, axes = plt.subplots(1, 3, figsize=(min(18.0, max(10.0, 1.65 * len(names))), 4.6))

    def bars(ax: Any, values: list[float], label: str) -> None:
        drawn = ax.bar(xs, values, color=colours, edgecolor="black", linewidth=0.5)
        for patch, hatch in zip(drawn, hatches, strict=True):
            patch.set_hatch(hatch)
        ax.set_xticks(xs, names, rotation=30, ha="right", fontsize="small")
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)

    bars(axes[0], goodput, "mean goodput (Mbit/s, higher is better)")
    if "heuristic" in names:
        axes[0].axhline(goodput[names.index("heuristic")], color="tab:orange", ls="--", lw=1)
    bars(axes[1], mean_t, "completion time (s, lower is better)")
    axes[1].scatter(xs, p50_t, marker="_", s=300, color="black", label="p50", zorder=3)
    axes[1].scatter(xs, p95_t, marker="v", color="tab:red", label="p95", zorder=3)
    if all(t > 0 and math.isfinite(t) for t in (*mean_t, *p95_t, *p50_t)) and max(p95_t) > 20 * min(p50_t):
        axes[1].set_yscale("log")
    axes[1].legend(loc="upper right", fontsize="small")
    bars(axes[2], reward, "mean reward (higher is better)")
    axes[2].axhline(0.0, color="black", lw=0.5)
    if title is None:
        episodes, tasks = table.get("episodes"), table.get("tasks_per_episode")
        source = table.get("source") or (f"{table.get('mode')} mode" if table.get("mode") else "")
        title = "itp evaluation"
        if episodes and tasks:
            title += f": {episodes} episodes x {tasks} tasks"
        if source:
            title += f" ({source})"
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    target = Path(path)
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target


def run(args: argparse.Namespace) -> int:
    """Draw every plot the inputs hold; prints one line per PNG written; returns 0."""
    jobs = _jobs(list(args.inputs))
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CLIError(f"cannot create --out-dir {out_dir}: {exc.strerror or exc}") from None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CLIError("plotting needs matplotlib: pip install matplotlib (or 'itp[train]')") from None
    from itp.training.history import TrainingHistory, plot_history

    for kind, source, doc in jobs:
        target = _target(source, kind, out_dir)
        try:
            if kind == "history":
                history = TrainingHistory.from_dict(doc)
                if not history.episodes:
                    raise ValueError("it has no episodes")
                plot_history(history, target)
            else:
                plot_evaluation(doc, target, title=args.title)
        except ValueError as exc:
            raise CLIError(f"cannot plot {source}: {exc}") from None
        except OSError as exc:
            raise CLIError(f"cannot write {target}: {exc.strerror or exc}") from None
        what = "training curves" if kind == "history" else "evaluation"
        sys.stdout.write(f"{target}  ({what} from {source})\n")
    return 0
