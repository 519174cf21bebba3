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


def test_last_gate_off_policy_numbers_are_exposed() -> None:
    from itp.learning.prometheus import metric_families

    gate = {
        "passed": True,
        "offpolicy_rows": 400,
        "offpolicy": {
            "difference": 0.12, "lower": 0.05, "upper": 0.19,
            "candidate": {"effective_sample_size": 150.5},
        },
    }
    families = {f.name: f for f in metric_families({"learner": {"last_gate": gate}})}
    value = {name: f.samples[0].value for name, f in families.items() if name.startswith("itp_gate")}
    assert value == {
        "itp_gate_passed": 1.0,
        "itp_gate_offpolicy_difference": 0.12,
        "itp_gate_offpolicy_lower": 0.05,
        "itp_gate_offpolicy_upper": 0.19,
        "itp_gate_offpolicy_effective_samples": 150.5,
        "itp_gate_offpolicy_rows": 400.0,
    }
    # A simulator-only verdict has no off-policy numbers; no learner, no gate families at all.
    sim_only = {f.name for f in metric_families({"learner": {"last_gate": {"passed": False}}})}
    assert "itp_gate_passed" in sim_only and "itp_gate_offpolicy_lower" not in sim_only
    assert not any(f.name.startswith("itp_gate") for f in metric_families({}))
