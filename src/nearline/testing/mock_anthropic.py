"""The mock upstream's Anthropic mode: ``POST /v1/messages`` and ``/v1/messages/count_tokens``
as Anthropic's Messages API answers them, and ``POST /v1/embeddings`` as OpenAI's.

Like the OpenAI mode, answers are deterministic (the same messages give the same words) and
paced by the mock's ``ttft_s`` and ``tokens_per_s``. A request without ``x-api-key`` gets
Anthropic's 401 and one without ``anthropic-version`` its 400, so a test proves the provider
sends both. With ``tools`` offered and the last turn the user's own words (not a tool
result), the answer is a ``tool_use`` block (the named tool, else the first) whose input
is an instance of its ``input_schema``, streamed as ``input_json_delta`` fragments;
``stop_reason: tool_use``. Counted tokens are words, as the OpenAI mode counts them.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from nearline.testing.mock_answers import instance_of

if TYPE_CHECKING:
    from nearline.testing.mock_upstream import MockBehaviour, MockStats

Words = Callable[[list[dict[str, Any]], int | None, int], list[str]]
EMBEDDING_DIM = 16
_FRAGMENT = 7


def _anthropic_error(status: int, kind: str, message: str) -> JSONResponse:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            parts.append(_text(block.get("content")))
    return " ".join(parts)


def _input_tokens(payload: dict[str, Any]) -> int:
    system = payload.get("system") or ""
    system_text = system if isinstance(system, str) else _text(system)
    words = len(system_text.split())
    words += sum(len(_text(m.get("content")).split()) for m in payload.get("messages") or [])
    return words


def _tool_use(payload: dict[str, Any], words: list[str]) -> tuple[str, str, str] | None:
    tools = payload.get("tools") or []
    choice = payload.get("tool_choice") or {"type": "auto"}
    messages = payload.get("messages") or []
    if not tools or choice.get("type") == "none" or not messages:
        return None
    last = messages[-1]
    content = last.get("content")
    if last.get("role") != "user" or (
        isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)
    ):
        return None
    tool = next((t for t in tools if t["name"] == choice.get("name")), tools[0])
    digest = hashlib.sha1(orjson.dumps(messages)).hexdigest()[:16]
    arguments = orjson.dumps(instance_of(tool.get("input_schema") or {}, words)).decode()
    return f"toolu_mock_{digest}", tool["name"], arguments


def anthropic_routes(  # noqa: PLR0915 - routes as closures, as in mock_upstream
    behaviour: MockBehaviour, stats: MockStats, words_for: Words
) -> list[Route]:
    """The Anthropic-format and embedding routes of a mock upstream sharing its counters."""

    def refused(request: Request) -> Response | None:
        if not request.headers.get("x-api-key"):
            return _anthropic_error(401, "authentication_error", "x-api-key header is required")
        if not request.headers.get("anthropic-version"):
            return _anthropic_error(400, "invalid_request_error", "anthropic-version is required")
        return None

    async def messages(request: Request) -> Response:
        stats.requests += 1
        error = refused(request)
        if error is not None:
            stats.failed += 1
            return error
        payload = orjson.loads(await request.body())
        if "max_tokens" not in payload:
            stats.failed += 1
            return _anthropic_error(400, "invalid_request_error", "max_tokens: Field required")
        limit = int(payload["max_tokens"])
        count = min(behaviour.completion_tokens, limit)
        flat = [
            {"role": m["role"], "content": _text(m.get("content"))} for m in payload["messages"]
        ]
        words = words_for(flat, None, count)
        call = _tool_use(payload, words)
        stop = (
            "tool_use"
            if call
            else ("max_tokens" if limit < behaviour.completion_tokens else "end_turn")
        )
        usage = {"input_tokens": _input_tokens(payload), "output_tokens": count}
        message_id = f"msg_mock_{stats.requests}"
        model = payload.get("model", behaviour.model)
        if not payload.get("stream"):
            await asyncio.sleep(behaviour.ttft_s)
            stats.completed += 1
            content: list[dict[str, Any]] = [{"type": "text", "text": " ".join(words)}]
            if call is not None:
                content = [
                    {
                        "type": "tool_use",
                        "id": call[0],
                        "name": call[1],
                        "input": orjson.loads(call[2]),
                    }
                ]
            return JSONResponse(
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
        return StreamingResponse(
            _stream(message_id, model, words, call, stop, usage), media_type="text/event-stream"
        )

    async def _stream(
        message_id: str,
        model: str,
        words: list[str],
        call: tuple[str, str, str] | None,
        stop: str,
        usage: dict[str, int],
    ) -> AsyncIterator[bytes]:
        stats.active += 1
        try:
            await asyncio.sleep(behaviour.ttft_s)
            start: dict[str, Any] = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1},
            }
            yield _event("message_start", {"message": start})
            yield _event("ping", {})
            if call is None:
                yield _event(
                    "content_block_start",
                    {"index": 0, "content_block": {"type": "text", "text": ""}},
                )
                for index, word in enumerate(words):
                    if index:
                        await asyncio.sleep(1 / behaviour.tokens_per_s)
                    text = word if index == 0 else " " + word
                    yield _event(
                        "content_block_delta",
                        {"index": 0, "delta": {"type": "text_delta", "text": text}},
                    )
            else:
                block = {"type": "tool_use", "id": call[0], "name": call[1], "input": {}}
                yield _event("content_block_start", {"index": 0, "content_block": block})
                for at in range(0, len(call[2]), _FRAGMENT):
                    await asyncio.sleep(1 / behaviour.tokens_per_s)
                    delta = {
                        "type": "input_json_delta",
                        "partial_json": call[2][at : at + _FRAGMENT],
                    }
                    yield _event("content_block_delta", {"index": 0, "delta": delta})
            yield _event("content_block_stop", {"index": 0})
            yield _event(
                "message_delta",
                {
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
            yield _event("message_stop", {})
            stats.completed += 1
        except (asyncio.CancelledError, GeneratorExit):
            stats.cancelled += 1
            raise
        finally:
            stats.active -= 1

    async def count_tokens(request: Request) -> Response:
        error = refused(request)
        if error is not None:
            return error
        return JSONResponse({"input_tokens": _input_tokens(orjson.loads(await request.body()))})

    async def embeddings(request: Request) -> Response:
        stats.requests += 1
        payload = orjson.loads(await request.body())
        raw = payload.get("input")
        inputs = [raw] if isinstance(raw, str) else list(raw or [])
        data = [
            {"object": "embedding", "index": i, "embedding": mock_vector(str(text))}
            for i, text in enumerate(inputs)
        ]
        tokens = sum(len(str(text).split()) for text in inputs)
        stats.completed += 1
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": payload.get("model", behaviour.model),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    return [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ]


def mock_vector(text: str) -> list[float]:
    """A unit vector of ``EMBEDDING_DIM`` numbers drawn from the text's hash."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(byte - 127.5) / 127.5 for byte in digest[:EMBEDDING_DIM]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"
