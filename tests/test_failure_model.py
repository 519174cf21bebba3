"""Per-stream failure models: the fit from per-chunk retries (known parameters recovered), the native
failure-model score against its Python copy, the engine and partitioner settings, persistence, and a
lossy stream's large chunk refused by the guard once the model is fitted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import itp
from itp import _native
from itp.calibration import (
    NO_FAILURES,
    ChunkObservation,
    FailureModel,
    TransportCalibrator,
    fit_failure_model,
)
from itp.heuristic import failure_penalty_reference, heuristic_action, heuristic_action_reference
from tests.test_heuristic import params_lists, raw_states


def draw_chunks(
    rng: np.random.Generator, q0: float, hazard: float, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Chunks of log-uniform data time (10 ms .. 30 s) and the failed attempts before each delivery."""
    d = np.exp(rng.uniform(math.log(0.01), math.log(30.0), n))
    q = 1.0 - (1.0 - q0) * np.exp(-hazard * d)
    return d, rng.geometric(1.0 - q) - 1


@pytest.mark.parametrize(("q0", "hazard"), [(0.0, 0.0), (0.2, 0.05), (0.02, 0.002), (0.3, 0.0), (0.0, 0.04)])
def test_known_parameters_are_recovered(q0: float, hazard: float) -> None:
    d, r = draw_chunks(np.random.default_rng(7), q0, hazard, 4000)
    m = fit_failure_model(d, r)
    assert m.fail_probability == pytest.approx(q0, abs=0.03)
    assert m.hazard_per_s == pytest.approx(hazard, abs=max(0.2 * hazard, 0.002))


def test_the_fit_maximises_the_likelihood() -> None:
    """The fitted point beats every nearby feasible point (a concave problem: a local check suffices)."""
    rng = np.random.default_rng(3)
    d, r = draw_chunks(rng, 0.1, 0.02, 1500)
    w = rng.uniform(0.2, 1.0, d.size)
    m = fit_failure_model(d, r, w)

    def loglik(a: float, lam: float) -> float:
        x = np.maximum(a + lam * d, 1e-300)
        return float(np.sum(w * (r * np.log(-np.expm1(-x)) - x)))

    a0, lam0 = -math.log1p(-m.fail_probability), m.hazard_per_s
    best = loglik(a0, lam0)
    for da in (-0.01, 0.0, 0.01):
        for dl in (-0.001, 0.0, 0.001):
            if a0 + da >= 0 and lam0 + dl >= 0:
                assert loglik(a0 + da, lam0 + dl) <= best + 1e-6


def test_no_failures_and_bad_input() -> None:
    assert fit_failure_model([0.1, 2.0, 5.0], [0, 0, 0]) == NO_FAILURES
    assert fit_failure_model([], []) == NO_FAILURES
    with pytest.raises(ValueError, match="one length"):
        fit_failure_model([1.0, 2.0], [0])
    with pytest.raises(ValueError, match="retries"):
        fit_failure_model([1.0], [-1])
    with pytest.raises(ValueError, match="data_s"):
        fit_failure_model([math.nan], [0])
    with pytest.raises(ValueError, match="fail_probability"):
        FailureModel(1.0, 0.0)
    with pytest.raises(ValueError, match="hazard_per_s"):
        FailureModel(0.1, -1.0)
    with pytest.raises(ValueError, match="retries"):
        ChunkObservation(0, 10, 0.1, 1e6, 0.01, 0.0, retries=-1)
    with pytest.raises(TypeError, match="retries"):
        ChunkObservation(0, 10, 0.1, 1e6, 0.01, 0.0, retries=1.5)  # type: ignore[arg-type]


failure_arrays = st.lists(
    st.tuples(st.one_of(st.just(0.0), st.floats(0.0, 0.95)), st.one_of(st.just(0.0), st.floats(0.0, 0.5))),
    min_size=4, max_size=4,
).map(lambda rows: np.array(rows, dtype=np.float64))


@settings(max_examples=300, deadline=None)
@given(raw_states, failure_arrays, st.one_of(st.none(), params_lists))
def test_native_failure_score_equals_python_copy(raw: np.ndarray, models: np.ndarray, params: object) -> None:
    assert heuristic_action(raw, params, models) == heuristic_action_reference(raw, params, models)  # type: ignore[arg-type]


