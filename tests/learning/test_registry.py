"""ModelRegistry: versions, current pointer, backups, sha256 on every load, crash safety (kill -9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from model_factory import write_constant_model, write_model

from itp.learning.registry import ModelRegistry, RegistryError, parse_version
from itp.model_loading import ModelLoadError
from itp.model_metadata import metadata_path_for


def test_publish_list_set_current_and_backups(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "models")
    assert reg.versions() == [] and reg.current_version() is None and reg.load_current() is None
    v1 = reg.publish(write_model(tmp_path / "a.onnx", seed=1))
    v2 = reg.publish(write_model(tmp_path / "b.onnx", seed=2))
    assert (v1, v2) == ("1.0.0", "1.0.1")
    assert reg.onnx_path(v1).name == "dqn_v1.0.0.onnx"
    assert reg.load(v2).version == "1.0.1"  # the metadata carries the registry's version
    reg.set_current(v1, reason="first")
    reg.set_current(v2, reason="second")
    p = reg.pointer()
    assert p is not None and p["version"] == v2 and p["previous"] == [v1]
    assert len(list((reg.root / "backups").glob("current.*.json"))) == 1
    infos = reg.list_versions()
    assert [(i.version, i.ok, i.current) for i in infos] == [(v1, True, False), (v2, True, True)]
    events = [e["event"] for e in reg.history()]
    assert events == ["published", "published", "current", "current"]
    assert reg.next_version("minor") == "1.1.0" and reg.next_version("major") == "2.0.0"


def test_refusals_change_nothing(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "models")
    v1 = reg.publish(write_model(tmp_path / "a.onnx"), "1.0.0")
    reg.set_current(v1)
    with pytest.raises(RegistryError, match="already exists"):
        reg.publish(write_model(tmp_path / "b.onnx", seed=5), "1.0.0")
    with pytest.raises(RegistryError, match="not registered"):
        reg.set_current("9.9.9")
    with pytest.raises(RegistryError, match=r"MAJOR\.MINOR\.PATCH"):
        parse_version("1.0")
    bad = write_model(tmp_path / "c.onnx")
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(ModelLoadError):
        reg.publish(bad)
    assert reg.versions() == ["1.0.0"] and reg.current_version() == "1.0.0"


def test_corrupt_model_refused_at_load_and_previous_stays_current(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "models")
    v1 = reg.publish(write_model(tmp_path / "a.onnx", seed=1))
    reg.set_current(v1)
    v2 = reg.publish(write_model(tmp_path / "b.onnx", seed=2))
    path = reg.onnx_path(v2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit on disk
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        reg.set_current(v2)
    assert reg.current_version() == v1
    assert reg.load_current() is not None and reg.load_current().version == v1  # type: ignore[union-attr]
    info = {i.version: i for i in reg.list_versions()}
    assert not info[v2].ok and "sha256" in (info[v2].problem or "")


def test_damaged_current_falls_back_to_previous_version(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "models")
    v1 = reg.publish(write_constant_model(tmp_path / "a.onnx", 14))
    v2 = reg.publish(write_constant_model(tmp_path / "b.onnx", 3))
    reg.set_current(v1)
    reg.set_current(v2)
    reg.onnx_path(v2).write_bytes(b"garbage")
    loaded = reg.load_current()
    assert loaded is not None and loaded.version == v1
    assert reg.current_version() == v2  # the pointer is not rewritten behind the operator's back


CHILD = textwrap.dedent(
    """
    import shutil, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from model_factory import write_model
    from itp.learning.registry import ModelRegistry
    reg = ModelRegistry(sys.argv[1])
    src = Path(sys.argv[1]).parent / "src"
    src.mkdir(exist_ok=True)
    k = 0
    while True:  # killed by the parent, mid-update
        path = write_model(src / f"m{k % 3}.onnx", seed=k % 3)
        v = reg.publish(path)
        reg.set_current(v, reason=f"update {k}")
        print(v, flush=True)
        k += 1
    """
)


def test_kill_9_mid_update_leaves_previous_model_current_and_loadable(tmp_path: Path) -> None:
    root = tmp_path / "models"
    tests_dir = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), tests_dir], stdout=subprocess.PIPE, text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    acknowledged = None
    for i, line in enumerate(proc.stdout):
        acknowledged = line.strip()
        if i >= 8:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert acknowledged is not None
    reg = ModelRegistry(root)
    current = reg.current_version()
    assert current is not None
    assert parse_version(current) >= parse_version(acknowledged)  # nothing acknowledged is undone
    loaded = reg.load_current()
    assert loaded is not None and loaded.version == current  # the current model verifies (sha256)
    # Every registered version is complete (a half-published one has no metadata, so it is not listed).
    assert all(info.ok for info in reg.list_versions())
    json.loads((root / "current.json").read_text())
    json.loads((root / "training_history.json").read_text())
    reg.clean()
    assert not list(root.glob(".*.tmp"))
    # The registry keeps working after the crash.
    v = reg.publish(write_model(tmp_path / "after.onnx", seed=9))
    assert reg.set_current(v).version == v
    assert metadata_path_for(reg.onnx_path(v)).is_file()
