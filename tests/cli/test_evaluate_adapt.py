"""``itp evaluate --adapt NETWORK``: end to end on tiny budgets, JSON and PNG files, exit codes, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from itp.cli import main
from itp.sim.adapt import SCHEMA
from itp.sim.traces import shipped_traces_dir

SHIPPED = str(shipped_traces_dir())
TINY = ["--outcomes", "12", "--checkpoint", "5", "--retrain-every", "1000", "--tasks-per-episode", "6",
        "--traces", SHIPPED, "--no-progress"]


def test_adapt_writes_json_and_prints_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "adapt.json"
    code = main(["evaluate", "--adapt", "lossy", *TINY, "--seed", "2", "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(out.read_text())
    assert data["schema"] == SCHEMA and data["network"] == "lossy" and data["outcomes"] == 12
    assert data["config"]["seed"] == 2 and data["config"]["epsilon"] == 0.05
    assert [(c["start"], c["outcomes"]) for c in data["checkpoints"]] == [(0, 5), (5, 10), (10, 12)]
    assert data["tasks_identical"] is True
    assert "network lossy:" in captured.out and "outcomes 10-12:" in captured.out
    assert "summary: final-window goodput / best baseline" in captured.out
    assert f"wrote {out}" in captured.err


def test_adapt_json_on_stdout_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "curve.png"
    code = main(["evaluate", "--adapt", "collapse", *TINY, "--json", "--plot", str(png), "--epsilon", "0",
                 "--top-k", "3", "--guard-margin", "off", "--guard-exploration",
                 "--explore-max-bytes", "1048576", "--model-failures"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    assert data["network"] == "collapse" and data["config"]["epsilon"] == 0.0
    assert data["config"]["explore_top_k"] == 3 and data["config"]["guard_margin"] is None
    assert data["config"]["guard_exploration"] is True and data["config"]["explore_max_bytes"] == 1048576
    assert data["config"]["model_failures"] is True
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_adapt_progress_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = [a for a in TINY if a != "--no-progress"]
    code = main(["evaluate", "--adapt", "warm", *args, "--progress"])
    err = capsys.readouterr().err
    assert code == 0 and "itp evaluate --adapt: itp-adaptive" in err and "12/12 tasks" in err


def test_plot_without_matplotlib_is_a_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = main(["evaluate", "--adapt", "warm", *TINY, "--plot", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 1 and "--plot needs matplotlib, which is not installed (pip install matplotlib)" in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["evaluate", "--adapt", "fast"], 2, "argument --adapt: invalid choice: 'fast'"),
        (["evaluate", "--adapt", "warm", "--outcomes", "0"], 2,
         "argument --outcomes: expected an integer >= 1, got 0"),
        (["evaluate", "--adapt", "warm", "--checkpoint", "x"], 2, "expected an integer >= 1, got 'x'"),
        (["evaluate", "--adapt", "warm", "--epsilon", "1.5"], 2, "expected a number in [0, 1], got '1.5'"),
        (["evaluate", "--adapt", "warm", "--time-budget", "-1"], 2, "expected a number of seconds > 0"),
        (["evaluate", "--adapt", "warm", "--top-k", "16"], 2, "explore_top_k must be an int in 1..15"),
        (["evaluate", "--top-k", "3"], 2, "--top-k needs --adapt NETWORK"),
        (["evaluate", "--adapt", "warm", "--guard-margin", "-1"], 2, "expected a number >= 0 or 'off'"),
        (["evaluate", "--guard-margin", "0.1"], 2, "--guard-margin needs --adapt NETWORK"),
        (["evaluate", "--guard-exploration"], 2, "--guard-exploration needs --adapt NETWORK"),
        (["evaluate", "--no-guard-exploration"], 2, "--guard-exploration needs --adapt NETWORK"),
        (["evaluate", "--adapt", "warm", "--policy", "heuristic"], 2, "--policy cannot be used with --adapt"),
        (["evaluate", "--adapt", "warm", "--episodes", "3"], 2, "--episodes cannot be used with --adapt"),
        (["evaluate", "--adapt", "warm", "--markdown"], 2, "--markdown cannot be used with --adapt"),
        (["evaluate", "--outcomes", "10"], 2, "--outcomes needs --adapt NETWORK"),
        (["evaluate", "--plot", "x.png"], 2, "--plot needs --adapt NETWORK"),
        (["evaluate", "--adapt", "warm", "--traces", "/no/such/dir"], 1, "trace directory not found"),
    ],
)
def test_user_errors_name_the_bad_argument(
    argv: list[str], status: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == status and message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("itp")


def test_unwritable_json_path_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "missing-dir" / "out.json"
    code = main(["evaluate", "--adapt", "warm", *TINY, "--json", str(target)])
    err = capsys.readouterr().err
    assert code == 1 and f"--json {target}" in err and "Traceback" not in err


def test_plain_evaluate_json_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "table.json"
    code = main(["evaluate", "--synthetic", "--policy", "round-robin", "--episodes", "1",
                 "--tasks-per-episode", "2", "--json", str(out), "--no-progress"])
    assert code == 0 and "policy" in capsys.readouterr().out
    assert [r["name"] for r in json.loads(out.read_text())["rows"]] == ["round-robin", "heuristic"]


def test_adapt_in_a_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "itp", "evaluate", "--adapt", "ss-restart", *TINY, "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(os.environ), check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["network"] == "ss-restart"
    bad = subprocess.run(
        [sys.executable, "-m", "itp", "evaluate", "--adapt", "nowhere"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr
