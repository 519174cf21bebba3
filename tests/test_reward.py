"""The one reward: each term against a restated reference, scale freedom, signs, bounds, validation,
and that the simulator and production compute it with the same function."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from reference_transport import chunk_time

import itp.partitioner
import itp.sim.env
from itp.actions import split_task
from itp.reward import (
    DEFAULT_REWARD_WEIGHTS,
    REWARD_SPEC_VERSION,
    Outcome,
    RewardWeights,
    compute_reward,
    reward_terms,
    trusted_reward,
)
from itp.transport import production_split

W = DEFAULT_REWARD_WEIGHTS


def raw_state(bw: list[float], lat: list[float], succ: list[float], size: float = 1e6) -> np.ndarray:
    raw = np.zeros(20)
    raw[0:4], raw[4:8], raw[12:16] = bw, lat, succ
    raw[8:12] = 0.1
    raw[16], raw[17], raw[18], raw[19] = 3.0, size, 0.5, 13.0
    return raw


def reward_ref(raw: Any, chunks: list[int], expected: float, o: Outcome,
               w: RewardWeights = W) -> tuple[float, float, float, float, float, float]:
    """The spec of docs/reward.md, written out term by term (Python floats: IEEE overflow to inf)."""
    raw = raw.tolist()
    eff = [raw[i] * min(raw[12 + i], 1.0) for i in range(4)]
    lat = [raw[4 + i] for i in range(4)]
    s_bits = 8.0 * sum(chunks)
    refs = [lat[i] + s_bits / eff[i] for i in range(4) if eff[i] > 0]
    if not refs or min(refs) == math.inf:  # no usable estimate (checked before "nothing delivered")
        thr = 0.0
    elif o.throughput_bps == 0:
        thr = -3.0
    else:
        # log2(throughput / g_ref) = log2(throughput * T_ref / bits), exactly in rationals.
        x = Fraction(o.throughput_bps) * Fraction(min(refs)) / Fraction(s_bits)
        thr = float(np.clip(math.log2(x.numerator) - math.log2(x.denominator), -3, 3))
    if expected == math.inf:
        late = 0.0
    elif expected == 0:
        late = 2.0
    else:
        late = float(np.clip((o.latency_s - expected) / expected, 0, 2))
    used = [i for i in range(4) if chunks[i] > 0]
    if len(used) == 1:
        imb = 0.0
    else:
        f = [chunk_time(8.0 * chunks[i], eff[i], lat[i]) for i in used]  # the transport model
        imb = 1.0 if max(f) == math.inf else (max(f) - min(f)) / max(f)  # inf: a chunk never finishes
    done = 1.0 if o.success else 0.0
    retr = min(o.retransmissions / len(used), 1.0)
    total = (w.throughput * thr - w.latency * late - w.imbalance * imb + w.completion * done
             - w.retransmission * retr)
    return thr, late, imb, done, retr, total


# Strategies: states, decisions and outcomes in caller units.
rates = st.one_of(st.just(0.0), st.floats(1e5, 2e9))
lats = st.floats(0.0, 0.5)
succs = st.floats(0.0, 1.0)


@st.composite
def cases(draw: st.DrawFn, realistic: bool = False) -> tuple[np.ndarray, list[int], float, Outcome]:
    """Valid inputs; ``realistic`` keeps success rates out of the subnormal range, where rescaling
    overflows a finite T_ref to +inf (the exact spec is still checked there by the other tests)."""
    ss = st.one_of(st.just(0.0), st.floats(1e-6, 1.0)) if realistic else succs
    raw = raw_state([draw(rates) for _ in range(4)], [draw(lats) for _ in range(4)],
                    [draw(ss) for _ in range(4)])
    chunks = [draw(st.integers(0, 2**34)) for _ in range(4)]
    assume(sum(chunks) >= 1)
    raw[17] = sum(chunks)
    expected = draw(st.one_of(st.just(0.0), st.just(math.inf), st.floats(1e-4, 1e4)))
    latency = draw(st.floats(1e-4, 1e4))
    success = draw(st.booleans())
    thr = 8.0 * sum(chunks) / latency if success else draw(st.one_of(st.just(0.0), st.floats(0, 1e9)))
    return raw, chunks, expected, Outcome(thr, latency, success, draw(st.integers(0, 20)))


@settings(max_examples=200, deadline=None)
@given(case=cases())
def test_terms_match_the_restated_spec(case: tuple[np.ndarray, list[int], float, Outcome]) -> None:
    raw, chunks, expected, o = case
    t = reward_terms(raw, chunks, expected, o)
    want = reward_ref(raw, chunks, expected, o)
    got = (t.throughput_improvement, t.latency_penalty, t.stream_imbalance, t.completion_bonus,
           t.retransmission_penalty, t.total)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert compute_reward(raw, chunks, expected, o) == t.total
    # The unvalidated fast path (simulator, production hot path) is the same formula.
    assert reward_terms(raw, chunks, expected, o, validate=False) == t
    lo = -(3 * W.throughput + 2 * W.latency + W.imbalance + W.retransmission)
    assert lo <= t.total <= 3 * W.throughput + W.completion


def terms_of(t: Any) -> np.ndarray:
    return np.array([t.throughput_improvement, t.latency_penalty, t.stream_imbalance, t.completion_bonus,
                     t.retransmission_penalty, t.total])


@settings(max_examples=200, deadline=None)
@given(case=cases(realistic=True), k_time=st.floats(1e-3, 1e3))
def test_every_term_is_independent_of_the_time_unit(
    case: tuple[np.ndarray, list[int], float, Outcome], k_time: float
) -> None:
    """Times x k and rates / k (seconds -> any unit) change nothing: every term is a ratio of times."""
    raw, chunks, expected, o = case
    r3 = raw.copy()
    r3[0:4] /= k_time
    r3[4:8] *= k_time
    scaled = reward_terms(
        r3, chunks, expected * k_time,
        Outcome(o.throughput_bps / k_time, o.latency_s * k_time, o.success, o.retransmissions),
    )
    np.testing.assert_allclose(terms_of(scaled), terms_of(reward_terms(raw, chunks, expected, o)),
                               rtol=1e-7, atol=1e-7)


@settings(max_examples=200, deadline=None)
@given(case=cases(realistic=True), k_data=st.sampled_from([2, 8, 1024]))
def test_goodput_terms_do_not_depend_on_the_link_speed_or_task_size(
    case: tuple[np.ndarray, list[int], float, Outcome], k_data: int
) -> None:
    """Bytes, rates and throughput x k (a k times larger task on k times faster links, same times):
    the throughput, lateness, completion and resend terms are unchanged, so one point means one
    doubling of goodput on any link. (The imbalance term measures chunk times with the transport
    model, whose slow start starts from a fixed window in bytes, so it is exactly invariant only for
    chunks well past slow start; checked below.)"""
    raw, chunks, expected, o = case
    r2 = raw.copy()
    r2[0:4] *= k_data
    r2[17] *= k_data
    scaled = terms_of(reward_terms(
        r2, [c * k_data for c in chunks], expected,
        Outcome(o.throughput_bps * k_data, o.latency_s, o.success, o.retransmissions),
    ))
    base = terms_of(reward_terms(raw, chunks, expected, o))
    keep = [0, 1, 3, 4]
    np.testing.assert_allclose(scaled[keep], base[keep], rtol=1e-9, atol=1e-9)


def test_imbalance_is_scale_free_past_slow_start() -> None:
    bw, lat = [1e8, 4e8, 2e8, 8e8], [0.01, 0.05, 0.02, 0.1]
    chunks = [10**9, 2 * 10**9, 10**9, 3 * 10**9]
    o = Outcome(1e9, 50.0, True)
    base = reward_terms(raw_state(bw, lat, [1.0] * 4, 7e9), chunks, 50.0, o).stream_imbalance
    for k in (2, 10):
        scaled = reward_terms(raw_state([b * k for b in bw], lat, [1.0] * 4, 7e9 * k),
                              [c * k for c in chunks], 50.0, Outcome(1e9 * k, 50.0, True))
        assert scaled.stream_imbalance == pytest.approx(base, rel=1e-2)  # slow start: ~0.1 s of ~10 s


def test_sign_of_the_throughput_term() -> None:
    """Positive when the task beat the best single stream's predicted time, negative when slower."""
    raw = raw_state([4e8, 1e8, 1e8, 1e8], [0.02] * 4, [1.0] * 4, size=1e8)
    t_ref = 0.02 + 8e8 / 4e8  # best single stream: 2.02 s
    for latency, sign in ((1.0, 1), (t_ref, 0), (4.0, -1)):
        t = reward_terms(raw, [10**8, 0, 0, 0], 2.0, Outcome(8e8 / latency, latency, True))
        assert np.sign(round(t.throughput_improvement, 12)) == sign
    # One point per doubling of goodput.
    a = reward_terms(raw, [10**8, 0, 0, 0], 2.0, Outcome(8e8 / 1.0, 1.0, True)).throughput_improvement
    b = reward_terms(raw, [10**8, 0, 0, 0], 2.0, Outcome(8e8 / 0.5, 0.5, True)).throughput_improvement
    assert b - a == pytest.approx(1.0)


