"""Shared test configuration.

With ``--import-mode=importlib`` pytest does not put ``tests/`` on ``sys.path``; the slow pure-Python
references (``reference.py``, ``reference_replay.py``) and helpers live there, so add it once here.
The package under test is always the *installed* ``itp`` (built by ``pip install .``).
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)
