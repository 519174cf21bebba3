"""Schedules: deterministic, within the configured ranges, identical for every policy of a repeat."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itp.sim.traces import load_trace, shipped_traces_dir
from itp.testbed.schedule import (
    SIZE_CLASS_EDGES_BYTES,
    SIZE_CLASS_NAMES,
    ScheduleConfig,
    make_schedule,
    size_class,
)

TRACES = sorted(p for p in shipped_traces_dir().iterdir() if p.name.startswith("trace_"))


def test_same_seed_same_schedule_and_different_repeats_differ() -> None:
    cfg = ScheduleConfig(tasks=20)
    a = make_schedule(cfg, TRACES, seed=3, repeat=1)
    b = make_schedule(cfg, list(reversed(TRACES)), seed=3, repeat=1)  # order of the files does not matter
    assert a == b
    c = make_schedule(cfg, TRACES, seed=3, repeat=2)
    assert c.tasks != a.tasks and c.paths != a.paths


def test_paths_do_not_depend_on_the_task_count() -> None:
    a = make_schedule(ScheduleConfig(tasks=3), TRACES, seed=0, repeat=0)
    b = make_schedule(ScheduleConfig(tasks=30), TRACES, seed=0, repeat=0)
    assert a.paths == b.paths


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    repeat=st.integers(0, 50),
    tasks=st.integers(1, 40),
    loss_max=st.sampled_from([0.0, 0.01, 0.2]),
    gap=st.sampled_from([0.0, 0.5, 3.0]),
)
def test_draws_stay_in_range(seed: int, repeat: int, tasks: int, loss_max: float, gap: float) -> None:
    cfg = ScheduleConfig(paths=4, tasks=tasks, loss_max=loss_max, mean_interarrival_s=gap)
    s = make_schedule(cfg, TRACES, seed=seed, repeat=repeat)
    assert len(s.paths) == 4 and len(s.tasks) == tasks
    for p in s.paths:
        assert cfg.rate_min_bps <= p.mean_rate_bps <= cfg.rate_max_bps
        # Even whole milliseconds, within the range after rounding to 2 ms.
        assert round(p.rtt_s * 1000) % 2 == 0 and p.one_way_delay_ms * 2 == round(p.rtt_s * 1000)
        assert cfg.rtt_min_s - 0.002 <= p.rtt_s <= cfg.rtt_max_s + 0.002
        assert 0.0 <= p.loss_rate <= loss_max
        assert 0.0 <= p.trace_offset_s < load_trace(p.trace_path).period_s
        assert p.trace_path in {str(t) for t in TRACES}
    starts = [t.start_s for t in s.tasks]
    assert starts[0] == 0.0 and starts == sorted(starts)
    if gap == 0.0:
        assert all(x == 0.0 for x in starts)
    assert all(cfg.size_min_bytes <= t.size_bytes <= cfg.size_max_bytes for t in s.tasks)
    assert len({t.name for t in s.tasks}) == tasks


def test_sizes_are_log_uniform() -> None:
    # Over many tasks, log(size) is uniform on [log min, log max]: each of 4 equal log-bins gets ~1/4.
    cfg = ScheduleConfig(tasks=4000, size_min_bytes=1024, size_max_bytes=1024**3)
    s = make_schedule(cfg, TRACES, seed=11, repeat=0)
    x = np.log([t.size_bytes for t in s.tasks])
    counts, _ = np.histogram(x, bins=4, range=(math.log(1024), math.log(1024**3)))
    assert np.all(np.abs(counts / 4000 - 0.25) < 0.04)  # ~6 sd of a binomial(4000, 1/4) fraction


def test_send_schedule_lists_files_in_order(tmp_path: Path) -> None:
    s = make_schedule(ScheduleConfig(tasks=5), TRACES, seed=1, repeat=0)
    items = s.send_schedule(tmp_path)
    assert [i["name"] for i in items] == [t.name for t in s.tasks]
    assert [i["path"] for i in items] == [str(tmp_path / t.name) for t in s.tasks]
    assert [i["start_s"] for i in items] == [t.start_s for t in s.tasks]
    d = s.to_dict()
    assert d["seed"] == 1 and len(d["paths"]) == 4 and len(d["tasks"]) == 5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"paths": 0}, "paths"),
        ({"paths": 5}, "paths"),
        ({"tasks": 0}, "tasks"),
        ({"rate_min_bps": -1.0}, "rate_min_bps"),
        ({"rate_max_bps": math.nan}, "rate_max_bps"),
        ({"rate_min_bps": 2e8, "rate_max_bps": 1e8}, "rate_min_bps"),
        ({"rtt_min_s": 0.001}, "rtt_min_s"),
        ({"size_min_bytes": 0}, "size_min_bytes"),
        ({"size_max_bytes": 10, "size_min_bytes": 20}, "size_min_bytes"),
        ({"loss_max": 0.6}, "loss_max"),
        ({"mean_interarrival_s": -1.0}, "mean_interarrival_s"),
        ({"tasks": True}, "tasks"),
    ],
)
def test_bad_config_is_rejected_by_name(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ScheduleConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="trace_files"):
        make_schedule(ScheduleConfig(), [], seed=0, repeat=0)
    with pytest.raises(ValueError, match="seed"):
        make_schedule(ScheduleConfig(), TRACES, seed=-1, repeat=0)
    with pytest.raises(ValueError, match="repeat"):
        make_schedule(ScheduleConfig(), TRACES, seed=0, repeat=-2)
    with pytest.raises(FileNotFoundError):
        make_schedule(ScheduleConfig(), ["/nonexistent/trace"], seed=0, repeat=0)


def test_size_classes() -> None:
    assert len(SIZE_CLASS_NAMES) == len(SIZE_CLASS_EDGES_BYTES) + 1
    assert size_class(1) == 0
    assert size_class(SIZE_CLASS_EDGES_BYTES[0] - 1) == 0
    assert size_class(SIZE_CLASS_EDGES_BYTES[0]) == 1
    assert size_class(SIZE_CLASS_EDGES_BYTES[-1]) == len(SIZE_CLASS_EDGES_BYTES)
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="size_bytes"):
            size_class(bad)  # type: ignore[arg-type]