@settings(max_examples=150, deadline=None)
@given(case=cases(), factor=st.floats(1.01, 10.0))
def test_slower_completion_never_earns_more(case: tuple[np.ndarray, list[int], float, Outcome],
                                            factor: float) -> None:
    raw, chunks, expected, o = case
    assume(o.success)
    slower = Outcome(o.throughput_bps / factor, o.latency_s * factor, True, o.retransmissions)
    assert reward_terms(raw, chunks, expected, slower).total <= reward_terms(raw, chunks, expected,
                                                                              o).total + 1e-12


def test_failure_costs_the_bonus_and_the_floor() -> None:
    raw = raw_state([1e8] * 4, [0.02] * 4, [1.0] * 4)
    ok = reward_terms(raw, [10**6, 0, 0, 0], 0.1, Outcome(8e6 / 0.1, 0.1, True))
    failed = reward_terms(raw, [10**6, 0, 0, 0], 0.1, Outcome(0.0, 0.5, False, 3))
    assert ok.completion_bonus == 1.0 and failed.completion_bonus == 0.0
    assert failed.throughput_improvement == -3.0 and failed.retransmission_penalty == 1.0
    assert failed.total < ok.total


def test_latency_penalty_is_relative_lateness() -> None:
    raw = raw_state([1e8] * 4, [0.02] * 4, [1.0] * 4)
    for latency, want in ((0.5, 0.0), (1.0, 0.0), (1.5, 0.5), (5.0, 2.0)):
        t = reward_terms(raw, [10**6, 0, 0, 0], 1.0, Outcome(8e6 / latency, latency, True))
        assert t.latency_penalty == pytest.approx(want)
    assert reward_terms(raw, [1, 0, 0, 0], math.inf, Outcome(8.0, 1.0, True)).latency_penalty == 0.0
    assert reward_terms(raw, [1, 0, 0, 0], 0.0, Outcome(8.0, 1.0, True)).latency_penalty == 2.0


