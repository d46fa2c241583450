"""What a second of delay costs, derived from the log's measured abandonment.

Users who wait longer leave more often. The log says, for every request, how long the user
waited for the first useful content (a request that never showed any: its whole duration) and
whether they left before the answer was complete (``outcome == "abandoned"``). The slope of
abandonment over the wait — least squares of the 0/1 outcome on the wait, capped at the
attention limit (10 s, past which the user is gone anyway) — is the abandonment one more second
adds. Times what an abandoned request costs, it is the cost of a second of delay:

    delay_cost_per_second = slope (abandonments per request per second) x cost of one abandonment

The cost of one abandonment is the path's ``lost_request_cost_usd`` (profile or
``--lost-request-cost``) when given; otherwise the measured mean spend of a computed request,
a lower bound (only the money spent on an answer nobody read). The slope's interval is a
bootstrap (200 resamples, fixed seed) and the abandonment per perception band is printed beside
it so the derivation can be checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nearline.core.bands import BAND_LIMITS, PerceptionBand, band_of, upper_limit_s
from nearline.insights.advise.requestlog import RequestLogRecord
from nearline.insights.advise.stats import Interval, wilson

MIN_ROWS = 20  # fewer requests than this say nothing about a slope
BOOTSTRAP_RESAMPLES = 200


@dataclass(frozen=True, slots=True)
class BandAbandonment:
    band: PerceptionBand
    abandoned: Interval  # share of the requests whose wait fell in this band


@dataclass(frozen=True, slots=True)
class DerivedDelayCost:
    per_second_usd: float
    slope_per_s: Interval  # abandonment added per second of wait
    abandon_cost_usd: float
    abandon_cost_from: str
    by_band: tuple[BandAbandonment, ...]

    @property
    def sample_size(self) -> int:
        return self.slope_per_s.sample_size

    def describe(self) -> str:
        s = self.slope_per_s
        bands = ", ".join(
            f"{b.band.value} {b.abandoned.value:.1%} of {b.abandoned.sample_size}"
            for b in self.by_band
        )
        return (
            f"derived from measured abandonment: {s.value:+.2%} per second of wait "
            f"[{s.low:+.2%} to {s.high:+.2%}, n={s.sample_size}] (by band: {bands}) "
            f"x ${self.abandon_cost_usd:.4g} per abandoned request ({self.abandon_cost_from}) "
            f"= ${self.per_second_usd:.4g}/s"
        )


def derive_delay_cost(
    records: Sequence[RequestLogRecord],
    *,
    lost_request_cost_usd: float | None,
    mean_cost_usd: float,
) -> DerivedDelayCost | None:
    """The derivation, or ``None`` when the log cannot support one (too few rows, no
    abandonment at all, or every request waited the same)."""
    if len(records) < MIN_ROWS or not any(row.abandoned for row in records):
        return None
    limit = upper_limit_s(PerceptionBand.ATTENTION)
    wait = np.minimum([row.time_to_first_useful_ms / 1000.0 for row in records], limit)
    left = np.asarray([row.abandoned for row in records], dtype=float)
    if float(np.var(wait)) == 0.0:
        return None
    slope = _slope(wait, left)
    rng = np.random.default_rng(0)
    resampled = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        pick = rng.integers(0, len(wait), len(wait))
        if float(np.var(wait[pick])) > 0:
            resampled.append(_slope(wait[pick], left[pick]))
    low, high = np.percentile(resampled, [2.5, 97.5]) if resampled else (slope, slope)
    if lost_request_cost_usd is not None:
        cost, origin = lost_request_cost_usd, "lost_request_cost_usd"
    else:
        cost = mean_cost_usd
        origin = "measured mean spend of a computed request: a lower bound"
    return DerivedDelayCost(
        per_second_usd=max(0.0, slope) * cost,
        slope_per_s=Interval(slope, float(low), float(high), len(wait)),
        abandon_cost_usd=cost,
        abandon_cost_from=origin,
        by_band=_by_band(records),
    )


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.cov(x, y, bias=True)[0, 1] / np.var(x))


def _by_band(records: Sequence[RequestLogRecord]) -> tuple[BandAbandonment, ...]:
    found = []
    for limit in BAND_LIMITS:
        rows = [r for r in records if band_of(r.time_to_first_useful_ms / 1000.0) is limit.band]
        if rows:
            found.append(
                BandAbandonment(limit.band, wilson(sum(r.abandoned for r in rows), len(rows)))
            )
    return tuple(found)
