"""Worker lag for the dashboard: each worker's ``/metrics`` scraped, at most once a second.

The worker exports ``nearline_stream_lag`` (entries a consumer group has not been delivered)
and ``nearline_stream_pending`` (delivered, not acknowledged) per stream and group
(``nearline.worker.metrics``). A worker that cannot be reached is shown as such; it never
fails the dashboard.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from nearline.insights.dashboard.prometheus import Samples

LAG = "nearline_stream_lag"
PENDING = "nearline_stream_pending"


@dataclass(frozen=True, slots=True)
class GroupLag:
    stream: str
    group: str
    lag: float
    pending: float


@dataclass(frozen=True, slots=True)
class WorkerLag:
    url: str
    error: str | None = None  # why the worker could not be read
    groups: list[GroupLag] = field(default_factory=list)


def parse_lag(url: str, metrics_text: str) -> WorkerLag:
    samples = Samples(text_string_to_metric_families(metrics_text))
    lag, pending = _per_group(samples, LAG), _per_group(samples, PENDING)
    groups = [
        GroupLag(stream, group, value, pending.get((stream, group), 0.0))
        for (stream, group), value in sorted(lag.items())
    ]
    return WorkerLag(url=url, groups=groups)


def _per_group(samples: Samples, name: str) -> dict[tuple[str, str], float]:
    return {(labels["stream"], labels["group"]): value for labels, value in samples.series(name)}


class WorkerLagReader:
    """Scrapes the configured workers; one scrape is shared for ``interval_s``."""

    def __init__(self, urls: Sequence[str], timeout_s: float, interval_s: float) -> None:
        self._urls = list(urls)
        self._timeout_s = timeout_s
        self._interval_s = interval_s
        self._tls: ssl.SSLContext | None = None
        self._lock = asyncio.Lock()
        self._last: list[WorkerLag] = []
        self._last_at = -float("inf")

    async def read(self) -> list[WorkerLag]:
        if not self._urls:
            return []
        async with self._lock:
            if time.monotonic() - self._last_at >= self._interval_s:
                self._last = await self._scrape_all()
                self._last_at = time.monotonic()
            return self._last

    async def _scrape_all(self) -> list[WorkerLag]:
        if self._tls is None:  # loading CA certificates takes a while: off the event loop
            self._tls = await asyncio.to_thread(ssl.create_default_context)
        async with httpx.AsyncClient(
            timeout=self._timeout_s, verify=self._tls, trust_env=False
        ) as client:
            return list(await asyncio.gather(*(self._scrape(client, url) for url in self._urls)))

    async def _scrape(self, client: httpx.AsyncClient, url: str) -> WorkerLag:
        try:
            response = await client.get(url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            return WorkerLag(url=url, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
        try:
            return parse_lag(url, response.text)
        except (ValueError, KeyError) as exc:
            return WorkerLag(url=url, error=f"not Prometheus metrics: {exc}")
