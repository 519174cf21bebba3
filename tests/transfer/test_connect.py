"""Destinations: HOST:PORT parsing, endpoint validation, and a connect made inside a network namespace."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

from itp.transfer.connect import StreamEndpoint, connect_stream, parse_host_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9000", ("127.0.0.1", 9000)), ("localhost:0", ("localhost", 0)), ("[::1]:80", ("::1", 80))],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", ":80", "host:port", "h:70000", "[::1]80", "[::1"])
def test_bad_addresses_are_named(text: str) -> None:
    with pytest.raises(ValueError, match="address"):
        parse_host_port(text)


def test_endpoint_validation() -> None:
    with pytest.raises(ValueError, match="port"):
        StreamEndpoint("h", 0)
    with pytest.raises(ValueError, match="host"):
        StreamEndpoint("", 1)
    with pytest.raises(ValueError, match="netns"):
        StreamEndpoint("h", 1, netns="")
    assert str(StreamEndpoint("::1", 5, netns="/n")) == "[::1]:5 netns=/n"


def test_connect_refused_and_bind() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(ConnectionRefusedError):
        connect_stream(StreamEndpoint("127.0.0.1", port), timeout_s=2.0)
    server = socket.create_server(("127.0.0.1", 0))
    try:
        sock, connect_s = connect_stream(
            StreamEndpoint("127.0.0.1", server.getsockname()[1], bind="127.0.0.2"), timeout_s=2.0
        )
        peer, addr = server.accept()
        assert addr[0] == "127.0.0.2" and connect_s >= 0
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        sock.close()
        peer.close()
    finally:
        server.close()


def can_make_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and shutil.which("ip") is not None


@pytest.mark.skipif(not can_make_netns(), reason="needs root, unshare and ip to create a network namespace")
def test_connect_inside_a_network_namespace() -> None:
    # A listener that exists only inside a fresh namespace: reachable through setns, not from here.
    code = (
        "import socket,sys; s=socket.create_server(('127.0.0.1',0)); print(s.getsockname()[1], flush=True); "
        "c,_=s.accept(); c.sendall(b'inside'); c.close()"
    )
    proc = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", f"ip link set lo up && exec python3 -c \"{code}\""],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        netns = f"/proc/{proc.pid}/ns/net"
        # The sh exec'd python, so the pid is the listener's; its namespace is the new one.
        sock, _ = connect_stream(StreamEndpoint("127.0.0.1", port, netns=netns), timeout_s=5.0)
        data = sock.recv(16)
        sock.close()
        assert data == b"inside"
        with pytest.raises(OSError):  # the caller's thread is still in the original namespace
            connect_stream(StreamEndpoint("127.0.0.1", port), timeout_s=1.0)
        with pytest.raises(OSError):
            connect_stream(StreamEndpoint("127.0.0.1", port, netns="/nonexistent/ns"), timeout_s=1.0)
    finally:
        proc.kill()
        proc.communicate()
