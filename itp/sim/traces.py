"""Real throughput traces: parsing, resampling to fixed bins, caching and the train/eval split by file.

Two formats are read (detected from the first non-blank line: one field -> Mahimahi, two -> Pensieve):

* **Mahimahi** packet-delivery traces: one integer per line, a time in milliseconds from the trace start;
  each line is one opportunity to deliver one 1500-byte packet (a repeated time = several packets). The
  period is the last time stamp (Mahimahi loops the trace). With bins of ``bin_s`` seconds::

      rate_bps[k] = (#lines with floor(t_ms / (1000 bin_s)) == k) * 1500 * 8 / bin_s,   k < ceil(P / bin)

  (a time stamp equal to the period falls in the last bin).
* **Pensieve** ``seconds Mbit/s`` pairs: two whitespace-separated numbers a line, times monotone; the
  value on line i is the rate over ``(t[i-1], t[i]]`` (the first line only fixes the time origin). The
  cumulative megabits ``M(t)`` are piecewise linear, so the time-weighted mean over each bin is exact::

      rate_bps[k] = 1e6 * (M((k+1) bin) - M(k bin)) / bin,     period = t[-1] - t[0]

  (a final partial bin is averaged over its covered part).

A bad file raises ``ValueError`` naming the file and the line. Parsed traces are cached per
``(path, size, mtime, bin_s)``; the arrays are read-only.

Train/eval split (``split_trace_files``): files are grouped (``mahimahi``: ``*.up``/``*.down`` or a
``mahimahi`` folder; ``fcc``: ``trace_<unit>_<url>``; ``norway``: ``*-report.*.log``; else ``other``).
Within a group the split unit is the recording (a Mahimahi ``X.up``/``X.down`` pair is one unit, so the
two directions of one drive never straddle the split); units are ordered by
``sha256(f"{seed}:{unit name}")`` and the first ``round(eval_fraction * n_units)`` (at least 1 and at
most n-1 when a group has 2 or more units) go to eval. Only base names enter the hash, so the split is
the same wherever the folder lives. With the default ``eval_fraction=0.3, seed=0`` the shared corpus
(10 Mahimahi, 59 FCC, 68 Norway files) splits into eval = 4 Mahimahi files (2 recordings), 18 FCC and
20 Norway files; ``docs/simulator.md`` lists them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_BIN_S",
    "DEFAULT_EVAL_FRACTION",
    "DEFAULT_SPLIT_SEED",
    "MAHIMAHI_PACKET_BYTES",
    "MAX_TRACE_PERIOD_S",
    "TRACE_SPLITS",
    "Trace",
    "TraceFormat",
    "TraceSelection",
    "TraceSplit",
    "default_traces_dir",
    "discover_trace_files",
    "load_trace",
    "parse_trace_text",
    "select_trace_files",
    "shipped_traces_dir",
    "split_trace_files",
    "trace_group",
]

logger = logging.getLogger(__name__)

DEFAULT_BIN_S: float = 0.1
MAHIMAHI_PACKET_BYTES: int = 1500
MAX_TRACE_PERIOD_S: int = 7 * 86400
"""Longest accepted trace period (one week): bounds the memory of the resampled array."""
DEFAULT_EVAL_FRACTION: float = 0.3
"""Fraction of each group's recordings held out for evaluation (the training default)."""
DEFAULT_SPLIT_SEED: int = 0
"""Seed of the train/eval split by file (the training default)."""

TraceFormat = Literal["mahimahi", "pensieve"]
TraceGroup = Literal["mahimahi", "fcc", "norway", "other"]


@dataclass(frozen=True, eq=False)
class Trace:
    """A throughput trace resampled to fixed bins (compared and hashed by identity).

    Attributes:
        name: the file's base name.
        format: ``"mahimahi"`` or ``"pensieve"``.
        bin_s: bin width in seconds.
        rate_bps: read-only float64 array, the mean rate of each bin in bits per second (>= 0, some > 0).
    """

    name: str
    format: TraceFormat
    bin_s: float
    rate_bps: npt.NDArray[np.float64] = field(repr=False)

    @property
    def period_s(self) -> float:
        """Length of one loop of the trace, seconds."""
        return float(self.rate_bps.size * self.bin_s)

    @property
    def mean_rate_bps(self) -> float:
        """Time-mean rate over one loop, bits per second."""
        return float(self.rate_bps.mean())


def _fail(source: str, line_no: int, message: str) -> ValueError:
    return ValueError(f"{source}:{line_no}: {message}")


def _nonblank_lines(text: str) -> list[tuple[int, str]]:
    return [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]


MAX_TRACE_BINS = 20_000_000


def _check_bins(source: str, line_no: int, n_bins: int, bin_s: float) -> None:
    if n_bins > MAX_TRACE_BINS:
        raise _fail(
            source, line_no, f"{n_bins} bins of {bin_s} s exceed {MAX_TRACE_BINS}; use a larger bin_s"
        )


