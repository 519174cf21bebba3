"""The ``itp`` command line: one argparse subcommand per module of this package.

``SUBCOMMANDS`` names the modules; each has ``add_parser(sub)`` (registers its subparser and sets
``handler`` to its ``run``) and ``run(args) -> int`` (the exit status). Subcommand modules import
their heavy dependencies inside ``run``, so ``itp --help`` stays fast.

Errors a user can fix are reported as one line on stderr, with no traceback: a subcommand raises
``CLIError`` (exit status 1 by default, 2 for usage errors), argparse reports bad arguments with
status 2, and Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["SUBCOMMANDS", "CLIError", "build_parser", "main"]

SUBCOMMANDS: tuple[str, ...] = ("evaluate", "train")
"""Subcommand modules of ``itp.cli``, in the order ``itp --help`` lists them."""

PROG = "itp"


class CLIError(Exception):
    """A user error: ``main`` prints ``itp <command>: error: <message>`` and exits with ``status``.

    Args:
        message: one line saying what is wrong and, where possible, how to fix it.
        status: exit status, 1 (bad input, missing file) or 2 (usage).
    """

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per module in ``SUBCOMMANDS``."""
    from itp import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="itp: learned multi-stream transfer splitting (Intelligent Task Partitioning).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug) on stderr"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``itp`` command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write(f"{PROG}: error: a command is required ({', '.join(SUBCOMMANDS)})\n")
        return 2
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        status: int = args.handler(args)
    except CLIError as exc:
        sys.stderr.write(f"{PROG} {args.command}: error: {exc}\n")
        return exc.status
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG} {args.command}: interrupted\n")
        return 130
    return status
