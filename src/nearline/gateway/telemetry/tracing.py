"""OpenTelemetry traces: one span per stage, GenAI semantic-convention attributes.

Spans are always recorded in-process (so every response can carry its trace id in the
``x-nearline-trace-id`` header); they leave the process only when an OTLP endpoint is
configured (``tracing.otlp_endpoint``), through a batching exporter off the hot path.
Each app owns its ``TracerProvider`` — no global state.

W3C trace context: an incoming ``traceparent`` makes the request's root span its child
(:func:`incoming_context`), and each provider call sends its own span's ``traceparent``
upstream (:func:`propagation_headers`, read while :func:`traced` makes the call's span
current). The provider span carries ``gen_ai.response.id`` / ``gen_ai.response.model``
when the provider says them.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
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
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from nearline import __version__
from nearline.core.events import Done, ErrorEvent, Event, Usage
from nearline.core.request import ChatRequest

TRACE_HEADER = "x-nearline-trace-id"
_W3C = TraceContextTextMapPropagator()  # W3C trace context only: no global propagator


def incoming_context(headers: Mapping[str, str]) -> Context | None:
    """The remote parent a request's ``traceparent`` (and ``tracestate``) name, or ``None``
    when it has none or an invalid one (the root span then starts a new trace)."""
    carrier = {
        name: value
        for name in ("traceparent", "tracestate")
        if (value := headers.get(name)) is not None
    }
    if "traceparent" not in carrier:
        return None
    extracted = _W3C.extract(carrier)
    return extracted if get_current_span(extracted).get_span_context().is_valid else None


def propagation_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) for the current span, for an upstream request;
    empty when no span is current."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


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
            inherited = parent.get_span_context()
            return NonRecordingSpan(  # a child: the parent's trace, a span id of its own
                SpanContext(
                    trace_id=inherited.trace_id,
                    span_id=random.getrandbits(64) or 1,
                    is_remote=False,
                    trace_flags=inherited.trace_flags,
                    trace_state=inherited.trace_state,
                )
            )
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
    """Pass events through; put usage, finish reasons and the response's id and model on
    ``span`` and end it at the end. ``span`` is the current span while ``events`` runs (not
    while the consumer does), so a provider's :func:`propagation_headers` name it."""
    within = set_span_in_context(span)
    try:
        while True:
            token = otel_context.attach(within)
            try:
                event = await anext(events)
            except StopAsyncIteration:
                break
            finally:
                otel_context.detach(token)
            if isinstance(event, Usage):
                span.set_attribute("gen_ai.usage.input_tokens", event.prompt_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", event.completion_tokens)
            elif isinstance(event, Done):
                span.set_attribute("gen_ai.response.finish_reasons", list(event.finish_reasons))
                if event.response_id is not None:
                    span.set_attribute("gen_ai.response.id", event.response_id)
                if event.response_model is not None:
                    span.set_attribute("gen_ai.response.model", event.response_model)
            elif isinstance(event, ErrorEvent):
                span.set_status(Status(StatusCode.ERROR, event.error.message))
                span.set_attribute("error.type", event.error.code or "error")
            yield event
    finally:
        span.end()
