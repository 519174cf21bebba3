"""Offline gate and canary: worse candidates are rejected or rolled back, equal ones promoted."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from lifecycle_helpers import make_partitioner, run_traffic
from model_factory import write_constant_model, write_model, write_nan_region_model

from itp.learning.rollout import (
    ArmStats,
    CanaryConfig,
    CanaryRollout,
    GateConfig,
    holdout_newest,
    offline_gate,
    td_error_mse,
)
from itp.learning.sequential import constant_boundary
from itp.model_loading import load_model
from itp.partitioner import Decision, OutcomeRecord, Task
from itp.ring import TransitionBatch
from itp.sim import SimConfig

GATE = GateConfig(episodes=2, seed=3, sim_config=SimConfig(tasks_per_episode=16))


def holdout(n: int = 200, seed: int = 0) -> TransitionBatch:
    rng = np.random.default_rng(seed)
    return TransitionBatch(
        states=rng.random((n, 20), dtype=np.float32),
        actions=rng.integers(0, 15, n),
        rewards=rng.normal(0.5, 1.0, n).astype(np.float32),
        next_states=rng.random((n, 20), dtype=np.float32),
        dones=np.zeros(n, dtype=np.float32),
    )


def test_deliberately_worse_candidate_is_rejected(tmp_path: Path) -> None:
    current = load_model(write_constant_model(tmp_path / "good.onnx", 14, version="1.0.0"))
    worse = load_model(write_constant_model(tmp_path / "bad.onnx", 0, version="1.0.1"))
    result = offline_gate(worse, current, holdout(), GATE)
    assert not result.passed
    assert "simulator mean reward" in result.reason
    assert result.sim_reward_candidate is not None and result.sim_reward_current is not None
    assert result.sim_reward_candidate < result.sim_reward_current


def test_equal_candidate_passes_with_both_checks(tmp_path: Path) -> None:
    current = load_model(write_constant_model(tmp_path / "a.onnx", 14, version="1.0.0"))
    same = load_model(write_constant_model(tmp_path / "b.onnx", 14, version="1.0.1"))
    result = offline_gate(same, current, holdout(), GATE)
    assert result.passed, result.reason
    assert result.td_mse_candidate == pytest.approx(result.td_mse_current)
    assert result.holdout_rows == 200


def test_candidate_worse_on_held_back_experience_is_rejected(tmp_path: Path) -> None:
    """Same greedy actions (same simulator score) but Q-values far from the logged returns."""
    current = load_model(write_constant_model(tmp_path / "a.onnx", 14, version="1.0.0"))
    w, b = (
        [np.zeros((o, i), np.float32) for i, o in ((20, 128), (128, 128), (128, 64), (64, 15))],
        [np.zeros(o, np.float32) for o in (128, 128, 64, 15)],
    )
    b[-1][:] = 40.0
    b[-1][14] = 41.0  # argmax still 14, but every Q-value ~40 while rewards are ~0.5
    far = load_model(write_model(tmp_path / "far.onnx", version="1.0.1", weights=w, biases=b))
    result = offline_gate(far, current, holdout(), GATE)
    assert not result.passed and "held-back TD error" in result.reason


def test_td_error_matches_reference(tmp_path: Path) -> None:
    m = load_model(write_model(tmp_path / "m.onnx", seed=3))
    h = holdout(50)
    q = m.q_values_batch(h.states).astype(np.float64)
    qn = m.q_values_batch(h.next_states).astype(np.float64)
    ref = np.mean([(h.rewards[i] + 0.3 * qn[i].max() - q[i, h.actions[i]]) ** 2 for i in range(50)])
    assert td_error_mse(m, h, 0.3) == pytest.approx(ref, rel=1e-9)


def test_arm_stats_welford_matches_numpy() -> None:
    x = np.random.default_rng(1).normal(2.0, 3.0, 1000)
    s = ArmStats()
    for v in x:
        s.add(float(v), True)
    assert s.mean == pytest.approx(x.mean()) and s.variance == pytest.approx(x.var(ddof=1))
    assert s.as_dict()["mean_goodput_bps"] is None  # no goodput was given
    g = np.random.default_rng(2).lognormal(16.0, 1.0, 1000)
    t = ArmStats()
    for v, w in zip(x, g, strict=True):
        t.add(float(v), True, float(w))
    t.add(0.0, True, math.nan)  # an unknown goodput counts for the reward only
    assert t.n == 1001 and t.goodput_n == 1000
    assert t.goodput_mean == pytest.approx(g.mean()) and t.goodput_variance == pytest.approx(g.var(ddof=1))
    assert t.as_dict()["mean_goodput_bps"] == pytest.approx(g.mean())


def _outcomes_by_arm(bad_version: str | None, seed: int = 0):  # type: ignore[no-untyped-def]
    """Outcome generator: seeded noise; decisions of ``bad_version`` fail and crawl."""
    rng = np.random.default_rng(seed)

    def outcome(d: Decision) -> dict[str, object]:
        if d.model_version == bad_version:
            return {"throughput_bps": 1e5, "latency_s": 5.0, "success": False}
        t = float(rng.uniform(0.03, 0.09))
        return {"throughput_bps": 8 * 1e6 / t, "latency_s": t, "success": bool(rng.random() < 0.97)}

    return outcome


CANARY = CanaryConfig(
    shares=(0.1, 0.5, 1.0), min_outcomes_per_stage=60, max_outcomes_per_stage=5000, margin=0.2
)


def test_canary_promotes_a_candidate_that_is_not_worse(tmp_path: Path) -> None:
    p = make_partitioner(write_constant_model(tmp_path / "a.onnx", 14, version="1.0.0"), seed=4)
    cand = load_model(write_constant_model(tmp_path / "b.onnx", 14, version="1.0.1"))
    canary = CanaryRollout(p, cand, CANARY)
    p.add_outcome_listener(canary.on_outcome)
    outcome = _outcomes_by_arm(None)
    shares = []
    for k in range(40):
        run_traffic(p, 200, prefix=f"r{k}-", outcome=outcome)
        shares.append(canary.share)
        if canary.step() != "running":
            break
    assert canary.state == "promoted", canary.reason
    assert 0.5 in shares and len(canary.stages_passed) == 2
    assert p.model is cand and p.candidate is None
    # Each stage's record keeps the arms' goodput beside the reward it judged (8 Mbit per 30-90 ms).
    for stage in canary.stages_passed:
        for arm in ("current", "candidate"):
            g = stage["arms"][arm]["mean_goodput_bps"]
            assert g is not None and 8e6 / 0.09 < g < 8e6 / 0.03


def test_candidate_that_turns_bad_in_the_canary_is_rolled_back(tmp_path: Path) -> None:
    p = make_partitioner(write_constant_model(tmp_path / "a.onnx", 14, version="1.0.0"), seed=5)
    cur = p.model
    cand = load_model(write_constant_model(tmp_path / "b.onnx", 14, version="1.0.1"))
    canary = CanaryRollout(p, cand, CANARY)
    p.add_outcome_listener(canary.on_outcome)
    good = _outcomes_by_arm(None)
    # Stage 1: the candidate behaves; it advances to 50%.
    while canary.share == 0.1 and canary.state == "running":
        run_traffic(p, 200, prefix=f"g{canary.stats()['arms']['candidate']['n']}-", outcome=good)
        canary.step()
    assert canary.state == "running" and canary.share == 0.5
    # Then it turns bad: its tasks fail.
    bad = _outcomes_by_arm("1.0.1", seed=1)
    for k in range(20):
        run_traffic(p, 100, prefix=f"b{k}-", outcome=bad)
        if canary.step() != "running":
            break
    assert canary.state == "rolled_back" and "worse" in canary.reason
    assert p.model is cur and p.candidate is None and p.canary_share == 0.0
    assert all(p.partition_task(Task(f"after{i}", 10**6)).model_version == "1.0.0" for i in range(50))


def test_candidate_fault_rolls_back_at_once(tmp_path: Path) -> None:
    p = make_partitioner(write_constant_model(tmp_path / "a.onnx", 14, version="1.0.0"))
    cand = load_model(write_nan_region_model(tmp_path / "nan.onnx", version="1.0.1"))
    canary = CanaryRollout(p, cand, CanaryConfig(shares=(0.5, 1.0), min_outcomes_per_stage=10))
    p.add_fault_listener(canary.on_fault)
    for i in range(4):
        p.update_stream(i, bandwidth_bps=1e6, latency_s=0.01)
    for i in range(40):  # huge tasks on slow streams: the candidate's NaN region
        p.partition_task(Task(f"x{i}", 2**39, 0.5))
        if p.candidate is None:
            break
    assert p.candidate is None  # routing stopped on the first fault
    assert canary.step() == "rolled_back" and "nan_output" in canary.reason
    assert p.model is not None and p.model.version == "1.0.0"


def test_canary_config_validation() -> None:
    for bad in (
        {"shares": (0.5, 0.1)},
        {"shares": ()},
        {"confidence": 0.4},
        {"margin": -1.0},
        {"min_outcomes_per_stage": 1},
        {"goodput_margin": 1.0},
        {"goodput_margin": -0.1},
        {"goodput_margin": math.nan},
        {"size_strata_bytes": (4096, 1024)},
    ):
        with pytest.raises(ValueError, match="CanaryConfig"):
            CanaryConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"CanaryConfig\.size_strata_bytes"):
        CanaryConfig(size_strata_bytes=(1.5,))  # type: ignore[arg-type]
    assert CanaryConfig(size_strata_bytes=[10, 20]).size_strata_bytes == (10, 20)  # type: ignore[arg-type]


SMALL, LARGE = 64 << 10, 16 << 20


def _record(arm: str, version: str, size_bytes: int, reward: float, goodput_bps: float) -> OutcomeRecord:
    return OutcomeRecord(arm, version, "model", reward, True, 0.1, goodput_bps, 0.1, size_bytes=size_bytes)


def _feed_mixed(canary: CanaryRollout, rng: np.random.Generator, n: int, large_share: dict[str, float],
                delta_reward: float, goodput_factor: float) -> None:
    """``n`` outcomes per arm. A task's reward and goodput depend on its size (small: reward 0.5, 8
    Mbit/s; large: 2.0, 80 Mbit/s) far more than on its arm; the candidate adds ``delta_reward`` and
    multiplies the goodput by ``goodput_factor``; each arm draws large tasks with its own share."""
    for arm, version in (("current", "1.0.0"), ("candidate", "1.0.1")):
        for _ in range(n):
            large = rng.random() < large_share[arm]
            reward = (2.0 if large else 0.5) + rng.normal(0.0, 0.1)
            goodput = (80e6 if large else 8e6) * rng.lognormal(0.0, 0.1)
            if arm == "candidate":
                reward, goodput = reward + delta_reward, goodput * goodput_factor
            canary.on_outcome(_record(arm, version, LARGE if large else SMALL, reward, goodput))


def test_the_verdict_compares_the_arms_within_size_strata(tmp_path: Path) -> None:
    """The candidate is worse on every task size (reward -0.2) but its arm drew more large tasks (whose
    reward is higher whatever the model): pooled means call it better, the stratified verdict rolls it
    back. The pooled canary (``size_strata_bytes=()``, the old behaviour) is fooled."""
    cand = load_model(write_constant_model(tmp_path / "b.onnx", 14, version="1.0.1"))
    mix = {"current": 0.3, "candidate": 0.6}
    verdicts = {}
    for strata in ((), (1 << 20,)):
        p = make_partitioner(write_constant_model(tmp_path / "a.onnx", 14, version="1.0.0"))
        config = CanaryConfig(shares=(0.5, 1.0), min_outcomes_per_stage=100, size_strata_bytes=strata,
                              goodput_margin=None)
        canary = CanaryRollout(p, cand, config)
        _feed_mixed(canary, np.random.default_rng(3), 300, mix, delta_reward=-0.2, goodput_factor=1.0)
        verdicts[strata] = canary.judge()
        canary.step()
        if strata:
            assert canary.state == "rolled_back" and "stratified" in canary.reason, canary.reason
            assert p.candidate is None and p.model is not None and p.model.version == "1.0.0"
    pooled, stratified = verdicts[()], verdicts[(1 << 20,)]
    assert pooled.action == "advance" and pooled.estimator == "pooled" and pooled.reward_difference > 0.2
    assert stratified.action == "rollback" and stratified.why == "reward"
    assert stratified.estimator == "stratified"
    assert stratified.reward_difference == pytest.approx(-0.2, abs=0.03)
    assert stratified.reward_se < pooled.reward_se


def test_a_candidate_whose_goodput_is_worse_is_rolled_back_whatever_its_reward(tmp_path: Path) -> None:
    cand = load_model(write_constant_model(tmp_path / "b.onnx", 14, version="1.0.1"))
    mix = {"current": 0.5, "candidate": 0.5}
    outcomes = {}
    for goodput_margin in (None, 0.05):
        p = make_partitioner(write_constant_model(tmp_path / "a.onnx", 14, version="1.0.0"))
        config = CanaryConfig(shares=(0.5, 1.0), min_outcomes_per_stage=100, goodput_margin=goodput_margin)
        canary = CanaryRollout(p, cand, config)
        # The reward says +0.1; the goodput is 20% lower on every size.
        _feed_mixed(canary, np.random.default_rng(4), 200, mix, delta_reward=0.1, goodput_factor=0.8)
        v = canary.judge()
        assert v.goodput_ratio == pytest.approx(0.8, abs=0.03) if goodput_margin is not None else True
        outcomes[goodput_margin] = (v, canary.step(), canary.reason)
        final = json.loads(json.dumps(canary.final_stats, allow_nan=False))  # what the history records
        assert final["d"] == pytest.approx(0.1, abs=0.05)
        if goodput_margin is None:
            assert final["goodput_ratio"] is None  # not judged
        else:
            assert final["goodput_ratio"] == pytest.approx(v.goodput_ratio)
    assert outcomes[None][1] == "promoted"  # the reward alone promotes it
    v, state, reason = outcomes[0.05]
    assert v.action == "rollback" and v.why == "goodput" and state == "rolled_back"
    assert "goodput worse" in reason


def test_a_stage_record_keeps_the_strata_and_the_estimates(tmp_path: Path) -> None:
    p = make_partitioner(write_constant_model(tmp_path / "a.onnx", 14, version="1.0.0"))
    cand = load_model(write_constant_model(tmp_path / "b.onnx", 14, version="1.0.1"))
    canary = CanaryRollout(p, cand, CanaryConfig(shares=(0.5, 1.0), min_outcomes_per_stage=100))
    _feed_mixed(canary, np.random.default_rng(5), 150, {"current": 0.5, "candidate": 0.5}, 0.0, 1.0)
    assert canary.step() == "promoted"
    (stage,) = canary.stages_passed
    assert stage["estimator"] == "stratified" and stage["goodput_ratio"] == pytest.approx(1.0, abs=0.05)
    strata = stage["strata"]
    assert [s["below_bytes"] for s in strata] == [*CanaryConfig().size_strata_bytes, None]
    assert sum(s["current"]["n"] for s in strata) == 150 and strata[0]["candidate"]["n"] > 40
    assert strata[3]["current"]["n"] == 0 and strata[3]["current"]["mean_goodput_bps"] is None
    with pytest.raises(ValueError, match="episodes"):
        GateConfig(episodes=0)


# ------------------------------------------------------------------------------ off-policy gate

#: The known reward function of the logged-data tests: action 3 is best (1.0), action 14 (what the
#: current model takes) is second (0.6), every other action is poor (0.1); noise sd 0.3.
MEAN_REWARD = np.full(15, 0.1)
MEAN_REWARD[3], MEAN_REWARD[14] = 1.0, 0.6
BEHAVIOUR_EPSILON = 0.5


def logged_by_current(n: int, seed: int = 0, propensities: bool = True) -> TransitionBatch:
    """Decisions of an epsilon-greedy behaviour policy around the current model (greedy action 14), with
    the propensity of each executed action, and rewards drawn from :data:`MEAN_REWARD`."""
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
        propensities=mu.astype(np.float32) if propensities else None,
    )


OFFPOLICY = GateConfig(episodes=1, seed=3, sim_config=SimConfig(tasks_per_episode=8), target_epsilon=0.05)


@pytest.mark.parametrize("estimator", ["dr", "snips"])
def test_offpolicy_gate_passes_a_known_better_and_rejects_a_known_worse_candidate(
    tmp_path: Path, estimator: str
) -> None:
    current = load_model(write_constant_model(tmp_path / "cur.onnx", 14, version="1.0.0"))
    better = load_model(write_constant_model(tmp_path / "better.onnx", 3, version="1.0.1"))
    worse = load_model(write_constant_model(tmp_path / "worse.onnx", 0, version="1.0.2"))
    logs = logged_by_current(4000)
    cfg = dataclasses.replace(OFFPOLICY, estimator=estimator)
    good = offline_gate(better, current, logs, cfg)
    assert good.passed, good.reason
    assert good.evidence == "offpolicy" and good.sim_reward_candidate is None  # the simulator never ran
    op = good.offpolicy
    assert op is not None and op["candidate"]["method"] == estimator
    # True values at target epsilon 0.05: 0.95 * 1.0 + 0.05 * mean, and 0.95 * 0.6 + 0.05 * mean.
    eps, avg = 0.05, float(MEAN_REWARD.mean())
    true_diff = (1 - eps) * (1.0 - 0.6)
    assert op["lower"] <= true_diff <= op["upper"]
    assert op["current"]["value"] == pytest.approx((1 - eps) * 0.6 + eps * avg, abs=0.05)
    assert good.offpolicy_rows == 4000 and good.target_epsilon == 0.05
    bad = offline_gate(worse, current, logs, cfg)
    assert not bad.passed and "may be worse" in bad.reason
    assert bad.offpolicy is not None and bad.offpolicy["upper"] < 0


def test_offpolicy_gate_accepts_the_same_policy_and_needs_logged_support(tmp_path: Path) -> None:
    current = load_model(write_constant_model(tmp_path / "cur.onnx", 14, version="1.0.0"))
    same = load_model(write_constant_model(tmp_path / "same.onnx", 14, version="1.0.1"))
    better = load_model(write_constant_model(tmp_path / "better.onnx", 3, version="1.0.2"))
    logs = logged_by_current(4000)
    assert offline_gate(same, current, logs, OFFPOLICY).passed
    # Action 3 was executed on ~130 of 4000 rows: a greedy target cannot rest on 1000 effective rows.
    strict = dataclasses.replace(
        OFFPOLICY, target_epsilon=0.0, min_effective_samples=1000.0, unsupported="reject"
    )
    result = offline_gate(better, current, logs, strict)
    assert not result.passed and "too little logged support" in result.reason
    assert result.evidence == "offpolicy" and result.sim_reward_candidate is None


def refusing_verdicts(n: int, refused: int, heuristic: int) -> np.ndarray:
    """Guard verdicts on every row: all actions let through but ``refused``; the heuristic's action."""
    mask = ((1 << 15) - 1) & ~(1 << refused)
    return np.full(n, mask | (heuristic << 16), dtype=np.int32)


