"""Numbers as people read them, shared by the terminal and HTML pages."""

from __future__ import annotations

from datetime import UTC, datetime

from nearline.insights.report.figures import SourceTiming


def duration(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1:
        return "< 1 ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def share(part: int | float, whole: int | float) -> str:
    """A percentage; one decimal below 1 % so that a few requests do not read as none."""
    if not whole:
        return "—"
    percent = 100 * part / whole
    return f"{percent:.1f} %" if 0 < percent < 1 else f"{percent:.0f} %"


def usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


def moment(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(ts: float) -> str:
    """The time of day (UTC) of a moment inside the report's window."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M:%S")


def timing_cells(source: SourceTiming) -> list[str]:
    """One source's row of the "where the time goes" table: requests, first useful content
    p50/p95, first token p50, end of answer p50/p95."""
    return [
        source.source,
        str(source.requests),
        duration(source.first_useful.p50_ms),
        duration(source.first_useful.p95_ms),
        duration(source.first_token.p50_ms),
        duration(source.total.p50_ms),
        duration(source.total.p95_ms),
    ]
