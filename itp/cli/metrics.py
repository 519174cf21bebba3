"""``itp metrics``: serve Prometheus metrics of a model registry and its experience store.

Examples::

    itp metrics --port 9464                     # http://127.0.0.1:9464/metrics, until Ctrl-C
    itp metrics --dir /srv/itp/models --port 9464 --once   # print the exposition once and exit

This is the sidecar view of what lives on disk: the current version, the number of versions (and of
damaged ones), the stored transitions, and the lifecycle events of the registry history (retrains, gate
rejections, promotions, rollbacks). A process that runs a ``TaskPartitioner`` exposes its live numbers
(decisions, fallbacks, canary share, ...) with ``itp.learning.prometheus.serve_metrics(partitioner,
port)``. Listens on 127.0.0.1 only unless ``--addr`` says otherwise. Needs ``prometheus_client``
(``pip install 'itp[metrics]'``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from itp.cli import CLIError

__all__ = ["add_parser", "registry_families", "run"]

_EVENTS = (
    "retrain_started",
    "retrain_failed",
    "gate_rejected",
    "gate_passed",
    "canary_promoted",
    "canary_rolled_back",
    "rollback",
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``metrics`` on the subparsers action ``sub``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "metrics",
        help="serve Prometheus metrics of a model registry",
        description="Serve /metrics (Prometheus text format) for a model registry and experience store.",
    )
    p.add_argument("--dir", default="models", help="registry folder (default: ./models)")
    p.add_argument("--port", type=int, default=9464, help="TCP port (default 9464; 0: any free port)")
    p.add_argument("--addr", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--once", action="store_true", help="print the exposition once and exit")
    p.set_defaults(handler=run)
    return p


def registry_families(root: Any) -> Iterator[Any]:
    """Metric families for the registry at ``root`` (read at each scrape)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

    from itp.learning.registry import ModelRegistry
    from itp.learning.store import ExperienceStore, StoreError

    reg = ModelRegistry(root)
    infos = reg.list_versions()
    yield GaugeMetricFamily("itp_registry_versions", "Registered model versions", value=len(infos))
    yield GaugeMetricFamily(
        "itp_registry_damaged_versions",
        "Versions whose files do not verify",
        value=sum(not i.ok for i in infos),
    )
    current = reg.current_version()
    yield InfoMetricFamily(
        "itp_registry_current", "The current model version", value={"version": current or ""}
    )
    events = CounterMetricFamily(
        "itp_registry_events", "Lifecycle events in the registry history", labels=["event"]
    )
    history = reg.history()
    for name in _EVENTS:
        events.add_metric([name], float(sum(e.get("event") == name for e in history)))
    yield events
    store_path = reg.root / "experience.sqlite3"
    if store_path.is_file():
        try:
            with ExperienceStore(store_path) as store:
                rows = len(store)
        except StoreError:
            rows = -1
        yield GaugeMetricFamily(
            "itp_experience_count", "Transitions in the durable store (-1: unreadable)", value=rows
        )


class _RegistryCollector:
    def __init__(self, root: Any) -> None:
        self._root = root

    def collect(self) -> Iterator[Any]:
        yield from registry_families(self._root)

    def describe(self) -> list[Any]:
        return []


def run(args: argparse.Namespace) -> int:
    """Serve (or print once) the registry's metrics; returns the exit status."""
    import threading
    from pathlib import Path

    try:
        from prometheus_client import CollectorRegistry, generate_latest, start_http_server
    except ModuleNotFoundError:
        raise CLIError("prometheus_client is not installed: pip install 'itp[metrics]'") from None
    root = Path(args.dir)
    if not root.is_dir():
        raise CLIError(f"no model registry at {root} (use --dir)")
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be in 0..65535, got {args.port}", status=2)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RegistryCollector(root))
    if args.once:
        sys.stdout.write(generate_latest(registry).decode("utf-8"))
        return 0
    try:
        server, _thread = start_http_server(args.port, addr=args.addr, registry=registry)
    except OSError as exc:
        raise CLIError(f"cannot listen on {args.addr}:{args.port}: {exc}") from None
    sys.stderr.write(f"serving http://{args.addr}:{server.server_port}/metrics (Ctrl-C to stop)\n")
    try:
        threading.Event().wait()
    finally:
        server.shutdown()
    return 0