def test_the_gate_scores_candidates_as_the_guard_lets_them_act(tmp_path: Path) -> None:
    # The known-better candidate takes action 3 everywhere; on these logs the guard refused action 3 on
    # every row, and the heuristic's action was the poor action 0: deployed with the guard, the candidate
    # would take action 0, not 3, so the gate must not pass it. Scored unguarded, it passes.
    current = load_model(write_constant_model(tmp_path / "cur.onnx", 14, version="1.0.0"))
    better = load_model(write_constant_model(tmp_path / "better.onnx", 3, version="1.0.1"))
    logs = dataclasses.replace(logged_by_current(4000), guard_verdicts=refusing_verdicts(4000, 3, 0))
    guarded = offline_gate(better, current, logs, OFFPOLICY)
    assert not guarded.passed and "may be worse" in guarded.reason and guarded.evidence == "offpolicy"
    assert guarded.guarded_rows == 4000
    assert guarded.offpolicy is not None
    # As deployed: 0.95 on action 0 (0.1) against 0.95 on action 14 (0.6).
    assert guarded.offpolicy["lower"] <= -0.95 * 0.5 <= guarded.offpolicy["upper"]
    unguarded = offline_gate(better, current, logs, dataclasses.replace(OFFPOLICY, target_guard=False))
    assert unguarded.passed and unguarded.guarded_rows == 0
    # The current model's action 14 is let through: with or without the guard it is scored the same.
    same = load_model(write_constant_model(tmp_path / "same.onnx", 14, version="1.0.2"))
    result = offline_gate(same, current, logs, OFFPOLICY)
    assert result.passed and result.offpolicy is not None and result.offpolicy["difference"] == 0.0
    # Rows without verdicts (-1) are scored unguarded.
    none = dataclasses.replace(logs, guard_verdicts=np.full(4000, -1, dtype=np.int32))
    assert offline_gate(better, current, none, OFFPOLICY).passed