def test_penalty_is_the_expected_resend_time() -> None:
    # One stream, 8e6 bits at 1e6 bit/s: 8 s of data; q = 1 - 0.9 exp(-0.05 x 8).
    q = 1.0 - 0.9 * math.exp(-0.4)
    models = np.array([[0.1, 0.05], [0, 0], [0, 0], [0, 0]], dtype=np.float64)
    got = failure_penalty_reference([1_000_000, 0, 0, 0], [1e6, 1e6, 1e6, 1e6], [0.05] * 4, models)
    assert got == pytest.approx(q / (1 - q) * (4.0 + 0.2))
    # Failure-free streams cost nothing; a zero rate with bytes is infinite.
    assert failure_penalty_reference([5, 5, 0, 0], [1e6] * 4, [0.1] * 4, np.zeros((4, 2))) == 0.0
    assert failure_penalty_reference([5, 0, 0, 0], [0.0, 1, 1, 1], [0.1] * 4, models) == math.inf


def lossy_raw(size: int) -> np.ndarray:
    raw = np.zeros(20)
    raw[0:4] = [80e6, 40e6, 40e6, 40e6]  # stream 0 measures fastest...
    raw[4:8] = 0.04
    raw[12:16] = [0.9, 1.0, 1.0, 1.0]
    raw[16], raw[17], raw[18], raw[19] = 0.0, float(size), 0.5, 12.0
    return raw


