"""Statistics: Student-t quantiles, t confidence intervals of a mean and Wilson intervals of a rate.

One return convention for every interval: :class:`Interval` ``(estimate, low, high)``, with ``half_width`` for
the symmetric t interval. Used by the evaluation report and the benchmark report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import NamedTuple


class Interval(NamedTuple):
    """A point estimate with a confidence interval; NaN bounds when there is no interval (too few values)."""

    estimate: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        """``(high - low) / 2`` (the ``±`` of a symmetric interval)."""
        return (self.high - self.low) / 2.0


def t_cdf(x: float, df: int) -> float:
    """CDF of Student's t with integer ``df`` in closed form (Abramowitz & Stegun 26.7.3 and 26.7.4).

    With ``theta = atan(x / sqrt(df))``, ``A = P(|T| < |x|)`` is a finite trigonometric sum, and
    ``F(x) = (1 + sign(x) A) / 2``.

    >>> round(t_cdf(2.228138851986274, 10), 6)
    0.975
    """
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, got {df}")
    theta = math.atan(abs(x) / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        total, term = 0.0, c  # cos(theta) * (1, 2/3 cos^2, 2*4/(3*5) cos^4, ...)
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c * c * (2 * k) / (2 * k + 1)
        a = (2.0 / math.pi) * (theta + s * total)
    else:
        total, term = 0.0, 1.0  # 1, 1/2 cos^2, 1*3/(2*4) cos^4, ...
        for k in range(1, df // 2 + 1):
            total += term
            term *= c * c * (2 * k - 1) / (2 * k)
        a = s * total
    return 0.5 + math.copysign(0.5 * a, x)


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t (inverse of :func:`t_cdf` by bisection, to about 1e-12).

    >>> round(t_quantile(0.975, 10), 3), round(t_quantile(0.975, 1), 3)
    (2.228, 12.706)
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low <= 1e-13 * max(1.0, high):
            break
    return 0.5 * (low + high)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean with its two-sided Student-t confidence interval; NaN values are ignored.

    No finite value gives all NaN; a single value gives its mean with NaN bounds.
    """
    xs = [float(v) for v in values if not math.isnan(float(v))]
    if not xs:
        return Interval(math.nan, math.nan, math.nan)
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Rate ``successes / n`` with its Wilson score interval (all NaN for ``n = 0``)."""
    if n == 0:
        return Interval(math.nan, math.nan, math.nan)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))