def test_an_unsupported_candidate_is_rejected_by_default_or_judged_by_the_simulator(tmp_path: Path) -> None:
    """Too little logged support is inconclusive, not negative: by default the candidate is discarded
    (the reason says why); with ``unsupported="simulator"`` the simulator check decides (and says so)."""
    current = load_model(write_constant_model(tmp_path / "cur.onnx", 14, version="1.0.0"))
    better = load_model(write_constant_model(tmp_path / "better.onnx", 3, version="1.0.1"))
    logs = logged_by_current(4000)
    cfg = dataclasses.replace(OFFPOLICY, target_epsilon=0.0, min_effective_samples=1000.0, td_margin=1e9)
    assert cfg.unsupported == "reject"
    rejected = offline_gate(better, current, logs, cfg)
    assert not rejected.passed and rejected.evidence == "offpolicy"
    assert "too little logged support" in rejected.reason and rejected.sim_reward_candidate is None
    assert rejected.offpolicy is not None and rejected.offpolicy["supported"] is False
    result = offline_gate(better, current, logs, dataclasses.replace(cfg, unsupported="simulator"))
    assert result.evidence == "simulator" and "inconclusive" in result.reason
    assert "too little logged support" in result.reason
    assert result.offpolicy is not None and result.offpolicy["supported"] is False
    assert result.sim_reward_candidate is not None and result.sim_reward_current is not None
    assert result.passed == (result.sim_reward_candidate >= result.sim_reward_current)
    # A supported comparison is never overridden by the simulator: the known-worse candidate stays out.
    worse = load_model(write_constant_model(tmp_path / "worse.onnx", 0, version="1.0.2"))
    lenient = dataclasses.replace(OFFPOLICY, td_margin=1e9, unsupported="simulator")
    bad = offline_gate(worse, current, logs, lenient)
    assert not bad.passed and bad.evidence == "offpolicy" and bad.sim_reward_candidate is None


