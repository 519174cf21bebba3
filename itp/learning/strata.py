"""Two arms compared within task-size strata (post-stratification), for the canary and its reports.

Why: per-task reward and goodput depend on the task's size far more than on the model that split it (on
the testbed's real paths tasks under 256 KiB reach about 8 Mbit/s, tasks of 2 MiB or more about 80; their
rewards 0.5 against 2.1). A canary routes each decision to an arm by an independent draw, so a hundred
tasks per arm carry a size mix that differs between the arms by chance (in one measured canary, 55 of 99
against 40 of 109 tasks under 256 KiB), and a pooled difference of means mostly measures that draw.
Comparing the arms within size strata and weighting the strata by their share of both arms' tasks
estimates the same quantity (the difference over the traffic's size mix) without that noise.

Estimator, with strata ``k``, per arm ``n``, mean ``m`` and sample variance ``v`` in each, and
``w_k = (n_ck + n_uk) / N`` over the strata used (those with at least 2 outcomes on each arm)::

    M_arm = sum_k w_k m_arm,k        var(M_arm) = sum_k w_k^2 v_arm,k / n_arm,k

The difference ``M_c - M_u`` has the variance ``var(M_c) + var(M_u)``; the ratio ``M_c / M_u`` has, on
the log scale by the delta method, ``var(M_c) / M_c^2 + var(M_u) / M_u^2``. Degrees of freedom by
Welch-Satterthwaite over the terms. Strata without 2 outcomes on each arm are left out (``coverage``
says which share of the outcomes was used); where none qualifies there is no estimate (NaN).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_SIZE_STRATA_BYTES",
    "Moments",
    "StratifiedEstimate",
    "check_size_strata",
    "compare_arms",
    "pooled_moments",
    "size_stratum",
    "stratified_difference",
    "stratified_ratio",
]

#: Upper bounds of the default task-size strata, bytes: < 256 KiB, 256 KiB - 4 MiB, 4 - 64 MiB, >= 64 MiB.
DEFAULT_SIZE_STRATA_BYTES: Final[tuple[int, ...]] = (256 << 10, 4 << 20, 64 << 20)


@dataclass(frozen=True, slots=True)
class Moments:
    """One arm's outcomes in one stratum: count, mean and sample variance (0 for fewer than 2)."""

    n: int
    mean: float
    variance: float


@dataclass(frozen=True, slots=True)
class StratifiedEstimate:
    """A stratified comparison of two arms.

    Attributes:
        value: the candidate's stratified mean minus the current's (:func:`stratified_difference`), or
            their ratio (:func:`stratified_ratio`); NaN where no stratum has 2 outcomes on each arm.
        se: its standard error (for a ratio: of its logarithm); NaN where undefined.
        df: Welch-Satterthwaite degrees of freedom (inf where both variances are 0; NaN where undefined).
        candidate_mean, current_mean: the arms' stratified means.
        strata_used: strata with at least 2 outcomes on each arm.
        coverage: the share of both arms' outcomes in those strata, in [0, 1].
    """

    value: float
    se: float
    df: float
    candidate_mean: float
    current_mean: float
    strata_used: int
    coverage: float


def check_size_strata(bounds: Sequence[int], field: str) -> tuple[int, ...]:
    """``bounds`` as a tuple of strictly ascending ints > 0 (upper bounds of the strata, bytes).

    Raises:
        TypeError/ValueError: naming ``field`` and the bad value.
    """
    try:
        out = tuple(bounds)
    except TypeError:
        raise TypeError(f"{field} must be a sequence of ints, got {bounds!r}") from None
    for b in out:
        if isinstance(b, bool) or not isinstance(b, int):
            raise TypeError(f"{field} must hold ints (bytes), got {b!r}")
    if any(b <= 0 for b in out) or list(out) != sorted(set(out)):
        raise ValueError(f"{field} must be strictly ascending ints > 0 (bytes), got {bounds!r}")
    return out


def size_stratum(size_bytes: int, bounds: Sequence[int]) -> int:
    """Index of the stratum of a task of ``size_bytes`` (``bounds`` ascending upper bounds; 0..len)."""
    return bisect.bisect_right(bounds, size_bytes)


