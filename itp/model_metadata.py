"""Model metadata: the ``X.metadata.json`` file that travels with every ``X.onnx`` Q-network.

The metadata pins everything a runtime must agree on before it feeds a state into the network: the
state layout (version, feature count and names), the action table, the tensor names, the reward the
network was trained for, and a sha256 of the ONNX file so that a swapped or truncated model is
refused. It also records how the model was trained and how it scored against the baselines.

Schema (format ``"itp-model"``, ``format_version`` 1; every field is required)::

    format               "itp-model"
    format_version       1
    version              semantic version "MAJOR.MINOR.PATCH" of the model
    created              ISO 8601 UTC time stamp, e.g. "2026-11-24T22:00:00Z"
    onnx_file            file name of the model, relative to the metadata file's folder
    onnx_sha256          64 lower-case hex digits: sha256 of the ONNX file's bytes
    state_layout_version int >= 1 (itp.STATE_LAYOUT_VERSION at export)
    num_features         int >= 1, == len(feature_names)
    num_actions          int >= 1, == len(action_streams)
    feature_names        list of distinct non-empty strings
    action_streams       list of lists of stream ids (distinct ints >= 0, ascending, non-empty)
    input_name           ONNX input tensor name (float32[N, num_features])
    output_name          ONNX output tensor name (float32[N, num_actions])
    reward_spec_version  int >= 1 (itp.reward's spec version the network was trained with)
    reward_weights       object of name -> finite number
    training             object (TrainConfig, seed, episodes run, converged_at_episode, wall time,
                         train trace files)
    evaluation           object (the evaluation table vs baselines on the eval split, the command)

Only the standard library is used (json, hashlib): the runtime imports this module, torch never.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from itp.actions import ACTION_STREAMS, NUM_ACTIONS
from itp.state import FEATURE_NAMES, NUM_FEATURES, STATE_LAYOUT_VERSION

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ModelMetadata",
    "file_sha256",
    "metadata_for_model",
    "metadata_path_for",
    "read_metadata",
    "utc_timestamp",
    "verify_model_file",
    "write_metadata",
]

#: Value of the ``format`` field.
FORMAT = "itp-model"
#: Value of the ``format_version`` field this module reads and writes.
FORMAT_VERSION = 1
#: ONNX input tensor name of every itp model: float32[N, NUM_FEATURES] normalised states.
INPUT_NAME = "state"
#: ONNX output tensor name of every itp model: float32[N, NUM_ACTIONS] Q-values.
OUTPUT_NAME = "q_values"

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:[-+][0-9A-Za-z.+-]+)?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ModelMetadata:
    """Validated contents of a ``.metadata.json`` file (see the module docstring for each field).

    Instances are values: the constructor does not validate; :func:`write_metadata` and
    :func:`read_metadata` validate every field.
    """

    version: str
    created: str
    onnx_file: str
    onnx_sha256: str
    state_layout_version: int
    num_features: int
    num_actions: int
    feature_names: tuple[str, ...]
    action_streams: tuple[tuple[int, ...], ...]
    input_name: str
    output_name: str
    reward_spec_version: int
    reward_weights: Mapping[str, float]
    training: Mapping[str, Any] = field(default_factory=dict)
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to disk (plain dicts, lists, strings and numbers)."""
        return {
            "format": self.format,
            "format_version": self.format_version,
            "version": self.version,
            "created": self.created,
            "onnx_file": self.onnx_file,
            "onnx_sha256": self.onnx_sha256,
            "state_layout_version": self.state_layout_version,
            "num_features": self.num_features,
            "num_actions": self.num_actions,
            "feature_names": list(self.feature_names),
            "action_streams": [list(s) for s in self.action_streams],
            "input_name": self.input_name,
            "output_name": self.output_name,
            "reward_spec_version": self.reward_spec_version,
            "reward_weights": dict(self.reward_weights),
            "training": _plain(self.training, "training"),
            "evaluation": _plain(self.evaluation, "evaluation"),
        }


