"""``itp models`` (and ``itp metrics --once``): list, show, rollback against a real registry."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from model_factory import write_model

import itp.cli
from itp.cli import CLIError
from itp.cli import metrics as metrics_cli
from itp.cli import models as models_cli
from itp.learning.registry import ModelRegistry


def run_cli(*argv: str) -> int:
    """Parse and run like ``itp`` does (the modules' own add_parser/run)."""
    parser = argparse.ArgumentParser(prog="itp")
    sub = parser.add_subparsers(dest="command")
    models_cli.add_parser(sub)
    metrics_cli.add_parser(sub)
    args = parser.parse_args(list(argv))
    status: int = args.handler(args)
    return status


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    reg = ModelRegistry(tmp_path / "models")
    for seed in range(3):
        reg.publish(write_model(tmp_path / f"m{seed}.onnx", seed=seed))
    reg.set_current("1.0.0")
    reg.set_current("1.0.2")
    return reg


def test_list_marks_current_and_damage(registry: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    registry.onnx_path("1.0.1").write_bytes(b"damaged")
    assert run_cli("models", "--dir", str(registry.root), "list") == 0
    out = capsys.readouterr().out
    assert "* 1.0.2" in out and "DAMAGED" in out
    assert run_cli("models", "--dir", str(registry.root), "list", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["ok"], r["current"]) for r in rows] == [
        ("1.0.0", True, False),
        ("1.0.1", False, False),
        ("1.0.2", True, True),
    ]


def test_show_and_rollback(registry: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("models", "--dir", str(registry.root), "show", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == "1.0.2" and doc["ok"] and doc["metadata"]["version"] == "1.0.2"
    assert run_cli("models", "--dir", str(registry.root), "rollback", "1.0.0") == 0
    assert "1.0.0 is current" in capsys.readouterr().out
    assert registry.current_version() == "1.0.0"
    assert registry.history()[-1]["event"] == "rollback"
    assert run_cli("models", "--dir", str(registry.root), "show", "1.0.0") == 0
    assert "(current)" in capsys.readouterr().out


def test_user_errors_are_one_line(registry: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(CLIError, match="not registered"):
        run_cli("models", "--dir", str(registry.root), "rollback", "9.9.9")
    registry.onnx_path("1.0.1").write_bytes(b"damaged")
    with pytest.raises(CLIError, match="sha256"):
        run_cli("models", "--dir", str(registry.root), "rollback", "1.0.1")
    assert registry.current_version() == "1.0.2"
    with pytest.raises(CLIError, match="no model registry"):
        run_cli("models", "--dir", str(tmp_path / "nowhere"), "list")
    with pytest.raises(CLIError) as err:
        run_cli("models", "--dir", str(registry.root))
    assert err.value.status == 2


def test_metrics_once(registry: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("prometheus_client")
    assert run_cli("metrics", "--dir", str(registry.root), "--once") == 0
    out = capsys.readouterr().out
    assert "itp_registry_versions 3.0" in out
    assert 'itp_registry_current_info{version="1.0.2"} 1.0' in out


def test_end_to_end_subprocess(registry: ModelRegistry) -> None:
    if "models" not in itp.cli.SUBCOMMANDS:
        pytest.skip("`models` is not registered in itp/cli/__init__.py SUBCOMMANDS yet")
    out = subprocess.run(
        [sys.executable, "-m", "itp", "models", "--dir", str(registry.root), "list"],
        cwd=registry.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "* 1.0.2" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "itp", "models", "--dir", str(registry.root), "rollback", "5.0.0"],
        cwd=registry.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
