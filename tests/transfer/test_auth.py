"""HMAC proofs: direction-bound, nonce-bound, secret-bound; secret files; TLS contexts."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from itp.transfer import auth

NC, NS, SID = b"c" * 32, b"s" * 32, b"i" * 16


def test_proofs_depend_on_secret_nonces_and_direction() -> None:
    k = b"k" * 32
    base = auth.server_mac(k, NC, NS, SID)
    assert len(base) == 32
    assert base != auth.client_mac(k, NC, NS, SID)  # a proof cannot be reflected
    assert base != auth.server_mac(b"j" * 32, NC, NS, SID)
    assert base != auth.server_mac(k, b"d" * 32, NS, SID)
    assert base != auth.server_mac(k, NC, b"t" * 32, SID)
    assert base != auth.server_mac(k, NC, NS, b"j" * 16)
    assert auth.macs_equal(base, auth.server_mac(k, NC, NS, SID))
    assert not auth.macs_equal(base, auth.server_mac(None, NC, NS, SID))


def test_load_secret_strips_whitespace_and_requires_16_bytes(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("  " + "a" * 20 + "\n")
    assert auth.load_secret(f) == b"a" * 20
    f.write_text("short\n")
    with pytest.raises(ValueError, match="5 bytes"):
        auth.load_secret(f)
    with pytest.raises(FileNotFoundError):
        auth.load_secret(tmp_path / "missing")


def test_tls_contexts_verify_by_default() -> None:
    ctx = auth.client_tls_context()
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