def metadata_for_model(
    onnx_path: str | Path,
    *,
    version: str,
    reward_spec_version: int,
    reward_weights: Mapping[str, float],
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    created: str | None = None,
) -> ModelMetadata:
    """Metadata for an ONNX model of this itp build: the current state layout and action table, the
    standard tensor names, and the sha256 of ``onnx_path`` (read now).

    Raises:
        OSError: ``onnx_path`` cannot be read.
    """
    p = Path(onnx_path)
    return ModelMetadata(
        version=version,
        created=created or utc_timestamp(),
        onnx_file=p.name,
        onnx_sha256=file_sha256(p),
        state_layout_version=STATE_LAYOUT_VERSION,
        num_features=NUM_FEATURES,
        num_actions=NUM_ACTIONS,
        feature_names=FEATURE_NAMES,
        action_streams=ACTION_STREAMS,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        reward_spec_version=reward_spec_version,
        reward_weights=dict(reward_weights),
        training=dict(training or {}),
        evaluation=dict(evaluation or {}),
    )


def metadata_path_for(onnx_path: str | Path) -> Path:
    """``dir/X.onnx`` -> ``dir/X.metadata.json`` (any suffix of the model file is replaced)."""
    p = Path(onnx_path)
    return p.with_name(p.stem + ".metadata.json")


