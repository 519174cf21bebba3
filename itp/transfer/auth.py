"""Mutual authentication of a transfer connection (HMAC-SHA256 challenge-response) and optional TLS.

Handshake (frames of :mod:`itp.transfer.protocol`), with ``K`` the shared secret (empty when neither
side has one)::

    S -> R  HELLO      client_nonce Nc (32 random bytes), session_id, stream_index
    R -> S  CHALLENGE  server_nonce Ns, instance_id, server_mac = HMAC(K, "itp1 receiver" | Nc | Ns | sid)
    S       verifies server_mac (constant time): the receiver knows K, so data never goes to an impostor
    S -> R  AUTH       client_mac = HMAC(K, "itp1 sender" | Ns | Nc | sid)
    R       verifies client_mac (constant time); wrong -> ERROR frame, connection closed, nothing written
    R -> S  AUTH_OK    the receiver's limits

Each side proves knowledge of ``K`` over a nonce the *other* side chose, so a recorded exchange cannot be
replayed; the distinct labels stop one side's proof being reflected as the other's. HMAC does not
encrypt: on untrusted networks add TLS (``ssl``; the receiver's certificate is verified against a CA file
given to the sender), which also protects the payload.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import ssl
from pathlib import Path
from typing import Final

__all__ = [
    "MIN_SECRET_BYTES",
    "client_mac",
    "client_tls_context",
    "load_secret",
    "macs_equal",
    "server_mac",
    "server_tls_context",
]

MIN_SECRET_BYTES: Final = 16
"""Shortest accepted secret (bytes, after stripping surrounding whitespace)."""
_RECEIVER_LABEL: Final = b"itp1 receiver"
_SENDER_LABEL: Final = b"itp1 sender"


def load_secret(path: str | os.PathLike[str]) -> bytes:
    """Read a shared secret file (surrounding whitespace stripped, so ``echo $SECRET > f`` works).

    Raises:
        FileNotFoundError / PermissionError: the file cannot be read.
        ValueError: the secret is shorter than MIN_SECRET_BYTES bytes (named with its length).
    """
    secret = Path(path).read_bytes().strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"secret file {os.fspath(path)!r} holds {len(secret)} bytes; at least {MIN_SECRET_BYTES} needed "
            "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))' > secret`)"
        )
    return secret


def server_mac(secret: bytes | None, client_nonce: bytes, server_nonce: bytes, session_id: bytes) -> bytes:
    """The receiver's proof: HMAC-SHA256(secret, "itp1 receiver" | Nc | Ns | session_id), 32 bytes."""
    msg = _RECEIVER_LABEL + client_nonce + server_nonce + session_id
    return hmac.new(secret or b"", msg, hashlib.sha256).digest()


def client_mac(secret: bytes | None, client_nonce: bytes, server_nonce: bytes, session_id: bytes) -> bytes:
    """The sender's proof: HMAC-SHA256(secret, "itp1 sender" | Ns | Nc | session_id), 32 bytes."""
    msg = _SENDER_LABEL + server_nonce + client_nonce + session_id
    return hmac.new(secret or b"", msg, hashlib.sha256).digest()


def macs_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison (``hmac.compare_digest``)."""
    return hmac.compare_digest(a, b)


def server_tls_context(cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2+) with the receiver's certificate chain and key.

    Raises:
        ssl.SSLError / OSError: unreadable or mismatched files.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(os.fspath(cert_file), os.fspath(key_file))
    return ctx


def client_tls_context(ca_file: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """A TLS client context (TLS 1.2+) that verifies the receiver's certificate and host name.

    Args:
        ca_file: PEM file of the CA (or self-signed certificate) to trust; None: the system store.
    """
    ctx = ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file is not None else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
