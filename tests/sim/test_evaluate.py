"""``itp.sim.evaluate``: identical episodes for every policy, exact summary statistics, the table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from itp.sim import PartitionEnv, SimConfig
from itp.sim.baselines import RoundRobinPolicy
from itp.sim.evaluate import EvaluationTable, episode_seed, evaluate
from itp.sim.policy import decide
from itp.sim.traces import discover_trace_files, shipped_traces_dir

SHIPPED = discover_trace_files(shipped_traces_dir())
SMALL = SimConfig(tasks_per_episode=16)


def test_same_seed_same_numbers() -> None:
    a = evaluate(["round-robin", "heuristic", "oracle"], episodes=3, seed=5, config=SMALL,
                 trace_files=SHIPPED)
    b = evaluate(["round-robin", "heuristic", "oracle"], episodes=3, seed=5, config=SMALL,
                 trace_files=SHIPPED)
    assert a.to_dict() == b.to_dict()
    c = evaluate(["round-robin", "heuristic", "oracle"], episodes=3, seed=6, config=SMALL,
                 trace_files=SHIPPED)
    assert c.row("heuristic") != a.row("heuristic")


def test_a_policy_row_does_not_depend_on_the_other_policies() -> None:
    alone = evaluate(["best-single"], episodes=2, seed=1, config=SMALL)
    together = evaluate(["oracle", "equal-split", "best-single"], episodes=2, seed=1, config=SMALL)
    assert alone.row("best-single") == together.row("best-single")


def test_rows_summarise_the_episodes_exactly() -> None:
    """Recompute one row by stepping the environment by hand with the documented episode seeds."""
    episodes, seed = 3, 11
    table = evaluate([RoundRobinPolicy()], episodes=episodes, seed=seed, config=SMALL)
    env = PartitionEnv(SMALL)
    policy = RoundRobinPolicy()
    times, goodputs, ok, rewards = [], [], [], []
    for e in range(episodes):
        env.reset(seed=episode_seed(seed, e))
        policy.reset()
        for _ in range(SMALL.tasks_per_episode):
            _, r, _, _, info = env.step_decision(decide(policy, env.raw_state))
            times.append(info["completion_time_s"])
            goodputs.append(info["goodput_bps"])
            ok.append(info["success"])
            rewards.append(r)
    row = table.row("round-robin")
    assert row.tasks == episodes * SMALL.tasks_per_episode
    assert row.mean_completion_time_s == pytest.approx(np.mean(times), rel=1e-12)
    assert row.p50_completion_time_s == pytest.approx(np.percentile(times, 50), rel=1e-12)
    assert row.p95_completion_time_s == pytest.approx(np.percentile(times, 95), rel=1e-12)
    assert row.mean_goodput_bps == pytest.approx(np.mean(goodputs), rel=1e-12)
    assert row.success_rate == np.mean(ok) and row.mean_reward == pytest.approx(np.mean(rewards))
    assert row.goodput_vs_round_robin == 1.0 and row.goodput_vs_heuristic is None


def test_relative_goodput_columns() -> None:
    t = evaluate(["round-robin", "heuristic", "rate-proportional"], episodes=2, seed=0, config=SMALL)
    h, rr, rp = t.row("heuristic"), t.row("round-robin"), t.row("rate-proportional")
    assert h.goodput_vs_heuristic == 1.0 and rr.goodput_vs_round_robin == 1.0
    assert rp.goodput_vs_heuristic == pytest.approx(rp.mean_goodput_bps / h.mean_goodput_bps)
    assert rp.goodput_vs_round_robin == pytest.approx(rp.mean_goodput_bps / rr.mean_goodput_bps)


def test_episode_seeds_are_distinct_and_stable() -> None:
    seeds = {episode_seed(s, e) for s in range(5) for e in range(50)}
    assert len(seeds) == 250 and all(0 <= x < 2**63 for x in seeds)
    assert episode_seed(0, 0) == episode_seed(0, 0)


def test_progress_callback() -> None:
    calls: list[tuple[str, int]] = []
    evaluate(["round-robin", "best-single"], episodes=2, seed=0, config=SMALL,
             progress=lambda name, done: calls.append((name, done)))
    assert calls == [("round-robin", 1), ("round-robin", 2), ("best-single", 1), ("best-single", 2)]


def test_table_outputs() -> None:
    t = evaluate(["round-robin", "heuristic"], episodes=1, seed=0, config=SMALL, trace_files=SHIPPED)
    text = t.to_text()
    for header in ("policy", "mean time", "p50 time", "p95 time", "mean goodput", "success",
                   "mean reward", "goodput / heuristic", "goodput / round-robin"):
        assert header in text and header in t.to_markdown()
    assert "round-robin" in text and "heuristic" in text
    assert f"trace mode: {len(SHIPPED)} trace files" in text
    data = json.loads(t.to_json())
    assert data["episodes"] == 1 and data["mode"] == "trace" and len(data["rows"]) == 2
    assert data["trace_files"] == [p.name for p in SHIPPED]
    assert isinstance(t, EvaluationTable) and t.row("heuristic").tasks == SMALL.tasks_per_episode
    with pytest.raises(KeyError):
        t.row("oracle")
    md = t.to_markdown().splitlines()
    assert md[1].startswith("|---|---:")


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"policies": [], "episodes": 1, "seed": 0}, ValueError, "must not be empty"),
        ({"policies": ["heuristic"], "episodes": 0, "seed": 0}, ValueError, "episodes"),
        ({"policies": ["heuristic"], "episodes": 1.0, "seed": 0}, ValueError, "episodes"),
        ({"policies": ["heuristic"], "episodes": 1, "seed": -1}, ValueError, "seed"),
        ({"policies": ["nope"], "episodes": 1, "seed": 0}, ValueError, "unknown policy"),
        ({"policies": ["oracle", "oracle"], "episodes": 1, "seed": 0}, ValueError, "duplicate"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        evaluate(**kwargs)  # type: ignore[arg-type]
