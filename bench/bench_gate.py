"""Cost of the offline gate's verdicts: off-policy on held-back logs (DR, SNIPS) vs the simulator.

Run: ``pytest bench/bench_gate.py --benchmark-only``.

Data: 5 000 held-back decisions logged by an epsilon-greedy (0.5) behaviour policy around the current
model (a constant-action model, action 14), rewards from a known function of the action (action 3 best,
1.0; action 14, 0.6; others 0.1; noise sd 0.3), with the propensity of each executed action. The candidate
always takes action 3 (known better). Every benchmark asserts that the verdict passes it.

* ``offpolicy_dr``: the default gate (cross-fitted ridge reward model, paired delta-method interval);
* ``offpolicy_snips``: the same with SNIPS;
* ``simulator_20_episodes`` (anchor): the simulator gate as it ran before (20 episodes of 64 tasks per
  model, plus the held-back TD check), the cost the off-policy verdict replaces.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from model_factory import write_constant_model

from itp.learning.rollout import GateConfig, offline_gate
from itp.model_loading import LoadedModel, load_model
from itp.ring import TransitionBatch

ROWS = 5000
BEHAVIOUR_EPSILON = 0.5
MEAN_REWARD = np.full(15, 0.1)
MEAN_REWARD[3], MEAN_REWARD[14] = 1.0, 0.6


def logged(n: int, seed: int = 0) -> TransitionBatch:
    rng = np.random.default_rng(seed)
    explore = rng.random(n) < BEHAVIOUR_EPSILON
    actions = np.where(explore, rng.integers(0, 15, n), 14).astype(np.int64)
    mu = np.where(actions == 14, 1 - BEHAVIOUR_EPSILON + BEHAVIOUR_EPSILON / 15, BEHAVIOUR_EPSILON / 15)
    return TransitionBatch(
        states=rng.random((n, 20), dtype=np.float32),
        actions=actions,
        rewards=(MEAN_REWARD[actions] + rng.normal(0.0, 0.3, n)).astype(np.float32),
        next_states=rng.random((n, 20), dtype=np.float32),
        dones=np.zeros(n, dtype=np.float32),
        propensities=mu.astype(np.float32),
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, LoadedModel]:
    folder = tmp_path_factory.mktemp("gate")
    current = load_model(write_constant_model(folder / "cur.onnx", 14, version="1.0.0"))
    better = load_model(write_constant_model(folder / "better.onnx", 3, version="1.0.1"))
    return better, current


@pytest.fixture(scope="module")
def holdout() -> TransitionBatch:
    return logged(ROWS)


BASE = GateConfig(target_epsilon=0.05)


@pytest.mark.parametrize(
    ("name", "config", "role"),
    [
        ("offpolicy_dr", BASE, "itp"),
        ("offpolicy_snips", dataclasses.replace(BASE, estimator="snips"), "itp"),
        ("simulator_20_episodes", dataclasses.replace(BASE, mode="simulator", td_margin=1e9), "anchor"),
    ],
)
def test_gate_verdict(
    benchmark: Any,
    models: tuple[LoadedModel, LoadedModel],
    holdout: TransitionBatch,
    name: str,
    config: GateConfig,
    role: str,
) -> None:
    benchmark.group = "offline_gate"
    benchmark.extra_info.update({"role": role, "rows": ROWS, "verdict": name})
    better, current = models
    result = benchmark.pedantic(offline_gate, args=(better, current, holdout, config), rounds=3, iterations=1)
    if role == "itp":
        assert result.passed and result.offpolicy is not None, result.reason
        benchmark.extra_info["difference"] = result.offpolicy["difference"]
        benchmark.extra_info["lower"] = result.offpolicy["lower"]
        benchmark.extra_info["ess"] = result.offpolicy["candidate"]["effective_sample_size"]
    else:
        assert result.sim_reward_candidate is not None and result.offpolicy is None