def test_a_candidate_outside_the_behaviour_policys_support_is_not_passed(tmp_path: Path) -> None:
    """Logs of a behaviour policy that explored among its 3 best actions only, and never on the rows it
    decided deterministically: a candidate whose greedy action lies outside that set on most rows cannot
    be judged by them (no importance weight reaches it), however good the reward model says it is. The
    per-row check sees it although every action was logged often enough for the count check."""
    current = load_model(write_constant_model(tmp_path / "cur.onnx", 14, version="1.0.0"))
    other = load_model(write_constant_model(tmp_path / "other.onnx", 3, version="1.0.1"))
    rng = np.random.default_rng(5)
    n = 3000
    q = current.q_values_batch(rng.random((n, 20), dtype=np.float32))
    top3 = np.argsort(-q, axis=1, kind="stable")[:, :3]
    assert not np.any(top3 == 3)  # action 3 is outside the current model's exploration set
    # Half the rows: epsilon-greedy (0.1) among the 3 best; the other half: action 3, deterministically
    # (say, a fallback), so action 3 is logged ~1 500 times but only on rows where nothing else could be.
    det = np.arange(n) < n // 2
    explore = rng.random(n) < 0.1
    pick = top3[np.arange(n), rng.integers(0, 3, n)]
    actions = np.where(det, 3, np.where(explore, pick, 14)).astype(np.int64)
    mu = np.where(det, 1.0, np.where(actions == 14, 0.9 + 0.1 / 3, 0.1 / 3))
    logs = TransitionBatch(
        states=rng.random((n, 20), dtype=np.float32),
        actions=actions,
        rewards=(np.where(actions == 3, 1.0, 0.5) + rng.normal(0, 0.1, n)).astype(np.float32),
        next_states=rng.random((n, 20), dtype=np.float32),
        dones=np.ones(n, dtype=np.float32),
        propensities=mu.astype(np.float32),
    )
    cfg = dataclasses.replace(OFFPOLICY, target_epsilon=0.1, target_top_k=3, min_effective_samples=10.0)
    result = offline_gate(other, current, logs, cfg)
    op = result.offpolicy
    assert op is not None and not result.passed and op["supported"] is False
    # The deterministic rows support action 3 alone: the candidate's exploration (2 x 0.1/3) is outside
    # there. The other rows support the current model's 3 best, not action 3: its greedy mass
    # (0.9 + 0.1/3) is outside there (its other two draws, actions 0 and 1, are among them).
    expected = 0.5 * (2 * 0.1 / 3) + 0.5 * (0.9 + 0.1 / 3)
    assert op["unsupported_share"] == pytest.approx(expected, abs=0.02)
    assert "could not take on the same row" in result.reason
    # Turned off, the same logs pass it: the estimate rests on the rows it can reach.
    off = offline_gate(other, current, logs, dataclasses.replace(cfg, max_unsupported_share=1.0))
    assert off.passed and off.offpolicy is not None and off.offpolicy["supported"] is True


