"""The adaptation benchmark (``itp.sim.adapt``) on tiny budgets.

The run uses the real ``TaskPartitioner``, the bundled model and a real ``OnlineLearner`` (registry in
a temporary folder). Checked: every policy plays the task stream an independent environment produces
(same sizes and arrivals), windows and their statistics recompute from the per-task records, the best
fixed subset is the hindsight argmax, the JSON schema, the summary formulas on hand-made numbers, the
greedy partitioner equals the bundled-model reference when it neither explores nor learns, and (slow) a
retrain whose gate passes starts a canary on live traffic.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from itp.partitioner import TaskPartitioner
from itp.sim import adapt
from itp.sim.adapt import (
    ADAPTIVE,
    BUNDLED,
    SCHEMA,
    AdaptConfig,
    AdaptResult,
    FixedSubsetPolicy,
    PolicyWindow,
    run_adaptation,
)
from itp.sim.env import PartitionEnv
from itp.sim.evaluate import episode_seed
from itp.sim.traces import discover_trace_files, shipped_traces_dir

SHIPPED = tuple(str(f) for f in discover_trace_files(shipped_traces_dir()))
FIXED = [FixedSubsetPolicy(a).name for a in range(15)]


def tiny(**overrides: object) -> AdaptConfig:
    fields: dict[str, object] = {
        "network": "ss-restart", "outcomes": 24, "checkpoint": 10, "retrain_every": 1000,
        "tasks_per_episode": 8, "seed": 4, "trace_files": SHIPPED, "learner_trace_files": SHIPPED,
    }
    fields.update(overrides)
    return AdaptConfig(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def result() -> AdaptResult:
    return run_adaptation(tiny())


def test_every_policy_plays_the_same_tasks_as_an_independent_environment(result: AdaptResult) -> None:
    cfg = result.config
    env = PartitionEnv(cfg.sim_config(), trace_files=list(SHIPPED))
    expected: list[tuple[int, float]] = []
    e = 0
    while len(expected) < cfg.outcomes:
        env.reset(seed=episode_seed(cfg.seed, e))
        e += 1
        for _ in range(cfg.tasks_per_episode):
            expected.append((env.task_size_bytes, env.task_arrival_s))
            env.step(14)
    expected = expected[: cfg.outcomes]
    assert set(result.records) == {ADAPTIVE, BUNDLED, "rate-proportional", "heuristic", *FIXED}
    for name, recs in result.records.items():
        assert [(r.size_bytes, r.arrival_s) for r in recs] == expected, name
    assert result.tasks_identical and result.outcomes == 24 and not result.truncated


def test_windows_recompute_from_the_records(result: AdaptResult) -> None:
    assert result.windows == ((0, 10), (10, 20), (20, 24))
    for name, recs in result.records.items():
        for (start, end), w in zip(result.windows, result.per_policy[name], strict=True):
            part = recs[start:end]
            times = [r.completion_time_s for r in part]
            assert w.tasks == end - start
            assert w.mean_goodput_bps == pytest.approx(np.mean([r.goodput_bps for r in part]))
            assert w.mean_completion_time_s == pytest.approx(np.mean(times))
            assert w.p95_completion_time_s == pytest.approx(np.percentile(times, 95))
            assert w.success_rate == pytest.approx(np.mean([r.success for r in part]))
            errors = [abs(r.completion_time_s / r.expected_time_s - 1) for r in part]
            assert w.median_prediction_error == pytest.approx(np.median(errors))


def test_the_late_span_recomputes_from_the_records(monkeypatch: pytest.MonkeyPatch) -> None:
    # The late span starts at REGRESSION_FROM_OUTCOMES (1000); moved to 10 so that a tiny run has one.
    monkeypatch.setattr(adapt, "REGRESSION_FROM_OUTCOMES", 10)
    r = run_adaptation(tiny(outcomes=16, checkpoint=8))
    assert set(r.late_run) == set(r.records)
    for name, recs in r.records.items():
        part = recs[10:]
        assert r.late_run[name].tasks == 6
        assert r.late_run[name].mean_goodput_bps == pytest.approx(np.mean([x.goodput_bps for x in part]))
        assert r.late_run[name].p95_completion_time_s == pytest.approx(
            np.percentile([x.completion_time_s for x in part], 95)
        )
    base = [r.late_run[n] for n in ("rate-proportional", "heuristic", r.best_fixed)]
    s = r.summary()
    assert s["late_goodput_vs_best"] == pytest.approx(
        r.late_run[ADAPTIVE].mean_goodput_bps / max(b.mean_goodput_bps for b in base)
    )
    assert s["late_p95_vs_best"] == pytest.approx(
        r.late_run[ADAPTIVE].p95_completion_time_s / min(b.p95_completion_time_s for b in base)
    )
    data = json.loads(r.to_json())
    assert data["late_run"]["start"] == 10 and data["late_run"]["policies"][ADAPTIVE]["tasks"] == 6
    assert "outcomes 10-16: goodput / best baseline" in r.to_text()


def test_best_fixed_is_the_hindsight_argmax(result: AdaptResult) -> None:
    best = max(FIXED, key=lambda n: np.mean([r.goodput_bps for r in result.records[n]]))
    assert result.best_fixed == best
    assert FixedSubsetPolicy(14).name == "fixed-0123" and FixedSubsetPolicy(0).name == "fixed-0"
    # A fixed subset really is fixed: its records differ from another subset's.
    assert result.records["fixed-0"] != result.records["fixed-0123"]


def test_json_schema(result: AdaptResult) -> None:
    data = json.loads(result.to_json())
    assert data["schema"] == SCHEMA and data["network"] == "ss-restart" and data["outcomes"] == 24
    assert data["best_fixed"]["name"] == result.best_fixed and "hindsight" in data["best_fixed"]["chosen"]
    assert data["config"]["outcomes"] == 24 and data["tasks_identical"] is True
    assert isinstance(data["per_chunk_outcomes"], bool) and isinstance(data["calibrate_transport"], bool)
    assert [(c["start"], c["outcomes"]) for c in data["checkpoints"]] == [(0, 10), (10, 20), (20, 24)]
    keys = {"tasks", "mean_goodput_bps", "mean_completion_time_s", "p95_completion_time_s", "success_rate",
            "median_prediction_error"}
    for c in data["checkpoints"]:
        assert set(c["policies"]) == {ADAPTIVE, BUNDLED, "rate-proportional", "heuristic", "best-fixed"}
        assert all(set(v) == keys for v in c["policies"].values())
        assert set(c["fixed_subsets"]) == set(FIXED)
        assert c["policies"]["best-fixed"] == c["fixed_subsets"][result.best_fixed]
        assert isinstance(c["events"], list)
    assert set(data["summary"]) == {
        "final_goodput_vs_best", "final_p95_vs_best", "worst_goodput_vs_heuristic_after_1000",
        "final_goodput_vs_bundled", "late_goodput_vs_best", "late_p95_vs_best",
    }
    assert data["summary"]["worst_goodput_vs_heuristic_after_1000"] is None  # no window starts that late
    # 24 outcomes: nothing after the first 1000, so no late span.
    assert data["late_run"] == {"start": None, "policies": {}} and result.late_run == {}
    assert data["summary"]["late_goodput_vs_best"] is None and data["summary"]["late_p95_vs_best"] is None
    assert data["learner"]["update_count"] == 0  # retrain_every > outcomes
    assert data["canaries"] == [] and result.canaries == []  # no retrain, so no canary
    assert all(r.arm == "current" and r.reward is not None for r in result.records[ADAPTIVE])
    text = result.to_text()
    assert "outcomes 20-24:" in text and "best fixed subset (chosen with hindsight" in text


def test_the_greedy_partitioner_is_the_bundled_model_when_it_does_not_learn() -> None:
    r = run_adaptation(tiny(epsilon=0.0, outcomes=16, network="warm", guard_margin=None))
    assert r.learner["guard_overrides"] == 0
    for a, b in zip(r.records[ADAPTIVE], r.records[BUNDLED], strict=True):
        # Same decisions, hence the same outcomes; the predictions agree to the partitioner's float32
        # stream table.
        assert a.arm == "current" and a.model_version is not None and a.reward is not None
        assert b.arm is None and b.model_version is None and b.reward is None  # a reference: no learner
        same = {"expected_time_s": 0.0, "arm": None, "model_version": None, "reward": None}
        assert dataclasses.replace(a, **same) == dataclasses.replace(b, **same)
        assert a.expected_time_s == pytest.approx(b.expected_time_s, rel=1e-4)


def test_the_guard_changes_only_decisions_it_counts() -> None:
    plain = run_adaptation(tiny(epsilon=0.0, outcomes=32, network="warm", guard_margin=None))
    guarded = run_adaptation(
        tiny(epsilon=0.0, outcomes=32, network="warm", guard_margin=0.0, guard_exploration=True)
    )
    assert guarded.config.guard_margin == 0.0
    assert json.loads(guarded.to_json())["config"]["guard_margin"] == 0.0
    pairs = list(zip(plain.records[ADAPTIVE], guarded.records[ADAPTIVE], strict=True))
    first = next(i for i, (a, b) in enumerate(pairs) if a != b)
    # On warm streams the bundled model (fitted to fresh connections) picks splits the calibrated model
    # predicts slower: the guard overrides some (counted), and the runs agree up to the first override.
    assert guarded.learner["guard_overrides"] > 0 and plain.learner["guard_overrides"] == 0
    assert all(a == b for a, b in pairs[:first])
    assert "decision guard 0 (" in guarded.to_text() and "decision guard off" in plain.to_text()
    assert "exploration guarded" in guarded.to_text() and "exploration guarded" not in plain.to_text()


def test_guarded_exploration_changes_only_explored_decisions() -> None:
    # Always exploring among the 3 best: guarded, no draw takes a split the guard refuses, so the runs
    # differ (and the greedy reference never changes).
    free = run_adaptation(tiny(epsilon=1.0, explore_top_k=3, outcomes=32, network="warm", guard_margin=0.0))
    guarded = run_adaptation(tiny(
        epsilon=1.0, explore_top_k=3, outcomes=32, network="warm", guard_margin=0.0, guard_exploration=True
    ))
    assert guarded.config.guard_exploration and not free.config.guard_exploration
    assert json.loads(guarded.to_json())["config"]["guard_exploration"] is True
    assert free.records[ADAPTIVE] != guarded.records[ADAPTIVE]
    assert free.records[BUNDLED] == guarded.records[BUNDLED]
    # Both explore every decision; the guard's overrides count greedy decisions only: none here.
    assert guarded.learner["guard_overrides"] == free.learner["guard_overrides"] == 0


def test_above_the_exploration_size_limit_the_adaptive_run_decides_greedily() -> None:
    # Every task is larger than 1 byte: with the limit at 1 nothing explores, even at epsilon 1, and the
    # run is the greedy one, decision for decision.
    greedy = run_adaptation(tiny(epsilon=0.0, outcomes=16, network="warm"))
    limited = run_adaptation(tiny(epsilon=1.0, outcomes=16, network="warm", explore_max_bytes=1))
    free = run_adaptation(tiny(epsilon=1.0, outcomes=16, network="warm"))
    assert limited.records[ADAPTIVE] == greedy.records[ADAPTIVE] != free.records[ADAPTIVE]
    assert json.loads(limited.to_json())["config"]["explore_max_bytes"] == 1
    assert "no exploration above 1 bytes" in limited.to_text()
    with pytest.raises(ValueError, match=r"AdaptConfig\.explore_max_bytes"):
        tiny(explore_max_bytes=0)


def test_the_adaptive_run_can_score_with_fitted_failure_models() -> None:
    r = run_adaptation(tiny(outcomes=24, network="lossy", model_failures=True, calibration_interval=8))
    assert r.config.model_failures and "failure models scored" in r.to_text()
    models = r.learner["failure_models"]  # pushed once the calibrator held enough chunks
    assert models is not None and len(models) == 4 and all(0.0 <= q < 1.0 and h >= 0.0 for q, h in models)
    plain = run_adaptation(tiny(outcomes=24, network="lossy", calibration_interval=8))
    assert plain.learner["failure_models"] is None
    with pytest.raises(TypeError, match=r"AdaptConfig\.model_failures"):
        tiny(model_failures=1)


def test_per_chunk_outcomes_are_used_exactly_when_the_partitioner_takes_them(result: AdaptResult) -> None:
    report = inspect.signature(TaskPartitioner.report_outcome).parameters
    assert result.per_chunk_outcomes == ("chunks" in report)
    init = inspect.signature(TaskPartitioner).parameters
    assert result.calibrate_transport == ("calibrate_transport" in init)


def _window(goodput: float, p95: float) -> PolicyWindow:
    return PolicyWindow(tasks=500, mean_goodput_bps=goodput, mean_completion_time_s=1.0,
                        p95_completion_time_s=p95, success_rate=1.0)


def test_summary_formulas_on_known_numbers(result: AdaptResult) -> None:
    windows = ((0, 500), (500, 1000), (1000, 1500), (1500, 2000))
    per = {
        ADAPTIVE: (_window(90, 5), _window(80, 5), _window(95, 5), _window(120, 3)),
        BUNDLED: tuple(_window(100, 4) for _ in windows),
        "rate-proportional": tuple(_window(100, 4) for _ in windows),
        "heuristic": (_window(100, 4), _window(100, 4), _window(100, 4), _window(110, 6)),
        **{n: tuple(_window(50, 9) for _ in windows) for n in FIXED},
    }
    per["fixed-0123"] = tuple(_window(105, 2.5) for _ in windows)
    fake = dataclasses.replace(result, windows=windows, per_policy=per, best_fixed="fixed-0123", records={})
    s = fake.summary()
    assert s["final_goodput_vs_best"] == pytest.approx(120 / 110)  # heuristic is best in the last window
    assert s["final_p95_vs_best"] == pytest.approx(3 / 2.5)  # best fixed has the lowest p95
    # Windows starting at >= 1000 outcomes: 95/100 and 120/110; the 80/100 window is earlier.
    assert s["worst_goodput_vs_heuristic_after_1000"] == pytest.approx(0.95)
    assert s["final_goodput_vs_bundled"] == pytest.approx(1.2)
    assert s["late_goodput_vs_best"] is None and s["late_p95_vs_best"] is None  # no late span given
    # Over outcomes 1000 on: the best baseline is chosen over that span, separately for each figure.
    late = {n: _window(50, 9) for n in FIXED}
    late.update({ADAPTIVE: _window(115, 4), BUNDLED: _window(100, 4), "rate-proportional": _window(100, 5),
                 "heuristic": _window(104, 6), "fixed-0123": _window(90, 4.4)})
    s = dataclasses.replace(fake, late_run=late).summary()
    assert s["late_goodput_vs_best"] == pytest.approx(115 / 104)  # the heuristic has the best goodput
    assert s["late_p95_vs_best"] == pytest.approx(4 / 4.4)  # the best fixed subset has the lowest p95
    assert s["final_goodput_vs_best"] == pytest.approx(120 / 110)  # the final-window figures unchanged


@pytest.mark.parametrize(("field", "value", "match"), [
    ("network", "fast", "AdaptConfig.network must be one of sim, warm"),
    ("outcomes", 0, "AdaptConfig.outcomes must be an int >= 1, got 0"),
    ("checkpoint", 2.5, "AdaptConfig.checkpoint must be an int >= 1, got 2.5"),
    ("seed", -1, "AdaptConfig.seed must be an int >= 0, got -1"),
    ("epsilon", 1.5, r"AdaptConfig.epsilon must be in \[0, 1\], got 1.5"),
    ("retrain_timeout_s", float("inf"), "AdaptConfig.retrain_timeout_s must be a finite number > 0"),
    ("time_budget_s", 0, "AdaptConfig.time_budget_s must be None or a number > 0, got 0"),
    ("canary_min_outcomes", 1, "AdaptConfig needs 2 <= canary_min_outcomes"),
    ("finetune", [1], "AdaptConfig.finetune must be a dict, got list"),
    ("guard_exploration", "on", "AdaptConfig.guard_exploration must be a bool, got str"),
    ("calibration_interval", 0, "AdaptConfig.calibration_interval must be an int >= 1, got 0"),
])
def test_config_rejects_bad_values_naming_the_field(field: str, value: object, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        tiny(**{field: value})


def test_fixed_subset_policy_rejects_bad_actions() -> None:
    with pytest.raises(ValueError, match=r"action must be an int in 0\.\.14, got 15"):
        FixedSubsetPolicy(15)
    assert FixedSubsetPolicy(7).select_action(np.zeros(20)) == 7


def test_a_spent_time_budget_is_an_error_before_the_first_outcome() -> None:
    with pytest.raises(RuntimeError, match="time budget ran out before the first outcome"):
        run_adaptation(tiny(time_budget_s=1e-9))


def test_plot_writes_a_png(result: AdaptResult, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "curve.png"
    result.plot(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install_it(
    result: AdaptResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("matplotlib", "matplotlib.figure"):  # importing either now fails
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        result.plot(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_a_retrain_that_passes_the_gate_starts_a_canary_on_live_traffic() -> None:
    pytest.importorskip("torch")
    cfg = tiny(
        outcomes=48, retrain_every=16, checkpoint=16,
        finetune={"steps": 5, "batch_size": 8, "sim_episodes": 1, "sim_tasks_per_episode": 8},
        gate_episodes=1,
        gate={"sim_margin": 1e6, "td_margin": 1e6},  # every candidate passes: the canary decides
        canary_min_outcomes=4, canary_max_outcomes=32,
    )
    r = run_adaptation(cfg)
    kinds = [e["event"] for e in r.events]
    wanted = ["retrain_started", "gate_passed", "canary_started"]
    assert [k for k in kinds if k in wanted][:3] == wanted, kinds
    assert r.events[0]["outcome"] == 16 and r.learner["update_count"] >= 1
    assert r.tasks_identical
    # The canary is stepped and the transport refitted on the task thread after each report, and the
    # partitioner's clock is the simulated time: the same settings give the same run, canary included.
    refitting = dataclasses.replace(cfg, calibration_interval=8)
    a, b = run_adaptation(refitting), run_adaptation(refitting)
    assert "canary_started" in [e["event"] for e in a.events]
    assert a.records[ADAPTIVE] == b.records[ADAPTIVE] and a.events == b.events
    # The canary's candidate decided tasks: its arm is compared with the current one inside its span.
    started = next(e for e in r.events if e["event"] == "canary_started")
    canaries = r.canaries
    assert canaries and canaries[0].candidate_version == started["version"]
    first = canaries[0]
    records = r.records[ADAPTIVE]
    span = records[int(first.start_s): int(first.end_s) + 1]
    cand = [x for x in span if x.arm == "candidate" and x.model_version == first.candidate_version]
    assert first.candidate.tasks == len(cand) > 0 and records[int(first.start_s)].arm == "candidate"
    assert first.current.tasks == sum(x.arm == "current" for x in span)
    assert first.candidate.mean_goodput_bps == pytest.approx(np.mean([x.goodput_bps for x in cand]))
    assert json.loads(r.to_json())["canaries"][0]["candidate_version"] == first.candidate_version
    assert f"canary of {first.candidate_version} (outcomes " in r.to_text()
