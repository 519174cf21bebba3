"""Runs: configuration, per-repeat metrics, CIs, the table, calibration from a run's JSON, and a real run."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
from testbed_data import TRACES, fake_run_result

from itp.testbed.calibrate import TransportParams
from itp.testbed.canary import canary_comparisons
from itp.testbed.host import find_leftovers
from itp.testbed.runner import (
    BUNDLED_POLICY,
    PolicyRun,
    RunConfig,
    TaskResult,
    calibration_report,
    cases_from_result,
    engine_policy,
    policy_timeout_s,
    render_table,
    repeat_rows,
    resolve_policy,
    run_order,
    run_testbed,
    runs_from_dict,
    summarise,
    table_rows,
)
from itp.testbed.schedule import ScheduleConfig, make_schedule


def _task(name: str, seconds: float, ok: bool = True, size: int = 1_000_000) -> TaskResult:
    return TaskResult(
        name, size, 0.0, ok, seconds, 8.0 * size / seconds if ok else 0.0, 0.0, (size, 0), 3, 1.0
    )


def test_policy_names_and_aliases() -> None:
    assert resolve_policy("equal") == "equal-split" and resolve_policy("rr") == "round-robin"
    assert resolve_policy("itp") == "itp" and resolve_policy("heuristic") == "heuristic"
    with pytest.raises(ValueError, match="nope"):
        resolve_policy("nope")
    # The control of a learning run: the itp engine policy, never handed the learning entry.
    assert resolve_policy("bundled") == BUNDLED_POLICY == "bundled"
    assert engine_policy("bundled") == "itp" and engine_policy("rate-proportional") == "rate-proportional"
    with pytest.raises(ValueError, match="bundled"):  # the message lists it among the accepted names
        resolve_policy("static")


def test_the_bundled_control_is_paired_with_the_learning_itp() -> None:
    """``bundled`` beside ``itp``: paired ratios itp / bundled per repeat and over repeats; ``bundled`` is
    not a baseline that ``itp``'s "best other" ratio may pick."""
    # One 1 MB task per session: itp 0.5 s then 0.25 s; bundled 1 s then 0.5 s; heuristic 0.8 s.
    times = {(0, "itp"): 0.5, (1, "itp"): 0.25, (0, "bundled"): 1.0, (1, "bundled"): 0.5,
             (0, "heuristic"): 0.8, (1, "heuristic"): 0.8}
    runs = [PolicyRun(r, p, (_task("a", t),), 8e6 / t, 1.0, 0.0, False) for (r, p), t in times.items()]
    policies = ("itp", "bundled", "heuristic")
    itp_row, bundled_row, heur_row = summarise(runs, policies)
    assert itp_row.estimates["goodput_vs_bundled"].mean == pytest.approx(2.0)
    assert itp_row.estimates["goodput_vs_bundled"].half_width == pytest.approx(0.0)
    assert itp_row.estimates["time_vs_bundled"].mean == pytest.approx(0.5)
    assert itp_row.estimates["goodput_vs_heuristic"].mean == pytest.approx((1.6 + 3.2) / 2)
    assert all("goodput_vs_bundled" not in row.estimates for row in (bundled_row, heur_row))
    header, rows = table_rows([itp_row, bundled_row, heur_row])
    assert header[-2:] == ["goodput / bundled (paired)", "mean time / bundled (paired)"]
    assert rows[0][-2:] == ["2.000x ± 0.000", "0.500x ± 0.000"] and rows[1][-2:] == ["", ""]
    assert len(table_rows([heur_row])[0]) == len(header) - 2  # no such columns without the pair
    header, rows = repeat_rows(runs, policies)
    assert header[-4:] == ["itp goodput / best other", "itp p95 / best other", "itp goodput / bundled",
                           "itp p95 / bundled"]
    # Best other is the heuristic (0.8 s), not bundled, even where bundled is faster (repeat 1: 0.5 s).
    assert rows[0][-4:] == ["1.600", "0.625", "2.000", "0.500"]
    assert rows[1][-4:] == ["3.200", "0.312", "2.000", "0.500"]
    without = repeat_rows([r for r in runs if not (r.repeat == 1 and r.policy == "bundled")], policies)[1]
    assert without[1][-2:] == ["-", "-"] and without[1][2] == "-"
    assert "itp goodput / bundled" not in repeat_rows(runs, ("itp", "heuristic"))[0]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"policies": ()}, "policies"),
        ({"policies": ("equal",)}, "policies"),
        ({"policies": ("itp", "itp")}, "duplicates"),
        ({"trace_files": ()}, "trace_files"),
        ({"repeats": 0}, "repeats"),
        ({"window": 0}, "window"),
        ({"step_s": 0.0}, "step_s"),
        ({"timeout_s": -1.0}, "timeout_s"),
        ({"seed": -1}, "seed"),
        ({"policies": ("heuristic",), "learn": True}, "learn needs the 'itp' policy"),
        ({"learn": True, "retrain_every": 0}, "retrain_every"),
        ({"learn": True, "learn_top_k": 16}, "learn_top_k"),
        ({"learn": True, "learn_epsilon": 1.5}, "learn_epsilon"),
        ({"learn": True, "wait_for_retrain_s": -1.0}, "wait_for_retrain_s"),
        ({"learn": True, "learn_explore_max_bytes": 0}, "learn_explore_max_bytes"),
        ({"learn": True, "learn_explore_max_bytes": 2.5}, "learn_explore_max_bytes"),
        ({"repeats": 2, "repeat_order": (1, 1)}, "repeat_order has duplicates"),
        ({"repeats": 2, "repeat_order": (1, -1)}, "repeat_order"),
        ({"repeats": 2, "repeat_order": [1, 0]}, "repeat_order"),
        ({"repeats": 2, "repeat_order": (1, True)}, "repeat_order"),
        ({"repeats": 3, "repeat_order": (1, 0)}, "repeat_order has 2 repeats, RunConfig.repeats is 3"),
    ],
)
def test_bad_run_config(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"policies": ("itp",), "trace_files": TRACES, **kwargs}
    with pytest.raises(ValueError, match=field):
        RunConfig(**args)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="learn_guard_exploration"):
        RunConfig(policies=("itp",), trace_files=TRACES, learn=True, learn_guard_exploration=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="learn_model_failures"):
        RunConfig(policies=("itp",), trace_files=TRACES, learn=True, learn_model_failures=1)  # type: ignore[arg-type]


