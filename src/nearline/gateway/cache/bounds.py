"""Confidence bounds the learned thresholds use (thresholds.py): binomial and Poisson counts.

Pure functions, no dependencies: Clopper-Pearson bounds on a rate seen as ``k`` of ``n``,
Garwood's bound on a Poisson mean, and Fay and Feuer's gamma bound on a *weighted* sum of
Poisson counts — the per-request estimate counts a wrong match seen on a verification
sample of rate ``r`` as ``1 / r`` wrong answers, and the gamma bound is the one that stays
tight when most of the count has weight one (M. P. Fay and E. J. Feuer, "Confidence
intervals for directly standardized rates: a method based on the gamma distribution",
Statistics in Medicine 16, 1997; conservative in their and later simulations).
"""

from __future__ import annotations

import math
from functools import lru_cache


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p): the pmf by its recurrence, O(k)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    term = math.exp(n * math.log1p(-p))
    if term == 0.0:  # underflow (n p in the hundreds): add the terms in log space
        return min(1.0, sum(math.exp(_log_binom_pmf(i, n, p)) for i in range(k + 1)))
    ratio, total = p / (1.0 - p), term
    for i in range(k):
        term *= (n - i) / (i + 1) * ratio
        total += term
    return min(1.0, total)


def within(wrong: int, n: int, rate: float, alpha: float) -> bool:
    """Whether the one-sided Clopper-Pearson upper bound at level ``1 - alpha`` on a rate
    seen as ``wrong`` out of ``n`` is at most ``rate`` (one CDF, no search)."""
    return n > 0 and wrong < n and binom_cdf(wrong, n, rate) <= alpha


@lru_cache(maxsize=65536)
def upper_bound(wrong: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound at level ``1 - alpha`` on a rate seen as
    ``wrong`` out of ``n`` (1.0 with no observations)."""
    if n <= 0 or wrong >= n:
        return 1.0
    if wrong == 0:
        return 1.0 - float(alpha ** (1.0 / n))
    low, high = wrong / n, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        if binom_cdf(wrong, n, middle) > alpha:
            low = middle
        else:
            high = middle
    return high


def lower_bound(wrong: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower bound at level ``1 - alpha`` (0.0 with none)."""
    if n <= 0 or wrong <= 0:
        return 0.0
    return 1.0 - upper_bound(n - wrong, n, alpha)


@lru_cache(maxsize=4096)
def poisson_upper(count: int, alpha: float) -> float:
    """One-sided upper bound at level ``1 - alpha`` on the mean of a Poisson count seen as
    ``count`` (Garwood): the mean whose P(X <= count) is ``alpha``."""
    low, high = float(count), float(count) + 10.0 + 10.0 * math.sqrt(count + 1)
    for _ in range(60):
        middle = (low + high) / 2
        term = total = math.exp(-middle)
        for i in range(1, count + 1):
            term *= middle / i
            total += term
        if total > alpha:
            low = middle
        else:
            high = middle
    return high


def gamma_cdf(x: float, shape: float) -> float:
    """The regularised lower incomplete gamma function P(shape, x) (unit scale): a series
    below ``shape + 1``, Lentz's continued fraction above."""
    if x <= 0.0:
        return 0.0
    log_front = shape * math.log(x) - x - math.lgamma(shape)
    if x < shape + 1.0:
        term = total = 1.0 / shape
        a = shape
        for _ in range(10_000):
            a += 1.0
            term *= x / a
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return min(1.0, total * math.exp(log_front))
    tiny = 1e-300
    b = x + 1.0 - shape
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - shape)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return max(0.0, 1.0 - math.exp(log_front) * h)


def gamma_quantile(p: float, shape: float, scale: float = 1.0) -> float:
    """The ``p`` quantile of a gamma distribution (bisection on :func:`gamma_cdf`)."""
    low, high = 0.0, max(1.0, shape) * 4.0 + 40.0
    while gamma_cdf(high, shape) < p:
        high *= 2.0
    for _ in range(80):
        middle = (low + high) / 2
        if gamma_cdf(middle, shape) < p:
            low = middle
        else:
            high = middle
    return high * scale


@lru_cache(maxsize=65536)
def weighted_poisson_upper(
    total: float, square_total: float, weight_max: float, alpha: float
) -> float:
    """One-sided upper bound at level ``1 - alpha`` on the mean of ``Σ w_i X_i`` (independent
    Poisson counts ``X_i`` with known weights ``w_i``), seen as ``total = Σ w_i x_i`` with
    ``square_total = Σ w_i² x_i``; ``weight_max`` is the largest weight a count could have
    (it sets the bound when nothing was seen). Fay and Feuer's gamma method; with every
    weight 1 it is Garwood's bound."""
    if weight_max <= 0.0:
        raise ValueError("weight_max must be positive")
    shape = (total + weight_max) ** 2 / (square_total + weight_max**2)
    scale = (square_total + weight_max**2) / (total + weight_max)
    return gamma_quantile(1.0 - alpha, shape, scale)


__all__ = [
    "binom_cdf",
    "gamma_cdf",
    "gamma_quantile",
    "lower_bound",
    "poisson_upper",
    "upper_bound",
    "weighted_poisson_upper",
    "within",
]
