"""The adaptation benchmark: does itp learn a network whose physics differ from its training simulator?

What runs (``run_adaptation``; CLI ``itp evaluate --adapt NETWORK``):

* **Network**: a named preset of ``itp.sim.networks`` (``warm``, ``ss-restart``, ``lossy``, ``collapse``,
  or ``sim`` as the control), stream rates replaying the *held-out* evaluation traces (the split
  ``itp evaluate`` uses), never the training files.
* **Task stream**: episodes ``e = 0, 1, ...`` of ``tasks_per_episode`` tasks, episode e reset with
  ``episode_seed(seed, e)`` (``itp.sim.evaluate``), until K outcomes. Sizes, priorities, arrivals and rate
  schedules do not depend on the actions, so every policy below sees the same tasks on the same rates.
* **Adaptive policy** (``itp-adaptive``): a ``TaskPartitioner`` serving the bundled model
  (``itp.partitioner.default_model_path()``) with exploration ``epsilon`` and a real ``OnlineLearner``
  (registry and experience store in a temporary folder). Per task it is fed the sender's measurements
  (``update_stream``, ``set_queue_depth``), decides (``partition_task``), the simulator moves the bytes
  exactly as decided, and the outcome is reported (``report_outcome``; with per-chunk outcomes when the
  partitioner's ``report_outcome`` accepts ``chunks``, and ``calibrate_transport=True`` when its
  constructor accepts it). On networks of persistent streams it is also told each stream's start window
  (``update_stream(start_window_bits=)``, and with each chunk outcome), as a sender reads it from
  ``TCP_INFO``: the window the stream's last chunk ended with, or the restart window after an idle gap
  longer than the RTO (estimated as ``max(200 ms, 2 x smoothed RTT)``). The decision guard is on as in
  ``LearningSession`` (``guard_margin``, default 0.05); guarded exploration (``guard_exploration``:
  exploration draws only among the splits the guard lets through) is off unless asked for. Every
  ``retrain_every`` outcomes the learner's store is flushed and a retrain is requested; the task stream
  waits for its verdict (offline gate, then a canary on live traffic), so a run does not depend on how
  fast the machine trains. Exploration and canary traffic are part of the adaptive policy's numbers:
  that is the price of learning online.
* **References**, each on its own identical task stream: ``bundled`` (the same model, greedy, never
  retrained), ``rate-proportional``, ``heuristic``, and the 15 fixed stream subsets with production
  chunking; the **best fixed subset** is chosen *with hindsight* (highest mean per-task goodput over the
  whole run) and reported as such.

Per window of ``checkpoint`` outcomes (the last window may be shorter), per policy: mean per-task goodput
``mean_k(8 delivered_bytes_k / completion_time_k)`` (bit/s), mean and p95 completion time (seconds;
``numpy.percentile``, linear), success rate, the median prediction error
``median_k |completion_time_k / expected_time_k - 1|`` of the decision-time predictions (the adaptive
policy's are the partitioner's own, so a calibrating transport model shows here as a falling error);
plus the learner's events in that window (retrains, gate verdicts, canary stages, promotions,
rollbacks).

Summary (the figures the issue's targets are about), with ``best`` the strongest of rate-proportional,
the heuristic and the best fixed subset *in that window*:

* ``final_goodput_vs_best = goodput_adaptive / max_b goodput_b`` over the last window (target >= 1.05);
* ``final_p95_vs_best = p95_adaptive / min_b p95_b`` over the last window (target <= 1);
* ``worst_goodput_vs_heuristic_after_1000 = min over windows starting at >= 1000 outcomes of
  goodput_adaptive / goodput_heuristic`` (target >= 0.98; None when no window starts that late).

The same two ratios over every outcome from 1000 on (``late_goodput_vs_best``, ``late_p95_vs_best``;
``best`` the strongest baseline over that span; None for K <= 1000) read the run after its first 1000
outcomes with eight times the tasks of one window. Why: a window's p95 rests on its 25 slowest of 500
tasks, large ones (median 1.7 GiB for rate-proportional on ``warm``, seed 0, last window), about half of
which had a chunk fail and be resent whole; which policy draws those failures moves a window's p95 ratio
by +-10% between seeds.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from itp.actions import ACTION_STREAMS, NUM_ACTIONS
from itp.learning.canary_arms import ArmOutcome, CanaryComparison, compare_canaries
from itp.sim.env import PartitionEnv
from itp.sim.evaluate import episode_seed
from itp.sim.networks import NETWORK_NAMES, NETWORKS, network_config
from itp.sim.physics import SimConfig
from itp.sim.policy import Decision as SimDecision
from itp.sim.policy import Policy, decide

__all__ = [
    "ADAPTIVE",
    "BUNDLED",
    "SCHEMA",
    "AdaptConfig",
    "AdaptResult",
    "FixedSubsetPolicy",
    "PolicyWindow",
    "TaskRecord",
    "adaptation_trace_files",
    "run_adaptation",
]

logger = logging.getLogger(__name__)

#: JSON schema id of ``AdaptResult.to_dict``.
SCHEMA: Final = "itp.adapt/1"
#: Row names of the learning partitioner and of the same model served greedily without learning.
ADAPTIVE: Final = "itp-adaptive"
BUNDLED: Final = "bundled"
#: The references whose strongest value per window is "the best baseline".
BASELINES: Final = ("rate-proportional", "heuristic", "best-fixed")
#: Outcomes after which the "never worse than the heuristic" target applies.
REGRESSION_FROM_OUTCOMES: Final = 1000

ProgressFn = Callable[[str, int, int], None]


def adaptation_trace_files(
    directory: str | Path | None = None, split: str = "auto"
) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """The network's traces, the learner's own traces, and a description of the network's.

    The network replays ``select_trace_files(directory, split)`` (by default the held-out evaluation part
    of the shared corpus). The learner's simulator rollouts and gate use the *training* part of the same
    corpus when the network replays its held-out part, otherwise the same files (a folder without a
    split, e.g. the shipped traces).

    Raises:
        FileNotFoundError: ``directory`` is not a folder. ValueError: bad ``split`` or no trace file.
    """
    from itp.sim.traces import default_traces_dir, select_trace_files

    selection = select_trace_files(directory, split=split)  # type: ignore[arg-type]
    held_out = split == "eval" or (split == "auto" and directory is None and default_traces_dir() is not None)
    learner = select_trace_files(directory, split="train") if held_out else selection
    return (
        tuple(str(f) for f in selection.files),
        tuple(str(f) for f in learner.files),
        selection.description,
    )


def _fixed_name(action: int) -> str:
    return "fixed-" + "".join(str(i) for i in ACTION_STREAMS[action])


class FixedSubsetPolicy:
    """Always the same stream subset (one of the 15 actions), production chunking.

    Args:
        action: 0..14 (``itp.actions.ACTION_STREAMS``).

    Raises:
        ValueError: ``action`` out of range.
    """

    def __init__(self, action: int) -> None:
        if isinstance(action, bool) or not isinstance(action, int) or not 0 <= action < NUM_ACTIONS:
            raise ValueError(f"action must be an int in 0..{NUM_ACTIONS - 1}, got {action!r}")
        self.action = action
        self.name = _fixed_name(action)

    def select_action(self, raw_state: Any) -> int:
        """The fixed action, whatever the state."""
        del raw_state
        return self.action


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of one adaptation run (validated; units in the names).

    Attributes:
        network: preset name (``itp.sim.networks.NETWORK_NAMES``).
        outcomes: K, reported outcomes of the adaptive policy (and tasks of every reference), >= 1.
        checkpoint: outcomes per reported window, >= 1.
        seed: seed of the task stream, the exploration draws and the learner.
        epsilon: exploration rate of the adaptive partitioner, in [0, 1].
        explore_top_k: its exploration picks among the k best actions by Q, 1..15 (15: any action).
        retrain_every: outcomes between retrain requests, >= 1 (a retrain is skipped while a canary runs).
        finetune: ``itp.training.finetune.FinetuneJob`` overrides (kept small so a retrain takes seconds).
        gate_episodes: simulator episodes of the offline gate, >= 1.
        gate: other ``itp.learning.rollout.GateConfig`` fields (e.g. margins), by name.
        canary_shares, canary_min_outcomes, canary_max_outcomes: the canary's stages
            (``itp.learning.rollout.CanaryConfig``).
        retrain_timeout_s: longest wait for one retrain's verdict, seconds (then the run goes on).
        time_budget_s: wall-time budget of the adaptive part, seconds (None: unbounded). When it runs out
            the run stops early, every reference plays the same number of tasks, and the result says
            ``truncated``.
        tasks_per_episode: tasks per simulated episode.
        model_path: the starting model (None: the bundled ``default_model_path()``).
        trace_files: the network's rate traces (held-out files); empty: synthetic streams.
        learner_trace_files: traces of the learner's own simulator rollouts and gate (training files).
        guard_margin: the adaptive partitioner's decision guard (``TaskPartitioner(guard_margin=)``;
            default 0.05 as ``LearningSession``; None: off).
        calibration_interval: chunk observations between two refits of the adaptive partitioner's
            transport model (``TaskPartitioner(calibration_interval=)``'s default, 200), >= 1. The run
            refits on its own thread (``recalibrate``) so that every refit lands on the same outcome.
        guard_exploration: exploration draws only among the actions the guard lets through
            (``TaskPartitioner(guard_exploration=)``; default False as ``LearningSession``; no effect while
            the guard is off).
        explore_max_bytes: tasks larger than this many bytes are decided greedily, never explored
            (``TaskPartitioner(explore_max_bytes=)``; default None: no limit, as ``LearningSession``).
        model_failures: the adaptive partitioner fits each stream's failure model from the per-chunk
            retries and scores splits with it (``TaskPartitioner(model_failures=)``; default False, as
            ``LearningSession``).
    """

    network: str
    outcomes: int = 5000
    checkpoint: int = 500
    seed: int = 0
    epsilon: float = 0.05
    explore_top_k: int = 15
    retrain_every: int = 1000
    finetune: dict[str, Any] = field(
        default_factory=lambda: {"steps": 400, "sim_episodes": 4, "logged_rows": 10_000}
    )
    gate_episodes: int = 4
    gate: dict[str, Any] = field(default_factory=dict)
    canary_shares: tuple[float, ...] = (0.5, 1.0)
    canary_min_outcomes: int = 100
    canary_max_outcomes: int = 1000
    retrain_timeout_s: float = 600.0
    time_budget_s: float | None = None
    tasks_per_episode: int = 64
    model_path: str | None = None
    trace_files: tuple[str, ...] = ()
    learner_trace_files: tuple[str, ...] = ()
    guard_margin: float | None = 0.05
    guard_exploration: bool = False
    calibration_interval: int = 200
    explore_max_bytes: int | None = None
    model_failures: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.network, str) or self.network not in NETWORKS:
            raise ValueError(
                f"AdaptConfig.network must be one of {', '.join(NETWORK_NAMES)}, got {self.network!r}"
            )
        for name in ("outcomes", "checkpoint", "retrain_every", "gate_episodes", "tasks_per_episode",
                     "canary_min_outcomes", "canary_max_outcomes", "calibration_interval"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"AdaptConfig.{name} must be an int >= 1, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"AdaptConfig.seed must be an int >= 0, got {self.seed!r}")
        k = self.explore_top_k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= NUM_ACTIONS:
            raise ValueError(f"AdaptConfig.explore_top_k must be an int in 1..{NUM_ACTIONS}, got {k!r}")
        e = self.epsilon
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0.0 <= e <= 1.0:
            raise ValueError(f"AdaptConfig.epsilon must be in [0, 1], got {e!r}")
        t = self.retrain_timeout_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (t > 0 and math.isfinite(t)):
            raise ValueError(f"AdaptConfig.retrain_timeout_s must be a finite number > 0, got {t!r}")
        b = self.time_budget_s
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or not b > 0):
            raise ValueError(f"AdaptConfig.time_budget_s must be None or a number > 0, got {b!r}")
        if self.canary_min_outcomes < 2 or self.canary_max_outcomes < self.canary_min_outcomes:
            raise ValueError(
                "AdaptConfig needs 2 <= canary_min_outcomes <= canary_max_outcomes, got "
                f"{self.canary_min_outcomes}, {self.canary_max_outcomes}"
            )
        g = self.guard_margin
        if g is not None and (
            isinstance(g, bool) or not isinstance(g, (int, float)) or not (math.isfinite(g) and g >= 0)
        ):
            raise ValueError(f"AdaptConfig.guard_margin must be None or a finite number >= 0, got {g!r}")
        if not isinstance(self.guard_exploration, bool):
            raise TypeError(
                f"AdaptConfig.guard_exploration must be a bool, got {type(self.guard_exploration).__name__}"
            )
        x = self.explore_max_bytes
        if x is not None and (isinstance(x, bool) or not isinstance(x, int) or not 1 <= x < 2**64 - 1):
            raise ValueError(
                f"AdaptConfig.explore_max_bytes must be None or an int in 1..2**64 - 2, got {x!r}"
            )
        if not isinstance(self.model_failures, bool):
            raise TypeError(
                f"AdaptConfig.model_failures must be a bool, got {type(self.model_failures).__name__}"
            )
        for name in ("finetune", "gate"):
            v = getattr(self, name)
            if not isinstance(v, dict):
                raise TypeError(f"AdaptConfig.{name} must be a dict, got {type(v).__name__}")

    def sim_config(self) -> SimConfig:
        """The network's simulator configuration."""
        return network_config(self.network, SimConfig(tasks_per_episode=self.tasks_per_episode))


