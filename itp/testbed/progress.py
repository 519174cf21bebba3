"""What a learning deployment gained by its position in a run, apart from which paths each repeat drew.

In a learning run (``itp testbed run --learn``) the repeats are consecutive stretches of one deployment,
so the learning ``itp``'s goodput over its ``bundled`` control in repeat k mixes two things: what the
deployment had learned after k repeats, and how much calibration is worth on repeat k's paths (the paths
differ far more between repeats than the run-to-run noise). Within one run, or over runs that all draw
the schedules in the same order, the two are confounded. Runs of the *same* schedules (same seed and
ranges) in *different* orders (``--repeat-order``) separate them. Per run and schedule, with
``y = log(mean goodput of itp / mean goodput of bundled)`` on that schedule in that run::

    y[run, schedule] = a[schedule] + f(position of the schedule in the run) + e

with ``f`` either linear (``b * position``: the gain per repeat the deployment has run) or one level per
position (``f(0) = 0``), fitted by least squares; 95% intervals are Student's t on the residual degrees
of freedom. Where the positions and the schedules cannot be told apart (every run in the same order),
``f`` is reported as not identified instead of a number.

Units: positions count repeats (one repeat = the schedule's tasks); effects are natural logs of goodput
ratios, printed as ratios (``exp``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from itp.quantiles import t_quantile_975
from itp.testbed.runner import BUNDLED_POLICY, run_order, runs_from_dict

__all__ = [
    "Effect",
    "ProgressFit",
    "RunRatios",
    "check_same_schedules",
    "fit_progress",
    "progress_rows",
    "run_ratios",
]


@dataclass(frozen=True)
class RunRatios:
    """One learning run's per-schedule ratios.

    Attributes:
        name: how the run is named in tables (e.g. its file).
        ratios: schedule (repeat index) -> mean per-task goodput of ``itp`` over ``bundled``'s.
        positions: schedule -> its position in the run (0 = ran first).
    """

    name: str
    ratios: Mapping[int, float]
    positions: Mapping[int, int]


@dataclass(frozen=True)
class Effect:
    """A fitted effect on the log ratio with its 95% half-width: ``log`` is NaN where the design does not
    identify the effect, ``half_width`` NaN also where no residual degree of freedom is left."""

    log: float
    half_width: float

    @property
    def ratio(self) -> float:
        """``exp(log)``: the effect as a goodput factor."""
        return math.exp(self.log)

    @property
    def ratio_low(self) -> float:
        """Lower end of the 95% interval, as a factor."""
        return math.exp(self.log - self.half_width)

    @property
    def ratio_high(self) -> float:
        """Upper end of the 95% interval, as a factor."""
        return math.exp(self.log + self.half_width)

    def identified(self) -> bool:
        """The runs' orders separate this effect from the others (it may still lack an interval)."""
        return math.isfinite(self.log)


@dataclass(frozen=True)
class ProgressFit:
    """Both fits of the module docstring.

    Attributes:
        observations: (run, schedule) pairs fitted.
        slope: ``b``, the log-ratio gained per repeat run (linear model).
        slope_residual_sd: the linear model's residual standard deviation (log units).
        positions: position -> ``f(position)`` against position 0 (one level per position).
        level_residual_sd: that model's residual standard deviation.
        schedules: schedule -> ``a[schedule]`` of the linear model (the log ratio at position 0).
        df_slope, df_levels: residual degrees of freedom of the two models (0: no interval).
    """

    observations: int
    slope: Effect
    slope_residual_sd: float
    positions: dict[int, Effect]
    level_residual_sd: float
    schedules: dict[int, Effect]
    df_slope: int
    df_levels: int


def run_ratios(data: Mapping[str, Any], name: str) -> RunRatios:
    """The per-schedule ratios of a learning run's JSON (``RunResult.to_dict``).

    Raises:
        ValueError: naming ``name``: the run has no ``itp`` or no ``bundled`` policy, or a schedule lacks
            one of them or has a zero goodput.
    """
    policies = list(data["config"]["policies"])
    if "itp" not in policies or BUNDLED_POLICY not in policies:
        raise ValueError(f"{name}: needs the policies itp and {BUNDLED_POLICY}, has {policies}")
    runs = runs_from_dict(dict(data))
    goodput: dict[tuple[int, str], float] = {}
    for r in runs:
        goodput[(r.repeat, r.policy)] = r.metrics()["mean_goodput_bps"]
    order = run_order(runs)
    ratios: dict[int, float] = {}
    for rep in order:
        mine, ref = goodput.get((rep, "itp")), goodput.get((rep, BUNDLED_POLICY))
        if mine is None or ref is None:
            raise ValueError(f"{name}: repeat {rep} lacks the itp or the {BUNDLED_POLICY} session")
        if not (mine > 0 and ref > 0):
            raise ValueError(f"{name}: repeat {rep} has a zero mean goodput (itp {mine}, bundled {ref})")
        ratios[rep] = mine / ref
    return RunRatios(name, ratios, {rep: i for i, rep in enumerate(order)})


