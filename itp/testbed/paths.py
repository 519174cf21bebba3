"""Emulated network paths: one Mahimahi shell per path, a kernel ``tbf`` inside it, a rate controller.

Topology (``docs/testbed.md`` has the picture)::

    receiver (root namespace, listens on path 0's outer address A0)
       ^            ^
       | tun        | tun                   one per path i:
    [mm-delay d_i] [mm-delay d_j] ...       runuser -u itptb -- mm-delay d_i [mm-loss uplink p_i] --
       ^            ^                           bash -c 'echo READY $$ $MAHIMAHI_BASE; exec sleep'
    tbf on "ingress" (inside the shell: the sender-to-receiver egress, rate r_i(t), queue L_i)
       ^
    sender socket of stream i, opened inside the shell's namespace (/proc/HOLDER/ns/net)

* The shell runs only a holder process (``sleep``, renamed ``itptb-hold-...``); its namespace is where
  the sender's socket for that stream lives (``itp send --netns /proc/PID/ns/net``). The socket connects
  out to the receiver in the root namespace: its packets leave by the shell's inner device, wait in the
  ``tbf`` (the bottleneck: rate and drop-tail queue), cross ``mm-delay`` (one-way delay d_i each way,
  RTT 2 d_i) and, when asked, ``mm-loss uplink p_i`` (independent random drops of data packets), and
  arrive on the shell's outer ``tun`` device in the root namespace, which holds the receiver's address.
  ACKs take the reverse way without rate limit (delayed by d_i).
* Measured on this machine: the ``tbf`` on the inner device shapes the sender-to-receiver direction (a
  40 Mbit/s tbf gave 37 Mbit/s of iperf3 goodput through a 40 ms RTT shell); a ``tbf`` on the outer
  device would shape the ACK direction instead.
* Transport knobs are per network namespace, so they are set inside each shell and never on the host:
  ``net.ipv4.tcp_congestion_control`` (bbr, cubic, reno) and ``net.ipv4.tcp_slow_start_after_idle``.
* The controller (``RateController``) keeps one ``tc -force -batch -`` process per path (entered into the
  shell's namespace with ``nsenter``) and writes a ``qdisc change`` line whenever a path's rate series
  (``itp.testbed.rates``) steps, on an absolute clock (step k at ``t0 + k step_s``), so lateness does
  not accumulate.

Life cycle: every process is started in its own session (``start_new_session``), so one ``killpg``
ends a shell with its children; ``EmulatedPath.close`` and ``RateController.close`` are idempotent and
``PathSet`` closes everything on exit, on an exception and (through ``itp.testbed.runner``) on SIGINT and
SIGTERM. What a crash leaves is found by ``itp.testbed.host.find_leftovers``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from itp.testbed.host import TEMP_PREFIX, TESTBED_USER
from itp.testbed.rates import QueueSpec, RateSeries, tbf_command, tbf_settings

__all__ = [
    "CONGESTION_CONTROLS",
    "EmulatedPath",
    "PathConfig",
    "PathSet",
    "RateController",
    "TransportSettings",
    "kill_group",
]

logger = logging.getLogger(__name__)

CONGESTION_CONTROLS: tuple[str, ...] = ("bbr", "cubic", "reno")
_READY_TIMEOUT_S = 15.0


def kill_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], *, grace_s: float = 2.0) -> None:
    """End ``proc`` and its process group: SIGTERM, wait up to ``grace_s``, then SIGKILL; reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    # The leader may be gone while its children live on (mm-delay forks): kill the whole group anyway.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
        logger.warning("process %d did not exit after SIGKILL", proc.pid)


