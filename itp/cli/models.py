"""``itp models``: list, inspect and roll back the versions of a model registry.

Examples::

    itp models list                       # versions in ./models, verified (sha256), current marked
    itp models --dir /srv/itp/models list --json
    itp models show 1.0.3                 # metadata, training and gate record of one version
    itp models show                       # the current version
    itp models rollback 1.0.2             # make 1.0.2 current now (verified first; previous backed up)

A running service picks up a rollback made here when its learner restarts; to switch a live process at
once, call ``OnlineLearner.rollback(version)`` in it. All logic lives in ``itp.learning.registry``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from itp.cli import CLIError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``models`` on the subparsers action ``sub``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "models",
        help="list, show or roll back registered model versions",
        description="Inspect the model registry (versioned models, current pointer, history) and roll back.",
    )
    p.add_argument("--dir", default="models", help="registry folder (default: ./models)")
    actions = p.add_subparsers(dest="models_command", metavar="ACTION")
    ls = actions.add_parser("list", help="every version, verified, current marked")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show = actions.add_parser("show", help="one version's metadata and history")
    show.add_argument("version", nargs="?", help="MAJOR.MINOR.PATCH (default: the current version)")
    show.add_argument("--json", action="store_true", help="print JSON")
    rb = actions.add_parser("rollback", help="make an earlier version current now")
    rb.add_argument("version", help="MAJOR.MINOR.PATCH")
    rb.add_argument(
        "--reason", default="manual rollback (itp models rollback)", help="recorded in the history"
    )
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``itp models ACTION``; returns the exit status."""
    from pathlib import Path

    from itp.learning.registry import ModelRegistry, RegistryError
    from itp.model_loading import ModelLoadError

    if args.models_command is None:
        raise CLIError("an action is required: list, show or rollback", status=2)
    root = Path(args.dir)
    if not root.is_dir():
        raise CLIError(f"no model registry at {root} (use --dir)")
    reg = ModelRegistry(root)
    try:
        if args.models_command == "list":
            return _list(reg, args.json)
        if args.models_command == "show":
            return _show(reg, args.version, args.json)
        loaded = reg.set_current(args.version, reason=args.reason)
        reg.record("rollback", version=loaded.version, reason=args.reason, source="cli")
        sys.stdout.write(f"version {loaded.version} is current ({loaded.path})\n")
        return 0
    except (RegistryError, ModelLoadError) as exc:
        raise CLIError(str(exc).splitlines()[0]) from None


def _list(reg: Any, as_json: bool) -> int:
    infos = reg.list_versions()
    if as_json:
        rows = [
            {
                "version": i.version,
                "current": i.current,
                "ok": i.ok,
                "created": i.created,
                "problem": i.problem,
                "path": str(i.onnx_path),
            }
            for i in infos
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    if not infos:
        sys.stdout.write(f"no versions in {reg.root}\n")
        return 0
    sys.stdout.write(f"{'':2}{'version':<12}{'created':<22}status\n")
    for i in infos:
        status = "ok" if i.ok else f"DAMAGED: {i.problem}"
        sys.stdout.write(f"{'*' if i.current else ' ':2}{i.version:<12}{i.created or '-':<22}{status}\n")
    return 0


def _show(reg: Any, version: str | None, as_json: bool) -> int:
    from itp.learning.registry import RegistryError

    version = version or reg.current_version()
    if version is None:
        raise RegistryError(f"no current version in {reg.root}; give a version")
    info = next((i for i in reg.list_versions() if i.version == version), None)
    if info is None:
        raise RegistryError(f"version {version} is not registered in {reg.root}")
    events = [e for e in reg.history() if e.get("version") == version]
    doc = {
        "version": info.version,
        "current": info.current,
        "ok": info.ok,
        "problem": info.problem,
        "path": str(info.onnx_path),
        "metadata": info.metadata.to_dict() if info.metadata is not None else None,
        "history": events,
    }
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        return 0
    md = info.metadata
    lines = [
        f"version   {info.version}{'  (current)' if info.current else ''}",
        f"file      {info.onnx_path}",
        f"status    {'ok (sha256 verified)' if info.ok else 'DAMAGED: ' + str(info.problem)}",
    ]
    if md is not None:
        lines += [
            f"created   {md.created}",
            f"sha256    {md.onnx_sha256}",
            f"layout    state v{md.state_layout_version}, reward spec v{md.reward_spec_version}",
            "training  "
            + json.dumps({k: v for k, v in md.training.items() if k != "job"}, default=str)[:300],
        ]
    lines.append("history")
    lines += [
        f"  {e.get('time', '?')}  {e.get('event')}  {e.get('reason') or e.get('note') or ''}" for e in events
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
