"""Small ONNX Q-networks with valid metadata, built with onnx.helper (no torch), for tests and benches.

``write_model`` produces the exported layout (Gemm(transB=1) -> Relu -> ... -> Gemm, input ``state``
float32[N, 20], output ``q_values`` float32[N, 15]) with seeded random weights, and its
``.metadata.json`` beside it, exactly as the training pipeline writes them.
"""

from __future__ import annotations

import itertools
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
        (rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32) for i, o in itertools.pairwise(dims)
    ]
    biases = [(0.1 * rng.standard_normal(o)).astype(np.float32) for o in dims[1:]]
    return weights, biases


def build_onnx(
    weights: Sequence[npt.NDArray[np.float32]], biases: Sequence[npt.NDArray[np.float32]]
) -> onnx.ModelProto:
    nodes = []
    inits = []
    current = "state"
    for k, (w, b) in enumerate(zip(weights, biases, strict=False)):
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


def write_nan_region_model(path: Path, *, version: str = "0.0.1") -> Path:
    """A plain Gemm/Relu chain (served natively) whose Q-values are finite on the load-time probe states
    but NaN (inf - inf) when the task-size feature exceeds the four bandwidth features' sum by 0.9 —
    e.g. a 2**39-byte task on 1 Mbit/s streams. A real runtime NaN fault, not a mock."""
    w0 = np.zeros((2, 20), dtype=np.float32)
    w0[:, 17] = 1e30
    w0[:, 0:4] = -1e30
    b0 = np.full(2, -0.9e30, dtype=np.float32)
    w1 = np.zeros((15, 2), dtype=np.float32)
    w1[:, 0], w1[:, 1] = 1e30, -1e30
    b1 = np.linspace(0.0, 1.4, 15).astype(np.float32)
    return write_model(path, version=version, weights=[w0, w1], biases=[b0, b1])


#: Priority at which :func:`write_raising_model`'s graph fails at run time.
RAISING_PRIORITY = 0.123


def write_raising_model(path: Path, seed: int = 0, *, version: str = "0.0.1") -> Path:
    """A valid model (served by ONNX Runtime: not a plain chain) whose inference *raises* when the
    priority feature equals float32(0.123): a Gather then indexes out of bounds. Finite elsewhere."""
    weights, biases = random_layers(seed)
    model = build_onnx(weights, biases)
    graph = model.graph
    graph.node[-1].output[0] = "q0"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([18], dtype=np.int64), "sl_start"),
            numpy_helper.from_array(np.array([19], dtype=np.int64), "sl_end"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "sl_axis"),
            numpy_helper.from_array(np.array([RAISING_PRIORITY], dtype=np.float32), "bad_priority"),
            numpy_helper.from_array(np.array(5, dtype=np.int64), "five"),
            numpy_helper.from_array(np.zeros(2, dtype=np.float32), "small"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Slice", ["state", "sl_start", "sl_end", "sl_axis"], ["prio"]),
            helper.make_node("Equal", ["prio", "bad_priority"], ["is_bad"]),
            helper.make_node("Cast", ["is_bad"], ["bad_i"], to=TensorProto.INT64),
            helper.make_node("Mul", ["bad_i", "five"], ["index"]),
            helper.make_node("Gather", ["small", "index"], ["extra"], axis=0),
            helper.make_node("Add", ["q0", "extra"], ["q_values"]),
        ]
    )
    onnx.checker.check_model(model)
    return save_with_metadata(model, path, version=version)


def write_wrong_input_model(path: Path) -> Path:
    """A chain whose input is float32[N, 19] (the wrong state width)."""
    weights, biases = random_layers(0)
    weights[0] = weights[0][:, :19].copy()
    model = build_onnx(weights, biases)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 19
    return save_with_metadata(model, path)


def write_constant_model(path: Path, action: int, *, version: str = "0.0.1") -> Path:
    """A chain (QNetwork shapes, served natively) whose Q-values ignore the state and put ``action``
    first: zero weights, biases 0 except 1.0 on ``action``. A policy that always takes one action."""
    weights, biases = random_layers(0)
    weights = [np.zeros_like(w) for w in weights]
    biases = [np.zeros_like(b) for b in biases]
    biases[-1][action] = 1.0
    return write_model(path, version=version, weights=weights, biases=biases)


def write_level_shift_logs(
    store_path: Path, model_path: Path, *, n: int = 4000, seed: int = 0
) -> tuple[npt.NDArray[np.float32], int]:
    """Logged decisions of ``model_path``'s model, epsilon-greedy (0.1) among its 3 best actions, on a
    deployment where every action earns 1 less than the model believes and its second-best action 0.5
    more than that (noise sd 0.3), with propensities; written to a new experience store at ``store_path``.
    Returns (the logged states, the store's last id). Fine-tuned on these, a candidate should learn to
    prefer the second-best action and nothing outside the 3 best (no row ever tried them)."""
    from itp.learning.offpolicy import epsilon_greedy_probabilities
    from itp.learning.store import ExperienceStore
    from itp.model_loading import load_model
    from itp.ring import TransitionBatch

    rng = np.random.default_rng(seed)
    states = rng.random((n, 20), dtype=np.float32)
    q = load_model(model_path).q_values_batch(states)
    probs = epsilon_greedy_probabilities(q, 0.1, 3)
    actions = (probs.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1).clip(0, 14).astype(np.int64)
    second = np.argsort(-q, axis=1, kind="stable")[:, 1]
    mean = q[np.arange(n), actions] - 1.0 + np.where(actions == second, 0.5, 0.0)
    batch = TransitionBatch(
        states=states, actions=actions, rewards=(mean + rng.normal(0, 0.3, n)).astype(np.float32),
        next_states=states, dones=np.ones(n, np.float32),
        propensities=probs[np.arange(n), actions].astype(np.float32),
    )
    with ExperienceStore(store_path) as store:
        store.append(batch)
        return states, store.last_id
