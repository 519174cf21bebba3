"""The canary's arms compared by goodput and reward: spans, figures, intervals, the table, saved runs."""

from __future__ import annotations

import json
import math
import random

import pytest

from itp.learning.canary_arms import ArmOutcome, compare_canaries
from itp.testbed.canary import canary_comparisons, canary_rows
from itp.testbed.runner import PolicyRun, TaskResult, render_table, runs_from_dict

MB = 1_000_000


def _task(
    name: str, dispatched_s: float, goodput_bps: float, arm: str | None, version: str | None,
    reward: float | None, ok: bool = True, size_bytes: int = MB,
) -> TaskResult:
    seconds = 8.0 * size_bytes / goodput_bps if ok else 5.0
    return TaskResult(
        name, size_bytes, dispatched_s, ok, seconds, goodput_bps if ok else 0.0, dispatched_s, (size_bytes,),
        0, 1.0, arm, version, reward,
    )


def _run(tasks: list[TaskResult], repeat: int = 0, policy: str = "itp") -> PolicyRun:
    return PolicyRun(repeat, policy, tuple(tasks), 1.0, 1.0, 0.0, False)


def test_the_candidate_is_compared_with_the_current_arm_inside_its_span_only() -> None:
    tasks = [_task("early", 0.0, 1e6, "current", "1.0.0", -5.0)]  # before the span: left out
    for i in range(40):  # alternate arms from t = 10 s to 49 s; the candidate doubles goodput
        cand = i % 2 == 1
        jitter = 1.0 + 0.01 * (i % 5)
        tasks.append(
            _task(f"t{i}", 10.0 + i, (2e7 if cand else 1e7) * jitter, "candidate" if cand else "current",
                  "1.0.1" if cand else "1.0.0", (0.5 if cand else 0.2) + 0.01 * (i % 3))
        )
    tasks.append(_task("late", 100.0, 1e9, "current", "1.0.0", 9.0))  # after it: left out
    (c,) = canary_comparisons([_run(tasks)])
    assert (c.repeat, c.candidate_version, c.current_versions) == (0, "1.0.1", ("1.0.0",))
    assert (c.start_s, c.end_s) == (11.0, 49.0)
    assert c.candidate.tasks == 20 and c.current.tasks == 19  # t0 was dispatched before the span
    assert c.goodput_ratio == pytest.approx(c.candidate.mean_goodput_bps / c.current.mean_goodput_bps)
    assert 1.9 < c.goodput_ratio < 2.1 and c.goodput_ratio_low < c.goodput_ratio < c.goodput_ratio_high
    assert c.goodput_ratio_low > 1.8 and c.goodput_ratio_high < 2.2
    assert c.reward_difference == pytest.approx(c.candidate.mean_reward - c.current.mean_reward)
    assert c.reward_difference == pytest.approx(0.3, abs=0.02) and 0 < c.reward_half_width < 0.02
    assert c.current.rewarded == 19 and c.current.mean_time_s == pytest.approx(
        sum(t.seconds for t in tasks if t.arm == "current" and 11.0 <= t.dispatched_s <= 49.0) / 19
    )


def test_failed_tasks_count_with_zero_goodput_and_missing_rewards_are_skipped() -> None:
    tasks = [
        _task("a", 0.0, 1e7, "candidate", "2", 1.0),
        _task("b", 1.0, 1e7, "current", "1", 0.0),
        _task("c", 2.0, 1e7, "candidate", "2", None, ok=False),
        _task("d", 3.0, 3e7, "current", "1", None),
        _task("e", 4.0, 1e7, "candidate", "2", 0.5),
    ]
    (c,) = canary_comparisons([_run(tasks)])
    assert c.candidate.tasks == 3 and c.candidate.mean_goodput_bps == pytest.approx(2e7 / 3)
    assert c.candidate.rewarded == 2 and c.candidate.mean_reward == pytest.approx(0.75)
    assert c.current.mean_goodput_bps == pytest.approx(2e7) and c.goodput_ratio == pytest.approx(1 / 3)
    assert c.current.rewarded == 1 and math.isnan(c.reward_half_width)  # one reward: no interval
    assert c.reward_difference == pytest.approx(0.75)


def test_each_candidate_of_each_session_gets_its_own_comparison() -> None:
    s0 = [_task("a", 0.0, 1e7, "candidate", "1.0.1", 0.1), _task("b", 1.0, 1e7, "current", "1.0.0", 0.1),
          _task("c", 2.0, 1e7, "candidate", "1.0.1", 0.1),
          _task("d", 10.0, 1e7, "candidate", "1.0.2", 0.1), _task("e", 11.0, 1e7, "current", "1.0.1", 0.1),
          _task("f", 12.0, 1e7, "candidate", "1.0.2", 0.1)]
    s1 = [_task("a", 0.0, 1e7, "current", None, 0.1), _task("b", 1.0, 1e7, "candidate", "1.0.3", 0.1)]
    baseline = _run([_task("a", 0.0, 1e7, None, None, None)], policy="rate-proportional")
    found = canary_comparisons([_run(s0), baseline, _run(s1, repeat=1)])
    assert [(c.repeat, c.candidate_version, c.current_versions) for c in found] == [
        (0, "1.0.1", ("1.0.0",)), (0, "1.0.2", ("1.0.1",)), (1, "1.0.3", ())
    ]
    assert math.isnan(found[2].goodput_ratio)  # no current-arm task inside a one-task span
    # In the order the repeats ran (``RunConfig.repeat_order`` may reverse them), not by index.
    backwards = canary_comparisons([_run(s1, repeat=1), baseline, _run(s0)])
    assert [(c.repeat, c.candidate_version) for c in backwards] == [(1, "1.0.3"), (0, "1.0.1"), (0, "1.0.2")]
    header, rows = canary_rows(found, session="repeat")
    assert header[0] == "repeat" and len(rows) == 3 and all(len(r) == len(header) for r in rows)
    assert header[2] == "span (s)" and rows[0][:4] == ["0", "1.0.1 (1.0.0)", "0-2", "1 / 2"]
    assert rows[2][1] == "1.0.3 (-)" and rows[2][5].startswith("n/a")
    assert render_table(header, rows, markdown=True).count("\n") == 4


