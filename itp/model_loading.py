"""Loading a Q-network model file into the fastest verified inference path.

A model is ``X.onnx`` plus ``X.metadata.json``. Loading:

1. reads and validates the metadata (layout version, feature/action counts) and checks the ONNX file's
   sha256 against it, so a swapped or truncated file is refused;
2. opens an ONNX Runtime session tuned for one small state (1 intra-op thread, sequential execution, full
   graph optimisation) and checks the input/output names and shapes;
3. parses the graph: if it is exactly the exported chain Gemm -> Relu -> ... -> Gemm (BatchNorm folded),
   its weights feed the native fused forward pass (``itp._native.FusedMlp``), which is kept only if it agrees
   with ONNX Runtime on seeded probe states (max |dq| <= 1e-4). Otherwise ONNX Runtime serves the model.

Why native: for one 20-float state ORT's per-call overhead dominates (~7 us p50 from Python, and far worse
p99 with cold caches); the fused C++ kernel runs the same arithmetic in ~1-2 us and keeps p99 low.
onnxruntime and onnx are imported only inside this module's functions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from itp import _native
from itp.actions import NUM_ACTIONS
from itp.model_metadata import ModelMetadata, metadata_path_for, read_metadata, verify_model_file
from itp.state import NUM_FEATURES, STATE_LAYOUT_VERSION

__all__ = [
    "PARITY_TOLERANCE",
    "LoadedModel",
    "ModelLoadError",
    "load_model",
    "metadata_path_for",
]

logger = logging.getLogger(__name__)

#: Largest |q_native - q_ort| accepted on the probe states before the native path is refused.
PARITY_TOLERANCE = 1e-4
_NUM_PROBES = 64


class ModelLoadError(ValueError):
    """The model file or its metadata is missing, unreadable, corrupt or of the wrong layout."""


@dataclass(frozen=True)
class LoadedModel:
    """A verified, ready-to-run Q-network.

    Attributes:
        path: the .onnx file.
        metadata: its validated metadata.
        backend: ``"native"`` (fused C++ forward pass) or ``"onnxruntime"``.
        native: the native network when backend is native, else None.
        q_values: one state float32[20] (normalised) -> float32[15]; thread-safe.
        q_values_batch: float32[N, 20] -> float32[N, 15]; thread-safe.
    """

    path: Path
    metadata: ModelMetadata
    backend: str
    native: Any
    q_values: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
    q_values_batch: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]

    @property
    def version(self) -> str:
        """Semantic version from the metadata."""
        return self.metadata.version


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Fatal only: a model that fails at run time would otherwise print an error per decision; itp logs
    # the fault once and counts every occurrence.
    opts.log_severity_level = 4
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _check_io(session: Any, metadata: ModelMetadata) -> None:
    inputs = session.get_inputs()
    outputs = session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(
            f"model must have one input and one output, got {len(inputs)} and {len(outputs)}"
        )
    inp, out = inputs[0], outputs[0]
    if inp.name != metadata.input_name or out.name != metadata.output_name:
        raise ModelLoadError(
            f"model input/output names are {inp.name!r}/{out.name!r}, metadata says "
            f"{metadata.input_name!r}/{metadata.output_name!r}"
        )
    if list(inp.shape)[1:] != [NUM_FEATURES] or list(out.shape)[1:] != [NUM_ACTIONS]:
        raise ModelLoadError(
            f"model shapes are input {inp.shape} / output {out.shape}, "
            f"expected [N, {NUM_FEATURES}] / [N, {NUM_ACTIONS}]"
        )
    if inp.type != "tensor(float)" or out.type != "tensor(float)":
        raise ModelLoadError(f"model tensors must be float32, got {inp.type} / {out.type}")


def _dense_chain(path: Path) -> tuple[list[npt.NDArray[np.float32]], list[npt.NDArray[np.float32]]] | None:
    """The (W[out,in], b[out]) of each Gemm if the graph is exactly Gemm (-> Relu -> Gemm)*, else None."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    ops = [n.op_type for n in graph.node]
    if (
        not ops
        or len(ops) % 2 == 0
        or any(op != ("Gemm" if i % 2 == 0 else "Relu") for i, op in enumerate(ops))
    ):
        logger.info("model graph %s is not a plain Gemm/Relu chain: %s", path, ops)
        return None
    weights: list[npt.NDArray[np.float32]] = []
    biases: list[npt.NDArray[np.float32]] = []
    current = graph.input[0].name
    for node in graph.node:
        if node.input[0] != current:
            return None
        current = node.output[0]
        if node.op_type == "Relu":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) != 0 or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return None
        if len(node.input) != 3 or node.input[1] not in inits or node.input[2] not in inits:
            return None
        w = np.asarray(inits[node.input[1]], dtype=np.float32)
        if attrs.get("transB", 0) == 0:
            w = w.T
        weights.append(np.ascontiguousarray(w))
        biases.append(np.ascontiguousarray(np.asarray(inits[node.input[2]], dtype=np.float32)))
    if current != graph.output[0].name:
        return None
    return weights, biases