def utc_timestamp(when: datetime | None = None) -> str:
    """ISO 8601 UTC time stamp, second resolution, e.g. ``2026-11-24T22:00:00Z`` (default: now)."""
    moment = (when or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes as 64 lower-case hex digits (1 MiB chunks). Raises OSError."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _plain(value: Any, name: str) -> Any:
    """A JSON-safe deep copy of ``value`` (tuples -> lists); ValueError naming the path if not."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"metadata field {name} must be finite, got {value!r}")
        return float(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"metadata field {name} has a non-string key {key!r}")
            out[key] = _plain(item, f"{name}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{name}[{i}]") for i, item in enumerate(value)]
    # numpy scalars and similar: accept anything with an exact int/float conversion.
    if hasattr(value, "item"):
        return _plain(value.item(), name)
    raise ValueError(f"metadata field {name} is not JSON-serialisable: {type(value).__name__}")


def write_metadata(path: str | Path, metadata: ModelMetadata) -> Path:
    """Validate ``metadata`` and write it as pretty, key-ordered JSON to ``path`` (atomically).

    The file is written beside the target and then renamed, so a reader never sees half a file.

    Returns:
        The path written.

    Raises:
        ValueError: a field is invalid (the message names it); nothing is written.
        OSError: the folder is not writable.
    """
    data = metadata.to_dict()
    _validate(data)  # refuse to write what read_metadata would refuse to read
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n", "utf-8")
    tmp.replace(target)
    return target


def read_metadata(path: str | Path) -> ModelMetadata:
    """Read and validate a ``.metadata.json`` file.

    Raises:
        OSError: the file cannot be read.
        ValueError: not JSON, not an object, or a missing/invalid field (the message names the field
            and the bad value).
    """
    p = Path(path)
    text = p.read_text("utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"metadata file {p} is not valid JSON: {exc}") from exc
    return _validate(data)


def verify_model_file(onnx_path: str | Path, metadata: ModelMetadata) -> None:
    """Check that the ONNX file's sha256 matches ``metadata.onnx_sha256``.

    Raises:
        OSError: the file cannot be read.
        ValueError: the digests differ (the message names the file and both digests).
    """
    actual = file_sha256(onnx_path)
    if actual != metadata.onnx_sha256:
        raise ValueError(
            f"onnx_sha256 mismatch for {onnx_path}: file has {actual}, metadata says "
            f"{metadata.onnx_sha256} (the model file was changed or truncated)"
        )


def _require(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in data:
        raise ValueError(f"metadata field {name} is missing")
    value = data[name]
    # bool is an int subclass; a JSON true is never a valid count or version.
    if isinstance(value, bool) and kind is not bool:
        raise ValueError(f"metadata field {name} must be {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise ValueError(f"metadata field {name} must be {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", str: "a string", list: "a list", dict: "an object"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _positive_int(data: Mapping[str, Any], name: str) -> int:
    value: int = _require(data, name, int)
    if value < 1:
        raise ValueError(f"metadata field {name} must be >= 1, got {value!r}")
    return value


def _nonempty_str(data: Mapping[str, Any], name: str) -> str:
    value: str = _require(data, name, str)
    if not value.strip():
        raise ValueError(f"metadata field {name} must be a non-empty string, got {value!r}")
    return value


def _validate(data: Any) -> ModelMetadata:
    """Validate a decoded metadata object and build the dataclass."""
    if not isinstance(data, dict):
        raise ValueError(f"metadata must be a JSON object, got {type(data).__name__}")
    fmt = _require(data, "format", str)
    if fmt != FORMAT:
        raise ValueError(f"metadata field format must be {FORMAT!r}, got {fmt!r}")
    fmt_version = _require(data, "format_version", int)
    if fmt_version != FORMAT_VERSION:
        raise ValueError(
            f"metadata field format_version must be {FORMAT_VERSION}, got {fmt_version!r}"
        )
    version = _require(data, "version", str)
    if not _SEMVER.match(version):
        raise ValueError(f"metadata field version must be semantic (e.g. 1.0.0), got {version!r}")
    created = _require(data, "created", str)
    try:
        stamp = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"metadata field created must be ISO 8601, got {created!r}") from exc
    if stamp.utcoffset() is None or stamp.utcoffset() != timezone.utc.utcoffset(None):
        raise ValueError(f"metadata field created must be in UTC (Z or +00:00), got {created!r}")
    onnx_file = _nonempty_str(data, "onnx_file")
    if Path(onnx_file).name != onnx_file or onnx_file in {".", ".."}:
        raise ValueError(f"metadata field onnx_file must be a bare file name, got {onnx_file!r}")
    sha = _require(data, "onnx_sha256", str)
    if not _SHA256.match(sha):
        raise ValueError(
            f"metadata field onnx_sha256 must be 64 lower-case hex digits, got {sha!r}"
        )
    layout = _positive_int(data, "state_layout_version")
    num_features = _positive_int(data, "num_features")
    num_actions = _positive_int(data, "num_actions")
    feature_names = _str_list(data, "feature_names")
    if len(feature_names) != num_features:
        raise ValueError(
            f"metadata field feature_names has {len(feature_names)} names, num_features is "
            f"{num_features}"
        )
    action_streams = _action_streams(data)
    if len(action_streams) != num_actions:
        raise ValueError(
            f"metadata field action_streams has {len(action_streams)} actions, num_actions is "
            f"{num_actions}"
        )
    input_name = _nonempty_str(data, "input_name")
    output_name = _nonempty_str(data, "output_name")
    if input_name == output_name:
        raise ValueError(f"metadata fields input_name and output_name are both {input_name!r}")
    reward_spec_version = _positive_int(data, "reward_spec_version")
    weights = _require(data, "reward_weights", dict)
    reward_weights: dict[str, float] = {}
    for key, value in weights.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise ValueError(
                f"metadata field reward_weights.{key} must be a finite number, got {value!r}"
            )
        reward_weights[key] = float(value)
    training = _require(data, "training", dict)
    evaluation = _require(data, "evaluation", dict)
    known = set(ModelMetadata.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"metadata has unknown field(s) {unknown} (format_version {FORMAT_VERSION})"
        )
    return ModelMetadata(
        format=fmt,
        format_version=fmt_version,
        version=version,
        created=created,
        onnx_file=onnx_file,
        onnx_sha256=sha,
        state_layout_version=layout,
        num_features=num_features,
        num_actions=num_actions,
        feature_names=feature_names,
        action_streams=action_streams,
        input_name=input_name,
        output_name=output_name,
        reward_spec_version=reward_spec_version,
        reward_weights=reward_weights,
        training=training,
        evaluation=evaluation,
    )


def _str_list(data: Mapping[str, Any], name: str) -> tuple[str, ...]:
    values: Sequence[Any] = _require(data, name, list)
    for i, item in enumerate(values):
        if not isinstance(item, str) or not item:
            raise ValueError(f"metadata field {name}[{i}] must be a non-empty string, got {item!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"metadata field {name} has duplicate names: {values!r}")
    return tuple(values)


def _action_streams(data: Mapping[str, Any]) -> tuple[tuple[int, ...], ...]:
    rows: Sequence[Any] = _require(data, "action_streams", list)
    out: list[tuple[int, ...]] = []
    for i, row in enumerate(rows):
        if (
            not isinstance(row, list)
            or not row
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in row)
            or list(row) != sorted(set(row))
        ):
            raise ValueError(
                f"metadata field action_streams[{i}] must be a non-empty ascending list of "
                f"distinct stream ids >= 0, got {row!r}"
            )
        out.append(tuple(row))
    if len(set(out)) != len(out):
        raise ValueError("metadata field action_streams has duplicate stream sets")
    return tuple(out)