def test_imbalance_is_zero_for_the_production_split_and_positive_for_equal_bytes() -> None:
    bw, lat, succ = [1e8, 4e8, 2e8, 8e8], [0.01, 0.05, 0.02, 0.1], [1.0, 0.9, 1.0, 0.95]
    eff = [b * s for b, s in zip(bw, succ, strict=True)]
    o = Outcome(1e9, 40.0, True)
    for size in (64 * 1024, 10**6, 10**8, 4 * 10**9):  # small chunks: set-up and slow start dominate
        raw = raw_state(bw, lat, succ, size=size)
        for action in (4, 9, 13, 14):
            split = production_split(raw, action)
            t = reward_terms(raw, list(split.chunk_bytes), split.expected_time_s, o)
            assert t.stream_imbalance < 1e-3, (size, action)
    raw = raw_state(bw, lat, succ, size=4e9)
    equal = [10**9] * 4
    f = [chunk_time(8e9, eff[i], lat[i]) for i in range(4)]
    assert reward_terms(raw, equal, 80.0, o).stream_imbalance == pytest.approx((max(f) - min(f)) / max(f))
    # The plain fluid split ignores set-up and slow start: for 1 MB it leaves the streams unbalanced.
    plain = split_task(10**6, 14, eff, lat)
    assert reward_terms(raw_state(bw, lat, succ, size=1e6), list(plain.chunk_bytes), 1.0,
                        o).stream_imbalance > 0.05
    dead = raw_state([1e8, 0.0, 1e8, 1e8], [0.02] * 4, [1.0] * 4)
    assert reward_terms(dead, [5, 5, 0, 0], 1.0, Outcome(80.0, 1.0, True)).stream_imbalance == 1.0
    assert reward_terms(dead, [0, 0, 10, 0], 1.0, Outcome(80.0, 1.0, True)).stream_imbalance == 0.0


