"""What the dashboard shows after a restart: the request log's recent rows, as metrics.

The live registry starts empty with every process. The request log does not: its rows from
before this process started (at most ``RESTORE_WINDOW_S`` old) are replayed once into a
registry of their own, built like the live one, so ``/dashboard/data`` adds them to the live
figures and a restarted gateway shows the traffic it already served instead of "No answers
yet". Rows logged since the start are in the live registry already and are not read.

What the log cannot say is left out: money saved (a row of a hit costs nothing and names no
price) and the cache misses of a gateway whose tiers were off (every computed answer counts
as a miss here).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from nearline.core.source import Source
from nearline.gateway.telemetry.metrics import GatewayMetrics
from nearline.gateway.telemetry.requestlog import RequestRecord
from nearline.insights.requestlog import (
    LogFilter,
    LogLocation,
    RequestLogError,
    read_rows,
    served_from_store,
)

log = logging.getLogger(__name__)

RESTORE_WINDOW_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Restored:
    """The log's rows from before this process, replayed into ``metrics``."""

    metrics: GatewayMetrics
    answers: int
    since_ts: float | None  # the oldest restored row


def replay(rows: list[RequestRecord]) -> GatewayMetrics:
    """A fresh registry fed as the gateway's observer would have fed it for ``rows``."""
    m = GatewayMetrics()
    for row in rows:
        labels = {"model": row.model, "source": row.source}
        m.requests.labels(**labels, outcome=row.outcome).inc()
        if row.time_to_first_useful_ms is not None:
            seconds = row.time_to_first_useful_ms / 1000
            m.time_to_first_useful.labels(**labels).observe(seconds)
            m.observe_perception(seconds)
        if row.time_to_first_token_ms is not None:
            m.time_to_first_token.labels(**labels).observe(row.time_to_first_token_ms / 1000)
        if row.outcome == "ok":
            m.total_latency.labels(**labels).observe(row.total_ms / 1000)
        if served_from_store(row.source):
            m.cache_hits.labels(tier=row.source).inc()
            if row.outcome != "error":
                m.tokens_saved.labels(tier=row.source, kind="prompt").inc(row.prompt_tokens)
                m.tokens_saved.labels(tier=row.source, kind="completion").inc(row.completion_tokens)
        elif row.source == Source.INFERENCE:
            m.cache_misses.inc()
        if row.outcome == "abandoned":
            m.abandoned.labels(**labels).inc()
        elif row.outcome == "error":
            m.upstream_errors.labels(model=row.model, code=row.error_code or "").inc()
    return m


def read_before(location: LogLocation, started_unix: float, now: float | None = None) -> Restored:
    """The rows logged in the restore window before ``started_unix``, replayed."""
    since = (time.time() if now is None else now) - RESTORE_WINDOW_S
    rows = [r for r in read_rows(location, LogFilter(since_ts=since)) if r.ts < started_unix]
    return Restored(replay(rows), len(rows), min((r.ts for r in rows), default=None))


async def restore(location: LogLocation | None, started_unix: float) -> Restored | None:
    """``read_before`` off the event loop; ``None`` (and a warning) when the log is absent or
    unreadable: the dashboard then shows live figures only."""
    if location is None or (location.sqlite_path is not None and not location.sqlite_path.exists()):
        return None
    try:
        return await asyncio.to_thread(read_before, location, started_unix)
    except RequestLogError as exc:
        log.warning("dashboard: the request log was not restored: %s", exc)
        return None
