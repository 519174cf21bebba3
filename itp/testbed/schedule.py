"""Testbed schedules: what every policy of one repeat replays (paths, task sizes, arrival gaps).

A testbed run compares policies on *identical* conditions. Everything that is random about a repeat is
drawn here, once, from ``numpy.random.SeedSequence([seed, repeat])``, before any byte moves, and is
then replayed for every policy:

* per path i (``PathSpec``): a trace file ``~ U(files)``, a start offset ``~ U[0, period)``, an
  operating mean rate ``m_i ~ LogU[rate_min_bps, rate_max_bps]`` (the trace's shape is kept and scaled
  to that mean, as the simulator does in trace mode), a round-trip propagation delay
  ``rtt_i ~ LogU[rtt_min_s, rtt_max_s]`` rounded to an even number of milliseconds (``mm-delay`` takes a
  whole one-way delay in ms, and RTT = 2 x one-way), and a random packet-loss probability
  ``p_i ~ U[0, loss_max]`` (0 when ``loss_max`` is 0);
* per task k (``TaskSpec``): a size ``~ LogU[size_min_bytes, size_max_bytes]`` (rounded, clipped) and an
  arrival time ``start_s = sum of gaps``, gaps ``~ Exp(mean_interarrival_s)``, the first gap 0.

Scaling. The simulator draws stream means from 50-1000 Mbit/s and task sizes from 64 KiB-4 GiB. A
2-core machine cannot emulate that (``docs/testbed.md``, "limits"), so the testbed scales rates and
sizes by the same factor k (defaults: rates 5-100 Mbit/s, k = 0.1): transfer durations ``size / rate``
stay those of the simulator and, with the RTTs unchanged, so does the ratio of a task to a path's
bandwidth-delay product ``rate x rtt`` -- the quantity that decides how much set-up and slow start
matter. The largest size is cut further (64 MiB instead of 410 MiB) so that one repeat of six policies
finishes in minutes; the cut is a parameter.

The per-path streams of a repeat are independent of the task draws (separate child seeds), so changing
``tasks`` does not change the paths, and vice versa.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from itp.sim.traces import load_trace

__all__ = [
    "SIZE_CLASS_EDGES_BYTES",
    "SIZE_CLASS_NAMES",
    "PathSpec",
    "RepeatSchedule",
    "ScheduleConfig",
    "TaskSpec",
    "make_schedule",
    "size_class",
]

SIZE_CLASS_EDGES_BYTES: tuple[int, ...] = (256 * 1024, 4 * 1024**2)
"""Upper edges of the size classes used in the calibration report (bytes)."""
SIZE_CLASS_NAMES: tuple[str, ...] = ("small (< 256 KiB)", "medium (256 KiB - 4 MiB)", "large (>= 4 MiB)")
"""Names of the size classes, one more than ``SIZE_CLASS_EDGES_BYTES``."""


def size_class(size_bytes: int) -> int:
    """Index into ``SIZE_CLASS_NAMES`` of a task size (bytes, >= 1)."""
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes < 1:
        raise ValueError(f"size_bytes must be an int >= 1, got {size_bytes!r}")
    for i, edge in enumerate(SIZE_CLASS_EDGES_BYTES):
        if size_bytes < edge:
            return i
    return len(SIZE_CLASS_EDGES_BYTES)


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"ScheduleConfig.{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"ScheduleConfig.{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass(frozen=True)
class ScheduleConfig:
    """What a schedule draws from (units in the names; see the module docstring for the scaling).

    Attributes:
        paths: number of emulated paths (streams), 1..4.
        tasks: tasks per repeat, >= 1.
        rate_min_bps, rate_max_bps: log-uniform range of each path's mean rate, bit/s.
        rtt_min_s, rtt_max_s: log-uniform range of each path's propagation RTT, seconds (>= 2 ms).
        size_min_bytes, size_max_bytes: log-uniform range of task sizes, bytes.
        mean_interarrival_s: mean gap between task arrivals, seconds (0: all tasks queued at start).
        loss_max: each path's random loss probability is uniform on [0, loss_max], in [0, 0.5].
    """

    paths: int = 4
    tasks: int = 12
    rate_min_bps: float = 5e6
    rate_max_bps: float = 100e6
    rtt_min_s: float = 0.01
    rtt_max_s: float = 0.15
    size_min_bytes: int = 16 * 1024
    size_max_bytes: int = 64 * 1024**2
    mean_interarrival_s: float = 2.0
    loss_max: float = 0.0

    def __post_init__(self) -> None:
        int_ranges: tuple[tuple[str, int, int], ...] = (
            ("paths", 1, 4),
            ("tasks", 1, 100_000),
            ("size_min_bytes", 1, 2**40),
            ("size_max_bytes", 1, 2**40),
        )
        for name, lo, hi in int_ranges:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"ScheduleConfig.{name} must be an int in {lo}..{hi}, got {v!r}")
        for name in ("rate_min_bps", "rate_max_bps", "rtt_min_s", "rtt_max_s"):
            _positive(name, getattr(self, name))
        _positive("mean_interarrival_s", self.mean_interarrival_s, allow_zero=True)
        _positive("loss_max", self.loss_max, allow_zero=True)
        if self.loss_max > 0.5:
            raise ValueError(f"ScheduleConfig.loss_max must be <= 0.5, got {self.loss_max!r}")
        if self.rtt_min_s < 0.002:
            raise ValueError(
                f"ScheduleConfig.rtt_min_s must be >= 0.002 s (1 ms each way), got {self.rtt_min_s!r}"
            )
        for lo_name, hi_name in (
            ("rate_min_bps", "rate_max_bps"),
            ("rtt_min_s", "rtt_max_s"),
            ("size_min_bytes", "size_max_bytes"),
        ):
            if getattr(self, lo_name) > getattr(self, hi_name):
                raise ValueError(
                    f"ScheduleConfig.{lo_name} ({getattr(self, lo_name)!r}) must be <= {hi_name} "
                    f"({getattr(self, hi_name)!r})"
                )


@dataclass(frozen=True)
class PathSpec:
    """One emulated path of a repeat.

    Attributes:
        index: stream index, 0-based.
        trace_path: the throughput trace whose shape the path's rate follows.
        trace_offset_s: where in the (looped) trace the run starts, seconds.
        mean_rate_bps: the trace is scaled to this mean rate, bit/s.
        rtt_s: propagation round-trip time, seconds (an even number of milliseconds).
        loss_rate: probability that ``mm-loss`` drops a sender-to-receiver packet, in [0, 0.5].
    """

    index: int
    trace_path: str
    trace_offset_s: float
    mean_rate_bps: float
    rtt_s: float
    loss_rate: float

    @property
    def one_way_delay_ms(self) -> int:
        """The ``mm-delay`` argument: one-way delay in whole milliseconds."""
        return round(self.rtt_s * 500.0)


@dataclass(frozen=True)
class TaskSpec:
    """One task of a repeat: ``name`` (a file name), ``size_bytes`` and arrival ``start_s`` (seconds)."""

    name: str
    size_bytes: int
    start_s: float


@dataclass(frozen=True)
class RepeatSchedule:
    """Everything random about one repeat; every policy replays it.

    Attributes:
        seed: the run's base seed.
        repeat: the repeat index, 0-based.
        paths: one ``PathSpec`` per path.
        tasks: the tasks in arrival order.
    """

    seed: int
    repeat: int
    paths: tuple[PathSpec, ...]
    tasks: tuple[TaskSpec, ...]

    @property
    def total_bytes(self) -> int:
        """Bytes of all tasks together."""
        return sum(t.size_bytes for t in self.tasks)

    def send_schedule(self, directory: str | Path) -> list[dict[str, Any]]:
        """The ``itp send --schedule`` list: ``{"path", "start_s", "name"}`` per task in ``directory``."""
        d = Path(directory)
        return [{"path": str(d / t.name), "start_s": t.start_s, "name": t.name} for t in self.tasks]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (written into the run's JSON report)."""
        return {
            "seed": self.seed,
            "repeat": self.repeat,
            "paths": [
                {
                    "index": p.index,
                    "trace": p.trace_path,
                    "trace_offset_s": p.trace_offset_s,
                    "mean_rate_bps": p.mean_rate_bps,
                    "rtt_s": p.rtt_s,
                    "loss_rate": p.loss_rate,
                }
                for p in self.paths
            ],
            "tasks": [{"name": t.name, "size_bytes": t.size_bytes, "start_s": t.start_s} for t in self.tasks],
        }


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    if lo == hi:
        return float(lo)
    return math.exp(float(rng.uniform(math.log(lo), math.log(hi))))