def check_same_schedules(runs: Sequence[Mapping[str, Any]], names: Sequence[str]) -> None:
    """ValueError naming the runs where one schedule index means different paths or tasks (another seed
    or other ranges): the schedule effect would then mix different networks."""
    seen: dict[int, tuple[str, Any]] = {}
    for data, name in zip(runs, names, strict=True):
        for s in data["schedules"]:
            rep = int(s["repeat"])
            body = (s["paths"], s["tasks"])
            if rep in seen and seen[rep][1] != body:
                raise ValueError(
                    f"schedule {rep} differs between {seen[rep][0]} and {name} (another seed or other "
                    "ranges): compare runs of the same schedules"
                )
            seen.setdefault(rep, (name, body))


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, int, np.ndarray]:
    """Least squares: coefficients, their standard errors (NaN for directions the design does not
    identify), residual sd, residual df, and which coefficients are identified."""
    n, p = x.shape
    pinv = np.linalg.pinv(x)  # the minimum-norm least-squares solution, whatever the design's rank
    coef = pinv @ y
    df = n - int(np.linalg.matrix_rank(x))
    resid = y - x @ coef
    sigma = math.sqrt(float(resid @ resid) / df) if df > 0 else math.nan
    # A coefficient is identified when its unit vector lies in the row space of x: the projector onto
    # that space, pinv @ x, leaves it unchanged.
    identified = np.all(np.isclose(pinv @ x, np.eye(p), atol=1e-8), axis=0)
    se = np.where(identified, sigma * np.sqrt(np.einsum("ij,ij->i", pinv, pinv)), math.nan)
    return coef, se, sigma, df, identified


def fit_progress(runs: Sequence[RunRatios]) -> ProgressFit:
    """Fit the module docstring's two models over every (run, schedule) of ``runs``.

    Raises:
        ValueError: no runs (too few runs or orders leave effects not identified, not an error).
    """
    obs = [(run, rep) for run in runs for rep in run.ratios]
    if not obs:
        raise ValueError("no runs to fit")
    schedules = sorted({rep for _, rep in obs})
    positions = sorted({run.positions[rep] for run, rep in obs})
    y = np.array([math.log(run.ratios[rep]) for run, rep in obs])
    col = {rep: i for i, rep in enumerate(schedules)}
    base = np.zeros((len(obs), len(schedules)))
    for i, (_, rep) in enumerate(obs):
        base[i, col[rep]] = 1.0
    pos = np.array([float(run.positions[rep]) for run, rep in obs])
    x_slope = np.column_stack([base, pos])
    coef, se, sd_slope, df_slope, ident = _fit(x_slope, y)

    def effect(c: float, s: float, ok: bool, df: int) -> Effect:
        if not ok:
            return Effect(math.nan, math.nan)
        return Effect(float(c), float(s) * t_quantile_975(df) if df > 0 and math.isfinite(s) else math.nan)

    slope = effect(coef[-1], se[-1], bool(ident[-1]), df_slope)
    sched = {rep: effect(coef[col[rep]], se[col[rep]], bool(ident[col[rep]]), df_slope) for rep in schedules}
    levels = positions[1:]
    lcol = {p: i for i, p in enumerate(levels)}
    dummies = np.zeros((len(obs), len(levels)))
    for i, (run, rep) in enumerate(obs):
        p = run.positions[rep]
        if p in lcol:
            dummies[i, lcol[p]] = 1.0
    coef2, se2, sd_levels, df_levels, ident2 = _fit(np.column_stack([base, dummies]), y)
    k = len(schedules)
    pos_effects = {positions[0]: Effect(0.0, 0.0)}
    for p in levels:
        j = k + lcol[p]
        pos_effects[p] = effect(coef2[j], se2[j], bool(ident2[j]), df_levels)
    return ProgressFit(
        len(obs), slope, sd_slope, pos_effects, sd_levels, sched, df_slope, df_levels
    )


def _cell(e: Effect) -> str:
    if not e.identified():
        return "not identified"
    if math.isnan(e.half_width):
        return f"{e.ratio:.3f}"
    return f"{e.ratio:.3f} [{e.ratio_low:.3f}, {e.ratio_high:.3f}]"


def progress_rows(runs: Sequence[RunRatios], fit: ProgressFit) -> tuple[list[list[str]], list[list[str]]]:
    """Two tables, each header first: per schedule, each run's ratio (its position in brackets) and the
    schedule's fitted ratio at position 0; per position, the fitted factor against position 0."""
    schedules = sorted(fit.schedules)
    by_schedule = [["schedule", *(r.name for r in runs), "fitted at position 0"]]
    for rep in schedules:
        cells = [
            f"{r.ratios[rep]:.3f} ({r.positions[rep]})" if rep in r.ratios else "-" for r in runs
        ]
        by_schedule.append([str(rep), *cells, _cell(fit.schedules[rep])])
    by_position = [["position", "factor against position 0"]]
    for p in sorted(fit.positions):
        by_position.append([str(p), "1 (reference)" if p == min(fit.positions) else _cell(fit.positions[p])])
    return by_schedule, by_position
