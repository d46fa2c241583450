"""OpenTelemetry traces: one span per stage, GenAI semantic-convention attributes.

Spans are always recorded in-process (so every response can carry its trace id in the
``x-nearline-trace-id`` header); they leave the process only when an OTLP endpoint is
configured (``tracing.otlp_endpoint``), through a batching exporter off the hot path.
Each app owns its ``TracerProvider`` — no global state.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from nearline import __version__
from nearline.serving.events import Done, ErrorEvent, Event, Usage
from nearline.serving.request import ChatRequest

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
