"""Fine-tuning: the deployed ONNX rebuilds exactly into a trainable QNetwork; a job trains, exports, gates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_factory import build_onnx, random_layers, save_with_metadata, write_level_shift_logs, write_model

torch = pytest.importorskip("torch")

from itp.model_loading import load_model  # noqa: E402
from itp.training.finetune import FinetuneJob, network_from_onnx, run_finetune  # noqa: E402
from itp.transport import TransportParams  # noqa: E402


def test_rebuilt_network_computes_the_deployed_function(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.onnx", seed=7)
    net = network_from_onnx(path)
    x = np.random.default_rng(0).random((300, 20), dtype=np.float32)
    with torch.no_grad():
        q = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(q, load_model(path).q_values_batch(x), atol=1e-5)
    net.train()  # BatchNorm and Dropout stay identities while training: it trains the served function
    frozen = (torch.nn.Dropout, torch.nn.BatchNorm1d)
    assert not any(m.training for m in net.modules() if isinstance(m, frozen))
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), q, atol=1e-5)
        np.testing.assert_allclose(net.eval()(torch.from_numpy(x)).numpy(), q, atol=1e-6)


def test_other_architectures_are_refused(tmp_path: Path) -> None:
    w, b = random_layers(0, hidden=(32,))
    path = save_with_metadata(build_onnx(w, b), tmp_path / "small.onnx")
    with pytest.raises(ValueError, match="not the QNetwork"):
        network_from_onnx(path)


def test_job_trains_exports_and_gates(tmp_path: Path) -> None:
    base = write_model(tmp_path / "base.onnx", seed=1, version="1.0.0")
    job = FinetuneJob(
        output=str(tmp_path / "out" / "cand.onnx"),
        version="1.0.1",
        base_model=str(base),
        steps=10,
        batch_size=8,
        sim_episodes=1,
        sim_tasks_per_episode=8,
        gate={"episodes": 1},
    )
    assert FinetuneJob.from_json(job.to_json()) == job
    result = run_finetune(job)
    cand = load_model(result["output"])
    assert cand.version == "1.0.1" and cand.metadata.training["kind"] == "finetune"
    assert result["simulator_transitions"] == 8 and result["steps"] == 10
    assert set(result["gate"]) >= {"passed", "reason", "sim_reward_candidate", "sim_reward_current"}
    with pytest.raises(ValueError, match="steps"):
        FinetuneJob(output="x.onnx", version="1.0.0", steps=0)


def uninformative_store(path: Path, n: int = 2000, seed: int = 0) -> int:
    """Logged rows whose rewards do not depend on the action (noise around 0.5): nothing to learn about
    which action is better. Returns the store's last id."""
    from itp.learning.store import ExperienceStore
    from itp.ring import TransitionBatch

    rng = np.random.default_rng(seed)
    batch = TransitionBatch(
        states=rng.random((n, 20), dtype=np.float32),
        actions=rng.integers(0, 15, n),
        rewards=rng.normal(0.5, 0.3, n).astype(np.float32),
        next_states=rng.random((n, 20), dtype=np.float32),
        dones=np.ones(n, dtype=np.float32),
        propensities=np.full(n, 1.0 / 15.0, dtype=np.float32),
    )
    with ExperienceStore(path) as store:
        store.append(batch)
        return store.last_id


#: Greedy-action agreement with the deployed model on fresh states after fine-tuning on uninformative
#: logs: at least KEPT with the anchor penalty at weight 1, at most DRIFTED without it (measured 0.61 and
#: 0.03 for this seed and budget).
KEPT, DRIFTED = 0.5, 0.2


def test_anchor_penalty_keeps_the_greedy_policy_where_the_logs_carry_no_information(tmp_path: Path) -> None:
    base = write_model(tmp_path / "base.onnx", seed=1, version="1.0.0")
    last = uninformative_store(tmp_path / "x.sqlite3")
    probe = np.random.default_rng(1).random((3000, 20), dtype=np.float32)
    greedy0 = load_model(base).q_values_batch(probe).argmax(axis=1)
    agreement = {}
    for weight in (0.0, 1.0):  # 1.0: a strong anchor, to test the mechanism (the default is 0.3)
        job = FinetuneJob(
            output=str(tmp_path / f"c{weight}.onnx"),
            version="1.0.1",
            base_model=str(base),
            store=str(tmp_path / "x.sqlite3"),
            upto_id=last,
            steps=200,
            batch_size=64,
            lr=1e-3,
            gamma=0.0,
            sim_episodes=0,
            sim_tasks_per_episode=8,
            anchor_weight=weight,
            gate={"episodes": 1, "mode": "simulator"},
        )
        result = run_finetune(job)
        assert result["anchor_weight"] == weight
        greedy = load_model(result["output"]).q_values_batch(probe).argmax(axis=1)
        agreement[weight] = float(np.mean(greedy == greedy0))
    assert agreement[1.0] >= KEPT, agreement
    assert agreement[0.0] <= DRIFTED, agreement


