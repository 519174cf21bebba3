"""``itp receive`` + ``itp send`` end to end in subprocesses: files, JSON report, exit codes, signals."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SECRET = "0123456789abcdef0123456789abcdef"


def itp(*args: str, cwd: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m itp ...`` outside the repository (so the installed package is what runs)."""
    return subprocess.run(
        [sys.executable, "-m", "itp", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
        check=False,
    )


class ReceiverProcess:
    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "itp", "receive", *args], cwd=cwd, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line + self.proc.stderr.read()  # type: ignore[union-attr]
        self.port = int(line.split("listening on 127.0.0.1:")[1].split(",")[0])

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "secret").write_text(SECRET + "\n")
    return tmp_path


@pytest.fixture
def receiver(work: Path) -> Iterator[ReceiverProcess]:
    r = ReceiverProcess(work, "--listen", "127.0.0.1:0", "--dir", str(work / "dst"), "--secret-file",
                        str(work / "secret"))
    try:
        yield r
    finally:
        if r.proc.poll() is None:
            r.stop()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_send_and_receive_with_a_json_report(work: Path, receiver: ReceiverProcess) -> None:
    files = []
    for name, size in (("a.bin", 0), ("b.bin", 70_000), ("c.bin", 3 << 20)):
        p = work / "src" / name
        p.write_bytes(os.urandom(size))
        files.append(p)
    report = work / "report.json"
    res = itp("send", *map(str, files), "--to", f"127.0.0.1:{receiver.port}", "--secret-file",
              str(work / "secret"), "--json", str(report), "--no-progress", cwd=work)
    assert res.returncode == 0, res.stderr
    for p in files:
        assert digest(work / "dst" / p.name) == digest(p)
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("total: 3/3 files")
    assert "Mbit/s" in lines[0]
    doc = json.loads(report.read_text())
    assert doc["totals"]["delivered"] == 3 and doc["policy"] == "itp"
    assert len(doc["streams"]) == 4 and doc["streams"][0]["tcp_info"]["rtt_s"] is not None
    code, out, _ = receiver.stop(signal.SIGTERM)
    assert code == 0 and "3 files" in out and "stopped" in out


def test_schedule_policy_and_per_stream_destinations(work: Path, receiver: ReceiverProcess) -> None:
    a = work / "src" / "a"
    a.write_bytes(os.urandom(1000))
    schedule = work / "schedule.json"
    schedule.write_text(json.dumps([{"path": str(a), "start_s": 0.1, "name": "sub/renamed"}]))
    to = f"127.0.0.1:{receiver.port}"
    res = itp("send", "--schedule", str(schedule), "--to", to, "--to", to, "--streams", "2",
              "--policy", "round-robin", "--secret-file", str(work / "secret"), cwd=work)
    assert res.returncode == 0, res.stderr
    assert (work / "dst" / "sub" / "renamed").read_bytes() == a.read_bytes()
    assert "(round-robin)" in res.stdout


def test_learn_keeps_experience_and_calibration_across_runs(work: Path, receiver: ReceiverProcess) -> None:
    files = []
    for i in range(5):
        f = work / "src" / f"f{i}"
        f.write_bytes(os.urandom((i + 1) * 200_000))
        files.append(str(f))
    to, secret, learn = f"127.0.0.1:{receiver.port}", str(work / "secret"), str(work / "dep")
    report = work / "r.json"
    res = itp("send", *files, "--to", to, "--secret-file", secret, "--learn", learn, "--json", str(report),
              "--no-progress", cwd=work)
    assert res.returncode == 0, res.stderr
    assert "learning: serving" in res.stdout and "5 outcomes stored" in res.stdout
    learning = json.loads(report.read_text())["learning"]
    assert learning["experience_count"] == 5 and learning["restored_calibration_observations"] == 0
    held = sum(learning["calibration"]["observations"])
    assert held >= 5
    assert learning["guard_margin"] == 0.05 and learning["guard_overrides"] >= 0
    assert learning["guard_exploration"] is False and learning["explore_max_bytes"] is None
    assert learning["model_failures"] is False
    res = itp("send", *files[:2], "--to", to, "--secret-file", secret, "--learn", learn, "--epsilon", "0",
              "--guard-margin", "off", "--guard-exploration", "--explore-max-bytes", "300000",
              "--model-failures", "--json", str(report), "--no-progress", cwd=work)
    assert res.returncode == 0, res.stderr
    learning = json.loads(report.read_text())["learning"]
    assert learning["experience_count"] == 7 and learning["restored_calibration_observations"] == held
    assert learning["guard_margin"] is None and learning["guard_overrides"] == 0
    assert learning["guard_exploration"] is True and learning["explore_max_bytes"] == 300000
    assert learning["model_failures"] is True and learning["calibration"]["failure_models"] is not None
    for bad, message in ((["--policy", "rate-proportional"], "--learn needs the itp policy"),
                         (["--epsilon", "1.5"], "--epsilon must be in [0, 1]"),
                         (["--explore-top-k", "0"], "explore-top-k"),
                         (["--explore-max-bytes", "0"], "explore-max-bytes"),
                         (["--guard-margin", "-0.1"], "expected a number >= 0 or 'off'"),
                         (["--wait-for-retrain", "-1"], "--wait-for-retrain must be >= 0")):
        res = itp("send", files[0], "--to", to, "--learn", learn, *bad, cwd=work)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_wrong_secret_exits_1_with_one_line(work: Path, receiver: ReceiverProcess) -> None:
    f = work / "src" / "f"
    f.write_bytes(b"data")
    bad = work / "bad"
    bad.write_text("x" * 32)
    res = itp("send", str(f), "--to", f"127.0.0.1:{receiver.port}", "--secret-file", str(bad), cwd=work)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]  # exactly one line
    assert res.stderr.startswith("itp send: error: 1 of 1 files not delivered") and "secret" in res.stderr
    assert list((work / "dst").iterdir()) == []


def test_user_errors(work: Path) -> None:
    res = itp("receive", "--listen", "0.0.0.0:0", "--dir", str(work / "dst"), cwd=work)
    assert res.returncode == 1 and "non-loopback" in res.stderr and "Traceback" not in res.stderr
    res = itp("receive", "--listen", "nonsense", "--dir", str(work / "dst"), cwd=work)
    assert res.returncode == 2 and "HOST:PORT" in res.stderr
    res = itp("send", "--to", "127.0.0.1:9", cwd=work)
    assert res.returncode == 2 and "nothing to send" in res.stderr
    res = itp("send", str(work / "secret"), "--to", "127.0.0.1:9", "--policy", "fastest", cwd=work)
    assert res.returncode == 2 and "unknown policy" in res.stderr
    res = itp("send", str(work / "missing"), "--to", "127.0.0.1:9", cwd=work)
    assert res.returncode == 1 and "missing" in res.stderr and "Traceback" not in res.stderr
    short = work / "short"
    short.write_text("abc")
    res = itp("send", str(work / "secret"), "--to", "127.0.0.1:9", "--secret-file", str(short), cwd=work)
    assert res.returncode == 1 and "at least 16" in res.stderr


def test_sigint_stops_the_receiver_cleanly(work: Path) -> None:
    r = ReceiverProcess(work, "--listen", "127.0.0.1:0", "--dir", str(work / "dst"))
    code, out, err = r.stop(signal.SIGINT)
    assert code == 0 and "stopped" in out and "Traceback" not in err
