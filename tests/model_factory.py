"""Small ONNX Q-networks with valid metadata, built with onnx.helper (no torch), for tests and benches.

``write_model`` produces the exported layout (Gemm(transB=1) -> Relu -> ... -> Gemm, input ``state``
float32[N, 20], output ``q_values`` float32[N, 15]) with seeded random weights, and its
``.metadata.json`` beside it, exactly as the training pipeline writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from itp.model_metadata import metadata_for_model, metadata_path_for, write_metadata
from itp.reward import DEFAULT_REWARD_WEIGHTS, REWARD_SPEC_VERSION

HIDDEN = (128, 128, 64)


def random_layers(
    seed: int = 0, hidden: Sequence[int] = HIDDEN
) -> tuple[list[npt.NDArray[np.float32]], list[npt.NDArray[np.float32]]]:
    """Seeded W[out, in] and b[out] for 20 -> hidden... -> 15."""
    rng = np.random.default_rng(seed)
    dims = [20, *hidden, 15]
    weights = [
        (rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32) for i, o in zip(dims[:-1], dims[1:])
    ]
    biases = [(0.1 * rng.standard_normal(o)).astype(np.float32) for o in dims[1:]]
    return weights, biases


def build_onnx(
    weights: Sequence[npt.NDArray[np.float32]], biases: Sequence[npt.NDArray[np.float32]]
) -> onnx.ModelProto:
    nodes = []
    inits = []
    current = "state"
    for k, (w, b) in enumerate(zip(weights, biases)):
        inits += [numpy_helper.from_array(w, f"W{k}"), numpy_helper.from_array(b, f"b{k}")]
        out = "q_values" if k == len(weights) - 1 else f"h{k}"
        nodes.append(helper.make_node("Gemm", [current, f"W{k}", f"b{k}"], [out], transB=1))
        current = out
        if k < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"r{k}"]))
            current = f"r{k}"
    graph = helper.make_graph(
        nodes,
        "itp_test_qnet",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["N", 20])],
        [helper.make_tensor_value_info("q_values", TensorProto.FLOAT, ["N", 15])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_model(
    path: Path,
    seed: int = 0,
    *,
    version: str = "0.0.1",
    weights: Sequence[npt.NDArray[np.float32]] | None = None,
    biases: Sequence[npt.NDArray[np.float32]] | None = None,
) -> Path:
    """Write ``path`` (.onnx) and its metadata; returns ``path``."""
    if weights is None or biases is None:
        weights, biases = random_layers(seed)
    return save_with_metadata(build_onnx(weights, biases), path, version=version)


def save_with_metadata(model: onnx.ModelProto, path: Path, *, version: str = "0.0.1") -> Path:
    """Save any ONNX model to ``path`` with valid metadata (sha256 of what was saved) beside it."""
    onnx.save(model, str(path))
    md = metadata_for_model(
        path,
        version=version,
        reward_spec_version=REWARD_SPEC_VERSION,
        reward_weights=DEFAULT_REWARD_WEIGHTS.as_dict()
        if hasattr(DEFAULT_REWARD_WEIGHTS, "as_dict")
        else vars(DEFAULT_REWARD_WEIGHTS),
    )
    write_metadata(metadata_path_for(path), md)
    return path
