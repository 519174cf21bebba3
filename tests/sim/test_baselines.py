"""Baseline policies: what each one decides, the factory, the ONNX policy, and the oracle's bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_factory import build_onnx, random_layers, write_model

from itp.actions import ACTION_STREAMS
from itp.heuristic import HeuristicPolicy, heuristic_action
from itp.sim import PartitionEnv, SimConfig
from itp.sim.baselines import (
    BASELINE_NAMES,
    BestSinglePolicy,
    EqualSplitPolicy,
    OraclePolicy,
    RateProportionalPolicy,
    RoundRobinPolicy,
    equal_chunks,
    make_policy,
)
from itp.sim.policy import ChunkingPolicy, OnnxPolicy, Policy, decide, default_split
from itp.sim.traces import discover_trace_files, shipped_traces_dir

SHIPPED = [str(p) for p in discover_trace_files(shipped_traces_dir())]


def raw_state(bw: list[float], size: float = 1e8, succ: float = 1.0) -> np.ndarray:
    raw = np.zeros(20)
    raw[0:4] = bw
    raw[4:8] = 0.02
    raw[12:16] = succ
    raw[17] = size
    raw[18] = 0.5
    raw[19] = 12.0
    return raw


def test_names_and_factory() -> None:
    assert BASELINE_NAMES == (
        "round-robin", "best-single", "equal-split", "rate-proportional", "heuristic", "oracle",
    )
    for name in BASELINE_NAMES:
        p = make_policy(name)
        assert p.name == name and isinstance(p, Policy)
    assert isinstance(make_policy("heuristic"), HeuristicPolicy)
    with pytest.raises(ValueError, match="unknown policy 'fastest'"):
        make_policy("fastest")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        make_policy("/nonexistent/model.onnx")


def test_round_robin_cycles_and_restarts() -> None:
    p = RoundRobinPolicy()
    raw = raw_state([1e8] * 4)
    assert [p.select_action(raw) for _ in range(6)] == [0, 1, 2, 3, 0, 1]
    p.reset()
    assert p.select_action(raw) == 0


def test_best_single_takes_the_highest_measured_rate() -> None:
    p = BestSinglePolicy()
    assert p.select_action(raw_state([1e8, 5e8, 2e8, 4e8])) == 1
    assert p.select_action(raw_state([3e8, 3e8, 1e8, 1e8])) == 0  # lowest id on ties


def test_equal_split_puts_equal_bytes_on_all_streams() -> None:
    p = EqualSplitPolicy()
    assert isinstance(p, ChunkingPolicy)
    raw = raw_state([1e8, 9e8, 1e8, 1e8], size=1003)
    d = decide(p, raw)
    assert d.action == 14 and d.chunk_bytes == (251, 251, 251, 250)


@pytest.mark.parametrize("action", range(15))
def test_equal_chunks_sum_and_place_on_the_action_streams(action: int) -> None:
    for size in (1, 2, 3, 1000, 2**40 + 3):
        c = equal_chunks(size, action)
        assert sum(c) == size
        used = [c[i] for i in ACTION_STREAMS[action]]
        assert max(used) - min(used) <= 1
        assert all(c[i] == 0 for i in range(4) if i not in ACTION_STREAMS[action])


def test_rate_proportional_uses_the_production_chunking() -> None:
    p = RateProportionalPolicy()
    raw = raw_state([1e8, 3e8, 2e8, 4e8], size=1e9)
    d = decide(p, raw)
    assert d.action == 14 and d.chunk_bytes is None
    chunks = default_split(raw, 14).chunk_bytes
    assert chunks[3] > chunks[1] > chunks[2] > chunks[0]


def test_heuristic_baseline_is_the_production_heuristic() -> None:
    p = make_policy("heuristic")
    rng = np.random.default_rng(0)
    for _ in range(50):
        raw = raw_state(list(rng.uniform(1e6, 1e9, 4)), size=float(rng.uniform(6e4, 4e9)),
                        succ=float(rng.uniform(0.8, 1.0)))
        raw[4:8] = rng.uniform(0.01, 0.2, 4)
        assert p.select_action(raw) == heuristic_action(raw)


# ---------------------------------------------------------------------------------------------
# The oracle


def test_oracle_needs_the_environment() -> None:
    with pytest.raises(RuntimeError, match="bind"):
        OraclePolicy().select_action(raw_state([1e8] * 4))


def baseline_decisions(env: PartitionEnv, policies: list[Policy]) -> dict[str, tuple[int, object]]:
    out = {}
    for p in policies:
        d = decide(p, env.raw_state)
        out[p.name] = (d.action, d.chunk_bytes)
    return out


@pytest.mark.parametrize("traces", [None, SHIPPED], ids=["synthetic", "trace"])
def test_oracle_is_never_beaten_on_the_same_realisation(traces: list[str] | None) -> None:
    """At every decision of several episodes, no baseline's decision (and no action at all) completes
    the task sooner, or succeeds where the oracle's choice fails, on the same realised future."""
    config = SimConfig(tasks_per_episode=40)
    env = PartitionEnv(config, trace_files=traces)
    oracle = OraclePolicy()
    drivers: list[Policy] = [RoundRobinPolicy(), HeuristicPolicy(), RateProportionalPolicy()]
    checked = 0
    for episode, driver in enumerate(drivers):  # different drivers visit different states
        env.reset(seed=1000 + episode)
        oracle.bind(env)
        others: list[Policy] = [RoundRobinPolicy(), BestSinglePolicy(), EqualSplitPolicy(),
                                RateProportionalPolicy(), HeuristicPolicy()]
        for _ in range(config.tasks_per_episode):
            best = oracle.best_outcome()
            candidates = [
                env.simulate_action(a, c if isinstance(c, tuple) else None)
                for a, c in baseline_decisions(env, others).values()
            ]
            candidates += [env.simulate_action(a) for a in range(15)]
            for o in candidates:
                assert best.success or not o.success
                if o.success:
                    assert best.completion_time_s <= o.completion_time_s
                    assert best.goodput_bps >= o.goodput_bps * (1 - 1e-12)
                checked += 1
            env.step_decision(decide(driver, env.raw_state))
    assert checked == 3 * 40 * 20


