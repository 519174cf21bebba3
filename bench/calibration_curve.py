"""Prediction error of the partitioner's own ``expected_time`` as outcomes arrive, calibration on vs off.

Three simulated networks whose physics differ from the fresh-connection model the split assumes
(``itp.sim.physics.SimConfig``; losses off so the error is the transport model's): warm persistent streams
without slow start (``slow_start=False, setup_rtts=0.5``), persistent streams with slow-start restart and
80 % rate efficiency (``setup_rtts=0.5, stream_efficiency=0.8``), and the default fresh connections (where
the defaults are already right). Four synthetic streams each; the stream table reports each stream's
available rate and queue-inflated RTT at decision time; tasks are log-uniform in 64 KiB..256 MiB, decided
by the heuristic (``TaskPartitioner(None)``) and simulated with ``itp.sim.physics.simulate_task``; each
task's per-stream chunk times are reported as ``ChunkOutcome`` s. With calibration on, the script calls
``recalibrate()`` (the fit the background thread runs) every ``--refit-every`` outcomes, synchronously:
the simulated clock runs far faster than real transfers, and a fit over 4 x 512 observations takes about
2 s on a busy 2-core VM, so the background thread would fall behind here in a way it does not in a real
deployment; the automatic refit is disabled (interval 10**9) to keep the run deterministic.

Prints, every ``--every`` outcomes, the median and p90 of ``|measured / expected_time - 1|`` over that
window. Run: ``python bench/calibration_curve.py`` (a few minutes).
"""

from __future__ import annotations

import argparse

import numpy as np

from itp import ChunkOutcome, Task, TaskPartitioner
from itp.sim import SimConfig
from itp.sim.physics import draw_stream_params, shared_congestion, simulate_task, synthetic_stream

_NO_LOSS = dict(loss_base=0.0, loss_congestion=0.0, hazard_base_per_s=0.0, hazard_congestion_per_s=0.0)
NETWORKS = {
    "warm, no slow start": SimConfig(slow_start=False, setup_rtts=0.5, **_NO_LOSS),  # type: ignore[arg-type]
    "restart + eff 0.8": SimConfig(setup_rtts=0.5, stream_efficiency=0.8, **_NO_LOSS),  # type: ignore[arg-type]
    "fresh (sim default)": SimConfig(**_NO_LOSS),  # type: ignore[arg-type]
}


def run(config: SimConfig, calibrate: bool, n_tasks: int, refit_every: int, seed: int) -> list[float]:
    """Per-task ``|measured / expected_time - 1|`` on one network."""
    rng = np.random.default_rng(seed)
    g = shared_congestion(rng, config)
    trajs = [synthetic_stream(rng, config, g, 12.0) for _ in range(4)]
    params = [draw_stream_params(rng, config) for _ in range(4)]
    p = TaskPartitioner(None, calibrate_transport=calibrate, calibration_interval=10**9)
    zeros = np.zeros((4, config.max_attempts))
    ones = np.ones((4, config.max_attempts))
    t = 0.0
    errors: list[float] = []
    for k in range(n_tasks):
        for i in range(4):
            cong = trajs[i].congestion_at(t)
            rtt = params[i].base_rtt_s * (1.0 + config.queueing_factor * cong)
            p.update_stream(i, bandwidth_bps=trajs[i].rate_at(t), latency_s=rtt, congestion=cong)
        d = p.partition_task(Task(f"s{k}", int(2 ** rng.uniform(16, 28))))
        res = simulate_task(trajs, params, config, t, d.bytes_per_stream, ones, zeros, zeros)
        latency = res.finish_s - t
        errors.append(abs(latency / d.expected_time - 1.0))
        chunks = [ChunkOutcome(i, d.bytes_per_stream[i], r.finish_s - t)
                  for i, r in enumerate(res.chunks) if r is not None]
        p.report_outcome(d.task_id, d, throughput_bps=8.0 * sum(d.chunk_sizes) / latency, latency_s=latency,
                         success=res.success, chunks=chunks)
        if calibrate and (k + 1) % refit_every == 0:
            p.recalibrate()
        t += latency + float(rng.exponential(2.0))
    p.close()
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--refit-every", type=int, default=50, help="outcomes between refits")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    print("| network | calibration | " + " | ".join(
        f"{k + args.every} outcomes" for k in range(0, args.tasks, args.every)) + " |")
    print("|---|---|" + "---|" * len(range(0, args.tasks, args.every)))
    for name, config in NETWORKS.items():
        for calibrate in (False, True):
            err = run(config, calibrate, args.tasks, args.refit_every, args.seed)
            cells = []
            for k in range(0, args.tasks, args.every):
                w = np.asarray(err[k:k + args.every])
                cells.append(f"{np.median(w):.3f} / {np.percentile(w, 90):.3f}")
            print(f"| {name} | {'on' if calibrate else 'off'} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
