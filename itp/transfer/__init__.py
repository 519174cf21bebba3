"""itp.transfer: move real files over parallel TCP streams, with itp choosing every split.

* :class:`Receiver` (``itp receive``): authenticated connections, per-chunk CRC-32C, atomic durable files.
* :class:`Sender` / :func:`send_files` (``itp send``): N persistent streams, the partitioner (or a
  baseline) decides each task's split, chunks go out with ``sendfile``, faults are resent, outcomes are
  reported to the learner.
* :func:`read_tcp_info` and :class:`StreamEstimator`: kernel telemetry of any TCP socket and the
  estimators that turn it into ``TaskPartitioner.update_stream`` inputs (public for users with their own
  transport).

The wire format, estimators and guarantees are described in ``docs/transfer.md``.
"""

from __future__ import annotations

from itp.transfer.auth import client_tls_context, load_secret, server_tls_context
from itp.transfer.connect import StreamEndpoint, parse_host_port
from itp.transfer.policy import POLICY_NAMES, Placement, SplitPolicy
from itp.transfer.protocol import PROTOCOL_VERSION, ProtocolError
from itp.transfer.receiver import Receiver, ReceiverMetrics
from itp.transfer.report import ChunkReport, SendReport, SendTotals, StreamReport, TaskReport
from itp.transfer.sender import ScheduledFile, Sender, SenderClosedError, send_files
from itp.transfer.telemetry import StreamEstimate, StreamEstimator, TcpInfo, read_tcp_info

__all__ = [
    "POLICY_NAMES",
    "PROTOCOL_VERSION",
    "ChunkReport",
    "Placement",
    "ProtocolError",
    "Receiver",
    "ReceiverMetrics",
    "ScheduledFile",
    "SendReport",
    "SendTotals",
    "Sender",
    "SenderClosedError",
    "SplitPolicy",
    "StreamEndpoint",
    "StreamEstimate",
    "StreamEstimator",
    "StreamReport",
    "TaskReport",
    "TcpInfo",
    "client_tls_context",
    "load_secret",
    "parse_host_port",
    "read_tcp_info",
    "send_files",
    "server_tls_context",
]
