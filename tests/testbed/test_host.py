"""Host checks and leftovers: real processes as the testbed user and in run directories, found and ended."""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest

from itp.testbed.host import (
    TEMP_PREFIX,
    TESTBED_USER,
    Leftovers,
    check_host,
    clean_leftovers,
    find_leftovers,
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_check_host_names_every_requirement() -> None:
    names = [r.name for r in check_host(["bbr", "reno"])]
    for expected in (
        "linux",
        "root",
        "tc",
        "nsenter",
        "iperf3",
        "mm-delay",
        "mm-loss",
        f"user {TESTBED_USER}",
        "congestion control bbr",
        "congestion control reno",
    ):
        assert expected in names
    assert all(isinstance(r.ok, bool) and r.detail for r in check_host())


def test_unknown_congestion_control_is_missing() -> None:
    (req,) = [r for r in check_host(["no-such-cc"]) if r.name == "congestion control no-such-cc"]
    assert not req.ok


def test_nothing_found_in_an_empty_temp_dir(tmp_path: Path) -> None:
    found = find_leftovers(user="no-such-user-itp", temp_dir=tmp_path)
    assert found.directories == () and found.namespaces == ()
    assert all(p.reason != "runs as no-such-user-itp" for p in found.processes)


def test_run_directory_process_and_directory_are_found_and_cleaned(tmp_path: Path) -> None:
    run_dir = tmp_path / f"{TEMP_PREFIX}run-test"
    run_dir.mkdir()
    (run_dir / "report.json").write_text("{}")
    other = tmp_path / "not-ours"
    other.mkdir()
    # A crashed run's child: its working directory is the run directory (as the tc controllers').
    proc = subprocess.Popen(["sleep", "60"], cwd=run_dir, start_new_session=True)
    try:
        found = find_leftovers(user="no-such-user-itp", temp_dir=tmp_path)
        mine = [p for p in found.processes if p.pid == proc.pid]
        assert len(mine) == 1 and mine[0].reason == "belongs to a testbed run directory"
        assert found.directories == (run_dir,)
        assert any(str(proc.pid) in line for line in found.describe())
        done = clean_leftovers(Leftovers(tuple(mine), found.directories, ()))
        assert proc.wait(timeout=5) != 0  # killed
        assert not run_dir.exists() and other.exists()
        assert any("SIGTERM" in line for line in done)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_testbed_user_processes_are_found_and_cleaned(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to start a process as the testbed user")
    try:
        pwd.getpwnam(TESTBED_USER)
    except KeyError:
        pytest.skip(f"user {TESTBED_USER} missing (itp testbed setup creates it)")
    # runuser (root) -> sleep (testbed user), in its own group, like a Mahimahi shell.
    proc = subprocess.Popen(["runuser", "-u", TESTBED_USER, "--", "sleep", "60"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while True:
            found = find_leftovers(temp_dir=tmp_path)
            mine = [p for p in found.processes if p.pgid == proc.pid]
            if len(mine) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        reasons = sorted(p.reason for p in mine)
        assert reasons == [f"runs as {TESTBED_USER}", f"starts a process as {TESTBED_USER}"]
        clean_leftovers(Leftovers(tuple(mine), (), ()))
        proc.wait(timeout=5)
        assert not any(_alive(p.pid) for p in mine)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
