"""Quantiles the library needs at run time, without scipy.

Student's quantile ``t_{0.975, df}`` (the 95% intervals of the testbed's repeats and of the canary
arms' Welch comparisons) comes from a table for df = 1..30 (exact to 4 decimals) and, for df > 30, the
Cornish-Fisher expansion ``z + (z^3 + z)/(4 df) + (5 z^5 + 16 z^3 + 3 z)/(96 df^2)`` around
``z = 1.959964`` (error < 1e-4 there). It lives here, not in the testbed, because the learning side
(:mod:`itp.learning.canary_arms`) uses it too.
"""

from __future__ import annotations

__all__ = ["t_quantile_975"]

_T975 = (
    12.7062,
    4.3027,
    3.1824,
    2.7764,
    2.5706,
    2.4469,
    2.3646,
    2.3060,
    2.2622,
    2.2281,
    2.2010,
    2.1788,
    2.1604,
    2.1448,
    2.1314,
    2.1199,
    2.1098,
    2.1009,
    2.0930,
    2.0860,
    2.0796,
    2.0739,
    2.0687,
    2.0639,
    2.0595,
    2.0555,
    2.0518,
    2.0484,
    2.0452,
    2.0423,
)
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` (>= 1) degrees of freedom (module docstring)."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an int >= 1, got {df!r}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df * df)
