"""Sample sizes and 95 % confidence intervals for every measured figure.

* a proportion (error rate, abandonment, cache share, hit rate): the Wilson score interval,
  which stays inside [0, 1] and is honest for small counts (2 errors in 40 is not "5 % ± 0");
* a percentile (p50, p95 of time to first useful content): the distribution-free
  order-statistic interval — the ranks ``n q ± z sqrt(n q (1 - q))`` of the sorted sample —
  which needs no assumption about the shape of the latency distribution;
* a rate (requests per day): the normal approximation of a Poisson count, ``k ± z sqrt(k)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959964


@dataclass(frozen=True, slots=True)
class Interval:
    """A measured value, its 95 % confidence interval and the sample it comes from."""

    value: float
    low: float
    high: float
    sample_size: int

    def to_json(self) -> dict[str, float | int]:
        return {
            "value": self.value,
            "ci_low": self.low,
            "ci_high": self.high,
            "sample_size": self.sample_size,
        }

    def percent(self, digits: int = 1) -> str:
        """``4.9 % [2.1-9.8 %, n=412]``."""
        return (
            f"{self.value:.{digits}%} [{self.low:.{digits}%}-{self.high:.{digits}%}, "
            f"n={self.sample_size}]"
        )


def wilson(successes: int, trials: int, z: float = Z95) -> Interval:
    """The Wilson score interval of ``successes / trials`` (``trials`` 0: the whole [0, 1])."""
    if trials <= 0:
        return Interval(0.0, 0.0, 1.0, 0)
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), trials)


def percentile(values: Sequence[float], q: float, z: float = Z95) -> Interval:
    """The ``q`` quantile (0 < q < 1; numpy's linear interpolation) and its order-statistic
    interval: the sorted sample's values at ranks ``n q - z sqrt(n q (1-q))`` and
    ``n q + z sqrt(n q (1-q)) + 1`` (1-based, clipped to the sample)."""
    if not values:
        raise ValueError("a percentile needs at least one value")
    ordered = np.sort(np.asarray(values, dtype=float))
    n = len(ordered)
    spread = z * math.sqrt(n * q * (1 - q))
    low_rank = max(1, math.floor(n * q - spread))
    high_rank = min(n, math.ceil(n * q + spread) + 1)
    value = float(np.percentile(ordered, q * 100))
    return Interval(value, float(ordered[low_rank - 1]), float(ordered[high_rank - 1]), n)


def poisson_rate(count: int, span_s: float, per_s: float = 86_400.0, z: float = Z95) -> Interval:
    """A rate per ``per_s`` seconds from ``count`` events over ``span_s`` seconds."""
    scale = per_s / span_s
    half = z * math.sqrt(count)
    return Interval(count * scale, max(0.0, count - half) * scale, (count + half) * scale, count)