_MAX_MAHIMAHI_MS = 2**53  # ~285,000 years: anything larger is not a time stamp


def _parse_mahimahi(
    source: str, text: str, lines: list[tuple[int, str]], bin_s: float
) -> npt.NDArray[np.float64]:
    tokens = text.split()
    times_ms: npt.NDArray[np.int64] | None = None
    if len(tokens) == len(lines):  # one token a line: convert in one go (Mahimahi files are long)
        try:
            times_ms = np.array(tokens, dtype=np.int64)
        except (ValueError, OverflowError):
            times_ms = None  # find and name the bad line below
    if times_ms is None:
        values: list[int] = []
        for line_no, raw in lines:
            tok = raw.split()
            if len(tok) != 1:
                raise _fail(source, line_no, f"expected one integer (Mahimahi ms time stamp), got {raw!r}")
            try:
                v = int(tok[0])
            except ValueError:
                raise _fail(source, line_no, f"not an integer millisecond time stamp: {tok[0]!r}") from None
            if abs(v) > _MAX_MAHIMAHI_MS:
                raise _fail(source, line_no, f"time stamp {v} ms is out of range")
            values.append(v)
        times_ms = np.asarray(values, dtype=np.int64)
    neg = np.flatnonzero(times_ms < 0)
    if neg.size:
        i = int(neg[0])
        raise _fail(source, lines[i][0], f"negative time stamp {int(times_ms[i])}")
    dec = np.flatnonzero(np.diff(times_ms) < 0)
    if dec.size:
        i = int(dec[0]) + 1
        raise _fail(
            source,
            lines[i][0],
            f"time stamp {int(times_ms[i])} ms is before the previous {int(times_ms[i - 1])}",
        )
    period_ms = int(times_ms[-1])
    if period_ms > MAX_TRACE_PERIOD_S * 1000:
        raise _fail(
            source, lines[-1][0], f"trace period {period_ms} ms exceeds {MAX_TRACE_PERIOD_S} s"
        )
    if period_ms <= 0:
        raise _fail(source, lines[-1][0], "trace period (last time stamp) must be > 0 ms")
    bin_ms = bin_s * 1000.0
    if abs(bin_ms - round(bin_ms)) <= 1e-9 * bin_ms:
        # A whole number of milliseconds (the usual case): exact integer binning, so that e.g.
        # bin_s = 0.3 (0.3 * 1000 = 300.00000000000006) still puts t = 300 ms in bin 1.
        bin_int = round(bin_ms)
        n_bins = max(1, -(-period_ms // bin_int))
        idx = np.minimum(times_ms // bin_int, n_bins - 1)
    else:
        n_bins = max(1, math.ceil(period_ms / bin_ms))
        idx = np.minimum((times_ms / bin_ms).astype(np.int64), n_bins - 1)
    _check_bins(source, lines[-1][0], n_bins, bin_s)
    counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
    # The last bin may cover only part of a bin width.
    widths_s = np.full(n_bins, bin_s)
    widths_s[-1] = period_ms / 1000.0 - (n_bins - 1) * bin_s
    rates: npt.NDArray[np.float64] = counts * (MAHIMAHI_PACKET_BYTES * 8) / widths_s
    return rates


def _parse_pensieve(source: str, lines: list[tuple[int, str]], bin_s: float) -> npt.NDArray[np.float64]:
    times: list[float] = []
    mbps: list[float] = []
    for line_no, raw in lines:
        tok = raw.split()
        if len(tok) != 2:
            raise _fail(source, line_no, f"expected two numbers 'seconds Mbit/s', got {raw!r}")
        try:
            t, v = float(tok[0]), float(tok[1])
        except ValueError:
            raise _fail(source, line_no, f"not a number in {raw!r}") from None
        if not (math.isfinite(t) and math.isfinite(v)):
            raise _fail(source, line_no, f"non-finite value in {raw!r}")
        if v < 0.0:
            raise _fail(source, line_no, f"negative throughput {v} Mbit/s")
        if times and t <= times[-1]:
            raise _fail(source, line_no, f"time {t} s is not after the previous {times[-1]} s")
        times.append(t)
        mbps.append(v)
    if len(times) < 2:
        raise _fail(source, lines[-1][0], "a Pensieve trace needs at least two lines (one interval)")
    t_arr = np.asarray(times) - times[0]
    v_arr = np.asarray(mbps)
    cum_mbit = np.concatenate(([0.0], np.cumsum(v_arr[1:] * np.diff(t_arr))))
    period_s = float(t_arr[-1])
    if period_s > MAX_TRACE_PERIOD_S:
        raise _fail(
            source, lines[-1][0], f"trace period {period_s} s exceeds {MAX_TRACE_PERIOD_S} s"
        )
    n_bins = max(1, math.ceil(period_s / bin_s - 1e-9))
    _check_bins(source, lines[-1][0], n_bins, bin_s)
    edges = np.minimum(np.arange(n_bins + 1) * bin_s, period_s)
    m_edges = np.interp(edges, t_arr, cum_mbit)
    widths = np.diff(edges)
    widths[widths <= 0.0] = bin_s
    rates: npt.NDArray[np.float64] = np.diff(m_edges) * 1e6 / widths
    return rates


def parse_trace_text(text: str, *, source: str = "<trace>", bin_s: float = DEFAULT_BIN_S) -> Trace:
    """Parse a trace in either format from its text and resample it to ``bin_s`` bins.

    Args:
        text: the file's content.
        source: name used in error messages (usually the path).
        bin_s: bin width in seconds, > 0.

    Returns:
        The ``Trace`` (read-only rates in bit/s).

    Raises:
        ValueError: ``"<source>:<line>: <what is wrong>"`` for empty files, wrong field counts,
            non-numbers, negative values, times going backwards, a zero period or no positive rate.
    """
    if not (math.isfinite(bin_s) and bin_s > 0.0):
        raise ValueError(f"bin_s must be finite and > 0, got {bin_s}")
    lines = _nonblank_lines(text)
    if not lines:
        raise _fail(source, 1, "empty trace file")
    n_fields = len(lines[0][1].split())
    fmt: TraceFormat
    if n_fields == 1:
        fmt = "mahimahi"
        rates = _parse_mahimahi(source, text, lines, bin_s)
    elif n_fields == 2:
        fmt = "pensieve"
        rates = _parse_pensieve(source, lines, bin_s)
    else:
        raise _fail(
            source,
            lines[0][0],
            f"unknown trace format: {n_fields} fields (Mahimahi has 1, Pensieve 'seconds Mbit/s' has 2)",
        )
    if not np.any(rates > 0.0):
        raise _fail(source, lines[-1][0], "trace has no positive rate (all zero)")
    rates.setflags(write=False)
    return Trace(name=Path(source).name, format=fmt, bin_s=float(bin_s), rate_bps=rates)


@lru_cache(maxsize=512)
def _load_cached(path: str, size: int, mtime_ns: int, bin_s: float) -> Trace:
    del size, mtime_ns  # part of the cache key only
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{path}:{line_no}: not a text trace file ({exc.reason})") from None
    return parse_trace_text(text, source=path, bin_s=bin_s)


def load_trace(path: str | os.PathLike[str], *, bin_s: float = DEFAULT_BIN_S) -> Trace:
    """Read and parse one trace file (cached by path, size and modification time).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file and line for malformed content (see ``parse_trace_text``).
    """
    p = Path(path)
    st = p.stat()
    return _load_cached(str(p), st.st_size, st.st_mtime_ns, float(bin_s))


def trace_group(path: str | os.PathLike[str]) -> TraceGroup:
    """The corpus group of a trace file, from its name (and parent folder)."""
    p = Path(path)
    name = p.name
    if p.suffix in (".up", ".down") or p.parent.name == "mahimahi":
        return "mahimahi"
    if name.startswith("trace_"):
        return "fcc"
    if "-report." in name and name.endswith(".log"):
        return "norway"
    return "other"


def _split_unit(path: Path) -> str:
    if trace_group(path) == "mahimahi" and path.suffix in (".up", ".down"):
        return path.stem
    return path.name


def _unit_key(seed: int, unit: str) -> str:
    return hashlib.sha256(f"{seed}:{unit}".encode()).hexdigest()


def split_trace_files(
    paths: Iterable[str | os.PathLike[str]],
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
) -> tuple[list[Path], list[Path]]:
    """Split trace files into (train, eval) by file, deterministically and stratified by group.

    See the module docstring for the rule. Training code must only ever see the first list.

    Args:
        paths: trace files (any order; duplicates are removed).
        eval_fraction: fraction of each group's recordings held out, in [0, 1].
        seed: changes the (hash-based) assignment.

    Returns:
        ``(train, eval)``, each sorted by path; disjoint, and together all the files.

    Raises:
        ValueError: if ``eval_fraction`` is outside [0, 1].
    """
    if not (0.0 <= eval_fraction <= 1.0):
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    files = sorted({Path(p) for p in paths})
    groups: dict[str, dict[str, list[Path]]] = {}
    for f in files:
        groups.setdefault(trace_group(f), {}).setdefault(_split_unit(f), []).append(f)
    train: list[Path] = []
    evals: list[Path] = []
    for units in groups.values():
        ordered = sorted(units, key=lambda u: _unit_key(seed, u))
        n = len(ordered)
        n_eval = round(eval_fraction * n)
        if n >= 2 and 0.0 < eval_fraction < 1.0:
            n_eval = min(max(n_eval, 1), n - 1)
        for i, unit in enumerate(ordered):
            (evals if i < n_eval else train).extend(units[unit])
    return sorted(train), sorted(evals)


def discover_trace_files(directory: str | os.PathLike[str]) -> list[Path]:
    """All regular trace files below ``directory``, sorted.

    Skipped: hidden files and anything inside a hidden folder or ``__pycache__``, README/LICENSE files
    and ``.md``/``.txt``/``.py``/``.pyc`` files (documentation and code living beside the data).

    Raises:
        FileNotFoundError: if ``directory`` is not a directory.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"trace directory not found: {d}")
    out: list[Path] = []
    for p in sorted(d.rglob("*")):
        if not p.is_file():
            continue
        parts = p.relative_to(d).parts
        if any(part.startswith(".") or part == "__pycache__" for part in parts):
            continue
        if p.suffix.lower() in _NOT_TRACE_SUFFIXES or p.name.upper().startswith(("README", "LICENSE")):
            continue
        out.append(p)
    return out


_NOT_TRACE_SUFFIXES = (".md", ".txt", ".py", ".pyc")


def shipped_traces_dir() -> Path:
    """The small trace set shipped inside the package (``itp/sim/data``, FCC broadband, public domain).

    Six held-out FCC "Measuring Broadband America" traces in Pensieve format (see the README in that
    folder for their source and licence), so that trace mode works after ``pip install`` without the
    shared corpus.
    """
    return Path(__file__).resolve().parent / "data"


def default_traces_dir() -> Path | None:
    """The shared trace corpus: ``$ITP_TRACES_DIR`` if set, else ``<repo>/../shared/traces`` if present.

    ``<repo>`` is the folder holding the ``itp`` package (the repository root for an editable
    install). Returns None when neither exists (callers then fall back to ``shipped_traces_dir()``).
    """
    env = os.environ.get("ITP_TRACES_DIR")
    if env:
        p = Path(env)
        return p if p.is_dir() else None
    repo = Path(__file__).resolve().parents[2]
    candidate = repo.parent / "shared" / "traces"
    return candidate if candidate.is_dir() else None


TraceSplit = Literal["auto", "all", "train", "eval"]
TRACE_SPLITS: tuple[str, ...] = ("auto", "all", "train", "eval")


@dataclass(frozen=True)
class TraceSelection:
    """Trace files chosen for a run, and where they came from.

    Attributes:
        files: the trace files, sorted.
        directory: the folder they were discovered in.
        split: the part of that folder used (``"all"``, ``"train"`` or ``"eval"``).
        description: one human-readable line, e.g. for a table caption or a log.
    """

    files: tuple[Path, ...]
    directory: Path
    split: str
    description: str


def select_trace_files(
    directory: str | os.PathLike[str] | None = None,
    *,
    split: TraceSplit = "auto",
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    split_seed: int = DEFAULT_SPLIT_SEED,
) -> TraceSelection:
    """The trace files an evaluation (or any other run) should use.

    With ``directory=None``: the shared corpus (``default_traces_dir()``) if it exists, and with
    ``split="auto"`` only its held-out evaluation files (the ``eval`` part of ``split_trace_files`` with
    the training defaults, so a model is never scored on files it was trained on); otherwise the traces
    shipped in the package (``shipped_traces_dir()``), all of them. With an explicit ``directory``,
    ``split="auto"`` means every file in it.

    Args:
        directory: a folder of trace files, or None for the default described above.
        split: ``"auto"``, ``"all"``, ``"train"`` or ``"eval"``.
        eval_fraction, split_seed: the split's parameters (defaults: those of training).

    Raises:
        FileNotFoundError: ``directory`` is not a folder.
        ValueError: bad ``split``, or no trace file is selected.
    """
    if split not in TRACE_SPLITS:
        raise ValueError(f"split must be one of {', '.join(TRACE_SPLITS)}, got {split!r}")
    if directory is None:
        shared = default_traces_dir()
        folder = shared if shared is not None else shipped_traces_dir()
        if split == "auto":
            split = "eval" if shared is not None else "all"
    else:
        folder = Path(directory)
        if split == "auto":
            split = "all"
    files = discover_trace_files(folder)
    if not files:
        raise ValueError(f"trace directory {folder} holds no trace files")
    if split != "all":
        train, evals = split_trace_files(files, eval_fraction=eval_fraction, seed=split_seed)
        files = evals if split == "eval" else train
        if not files:
            raise ValueError(f"the {split} split of trace directory {folder} is empty")
    desc = f"{len(files)} trace files ({split} split) from {folder}" if split != "all" else (
        f"{len(files)} trace files from {folder}"
    )
    return TraceSelection(files=tuple(files), directory=folder, split=split, description=desc)
