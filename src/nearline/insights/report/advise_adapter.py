"""The gateway's request log as the advisor's ``RequestLogReader``.

``nearline advise`` reads ``RequestLogRecord``s; this turns the gateway's ``RequestRecord``
rows into them, so the advisor and the report read the same log through one loader
(``logsource.read_rows``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from nearline.gateway.telemetry.requestlog import RequestRecord
from nearline.insights.advise.requestlog import RequestLogRecord
from nearline.insights.report.logsource import LogFilter, LogLocation, read_rows


def as_advise_record(row: RequestRecord) -> RequestLogRecord:
    """One row for the advisor. A request that never showed useful content (an error or a
    client that left first) waited its whole duration for nothing: that is its wait."""
    waited_ms = row.time_to_first_useful_ms
    return RequestLogRecord(
        route=f"{row.route} {row.model}",
        started_at=datetime.fromtimestamp(row.ts, tz=UTC),
        time_to_first_useful_ms=row.total_ms if waited_ms is None else waited_ms,
        total_ms=row.total_ms,
        source=row.source,
        cost_usd=row.cost_usd or 0.0,
        abandoned=row.outcome == "abandoned",
    )


class GatewayRequestLog:
    """A ``RequestLogReader`` over the gateway's SQLite or PostgreSQL request log."""

    def __init__(self, location: LogLocation, where: LogFilter | None = None) -> None:
        self.location = location
        self.where = where or LogFilter()

    def records(self) -> Iterator[RequestLogRecord]:
        for row in read_rows(self.location, self.where):
            yield as_advise_record(row)
