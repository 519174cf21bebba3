"""The ``itp`` command line: one argparse subcommand per module of this package.

``SUBCOMMANDS`` names the modules; each has ``add_parser(sub)`` (registers its subparser and sets
``handler`` to its ``run``) and ``run(args) -> int`` (the exit status). Subcommand modules import
their heavy dependencies inside ``run``, so ``itp --help`` stays fast.

Errors a user can fix are reported as one line on stderr, with no traceback: a subcommand raises
``CLIError`` (exit status 1 by default, 2 for usage errors), argparse reports bad arguments with
status 2, and Ctrl-C exits with 130.

Logging: the library logs through :mod:`logging` only. ``main`` sends records to stderr, warnings and
errors by default, ``-v`` adds info (model loads, promotions, registry changes), ``-vv`` debug (one
record per decision and per outcome); with ``-v`` and ``-vv`` the structured fields passed with
``extra=`` (``event``, ``task_id``, ``action``, ``model_version``, ...) are appended to each line as
``key=value``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "SUBCOMMANDS",
    "CLIError",
    "ExtraFormatter",
    "build_parser",
    "configure_logging",
    "int_at_least",
    "main",
    "progress",
]

SUBCOMMANDS: tuple[str, ...] = (
    "demo", "train", "evaluate", "export", "models", "metrics", "plot", "send", "receive", "testbed",
)
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


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class ExtraFormatter(logging.Formatter):
    """``LEVEL logger: message`` followed by the record's ``extra=`` fields as ``key=value`` pairs.

    Library records carry their structured fields (``extra={"task_id": ..., "action": ...}``) so that a
    JSON or key-value handler can index them; this formatter makes them visible on a terminal too.

    Args:
        show_extras: append the fields (False: the plain ``LEVEL logger: message`` line).
    """

    def __init__(self, show_extras: bool = True) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.show_extras = show_extras

    def format(self, record: logging.LogRecord) -> str:
        """The formatted line, extras appended in the order they were given."""
        text = super().format(record)
        if not self.show_extras:
            return text
        extras = [
            (k, v) for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")
        ]
        if not extras:
            return text
        return text + " " + " ".join(f"{k}={_short(v)}" for k, v in extras)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(_short(v) for v in value) + ")"
    text = str(value)
    return text if " " not in text else repr(text)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes to whatever ``sys.stderr`` is at emit time (test capture swaps it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        del value


def configure_logging(verbosity: int) -> Callable[[], None]:
    """Send ``itp`` log records to stderr: warnings at 0, info at 1, debug at 2 and above.

    The structured ``extra=`` fields are appended from verbosity 1 on (at 0 a warning is one plain line).
    Only the ``itp`` logger hierarchy is configured (third-party libraries keep their own levels).
    Returns a function that restores the previous configuration (``main`` calls it on the way out, so
    running ``main`` inside another program, or a test, leaves that program's logging as it was).
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logger = logging.getLogger("itp")
    saved = (logger.level, logger.propagate)
    handler = _StderrHandler()
    handler.setFormatter(ExtraFormatter(show_extras=verbosity >= 1))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]

    return restore


def guard_margin_arg(text: str) -> float | None:
    """An argparse ``type=`` for ``--guard-margin``: a finite number >= 0, or ``off`` (None)."""
    if text.strip().lower() == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'off', got {text!r}") from None
    if not (value >= 0.0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'off', got {text!r}")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type=`` that accepts integers >= ``minimum`` and names the bad value otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def progress(
    enabled: bool | None, total: int, *, desc: str, unit: str
) -> tuple[Callable[[int, str | None], None], Callable[[], None]]:
    """A progress reporter on stderr: ``(update(n, note), close())``.

    ``enabled=None`` means "when stderr is a terminal". A tqdm bar when tqdm is installed (an optional
    dependency); without it, a plain line at each quarter of ``total``, which is enough to show that a
    long run is alive. Disabled, both functions do nothing.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or total <= 0:
        return (lambda n, note: None), (lambda: None)
    try:
        from tqdm import tqdm
    except ImportError:
        done = [0, 0]  # items done, quarters reported

        def line(n: int, note: str | None) -> None:
            done[0] += n
            quarter = 4 * done[0] // total
            if quarter > done[1]:
                done[1] = quarter
                sys.stderr.write(f"{PROG} {desc}: {done[0]}/{total} {unit}s{f' ({note})' if note else ''}\n")

        return line, lambda: None

    bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=False)

    def update(n: int, note: str | None) -> None:
        if note is not None:
            bar.set_postfix_str(note, refresh=False)
        bar.update(n)

    return update, bar.close


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per module in ``SUBCOMMANDS``."""
    from itp import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "itp: learned multi-stream transfer splitting (Intelligent Task Partitioning). "
            "Start with `itp demo`; `itp COMMAND --help` explains each command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="log more on stderr (-v: model loads and updates, -vv: every decision)",
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
    restore_logging = configure_logging(args.verbose)
    try:
        status: int = args.handler(args)
    except CLIError as exc:
        sys.stderr.write(f"{PROG} {args.command}: error: {exc}\n")
        return exc.status
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG} {args.command}: interrupted\n")
        return 130
    except BrokenPipeError:
        # `itp ... | head`: the reader left, which is not an error. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again on the way out.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    finally:
        restore_logging()
    return status
