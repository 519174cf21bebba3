"""Statistics of testbed runs: per-repeat metrics and 95% confidence intervals over repeats.

Per repeat r and policy p the run measures, over the repeat's tasks: the mean and the 95th percentile
of completion times (seconds), the mean per-task goodput (bits delivered / completion time, bit/s), the
aggregate goodput (all bytes / (last finish - first start), bit/s) and the success fraction. Repeats
are independent draws of the schedule (``itp.testbed.schedule``), so each metric's R values are i.i.d.
and its 95% confidence interval is Student's t::

    mean +- t_{0.975, R-1} * s / sqrt(R),     s = sample standard deviation (ddof = 1)

With one repeat there is no interval (half-width NaN, printed as "n/a"). Percentiles are numpy's
linear interpolation (``np.percentile(..., method="linear")``), the same as the simulator's tables.

Student's quantile ``t_{0.975, df}`` is :func:`itp.quantiles.t_quantile_975` (a table and an expansion;
no scipy needed at run time), re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from itp.quantiles import t_quantile_975

__all__ = ["Estimate", "mean_ci", "percentile", "t_quantile_975"]


@dataclass(frozen=True)
class Estimate:
    """A mean over repeats with its 95% confidence half-width (NaN when fewer than 2 values).

    Attributes:
        mean: the sample mean (NaN for no values).
        half_width: ``t * s / sqrt(n)``.
        n: number of values.
    """

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        """Lower end of the interval."""
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        """Upper end of the interval."""
        return self.mean + self.half_width

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready: ``mean``, ``ci95_half_width`` (None when undefined), ``n``."""

        def num(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {"mean": num(self.mean), "ci95_half_width": num(self.half_width), "n": self.n}


def mean_ci(values: Sequence[float]) -> Estimate:
    """Mean and 95% Student-t confidence half-width of ``values`` (finite numbers).

    Raises:
        ValueError: a value is not finite (named with its index).
    """
    arr = np.asarray(list(values), dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"values[{int(bad[0])}] must be finite, got {arr[bad[0]]!r}")
    n = int(arr.size)
    if n == 0:
        return Estimate(math.nan, math.nan, 0)
    mean = float(arr.mean())
    if n < 2:
        return Estimate(mean, math.nan, n)
    s = float(arr.std(ddof=1))
    return Estimate(mean, t_quantile_975(n - 1) * s / math.sqrt(n), n)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100, linear interpolation) of ``values``; NaN when empty."""
    if not (isinstance(q, (int, float)) and 0.0 <= q <= 100.0):
        raise ValueError(f"q must be in [0, 100], got {q!r}")
    if len(values) == 0:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))