def test_runs_without_arms_have_no_canary() -> None:
    plain = [_task("a", 0.0, 1e7, None, None, None), _task("b", 1.0, 1e7, "current", "1.0.0", 0.2)]
    assert canary_comparisons([_run(plain)]) == []
    assert canary_comparisons([]) == []


def test_a_saved_run_gives_the_same_comparison_and_the_json_has_no_nan() -> None:
    tasks = [_task(f"t{i}", float(i), 1e7 * (1 + i % 3), "candidate" if i % 2 else "current",
                   "1.0.1" if i % 2 else "1.0.0", 0.1 * (i % 4)) for i in range(12)]
    run = _run(tasks)
    data = {"runs": [{"repeat": 0, "policy": "itp", "aggregate_goodput_bps": 1.0, "wall_s": 1.0,
                      "max_lateness_s": 0.0, "timed_out": False,
                      "tasks": [{**t.__dict__, "stream_bytes": list(t.stream_bytes)} for t in run.tasks]}]}
    again = runs_from_dict(json.loads(json.dumps(data)))
    assert canary_comparisons(again) == canary_comparisons([run])
    lonely = canary_comparisons([_run([_task("a", 0.0, 1e7, "candidate", "9", None)])])[0]
    doc = json.loads(json.dumps(lonely.to_dict(), allow_nan=False))
    assert doc["goodput_ratio"] is None and doc["candidate"]["tasks"] == 1 and doc["current_versions"] == []


@pytest.mark.statistical
def test_the_goodput_ratio_interval_covers_the_true_ratio_about_95_percent_of_the_time() -> None:
    """400 simulated canaries (lognormal goodput, the candidate's mean 1.1x the current's, 40 / 60 tasks
    per arm): the 95% interval covers 1.1 in 88-99% of them (binomial 4.5 sd around 95% is +-4.9%,
    widened for the delta method's small-sample bias)."""
    rng = random.Random(7)
    mu, sigma = math.log(1e7), 0.6
    covered = 0
    for k in range(400):
        tasks = []
        for i in range(100):
            cand = i % 5 < 2
            g = math.exp(rng.gauss(mu, sigma)) * (1.1 if cand else 1.0)
            tasks.append(_task(f"t{i}", float(i), g, "candidate" if cand else "current",
                               "c" if cand else "u", 0.0))
        c = canary_comparisons([_run(tasks, repeat=k)])[0]
        covered += c.goodput_ratio_low <= 1.1 <= c.goodput_ratio_high
    assert 0.88 * 400 <= covered <= 0.99 * 400


def test_the_arms_are_compared_within_task_sizes() -> None:
    """The candidate is no better on any size, but its arm drew most of the large tasks (80 Mbit/s and
    reward 2 against 8 Mbit/s and 0.5 for small ones, whatever the model). Pooled means credit the
    candidate with the draw; the stratified comparison reads no difference."""
    rng = random.Random(2)
    tasks = []
    for i in range(200):
        cand = i % 2 == 1
        large = rng.random() < (0.7 if cand else 0.3)
        size = 16 * MB if large else 64_000
        noise = math.exp(rng.gauss(0.0, 0.1))
        arm, version = ("candidate", "1.0.1") if cand else ("current", "1.0.0")
        reward = (2.0 if large else 0.5) + rng.gauss(0.0, 0.1)
        tasks.append(_task(f"t{i}", float(i), (80e6 if large else 8e6) * noise, arm, version, reward,
                           size_bytes=size))
    (c,) = canary_comparisons([_run(tasks)])
    assert c.estimator == "stratified"
    assert c.goodput_ratio_low < 1.0 < c.goodput_ratio_high
    assert abs(c.reward_difference) < c.reward_half_width
    assert c.candidate.mean_goodput_bps > 1.5 * c.current.mean_goodput_bps  # the pooled figures
    pooled = compare_canaries(
        [ArmOutcome(t.dispatched_s, t.arm, t.model_version, t.goodput_bps, t.seconds, t.reward, t.size_bytes)
         for t in tasks], size_strata_bytes=(),
    )[0]
    assert pooled.estimator == "pooled" and pooled.goodput_ratio_low > 1.5 and pooled.reward_difference > 0.4
