"""A testbed run: every policy moves the same schedules over the same emulated paths, repeated R times.

For repeat r (``itp.testbed.schedule.make_schedule(seed, r)``; r = 0, 1, ... or the order
``RunConfig.repeat_order`` gives) the run

1. writes the repeat's task files (sizes from the schedule; content: a seeded random 1 MiB block
   repeated, so nothing compresses and nothing is read from a slow source);
2. brings up the paths (``itp.testbed.paths.PathSet``: one Mahimahi shell per path with the repeat's
   one-way delay and loss, ``tbf`` inside, transport settings in each namespace) and a receiver
   (``itp receive``, authenticated with a fresh secret) on path 0's outer address;
3. for each policy, in an order rotated by one per repeat (so no policy always goes first): installs the
   rate series (the same trace offsets and means for every policy), starts a sender session
   (``itp.testbed.engine send``), starts the rate controller on the session's clock, submits the tasks at
   their arrival times, waits (bounded by ``policy_timeout_s``), collects the ``SendReport``; then stops
   the controller, empties the receiver's folder and flushes each namespace's TCP metrics cache (so no
   policy inherits the previous one's ``ssthresh``; ``tcp_no_metrics_save`` is set as well);
4. tears the paths down.

Per (repeat, policy), over the repeat's tasks: mean and 95th-percentile completion time (seconds, the
engine's ``acked - dispatched``), mean per-task goodput (bit/s; 0 for a failed task), aggregate
goodput (delivered bits / first dispatch to last acknowledgement) and success fraction. A task that did
not finish by the deadline counts as failed with completion time ``deadline - arrival`` (a lower bound).
The table shows the mean over repeats with a 95% Student-t interval (``itp.testbed.stats``); the
simulator's oracle has no counterpart here. With ``RunConfig.learn`` the ``itp`` policy is one learning
deployment across the repeats, and the policy ``bundled`` (the bundled model as it is, never learning)
is its control on the same schedules.

Clean-up: every child process has its own session and is killed with its group; the paths are a
context manager; SIGTERM is turned into ``KeyboardInterrupt`` while a run is active, and an ``atexit``
hook closes whatever is still open, so Ctrl-C, SIGTERM and exceptions leave nothing behind (a SIGKILL
can; ``itp testbed clean`` finds that by name). The run directory (``/tmp/itptb-run-*``) is removed at
the end unless ``keep_files``.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from itp.sim.traces import load_trace
from itp.testbed.calibrate import (
    CalibrationCase,
    ClassError,
    FitResult,
    PathModel,
    class_errors,
    fit_transport,
)
from itp.testbed.calibrate import TransportParams as SimTransport
from itp.testbed.host import TEMP_PREFIX
from itp.testbed.paths import PathConfig, PathSet, TransportSettings, kill_group
from itp.testbed.rates import QueueSpec, RateSeries, scaled_rate_series
from itp.testbed.schedule import RepeatSchedule, ScheduleConfig, make_schedule
from itp.testbed.stats import Estimate, mean_ci, percentile

__all__ = [
    "BUNDLED_POLICY",
    "POLICY_ALIASES",
    "PolicyRun",
    "PolicySummary",
    "RunConfig",
    "RunResult",
    "TaskResult",
    "calibration_report",
    "cases_from_result",
    "engine_policy",
    "learn_entry",
    "policy_timeout_s",
    "resolve_policy",
    "run_testbed",
    "runs_from_dict",
    "summarise",
]

logger = logging.getLogger(__name__)

POLICY_ALIASES: dict[str, str] = {
    "equal": "equal-split",
    "rate": "rate-proportional",
    "rr": "round-robin",
    "best": "best-single",
    "model": "itp",
}
"""Short names accepted on the command line, and what they mean."""
BUNDLED_POLICY = "bundled"
"""The ``itp`` policy serving the bundled model as it is: greedy, uncalibrated (start windows from
``TCP_INFO`` as in every ``itp send``), never learning -- what ``itp send`` without ``--learn`` runs. In a
learning run it is the control that says what learning added, measured on the same schedules as the
learning ``itp`` (``repeat_rows``, ``summarise``); without ``RunConfig.learn`` it runs exactly what
``itp`` runs (two sessions of one policy: the run's noise floor)."""
_BLOCK_BYTES = 1 << 20


def resolve_policy(name: str) -> str:
    """The run's policy name for ``name`` (aliases resolved): an engine policy or ``bundled``;
    ValueError naming unknown ones."""
    from itp.transfer.policy import POLICY_NAMES

    full = POLICY_ALIASES.get(name, name)
    if full not in POLICY_NAMES and full != BUNDLED_POLICY:
        raise ValueError(
            f"unknown policy {name!r}; expected one of {', '.join((*POLICY_NAMES, BUNDLED_POLICY))} "
            f"(aliases: {', '.join(f'{k}={v}' for k, v in POLICY_ALIASES.items())})"
        )
    return full


def engine_policy(name: str) -> str:
    """The sender's policy (``itp send --policy``) that the run's policy ``name`` runs: ``itp`` for
    ``bundled``, else ``name`` itself."""
    return "itp" if name == BUNDLED_POLICY else name


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs (units in the names).

    Attributes:
        policies: the run's policy names (``resolve_policy``: engine names and ``bundled``), in table
            order.
        trace_files: the traces the paths follow.
        schedule: what the schedules are drawn from.
        repeats: independent schedules, >= 1.
        seed: base seed of the schedules.
        repeat_order: the schedules' repeat indices in the order they run (distinct, >= 0, as many as
            ``repeats``); None: 0, 1, ..., repeats - 1. A learning run's repeats are consecutive
            stretches of one deployment, so its curve mixes what the deployment has learned with
            which paths each repeat drew; running the same schedules in another order (e.g. reversed)
            tells the two apart. Each schedule keeps its own policy rotation.
        queue: bottleneck queue of every path.
        transport: congestion control and slow-start-after-idle inside the paths.
        step_s: rate controller period, seconds.
        window: tasks the sender keeps in flight (1: one task at a time, as the simulator models it).
        timeout_s: deadline of one policy's session, seconds; None: ``policy_timeout_s(schedule)``.
        keep_files: keep the run directory (reports, task files) instead of removing it.
        settle_s: pause between two policies' sessions (queues drain), seconds.
        learn: the ``itp`` policy learns across the run's repeats, as ``itp send --learn`` does: one
            :class:`itp.learning.session.LearningSession` folder (``learn_dir``, default ``learning`` in
            the run directory) that every repeat's ``itp`` session continues; the table by repeat
            (:func:`repeat_rows`) is then its learning curve on real TCP.
        learn_dir: the learning folder (kept after the run; None: inside the run directory).
        retrain_every: with ``learn``: stored outcomes between retrains (>= 1).
        learn_epsilon, learn_top_k: with ``learn``: exploration rate and exploration set.
        learn_guard_exploration: with ``learn``: exploration only among the splits the decision guard
            lets through (``LearningSession(guard_exploration=)``).
        learn_explore_max_bytes: with ``learn``: tasks larger than this many bytes are never explored
            (``LearningSession(explore_max_bytes=)``; None: no limit).
        learn_model_failures: with ``learn``: fit each stream's failure model from the chunks' retries
            and score splits with it (``LearningSession(model_failures=)``).
        wait_for_retrain_s: with ``learn``: after its tasks, an ``itp`` session lets a running retrain
            finish for at most this long (outside the timed tasks; the next policy waits), seconds.
    """

    policies: tuple[str, ...]
    trace_files: tuple[str, ...]
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    repeats: int = 3
    seed: int = 0
    repeat_order: tuple[int, ...] | None = None
    queue: QueueSpec = field(default_factory=lambda: QueueSpec(delay_s=0.05))
    transport: TransportSettings = field(default_factory=TransportSettings)
    step_s: float = 0.1
    window: int = 1
    timeout_s: float | None = None
    keep_files: bool = False
    settle_s: float = 1.0
    learn: bool = False
    learn_dir: str | None = None
    retrain_every: int = 300
    learn_epsilon: float = 0.1
    learn_top_k: int = 3
    learn_guard_exploration: bool = False
    learn_explore_max_bytes: int | None = None
    learn_model_failures: bool = False
    wait_for_retrain_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.policies:
            raise ValueError("RunConfig.policies is empty")
        for p in self.policies:
            if resolve_policy(p) != p:
                raise ValueError(f"RunConfig.policies must hold resolved policy names, got {p!r}")
        if len(set(self.policies)) != len(self.policies):
            raise ValueError(f"RunConfig.policies has duplicates: {self.policies}")
        if not self.trace_files:
            raise ValueError("RunConfig.trace_files is empty")
        for name, v, lo in (("repeats", self.repeats, 1), ("seed", self.seed, 0), ("window", self.window, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"RunConfig.{name} must be an int >= {lo}, got {v!r}")
        if self.repeat_order is not None:
            order = self.repeat_order
            if not isinstance(order, tuple) or not all(
                isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in order
            ):
                raise ValueError(
                    f"RunConfig.repeat_order must be a tuple of ints >= 0 or None, got {order!r}"
                )
            if len(set(order)) != len(order):
                raise ValueError(f"RunConfig.repeat_order has duplicates: {order}")
            if len(order) != self.repeats:
                raise ValueError(
                    f"RunConfig.repeat_order has {len(order)} repeats, RunConfig.repeats is {self.repeats}"
                )
        if not (math.isfinite(self.step_s) and 0.01 <= self.step_s <= 10.0):
            raise ValueError(f"RunConfig.step_s must be in [0.01, 10] s, got {self.step_s!r}")
        if self.timeout_s is not None and not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"RunConfig.timeout_s must be > 0 or None, got {self.timeout_s!r}")
        if not (math.isfinite(self.settle_s) and self.settle_s >= 0):
            raise ValueError(f"RunConfig.settle_s must be >= 0, got {self.settle_s!r}")
        if self.learn and "itp" not in self.policies:
            raise ValueError(f"RunConfig.learn needs the 'itp' policy, policies are {self.policies}")
        for name, v, lo, hi in (
            ("retrain_every", self.retrain_every, 1, None),
            ("learn_top_k", self.learn_top_k, 1, 15),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                raise ValueError(f"RunConfig.{name} must be an int in [{lo}, {hi or 'inf'}], got {v!r}")
        if not (isinstance(self.learn_epsilon, (int, float)) and 0.0 <= self.learn_epsilon <= 1.0):
            raise ValueError(f"RunConfig.learn_epsilon must be in [0, 1], got {self.learn_epsilon!r}")
        for name in ("learn_guard_exploration", "learn_model_failures"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"RunConfig.{name} must be a bool, got {type(getattr(self, name)).__name__}")
        x = self.learn_explore_max_bytes
        if x is not None and (isinstance(x, bool) or not isinstance(x, int) or not 1 <= x < 2**64 - 1):
            raise ValueError(
                f"RunConfig.learn_explore_max_bytes must be None or an int in 1..2**64 - 2, got {x!r}"
            )
        if not (math.isfinite(self.wait_for_retrain_s) and self.wait_for_retrain_s >= 0):
            raise ValueError(f"RunConfig.wait_for_retrain_s must be >= 0, got {self.wait_for_retrain_s!r}")

    @property
    def order(self) -> tuple[int, ...]:
        """The repeat indices in the order they run (``repeat_order``, or 0 .. repeats - 1)."""
        return self.repeat_order if self.repeat_order is not None else tuple(range(self.repeats))


def policy_timeout_s(schedule: RepeatSchedule) -> float:
    """Default session deadline: last arrival + 2x the time all bytes take on the slowest path + 30 s.

    Generous on purpose (round-robin and best-single can put a large task on a slow path); it bounds a
    run that a fault stalled, it does not rank policies.
    """
    slowest = min(p.mean_rate_bps for p in schedule.paths)
    last = max(t.start_s for t in schedule.tasks)
    return last + 2.0 * 8.0 * schedule.total_bytes / slowest + 30.0


@dataclass(frozen=True)
class TaskResult:
    """One task of one policy's session.

    Attributes:
        name, size_bytes, arrival_s: from the schedule.
        ok: delivered.
        seconds: completion time (dispatch to acknowledgement), or the lower bound for a missing task.
        goodput_bps: ``8 size / seconds`` when delivered, else 0.
        dispatched_s: dispatch time on the session's (= the rate controller's) clock, seconds.
        stream_bytes: bytes each stream carried (final attempts), one per path.
        action: the decision (0..14) or None.
        predicted_s: the engine's predicted completion time, seconds (NaN if none).
        arm: the canary arm that decided (``"current"``/``"candidate"``), None for baselines
            (``itp.transfer.TaskReport.arm``); model_version: the model that decided, or None.
        reward: the learner's reward for the task, or None where none was reported.
    """

    name: str
    size_bytes: int
    arrival_s: float
    ok: bool
    seconds: float
    goodput_bps: float
    dispatched_s: float
    stream_bytes: tuple[int, ...]
    action: int | None
    predicted_s: float
    arm: str | None = None
    model_version: str | None = None
    reward: float | None = None


@dataclass(frozen=True)
class PolicyRun:
    """One policy on one repeat: its tasks and session-level figures.

    Attributes:
        repeat, policy: which.
        tasks: in schedule order.
        aggregate_goodput_bps: delivered bits / (last acknowledgement - first dispatch).
        wall_s: the session's wall time, seconds.
        max_lateness_s: the rate controller's worst step lateness, seconds.
        timed_out: the session hit its deadline.
        learning: a learning ``itp`` session's summary at its end (``LearningSession.close``), else None.
    """

    repeat: int
    policy: str
    tasks: tuple[TaskResult, ...]
    aggregate_goodput_bps: float
    wall_s: float
    max_lateness_s: float
    timed_out: bool
    learning: dict[str, Any] | None = None

    def metrics(self) -> dict[str, float]:
        """``mean_time_s``, ``p95_time_s``, ``mean_goodput_bps``, ``aggregate_goodput_bps``, ``success``."""
        times = [t.seconds for t in self.tasks]
        return {
            "mean_time_s": float(np.mean(times)),
            "p95_time_s": percentile(times, 95.0),
            "mean_goodput_bps": float(np.mean([t.goodput_bps for t in self.tasks])),
            "aggregate_goodput_bps": self.aggregate_goodput_bps,
            "success": float(np.mean([t.ok for t in self.tasks])),
        }


METRICS: tuple[str, ...] = (
    "mean_time_s",
    "p95_time_s",
    "mean_goodput_bps",
    "aggregate_goodput_bps",
    "success",
)


@dataclass(frozen=True)
class PolicySummary:
    """A policy's metrics over repeats: one ``Estimate`` (mean, 95% half-width) per name in ``METRICS``."""

    policy: str
    estimates: dict[str, Estimate]


