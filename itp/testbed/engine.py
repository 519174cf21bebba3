"""The transfer engine's two ends as child processes of a testbed run (``python -m itp.testbed.engine``).

A run moves its bytes with ``itp.transfer`` -- the engine behind ``itp send`` / ``itp receive`` -- in
separate processes (as in production, and so that the sender's threads do not share a GIL with the run's
rate controller):

* ``receive``: ``itp.transfer.Receiver`` on ``--listen`` (the receiver address of the paths), port 0,
  files into ``--dir``, authenticated with ``--secret-file``; writes the bound port to ``--port-file``
  (atomically) and serves until SIGTERM/SIGINT.
* ``send CONFIG.json``: one ``itp.transfer.Sender`` session with the run's options (one stream per path,
  each socket opened in that path's namespace, the policy, the window), then the task schedule
  (``{"path", "start_s", "name"}`` entries submitted at ``start_s`` seconds after the session start),
  then the ``SendReport`` written as JSON (the same report ``itp send --json`` writes). With a ``learn``
  entry (``{"folder", "epsilon", "explore_top_k", "retrain_every", "wait_for_retrain_s"}``, optionally
  ``"guard_exploration"``, ``"explore_max_bytes"``, ``"model_failures"`` and ``"seed"``; policy ``itp``)
  the split comes from a :class:`itp.learning.session.LearningSession` over ``folder`` -- as ``itp send
  --learn`` -- and the report gets its summary under ``learning``; a retrain running when the tasks are
  done may finish (bounded by ``wait_for_retrain_s``) before the session closes, outside the timed tasks.

Why not the ``itp send`` command line itself: the rate controller replays every path's trace on a clock
that must start with the sender's session, since the report's times (``dispatched_s``) are offsets from
that start and the calibration puts each task on the rates it really met. This child prints
``READY <t0>`` with ``t0 = Sender.session_start_s`` (``time.monotonic()`` at the session's start;
CLOCK_MONOTONIC is one clock for every process of the machine), and the controller starts at exactly
that ``t0``. (The receiver needs no clock: runs use ``itp receive`` itself; the ``receive`` entry point
here is kept for callers that need the bound port of ``--listen HOST:0`` written to a file.)
Starting ``itp send`` and guessing its start-up time (0.3-1 s of imports, more for the model policy)
would shift the traces differently for each policy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from itp.learning.session import LearningSession
    from itp.transfer import TaskReport

__all__ = ["learning_session", "main"]

logger = logging.getLogger(__name__)


def _receive(args: argparse.Namespace) -> int:
    from itp.transfer import Receiver, load_secret

    receiver = Receiver(args.dir, host=args.listen, port=0, secret=load_secret(args.secret_file))

    def stop(signum: int, frame: object) -> None:
        del signum, frame
        receiver.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    receiver.start()
    tmp = Path(f"{args.port_file}.tmp")
    tmp.write_text(f"{receiver.port}\n")
    os.replace(tmp, args.port_file)
    receiver.serve_forever(poll_s=0.2)
    return 0


def learning_session(learn: dict[str, Any] | None) -> LearningSession | None:
    """The ``learn`` entry's :class:`itp.learning.session.LearningSession` (None without one).

    Raises:
        KeyError: a required field is missing; ValueError/TypeError: a bad value (named by the session).
    """
    if learn is None:
        return None
    from itp.learning.session import LearningSession, learning_config

    return LearningSession(
        learn["folder"], epsilon=float(learn["epsilon"]), explore_top_k=int(learn["explore_top_k"]),
        guard_exploration=bool(learn.get("guard_exploration", False)),
        explore_max_bytes=learn.get("explore_max_bytes"),
        model_failures=bool(learn.get("model_failures", False)),
        config=learning_config(int(learn["retrain_every"]), seed=int(learn.get("seed", 0))),
    )


def _send(args: argparse.Namespace) -> int:
    from itp.transfer import Sender, load_secret

    cfg: dict[str, Any] = json.loads(Path(args.config).read_text())
    netns: list[str] = list(cfg["netns"])
    learn: dict[str, Any] | None = cfg.get("learn")
    session = learning_session(learn)
    wait_for_retrain_s = float(learn.get("wait_for_retrain_s", 0.0)) if learn is not None else 0.0
    sender = Sender(
        [cfg["to"]] * len(netns),
        streams=len(netns),
        policy=str(cfg["policy"]),
        secret=load_secret(cfg["secret_file"]),
        netns=netns,
        window=int(cfg["window"]),
        io_timeout_s=float(cfg.get("io_timeout_s", 60.0)),
        partitioner=session.partitioner if session is not None else None,
    )
    t0 = sender.session_start_s  # time.monotonic() at construction: the origin of the report's times
    sys.stdout.write(f"READY {t0!r}\n")
    sys.stdout.flush()
    deadline = t0 + float(cfg["timeout_s"])
    futures: list[Future[TaskReport]] = []
    try:
        for entry in sorted(cfg["schedule"], key=lambda e: float(e["start_s"])):
            delay = t0 + float(entry["start_s"]) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(sender.submit(entry["path"], entry["name"]))
        # Wait on the tasks' futures, not only Sender.wait(): that returns when the last task leaves the
        # active set, a moment before its report is published, and report() leaves unpublished tasks out.
        _, not_done = wait_futures(futures, timeout=max(0.0, deadline - time.monotonic()))
        if not_done:
            logger.warning("send: %d task(s) did not finish within %s s", len(not_done), cfg["timeout_s"])
        report = sender.report()
    finally:
        sender.close(timeout_s=5.0)
        summary = session.close(wait_for_retrain_s=wait_for_retrain_s) if session is not None else None
    report.write_json(cfg["report"], extra={"learning": summary} if summary is not None else None)
    return 0 if report.ok else 3


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m itp.testbed.engine {receive,send}`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m itp.testbed.engine", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("receive")
    r.add_argument("--listen", required=True)
    r.add_argument("--dir", required=True)
    r.add_argument("--secret-file", required=True)
    r.add_argument("--port-file", required=True)
    s = sub.add_parser("send")
    s.add_argument("config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return _receive(args) if args.command == "receive" else _send(args)


if __name__ == "__main__":
    sys.exit(main())
