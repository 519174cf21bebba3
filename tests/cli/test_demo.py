"""``itp demo``: the README's main job, end to end in a subprocess and in process with tiny budgets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from model_factory import write_model

import itp.partitioner
from itp.actions import ACTION_STREAMS
from itp.cli import main
from itp.sim.baselines import BASELINE_NAMES
from itp.sim.traces import shipped_traces_dir

TINY = ("--tasks", "6", "--show", "3", "--episodes", "1", "--no-progress")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m itp ...`` outside the repository (so the installed package is what runs)."""
    return subprocess.run(
        [sys.executable, "-m", "itp", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ}, check=False,
    )


def demo_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["demo", *args, "--json"]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


@pytest.fixture
def bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the partitioner looks for the bundled model, pointed at a private path (empty at first)."""
    path = tmp_path / "bundled" / "dqn_v1.onnx"
    path.parent.mkdir()
    monkeypatch.setattr(itp.partitioner, "default_model_path", lambda: path)
    return path


def test_demo_end_to_end_after_install(tmp_path: Path) -> None:
    # Exactly what the README runs, with a smaller budget: it must work from any folder, with whatever
    # bundled model this installation has (or the heuristic fallback, announced).
    out = run_cli("demo", *TINY, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("itp demo: 6 tasks on 4 streams replaying 6 trace files (the traces shipped")
    assert "First 3 decisions" in text and "task-2" in text and "task-3 " not in text
    assert "decisions      6 (" in text and "6 reported" in text
    for name in BASELINE_NAMES:
        assert f"\n{name} " in text, name
    if itp.partitioner.default_model_path().is_file():
        assert "deciding:  model " in text
    else:
        assert "deciding:  the heuristic (fallback)" in text and "is not installed" in text
    assert "Traceback" not in out.stderr


def test_missing_bundled_model_falls_back_to_the_heuristic_and_says_so(
    bundled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", *TINY, "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    # One plain warning line on stderr (the structured fields only with -v).
    assert captured.err == (
        f"WARNING itp.agent: model not loaded, using the heuristic: model file not found: {bundled}\n"
    )
    assert doc["policy"] == "the heuristic (fallback)"
    assert str(bundled) in doc["note"] and "is not installed" in doc["note"]
    assert {d["source"] for d in doc["session"]["decisions"]} == {"heuristic"}
    m = doc["metrics"]
    assert m["fallback_count"] == 6 and m["faults_by_cause"]["load"] == 1
    # Without a model, itp's row is the heuristic baseline's: no separate model row.
    assert [r["name"] for r in doc["evaluation"]["rows"]] == list(BASELINE_NAMES)


def test_corrupt_bundled_model_falls_back_too(bundled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_model(bundled, seed=1)
    bundled.write_bytes(bundled.read_bytes()[:500])  # truncated after the metadata was written
    assert main(["demo", *TINY, "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["policy"] == "the heuristic (fallback)" and "did not load" in doc["note"]
    assert doc["metrics"]["faults_by_cause"]["load"] == 1
    assert "WARNING itp.agent: model not loaded" in captured.err and "sha256 mismatch" in captured.err


def test_bundled_model_decides_and_is_compared_with_every_baseline(
    bundled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_model(bundled, seed=4, version="1.2.3")
    doc = demo_json(capsys, "--tasks", "12", "--episodes", "2", "--seed", "5")
    assert doc["policy"].startswith("model 1.2.3 (") and doc["note"] is None
    decisions = doc["session"]["decisions"]
    assert [d["task_id"] for d in decisions] == [f"task-{k}" for k in range(12)]
    for d in decisions:
        assert d["source"] == "model"
        assert sum(d["chunk_sizes"]) == d["size_bytes"] and all(c > 0 for c in d["chunk_sizes"])
        assert set(d["stream_ids"]) <= set(ACTION_STREAMS[d["action"]])
        assert d["expected_time_s"] > 0 and d["completion_time_s"] > 0 and 0 <= d["confidence"] <= 1
    m = doc["metrics"]
    assert m["total_decisions"] == m["reported_outcomes"] == m["pushed_transitions"] == 12
    assert m["model_version"] == "1.2.3" and m["fallback_count"] == 0 and m["outstanding_decisions"] == 0
    assert m["successful_tasks"] == sum(d["success"] for d in decisions)
    assert abs(m["avg_reward"] - sum(d["reward"] for d in decisions) / 12) < 1e-9
    table = doc["evaluation"]
    assert [r["name"] for r in table["rows"]] == ["itp model 1.2.3", *BASELINE_NAMES]
    assert table["episodes"] == 2 and all(r["tasks"] == 2 * table["tasks_per_episode"] for r in table["rows"])


def test_same_seed_same_session(capsys: pytest.CaptureFixture[str]) -> None:
    first = demo_json(capsys, "--heuristic", "--tasks", "10", "--episodes", "0", "--seed", "3")
    second = demo_json(capsys, "--heuristic", "--tasks", "10", "--episodes", "0", "--seed", "3")
    other = demo_json(capsys, "--heuristic", "--tasks", "10", "--episodes", "0", "--seed", "4")
    assert first["session"] == second["session"] and first["evaluation"] is None
    assert first["session"]["decisions"] != other["session"]["decisions"]


def test_explicit_model_and_traces_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_model(tmp_path / "m.onnx", seed=2, version="0.9.0")
    traces = tmp_path / "traces"
    traces.mkdir()
    one = sorted(p for p in shipped_traces_dir().iterdir() if p.name.startswith("trace_"))[0]
    shutil.copy2(one, traces / one.name)
    doc = demo_json(capsys, "--model", str(model), "--traces", str(traces), *TINY)
    assert doc["policy"].startswith("model 0.9.0") and doc["traces"] == [str(traces / one.name)]
    assert doc["evaluation"]["trace_files"] == [one.name]


def test_text_output_shows_decisions_and_the_table(tmp_path: Path) -> None:
    model = write_model(tmp_path / "m.onnx", seed=2, version="0.9.0")
    out = run_cli("demo", "--model", str(model), *TINY, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("task "))
    for col in ("size", "prio", "source", "conf", "streams", "bytes per stream", "expected", "simulated"):
        assert col in lines[header]
    rows = lines[header + 2 : header + 5]
    assert [r.split()[0] for r in rows] == ["task-0", "task-1", "task-2"]
    assert all(" model " in r for r in rows)
    assert any(ln.startswith("itp model 0.9.0 ") for ln in lines)
    assert "oracle sees the future" in out.stdout


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (("--model", "{tmp}/missing.onnx"), 1, "--model {tmp}/missing.onnx: model file not found"),
        (("--model", "{tmp}/garbage.onnx"), 1, "--model {tmp}/garbage.onnx: "),
        (("--traces", "{tmp}/nowhere"), 1, "--traces {tmp}/nowhere is not a folder"),
        (("--traces", "{tmp}/empty"), 1, "no trace files in {tmp}/empty"),
        (("--traces", "{tmp}/broken"), 1, "bad_trace"),
        (("--heuristic", "--model", "x.onnx"), 2, "not allowed with argument"),
        (("--episodes", "many"), 2, "expected an integer >= 0, got 'many'"),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, args: tuple[str, ...], status: int, message: str) -> None:
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bad_trace").write_text("0 1.0\n5 not-a-number\n")
    out = run_cli("demo", *(a.format(tmp=tmp_path) for a in args), "--tasks", "2", "--episodes", "0",
                  cwd=tmp_path)
    assert out.returncode == status
    assert message.format(tmp=tmp_path) in out.stderr
    assert "Traceback" not in out.stderr
    errors = [ln for ln in out.stderr.splitlines() if not ln.startswith(("usage:", " ", "WARNING"))]
    assert len(errors) == 1 and errors[0].startswith("itp demo: error: ")  # one line (after any usage)


def test_progress_without_tqdm_prints_plain_lines(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "itp", "demo", "--heuristic", "--tasks", "2", "--episodes", "2", "--progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env=env_without("tqdm", tmp_path),
    )
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    # 6 baselines x 2 episodes = 12 episodes, reported at each quarter.
    assert lines[-1].startswith("itp demo: baselines: 12/12 episodes")
    assert all(ln.startswith("itp demo: baselines: ") for ln in lines)


def env_without(module: str, tmp_path: Path) -> dict[str, str]:
    """The environment with ``module`` shadowed by a package whose import fails, as if not installed."""
    blocker = tmp_path / "blocked" / module
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(f"raise ImportError('No module named {module}')\n")
    path = os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}