def test_retransmission_penalty_is_resends_per_chunk() -> None:
    raw = raw_state([1e8] * 4, [0.02] * 4, [1.0] * 4)
    for chunks, resends, want in (([4, 0, 0, 0], 0, 0.0), ([1, 1, 1, 1], 2, 0.5), ([1, 1, 0, 0], 1, 0.5),
                                  ([4, 0, 0, 0], 3, 1.0)):
        t = reward_terms(raw, chunks, 1.0, Outcome(32.0, 1.0, True, resends))
        assert t.retransmission_penalty == want


def test_no_rate_estimate_means_no_throughput_comparison() -> None:
    raw = raw_state([0.0] * 4, [0.02] * 4, [1.0] * 4)
    t = reward_terms(raw, [1000, 0, 0, 0], math.inf, Outcome(8000.0, 1.0, True))
    assert t.throughput_improvement == 0.0 and t.total == W.completion


def test_extreme_valid_inputs_give_a_finite_reward() -> None:
    """Subnormal rates or throughputs once gave NaN (inf / inf imbalance) or a math domain error."""
    tiny = 5e-324
    raw = raw_state([1e5, 1e5, 0.0, 0.0], [0.0] * 4, [1.0, 2.2e-313, 1.0, 1.0])
    t = reward_terms(raw, [1, 1, 0, 0], 0.0, Outcome(0.0, 1.0, False))
    assert t.stream_imbalance == 1.0 and math.isfinite(t.total)
    t = reward_terms(raw, [0, 1, 0, 0], 1.0, Outcome(tiny, 1.0, False))
    assert math.isfinite(t.total)
    t = reward_terms(raw_state([1e9] * 4, [0.0] * 4, [1.0] * 4), [8, 0, 0, 0], 1e-9,
                     Outcome(tiny, 1e4, False))
    assert t.throughput_improvement == -3.0 and math.isfinite(t.total)


def test_weights() -> None:
    raw = raw_state([1e8] * 4, [0.02] * 4, [1.0] * 4)
    o = Outcome(8e6 / 0.5, 0.5, True, 1)
    t = reward_terms(raw, [10**6, 0, 0, 0], 0.1, o)
    w = RewardWeights(throughput=2.0, latency=0.0, imbalance=1.0, completion=0.5, retransmission=3.0)
    want = 2.0 * t.throughput_improvement + 0.5 * t.completion_bonus - 3.0 * t.retransmission_penalty
    assert compute_reward(raw, [10**6, 0, 0, 0], 0.1, o, w) == pytest.approx(want)
    assert (W.throughput, W.latency, W.imbalance, W.completion, W.retransmission) == (1.0, 0.5, 0.3, 2.0, 1.0)
    assert isinstance(REWARD_SPEC_VERSION, int) and REWARD_SPEC_VERSION >= 1
    for bad in (-1.0, math.nan, math.inf, True, "1"):
        with pytest.raises(ValueError, match=r"RewardWeights\.latency"):
            RewardWeights(latency=bad)  # type: ignore[arg-type]