@dataclass(frozen=True)
class TaskRecord:
    """One task as a policy played it (seconds, bytes, bit/s).

    ``expected_time_s`` is the decision-time prediction: the partitioner's ``Decision.expected_time``
    for the adaptive policy (calibrated when the partitioner calibrates its transport model), the
    production split's prediction for the references. ``arm``, ``model_version`` and ``reward`` (the
    adaptive policy only): the canary arm and the model that decided (``Decision.arm``,
    ``Decision.model_version``) and what ``report_outcome`` returned, for :attr:`AdaptResult.canaries`.
    """

    size_bytes: int
    arrival_s: float
    completion_time_s: float
    goodput_bps: float
    success: bool
    expected_time_s: float = math.nan
    arm: str | None = None
    model_version: str | None = None
    reward: float | None = None


@dataclass(frozen=True)
class PolicyWindow:
    """One policy over one window of outcomes (seconds, bit/s)."""

    tasks: int
    mean_goodput_bps: float
    mean_completion_time_s: float
    p95_completion_time_s: float
    success_rate: float
    median_prediction_error: float | None = None


def _window(records: Sequence[TaskRecord]) -> PolicyWindow:
    t = np.asarray([r.completion_time_s for r in records])
    g = np.asarray([r.goodput_bps for r in records])
    errors = [
        abs(r.completion_time_s / r.expected_time_s - 1.0)
        for r in records
        if r.expected_time_s > 0.0 and math.isfinite(r.expected_time_s)
    ]
    return PolicyWindow(
        tasks=len(records),
        mean_goodput_bps=float(g.mean()),
        mean_completion_time_s=float(t.mean()),
        p95_completion_time_s=float(np.percentile(t, 95)),
        success_rate=float(np.mean([r.success for r in records])),
        median_prediction_error=float(np.median(errors)) if errors else None,
    )


