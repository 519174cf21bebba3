"""Fixtures of the transfer tests: an output directory, a running receiver, an authenticated raw client.

Also puts this folder on ``sys.path`` so tests can import ``transfer_helpers``.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from transfer_helpers import SECRET, handshake  # noqa: E402

from itp.transfer import Receiver  # noqa: E402
from itp.transfer.protocol import AuthOk  # noqa: E402

RawClient = Callable[..., socket.socket]


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture
def receiver(out_dir: Path) -> Iterator[Receiver]:
    r = Receiver(out_dir, secret=SECRET)
    r.start()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def raw_client(receiver: Receiver) -> Iterator[RawClient]:
    """``raw_client()`` -> an authenticated socket to the receiver (closed after the test)."""
    opened: list[socket.socket] = []

    def make(**kwargs: object) -> socket.socket:
        sock, ok = handshake(receiver.port, **kwargs)  # type: ignore[arg-type]
        assert isinstance(ok, AuthOk)
        opened.append(sock)
        return sock

    yield make
    for s in opened:
        s.close()
