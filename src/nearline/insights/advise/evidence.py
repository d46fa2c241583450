"""Where a path's figures come from: what the log measured, what the profile said, and how far
the monthly figures reach beyond the traffic actually observed."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from nearline.insights.advise.delaycost import DerivedDelayCost
from nearline.insights.advise.profile import DAYS_PER_MONTH, SECONDS_PER_DAY
from nearline.insights.advise.requestlog import RouteMeasurement

SHORT_SPAN_S = 7 * SECONDS_PER_DAY  # monthly figures from less than a week carry a warning


class DelayCostFrom(StrEnum):
    GIVEN = "given"  # the profile or --delay-cost-per-second
    DERIVED = "derived"  # from the log's abandonment by wait
    NONE = "none"  # nobody said: 0


@dataclass(frozen=True, slots=True)
class PathEvidence:
    measurement: RouteMeasurement | None = None
    delay_cost_from: DelayCostFrom = DelayCostFrom.NONE
    derived: DerivedDelayCost | None = None
    profile_fields: tuple[str, ...] = ()  # fields the profile set over the log's measurement

    @property
    def sample_size(self) -> int | None:
        return None if self.measurement is None else self.measurement.requests

    @property
    def delay_cost_note(self) -> str:
        if self.delay_cost_from is DelayCostFrom.GIVEN:
            return "given (profile or --delay-cost-per-second)"
        if self.derived is not None:
            return self.derived.describe()
        return "none given and none derivable from the log: 0"

    def extrapolation(self) -> str | None:
        """A warning when monthly figures stretch a short observation to 30 days."""
        m = self.measurement
        if m is None or m.span_s >= SHORT_SPAN_S:
            return None
        factor = DAYS_PER_MONTH * SECONDS_PER_DAY / m.span_s
        return (
            f"monthly figures extrapolate {_span(m.span_s)} of traffic ({m.requests} requests) "
            f"to 30 days (x{factor:,.0f}); they hold only if that traffic is typical"
        )


def _span(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * SECONDS_PER_DAY:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / SECONDS_PER_DAY:.1f} days"
