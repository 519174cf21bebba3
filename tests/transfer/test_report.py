"""Report totals and JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itp.transfer.report import ChunkReport, SendReport, TaskReport, totals_of


def task(name: str, size: int, dispatched: float, acked: float | None, ok: bool = True) -> TaskReport:
    seconds = (acked - dispatched) if acked is not None else 1.0
    return TaskReport(
        name=name, path=f"/src/{name}", size_bytes=size, submitted_s=0.0, dispatched_s=dispatched,
        acked_s=acked, seconds=seconds, queued_s=dispatched, goodput_bps=8 * size / seconds if ok else 0.0,
        policy="itp", action=14, source="model", stream_ids=(0, 1, 2, 3), bytes_per_stream=(size, 0, 0, 0),
        predicted_s=0.5, chunks=(ChunkReport(name, 0, 0, size, seconds, 1, ok),), retries=1, attempts=1,
        ok=ok, error=None if ok else "boom",
    )


def test_totals() -> None:
    tasks = (task("a", 1000, 0.0, 1.0), task("b", 3000, 0.5, 2.0), task("c", 50, 0.2, None, ok=False))
    t = totals_of(tasks)
    assert (t.tasks, t.delivered, t.failed, t.bytes, t.retries) == (3, 2, 1, 4000, 3)
    assert t.seconds == pytest.approx(2.0)  # first dispatch to last acknowledgement
    assert t.aggregate_goodput_bps == pytest.approx(8 * 4000 / 2.0)
    assert t.mean_task_goodput_bps == pytest.approx((8000.0 + 8 * 3000 / 1.5) / 2)


def test_no_delivered_task() -> None:
    t = totals_of((task("c", 50, 0.2, None, ok=False),))
    assert t.seconds == 0.0 and t.aggregate_goodput_bps == 0.0 and t.mean_task_goodput_bps == 0.0
    assert totals_of(()).tasks == 0


def test_json_round_trip(tmp_path: Path) -> None:
    tasks = (task("a", 1000, 0.0, 1.0),)
    report = SendReport("itp", tasks, (), totals_of(tasks))
    out = tmp_path / "r.json"
    report.write_json(out)
    doc = json.loads(out.read_text())
    assert doc["policy"] == "itp" and doc["totals"]["bytes"] == 1000
    assert doc["tasks"][0]["chunks"][0]["retries"] == 1
    assert report.ok and not list(tmp_path.glob(".*tmp"))
