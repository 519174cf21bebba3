"""Helpers of the online-learning tests: a partitioner with set streams, tiny configurations, traffic."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from itp.learning import CanaryConfig, GateConfig, LearnerConfig
from itp.partitioner import Decision, Task, TaskPartitioner

STREAMS = [
    (800e6, 0.012, 0.1, 0.99),
    (400e6, 0.03, 0.2, 0.95),
    (100e6, 0.1, 0.0, 0.9),
    (900e6, 0.02, 0.5, 0.5),
]

#: Fine-tuning budget small enough for the suite (seconds, not minutes).
TINY_FINETUNE = {"steps": 20, "batch_size": 16, "sim_episodes": 1, "sim_tasks_per_episode": 8}


def make_partitioner(model: Path | None = None, **kw: object) -> TaskPartitioner:
    p = TaskPartitioner(model, clock=lambda: 12.0, **kw)  # type: ignore[arg-type]
    for i, (bw, lat, c, s) in enumerate(STREAMS):
        p.update_stream(i, bandwidth_bps=bw, latency_s=lat, congestion=c, success_rate=s)
    return p


def tiny_config(**kw: object) -> LearnerConfig:
    base: dict[str, object] = {
        "flush_interval_s": 0.05,
        "poll_interval_s": 0.01,
        "min_experiences": 10**9,
        "retrain_mode": "thread",
        "finetune": dict(TINY_FINETUNE),
        "gate": GateConfig(episodes=1),
        "canary": CanaryConfig(min_outcomes_per_stage=60, max_outcomes_per_stage=5000, margin=0.1),
        "replay_capacity": 1 << 14,
    }
    base.update(kw)
    return LearnerConfig(**base)  # type: ignore[arg-type]


def run_traffic(
    p: TaskPartitioner,
    n: int,
    prefix: str = "t",
    outcome: Callable[[Decision], dict[str, object]] | None = None,
) -> list[Decision]:
    """Decide and report ``n`` tasks; ``outcome(decision)`` gives the report's keyword arguments."""
    out = []
    for i in range(n):
        d = p.partition_task(Task(f"{prefix}{i}", 1_000_000 + 37_000 * i, 0.5))
        kw = outcome(d) if outcome else {"throughput_bps": 2e8, "latency_s": 0.05, "success": True}
        p.report_outcome(d.task_id, d, **kw)  # type: ignore[arg-type]
        out.append(d)
    return out