def test_without_propensities_the_gate_falls_back_to_the_simulator_and_says_so(tmp_path: Path) -> None:
    current = load_model(write_constant_model(tmp_path / "cur.onnx", 14, version="1.0.0"))
    same = load_model(write_constant_model(tmp_path / "same.onnx", 14, version="1.0.1"))
    no_mu = logged_by_current(500, propensities=False)
    result = offline_gate(same, current, no_mu, OFFPOLICY)
    assert result.passed and result.evidence == "simulator" and result.offpolicy is None
    assert "none of the 500 held-back rows carries a behaviour propensity" in result.reason
    assert result.sim_reward_candidate is not None and result.sim_physics is not None
    # Some rows with propensities, but fewer than needed: still the simulator, with the count.
    mixed = logged_by_current(500)
    assert mixed.propensities is not None
    mixed.propensities[100:] = np.nan
    partial = offline_gate(same, current, mixed, OFFPOLICY)
    assert partial.evidence == "simulator" and "only 100 of 500" in partial.reason
    assert partial.offpolicy_rows == 100
    # No current model (the heuristic serves): nothing to compare off-policy with.
    alone = offline_gate(same, None, logged_by_current(500), OFFPOLICY)
    assert alone.evidence == "simulator" and "no current model" in alone.reason


def test_mode_both_needs_both_verdicts(tmp_path: Path) -> None:
    current = load_model(write_constant_model(tmp_path / "cur.onnx", 14, version="1.0.0"))
    better = load_model(write_constant_model(tmp_path / "better.onnx", 3, version="1.0.1"))
    logs = logged_by_current(4000)
    both = dataclasses.replace(OFFPOLICY, mode="both", td_margin=1e9)
    result = offline_gate(better, current, logs, both)
    assert result.evidence == "both" and result.offpolicy is not None and result.offpolicy["passed"]
    assert result.sim_reward_candidate is not None and result.sim_reward_current is not None
    sim_ok = result.sim_reward_candidate >= result.sim_reward_current
    assert result.passed == sim_ok  # the off-policy part passed: the simulator decides
    sim_only = offline_gate(better, current, logs, dataclasses.replace(both, mode="simulator"))
    assert sim_only.offpolicy is None and sim_only.evidence == "simulator"