def test_the_learning_sender_gets_every_exploration_setting(tmp_path: Path) -> None:
    """The ``learn`` entry the run hands its sender child becomes that session's partitioner settings."""
    from itp.testbed.engine import learning_session

    assert learning_session(None) is None
    learn = {"folder": str(tmp_path / "dep"), "epsilon": 0.2, "explore_top_k": 4, "retrain_every": 50,
             "guard_exploration": True, "explore_max_bytes": 1 << 22, "model_failures": True, "seed": 3}
    session = learning_session(learn)
    assert session is not None
    try:
        p = session.partitioner
        assert p.epsilon == pytest.approx(0.2) and p.explore_top_k == 4
        assert p.guard_exploration is True and p.explore_max_bytes == 1 << 22 and p.model_failures is True
    finally:
        session.close()
    # An older entry without the optional fields: the session's defaults.
    del learn["guard_exploration"], learn["explore_max_bytes"], learn["model_failures"]
    session = learning_session(learn)
    assert session is not None
    try:
        p = session.partitioner
        assert p.guard_exploration is False and p.explore_max_bytes is None and p.model_failures is False
    finally:
        session.close()


def test_the_learning_folder_is_absolute_and_outside_the_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--learn-dir dep``: the folder is ``dep`` where the command ran, not inside the run directory
    (where the sender child runs, removed at the end of the run); without one, inside the run directory."""
    from itp.testbed.runner import learn_entry

    monkeypatch.chdir(tmp_path)
    run_dir = Path("itptb-run-x")
    config = RunConfig(policies=("itp",), trace_files=TRACES, learn=True, learn_dir="dep", seed=4)
    entry = learn_entry(config, run_dir)
    assert entry is not None and entry["folder"] == str(tmp_path / "dep") and entry["seed"] == 4
    inside = learn_entry(RunConfig(policies=("itp",), trace_files=TRACES, learn=True), run_dir)
    assert inside is not None and inside["folder"] == str(tmp_path / "itptb-run-x" / "learning")
    assert learn_entry(RunConfig(policies=("itp",), trace_files=TRACES), run_dir) is None


def test_the_repeats_run_in_the_order_asked_and_the_tables_follow_it() -> None:
    assert RunConfig(policies=("itp",), trace_files=TRACES, repeats=3).order == (0, 1, 2)
    cfg = RunConfig(policies=("itp",), trace_files=TRACES, repeats=3, repeat_order=(5, 2, 0))
    assert cfg.order == (5, 2, 0)
    # Rows by repeat follow the runs' order (a reversed learning run reads as its own learning curve).
    times = {(2, "itp"): 0.5, (2, "heuristic"): 1.0, (0, "itp"): 0.25, (0, "heuristic"): 1.0}
    runs = [PolicyRun(r, p, (_task("a", t),), 8e6 / t, 1.0, 0.0, False) for (r, p), t in times.items()]
    assert run_order(runs) == [2, 0]
    _header, rows = repeat_rows(runs, ("itp", "heuristic"))
    assert [row[0] for row in rows] == ["2", "0"] and rows[0][-2:] == ["2.000", "0.500"]
    assert [row[0] for row in repeat_rows(runs[2:] + runs[:2], ("itp", "heuristic"))[1]] == ["0", "2"]
    # The paired summary does not depend on the order.
    assert summarise(runs, ("itp", "heuristic")) == summarise(runs[::-1], ("itp", "heuristic"))


def test_metrics_of_one_session() -> None:
    run = PolicyRun(
        0, "itp", (_task("a", 1.0), _task("b", 3.0), _task("c", 2.0, ok=False)), 5e6, 9.0, 0.01, False
    )
    m = run.metrics()
    assert m["mean_time_s"] == pytest.approx(2.0)
    assert m["p95_time_s"] == pytest.approx(2.9)  # linear interpolation of (1, 2, 3)
    assert m["mean_goodput_bps"] == pytest.approx((8e6 + 8e6 / 3 + 0.0) / 3)
    assert m["success"] == pytest.approx(2 / 3)
    assert m["aggregate_goodput_bps"] == 5e6


def test_summary_is_the_mean_and_t_interval_over_repeats() -> None:
    # Repeat 0: itp 1 s, heuristic 2 s; repeat 1: itp 3 s, heuristic 2 s (one 1 MB task each).
    times = {(0, "itp"): 1.0, (1, "itp"): 3.0, (0, "heuristic"): 2.0, (1, "heuristic"): 2.0}
    runs = [PolicyRun(r, p, (_task("a", t),), 1e6 * t, 1.0, 0.0, False) for (r, p), t in times.items()]
    itp_row, heur_row = summarise(runs, ("itp", "heuristic"))
    e = itp_row.estimates["mean_time_s"]
    assert e.n == 2 and e.mean == pytest.approx(2.0)
    assert e.half_width == pytest.approx(12.7062 * math.sqrt(2.0) / math.sqrt(2))
    assert heur_row.estimates["mean_time_s"].half_width == 0.0
    # Paired per repeat: time ratios 0.5 and 1.5, goodput ratios 2 and 2/3.
    assert itp_row.estimates["time_vs_heuristic"].mean == pytest.approx(1.0)
    assert itp_row.estimates["goodput_vs_heuristic"].mean == pytest.approx((2 + 2 / 3) / 2)
    assert heur_row.estimates["goodput_vs_heuristic"].mean == pytest.approx(1.0)
    only_itp = summarise([r for r in runs if r.policy == "itp"], ("itp",))[0]
    assert "goodput_vs_heuristic" not in only_itp.estimates
    header, rows = table_rows([itp_row, heur_row])
    assert header[0] == "policy" and rows[0][0] == "itp" and rows[1][-2] == "1.000x ± 0.000"
    assert "±" in rows[0][1]
    md = render_table(header, rows, markdown=True)
    assert md.splitlines()[1].startswith("|---|") and md.count("\n") == 3
    assert render_table(header, rows, markdown=False).splitlines()[0].startswith("policy")
    # A saved run gives the same summary.
    again = summarise(
        runs_from_dict(
            {
                "runs": [
                    {
                        "repeat": r.repeat,
                        "policy": r.policy,
                        "aggregate_goodput_bps": r.aggregate_goodput_bps,
                        "wall_s": 1.0,
                        "max_lateness_s": 0.0,
                        "timed_out": False,
                        "tasks": [{**t.__dict__, "stream_bytes": list(t.stream_bytes)} for t in r.tasks],
                    }
                    for r in runs
                ]
            }
        ),
        ("itp", "heuristic"),
    )
    assert again == [itp_row, heur_row]


def test_table_by_repeat_is_the_learning_curve() -> None:
    # itp: 1 s then 0.5 s per 1 MB task; heuristic 1 s; rate-proportional 0.8 s (the best other policy).
    times = {(0, "itp"): 1.0, (1, "itp"): 0.5, (0, "heuristic"): 1.0, (1, "heuristic"): 1.0,
             (0, "rate-proportional"): 0.8, (1, "rate-proportional"): 0.8}
    learning = {0: {"registry_current_version": "1.0.0", "experience_count": 1, "update_count": 0,
                    "promotions": 0, "gate_rejections": 0, "rollbacks": 0},
                1: {"registry_current_version": "1.0.1", "experience_count": 2, "update_count": 1,
                    "promotions": 1, "gate_rejections": 0, "rollbacks": 0}}
    runs = [
        PolicyRun(r, p, (_task("a", t),), 8e6 / t, 1.0, 0.0, False, learning[r] if p == "itp" else None)
        for (r, p), t in times.items()
    ]
    policies = ("itp", "heuristic", "rate-proportional")
    header, rows = repeat_rows(runs, policies)
    assert header[-5:] == ["itp goodput / best other", "itp p95 / best other", "serving", "outcomes stored",
                           "its session: retrains (promoted / rejected / rolled back)"]
    assert rows[0][0] == "0" and rows[0][1] == "8.0 / 1.00 s" and rows[1][1] == "16.0 / 500 ms"
    assert rows[0][4:6] == ["0.800", "1.250"] and rows[1][4:6] == ["1.600", "0.625"]
    assert rows[1][6:] == ["1.0.1", "2", "1 (1 / 0 / 0)"]
    # Saved and read back, the learning summaries are kept; without learning there are no such columns.
    data = {"runs": [{"repeat": r.repeat, "policy": r.policy, "aggregate_goodput_bps": 1.0, "wall_s": 1.0,
                      "max_lateness_s": 0.0, "timed_out": False, "learning": r.learning,
                      "tasks": [{**t.__dict__, "stream_bytes": list(t.stream_bytes)} for t in r.tasks]}
                     for r in runs]}
    assert repeat_rows(runs_from_dict(data), policies) == (header, rows)
    plain = [PolicyRun(r.repeat, r.policy, r.tasks, 1.0, 1.0, 0.0, False) for r in runs]
    assert "serving" not in repeat_rows(plain, policies)[0]
    missing = repeat_rows([r for r in plain if not (r.repeat == 1 and r.policy == "itp")], policies)[1]
    assert missing[1][1] == "-" and missing[1][4:6] == ["-", "-"]


def test_default_timeout_covers_the_slowest_path() -> None:
    s = make_schedule(ScheduleConfig(tasks=5), TRACES, seed=0, repeat=0)
    slowest = min(p.mean_rate_bps for p in s.paths)
    assert policy_timeout_s(s) > 8.0 * s.total_bytes / slowest + max(t.start_s for t in s.tasks)


def test_calibration_from_a_run_json_recovers_the_transport() -> None:
    truth = TransportParams(0.5, 14600, True, 0.9)
    data = json.loads(json.dumps(fake_run_result(truth)))  # through JSON, as `itp testbed calibrate` reads it
    triples = cases_from_result(data)
    assert len(triples) == 2 * 2 * 6 and {r for r, _, _ in triples} == {0, 1}
    report = calibration_report(data)
    assert report.fit.params.stream_efficiency == pytest.approx(0.9)
    assert report.fit.params.setup_rtts == pytest.approx(0.5) and report.fit.params.slow_start
    assert report.fitted_errors[-1].median_abs == pytest.approx(0.0, abs=1e-9)
    assert report.heldout_errors is not None and report.heldout_errors[-1].median_abs == pytest.approx(
        0.0, abs=1e-9
    )
    assert report.engine_errors is not None and report.engine_errors[-1].median_signed == pytest.approx(0.1)
    text = report.to_text()
    assert "held out" in text and "median |err|" in text
    assert json.loads(json.dumps(report.to_dict()))["fitted_params"]["stream_efficiency"] == pytest.approx(
        0.9
    )


def test_calibration_needs_a_delivered_task() -> None:
    data = fake_run_result(TransportParams(), repeats=1)
    for run in data["runs"]:  # type: ignore[union-attr]
        for t in run["tasks"]:
            t["ok"] = False
    with pytest.raises(ValueError, match="no delivered task"):
        calibration_report(data)


def _testbed_processes() -> set[int]:
    return {p.pid for p in find_leftovers(temp_dir=Path("/nonexistent")).processes}


SHORT = ScheduleConfig(paths=2, tasks=4, size_max_bytes=2 << 20, mean_interarrival_s=0.3, rtt_max_s=0.06)
"""The real runs' schedule: 2 paths, 4 tasks up to 2 MiB, RTT up to 60 ms (seconds per session)."""


