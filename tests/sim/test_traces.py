"""Trace parsing (both formats), resampling exactness, bad files, caching, discovery and the split.

Files of the shared corpus (``../shared/traces``) are parsed when it is present (skipped on a clean
clone); the shipped traces always are. Bad files are small temporary files: each must raise a
``ValueError`` whose message starts with ``<path>:<line>:``.
"""

from __future__ import annotations

import math
import os
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itp.sim.traces import (
    MAHIMAHI_PACKET_BYTES,
    Trace,
    default_traces_dir,
    discover_trace_files,
    load_trace,
    parse_trace_text,
    select_trace_files,
    shipped_traces_dir,
    split_trace_files,
    trace_group,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "traces"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared trace corpus not present")


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return p


def check_trace(t: Trace) -> None:
    assert t.rate_bps.ndim == 1 and t.rate_bps.size >= 1
    assert t.rate_bps.dtype == np.float64 and not t.rate_bps.flags.writeable
    assert np.all(np.isfinite(t.rate_bps)) and np.all(t.rate_bps >= 0.0) and np.any(t.rate_bps > 0.0)
    assert t.period_s > 0.0 and t.mean_rate_bps > 0.0


# ---------------------------------------------------------------------------------------------
# Every real file parses


@needs_shared
def test_every_file_of_the_shared_corpus_parses() -> None:
    files = discover_trace_files(SHARED)
    assert len(files) == 137  # 10 Mahimahi + 59 FCC + 68 Norway (README.md is skipped)
    groups = {"mahimahi": 0, "fcc": 0, "norway": 0, "other": 0}
    for f in files:
        t = load_trace(f)
        check_trace(t)
        groups[trace_group(f)] += 1
        assert t.format == ("mahimahi" if trace_group(f) == "mahimahi" else "pensieve")
    assert groups == {"mahimahi": 10, "fcc": 59, "norway": 68, "other": 0}


@needs_shared
def test_mahimahi_file_rate_matches_its_packet_count() -> None:
    f = SHARED / "mahimahi" / "Verizon-LTE-short.up"
    lines = [ln for ln in f.read_text().splitlines() if ln.strip()]
    t = load_trace(f)
    total_bits = float(np.sum(t.rate_bps[:-1]) * t.bin_s)
    last_width = int(lines[-1]) / 1000.0 - (t.rate_bps.size - 1) * t.bin_s
    total_bits += float(t.rate_bps[-1]) * last_width
    assert total_bits == pytest.approx(len(lines) * MAHIMAHI_PACKET_BYTES * 8, rel=1e-12)


def test_every_shipped_trace_parses_and_is_public_domain_fcc() -> None:
    d = shipped_traces_dir()
    files = discover_trace_files(d)
    assert len(files) >= 3
    for f in files:
        check_trace(load_trace(f))
        # Licence guard: only FCC (US public domain) traces may ship; never Mahimahi (GPL) or
        # Norway (research data with a citation request).
        assert trace_group(f) == "fcc", f
    note = (d / "README.md").read_text()
    assert "public domain" in note and "FCC" in note
    for f in files:
        assert f.name in note


# ---------------------------------------------------------------------------------------------
# Exact resampling


def test_mahimahi_bins_count_packets() -> None:
    # 1 packet in [0, 100) ms, 3 in [100, 200) (one repeated time), period 250 ms -> 3 bins.
    t = parse_trace_text("0\n100\n100\n150\n250\n", source="m")
    assert t.format == "mahimahi" and t.name == "m"
    bits = MAHIMAHI_PACKET_BYTES * 8
    # The last bin [200, 250] is 50 ms wide and holds the packet at 250 (= the period).
    np.testing.assert_allclose(t.rate_bps, [bits / 0.1, 3 * bits / 0.1, bits / 0.05])


def test_mahimahi_binning_is_exact_for_bins_not_representable_in_binary() -> None:
    # 0.3 * 1000 = 300.00000000000006: t = 300 ms must still fall in bin 1.
    t = parse_trace_text("0\n300\n300\n600\n", bin_s=0.3)
    bits = MAHIMAHI_PACKET_BYTES * 8
    np.testing.assert_allclose(t.rate_bps, [bits / 0.3, 3 * bits / 0.3])


def test_pensieve_bins_are_time_weighted_means() -> None:
    # Rate over (0, 0.15] is 2 Mbit/s, over (0.15, 0.3] 4 Mbit/s; the first line's value is unused.
    t = parse_trace_text("10.0 99\n10.15 2\n10.3 4\n", source="p")
    assert t.format == "pensieve"
    np.testing.assert_allclose(t.rate_bps, [2e6, (0.05 * 2 + 0.05 * 4) / 0.1 * 1e6, 4e6])
    assert t.period_s == pytest.approx(0.3)


def test_whitespace_and_blank_lines_are_tolerated() -> None:
    t = parse_trace_text("\n  0\t1.5 \n\n5   2.5\n\n", source="p")
    assert t.rate_bps.size == 50 and np.allclose(t.rate_bps, 2.5e6)


def ref_pensieve_bits(times: list[Fraction], mbps: list[Fraction], t0: Fraction, t1: Fraction) -> Fraction:
    """Exact megabits... in bits, carried over [t0, t1] by the piecewise-constant Pensieve rate."""
    total = Fraction(0)
    for i in range(1, len(times)):
        a, b = max(times[i - 1], t0), min(times[i], t1)
        if b > a:
            total += mbps[i] * (b - a) * 1_000_000
    return total


@settings(max_examples=80, deadline=None)
@given(
    gaps=st.lists(st.integers(1, 80), min_size=1, max_size=25),
    values=st.lists(st.integers(0, 5000), min_size=26, max_size=26),
    bin_ms=st.sampled_from([50, 100, 250, 1000]),
)
def test_pensieve_resampling_conserves_bits_in_every_bin(
    gaps: list[int], values: list[int], bin_ms: int
) -> None:
    times = [Fraction(0)]
    for g in gaps:
        times.append(times[-1] + Fraction(g, 10))
    mbps = [Fraction(v, 100) for v in values[: len(times)]]
    if not any(mbps[1:]):
        mbps[-1] = Fraction(1)
    text = "".join(f"{float(t)} {float(v)}\n" for t, v in zip(times, mbps, strict=True))
    bin_s = bin_ms / 1000
    trace = parse_trace_text(text, bin_s=bin_s)
    period = times[-1]
    n = math.ceil(period / Fraction(bin_ms, 1000))
    assert trace.rate_bps.size == n
    b = Fraction(bin_ms, 1000)
    for k in range(n):
        lo, hi = k * b, min((k + 1) * b, period)
        want = ref_pensieve_bits(times, mbps, lo, hi) / (hi - lo)
        assert trace.rate_bps[k] == pytest.approx(float(want), rel=1e-9, abs=1e-3)


@settings(max_examples=80, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 40), min_size=1, max_size=200),
    bin_ms=st.sampled_from([10, 100, 300]),
)
def test_mahimahi_resampling_conserves_packets(gaps: list[int], bin_ms: int) -> None:
    times = np.cumsum(gaps)
    if times[-1] == 0:
        times[-1] = 1
    text = "".join(f"{int(t)}\n" for t in times)
    trace = parse_trace_text(text, bin_s=bin_ms / 1000)
    period_s = int(times[-1]) / 1000
    widths = np.full(trace.rate_bps.size, bin_ms / 1000)
    widths[-1] = period_s - (trace.rate_bps.size - 1) * bin_ms / 1000
    assert float(np.sum(trace.rate_bps * widths)) == pytest.approx(
        times.size * MAHIMAHI_PACKET_BYTES * 8, rel=1e-9
    )
    # Each packet lands in the bin of its millisecond (the period's own time stamp in the last bin).
    counts = np.bincount(np.minimum(times // bin_ms, trace.rate_bps.size - 1), minlength=trace.rate_bps.size)
    np.testing.assert_allclose(trace.rate_bps * widths, counts * MAHIMAHI_PACKET_BYTES * 8, rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# Bad files: ValueError naming file and line


@pytest.mark.parametrize(
    ("content", "line", "what"),
    [
        ("", 1, "empty trace file"),
        ("\n\n  \n", 1, "empty trace file"),
        ("0 1 2\n", 1, "unknown trace format"),
        ("0\n10\nabc\n", 3, "not an integer"),
        ("0\n10\n12.5\n", 3, "not an integer"),
        ("0\n10\n5\n", 3, "before the previous"),
        ("-5\n10\n", 1, "negative time stamp"),
        ("0\n0\n", 2, "period"),
        ("0\n10\n20 3\n", 3, "expected one integer"),
        ("0 1\n1 2\n1 3\n", 3, "not after the previous"),
        ("0 1\n1 -2\n", 2, "negative throughput"),
        ("0 1\n1 nan\n", 2, "non-finite"),
        ("0 1\n1 inf\n", 2, "non-finite"),
        ("0 1\n1 x\n", 2, "not a number"),
        ("0 1\n\n\n1\n", 4, "expected two numbers"),
        ("0 1\n", 1, "at least two lines"),
        ("0 0\n1 0\n2 0\n", 3, "no positive rate"),
        ("0\n99999999999999999999999\n", 2, "out of range"),
        ("0\n700000000\n", 2, "exceeds 604800 s"),
        ("0 1\n1e9 1\n", 2, "exceeds 604800 s"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path: Path, content: str, line: int, what: str) -> None:
    p = write(tmp_path, "bad.trace", content)
    with pytest.raises(ValueError, match=re.escape(f"{p}:{line}: ") + ".*" + re.escape(what)):
        load_trace(p)


def test_binary_file_names_the_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, "bin.trace", b"0\n10\n\xff\xfe\x00\n")
    with pytest.raises(ValueError, match=re.escape(f"{p}:3: not a text trace file")):
        load_trace(p)


def test_truncated_real_file_still_parses_or_fails_clearly(tmp_path: Path) -> None:
    """A file cut mid-line (a real fault of copies) parses up to the cut or names the bad line."""
    src = shipped_traces_dir() / "trace_10322_http---edition.cnn.com"
    data = src.read_bytes()
    tab = data.index(b"\t", len(data) // 2)
    cut = write(tmp_path, "cut", data[: tab + 2])  # the last value lost its tail: still a pair
    check_trace(load_trace(cut))
    cut_mid = write(tmp_path, "cut_mid", data[: tab + 1])  # the last value is gone
    n_lines = cut_mid.read_text().count("\n") + 1
    with pytest.raises(ValueError, match=re.escape(f"{cut_mid}:{n_lines}: expected two numbers")):
        load_trace(cut_mid)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_trace(tmp_path / "nope")


def test_bad_bin_width_is_rejected() -> None:
    with pytest.raises(ValueError, match="bin_s"):
        parse_trace_text("0 1\n1 1\n", bin_s=0.0)
    with pytest.raises(ValueError, match=r"f:2: .* bins .* use a larger bin_s"):
        parse_trace_text("0\n100000\n", source="f", bin_s=1e-6)


# ---------------------------------------------------------------------------------------------
# Cache, discovery, selection, split


def test_cache_sees_a_rewritten_file(tmp_path: Path) -> None:
    p = write(tmp_path, "t", "0 1\n1 1\n")
    a = load_trace(p)
    assert load_trace(p) is a  # cached
    p.write_text("0 1\n1 3\n2 3\n")
    st_ = p.stat()
    os.utime(p, ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    b = load_trace(p)
    assert b is not a and b.mean_rate_bps == pytest.approx(3e6)


def test_discovery_skips_docs_code_and_hidden_files(tmp_path: Path) -> None:
    for name in ("a.up", "b", "README.md", "LICENSE", "notes.txt", "x.py", ".hidden"):
        write(tmp_path, name, "0\n1\n")
    (tmp_path / ".git").mkdir()
    write(tmp_path / ".git", "objects", "0\n1\n")
    (tmp_path / "__pycache__").mkdir()
    write(tmp_path / "__pycache__", "x.cpython-311.pyc", "0\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "c.down", "0\n1\n")
    assert [p.relative_to(tmp_path).as_posix() for p in discover_trace_files(tmp_path)] == [
        "a.up", "b", "sub/c.down",
    ]
    with pytest.raises(FileNotFoundError, match="trace directory not found"):
        discover_trace_files(tmp_path / "missing")


def test_trace_groups() -> None:
    assert trace_group("x/ATT-LTE-driving-2016.down") == "mahimahi"
    assert trace_group("mahimahi/anything") == "mahimahi"
    assert trace_group("trace_123_http---a.com") == "fcc"
    assert trace_group("bus.a-b-report.2010-09-30_1114CEST.log") == "norway"
    assert trace_group("mine.csv") == "other"


def corpus_names() -> list[str]:
    names = [f"rec{i}.{d}" for i in range(5) for d in ("up", "down")]
    names += [f"trace_{i}_http---x.com" for i in range(20)]
    names += [f"bus.r{i}-report.2010.log" for i in range(11)]
    return names


def test_split_is_deterministic_disjoint_stratified_and_keeps_recordings_together(tmp_path: Path) -> None:
    paths = [tmp_path / n for n in corpus_names()]
    train, evals = split_trace_files(paths)
    assert set(train).isdisjoint(evals) and set(train) | set(evals) == set(paths)
    assert split_trace_files(list(reversed(paths)) + paths[:3]) == (train, evals)
    by_group = {g: sum(trace_group(p) == g for p in evals) for g in ("mahimahi", "fcc", "norway")}
    assert by_group == {"mahimahi": 4, "fcc": 6, "norway": 3}  # round(0.3 n) recordings per group
    for p in evals:
        if p.suffix in (".up", ".down"):
            assert p.with_suffix(".up" if p.suffix == ".down" else ".down") in evals
    # Only base names matter: the same files elsewhere split the same way.
    other = [Path("/elsewhere") / n for n in corpus_names()]
    assert [p.name for p in split_trace_files(other)[1]] == [p.name for p in evals]
    assert split_trace_files(paths, seed=1) != (train, evals)


def test_split_edge_cases(tmp_path: Path) -> None:
    paths = [tmp_path / f"trace_{i}_x" for i in range(2)]
    assert len(split_trace_files(paths, eval_fraction=0.01)[1]) == 1  # at least one held out
    assert len(split_trace_files(paths, eval_fraction=0.99)[0]) == 1  # at least one to train on
    assert split_trace_files(paths, eval_fraction=0.0)[1] == []
    assert split_trace_files(paths, eval_fraction=1.0)[0] == []
    with pytest.raises(ValueError, match="eval_fraction"):
        split_trace_files(paths, eval_fraction=1.5)


@needs_shared
def test_shared_corpus_split_matches_the_documented_counts() -> None:
    _, evals = split_trace_files(discover_trace_files(SHARED))
    counts = {g: sum(trace_group(p) == g for p in evals) for g in ("mahimahi", "fcc", "norway")}
    assert counts == {"mahimahi": 4, "fcc": 18, "norway": 20}
    shipped = {p.name for p in discover_trace_files(shipped_traces_dir())}
    assert shipped <= {p.name for p in evals}  # shipped traces are held-out files


def test_select_trace_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in corpus_names():
        write(tmp_path, n, "0\n1\n")
    monkeypatch.setenv("ITP_TRACES_DIR", str(tmp_path))
    assert default_traces_dir() == tmp_path
    sel = select_trace_files()  # the shared corpus: its held-out files
    assert sel.split == "eval" and sel.directory == tmp_path
    assert list(sel.files) == split_trace_files(discover_trace_files(tmp_path))[1]
    assert "eval split" in sel.description
    explicit = select_trace_files(tmp_path)  # an explicit folder: everything in it
    assert explicit.split == "all" and len(explicit.files) == len(corpus_names())
    train = select_trace_files(tmp_path, split="train")
    assert set(train.files) | set(sel.files) == set(explicit.files)
    monkeypatch.setenv("ITP_TRACES_DIR", str(tmp_path / "missing"))
    assert default_traces_dir() is None
    fallback = select_trace_files()
    assert fallback.directory == shipped_traces_dir() and fallback.split == "all"
    with pytest.raises(ValueError, match="split must be one of"):
        select_trace_files(tmp_path, split="test")  # type: ignore[arg-type]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no trace files"):
        select_trace_files(empty)
    with pytest.raises(FileNotFoundError):
        select_trace_files(tmp_path / "missing")