def test_offpolicy_verdict_uses_only_rows_with_propensities(tmp_path: Path) -> None:
    current = load_model(write_constant_model(tmp_path / "cur.onnx", 14, version="1.0.0"))
    better = load_model(write_constant_model(tmp_path / "better.onnx", 3, version="1.0.1"))
    logs = logged_by_current(6000)
    assert logs.propensities is not None
    logs.propensities[::3] = np.nan
    result = offline_gate(better, current, logs, OFFPOLICY)
    assert result.passed and result.offpolicy_rows == 4000 and result.holdout_rows == 6000
    assert result.offpolicy is not None and result.offpolicy["candidate"]["rows"] == 4000


def test_non_finite_candidate_fails_the_offpolicy_gate(tmp_path: Path) -> None:
    current = load_model(write_constant_model(tmp_path / "cur.onnx", 14, version="1.0.0"))
    nan_model = load_model(write_nan_region_model(tmp_path / "nan.onnx", version="1.0.1"))
    logs = logged_by_current(600)
    logs.states[:50, 17] = 1.0  # the model's NaN region: task-size feature far above the bandwidths
    logs.states[:50, 0:4] = 0.0
    result = offline_gate(nan_model, current, logs, OFFPOLICY)
    assert not result.passed and "non-finite Q-values" in result.reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mode", "sim"),
        ("estimator", "ips"),
        ("confidence", 0.5),
        ("confidence", 1.0),
        ("margin", -0.1),
        ("margin", float("nan")),
        ("min_effective_samples", 0.5),
        ("unsupported", "maybe"),
        ("max_unsupported_share", 1.5),
        ("max_unsupported_share", -0.1),
        ("min_action_rows", -1),
        ("max_extrapolated_share", 1.5),
        ("min_offpolicy_rows", 1),
        ("target_epsilon", 1.5),
        ("target_epsilon", True),
        ("target_guard", 1),
        ("target_guard_exploration", "yes"),
    ],
)
def test_gate_config_validation(field: str, value: object) -> None:
    with pytest.raises((ValueError, TypeError), match=f"GateConfig.{field}"):
        GateConfig(**{field: value})  # type: ignore[arg-type]


def test_holdout_newest_holds_back_the_newest_rows() -> None:
    train, held = holdout_newest(10, 0.3)
    np.testing.assert_array_equal(train, np.arange(7))
    np.testing.assert_array_equal(held, [7, 8, 9])
    assert len(holdout_newest(10, 0.0)[1]) == 0
    with pytest.raises(ValueError, match="fraction"):
        holdout_newest(10, 1.0)


def test_a_canary_continues_from_its_evidence(tmp_path: Path) -> None:
    """The evidence survives JSON, and a canary built from it judges exactly as the one that gathered it;
    malformed or mismatched evidence is refused, naming the field, before anything is routed."""
    cand = load_model(write_constant_model(tmp_path / "b.onnx", 14, version="1.0.1"))
    config = CanaryConfig(shares=(0.1, 0.5, 1.0), min_outcomes_per_stage=100)
    p = make_partitioner(write_constant_model(tmp_path / "a.onnx", 14, version="1.0.0"))
    first = CanaryRollout(p, cand, config)
    rng = np.random.default_rng(6)
    _feed_mixed(first, rng, 150, {"current": 0.5, "candidate": 0.5}, 0.0, 1.0)
    assert first.step() == "running" and first.share == 0.5  # stage 0 passed
    _feed_mixed(first, rng, 60, {"current": 0.5, "candidate": 0.5}, 0.0, 1.0)
    evidence = json.loads(json.dumps(first.evidence(), allow_nan=False))
    p2 = make_partitioner(write_constant_model(tmp_path / "a.onnx", 14, version="1.0.0"))
    again = CanaryRollout(p2, cand, config, evidence=evidence)
    assert again.share == 0.5 and p2.canary_share == 0.5 and again.stages_passed == first.stages_passed
    assert again.stats() == first.stats() and again.judge() == first.judge()
    assert again.candidate_outcomes == 60 and again.candidate_outcomes_counted == 0

    def bad(**change: object) -> dict[str, object]:
        return {**evidence, **change}

    cases = [
        (bad(candidate_version="9.9.9"), "evidence.candidate_version"),
        (bad(shares=[0.5, 1.0]), "evidence.shares"),
        (bad(size_strata_bytes=[]), "evidence.size_strata_bytes"),
        (bad(stage=3), "evidence.stage"),
        (bad(stage=True), "evidence.stage"),
        (bad(arms={"current": [1, 0, 0, 0, 0, 0, 0], "candidate": [1, 0, 0, 2, 0, 0, 0]}),
         "evidence.arms.current"),
        (bad(arms={**evidence["arms"], "candidate": [60, math.inf, 0, 0, 0, 0, 0]}),  # type: ignore[dict-item]
         "evidence.arms.candidate"),
        (bad(by_stratum={**evidence["by_stratum"], "current": []}),  # type: ignore[dict-item]
         "evidence.by_stratum.current"),
        (bad(stages_passed=[]), "evidence.stages_passed"),
    ]
    for broken, field in cases:
        p3 = make_partitioner(write_constant_model(tmp_path / "a.onnx", 14, version="1.0.0"))
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            CanaryRollout(p3, cand, config, evidence=broken)
        assert p3.candidate is None


