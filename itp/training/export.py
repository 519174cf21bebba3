"""ONNX export of a trained :class:`~itp.training.network.QNetwork`, verified against PyTorch.

The exported graph is the BatchNorm-folded eval-mode network (see :mod:`itp.training.network`) and
nothing else::

    state float32[N, 20] -> Gemm(transB=1) -> Relu -> Gemm -> Relu -> Gemm -> Relu -> Gemm
                         -> q_values float32[N, 15]

Each Gemm computes ``Y = X @ W.T + b`` with ``W[out, in]`` and ``b[out]`` stored as graph initializers
(no Constant/Identity/Flatten nodes), ``N`` is a symbolic batch axis and the opset is 17. The graph is
written directly with ``onnx.helper`` from the folded weights, so its node list is exactly the chain the
runtime's native fast path parses (``itp.model_loading``). After writing, the file is checked with
``onnx.checker`` and run with ONNX Runtime on seeded random states in [0, 1]; the largest
``|q_onnx - q_torch|`` against the *un-folded* PyTorch network in eval mode must stay below
``PARITY_TOLERANCE`` (1e-4), otherwise the file is removed and ValueError raised.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from itp.model_metadata import (
    INPUT_NAME,
    OUTPUT_NAME,
    ModelMetadata,
    metadata_for_model,
    metadata_path_for,
    write_metadata,
)
from itp.reward import DEFAULT_REWARD_WEIGHTS, REWARD_SPEC_VERSION, RewardWeights
from itp.training.network import QNetwork, fold_batchnorm

__all__ = [
    "EXPORTED_OPS",
    "OPSET",
    "PARITY_TOLERANCE",
    "export_model",
    "export_onnx",
    "verify_onnx",
]

logger = logging.getLogger(__name__)

#: ONNX opset of exported models.
OPSET = 17
#: Largest accepted |q_onnx - q_torch| on the verification states.
PARITY_TOLERANCE = 1e-4
#: Node op types of every exported graph, in order.
EXPORTED_OPS: tuple[str, ...] = ("Gemm", "Relu", "Gemm", "Relu", "Gemm", "Relu", "Gemm")
_NUM_VERIFY_STATES = 256


def _build_graph(
    layers: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]],
) -> Any:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    num_features = int(layers[0][0].shape[1])
    num_actions = int(layers[-1][0].shape[0])
    nodes = []
    initializers = []
    current = INPUT_NAME
    last = len(layers) - 1
    for i, (w, b) in enumerate(layers):
        w_name, b_name = f"fc{i}.weight", f"fc{i}.bias"
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(w), w_name))
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(b), b_name))
        gemm_out = OUTPUT_NAME if i == last else f"fc{i}"
        nodes.append(
            helper.make_node(
                "Gemm", [current, w_name, b_name], [gemm_out], name=f"gemm{i}", transB=1
            )
        )
        current = gemm_out
        if i != last:
            relu_out = f"relu{i}"
            nodes.append(helper.make_node("Relu", [current], [relu_out], name=f"relu{i}"))
            current = relu_out
    graph = helper.make_graph(
        nodes,
        "itp_qnetwork",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", num_features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", num_actions])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="itp.training.export",
    )
    # ONNX Runtime 1.17+ reads IR version 9 (opset 17 needs >= 8); pin it so older runtimes load it.
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(net: QNetwork, path: str | Path, *, seed: int = 0) -> float:
    """Fold, write and verify ``net`` as ONNX at ``path``.

    Args:
        net: the trained network (its train/eval mode is restored afterwards).
        path: target ``.onnx`` file; its folder must exist.
        seed: seed of the verification states.

    Returns:
        The largest |q_onnx - q_torch| over the verification states.

    Raises:
        ValueError: the exported model disagrees with PyTorch by more than ``PARITY_TOLERANCE`` or
            fails ``onnx.checker`` (the file is removed).
    """
    import onnx

    target = Path(path)
    was_training = net.training
    net.eval()
    try:
        layers = fold_batchnorm(net)
        model = _build_graph(layers)
        tmp = target.with_name(target.name + ".tmp")
        onnx.save_model(model, str(tmp))
        try:
            max_diff = verify_onnx(net, tmp, seed=seed)
        except ValueError:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(target)
    finally:
        net.train(was_training)
    logger.info("exported %s (max |dq| vs torch %.2e)", target, max_diff)
    return max_diff


def verify_onnx(net: QNetwork, path: str | Path, *, seed: int = 0) -> float:
    """Run ``path`` in ONNX Runtime and ``net`` (eval mode, un-folded) on the same random states.

    Returns:
        max |q_onnx - q_torch| over ``_NUM_VERIFY_STATES`` states drawn uniformly from [0, 1]^20 plus
        the all-zeros and all-ones corners.

    Raises:
        ValueError: the difference exceeds ``PARITY_TOLERANCE``, the graph is not the expected chain,
            or the outputs are not finite.
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    ops = tuple(node.op_type for node in model.graph.node)
    if ops != EXPORTED_OPS:
        raise ValueError(f"exported graph {path} has ops {ops}, expected {EXPORTED_OPS}")
    num_features = int(model.graph.input[0].type.tensor_type.shape.dim[1].dim_value)
    rng = np.random.default_rng(seed)
    states = rng.random((_NUM_VERIFY_STATES, num_features), dtype=np.float32)
    states[0] = 0.0
    states[1] = 1.0
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    q_onnx = session.run([OUTPUT_NAME], {INPUT_NAME: states})[0]
    was_training = net.training
    net.eval()
    with torch.no_grad():
        q_torch = net(torch.from_numpy(states)).numpy()
    net.train(was_training)
    if not (np.all(np.isfinite(q_onnx)) and np.all(np.isfinite(q_torch))):
        raise ValueError(f"exported model {path} produces NaN/inf Q-values")
    max_diff = float(np.max(np.abs(q_onnx - q_torch)))
    if max_diff >= PARITY_TOLERANCE:
        raise ValueError(
            f"exported model {path} disagrees with PyTorch: max |dq| {max_diff:.3g} >= "
            f"{PARITY_TOLERANCE:g}"
        )
    return max_diff


def export_model(
    net: QNetwork,
    onnx_path: str | Path,
    *,
    version: str,
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    reward_weights: RewardWeights = DEFAULT_REWARD_WEIGHTS,
    seed: int = 0,
) -> ModelMetadata:
    """Export ``net`` to ``onnx_path`` and write ``<stem>.metadata.json`` beside it.

    The reward spec version comes from :mod:`itp.reward` (``REWARD_SPEC_VERSION``), the weights are the
    ones the network was trained with, and the layout comes from :mod:`itp.state` and
    :mod:`itp.actions`.

    Returns:
        The metadata written.

    Raises:
        ValueError: failed verification or invalid metadata (nothing is written then: a model already
            at ``onnx_path`` and its metadata stay as they were).
    """
    path = Path(onnx_path)
    # Export and verify beside the target and validate the metadata before anything replaces the
    # target, so a bad version string or training field cannot leave a new .onnx without metadata.
    staging = path.with_name(path.name + ".new")
    export_onnx(net, staging, seed=seed)
    try:
        metadata = dataclasses.replace(
            metadata_for_model(
                staging,
                version=version,
                reward_spec_version=REWARD_SPEC_VERSION,
                reward_weights=dataclasses.asdict(reward_weights),
                training=training,
                evaluation=evaluation,
            ),
            onnx_file=path.name,
        )
        write_metadata(metadata_path_for(path), metadata)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    staging.replace(path)
    return metadata
