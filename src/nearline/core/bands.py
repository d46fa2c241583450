"""Perception bands: how long a wait feels to a person. The one place their limits live.

The limits are the classic response-time thresholds (Miller 1968, Card et al. 1991,
Nielsen 1993): about 0.1 s feels instant, about 1 s keeps the flow of thought, about 10 s keeps
attention; beyond that the user turns to something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PerceptionBand(StrEnum):
    INSTANT = "instant"
    FLOW = "flow kept"
    ATTENTION = "attention kept"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class BandLimit:
    band: PerceptionBand
    upper_s: float  # inclusive; math.inf for the last band
    meaning: str


BAND_LIMITS: tuple[BandLimit, ...] = (
    BandLimit(PerceptionBand.INSTANT, 0.1, "feels like a direct reaction to the user's action"),
    BandLimit(PerceptionBand.FLOW, 1.0, "the delay is noticed, but the flow of thought is kept"),
    BandLimit(PerceptionBand.ATTENTION, 10.0, "the user waits, attention stays on the task"),
    BandLimit(PerceptionBand.LOST, float("inf"), "the user turns to something else"),
)


def band_of(seconds: float) -> PerceptionBand:
    """The band a wait of ``seconds`` falls in (limits are inclusive: 0.1 s is instant)."""
    if seconds < 0:
        raise ValueError(f"a wait cannot be negative: {seconds}")
    return next(limit.band for limit in BAND_LIMITS if seconds <= limit.upper_s)


def upper_limit_s(band: PerceptionBand) -> float:
    return next(limit.upper_s for limit in BAND_LIMITS if limit.band is band)


def next_faster(band: PerceptionBand) -> PerceptionBand | None:
    """The band one step faster than ``band``; ``None`` for ``INSTANT``."""
    order = [limit.band for limit in BAND_LIMITS]
    index = order.index(band)
    return order[index - 1] if index > 0 else None
