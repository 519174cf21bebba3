"""``itp testbed``: help, check, clean --dry-run, calibrate on a saved run, and its user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from testbed_data import fake_run_result

from itp.cli import SUBCOMMANDS, main
from itp.testbed.calibrate import TransportParams


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m itp ...`` outside the repository (so the installed package is what runs)."""
    return subprocess.run(
        [sys.executable, "-m", "itp", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )


def test_registered_with_every_subcommand_documented(tmp_path: Path) -> None:
    assert "testbed" in SUBCOMMANDS
    out = run_cli("testbed", "--help", cwd=tmp_path)
    assert out.returncode == 0
    for sub in ("setup", "check", "clean", "run", "calibrate", "iperf"):
        assert sub in out.stdout
        assert run_cli("testbed", sub, "--help", cwd=tmp_path).returncode == 0


def test_check_lists_requirements_and_exit_status_says_ready(tmp_path: Path) -> None:
    out = run_cli("testbed", "check", cwd=tmp_path)
    assert out.returncode in (0, 1)
    assert "mm-delay" in out.stdout and "user itptb" in out.stdout
    assert (out.returncode == 0) == out.stdout.rstrip().endswith("ready")


def test_clean_dry_run_changes_nothing(tmp_path: Path) -> None:
    out = run_cli("testbed", "clean", "--dry-run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_calibrate_a_saved_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run.json"
    run.write_text(json.dumps(fake_run_result(TransportParams(1.0, 14600, True, 0.8))))
    assert main(["testbed", "calibrate", str(run)]) == 0
    text = capsys.readouterr().out
    assert "simulator defaults" in text and "efficiency 0.80" in text
    assert main(["testbed", "calibrate", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fitted_params"]["setup_rtts"] == pytest.approx(1.0)


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["testbed", "calibrate", str(tmp_path / "missing.json")]) == 1
    assert "run file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["testbed", "calibrate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "not a testbed run JSON" in err and "Traceback" not in err
    assert main(["testbed", "run", "--policies", "itp,nope"]) == 2
    assert "unknown policy 'nope'" in capsys.readouterr().err
    assert main(["testbed", "run", "--paths", "5"]) == 2
    assert "paths" in capsys.readouterr().err
    for bad_order, why in (("1,1", "distinct"), ("2,x", "like 2,1,0"), ("-1", "like 2,1,0")):
        with pytest.raises(SystemExit) as stop:  # argparse: usage and the reason on stderr, status 2
            main(["testbed", "run", "--repeat-order", bad_order])
        assert stop.value.code == 2 and why in capsys.readouterr().err
    assert main(["testbed", "run", "--repeat-order", "1,0", "--repeats", "3"]) == 2
    assert "repeat_order has 2 repeats, RunConfig.repeats is 3" in capsys.readouterr().err
    assert main(["testbed", "iperf", "--policy", "zzz"]) == 2


def test_table_of_a_saved_run_shows_its_canaries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = fake_run_result(TransportParams(1.0, 14600, True, 0.8))
    run = tmp_path / "run.json"
    run.write_text(json.dumps(data))
    assert main(["testbed", "table", str(run), "--canaries"]) == 0
    assert "no canary decided tasks" in capsys.readouterr().out  # a run without per-task arms
    itp_run = next(r for r in data["runs"] if r["policy"] == "itp")
    for k, t in enumerate(itp_run["tasks"]):  # alternate arms over the session
        cand = k % 2 == 1
        t.update(arm="candidate" if cand else "current", model_version="1.0.1" if cand else "1.0.0",
                 reward=0.5 if cand else 0.25)
    run.write_text(json.dumps(data))
    assert main(["testbed", "table", str(run), "--canaries", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "goodput candidate / current" in out and "| 1.0.1 (1.0.0) |" in out and "+0.250 ± 0.000" in out
    with pytest.raises(SystemExit):
        main(["testbed", "table", str(run), "--canaries", "--by-repeat"])
