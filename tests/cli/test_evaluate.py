"""``itp evaluate``: end to end in a subprocess (tiny budgets), and its error handling in process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from model_factory import write_model

from itp.cli import SUBCOMMANDS, main
from itp.sim.traces import shipped_traces_dir

SHIPPED = str(shipped_traces_dir())


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m itp ...`` outside the repository (so the installed package is what runs)."""
    return subprocess.run(
        [sys.executable, "-m", "itp", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})}, check=False,
    )


def test_evaluate_end_to_end_json_is_reproducible(tmp_path: Path) -> None:
    args = ("evaluate", "--policy", "best-single", "oracle", "--traces", SHIPPED, "--episodes", "2",
            "--seed", "3", "--tasks-per-episode", "8", "--json", "--no-progress")
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    # The requested policies first, then the two references of the relative columns.
    assert [r["name"] for r in data["rows"]] == ["best-single", "oracle", "heuristic", "round-robin"]
    assert data["episodes"] == 2 and data["seed"] == 3 and data["tasks_per_episode"] == 8
    assert data["mode"] == "trace" and len(data["trace_files"]) == 6
    for row in data["rows"]:
        assert row["tasks"] == 16 and 0.0 <= row["success_rate"] <= 1.0
        assert row["p50_completion_time_s"] <= row["p95_completion_time_s"]
    assert data["rows"][2]["goodput_vs_heuristic"] == 1.0
    assert data["rows"][3]["goodput_vs_round_robin"] == 1.0
    second = run_cli(*args, cwd=tmp_path)
    assert second.stdout == first.stdout  # same seeds, same numbers


def test_evaluate_prints_one_table_with_every_column(tmp_path: Path) -> None:
    out = run_cli("evaluate", "--synthetic", "--episodes", "1", "--tasks-per-episode", "4",
                  "--policy", "equal-split", "--progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for header in ("policy", "mean time", "p50 time", "p95 time", "mean goodput", "success",
                   "mean reward", "goodput / heuristic", "goodput / round-robin"):
        assert header in lines[0]
    assert [ln.split()[0] for ln in lines[2:5]] == ["equal-split", "heuristic", "round-robin"]
    assert "synthetic mode" in lines[5]
    assert "Traceback" not in out.stderr


def test_help_lists_the_subcommands(tmp_path: Path) -> None:
    out = run_cli("--help", cwd=tmp_path)
    assert out.returncode == 0 and all(name in out.stdout for name in SUBCOMMANDS)


def test_default_traces_fall_back_to_the_shipped_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ITP_TRACES_DIR", str(tmp_path / "no-such-corpus"))
    code = main(["evaluate", "--policy", "heuristic", "--episodes", "1", "--tasks-per-episode", "3",
                 "--json", "--no-progress"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and str(shipped_traces_dir()) in data["source"]


def test_markdown_and_onnx_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_model(tmp_path / "tiny.onnx", seed=1)
    code = main(["evaluate", "--policy", str(model), "--traces", SHIPPED, "--episodes", "1",
                 "--tasks-per-episode", "3", "--markdown", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("| policy |") and "| tiny |" in out


def test_progress_without_tqdm(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now fails: the optional dependency
    code = main(["evaluate", "--synthetic", "--policy", "round-robin", "--episodes", "2",
                 "--tasks-per-episode", "2", "--progress"])
    captured = capsys.readouterr()
    assert code == 0 and "round-robin: 2 episodes done" in captured.err and "policy" in captured.out


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["evaluate", "--policy", "fastest"], 2, "unknown policy 'fastest'"),
        (["evaluate", "--episodes", "0"], 2, "expected an integer >= 1"),
        (["evaluate", "--seed", "-3"], 2, "expected an integer >= 0"),
        (["evaluate", "--traces", "/no/such/dir"], 1, "trace directory not found: /no/such/dir"),
        (["evaluate", "--policy", "/no/model.onnx"], 1, "model file not found"),
        (["evaluate", "--synthetic", "--traces", "x"], 2, "not allowed with argument"),
        (["evaluate", "--json", "--markdown"], 2, "not allowed with argument"),
        ([], 2, "a command is required"),
    ],
)
def test_user_errors_are_one_line_without_traceback(
    argv: list[str], status: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == status and message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("itp")


def test_bad_trace_file_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good").write_text("0 1\n5 2\n")
    bad = tmp_path / "bad"
    bad.write_text("0 1\n5 2\n10 x\n")
    code = main(["evaluate", "--traces", str(tmp_path), "--episodes", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and f"{bad}:3: not a number" in err and len(err.strip().splitlines()) == 1


def test_bad_model_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00garbage")
    code = main(["evaluate", "--policy", str(bad), "--synthetic", "--episodes", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "broken.onnx: not a loadable ONNX model" in err and "Traceback" not in err


def test_subprocess_user_error_has_no_traceback(tmp_path: Path) -> None:
    out = run_cli("evaluate", "--traces", str(tmp_path / "missing"), cwd=tmp_path)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        f"itp evaluate: error: trace directory not found: {tmp_path / 'missing'}"
    ]