REFERENCE_POLICY = "heuristic"
"""The policy the paired ratios compare with."""


def summarise(runs: Sequence[PolicyRun], policies: Sequence[str]) -> list[PolicySummary]:
    """Per policy (in ``policies`` order), the mean and 95% interval of each metric over its repeats.

    When the heuristic ran too, two *paired* ratios are added (keys ``goodput_vs_heuristic`` and
    ``time_vs_heuristic``): per repeat, the policy's mean goodput (mean completion time) over the
    heuristic's on the same schedule, then the mean and t-interval of those ratios over repeats. Repeats
    differ far more from each other (path rates span 20x) than policies do within a repeat, so the paired
    ratio's interval is the one that says whether two policies differ. When ``bundled`` ran beside
    ``itp``, ``itp``'s row also gets the same two ratios over ``bundled`` (``goodput_vs_bundled``,
    ``time_vs_bundled``): in a learning run, what learning added.
    """
    by_key = {(r.repeat, r.policy): r.metrics() for r in runs}

    def paired(p: str, ref_policy: str, metric: str) -> Estimate | None:
        pairs = [
            (by_key[(r, p)][metric], by_key[(r, ref_policy)][metric])
            for (r, policy) in by_key
            if policy == p and (r, ref_policy) in by_key
        ]
        return mean_ci([a / b for a, b in pairs if b > 0]) if pairs else None

    out = []
    for p in policies:
        mine = [m for (_, policy), m in by_key.items() if policy == p]
        est = {m: mean_ci([x[m] for x in mine]) for m in METRICS}
        for ref_policy in (REFERENCE_POLICY, BUNDLED_POLICY) if p == "itp" else (REFERENCE_POLICY,):
            for metric, key in (("mean_goodput_bps", "goodput"), ("mean_time_s", "time")):
                e = paired(p, ref_policy, metric)
                if e is not None:
                    est[f"{key}_vs_{ref_policy}"] = e
        out.append(PolicySummary(p, est))
    return out


