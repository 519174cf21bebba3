"""Per-stream destinations: ``HOST:PORT`` parsing and a connect that can enter a network namespace.

A testbed (or a multi-homed host) gives each of the 4 streams its own path: its own destination, its own
source address (``bind``) or its own Linux network namespace (``netns``, e.g. ``/proc/PID/ns/net`` or
``/run/netns/NAME``). A socket keeps the namespace it was created in, so :func:`connect_stream` creates
and connects it on a short-lived dedicated thread that first calls ``setns(fd, CLONE_NEWNET)`` (libc via
ctypes; needs CAP_SYS_ADMIN). Only that thread changes namespace; the caller's threads never do.
Reconnects call :func:`connect_stream` again with the same endpoint, hence the same namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Final

__all__ = ["CLONE_NEWNET", "StreamEndpoint", "connect_stream", "parse_host_port"]

CLONE_NEWNET: Final = 0x40000000


@dataclass(frozen=True, slots=True)
class StreamEndpoint:
    """Where one stream connects.

    Attributes:
        host: receiver address (name, IPv4, or IPv6).
        port: receiver TCP port, 1..65535.
        netns: path of a network-namespace file to create the socket in, or None (the caller's).
        bind: local source address to bind before connecting, or None.
    """

    host: str
    port: int
    netns: str | None = None
    bind: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"host must be a non-empty str, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"port must be an int in 1..65535, got {self.port!r}")
        if self.netns is not None and (not isinstance(self.netns, str) or not self.netns):
            raise ValueError(f"netns must be a non-empty path or None, got {self.netns!r}")
        if self.bind is not None and (not isinstance(self.bind, str) or not self.bind):
            raise ValueError(f"bind must be a non-empty address or None, got {self.bind!r}")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        extra = "".join(
            f" {k}={v}" for k, v in (("netns", self.netns), ("bind", self.bind)) if v is not None
        )
        return f"{host}:{self.port}{extra}"


def parse_host_port(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` or ``"[IPv6]:PORT"`` -> ``(host, port)``.

    Raises:
        ValueError: no port, a port outside 1..65535, or an empty host (the text is named).
    """
    if not isinstance(text, str):
        raise TypeError(f"address must be a str, got {type(text).__name__}")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"address {text!r} must look like [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"address {text!r} must look like HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"address {text!r} has a non-numeric port {port_text!r}") from None
    if not host or not 0 <= port <= 65535:
        raise ValueError(f"address {text!r} needs a host and a port in 0..65535")
    return host, port


def _open_connected(endpoint: StreamEndpoint, timeout_s: float) -> socket.socket:
    infos = socket.getaddrinfo(
        endpoint.host, endpoint.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    last: OSError | None = None
    for family, _, _, _, addr in infos:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout_s)
            if endpoint.bind is not None:
                sock.bind((endpoint.bind, 0))
            sock.connect(addr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last if last is not None else OSError(f"no address for {endpoint.host!r}")


def _setns(path: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            why = f"setns({path!r}, CLONE_NEWNET) failed: {os.strerror(err)} (needs CAP_SYS_ADMIN)"
            raise OSError(err, why)
    finally:
        os.close(fd)


def connect_stream(endpoint: StreamEndpoint, *, timeout_s: float = 10.0) -> tuple[socket.socket, float]:
    """Create and connect one stream's TCP socket (TCP_NODELAY), inside ``endpoint.netns`` if given.

    Args:
        endpoint: destination, optional namespace and source address.
        timeout_s: connect timeout, seconds (> 0); the socket keeps it as its timeout.

    Returns:
        ``(socket, connect_s)``: the connected socket and the connect (handshake) time in seconds.

    Raises:
        OSError: resolution, namespace entry or connection failed (ECONNREFUSED, timeout, EPERM, ...).
    """
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    start = time.perf_counter()
    if endpoint.netns is None:
        sock = _open_connected(endpoint, timeout_s)
        return sock, time.perf_counter() - start
    result: list[socket.socket] = []
    error: list[BaseException] = []

    def run() -> None:  # this thread dies after connecting: its namespace change goes with it
        try:
            _setns(str(endpoint.netns))
            result.append(_open_connected(endpoint, timeout_s))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name="itp-netns-connect", daemon=True)
    thread.start()
    thread.join()
    if error:
        exc = error[0]
        raise exc if isinstance(exc, OSError) else OSError(str(exc))
    return result[0], time.perf_counter() - start
