"""OpenAI-compatible routes. Thin: parse, authenticate, hand to the pipeline, render."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from nearline.core.errors import InvalidRequest, NearlineError
from nearline.core.request import ChatRequest
from nearline.gateway.api.responses import SSE_HEADERS, JSONBody
from nearline.gateway.api.state import AppState, app_state
from nearline.gateway.cache import policy as cache_policy
from nearline.gateway.serving.pipeline import Answer
from nearline.gateway.serving.sse import ChunkEncoder, collect_body
from nearline.gateway.telemetry.tracing import TRACE_HEADER, trace_id_hex
from nearline.gateway.tenancy import Tenant

router = APIRouter()


def parse_chat_request(raw: bytes) -> ChatRequest:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return ChatRequest.model_validate(payload)
    except ValidationError as exc:
        raise _invalid_from(exc) from exc


_UNION_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}


def _field_path(loc: tuple[int | str, ...]) -> str:
    """``('messages', 0, 'content', 'str')`` → ``messages.0.content`` (union tags dropped)."""
    parts = [
        str(part)
        for part in loc
        if not (isinstance(part, str) and (part in _UNION_TAGS or "[" in part))
    ]
    return ".".join(parts)


def _invalid_from(error: ValidationError) -> InvalidRequest:
    first = error.errors(include_url=False)[0]
    path = _field_path(first["loc"])
    param = path.split(".")[0] or None
    if first["type"] == "extra_forbidden":
        return InvalidRequest(f"unrecognized request argument supplied: {path}", param=param)
    if first["type"] == "missing":
        return InvalidRequest(f"missing required parameter: {path}", param=param)
    return InvalidRequest(f"invalid value for {path}: {first['msg']}", param=param)


def request_tenant(request: Request) -> Tenant:
    return app_state(request).keyring.tenant_for(request.headers.get("authorization"))


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    received_at = time.perf_counter()
    state = app_state(request)
    root = state.tracer.start_span("POST /v1/chat/completions", kind=SpanKind.SERVER)
    try:
        return await _chat_completions(request, state, root, received_at)
    except NearlineError as error:
        root.set_status(Status(StatusCode.ERROR, error.message))
        root.end()
        error.extra_headers[TRACE_HEADER] = trace_id_hex(root)
        raise


async def _chat_completions(
    request: Request, state: AppState, root: Span, received_at: float
) -> Response:
    parent = trace.set_span_in_context(root)
    with state.tracer.start_span("auth", context=parent):
        tenant = request_tenant(request)
    chat = parse_chat_request(await request.body())
    root.set_attribute("gen_ai.request.model", chat.model)
    call = await state.pipeline.resolve(chat, tenant, request.headers)
    answer = await state.pipeline.answer(
        call,
        cache_policy.from_header(request.headers.get("cache-control")),
        received_at,
        trace_parent=parent,
        progressive=progressive_header(request.headers.get("x-nearline-progressive")),
    )
    provenance = _provenance(answer)
    headers = {"x-nearline-source": answer.source, TRACE_HEADER: trace_id_hex(root)}
    if answer.similarity is not None:
        headers["x-nearline-similarity"] = f"{answer.similarity:.4f}"
    root.set_attribute("nearline.source", answer.source)
    if not chat.stream:
        try:
            body = await collect_body(chat.model, answer.events(), provenance)
        finally:
            await answer.aclose()  # as for a stream: nothing of the answer keeps running
            root.end()
        return JSONBody(body, headers=headers)
    encoder = ChunkEncoder(model=chat.model, include_usage=chat.include_usage, extension=provenance)
    streaming = state.tracer.start_span("stream", context=parent)
    return StreamingResponse(
        _sse(encoder, answer, (streaming, root)),
        media_type="text/event-stream",
        headers=SSE_HEADERS | headers,
    )


def progressive_header(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def _provenance(answer: Answer) -> dict[str, Any]:
    """nearline's extension field: which tier answered, and how similar its question was."""
    return {"source": answer.source, "similarity": answer.similarity}


async def _sse(
    encoder: ChunkEncoder, answer: Answer, spans: tuple[Span, ...]
) -> AsyncIterator[bytes]:
    try:
        yield encoder.opening()
        async for event in answer.events():
            frame = encoder.encode(event)
            if frame:
                yield frame
    finally:
        await answer.aclose()  # the client left or the answer ended: stop the upstream work
        for span in spans:
            span.end()


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    tenant = request_tenant(request)
    data: list[dict[str, Any]] = [
        {"id": name, "object": "model", "created": 0, "owned_by": "nearline"}
        for name in app_state(request).pipeline.model_names
        if tenant.may_use(name)
    ]
    return JSONBody({"object": "list", "data": data})
