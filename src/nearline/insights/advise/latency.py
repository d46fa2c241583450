"""Latency as the advisor sees it: a median and a 95th percentile, and mixes of such shares.

The rules are deliberately simple so that a result can be checked by hand:

* sequential steps add up, median to median and p95 to p95 (the p95 sum is an upper bound);
* a wait added on top (a micro-batch window, a batch period) adds its own median and p95;
* the p95 of a mix is taken, conservatively, as the p95 of the slowest share that holds more than
  5 % of the requests: when the slowest shares together hold at most 5 %, the 95th percentile
  falls into a faster one;
* the *typical* delay of a mix is its median by the same rule: the median of the slowest share
  (ordered by median) that brings the requests counted from the slowest above 50 %. It never
  exceeds the p95: the shares with a median above the p95 all have a p95 above it too, so they
  hold at most 5 %, not half. (The delay *cost* still adds up every share's median wait.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TAIL_SHARE = 0.05  # what lies above the 95th percentile


@dataclass(frozen=True, slots=True)
class Latency:
    p50_s: float
    p95_s: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.p50_s <= self.p95_s:
            raise ValueError(f"need 0 <= p50 <= p95, got p50={self.p50_s} p95={self.p95_s}")

    @classmethod
    def from_ms(cls, p50_ms: float, p95_ms: float) -> Latency:
        return cls(p50_ms / 1000.0, p95_ms / 1000.0)

    def __add__(self, other: Latency) -> Latency:
        return Latency(self.p50_s + other.p50_s, self.p95_s + other.p95_s)

    def shifted_down(self, seconds: float) -> Latency:
        """The same distribution ``seconds`` faster, floored at zero."""
        return Latency(max(0.0, self.p50_s - seconds), max(0.0, self.p95_s - seconds))


def uniform_wait(period_s: float) -> Latency:
    """Waiting for the next tick of a clock with this period, arriving at a random moment."""
    return Latency(0.5 * period_s, 0.95 * period_s)


ZERO = Latency(0.0, 0.0)


@dataclass(frozen=True, slots=True)
class LatencyShare:
    """A share of a path's requests that all see the same latency (cache hits, computed, ...)."""

    label: str
    share: float
    latency: Latency


def typical_delay_s(mix: Sequence[LatencyShare]) -> float:
    """The median of the mix (see the module's rules); never above ``p95_s(mix)``."""
    parts = sorted((part for part in mix if part.share > 0), key=lambda p: -p.latency.p50_s)
    if not parts:
        raise ValueError("a latency mix needs at least one share above zero")
    slower = 0.0
    for part in parts:
        slower += part.share
        if slower > 0.5:
            return part.latency.p50_s
    return parts[-1].latency.p50_s


def deciding_share(mix: Sequence[LatencyShare]) -> LatencyShare:
    """The share whose p95 is the p95 of the whole mix (see the module's rules)."""
    parts = sorted((part for part in mix if part.share > 0), key=lambda p: -p.latency.p95_s)
    if not parts:
        raise ValueError("a latency mix needs at least one share above zero")
    slower = 0.0
    for part in parts:
        slower += part.share
        if slower > TAIL_SHARE:
            return part
    return parts[-1]


def p95_s(mix: Sequence[LatencyShare]) -> float:
    return deciding_share(mix).latency.p95_s
