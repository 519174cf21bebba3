"""The Gymnasium environment: API conformance, determinism, KPIs, the shared reward, no look-ahead,
and the vectorised form."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import itp.sim
from itp.heuristic import HeuristicPolicy
from itp.reward import Outcome, compute_reward
from itp.sim import ENV_ID, PartitionEnv, SimConfig, make_vector_env
from itp.sim.physics import StreamTrajectory
from itp.sim.policy import Decision, decide, predicted_time_s
from itp.sim.traces import discover_trace_files, shipped_traces_dir
from itp.state import normalize_state
from itp.transport import DEFAULT_TRANSPORT_PARAMS, TransportParams, production_split, transport_chunk_time

SHIPPED = [str(p) for p in discover_trace_files(shipped_traces_dir())]
SMALL = SimConfig(tasks_per_episode=12)


def play(env: PartitionEnv, seed: int, actions: list[int]) -> list[tuple[Any, ...]]:
    """(obs, reward, terminated, truncated, KPIs) of each step after reset(seed)."""
    obs, _ = env.reset(seed=seed)
    out: list[tuple[Any, ...]] = [(obs.copy(),)]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        kpis = {k: v for k, v in info.items() if k != "raw_state"}
        out.append((obs.copy(), r, term, trunc, kpis, info["raw_state"].copy()))
    return out


def assert_same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x[0], y[0])
        if len(x) > 1:
            assert x[1:5] == y[1:5]
            assert np.array_equal(x[5], y[5])


# ---------------------------------------------------------------------------------------------
# Registration and Gymnasium conformance


def registered_ids() -> list[str]:
    return sorted(k for k in gym.registry if k.startswith("itp/"))


def test_partition_env_is_registered() -> None:
    assert ENV_ID == "itp/Partition-v0" and ENV_ID in registered_ids()
    env = gym.make(ENV_ID)
    assert isinstance(env.unwrapped, PartitionEnv)
    env.close()


@pytest.mark.parametrize("env_id", registered_ids())
def test_check_env_on_every_registered_env(env_id: str) -> None:
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=False)
    env.close()


def test_check_env_in_trace_mode() -> None:
    env = gym.make(ENV_ID, config=SMALL, trace_files=SHIPPED)
    check_env(env.unwrapped)
    assert env.unwrapped.traces and len(env.unwrapped.traces) == len(SHIPPED)
    env.close()


def test_spaces_and_observations() -> None:
    env = PartitionEnv(SMALL)
    assert env.action_space == gym.spaces.Discrete(15)
    assert env.observation_space.shape == (20,) and env.observation_space.dtype == np.float32
    obs, info = env.reset(seed=3)
    assert obs.dtype == np.float32 and obs in env.observation_space
    assert np.array_equal(obs, normalize_state(info["raw_state"]))  # the native normalisation
    for _ in range(SMALL.tasks_per_episode):
        obs, _, term, _, info = env.step(env.action_space.sample())
        assert obs in env.observation_space and not term
    assert np.array_equal(obs, normalize_state(env.raw_state))


def test_episode_is_truncated_after_tasks_per_episode() -> None:
    env = PartitionEnv(SMALL)
    env.reset(seed=0)
    truncs = [env.step(14)[3] for _ in range(SMALL.tasks_per_episode)]
    assert truncs == [False] * (SMALL.tasks_per_episode - 1) + [True]
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(0)
    with pytest.raises(RuntimeError, match="episode is over"):
        env.simulate_action(0)
    env.reset(seed=0)
    assert env.task_index == 0 and env.time_s == 0.0


def test_use_before_reset_is_an_error() -> None:
    env = PartitionEnv(SMALL)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    with pytest.raises(RuntimeError, match="reset"):
        _ = env.raw_state


@pytest.mark.parametrize(
    ("action", "exc"),
    [(-1, ValueError), (15, ValueError), (1.0, TypeError), (True, TypeError), ("3", TypeError),
     (None, TypeError), (np.array([1, 2]), TypeError)],
)
def test_invalid_actions_are_rejected_and_change_nothing(action: object, exc: type) -> None:
    env = PartitionEnv(SMALL)
    env.reset(seed=1)
    env.step(3)
    before = (env.task_index, env.time_s, env.raw_state)
    with pytest.raises(exc, match="action"):
        env.step(action)  # type: ignore[arg-type]
    assert (env.task_index, env.time_s) == before[:2] and np.array_equal(env.raw_state, before[2])


def test_numpy_integer_actions_are_accepted() -> None:
    env = PartitionEnv(SMALL)
    env.reset(seed=1)
    _, _, _, _, a = env.step(np.int64(7))
    _, _, _, _, b = env.step(np.array(7))
    assert env.task_index == 2 and a["action"] == b["action"] == 7


def test_constructor_validation() -> None:
    with pytest.raises(TypeError, match="SimConfig"):
        PartitionEnv({"tasks_per_episode": 3})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="render_mode"):
        PartitionEnv(render_mode="human")
    with pytest.raises(ValueError, match="options"):
        PartitionEnv(SMALL).reset(seed=0, options={"x": 1})
    with pytest.raises(FileNotFoundError):
        PartitionEnv(trace_files=["/nonexistent/trace"])


def test_render_ansi() -> None:
    env = PartitionEnv(SMALL, render_mode="ansi")
    env.reset(seed=0)
    assert "no step yet" in str(env.render())
    env.step(2)
    line = env.render()
    assert isinstance(line, str) and "action 2" in line and "Mbit/s" in line
    assert PartitionEnv(SMALL).render() is None


# ---------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("traces", [None, SHIPPED], ids=["synthetic", "trace"])
def test_same_seed_same_episode(traces: list[str] | None) -> None:
    actions = [int(a) for a in np.random.default_rng(0).integers(0, 15, SMALL.tasks_per_episode)]
    a = play(PartitionEnv(SMALL, trace_files=traces), 42, actions)
    b = play(PartitionEnv(SMALL, trace_files=traces), 42, actions)
    assert_same(a, b)
    env = PartitionEnv(SMALL, trace_files=traces)  # and on a reused instance
    play(env, 7, actions[:3])
    assert_same(play(env, 42, actions), a)
    c = play(PartitionEnv(SMALL, trace_files=traces), 43, actions)
    assert not np.array_equal(a[0][0], c[0][0])


def test_the_future_does_not_depend_on_the_actions() -> None:
    """Task sizes, priorities and arrival times are drawn per episode, whatever the policy does."""
    env = PartitionEnv(SMALL)

    def tasks(action: int) -> list[tuple[float, float]]:
        env.reset(seed=9)
        out = []
        for _ in range(SMALL.tasks_per_episode):
            _, _, _, _, info = env.step(action)
            out.append((info["raw_state"][17], info["raw_state"][18]))
        return out

    assert tasks(0) == tasks(14)


# ---------------------------------------------------------------------------------------------
# KPIs and the reward


@pytest.mark.parametrize("traces", [None, SHIPPED], ids=["synthetic", "trace"])
def test_info_kpis_are_consistent(traces: list[str] | None) -> None:
    env = PartitionEnv(SimConfig(tasks_per_episode=40), trace_files=traces)
    rng = np.random.default_rng(5)
    env.reset(seed=5)
    for k in range(40):
        raw = env.raw_state
        t0 = env.time_s
        action = int(rng.integers(15))
        _, reward, _, _, info = env.step(action)
        size = int(raw[17])
        assert info["task_index"] == k and info["action"] == action and info["start_time_s"] == t0
        assert np.array_equal(info["raw_state"], raw)
        chunks = info["bytes_per_stream"]
        assert len(chunks) == 4 and sum(chunks) == size and min(chunks) >= 0
        assert {i for i, c in enumerate(chunks) if c > 0} <= set(itp.ACTION_STREAMS[action])
        assert info["completion_time_s"] > 0 and info["retransmissions"] >= 0
        if info["success"]:
            assert info["goodput_bps"] == pytest.approx(8 * size / info["completion_time_s"])
        # The env's reward is exactly the production function on what a caller can report.
        outcome = Outcome(info["goodput_bps"], info["completion_time_s"], info["success"],
                          info["retransmissions"])
        assert reward == compute_reward(raw, chunks, info["expected_time_s"], outcome, SMALL.reward_weights)
        assert env.time_s >= t0 + info["completion_time_s"] - 1e-9


def test_reward_weights_of_the_config_are_used() -> None:
    from itp.reward import RewardWeights

    w = RewardWeights(throughput=0.0, latency=0.0, imbalance=0.0, completion=1.0, retransmission=0.0)
    env = PartitionEnv(SimConfig(tasks_per_episode=5, reward_weights=w))
    env.reset(seed=0)
    rewards = [env.step(14)[1] for _ in range(5)]
    assert set(rewards) <= {0.0, 1.0}


def test_simulate_action_is_pure_and_matches_step() -> None:
    env = PartitionEnv(SMALL)
    env.reset(seed=11)
    env.step(5)
    state = (env.task_index, env.time_s, env.raw_state)
    outcomes = [env.simulate_action(a) for a in range(15)]
    assert [env.simulate_action(a) for a in range(15)] == outcomes
    assert (env.task_index, env.time_s) == state[:2] and np.array_equal(env.raw_state, state[2])
    _, reward, _, _, info = env.step(9)
    o = outcomes[9]
    assert (o.completion_time_s, o.goodput_bps, o.reward, o.chunk_bytes) == (
        info["completion_time_s"], info["goodput_bps"], reward, info["bytes_per_stream"]
    )


def test_explicit_chunks_are_validated() -> None:
    env = PartitionEnv(SMALL)
    env.reset(seed=2)
    size = int(env.raw_state[17])
    half = size // 2
    ok = env.simulate_action(4, (half, size - half, 0, 0))
    assert ok.chunk_bytes == (half, size - half, 0, 0)
    for chunks, match in (
        ((half, size - half, 0), "4 entries"),
        ((half, 0, size - half, 0), "not in action"),
        ((half, size - half + 1, 0, 0), "sum to the task size"),
        ((-1, size + 1, 0, 0), ">= 0"),
    ):
        with pytest.raises(ValueError, match=match):
            env.step_decision(Decision(4, chunks))  # type: ignore[arg-type]
    assert env.task_index == 0


# ---------------------------------------------------------------------------------------------
# Observations never use the future


class FutureChanged:
    """``base`` up to ``cut_s``; afterwards the rate is ``factor`` times lower... or higher, and the
    congestion is mirrored. Exact capacity, so chunks that end before the cut are unaffected."""

    def __init__(self, base: StreamTrajectory, cut_s: float, factor: float) -> None:
        self.base, self.cut, self.factor = base, cut_s, factor
        self.bin_s, self.period_s = base.bin_s, base.period_s

    def rate_at(self, t: float) -> float:
        return self.base.rate_at(t) * (1.0 if t < self.cut else self.factor)

    def congestion_at(self, t: float) -> float:
        c = self.base.congestion_at(t)
        return c if t < self.cut else 1.0 - c

    def capacity_bits(self, t: float) -> float:
        if t <= self.cut:
            return self.base.capacity_bits(t)
        at_cut = self.base.capacity_bits(self.cut)
        return at_cut + self.factor * (self.base.capacity_bits(t) - at_cut)

    def mean_rate_between(self, t0: float, t1: float) -> float:
        if t1 <= t0:
            return self.rate_at(t0)
        return (self.capacity_bits(t1) - self.capacity_bits(t0)) / (t1 - t0)

    def finish_time(self, t0: float, bits: float) -> float:
        if bits <= 0.0:
            return t0
        if t0 < self.cut:
            before = self.base.capacity_bits(self.cut) - self.base.capacity_bits(t0)
            if before >= bits:
                return self.base.finish_time(t0, bits)
            return self.base.finish_time(self.cut, (bits - before) / self.factor)
        return self.base.finish_time(t0, bits / self.factor)


@pytest.mark.parametrize("traces", [None, SHIPPED], ids=["synthetic", "trace"])
@pytest.mark.parametrize("seed", [0, 1])
def test_observations_never_use_the_future(traces: list[str] | None, seed: int) -> None:
    """For every decision K: change everything after its time t_K (rates, congestion, loss and
    measurement draws, later tasks and arrivals); observations 0..K must not move, later ones do."""
    config = SimConfig(tasks_per_episode=24)
    policy = HeuristicPolicy()

    def run(cut: tuple[int, float] | None) -> tuple[list[np.ndarray], list[float]]:
        env = PartitionEnv(config, trace_files=traces)
        obs, _ = env.reset(seed=seed)
        if cut is not None:  # rewrite the realised future after t_K, before anything is played
            k, cut_s = cut
            real = env._real
            assert real is not None
            real.streams = [FutureChanged(s, cut_s, 0.2) for s in real.streams]  # type: ignore[misc]
            for arr in (real.fail_u, real.fail_frac, real.jitter_z, real.sample_noise):
                arr[k:] = np.random.default_rng(99).random(arr[k:].shape)  # used after decision K
            for arr in (real.probe_noise, real.probe_jitter_z, real.probe_fail_u):
                arr[k + 1:] = np.random.default_rng(98).random(arr[k + 1:].shape)
            real.sizes_bytes[k + 1:] = [s // 3 + 1 for s in real.sizes_bytes[k + 1:]]
            real.priorities[k + 1:] = [1.0 - p for p in real.priorities[k + 1:]]
            real.arrivals_s[real.arrivals_s > cut_s] += 5.0
        seen, times = [obs], [env.time_s]
        for _ in range(config.tasks_per_episode):
            obs, *_ = env.step_decision(decide(policy, env.raw_state))
            seen.append(obs)
            times.append(env.time_s)
        return seen, times

    base, times = run(None)
    later_changed = 0
    for k in range(config.tasks_per_episode):
        # The present (t_K itself) may be observed; only what follows it is changed.
        changed, _ = run((k, times[k] + 1e-6))
        for j in range(k + 1):
            assert np.array_equal(base[j], changed[j]), f"observation {j} saw the future after t_{k}"
        later_changed += any(not np.array_equal(base[j], changed[j]) for j in range(k + 1, len(base)))
    assert later_changed >= config.tasks_per_episode - 2  # the change is visible once it happened


def test_trace_mode_bandwidth_estimates_span_the_normalised_range() -> None:
    env = PartitionEnv(SimConfig(tasks_per_episode=8), trace_files=SHIPPED)
    bw: list[float] = []
    for seed in range(25):
        obs, _ = env.reset(seed=seed)
        bw.extend(obs[0:4].tolist())
    assert min(bw) < 0.1 and max(bw) > 0.6  # 1e9 bit/s -> 1.0


# ---------------------------------------------------------------------------------------------
# Vectorised form


def test_vector_env_matches_independent_envs() -> None:
    n = 3
    venv = make_vector_env(n, SMALL, trace_files=SHIPPED)
    obs, _ = venv.reset(seed=100)
    singles = [PartitionEnv(SMALL, trace_files=SHIPPED) for _ in range(n)]
    single_obs = [e.reset(seed=100 + i)[0] for i, e in enumerate(singles)]  # Sync seeds seed + i
    assert np.array_equal(obs, np.stack(single_obs))
    rng = np.random.default_rng(0)
    for _ in range(SMALL.tasks_per_episode):
        actions = rng.integers(0, 15, n)
        obs, rewards, term, trunc, _ = venv.step(actions)
        for i, e in enumerate(singles):
            o, r, _, tr, _ = e.step(int(actions[i]))
            assert np.array_equal(obs[i], o) and rewards[i] == r and trunc[i] == tr
    assert trunc.all() and not term.any()
    # Next-step autoreset: the following step starts new episodes (reward 0, task 0).
    obs, rewards, _, trunc, info = venv.step(np.zeros(n, dtype=np.int64))
    assert not trunc.any() and np.all(rewards == 0.0) and np.all(info["task_index"] == 0)
    venv.close()


def test_vector_env_same_step_autoreset_and_validation() -> None:
    venv = make_vector_env(2, SimConfig(tasks_per_episode=2),
                           autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    venv.reset(seed=0)
    venv.step(np.array([1, 2]))
    _, rewards, _, trunc, info = venv.step(np.array([1, 2]))
    assert trunc.all() and np.all(rewards != 0.0) and "final_obs" in info
    venv.close()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_envs"):
            make_vector_env(bad)  # type: ignore[arg-type]


def test_make_vec_from_the_registry() -> None:
    venv = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="sync")
    obs, _ = venv.reset(seed=1)
    assert obs.shape == (2, 20) and obs.dtype == np.float32
    venv.close()


def test_stream_windows_are_what_a_persistent_sender_reads() -> None:
    from itp.sim.networks import network_config

    fresh = PartitionEnv(SimConfig(tasks_per_episode=8))
    fresh.reset(seed=1)
    assert fresh.stream_windows() is None
    env = PartitionEnv(network_config("ss-restart", SimConfig(tasks_per_episode=8)))
    env.reset(seed=1)
    assert env.stream_windows() == tuple((0.0, math.inf) for _ in range(4))
    env.step(14)
    last = env.last_outcome
    assert last is not None
    windows = env.stream_windows()
    assert windows is not None
    for i, (w, idle) in enumerate(windows):
        r = last.chunks[i]
        if r is None:
            continue
        assert w == r.end_window_bits > 0.0
        assert idle == pytest.approx(max(env.time_s - r.finish_s, 0.0))


# ---------------------------------------------------------------------------------------------
# The sender's transport model (SimConfig.sender_transport_params)

WARM_SENDER = TransportParams(setup_rtts=1.0, initial_window_bits=2.0**28, efficiency=0.95)


def test_the_sender_splits_and_predicts_with_its_transport_params() -> None:
    """The environment's sender splits each task as ``production_split`` with the configured parameters
    and predicts its time so (the reward's latency term compares against that prediction); explicit
    chunks are predicted with the same parameters. With the defaults the split differs: the test can
    fail."""
    sender = (WARM_SENDER, WARM_SENDER, DEFAULT_TRANSPORT_PARAMS, WARM_SENDER)
    env = PartitionEnv(SimConfig(tasks_per_episode=16, sender_transport_params=sender))
    env.reset(seed=5)
    differs = 0
    for a in [14, 10, 5, 14, 12, 9, 14, 4, 13, 11, 14, 6]:
        raw = env.raw_state.copy()
        split = production_split(raw, a, sender)
        _, _, _, _, info = env.step(a)
        assert info["bytes_per_stream"] == split.chunk_bytes
        assert info["expected_time_s"] == split.expected_time_s
        plain = production_split(raw, a)
        differs += (plain.chunk_bytes, plain.expected_time_s) != (split.chunk_bytes, split.expected_time_s)
    assert differs >= 6
    raw = env.raw_state.copy()
    size = int(raw[17])
    chunks = (size - size // 2, size // 2, 0, 0)
    want = max(
        transport_chunk_time(8.0 * c, float(raw[i] * raw[12 + i]), float(raw[4 + i]), sender[i])
        for i, c in enumerate(chunks) if c > 0
    )
    assert predicted_time_s(raw, chunks, sender) == pytest.approx(want, rel=1e-12)
    _, _, _, _, info = env.step_decision(Decision(4, chunks))
    assert info["expected_time_s"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(
    "bad",
    [(WARM_SENDER,) * 3, [WARM_SENDER] * 4, (WARM_SENDER, WARM_SENDER, WARM_SENDER, {"setup_rtts": 1.0}),
     WARM_SENDER],
)
def test_bad_sender_transport_params_are_refused(bad: object) -> None:
    with pytest.raises(TypeError, match=r"SimConfig\.sender_transport_params"):
        SimConfig(sender_transport_params=bad)  # type: ignore[arg-type]
