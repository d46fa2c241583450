"""OpenAI's legacy ``POST /v1/completions``. Thin: parse and translate once
(``serving/completions_wire.py``: the prompt is one user turn), authenticate, hand to
``ChatService``, render ``text_completion`` objects (SSE or one body)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from nearline.core.errors import NearlineError
from nearline.core.events import collect
from nearline.core.request import ChatRequest
from nearline.gateway.api.openai import request_tenant
from nearline.gateway.api.responses import SSE_HEADERS, JSONBody
from nearline.gateway.api.state import app_state
from nearline.gateway.serving.completions_wire import (
    CompletionEncoder,
    CompletionRequest,
    chat_request,
    completion_body,
)
from nearline.gateway.serving.pipeline import Answer
from nearline.gateway.serving.service import Transport, answer_headers
from nearline.gateway.serving.wire import parse_json, validated

router = APIRouter()

COMPLETIONS = Transport("POST /v1/completions", cache_control=True, stream_span=True)


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    received_at = time.perf_counter()

    async def read() -> ChatRequest:
        return chat_request(validated(CompletionRequest, parse_json(await request.body())))

    answer = await app_state(request).service.handle(
        read,
        lambda: request_tenant(request),
        request.headers,
        received_at=received_at,
        transport=COMPLETIONS,
    )
    chat = answer.call.request
    headers = answer_headers(answer)
    if not chat.stream:
        try:
            collected = await collect(answer.events())
        except NearlineError as error:
            error.extra_headers.update(headers)
            raise
        finally:
            await answer.aclose()
        return JSONBody(completion_body(chat.model, answer.request_id, collected), headers=headers)
    encoder = CompletionEncoder(chat.model, answer.request_id, chat.include_usage)
    return StreamingResponse(
        _sse(encoder, answer), media_type="text/event-stream", headers=SSE_HEADERS | headers
    )


async def _sse(encoder: CompletionEncoder, answer: Answer) -> AsyncIterator[bytes]:
    try:
        async for event in answer.events():
            frame = encoder.encode(event)
            if frame:
                yield frame
    finally:
        await answer.aclose()  # the client left or the answer ended: stop the upstream work
