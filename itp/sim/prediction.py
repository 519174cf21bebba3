"""How far the partitioner's own completion-time prediction is from what a simulated network delivers.

Why: ``Decision.expected_time`` comes from the transport model the split assumes (set-up RTTs, initial
window, per-stream efficiency). On a network whose physics differ, that prediction is off, and a
``TaskPartitioner(calibrate_transport=True)`` should pull it back as per-chunk outcomes arrive. This is
the measurement behind that claim, shared by ``bench/calibration_curve.py`` (the README's table) and the
tests that pin it, so the two cannot drift apart.

The run: four synthetic streams drawn from ``config`` (``itp.sim.physics``); before each task the stream
table gets each stream's available rate (bit/s) and queue-inflated RTT (seconds) at decision time; tasks
are log-uniform in 64 KiB..256 MiB, decided by the heuristic (``TaskPartitioner(None)``), moved exactly as
decided by ``simulate_task`` with no losses or failures drawn, and reported with their per-chunk times
(``ChunkOutcome``). With calibration on, ``recalibrate()`` (the fit the background thread runs) is called
synchronously every ``refit_every`` outcomes and the automatic refit is disabled, so the run is
deterministic for a given seed: the simulated clock runs far faster than real transfers, and a
background fit would fall behind here in a way it does not in a deployment.
"""

from __future__ import annotations

import numpy as np

from itp.partitioner import ChunkOutcome, Task, TaskPartitioner
from itp.sim.physics import SimConfig, draw_stream_params, shared_congestion, simulate_task, synthetic_stream

__all__ = ["prediction_errors"]

_STREAMS = 4
_TRACE_LENGTH_S = 12.0
_MEAN_GAP_S = 2.0


def prediction_errors(
    config: SimConfig, *, calibrate: bool, n_tasks: int, seed: int, refit_every: int = 50
) -> list[float]:
    """Per task, in order: ``|measured completion time / Decision.expected_time - 1|`` (a ratio).

    Args:
        config: the network's physics (losses are not drawn: the error is the transport model's).
        calibrate: ``TaskPartitioner(calibrate_transport=...)``.
        n_tasks: tasks to decide and report, >= 1.
        seed: seed of the streams, the task sizes and the gaps between tasks.
        refit_every: outcomes between synchronous refits when ``calibrate``, >= 1.

    Raises:
        ValueError: ``n_tasks`` or ``refit_every`` below 1.
    """
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 1:
        raise ValueError(f"n_tasks must be an int >= 1, got {n_tasks!r}")
    if isinstance(refit_every, bool) or not isinstance(refit_every, int) or refit_every < 1:
        raise ValueError(f"refit_every must be an int >= 1, got {refit_every!r}")
    rng = np.random.default_rng(seed)
    g = shared_congestion(rng, config)
    trajs = [synthetic_stream(rng, config, g, _TRACE_LENGTH_S) for _ in range(_STREAMS)]
    params = [draw_stream_params(rng, config) for _ in range(_STREAMS)]
    p = TaskPartitioner(None, calibrate_transport=calibrate, calibration_interval=10**9)
    zeros = np.zeros((_STREAMS, config.max_attempts))
    ones = np.ones((_STREAMS, config.max_attempts))  # every attempt's uniform draw: no loss, no failure
    t = 0.0
    errors: list[float] = []
    try:
        for k in range(n_tasks):
            for i in range(_STREAMS):
                cong = trajs[i].congestion_at(t)
                rtt_s = params[i].base_rtt_s * (1.0 + config.queueing_factor * cong)
                p.update_stream(i, bandwidth_bps=trajs[i].rate_at(t), latency_s=rtt_s, congestion=cong)
            d = p.partition_task(Task(f"s{k}", int(2 ** rng.uniform(16, 28))))
            res = simulate_task(trajs, params, config, t, d.bytes_per_stream, ones, zeros, zeros)
            latency_s = res.finish_s - t
            errors.append(abs(latency_s / d.expected_time - 1.0))
            chunks = [ChunkOutcome(i, d.bytes_per_stream[i], r.finish_s - t)
                      for i, r in enumerate(res.chunks) if r is not None]
            p.report_outcome(d.task_id, d, throughput_bps=8.0 * sum(d.chunk_sizes) / latency_s,
                             latency_s=latency_s, success=res.success, chunks=chunks)
            if calibrate and (k + 1) % refit_every == 0:
                p.recalibrate()
            t += latency_s + float(rng.exponential(_MEAN_GAP_S))
    finally:
        p.close()
    return errors
