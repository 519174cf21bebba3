"""Sender end to end over loopback: byte-exact files, killed streams, receiver restarts, policies, reports."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from transfer_helpers import SECRET, all_files, make_file, sha256_of

import itp
from itp.model_loading import load_model
from itp.partitioner import TaskPartitioner
from itp.transfer import (
    POLICY_NAMES,
    ChunkReport,
    Receiver,
    ScheduledFile,
    Sender,
    SenderClosedError,
    TaskReport,
    send_files,
)
from itp.transfer.receiver import TEMP_PREFIX

KiB, MiB = 1 << 10, 1 << 20


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    return d


def addr(r: Receiver) -> str:
    return f"127.0.0.1:{r.port}"


def test_files_of_every_size_arrive_byte_exact(receiver: Receiver, src: Path, out_dir: Path) -> None:
    sizes = {"zero": 0, "one": 1, "k64": 64 * KiB, "m10": 10 * MiB, "m256": 256 * MiB}
    paths = [make_file(src / name, n) for name, n in sizes.items()]
    report = send_files(paths, addr(receiver), secret=SECRET, timeout_s=120)
    assert report.ok, [t.error for t in report.tasks]
    for p in paths:
        assert sha256_of(out_dir / p.name) == sha256_of(p), p.name
    assert sorted(all_files(out_dir)) == sorted(sizes)  # no temporary file left behind
    assert report.totals.delivered == 5 and report.totals.bytes == sum(sizes.values())
    assert [s.connects for s in report.streams] == [1, 1, 1, 1]  # 4 persistent streams, no reconnects
    by_name = {t.name: t for t in report.tasks}
    assert by_name["zero"].action is None and by_name["zero"].source == "empty"
    for t in report.tasks:
        assert sum(t.bytes_per_stream) == t.size_bytes
        assert sum(c.size_bytes for c in t.chunks) == t.size_bytes
        assert t.acked_s is not None and t.acked_s >= t.dispatched_s >= t.submitted_s
        assert t.seconds > 0 and t.retries == 0 and t.attempts == 1
        assert all(c.ok and c.seconds > 0 for c in t.chunks)
        # Each chunk's start window was read from TCP_INFO as it was sent (cwnd x MSS, or the restart
        # window after an idle gap longer than the RTO).
        assert all(c.start_window_bits > 0 for c in t.chunks)
    assert receiver.metrics().tasks_completed == 5


def test_equal_split_uses_all_four_streams(receiver: Receiver, src: Path, out_dir: Path) -> None:
    p = make_file(src / "f", 10 * MiB + 3)
    report = send_files([p], addr(receiver), secret=SECRET, policy="equal-split", timeout_s=60)
    t = report.tasks[0]
    assert t.ok and t.action == 14 and t.stream_ids == (0, 1, 2, 3)
    assert max(t.bytes_per_stream) - min(t.bytes_per_stream) <= 1
    assert sorted(c.stream_id for c in t.chunks) == [0, 1, 2, 3]
    assert sha256_of(out_dir / "f") == sha256_of(p)


def test_a_stream_killed_mid_chunk_is_resent_on_the_others(
    receiver: Receiver, src: Path, out_dir: Path
) -> None:
    p = make_file(src / "f", 16 * MiB)
    killed: list[int] = []

    def cut_stream_1(stream_id: int, sock: socket.socket, offset: int, name: str) -> None:
        if stream_id == 1 and not killed:  # header sent, payload not yet: a real mid-chunk failure
            killed.append(offset)
            sock.shutdown(socket.SHUT_RDWR)

    report = send_files(
        [p], addr(receiver), secret=SECRET, policy="equal-split", chunk_hook=cut_stream_1, timeout_s=60
    )
    t = report.tasks[0]
    assert killed and t.ok, t.error
    assert sha256_of(out_dir / "f") == sha256_of(p)
    resent = [c for c in t.chunks if c.offset == killed[0]]
    assert len(resent) == 1 and resent[0].retries == 1 and resent[0].ok
    assert t.retries == 1
    assert report.streams[1].failures >= 1 and report.streams[1].connects >= 1
    assert all_files(out_dir) == ["f"]


def test_receiver_restart_resends_only_unacknowledged_tasks(out_dir: Path, src: Path) -> None:
    first = Receiver(out_dir, secret=SECRET)
    first.start()
    port = first.port
    early = [make_file(src / f"early{i}", 1 * MiB) for i in range(2)]
    mid = make_file(src / "mid", 8 * MiB)
    second: list[Receiver] = []
    crashed = threading.Event()
    crash_lock = threading.Lock()

    def restart() -> None:
        time.sleep(0.2)  # the sender meets refused connects and backs off meanwhile
        r = Receiver(out_dir, secret=SECRET, port=port)
        r.start()
        second.append(r)

    def crash_during_mid(stream_id: int, sock: socket.socket, offset: int, name: str) -> None:
        with crash_lock:  # four writers may reach this at once: crash exactly once
            if name != "mid" or crashed.is_set():
                return
            crashed.set()
        first.close()  # the receiver goes away with this chunk half sent
        threading.Thread(target=restart).start()

    sender = Sender(addr(first), secret=SECRET, policy="equal-split", chunk_hook=crash_during_mid,
                    backoff_initial_s=0.02, backoff_max_s=0.2)
    try:
        done = [sender.submit(p).result(timeout=60) for p in early]
        assert all(t.ok for t in done)
        inodes = {p.name: (out_dir / p.name).stat().st_ino for p in early}
        result = sender.submit(mid).result(timeout=60)
        assert result.ok, result.error
        assert result.attempts >= 1 and result.retries >= 1
    finally:
        sender.close()
        for r in second:
            r.close()
    assert second, "the hook never restarted the receiver"
    assert second[0].metrics().tasks_completed == 1  # only "mid": acknowledged tasks were not re-sent
    assert {p.name: (out_dir / p.name).stat().st_ino for p in early} == inodes
    assert sha256_of(out_dir / "mid") == sha256_of(mid)
    assert not [f for f in all_files(out_dir) if TEMP_PREFIX in f]


def test_wrong_secret_fails_fast_and_writes_nothing(receiver: Receiver, src: Path, out_dir: Path) -> None:
    p = make_file(src / "f", 1000)
    report = send_files([p], addr(receiver), secret=b"another secret, 32 bytes long!!", timeout_s=30)
    assert not report.ok
    assert report.tasks[0].error is not None and "secret" in report.tasks[0].error
    assert all_files(out_dir) == []


def test_no_receiver_fails_after_the_reconnect_budget(src: Path) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    p = make_file(src / "f", 10)
    report = send_files([p], f"127.0.0.1:{port}", reconnect_timeout_s=0.3, backoff_max_s=0.05, timeout_s=30)
    assert not report.ok and "no stream can reach" in (report.tasks[0].error or "")


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_every_policy_delivers_and_reports_its_decision(
    receiver: Receiver, src: Path, out_dir: Path, policy: str
) -> None:
    paths = [make_file(src / f"f{i}", 300 * KiB + i) for i in range(4)]
    report = send_files(paths, addr(receiver), secret=SECRET, policy=policy, window=1, timeout_s=60)
    assert report.ok and report.policy == policy
    for p in paths:
        assert sha256_of(out_dir / p.name) == sha256_of(p)
    for t in report.tasks:
        assert t.action is not None and 0 <= t.action <= 14 and t.predicted_s > 0
        learned = ("model", "explore", "heuristic")
        assert t.source in (learned if policy in ("itp", "heuristic") else ("baseline",))
    if policy == "round-robin":
        assert [t.stream_ids for t in report.tasks] == [(0,), (1,), (2,), (3,)]
    if policy == "best-single":
        assert all(len(t.stream_ids) == 1 for t in report.tasks)
    if policy in ("equal-split", "rate-proportional"):
        assert all(t.action == 14 for t in report.tasks)
    for t in report.tasks:  # who decided, and the reward the learner was given (None: nothing reported)
        if policy in ("itp", "heuristic"):
            assert t.arm == "current" and t.reward is not None and math.isfinite(t.reward)
            assert (t.model_version is not None) == (policy == "itp")
        else:
            assert t.arm is None and t.model_version is None and t.reward is None


def test_canary_arm_and_model_are_reported_per_task(receiver: Receiver, src: Path) -> None:
    partitioner = TaskPartitioner()
    candidate = load_model(Path(itp.__file__).parent / "models" / "dqn_v1.onnx")
    partitioner.set_candidate(candidate, 1.0)
    paths = [make_file(src / f"f{i}", 200 * KiB) for i in range(3)]
    report = send_files(
        paths, addr(receiver), secret=SECRET, policy="itp", partitioner=partitioner, timeout_s=60
    )
    assert report.ok
    assert [t.arm for t in report.tasks] == ["candidate"] * 3
    assert all(t.model_version == candidate.version and t.reward is not None for t in report.tasks)
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["tasks"][0]["arm"] == "candidate" and doc["tasks"][0]["model_version"] == candidate.version


def test_outcomes_reach_the_learner_and_telemetry_the_table(receiver: Receiver, src: Path) -> None:
    partitioner = TaskPartitioner(None)
    paths = [make_file(src / f"f{i}", 2 * MiB) for i in range(3)]
    with Sender(addr(receiver), secret=SECRET, policy="heuristic", partitioner=partitioner) as sender:
        results = [f.result(timeout=60) for f in [sender.submit(p) for p in paths]]
        assert all(r.ok for r in results)
        for i in range(4):  # kernel telemetry, not the caller, filled the stream table
            bandwidth_bps, latency_s, congestion, success_rate = partitioner.get_stream(i)
            assert bandwidth_bps > 0 and latency_s > 0 and 0 <= congestion <= 1 and success_rate == 1.0
        report = sender.report()
    m = partitioner.get_metrics()
    assert m.reported_outcomes == 3 and m.successful_tasks == 3 and m.pushed_transitions == 3
    for s in report.streams:
        assert s.tcp_info is not None and s.tcp_info.rtt_s is not None and s.latency_s > 0
    # After close the streams are down: the table advertises no bandwidth, so nothing is placed there.
    assert all(partitioner.get_stream(i)[0] == 0.0 for i in range(4))


def test_a_stream_going_down_has_the_last_word_in_the_table(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A telemetry sample that read a stream up must not overwrite the "down" its failure published after
    it (found as a rare failure of the test above: after close, a stream still advertised bandwidth).
    The sample is held inside ``update_stream`` while the stream goes down and publishes; it must not be
    the last to write."""
    partitioner = TaskPartitioner(None)
    sender = Sender(addr(receiver), secret=SECRET, policy="heuristic", partitioner=partitioner)
    a, b = socket.socketpair()
    in_update, down_published = threading.Event(), threading.Event()
    real = TaskPartitioner.update_stream

    def held(self: TaskPartitioner, stream_id: int, **kw: float) -> None:
        if threading.current_thread().name == "sample" and kw["bandwidth_bps"] > 0:
            in_update.set()
            down_published.wait(0.5)  # unserialised, the "down" lands here and this write overwrites it
        real(self, stream_id, **kw)

    monkeypatch.setattr(TaskPartitioner, "update_stream", held)
    s = sender._streams[0]
    try:
        with sender._cv:
            s.sock = a  # up, as after a connect
        sample = threading.Thread(target=sender._publish, args=(s,), name="sample")
        sample.start()
        assert in_update.wait(5)
        with sender._cv:
            s.sock = None  # the failure's state change (``_stream_failed``)

        def go_down() -> None:
            sender._publish(s)
            down_published.set()

        down = threading.Thread(target=go_down)
        down.start()
        sample.join(5)
        down.join(5)
        assert not sample.is_alive() and not down.is_alive()
        assert partitioner.get_stream(0)[0] == 0.0
    finally:
        sender.close()
        a.close()
        b.close()


