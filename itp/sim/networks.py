"""Named simulated networks whose physics differ from the training simulator's (``itp evaluate --adapt``).

The bundled model and the heuristic are fitted to the default ``SimConfig``: every chunk opens a fresh
connection (1.5 RTT set-up) and ramps up in slow start. Each preset below changes *only* the transport or
the path physics, never the workload (task sizes, arrivals, priorities) or the rate traces, so a policy's
numbers on a preset differ from its default-simulator numbers because of the physics alone:

========== ==========================================================================================
name       physics (``SimConfig`` overrides)
========== ==========================================================================================
sim        the training simulator itself (no override): the control
warm       persistent streams that keep their window: set-up 0.5 RTT (request and acknowledgement, no
           handshake), no slow start (``setup_rtts=0.5, slow_start=False``)
ss-restart persistent streams with Linux's slow-start restart after idle
           (``tcp_slow_start_after_idle = 1``): set-up 0.5 RTT, a chunk starts at the stream's last
           window unless the stream was idle longer than an RTO, then from the initial window
           (``setup_rtts=0.5, slow_start=True, persistent_window=True``)
lossy      stream 0 has heavy random loss: each attempt fails with extra probability 0.2, a failure
           hazard of 0.05 per second of transfer is added, and TCP under that loss reaches 30 % of the
           available rate (Mathis et al.: ``rate ~ MSS / (rtt sqrt(p))``)
collapse   stream 0's rate collapses to 5 % for 4 s every 30 s (of its trace loop), congestion near 1
           there (handover / outage pattern)
========== ==========================================================================================

``network_config(name, base)`` applies a preset to any base configuration (``dataclasses.replace``), so
e.g. ``tasks_per_episode`` set by the caller is kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from itp.sim.physics import SimConfig

__all__ = ["NETWORKS", "NETWORK_NAMES", "NetworkPreset", "network_config"]


@dataclass(frozen=True)
class NetworkPreset:
    """A named network: a one-line description and the ``SimConfig`` fields it overrides.

    Attributes:
        name: the preset's name (``itp evaluate --adapt NAME``).
        description: what differs from the training simulator, one line.
        overrides: ``SimConfig`` field -> value.
    """

    name: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def config(self, base: SimConfig | None = None) -> SimConfig:
        """``base`` (default ``SimConfig()``) with this preset's overrides (validated by ``SimConfig``)."""
        return dataclasses.replace(base if base is not None else SimConfig(), **self.overrides)


_PRESETS: tuple[NetworkPreset, ...] = (
    NetworkPreset("sim", "the training simulator (fresh connection per chunk, 1.5 RTT set-up, slow start)"),
    NetworkPreset(
        "warm",
        "persistent streams that keep their window: 0.5 RTT set-up, no slow start",
        {"setup_rtts": 0.5, "slow_start": False},
    ),
    NetworkPreset(
        "ss-restart",
        "persistent streams, 0.5 RTT set-up, slow-start restart after an idle gap longer than an RTO",
        {"setup_rtts": 0.5, "slow_start": True, "persistent_window": True},
    ),
    NetworkPreset(
        "lossy",
        "stream 0 with heavy random loss: +0.2 failure probability per attempt, +0.05/s hazard, "
        "30% of the available rate",
        {
            "path_efficiency": (0.3, 1.0, 1.0, 1.0),
            "path_loss_probability": (0.2, 0.0, 0.0, 0.0),
            "path_loss_hazard_per_s": (0.05, 0.0, 0.0, 0.0),
        },
    ),
    NetworkPreset(
        "collapse",
        "stream 0's rate collapses to 5% for 4 s every 30 s",
        {
            "collapse_stream": 0,
            "collapse_period_s": 30.0,
            "collapse_duration_s": 4.0,
            "collapse_rate_factor": 0.05,
        },
    ),
)

#: The presets by name, in the order above.
NETWORKS: dict[str, NetworkPreset] = {p.name: p for p in _PRESETS}
#: Their names, in order.
NETWORK_NAMES: tuple[str, ...] = tuple(NETWORKS)


def network_config(name: str, base: SimConfig | None = None) -> SimConfig:
    """The ``SimConfig`` of preset ``name`` applied to ``base`` (default ``SimConfig()``).

    Raises:
        TypeError: ``name`` is not a str.
        ValueError: unknown ``name`` (the message lists the known ones).
    """
    if not isinstance(name, str):
        raise TypeError(f"network name must be a str, got {type(name).__name__}")
    preset = NETWORKS.get(name)
    if preset is None:
        raise ValueError(f"unknown network {name!r}; expected one of {', '.join(NETWORK_NAMES)}")
    return preset.config(base)
