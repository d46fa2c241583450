"""What a mitigation would do to a path: the what-if's result types (``whatif.py`` fills them)."""

from __future__ import annotations

from dataclasses import dataclass

from nearline.core.bands import PerceptionBand
from nearline.insights.advise.stats import Interval


@dataclass(frozen=True, slots=True)
class Projection:
    """The logged traffic answered one way: time to first useful content and money."""

    p50_ms: Interval
    p95_ms: Interval
    by_band: tuple[tuple[PerceptionBand, float], ...]  # share of requests per band
    spend_usd: float  # per month: upstream spend (cache hits cost nothing)
    delay_cost_usd: float  # per month: what the waits cost

    @property
    def band(self) -> PerceptionBand:
        from nearline.core.bands import band_of

        return band_of(self.p95_ms.value / 1000.0)

    @property
    def total_usd(self) -> float:
        return self.spend_usd + self.delay_cost_usd


@dataclass(frozen=True, slots=True)
class Action:
    """One mitigation, projected on the path's logged traffic."""

    name: str
    affected: Interval  # requests it answers differently: hits, drafts shown first, ...
    projection: Projection
    baseline: Projection
    note: str

    @property
    def value_usd(self) -> float:
        """Spend plus delay cost saved per month (negative: it costs more than it saves)."""
        return self.baseline.total_usd - self.projection.total_usd

    @property
    def p95_cut_ms(self) -> float:
        return self.baseline.p95_ms.value - self.projection.p95_ms.value

    @property
    def spend_change_usd(self) -> float:
        return self.projection.spend_usd - self.baseline.spend_usd
