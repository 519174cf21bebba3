"""Fine-tuning: the deployed ONNX rebuilds exactly into a trainable QNetwork; a job trains, exports, gates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_factory import build_onnx, random_layers, save_with_metadata, write_model

torch = pytest.importorskip("torch")

from itp.model_loading import load_model  # noqa: E402
from itp.training.finetune import FinetuneJob, network_from_onnx, run_finetune  # noqa: E402


def test_rebuilt_network_computes_the_deployed_function(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.onnx", seed=7)
    net = network_from_onnx(path)
    x = np.random.default_rng(0).random((300, 20), dtype=np.float32)
    with torch.no_grad():
        q = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(q, load_model(path).q_values_batch(x), atol=1e-5)
    net.train()  # BatchNorm stays an identity while training
    with torch.no_grad():
        np.testing.assert_allclose(net.eval()(torch.from_numpy(x)).numpy(), q, atol=1e-6)


def test_other_architectures_are_refused(tmp_path: Path) -> None:
    w, b = random_layers(0, hidden=(32,))
    path = save_with_metadata(build_onnx(w, b), tmp_path / "small.onnx")
    with pytest.raises(ValueError, match="not the QNetwork"):
        network_from_onnx(path)


def test_job_trains_exports_and_gates(tmp_path: Path) -> None:
    base = write_model(tmp_path / "base.onnx", seed=1, version="1.0.0")
    job = FinetuneJob(
        output=str(tmp_path / "out" / "cand.onnx"),
        version="1.0.1",
        base_model=str(base),
        steps=10,
        batch_size=8,
        sim_episodes=1,
        sim_tasks_per_episode=8,
        gate={"episodes": 1},
    )
    assert FinetuneJob.from_json(job.to_json()) == job
    result = run_finetune(job)
    cand = load_model(result["output"])
    assert cand.version == "1.0.1" and cand.metadata.training["kind"] == "finetune"
    assert result["simulator_transitions"] == 8 and result["steps"] == 10
    assert set(result["gate"]) >= {"passed", "reason", "sim_reward_candidate", "sim_reward_current"}
    with pytest.raises(ValueError, match="steps"):
        FinetuneJob(output="x.onnx", version="1.0.0", steps=0)
