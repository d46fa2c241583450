"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``.

Thin: parse and translate once (``serving/responses_wire.py``, with the conversation of
``previous_response_id`` from this tenant's stored responses), authenticate, hand to
``ChatService``, render (``serving/responses_sse.py``). A finished response is stored
(``store``, true by default) in ``serving/response_store.py``: in memory, or in Redis when
``redis.url`` is set; this router's lifespan owns the store.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response, StreamingResponse

from nearline.core.errors import InvalidRequest, NearlineError
from nearline.core.events import collect
from nearline.core.request import ChatRequest
from nearline.gateway.api.openai import request_tenant
from nearline.gateway.api.responses import SSE_HEADERS, JSONBody
from nearline.gateway.api.state import app_state
from nearline.gateway.serving.pipeline import Answer
from nearline.gateway.serving.response_store import (
    ResponseStore,
    StoredResponse,
    open_response_store,
)
from nearline.gateway.serving.responses_sse import (
    ResponsesEncoder,
    chat_output,
    final_status,
    output_items,
    response_body,
    response_id,
)
from nearline.gateway.serving.responses_wire import ResponsesRequest, chat_request, conversation
from nearline.gateway.serving.service import Transport, answer_headers
from nearline.gateway.serving.wire import parse_json, validated
from nearline.gateway.tenancy import Tenant


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    store = open_response_store(app.state.nearline.settings.redis.url)  # built just before
    app.state.nearline_responses = store
    try:
        yield
    finally:
        await store.aclose()


router = APIRouter(lifespan=_lifespan)

RESPONSES = Transport("POST /v1/responses", cache_control=True, stream_span=True)


def response_store(request: Request) -> ResponseStore:
    store: ResponseStore = request.app.state.nearline_responses
    return store


def _not_found(rid: str, param: str | None = None) -> InvalidRequest:
    error = InvalidRequest(
        f"Response with id '{rid}' not found.", param=param, code="response_not_found"
    )
    if param is None:
        error.status_code = 404
    return error


@router.post("/v1/responses")
async def create_response(request: Request) -> Response:
    received_at = time.perf_counter()
    store = response_store(request)
    tenants: list[Tenant] = []
    wires: list[ResponsesRequest] = []

    def authenticate() -> Tenant:
        tenants.append(request_tenant(request))
        return tenants[0]

    async def read() -> ChatRequest:
        wires.append(validated(ResponsesRequest, parse_json(await request.body())))
        earlier = []
        previous = wires[0].previous_response_id
        if previous is not None:
            stored = await store.get(tenants[0].name, previous)
            if stored is None:
                raise _not_found(previous, "previous_response_id")
            earlier = stored.conversation
        return chat_request(wires[0], earlier)

    answer = await app_state(request).service.handle(
        read, authenticate, request.headers, received_at=received_at, transport=RESPONSES
    )
    wire, chat = wires[0], answer.call.request
    rid = response_id(answer.request_id)
    headers = answer_headers(answer)
    if not wire.stream:
        try:
            collected = await collect(answer.events())
        except NearlineError as error:
            error.extra_headers.update(headers)
            raise
        finally:
            await answer.aclose()
        choice = collected.choices[0]
        body = response_body(
            wire,
            rid,
            created_at=int(time.time()),
            status=final_status(choice),
            output=output_items(rid, choice),
            usage=collected.usage,
        )
        if wire.store:
            stored = StoredResponse(body, conversation(wire, chat, chat_output(choice)))
            await store.put(answer.call.tenant, rid, stored)
        return JSONBody(body, headers=headers)
    encoder = ResponsesEncoder(wire, rid)
    return StreamingResponse(
        _sse(encoder, answer, store if wire.store else None, chat),
        media_type="text/event-stream",
        headers=SSE_HEADERS | headers,
    )


async def _sse(
    encoder: ResponsesEncoder, answer: Answer, store: ResponseStore | None, chat: ChatRequest
) -> AsyncIterator[bytes]:
    try:
        yield encoder.opening()
        async for event in answer.events():
            frame = encoder.encode(event)
            if frame:
                yield frame
    finally:
        await answer.aclose()  # the client left or the answer ended: stop the upstream work
    if store is not None and encoder.result is not None and encoder.choice is not None:
        history = conversation(encoder.request, chat, chat_output(encoder.choice))
        await store.put(answer.call.tenant, encoder.rid, StoredResponse(encoder.result, history))


@router.get("/v1/responses/{rid}")
async def get_response(rid: str, request: Request) -> Response:
    stored = await response_store(request).get(request_tenant(request).name, rid)
    if stored is None:
        raise _not_found(rid)
    return JSONBody(stored.response)


@router.delete("/v1/responses/{rid}")
async def delete_response(rid: str, request: Request) -> Response:
    if not await response_store(request).delete(request_tenant(request).name, rid):
        raise _not_found(rid)
    return JSONBody({"id": rid, "object": "response", "deleted": True})
