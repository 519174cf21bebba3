"""A multi-threaded sender that places every task with itp and feeds the outcomes back to it.

This is the integration shape of a transfer service: several worker threads move tasks over 4 parallel
streams, a monitor thread keeps the stream measurements fresh, and one ``itp.TaskPartitioner`` serves
them all (every method is thread-safe). The partitioner learns through an ``OnlineLearner`` attached to
it: each ``report_outcome`` pushes a transition into a lock-free ring, and the learner thread stores it
durably in ``<registry>/experience.sqlite3`` and in its replay buffer, ready for retraining.

The "network" here is fake but not naive: each stream's available rate replays one of the real FCC
broadband traces shipped with itp, scaled to a WAN rate (100-900 Mbit/s); RTTs grow with queueing when
the rate dips; chunks are lost and resent at a per-stream rate; a chunk's duration follows the same
TCP-like transport model (set-up + slow start) as itp's split, at the *true* rate, which the sender only
knows through its own noisy, delayed measurements. Simulated time runs ``--speedup`` times faster than
the wall clock, and workers sleep for the (scaled) transfer time, so the threads really interleave.

Run it::

    python examples/sender_loop.py                          # bundled model (or heuristic), 4 workers
    python examples/sender_loop.py --tasks 5000 --workers 8 --registry /tmp/itp-registry
    python examples/sender_loop.py --model models/dqn_final.onnx --epsilon 0.05

Replace ``FakeNetwork.send`` with your transport and ``Sender._measure`` with your measurements, and the
rest is what a production sender does.
"""

from __future__ import annotations

import argparse
import logging
import math
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import itp
from itp.learning import LearnerConfig, OnlineLearner
from itp.sim.traces import discover_trace_files, load_trace, shipped_traces_dir
from itp.transport import transport_chunk_time

NUM_STREAMS = itp.NUM_STREAMS


@dataclass(frozen=True)
class ChunkResult:
    """What the sender observes after moving one chunk on one stream."""

    duration_s: float  # first byte sent to last byte acknowledged, including resends
    delivered: bool
    resends: int
    rate_sample_bps: float  # throughput measured during the transfer (noisy)
    rtt_sample_s: float


class FakeNetwork:
    """Four streams with trace-driven rates, queueing RTTs and losses, on a simulated clock.

    Thread-safe: ``send`` may be called from any thread (random draws are under a lock).
    """

    def __init__(self, seed: int, speedup: float) -> None:
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        files = discover_trace_files(shipped_traces_dir())
        picks = self._rng.choice(len(files), size=NUM_STREAMS, replace=len(files) < NUM_STREAMS)
        self.traces = [load_trace(files[int(i)]) for i in picks]
        # Scale each trace (a few Mbit/s of home broadband) to a WAN operating rate, keeping its shape.
        target_bps = self._rng.uniform(100e6, 900e6, NUM_STREAMS)
        self.scale = [float(t / tr.mean_rate_bps) for t, tr in zip(target_bps, self.traces, strict=True)]
        self.offset_s = self._rng.uniform(0.0, 600.0, NUM_STREAMS)
        self.base_rtt_s = self._rng.uniform(0.005, 0.080, NUM_STREAMS)
        self.loss = self._rng.uniform(0.002, 0.03, NUM_STREAMS)
        self.speedup = speedup
        self._t0 = time.monotonic()

    def now_s(self) -> float:
        """Simulated seconds since start."""
        return (time.monotonic() - self._t0) * self.speedup

    def rate_bps(self, i: int, t_s: float) -> float:
        """True available rate of stream i at simulated time t (bit/s)."""
        trace = self.traces[i]
        k = int((t_s + self.offset_s[i]) / trace.bin_s) % trace.rate_bps.size
        return max(1e6, float(trace.rate_bps[k]) * self.scale[i])

    def rtt_s(self, i: int, t_s: float) -> float:
        """True RTT: base RTT plus queueing that grows as the rate dips below the stream's mean."""
        mean = self.traces[i].mean_rate_bps * self.scale[i]
        congestion = min(1.0, max(0.0, 1.0 - self.rate_bps(i, t_s) / mean))
        return float(self.base_rtt_s[i]) * (1.0 + 2.0 * congestion)

    def send(self, i: int, size_bytes: int, t_s: float) -> ChunkResult:
        """Move ``size_bytes`` on stream i starting at simulated time ``t_s``."""
        rate, rtt = self.rate_bps(i, t_s), self.rtt_s(i, t_s)
        with self._lock:
            lost = [bool(self._rng.random() < self.loss[i]) for _ in range(3)]
            noise = float(np.exp(self._rng.normal(0.0, 0.1)))
            jitter = float(self._rng.exponential(0.1 * rtt))
        one_try = transport_chunk_time(8.0 * size_bytes, rate, rtt)
        resends = next((k for k, lost_k in enumerate(lost) if not lost_k), len(lost))
        delivered = resends < len(lost)
        # A lost attempt fails half-way on average, then the chunk is resent from the start.
        duration = one_try * (1 + 0.5 * resends) + jitter
        return ChunkResult(duration, delivered, min(resends, len(lost) - 1), rate * noise, rtt + jitter)


