"""``itp plot``: training curves and evaluation comparisons to PNG, and what it refuses."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from model_factory import write_model

from itp.cli.plot import evaluation_table_of, plot_evaluation
from itp.model_metadata import metadata_path_for, read_metadata, write_metadata
from itp.sim.evaluate import evaluate
from itp.sim.physics import SimConfig
from itp.training.history import EpisodeRecord, TrainingHistory

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m itp ...`` outside the repository (so the installed package is what runs)."""
    return subprocess.run(
        [sys.executable, "-m", "itp", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ}, check=False,
    )


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk; asserts the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def history(episodes: int = 30) -> TrainingHistory:
    h = TrainingHistory()
    for e in range(1, episodes + 1):
        loss = 1.0 / e if e > 2 else float("nan")  # no gradient steps in the first episodes
        h.add_episode(EpisodeRecord(e, 0.1 * e, loss, max(0.01, 1 - e / 20), 0.4 + e / 100, 64 * e,
                                    3e8 + 1e6 * e, 2.0 - e / 100))
        if e % 10 == 0:
            baselines = {"heuristic": {"mean_goodput_bps": 3.5e8}}
            h.add_validation(e, {"mean_goodput_bps": 3e8 + 2e6 * e}, baselines)
    return h


def table(episodes: int = 1) -> dict[str, Any]:
    t = evaluate(["heuristic", "round-robin", "oracle"], episodes=episodes, seed=0,
                 config=SimConfig(tasks_per_episode=8))
    return t.to_dict()


def test_training_history_to_png(tmp_path: Path) -> None:
    path = history().save(tmp_path / "training_history.json")
    out = run_cli("plot", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    target = tmp_path / "training_history.png"
    assert out.stdout.strip() == f"{target}  (training curves from {path})"
    assert png_size(target) == (1200, 800)


def test_evaluation_json_to_png_in_out_dir(tmp_path: Path) -> None:
    src = tmp_path / "eval.json"
    src.write_text(json.dumps(table()))
    out = run_cli("plot", str(src), "--out-dir", str(tmp_path / "plots" / "new"), "--title", "mine",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    width, height = png_size(tmp_path / "plots" / "new" / "eval.png")
    assert width >= 1000 and height == 460


def test_evaluate_json_output_and_demo_json_output_plot(tmp_path: Path) -> None:
    ev = run_cli("evaluate", "--synthetic", "--episodes", "1", "--tasks-per-episode", "4", "--json",
                 "--no-progress", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    (tmp_path / "evaluate.json").write_text(ev.stdout)
    demo = run_cli("demo", "--heuristic", "--tasks", "3", "--episodes", "1", "--json", "--no-progress",
                   cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    (tmp_path / "demo.json").write_text(demo.stdout)
    out = run_cli("plot", str(tmp_path / "evaluate.json"), str(tmp_path / "demo.json"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 2
    png_size(tmp_path / "evaluate.png")
    png_size(tmp_path / "demo.png")


def test_training_folder_plots_history_and_model_evaluations(tmp_path: Path) -> None:
    history().save(tmp_path / "training_history.json")
    evaluated = write_model(tmp_path / "dqn_final.onnx", seed=1)
    md = read_metadata(metadata_path_for(evaluated))
    write_metadata(metadata_path_for(evaluated), dataclasses.replace(md, evaluation={"table": table()}))
    write_model(tmp_path / "plain.onnx", seed=2)  # no evaluation in its metadata: nothing to draw
    out = run_cli("plot", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == ["dqn_final.evaluation.png", "training_history.png"]


def test_evaluation_table_of_accepts_every_container() -> None:
    t = table()
    assert evaluation_table_of(t) == t
    assert evaluation_table_of({"evaluation": {"table": t, "markdown": ""}}) == t
    assert evaluation_table_of({"evaluation": t}) == t
    assert evaluation_table_of({"evaluation": {}}) is None
    assert evaluation_table_of([t]) is None


def test_plot_evaluation_names_a_bad_row(tmp_path: Path) -> None:
    t = table()
    del t["rows"][1]["mean_reward"]
    with pytest.raises(ValueError, match="evaluation row 'round-robin': field mean_reward must be a number"):
        plot_evaluation(t, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no rows"):
        plot_evaluation({"rows": []}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("foreign.json", '{"hello": 1}', "is neither a training history nor an evaluation table"),
        ("broken.json", '{"rows": [', "is not valid JSON"),
        ("empty_history.json", '{"format": "itp-training-history", "format_version": 1, "episodes": [], '
         '"validation": []}', "it has no episodes"),
        ("bad_row.json", '{"rows": [{"name": "x", "mean_goodput_bps": "fast"}]}', "field mean_goodput_bps"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    out = run_cli("plot", str(tmp_path / name), cwd=tmp_path)
    assert out.returncode == 1 and message in out.stderr
    assert out.stderr.startswith("itp plot: error: ") and len(out.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.png"))


def test_missing_input_and_empty_folder(tmp_path: Path) -> None:
    out = run_cli("plot", str(tmp_path / "nope.json"), cwd=tmp_path)
    assert out.returncode == 1 and f"no such file or folder: {tmp_path}/nope.json" in out.stderr
    (tmp_path / "empty").mkdir()
    out = run_cli("plot", str(tmp_path / "empty"), cwd=tmp_path)
    assert out.returncode == 1 and "nothing to plot in" in out.stderr


def test_without_matplotlib_says_what_to_install(tmp_path: Path) -> None:
    path = history().save(tmp_path / "training_history.json")
    out = subprocess.run(
        [sys.executable, "-m", "itp", "plot", str(path)], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False,
        env=env_without("matplotlib", tmp_path),
    )
    assert out.returncode == 1
    expected = "itp plot: error: plotting needs matplotlib: pip install matplotlib (or 'itp[train]')"
    assert out.stderr.strip() == expected


def env_without(module: str, tmp_path: Path) -> dict[str, str]:
    """The environment with ``module`` shadowed by a package whose import fails, as if not installed."""
    blocker = tmp_path / "blocked" / module
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(f"raise ImportError('No module named {module}')\n")
    path = os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}