def runs_from_dict(data: dict[str, Any]) -> list[PolicyRun]:
    """The ``PolicyRun`` list of a run's JSON (``RunResult.to_dict``), to re-tabulate a saved run."""
    out = []
    for r in data["runs"]:
        tasks = tuple(
            TaskResult(
                str(t["name"]),
                int(t["size_bytes"]),
                float(t["arrival_s"]),
                bool(t["ok"]),
                float(t["seconds"]),
                float(t["goodput_bps"]),
                math.nan if t["dispatched_s"] is None else float(t["dispatched_s"]),
                tuple(int(b) for b in t["stream_bytes"]),
                t["action"],
                math.nan if t["predicted_s"] is None else float(t["predicted_s"]),
                t.get("arm"),
                t.get("model_version"),
                None if t.get("reward") is None else float(t["reward"]),
            )
            for t in r["tasks"]
        )
        out.append(
            PolicyRun(
                int(r["repeat"]),
                str(r["policy"]),
                tasks,
                float(r["aggregate_goodput_bps"]),
                float(r["wall_s"]),
                float(r["max_lateness_s"]),
                bool(r["timed_out"]),
                r.get("learning"),
            )
        )
    return out


def _fmt_s(t_s: float) -> str:
    if math.isnan(t_s):
        return "n/a"
    return f"{t_s * 1e3:.0f} ms" if t_s < 1.0 else f"{t_s:.2f} s"


