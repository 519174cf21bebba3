"""ONNX export: the graph is the folded Gemm/Relu chain with a dynamic batch axis, ONNX Runtime agrees
with the un-folded PyTorch network in eval mode (max |dq| < 1e-4), the file loads through
``itp.model_loading`` on the native fast path with the same Q-values, the metadata is complete, and a
failed verification or invalid metadata leaves nothing behind (an earlier model stays intact)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from torch import nn  # noqa: E402

from itp.actions import ACTION_STREAMS  # noqa: E402
from itp.model_loading import load_model  # noqa: E402
from itp.model_metadata import file_sha256, metadata_path_for, read_metadata  # noqa: E402
from itp.reward import DEFAULT_REWARD_WEIGHTS, REWARD_SPEC_VERSION  # noqa: E402
from itp.state import FEATURE_NAMES, STATE_LAYOUT_VERSION  # noqa: E402
from itp.training.export import (  # noqa: E402
    EXPORTED_OPS,
    OPSET,
    PARITY_TOLERANCE,
    export_model,
    export_onnx,
    verify_onnx,
)
from itp.training.network import QNetwork  # noqa: E402


def trained_like_network(seed: int = 0) -> QNetwork:
    """A network whose BatchNorm layers hold real running statistics (a few train-mode passes over
    skewed inputs) and non-default affine parameters, so the fold is not a near-identity."""
    torch.manual_seed(seed)
    net = QNetwork()
    net.train()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(20):
            net(torch.rand(64, 20, generator=gen) ** 3)
        for module in net.layers:
            if isinstance(module, nn.BatchNorm1d):
                module.weight.uniform_(0.3, 2.0, generator=gen)
                module.bias.uniform_(-0.5, 0.5, generator=gen)
    net.eval()
    return net


def torch_q(net: QNetwork, states: np.ndarray) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        out: np.ndarray = net(torch.from_numpy(states)).numpy()
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[QNetwork, Path, float]:
    net = trained_like_network(1)
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    max_diff = export_onnx(net, path, seed=5)
    return net, path, max_diff


def test_graph_is_the_folded_gemm_relu_chain_with_a_dynamic_batch(
    exported: tuple[QNetwork, Path, float],
) -> None:
    _, path, _ = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    assert tuple(n.op_type for n in graph.node) == EXPORTED_OPS
    assert [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")] == [OPSET]
    for node in graph.node:
        if node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs.get("transB") == 1 and attrs.get("transA", 0) == 0
            assert all(name in {t.name for t in graph.initializer} for name in node.input[1:])
    assert len(graph.initializer) == 8  # 4 weights + 4 biases, nothing else (BatchNorm is folded)
    (inp,), (out,) = graph.input, graph.output
    assert inp.name == "state" and out.name == "q_values"
    for value, width in ((inp, 20), (out, 15)):
        tensor = value.type.tensor_type
        assert tensor.elem_type == onnx.TensorProto.FLOAT
        batch, features = tensor.shape.dim
        assert batch.dim_param and not batch.dim_value  # symbolic N
        assert features.dim_value == width


@pytest.mark.parametrize("batch", [1, 2, 17, 300])
def test_onnx_runtime_matches_torch_eval_for_any_batch(
    exported: tuple[QNetwork, Path, float], batch: int
) -> None:
    net, path, max_diff = exported
    assert 0.0 <= max_diff < PARITY_TOLERANCE
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # Fresh states (not the verification ones), including the corners and values just outside [0, 1].
    states = np.random.default_rng(100 + batch).uniform(-0.1, 1.1, (batch, 20)).astype(np.float32)
    states[0] = 1.0
    q_onnx = session.run(["q_values"], {"state": states})[0]
    assert q_onnx.dtype == np.float32 and q_onnx.shape == (batch, 15)
    assert np.max(np.abs(q_onnx - torch_q(net, states))) < 1e-4


def test_exported_model_loads_on_the_native_fast_path_with_equal_q_values(tmp_path: Path) -> None:
    net = trained_like_network(2)
    path = tmp_path / "dqn.onnx"
    export_model(net, path, version="0.3.1")
    loaded = load_model(path)
    assert loaded.backend == "native" and loaded.version == "0.3.1"
    states = np.random.default_rng(9).random((64, 20), dtype=np.float32)
    expected = torch_q(net, states)
    assert np.max(np.abs(loaded.q_values_batch(states) - expected)) < 1e-4
    assert np.max(np.abs(loaded.q_values(states[5]) - expected[5])) < 1e-4
    # The ONNX Runtime path of the same file agrees too.
    via_ort = load_model(path, allow_native=False)
    assert via_ort.backend == "onnxruntime"
    assert np.max(np.abs(via_ort.q_values_batch(states) - expected)) < 1e-4


def test_metadata_records_layout_reward_training_and_evaluation(tmp_path: Path) -> None:
    net = trained_like_network(3)
    path = tmp_path / "m.onnx"
    training = {"config": {"lr": 0.001, "seed": 7}, "seed": 7, "train_trace_files": ["a", "b"]}
    evaluation = {"table": {"rows": [{"name": "m", "mean_goodput_bps": 1.5e8}]}, "command": "itp train"}
    written = export_model(net, path, version="2.1.0", training=training, evaluation=evaluation)
    meta = read_metadata(metadata_path_for(path))
    assert meta == written
    assert meta.version == "2.1.0" and meta.onnx_file == "m.onnx"
    assert meta.onnx_sha256 == file_sha256(path)
    assert meta.state_layout_version == STATE_LAYOUT_VERSION
    assert meta.feature_names == FEATURE_NAMES and meta.action_streams == ACTION_STREAMS
    assert (meta.num_features, meta.num_actions) == (20, 15)
    assert (meta.input_name, meta.output_name) == ("state", "q_values")
    assert meta.reward_spec_version == REWARD_SPEC_VERSION
    assert dict(meta.reward_weights) == dataclasses.asdict(DEFAULT_REWARD_WEIGHTS)
    assert json.loads(json.dumps(meta.training)) == training
    assert json.loads(json.dumps(meta.evaluation)) == evaluation
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.metadata.json", "m.onnx"]


def test_export_restores_train_mode(tmp_path: Path) -> None:
    net = trained_like_network(4)
    net.train()
    export_onnx(net, tmp_path / "x.onnx")
    assert net.training


def test_nan_weights_fail_verification_and_leave_the_previous_model(tmp_path: Path) -> None:
    path = tmp_path / "dqn.onnx"
    export_model(trained_like_network(5), path, version="1.0.0")
    before = (path.read_bytes(), metadata_path_for(path).read_text())
    broken = trained_like_network(6)
    with torch.no_grad():
        broken.layers[4].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        export_model(broken, path, version="1.0.1")
    assert (path.read_bytes(), metadata_path_for(path).read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dqn.metadata.json", "dqn.onnx"]
    load_model(path)  # still a valid, verified model


def test_invalid_metadata_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "dqn.onnx"
    with pytest.raises(ValueError, match="version"):
        export_model(trained_like_network(7), path, version="not-semver")
    assert list(tmp_path.iterdir()) == []


def test_verify_rejects_a_model_of_another_network(exported: tuple[QNetwork, Path, float]) -> None:
    _, path, _ = exported
    with pytest.raises(ValueError, match="disagrees with PyTorch"):
        verify_onnx(trained_like_network(8), path)


def test_verify_rejects_a_graph_that_is_not_the_chain(
    exported: tuple[QNetwork, Path, float], tmp_path: Path
) -> None:
    net, path, _ = exported
    model = onnx.load(str(path))
    last = model.graph.node[-1]
    last.output[0] = "pre_identity"
    model.graph.node.append(onnx.helper.make_node("Identity", ["pre_identity"], ["q_values"]))
    onnx.checker.check_model(model)
    other = tmp_path / "identity.onnx"
    onnx.save_model(model, str(other))
    with pytest.raises(ValueError, match="has ops"):
        verify_onnx(net, other)
