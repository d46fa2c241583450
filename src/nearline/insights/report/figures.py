"""The report's figures, computed from request-log rows. Pure: no I/O, checkable by hand.

Definitions (docs/report.md explains them to users):

* a request's **wait** is its time to first useful content; a request that never showed any
  (an error, or a client that left first) waited its whole duration for nothing;
* **bands** are those of ``nearline.core.bands`` over the time to first useful content;
  requests without useful content are counted apart ("no content"), as the gateway's
  ``nearline_requests_by_perception_band_total`` does;
* percentiles are nearest-rank: the smallest value with at least that share of values at or
  below it;
* **slow paths** are ranked by the user-seconds waited beyond the 1 s flow limit,
  Σ max(0, wait - 1 s) over a path's requests: count x time over the band in one figure,
  and exactly the waiting that making the path fast enough would remove;
* **money saved** by a cache hit is the mean cost of the same model's computed answers in the
  window (a hit replays such an answer); unknown when no computed answer had a price.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from nearline.core.bands import BAND_LIMITS, PerceptionBand, band_of, upper_limit_s
from nearline.gateway.telemetry.requestlog import RequestRecord
from nearline.insights.requestlog import served_from_store

if TYPE_CHECKING:
    from nearline.insights.report.shape import (
        HistogramBin,
        ModelFigures,
        PreliminaryHelp,
        TimeBucket,
    )

FLOW_LIMIT_S = upper_limit_s(PerceptionBand.FLOW)
BANDS = tuple(limit.band.value for limit in BAND_LIMITS)
NO_CONTENT = "no content"
K = TypeVar("K")


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def wait_ms(row: RequestRecord) -> float:
    return row.total_ms if row.time_to_first_useful_ms is None else row.time_to_first_useful_ms


def band_name(row: RequestRecord) -> str:
    if row.time_to_first_useful_ms is None:
        return NO_CONTENT
    return band_of(row.time_to_first_useful_ms / 1000).value


def from_cache(row: RequestRecord) -> bool:
    """Answered from a cache tier (``Source.CACHED``), as the gateway's savings metrics count."""
    return served_from_store(row.source)


@dataclass(frozen=True, slots=True)
class Spread:
    """Median and 95th percentile, milliseconds."""

    p50_ms: float | None
    p95_ms: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(percentile(values, 0.5), percentile(values, 0.95))


@dataclass(frozen=True, slots=True)
class PathFigures:
    """One path: route · model · source."""

    route: str
    model: str
    source: str
    requests: int
    bands: dict[str, int]  # every band in BANDS, then NO_CONTENT
    wait: Spread
    total: Spread
    errors: int
    abandoned: int
    over_flow_limit: int  # requests whose wait passed 1 s
    seconds_beyond_flow_limit: float  # Σ max(0, wait - 1 s): the slow-path ranking

    @property
    def name(self) -> str:
        return f"{self.route} · {self.model} · {self.source}"


@dataclass(frozen=True, slots=True)
class SourceTiming:
    """Where the time goes for answers from one source (a cache tier or inference)."""

    source: str
    requests: int
    first_useful: Spread
    first_token: Spread
    total: Spread
    mean_wait_ms: float  # before the first useful content
    mean_after_ms: float  # from then to the answer's end (streaming)


@dataclass(frozen=True, slots=True)
class TierSavings:
    tier: str
    requests: int
    tokens: int
    usd: float | None