def _fmt_est(e: Estimate, kind: str) -> str:
    def one(x: float) -> str:
        if math.isnan(x):
            return "n/a"
        if kind == "s":
            return _fmt_s(x)
        if kind == "bps":
            return f"{x / 1e6:.1f}"
        if kind == "x":
            return f"{x:.3f}"
        return f"{100 * x:.1f}%"

    hw = "" if math.isnan(e.half_width) else f" ± {one(e.half_width)}"
    return one(e.mean) + ("x" if kind == "x" else "") + hw


def table_rows(summaries: Sequence[PolicySummary]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the run table (goodputs in Mbit/s; ± is the 95% half-width over repeats); the
    two columns over ``bundled`` only when a summary has them (``summarise``)."""
    refs = [REFERENCE_POLICY]
    if any(f"goodput_vs_{BUNDLED_POLICY}" in s.estimates for s in summaries):
        refs.append(BUNDLED_POLICY)
    header = [
        "policy",
        "mean time",
        "p95 time",
        "mean goodput (Mbit/s)",
        "aggregate (Mbit/s)",
        "success",
    ]
    for ref in refs:
        header += [f"goodput / {ref} (paired)", f"mean time / {ref} (paired)"]
    keys = [f"{key}_vs_{ref}" for ref in refs for key in ("goodput", "time")]
    rows = []
    for s in summaries:
        e = s.estimates
        rel = [_fmt_est(e[k], "x") if k in e else "" for k in keys]
        rows.append(
            [
                s.policy,
                _fmt_est(e["mean_time_s"], "s"),
                _fmt_est(e["p95_time_s"], "s"),
                _fmt_est(e["mean_goodput_bps"], "bps"),
                _fmt_est(e["aggregate_goodput_bps"], "bps"),
                _fmt_est(e["success"], "frac"),
                *rel,
            ]
        )
    return header, rows


def run_order(runs: Sequence[PolicyRun]) -> list[int]:
    """The repeat indices of ``runs`` in the order they ran: ``runs`` is in run order (``run_testbed``
    and a run's JSON keep it), so each repeat's first appearance."""
    return list(dict.fromkeys(r.repeat for r in runs))


def repeat_rows(runs: Sequence[PolicyRun], policies: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the table by repeat: per repeat, each policy's mean per-task goodput (Mbit/s)
    and p95 completion time, ``itp``'s goodput and p95 over the best other policy's on the same schedule
    (the best by goodput, and separately the best p95; ``bundled`` is not one of those: it is ``itp``
    without learning), over ``bundled``'s when it ran, and, for a learning run, what served ``itp`` at the
    end of the repeat (version, outcomes stored, retrains, promotions / gate rejections / rollbacks).

    With ``RunConfig.learn`` the repeats are consecutive stretches of one deployment, so the rows are its
    learning curve on real TCP; without it each repeat is independent. Rows follow the order in which
    the repeats ran (``run_order``), which ``RunConfig.repeat_order`` may have changed.
    """
    by_key = {(r.repeat, r.policy): r for r in runs}
    repeats = run_order(runs)
    others = [p for p in policies if p not in ("itp", BUNDLED_POLICY)]
    control = "itp" in policies and BUNDLED_POLICY in policies
    header = ["repeat", *(f"{p} goodput / p95" for p in policies)]
    if "itp" in policies and others:
        header += ["itp goodput / best other", "itp p95 / best other"]
    if control:
        header += ["itp goodput / bundled", "itp p95 / bundled"]
    learning = any(r.learning for r in runs)
    if learning:
        header += ["serving", "outcomes stored", "its session: retrains (promoted / rejected / rolled back)"]
    rows = []
    for rep in repeats:
        row = [str(rep)]
        metrics: dict[str, dict[str, float]] = {}
        for p in policies:
            run = by_key.get((rep, p))
            if run is None:
                row.append("-")
                continue
            m = metrics[p] = run.metrics()
            row.append(f"{m['mean_goodput_bps'] / 1e6:.1f} / {_fmt_s(m['p95_time_s'])}")
        if "itp" in policies and others:
            mine = metrics.get("itp")
            theirs = [metrics[p] for p in others if p in metrics]
            if mine is None or not theirs:
                row += ["-", "-"]
            else:
                row += _ratio_cells(
                    mine, max(m["mean_goodput_bps"] for m in theirs), min(m["p95_time_s"] for m in theirs)
                )
        if control:
            mine, ref = metrics.get("itp"), metrics.get(BUNDLED_POLICY)
            row += (
                ["-", "-"]
                if mine is None or ref is None
                else _ratio_cells(mine, ref["mean_goodput_bps"], ref["p95_time_s"])
            )
        if learning:
            itp_run = by_key.get((rep, "itp"))
            info = itp_run.learning if itp_run is not None else None
            if info:
                row += [
                    str(info.get("registry_current_version")),
                    str(info.get("experience_count")),
                    f"{info.get('update_count')} ({info.get('promotions')} / {info.get('gate_rejections')} / "
                    f"{info.get('rollbacks')})",
                ]
            else:
                row += ["-", "-", "-"]
        rows.append(row)
    return header, rows


def _ratio_cells(mine: dict[str, float], goodput_bps: float, p95_s: float) -> list[str]:
    """``mine``'s mean goodput over ``goodput_bps`` and p95 time over ``p95_s``, 3 decimals ("n/a": 0)."""
    return [
        f"{mine['mean_goodput_bps'] / goodput_bps:.3f}" if goodput_bps > 0 else "n/a",
        f"{mine['p95_time_s'] / p95_s:.3f}" if p95_s > 0 else "n/a",
    ]


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool) -> str:
    """A plain-text (aligned) or markdown table."""
    if markdown:
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), *(fmt.format(*r) for r in rows)])