@pytest.mark.slow
def test_short_real_run_moves_every_byte_and_leaves_nothing(real_testbed: None, tmp_path: Path) -> None:
    """2 paths, 4 small tasks, 2 policies, 1 repeat over real Mahimahi shells: every task delivered."""
    before = _testbed_processes()
    cfg = RunConfig(
        policies=("itp", "round-robin"), trace_files=TRACES, schedule=SHORT, repeats=1, settle_s=0.2
    )
    seen: list[str | None] = []
    result = run_testbed(cfg, progress=lambda n, note: seen.append(note), workdir=tmp_path)
    assert len(result.runs) == 2 and len(seen) == 2
    for run in result.runs:
        assert [t.name for t in run.tasks] == [t.name for t in result.schedules[0].tasks]
        assert all(t.ok and t.seconds > 0 and sum(t.stream_bytes) == t.size_bytes for t in run.tasks)
        assert run.aggregate_goodput_bps > 0 and not run.timed_out
    rr = next(r for r in result.runs if r.policy == "round-robin")
    assert all(sum(1 for b in t.stream_bytes if b) == 1 for t in rr.tasks)  # one stream per task
    # Nothing left: no new testbed processes, no run directory, no shell devices of ours.
    assert _testbed_processes() <= before
    assert list(tmp_path.iterdir()) == []
    data = result.to_dict()
    assert cases_from_result(json.loads(json.dumps(data)))
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert all(f"delay-{pid}" not in links for pid in before)


