"""Group-sequential boundaries: how far a verdict must clear its margin when one stage is judged at
several counts, so that all the looks together spend no more than the one-sided error ``alpha``.

Why: the canary judges a stage at a few growing counts (``CanaryConfig.looks``), and every look that
could advance a candidate spends part of ``alpha``. The Bonferroni quantile ``z(1 - alpha / K)`` bounds
the total whatever the looks' correlation, but looks at 200, 400, 800 ... outcomes share most of their
data (the test statistics correlate as ``sqrt(n_j / n_k)``), so it overpays: for eight doubling looks it
asks for z = 2.50 where 2.37 spends exactly ``alpha``. The exact constant boundary (Pocock's, for looks at
unequal information) is the ``c`` with ``P(Z_k >= c at some look) = alpha`` when the statistic is a
Brownian motion observed at the looks' information (the counts) with no drift: the candidate exactly at
the margin. It is found here by recursive numerical integration (Armitage, McPherson & Rowe, 1969) over a
grid of the motion's value, carrying the probability *mass* of each cell from look to look (exact normal
transfer probabilities, so a small increment between two looks costs no accuracy), in numpy only.

Stopping early for another reason (a rollback for a worse reward or goodput) only removes paths that could
still cross, so the boundary stays valid, and conservative, for the canary's other verdicts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import lru_cache
from statistics import NormalDist

import numpy as np

__all__ = ["bonferroni_quantile", "constant_boundary", "crossing_probability"]

#: cells per look of the grid the motion's value is integrated on; 600 put the crossing probability
#: within 2e-6 of a 2000-cell integration for the default looks (tests/learning/test_sequential.py)
_CELLS = 600
#: the grid reaches this many standard deviations below zero (below, the mass is under 1e-15)
_LOW_SD = 8.0
_NORMAL = NormalDist()


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, elementwise, to about 1e-7 (Abramowitz & Stegun 7.1.26 on erf)."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return np.asarray(0.5 * (1.0 + np.sign(x) * erf))


def _checked(information: Sequence[float], alpha: float) -> tuple[tuple[float, ...], float]:
    info = tuple(float(x) for x in information)
    if not info:
        raise ValueError("information must name at least one look, got an empty sequence")
    if any(not math.isfinite(x) or x <= 0 for x in info) or any(b <= a for a, b in itertools.pairwise(info)):
        raise ValueError(f"information must be finite, > 0 and strictly ascending, got {information!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be a number in (0, 0.5), got {alpha!r}")
    return info, float(alpha)


def crossing_probability(c: float, information: Sequence[float], *, cells: int = _CELLS) -> float:
    """P(Z_k >= c at some look k) for a driftless Brownian motion S observed at ``information`` (its
    variance at each look; for the canary the counts), ``Z_k = S_k / sqrt(information_k)``."""
    info, _ = _checked(information, 0.25)
    if not math.isfinite(c):
        raise ValueError(f"c must be finite, got {c!r}")
    if cells < 10:
        raise ValueError(f"cells must be >= 10, got {cells!r}")
    sd = math.sqrt(info[0])
    crossed = float(1.0 - _normal_cdf(np.array([c]))[0])
    # Look 1: the mass of each cell of the continuation region [low, c * sd).
    edges = np.linspace(-_LOW_SD * sd, c * sd, cells + 1)
    mass = np.diff(_normal_cdf(edges / sd))
    centres = 0.5 * (edges[:-1] + edges[1:])
    previous = info[0]
    for current in info[1:]:
        step_sd = math.sqrt(current - previous)
        top = c * math.sqrt(current)
        # Mass that crosses at this look: from each cell, the chance the increment takes it over the top.
        crossed += float(mass @ (1.0 - _normal_cdf((top - centres) / step_sd)))
        edges = np.linspace(-_LOW_SD * math.sqrt(current), top, cells + 1)
        # cdf[i, j] = P(S_k < edges[j] | S_{k-1} = centres[i]); a cell's mass is the difference across it.
        cdf = _normal_cdf((edges[None, :] - centres[:, None]) / step_sd)
        mass = mass @ np.diff(cdf, axis=1)
        centres = 0.5 * (edges[:-1] + edges[1:])
        previous = current
    return crossed


@lru_cache(maxsize=64)
def _constant_boundary(info: tuple[float, ...], alpha: float) -> float:
    lo = _NORMAL.inv_cdf(1.0 - alpha)  # one look's quantile: no boundary for K looks is below it
    hi = _NORMAL.inv_cdf(1.0 - alpha / len(info))  # Bonferroni: none is above it
    if len(info) == 1:
        return lo
    # Regula falsi (Illinois) on the smooth, decreasing P(c) - alpha: a handful of integrations.
    f_lo, f_hi = crossing_probability(lo, info) - alpha, crossing_probability(hi, info) - alpha
    side = 0
    for _ in range(60):
        if f_hi <= 0.0 and hi - lo < 1e-6:
            break
        mid = (lo * f_hi - hi * f_lo) / (f_hi - f_lo) if f_lo != f_hi else 0.5 * (lo + hi)
        f_mid = crossing_probability(mid, info) - alpha
        if abs(f_mid) < 1e-9:
            lo = hi = mid
            f_hi = f_mid
            break
        if f_mid > 0.0:
            lo, f_lo = mid, f_mid
            if side == 1:
                f_hi *= 0.5
            side = 1
        else:
            hi, f_hi = mid, f_mid
            if side == -1:
                f_lo *= 0.5
            side = -1
    # hi spends at most alpha, up to the integration's error (about 2e-6; tests/learning/test_sequential.py)
    return hi


def constant_boundary(information: Sequence[float], alpha: float) -> float:
    """The constant boundary c for one-sided looks at ``information``: ``P(Z_k >= c at some look) =
    alpha`` (rounded up). Between the one-look quantile and Bonferroni's; equal to the first for one look.
    Cached per (information, alpha): the first call for a schedule takes about 60 ms per look on one
    core (0.4 s for ``itp send --learn``'s seven, 0.8 s for ``CanaryConfig()``'s thirteen), once per
    process, where a canary starts (the learner's thread, or a session resuming one).

    Raises:
        ValueError: ``information`` empty, not finite and positive, or not strictly ascending; ``alpha``
            not in (0, 0.5).
    """
    info, a = _checked(information, alpha)
    return _constant_boundary(info, a)


def bonferroni_quantile(looks: int, alpha: float) -> float:
    """``z(1 - alpha / looks)``: the boundary that holds for any correlation between the looks."""
    if isinstance(looks, bool) or not isinstance(looks, int) or looks < 1:
        raise ValueError(f"looks must be an int >= 1, got {looks!r}")
    _checked((1.0,), alpha)
    return _NORMAL.inv_cdf(1.0 - alpha / looks)
