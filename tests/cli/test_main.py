"""The ``itp`` entry point: --help of every subcommand, --version, unknown commands, logging set-up."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from model_factory import write_model

import itp
from itp.cli import SUBCOMMANDS, ExtraFormatter, build_parser, configure_logging, main

EXPECTED = {"demo", "train", "evaluate", "export", "models", "metrics", "plot", "send", "receive", "testbed"}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m itp ...`` outside the repository (so the installed package is what runs)."""
    return subprocess.run(
        [sys.executable, "-m", "itp", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ}, check=False,
    )


def test_every_documented_subcommand_is_registered() -> None:
    assert set(SUBCOMMANDS) == EXPECTED
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == EXPECTED


def test_top_level_help_lists_every_subcommand(tmp_path: Path) -> None:
    out = run_cli("--help", cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == ""
    for name in EXPECTED:
        assert f"\n    {name}" in out.stdout, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_subcommand_help(name: str, tmp_path: Path) -> None:
    out = run_cli(name, "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: itp {name}")
    assert "Traceback" not in out.stderr


def test_version(tmp_path: Path) -> None:
    out = run_cli("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"itp {itp.__version__}"


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    out = run_cli("frobnicate", cwd=tmp_path)
    assert out.returncode == 2
    assert "invalid choice: 'frobnicate'" in out.stderr and "Traceback" not in out.stderr


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    out = run_cli(cwd=tmp_path)
    assert out.returncode == 2 and "a command is required" in out.stderr


def test_bad_option_value_is_one_line_and_status_2(tmp_path: Path) -> None:
    out = run_cli("demo", "--tasks", "-3", cwd=tmp_path)
    assert out.returncode == 2
    last = out.stderr.splitlines()[-1]
    assert last == "itp demo: error: argument --tasks: expected an integer >= 1, got -3"


def test_verbosity_controls_what_the_library_logs(tmp_path: Path) -> None:
    model = write_model(tmp_path / "m.onnx", seed=2, version="0.4.2")
    args = ("demo", "--model", str(model), "--tasks", "3", "--episodes", "0", "--show", "0")
    quiet = run_cli(*args, cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""
    info = run_cli("-v", *args, cwd=tmp_path)
    assert "INFO itp.agent: model 0.4.2 is current" in info.stderr
    assert "event=model_current model_version=0.4.2 backend=" in info.stderr
    assert "DEBUG" not in info.stderr
    debug = run_cli("-vv", *args, cwd=tmp_path)
    decisions = [ln for ln in debug.stderr.splitlines() if "event=decision" in ln]
    outcomes = [ln for ln in debug.stderr.splitlines() if "event=outcome" in ln]
    assert len(decisions) == 3 and len(outcomes) == 3
    assert all(f"task_id=task-{k}" in ln for k, ln in enumerate(decisions))
    assert all("model_version=0.4.2" in ln and "chunk_sizes=(" in ln for ln in decisions)


def test_main_restores_the_callers_logging(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("itp")
    before = (logger.level, logger.propagate, list(logger.handlers))
    assert main(["-vv", "demo", "--heuristic", "--tasks", "2", "--episodes", "0", "--show", "0"]) == 0
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
    assert "event=decision" in capsys.readouterr().err


def test_configure_logging_levels_and_restore() -> None:
    logger = logging.getLogger("itp")
    level = logger.level
    levels = ((0, logging.WARNING), (1, logging.INFO), (2, logging.DEBUG), (5, logging.DEBUG))
    for verbosity, expected in levels:
        restore = configure_logging(verbosity)
        try:
            assert logger.level == expected
        finally:
            restore()
        assert logger.level == level


def test_extra_formatter_appends_structured_fields() -> None:
    record = logging.LogRecord("itp.x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.__dict__.update({"task_id": "t 1", "stream_ids": (0, 2), "expected_time_s": 0.123456789})
    line = ExtraFormatter().format(record)
    assert line == "INFO itp.x: hello world task_id='t 1' stream_ids=(0,2) expected_time_s=0.123457"
    assert ExtraFormatter(show_extras=False).format(record) == "INFO itp.x: hello world"
    plain = logging.LogRecord("itp.x", logging.WARNING, __file__, 1, "no extras", (), None)
    assert ExtraFormatter().format(plain) == "WARNING itp.x: no extras"


def test_output_into_a_closed_pipe_is_not_an_error(tmp_path: Path) -> None:
    # More output than a pipe buffers, and a reader that leaves after one line (``itp demo | head -1``).
    with subprocess.Popen(
        [sys.executable, "-m", "itp", "demo", "--heuristic", "--tasks", "1500", "--show", "1500",
         "--episodes", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        status = proc.wait(timeout=120)
    assert status == 0, err
    assert first.startswith(b"itp demo: 1500 tasks") and "Traceback" not in err and "Exception" not in err
