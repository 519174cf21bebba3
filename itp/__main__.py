"""``python -m itp``: the ``itp`` command line (``itp.cli.main``)."""

from __future__ import annotations

from itp.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
