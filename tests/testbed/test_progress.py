"""A learning run's gain per repeat, apart from its schedules: ratios from run JSONs, the fits, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from testbed_data import TRACES

from itp.cli import main
from itp.testbed.progress import (
    RunRatios,
    check_same_schedules,
    fit_progress,
    progress_rows,
    run_ratios,
)
from itp.testbed.runner import PolicyRun, RunConfig, RunResult, TaskResult
from itp.testbed.schedule import ScheduleConfig, make_schedule

SCHEDULE_EFFECT = {0: 0.10, 1: 0.25, 2: -0.05, 3: 0.20, 4: 0.05, 5: 0.15}  # log ratios at position 0


def _synthetic(
    slope: float, orders: list[list[int]], noise_sd: float, rng: np.random.Generator
) -> list[RunRatios]:
    runs = []
    for i, order in enumerate(orders):
        ratios = {
            rep: math.exp(SCHEDULE_EFFECT[rep] + slope * pos + noise_sd * rng.standard_normal())
            for pos, rep in enumerate(order)
        }
        runs.append(RunRatios(f"run{i}", ratios, {rep: pos for pos, rep in enumerate(order)}))
    return runs


FORWARD = [0, 1, 2, 3, 4, 5]
BACKWARD = FORWARD[::-1]


def test_known_schedule_effects_and_gain_per_repeat_are_recovered_exactly_without_noise() -> None:
    runs = _synthetic(0.03, [FORWARD, BACKWARD], 0.0, np.random.default_rng(0))
    fit = fit_progress(runs)
    assert fit.observations == 12 and fit.df_slope == 12 - 7
    assert fit.slope.log == pytest.approx(0.03) and fit.slope.ratio == pytest.approx(math.exp(0.03))
    assert fit.slope.half_width == pytest.approx(0.0, abs=1e-9)
    for rep, a in SCHEDULE_EFFECT.items():
        assert fit.schedules[rep].log == pytest.approx(a)
    # One level per position: forward and backward tie position p to 5 - p only, so only position 5
    # (against 0, through schedule 0 and schedule 5) is identified; the rest say so.
    assert fit.positions[0].log == 0.0
    assert fit.positions[5].log == pytest.approx(0.15)
    assert all(not fit.positions[p].identified() for p in (1, 2, 3, 4))
    # A third order, rotated by one, links every position to position 0 through the schedules; rotated
    # by three it links only 0, 2, 3 and 5 (1 and 4 meet only each other).
    levels = fit_progress(_synthetic(0.03, [FORWARD, BACKWARD, [1, 2, 3, 4, 5, 0]], 0.0,
                                     np.random.default_rng(0))).positions
    assert all(levels[p].log == pytest.approx(0.03 * p) for p in range(6))
    levels = fit_progress(_synthetic(0.03, [FORWARD, BACKWARD, [3, 4, 5, 0, 1, 2]], 0.0,
                                     np.random.default_rng(0))).positions
    assert [p for p in range(6) if levels[p].identified()] == [0, 2, 3, 5]


def test_runs_in_one_order_cannot_tell_the_gain_from_the_paths() -> None:
    runs = _synthetic(0.03, [FORWARD, FORWARD, FORWARD], 0.05, np.random.default_rng(1))
    fit = fit_progress(runs)
    assert not fit.slope.identified() and math.isnan(fit.slope.log)
    assert fit.schedules[0].identified()  # position 0 itself: its ratio there is measured
    assert not any(fit.schedules[r].identified() for r in range(1, 6))
    assert fit.slope_residual_sd > 0 and fit.df_slope == 18 - 6  # rank 6, not 7
    _by_schedule, by_position = progress_rows(runs, fit)
    assert by_position[1] == ["0", "1 (reference)"] and by_position[2][1] == "not identified"


def test_the_interval_of_the_gain_per_repeat_covers_the_truth_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    trials, covered = 600, 0
    for _ in range(trials):
        fit = fit_progress(_synthetic(0.02, [FORWARD, FORWARD, BACKWARD], 0.04, rng))
        covered += fit.slope.log - fit.slope.half_width <= 0.02 <= fit.slope.log + fit.slope.half_width
    # 95% nominal; 600 trials give a binomial sd of 0.9%.
    assert 0.92 <= covered / trials <= 0.98


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="no runs"):
        fit_progress([])
    one = fit_progress([RunRatios("one", {0: 1.1}, {0: 0})])  # nothing to separate, nothing to fail
    assert not one.slope.identified() and one.schedules[0].log == pytest.approx(math.log(1.1))
    assert one.df_slope == 0 and math.isnan(one.schedules[0].half_width)


def _run_json(order: list[int], goodputs: dict[tuple[int, str], float], seed: int = 0) -> dict:
    """A learning run's JSON: one 1 MB task per session at the given goodput (bit/s)."""
    policies = tuple(sorted({p for _, p in goodputs}, key=lambda p: (p != "itp", p)))
    cfg = RunConfig(policies=policies, trace_files=TRACES, schedule=ScheduleConfig(paths=2, tasks=1),
                    repeats=len(order), seed=seed, repeat_order=tuple(order))
    schedules, runs = [], []
    for rep in order:
        schedules.append(make_schedule(cfg.schedule, TRACES, seed=seed, repeat=rep))
        for policy in policies:
            g = goodputs[(rep, policy)]
            task = TaskResult("task-000", 1_000_000, 0.0, True, 8e6 / g, g, 0.0, (1_000_000, 0), 14, 0.1)
            runs.append(PolicyRun(rep, policy, (task,), g, 1.0, 0.0, False))
    result = RunResult(cfg, tuple(schedules), tuple(runs), 1.0, (1.0,) * len(order))
    return dict(json.loads(json.dumps(result.to_dict())))