@dataclass(frozen=True, slots=True)
class Savings:
    requests: int
    from_cache: int
    tokens_saved: int
    prompt_tokens_saved: int
    completion_tokens_saved: int
    usd_saved: float | None  # None: no computed answer in the window had a price
    usd_spent: float | None
    tiers: list[TierSavings]

    @property
    def cache_share(self) -> float:
        return self.from_cache / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Endings:
    """How answers ended: abandonment and errors."""

    requests: int
    abandoned: int
    abandoned_before_content: int
    abandoned_after: Spread  # how long clients stayed before leaving
    errors: int
    errors_by_code: dict[str, int]

    @property
    def abandoned_share(self) -> float:
        return self.abandoned / self.requests if self.requests else 0.0

    @property
    def error_share(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Report:
    requests: int
    first_ts: float | None
    last_ts: float | None
    bands: dict[str, int]
    wait: Spread
    paths: list[PathFigures]
    sources: list[SourceTiming]
    savings: Savings
    endings: Endings
    slow_paths: list[PathFigures] = field(default_factory=list)
    timeline: list[TimeBucket] = field(default_factory=list)
    histogram: list[HistogramBin] = field(default_factory=list)
    preliminary: PreliminaryHelp | None = None
    models: list[ModelFigures] = field(default_factory=list)


def build_report(rows: Sequence[RequestRecord], top: int = 5) -> Report:
    from nearline.insights.report import shape  # it builds on this module's definitions

    paths = [
        _path(key, group)
        for key, group in _grouped(rows, lambda r: (r.route, r.model, r.source)).items()
    ]
    paths.sort(key=lambda p: (-p.requests, p.name))
    slow = sorted(
        (p for p in paths if p.seconds_beyond_flow_limit > 0),
        key=lambda p: (-p.seconds_beyond_flow_limit, p.name),
    )
    return Report(
        requests=len(rows),
        first_ts=min((r.ts for r in rows), default=None),
        last_ts=max((r.ts for r in rows), default=None),
        bands=_bands(rows),
        wait=Spread.of([wait_ms(r) for r in rows]),
        paths=paths,
        sources=[
            _timing(source, group)
            for source, group in sorted(_grouped(rows, lambda r: r.source).items())
        ],
        savings=_savings(rows),
        endings=_endings(rows),
        slow_paths=slow[:top],
        timeline=shape.timeline(rows),
        histogram=shape.histogram(rows),
        preliminary=shape.preliminary_help(rows),
        models=shape.per_model(rows),
    )


def _grouped(
    rows: Iterable[RequestRecord], key: Callable[[RequestRecord], K]
) -> dict[K, list[RequestRecord]]:
    groups: dict[K, list[RequestRecord]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return groups


def _bands(rows: Iterable[RequestRecord]) -> dict[str, int]:
    counts = Counter(band_name(row) for row in rows)
    return {band: counts[band] for band in (*BANDS, NO_CONTENT)}


def _path(key: tuple[str, str, str], rows: list[RequestRecord]) -> PathFigures:
    route, model, source = key
    waits_s = [wait_ms(row) / 1000 for row in rows]
    return PathFigures(
        route=route,
        model=model,
        source=source,
        requests=len(rows),
        bands=_bands(rows),
        wait=Spread.of([wait_ms(row) for row in rows]),
        total=Spread.of([row.total_ms for row in rows]),
        errors=sum(row.outcome == "error" for row in rows),
        abandoned=sum(row.outcome == "abandoned" for row in rows),
        over_flow_limit=sum(w > FLOW_LIMIT_S for w in waits_s),
        seconds_beyond_flow_limit=sum(max(0.0, w - FLOW_LIMIT_S) for w in waits_s),
    )


def _timing(source: str, rows: list[RequestRecord]) -> SourceTiming:
    useful = [r.time_to_first_useful_ms for r in rows if r.time_to_first_useful_ms is not None]
    tokens = [r.time_to_first_token_ms for r in rows if r.time_to_first_token_ms is not None]
    waits = [wait_ms(r) for r in rows]
    return SourceTiming(
        source=source,
        requests=len(rows),
        first_useful=Spread.of(useful),
        first_token=Spread.of(tokens),
        total=Spread.of([r.total_ms for r in rows]),
        mean_wait_ms=sum(waits) / len(rows),
        mean_after_ms=sum(r.total_ms - w for r, w in zip(rows, waits, strict=True)) / len(rows),
    )


def _mean_cost_per_model(rows: Iterable[RequestRecord]) -> dict[str, float]:
    costs: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if not from_cache(row) and row.outcome == "ok" and row.cost_usd is not None:
            costs[row.model].append(row.cost_usd)
    return {model: sum(values) / len(values) for model, values in costs.items()}


def _savings(rows: Sequence[RequestRecord]) -> Savings:
    mean_cost = _mean_cost_per_model(rows)
    served = [row for row in rows if from_cache(row) and row.outcome != "error"]
    tiers = [
        TierSavings(
            tier=tier,
            requests=len(group),
            tokens=sum(r.prompt_tokens + r.completion_tokens for r in group),
            usd=_saved_usd(group, mean_cost),
        )
        for tier, group in sorted(_grouped(served, lambda r: r.source).items())
    ]
    known_tiers = [t.usd for t in tiers if t.usd is not None]
    spent = [r.cost_usd for r in rows if not from_cache(r) and r.cost_usd is not None]
    return Savings(
        requests=len(rows),
        from_cache=len(served),
        tokens_saved=sum(t.tokens for t in tiers),
        prompt_tokens_saved=sum(r.prompt_tokens for r in served),
        completion_tokens_saved=sum(r.completion_tokens for r in served),
        usd_saved=sum(known_tiers) if known_tiers else None,
        usd_spent=sum(spent) if spent else None,
        tiers=tiers,
    )


def _saved_usd(rows: Iterable[RequestRecord], mean_cost: dict[str, float]) -> float | None:
    priced = [mean_cost[row.model] for row in rows if row.model in mean_cost]
    return sum(priced) if priced else None


def _endings(rows: Sequence[RequestRecord]) -> Endings:
    abandoned = [row for row in rows if row.outcome == "abandoned"]
    errors = Counter(row.error_code or "unknown" for row in rows if row.outcome == "error")
    return Endings(
        requests=len(rows),
        abandoned=len(abandoned),
        abandoned_before_content=sum(r.time_to_first_useful_ms is None for r in abandoned),
        abandoned_after=Spread.of([r.total_ms for r in abandoned]),
        errors=sum(errors.values()),
        errors_by_code=dict(errors.most_common()),
    )
