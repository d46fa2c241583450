"""OpenAI-compatible routes. Thin: parse, authenticate, hand to ``ChatService``, render."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from nearline.core.errors import InvalidRequest, NearlineError
from nearline.core.http import error_response
from nearline.core.request import ChatRequest, request_body_schema
from nearline.gateway.api.responses import SSE_HEADERS, JSONBody
from nearline.gateway.api.state import app_state
from nearline.gateway.serving.pipeline import Answer
from nearline.gateway.serving.service import answer_headers, traced_headers
from nearline.gateway.serving.sse import DONE_FRAME, ChunkEncoder, collect_body
from nearline.gateway.tenancy import Tenant

router = APIRouter()


def parse_chat_request(raw: bytes) -> ChatRequest:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from exc
    return chat_request_from(payload)


def chat_request_from(payload: object) -> ChatRequest:
    """Validate an already-decoded JSON body (the HTTP body, a WebSocket message's body)."""
    if not isinstance(payload, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return ChatRequest.model_validate(payload)
    except ValidationError as exc:
        raise _invalid_from(exc) from exc


_UNION_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}


# Discriminated unions put the tag in the path: response_format.json_schema.json_schema.name,
# messages.0.content.1.image_url.image_url.url; the tag (right after its field) is dropped.
_DISCRIMINATED = {"response_format": {"text", "json_object", "json_schema"}}
_PART_TAGS = {"text", "image_url"}


def _field_path(loc: tuple[int | str, ...]) -> str:
    """``('messages', 0, 'content', 'str')`` → ``messages.0.content`` (union tags dropped)."""
    kept: list[int | str] = []
    tag_dropped = False
    for part in loc:
        if isinstance(part, str) and (part in _UNION_TAGS or "[" in part):
            continue
        if isinstance(part, str) and kept and not tag_dropped:
            before = kept[-1]
            tagged = isinstance(before, str) and part in _DISCRIMINATED.get(before, ())
            if tagged or (
                isinstance(before, int) and kept[-2:-1] == ["content"] and part in _PART_TAGS
            ):
                tag_dropped = True
                continue
        tag_dropped = False
        kept.append(part)
    return ".".join(str(part) for part in kept)


def _invalid_from(error: ValidationError) -> InvalidRequest:
    # A union reports one error per option: the deepest says most (content.1.image_url.url)
    first = max(error.errors(include_url=False), key=lambda e: len(e["loc"]))
    path = _field_path(first["loc"])
    param = path.split(".")[0] or None
    if first["type"] == "extra_forbidden":
        return InvalidRequest(f"unrecognized request argument supplied: {path}", param=param)
    if first["type"] == "missing":
        return InvalidRequest(f"missing required parameter: {path}", param=param)
    return InvalidRequest(f"invalid value for {path}: {first['msg']}", param=param)


def request_tenant(request: Request) -> Tenant:
    return app_state(request).keyring.tenant_for(request.headers.get("authorization"))


# The route reads the raw body (orjson, bounds, one parse for HTTP and WebSocket), so FastAPI
# cannot see its model: the request body's schema is published by hand.
_CHAT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": request_body_schema()}},
    }
}


CHAT_PATH = "/v1/chat/completions"


@router.post(CHAT_PATH, openapi_extra=_CHAT_BODY)
async def chat_completions(request: Request) -> Response:
    received_at = time.perf_counter()
    state = app_state(request)

    async def read() -> ChatRequest:
        return parse_chat_request(await request.body())

    answer = await state.service.handle(
        read, lambda: request_tenant(request), request.headers, received_at=received_at
    )
    chat = answer.call.request
    provenance = _provenance(answer)
    headers = answer_headers(answer)
    if not chat.stream:
        try:
            body = await collect_body(
                chat.model, answer.events(), provenance, completion_id=answer.request_id
            )
        except NearlineError as error:  # after the first event, but before any byte was sent
            error.extra_headers.update(traced_headers(answer))
            raise
        finally:
            await answer.aclose()  # as for a stream: nothing of the answer keeps running
        return JSONBody(body, headers=headers)
    encoder = ChunkEncoder(
        model=chat.model,
        include_usage=chat.include_usage,
        extension=provenance,
        completion_id=answer.request_id,
        choices=chat.choices,
    )
    return _SSEResponse(
        _sse(encoder, answer), media_type="text/event-stream", headers=SSE_HEADERS | headers
    )


class ChatRoute:
    """``POST /v1/chat/completions`` answered as a plain ASGI route, ahead of FastAPI's
    routing, exception and dependency layers (about a tenth of the gateway's CPU per
    request): the same endpoint, the same error rendering, behind the same guards.

    Installed as the innermost middleware, so the drive-by guard, CORS and the body limit
    still stand in front of it; every other path and method (``/openapi.json`` still
    publishes the route) goes on to the app. A bug propagates to Starlette's outermost
    handler, as from the FastAPI route.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or _route_path(scope) != CHAT_PATH:
            await self._app(scope, receive, send)
            return
        try:
            response = await chat_completions(Request(scope, receive))
        except NearlineError as error:
            response = error_response(error)
        await response(scope, receive, send)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _provenance(answer: Answer) -> dict[str, Any]:
    """nearline's extension field: which tier answered, and how similar its question was."""
    return {"source": answer.source, "similarity": answer.similarity}


async def _sse(encoder: ChunkEncoder, answer: Answer) -> AsyncIterator[bytes]:
    try:
        yield encoder.opening() + encoder.encode(answer.first)  # one write, not two
        async for event in answer.rest:
            frame = encoder.encode(event)
            if frame:
                yield frame
    finally:
        await answer.aclose()  # the client left or the answer ended: stop the upstream work


class _SSEResponse(StreamingResponse):
    """The frame that ends with ``data: [DONE]`` also ends the HTTP body: one socket write
    fewer per stream (system calls are much of the gateway's CPU per request)."""

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        ended = False
        async for chunk in self.body_iterator:
            assert isinstance(chunk, bytes)
            if ended:
                continue
            ended = chunk.endswith(DONE_FRAME)
            await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
        if not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    tenant = request_tenant(request)
    data: list[dict[str, Any]] = [
        {"id": name, "object": "model", "created": 0, "owned_by": "nearline"}
        for name in app_state(request).catalogue.names_for(tenant)
    ]
    return JSONBody({"object": "list", "data": data})