def test_ratios_and_positions_come_from_the_run_json() -> None:
    data = _run_json([2, 0, 1], {(0, "itp"): 2e7, (0, "bundled"): 1e7, (1, "itp"): 3e7, (1, "bundled"): 2e7,
                                 (2, "itp"): 1e7, (2, "bundled"): 1e7})
    r = run_ratios(data, "rev")
    assert r.ratios == pytest.approx({0: 2.0, 1: 1.5, 2: 1.0}) and r.positions == {2: 0, 0: 1, 1: 2}
    no_control = _run_json([0], {(0, "itp"): 1e7, (0, "heuristic"): 1e7})
    with pytest.raises(ValueError, match="needs the policies itp and bundled"):
        run_ratios(no_control, "plain")
    zero = _run_json([0], {(0, "itp"): 1e7, (0, "bundled"): 1e7})
    zero["runs"][1]["tasks"][0].update(ok=False, goodput_bps=0.0)
    with pytest.raises(ValueError, match="zero mean goodput"):
        run_ratios(zero, "z")
    with pytest.raises(ValueError, match="differs between a and b"):
        check_same_schedules([_run_json([0], {(0, "itp"): 1.0, (0, "bundled"): 1.0}, seed=0),
                              _run_json([0], {(0, "itp"): 1.0, (0, "bundled"): 1.0}, seed=1)], ["a", "b"])


def test_cli_prints_the_gain_per_repeat_and_refuses_incomparable_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(3)
    files = []
    for name, order in (("fwd", [0, 1, 2]), ("rev", [2, 1, 0])):
        goodputs = {}
        for pos, rep in enumerate(order):
            goodputs[(rep, "bundled")] = 1e7
            goodputs[(rep, "itp")] = 1e7 * math.exp(0.1 * rep + 0.05 * pos + 0.01 * rng.standard_normal())
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(_run_json(order, goodputs)))
        files.append(str(path))
    assert main(["testbed", "progress", *files]) == 0
    out = capsys.readouterr().out
    assert "fwd.json" in out and "rev.json" in out
    per_repeat = float(out.split("per repeat run (linear): ")[1].split("x")[0])
    assert per_repeat == pytest.approx(math.exp(0.05), abs=0.01)  # noise sd 0.01 over 6 observations
    assert main(["testbed", "progress", files[0]]) == 0
    assert "not identified" in capsys.readouterr().out
    assert main(["testbed", "progress", str(tmp_path / "missing.json")]) == 1
    assert "run file not found" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_run_json([0], {(0, "itp"): 1.0, (0, "bundled"): 1.0}, seed=5)))
    assert main(["testbed", "progress", files[0], str(other)]) == 1
    assert "schedule 0 differs" in capsys.readouterr().err