class Sender:
    """Worker threads placing tasks with one shared ``TaskPartitioner``."""

    def __init__(self, partitioner: itp.TaskPartitioner, network: FakeNetwork, workers: int) -> None:
        self.p = partitioner
        self.net = network
        self.tasks: queue.Queue[itp.Task | None] = queue.Queue()
        self.workers = [threading.Thread(target=self._work, name=f"worker-{k}") for k in range(workers)]
        self.monitor = threading.Thread(target=self._monitor, name="monitor", daemon=True)
        self._stop = threading.Event()
        # The sender's own estimates (what it measured), smoothed; guarded by a lock.
        self._est_lock = threading.Lock()
        self._rate = [0.0] * NUM_STREAMS
        self._srtt = [0.0] * NUM_STREAMS
        self._min_rtt = [math.inf] * NUM_STREAMS
        self._success = [1.0] * NUM_STREAMS
        self.prediction_errors: list[float] = []
        self.goodputs_bps: list[float] = []
        self.errors: list[BaseException] = []

    # -- measurements ---------------------------------------------------------------------------
    def _measure(self, i: int, rate_bps: float, rtt_s: float, delivered: bool) -> None:
        """Fold one measurement of stream i into the estimates and hand them to itp."""
        with self._est_lock:
            first = self._rate[i] == 0.0
            self._rate[i] = rate_bps if first else 0.8 * self._rate[i] + 0.2 * rate_bps
            self._srtt[i] = rtt_s if first else 0.875 * self._srtt[i] + 0.125 * rtt_s
            self._min_rtt[i] = min(self._min_rtt[i], rtt_s)
            self._success[i] = 0.95 * self._success[i] + 0.05 * (1.0 if delivered else 0.0)
            congestion = min(1.0, max(0.0, (self._srtt[i] - self._min_rtt[i]) / self._min_rtt[i]))
            values = (self._rate[i], self._srtt[i], congestion, self._success[i])
        self.p.update_stream(
            i, bandwidth_bps=values[0], latency_s=values[1], congestion=values[2], success_rate=values[3]
        )

    def _monitor(self) -> None:
        """Probe every stream periodically (a light probe: current rate and RTT, with noise)."""
        rng = random.Random(1)
        while not self._stop.is_set():
            t = self.net.now_s()
            for i in range(NUM_STREAMS):
                rate = self.net.rate_bps(i, t) * math.exp(rng.gauss(0.0, 0.2))
                self._measure(i, rate, self.net.rtt_s(i, t) * (1.0 + 0.1 * rng.random()), True)
            self.p.set_queue_depth(self.tasks.qsize())
            self._stop.wait(0.05)

    # -- transfers ------------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            while (task := self.tasks.get()) is not None:
                self._transfer(task)
        except BaseException as exc:  # surfaced by run(); a real sender would log and carry on
            self.errors.append(exc)

    def _transfer(self, task: itp.Task) -> None:
        d = self.p.partition_task(task)
        start = self.net.now_s()
        results = [self.net.send(s, c, start) for s, c in zip(d.stream_ids, d.chunk_sizes, strict=True)]
        completion_s = max(r.duration_s for r in results)
        time.sleep(min(completion_s / self.net.speedup, 0.05))  # the transfer, scaled down
        for s, r in zip(d.stream_ids, results, strict=True):
            self._measure(s, r.rate_sample_bps, r.rtt_sample_s, r.delivered)
        success = all(r.delivered for r in results)
        goodput = 8.0 * task.size / completion_s if success else 0.0
        self.p.report_outcome(
            task.id, d, throughput_bps=goodput, latency_s=completion_s, success=success,
            retransmissions=sum(r.resends for r in results),
        )
        with self._est_lock:
            self.prediction_errors.append(abs(completion_s / d.expected_time - 1.0))
            self.goodputs_bps.append(goodput)

    def run(self, n_tasks: int, seed: int, report_every_s: float) -> None:
        """Produce ``n_tasks`` tasks (sizes log-uniform 64 KiB - 1 GiB) and wait until all are reported."""
        rng = random.Random(seed)
        self.monitor.start()
        time.sleep(0.1)  # first probes in
        for w in self.workers:
            w.start()
        for k in range(n_tasks):
            size = int(2 ** rng.uniform(16, 30))
            self.tasks.put(itp.Task(id=f"task-{k}", size=size, priority=rng.random()))
        for _ in self.workers:
            self.tasks.put(None)
        next_report = time.monotonic() + report_every_s
        while any(w.is_alive() for w in self.workers):
            time.sleep(0.05)
            if time.monotonic() >= next_report:
                print_progress(self.p.get_metrics())
                next_report += report_every_s
        self._stop.set()
        if self.errors:
            raise self.errors[0]