LOSSY = np.array([[0.2, 0.05], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=np.float64)  # ...but fails


def test_a_large_task_leaves_a_hazardous_stream_and_a_small_one_need_not() -> None:
    large = lossy_raw(1 << 30)
    assert 0 in itp.actions.ACTION_STREAMS[heuristic_action(large)]  # the success-rate factor alone keeps it
    assert 0 not in itp.actions.ACTION_STREAMS[heuristic_action(large, None, LOSSY)]


def test_engine_failure_models_are_validated_and_used_by_the_guard() -> None:
    e = _native.DecisionEngine(1)
    assert e.failure_models() is None
    for bad, match in (([[1.0, 0.0]] * 4, r"failure_models\[0\]\.fail_probability"),
                       ([[0.0, 0.0]] * 3 + [[0.0, -1.0]], r"failure_models\[3\]\.hazard_per_s"),
                       (np.zeros((3, 2)), "failure_models")):
        with pytest.raises(ValueError, match=match):
            e.set_failure_models(np.asarray(bad, dtype=np.float64))
        assert e.failure_models() is None  # nothing changed
    e.guard_margin = 0.0
    q = np.zeros(15, dtype=np.float32)
    q[14] = 1.0  # the model wants all four streams
    raw = lossy_raw(1 << 30)
    assert e.decide_raw(raw, False, q)[0] == 14  # the success-rate score lets it through
    e.set_failure_models(LOSSY)
    np.testing.assert_array_equal(e.failure_models(), LOSSY)
    out = e.decide_raw(raw, False, q)
    assert out[0] != 14 and 0 not in itp.actions.ACTION_STREAMS[int(out[0])]  # refused: the guard's pick
    e.set_failure_models(None)
    assert e.failure_models() is None and e.decide_raw(raw, False, q)[0] == 14


def lossy_chunks(p: itp.TaskPartitioner, n: int, rng: np.random.Generator) -> None:
    """Report n tasks split over all four streams; stream 0 fails with q0 0.2 and 0.05/s hazard."""
    for k in range(n):
        d = p.partition_task(itp.Task(id=f"t{k}", size=int(rng.integers(1 << 16, 1 << 26))))
        chunks = []
        for sid, size in zip(d.stream_ids, d.chunk_sizes, strict=True):
            data_s = 8.0 * size / 40e6
            fail = 1 - 0.8 * math.exp(-0.05 * data_s) if sid == 0 else 0.0
            retries = int(rng.geometric(1 - fail) - 1) if fail > 0 else 0
            chunks.append(itp.ChunkOutcome(sid, size, data_s * (1 + retries) + 0.05, retries))
        p.report_outcome(d.task_id, d, throughput_bps=1e7, latency_s=1.0, success=True, chunks=chunks)


def test_the_partitioner_fits_pushes_and_uses_the_failure_models() -> None:
    with pytest.raises(ValueError, match="model_failures"):
        itp.TaskPartitioner(None, model_failures=True)
    with pytest.raises(TypeError, match="model_failures"):
        itp.TaskPartitioner(None, calibrate_transport=True, model_failures=1)  # type: ignore[arg-type]
    rng = np.random.default_rng(5)
    plain = itp.TaskPartitioner(None, calibrate_transport=True, calibration_interval=10**9)
    p = itp.TaskPartitioner(None, calibrate_transport=True, calibration_interval=10**9, model_failures=True)
    try:
        for part in (plain, p):
            for i, bw in enumerate((80e6, 40e6, 40e6, 40e6)):
                part.update_stream(i, bandwidth_bps=bw, latency_s=0.04, success_rate=0.9 if i == 0 else 1.0)
        assert p.model_failures and not plain.model_failures and p.failure_models() is None
        for part in (plain, p):
            lossy_chunks(part, 120, rng)
            part.recalibrate()
        assert plain.failure_models() is None
        fitted = p.failure_models()
        assert fitted is not None and fitted[0, 0] > 0.05 and fitted[0, 1] > 5 * fitted[1, 1]
        summary = p.calibrator.summary()  # type: ignore[union-attr]
        assert summary["failure_models"][0]["hazard_per_s"] == pytest.approx(fitted[0, 1])
        big = p.partition_task(itp.Task(id="big", size=1 << 30))
        assert 0 not in big.stream_ids  # the heuristic (no model) now keeps the lossy stream out
        assert 0 in plain.partition_task(itp.Task(id="big", size=1 << 30)).stream_ids
        # A caller's own models: validated, then used; None removes the resend charge.
        with pytest.raises(ValueError, match=r"failure_models\[2\]\.hazard_per_s"):
            plain.set_failure_models([[0, 0], [0, 0], [0, -1], [0, 0]])
        assert plain.failure_models() is None
        plain.set_failure_models(LOSSY)
        assert 0 not in plain.partition_task(itp.Task(id="big2", size=1 << 30)).stream_ids
        plain.set_failure_models(None)
        assert plain.failure_models() is None
    finally:
        p.close()
        plain.close()


def test_retries_survive_save_and_load_and_older_rows_load_as_none(tmp_path: Path) -> None:
    cal = TransportCalibrator(1)
    cal.observe(ChunkObservation(0, 1000, 0.01, 1e6, 0.01, at_s=10.0, start_window_bits=3e6, retries=2))
    path = tmp_path / "cal.json"
    cal.save(path, now_s=10.0)
    assert json.loads(path.read_text())["observations"][0][7] == 2
    again = TransportCalibrator(1)
    again.load(path, now_s=10.0)
    assert again._obs[0][0].retries == 2
    old = tmp_path / "old.json"  # 7 numbers per row: written before retries were recorded
    old.write_text('{"format": "itp-transport-calibrator/1", "num_streams": 1, "saved_unix_s": 0,'
                   ' "observations": [[0, 10, 0.1, 1e6, 0.01, 1.0, 0.0]]}')
    legacy = TransportCalibrator(1)
    assert legacy.load(old) == 1 and legacy._obs[0][0].retries == 0


def test_a_stream_with_few_chunks_borrows_the_pooled_failure_model() -> None:
    cal = TransportCalibrator(2, min_observations=8, prior_strength=30.0)
    rng = np.random.default_rng(2)
    for k in range(200):
        retries = int(rng.geometric(0.7) - 1)
        cal.observe(ChunkObservation(0, 100_000, 0.1, 8e6, 0.01, at_s=float(k), retries=retries))
    for k in range(3):  # too few for its own fit
        cal.observe(ChunkObservation(1, 100_000, 0.1, 8e6, 0.01, at_s=float(k)))
    cal.fit()
    assert cal.failure_model(1) == cal.failure_model(0) or cal.failure_model(1).fail_probability > 0.1
    assert cal.failure_model(0).fail_probability == pytest.approx(0.3, abs=0.08)
    with pytest.raises(ValueError, match="stream_id"):
        cal.failure_model(2)
