"""Traces: a span per stage with GenAI attributes, the trace id in a header, OTLP export to a
real HTTP collector on loopback. Requests go through nearline's mock upstream."""

from __future__ import annotations

import time

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nearline.app import create_app
from nearline.config import load_settings
from nearline.testing import serve_in_thread
from nearline.testing.mock_upstream import MockBehaviour, create_mock_app

BODY = {
    "model": "m",
    "temperature": 0.2,
    "max_tokens": 6,
    "messages": [{"role": "user", "content": "trace me"}],
}


def test_spans_per_stage_with_genai_attributes_and_trace_id_header():
    exporter = InMemorySpanExporter()
    with serve_in_thread(create_mock_app(MockBehaviour(ttft_s=0.01))) as mock_url:
        settings = load_settings(
            providers={"up": {"base_url": f"{mock_url}/v1"}},
            models={"m": {"provider": "up", "upstream_model": "mock-1"}},
        )
        with serve_in_thread(create_app(settings, span_exporter=exporter)) as url:
            miss = httpx.post(f"{url}/v1/chat/completions", json=BODY, timeout=10)
            hit = httpx.post(
                f"{url}/v1/chat/completions", json={**BODY, "stream": True}, timeout=10
            )
            assert hit.status_code == 200
            time.sleep(0.2)
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


def test_errors_carry_the_trace_id_too():
    with serve_in_thread(create_app(load_settings(models={}))) as url:
        response = httpx.post(f"{url}/v1/chat/completions", json=BODY, timeout=10)
    assert response.status_code == 404
    assert len(response.headers["x-nearline-trace-id"]) == 32


def test_spans_are_exported_over_otlp_when_an_endpoint_is_configured():
    received: list[bytes] = []

    async def collect(request: Request) -> Response:
        received.append(await request.body())
        return Response(b"", media_type="application/x-protobuf")

    collector = Starlette(routes=[Route("/v1/traces", collect, methods=["POST"])])
    with (
        serve_in_thread(collector) as collector_url,
        serve_in_thread(create_mock_app(MockBehaviour(ttft_s=0.01))) as mock_url,
    ):
        settings = load_settings(
            providers={"up": {"base_url": f"{mock_url}/v1"}},
            models={"m": {"provider": "up"}},
            tracing={"otlp_endpoint": collector_url},
        )
        with serve_in_thread(create_app(settings)) as url:
            response = httpx.post(f"{url}/v1/chat/completions", json=BODY, timeout=10)
        # the app has shut down, which flushes the batching exporter
    assert received, "no OTLP export reached the collector"
    payload = b"".join(received)
    assert bytes.fromhex(response.headers["x-nearline-trace-id"]) in payload
    assert b"gen_ai.request.model" in payload
