"""Emulated paths: validation, and on a real host a Mahimahi shell whose tbf follows the controller."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from itp.testbed.paths import PathConfig, PathSet, TransportSettings
from itp.testbed.rates import QueueSpec, RateSeries


def test_transport_and_path_validation() -> None:
    assert TransportSettings() == TransportSettings("bbr", True)
    with pytest.raises(ValueError, match="congestion_control"):
        TransportSettings("vegas")
    with pytest.raises(TypeError, match="slow_start_after_idle"):
        TransportSettings("bbr", 1)  # type: ignore[arg-type]
    for bad in (0, 10_001, 1.5, True):
        with pytest.raises(ValueError, match="one_way_delay_ms"):
            PathConfig(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loss_rate"):
        PathConfig(5, 0.7)
    with pytest.raises(ValueError, match=r"1\.\.4"):
        PathSet([], queue=QueueSpec(packets=10), transport=TransportSettings(), run_tag="t")


def _in_ns(netns: str, *cmd: str) -> str:
    return subprocess.run(
        ["nsenter", f"--net={netns}", *cmd], capture_output=True, text=True, check=True, timeout=10
    ).stdout


@pytest.mark.slow
def test_real_path_rate_controller_and_teardown(real_testbed: None, tmp_path: Path) -> None:
    series = RateSeries(0.1, np.array([20e6, 20e6, 7e6, 7e6, 7e6, 7e6, 7e6, 7e6]))
    with PathSet(
        [PathConfig(5), PathConfig(10, 0.01)],
        queue=QueueSpec(packets=50),
        transport=TransportSettings("cubic", False),
        run_tag="pytest",
        workdir=str(tmp_path),
    ) as ps:
        assert len(ps.paths) == 2 and ps.controller is not None
        holders = [p.holder_pid for p in ps.paths]
        assert ps.receiver_address == ps.paths[0].outer_address
        for p in ps.paths:
            assert Path(p.netns).exists()
            assert _in_ns(p.netns, "sysctl", "-n", "net.ipv4.tcp_congestion_control").strip() == "cubic"
            assert _in_ns(p.netns, "sysctl", "-n", "net.ipv4.tcp_slow_start_after_idle").strip() == "0"
        ps.controller.install([series, series])
        shown = _in_ns(ps.paths[1].netns, "tc", "qdisc", "show", "dev", ps.paths[1].device)
        assert re.search(r"tbf 1: root .*rate 20Mbit", shown), shown
        ps.controller.start(time.monotonic())
        deadline = time.monotonic() + 5
        while "rate 7Mbit" not in shown and time.monotonic() < deadline:
            time.sleep(0.05)
            shown = _in_ns(ps.paths[0].netns, "tc", "qdisc", "show", "dev", ps.paths[0].device)
        assert "rate 7Mbit" in shown
        ps.controller.stop()
        assert ps.controller.steps_applied >= 2
    # Torn down: the holders (and with them the namespaces and qdiscs) are gone.
    for pid in holders:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
