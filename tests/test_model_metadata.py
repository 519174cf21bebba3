"""Model metadata: round trip, and every invalid field refused with its name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from model_factory import write_model

from itp.model_metadata import (
    ModelMetadata,
    file_sha256,
    metadata_path_for,
    read_metadata,
    utc_timestamp,
    verify_model_file,
    write_metadata,
)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_model(tmp_path / "m.onnx", version="1.2.3")


def test_round_trip(model: Path, tmp_path: Path) -> None:
    md = read_metadata(metadata_path_for(model))
    assert md.version == "1.2.3" and md.onnx_file == "m.onnx" and md.onnx_sha256 == file_sha256(model)
    out = write_metadata(tmp_path / "copy.metadata.json", md)
    assert read_metadata(out) == md
    verify_model_file(model, md)


def test_metadata_path_for() -> None:
    assert metadata_path_for("a/b/dqn_v1.0.0.onnx") == Path("a/b/dqn_v1.0.0.metadata.json")


def test_utc_timestamp_format() -> None:
    stamp = utc_timestamp()
    assert len(stamp) == 20 and stamp.endswith("Z") and stamp[10] == "T"


BAD: list[tuple[str, Any, str]] = [
    ("format", "other", "format"),
    ("format_version", 2, "format_version"),
    ("version", "1.0", "version"),
    ("version", True, "version"),
    ("created", "yesterday", "created"),
    ("created", "2026-01-01T00:00:00+02:00", "created"),
    ("onnx_file", "../m.onnx", "onnx_file"),
    ("onnx_sha256", "ABC", "onnx_sha256"),
    ("state_layout_version", 0, "state_layout_version"),
    ("num_features", 19, "feature_names"),
    ("num_actions", 14, "action_streams"),
    ("feature_names", ["a"] * 20, "feature_names"),
    ("action_streams", [[1, 0]] + [[i] for i in range(14)], r"action_streams\[0\]"),
    ("input_name", "q_values", "input_name"),
    ("reward_weights", {"throughput": float("nan")}, "reward_weights"),
    ("training", [], "training"),
]


@pytest.mark.parametrize(("field", "value", "match"), BAD)
def test_invalid_field_is_refused_by_name(model: Path, field: str, value: Any, match: str) -> None:
    path = metadata_path_for(model)
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        read_metadata(path)


def test_missing_and_unknown_fields(model: Path) -> None:
    path = metadata_path_for(model)
    data = json.loads(path.read_text())
    del data["reward_spec_version"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="reward_spec_version is missing"):
        read_metadata(path)
    data["reward_spec_version"] = 1
    data["surprise"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="surprise"):
        read_metadata(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_metadata(path)


def test_write_refuses_what_read_would_refuse(model: Path, tmp_path: Path) -> None:
    md = read_metadata(metadata_path_for(model))
    bad = ModelMetadata(**{**{k: getattr(md, k) for k in md.__dataclass_fields__}, "version": "v1"})
    target = tmp_path / "bad.metadata.json"
    with pytest.raises(ValueError, match="version"):
        write_metadata(target, bad)
    assert not target.exists()


def test_sha_mismatch_names_both_digests(model: Path) -> None:
    md = read_metadata(metadata_path_for(model))
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="onnx_sha256 mismatch"):
        verify_model_file(model, md)