@pytest.mark.slow
def test_a_learning_run_continues_one_deployment_across_repeats(real_testbed: None, tmp_path: Path) -> None:
    """2 paths, 4 tasks, 2 repeats run in reverse order, itp learning: its second session (schedule 0)
    continues the first's (schedule 1) store and calibration (no retrain: the threshold is not reached),
    the folder is kept where it was asked; the ``bundled`` control runs the model without the learning
    entry."""
    learn_dir = tmp_path / "deployment"
    cfg = RunConfig(
        policies=("itp", "bundled", "rate-proportional"),
        trace_files=TRACES,
        schedule=SHORT,
        repeats=2,
        repeat_order=(1, 0),
        settle_s=0.2,
        learn=True,
        learn_dir=str(learn_dir),
        retrain_every=1000,
    )
    result = run_testbed(cfg, workdir=tmp_path)
    itp_runs = [r for r in result.runs if r.policy == "itp"]  # in the order they ran
    assert [r.repeat for r in itp_runs] == [1, 0] and [s.repeat for s in result.schedules] == [1, 0]
    assert result.to_dict()["config"]["repeat_order"] == [1, 0]
    assert all(all(t.ok for t in r.tasks) for r in result.runs)
    first, second = (r.learning for r in itp_runs)
    assert first is not None and second is not None
    assert first["experience_count"] == 4 and second["experience_count"] == 8
    assert first["restored_calibration_observations"] == 0
    assert second["restored_calibration_observations"] == sum(first["calibration"]["observations"]) > 0
    assert all(r.learning is None for r in result.runs if r.policy != "itp")
    bundled = [r for r in result.runs if r.policy == "bundled"]
    assert len(bundled) == 2 and all(t.ok and t.action is not None for r in bundled for t in r.tasks)
    # Every task records who decided it and its reward (baselines: nobody, none); no canary ran, so
    # there is no canary to compare.
    for r in result.runs:
        for t in r.tasks:
            if r.policy == "rate-proportional":
                assert t.arm is None and t.model_version is None and t.reward is None
            else:
                assert t.arm == "current" and t.model_version is not None and t.reward is not None
    assert canary_comparisons(result.runs) == []
    assert (learn_dir / "experience.sqlite3").exists() and (learn_dir / "calibration.json").exists()
    _header, rows = repeat_rows(result.runs, cfg.policies)
    assert len(rows) == 2 and rows[1][-2] == "8"
