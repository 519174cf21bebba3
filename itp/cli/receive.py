"""``itp receive``: receive files from ``itp send`` into a directory until SIGINT/SIGTERM.

Examples::

    itp receive --listen 127.0.0.1:9000 --dir incoming/
    itp receive --listen 0.0.0.0:9000 --dir incoming/ --secret-file secret
    itp receive --listen 0.0.0.0:9000 --dir incoming/ --secret-file secret --tls-cert c.pem --tls-key k.pem

Prints ``itp receive: listening on HOST:PORT`` (the real port when 0 was asked for) on stdout once it
accepts connections, and a summary line when it stops. Without ``--secret-file`` it only listens on a
loopback address unless ``--insecure`` is given. All the logic lives in :mod:`itp.transfer.receiver`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType
from typing import Any

from itp.cli import CLIError, int_at_least

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``receive`` on the subparsers action ``sub``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "receive",
        help="receive files sent by `itp send` into a directory",
        description=(
            "Listen for `itp send` sessions and write each file, verified chunk by chunk (CRC-32C), into "
            "DIR: fsynced and atomically renamed before it is acknowledged. Stops on SIGINT/SIGTERM."
        ),
    )
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to listen on (port 0: any)")
    p.add_argument("--dir", required=True, metavar="DIR", help="existing directory to write the files into")
    p.add_argument("--secret-file", metavar="FILE", help="shared secret senders must prove (>= 16 bytes)")
    p.add_argument(
        "--insecure", action="store_true",
        help="allow listening on a non-loopback address without --secret-file (anyone can write files)",
    )
    p.add_argument("--tls-cert", metavar="PEM", help="TLS certificate chain (with --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="TLS private key (with --tls-cert)")
    p.add_argument("--max-task-bytes", type=int_at_least(1), default=None, metavar="N",
                   help="largest accepted file, bytes (default 2**50)")
    p.add_argument("--max-connections", type=int_at_least(1), default=64, metavar="N",
                   help="connections at once (default 64)")
    p.add_argument("--max-tasks", type=int_at_least(1), default=256, metavar="N",
                   help="files being received at once (default 256)")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the receiver until SIGINT/SIGTERM; returns 0 after a clean stop."""
    from itp.actions import MAX_TASK_BYTES
    from itp.transfer import Receiver, load_secret, parse_host_port, server_tls_context

    try:
        host, port = parse_host_port(args.listen)
    except ValueError as exc:
        raise CLIError(str(exc), status=2) from None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise CLIError("--tls-cert and --tls-key go together", status=2)
    try:
        secret = load_secret(args.secret_file) if args.secret_file else None
        tls = server_tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    except (OSError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    try:
        receiver = Receiver(
            args.dir, host=host, port=port, secret=secret, insecure=args.insecure, tls=tls,
            max_task_bytes=args.max_task_bytes or MAX_TASK_BYTES, max_connections=args.max_connections,
            max_concurrent_tasks=args.max_tasks,
        )
        receiver.start()
    except (OSError, ValueError) as exc:
        raise CLIError(str(exc)) from None

    def stop(signum: int, frame: FrameType | None) -> None:
        del frame
        receiver.close()

    # Both signals close the receiver from the handler (no KeyboardInterrupt racing the set-up below).
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        shown = f"[{host}]" if ":" in host else host
        print(f"itp receive: listening on {shown}:{receiver.port}, writing into {receiver.directory}",
              flush=True)
        receiver.serve_forever()
    finally:
        receiver.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    m = receiver.metrics()
    print(
        f"itp receive: stopped; {m.tasks_completed} files ({m.bytes_written} bytes) received, "
        f"{m.auth_failures} authentication failures, {m.protocol_errors} protocol errors",
        flush=True,
    )
    sys.stdout.flush()
    return 0
