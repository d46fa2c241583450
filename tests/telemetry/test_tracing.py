"""Traces: a span per stage with GenAI attributes, the trace id in a header, OTLP export to a
real HTTP collector on loopback. Requests go through nearline's mock upstream."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nearline.testing import eventually, http, serve_in_thread

BODY = {
    "model": "m",
    "temperature": 0.2,
    "max_tokens": 6,
    "messages": [{"role": "user", "content": "trace me"}],
}


def test_spans_per_stage_with_genai_attributes_and_trace_id_header(make_gateway):
    exporter = InMemorySpanExporter()
    gateway = make_gateway(span_exporter=exporter)
    miss = http.post(f"{gateway.v1}/chat/completions", json=BODY, timeout=10)
    hit = http.post(f"{gateway.v1}/chat/completions", json={**BODY, "stream": True}, timeout=10)
    assert hit.status_code == 200

    def ended(trace_id: str) -> bool:  # a root span ends when its request's task finishes
        return any(
            s.parent is None and format(s.context.trace_id, "032x") == trace_id
            for s in exporter.get_finished_spans()
        )

    eventually(lambda: ended(hit.headers["x-nearline-trace-id"]))
    spans = exporter.get_finished_spans()
    by_trace: dict[str, list] = {}
    for span in spans:
        by_trace.setdefault(format(span.context.trace_id, "032x"), []).append(span)
    first = {s.name: s for s in by_trace[miss.headers["x-nearline-trace-id"]]}
    second = {s.name: s for s in by_trace[hit.headers["x-nearline-trace-id"]]}
    assert set(first) == {
        "POST /v1/chat/completions",
        "auth",
        "cache.exact",
        "cache.semantic",
        "chat mock-1",
    }
    assert set(second) == {"POST /v1/chat/completions", "auth", "cache.exact", "stream"}
    provider = first["chat mock-1"]
    assert provider.attributes["gen_ai.operation.name"] == "chat"
    assert provider.attributes["gen_ai.request.model"] == "m"
    assert provider.attributes["gen_ai.request.temperature"] == 0.2
    assert provider.attributes["gen_ai.request.max_tokens"] == 6
    assert provider.attributes["gen_ai.usage.output_tokens"] == 6
    assert provider.attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert first["cache.exact"].attributes["nearline.gateway.cache.hit"] is False
    assert second["cache.exact"].attributes["nearline.gateway.cache.hit"] is True
    root = first["POST /v1/chat/completions"]
    assert all(
        s.parent.span_id == root.context.span_id for name, s in first.items() if name != root.name
    )


def test_errors_carry_the_trace_id_too(make_gateway):
    response = http.post(f"{make_gateway(models={}).v1}/chat/completions", json=BODY, timeout=10)
    assert response.status_code == 404
    assert len(response.headers["x-nearline-trace-id"]) == 32


def test_spans_are_exported_over_otlp_when_an_endpoint_is_configured(make_gateway):
    received: list[bytes] = []

    async def collect(request: Request) -> Response:
        received.append(await request.body())
        return Response(b"", media_type="application/x-protobuf")

    collector = Starlette(routes=[Route("/v1/traces", collect, methods=["POST"])])
    with serve_in_thread(collector) as collector_url:
        gateway = make_gateway(tracing={"otlp_endpoint": collector_url})
        response = http.post(f"{gateway.v1}/chat/completions", json=BODY, timeout=10)
        gateway.stop()  # shutting the app down flushes the batching exporter
    assert received, "no OTLP export reached the collector"
    payload = b"".join(received)
    assert bytes.fromhex(response.headers["x-nearline-trace-id"]) in payload
    assert b"gen_ai.request.model" in payload
