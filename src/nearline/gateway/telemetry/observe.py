"""Measure an answer as the client receives it: first useful content, first token, end,
abandonment. Wraps the pipeline's event stream; the transport pulls through it."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from nearline.core.events import Delta, Done, ErrorEvent, Event, Preliminary, Replace, Usage
from nearline.core.price import Price
from nearline.core.source import Source
from nearline.gateway.telemetry.metrics import GatewayMetrics


@dataclass(frozen=True, slots=True)
class AnswerOutcome:
    """How one answer went, as the client saw it (seconds since the request arrived)."""

    outcome: str  # ok, error, abandoned
    error_code: str | None
    first_useful_s: float | None
    first_token_s: float | None
    total_s: float
    usage: Usage
    text: str


class _Observation:
    """What one answer did so far; feeds the metrics as events pass."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        model: str,
        source: str,
        received_at: float,
        price: Price | None,
    ) -> None:
        self.metrics = metrics
        self.model = model
        self.source = source
        self.received_at = received_at
        self.price = price
        self.first_useful: float | None = None
        self.path = source  # what gave the first useful content: a preliminary's source or this
        self.first_token: float | None = None
        self.outcome = "abandoned"
        self.error_code: str | None = None
        self.usage = Usage(0, 0)
        self.parts: list[str] = []

    @property
    def labels(self) -> dict[str, str]:
        return {"model": self.model, "source": self.source}

    def see(self, event: Event, now: float) -> None:
        m = self.metrics
        if self.first_useful is None and isinstance(event, Delta | Preliminary):
            self.first_useful = now
            self.path = event.source if isinstance(event, Preliminary) else self.source
            m.time_to_first_useful.labels(model=self.model, source=self.path).observe(
                now - self.received_at
            )
            m.observe_perception(now - self.received_at)
        if isinstance(event, Delta):
            self.parts.append(event.text)
            if self.first_token is None:
                self.first_token = now
                m.time_to_first_token.labels(**self.labels).observe(now - self.received_at)
        elif isinstance(event, Replace):
            m.preliminaries.labels(action=event.action).inc()
        elif isinstance(event, Usage):
            self._see_usage(event, now)
        elif isinstance(event, Done):
            self.outcome = "ok"
            m.total_latency.labels(model=self.model, source=self.path).observe(
                now - self.received_at
            )
            m.requests.labels(**self.labels, outcome="ok").inc()
        elif isinstance(event, ErrorEvent):
            self.outcome = "error"
            self.error_code = event.error.code
            m.requests.labels(**self.labels, outcome="error").inc()
            m.upstream_errors.labels(model=self.model, code=event.error.code or "").inc()

    def _see_usage(self, usage: Usage, now: float) -> None:
        self.usage = usage
        m = self.metrics
        if self.first_token is not None and usage.completion_tokens > 1 and now > self.first_token:
            rate = (usage.completion_tokens - 1) / (now - self.first_token)
            m.tokens_per_second.labels(**self.labels).observe(rate)
        if self.source == Source.INFERENCE:
            return
        m.tokens_saved.labels(tier=self.source, kind="prompt").inc(usage.prompt_tokens)
        m.tokens_saved.labels(tier=self.source, kind="completion").inc(usage.completion_tokens)
        if self.price is not None:
            m.money_saved.labels(tier=self.source).inc(self.price.cost(usage))

    def finish(self) -> AnswerOutcome:
        if self.outcome == "abandoned":
            self.metrics.abandoned.labels(**self.labels).inc()
            self.metrics.requests.labels(**self.labels, outcome="abandoned").inc()
        return AnswerOutcome(
            outcome=self.outcome,
            error_code=self.error_code,
            first_useful_s=None
            if self.first_useful is None
            else self.first_useful - self.received_at,
            first_token_s=None if self.first_token is None else self.first_token - self.received_at,
            total_s=time.perf_counter() - self.received_at,
            usage=self.usage,
            text="".join(self.parts),
        )


async def observed(
    events: AsyncIterator[Event],
    metrics: GatewayMetrics,
    *,
    model: str,
    source: str,
    received_at: float,
    price: Price | None,
    on_end: Callable[[AnswerOutcome], None] | None = None,
) -> AsyncGenerator[Event, None]:
    observation = _Observation(metrics, model, source, received_at, price)
    try:
        async for event in events:
            observation.see(event, time.perf_counter())
            yield event
    finally:
        outcome = observation.finish()
        if on_end is not None:
            on_end(outcome)