@dataclass(frozen=True)
class TransportSettings:
    """TCP settings applied inside every path's namespace.

    Attributes:
        congestion_control: ``bbr``, ``cubic`` or ``reno`` (must be available in the kernel).
        slow_start_after_idle: ``net.ipv4.tcp_slow_start_after_idle``: a connection idle for more than
            one RTO restarts from the initial window (the Linux default, True) or keeps its window.
    """

    congestion_control: str = "bbr"
    slow_start_after_idle: bool = True

    def __post_init__(self) -> None:
        if self.congestion_control not in CONGESTION_CONTROLS:
            raise ValueError(
                f"congestion_control must be one of {', '.join(CONGESTION_CONTROLS)}, "
                f"got {self.congestion_control!r}"
            )
        if not isinstance(self.slow_start_after_idle, bool):
            raise TypeError(f"slow_start_after_idle must be a bool, got {self.slow_start_after_idle!r}")


@dataclass(frozen=True)
class PathConfig:
    """How to build one path: ``one_way_delay_ms`` (>= 1, whole ms), ``loss_rate`` in [0, 0.5]."""

    one_way_delay_ms: int
    loss_rate: float = 0.0

    def __post_init__(self) -> None:
        d = self.one_way_delay_ms
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 10_000:
            raise ValueError(f"PathConfig.one_way_delay_ms must be an int in 1..10000, got {d!r}")
        if not (isinstance(self.loss_rate, (int, float)) and 0.0 <= self.loss_rate <= 0.5):
            raise ValueError(f"PathConfig.loss_rate must be in [0, 0.5], got {self.loss_rate!r}")


def _nsenter(netns: str, *cmd: str) -> list[str]:
    return ["nsenter", f"--net={netns}", *cmd]