def test_job_uses_fitted_physics_and_gates_off_policy_on_the_newest_rows(tmp_path: Path) -> None:
    base = write_model(tmp_path / "base.onnx", seed=1, version="1.0.0")
    last = uninformative_store(tmp_path / "x.sqlite3", n=1000)
    warm = {"setup_rtts": 0.5, "initial_window_bits": 2.0**30, "efficiency": 0.9}
    job = FinetuneJob(
        output=str(tmp_path / "c.onnx"),
        version="1.0.1",
        base_model=str(base),
        store=str(tmp_path / "x.sqlite3"),
        upto_id=last,
        holdout_fraction=0.4,
        steps=10,
        batch_size=16,
        sim_episodes=1,
        sim_tasks_per_episode=8,
        transport_params=warm,
        sender_transport_params=(warm,) * 4,
        gate={"episodes": 1, "mode": "both", "min_effective_samples": 10.0, "target_epsilon": 0.1},
    )
    sim = job.sim_config()
    assert not sim.slow_start and sim.setup_rtts == 0.0 and sim.stream_efficiency == pytest.approx(0.9)
    assert FinetuneJob.from_json(job.to_json()) == job
    result = run_finetune(job)
    gate = result["gate"]
    assert result["logged_transitions"] == 600 and gate["holdout_rows"] == 400
    assert gate["offpolicy_rows"] == 400 and gate["offpolicy"] is not None and gate["evidence"] == "both"
    assert gate["sim_physics"] == {
        "setup_rtts": 0.0, "initial_window_bytes": 2**27, "slow_start": False, "stream_efficiency": 0.9,
        "path_efficiency": [1.0, 1.0, 1.0, 1.0], "sender_transport_params": [warm] * 4,
    }
    assert result["transport_params"] == warm and result["stream_efficiencies"] is None


def test_job_simulates_each_streams_fitted_efficiency() -> None:
    """Per-stream efficiencies reach the rollouts' and the gate's simulator, with or without pooled
    parameters, and survive the JSON the learner hands to the retraining process."""
    warm = {"setup_rtts": 0.5, "initial_window_bits": 2.0**30, "efficiency": 0.9}
    job = FinetuneJob(output="c.onnx", version="1.0.1", transport_params=warm,
                      stream_efficiencies=(0.3, 0.9, 0.9, 0.6))
    sim = job.sim_config()
    assert not sim.slow_start and sim.stream_efficiency == pytest.approx(0.9)
    assert sim.path_efficiency == pytest.approx((1 / 3, 1.0, 1.0, 2 / 3))
    assert FinetuneJob.from_json(job.to_json()) == job
    alone_job = FinetuneJob(output="c.onnx", version="1.0.1", stream_efficiencies=(0.5, 1.0, 1.0, 1.0))
    alone = alone_job.sim_config()
    assert alone.slow_start and alone.setup_rtts == pytest.approx(1.5)  # built-in transport otherwise
    assert alone.path_efficiency == pytest.approx((0.5, 1.0, 1.0, 1.0))