def test_oracle_follows_its_choice() -> None:
    env = PartitionEnv(SimConfig(tasks_per_episode=10))
    env.reset(seed=4)
    oracle = OraclePolicy()
    oracle.bind(env)
    oracle.reset()
    for _ in range(10):
        d = decide(oracle, env.raw_state)
        assert oracle.last_outcome is not None
        _, _, _, _, info = env.step_decision(d)
        assert info["completion_time_s"] == oracle.last_outcome.completion_time_s
        assert info["bytes_per_stream"] == oracle.last_outcome.chunk_bytes


# ---------------------------------------------------------------------------------------------
# Policies from ONNX files and invalid policies


def test_onnx_policy_is_the_argmax_of_its_q_values(tmp_path: Path) -> None:
    path = write_model(tmp_path / "qnet.onnx", seed=3)
    p = make_policy(path)
    assert isinstance(p, OnnxPolicy) and p.name == "qnet"
    w, b = random_layers(3)
    rng = np.random.default_rng(1)
    raws = np.stack([raw_state(list(rng.uniform(1e6, 1e9, 4)), size=float(rng.uniform(1e5, 1e9)))
                     for _ in range(30)])
    q = p.q_values(raws)
    assert q.shape == (30, 15)
    # The same network in numpy on the natively normalised state.
    from itp.state import normalize_states

    x = normalize_states(raws).astype(np.float64)
    for k, (wk, bk) in enumerate(zip(w, b, strict=True)):
        x = x @ wk.T.astype(np.float64) + bk
        if k < len(w) - 1:
            x = np.maximum(x, 0.0)
    np.testing.assert_allclose(q, x, rtol=1e-4, atol=1e-4)
    assert [p.select_action(r) for r in raws] == [int(np.argmax(row)) for row in q]


def test_onnx_policy_rejects_wrong_graphs(tmp_path: Path) -> None:
    import onnx

    w, b = random_layers(0)
    model = build_onnx(w, b)
    model.graph.input[0].name = "x"
    for node in model.graph.node:
        node.input[:] = ["x" if i == "state" else i for i in node.input]
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ValueError, match="no input named 'state'"):
        OnnxPolicy(bad)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"garbage\.onnx"):
        OnnxPolicy(garbage)


class BadPolicy:
    name = "bad"

    def __init__(self, action: object, chunks: object = None) -> None:
        self.action, self.chunks = action, chunks

    def select_action(self, raw_state: np.ndarray) -> int:
        return self.action  # type: ignore[return-value]

    def chunk_bytes(self, raw_state: np.ndarray, action: int) -> object:
        return self.chunks


@pytest.mark.parametrize(
    ("policy", "exc", "match"),
    [
        (BadPolicy(15), ValueError, "returned action 15"),
        (BadPolicy(-1), ValueError, "returned action -1"),
        (BadPolicy(2.0), TypeError, "non-int action"),
        (BadPolicy(True), TypeError, "non-int action"),
        (BadPolicy(0, (1, 0, 0, 0)), ValueError, "sum to the task size"),
        (BadPolicy(0, (0, 1000, 0, 0)), ValueError, "not in action"),
    ],
)
def test_invalid_decisions_are_rejected(policy: BadPolicy, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        decide(policy, raw_state([1e8] * 4, size=1000))
