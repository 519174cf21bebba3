"""``iperf3`` through the emulated paths: the transport ceiling a transfer engine is compared with.

One ``iperf3`` server per path listens in the root namespace on the receiver address (ports
``base_port + i``); one client per path runs inside that path's namespace (``nsenter``), all at once, for
``duration_s`` seconds with ``parallel`` TCP streams each. The aggregate is the sum of the clients'
*receiver-side* rates (bits the servers got / the test's duration), the same definition as an
engine's goodput. Every process starts in the run directory and its own session and is killed if it
outlives ``duration_s + 15`` seconds.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from itp.testbed.paths import PathSet, kill_group

__all__ = ["IperfResult", "run_iperf"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IperfResult:
    """Per-path and aggregate iperf3 goodput (bit/s, receiver side), and the test length (seconds)."""

    per_path_bps: tuple[float, ...]
    duration_s: float

    @property
    def aggregate_bps(self) -> float:
        """Sum over the paths, bit/s."""
        return float(sum(self.per_path_bps))


def run_iperf(
    paths: PathSet,
    *,
    duration_s: float,
    workdir: Path,
    base_port: int = 15201,
    parallel: int = 1,
    congestion_control: str | None = None,
) -> IperfResult:
    """Run one iperf3 client per path at the same time (module docstring); raises RuntimeError on failure.

    Args:
        paths: the running paths (their rate controller may be replaying a series).
        duration_s: test length, seconds (1..600).
        workdir: the run directory (servers' and clients' working directory, JSON outputs).
        base_port: the first server port (path i uses ``base_port + i``).
        parallel: TCP streams per client (``-P``).
        congestion_control: ``-C`` for the clients (None: the namespace default).
    """
    if not 1 <= duration_s <= 600:
        raise ValueError(f"duration_s must be in 1..600, got {duration_s!r}")
    if not 1 <= parallel <= 16:
        raise ValueError(f"parallel must be in 1..16, got {parallel!r}")
    address = paths.receiver_address
    servers: list[subprocess.Popen[bytes]] = []
    clients: list[subprocess.Popen[bytes]] = []
    outputs = [workdir / f"iperf-{i}.json" for i in range(len(paths.paths))]
    try:
        for i in range(len(paths.paths)):
            servers.append(
                subprocess.Popen(
                    ["iperf3", "-s", "-1", "-B", address, "-p", str(base_port + i)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    cwd=workdir,
                    start_new_session=True,
                )
            )
        time.sleep(0.5)
        for i, p in enumerate(paths.paths):
            cmd = [
                "nsenter",
                f"--net={p.netns}",
                "iperf3",
                "-c",
                address,
                "-p",
                str(base_port + i),
                "-t",
                f"{duration_s:g}",
                "-P",
                str(parallel),
                "-J",
            ]
            if congestion_control:
                cmd += ["-C", congestion_control]
            with outputs[i].open("wb") as sink:
                clients.append(
                    subprocess.Popen(
                        cmd, stdout=sink, stderr=subprocess.DEVNULL, cwd=workdir, start_new_session=True
                    )
                )
        deadline = time.monotonic() + duration_s + 15.0
        for c in clients:
            c.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"iperf3 did not finish within {duration_s + 15:g} s") from None
    finally:
        for proc in clients + servers:
            kill_group(proc, grace_s=1.0)
    rates: list[float] = []
    for i, out in enumerate(outputs):
        try:
            data = json.loads(out.read_text())
            rates.append(float(data["end"]["sum_received"]["bits_per_second"]))
        except (OSError, ValueError, KeyError) as exc:
            text = out.read_text()[:300] if out.exists() else ""
            raise RuntimeError(f"iperf3 on path {i} gave no result ({exc}): {text!r}") from None
    logger.info("iperf3: %s bit/s", rates, extra={"event": "iperf"})
    return IperfResult(tuple(rates), float(duration_s))
