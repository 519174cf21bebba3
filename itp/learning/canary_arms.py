"""A canary's two arms compared on what the transfer measured (goodput, time) beside the learner's reward.

Why: the canary (:class:`itp.learning.rollout.CanaryRollout`) promotes a candidate on the *reward* per
decision, and the reward is not goodput (it is goodput's log-ratio to the best single stream's predicted
rate, with latency, imbalance and resend terms: ``docs/reward.md``). A candidate promoted on the reward has
earned its place only if the transfer's own figures follow. A deployment that keeps, per task, the arm and
the model that decided it (``Decision.arm``, ``Decision.model_version``), the reward ``report_outcome``
returned and what it measured can compare the two arms on the same tasks by both measures
(:func:`compare_canaries`); ``itp testbed`` (:mod:`itp.testbed.canary`) and the adaptation benchmark
(:mod:`itp.sim.adapt`) do.

The comparison: for each candidate that decided tasks, its *span* runs from its first task's decision to
its last's; the current arm's tasks are those the current model decided inside that span. The canary
routes each decision to an arm by an independent draw, so inside the span the arms see the same network
and the same mix of tasks, and a difference of means estimates what the candidate changes. The share
routed to the candidate grows by stages, so the candidate's tasks lean toward the span's end; both
measures are pooled over the same tasks, so that lean cannot explain a disagreement between them.

Intervals (95%): the reward difference by Welch's t (Welch-Satterthwaite degrees of freedom); the goodput
ratio (candidate's mean over the current arm's) on the log scale by the delta method,
``var(log r) = s_c^2 / (n_c m_c^2) + s_u^2 / (n_u m_u^2)``, with the same quantile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from itp.testbed.stats import t_quantile_975

__all__ = ["ArmFigures", "ArmOutcome", "CanaryComparison", "canary_rows", "compare_canaries"]


@dataclass(frozen=True, slots=True)
class ArmOutcome:
    """One decided task, as a comparison of canary arms needs it.

    Attributes:
        decided_s: when it was decided (any clock that orders a session's decisions), seconds.
        arm: ``"current"`` or ``"candidate"`` (``Decision.arm``); None: no model arm (a baseline).
        model_version: the model that decided (``Decision.model_version``), or None.
        goodput_bps: ``8 size / completion time``, bit/s (0 for a failed task).
        seconds: completion time, seconds.
        reward: what ``report_outcome`` returned, or None where nothing was reported.
    """

    decided_s: float
    arm: str | None
    model_version: str | None
    goodput_bps: float
    seconds: float
    reward: float | None


@dataclass(frozen=True)
class ArmFigures:
    """One arm's tasks inside a canary's span.

    Attributes:
        tasks: how many (failed tasks included, with goodput 0).
        mean_goodput_bps: mean per-task goodput, bit/s.
        mean_time_s: mean completion time, seconds.
        mean_reward: mean reward of the tasks that have one (NaN if none has).
        rewarded: how many tasks have a reward.
    """

    tasks: int
    mean_goodput_bps: float
    mean_time_s: float
    mean_reward: float
    rewarded: int


@dataclass(frozen=True)
class CanaryComparison:
    """A candidate's arm against the current arm, inside the candidate's span in one session.

    Attributes:
        repeat: the session it ran in (a testbed repeat; 0 where there is one).
        candidate_version: the candidate model.
        current_versions: the models that decided the current arm's tasks in the span (None: heuristic).
        start_s, end_s: the span, decision times on the session's clock, seconds.
        current, candidate: each arm's figures.
        goodput_ratio: candidate's mean goodput over the current arm's (NaN where undefined);
            goodput_ratio_low / goodput_ratio_high: its 95% interval.
        reward_difference: candidate's mean reward minus the current arm's (NaN where undefined);
            reward_half_width: its 95% half-width.
    """

    repeat: int
    candidate_version: str
    current_versions: tuple[str | None, ...]
    start_s: float
    end_s: float
    current: ArmFigures
    candidate: ArmFigures
    goodput_ratio: float
    goodput_ratio_low: float
    goodput_ratio_high: float
    reward_difference: float
    reward_half_width: float

    def goodput_ratio_text(self) -> str:
        """``ratio [low, high]``, 3 decimals (``n/a`` where undefined)."""
        return (
            f"{_num(self.goodput_ratio, '.3f')} [{_num(self.goodput_ratio_low, '.3f')}, "
            f"{_num(self.goodput_ratio_high, '.3f')}]"
        )

    def reward_difference_text(self) -> str:
        """``difference ± half-width``, 3 decimals (``n/a`` where undefined)."""
        return f"{_num(self.reward_difference, '+.3f')} ± {_num(self.reward_half_width, '.3f')}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN as None)."""

        def clean(x: Any) -> Any:
            return None if isinstance(x, float) and math.isnan(x) else x

        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if isinstance(v, ArmFigures):
                out[k] = {a: clean(b) for a, b in v.__dict__.items()}
            elif isinstance(v, tuple):
                out[k] = list(v)
            else:
                out[k] = clean(v)
        return out


def compare_canaries(tasks: Sequence[ArmOutcome], *, session: int = 0) -> list[CanaryComparison]:
    """Every candidate that decided tasks of one session, in the order of its first decision.

    Tasks without a candidate arm (no canary ran, or they were recorded without arms) give none.
    """
    spans: dict[str, list[float]] = {}
    for t in tasks:
        if t.arm == "candidate" and t.model_version is not None and math.isfinite(t.decided_s):
            spans.setdefault(t.model_version, []).append(t.decided_s)
    out = []
    for version, times in sorted(spans.items(), key=lambda kv: min(kv[1])):
        start, end = min(times), max(times)
        inside = [t for t in tasks if start <= t.decided_s <= end]  # False for NaN
        cand = [t for t in inside if t.arm == "candidate" and t.model_version == version]
        cur = [t for t in inside if t.arm == "current"]
        current_versions = tuple(sorted({t.model_version for t in cur}, key=str))
        out.append(_compare(session, version, current_versions, start, end, cur, cand))
    return out


def _num(x: float, fmt: str) -> str:
    return "n/a" if math.isnan(x) else format(x, fmt)


def _figures(tasks: Sequence[ArmOutcome]) -> tuple[ArmFigures, np.ndarray, np.ndarray]:
    goodput = np.array([t.goodput_bps for t in tasks], dtype=np.float64)
    rewards = np.array([t.reward for t in tasks if t.reward is not None], dtype=np.float64)
    figures = ArmFigures(
        tasks=len(tasks),
        mean_goodput_bps=float(goodput.mean()) if len(goodput) else math.nan,
        mean_time_s=float(np.mean([t.seconds for t in tasks])) if tasks else math.nan,
        mean_reward=float(rewards.mean()) if len(rewards) else math.nan,
        rewarded=len(rewards),
    )
    return figures, goodput, rewards


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(standard error of mean(a) - mean(b), Welch-Satterthwaite degrees of freedom); NaN if undefined."""
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    va, vb = float(a.var(ddof=1)) / len(a), float(b.var(ddof=1)) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return 0.0, float(len(a) + len(b) - 2)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return se, df


def _quantile(df: float) -> float:
    return t_quantile_975(max(1, int(df))) if math.isfinite(df) else math.nan


def _compare(
    repeat: int, version: str, current_versions: tuple[str | None, ...], start: float, end: float,
    cur: Sequence[ArmOutcome], cand: Sequence[ArmOutcome],
) -> CanaryComparison:
    f_cur, g_cur, r_cur = _figures(cur)
    f_cand, g_cand, r_cand = _figures(cand)
    ratio = low = high = math.nan
    if len(g_cur) and len(g_cand) and f_cur.mean_goodput_bps > 0 and f_cand.mean_goodput_bps > 0:
        ratio = f_cand.mean_goodput_bps / f_cur.mean_goodput_bps
        se, df = _welch(g_cand / f_cand.mean_goodput_bps, g_cur / f_cur.mean_goodput_bps)
        if math.isfinite(se):
            q = _quantile(df) * se  # the delta method: se of log(ratio)
            low, high = ratio * math.exp(-q), ratio * math.exp(q)
    diff = half = math.nan
    if len(r_cur) and len(r_cand):
        diff = f_cand.mean_reward - f_cur.mean_reward
        se, df = _welch(r_cand, r_cur)
        half = _quantile(df) * se if math.isfinite(se) else math.nan
    return CanaryComparison(
        repeat, version, current_versions, start, end, f_cur, f_cand, ratio, low, high, diff, half
    )


def canary_rows(
    comparisons: Sequence[CanaryComparison], *, session: str = "session", span_unit: str = "s"
) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the canary table (goodput in Mbit/s; intervals 95%); ``session``: the first
    column's name (``"repeat"`` on the testbed); ``span_unit``: the unit of the decision times
    (``"outcomes"`` where they are outcome indices)."""
    header = [
        session,
        "candidate (current)",
        f"span ({span_unit})",
        "tasks current / candidate",
        "goodput current / candidate",
        "goodput candidate / current",
        "reward current / candidate",
        "reward candidate - current",
    ]

    num = _num
    rows = []
    for c in comparisons:
        current = ", ".join("heuristic" if v is None else v for v in c.current_versions) or "-"
        rows.append(
            [
                str(c.repeat),
                f"{c.candidate_version} ({current})",
                f"{c.start_s:.0f}-{c.end_s:.0f}",
                f"{c.current.tasks} / {c.candidate.tasks}",
                f"{num(c.current.mean_goodput_bps / 1e6, '.1f')} / "
                f"{num(c.candidate.mean_goodput_bps / 1e6, '.1f')}",
                c.goodput_ratio_text(),
                f"{num(c.current.mean_reward, '.3f')} / {num(c.candidate.mean_reward, '.3f')}",
                c.reward_difference_text(),
            ]
        )
    return header, rows
