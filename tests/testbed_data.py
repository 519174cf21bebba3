"""Test data for the testbed tests: the shipped traces and a run's JSON made by the simulator.

Lives beside ``reference.py`` (on ``sys.path`` through ``tests/conftest.py``) so that the runner and the
CLI tests share it.
"""

from __future__ import annotations

from typing import Any

from itp.sim.traces import shipped_traces_dir
from itp.testbed.calibrate import CalibrationCase, PathModel, TransportParams, predict_seconds
from itp.testbed.runner import PolicyRun, RunConfig, RunResult, TaskResult, repeat_series
from itp.testbed.schedule import ScheduleConfig, make_schedule

TRACES = tuple(sorted(str(p) for p in shipped_traces_dir().iterdir() if p.name.startswith("trace_")))


def fake_run_result(truth: TransportParams, repeats: int = 2) -> dict[str, Any]:
    """A run's JSON whose measured times are the simulator's under ``truth`` (no network involved)."""
    cfg = RunConfig(
        policies=("itp", "heuristic"),
        trace_files=TRACES,
        schedule=ScheduleConfig(paths=2, tasks=6, size_max_bytes=8 << 20),
        repeats=repeats,
    )
    schedules, runs, durations = [], [], []
    for r in range(repeats):
        s = make_schedule(cfg.schedule, TRACES, seed=0, repeat=r)
        schedules.append(s)
        durations.append(200.0)
        models = tuple(
            PathModel(series, p.rtt_s)
            for series, p in zip(repeat_series(s, duration_s=200.0, step_s=0.1), s.paths, strict=True)
        )
        for policy, share in (("itp", 0.5), ("heuristic", 1.0)):
            tasks = []
            for k, t in enumerate(s.tasks):
                first = round(t.size_bytes * share)
                chunks = (first, t.size_bytes - first)
                start = 10.0 * k
                measured = predict_seconds(
                    [CalibrationCase(t.size_bytes, start, chunks, 1.0, models)], truth
                )[0]
                tasks.append(
                    TaskResult(
                        t.name,
                        t.size_bytes,
                        t.start_s,
                        True,
                        measured,
                        8.0 * t.size_bytes / measured,
                        start,
                        chunks,
                        14,
                        measured * 1.1,
                    )
                )
            runs.append(PolicyRun(r, policy, tuple(tasks), 1e6, 1.0, 0.0, False))
    return RunResult(cfg, tuple(schedules), tuple(runs), 1.0, tuple(durations)).to_dict()
