"""Network simulator, real-trace replay, baselines and evaluation for itp.

Importing this package registers the Gymnasium environment ``itp/Partition-v0``
(``itp.sim.env.PartitionEnv``). See ``docs/simulator.md``.
"""

from __future__ import annotations

import gymnasium as gym

from itp.sim.env import PartitionEnv, TaskOutcome, make_vector_env
from itp.sim.physics import SimConfig
from itp.sim.policy import Decision, OnnxPolicy, Policy, decide, default_split
from itp.sim.traces import (
    Trace,
    TraceSelection,
    default_traces_dir,
    discover_trace_files,
    load_trace,
    select_trace_files,
    shipped_traces_dir,
    split_trace_files,
)

ENV_ID = "itp/Partition-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="itp.sim.env:PartitionEnv")

__all__ = [
    "ENV_ID",
    "Decision",
    "OnnxPolicy",
    "PartitionEnv",
    "Policy",
    "SimConfig",
    "TaskOutcome",
    "Trace",
    "TraceSelection",
    "decide",
    "default_split",
    "default_traces_dir",
    "discover_trace_files",
    "load_trace",
    "make_vector_env",
    "select_trace_files",
    "shipped_traces_dir",
    "split_trace_files",
]