class EmulatedPath:
    """One running path: a Mahimahi shell holding a network namespace (module docstring).

    Attributes:
        index: the path's stream index.
        holder_pid: pid of the holder process inside the shell.
        netns: ``/proc/<holder_pid>/ns/net``, the namespace a sender socket must be opened in.
        outer_address: the shell's outer address (``$MAHIMAHI_BASE``), in the root namespace.
        device: the inner device that carries the sender-to-receiver data.

    Not thread-safe; ``close`` is idempotent.
    """

    def __init__(self, index: int, config: PathConfig, *, run_tag: str, user: str = TESTBED_USER) -> None:
        self.index = index
        self.config = config
        cmd = ["runuser", "-u", user, "--", "mm-delay", str(config.one_way_delay_ms)]
        if config.loss_rate > 0:
            cmd += ["mm-loss", "uplink", f"{config.loss_rate:.6f}"]
        holder = f"{TEMP_PREFIX}hold-{run_tag}-{index}"
        cmd += ["bash", "-c", f'echo READY $$ "$MAHIMAHI_BASE"; exec -a {holder} sleep 86400']
        for tool in ("runuser", "mm-delay", "nsenter", "tc"):
            if shutil.which(tool) is None:
                raise FileNotFoundError(f"{tool} not found: run `itp testbed setup` (or check)")
        self._proc: subprocess.Popen[str] | None = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            cwd="/",
        )
        try:
            self.holder_pid, self.outer_address = self._wait_ready()
            self.netns = f"/proc/{self.holder_pid}/ns/net"
            self.device = self._inner_device()
        except BaseException:
            self.close()
            raise
        logger.info(
            "path %d up: holder %d, outer address %s, device %s, delay %d ms, loss %.4f",
            index,
            self.holder_pid,
            self.outer_address,
            self.device,
            config.one_way_delay_ms,
            config.loss_rate,
            extra={"event": "path_up"},
        )

    def _wait_ready(self) -> tuple[int, str]:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + _READY_TIMEOUT_S
        line = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._proc.stdout], [], [], 0.2)
            if ready:
                line = self._proc.stdout.readline()
                break
            if self._proc.poll() is not None:
                break
        parts = line.split()
        if len(parts) != 3 or parts[0] != "READY":
            err = ""
            if self._proc.poll() is not None and self._proc.stderr is not None:
                err = self._proc.stderr.read().strip()
            raise RuntimeError(
                f"path {self.index}: Mahimahi shell did not start ({err or 'no READY line within '}"
                f"{'' if err else f'{_READY_TIMEOUT_S:g} s'}); run `itp testbed check`"
            )
        return int(parts[1]), parts[2]

    def _inner_device(self) -> str:
        out = subprocess.run(
            _nsenter(self.netns, "ip", "-o", "link", "show"),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        names = [ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines() if ln.count(":") >= 2]
        devices = [n for n in names if n != "lo"]
        if len(devices) != 1:
            raise RuntimeError(f"path {self.index}: expected one device besides lo in the shell, got {names}")
        return devices[0]

    def configure(self, transport: TransportSettings) -> None:
        """Set the congestion control, slow-start-after-idle and no metrics cache inside the namespace."""
        for key, value in (
            ("net.ipv4.tcp_congestion_control", transport.congestion_control),
            ("net.ipv4.tcp_slow_start_after_idle", "1" if transport.slow_start_after_idle else "0"),
            # No per-destination cache of ssthresh/RTT: a session must not inherit the previous one's.
            ("net.ipv4.tcp_no_metrics_save", "1"),
        ):
            proc = subprocess.run(
                _nsenter(self.netns, "sysctl", "-q", "-w", f"{key}={value}"),
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"path {self.index}: setting {key}={value} failed: {proc.stderr.strip()}")

    @property
    def alive(self) -> bool:
        """The shell is still running."""
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        """End the shell and everything in its process group (the namespace and qdisc go with it)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            kill_group(proc)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


class RateController:
    """Replays one ``RateSeries`` per path into the paths' ``tbf`` qdiscs (module docstring).

    ``install`` puts the first rate in place (``replace``), ``start`` runs the series from a given
    monotonic time on a background thread, ``stop`` ends it and holds the last rates, ``close`` ends the
    ``tc`` processes. Lateness of the applied steps is recorded (``max_lateness_s``).

    Args:
        paths: the running paths.
        queue: the bottleneck queue of every path.
        workdir: working directory of the ``tc`` processes (the run directory, so a crashed run's
            controllers are found by ``find_leftovers``).
    """

    def __init__(self, paths: Sequence[EmulatedPath], queue: QueueSpec, *, workdir: str = "/") -> None:
        self._paths = list(paths)
        self._queue = queue
        self._tc: list[subprocess.Popen[str]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._series: list[RateSeries] = []
        self.max_lateness_s = 0.0
        self.steps_applied = 0
        try:
            for p in self._paths:
                self._tc.append(
                    subprocess.Popen(
                        _nsenter(p.netns, "tc", "-force", "-batch", "-"),
                        stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        text=True,
                        start_new_session=True,
                        cwd=workdir,  # the run directory: how `itp testbed clean` recognises a stray tc
                    )
                )
        except BaseException:
            self.close()
            raise

    def _write(self, i: int, rate_bps: float, verb: str) -> None:
        tc = self._tc[i]
        if tc.poll() is not None or tc.stdin is None:
            err = tc.stderr.read().strip() if tc.stderr is not None else ""
            raise RuntimeError(f"path {i}: tc controller exited ({tc.returncode}): {err}")
        line = tbf_command(self._paths[i].device, tbf_settings(rate_bps, self._queue), verb=verb)
        tc.stdin.write(line + "\n")
        tc.stdin.flush()

    def install(self, series: Sequence[RateSeries]) -> None:
        """Install each path's ``tbf`` at the series' first rate (waits until every path shows one)."""
        if len(series) != len(self._paths):
            raise ValueError(f"need one rate series per path ({len(self._paths)}), got {len(series)}")
        self.stop()
        self._series = list(series)
        for i, s in enumerate(self._series):
            self._write(i, float(s.rate_bps[0]), "replace")
        for i, p in enumerate(self._paths):
            deadline = time.monotonic() + 5.0
            while True:
                shown = subprocess.run(
                    _nsenter(p.netns, "tc", "qdisc", "show", "dev", p.device),
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                ).stdout
                if "tbf" in shown:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"path {i}: tbf did not appear on {p.device}: {shown.strip()}")
                time.sleep(0.02)

    def start(self, t0_monotonic: float) -> None:
        """Replay the installed series with step k applied at ``t0_monotonic + k step``."""
        if not self._series:
            raise RuntimeError("install() the rate series before start()")
        self.stop()
        self._stop.clear()
        self.max_lateness_s = 0.0
        self.steps_applied = 0
        self._thread = threading.Thread(
            target=self._loop, args=(t0_monotonic,), name="itp-testbed-rates", daemon=True
        )
        self._thread.start()

    def _loop(self, t0: float) -> None:
        step_s = self._series[0].step_s
        n = max(s.rate_bps.size for s in self._series)
        current = [float(s.rate_bps[0]) for s in self._series]
        for k in range(1, n):
            due = t0 + k * step_s
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            self.max_lateness_s = max(self.max_lateness_s, time.monotonic() - due)
            for i, s in enumerate(self._series):
                rate = float(s.rate_bps[min(k, s.rate_bps.size - 1)])
                if rate != current[i]:
                    try:
                        self._write(i, rate, "change")
                    except (RuntimeError, OSError) as exc:
                        logger.error("rate controller stopped: %s", exc, extra={"event": "rate_error"})
                        return
                    current[i] = rate
            self.steps_applied = k

    def stop(self) -> None:
        """Stop replaying (the rates last set stay in force)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def close(self) -> None:
        """Stop and end the ``tc`` processes (idempotent)."""
        self.stop()
        tcs, self._tc = self._tc, []
        for tc in tcs:
            if tc.stdin is not None:
                with contextlib.suppress(OSError):
                    tc.stdin.close()
            kill_group(tc, grace_s=1.0)
            if tc.stderr is not None:
                tc.stderr.close()


class PathSet:
    """N paths and their controller as one context manager: built on enter, all torn down on exit.

    Args:
        configs: one ``PathConfig`` per path.
        queue: the bottleneck queue of every path.
        transport: TCP settings applied inside every path.
        run_tag: short tag put into the holder processes' names (letters, digits, dashes).
        workdir: the run directory (working directory of the controller's processes).
    """

    def __init__(
        self,
        configs: Sequence[PathConfig],
        *,
        queue: QueueSpec,
        transport: TransportSettings,
        run_tag: str,
        workdir: str = "/",
    ) -> None:
        if not 1 <= len(configs) <= 4:
            raise ValueError(f"configs must hold 1..4 paths, got {len(configs)}")
        self.configs = list(configs)
        self.queue = queue
        self.transport = transport
        self.run_tag = run_tag
        self.workdir = workdir
        self.paths: list[EmulatedPath] = []
        self.controller: RateController | None = None

    def __enter__(self) -> PathSet:
        try:
            for i, cfg in enumerate(self.configs):
                path = EmulatedPath(i, cfg, run_tag=self.run_tag)
                self.paths.append(path)
                path.configure(self.transport)
            self.controller = RateController(self.paths, self.queue, workdir=self.workdir)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def receiver_address(self) -> str:
        """Where the receiver listens: path 0's outer address (root namespace; every shell reaches it)."""
        if not self.paths:
            raise RuntimeError("paths are not up")
        return self.paths[0].outer_address

    @property
    def netns(self) -> list[str]:
        """Each path's namespace path, in stream order."""
        return [p.netns for p in self.paths]

    def check_alive(self) -> None:
        """Raise RuntimeError naming the first path whose shell died."""
        for p in self.paths:
            if not p.alive:
                raise RuntimeError(f"path {p.index}: Mahimahi shell exited unexpectedly")

    def close(self) -> None:
        """Tear everything down (idempotent)."""
        if self.controller is not None:
            self.controller.close()
            self.controller = None
        while self.paths:
            self.paths.pop().close()
