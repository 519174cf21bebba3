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

Both measures are compared within task-size strata, as the canary's verdict does
(:mod:`itp.learning.strata`: per-task goodput and reward depend on the task's size far more than on the
model, and each arm's size mix differs by chance); where no stratum has 2 tasks on each arm, the pooled
means are compared. Intervals (95%): the reward difference by Welch's t (Welch-Satterthwaite degrees of
freedom); the goodput ratio (candidate's mean over the current arm's) on the log scale by the delta
method, with the same quantile. The arms' figures (:class:`ArmFigures`) are the plain, pooled means.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from itp.learning.strata import (
    DEFAULT_SIZE_STRATA_BYTES,
    Moments,
    StratifiedEstimate,
    check_size_strata,
    compare_arms,
    pooled_moments,
    size_stratum,
)
from itp.quantiles import t_quantile_975

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
        size_bytes: the task's size, bytes (its stratum).
    """

    decided_s: float
    arm: str | None
    model_version: str | None
    goodput_bps: float
    seconds: float
    reward: float | None
    size_bytes: int


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
        estimator: ``"stratified"`` (by task size) or ``"pooled"`` (the goodput ratio's; the reward's is
            the same unless rewards are missing).
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
    estimator: str = "stratified"

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


def compare_canaries(
    tasks: Sequence[ArmOutcome], *, session: int = 0,
    size_strata_bytes: Sequence[int] = DEFAULT_SIZE_STRATA_BYTES,
) -> list[CanaryComparison]:
    """Every candidate that decided tasks of one session, in the order of its first decision.

    ``size_strata_bytes``: upper bounds of the size strata, bytes (``()``: pooled means). Tasks without
    a candidate arm (no canary ran, or they were recorded without arms) give none.
    """
    bounds = check_size_strata(size_strata_bytes, "size_strata_bytes")
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
        out.append(_compare(session, version, current_versions, start, end, cur, cand, bounds))
    return out


def _num(x: float, fmt: str) -> str:
    return "n/a" if math.isnan(x) else format(x, fmt)


def _figures(tasks: Sequence[ArmOutcome]) -> ArmFigures:
    rewards = [t.reward for t in tasks if t.reward is not None]
    return ArmFigures(
        tasks=len(tasks),
        mean_goodput_bps=float(np.mean([t.goodput_bps for t in tasks])) if tasks else math.nan,
        mean_time_s=float(np.mean([t.seconds for t in tasks])) if tasks else math.nan,
        mean_reward=float(np.mean(rewards)) if rewards else math.nan,
        rewarded=len(rewards),
    )


def _moments(values: Sequence[float]) -> Moments:
    a = np.asarray(values, dtype=np.float64)
    return Moments(len(a), float(a.mean()) if len(a) else 0.0, float(a.var(ddof=1)) if len(a) > 1 else 0.0)


def _by_stratum(
    tasks: Sequence[ArmOutcome], bounds: tuple[int, ...], value: Callable[[ArmOutcome], float | None]
) -> list[Moments]:
    values: list[list[float]] = [[] for _ in range(len(bounds) + 1)]
    for t in tasks:
        v = value(t)
        if v is not None:
            values[size_stratum(t.size_bytes, bounds)].append(v)
    return [_moments(v) for v in values]


def _estimate(
    cand: Sequence[ArmOutcome], cur: Sequence[ArmOutcome], bounds: tuple[int, ...],
    value: Callable[[ArmOutcome], float | None], ratio: bool,
) -> tuple[StratifiedEstimate, str]:
    """Stratified where a stratum qualifies, else pooled (:func:`compare_arms`); (estimate, which)."""
    c, u = _by_stratum(cand, bounds, value), _by_stratum(cur, bounds, value)
    e, estimator = compare_arms(c, u, ratio=ratio)
    pc, pu = pooled_moments(c), pooled_moments(u)
    if math.isnan(e.value) and pc.n and pu.n:  # a point estimate from a single task, no interval
        if ratio:
            point = pc.mean / pu.mean if pc.mean > 0 and pu.mean > 0 else math.nan
        else:
            point = pc.mean - pu.mean
        e = StratifiedEstimate(point, math.nan, math.nan, pc.mean, pu.mean, 0, 0.0)
    return e, estimator


def _half_width(e: StratifiedEstimate) -> float:
    """95% half-width: Student's t at the Welch-Satterthwaite df (normal where df is infinite)."""
    if not math.isfinite(e.se) or math.isnan(e.df):
        return math.nan
    q = t_quantile_975(max(1, int(e.df))) if math.isfinite(e.df) else NormalDist().inv_cdf(0.975)
    return q * e.se


def _compare(
    repeat: int, version: str, current_versions: tuple[str | None, ...], start: float, end: float,
    cur: Sequence[ArmOutcome], cand: Sequence[ArmOutcome], bounds: tuple[int, ...],
) -> CanaryComparison:
    g, estimator = _estimate(cand, cur, bounds, lambda t: t.goodput_bps, ratio=True)
    ratio = g.value
    low = high = math.nan
    h = _half_width(g)
    if math.isfinite(ratio) and math.isfinite(h):
        low, high = ratio * math.exp(-h), ratio * math.exp(h)
    r, _ = _estimate(cand, cur, bounds, lambda t: t.reward, ratio=False)
    return CanaryComparison(
        repeat, version, current_versions, start, end, _figures(cur), _figures(cand), ratio, low, high,
        r.value, _half_width(r), estimator,
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