def test_close_waits_for_every_thread_spawned_concurrently(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers spawn readers concurrently. A thread appended but not yet started is not alive; a spawn
    that pruned the list then forgot it, close() did not wait for that reader, and its stream still
    advertised bandwidth after close (the second cause of the rare failure above, seen in CI). Starting
    late widens that window to every spawn."""
    real_start = threading.Thread.start

    def late_start(self: threading.Thread) -> None:
        time.sleep(0.002)
        real_start(self)

    sender = Sender(addr(receiver), secret=SECRET, policy="heuristic", partitioner=TaskPartitioner(None))
    release = threading.Event()
    monkeypatch.setattr(threading.Thread, "start", late_start)
    spawners = [
        threading.Thread(target=lambda: [sender._spawn(release.wait, "held") for _ in range(5)])
        for _ in range(4)
    ]
    for t in spawners:
        real_start(t)
    for t in spawners:
        t.join(10)
    monkeypatch.undo()
    with sender._threads_lock:
        held = [t for t in sender._threads if t.name == "held"]
    release.set()
    sender.close()
    assert len(held) == 20
    assert not any(t.is_alive() for t in held)


def test_a_connection_that_comes_up_during_close_is_closed(
    receiver: Receiver, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connect that finishes after close() shut the connections down must not install its socket:
    nothing would shut it, its reader would idle until the receiver's timeout, and the table would show
    the stream up."""
    import itp.transfer.sender as sender_module

    connecting, proceed = threading.Event(), threading.Event()
    real_connect = sender_module.connect_stream

    def slow_connect(endpoint: object, **kw: float) -> object:
        connecting.set()
        proceed.wait(10)
        return real_connect(endpoint, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(sender_module, "connect_stream", slow_connect)
    partitioner = TaskPartitioner(None)
    sender = Sender(addr(receiver), secret=SECRET, policy="heuristic", partitioner=partitioner)
    future = sender.submit(make_file(src / "f", 64 * KiB))
    assert connecting.wait(10)
    closer = threading.Thread(target=sender.close)
    closer.start()
    deadline = time.monotonic() + 10
    while not sender._closing and time.monotonic() < deadline:
        time.sleep(0.001)
    proceed.set()
    closer.join(20)
    assert not closer.is_alive()
    assert not future.result(timeout=5).ok  # the sender closed before the task finished
    assert all(s.sock is None for s in sender._streams)
    assert all(partitioner.get_stream(i)[0] == 0.0 for i in range(4))
    assert not any(t.name.startswith("itp-send-reader") and t.is_alive() for t in threading.enumerate())


def test_listeners_see_every_chunk_and_task(receiver: Receiver, src: Path) -> None:
    chunks: list[ChunkReport] = []
    tasks: list[TaskReport] = []
    with Sender(addr(receiver), secret=SECRET, policy="equal-split") as sender:
        sender.add_chunk_listener(chunks.append)
        sender.add_task_listener(tasks.append)
        futures = [sender.submit(make_file(src / f"f{i}", 1 * MiB), name=f"dir/f{i}") for i in range(3)]
        results = [f.result(timeout=60) for f in futures]
    assert sorted(t.name for t in tasks) == ["dir/f0", "dir/f1", "dir/f2"]
    assert len(chunks) == 12 and {c.task_name for c in chunks} == {"dir/f0", "dir/f1", "dir/f2"}
    assert sum(c.size_bytes for c in chunks) == 3 * MiB
    assert all(r.ok for r in results)


def test_fewer_streams_than_the_partitioner_decides_over(
    receiver: Receiver, src: Path, out_dir: Path
) -> None:
    p = make_file(src / "f", 4 * MiB)
    report = send_files([p], addr(receiver), secret=SECRET, policy="equal-split", streams=2, timeout_s=60)
    t = report.tasks[0]
    assert t.ok and len(report.streams) == 2
    assert {c.stream_id for c in t.chunks} <= {0, 1} and len(t.chunks) == 4
    assert sha256_of(out_dir / "f") == sha256_of(p)


def test_schedule_and_json_report(receiver: Receiver, src: Path, tmp_path: Path) -> None:
    a, b = make_file(src / "a", 1000), make_file(src / "b", 2000)
    entries = [ScheduledFile(str(b), 0.3, "later"), ScheduledFile(str(a), 0.0)]
    report = send_files(entries, addr(receiver), secret=SECRET, timeout_s=60)
    assert [t.name for t in report.tasks] == ["a", "later"]
    assert report.tasks[1].submitted_s >= 0.3 > report.tasks[0].submitted_s
    out = tmp_path / "report.json"
    report.write_json(out)
    doc = json.loads(out.read_text())
    assert doc["totals"]["delivered"] == 2 and doc["tasks"][1]["name"] == "later"
    assert set(doc["tasks"][0]) >= {"bytes_per_stream", "chunks", "seconds", "goodput_bps", "predicted_s"}
    assert set(doc["tasks"][0]["chunks"][0]) == {"task_name", "stream_id", "offset", "size_bytes", "seconds",
                                                 "retries", "ok", "start_window_bits"}


def test_bad_input_is_refused(receiver: Receiver, src: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="streams"):
        Sender(addr(receiver), streams=5)
    with pytest.raises(ValueError, match="destinations"):
        Sender(["127.0.0.1:1", "127.0.0.1:2"], streams=4)
    with pytest.raises(ValueError, match="netns"):
        Sender(addr(receiver), netns=["/a", "/b"])
    with pytest.raises(ValueError, match="unknown policy"):
        Sender(addr(receiver), policy="fastest")
    with pytest.raises(ValueError, match="window"):
        Sender(addr(receiver), window=0)
    with pytest.raises(ValueError, match="address"):
        Sender("nohost")
    sender = Sender(addr(receiver), secret=SECRET)
    with pytest.raises(FileNotFoundError):
        sender.submit(tmp_path / "missing")
    with pytest.raises(ValueError, match="regular file"):
        sender.submit(src)
    f = make_file(src / "f", 1)
    with pytest.raises(ValueError, match="name"):
        sender.submit(f, name="../escape")
    sender.close()
    with pytest.raises(SenderClosedError):
        sender.submit(f)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to create a network namespace",
)
def test_streams_connect_inside_a_network_namespace(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "nsout"
    out.mkdir()
    code = (
        "import sys; from itp.transfer import Receiver; r = Receiver(sys.argv[1]); r.start(); "
        "print(r.port, flush=True); r.serve_forever()"
    )
    proc = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" -c "$1" "$2"', sys.executable, code,
         str(out)],
        stdout=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        p = make_file(src / "f", 3 * MiB)
        netns = f"/proc/{proc.pid}/ns/net"
        report = send_files([p], f"127.0.0.1:{port}", netns=[netns], policy="equal-split", timeout_s=60)
        assert report.ok, report.tasks[0].error
        assert sha256_of(out / "f") == sha256_of(p)
        assert all("netns=" in s.destination for s in report.streams)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def test_tls_transfer_and_certificate_check(certificate: tuple[Path, Path], out_dir: Path, src: Path) -> None:
    from itp.transfer import client_tls_context, server_tls_context

    cert, key = certificate
    p = make_file(src / "f", 3 * MiB + 5)
    with Receiver(out_dir, secret=SECRET, tls=server_tls_context(cert, key)) as r:
        report = send_files([p], addr(r), secret=SECRET, tls=client_tls_context(cert), policy="equal-split",
                            timeout_s=60)
        assert report.ok, report.tasks[0].error
        assert sha256_of(out_dir / "f") == sha256_of(p)
        # A sender that does not trust the receiver's certificate sends nothing, and gives up at once.
        untrusted = send_files([p], addr(r), secret=SECRET, tls=client_tls_context(), timeout_s=60)
        assert not untrusted.ok and "certificate" in (untrusted.tasks[0].error or "").lower()


def test_report_history_is_bounded(receiver: Receiver, src: Path) -> None:
    paths = [make_file(src / f"f{i}", 10) for i in range(5)]
    report = send_files(paths, addr(receiver), secret=SECRET, policy="round-robin", report_history=2,
                        window=1, timeout_s=60)
    assert [t.name for t in report.tasks] == ["f3", "f4"] and report.ok
    with pytest.raises(ValueError, match="report_history"):
        Sender(addr(receiver), report_history=0)