@dataclass(frozen=True)
class RunResult:
    """A finished run: its configuration, schedules, per-(repeat, policy) runs and wall time (seconds)."""

    config: RunConfig
    schedules: tuple[RepeatSchedule, ...]
    runs: tuple[PolicyRun, ...]
    wall_s: float
    series_duration_s: tuple[float, ...]

    def summaries(self) -> list[PolicySummary]:
        """``summarise`` of the runs."""
        return summarise(self.runs, self.config.policies)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: configuration, schedules, every task of every run, the summary table."""
        c = self.config
        return {
            "config": {
                "policies": list(c.policies),
                "trace_files": list(c.trace_files),
                "repeats": c.repeats,
                "seed": c.seed,
                "repeat_order": list(c.order),
                "schedule": c.schedule.__dict__,
                "queue": c.queue.describe(),
                "queue_packets": c.queue.packets,
                "queue_delay_s": c.queue.delay_s,
                "congestion_control": c.transport.congestion_control,
                "slow_start_after_idle": c.transport.slow_start_after_idle,
                "step_s": c.step_s,
                "window": c.window,
                "learn": c.learn,
                "retrain_every": c.retrain_every if c.learn else None,
                "learn_epsilon": c.learn_epsilon if c.learn else None,
                "learn_top_k": c.learn_top_k if c.learn else None,
                "learn_guard_exploration": c.learn_guard_exploration if c.learn else None,
                "learn_explore_max_bytes": c.learn_explore_max_bytes if c.learn else None,
                "learn_model_failures": c.learn_model_failures if c.learn else None,
            },
            "wall_s": self.wall_s,
            "series_duration_s": list(self.series_duration_s),
            "schedules": [s.to_dict() for s in self.schedules],
            "runs": [
                {
                    "repeat": r.repeat,
                    "policy": r.policy,
                    "aggregate_goodput_bps": r.aggregate_goodput_bps,
                    "wall_s": r.wall_s,
                    "max_lateness_s": r.max_lateness_s,
                    "timed_out": r.timed_out,
                    "learning": r.learning,
                    "metrics": r.metrics(),
                    "tasks": [
                        {
                            **t.__dict__,
                            "stream_bytes": list(t.stream_bytes),
                            "predicted_s": None if math.isnan(t.predicted_s) else t.predicted_s,
                        }
                        for t in r.tasks
                    ],
                }
                for r in self.runs
            ],
            "summary": [
                {"policy": s.policy, **{m: e.to_dict() for m, e in s.estimates.items()}}
                for s in self.summaries()
            ],
        }


# --------------------------------------------------------------------------------------------- clean-up
class _Live:
    """What is running now, closed by ``close_all`` (atexit, signals, the normal path)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes] | subprocess.Popen[str]] = []
        self.pathsets: list[PathSet] = []

    def close_all(self) -> None:
        while self.procs:
            kill_group(self.procs.pop(), grace_s=1.0)
        while self.pathsets:
            self.pathsets.pop().close()


