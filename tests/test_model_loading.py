"""Model loading: verified native fast path, ONNX Runtime fallback, and refusal of bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from model_factory import build_onnx, random_layers, save_with_metadata, write_model

from itp.model_loading import PARITY_TOLERANCE, ModelLoadError, load_model
from itp.model_metadata import metadata_path_for


def numpy_forward(weights: list[np.ndarray], biases: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Slow float64 reference of the Gemm/Relu chain."""
    y = x.astype(np.float64)
    for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
        y = y @ w.astype(np.float64).T + b
        if k < len(weights) - 1:
            y = np.maximum(y, 0.0)
    return y


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("m") / "qnet.onnx", seed=3)


def test_chain_model_runs_natively_and_matches_reference(model_path: Path) -> None:
    m = load_model(model_path)
    assert m.backend == "native"
    w, b = random_layers(3)
    x = np.random.default_rng(1).random((200, 20), dtype=np.float32)
    np.testing.assert_allclose(m.q_values_batch(x), numpy_forward(w, b, x), atol=1e-5)
    np.testing.assert_allclose(m.q_values(x[0]), numpy_forward(w, b, x[:1])[0], atol=1e-5)


@settings(max_examples=50, deadline=None)
@given(x=arrays(np.float32, 20, elements=st.floats(0, 1, width=32)))
def test_native_equals_onnxruntime(model_path: Path, x: np.ndarray) -> None:
    native = load_model(model_path)
    ort = load_model(model_path, allow_native=False)
    assert ort.backend == "onnxruntime"
    assert np.max(np.abs(native.q_values(x) - ort.q_values(x))) <= PARITY_TOLERANCE


def test_non_chain_graph_is_served_by_onnxruntime(tmp_path: Path) -> None:
    w, b = random_layers(0)
    model = build_onnx(w, b)
    # Insert an Identity: still a valid model, no longer the exact chain the native path accepts.
    last = model.graph.node[-1]
    model.graph.node[-1].output[0] = "pre"
    model.graph.node.append(onnx.helper.make_node("Identity", ["pre"], ["q_values"]))
    del last
    path = save_with_metadata(model, tmp_path / "ident.onnx")
    m = load_model(path)
    assert m.backend == "onnxruntime"
    x = np.random.default_rng(2).random((5, 20), dtype=np.float32)
    np.testing.assert_allclose(m.q_values_batch(x), numpy_forward(w, b, x), atol=1e-4)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "absent.onnx")


def test_missing_metadata(tmp_path: Path) -> None:
    p = write_model(tmp_path / "m.onnx")
    metadata_path_for(p).unlink()
    with pytest.raises(ModelLoadError):
        load_model(p)


def test_sha256_mismatch_refused(tmp_path: Path) -> None:
    p = write_model(tmp_path / "m.onnx")
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        load_model(p)


def test_wrong_layout_version_refused(tmp_path: Path) -> None:
    p = write_model(tmp_path / "m.onnx")
    mp = metadata_path_for(p)
    md = json.loads(mp.read_text())
    md["state_layout_version"] = 999
    mp.write_text(json.dumps(md))
    with pytest.raises(ModelLoadError, match="layout"):
        load_model(p)


def test_wrong_output_shape_refused(tmp_path: Path) -> None:
    w, b = random_layers(0)
    w[-1], b[-1] = w[-1][:10], b[-1][:10]
    model = build_onnx(w, b)
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 10
    p = save_with_metadata(model, tmp_path / "m.onnx")
    with pytest.raises(ModelLoadError, match="shape"):
        load_model(p)


def test_nan_weights_refused(tmp_path: Path) -> None:
    w, b = random_layers(0)
    b[-1][3] = np.nan
    p = write_model(tmp_path / "nan.onnx", weights=w, biases=b)
    with pytest.raises(ModelLoadError, match="NaN"):
        load_model(p)
