"""``itp export``: export a training checkpoint to ONNX + metadata, or verify a model file.

Examples::

    itp export models/dqn_final.pt                          # -> models/dqn_final.onnx + .metadata.json
    itp export models/dqn_checkpoint_500 -o /tmp/m.onnx --version 1.1.0
    itp export models/dqn_final.onnx                        # verify: sha256, layout, load, print metadata
    itp export itp/models/dqn_v1.onnx --json                # the verified metadata as JSON

A ``.pt`` source (or a checkpoint stem) is exported with ``itp.training.export.export_model``: the
BatchNorm-folded network as the exact Gemm/Relu chain the runtime's native fast path reads, checked
against PyTorch (max |dq| < 1e-4) before anything is written, and its ``.metadata.json`` (sha256,
state layout, action table, reward spec) beside it. Needs the ``train`` extra (torch, onnx).

An ``.onnx`` source is verified the way ``TaskPartitioner`` verifies it at load time: the metadata is
read and validated, the file's sha256 compared with it, the graph opened in ONNX Runtime with its
input/output names and shapes checked, and the native fast path compared with ONNX Runtime on probe
states. Exit status 0 when it verifies, 1 (with the reason) when it does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from itp.cli import CLIError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``export`` on the subparsers action ``sub``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "export",
        help="export a training checkpoint to ONNX + metadata, or verify a model file",
        description=(
            "SOURCE.pt (or a checkpoint stem): export its network to ONNX with metadata, verified "
            "against PyTorch. SOURCE.onnx: verify it against its .metadata.json (sha256, layout, "
            "shapes, native/ONNX Runtime parity) and print the metadata."
        ),
    )
    p.add_argument("source", metavar="SOURCE", help="a checkpoint (.pt or stem) or a model (.onnx)")
    p.add_argument(
        "-o", "--output", metavar="OUT.onnx",
        help="export target (default: SOURCE with .onnx; its .metadata.json is written beside it)",
    )
    p.add_argument(
        "--version", dest="model_version", metavar="X.Y.Z",
        help="semantic version written into the metadata (default: the source's, else 1.0.0)",
    )
    p.add_argument("--json", action="store_true", help="print the (verified) metadata as JSON")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Export or verify ``args.source``; returns 0 on success."""
    source = Path(args.source)
    if source.suffix == ".onnx":
        if args.output or args.model_version:
            raise CLIError("--output and --version apply to exporting a checkpoint, not to a .onnx", status=2)
        return _verify(source, args.json)
    return _export(source, args)


# ----------------------------------------------------------------------------------- verify
def _verify(path: Path, as_json: bool) -> int:
    from itp.model_loading import ModelLoadError, load_model

    if not path.is_file():
        raise CLIError(f"model not found: {path}")
    try:
        loaded = load_model(path)
    except ModelLoadError as exc:
        raise CLIError(f"{path} does not verify: {str(exc).splitlines()[0]}") from None
    md = loaded.metadata
    if as_json:
        doc = {"path": str(path), "verified": True, "backend": loaded.backend, "metadata": md.to_dict()}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    training = dict(md.training)
    evaluation = dict(md.evaluation)
    lines = [
        f"{path}: verified (sha256 matches its metadata, layout and shapes agree, loads on the "
        f"{loaded.backend} backend)",
        f"version        {md.version}",
        f"created        {md.created}",
        f"sha256         {md.onnx_sha256}",
        f"state          layout v{md.state_layout_version}, {md.num_features} features: "
        + ", ".join(md.feature_names[:4]) + ", ...",
        f"actions        {md.num_actions} (stream sets "
        + " ".join("".join(map(str, s)) for s in md.action_streams) + ")",
        f"tensors        {md.input_name} float32[N, {md.num_features}] -> {md.output_name} "
        f"float32[N, {md.num_actions}]",
        f"reward         spec v{md.reward_spec_version}, weights "
        + ", ".join(f"{k}={v:g}" for k, v in md.reward_weights.items()),
    ]
    if training:
        keys = ("episodes_run", "steps", "converged_at_episode", "wall_time_s", "seed", "source")
        shown = {k: training[k] for k in keys if k in training}
        lines.append("training       " + (json.dumps(shown) if shown else f"{len(training)} fields"))
    if evaluation:
        lines.append(
            f"evaluation     {evaluation.get('split', '?')} split, "
            f"command: {evaluation.get('command') or '-'}"
        )
        markdown = evaluation.get("markdown")
        if isinstance(markdown, str) and markdown.strip():
            lines += ["", markdown.rstrip("\n")]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


# ----------------------------------------------------------------------------------- export
def _export(source: Path, args: argparse.Namespace) -> int:
    try:
        from itp.training import dqn
        from itp.training.export import export_model
    except ImportError as exc:
        raise CLIError(
            f"exporting a checkpoint needs the train extra: pip install 'itp[train]' ({exc})"
        ) from None
    from itp.model_metadata import metadata_path_for, read_metadata

    stem = dqn.resolve_stem(source)
    target = Path(args.output) if args.output else stem.with_name(stem.name + ".onnx")
    if target.suffix != ".onnx":
        raise CLIError(f"--output must end in .onnx, got {target}", status=2)
    if not target.parent.is_dir():
        raise CLIError(f"--output folder {target.parent} does not exist")
    try:
        net, checkpoint = dqn.load_network(stem)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from None

    # Keep the training and evaluation records of the model exported with this checkpoint, if any:
    # they describe the same weights.
    previous: Any = None
    sibling = metadata_path_for(stem.with_name(stem.name + ".onnx"))
    if sibling.is_file():
        try:
            previous = read_metadata(sibling)
        except (OSError, ValueError):
            previous = None
    config = checkpoint["config"]
    training: dict[str, Any] = dict(previous.training) if previous is not None else {
        "config": config,
        "seed": config.get("seed"),
        "train_trace_files": checkpoint["train_files"],
        "episodes_run": checkpoint["episode"],
        "steps": checkpoint["global_step"],
        "gradient_steps": checkpoint["gradient_steps"],
    }
    training["exported_from"] = str(stem.with_name(stem.name + ".pt"))
    evaluation = dict(previous.evaluation) if previous is not None else {}
    version = args.model_version or (previous.version if previous is not None else None) or str(
        config.get("model_version", "1.0.0")
    )
    try:
        md = export_model(net, target, version=version, training=training, evaluation=evaluation)
    except ValueError as exc:
        raise CLIError(str(exc).splitlines()[0]) from None
    sys.stdout.write(
        f"exported {stem.with_name(stem.name + '.pt')} (episode {checkpoint['episode']}) -> {target}\n"
        f"metadata {metadata_path_for(target)} (version {md.version}, sha256 {md.onnx_sha256[:16]}...)\n"
    )
    return 0
