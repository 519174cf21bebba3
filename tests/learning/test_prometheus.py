"""Prometheus exposition: a real HTTP scrape on 127.0.0.1 shows get_metrics()'s numbers."""

from __future__ import annotations

import urllib.request

import pytest
from lifecycle_helpers import make_partitioner, run_traffic

pytest.importorskip("prometheus_client")

from itp.learning.prometheus import serve_metrics


def test_scrape_shows_the_partitioner_counters() -> None:
    p = make_partitioner(None)
    run_traffic(p, 25)
    server = serve_metrics(p, port=0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    lines = {
        line.split(" ")[0]: line.split(" ")[1]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert float(lines["itp_decisions_total"]) == 25
    assert float(lines["itp_reported_outcomes_total"]) == 25
    assert float(lines['itp_decisions_by_source{source="heuristic"}']) == 25
    assert float(lines["itp_outstanding_decisions"]) == 0
    assert 'itp_model_info{backend="",candidate_version="",version=""}' in lines
