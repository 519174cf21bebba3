"""``itp export``: checkpoint -> verified ONNX + metadata, and verification of model files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from model_factory import write_model

from itp.model_loading import load_model
from itp.model_metadata import metadata_path_for, read_metadata
from itp.sim.traces import shipped_traces_dir


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m itp ...`` outside the repository (so the installed package is what runs)."""
    return subprocess.run(
        [sys.executable, "-m", "itp", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ}, check=False,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real training output folder: one episode of ``itp train`` on the shipped traces (~5 s)."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("train")
    run = run_cli(
        "train", "--episodes", "1", "--eval-episodes", "0", "--val-every", "0", "--traces",
        str(shipped_traces_dir()), "--output", str(out), "--model-version", "3.1.4", "--no-progress",
        cwd=out,
    )
    assert run.returncode == 0, run.stderr
    assert (out / "dqn_final.pt").is_file() and (out / "dqn_final.onnx").is_file()
    return out


def probe_states() -> np.ndarray:
    return np.random.default_rng(0).random((64, 20), dtype=np.float32)


@pytest.mark.slow
def test_checkpoint_exports_to_the_same_function(trained: Path, tmp_path: Path) -> None:
    target = tmp_path / "re.onnx"
    out = run_cli("export", str(trained / "dqn_final.pt"), "-o", str(target), "--version", "2.0.0",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"-> {target}" in out.stdout and "version 2.0.0" in out.stdout
    md = read_metadata(metadata_path_for(target))
    assert md.version == "2.0.0" and md.onnx_file == "re.onnx"
    assert md.training["exported_from"] == str(trained / "dqn_final.pt")
    assert md.training["episodes_run"] == 1  # carried over from the checkpoint's own model
    # The same weights as the model training exported: the same Q-values, on either backend.
    original, again = load_model(trained / "dqn_final.onnx"), load_model(target)
    states = probe_states()
    np.testing.assert_allclose(again.q_values_batch(states), original.q_values_batch(states), atol=1e-5)


@pytest.mark.slow
def test_checkpoint_stem_default_target_and_version(trained: Path, tmp_path: Path) -> None:
    stem = tmp_path / "ckpt"
    (tmp_path / "ckpt.pt").write_bytes((trained / "dqn_final.pt").read_bytes())
    out = run_cli("export", str(stem), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    md = read_metadata(tmp_path / "ckpt.metadata.json")
    assert md.version == "3.1.4"  # the checkpoint's configured model version
    assert md.training["config"]["model_version"] == "3.1.4" and md.evaluation == {}
    verify = run_cli("export", str(tmp_path / "ckpt.onnx"), "--json", cwd=tmp_path)
    assert verify.returncode == 0 and json.loads(verify.stdout)["verified"] is True


@pytest.mark.slow
def test_failed_export_writes_nothing(trained: Path, tmp_path: Path) -> None:
    target = tmp_path / "m.onnx"
    out = run_cli("export", str(trained / "dqn_final.pt"), "-o", str(target), "--version", "one",
                  cwd=tmp_path)
    assert out.returncode == 1 and "version" in out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_truncated_checkpoint_is_reported(trained: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes((trained / "dqn_final.pt").read_bytes()[:4000])
    out = run_cli("export", str(bad), cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.startswith("itp export: error: checkpoint") and "corrupt or truncated" in out.stderr
    assert not (tmp_path / "bad.onnx").exists()


def test_verify_prints_the_metadata(tmp_path: Path) -> None:
    model = write_model(tmp_path / "m.onnx", seed=1, version="0.7.1")
    out = run_cli("export", str(model), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{model}: verified (sha256 matches its metadata")
    md = read_metadata(metadata_path_for(model))
    expected = (
        "version        0.7.1", f"sha256         {md.onnx_sha256}", "layout v1, 20 features",
        "actions        15 (stream sets 0 1 2 3 01", "state float32[N, 20] -> q_values float32[N, 15]",
        f"reward         spec v{md.reward_spec_version}",
    )
    for text in expected:
        assert text in out.stdout, text
    doc = json.loads(run_cli("export", str(model), "--json", cwd=tmp_path).stdout)
    assert doc["verified"] is True and doc["metadata"] == md.to_dict()
    assert doc["backend"] in {"native", "onnxruntime"}


def test_verify_refuses_tampered_and_incomplete_models(tmp_path: Path) -> None:
    model = write_model(tmp_path / "m.onnx", seed=1)
    model.write_bytes(model.read_bytes() + b"\0")
    out = run_cli("export", str(model), cwd=tmp_path)
    assert out.returncode == 1 and "does not verify" in out.stderr and "sha256 mismatch" in out.stderr
    lone = write_model(tmp_path / "lone.onnx", seed=1)
    metadata_path_for(lone).unlink()
    out = run_cli("export", str(lone), cwd=tmp_path)
    assert out.returncode == 1 and "lone.metadata.json" in out.stderr
    out = run_cli("export", str(tmp_path / "absent.onnx"), cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip() == f"itp export: error: model not found: {tmp_path}/absent.onnx"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("m.onnx", "--version", "1.0.0"), "--output and --version apply to exporting a checkpoint"),
        (("ckpt.pt", "-o", "model.bin"), "--output must end in .onnx"),
    ],
)
def test_usage_errors(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    if "ckpt.pt" in args:
        pytest.importorskip("torch")
    out = run_cli("export", *args, cwd=tmp_path)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_missing_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = run_cli("export", str(tmp_path / "none.pt"), cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip() == f"itp export: error: checkpoint not found: {tmp_path}/none.pt"


def test_exporting_without_torch_says_what_to_install(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named torch')\n")
    path = os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run(
        [sys.executable, "-m", "itp", "export", str(tmp_path / "ckpt.pt")], cwd=tmp_path, capture_output=True,
        text=True, timeout=120, check=False, env=env,
    )
    assert out.returncode == 1
    assert out.stderr.startswith("itp export: error: exporting a checkpoint needs the train extra: pip")
    # Verifying a model file needs no torch.
    model = write_model(tmp_path / "m.onnx", seed=1)
    out = subprocess.run(
        [sys.executable, "-m", "itp", "export", str(model)], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False, env=env,
    )
    assert out.returncode == 0, out.stderr
