"""``itp send``: send files to ``itp receive`` over parallel streams, itp choosing each split.

Examples::

    itp send big.iso --to 10.0.0.2:9000 --secret-file secret
    itp send *.dat --to 127.0.0.1:9000 --policy rate-proportional --json report.json
    itp send --schedule arrivals.json --to A:9000 --to B:9000 --to C:9000 --to D:9000 \\
        --netns /run/netns/p0 --netns /run/netns/p1 --netns /run/netns/p2 --netns /run/netns/p3

The split policy is ``--model M.onnx``, ``--heuristic`` or ``--policy NAME`` (``itp`` = the bundled
model, ``heuristic``, ``rate-proportional``, ``round-robin``, ``best-single``, ``equal-split``).
``--learn DIR`` (policy ``itp``) makes the sender a learning deployment kept in DIR across runs
(:class:`itp.learning.session.LearningSession`): exploration (``--epsilon``, ``--explore-top-k``), the
transport calibration, the experience store and the model registry; a retrain every ``--retrain-every``
stored outcomes (needs the ``train`` extra); the decision guard (``--guard-margin``, default 0.05, ``off``:
none) keeps the model from a split the calibrated transport model predicts clearly slower than the
heuristic's, and with ``--guard-exploration`` (default off) exploration draws only among the splits
the guard lets through; ``--explore-max-bytes N`` decides files larger than N bytes greedily, never
explored; ``--model-failures`` fits each stream's failure model from the per-chunk retries and scores
splits with it. Without ``--learn`` the outcomes update the stream table and
the in-process partitioner only, and are not kept.
``--schedule FILE`` is a JSON list of ``{"path": ..., "start_s": ..., "name": ...}``: each file is
submitted at its offset from the session start. One line per finished task and a total line go to
stdout; exit 0 when every file was delivered, 1 with a one-line reason otherwise. All the logic lives in
:mod:`itp.transfer.sender`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from itp.cli import CLIError, guard_margin_arg, int_at_least, progress

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``send`` on the subparsers action ``sub``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "send",
        help="send files to `itp receive` over parallel TCP streams",
        description=(
            "Send files over N persistent TCP streams; for each file the split policy decides which "
            "streams carry how many bytes, and learns from the outcome. Kernel TCP_INFO feeds the "
            "partitioner's stream table."
        ),
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="files to send (all submitted at once)")
    p.add_argument("--to", action="append", required=True, metavar="HOST:PORT",
                   help="receiver address: once for all streams, or once per stream")
    p.add_argument("--streams", type=int_at_least(1), default=4, metavar="N", help="streams 1..4 (default 4)")
    pol = p.add_mutually_exclusive_group()
    pol.add_argument("--model", metavar="MODEL.onnx", help="decide with this model (policy itp)")
    pol.add_argument("--heuristic", action="store_true", help="decide with the heuristic")
    pol.add_argument(
        "--policy", metavar="NAME", default=None,
        help="itp (default), heuristic, rate-proportional, round-robin, best-single, equal-split",
    )
    p.add_argument(
        "--learn", metavar="DIR",
        help="learn across runs in DIR: explore, calibrate, store every outcome, retrain, gate, canary",
    )
    p.add_argument("--epsilon", type=float, default=0.1, metavar="E",
                   help="with --learn: exploration rate in [0, 1] (default 0.1)")
    p.add_argument("--explore-top-k", type=int_at_least(1), default=3, metavar="K",
                   help="with --learn: explore among the K best actions, 1..15 (default 3)")
    p.add_argument("--guard-margin", type=guard_margin_arg, default=0.05, metavar="M",
                   help="with --learn: replace a model choice the calibrated transport model predicts more "
                   "than M slower than the heuristic's (default 0.05; off: no guard)")
    p.add_argument("--guard-exploration", action=argparse.BooleanOptionalAction, default=False,
                   help="with --learn: explore only among the splits the guard lets through (default off)")
    p.add_argument("--explore-max-bytes", type=int_at_least(1), default=None, metavar="N",
                   help="with --learn: never explore on a file larger than N bytes (default: no limit)")
    p.add_argument("--model-failures", action=argparse.BooleanOptionalAction, default=False,
                   help="with --learn: fit each stream's failure model from the chunks' retries and score "
                   "splits with it (default off)")
    p.add_argument("--retrain-every", type=int_at_least(1), default=1000, metavar="N",
                   help="with --learn: retrain after N new stored outcomes (default 1000)")
    p.add_argument("--wait-for-retrain", type=float, default=300.0, metavar="SECONDS",
                   help="with --learn: at exit, let a running retrain finish for at most this long "
                   "(default 300; 0: cancel it, it restarts in the next run)")
    p.add_argument("--secret-file", metavar="FILE", help="shared secret (the receiver's)")
    p.add_argument("--json", metavar="REPORT", help="write the JSON report here")
    p.add_argument("--schedule", metavar="FILE", help="JSON list of {path, start_s[, name]}: arrival times")
    p.add_argument(
        "--netns", action="append", metavar="PATH",
        help="network namespace per stream (/proc/PID/ns/net, /run/netns/NAME): once or per stream",
    )
    p.add_argument("--bind", action="append", metavar="ADDR", help="source address per stream")
    p.add_argument("--tls", action="store_true", help="use TLS (verify the receiver against --tls-ca)")
    p.add_argument("--tls-ca", metavar="PEM", help="CA or self-signed certificate to trust (implies --tls)")
    p.add_argument("--tls-server-name", metavar="NAME", help="name to verify in the receiver's certificate")
    p.add_argument("--window", type=int_at_least(1), default=8, metavar="N",
                   help="files in flight at once (default 8)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="give up after this many seconds (default: no limit)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    p.set_defaults(handler=run)
    return p


def _schedule(path: str) -> list[Any]:
    from itp.transfer import ScheduledFile

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CLIError(f"--schedule {path}: {exc}") from None
    if not isinstance(doc, list):
        raise CLIError(f"--schedule {path}: expected a JSON list of {{path, start_s}} objects")
    out = []
    for i, entry in enumerate(doc):
        if not isinstance(entry, dict) or "path" not in entry:
            raise CLIError(f"--schedule {path}: entry {i} must be an object with 'path', got {entry!r}")
        try:
            out.append(ScheduledFile(str(entry["path"]), entry.get("start_s", 0.0), entry.get("name")))
        except ValueError as exc:
            raise CLIError(f"--schedule {path}: entry {i}: {exc}") from None
    return sorted(out, key=lambda e: e.start_s)


def _policy(args: argparse.Namespace) -> tuple[str, str | None]:
    from itp.transfer import POLICY_NAMES

    if args.model is not None:
        if not Path(args.model).is_file():
            raise CLIError(f"--model {args.model}: no such file")
        return "itp", args.model
    if args.heuristic:
        return "heuristic", None
    name = args.policy or "itp"
    if name not in POLICY_NAMES:
        raise CLIError(f"unknown policy {name!r}; expected one of {', '.join(POLICY_NAMES)}", status=2)
    return name, None


def _learning_session(args: argparse.Namespace, model: str | None) -> Any:
    """The ``--learn`` session (None without it); CLIError naming a bad option or an unusable folder."""
    if args.learn is None:
        return None
    from itp.learning.session import LearningSession, learning_config
    from itp.learning.store import StoreError

    try:
        return LearningSession(
            args.learn, model_path=model, epsilon=args.epsilon, explore_top_k=args.explore_top_k,
            config=learning_config(args.retrain_every), guard_margin=args.guard_margin,
            guard_exploration=args.guard_exploration, explore_max_bytes=args.explore_max_bytes,
            model_failures=args.model_failures,
        )
    except (OSError, ValueError, TypeError, StoreError) as exc:
        raise CLIError(f"--learn {args.learn}: {exc}", status=2) from None


def _close_session(session: Any, wait_s: float) -> dict[str, Any]:
    """Close the ``--learn`` session, first letting a running retrain finish (bounded, said on stderr)."""
    if wait_s > 0 and (session.learner.is_training or session.learner.metrics()["time_until_update"] == 0.0):
        print(f"itp send: finishing the retrain started during this run (at most {wait_s:g} s; "
              "--wait-for-retrain 0 skips it)", file=sys.stderr, flush=True)
    summary: dict[str, Any] = session.close(wait_for_retrain_s=max(wait_s, 0.0))
    return summary


def _task_line(t: Any) -> str:
    if not t.ok:
        return f"FAILED {t.name}: {t.error}"
    streams = ",".join(str(i) for i in t.stream_ids) or "-"
    return (
        f"{t.name}: {t.size_bytes} bytes in {t.seconds * 1e3:.1f} ms, {t.goodput_bps / 1e6:.1f} Mbit/s "
        f"(streams {streams}, predicted {t.predicted_s * 1e3:.1f} ms, retries {t.retries})"
    )


def run(args: argparse.Namespace) -> int:
    """Send the files; returns 0 when all were delivered, 1 otherwise."""
    from itp.transfer import ScheduledFile, Sender, client_tls_context, load_secret

    entries = [ScheduledFile(p) for p in args.paths]
    if args.schedule:
        entries += _schedule(args.schedule)
    if not entries:
        raise CLIError("nothing to send: give PATH arguments or --schedule FILE", status=2)
    if args.timeout is not None and not args.timeout > 0:
        raise CLIError(f"--timeout must be > 0 seconds, got {args.timeout}", status=2)
    name, model = _policy(args)
    if args.learn is not None and name != "itp":
        raise CLIError(f"--learn needs the itp policy (a model), not {name!r}", status=2)
    if not 0.0 <= args.epsilon <= 1.0:
        raise CLIError(f"--epsilon must be in [0, 1], got {args.epsilon}", status=2)
    if not args.wait_for_retrain >= 0.0:
        raise CLIError(f"--wait-for-retrain must be >= 0 seconds, got {args.wait_for_retrain}", status=2)
    try:
        secret = load_secret(args.secret_file) if args.secret_file else None
        tls = client_tls_context(args.tls_ca) if (args.tls or args.tls_ca) else None
    except (OSError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    session = _learning_session(args, model)
    try:
        sender = Sender(
            args.to, streams=args.streams, policy=name, secret=secret, netns=args.netns, bind=args.bind,
            tls=tls, tls_server_name=args.tls_server_name, window=args.window,
            **({"partitioner": session.partitioner} if session is not None else {"model_path": model}),
        )
    except (OSError, ValueError, TypeError) as exc:
        if session is not None:
            session.close()
        raise CLIError(str(exc), status=2) from None
    update, close_bar = progress(args.progress, len(entries), desc="send", unit="file")
    sender.add_task_listener(lambda t: update(1, f"{t.goodput_bps / 1e6:.0f} Mbit/s"))

    def stop(signum: int, frame: FrameType | None) -> None:
        del frame
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        start = time.monotonic()
        deadline = None if args.timeout is None else start + args.timeout
        for e in entries:
            delay = start + e.start_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                sender.submit(e.path, e.name)
            except (OSError, ValueError) as exc:
                raise CLIError(f"{e.path}: {exc}") from None
        sender.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
    finally:
        signal.signal(signal.SIGTERM, previous)
        sender.close()
        close_bar()
        learning = _close_session(session, args.wait_for_retrain) if session is not None else None
        report = sender.report()
        if args.json:
            report.write_json(args.json, extra={"learning": learning} if learning is not None else None)
    for t in report.tasks:
        print(_task_line(t))
    tot = report.totals
    print(
        f"total: {tot.delivered}/{tot.tasks} files, {tot.bytes} bytes in {tot.seconds:.3f} s, "
        f"{tot.aggregate_goodput_bps / 1e6:.1f} Mbit/s aggregate, "
        f"{tot.mean_task_goodput_bps / 1e6:.1f} Mbit/s mean per file ({report.policy})"
    )
    if learning is not None:
        print(
            f"learning: serving {learning['registry_current_version']}, "
            f"{learning['experience_count']} outcomes stored in {learning['folder']}, "
            f"{learning['update_count']} retrains ({learning['promotions']} promoted, "
            f"{learning['gate_rejections']} rejected by the gate, {learning['rollbacks']} rolled back)"
            + ("" if learning["retraining_available"] else f"; {learning['retraining_unavailable_reason']}")
        )
    sys.stdout.flush()
    if not report.ok:
        first = next(t for t in report.tasks if not t.ok)
        raise CLIError(f"{tot.failed} of {tot.tasks} files not delivered; first: {first.name}: {first.error}")
    return 0
