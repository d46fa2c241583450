"""Anthropic's Messages API: ``POST /v1/messages`` and ``/v1/messages/count_tokens``.

Thin: parse and translate once (``serving/messages_wire.py``), authenticate (``x-api-key``,
as Anthropic's clients send it, or ``Authorization: Bearer``), hand to ``ChatService``,
render (``serving/messages_sse.py``). Errors are answered in Anthropic's error shape.

``count_tokens`` is exact where the model can count: an Anthropic-format upstream is asked
(its own ``count_tokens``); the local model evaluates the prompt and generates one token
(``usage.prompt_tokens``, through the pipeline, never cached); other upstreams have no
token counter and are refused with a 400.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from nearline.config import LOCAL_PROVIDER
from nearline.core.errors import InvalidRequest, ModelNotFound, NearlineError, PermissionDenied
from nearline.core.events import collect
from nearline.core.request import ChatRequest
from nearline.gateway.api.responses import SSE_HEADERS, JSONBody
from nearline.gateway.api.state import app_state
from nearline.gateway.providers.anthropic import AnthropicProvider
from nearline.gateway.serving.messages_sse import MessagesEncoder, error_body, message_body
from nearline.gateway.serving.messages_wire import (
    CountTokensRequest,
    MessagesRequest,
    chat_messages,
    chat_request,
    chat_tools,
)
from nearline.gateway.serving.pipeline import Answer
from nearline.gateway.serving.service import Transport, answer_headers
from nearline.gateway.serving.wire import parse_json, to_chat, validated
from nearline.gateway.tenancy import Tenant

router = APIRouter()

MESSAGES = Transport("POST /v1/messages", cache_control=True, stream_span=True)
COUNT_TOKENS = Transport("POST /v1/messages/count_tokens", cache_control=False, stream_span=False)


def anthropic_tenant(request: Request) -> Callable[[], Tenant]:
    """``x-api-key`` (Anthropic's header) or ``Authorization: Bearer``."""

    def authenticate() -> Tenant:
        authorization = request.headers.get("authorization")
        key = request.headers.get("x-api-key")
        if key and not authorization:
            authorization = f"Bearer {key}"
        return app_state(request).keyring.tenant_for(authorization)

    return authenticate


def _anthropic_error(error: NearlineError) -> JSONBody:
    return JSONBody(error_body(error), status_code=error.status_code, headers=error.headers())


@router.post("/v1/messages")
async def messages(request: Request) -> Response:
    received_at = time.perf_counter()
    state = app_state(request)
    wire: list[MessagesRequest] = []

    async def read() -> ChatRequest:
        wire.append(validated(MessagesRequest, parse_json(await request.body())))
        return chat_request(wire[0])

    try:
        answer = await state.service.handle(
            read,
            anthropic_tenant(request),
            request.headers,
            received_at=received_at,
            transport=MESSAGES,
        )
    except NearlineError as error:
        return _anthropic_error(error)
    model = wire[0].model
    headers = answer_headers(answer)
    if not answer.call.request.stream:
        try:
            collected = await collect(answer.events())
        except NearlineError as error:
            error.extra_headers.update(headers)
            return _anthropic_error(error)
        finally:
            await answer.aclose()
        return JSONBody(message_body(model, answer.request_id, collected), headers=headers)
    encoder = MessagesEncoder(model=model, request_id=answer.request_id)
    return StreamingResponse(
        _sse(encoder, answer), media_type="text/event-stream", headers=SSE_HEADERS | headers
    )


async def _sse(encoder: MessagesEncoder, answer: Answer) -> AsyncIterator[bytes]:
    try:
        yield encoder.opening()
        async for event in answer.events():
            frame = encoder.encode(event)
            if frame:
                yield frame
    finally:
        await answer.aclose()  # the client left or the answer ended: stop the upstream work


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request) -> Response:
    try:
        return JSONBody({"input_tokens": await _count(request)})
    except NearlineError as error:
        return _anthropic_error(error)


async def _count(request: Request) -> int:
    state = app_state(request)
    tenant = anthropic_tenant(request)()
    payload = parse_json(await request.body())
    wire = validated(CountTokensRequest, payload)
    if wire.model not in state.catalogue.names:
        raise ModelNotFound(f"the model {wire.model!r} does not exist", param="model")
    if not state.catalogue.may_use(tenant, wire.model):
        raise PermissionDenied(f"this API key may not use the model {wire.model!r}", param="model")
    route = state.catalogue.route(wire.model)
    provider = state.providers.get(route.provider)
    if isinstance(provider, AnthropicProvider):
        return await provider.count_tokens(payload, route.upstream_model or wire.model)
    if route.provider != LOCAL_PROVIDER:
        raise InvalidRequest(
            f"count_tokens is not available for the model {wire.model!r}: its upstream has no "
            "token counter",
            param="model",
        )
    body = {
        "model": wire.model,
        "messages": chat_messages(wire.system, wire.messages),
        "max_tokens": 1,
        "nearline": {"cache": "no-store"},
        **chat_tools(wire.tools, wire.tool_choice),
    }
    answer = await state.service.handle(
        to_chat(body),
        tenant,
        request.headers,
        received_at=time.perf_counter(),
        transport=COUNT_TOKENS,
        progressive=False,
    )
    try:
        collected = await collect(answer.events())
    finally:
        await answer.aclose()
    return 0 if collected.usage is None else collected.usage.prompt_tokens
