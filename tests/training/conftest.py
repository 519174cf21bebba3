"""Puts this folder on sys.path (for ``training_helpers``) and keeps torch to one thread in tests.

One intra-op thread: the networks are tiny, the CI machine has two shared cores, and an oversubscribed
OpenMP pool is many times slower than one thread. The trainer sets its own count per run
(``TrainConfig.num_threads``) and restores this one afterwards.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    try:
        import torch
    except ImportError:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