def test_outcomes_from_many_threads_are_all_counted(tmp_path: Path) -> None:
    """Real threads report at once (as a sender's stream threads do): every outcome lands in its arm and
    its stratum, and the verdict reads a consistent copy meanwhile."""
    import threading

    p = make_partitioner(write_constant_model(tmp_path / "a.onnx", 14, version="1.0.0"))
    cand = load_model(write_constant_model(tmp_path / "b.onnx", 14, version="1.0.1"))
    canary = CanaryRollout(p, cand, CanaryConfig(shares=(0.5, 1.0), min_outcomes_per_stage=10**6,
                                                   max_outcomes_per_stage=10**6))
    per_thread = 2000

    def feed(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for i in range(per_thread):
            arm, version = ("candidate", "1.0.1") if i % 2 else ("current", "1.0.0")
            canary.on_outcome(_record(arm, version, LARGE if rng.random() < 0.5 else SMALL, 1.0, 1e7))

    threads = [threading.Thread(target=feed, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        assert canary.judge().action == "wait"
    for t in threads:
        t.join()
    stats = canary.stats()
    for arm in ("current", "candidate"):
        assert stats["arms"][arm]["n"] == 2 * per_thread
        assert sum(s[arm]["n"] for s in stats["strata"]) == 2 * per_thread
    assert canary.candidate_outcomes_counted == 2 * per_thread == canary.candidate_outcomes


def test_a_doubling_stage_is_judged_only_at_its_looks(tmp_path: Path) -> None:
    from statistics import NormalDist

    config = CanaryConfig(shares=(0.5, 1.0), min_outcomes_per_stage=100, max_outcomes_per_stage=1000,
                          looks="doubling")
    assert config.look_thresholds == (100, 200, 400, 800)
    geometric = dataclasses.replace(config, looks="geometric")
    assert CanaryConfig().looks == "geometric" and geometric.look_growth == 1.5
    assert geometric.look_thresholds == (100, 150, 225, 338, 506, 759)
    small = CanaryConfig(min_outcomes_per_stage=2, max_outcomes_per_stage=10, look_growth=1.2)
    assert small.look_thresholds == (2, 3, 4, 5, 6, 7, 9)  # rounded; a repeated count is skipped
    with pytest.raises(ValueError, match=r"CanaryConfig\.look_growth 1\.001 gives \d+ looks"):
        dataclasses.replace(geometric, look_growth=1.001)
    with pytest.raises(ValueError, match=r"CanaryConfig\.looks"):
        CanaryConfig(looks="sometimes")
    for bad in (1.0, 0.5, math.inf, True, "2"):
        with pytest.raises(ValueError, match=r"CanaryConfig\.look_growth"):
            CanaryConfig(look_growth=bad)  # type: ignore[arg-type]
    p = make_partitioner(write_constant_model(tmp_path / "a.onnx", 14, version="1.0.0"))
    cand = load_model(write_constant_model(tmp_path / "b.onnx", 14, version="1.0.1"))
    canary = CanaryRollout(p, cand, config)
    # 5 looks at the exact constant boundary; Bonferroni's for the same looks is higher.
    assert canary._z == pytest.approx(constant_boundary((100, 200, 400, 800, 1000), 0.05))
    bonferroni = dataclasses.replace(config, boundary="bonferroni")
    assert bonferroni.quantile == pytest.approx(NormalDist().inv_cdf(1 - 0.05 / 5))
    assert bonferroni.quantile > canary._z
    assert dataclasses.replace(config, looks="every").quantile == pytest.approx(NormalDist().inv_cdf(0.95))
    with pytest.raises(ValueError, match=r"CanaryConfig\.boundary"):
        CanaryConfig(boundary="pocock")
    rng = np.random.default_rng(8)
    mix = {"current": 0.5, "candidate": 0.5}
    _feed_mixed(canary, rng, 100, mix, delta_reward=-0.05, goodput_factor=1.0)  # ambiguous at 100
    first = canary.judge()
    assert first.look == 1 and first.action == "wait" and math.isfinite(first.reward_difference)
    assert canary.step() == "running"
    _feed_mixed(canary, rng, 50, mix, delta_reward=-0.05, goodput_factor=1.0)
    between = canary.judge()  # 150 per arm: no look is due
    assert between.look == 0 and between.action == "wait" and math.isnan(between.reward_difference)
    _feed_mixed(canary, rng, 50, mix, delta_reward=-0.05, goodput_factor=1.0)
    assert canary.judge().look == 2  # 200 per arm
    evidence = canary.evidence()
    assert evidence["looks_done"] == 1


class _StubPartitioner:
    """What a canary asks of a partitioner: route a share to the candidate, promote it."""

    def __init__(self) -> None:
        self.candidate: object = None
        self.share = 0.0

    def set_candidate(self, c: object, share: float = 0.0) -> None:
        self.candidate, self.share = c, share

    def promote_candidate(self) -> None:
        self.candidate = None


@dataclasses.dataclass(frozen=True)
class _StubCandidate:
    version: str = "1.0.1"


@pytest.mark.statistical
def test_looking_at_growing_counts_keeps_a_worse_candidate_out() -> None:
    """150 canaries of a candidate worse by twice the margin (reward sd 0.5, no size effect): judged at
    the default geometric looks at the exact constant boundary, at most 3% promote it (expected well
    under 1%); a candidate better by three times the margin is promoted in at least 95% of 40."""

    def run(delta: float, seed: int) -> str:
        rng = np.random.default_rng(seed)
        p = _StubPartitioner()
        config = CanaryConfig(shares=(0.5, 1.0), min_outcomes_per_stage=40, max_outcomes_per_stage=320,
                              size_strata_bytes=())
        canary = CanaryRollout(p, _StubCandidate("c"), config)  # type: ignore[arg-type]
        while canary.state == "running":
            cand = rng.random() < 0.5
            reward = rng.normal(delta if cand else 0.0, 0.5)
            canary.on_outcome(_record("candidate" if cand else "current", "c" if cand else "u", SMALL,
                                      reward, 1e7))
            canary.step()
        return canary.state

    worse = sum(run(-0.10, k) == "promoted" for k in range(150))
    better = sum(run(0.15, 1000 + k) == "promoted" for k in range(40))
    assert worse <= 4 and better >= 38


def test_merged_arm_stats_are_those_of_all_the_outcomes() -> None:
    rng = np.random.default_rng(9)
    parts, whole = [ArmStats() for _ in range(4)], ArmStats()
    for _ in range(500):
        r, g, ok = float(rng.normal(1.0, 0.7)), float(rng.lognormal(16.0, 1.0)), bool(rng.random() < 0.9)
        parts[int(rng.integers(0, 3))].add(r, ok, g)  # the last part stays empty
        whole.add(r, ok, g)
    merged = ArmStats.merged(parts)
    assert (merged.n, merged.successes, merged.goodput_n) == (whole.n, whole.successes, whole.goodput_n)
    pairs = ((merged.mean, whole.mean), (merged.variance, whole.variance),
             (merged.goodput_mean, whole.goodput_mean), (merged.goodput_variance, whole.goodput_variance))
    for a, b in pairs:
        assert a == pytest.approx(b, rel=1e-9)
    assert ArmStats.merged([]) == ArmStats()


def _pooled_canary(futility: float | None, looks: str = "geometric") -> CanaryRollout:
    config = CanaryConfig(shares=(0.5, 1.0), min_outcomes_per_stage=100, max_outcomes_per_stage=1000,
                          size_strata_bytes=(), goodput_margin=None, looks=looks, futility=futility)
    return CanaryRollout(_StubPartitioner(), _StubCandidate(), config)  # type: ignore[arg-type]


def _feed_exact(canary: CanaryRollout, n: int, delta: float, sd: float) -> None:
    """``n`` outcomes per arm whose rewards alternate ``mean +- sd``: the measured difference is exactly
    ``delta`` and each arm's spread about ``sd``, with no draw to make a verdict depend on the seed."""
    for arm, version, mean in (("current", "1.0.0", 0.0), ("candidate", "1.0.1", delta)):
        for k in range(n):
            canary.on_outcome(_record(arm, version, SMALL, mean + (sd if k % 2 else -sd), 1e7))


def test_a_candidate_that_cannot_pass_is_rolled_back_at_a_look() -> None:
    """At reward sd 1.3 (the testbed's) and 1 000 outcomes per stage, a candidate measured 0.15 below the
    current has almost no chance to show itself within 0.05 by the stage's end. At the first look (100
    per arm, a tenth of the last look's information) the rule does not act yet; at the third (225 per
    arm, over FUTILITY_FROM) the stage is rolled back for futility, with the chance in the verdict and
    the reason in the canary's. Without the futility rule, or judged after every outcome, it waits."""
    canary = _pooled_canary(0.01)
    _feed_exact(canary, 100, -0.15, 1.3)
    first = canary.judge()
    assert first.action == "wait" and first.look == 1 and math.isnan(first.pass_chance)
    assert canary.step() == "running"
    _feed_exact(canary, 125, -0.15, 1.3)
    v = canary.judge()
    assert v.action == "rollback" and v.why == "futility" and v.look == 3
    assert v.reward_difference == pytest.approx(-0.15) and 0.0 <= v.pass_chance < 0.01
    assert canary.step() == "rolled_back" and "chance to advance" in canary.reason
    patient = _pooled_canary(None)
    _feed_exact(patient, 225, -0.15, 1.3)
    w = patient.judge()
    assert w.action == "wait" and math.isnan(w.pass_chance)
    every = _pooled_canary(0.01, looks="every")
    _feed_exact(every, 225, -0.15, 1.3)
    assert every.judge().action == "wait"


def test_a_candidate_that_can_pass_keeps_its_stage() -> None:
    canary = _pooled_canary(0.01)
    _feed_exact(canary, 225, 0.1, 1.3)
    v = canary.judge()
    assert v.action == "wait" and 0.5 < v.pass_chance < 0.8
    assert canary.step() == "running"


@pytest.mark.statistical
def test_the_pass_chance_is_the_share_of_continuations_that_pass() -> None:
    """Conditional power against simulation: from a canary's state at a look (250 outcomes per arm,
    measured difference 0.05, sd 1.0), 2 000 continuations to the stage's last look (1 000 per arm)
    drawn with the measured difference as the truth; the share that pass the last look's test is the
    verdict's pass_chance within 0.045 (4 standard errors at 0.5)."""
    rng = np.random.default_rng(11)
    sd, n0, n1 = 1.0, 250, 1000
    start = _pooled_canary(None)
    _feed_exact(start, n0, 0.05, sd)
    v = start.judge()
    d, se = v.reward_difference, v.reward_se
    chance = start._pass_chance(d, se, n0, n0)
    assert 0.2 < chance < 0.8  # a case in between
    z, margin = start.config.quantile, start.config.margin
    se_end = se * math.sqrt(n0 / n1)  # what the formula assumes the last look's standard error is
    trials = 2000
    rest_cur = rng.normal(0.0, sd, (trials, n1 - n0)).mean(axis=1)
    rest_cand = rng.normal(d, sd, (trials, n1 - n0)).mean(axis=1)
    d_end = (n0 * d + (n1 - n0) * (rest_cand - rest_cur)) / n1
    passed = float(np.mean(d_end - z * se_end > -margin))
    assert abs(passed - chance) < 0.045
def test_futility_is_validated() -> None:
    for bad in (0.0, 0.5, -0.1, math.nan, True, "0.01"):
        with pytest.raises(ValueError, match=r"CanaryConfig\.futility"):
            CanaryConfig(futility=bad)  # type: ignore[arg-type]
    assert CanaryConfig().futility == 0.01 and CanaryConfig(futility=None).futility is None
