"""Emulated real networks: real TCP over trace-driven paths (``itp testbed``); see docs/testbed.md."""
