"""Issue 12, point 5: W3C trace context in and out, and the response's id and model on spans.

The upstream is nearline's mock, behind a recorder that keeps the headers each request
brought (a real HTTP server on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.types import Receive, Scope, Send

from nearline.testing import eventually, http, serve_in_thread
from nearline.testing.mock_upstream import MockBehaviour, create_mock_app

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
BODY = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "trace me"}]}


@pytest.fixture
def recorded() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A mock upstream that records the headers of every request it gets."""
    seen: list[dict[str, str]] = []
    mock = create_mock_app(MockBehaviour(ttft_s=0.0, tokens_per_s=5000))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/chat/completions"):
            seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await mock(scope, receive, send)

    with serve_in_thread(app) as url:
        yield url, seen


def _gateway(make_gateway: Any, url: str, exporter: InMemorySpanExporter | None) -> Any:
    return make_gateway(
        span_exporter=exporter,
        providers={"rec": {"base_url": f"{url}/v1"}},
        models={"m": {"provider": "rec", "upstream_model": "mock-1"}},
        cache={"semantic": {"enabled": False}, "exact": {"enabled": False}},
        progressive={"draft_model": None},
    )


def _spans(exporter: InMemorySpanExporter, trace_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        spans = {
            s.name: s
            for s in exporter.get_finished_spans()
            if format(s.context.trace_id, "032x") == trace_id
        }
        # the root span and the provider call's span end in either order
        return spans if {"POST /v1/chat/completions", "chat mock-1"} <= set(spans) else None

    found: dict[str, Any] = eventually(ended)
    return found


@pytest.mark.parametrize("stream", [False, True])
def test_an_incoming_traceparent_parents_the_root_span_and_reaches_the_upstream(
    make_gateway: Any, recorded: tuple[str, list[dict[str, str]]], stream: bool
) -> None:
    url, seen = recorded
    exporter = InMemorySpanExporter()
    gateway = _gateway(make_gateway, url, exporter)
    response = http.post(
        f"{gateway.v1}/chat/completions",
        json={**BODY, "stream": stream},
        headers={"traceparent": TRACEPARENT},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["x-nearline-trace-id"] == TRACE_ID
    spans = _spans(exporter, TRACE_ID)
    root = spans["POST /v1/chat/completions"]
    assert root.parent is not None and format(root.parent.span_id, "016x") == PARENT_ID
    assert root.parent.is_remote
    provider = spans["chat mock-1"]
    version, trace_id, parent_id, flags = seen[-1]["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert parent_id == format(provider.context.span_id, "016x")  # the call's own span
    assert provider.attributes["gen_ai.response.model"] == "mock-1"
    assert provider.attributes["gen_ai.response.id"].startswith("chatcmpl-mock-")


def test_without_a_traceparent_a_new_trace_still_reaches_the_upstream(
    make_gateway: Any, recorded: tuple[str, list[dict[str, str]]]
) -> None:
    url, seen = recorded
    gateway = _gateway(make_gateway, url, None)  # nothing exported: unrecorded spans
    response = http.post(f"{gateway.v1}/chat/completions", json=BODY, timeout=10)
    trace_id = response.headers["x-nearline-trace-id"]
    assert seen[-1]["traceparent"].split("-")[1] == trace_id
    followed = http.post(
        f"{gateway.v1}/chat/completions",
        json=BODY,
        headers={"traceparent": TRACEPARENT},
        timeout=10,
    )
    assert followed.headers["x-nearline-trace-id"] == TRACE_ID
    _, trace_id, parent_id, _ = seen[-1]["traceparent"].split("-")
    assert trace_id == TRACE_ID and parent_id != PARENT_ID  # a child, not the caller's span


@pytest.mark.parametrize("bad", ["garbage", f"00-{'0' * 32}-{PARENT_ID}-01", "00-abc-def-01"])
def test_an_invalid_traceparent_starts_a_new_trace(
    make_gateway: Any, recorded: tuple[str, list[dict[str, str]]], bad: str
) -> None:
    url, _ = recorded
    gateway = _gateway(make_gateway, url, None)
    response = http.post(
        f"{gateway.v1}/chat/completions", json=BODY, headers={"traceparent": bad}, timeout=10
    )
    assert response.status_code == 200
    assert response.headers["x-nearline-trace-id"] not in (TRACE_ID, "0" * 32)
