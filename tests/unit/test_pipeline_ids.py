"""One id per request: the response's ``x-request-id`` and body ``id``, its request-log row
and its root span's ``nearline.request_id`` are the same. In-process: the OpenAI routes over
ASGI, a ``ScriptedProvider``, an in-memory request log and span exporter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import orjson
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from nearline.config import ModelRoute, load_settings
from nearline.core.events import Delta, Done, Usage
from nearline.gateway.api import openai
from nearline.gateway.api.errors import install_error_handlers
from nearline.gateway.api.state import AppState
from nearline.gateway.cache.exact import ExactCache
from nearline.gateway.cache.exact_store import MemoryExactStore
from nearline.gateway.serving.catalogue import Catalogue
from nearline.gateway.serving.pipeline import ServingPipeline
from nearline.gateway.serving.service import ChatService
from nearline.gateway.serving.tiers import CacheTiers
from nearline.gateway.telemetry.observe import AnswerObserver
from nearline.gateway.telemetry.requestlog import RequestLog, RequestRecord
from nearline.gateway.telemetry.tracing import build_tracer_provider, tracer_from
from nearline.gateway.tenancy import KeyRing
from nearline.testing.scripted import ScriptedProvider

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


class ListSink:
    """A request-log sink that keeps its rows in a list."""

    errors: tuple[type[Exception], ...] = ()

    def __init__(self) -> None:
        self.rows: list[RequestRecord] = []

    async def open(self) -> None:
        pass

    async def write(self, rows: list[RequestRecord]) -> None:
        self.rows.extend(rows)

    async def delete_older_than(self, cutoff_ts: float) -> int:
        return 0

    async def aclose(self) -> None:
        pass


@dataclass
class Stack:
    client: httpx.AsyncClient
    provider: ScriptedProvider
    log: RequestLog
    sink: ListSink
    spans: InMemorySpanExporter


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    settings = load_settings()  # for the app state only: the catalogue is built here
    provider = ScriptedProvider("up")
    spans = InMemorySpanExporter()
    tracer_provider = build_tracer_provider("test", None, spans)
    sink = ListSink()
    log = RequestLog(sink, buffer_rows=100)  # not started: flush() writes what is buffered
    catalogue = Catalogue({"m": ModelRoute(provider="up")}, {"up": provider})
    tiers = CacheTiers(catalogue.provider_name, ExactCache(MemoryExactStore(10), 60, 0))
    observer = AnswerObserver(tracer=tracer_from(tracer_provider), request_log=log)
    pipeline = ServingPipeline(catalogue, tiers, observer)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(openai.router)
    app.state.nearline = AppState(
        settings=settings,
        keyring=KeyRing(settings.auth),
        providers={"up": provider},
        catalogue=catalogue,
        pipeline=pipeline,
        service=ChatService(catalogue, pipeline, observer),
        tracer=observer.tracer,
        request_log=log,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://nearline") as client:
        yield Stack(client, provider, log, sink, spans)
    await pipeline.aclose()
    tracer_provider.shutdown()


def root_span_id(stack: Stack) -> str:
    roots = [s for s in stack.spans.get_finished_spans() if s.name == "POST /v1/chat/completions"]
    assert len(roots) == 1
    request_id = roots[0].attributes["nearline.request_id"] if roots[0].attributes else None
    assert isinstance(request_id, str)
    return request_id


async def test_a_json_answer_its_log_row_and_its_span_share_one_request_id(stack: Stack):
    stack.provider.enqueue(Delta("hi"), Usage(2, 1), Done())
    response = await stack.client.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert request_id.startswith("chatcmpl-")
    assert response.json()["id"] == request_id
    await stack.log.flush()
    assert [row.request_id for row in stack.sink.rows] == [request_id]
    assert root_span_id(stack) == request_id


async def test_a_streamed_answer_carries_its_request_id_in_every_chunk(stack: Stack):
    stack.provider.enqueue(Delta("hi"), Delta(" there"), Usage(2, 2), Done())
    response = await stack.client.post("/v1/chat/completions", json={**BODY, "stream": True})
    request_id = response.headers["x-request-id"]
    chunks = [
        orjson.loads(line.removeprefix("data: "))
        for line in response.text.split("\n\n")
        if line.startswith("data: {")
    ]
    assert chunks and {chunk["id"] for chunk in chunks} == {request_id}
    await stack.log.flush()
    assert [row.request_id for row in stack.sink.rows] == [request_id]
    assert root_span_id(stack) == request_id


async def test_every_request_gets_its_own_id_and_errors_name_theirs(stack: Stack):
    stack.provider.enqueue(Delta("hi"), Done())
    first = await stack.client.post("/v1/chat/completions", json=BODY)
    replayed = await stack.client.post("/v1/chat/completions", json=BODY)  # an exact hit
    assert replayed.headers["x-nearline-source"] == "exact"
    assert first.headers["x-request-id"] != replayed.headers["x-request-id"]
    missing = await stack.client.post("/v1/chat/completions", json={**BODY, "model": "nope"})
    assert missing.status_code == 404
    assert missing.headers["x-request-id"].startswith("chatcmpl-")
    assert len(missing.headers["x-nearline-trace-id"]) == 32
    await stack.log.flush()
    assert [row.request_id for row in stack.sink.rows] == [
        first.headers["x-request-id"],
        replayed.headers["x-request-id"],
    ]
