"""The scripts in ``examples/`` run as documented (subprocess, tiny budgets) and do what they say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from model_factory import write_model

from itp.actions import ACTION_STREAMS
from itp.learning.store import ExperienceStore
from itp.model_metadata import metadata_path_for, read_metadata
from itp.sim.traces import shipped_traces_dir

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=cwd, capture_output=True, text=True,
        timeout=600, env={**os.environ}, check=False,
    )


def test_sender_loop_reports_every_task_and_stores_the_experience(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    model = write_model(tmp_path / "m.onnx", seed=3, version="0.2.0")
    out = run_example("sender_loop.py", "--tasks", "240", "--workers", "6", "--model", str(model),
                      "--epsilon", "0.2", "--registry", str(registry), "--speedup", "2000", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert "deciding with model 0.2.0" in out.stdout
    assert "240 decisions" in out.stdout and "240 reported" in out.stdout
    assert "240 transitions pushed, 240 stored durably, 0 dropped" in out.stdout
    # What the learner stored is what six threads reported: one transition per task, valid actions.
    with ExperienceStore(registry / "experience.sqlite3") as store:
        assert len(store) == 240
        rows = store.recent(1000)
    assert len(rows) == 240
    assert np.all((rows.actions >= 0) & (rows.actions < len(ACTION_STREAMS)))
    assert np.all((rows.states >= 0) & (rows.states <= 1)) and np.all(np.isfinite(rows.rewards))
    # The learner registered the partitioner's model as the registry's first version.
    assert (registry / "current.json").is_file()


def test_sender_loop_with_the_heuristic(tmp_path: Path) -> None:
    out = run_example("sender_loop.py", "--tasks", "50", "--workers", "2", "--heuristic", "--speedup", "5000",
                      cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "deciding with the heuristic" in out.stdout and "'heuristic': 50" in out.stdout


@pytest.mark.slow
def test_train_on_your_traces(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    traces = tmp_path / "my_traces"
    traces.mkdir()
    for f in sorted(shipped_traces_dir().iterdir()):
        if f.name.startswith("trace_"):
            (traces / f.name).write_bytes(f.read_bytes())
    out = run_example("train_on_your_traces.py", str(traces), "--output", str(tmp_path / "run"),
                      "--episodes", "2", "--eval-episodes", "1", "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "6 trace files: 4 for training, 2 held out" in out.stdout
    lines = out.stdout.splitlines()
    assert any(ln.startswith("your model ") for ln in lines)
    assert any(ln.startswith("oracle ") for ln in lines) and "2 trace files" in out.stdout
    assert "256 MiB task -> streams (" in out.stdout and "(model)" in out.stdout
    md = read_metadata(metadata_path_for(tmp_path / "run" / "dqn_final.onnx"))
    assert md.training["episodes_run"] == 2
    assert (tmp_path / "run" / "training_history.json").is_file()
