"""Measure an answer as the client receives it: first useful content, first token, end,
abandonment. Wraps the pipeline's event stream; the transport pulls through it."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from nearline.serving.events import Delta, Done, ErrorEvent, Event, Preliminary, Usage
from nearline.telemetry.metrics import GatewayMetrics


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, usage: Usage) -> float:
        return (
            usage.prompt_tokens * self.input_per_mtok
            + usage.completion_tokens * self.output_per_mtok
        ) / 1_000_000


async def observed(
    events: AsyncIterator[Event],
    metrics: GatewayMetrics,
    *,
    model: str,
    source: str,
    received_at: float,
    price: Price | None,
) -> AsyncGenerator[Event, None]:
    labels = {"model": model, "source": source}
    first_useful: float | None = None
    first_token: float | None = None
    ended = False
    for_cache = source not in ("inference", "local")
    try:
        async for event in events:
            now = time.perf_counter()
            if first_useful is None and isinstance(event, Delta | Preliminary):
                first_useful = now
                metrics.time_to_first_useful.labels(**labels).observe(now - received_at)
                metrics.observe_perception(now - received_at)
            if first_token is None and isinstance(event, Delta):
                first_token = now
                metrics.time_to_first_token.labels(**labels).observe(now - received_at)
            if isinstance(event, Usage):
                if first_token is not None and event.completion_tokens > 1 and now > first_token:
                    rate = (event.completion_tokens - 1) / (now - first_token)
                    metrics.tokens_per_second.labels(**labels).observe(rate)
                if for_cache:
                    metrics.tokens_saved.labels(tier=source, kind="prompt").inc(event.prompt_tokens)
                    metrics.tokens_saved.labels(tier=source, kind="completion").inc(
                        event.completion_tokens
                    )
                    if price is not None:
                        metrics.money_saved.labels(tier=source).inc(price.cost(event))
            if isinstance(event, Done):
                ended = True
                metrics.total_latency.labels(**labels).observe(now - received_at)
                metrics.requests.labels(**labels, outcome="ok").inc()
            if isinstance(event, ErrorEvent):
                ended = True
                metrics.requests.labels(**labels, outcome="error").inc()
                metrics.upstream_errors.labels(model=model, code=event.error.code or "").inc()
            yield event
    finally:
        if not ended:
            metrics.abandoned.labels(**labels).inc()
            metrics.requests.labels(**labels, outcome="abandoned").inc()
