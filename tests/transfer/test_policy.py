"""Split policies: partitioner decisions and baselines on the same raw state, with the same split."""

from __future__ import annotations

import numpy as np
import pytest

from itp.heuristic import heuristic_action
from itp.partitioner import ChunkOutcome, OutcomeRecord, TaskPartitioner
from itp.sim.baselines import equal_chunks
from itp.transfer.policy import POLICY_NAMES, SplitPolicy, chunk_outcomes
from itp.transfer.report import ChunkReport
from itp.transport import production_split

RATES = (50e6, 400e6, 100e6, 200e6)
RTTS = (0.01, 0.03, 0.02, 0.05)


def fed(name: str) -> SplitPolicy:
    policy = SplitPolicy(name, partitioner=TaskPartitioner(None))
    for i in range(4):
        policy.partitioner.update_stream(i, bandwidth_bps=RATES[i], latency_s=RTTS[i], success_rate=1.0)
    policy.partitioner.set_queue_depth(3)
    return policy


def test_raw_state_is_the_partitioner_table() -> None:
    raw = fed("rate-proportional").raw_state(12345, 0.25)
    assert raw.bandwidth_bps == RATES and raw.latency_s == RTTS and raw.queue_depth == 3
    assert raw.task_size_bytes == 12345 and raw.priority == 0.25 and 0 <= raw.time_of_day_h < 24


def test_rate_proportional_is_the_production_split_of_action_14() -> None:
    policy = fed("rate-proportional")
    p = policy.place(10_000_000)
    expected = production_split(policy.raw_state(10_000_000, 0.5).to_array(), 14)
    assert p.action == 14 and p.chunk_bytes == expected.chunk_bytes
    assert p.expected_time_s == pytest.approx(expected.expected_time_s)
    assert p.source == "baseline" and p.decision is None


def test_equal_split_puts_equal_bytes_on_all_streams() -> None:
    p = fed("equal-split").place(1001)
    assert p.action == 14 and p.chunk_bytes == equal_chunks(1001, 14) and p.expected_time_s > 0


def test_best_single_takes_the_fastest_stream() -> None:
    p = fed("best-single").place(1 << 20)
    assert p.action == 1 and p.chunk_bytes == (0, 1 << 20, 0, 0) and p.stream_ids == (1,)


def test_round_robin_cycles() -> None:
    policy = fed("round-robin")
    assert [policy.place(100).action for _ in range(6)] == [0, 1, 2, 3, 0, 1]


def test_heuristic_goes_through_the_partitioner_and_learns() -> None:
    policy = fed("heuristic")
    p = policy.place(5_000_000)
    assert p.decision is not None and p.source == "heuristic"
    assert p.action == heuristic_action(policy.raw_state(5_000_000, 0.5).to_array())
    reward = policy.report(p, throughput_bps=1e8, latency_s=0.4, success=True, retransmissions=0)
    assert reward is not None and np.isfinite(reward)
    assert policy.partitioner.get_metrics().reported_outcomes == 1


def test_itp_uses_the_bundled_model_by_default() -> None:
    policy = SplitPolicy("itp")
    assert policy.partitioner.model is not None and policy.learns
    p = policy.place(1 << 20)
    assert sum(p.chunk_bytes) == 1 << 20 and p.source in ("model", "explore", "heuristic")


def test_empty_tasks_need_no_decision() -> None:
    p = fed("heuristic").place(0)
    assert p.action is None and p.chunk_bytes == (0, 0, 0, 0) and p.source == "empty"
    assert fed("heuristic").report(p, throughput_bps=0, latency_s=1, success=True, retransmissions=0) is None


def test_baselines_do_not_report_to_the_learner() -> None:
    policy = fed("equal-split")
    p = policy.place(100)
    assert policy.report(p, throughput_bps=1e6, latency_s=0.1, success=True, retransmissions=0) is None
    assert policy.partitioner.get_metrics().reported_outcomes == 0


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        SplitPolicy("fastest")
    with pytest.raises(ValueError, match="model_path"):
        SplitPolicy("heuristic", model_path="m.onnx")
    with pytest.raises(TypeError, match="partitioner"):
        SplitPolicy("itp", partitioner=object())  # type: ignore[arg-type]
    policy = fed("equal-split")
    with pytest.raises(ValueError, match="size_bytes"):
        policy.place(-1)
    with pytest.raises(ValueError, match="priority"):
        policy.place(10, priority=2.0)
    assert set(POLICY_NAMES) == {"itp", "heuristic", "rate-proportional", "round-robin", "best-single",
                                 "equal-split"}


def _reports(plan_chunks: list[tuple[int, int, float, bool]]) -> tuple[ChunkReport, ...]:
    return tuple(ChunkReport("t", s, 0, size, sec, 0, ok) for s, size, sec, ok in plan_chunks)


def test_chunk_reports_become_chunk_outcomes_when_they_decompose_the_plan() -> None:
    plan = (100, 0, 50, 0)
    got = chunk_outcomes(_reports([(0, 60, 0.1, True), (0, 40, 0.2, True), (2, 50, 0.3, True)]), plan, True)
    assert got == [ChunkOutcome(0, 60, 0.1), ChunkOutcome(0, 40, 0.2), ChunkOutcome(2, 50, 0.3)]
    # A chunk moved to stream 1 after a failure: no longer the plan's decomposition.
    assert chunk_outcomes(_reports([(0, 100, 0.1, True), (1, 50, 0.3, True)]), plan, True) is None
    # A failed task: only what arrived, at most the plan.
    failed = chunk_outcomes(_reports([(0, 60, 0.1, True), (0, 40, 0.0, False)]), plan, False)
    assert failed == [ChunkOutcome(0, 60, 0.1)]
    assert chunk_outcomes((), plan, True) is None
    # The start window a chunk was sent from travels with it (the calibrator's warm/cold knowledge).
    warm = (ChunkReport("t", 0, 0, 100, 0.1, 0, True, 2.0e6), ChunkReport("t", 2, 0, 50, 0.3, 0, True))
    assert chunk_outcomes(warm, plan, True) == [ChunkOutcome(0, 100, 0.1, 0, 2.0e6), ChunkOutcome(2, 50, 0.3)]


def test_report_passes_the_chunks_to_the_partitioner_calibration() -> None:
    policy = SplitPolicy("heuristic", partitioner=TaskPartitioner(None, calibrate_transport=True))
    for i in range(4):
        policy.partitioner.update_stream(i, bandwidth_bps=RATES[i], latency_s=RTTS[i], success_rate=1.0)
    placement = policy.place(10_000_000)
    reports = _reports([(i, c, 0.05 * (i + 1), True) for i, c in enumerate(placement.chunk_bytes) if c > 0])
    seen: list[OutcomeRecord] = []
    policy.partitioner.add_outcome_listener(seen.append)
    policy.report(placement, throughput_bps=1e8, latency_s=0.5, success=True, retransmissions=0,
                  chunks=reports)
    assert seen[0].chunks == tuple(ChunkOutcome(c.stream_id, c.size_bytes, c.seconds) for c in reports)
    calibrator = policy.partitioner.calibrator
    assert calibrator is not None and calibrator.observation_count() == len(reports)
