"""TCP_INFO parsing by documented offsets, a real kernel sample, and the estimators' formulas."""

from __future__ import annotations

import socket
import struct
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from itp.transfer.telemetry import StreamEstimator, TcpInfo, parse_tcp_info, read_tcp_info

BO = "<" if sys.byteorder == "little" else ">"


def fake_tcp_info(**fields: int) -> bytes:
    """A 232-byte struct tcp_info with the given fields at their tcp.h offsets."""
    raw = bytearray(232)
    raw[0] = 1
    u32 = {"snd_mss": 16, "unacked": 24, "lost": 32, "rtt": 68, "rttvar": 72, "snd_cwnd": 80,
           "total_retrans": 100, "min_rtt": 148}
    u64 = {"bytes_acked": 120, "delivery_rate": 160, "busy_time": 168, "rwnd_limited": 176,
           "sndbuf_limited": 184, "bytes_sent": 200}
    for name, value in fields.items():
        if name == "app_limited":
            raw[7] = value
        elif name in u32:
            struct.pack_into(BO + "I", raw, u32[name], value)
        else:
            struct.pack_into(BO + "Q", raw, u64[name], value)
    return bytes(raw)


def test_fields_come_from_their_offsets_in_si_units() -> None:
    info = parse_tcp_info(fake_tcp_info(
        rtt=20_000, rttvar=5_000, min_rtt=15_000, snd_cwnd=42, total_retrans=3, bytes_acked=10**9,
        delivery_rate=12_500_000, busy_time=2_000_000, rwnd_limited=1_000, sndbuf_limited=500_000,
        bytes_sent=2 * 10**9, snd_mss=1448, app_limited=1,
    ))
    assert info.state == 1
    assert info.rtt_s == pytest.approx(0.020)
    assert info.rttvar_s == pytest.approx(0.005)
    assert info.min_rtt_s == pytest.approx(0.015)
    assert info.snd_cwnd_segments == 42
    assert info.total_retrans_segments == 3
    assert info.bytes_acked == 10**9
    assert info.delivery_rate_bps == pytest.approx(100e6)  # 12.5 MB/s
    assert info.busy_time_s == pytest.approx(2.0)
    assert info.rwnd_limited_s == pytest.approx(0.001)
    assert info.sndbuf_limited_s == pytest.approx(0.5)
    assert info.bytes_sent == 2 * 10**9
    assert info.snd_mss_bytes == 1448
    assert info.delivery_rate_app_limited is True
    assert info.length_bytes == 232


def test_a_shorter_struct_from_an_older_kernel_leaves_later_fields_none() -> None:
    raw = fake_tcp_info(rtt=1000, delivery_rate=1000, bytes_sent=5)[:104]  # up to total_retrans
    info = parse_tcp_info(raw)
    assert info.rtt_s == pytest.approx(0.001)
    assert info.total_retrans_segments == 0
    assert info.bytes_acked is None and info.min_rtt_s is None and info.delivery_rate_bps is None
    assert info.bytes_sent is None


@given(st.binary(min_size=8, max_size=300))
def test_any_length_parses(raw: bytes) -> None:
    info = parse_tcp_info(raw)
    assert info.length_bytes == len(raw)


