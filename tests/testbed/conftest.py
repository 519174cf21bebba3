"""Skips for tests that need a real testbed host (root, Mahimahi, the testbed user)."""

from __future__ import annotations

import pytest

from itp.testbed.host import check_host


def testbed_missing() -> str | None:
    """Why a real testbed cannot run here, or None when it can."""
    missing = [f"{r.name} ({r.detail})" for r in check_host(["bbr"]) if not r.ok]
    return "testbed host not ready: " + "; ".join(missing) if missing else None


@pytest.fixture
def real_testbed() -> None:
    """Skip the test, with the reason, unless root, Mahimahi and the testbed user are available."""
    reason = testbed_missing()
    if reason is not None:
        pytest.skip(reason)
