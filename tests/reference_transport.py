"""Slow, obviously right pure-Python reference of the transport model (``itp.transport``).

The common finish time is found by plain bisection over exact piecewise formulas (no Newton, no
subgradients), in ``fractions``-free float arithmetic with 200 halvings, so it is independent of the native
solver; chunks use the same proportional rule with largest-remainder rounding.

Runtime parameters: each stream may carry ``(setup_rtts, window_bits, efficiency)``; the model then uses
the rate ``efficiency * rate``, the fixed cost ``setup_rtts * rtt`` and slow start from ``window_bits``
(``math.inf``: no slow start). ``None`` means the defaults below.
"""

from __future__ import annotations

import math

SETUP_RTTS = 2.0
W_BITS = 8.0 * 14600.0

Params = tuple[float, float, float]
DEFAULT: Params = (SETUP_RTTS, W_BITS, 1.0)


def chunk_time(bits: float, rate: float, rtt: float, params: Params = DEFAULT) -> float:
    """Seconds for one chunk of ``bits`` (> 0) on a stream: fixed cost + slow start + full rate."""
    s_rtts, w, eta = params
    if bits <= 0:
        return 0.0
    if rate <= 0:
        return math.inf
    r = rate * eta
    bdp = r * rtt
    ramp_bits = bdp - w if bdp > w else 0.0
    ramp_s = rtt * math.log2(bdp / w) if bdp > w else 0.0
    if bits <= ramp_bits:
        return s_rtts * rtt + rtt * math.log2(1.0 + bits / w)
    return s_rtts * rtt + ramp_s + (bits - ramp_bits) / r


def bits_by(elapsed: float, rate: float, rtt: float, params: Params = DEFAULT) -> float:
    """Bits delivered ``elapsed`` seconds after the chunk started (inverse of ``chunk_time``)."""
    s_rtts, w, eta = params
    if rate <= 0:
        return 0.0
    t = elapsed - s_rtts * rtt
    if t <= 0:
        return 0.0
    r = rate * eta
    bdp = r * rtt
    ramp_bits = bdp - w if bdp > w else 0.0
    ramp_s = rtt * math.log2(bdp / w) if bdp > w else 0.0
    if t <= ramp_s:
        return w * (2.0 ** (t / rtt) - 1.0)
    return ramp_bits + r * (t - ramp_s)


def transport_split(
    size: int,
    streams: tuple[int, ...],
    rate: list[float],
    rtt: list[float],
    params: list[Params] | None = None,
) -> tuple[tuple[int, ...], float]:
    """(chunks per stream 0..3, finish time) by bisection on the common finish time."""
    p = params if params is not None else [DEFAULT] * 4
    usable = [i for i in streams if rate[i] > 0]
    if not usable:
        best = min(streams, key=lambda i: (rtt[i], i))
        return tuple(size if i == best else 0 for i in range(4)), math.inf
    bits = 8.0 * size
    lo, hi = 0.0, min(chunk_time(bits, rate[i], rtt[i], p[i]) for i in usable)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if sum(bits_by(mid, rate[i], rtt[i], p[i]) for i in usable) >= bits:
            hi = mid
        else:
            lo = mid
    shares = {i: bits_by(hi, rate[i], rtt[i], p[i]) for i in usable}
    total = sum(shares.values())
    exact = {i: size * shares[i] / total for i in usable}
    chunks = {i: math.floor(exact[i]) for i in usable}
    rest = size - sum(chunks.values())
    for i in sorted(usable, key=lambda i: -(exact[i] - chunks[i]))[:rest]:
        chunks[i] += 1
    return tuple(chunks.get(i, 0) for i in range(4)), hi