def test_too_short_or_wrong_type_is_refused() -> None:
    with pytest.raises(ValueError, match="8 bytes"):
        parse_tcp_info(b"1234")
    with pytest.raises(TypeError):
        parse_tcp_info("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        read_tcp_info(object())  # type: ignore[arg-type]


def test_a_real_loopback_connection_reports_rtt_and_acked_bytes() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    try:
        payload = b"x" * (1 << 20)
        client.sendall(payload)
        got = 0
        while got < len(payload):
            got += len(peer.recv(1 << 20))
        info = read_tcp_info(client)
        assert info.state == 1  # ESTABLISHED
        assert info.rtt_s is not None and info.rtt_s > 0
        assert info.bytes_acked is not None and info.bytes_acked >= len(payload)
        assert info.snd_cwnd_segments is not None and info.snd_cwnd_segments > 0
    finally:
        for s in (client, peer, server):
            s.close()
    with pytest.raises(OSError):
        read_tcp_info(client)  # closed


def sample(rate_bps: float, rtt_s: float, min_rtt_s: float, app_limited: bool = False) -> TcpInfo:
    return parse_tcp_info(fake_tcp_info(
        rtt=round(rtt_s * 1e6), min_rtt=round(min_rtt_s * 1e6), delivery_rate=round(rate_bps / 8),
        app_limited=int(app_limited),
    ))


def test_estimator_priors_before_any_sample() -> None:
    est = StreamEstimator(initial_bandwidth_bps=50e6).estimate()
    assert (est.bandwidth_bps, est.latency_s, est.congestion, est.success_rate) == (50e6, 0.0, 0.0, 1.0)


def test_bandwidth_is_an_ewma_of_rate_samples() -> None:
    e = StreamEstimator(alpha=0.5)
    e.observe_tcp_info(sample(100e6, 0.02, 0.01))
    assert e.estimate().bandwidth_bps == pytest.approx(100e6)  # first sample initialises
    e.observe_tcp_info(sample(200e6, 0.02, 0.01))
    assert e.estimate().bandwidth_bps == pytest.approx(150e6)
    e.observe_tcp_info(sample(900e6, 0.02, 0.01, app_limited=True))  # ignored: app-limited
    assert e.estimate().bandwidth_bps == pytest.approx(150e6)
    e.observe_chunk(1 << 20, 8 * (1 << 20) / 50e6, ok=True)  # goodput sample of 50 Mbit/s
    assert e.estimate().bandwidth_bps == pytest.approx(100e6)
    e.observe_chunk(1000, 1e-6, ok=True)  # too small to be a rate sample
    assert e.estimate().bandwidth_bps == pytest.approx(100e6)
    assert e.estimate().rate_samples == 3


def test_latency_and_congestion_follow_the_kernel_rtt() -> None:
    e = StreamEstimator()
    e.observe_connect(0.004)
    assert e.estimate().latency_s == pytest.approx(0.004)
    e.observe_tcp_info(sample(1e6, 0.040, 0.010))
    est = e.estimate()
    assert est.latency_s == pytest.approx(0.040)
    assert est.congestion == pytest.approx(0.75)  # (40 - 10) / 40


def test_success_rate_is_windowed() -> None:
    e = StreamEstimator(window=4)
    for ok in (False, False, True, True):
        e.observe_chunk(10, 0.1, ok=ok)
    assert e.estimate().success_rate == pytest.approx(0.5)
    e.observe_chunk(10, 0.1, ok=True)
    e.observe_chunk(10, 0.1, ok=True)
    assert e.estimate().success_rate == pytest.approx(1.0)  # the failures left the window
    e.observe_failure()
    assert e.estimate().success_rate == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"alpha": 0.0}, "alpha"), ({"alpha": 1.5}, "alpha"), ({"window": 0}, "window"),
     ({"initial_bandwidth_bps": -1.0}, "initial_bandwidth_bps"),
     ({"min_goodput_chunk_bytes": 0}, "min_goodput")],
)
def test_bad_estimator_arguments_are_named(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StreamEstimator(**kwargs)  # type: ignore[arg-type]


def test_bad_observations_are_refused_and_change_nothing() -> None:
    e = StreamEstimator()
    with pytest.raises(ValueError, match="size_bytes"):
        e.observe_chunk(-1, 1.0, ok=True)
    with pytest.raises(ValueError, match="seconds"):
        e.observe_chunk(1, float("nan"), ok=True)
    with pytest.raises(ValueError, match="connect_s"):
        e.observe_connect(-1.0)
    assert e.estimate().success_rate == 1.0 and e.estimate().rate_samples == 0
