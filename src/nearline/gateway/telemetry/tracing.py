"""OpenTelemetry traces: one span per stage, GenAI semantic-convention attributes.

Spans are always recorded in-process (so every response can carry its trace id in the
``x-nearline-trace-id`` header); they leave the process only when an OTLP endpoint is
configured (``tracing.otlp_endpoint``), through a batching exporter off the hot path.
Each app owns its ``TracerProvider`` — no global state.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    NoOpTracer,
    Span,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    get_current_span,
)

from nearline import __version__
from nearline.core.events import Done, ErrorEvent, Event, Usage
from nearline.core.request import ChatRequest

TRACE_HEADER = "x-nearline-trace-id"


def build_tracer_provider(
    service_name: str, otlp_endpoint: str | None, exporter: SpanExporter | None = None
) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, "service.version": __version__})
    )
    if otlp_endpoint:
        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if exporter is not None:  # tests and embedding applications
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def tracer_from(provider: TracerProvider) -> Tracer:
    return provider.get_tracer("nearline", __version__)


class UnexportedTracer(NoOpTracer):
    """For when no span will leave the process: nothing is recorded (building SDK spans cost
    ~15 % of the gateway's CPU per request), but every root span still carries a fresh,
    valid trace id for the ``x-nearline-trace-id`` header and the logs."""

    def start_span(
        self, name: str, context: Context | None = None, *args: Any, **kwargs: Any
    ) -> Span:
        parent = get_current_span(context) if context is not None else None
        if parent is not None and parent.get_span_context().is_valid:
            return NonRecordingSpan(parent.get_span_context())
        return NonRecordingSpan(
            SpanContext(
                trace_id=random.getrandbits(128) or 1,
                span_id=random.getrandbits(64) or 1,
                is_remote=False,
                trace_flags=TraceFlags(TraceFlags.DEFAULT),
            )
        )


def trace_id_hex(span: Span) -> str:
    return format(span.get_span_context().trace_id, "032x")


def genai_request_attributes(request: ChatRequest, provider: str) -> dict[str, str | float | int]:
    """GenAI semantic-convention attributes of a chat request."""
    attributes: dict[str, str | float | int] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": request.model,
    }
    if request.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.temperature
    if request.top_p is not None:
        attributes["gen_ai.request.top_p"] = request.top_p
    if request.max_output_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = request.max_output_tokens
    if request.seed is not None:
        attributes["gen_ai.request.seed"] = request.seed
    return attributes


async def traced(events: AsyncIterator[Event], span: Span) -> AsyncGenerator[Event, None]:
    """Pass events through; put usage and finish reason on ``span`` and end it at the end."""
    try:
        async for event in events:
            if isinstance(event, Usage):
                span.set_attribute("gen_ai.usage.input_tokens", event.prompt_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", event.completion_tokens)
            elif isinstance(event, Done):
                span.set_attribute("gen_ai.response.finish_reasons", [event.finish_reason])
            elif isinstance(event, ErrorEvent):
                span.set_status(Status(StatusCode.ERROR, event.error.message))
                span.set_attribute("error.type", event.error.code or "error")
            yield event
    finally:
        span.end()