def _vs_best(
    adaptive: PolicyWindow, baselines: Sequence[PolicyWindow]
) -> tuple[float | None, float | None]:
    """Goodput over the baselines' highest and p95 time over their lowest (None where that is 0)."""
    g = max(b.mean_goodput_bps for b in baselines)
    p = min(b.p95_completion_time_s for b in baselines)
    return (adaptive.mean_goodput_bps / g if g > 0 else None,
            adaptive.p95_completion_time_s / p if p > 0 else None)


@dataclass(frozen=True)
class AdaptResult:
    """Everything one run measured (``to_dict`` is the JSON; ``to_text`` the printed report).

    Attributes:
        config: the run's settings.
        outcomes: outcomes actually played (K, or fewer when ``truncated``).
        windows: ``(start, end)`` outcome indices of each window (end exclusive).
        per_policy: policy name -> one ``PolicyWindow`` per window.
        whole_run: policy name -> the ``PolicyWindow`` over the whole run.
        late_run: policy name -> the ``PolicyWindow`` over outcomes ``REGRESSION_FROM_OUTCOMES`` to the
            end (empty when the run is not longer than that).
        best_fixed: name of the fixed subset with the best whole-run mean goodput (hindsight).
        events: learner events, each with the ``outcome`` index at which it was seen.
        learner: the learner's final counters.
        per_chunk_outcomes, calibrate_transport: whether the partitioner supported them.
        truncated: the time budget ran out before K outcomes.
        wall_s: wall time of the whole run, seconds.
        tasks_identical: every policy played the same task sizes and arrival times (checked).
        records: policy name -> its tasks in order (not in the JSON: K rows per policy).
    """

    config: AdaptConfig
    outcomes: int
    windows: tuple[tuple[int, int], ...]
    per_policy: dict[str, tuple[PolicyWindow, ...]]
    whole_run: dict[str, PolicyWindow]
    best_fixed: str
    events: tuple[dict[str, Any], ...]
    learner: dict[str, Any]
    per_chunk_outcomes: bool
    calibrate_transport: bool
    truncated: bool
    wall_s: float
    tasks_identical: bool
    records: dict[str, tuple[TaskRecord, ...]] = field(default_factory=dict, repr=False)
    late_run: dict[str, PolicyWindow] = field(default_factory=dict)

    @property
    def shown_policies(self) -> tuple[str, ...]:
        """The rows printed and plotted: adaptive, bundled, rate-proportional, heuristic, best fixed."""
        return (ADAPTIVE, BUNDLED, "rate-proportional", "heuristic", "best-fixed")

    def _series(self, name: str) -> tuple[PolicyWindow, ...]:
        return self.per_policy[self.best_fixed if name == "best-fixed" else name]

    def summary(self) -> dict[str, float | None]:
        """The target figures (module docstring): last-window ratios and the worst late window."""
        last = len(self.windows) - 1
        ada = self.per_policy[ADAPTIVE]
        final_g, final_p95 = _vs_best(ada[last], [self._series(b)[last] for b in BASELINES])
        heur = self.per_policy["heuristic"]
        late = [
            ada[w].mean_goodput_bps / heur[w].mean_goodput_bps
            for w, (start, _) in enumerate(self.windows)
            if start >= REGRESSION_FROM_OUTCOMES and heur[w].mean_goodput_bps > 0
        ]
        bundled = self.per_policy[BUNDLED][last].mean_goodput_bps
        late_g, late_p95 = (
            _vs_best(
                self.late_run[ADAPTIVE],
                [self.late_run[self.best_fixed if b == "best-fixed" else b] for b in BASELINES],
            )
            if self.late_run else (None, None)
        )
        return {
            "final_goodput_vs_best": final_g,
            "final_p95_vs_best": final_p95,
            "worst_goodput_vs_heuristic_after_1000": min(late) if late else None,
            "final_goodput_vs_bundled": ada[last].mean_goodput_bps / bundled if bundled > 0 else None,
            "late_goodput_vs_best": late_g,
            "late_p95_vs_best": late_p95,
        }

    @property
    def canaries(self) -> list[CanaryComparison]:
        """Each canary of the adaptive policy: the candidate's tasks against the current model's inside
        the candidate's span, by goodput and by reward (:mod:`itp.learning.canary_arms`; the span's
        "times" are outcome indices). Empty without a canary, or when the records carry no arms."""
        records = self.records.get(ADAPTIVE, ())
        return compare_canaries([
            ArmOutcome(float(i), r.arm, r.model_version, r.goodput_bps, r.completion_time_s, r.reward,
                       r.size_bytes)
            for i, r in enumerate(records)
        ])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (schema ``SCHEMA``; seconds and bit/s)."""
        cfg = dataclasses.asdict(self.config)
        checkpoints = []
        for w, (start, end) in enumerate(self.windows):
            checkpoints.append(
                {
                    "start": start,
                    "outcomes": end,
                    "policies": {
                        n: dataclasses.asdict(self._series(n)[w]) for n in self.shown_policies
                    },
                    "fixed_subsets": {
                        n: dataclasses.asdict(v[w])
                        for n, v in self.per_policy.items()
                        if n.startswith("fixed-")
                    },
                    "events": [e for e in self.events if start < e["outcome"] <= end],
                }
            )
        return {
            "schema": SCHEMA,
            "network": self.config.network,
            "network_description": NETWORKS[self.config.network].description,
            "config": cfg,
            "outcomes": self.outcomes,
            "truncated": self.truncated,
            "wall_s": self.wall_s,
            "tasks_identical": self.tasks_identical,
            "per_chunk_outcomes": self.per_chunk_outcomes,
            "calibrate_transport": self.calibrate_transport,
            "best_fixed": {
                "name": self.best_fixed,
                "chosen": "with hindsight: highest mean per-task goodput over the whole run",
            },
            "whole_run": {n: dataclasses.asdict(v) for n, v in self.whole_run.items()},
            "late_run": {
                "start": REGRESSION_FROM_OUTCOMES if self.late_run else None,
                "policies": {n: dataclasses.asdict(v) for n, v in self.late_run.items()},
            },
            "checkpoints": checkpoints,
            "events": list(self.events),
            "learner": self.learner,
            "canaries": [c.to_dict() for c in self.canaries],
            "summary": self.summary(),
        }

    def to_json(self) -> str:
        """``to_dict`` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_text(self) -> str:
        """A plain-text report: one block per checkpoint, then the summary."""
        lines = [
            f"network {self.config.network}: {NETWORKS[self.config.network].description}",
            f"{self.outcomes} outcomes, checkpoint every {self.config.checkpoint}, seed {self.config.seed}, "
            f"epsilon {self.config.epsilon}; best fixed subset (chosen with hindsight over the whole run): "
            f"{self.best_fixed}" + ("; TRUNCATED by the time budget" if self.truncated else ""),
        ]
        for w, (start, end) in enumerate(self.windows):
            lines.append(f"outcomes {start}-{end}:")
            for n in self.shown_policies:
                v = self._series(n)[w]
                label = f"best-fixed ({self.best_fixed})" if n == "best-fixed" else n
                lines.append(
                    f"  {label:<24} goodput {v.mean_goodput_bps / 1e6:8.1f} Mbit/s  mean "
                    f"{v.mean_completion_time_s:7.3f} s  p95 {v.p95_completion_time_s:7.3f} s  "
                    f"success {100 * v.success_rate:5.1f}%  |time/predicted-1| median "
                    + ("n/a" if v.median_prediction_error is None else f"{v.median_prediction_error:.3f}")
                )
            for e in self.events:
                if start < e["outcome"] <= end:
                    detail = e.get("reason") or e.get("error") or e.get("trigger") or e.get("share") or ""
                    lines.append(f"  event @{e['outcome']}: {e['event']} {e.get('version', '')} {detail}")
        s = self.summary()

        def fmt(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"

        for c in self.canaries:
            lines.append(
                f"canary of {c.candidate_version} (outcomes {c.start_s:.0f}-{c.end_s:.0f}; "
                f"{c.current.tasks} current / {c.candidate.tasks} candidate tasks): goodput candidate / "
                f"current {c.goodput_ratio_text()}, reward candidate - current {c.reward_difference_text()}"
            )

        guarded = self.config.guard_margin is not None and self.config.guard_exploration
        exploration_note = ", exploration guarded" if guarded else ""
        if self.config.explore_max_bytes is not None:
            exploration_note += f", no exploration above {self.config.explore_max_bytes} bytes"
        if self.config.model_failures:
            exploration_note += ", failure models scored"

        lines.append(
            "summary: final-window goodput / best baseline "
            f"{fmt(s['final_goodput_vs_best'])} (target >= 1.05), p95 / best baseline "
            f"{fmt(s['final_p95_vs_best'])} (target <= 1), worst goodput / heuristic after "
            f"{REGRESSION_FROM_OUTCOMES} outcomes {fmt(s['worst_goodput_vs_heuristic_after_1000'])} "
            f"(target >= 0.98), final goodput / bundled model {fmt(s['final_goodput_vs_bundled'])}; "
            f"outcomes {REGRESSION_FROM_OUTCOMES}-{self.outcomes}: goodput / best baseline "
            f"{fmt(s['late_goodput_vs_best'])}, p95 / best baseline {fmt(s['late_p95_vs_best'])}"
        )
        lr = self.learner
        lines.append(
            f"learner: {lr.get('update_count', 0)} retrains, {lr.get('gate_rejections', 0)} gate rejections, "
            f"{lr.get('promotions', 0)} promotions, {lr.get('rollbacks', 0)} rollbacks; per-chunk outcomes "
            f"{'on' if self.per_chunk_outcomes else 'not supported'}, transport calibration "
            f"{'on' if self.calibrate_transport else 'not supported'}; decision guard "
            f"{'off' if self.config.guard_margin is None else f'{self.config.guard_margin:g}'} "
            f"({lr.get('guard_overrides', 0)} overrides"
            f"{exploration_note}); {self.wall_s:.0f} s"
        )
        return "\n".join(lines) + "\n"

    def plot(self, path: str | Path) -> None:
        """Write the goodput and p95 curves per checkpoint as a PNG (needs matplotlib).

        Raises:
            ImportError: matplotlib is not installed (the message says how to install it).
        """
        try:
            # A bare Figure (no pyplot): no global backend or figure state changes in the caller.
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError(
                "the adaptation plot needs matplotlib: pip install matplotlib"
            ) from exc
        x = [end for _, end in self.windows]
        fig = Figure(figsize=(11, 4))
        ax_g, ax_p = fig.subplots(1, 2)
        for n in self.shown_policies:
            label = f"best fixed, hindsight ({self.best_fixed})" if n == "best-fixed" else n
            series = self._series(n)
            style = "-o" if n == ADAPTIVE else "--"
            ax_g.plot(x, [v.mean_goodput_bps / 1e6 for v in series], style, label=label)
            ax_p.plot(x, [v.p95_completion_time_s for v in series], style, label=label)
        for e in self.events:
            if e["event"] in ("canary_promoted", "canary_rolled_back"):
                color = "green" if e["event"] == "canary_promoted" else "red"
                for ax in (ax_g, ax_p):
                    ax.axvline(e["outcome"], color=color, alpha=0.3)
        ax_g.set(xlabel="outcomes", ylabel="mean per-task goodput (Mbit/s)",
                 title=f"{self.config.network}: goodput per {self.config.checkpoint} outcomes")
        ax_p.set(xlabel="outcomes", ylabel="p95 completion time (s)", title="p95 completion time")
        ax_g.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(str(path), dpi=110)


# ------------------------------------------------------------------------------------------ playing
def _play_policy(
    policy: Policy, config: SimConfig, trace_files: Sequence[str], seed: int, n_tasks: int,
    progress: Callable[[int], None] | None = None,
) -> list[TaskRecord]:
    """``n_tasks`` tasks of the run's episode stream decided by ``policy`` (no learning)."""
    env = PartitionEnv(config, trace_files=list(trace_files))
    out: list[TaskRecord] = []
    reset_hook = getattr(policy, "reset", None)
    e = 0
    while len(out) < n_tasks:
        env.reset(seed=episode_seed(seed, e))
        if callable(reset_hook):
            reset_hook()
        e += 1
        for _ in range(min(config.tasks_per_episode, n_tasks - len(out))):
            size, arrival = env.task_size_bytes, env.task_arrival_s
            _, _, _, _, info = env.step_decision(decide(policy, env.raw_state))
            out.append(TaskRecord(size, arrival, float(info["completion_time_s"]),
                                  float(info["goodput_bps"]), bool(info["success"]),
                                  float(info["expected_time_s"])))
            if progress is not None:
                progress(len(out))
    return out


class _AdaptiveRun:
    """The learning partitioner on the episode stream (one use)."""

    def __init__(self, cfg: AdaptConfig, workdir: Path) -> None:
        from itp.learning.learner import LearnerConfig, OnlineLearner
        from itp.learning.rollout import CanaryConfig, GateConfig
        from itp.partitioner import TaskPartitioner, default_model_path

        self.cfg = cfg
        self._hour = 0.0
        model = cfg.model_path if cfg.model_path is not None else str(default_model_path())
        # Simulated seconds since the run started: the partitioner's monotonic clock (decision expiry, the
        # calibration's decay), so that nothing the adaptive policy computes depends on the wall clock.
        self._sim_s = 0.0
        kwargs: dict[str, Any] = {
            "epsilon": cfg.epsilon, "seed": cfg.seed, "clock": lambda: self._hour,
            "monotonic": lambda: self._sim_s,
        }
        if cfg.explore_top_k != NUM_ACTIONS:
            kwargs["explore_top_k"] = cfg.explore_top_k
        if cfg.explore_max_bytes is not None:
            kwargs["explore_max_bytes"] = cfg.explore_max_bytes
        if cfg.model_failures:
            kwargs["model_failures"] = True
        self.calibrate_transport = "calibrate_transport" in inspect.signature(TaskPartitioner).parameters
        if self.calibrate_transport:
            kwargs["calibrate_transport"] = True
        if cfg.guard_margin is not None:
            kwargs["guard_margin"] = cfg.guard_margin
            if "guard_exploration" in inspect.signature(TaskPartitioner).parameters:
                kwargs["guard_exploration"] = cfg.guard_exploration
        # Refits on this thread every CALIBRATION_INTERVAL chunk observations (recalibrate), not in the
        # background worker: each refit then lands on the same outcome in every run.
        self.sync_calibration = self.calibrate_transport and hasattr(TaskPartitioner, "recalibrate")
        if self.sync_calibration:
            kwargs["calibration_interval"] = 2**62
        self._chunks_since_fit = 0
        self.p = TaskPartitioner(model, **kwargs)
        if self.p.model is None:
            raise ValueError(f"the starting model {model} did not load (see the log)")
        self.chunk_cls: Any = None
        if "chunks" in inspect.signature(self.p.report_outcome).parameters:
            import itp.partitioner as part

            self.chunk_cls = getattr(part, "ChunkOutcome", None)
        lcfg = LearnerConfig(
            min_experiences=10**9,  # retrains are requested explicitly (deterministic schedule)
            update_interval_s=1e9,
            retrain_mode="thread",
            poll_interval_s=0.005,
            flush_interval_s=0.2,
            finetune=dict(cfg.finetune),
            gate=GateConfig(
                **{"episodes": cfg.gate_episodes, "seed": cfg.seed + 12345,
                   "trace_files": tuple(cfg.learner_trace_files), **cfg.gate}
            ),
            canary=CanaryConfig(
                shares=cfg.canary_shares, min_outcomes_per_stage=cfg.canary_min_outcomes,
                max_outcomes_per_stage=cfg.canary_max_outcomes,
            ),
            seed=cfg.seed,
        )
        self.learner = OnlineLearner(self.p, registry=workdir / "registry", config=lcfg)
        self._history_seen = len(self.learner.registry.history())
        self.events: list[dict[str, Any]] = []

    def _collect_events(self, outcome: int) -> None:
        history = self.learner.registry.history()
        for h in history[self._history_seen:]:
            e: dict[str, Any] = {"outcome": outcome, "event": h.get("event")}
            for k in ("version", "reason", "trigger", "share", "error"):
                if k in h:
                    e[k] = h[k]
            self.events.append(e)
        self._history_seen = len(history)

    def _retrain(self, outcome: int, deadline: float | None) -> None:
        """Flush, request a retrain, wait for its verdict (bounded). Skipped while a canary runs."""
        learner = self.learner
        if learner.canary is not None or learner.is_training:
            return
        if not learner.metrics()["retraining_available"]:
            return
        learner.flush()
        before = learner.update_count
        self.p.force_model_update()
        limit = time.monotonic() + self.cfg.retrain_timeout_s
        if deadline is not None:
            limit = min(limit, deadline)
        while learner.update_count == before and time.monotonic() < limit:
            time.sleep(0.02)
        if learner.update_count == before:
            logger.warning("adaptation: retrain at outcome %d still running after its time limit", outcome)
        self._collect_events(outcome)

    def play(
        self, config: SimConfig, n_tasks: int, out: list[TaskRecord],
        progress: Callable[[int], None] | None,
    ) -> bool:
        """Play up to ``n_tasks`` into ``out``; returns whether the time budget cut the run short."""
        from itp.partitioner import Task
        from itp.state import NUM_STREAMS

        cfg = self.cfg
        deadline = None if cfg.time_budget_s is None else time.monotonic() + cfg.time_budget_s
        env = PartitionEnv(config, trace_files=list(cfg.trace_files))
        e = 0
        while len(out) < n_tasks:
            env.reset(seed=episode_seed(cfg.seed, e))
            e += 1
            episode_start_s = self._sim_s
            for _ in range(min(config.tasks_per_episode, n_tasks - len(out))):
                if deadline is not None and time.monotonic() > deadline:
                    return True
                raw = env.raw_state
                windows = self._start_windows(env, raw)
                for i in range(NUM_STREAMS):
                    self.p.update_stream(
                        i, bandwidth_bps=float(raw[i]), latency_s=float(raw[4 + i]),
                        congestion=float(raw[8 + i]), success_rate=float(raw[12 + i]),
                        start_window_bits=windows[i],
                    )
                self.p.set_queue_depth(float(raw[16]))
                self._hour = float(raw[19])
                task = Task(id=f"t{len(out)}", size=env.task_size_bytes, priority=float(raw[18]))
                arrival = env.task_arrival_s
                t0 = env.time_s
                self._sim_s = episode_start_s + t0
                d = self.p.partition_task(task)
                _, _, _, _, info = env.step_decision(SimDecision(d.action, d.bytes_per_stream))
                # Reported at the decision's own time (a task longer than the decision TTL must not
                # expire before its outcome); the clock moves on to the next decision afterwards.
                reward = self._report(task.id, d, info, t0, env, windows)
                self._sim_s = max(self._sim_s, episode_start_s + env.time_s)
                out.append(TaskRecord(task.size, arrival, float(info["completion_time_s"]),
                                      float(info["goodput_bps"]), bool(info["success"]),
                                      float(d.expected_time), d.arm, d.model_version, reward))
                n = len(out)
                if progress is not None:
                    progress(n)
                self._step(n)
                if n % cfg.retrain_every == 0 and n < n_tasks:
                    self._retrain(n, deadline)
                elif n % cfg.checkpoint == 0:
                    self._collect_events(n)
        return False

    def _step(self, n: int) -> None:
        """After each report, on this thread: the canary's verdict and the transport refit, so that both
        land on the same outcome in every run (the learner thread would act a few outcomes later or
        sooner, depending on timing)."""
        step_canary = getattr(self.learner, "step_canary", None)
        if step_canary is not None:
            step_canary()
        elif self.learner.canary is not None and n % 20 == 0:
            time.sleep(0.01)  # an older learner: let its thread judge the canary close to its outcomes
        if self.sync_calibration and self._chunks_since_fit >= self.cfg.calibration_interval:
            self._chunks_since_fit = 0
            self.p.recalibrate()

    @staticmethod
    def _start_windows(env: PartitionEnv, raw: Any) -> list[float]:
        """Per stream, the window a chunk sent now starts from (bits; 0: unknown), as a sender of
        persistent streams computes it from ``TCP_INFO`` (``itp.transport.start_window_bits``: cwnd, idle
        time, RTO estimated as ``max(200 ms, 2 x smoothed RTT)``); all 0 for fresh connections."""
        from itp.transport import start_window_bits

        windows = env.stream_windows()
        if windows is None:
            return [0.0] * len(raw[4:8])
        return [
            start_window_bits(w, min(idle, 1e9), max(0.2, 2.0 * float(raw[4 + i]))) if w > 0.0 else 0.0
            for i, (w, idle) in enumerate(windows)
        ]

    def _report(
        self, task_id: str, d: Any, info: dict[str, Any], t0_s: float, env: PartitionEnv,
        start_windows: list[float],
    ) -> float:
        """Report the outcome; returns its reward."""
        kwargs: dict[str, Any] = {}
        if self.chunk_cls is not None:
            chunks = []
            last = env.last_outcome
            assert last is not None
            for i, r in enumerate(last.chunks):
                if r is not None:
                    # Seconds from the decision to the chunk's last byte, as its sender measures it.
                    chunks.append(self.chunk_cls(i, int(last.chunk_bytes[i]), r.finish_s - t0_s,
                                                 int(r.retransmissions), start_windows[i]))
            kwargs["chunks"] = chunks
            self._chunks_since_fit += len(chunks)
        reward = self.p.report_outcome(
            task_id, d, throughput_bps=float(info["goodput_bps"]),
            latency_s=float(info["completion_time_s"]), success=bool(info["success"]),
            retransmissions=int(info["retransmissions"]), **kwargs,
        )
        return float(reward)

    def close(self, outcome: int) -> dict[str, Any]:
        """Close the learner; returns its final counters."""
        self.learner.flush()
        self._collect_events(outcome)
        m = self.learner.metrics()
        self.learner.close()
        model = self.p.model
        failure_models_of = getattr(self.p, "failure_models", None)
        failures = failure_models_of() if callable(failure_models_of) else None
        return {
            "update_count": m["update_count"],
            "gate_rejections": m["gate_rejections"],
            "promotions": m["promotions"],
            "rollbacks": m["rollbacks"],
            "retraining_available": m["retraining_available"],
            "retraining_unavailable_reason": m["retraining_unavailable_reason"],
            "last_gate": m["last_gate"],
            "final_model_version": model.version if model is not None else None,
            "experience_count": m["experience_count"],
            "fitted_transport_params": m.get("fitted_transport_params"),
            "fitted_stream_efficiencies": m.get("fitted_stream_efficiencies"),
            "guard_overrides": self.p.get_metrics().guard_overrides,
            "failure_models": None if failures is None else failures.tolist(),
        }


def run_adaptation(config: AdaptConfig, *, progress: ProgressFn | None = None) -> AdaptResult:
    """Run the adaptation benchmark (module docstring) and return what it measured.

    Args:
        config: the run's settings.
        progress: optional callback ``(stage, done, total)``; stage is the policy being played.

    Returns:
        The ``AdaptResult``, reproducible for equal settings on one machine: the canary is stepped and
        the transport refitted on the task thread after each report, the partitioner's clock is the
        simulated time, and retrains are waited for (the fine-tune's float results may differ between
        machines and library versions).

    Raises:
        ValueError: the starting model does not load, or a bad trace file.
        RuntimeError: the policies did not play identical tasks (a bug; never expected).
    """
    t_start = time.monotonic()
    sim = config.sim_config()

    def stage(name: str, total: int) -> Callable[[int], None] | None:
        if progress is None:
            return None

        def cb(done: int) -> None:
            if done == total or done % 50 == 0:
                progress(name, done, total)

        return cb

    adaptive: list[TaskRecord] = []
    with tempfile.TemporaryDirectory(prefix="itp-adapt-") as tmp:
        run = _AdaptiveRun(config, Path(tmp))
        try:
            truncated = run.play(sim, config.outcomes, adaptive, stage(ADAPTIVE, config.outcomes))
        finally:
            learner_info = run.close(len(adaptive))
        events = tuple(run.events)
        per_chunk, calibrate = run.chunk_cls is not None, run.calibrate_transport
    n = len(adaptive)
    if n == 0:
        raise RuntimeError("the time budget ran out before the first outcome")

    from itp.agent import AgentPolicy
    from itp.heuristic import HeuristicPolicy
    from itp.model_loading import load_model
    from itp.partitioner import default_model_path
    from itp.sim.baselines import RateProportionalPolicy

    model_path = config.model_path if config.model_path is not None else str(default_model_path())
    refs: list[Policy] = [
        AgentPolicy(load_model(model_path), name=BUNDLED),
        RateProportionalPolicy(),
        HeuristicPolicy(),
        *(FixedSubsetPolicy(a) for a in range(NUM_ACTIONS)),
    ]
    records: dict[str, list[TaskRecord]] = {ADAPTIVE: adaptive}
    for pol in refs:
        records[pol.name] = _play_policy(pol, sim, config.trace_files, config.seed, n, stage(pol.name, n))
    identical = all(
        [(r.size_bytes, r.arrival_s) for r in recs] == [(r.size_bytes, r.arrival_s) for r in adaptive]
        for recs in records.values()
    )
    if not identical:
        raise RuntimeError("adaptation: the policies did not play identical tasks")
    windows = tuple((s, min(s + config.checkpoint, n)) for s in range(0, n, config.checkpoint))
    per_policy = {
        name: tuple(_window(recs[s:e]) for s, e in windows) for name, recs in records.items()
    }
    whole = {name: _window(recs) for name, recs in records.items()}
    late = (
        {name: _window(recs[REGRESSION_FROM_OUTCOMES:]) for name, recs in records.items()}
        if n > REGRESSION_FROM_OUTCOMES else {}
    )
    fixed = [FixedSubsetPolicy(a).name for a in range(NUM_ACTIONS)]
    best_fixed = max(fixed, key=lambda name: whole[name].mean_goodput_bps)
    return AdaptResult(
        config=config,
        outcomes=n,
        windows=windows,
        per_policy=per_policy,
        whole_run=whole,
        late_run=late,
        best_fixed=best_fixed,
        events=events,
        learner=learner_info,
        per_chunk_outcomes=per_chunk,
        calibrate_transport=calibrate,
        truncated=truncated,
        wall_s=time.monotonic() - t_start,
        tasks_identical=identical,
        records={name: tuple(recs) for name, recs in records.items()},
    )
