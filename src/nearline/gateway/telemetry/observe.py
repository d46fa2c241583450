"""Measure an answer as the client receives it: first useful content, first token, end,
abandonment. Wraps the pipeline's event stream; the transport pulls through it.

``AnswerObserver`` is the one place the serving code reports to: metrics, spans, and the
request-log row of every answer (redacted, with its cost).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry.context import Context
from opentelemetry.trace import NoOpTracer, Span, SpanKind, Status, StatusCode, Tracer

from nearline.core.errors import NearlineError
from nearline.core.events import Delta, Done, ErrorEvent, Event, Preliminary, Replace, Usage
from nearline.core.price import Price
from nearline.core.provider import ProviderCall
from nearline.core.source import Source
from nearline.gateway.telemetry.metrics import GatewayMetrics
from nearline.gateway.telemetry.requestlog import RequestLog, RequestRecord, calls_json
from nearline.gateway.telemetry.tracing import genai_request_attributes, traced


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
    source: str = ""  # what answered in the end, when not the source it started with


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
            if event.source != Source.INFERENCE:  # the preliminary stands as the answer
                self.source = event.source
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
            if self.price is not None:
                m.spend.labels(model=self.model).inc(self.price.cost(usage))
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
            source=self.source,
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
    request_id: str | None = None,
) -> AsyncGenerator[Event, None]:
    observation = _Observation(metrics, model, source, received_at, price)
    try:
        async for event in events:
            observation.see(event, time.perf_counter())
            if isinstance(event, ErrorEvent) and request_id is not None:
                event.error.for_request(request_id)  # its details are logged with the id
            yield event
    finally:
        outcome = observation.finish()
        if on_end is not None:
            on_end(outcome)


class AnswerObserver:
    """Metrics, spans and the request log of every answer, built and fed in one place."""

    def __init__(
        self,
        metrics: GatewayMetrics | None = None,
        *,
        tracer: Tracer | None = None,
        request_log: RequestLog | None = None,
        redact: Callable[[str], str] = str,
    ) -> None:
        self.metrics = metrics or GatewayMetrics()
        self.tracer = tracer or NoOpTracer()
        self._request_log = request_log
        self._redact = redact

    # --- spans -------------------------------------------------------------------------

    def span(self, name: str, parent: Context | None = None, **options: Any) -> Span:
        return self.tracer.start_span(name, context=parent, **options)

    def traced_call(
        self,
        events: AsyncIterator[Event],
        call: ProviderCall,
        provider: str,
        parent: Context | None,
    ) -> AsyncGenerator[Event, None]:
        """``events`` inside the provider call's client span (GenAI attributes, usage)."""
        span = self.tracer.start_span(
            f"chat {call.upstream_model}",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=genai_request_attributes(call.request, provider),
        )
        return traced(events, span)

    @staticmethod
    def failed(span: Span, error: BaseException) -> None:
        message = error.message if isinstance(error, NearlineError) else "internal error"
        span.set_status(Status(StatusCode.ERROR, message))

    # --- counters ----------------------------------------------------------------------

    def cache_hit(self, tier: Source) -> None:
        self.metrics.cache_hits.labels(tier=tier).inc()

    def cache_miss(self) -> None:
        self.metrics.cache_misses.inc()

    def refused(self, model: str, error: NearlineError) -> None:
        """An answer that failed before its first event (an error event was counted as it
        passed, so is not counted again)."""
        if not error.counted:
            self.metrics.upstream_errors.labels(model=model, code=error.code or "").inc()

    # --- the answer and its row ----------------------------------------------------------

    def observe(
        self,
        events: AsyncIterator[Event],
        call: ProviderCall,
        *,
        request_id: str,
        source: str,
        received_at: float,
        price: Price | None,
        similarity: float | None = None,
        on_ok: Callable[[], None] | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Measure ``events`` as they pass; at the end, log the request's row."""
        arrived_unix = time.time() - (time.perf_counter() - received_at)

        def ended(outcome: AnswerOutcome) -> None:
            if outcome.outcome == "ok" and on_ok is not None:
                on_ok()
            if self._request_log is not None:
                self._request_log.record(
                    self.record(
                        call,
                        outcome,
                        request_id=request_id,
                        source=outcome.source or source,
                        similarity=similarity,
                        arrived_unix=arrived_unix,
                        price=price,
                    )
                )

        return observed(
            events,
            self.metrics,
            model=call.request.model,
            source=source,
            received_at=received_at,
            price=price,
            on_end=ended,
            request_id=request_id,
        )

    def record(
        self,
        call: ProviderCall,
        outcome: AnswerOutcome,
        *,
        request_id: str,
        source: str,
        similarity: float | None,
        arrived_unix: float,
        price: Price | None,
    ) -> RequestRecord:
        """The request-log row of one answer: content redacted, cost zero from a cache."""
        request = call.request
        messages = [{"role": m.role, "content": m.text} for m in request.messages]
        cost = None
        if outcome.usage.cost_usd is not None and source == Source.INFERENCE:
            cost = outcome.usage.cost_usd  # its provider knew (a plan: each call's own price)
        elif price is not None and source == Source.INFERENCE:
            cost = price.cost(outcome.usage)
        elif price is not None:
            cost = 0.0  # answered from cache: no upstream spend
        return RequestRecord(
            ts=arrived_unix,
            request_id=request_id,
            tenant=call.tenant,
            model=request.model,
            route="chat.completions",
            source=source,
            similarity=similarity,
            stream=request.stream,
            outcome=outcome.outcome,
            error_code=outcome.error_code,
            time_to_first_useful_ms=_ms(outcome.first_useful_s),
            time_to_first_token_ms=_ms(outcome.first_token_s),
            total_ms=outcome.total_s * 1000,
            prompt_tokens=outcome.usage.prompt_tokens,
            completion_tokens=outcome.usage.completion_tokens,
            cached_tokens=outcome.usage.cached_tokens,
            cost_usd=cost,
            input=self._redact(orjson.dumps(messages).decode()),
            output=self._redact(outcome.text),
            calls=calls_json(outcome.usage.calls),  # a plan's calls, one by one
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
