"""Native state normalisation (itp.state) against the pure-Python reference (tests/reference.py)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from reference import (
    FEATURE_NAMES_REF,
    LOG_FEATURE_ATOL,
    NUM_FEATURES,
    normalize_state_ref,
    task_size_feature_ref,
)

import itp

TASK_SIZE_INDEX = 17
LINEAR = [i for i in range(NUM_FEATURES) if i != TASK_SIZE_INDEX]

# Per-feature scale at which the normalised value reaches 1; raw values are drawn around and far
# beyond it so that both the linear part and the clamp are exercised.
SCALES = [1e9] * 4 + [0.1] * 4 + [1.0] * 8 + [100.0, 2.0**40, 1.0, 24.0]


def raw_feature(scale: float) -> st.SearchStrategy[float]:
    return st.one_of(
        st.floats(min_value=0.0, max_value=scale * 1.5),
        st.floats(min_value=0.0, max_value=1e300),
        st.sampled_from([0.0, scale, scale * (1 + 2**-40), 5e-324]),
    )


raw_states = st.tuples(*(raw_feature(s) for s in SCALES)).map(list)

BAD_VALUES = [math.nan, math.inf, -math.inf, -1.0, -5e-324, -1e300]


def assert_matches_reference(got: np.ndarray, raw: list[float]) -> None:
    want = normalize_state_ref(raw)
    assert got.dtype == np.float32
    assert got.shape == (NUM_FEATURES,)
    # Linear features: one double division and one rounding to float32 in both, so bit-identical.
    np.testing.assert_array_equal(got[LINEAR], want[LINEAR])
    np.testing.assert_allclose(
        got[TASK_SIZE_INDEX], want[TASK_SIZE_INDEX], rtol=0, atol=LOG_FEATURE_ATOL
    )
    assert np.all((got >= 0.0) & (got <= 1.0))


def valid_state() -> list[float]:
    return [1e8, 5e8, 1e9, 2e9, 0.01, 0.05, 0.1, 0.2, 0.1, 0.2, 0.3, 0.4, 1.0, 0.9, 0.8, 0.5,
            7.0, 1048576.0, 0.5, 13.5]  # fmt: skip


# --- single state --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(raw=raw_states)
@example(raw=[0.0] * NUM_FEATURES)
@example(raw=[1e300] * NUM_FEATURES)
def test_normalize_state_matches_reference(raw: list[float]) -> None:
    assert_matches_reference(itp.normalize_state(raw), raw)


def test_feature_names_match_layout() -> None:
    assert itp.FEATURE_NAMES == FEATURE_NAMES_REF
    assert itp.NUM_FEATURES == NUM_FEATURES == len(itp.FEATURE_NAMES)


def test_known_values_and_clamping() -> None:
    got = itp.normalize_state(valid_state())
    want = [0.1, 0.5, 1.0, 1.0, 0.1, 0.5, 1.0, 1.0, 0.1, 0.2, 0.3, 0.4, 1.0, 0.9, 0.8, 0.5,
            0.07, 0.5, 0.5, 13.5 / 24]  # fmt: skip
    np.testing.assert_allclose(got, np.array(want, dtype=np.float32), rtol=1e-6, atol=0)
    over = itp.normalize_state([1e12] * 4 + [5.0] * 4 + [3.0] * 8 + [1e6, 2.0**60, 7.0, 30.0])
    np.testing.assert_array_equal(over, np.ones(NUM_FEATURES, dtype=np.float32))


def test_task_size_log_scale_keeps_sizes_apart() -> None:
    sizes = [64 * 2**10, 2**20, 100 * 2**20, 4 * 2**30]
    feats = [float(itp.task_size_feature(s)) for s in sizes]
    np.testing.assert_allclose(feats, [0.4, 0.5, math.log2(100 * 2**20) / 40, 0.8], rtol=1e-12)
    gaps = np.diff(feats)
    assert np.all(gaps > 0.09), feats  # clearly apart (>= 10 % of the range each), monotone
    for s, f in zip(sizes, feats, strict=True):
        state = valid_state()
        state[TASK_SIZE_INDEX] = float(s)
        assert itp.normalize_state(state)[TASK_SIZE_INDEX] == pytest.approx(f, abs=LOG_FEATURE_ATOL)


@settings(max_examples=200, deadline=None)
@given(a=st.floats(0.0, 2.0**45), b=st.floats(0.0, 2.0**45))
def test_task_size_feature_monotone_and_matches_reference(a: float, b: float) -> None:
    fa, fb = itp.task_size_feature(a), itp.task_size_feature(b)
    assert fa == pytest.approx(task_size_feature_ref(a), abs=1e-15)
    if a <= b:
        assert fa <= fb
    assert 0.0 <= fa <= 1.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_task_size_feature_rejects_bad_sizes(bad: float) -> None:
    with pytest.raises(ValueError, match="size_bytes"):
        itp.task_size_feature(bad)


@pytest.mark.parametrize("field", range(NUM_FEATURES))
@pytest.mark.parametrize("bad", BAD_VALUES)
def test_invalid_field_is_named(field: int, bad: float) -> None:
    raw = valid_state()
    raw[field] = bad
    name = re.escape(FEATURE_NAMES_REF[field])
    with pytest.raises(ValueError, match=rf"^state field {name} must be finite and >= 0"):
        itp.normalize_state(raw)


def test_first_invalid_field_is_reported() -> None:
    raw = valid_state()
    raw[3] = math.nan
    raw[17] = -1.0
    with pytest.raises(ValueError, match=re.escape("bandwidth_bps[3]")):
        itp.normalize_state(raw)


def test_negative_zero_is_valid_and_maps_to_zero() -> None:
    out = itp.normalize_state([-0.0] * NUM_FEATURES)
    assert np.all(out == 0.0)
    assert not np.any(np.signbit(out))


def test_raw_state_dataclass_round_trip() -> None:
    raw = valid_state()
    rs = itp.RawState(
        bandwidth_bps=(raw[0], raw[1], raw[2], raw[3]),
        latency_s=(raw[4], raw[5], raw[6], raw[7]),
        congestion=(raw[8], raw[9], raw[10], raw[11]),
        success_rate=(raw[12], raw[13], raw[14], raw[15]),
        queue_depth=raw[16],
        task_size_bytes=raw[17],
        priority=raw[18],
        time_of_day_h=raw[19],
    )
    np.testing.assert_array_equal(rs.to_array(), np.array(raw))
    np.testing.assert_array_equal(rs.normalized(), itp.normalize_state(raw))


@pytest.mark.parametrize(
    ("raw", "exc", "pattern"),
    [
        ([0.0] * 19, ValueError, r"raw_state must have shape \(20,\), got \(19,\)"),
        ([0.0] * 21, ValueError, r"raw_state must have shape \(20,\)"),
        (np.zeros((1, 20)), ValueError, r"raw_state must have shape \(20,\), got \(1, 20\)"),
        (np.float64(1.0), ValueError, r"raw_state must have shape"),
        (["a"] * 20, TypeError, r"raw_state must hold numbers"),
        (np.zeros(20, dtype=np.complex128), TypeError, r"raw_state must hold numbers"),
        (None, TypeError, r"raw_state"),
    ],
)
def test_normalize_state_rejects_bad_shapes_and_types(raw: object, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        itp.normalize_state(raw)  # type: ignore[arg-type]


def test_normalize_state_accepts_int_and_strided_input() -> None:
    raw = np.array(valid_state())
    strided = np.zeros((20, 3))
    strided[:, 1] = raw
    np.testing.assert_array_equal(itp.normalize_state(strided[:, 1]), itp.normalize_state(raw))
    ints = np.arange(20, dtype=np.int64)
    assert_matches_reference(itp.normalize_state(ints), [float(v) for v in ints])


# --- batches -------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(raw_states, min_size=0, max_size=12))
def test_normalize_states_equals_row_by_row(rows: list[list[float]]) -> None:
    raw = np.array(rows, dtype=np.float64).reshape(len(rows), NUM_FEATURES)
    got = itp.normalize_states(raw)
    assert got.shape == (len(rows), NUM_FEATURES) and got.dtype == np.float32
    assert got.flags.c_contiguous
    for r, row in enumerate(rows):
        np.testing.assert_array_equal(got[r], itp.normalize_state(row))
        assert_matches_reference(got[r], row)
    out = np.full((len(rows), NUM_FEATURES), -7.0, dtype=np.float32)
    returned = itp.normalize_states(raw, out)
    assert returned is out or np.shares_memory(returned, out)
    np.testing.assert_array_equal(out, got)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(raw_states, min_size=1, max_size=8),
    data=st.data(),
)
def test_bad_row_names_row_and_field_and_leaves_out_untouched(
    rows: list[list[float]], data: st.DataObject
) -> None:
    raw = np.array(rows, dtype=np.float64)
    row = data.draw(st.integers(0, len(rows) - 1), label="row")
    field = data.draw(st.integers(0, NUM_FEATURES - 1), label="field")
    raw[row, field] = data.draw(st.sampled_from(BAD_VALUES), label="bad")
    out = np.full(raw.shape, 0.25, dtype=np.float32)
    before = out.copy()
    name = re.escape(FEATURE_NAMES_REF[field])
    with pytest.raises(ValueError, match=rf"^state\[{row}\] field {name} must be finite and >= 0"):
        itp.normalize_states(raw, out)
    np.testing.assert_array_equal(out, before)


def test_bad_last_row_leaves_earlier_rows_unwritten() -> None:
    raw = np.tile(np.array(valid_state()), (50, 1))
    raw[49, 5] = math.nan
    out = np.zeros((50, NUM_FEATURES), dtype=np.float32)
    with pytest.raises(ValueError, match=re.escape("state[49] field latency_s[1]")):
        itp.normalize_states(raw, out)
    assert not out.any()


def test_normalize_states_empty_batch() -> None:
    got = itp.normalize_states(np.zeros((0, NUM_FEATURES)))
    assert got.shape == (0, NUM_FEATURES) and got.dtype == np.float32


def _raw_batch(n: int = 3) -> np.ndarray:
    return np.tile(np.array(valid_state()), (n, 1))


@pytest.mark.parametrize(
    ("raw", "exc", "pattern"),
    [
        (np.zeros(20), ValueError, r"raw_states must have shape \(N, 20\), got \(20,\)"),
        (np.zeros((3, 19)), ValueError, r"raw_states must have shape \(N, 20\), got \(3, 19\)"),
        (np.zeros((2, 3, 20)), ValueError, r"raw_states must have shape \(N, 20\)"),
        (np.array([["x"] * 20]), TypeError, r"raw_states must hold numbers"),
    ],
)
def test_normalize_states_rejects_bad_input(raw: np.ndarray, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        itp.normalize_states(raw)


@pytest.mark.parametrize(
    ("make_out", "exc", "pattern"),
    [
        (
            lambda: np.zeros((3, 20), dtype=np.float64),
            TypeError,
            r"out must have dtype float32, got float64",
        ),
        (lambda: np.zeros((3, 20), dtype=np.float16), TypeError, r"out must have dtype float32"),
        (lambda: [[0.0] * 20] * 3, TypeError, r"out must be a numpy array"),
        (
            lambda: np.zeros((4, 20), dtype=np.float32),
            ValueError,
            r"out must have shape \(3, 20\), got \(4, 20\)",
        ),
        (lambda: np.zeros((3, 21), dtype=np.float32), ValueError, r"out must have shape \(3, 20\)"),
        (
            lambda: np.zeros(60, dtype=np.float32),
            ValueError,
            r"out must have shape \(3, 20\), got \(60,\)",
        ),
        (
            lambda: np.zeros((3, 20), dtype=np.float32, order="F"),
            ValueError,
            r"out must be C-contiguous",
        ),
        (
            lambda: np.zeros((3, 40), dtype=np.float32)[:, ::2],
            ValueError,
            r"out must be C-contiguous",
        ),
        (
            lambda: _readonly(np.zeros((3, 20), dtype=np.float32)),
            ValueError,
            r"out must be writeable",
        ),
    ],
)
def test_normalize_states_rejects_bad_out(make_out: object, exc: type, pattern: str) -> None:
    out = make_out()  # type: ignore[operator]
    snapshot = np.array(out, copy=True)
    with pytest.raises(exc, match=pattern):
        itp.normalize_states(_raw_batch(), out)
    np.testing.assert_array_equal(np.asarray(out), snapshot)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a
