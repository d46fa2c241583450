"""The measured request log, as the advisor reads it.

``RequestLogRecord`` is the one row type; anything that yields them is a ``RequestLogReader``:
``GatewayRequestLog`` (the gateway's SQLite/PostgreSQL log, read through
``nearline.insights.requestlog`` as ``nearline report`` reads it) or ``JsonlRequestLog`` (a
JSONL file of records). ``measure_routes`` turns records into the per-route figures a profile
needs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import TypeAdapter, ValidationError

from nearline.gateway.telemetry.requestlog import RequestRecord
from nearline.insights.advise.latency import Latency
from nearline.insights.advise.profile import describe
from nearline.insights.advise.stats import Interval, percentile, poisson_rate, wilson
from nearline.insights.requestlog import (
    LogFilter,
    LoggedCall,
    LogLocation,
    RequestLogError,
    logged_calls,
    read_rows,
    served_from_store,
)

PEAK_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class RequestLogRecord:
    """One answered request, as the gateway or the worker measured it."""

    route: str  # the path through the product: an endpoint, a model alias, an event handler
    started_at: datetime  # timezone-aware
    time_to_first_useful_ms: float  # until the first content the user can use
    total_ms: float  # until the answer was complete
    source: str  # what answered: a ``Source`` value, or a store in a foreign log
    tier: str | None = None  # the model tier when inference answered
    cost_usd: float = 0.0
    abandoned: bool = False  # the client left before the answer was complete
    error: bool = False  # the request failed (an upstream error, a timeout, ...)
    stream: bool | None = None  # streamed to a client that watches it arrive; None: unknown
    tenant: str = ""  # whose traffic (caches and sessions are per tenant)
    model: str = ""  # the model the request named (the warm file's "model")
    input: str = ""  # the messages as JSON, when the log stores content
    calls: tuple[LoggedCall, ...] = ()  # an answer of several calls (a plan): each one

    @property
    def served_from_store(self) -> bool:
        """Answered from a cache or a precomputed store rather than computed now."""
        return served_from_store(self.source)

    @property
    def planned(self) -> bool:
        """Answered by a plan (its calls include a planner's)."""
        return any(call.role == "plan" for call in self.calls)


class RequestLogReader(Protocol):
    def records(self) -> Iterable[RequestLogRecord]: ...


_RECORD = TypeAdapter(RequestLogRecord)


def as_advise_record(row: RequestRecord) -> RequestLogRecord:
    """One gateway row for the advisor. A request that never showed useful content (an error
    or a client that left first) waited its whole duration for nothing: that is its wait."""
    waited_ms = row.time_to_first_useful_ms
    return RequestLogRecord(
        route=f"{row.route} {row.model}",
        started_at=datetime.fromtimestamp(row.ts, tz=UTC),
        time_to_first_useful_ms=row.total_ms if waited_ms is None else waited_ms,
        total_ms=row.total_ms,
        source=row.source,
        cost_usd=row.cost_usd or 0.0,
        abandoned=row.outcome == "abandoned",
        error=row.outcome == "error",
        stream=row.stream,
        tenant=row.tenant,
        model=row.model,
        input=row.input,
        calls=logged_calls(row),
    )


class GatewayRequestLog:
    """A ``RequestLogReader`` over the gateway's SQLite or PostgreSQL request log."""

    def __init__(self, location: LogLocation, where: LogFilter | None = None) -> None:
        self.location = location
        self.where = where or LogFilter()

    def records(self) -> Iterator[RequestLogRecord]:
        for row in read_rows(self.location, self.where):
            yield as_advise_record(row)


class JsonlRequestLog:
    """One JSON object per line with ``RequestLogRecord``'s fields (``started_at`` in ISO 8601)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> Iterator[RequestLogRecord]:
        try:
            with self.path.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, start=1):
                    if line.strip():
                        yield self._parse(line, number)
        except OSError as exc:
            raise RequestLogError(f"{self.path}: {exc}") from exc

    def _parse(self, line: str, number: int) -> RequestLogRecord:
        try:
            record = _RECORD.validate_json(line)
        except ValidationError as exc:
            raise RequestLogError(f"{self.path}:{number}: {describe(exc)}") from exc
        if record.started_at.tzinfo is None:
            raise RequestLogError(f"{self.path}:{number}: started_at needs a timezone")
        return record


@dataclass(frozen=True, slots=True)
class RouteMeasurement:
    route: str
    requests: int
    requests_per_day: float
    peak_to_average: float  # busiest minute against the average minute
    store_share: float  # answered from a cache or a precomputed store
    computed_latency: Latency | None  # time to first useful content; None if nothing computed
    store_latency: Latency | None
    mean_cost_of_computed_usd: float
    abandoned_share: float
    records: tuple[RequestLogRecord, ...] = ()  # oldest first
    span_s: float = 0.0  # the whole windows the rate was measured over
    rate_per_day: Interval | None = None
    store: Interval | None = None
    abandonment: Interval | None = None
    failures: Interval | None = None  # failed among the requests that ran to their end
    streamed: Interval | None = None  # None: the log does not say
    computed_p50_ms: Interval | None = None
    computed_p95_ms: Interval | None = None

    @property
    def success(self) -> Interval | None:
        """Measured success rate (1 - failure rate) with its interval."""
        f = self.failures
        if f is None:
            return None
        return Interval(1.0 - f.value, 1.0 - f.high, 1.0 - f.low, f.sample_size)

    @property
    def interactive(self) -> bool | None:
        """Most requests streamed to a waiting client; None when the log does not say."""
        return None if self.streamed is None else self.streamed.value >= 0.5


def measure_routes(
    records: Iterable[RequestLogRecord], peak_window_s: float = PEAK_WINDOW_S
) -> dict[str, RouteMeasurement]:
    by_route: dict[str, list[RequestLogRecord]] = defaultdict(list)
    for record in records:
        by_route[record.route].append(record)
    return {route: _measure(route, rows, peak_window_s) for route, rows in by_route.items()}


def _measure(route: str, rows: list[RequestLogRecord], window_s: float) -> RouteMeasurement:
    """Rates come from fixed windows from the first request: ``floor(span / window) + 1`` of them.

    Rate = requests / (windows x window); peak-to-average = busiest window / mean window.
    """
    first = min(row.started_at for row in rows)
    offsets = [(row.started_at - first).total_seconds() for row in rows]
    counts = np.bincount([math.floor(offset / window_s) for offset in offsets])
    windows = len(counts)
    rows = sorted(rows, key=lambda row: row.started_at)
    computed = [row for row in rows if not row.served_from_store]
    stored = [row for row in rows if row.served_from_store]
    ran = [row for row in rows if not row.abandoned]  # a client that left: outcome unknown
    said = [row.stream for row in rows if row.stream is not None]
    computed_ms = [row.time_to_first_useful_ms for row in computed]
    span = windows * window_s
    return RouteMeasurement(
        route=route,
        requests=len(rows),
        requests_per_day=len(rows) / (windows * window_s) * 86_400.0,
        peak_to_average=float(counts.max()) / (len(rows) / windows),
        store_share=len(stored) / len(rows),
        computed_latency=_latency([row.time_to_first_useful_ms for row in computed]),
        store_latency=_latency([row.time_to_first_useful_ms for row in stored]),
        mean_cost_of_computed_usd=(
            sum(row.cost_usd for row in computed) / len(computed) if computed else 0.0
        ),
        abandoned_share=sum(row.abandoned for row in rows) / len(rows),
        records=tuple(rows),
        span_s=span,
        rate_per_day=poisson_rate(len(rows), span),
        store=wilson(len(stored), len(rows)),
        abandonment=wilson(sum(row.abandoned for row in rows), len(rows)),
        failures=wilson(sum(row.error for row in ran), len(ran)),
        streamed=wilson(sum(said), len(said)) if said else None,
        computed_p50_ms=percentile(computed_ms, 0.5) if computed_ms else None,
        computed_p95_ms=percentile(computed_ms, 0.95) if computed_ms else None,
    )


def _latency(milliseconds: Sequence[float]) -> Latency | None:
    """Median and p95 with linear interpolation between ranks (numpy's default)."""
    if not milliseconds:
        return None
    p50, p95 = np.percentile(np.asarray(milliseconds, dtype=float), [50, 95])
    return Latency.from_ms(float(p50), float(p95))