def make_schedule(
    config: ScheduleConfig, trace_files: Sequence[str | Path], *, seed: int, repeat: int
) -> RepeatSchedule:
    """Draw the schedule of repeat ``repeat`` of a run seeded ``seed`` (deterministic; see module docstring).

    Args:
        config: the ranges drawn from.
        trace_files: the traces paths may follow (e.g. the held-out split, ``select_trace_files``).
        seed: the run's seed, >= 0.
        repeat: the repeat index, >= 0.

    Returns:
        The ``RepeatSchedule``; equal arguments give equal schedules on every machine.

    Raises:
        ValueError: no trace files, a negative seed or repeat, or an unparsable trace file.
        FileNotFoundError: a trace file is missing.
    """
    for name, v in (("seed", seed), ("repeat", repeat)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    files = sorted(str(f) for f in trace_files)
    if not files:
        raise ValueError("trace_files is empty: a schedule needs at least one trace file")
    children = np.random.SeedSequence([seed, repeat]).spawn(config.paths + 1)
    paths: list[PathSpec] = []
    for i in range(config.paths):
        rng = np.random.default_rng(children[i])
        trace_path = files[int(rng.integers(len(files)))]
        period_s = load_trace(trace_path).period_s
        offset_s = float(rng.uniform(0.0, period_s))
        mean_rate = _log_uniform(rng, config.rate_min_bps, config.rate_max_bps)
        rtt_ms = 2 * max(1, round(_log_uniform(rng, config.rtt_min_s, config.rtt_max_s) * 500.0))
        loss = float(rng.uniform(0.0, config.loss_max)) if config.loss_max > 0 else 0.0
        paths.append(PathSpec(i, trace_path, offset_s, mean_rate, rtt_ms / 1000.0, loss))
    rng = np.random.default_rng(children[-1])
    lo, hi = math.log(config.size_min_bytes), math.log(config.size_max_bytes)
    sizes = [
        min(max(round(math.exp(x)), config.size_min_bytes), config.size_max_bytes)
        for x in rng.uniform(lo, hi, config.tasks)
    ]
    gaps = (
        rng.exponential(config.mean_interarrival_s, config.tasks)
        if config.mean_interarrival_s > 0
        else np.zeros(config.tasks)
    )
    gaps[0] = 0.0
    starts = np.cumsum(gaps)
    width = len(str(config.tasks - 1))
    tasks = tuple(
        TaskSpec(f"task-{k:0{width}d}", int(sizes[k]), round(float(starts[k]), 6))
        for k in range(config.tasks)
    )
    return RepeatSchedule(seed=seed, repeat=repeat, paths=tuple(paths), tasks=tasks)