def _combine(
    candidate: Sequence[Moments], current: Sequence[Moments]
) -> tuple[float, float, float, float, list[tuple[float, float]], int, float]:
    """(M_c, M_u, var M_c, var M_u, [(term, n-1) ...] for the df, strata used, coverage)."""
    if len(candidate) != len(current):
        raise ValueError(f"the arms must have the same strata, got {len(candidate)} and {len(current)}")
    used = [k for k in range(len(candidate)) if candidate[k].n >= 2 and current[k].n >= 2]
    total = sum(c.n + u.n for c, u in zip(candidate, current, strict=True))
    n_used = sum(candidate[k].n + current[k].n for k in used)
    if not used:
        return math.nan, math.nan, math.nan, math.nan, [], 0, 0.0
    m_c = m_u = v_c = v_u = 0.0
    terms_c: list[tuple[float, float]] = []
    terms_u: list[tuple[float, float]] = []
    for k in used:
        c, u = candidate[k], current[k]
        w = (c.n + u.n) / n_used
        m_c += w * c.mean
        m_u += w * u.mean
        tc, tu = w * w * c.variance / c.n, w * w * u.variance / u.n
        v_c += tc
        v_u += tu
        terms_c.append((tc, c.n - 1.0))
        terms_u.append((tu, u.n - 1.0))
    return m_c, m_u, v_c, v_u, terms_c + terms_u, len(used), n_used / total


def _df(terms: Sequence[tuple[float, float]], scale_c: float = 1.0, scale_u: float = 1.0) -> float:
    """Welch-Satterthwaite: (sum a)^2 / sum a^2 / (n - 1); the first half of ``terms`` is the candidate's."""
    half = len(terms) // 2
    a = [t * (scale_c if i < half else scale_u) for i, (t, _) in enumerate(terms)]
    num = sum(a) ** 2
    den = sum(ai * ai / dof for ai, (_, dof) in zip(a, terms, strict=True))
    return num / den if den > 0 else math.inf


def stratified_difference(candidate: Sequence[Moments], current: Sequence[Moments]) -> StratifiedEstimate:
    """The candidate's stratified mean minus the current's, with its standard error (module docstring)."""
    m_c, m_u, v_c, v_u, terms, used, coverage = _combine(candidate, current)
    if not used:
        return StratifiedEstimate(math.nan, math.nan, math.nan, math.nan, math.nan, 0, 0.0)
    return StratifiedEstimate(m_c - m_u, math.sqrt(v_c + v_u), _df(terms), m_c, m_u, used, coverage)


def stratified_ratio(candidate: Sequence[Moments], current: Sequence[Moments]) -> StratifiedEstimate:
    """The candidate's stratified mean over the current's; ``se`` is that of the log ratio (delta method).

    NaN where no stratum qualifies or a stratified mean is not > 0.
    """
    m_c, m_u, v_c, v_u, terms, used, coverage = _combine(candidate, current)
    if not used or not (m_c > 0 and m_u > 0):
        return StratifiedEstimate(math.nan, math.nan, math.nan, m_c, m_u, used, coverage)
    se = math.sqrt(v_c / (m_c * m_c) + v_u / (m_u * m_u))
    df = _df(terms, 1.0 / (m_c * m_c), 1.0 / (m_u * m_u))
    return StratifiedEstimate(m_c / m_u, se, df, m_c, m_u, used, coverage)


def pooled_moments(parts: Sequence[Moments]) -> Moments:
    """The moments of all the parts' values together (Chan et al.'s parallel merge of count, mean and
    sum of squared deviations; exact up to rounding)."""
    n, mean, m2 = 0, 0.0, 0.0
    for p in parts:
        if p.n == 0:
            continue
        total = n + p.n
        delta = p.mean - mean
        m2 += p.variance * (p.n - 1) + delta * delta * n * p.n / total
        mean += delta * p.n / total
        n = total
    return Moments(n, mean if n else 0.0, m2 / (n - 1) if n > 1 else 0.0)


def compare_arms(
    candidate: Sequence[Moments], current: Sequence[Moments], *, ratio: bool = False
) -> tuple[StratifiedEstimate, str]:
    """The candidate against the current arm: within strata where there is more than one stratum and
    some stratum has 2 outcomes on each arm, else on the pooled means. Returns the estimate (a difference,
    or with ``ratio`` a ratio) and ``"stratified"`` or ``"pooled"``."""
    estimate = stratified_ratio if ratio else stratified_difference
    if len(candidate) > 1:
        e = estimate(candidate, current)
        if math.isfinite(e.value):
            return e, "stratified"
    return estimate([pooled_moments(candidate)], [pooled_moments(current)]), "pooled"