def print_progress(m: itp.PartitionerMetrics) -> None:
    print(
        f"  decisions {m.total_decisions:6d}  outcomes {m.reported_outcomes:6d}  "
        f"success {100 * m.success_rate:5.1f}%  avg reward {m.avg_reward:6.3f}  "
        f"stored {m.experience_count:6d}  dropped {m.dropped_transitions}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", help="model file (default: the bundled model, else the heuristic)")
    which.add_argument("--heuristic", action="store_true", help="no model")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks to send (default 2000)")
    parser.add_argument("--workers", type=int, default=4, help="worker threads (default 4)")
    parser.add_argument("--epsilon", type=float, default=0.0, help="exploration rate (default 0)")
    parser.add_argument("--speedup", type=float, default=200.0, help="simulated seconds per wall second")
    parser.add_argument("--registry", help="model registry / experience folder (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-every", type=float, default=1.0, help="seconds between progress lines")
    parser.add_argument("-v", "--verbose", action="store_true", help="log itp's info messages")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")

    if args.heuristic:
        p = itp.TaskPartitioner(None, epsilon=args.epsilon, seed=args.seed)
    elif args.model:
        p = itp.TaskPartitioner(args.model, epsilon=args.epsilon, seed=args.seed)
    else:  # the bundled model; if it is missing the partitioner logs a warning and uses the heuristic
        p = itp.TaskPartitioner(epsilon=args.epsilon, seed=args.seed)
    deciding = f"model {p.model.version} ({p.model.backend})" if p.model is not None else "the heuristic"
    with tempfile.TemporaryDirectory(prefix="itp-registry-") as scratch:
        registry = Path(args.registry) if args.registry else Path(scratch)
        # Retraining needs torch and takes minutes: off here, so the example only collects experience.
        # In a service leave it on (the default) and the learner fine-tunes, gates and canaries by itself.
        config = LearnerConfig(retrain=False, flush_interval_s=0.5)
        learner = OnlineLearner(p, registry=registry, config=config)
        print(f"sender: {args.workers} workers, {args.tasks} tasks, deciding with {deciding}; "
              f"experience -> {registry / 'experience.sqlite3'}")
        sender = Sender(p, FakeNetwork(args.seed, args.speedup), args.workers)
        started = time.perf_counter()
        try:
            sender.run(args.tasks, args.seed, args.report_every)
            learner.flush()  # every reported outcome is on disk when this returns
        finally:
            learner.close()
        wall_s = time.perf_counter() - started
        m = p.get_metrics()

    print_progress(m)
    print()
    print(f"done in {wall_s:.1f} s wall: {m.total_decisions} decisions ({m.total_decisions / wall_s:.0f}/s), "
          f"by source {m.decisions_by_source}")
    print(f"outcomes: {m.reported_outcomes} reported, {m.successful_tasks} delivered "
          f"({100 * m.success_rate:.1f}%), mean reward {m.avg_reward:.3f}, "
          f"mean goodput {statistics.fmean(sender.goodputs_bps) / 1e6:.1f} Mbit/s")
    error = statistics.median(sender.prediction_errors)
    print(f"prediction: |actual / expected - 1| median {100 * error:.1f}%")
    print(f"experience: {m.pushed_transitions} transitions pushed, {m.experience_count} stored durably, "
          f"{m.dropped_transitions} dropped; model faults {m.model_faults}, fallbacks {m.fallback_count}")
    return 0 if m.reported_outcomes == args.tasks else 1


if __name__ == "__main__":
    sys.exit(main())