class _OrtSingle:
    """One state through ONNX Runtime with I/O binding: per thread, the input and output buffers are
    bound once and reused (``run_with_iobinding`` without a RunOptions argument: ~5 us instead of ~8 us
    for ``run``; passing RunOptions costs ~40 us). Thread-safe: each thread gets its own binding."""

    def __init__(self, session: Any, in_name: str, out_name: str) -> None:
        self._session = session
        self._in_name = in_name
        self._out_name = out_name
        self._local = threading.local()

    def _binding(self) -> tuple[Any, npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        x = np.zeros((1, NUM_FEATURES), dtype=np.float32)
        y = np.zeros((1, NUM_ACTIONS), dtype=np.float32)
        io = self._session.io_binding()
        io.bind_cpu_input(self._in_name, x)
        io.bind_output(self._out_name, "cpu", 0, np.float32, [1, NUM_ACTIONS], y.ctypes.data)
        bound = (io, x, y)
        self._local.bound = bound
        return bound

    def __call__(self, state: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """float32[20] -> a new float32[15] array."""
        bound = getattr(self._local, "bound", None) or self._binding()
        io, x, y = bound
        x[0] = state
        self._session.run_with_iobinding(io)
        out: npt.NDArray[np.float32] = y[0].copy()
        return out


def _probe_states(seed: int = 20240601) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    probes = rng.random((_NUM_PROBES, NUM_FEATURES), dtype=np.float32)
    probes[0] = 0.0
    probes[1] = 1.0
    return probes


def load_model(path: str | Path, *, allow_native: bool = True) -> LoadedModel:
    """Load, verify and prepare a model for inference.

    Args:
        path: the ``.onnx`` file; its metadata must sit beside it as ``<stem>.metadata.json``.
        allow_native: use the native fused kernel when the graph allows it and it matches ORT.

    Returns:
        A :class:`LoadedModel`.

    Raises:
        ModelLoadError: missing/unreadable/corrupt file, sha256 mismatch, wrong layout version, wrong
            input/output names or shapes, or a model that outputs NaN/inf on the probe states.
    """
    onnx_path = Path(path)
    if not onnx_path.is_file():
        raise ModelLoadError(f"model file not found: {onnx_path}")
    meta_path = metadata_path_for(onnx_path)
    try:
        metadata = read_metadata(meta_path)
        verify_model_file(onnx_path, metadata)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model {onnx_path}: {exc}") from exc
    if metadata.state_layout_version != STATE_LAYOUT_VERSION:
        raise ModelLoadError(
            f"model {onnx_path} has state_layout_version {metadata.state_layout_version}, "
            f"this itp uses {STATE_LAYOUT_VERSION}"
        )
    try:
        session = _ort_session(onnx_path)
    except Exception as exc:  # ORT raises its own exception types for corrupt graphs
        raise ModelLoadError(f"model {onnx_path} cannot be loaded by ONNX Runtime: {exc}") from exc
    _check_io(session, metadata)
    in_name, out_name = metadata.input_name, metadata.output_name

    def ort_batch(states: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = session.run([out_name], {in_name: states})[0]
        return out

    probes = _probe_states()
    try:
        q_ort = ort_batch(probes)
    except Exception as exc:
        raise ModelLoadError(f"model {onnx_path} fails on probe states: {exc}") from exc
    if not np.all(np.isfinite(q_ort)):
        raise ModelLoadError(f"model {onnx_path} outputs NaN/inf on probe states")

    native = None
    if allow_native:
        chain = _dense_chain(onnx_path)
        if chain is not None:
            try:
                candidate = _native.FusedMlp(chain[0], chain[1])
                diff = float(np.max(np.abs(candidate.forward_batch(probes) - q_ort)))
            except ValueError as exc:
                logger.warning("native path refused for %s: %s", onnx_path, exc)
            else:
                if diff <= PARITY_TOLERANCE:
                    native = candidate
                else:
                    logger.warning(
                        "native path refused for %s: max |dq| %.3g > %.1g vs ONNX Runtime",
                        onnx_path,
                        diff,
                        PARITY_TOLERANCE,
                    )
    if native is not None:
        return LoadedModel(
            path=onnx_path,
            metadata=metadata,
            backend="native",
            native=native,
            q_values=native.forward,
            q_values_batch=native.forward_batch,
        )

    ort_one = _OrtSingle(session, in_name, out_name)

    return LoadedModel(
        path=onnx_path,
        metadata=metadata,
        backend="onnxruntime",
        native=None,
        q_values=ort_one,
        q_values_batch=ort_batch,
    )