GOOD_RAW = raw_state([1e8] * 4, [0.02] * 4, [1.0] * 4)
GOOD_OUT = Outcome(8e6, 1.0, True, 0)


@pytest.mark.parametrize(
    ("raw", "chunks", "expected", "outcome", "exc", "match"),
    [
        (np.zeros(19), [1, 0, 0, 0], 1.0, GOOD_OUT, ValueError, "shape"),
        (np.where(np.arange(20) == 5, np.nan, GOOD_RAW), [1, 0, 0, 0], 1.0, GOOD_OUT, ValueError,
         r"latency_s\[1\]"),
        (np.where(np.arange(20) == 0, -1.0, GOOD_RAW), [1, 0, 0, 0], 1.0, GOOD_OUT, ValueError,
         r"bandwidth_bps\[0\]"),
        (GOOD_RAW, [1, 0, 0], 1.0, GOOD_OUT, ValueError, "4 entries"),
        (GOOD_RAW, [1, 0, -1, 0], 1.0, GOOD_OUT, ValueError, r"chunk_bytes\[2\]"),
        (GOOD_RAW, [1.5, 0, 0, 0], 1.0, GOOD_OUT, TypeError, r"chunk_bytes\[0\]"),
        (GOOD_RAW, [True, 0, 0, 0], 1.0, GOOD_OUT, TypeError, r"chunk_bytes\[0\]"),
        (GOOD_RAW, [0, 0, 0, 0], 1.0, GOOD_OUT, ValueError, "sum to >= 1"),
        (GOOD_RAW, [1, 0, 0, 0], math.nan, GOOD_OUT, ValueError, "expected_time_s"),
        (GOOD_RAW, [1, 0, 0, 0], -1.0, GOOD_OUT, ValueError, "expected_time_s"),
        (GOOD_RAW, [1, 0, 0, 0], 1.0, (8.0, 1.0, True), TypeError, "Outcome"),
        (GOOD_RAW, [1, 0, 0, 0], 1.0, Outcome(8.0, 0.0, True), ValueError, "latency_s"),
        (GOOD_RAW, [1, 0, 0, 0], 1.0, Outcome(-8.0, 1.0, True), ValueError, "throughput_bps"),
        (GOOD_RAW, [1, 0, 0, 0], 1.0, Outcome(math.inf, 1.0, True), ValueError, "throughput_bps"),
        (GOOD_RAW, [1, 0, 0, 0], 1.0, Outcome(8.0, 1.0, True, -1), ValueError, "retransmissions"),
        (GOOD_RAW, [1, 0, 0, 0], 1.0, Outcome(8.0, 1.0, True, True), ValueError, "retransmissions"),
    ],
)
def test_bad_input_names_the_field(raw: np.ndarray, chunks: list[int], expected: float,
                                   outcome: Outcome, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        compute_reward(raw, chunks, expected, outcome)


def test_simulator_and_production_use_the_one_reward_function() -> None:
    assert itp.sim.env.reward_terms is reward_terms
    assert itp.partitioner.trusted_reward is trusted_reward


@given(cases())
def test_trusted_reward_is_the_same_formula(case: tuple[np.ndarray, list[int], float, Outcome]) -> None:
    """The partitioner's unvalidated fast path and the validated API share the native definition."""
    raw, chunks, expected, outcome = case
    want = compute_reward(raw, chunks, expected, outcome)
    got = trusted_reward(raw, chunks, expected, outcome.throughput_bps, outcome.latency_s, outcome.success,
                         outcome.retransmissions)
    assert got == want