_LIVE = _Live()
atexit.register(_LIVE.close_all)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While active (main thread only): SIGTERM raises KeyboardInterrupt, so every ``finally`` runs."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------------------------- the run
def _write_task_files(schedule: RepeatSchedule, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    block = np.random.default_rng([schedule.seed, schedule.repeat, 7]).bytes(_BLOCK_BYTES)
    for t in schedule.tasks:
        with (directory / t.name).open("wb") as f:
            left = t.size_bytes
            while left > 0:
                n = min(left, _BLOCK_BYTES)
                f.write(block[:n])
                left -= n


def _free_port(address: str) -> int:
    """A TCP port free on ``address`` now (the receiver binds it a moment later; the address is the run's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _listening(address: str, port: int) -> bool:
    """Whether a socket listens on ``address:port`` in this namespace (``/proc/net/tcp``, state 0A)."""
    want = f"{socket.htonl(int.from_bytes(socket.inet_aton(address), 'big')):08X}:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(ln.split()[1] == want and ln.split()[3] == "0A" for ln in lines if len(ln.split()) > 3)


def _start_receiver(
    workdir: Path, address: str, secret_file: Path, recv_dir: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """``itp receive`` on ``address`` (a free port), in its own session; waits until it listens."""
    port = _free_port(address)
    log = (workdir / "receiver.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "itp",
            "receive",
            "--listen",
            f"{address}:{port}",
            "--dir",
            str(recv_dir),
            "--secret-file",
            str(secret_file),
        ],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    _LIVE.procs.append(proc)
    deadline = time.monotonic() + 30.0
    while not _listening(address, port):
        if proc.poll() is not None:
            raise RuntimeError(f"itp receive exited ({proc.returncode}); see {workdir / 'receiver.log'}")
        if time.monotonic() > deadline:
            raise RuntimeError("itp receive did not listen within 30 s")
        time.sleep(0.05)
    return proc, port


def _flush_tcp_metrics(paths: PathSet) -> None:
    for p in paths.paths:
        subprocess.run(
            ["nsenter", f"--net={p.netns}", "ip", "tcp_metrics", "flush", "all"],
            capture_output=True,
            timeout=10,
            check=False,
        )


def _session(
    paths: PathSet,
    *,
    policy: str,
    schedule: RepeatSchedule,
    series: Sequence[RateSeries],
    workdir: Path,
    files_dir: Path,
    secret_file: Path,
    port: int,
    window: int,
    timeout_s: float,
    learn: dict[str, Any] | None = None,
) -> PolicyRun:
    """One policy's sender session over the running paths (module docstring, step 3); ``learn``: the
    engine's learning entry (``itp.testbed.engine``), for the ``itp`` policy of a learning run."""
    assert paths.controller is not None
    tag = f"r{schedule.repeat}-{policy}"
    report_path = workdir / f"report-{tag}.json"
    cfg = {
        "to": f"{paths.receiver_address}:{port}",
        "netns": paths.netns,
        "policy": engine_policy(policy),
        "secret_file": str(secret_file),
        "window": window,
        "timeout_s": timeout_s,
        "schedule": schedule.send_schedule(files_dir),
        "report": str(report_path),
    }
    if learn is not None:
        cfg["learn"] = learn
    cfg_path = workdir / f"send-{tag}.json"
    cfg_path.write_text(json.dumps(cfg))
    paths.controller.install(series)
    wall0 = time.monotonic()
    with (workdir / f"send-{tag}.log").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "itp.testbed.engine", "send", str(cfg_path)],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
    _LIVE.procs.append(proc)
    timed_out = False
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            proc.wait(timeout=10)
            raise RuntimeError(f"sender did not start ({proc.returncode}); see {workdir / f'send-{tag}.log'}")
        t0 = float(line.split()[1])
        paths.controller.start(t0)
        try:
            proc.wait(timeout=timeout_s + 30.0 + (float(learn["wait_for_retrain_s"]) if learn else 0.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            logger.warning("%s: sender did not exit by its deadline; killed", tag, extra={"event": "timeout"})
    finally:
        paths.controller.stop()
        kill_group(proc, grace_s=2.0)
        if proc in _LIVE.procs:
            _LIVE.procs.remove(proc)
        if proc.stdout is not None:
            proc.stdout.close()
    wall = time.monotonic() - wall0
    lateness = paths.controller.max_lateness_s
    if not report_path.exists():
        raise RuntimeError(f"{tag}: the sender wrote no report; see {workdir / f'send-{tag}.log'}")
    report = json.loads(report_path.read_text())
    by_name = {t["name"]: t for t in report["tasks"]}
    n = len(paths.paths)
    tasks = []
    for spec in schedule.tasks:
        t = by_name.get(spec.name)
        if t is None:
            tasks.append(
                TaskResult(
                    spec.name,
                    spec.size_bytes,
                    spec.start_s,
                    False,
                    max(timeout_s - spec.start_s, 0.0),
                    0.0,
                    math.nan,
                    (0,) * n,
                    None,
                    math.nan,
                )
            )
            continue
        carried = [0] * n
        for c in t["chunks"]:
            if c["ok"] and 0 <= c["stream_id"] < n:
                carried[c["stream_id"]] += int(c["size_bytes"])
        ok = bool(t["ok"])
        seconds = float(t["seconds"]) if ok else max(float(t["seconds"]), 0.0)
        tasks.append(
            TaskResult(
                spec.name,
                spec.size_bytes,
                spec.start_s,
                ok,
                seconds,
                8.0 * spec.size_bytes / seconds if ok and seconds > 0 else 0.0,
                float(t["dispatched_s"]),
                tuple(carried),
                t["action"],
                float(t["predicted_s"]) if t.get("predicted_s") is not None else math.nan,
                t.get("arm"),
                t.get("model_version"),
                None if t.get("reward") is None else float(t["reward"]),
            )
        )
    return PolicyRun(
        schedule.repeat,
        policy,
        tuple(tasks),
        float(report["totals"]["aggregate_goodput_bps"]),
        wall,
        lateness,
        timed_out,
        report.get("learning"),
    )


def repeat_series(schedule: RepeatSchedule, *, duration_s: float, step_s: float) -> list[RateSeries]:
    """Each path's rate series for a repeat (``itp.testbed.rates.scaled_rate_series``)."""
    return [
        scaled_rate_series(
            load_trace(p.trace_path),
            mean_rate_bps=p.mean_rate_bps,
            offset_s=p.trace_offset_s,
            duration_s=duration_s,
            step_s=step_s,
        )
        for p in schedule.paths
    ]


def learn_entry(config: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """The ``learn`` entry every ``itp`` session's sender child gets (None without ``config.learn``).

    The folder is absolute: the sender child runs in the run directory, which is removed at the end, so
    a ``learn_dir`` given relative to where ``itp testbed run`` was started must not be resolved there
    (the folder is kept after the run). Without ``learn_dir`` it is ``learning`` inside the run
    directory."""
    if not config.learn:
        return None
    folder = Path(config.learn_dir).absolute() if config.learn_dir else run_dir.absolute() / "learning"
    return {
        "folder": str(folder),
        "epsilon": config.learn_epsilon,
        "explore_top_k": config.learn_top_k,
        "guard_exploration": config.learn_guard_exploration,
        "explore_max_bytes": config.learn_explore_max_bytes,
        "model_failures": config.learn_model_failures,
        "retrain_every": config.retrain_every,
        "wait_for_retrain_s": config.wait_for_retrain_s,
        "seed": config.seed,
    }


def run_testbed(
    config: RunConfig,
    *,
    progress: Callable[[int, str | None], None] | None = None,
    workdir: Path | None = None,
) -> RunResult:
    """Run every policy on every repeat (module docstring). Needs root and ``itp testbed setup``.

    Args:
        config: the run.
        progress: called ``progress(1, note)`` after each policy session.
        workdir: parent of the run directory (default: the system temp folder).

    Raises:
        RuntimeError: a path, the receiver or a sender failed (the message says which and where its log
            is); everything started is torn down first.
        KeyboardInterrupt: Ctrl-C or SIGTERM, after tearing everything down.
    """
    started = time.monotonic()
    run_dir = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}run-", dir=workdir))
    run_tag = run_dir.name.removeprefix(f"{TEMP_PREFIX}run-")[:8]
    secret_file = run_dir / "secret"
    secret_file.write_text(secrets.token_hex(32) + "\n")
    os.chmod(secret_file, 0o600)
    learn = learn_entry(config, run_dir)
    schedules: list[RepeatSchedule] = []
    runs: list[PolicyRun] = []
    durations: list[float] = []
    logger.info("testbed run in %s", run_dir, extra={"event": "run_start"})
    try:
        with _sigterm_as_interrupt():
            for position, r in enumerate(config.order):
                schedule = make_schedule(config.schedule, config.trace_files, seed=config.seed, repeat=r)
                schedules.append(schedule)
                timeout_s = config.timeout_s if config.timeout_s is not None else policy_timeout_s(schedule)
                durations.append(timeout_s + 60.0)
                series = repeat_series(schedule, duration_s=timeout_s + 60.0, step_s=config.step_s)
                files_dir = run_dir / f"files-{r}"
                _write_task_files(schedule, files_dir)
                recv_dir = run_dir / "received"
                recv_dir.mkdir(exist_ok=True)
                configs = [PathConfig(p.one_way_delay_ms, p.loss_rate) for p in schedule.paths]
                paths = PathSet(
                    configs,
                    queue=config.queue,
                    transport=config.transport,
                    run_tag=run_tag,
                    workdir=str(run_dir),
                )
                _LIVE.pathsets.append(paths)
                with paths:
                    receiver, port = _start_receiver(run_dir, paths.receiver_address, secret_file, recv_dir)
                    k = r % len(config.policies)
                    for policy in (*config.policies[k:], *config.policies[:k]):
                        paths.check_alive()
                        _flush_tcp_metrics(paths)
                        run = _session(
                            paths,
                            policy=policy,
                            schedule=schedule,
                            series=series,
                            workdir=run_dir,
                            files_dir=files_dir,
                            secret_file=secret_file,
                            port=port,
                            window=config.window,
                            timeout_s=timeout_s,
                            learn=learn if policy == "itp" else None,
                        )
                        runs.append(run)
                        m = run.metrics()
                        logger.info(
                            "repeat %d %s: mean %.2f s, goodput %.1f Mbit/s, success %.0f%%",
                            r,
                            policy,
                            m["mean_time_s"],
                            m["mean_goodput_bps"] / 1e6,
                            100 * m["success"],
                            extra={"event": "session_done"},
                        )
                        for f in recv_dir.iterdir():
                            f.unlink()
                        if progress is not None:
                            progress(1, f"repeat {position + 1}/{config.repeats} (schedule {r}) {policy}")
                        time.sleep(config.settle_s)
                    kill_group(receiver, grace_s=2.0)
                    _LIVE.procs.remove(receiver)
                _LIVE.pathsets.remove(paths)
                if not config.keep_files:
                    shutil.rmtree(files_dir, ignore_errors=True)
    finally:
        _LIVE.close_all()
        if not config.keep_files:
            shutil.rmtree(run_dir, ignore_errors=True)
    return RunResult(config, tuple(schedules), tuple(runs), time.monotonic() - started, tuple(durations))


# --------------------------------------------------------------------------------------------- calibration
def cases_from_result(result: dict[str, Any]) -> list[tuple[int, CalibrationCase, float]]:
    """Calibration cases of a run's JSON (``RunResult.to_dict``): ``(repeat, case, engine_predicted_s)``.

    Each repeat's paths are rebuilt from its schedule (trace, offset, mean, RTT) with the run's step and
    series length, so a saved run can be calibrated again later (``itp testbed calibrate``).
    Only delivered tasks with a dispatch time are used.
    """
    step_s = float(result["config"]["step_s"])
    out: list[tuple[int, CalibrationCase, float]] = []
    for sched, duration in zip(result["schedules"], result["series_duration_s"], strict=True):
        models = tuple(
            PathModel(
                scaled_rate_series(
                    load_trace(p["trace"]),
                    mean_rate_bps=p["mean_rate_bps"],
                    offset_s=p["trace_offset_s"],
                    duration_s=duration,
                    step_s=step_s,
                ),
                rtt_s=p["rtt_s"],
            )
            for p in sched["paths"]
        )
        for run in result["runs"]:
            if run["repeat"] != sched["repeat"]:
                continue
            for t in run["tasks"]:
                if not t["ok"] or t["dispatched_s"] is None or not math.isfinite(t["dispatched_s"]):
                    continue
                case = CalibrationCase(
                    int(t["size_bytes"]),
                    max(float(t["dispatched_s"]), 0.0),
                    tuple(int(b) for b in t["stream_bytes"]),
                    float(t["seconds"]),
                    models,
                )
                pred = t.get("predicted_s")
                out.append((int(sched["repeat"]), case, math.nan if pred is None else float(pred)))
    return out


@dataclass(frozen=True)
class CalibrationReport:
    """Simulator vs testbed: errors of the defaults, the fit, the fitted errors (in-sample and held out)."""

    default_errors: list[ClassError]
    fit: FitResult
    fitted_errors: list[ClassError]
    heldout_errors: list[ClassError] | None
    engine_errors: list[ClassError] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""

        def errs(x: list[ClassError] | None) -> list[dict[str, Any]] | None:
            return None if x is None else [e.to_dict() for e in x]

        return {
            "default_params": SimTransport().to_dict(),
            "default_errors": errs(self.default_errors),
            "fitted_params": self.fit.params.to_dict(),
            "fit_loss": self.fit.loss,
            "default_loss": self.fit.default_loss,
            "fitted_errors": errs(self.fitted_errors),
            "heldout_errors": errs(self.heldout_errors),
            "engine_prediction_errors": errs(self.engine_errors),
        }

    def to_text(self) -> str:
        """The per-size-class tables (median and p90 of |relative error|, median signed error)."""
        from itp.testbed.calibrate import predict_seconds  # noqa: F401 (documentation link)

        def block(title: str, errs: list[ClassError]) -> list[str]:
            rows = [
                [
                    e.name,
                    str(e.n),
                    f"{100 * e.median_abs:.1f}%",
                    f"{100 * e.p90_abs:.1f}%",
                    f"{100 * e.median_signed:+.1f}%",
                ]
                for e in errs
                if e.n
            ]
            return [
                title,
                render_table(
                    ["size class", "tasks", "median |err|", "p90 |err|", "median err"], rows, markdown=False
                ),
                "",
            ]

        p = self.fit.params
        lines = block(
            "simulator defaults (fresh connection per chunk: set-up 1.5 RTT, slow start from 10 segments):",
            self.default_errors,
        )
        lines += block(
            f"fitted (set-up {p.setup_rtts:g} RTT, initial window {p.initial_window_bytes} B, slow start "
            f"{'on' if p.slow_start else 'off'}, efficiency {p.stream_efficiency:.2f}; mean |log err| "
            f"{self.fit.loss:.3f} vs {self.fit.default_loss:.3f} for the defaults), in-sample:",
            self.fitted_errors,
        )
        if self.heldout_errors is not None:
            lines += block("fitted on even repeats, errors on odd repeats (held out):", self.heldout_errors)
        if self.engine_errors is not None:
            lines += block(
                "the engine's own prediction (the partitioner's expected time):", self.engine_errors
            )
        return "\n".join(lines).rstrip()


def calibration_report(result: dict[str, Any]) -> CalibrationReport:
    """Calibrate the simulator against a run's JSON (``RunResult.to_dict``); see ``itp.testbed.calibrate``.

    Raises:
        ValueError: the run has no delivered task.
    """
    from itp.testbed.calibrate import predict_seconds

    triples = cases_from_result(result)
    if not triples:
        raise ValueError("the run has no delivered task to calibrate against")
    cases = [c for _, c, _ in triples]
    default = class_errors(cases, predict_seconds(cases, SimTransport()))
    fit = fit_transport(cases)
    fitted = class_errors(cases, predict_seconds(cases, fit.params))
    heldout = None
    train = [c for r, c, _ in triples if r % 2 == 0]
    test = [c for r, c, _ in triples if r % 2 == 1]
    if train and test:
        split_fit = fit_transport(train)
        heldout = class_errors(test, predict_seconds(test, split_fit.params))
    with_pred = [(c, p) for _, c, p in triples if math.isfinite(p) and p > 0]
    engine = class_errors([c for c, _ in with_pred], [p for _, p in with_pred]) if with_pred else None
    return CalibrationReport(default, fit, fitted, heldout, engine)
