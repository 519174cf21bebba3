"""Cost of the offline gate's verdicts: off-policy on held-back logs (DR, SNIPS) vs the simulator.

Run: ``pytest bench/bench_gate.py --benchmark-only``.

Also here (group ``finetune_anchor``): what the anchor penalty of fine-tuning keeps. One 200-step fine-tune
of a random deployed model on 2 000 logged rows whose reward does not depend on the action, with
``anchor_weight`` 0, 0.3 (the default) and 1; ``extra_info["agreement"]`` is the share of fresh states
whose greedy action did not change.

And (group ``finetune_support``): what the support penalty keeps. One 400-step fine-tune of a random
deployed model on 4 000 rows logged epsilon-greedy (0.1) among its 3 best actions, on a deployment where
every action earns 1 less than the model believes and its second-best 0.5 more than that
(``model_factory.write_level_shift_logs``), with ``support_weight`` 0 and 1 (the default);
``extra_info`` has ``inside`` (share of fresh states whose greedy action is among the deployed model's 3
best), ``second`` (share on the second-best action) and the off-policy gate's verdict on the held-back
30% (``passed``, ``difference``, ``lower``, ``unsupported_share``).

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


# ------------------------------------------------------------------------ fine-tuning with an anchor

#: Greedy-action agreement with the deployed model the anchor must keep / the plain fine-tune loses
#: (the same bounds as tests/learning/test_finetune.py).
KEPT, DRIFTED = 0.5, 0.2


@pytest.fixture(scope="module")
def uninformative(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """(base model, store, last id): 2 000 logged rows whose reward does not depend on the action."""
    from model_factory import write_model

    from itp.learning.store import ExperienceStore

    folder = tmp_path_factory.mktemp("anchor")
    base = write_model(folder / "base.onnx", seed=1, version="1.0.0")
    rng = np.random.default_rng(0)
    n = 2000
    batch = TransitionBatch(
        states=rng.random((n, 20), dtype=np.float32),
        actions=rng.integers(0, 15, n),
        rewards=rng.normal(0.5, 0.3, n).astype(np.float32),
        next_states=rng.random((n, 20), dtype=np.float32),
        dones=np.ones(n, dtype=np.float32),
    )
    with ExperienceStore(folder / "x.sqlite3") as store:
        store.append(batch)
        last = store.last_id
    return base, folder / "x.sqlite3", last


@pytest.mark.parametrize("anchor_weight", [0.0, 0.3, 1.0])
def test_finetune_anchor(
    benchmark: Any, uninformative: tuple[Path, Path, int], tmp_path: Path, anchor_weight: float
) -> None:
    """One 200-step fine-tune (lr 1e-3, no simulator) on uninformative logs; ``extra_info["agreement"]``
    is the share of 3 000 fresh states whose greedy action is still the deployed model's."""
    pytest.importorskip("torch")
    from itp.training.finetune import FinetuneJob, run_finetune

    base, store, last = uninformative
    job = FinetuneJob(
        output=str(tmp_path / "cand.onnx"), version="1.0.1", base_model=str(base), store=str(store),
        upto_id=last, steps=200, batch_size=64, lr=1e-3, gamma=0.0, sim_episodes=0,
        sim_tasks_per_episode=8, anchor_weight=anchor_weight, gate={"episodes": 1, "mode": "simulator"},
    )
    benchmark.group = "finetune_anchor"
    role = "itp" if anchor_weight else "anchor"
    benchmark.extra_info.update({"role": role, "anchor_weight": anchor_weight})
    result = benchmark.pedantic(run_finetune, args=(job,), rounds=1, iterations=1)
    probe = np.random.default_rng(1).random((3000, 20), dtype=np.float32)
    before = load_model(base).q_values_batch(probe).argmax(axis=1)
    after = load_model(result["output"]).q_values_batch(probe).argmax(axis=1)
    agreement = float(np.mean(after == before))
    benchmark.extra_info["agreement"] = agreement
    if anchor_weight == 0.0:
        assert agreement <= DRIFTED
    elif anchor_weight >= 1.0:
        assert agreement >= KEPT
    else:  # the default: keeps more than no anchor (measured 0.03), less than a strong one
        assert 0.1 <= agreement < KEPT


# ------------------------------------------------------------------ fine-tuning inside the exploration set


@pytest.fixture(scope="module")
def level_shift(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """(base model, store, last id): the level-shift logs of ``model_factory.write_level_shift_logs``."""
    from model_factory import write_level_shift_logs, write_model

    folder = tmp_path_factory.mktemp("support")
    base = write_model(folder / "base.onnx", seed=1, version="1.0.0")
    _, last = write_level_shift_logs(folder / "x.sqlite3", base)
    return base, folder / "x.sqlite3", last


@pytest.mark.parametrize("support_weight", [0.0, 1.0])
def test_finetune_support(
    benchmark: Any, level_shift: tuple[Path, Path, int], tmp_path: Path, support_weight: float
) -> None:
    """One 400-step fine-tune (lr 1e-4, no simulator) on the level-shift logs, gated off-policy."""
    pytest.importorskip("torch")
    from itp.training.finetune import FinetuneJob, run_finetune

    base, store, last = level_shift
    job = FinetuneJob(
        output=str(tmp_path / "cand.onnx"), version="1.0.1", base_model=str(base), store=str(store),
        upto_id=last, steps=400, batch_size=64, lr=1e-4, gamma=0.0, sim_episodes=0, holdout_fraction=0.3,
        support_weight=support_weight, gate={"episodes": 1, "target_epsilon": 0.1, "target_top_k": 3},
    )
    benchmark.group = "finetune_support"
    role = "itp" if support_weight else "anchor"
    benchmark.extra_info.update({"role": role, "support_weight": support_weight})
    result = benchmark.pedantic(run_finetune, args=(job,), rounds=1, iterations=1)
    probe = np.random.default_rng(1).random((3000, 20), dtype=np.float32)
    top3 = np.argsort(-load_model(base).q_values_batch(probe), axis=1, kind="stable")[:, :3]
    greedy = load_model(result["output"]).q_values_batch(probe).argmax(axis=1)
    gate = result["gate"]
    op = gate["offpolicy"] or {}
    benchmark.extra_info.update({
        "inside": float(np.mean((top3 == greedy[:, None]).any(axis=1))),
        "second": float(np.mean(greedy == top3[:, 1])),
        "passed": bool(gate["passed"]),
        "difference": op.get("difference"),
        "lower": op.get("lower"),
        "unsupported_share": op.get("unsupported_share"),
    })
    if support_weight:
        assert gate["passed"] and benchmark.extra_info["inside"] >= 0.9, gate["reason"]
    else:
        assert not gate["passed"] and benchmark.extra_info["inside"] <= 0.7, gate["reason"]
