"""Model registry: versioned models on disk, a pointer to the current one, backups and a history.

Layout of the registry folder (default ``models/``)::

    dqn_v1.0.0.onnx  dqn_v1.0.0.metadata.json      one pair per version (immutable once written)
    dqn_v1.0.1.onnx  dqn_v1.0.1.metadata.json
    current.json                                   {"version", "updated", "reason", "previous": [...]}
    backups/current.<UTC time>.<n>.json            the pointer as it was before each update
    training_history.json                          every retrain, gate verdict, canary step, rollback

Atomicity: every file is written to a temporary name in the same folder, flushed and ``fsync``-ed, then
renamed over the target (``os.replace``, atomic on POSIX), and the folder is ``fsync``-ed. A version is
published model first, metadata second: a version exists only once its metadata exists, and its
metadata names the sha256 of the model bytes, so a crash at any point leaves either no new version or a
complete one; the pointer is only ever moved to a version that has just loaded and verified. A crash
in the middle of an update therefore leaves the previous model current and loadable. Leftover
temporary files are ignored (and removed by :meth:`ModelRegistry.clean`).

Every load verifies the sha256 in the metadata (:func:`itp.model_loading.load_model`); a corrupt file is
refused and the pointer is not moved. If the *current* model's file is damaged after the fact,
:meth:`ModelRegistry.load_current` falls back to the most recent earlier version that still verifies
(logged as an error).

Thread/process safety: writers serialise on an ``fcntl`` lock file (``.lock``), so two processes may
share a registry; readers need no lock (they only ever see complete files).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from itp.model_loading import LoadedModel, ModelLoadError, load_model
from itp.model_metadata import (
    ModelMetadata,
    file_sha256,
    metadata_path_for,
    read_metadata,
    utc_timestamp,
    verify_model_file,
    write_metadata,
)

__all__ = ["ModelRegistry", "RegistryError", "VersionInfo", "atomic_write_bytes", "parse_version"]

logger = logging.getLogger(__name__)

_NAME_RE: Final = re.compile(r"^dqn_v(\d+)\.(\d+)\.(\d+)\.metadata\.json$")
_POINTER: Final = "current.json"
_HISTORY: Final = "training_history.json"
_HISTORY_FORMAT: Final = "itp-registry-history"
_MAX_POINTER_HISTORY: Final = 20


class RegistryError(ValueError):
    """A registry operation was refused (unknown version, version exists, unreadable pointer...)."""


def parse_version(version: str) -> tuple[int, int, int]:
    """``"1.2.3"`` -> (1, 2, 3). Raises RegistryError for anything else (pre-release tags included)."""
    m = re.fullmatch(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)", version)
    if m is None:
        raise RegistryError(f"version must be MAJOR.MINOR.PATCH, got {version!r}")
    return int(m[1]), int(m[2]), int(m[3])


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically: temp file in the same folder, fsync, rename, fsync folder."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    _fsync_dir(target.parent)


@dataclass(frozen=True)
class VersionInfo:
    """One registered version (:meth:`ModelRegistry.list_versions`).

    Attributes:
        version: semantic version.
        onnx_path: the model file.
        created: the metadata's UTC time stamp (None when unreadable).
        ok: the metadata parses and the model's sha256 matches it.
        problem: why not ``ok`` (None when ok).
        current: this is the current version.
        metadata: the parsed metadata (None when unreadable).
    """

    version: str
    onnx_path: Path
    created: str | None
    ok: bool
    problem: str | None
    current: bool
    metadata: ModelMetadata | None


class ModelRegistry:
    """Versioned models with a current pointer (see the module docstring).

    Args:
        root: the registry folder (created if absent).
        prefix: file name prefix of versions (``dqn_v`` -> ``dqn_v1.0.0.onnx``).
    """

    def __init__(self, root: str | Path = "models") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "backups").mkdir(exist_ok=True)
        self._thread_lock = threading.Lock()

    # ---------------------------------------------------------------------------------- paths
    def onnx_path(self, version: str) -> Path:
        """``<root>/dqn_v<version>.onnx``."""
        parse_version(version)
        return self.root / f"dqn_v{version}.onnx"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # ---------------------------------------------------------------------------------- reads
    def versions(self) -> list[str]:
        """Registered versions (those with a metadata file), ascending by semantic version."""
        found = []
        for p in self.root.iterdir():
            m = _NAME_RE.match(p.name)
            if m:
                found.append((int(m[1]), int(m[2]), int(m[3])))
        return [f"{a}.{b}.{c}" for a, b, c in sorted(found)]

    def list_versions(self) -> list[VersionInfo]:
        """Every registered version with its verification status (reads and hashes every model)."""
        current = self.current_version()
        out = []
        for v in self.versions():
            path = self.onnx_path(v)
            meta: ModelMetadata | None = None
            problem: str | None = None
            try:
                meta = read_metadata(metadata_path_for(path))
                verify_model_file(path, meta)
                if meta.version != v:
                    problem = f"metadata version {meta.version} does not match the file name"
            except (OSError, ValueError) as exc:
                problem = str(exc)
            out.append(
                VersionInfo(
                    v, path, meta.created if meta else None, problem is None, problem, v == current, meta
                )
            )
        return out

    def pointer(self) -> dict[str, Any] | None:
        """The current pointer's contents, or None when no version was ever made current.

        Raises:
            RegistryError: the pointer file exists but is not valid (it is only ever replaced atomically,
                so this means outside damage).
        """
        path = self.root / _POINTER
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"registry pointer {path} is unreadable: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("version"), str):
            raise RegistryError(f"registry pointer {path} has no version")
        return data

    def current_version(self) -> str | None:
        """The current version, or None."""
        p = self.pointer()
        return None if p is None else str(p["version"])

    def load(self, version: str) -> LoadedModel:
        """Load and verify one version (sha256, layout, shapes, probe parity).

        Raises:
            RegistryError: unknown version.
            ModelLoadError: the files are damaged or invalid.
        """
        path = self.onnx_path(version)
        if not metadata_path_for(path).is_file():
            raise RegistryError(f"version {version} is not registered in {self.root}")
        loaded = load_model(path)
        if loaded.version != version:
            raise ModelLoadError(f"{path}: metadata says version {loaded.version}, file name says {version}")
        return loaded

    def load_current(self) -> LoadedModel | None:
        """The current model, or, if its files no longer verify, the newest earlier current version that
        does (logged as an error; the pointer is not changed). None when nothing loads."""
        p = self.pointer()
        if p is None:
            return None
        candidates = [str(p["version"]), *[str(v) for v in p.get("previous", [])]]
        for i, version in enumerate(candidates):
            try:
                loaded = self.load(version)
            except (ModelLoadError, RegistryError) as exc:
                logger.error("registry: version %s cannot be loaded: %s", version, exc)
                continue
            if i:
                logger.error("registry: current version %s is damaged; serving %s", candidates[0], version)
            return loaded
        return None

    def next_version(self, bump: str = "patch") -> str:
        """The next unused version after the highest registered one (``"1.0.0"`` when empty)."""
        versions = [parse_version(v) for v in self.versions()]
        if not versions:
            return "1.0.0"
        a, b, c = max(versions)
        if bump == "major":
            return f"{a + 1}.0.0"
        if bump == "minor":
            return f"{a}.{b + 1}.0"
        if bump != "patch":
            raise ValueError(f"bump must be 'major', 'minor' or 'patch', got {bump!r}")
        return f"{a}.{b}.{c + 1}"

    # --------------------------------------------------------------------------------- writes
    def publish(self, onnx_path: str | Path, version: str | None = None, *, note: str = "") -> str:
        """Copy a model (``X.onnx`` + ``X.metadata.json``) into the registry as a new version.

        The copy is verified (sha256 of the bytes written) before its metadata is written; the metadata
        is rewritten with the registry's version and file name. Does not change the current version.

        Args:
            onnx_path: the model to publish (its metadata beside it).
            version: the version to give it (default: :meth:`next_version`).
            note: recorded in the history.

        Returns:
            The version published.

        Raises:
            RegistryError: the version exists already or is not MAJOR.MINOR.PATCH.
            ModelLoadError: the source model or its metadata is invalid (nothing is published).
        """
        src = Path(onnx_path)
        try:
            meta = read_metadata(metadata_path_for(src))
            verify_model_file(src, meta)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot publish {src}: {exc}") from exc
        data = src.read_bytes()
        with self._locked():
            version = version or self.next_version()
            target = self.onnx_path(version)
            meta_target = metadata_path_for(target)
            if meta_target.exists():
                raise RegistryError(f"version {version} already exists in {self.root}")
            atomic_write_bytes(target, data)
            if file_sha256(target) != meta.onnx_sha256:
                target.unlink(missing_ok=True)
                raise ModelLoadError(f"copy of {src} into {target} does not verify")
            new_meta = replace(meta, version=version, onnx_file=target.name)
            tmp_meta = meta_target.with_name(f".{meta_target.name}.{os.getpid()}.tmp")
            write_metadata(tmp_meta, new_meta)
            with open(tmp_meta, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_meta, meta_target)
            _fsync_dir(self.root)
            self._append_history_locked(
                {"event": "published", "version": version, "source": str(src), "note": note}
            )
        logger.info(
            "registry: published version %s from %s", version, src,
            extra={"event": "model_published", "model_version": version, "source_path": str(src)},
        )
        return version

    def set_current(self, version: str, *, reason: str = "") -> LoadedModel:
        """Make ``version`` current after loading and verifying it; returns the loaded model.

        The previous pointer is backed up first. On any failure the pointer is unchanged.

        Raises:
            RegistryError: unknown version.
            ModelLoadError: the version's files do not verify (the previous version stays current).
        """
        with self._locked():
            loaded = self.load(version)
            old = self.pointer()
            previous: list[str] = []
            if old is not None:
                stamp = utc_timestamp().replace(":", "")
                n = len(list((self.root / "backups").glob("current.*.json")))
                atomic_write_bytes(
                    self.root / "backups" / f"current.{stamp}.{n:06d}.json",
                    json.dumps(old, indent=2).encode("utf-8"),
                )
                previous = [str(old["version"]), *[str(v) for v in old.get("previous", [])]]
                previous = [v for v in dict.fromkeys(previous) if v != version][:_MAX_POINTER_HISTORY]
            pointer = {"version": version, "updated": utc_timestamp(), "reason": reason, "previous": previous}
            atomic_write_bytes(self.root / _POINTER, (json.dumps(pointer, indent=2) + "\n").encode("utf-8"))
            self._append_history_locked(
                {
                    "event": "current",
                    "version": version,
                    "from": old["version"] if old else None,
                    "reason": reason,
                }
            )
        logger.info(
            "registry: version %s is current (%s)", version, reason or "no reason given",
            extra={"event": "registry_current", "model_version": version, "reason": reason},
        )
        return loaded

    def record(self, event: str, **fields: Any) -> None:
        """Append an event (retrain, gate verdict, canary step, rollback...) to ``training_history.json``."""
        with self._locked():
            self._append_history_locked({"event": event, **fields})

    def history(self) -> list[dict[str, Any]]:
        """The events of ``training_history.json``, oldest first ([] when absent or unreadable)."""
        path = self.root / _HISTORY
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            logger.error("registry history %s is unreadable: %s", path, exc)
            return []
        events = data.get("events", []) if isinstance(data, dict) else []
        return [e for e in events if isinstance(e, dict)]

    def _append_history_locked(self, event: dict[str, Any]) -> None:
        events = self.history()
        events.append({"time": utc_timestamp(), **event})
        doc = {"format": _HISTORY_FORMAT, "format_version": 1, "events": events}
        atomic_write_bytes(
            self.root / _HISTORY, (json.dumps(doc, indent=2, default=str) + "\n").encode("utf-8")
        )

    def clean(self) -> int:
        """Remove temporary files left by a crash; returns how many were removed."""
        n = 0
        with self._locked():
            for p in self.root.glob(".*.tmp"):
                p.unlink(missing_ok=True)
                n += 1
        return n

    def staging_dir(self) -> Path:
        """A folder inside the registry for files being produced (same file system: cheap renames)."""
        path = self.root / "staging"
        path.mkdir(exist_ok=True)
        return path

    def remove_staging(self) -> None:
        """Delete the staging folder and everything in it."""
        shutil.rmtree(self.root / "staging", ignore_errors=True)