def test_job_plays_the_simulator_with_the_deployments_sender() -> None:
    """``sender_transport_params`` (the partitioner's, one per stream) become the simulator's sender in
    the rollouts and the simulator gate, next to the fitted physics, and survive the job's JSON."""
    warm = {"setup_rtts": 0.5, "initial_window_bits": 2.0**30, "efficiency": 0.9}
    rows = (warm, warm, {"setup_rtts": 2.0, "initial_window_bits": 116800.0, "efficiency": 0.7}, warm)
    job = FinetuneJob(output="c.onnx", version="1.0.1", transport_params=warm, sender_transport_params=rows)
    sim = job.sim_config()
    assert sim.sender_transport_params == tuple(TransportParams(**r) for r in rows)
    assert not sim.slow_start and sim.stream_efficiency == pytest.approx(0.9)  # the physics as before
    assert FinetuneJob.from_json(job.to_json()) == job
    alone = FinetuneJob(output="c.onnx", version="1.0.1", sender_transport_params=rows).sim_config()
    assert alone.slow_start and alone.sender_transport_params == sim.sender_transport_params
    assert FinetuneJob(output="c.onnx", version="1.0.1").sim_config().sender_transport_params is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("sender_transport_params", ({"setup_rtts": 1.0, "initial_window_bits": 2e5, "efficiency": 1.0},) * 3),
     ("sender_transport_params", ({"setup_rtts": -1.0, "initial_window_bits": 2e5, "efficiency": 1.0},) * 4),
     ("sender_transport_params", ({"setup_rtts": 1.0},) * 4), ("sender_transport_params", "warm"),
     ("anchor_weight", -1.0), ("anchor_weight", float("inf")), ("support_weight", -0.5),
     ("support_weight", float("nan")), ("transport_params", {"setup_rtts": 1.0}),
     ("stream_efficiencies", (0.5, 0.5)), ("stream_efficiencies", (0.5, -1.0, 0.5, 0.5))],
)
def test_bad_job_fields_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"FinetuneJob.{field}"):
        FinetuneJob(output="x.onnx", version="1.0.0", **{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("top_k", [0, 16, 2.5, True])
def test_a_bad_exploration_set_size_is_refused(top_k: object) -> None:
    with pytest.raises(ValueError, match=r"FinetuneJob.gate\['target_top_k'\]"):
        FinetuneJob(output="x.onnx", version="1.0.0", gate={"target_top_k": top_k})


def reference_support_penalty(q: np.ndarray, q_base: np.ndarray, w: np.ndarray, k: int) -> float:
    """Row by row: the excess of every action outside the base model's k best over the lowest Q-value
    among those k, less the gap, weighted by the row's importance weight."""
    from itp.training.finetune import SUPPORT_GAP

    total = 0.0
    for row, base, weight in zip(q, q_base, w, strict=True):
        best = set(np.argsort(-base, kind="stable")[:k].tolist())
        floor = min(row[a] for a in best)
        total += weight * sum(max(0.0, row[a] - floor + SUPPORT_GAP) for a in range(15) if a not in best)
    return total / len(q)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_support_penalty_matches_the_slow_reference(tmp_path: Path, seed: int) -> None:
    from itp.training.finetune import _frozen_copy, _support_penalty

    base = network_from_onnx(write_model(tmp_path / "b.onnx", seed=seed + 3))
    moved = network_from_onnx(write_model(tmp_path / "m.onnx", seed=seed + 30)).eval()
    rng = np.random.default_rng(seed)
    states = torch.from_numpy(rng.random((40, 20), dtype=np.float32))
    weights = torch.from_numpy(rng.random(40).astype(np.float32))
    tensors = {"weights": weights, "actions": torch.zeros(40, dtype=torch.int64)}
    anchor = _frozen_copy(base)
    for k in (1, 3, 14):
        penalty = _support_penalty(anchor, 2.0, k, tensors)
        assert penalty is not None
        q_all = moved(states)
        got = penalty(states, q_all)
        q, q_base = q_all.detach().numpy(), base.eval()(states).detach().numpy()
        want = 2.0 * reference_support_penalty(q, q_base, weights.numpy(), k)
        assert float(got.detach()) == pytest.approx(want, rel=1e-4, abs=1e-7)
        if want > 0:  # both sides of the hinge get gradients: the set's lowest Q up, the outsiders down
            (grad,) = torch.autograd.grad(got, q_all)
            assert (grad > 0).any() and (grad < 0).any()
    # Off: no weight, no exploration set, or every action in it.
    for weight, k in ((0.0, 3), (1.0, None), (1.0, 15)):
        assert _support_penalty(anchor, weight, k, tensors) is None


def test_support_penalty_keeps_a_candidate_the_gate_can_judge(tmp_path: Path) -> None:
    """Logs of epsilon-greedy (0.1) among the deployed model's 3 best actions, on a network where every
    action earns 1 less than the model believed and the model's second-best action 0.5 more than that.
    Without the support penalty the logged actions' Q-values fall and actions never tried overtake them:
    the candidate leaves the exploration set and the gate cannot judge it. With it (the default) the
    candidate stays inside the set, learns to prefer the second-best action where it can, and the
    off-policy gate passes it."""
    base = write_model(tmp_path / "base.onnx", seed=1, version="1.0.0")
    deployed = load_model(base)
    _, last = write_level_shift_logs(tmp_path / "x.sqlite3", base)
    rng = np.random.default_rng(1)
    probe = rng.random((3000, 20), dtype=np.float32)
    top3 = np.argsort(-deployed.q_values_batch(probe), axis=1, kind="stable")[:, :3]
    inside, prefers_second, gate = {}, {}, {}
    for weight in (0.0, 1.0):
        job = FinetuneJob(
            output=str(tmp_path / f"c{weight}.onnx"), version="1.0.1", base_model=str(base),
            store=str(tmp_path / "x.sqlite3"), upto_id=last, steps=400, batch_size=64, lr=1e-4, gamma=0.0,
            sim_episodes=0, support_weight=weight, holdout_fraction=0.3,
            gate={"episodes": 1, "target_epsilon": 0.1, "target_top_k": 3},
        )
        result = run_finetune(job)
        assert result["support_weight"] == weight
        greedy = load_model(result["output"]).q_values_batch(probe).argmax(axis=1)
        inside[weight] = float(np.mean((top3 == greedy[:, None]).any(axis=1)))
        prefers_second[weight] = float(np.mean(greedy == top3[:, 1]))
        gate[weight] = result["gate"]
    assert FinetuneJob(output="x.onnx", version="1.0.0").support_weight == 1.0
    # Measured 0.28 / 0.95 in the set, 0.06 / 0.38 on the second-best action; the gate +0.21 [+0.11, +0.30]
    # (the bench group finetune_support).
    assert inside[0.0] <= 0.7 and inside[1.0] >= 0.9, inside
    assert prefers_second[1.0] >= 0.15, prefers_second
    assert not gate[0.0]["passed"] and gate[0.0]["offpolicy"]["unsupported_share"] > 0.1
    assert gate[1.0]["passed"] and gate[1.0]["evidence"] == "offpolicy", gate[1.0]["reason"]
    assert gate[1.0]["offpolicy"]["unsupported_share"] <= 0.1 and gate[1.0]["offpolicy"]["lower"] > 0


def test_batches_keep_their_propensities(tmp_path: Path) -> None:
    from itp.ring import TransitionBatch
    from itp.training.finetune import load_batch, save_batch

    rng = np.random.default_rng(0)
    b = TransitionBatch(
        rng.random((5, 20), dtype=np.float32), np.arange(5), np.ones(5, np.float32),
        rng.random((5, 20), dtype=np.float32), np.zeros(5, np.float32),
        np.array([0.5, np.nan, 1.0, 0.1, 0.2], np.float32),
    )
    save_batch(tmp_path / "b.npz", b)
    got = load_batch(tmp_path / "b.npz")
    assert got.propensities is not None
    np.testing.assert_array_equal(got.propensities, b.propensities)
    save_batch(tmp_path / "n.npz", TransitionBatch(b.states, b.actions, b.rewards, b.next_states, b.dones))
    assert load_batch(tmp_path / "n.npz").propensities is None


def test_a_candidate_that_learned_the_deployment_passes_the_offpolicy_gate(tmp_path: Path) -> None:
    """Issue 13's case: on this deployment action 3 is far better than anything the deployed model does
    (reward 1.0 vs 0.2), and the built-in simulator disagrees. Fine-tuned with the default anchor on logs
    of an epsilon-greedy behaviour with propensities, the candidate learns action 3 and the off-policy gate,
    judged on the newest held-back rows, passes it with the measured difference."""
    from itp.learning.offpolicy import epsilon_greedy_probabilities
    from itp.learning.store import ExperienceStore
    from itp.ring import TransitionBatch

    base = write_model(tmp_path / "base.onnx", seed=1, version="1.0.0")
    deployed = load_model(base)
    rng = np.random.default_rng(0)
    n, eps = 6000, 0.5
    states = rng.random((n, 20), dtype=np.float32)
    probs = epsilon_greedy_probabilities(deployed.q_values_batch(states), eps)
    actions = (probs.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1).clip(0, 14).astype(np.int64)
    mean_reward = np.full(15, 0.2)
    mean_reward[3] = 1.0
    batch = TransitionBatch(
        states=states,
        actions=actions,
        rewards=(mean_reward[actions] + rng.normal(0.0, 0.3, n)).astype(np.float32),
        next_states=rng.random((n, 20), dtype=np.float32),
        dones=np.ones(n, dtype=np.float32),
        propensities=probs[np.arange(n), actions].astype(np.float32),
    )
    with ExperienceStore(tmp_path / "x.sqlite3") as store:
        store.append(batch)
        last = store.last_id
    job = FinetuneJob(
        output=str(tmp_path / "c.onnx"),
        version="1.0.1",
        base_model=str(base),
        store=str(tmp_path / "x.sqlite3"),
        upto_id=last,
        holdout_fraction=0.3,
        steps=600,
        batch_size=64,
        lr=1e-3,
        gamma=0.0,
        sim_episodes=0,
        gate={"episodes": 1, "target_epsilon": 0.1},
    )
    assert job.anchor_weight == 0.3
    result = run_finetune(job)
    probe = rng.random((2000, 20), dtype=np.float32)
    assert np.mean(deployed.q_values_batch(probe).argmax(axis=1) == 3) == 0.0
    # Measured 0.86 (0.999 while fine-tuning still ran through Dropout).
    assert np.mean(load_model(result["output"]).q_values_batch(probe).argmax(axis=1) == 3) >= 0.8
    gate = result["gate"]
    assert gate["passed"] and gate["evidence"] == "offpolicy", gate["reason"]
    # True difference at target epsilon 0.1: 0.9 * (1.0 - 0.2) = 0.72.
    assert gate["offpolicy"]["lower"] <= 0.72 <= gate["offpolicy"]["upper"]
