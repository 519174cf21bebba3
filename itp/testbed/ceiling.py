"""The transfer engine against ``iperf3`` over the same rate-limited paths, in the same run.

The transfer issue asks the engine to reach at least 0.95x the goodput of ``iperf3 -P 4`` over the same
paths. Here both run over N paths at a *constant* rate each (no trace: the ceiling, not a policy,
is measured), one after the other on the same running paths:

1. ``iperf3`` (``itp.testbed.iperf.run_iperf``): one client per path inside its namespace, ``parallel``
   streams each, ``iperf_s`` seconds; aggregate = sum of receiver-side rates;
2. the engine (``itp.testbed.engine send``): ``tasks`` files of ``size_bytes`` each, all submitted at
   once, window 1, the given policy (every policy splits a task over all N equal paths when the rates
   are equal); aggregate = ``8 * bytes / (last acknowledgement - first dispatch)``, the session total of
   the ``SendReport`` (it includes each task's commit round trip and the receiver's fsync);
3. ``iperf3`` again, so that a drift of the machine's load during the engine's run shows up.

Also reported: the engine's *data phase* (each task's longest chunk, first byte to the chunk's
acknowledgement after the receiver checked and wrote it), which leaves out the commit round trip and
the receiver's fsync of the whole file -- work iperf3 does not do.

``ratio = engine / mean(iperf before, iperf after)``. The iperf3 figure is a TCP ceiling over the same
path (headers, the tbf's packet accounting and the queue are the same for both), so a ratio near 1 means
the engine adds no overhead of its own on these links.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from itp.testbed.host import TEMP_PREFIX
from itp.testbed.iperf import run_iperf
from itp.testbed.paths import PathConfig, PathSet, TransportSettings
from itp.testbed.rates import QueueSpec, RateSeries
from itp.testbed.runner import _LIVE, _sigterm_as_interrupt, _start_receiver, _write_task_files
from itp.testbed.schedule import PathSpec, RepeatSchedule, TaskSpec

__all__ = ["CeilingResult", "measure_ceiling"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CeilingResult:
    """Aggregate goodputs (bit/s) of iperf3 before and after the engine, the engine's, and the set-up."""

    paths: int
    rate_bps: float
    rtt_s: float
    iperf_before_bps: float
    iperf_after_bps: float
    engine_bps: float
    engine_bytes: int
    engine_seconds: float
    policy: str
    engine_data_seconds: float = float("nan")

    @property
    def ratio(self) -> float:
        """Engine goodput over the mean of the two iperf3 measurements."""
        ref = 0.5 * (self.iperf_before_bps + self.iperf_after_bps)
        return self.engine_bps / ref if ref > 0 else float("nan")

    @property
    def engine_data_bps(self) -> float:
        """Goodput of the data phase alone: bits / the tasks' longest chunk times (no commit, no fsync)."""
        if not self.engine_data_seconds > 0:
            return float("nan")
        return 8.0 * self.engine_bytes / self.engine_data_seconds

    @property
    def data_ratio(self) -> float:
        """``engine_data_bps`` over the mean of the two iperf3 measurements."""
        ref = 0.5 * (self.iperf_before_bps + self.iperf_after_bps)
        return self.engine_data_bps / ref if ref > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, the ratio included."""
        return {
            **self.__dict__,
            "ratio": self.ratio,
            "engine_data_bps": self.engine_data_bps,
            "data_ratio": self.data_ratio,
        }

    def to_text(self) -> str:
        """A few lines for the terminal."""
        return "\n".join(
            [
                f"{self.paths} paths x {self.rate_bps / 1e6:g} Mbit/s, RTT {self.rtt_s * 1e3:g} ms",
                f"iperf3 before : {self.iperf_before_bps / 1e6:8.1f} Mbit/s",
                f"engine ({self.policy}): {self.engine_bps / 1e6:8.1f} Mbit/s  "
                f"({self.engine_bytes / 2**20:.0f} MiB in {self.engine_seconds:.2f} s)",
                f"  data phase (longest chunk, no commit/fsync): {self.engine_data_bps / 1e6:.1f} Mbit/s",
                f"iperf3 after  : {self.iperf_after_bps / 1e6:8.1f} Mbit/s",
                f"engine / iperf3 = {self.ratio:.3f} (goal >= 0.95); "
                f"data phase / iperf3 = {self.data_ratio:.3f}",
            ]
        )


def measure_ceiling(
    *,
    paths: int = 4,
    rate_bps: float = 100e6,
    rtt_s: float = 0.02,
    size_bytes: int = 2**30,
    tasks: int = 1,
    iperf_s: float = 10.0,
    parallel: int = 1,
    policy: str = "itp",
    queue: QueueSpec | None = None,
    transport: TransportSettings | None = None,
    timeout_s: float = 600.0,
) -> CeilingResult:
    """Measure iperf3, the engine, iperf3 again over ``paths`` constant-rate paths (module docstring).

    Args:
        paths: number of paths, 1..4.
        rate_bps: each path's rate, bit/s.
        rtt_s: each path's propagation RTT, seconds (even whole milliseconds).
        size_bytes: size of each task, bytes.
        tasks: tasks sent back to back.
        iperf_s: length of each iperf3 measurement, seconds.
        parallel: iperf3 streams per path (``-P``).
        policy: the engine's policy.
        queue: bottleneck queue (default 50 ms).
        transport: congestion control and slow-start-after-idle (default bbr, on).
        timeout_s: deadline of the engine's session, seconds.

    Raises:
        RuntimeError: a path, the receiver, iperf3 or the sender failed.
    """
    from itp.testbed.runner import resolve_policy

    policy = resolve_policy(policy)
    queue = queue or QueueSpec(delay_s=0.05)
    transport = transport or TransportSettings()
    one_way_ms = round(rtt_s * 500)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}run-"))
    secret_file = run_dir / "secret"
    secret_file.write_text(secrets.token_hex(32) + "\n")
    os.chmod(secret_file, 0o600)
    specs = tuple(PathSpec(i, "", 0.0, rate_bps, 2 * one_way_ms / 1000, 0.0) for i in range(paths))
    schedule = RepeatSchedule(
        0, 0, specs, tuple(TaskSpec(f"bulk-{k}", size_bytes, 0.0) for k in range(tasks))
    )
    series = [RateSeries(1.0, np.full(int(timeout_s) + 120, float(rate_bps))) for _ in range(paths)]
    try:
        with _sigterm_as_interrupt():
            _write_task_files(schedule, run_dir / "files")
            recv_dir = run_dir / "received"
            recv_dir.mkdir()
            ps = PathSet(
                [PathConfig(one_way_ms) for _ in range(paths)],
                queue=queue,
                transport=transport,
                run_tag=run_dir.name[-8:],
                workdir=str(run_dir),
            )
            _LIVE.pathsets.append(ps)
            with ps:
                assert ps.controller is not None
                ps.controller.install(series)
                before = run_iperf(ps, duration_s=iperf_s, workdir=run_dir, parallel=parallel)
                _receiver, port = _start_receiver(run_dir, ps.receiver_address, secret_file, recv_dir)
                cfg = {
                    "to": f"{ps.receiver_address}:{port}",
                    "netns": ps.netns,
                    "policy": policy,
                    "secret_file": str(secret_file),
                    "window": 1,
                    "timeout_s": timeout_s,
                    "schedule": schedule.send_schedule(run_dir / "files"),
                    "report": str(run_dir / "report.json"),
                }
                (run_dir / "send.json").write_text(json.dumps(cfg))
                with (run_dir / "send.log").open("wb") as log:  # the child keeps its own descriptor
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "itp.testbed.engine", "send", str(run_dir / "send.json")],
                        cwd=run_dir,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                        start_new_session=True,
                    )
                _LIVE.procs.append(proc)
                try:
                    proc.wait(timeout=timeout_s + 30)
                finally:
                    _LIVE.procs.remove(proc)
                report = json.loads((run_dir / "report.json").read_text())
                totals = report["totals"]
                # Per task, its longest chunk: first byte sent to the chunk's acknowledgement (data
                # checked and written), without the commit round trip and the receiver's fsync.
                data_s = sum(max((c["seconds"] for c in t["chunks"]), default=0.0) for t in report["tasks"])
                if totals["failed"]:
                    raise RuntimeError(
                        f"the engine failed {totals['failed']} task(s); see {run_dir}/send.log"
                    )
                for f in recv_dir.iterdir():
                    f.unlink()
                time.sleep(1.0)
                after = run_iperf(ps, duration_s=iperf_s, workdir=run_dir, parallel=parallel)
            _LIVE.pathsets.remove(ps)
    finally:
        _LIVE.close_all()
        shutil.rmtree(run_dir, ignore_errors=True)
    return CeilingResult(
        paths,
        float(rate_bps),
        2 * one_way_ms / 1000,
        before.aggregate_bps,
        after.aggregate_bps,
        float(totals["aggregate_goodput_bps"]),
        int(totals["bytes"]),
        float(totals["seconds"]),
        policy,
        data_s,
    )
