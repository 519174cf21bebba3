"""Optional Prometheus exposition of the partitioner's and the learner's numbers.

Needs ``prometheus_client`` (the ``metrics`` extra), imported only inside these functions. The
collector reads :meth:`itp.partitioner.TaskPartitioner.get_metrics` at every scrape, so Prometheus sees
exactly the numbers ``get_metrics()`` returns (no second bookkeeping). Names are prefixed ``itp_``;
counters end in ``_total``; the model version is an info metric.

Usage::

    from itp.learning.prometheus import serve_metrics
    server = serve_metrics(partitioner, port=9464)   # http://127.0.0.1:9464/metrics
    ...
    server.shutdown()
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

__all__ = ["COUNTERS", "GAUGES", "make_registry", "metric_families", "serve_metrics"]

logger = logging.getLogger(__name__)

#: get_metrics() field -> (Prometheus name without the _total suffix, help).
COUNTERS: Final[Mapping[str, tuple[str, str]]] = {
    "total_decisions": ("itp_decisions", "Decisions made"),
    "reported_outcomes": ("itp_reported_outcomes", "Outcomes reported"),
    "successful_tasks": ("itp_successful_tasks", "Reported tasks that succeeded"),
    "fallback_count": ("itp_fallback_decisions", "Heuristic decisions while a model was wanted"),
    "model_faults": ("itp_model_faults", "Model faults (load, inference error, NaN output)"),
    "expired_decisions": ("itp_expired_decisions", "Decisions never reported within the TTL"),
    "pushed_transitions": ("itp_pushed_transitions", "Transitions pushed into the experience ring"),
    "dropped_transitions": ("itp_dropped_transitions", "Transitions dropped (ring full or store overflow)"),
    "learner_update_count": ("itp_learner_updates", "Retrains completed"),
    "rollbacks": ("itp_rollbacks", "Canary and manual rollbacks"),
}
#: get_metrics() field -> (Prometheus name, help).
GAUGES: Final[Mapping[str, tuple[str, str]]] = {
    "success_rate": ("itp_success_rate", "Share of reported tasks that succeeded"),
    "avg_reward": ("itp_avg_reward", "Mean reward of reported tasks"),
    "agent_epsilon": ("itp_agent_epsilon", "Exploration rate"),
    "outstanding_decisions": ("itp_outstanding_decisions", "Decisions awaiting their outcome"),
    "experience_count": ("itp_experience_count", "Transitions in the durable store"),
    "buffer_size": ("itp_replay_buffer_size", "Transitions in the replay buffer"),
    "learner_is_training": ("itp_learner_is_training", "1 while a retrain runs"),
    "time_until_update": ("itp_time_until_update_seconds", "Seconds until the interval retrain trigger"),
    "canary_share": ("itp_canary_share", "Share of decisions routed to the candidate"),
}


def metric_families(metrics: Any) -> Iterator[Any]:
    """Prometheus metric families for one ``PartitionerMetrics`` snapshot."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

    data = metrics.as_dict() if hasattr(metrics, "as_dict") else dict(metrics)
    for key, (name, doc) in COUNTERS.items():
        yield CounterMetricFamily(name, doc, value=float(data.get(key) or 0))
    for key, (name, doc) in GAUGES.items():
        value = data.get(key)
        if value is not None:
            yield GaugeMetricFamily(name, doc, value=float(value))
    by_source = GaugeMetricFamily("itp_decisions_by_source", "Decisions per source", labels=["source"])
    for source, n in data.get("decisions_by_source", {}).items():
        by_source.add_metric([source], float(n))
    yield by_source
    faults = GaugeMetricFamily("itp_model_faults_by_cause", "Model faults per cause", labels=["cause"])
    for cause, n in data.get("faults_by_cause", {}).items():
        faults.add_metric([cause], float(n))
    yield faults
    arms = GaugeMetricFamily("itp_reward_by_arm", "Mean reward per canary arm", labels=["arm"])
    for arm, value in data.get("reward_by_arm", {}).items():
        arms.add_metric([arm], float(value))
    yield arms
    yield from _gate_families(data.get("learner") or {})
    yield InfoMetricFamily(
        "itp_model",
        "Models in service",
        value={
            "version": str(data.get("model_version") or ""),
            "backend": str(data.get("model_backend") or ""),
            "candidate_version": str(data.get("candidate_version") or ""),
        },
    )


def _gate_families(learner: Mapping[str, Any]) -> Iterator[Any]:
    """The last offline-gate verdict: passed, and its off-policy numbers when it made one (reward units
    per decision; ESS in rows)."""
    from prometheus_client.core import GaugeMetricFamily

    gate = learner.get("last_gate")
    if not isinstance(gate, Mapping):
        return
    yield GaugeMetricFamily(
        "itp_gate_passed", "1 if the last offline gate passed", value=float(bool(gate.get("passed")))
    )
    op = gate.get("offpolicy")
    if not isinstance(op, Mapping):
        return
    numbers = {
        "itp_gate_offpolicy_difference": ("difference", "Off-policy estimate V_candidate - V_current"),
        "itp_gate_offpolicy_lower": ("lower", "Lower end of the off-policy interval of the difference"),
        "itp_gate_offpolicy_upper": ("upper", "Upper end of the off-policy interval of the difference"),
    }
    for name, (key, doc) in numbers.items():
        yield GaugeMetricFamily(name, doc, value=float(op.get(key, float("nan"))))
    cand = op.get("candidate") or {}
    yield GaugeMetricFamily(
        "itp_gate_offpolicy_effective_samples",
        "Effective sample size of the candidate's off-policy estimate (rows)",
        value=float(cand.get("effective_sample_size", float("nan"))),
    )
    yield GaugeMetricFamily(
        "itp_gate_offpolicy_rows", "Held-back rows the off-policy verdict used",
        value=float(gate.get("offpolicy_rows") or 0),
    )


class _Collector:
    def __init__(self, snapshot: Callable[[], Any]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        yield from metric_families(self._snapshot())

    def describe(self) -> list[Any]:
        return []  # unchecked collector: the families depend on the snapshot


def make_registry(snapshot: Callable[[], Any]) -> Any:
    """A ``prometheus_client.CollectorRegistry`` whose one collector calls ``snapshot()`` per scrape.

    Raises:
        ModuleNotFoundError: prometheus_client is not installed (``pip install 'itp[metrics]'``).
    """
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot))
    return registry


def serve_metrics(partitioner_or_snapshot: Any, port: int, addr: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` on ``addr:port`` from a background thread; returns the server (``.shutdown()``).

    Args:
        partitioner_or_snapshot: a ``TaskPartitioner`` (its ``get_metrics``) or a callable returning a
            metrics snapshot.
        port: TCP port (0: any free port; the bound port is ``server.server_port``).
        addr: listen address (default loopback only).
    """
    from prometheus_client import start_http_server

    snapshot = (
        partitioner_or_snapshot if callable(partitioner_or_snapshot) else partitioner_or_snapshot.get_metrics
    )
    if hasattr(partitioner_or_snapshot, "get_metrics"):
        snapshot = partitioner_or_snapshot.get_metrics
    server, _thread = start_http_server(port, addr=addr, registry=make_registry(snapshot))
    logger.info("Prometheus metrics on http://%s:%d/metrics", addr, server.server_port)
    return server
