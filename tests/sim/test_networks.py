"""Network presets and the physics options behind them, with known answers.

Each check builds streams with known rates and fixed per-attempt draws (as ``test_physics.py`` does),
so every expected number follows from the formulas of ``itp.sim.physics``: persistent windows and
slow-start restart after idle, per-path efficiency and extra loss, periodic collapse. The presets are
checked to override only what they document, and the environment to carry the window memory.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from itp.sim.env import PartitionEnv
from itp.sim.networks import NETWORK_NAMES, NETWORKS, network_config
from itp.sim.physics import (
    SimConfig,
    StreamParams,
    StreamTrajectory,
    apply_path_overrides,
    collapse_trajectory,
    simulate_chunk,
    simulate_task,
)

BIN_S = 0.1
LOSSLESS = SimConfig(
    loss_base=0.0, loss_congestion=0.0, hazard_base_per_s=0.0, hazard_congestion_per_s=0.0,
    jitter_fraction=0.0,
)
ATTEMPTS = LOSSLESS.max_attempts
W_BITS = 8.0 * LOSSLESS.initial_window_bytes


def flat(rate_bps: float, period_s: float = 100.0, congestion: float = 0.0) -> StreamTrajectory:
    n = round(period_s / BIN_S)
    return StreamTrajectory(np.full(n, rate_bps), np.full(n, congestion), bin_s=BIN_S)


def params(rtt_s: float = 0.05, **extra: float) -> StreamParams:
    return StreamParams(base_rtt_s=rtt_s, jitter_s=0.0, loss_multiplier=1.0, **extra)


def ok_draws() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.ones(ATTEMPTS), np.zeros(ATTEMPTS), np.zeros(ATTEMPTS)


# ---------------------------------------------------------------------------------------------
# Presets


def test_every_preset_is_valid_and_sim_is_the_training_simulator() -> None:
    assert NETWORK_NAMES == ("sim", "warm", "ss-restart", "lossy", "collapse")
    assert network_config("sim") == SimConfig()
    for name in NETWORK_NAMES:
        cfg = network_config(name)
        default = SimConfig()
        names = [f.name for f in dataclasses.fields(SimConfig)]
        changed = {n for n in names if getattr(cfg, n) != getattr(default, n)}
        overrides = NETWORKS[name].overrides
        assert changed <= set(overrides), name  # nothing beyond what the preset names
        assert all(getattr(cfg, k) == v for k, v in overrides.items()), name
        assert NETWORKS[name].description


def test_presets_change_physics_only_and_keep_the_base() -> None:
    base = SimConfig(tasks_per_episode=7, mean_interarrival_s=0.5)
    warm = network_config("warm", base)
    assert (warm.tasks_per_episode, warm.mean_interarrival_s) == (7, 0.5)
    assert (warm.setup_rtts, warm.slow_start, warm.persistent_window) == (0.5, False, False)
    ss = network_config("ss-restart")
    assert (ss.setup_rtts, ss.slow_start, ss.persistent_window) == (0.5, True, True)
    lossy = network_config("lossy")
    assert lossy.path_efficiency[0] < 1.0 and lossy.path_loss_probability[0] > 0.0
    assert lossy.path_efficiency[1:] == (1.0, 1.0, 1.0) and lossy.path_loss_probability[1:] == (0, 0, 0)
    assert network_config("collapse").collapse_stream == 0


@pytest.mark.parametrize(("name", "exc", "match"), [
    ("fast", ValueError, "unknown network 'fast'; expected one of sim, warm"),
    (3, TypeError, "network name must be a str, got int"),
])
def test_unknown_network_is_rejected_by_name(name: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        network_config(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value", "match"), [
    ("persistent_window", 1, "SimConfig.persistent_window must be a bool"),
    ("path_efficiency", (1.0, 1.0, 1.0), "SimConfig.path_efficiency must be a tuple of 4"),
    ("path_efficiency", (0.0, 1.0, 1.0, 1.0), r"SimConfig.path_efficiency values must be in \(0.0, 1.0\]"),
    ("path_loss_probability", (0.95, 0.0, 0.0, 0.0), "SimConfig.path_loss_probability values"),
    ("path_loss_hazard_per_s", (0.0, -1.0, 0.0, 0.0), "SimConfig.path_loss_hazard_per_s values"),
    ("path_loss_hazard_per_s", (0.0, math.nan, 0.0, 0.0), "SimConfig.path_loss_hazard_per_s values"),
    ("collapse_stream", 4, "SimConfig.collapse_stream must be None or an int in 0..3, got 4"),
    ("collapse_stream", True, "SimConfig.collapse_stream must be None or an int"),
    ("collapse_duration_s", 30.0, r"SimConfig.collapse_duration_s \(30.0\) must be < collapse_period_s"),
    ("collapse_period_s", 0.0, "SimConfig.collapse_period_s must be finite and > 0"),
    ("collapse_rate_factor", 1.0, r"SimConfig.collapse_rate_factor must be in \(0, 1\), got 1.0"),
])
def test_variant_options_reject_bad_values_naming_the_field(field: str, value: object, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        SimConfig(**{field: value})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# warm: no set-up beyond the request, no slow start


def test_warm_chunk_is_half_an_rtt_of_request_then_the_rate() -> None:
    cfg = network_config("warm", LOSSLESS)
    rtt, r, size = 0.05, 1e9, 10_000_000
    res = simulate_chunk(flat(r), params(rtt), cfg, 2.0, size, *ok_draws())
    assert res.finish_s - 2.0 == pytest.approx(0.5 * rtt + 8 * size / r + 0.5 * rtt, rel=1e-12)
    # The whole transfer is steady state: the rate sample is the available rate.
    assert res.rate_sample_bps == pytest.approx(r)


# ---------------------------------------------------------------------------------------------
# ss-restart: persistent windows, slow-start restart after idle


SS = network_config("ss-restart", LOSSLESS)


def test_a_fresh_stream_ramps_from_the_initial_window() -> None:
    rtt, r, size = 0.05, 1e9, 100_000_000
    bdp = r * rtt
    res = simulate_chunk(flat(r), params(rtt), SS, 0.0, size, *ok_draws())
    ramp_s = rtt * math.log2(bdp / W_BITS)
    expected = 0.5 * rtt + ramp_s + (8 * size - (bdp - W_BITS)) / r + 0.5 * rtt
    assert res.finish_s == pytest.approx(expected, rel=1e-12)
    assert res.end_window_bits == pytest.approx(bdp)


def test_a_window_kept_within_an_rto_skips_the_ramp() -> None:
    rtt, r, size = 0.05, 1e9, 100_000_000
    bdp = r * rtt
    rto = max(SS.rto_min_s, 2 * rtt)  # 0.2 s
    res = simulate_chunk(flat(r), params(rtt), SS, 0.0, size, *ok_draws(), prior_window_bits=bdp, idle_s=rto)
    assert res.finish_s == pytest.approx(0.5 * rtt + 8 * size / r + 0.5 * rtt, rel=1e-12)


def test_idle_longer_than_an_rto_restarts_slow_start() -> None:
    rtt, r, size = 0.05, 1e9, 100_000_000
    bdp = r * rtt
    fresh = simulate_chunk(flat(r), params(rtt), SS, 0.0, size, *ok_draws())
    idle = simulate_chunk(
        flat(r), params(rtt), SS, 0.0, size, *ok_draws(), prior_window_bits=bdp, idle_s=0.2001
    )
    assert idle.finish_s == fresh.finish_s


def test_a_smaller_kept_window_ramps_from_that_window() -> None:
    rtt, r, size = 0.05, 1e9, 100_000_000
    bdp = r * rtt
    w_prev = 16 * W_BITS
    res = simulate_chunk(
        flat(r), params(rtt), SS, 0.0, size, *ok_draws(), prior_window_bits=w_prev, idle_s=0.0
    )
    expected = 0.5 * rtt + rtt * math.log2(bdp / w_prev) + (8 * size - (bdp - w_prev)) / r + 0.5 * rtt
    assert res.finish_s == pytest.approx(expected, rel=1e-12)


def test_a_chunk_inside_the_ramp_ends_with_the_doubled_window() -> None:
    rtt, r, size = 0.05, 1e9, 50_000
    res = simulate_chunk(flat(r), params(rtt), SS, 0.0, size, *ok_draws())
    # n rounds send W (2^n - 1) bits and end with window W 2^n = W + bits.
    assert res.end_window_bits == pytest.approx(W_BITS + 8 * size)
    assert res.finish_s == pytest.approx(0.5 * rtt + rtt * math.log2(1 + 8 * size / W_BITS) + 0.5 * rtt)


def test_without_persistent_window_the_kept_window_is_ignored() -> None:
    cfg = dataclasses.replace(SS, persistent_window=False)
    rtt, r, size = 0.05, 1e9, 100_000_000
    a = simulate_chunk(flat(r), params(rtt), cfg, 0.0, size, *ok_draws())
    b = simulate_chunk(
        flat(r), params(rtt), cfg, 0.0, size, *ok_draws(), prior_window_bits=r * rtt, idle_s=0.0
    )
    assert a == b


def test_a_resend_after_an_rto_restarts_from_the_initial_window() -> None:
    rtt, r, size = 0.05, 1e9, 100_000_000
    bdp = r * rtt
    u = np.array([0.0, 1.0, 1.0, 1.0])  # the first attempt is doomed (u < q0 = 0.2), the rest succeed
    frac = np.array([0.5, 0.0, 0.0, 0.0])  # and dies half-way
    ps = params(rtt, extra_loss_probability=0.2)
    res = simulate_chunk(flat(r), ps, SS, 0.0, size, u, frac, np.zeros(ATTEMPTS),
                         prior_window_bits=bdp, idle_s=0.0)
    t_fail = 0.5 * rtt + 0.5 * 8 * size / r  # kept window: no ramp on the first attempt
    t1 = t_fail + max(SS.rto_min_s, 2 * rtt)
    ramp_s = rtt * math.log2(bdp / W_BITS)
    expected = t1 + 0.5 * rtt + ramp_s + (8 * size - (bdp - W_BITS)) / r + 0.5 * rtt
    assert (res.attempts, res.retransmissions, res.success) == (2, 1, True)
    assert res.finish_s == pytest.approx(expected, rel=1e-12)


def test_a_chunk_that_fails_every_attempt_ends_with_the_initial_window() -> None:
    ps = params(0.05, extra_loss_probability=0.9)
    res = simulate_chunk(flat(1e9), ps, SS, 0.0, 10_000_000, np.zeros(ATTEMPTS), np.full(ATTEMPTS, 0.5),
                         np.zeros(ATTEMPTS))
    assert not res.success and res.end_window_bits == W_BITS


def test_simulate_task_passes_each_streams_memory() -> None:
    rtt, r = 0.05, 1e9
    bdp = r * rtt
    streams, ps = [flat(r)] * 2, [params(rtt)] * 2
    draws = (np.ones((2, ATTEMPTS)), np.zeros((2, ATTEMPTS)), np.zeros((2, ATTEMPTS)))
    chunks = [50_000_000, 50_000_000]
    res = simulate_task(streams, ps, SS, 0.0, chunks, *draws, prior_window_bits=[bdp, 0.0], idle_s=[0.0, 0.0])
    warm_chunk, fresh_chunk = res.chunks
    assert warm_chunk is not None and fresh_chunk is not None
    assert warm_chunk.finish_s == pytest.approx(0.5 * rtt + 8 * chunks[0] / r + 0.5 * rtt)
    assert fresh_chunk.finish_s > warm_chunk.finish_s
    assert res.finish_s == fresh_chunk.finish_s


def test_env_back_to_back_tasks_keep_the_window() -> None:
    """Tasks queued back to back on one stream (idle gap 0): with persistent windows each chunk after
    the first starts at the kept window instead of ramping again, so the queue drains sooner."""
    base = SimConfig(tasks_per_episode=12, mean_interarrival_s=1e-6, fixed_task_size_bytes=20_000_000,
                     loss_base=0.0, loss_congestion=0.0, hazard_base_per_s=0.0, hazard_congestion_per_s=0.0)
    times, drained = {}, {}
    for persistent in (False, True):
        cfg = dataclasses.replace(base, setup_rtts=0.5, persistent_window=persistent)
        env = PartitionEnv(cfg)
        env.reset(seed=5)
        times[persistent] = [env.step(0)[4]["completion_time_s"] for _ in range(cfg.tasks_per_episode)]
        drained[persistent] = env.time_s
        last = env.last_outcome
        assert last is not None and last.chunks[0] is not None
        assert last.chunks[0].end_window_bits >= 8.0 * cfg.initial_window_bytes
    assert times[True][0] == times[False][0]  # the first chunk starts cold either way
    assert drained[True] < drained[False]


def test_env_simulate_action_is_pure_with_persistent_windows() -> None:
    env = PartitionEnv(network_config("ss-restart", SimConfig(tasks_per_episode=8)))
    env.reset(seed=3)
    for a in (14, 0, 5, 14):
        first = env.simulate_action(a)
        again = env.simulate_action(a)
        assert first == again
        _, reward, _, _, info = env.step(a)
        assert info["completion_time_s"] == first.completion_time_s and reward == first.reward


# ---------------------------------------------------------------------------------------------
# lossy: per-path efficiency and extra loss


def test_path_efficiency_scales_the_steady_rate() -> None:
    cfg = network_config("warm", LOSSLESS)
    rtt, r, size = 0.05, 1e9, 10_000_000
    res = simulate_chunk(flat(r), params(rtt, efficiency_factor=0.3), cfg, 0.0, size, *ok_draws())
    assert res.finish_s == pytest.approx(0.5 * rtt + 8 * size / (0.3 * r) + 0.5 * rtt, rel=1e-12)
    assert res.rate_sample_bps == pytest.approx(0.3 * r)


def test_extra_loss_probability_adds_to_q0() -> None:
    cfg = LOSSLESS  # q0 is exactly the extra probability here
    ps = params(0.05, extra_loss_probability=0.2)
    frac = np.full(ATTEMPTS, 0.5)
    below = simulate_chunk(flat(1e9), ps, cfg, 0.0, 1_000_000, np.array([0.1999, 1, 1, 1]), frac,
                           np.zeros(ATTEMPTS))
    above = simulate_chunk(flat(1e9), ps, cfg, 0.0, 1_000_000, np.array([0.2001, 1, 1, 1]), frac,
                           np.zeros(ATTEMPTS))
    assert below.failures == 1 and above.failures == 0


def test_extra_hazard_fails_an_attempt_at_the_exponential_time() -> None:
    cfg = network_config("warm", LOSSLESS)
    rtt, lam = 0.05, 0.05
    ps = params(rtt, extra_hazard_per_s=lam)
    u = np.array([0.5, 1.0, 1.0, 1.0])
    size = 1_000_000_000  # 8 s at 1 Gbit/s; tau = ln 2 / 0.05 = 13.9 s: survives
    ok = simulate_chunk(flat(1e9), ps, cfg, 0.0, size, u, np.zeros(ATTEMPTS), np.zeros(ATTEMPTS))
    assert ok.failures == 0
    big = 2_000_000_000  # 16 s of data: fails at t_data + ln 2 / lam
    res = simulate_chunk(flat(1e9), ps, cfg, 0.0, big, u, np.zeros(ATTEMPTS), np.zeros(ATTEMPTS))
    assert res.failures == 1
    t_fail = 0.5 * rtt + math.log(2) / lam
    t1 = t_fail + max(cfg.rto_min_s, 2 * rtt)
    assert res.finish_s == pytest.approx(t1 + 0.5 * rtt + 8 * big / 1e9 + 0.5 * rtt, rel=1e-9)


def test_path_overrides_apply_to_their_stream_only() -> None:
    cfg = network_config("lossy")
    p = params()
    lossy = apply_path_overrides(p, cfg, 0)
    assert (lossy.efficiency_factor, lossy.extra_loss_probability, lossy.extra_hazard_per_s) == (
        cfg.path_efficiency[0], cfg.path_loss_probability[0], cfg.path_loss_hazard_per_s[0]
    )
    assert apply_path_overrides(p, cfg, 1) is p
    assert apply_path_overrides(p, SimConfig(), 0) is p


def test_env_lossy_stream_fails_more_and_runs_slower() -> None:
    cfg = network_config("lossy", SimConfig(tasks_per_episode=40, fixed_task_size_bytes=50_000_000))
    env = PartitionEnv(cfg)
    env.reset(seed=11)
    assert env.stream_params[0].efficiency_factor == cfg.path_efficiency[0]
    assert env.stream_params[1].efficiency_factor == 1.0
    retrans = sum(env.step(0)[4]["retransmissions"] for _ in range(cfg.tasks_per_episode))
    plain = PartitionEnv(dataclasses.replace(cfg, path_loss_probability=(0.0,) * 4,
                                             path_loss_hazard_per_s=(0.0,) * 4))
    plain.reset(seed=11)
    retrans_plain = sum(plain.step(0)[4]["retransmissions"] for _ in range(cfg.tasks_per_episode))
    # 40 chunks at >= 0.2 extra failure probability each: far more resends than the default loss model.
    assert retrans >= 4 and retrans > retrans_plain


# ---------------------------------------------------------------------------------------------
# collapse: periodic rate collapse


COLLAPSE = SimConfig(collapse_stream=0, collapse_period_s=30.0, collapse_duration_s=4.0,
                     collapse_rate_factor=0.05)


def test_collapse_multiplies_the_rate_in_each_period() -> None:
    traj = collapse_trajectory(flat(1e8, period_s=120.0, congestion=0.1), COLLAPSE)
    for t, expected in ((0.0, 5e6), (3.95, 5e6), (4.0, 1e8), (29.9, 1e8), (30.0, 5e6), (64.0, 1e8)):
        assert traj.rate_at(t) == pytest.approx(expected), t
    assert traj.congestion_at(1.0) == pytest.approx(0.95) and traj.congestion_at(10.0) == pytest.approx(0.1)
    # Capacity over one period: 4 s at 5% and 26 s at full rate.
    assert traj.capacity_bits(30.0) == pytest.approx(4 * 5e6 + 26 * 1e8)
    # A transfer started in a collapse is stalled by it: 1e8 bits from t = 0 need 4 s (2e7 bits) + 0.8 s.
    assert traj.finish_time(0.0, 1e8) == pytest.approx(4.8)


def test_collapse_keeps_scale_offset_and_the_original() -> None:
    base = StreamTrajectory(np.full(600, 1.0), np.zeros(600), bin_s=BIN_S, scale=2e8, offset_s=1.0)
    traj = collapse_trajectory(base, COLLAPSE)
    assert (traj.scale, traj.offset_s) == (2e8, 1.0)
    assert traj.rate_at(-1.0) == pytest.approx(2e8 * 0.05)  # loop time 0
    assert traj.rate_at(3.5) == pytest.approx(2e8)  # loop time 4.5
    assert base.rate_at(-1.0) == pytest.approx(2e8)  # untouched


def test_env_collapses_only_the_chosen_stream_and_draws_nothing_more() -> None:
    cfg = SimConfig(tasks_per_episode=4)
    plain, collapsed = PartitionEnv(cfg), PartitionEnv(network_config("collapse", cfg))
    plain.reset(seed=2)
    collapsed.reset(seed=2)
    a, b = plain.streams, collapsed.streams
    grid = np.arange(0.0, 300.0, 0.05)
    for i in (1, 2, 3):
        assert [a[i].rate_at(t) for t in grid] == [b[i].rate_at(t) for t in grid]
    assert plain.stream_params == collapsed.stream_params
    assert b[0].mean_rate_bps < a[0].mean_rate_bps
    assert (b[0].scale, b[0].offset_s) == (a[0].scale, a[0].offset_s)
    assert plain.task_size_bytes == collapsed.task_size_bytes
    assert plain.task_arrival_s == collapsed.task_arrival_s
