"""Agent: model swaps racing with decisions never mislabel a decision; batch decisions match single ones."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from model_factory import write_model

from itp.agent import Agent, AgentPolicy
from itp.model_loading import load_model


def _agent(seed: int = 0) -> Agent:
    a = Agent(seed)
    for i in range(4):
        a.update_stream(i, 2e8 * (i + 1), 0.01 * (i + 1), 0.1, 0.95)
    return a


def test_swaps_racing_with_decisions_report_the_model_that_answered(tmp_path: Path) -> None:
    models = {
        m.version: m
        for m in (
            load_model(write_model(tmp_path / "a.onnx", seed=1, version="1.0.0")),
            load_model(write_model(tmp_path / "b.onnx", seed=2, version="2.0.0")),
            load_model(write_model(tmp_path / "c.onnx", seed=3, version="3.0.0"), allow_native=False),
        )
    }
    agent = _agent()
    agent.set_model(models["1.0.0"])
    stop = threading.Event()
    errors: list[str] = []

    def swapper() -> None:
        order = ["2.0.0", "3.0.0", "1.0.0"]
        k = 0
        while not stop.is_set():
            agent.set_model(models[order[k % 3]])
            k += 1

    def decider(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(3000):
            size = int(rng.integers(1, 2**34))
            out, arm, model = agent.decide(size, 0.5, 10.0)
            assert arm == 0 and model is not None
            q = model.q_values(out[5])
            if out[0] != int(np.argmax(q)):
                errors.append(f"action {out[0]} is not the argmax of {model.version}")

    t = threading.Thread(target=swapper)
    t.start()
    ds = [threading.Thread(target=decider, args=(s,)) for s in range(3)]
    for d in ds:
        d.start()
    for d in ds:
        d.join()
    stop.set()
    t.join()
    assert errors == []


def test_batch_matches_single_decisions_and_raw_states(tmp_path: Path) -> None:
    model = load_model(write_model(tmp_path / "m.onnx", seed=4))
    a, b = _agent(), _agent()
    a.set_model(model)
    b.set_model(model)
    sizes = np.array([1 + (i * 7919) ** 3 % 2**36 for i in range(64)], dtype=np.uint64)
    prios = np.linspace(0, 1, 64)
    batch = a.decide_batch(sizes, prios, 7.0)
    assert batch is not None
    outs, arms, models = batch
    for i, out in enumerate(outs):
        single, _, _ = b.decide(int(sizes[i]), float(prios[i]), 7.0)
        assert out[0] == single[0] and list(out[2]) == list(single[2])
        np.testing.assert_array_equal(out[5], single[5])
        np.testing.assert_array_equal(out[6], single[6])  # the raw state rebuilt for the batch
    assert arms == [0] * 64 and all(m is model for m in models)


def test_batch_declines_with_a_candidate(tmp_path: Path) -> None:
    a = _agent()
    a.set_candidate(load_model(write_model(tmp_path / "m.onnx")), 0.5)
    assert a.decide_batch(np.ones(3, np.uint64), np.zeros(3), 1.0) is None


def test_bad_settings_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        Agent(-1)
    a = Agent(0)
    with pytest.raises(ValueError, match="epsilon"):
        a.epsilon = 1.5
    with pytest.raises(ValueError, match="share"):
        a.set_candidate(load_model(write_model(tmp_path / "m.onnx")), 2.0)
    assert a.candidate is None
    with pytest.raises(TypeError, match="LoadedModel"):
        a.set_model("model.onnx")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no candidate"):
        a.promote_candidate()


def test_agent_policy_heuristic_matches_native_heuristic() -> None:
    from itp import _native

    pol = AgentPolicy(None)
    rng = np.random.default_rng(0)
    for _ in range(50):
        raw = np.concatenate(
            [rng.uniform(1e6, 1e9, 4), rng.uniform(0.001, 0.2, 4), rng.uniform(0, 1, 4),
             rng.uniform(0.5, 1, 4), [3, float(rng.integers(1, 2**33)), 0.5, 12.0]]
        )
        assert pol.select_action(raw) == _native.heuristic_action(raw)
    assert pol.fallbacks == 0 and pol.decisions == 50


def test_agent_policy_splits_and_evaluates_with_the_deployments_transport_params() -> None:
    """``AgentPolicy(transport_params=)`` splits as ``production_split`` with those parameters (as a
    deployment's engine does), and ``evaluate_model`` plays the model with the configuration's sender
    parameters: its episodes equal an explicit policy's with them and differ from the defaults'."""
    from itp.agent import evaluate_model
    from itp.sim import SimConfig
    from itp.sim.evaluate import evaluate
    from itp.transport import TransportParams, production_split

    warm = TransportParams(setup_rtts=1.0, initial_window_bits=2.0**28, efficiency=0.9)
    sender = (warm, warm, warm, warm)
    pol = AgentPolicy(None, transport_params=warm)
    plain = AgentPolicy(None)
    rng = np.random.default_rng(1)
    differs = 0
    for _ in range(40):
        raw = np.concatenate(
            [rng.uniform(1e6, 1e9, 4), rng.uniform(0.001, 0.2, 4), rng.uniform(0, 1, 4),
             rng.uniform(0.5, 1, 4), [3, float(rng.integers(1, 2**30)), 0.5, 12.0]]
        )
        a = pol.select_action(raw)
        assert pol.chunk_bytes(raw, a) == production_split(raw, a, sender).chunk_bytes
        b = plain.select_action(raw)
        assert plain.chunk_bytes(raw, b) == production_split(raw, b).chunk_bytes
        differs += (a, pol.chunk_bytes(raw, a)) != (b, plain.chunk_bytes(raw, b))
    assert differs >= 10
    config = SimConfig(tasks_per_episode=8, sender_transport_params=sender)
    report = evaluate_model(None, 2, seed=3, config=config)
    explicit = evaluate([AgentPolicy(None, transport_params=sender)], episodes=2, seed=3, config=config)
    assert report.mean_reward == explicit.row("heuristic").mean_reward
    default = evaluate_model(None, 2, seed=3, config=SimConfig(tasks_per_episode=8))
    assert report.mean_reward != default.mean_reward
