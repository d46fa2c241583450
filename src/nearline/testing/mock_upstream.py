"""``nearline mock-upstream``: a real HTTP server that behaves like a paid OpenAI-compatible
provider. The one allowed stand-in in tests and benchmarks, because paid APIs cannot be
reached from here.

It streams deterministic text (the same messages + seed give the same words) with a
configurable time to first token, token rate, error rate, 429 rate and mid-stream
disconnects, and counts what happened at ``GET /mock/stats`` so tests can prove that the
gateway closed a connection when its client left. Its Anthropic mode (``/v1/messages``)
and ``/v1/embeddings`` are in ``mock_anthropic``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from nearline.testing import mock_answers

# Answers are readable sentences, one word per token: subject, verb, object, drawn per
# sentence from these lists by a generator seeded with the request.
_SUBJECTS = (
    "The refined answer",
    "A careful reply",
    "The paid model",
    "This response",
    "The gateway",
    "A good answer",
    "The final text",
    "Your question",
)
_VERBS = (
    "explains",
    "covers",
    "describes",
    "checks",
    "answers",
    "summarises",
    "confirms",
    "adds",
)
_OBJECTS = (
    "the main point in plain words.",
    "what the draft left out.",
    "each step in order.",
    "the detail that matters most.",
    "why the result holds.",
    "the facts behind it.",
    "a short example to follow.",
    "the usual exceptions.",
)


@dataclass(frozen=True, slots=True)
class MockBehaviour:
    ttft_s: float = 0.05
    tokens_per_s: float = 200.0
    completion_tokens: int = 24
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    disconnect_rate: float = 0.0
    seed: int = 0
    model: str = "mock-1"
    # Heavy tail: this share of requests waits ttft_s * slow_factor for its first token.
    slow_rate: float = 0.0
    slow_factor: float = 10.0
    # Hold every answer before its first token until ``POST /mock/release`` (tests that must
    # order events without depending on how fast this machine is).
    hold_until_released: bool = False
    # Lay every answer out as this many numbered lines ("1. w w", "2. w w", ...): a planner
    # for Plan-and-Execute (the words and token counts are the same).
    numbered_lines: int = 0


@dataclass(slots=True)
class MockStats:
    requests: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    rate_limited: int = 0
    disconnected: int = 0
    active: int = 0
    prompts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "failed": self.failed,
            "rate_limited": self.rate_limited,
            "disconnected": self.disconnected,
            "active": self.active,
        }


def deterministic_words(messages: list[dict[str, Any]], seed: int | None, count: int) -> list[str]:
    """``count`` words of readable sentences; the same messages and seed give the same words."""
    digest = hashlib.sha256(orjson.dumps([messages, seed])).digest()
    rng = random.Random(digest)
    words: list[str] = []
    while len(words) < count:
        sentence = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
        words += sentence.split()
    return words[:count]


def numbered_lines(words: list[str], lines: int) -> list[str]:
    """``words`` as ``lines`` numbered lines: each line's first word gets its number (and,
    after the first line, a line break)."""
    size = max(1, -(-len(words) // lines))
    return [
        (("\n" if i else "") + f"{i // size + 1}. {word}") if i % size == 0 else word
        for i, word in enumerate(words)
    ]


def _chunk(
    chunk_id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None,
    index: int = 0,
    logprobs: dict[str, Any] | None = None,
) -> bytes:
    choice = {"index": index, "delta": delta, "finish_reason": finish_reason}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    body = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [choice],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def first_token_delay(behaviour: MockBehaviour, request_number: int) -> float:
    """``ttft_s``, or ``ttft_s * slow_factor`` for a ``slow_rate`` share of requests.

    Drawn from its own generator, seeded by (seed, request number), so the other random
    behaviours see the same draws as without a tail.
    """
    if not behaviour.slow_rate:
        return behaviour.ttft_s
    draw = random.Random(f"{behaviour.seed}/tail/{request_number}").random()
    return behaviour.ttft_s * (behaviour.slow_factor if draw < behaviour.slow_rate else 1.0)


def _error(
    status: int, message: str, kind: str, code: str | None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_mock_app(behaviour: MockBehaviour) -> Starlette:  # noqa: PLR0915 - routes as closures
    from nearline.testing.mock_anthropic import anthropic_routes  # it imports this module

    stats = MockStats()
    chaos = random.Random(behaviour.seed)
    gate = [asyncio.Event()]  # the current hold; a release opens it and starts a new one

    async def held() -> None:
        if behaviour.hold_until_released:
            await gate[0].wait()

    async def chat_completions(request: Request) -> Response:
        stats.requests += 1
        payload = orjson.loads(await request.body())
        roll = chaos.random()
        if roll < behaviour.error_rate:
            stats.failed += 1
            return _error(500, "mock upstream failure", "server_error", None)
        if roll < behaviour.error_rate + behaviour.rate_limit_rate:
            stats.rate_limited += 1
            return _error(
                429,
                "mock rate limit",
                "rate_limit_error",
                "rate_limit_exceeded",
                {"Retry-After": "3"},
            )
        disconnect = chaos.random() < behaviour.disconnect_rate
        limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
        count = (
            min(behaviour.completion_tokens, int(limit)) if limit else behaviour.completion_tokens
        )
        words = deterministic_words(payload.get("messages", []), payload.get("seed"), count)
        if behaviour.numbered_lines:
            words = numbered_lines(words, behaviour.numbered_lines)
        finish = "length" if limit and int(limit) <= behaviour.completion_tokens else "stop"
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in payload["messages"])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": count,
            "total_tokens": prompt_tokens + count,
        }
        model = payload.get("model", behaviour.model)
        created = int(time.time())
        chunk_id = "chatcmpl-mock-" + hashlib.sha1(str(stats.requests).encode()).hexdigest()[:12]
        # Tools, JSON formats, n > 1, logprobs (mock_answers); None: the plain text answer.
        planned = mock_answers.plan(
            payload,
            lambda i: words if i == 0 else deterministic_words(payload["messages"], i, count),
            finish,
        )
        if planned is not None:
            usage["completion_tokens"] = count * len(planned)
            usage["total_tokens"] = prompt_tokens + usage["completion_tokens"]
            return await _answer_planned(
                planned, payload, usage, model, created, chunk_id, stats.requests
            )
        if not payload.get("stream"):
            await held()
            await asyncio.sleep(
                first_token_delay(behaviour, stats.requests)
                + max(0, count - 1) / behaviour.tokens_per_s
            )
            stats.completed += 1
            return JSONResponse(
                {
                    "id": chunk_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": finish,
                            "message": {
                                "role": "assistant",
                                "content": "".join(" " + w for w in words).strip(),
                            },
                        }
                    ],
                    "usage": usage,
                }
            )
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            _stream(
                words,
                finish,
                usage if include_usage else None,
                model,
                created,
                chunk_id,
                disconnect,
                first_token_delay(behaviour, stats.requests),
            ),
            media_type="text/event-stream",
        )

    async def _stream(
        words: list[str],
        finish: str,
        usage: dict[str, int] | None,
        model: str,
        created: int,
        chunk_id: str,
        disconnect: bool,
        ttft_s: float,
    ) -> AsyncIterator[bytes]:
        stats.active += 1
        try:
            await held()
            await asyncio.sleep(ttft_s)
            yield _chunk(chunk_id, model, created, {"role": "assistant", "content": ""}, None)
            for index, word in enumerate(words):
                if index:
                    await asyncio.sleep(1 / behaviour.tokens_per_s)
                text = word if index == 0 else " " + word
                yield _chunk(chunk_id, model, created, {"content": text}, None)
                if disconnect and index == len(words) // 2:
                    stats.disconnected += 1
                    raise ConnectionAbortedError("mock mid-stream disconnect")
            yield _chunk(chunk_id, model, created, {}, finish)
            if usage is not None:
                body = {
                    "id": chunk_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
                yield b"data: " + orjson.dumps(body) + b"\n\n"
            yield b"data: [DONE]\n\n"
            stats.completed += 1
        except (asyncio.CancelledError, GeneratorExit):
            stats.cancelled += 1
            raise
        finally:
            stats.active -= 1

    async def _answer_planned(
        planned: list[mock_answers.PlannedChoice],
        payload: dict[str, Any],
        usage: dict[str, int],
        model: str,
        created: int,
        chunk_id: str,
        number: int,
    ) -> Response:
        ttft_s = first_token_delay(behaviour, number)
        if not payload.get("stream"):
            await held()
            await asyncio.sleep(ttft_s)
            stats.completed += 1
            body = {"id": chunk_id, "object": "chat.completion", "created": created}
            choices = mock_answers.plan_body(planned)
            return JSONResponse({**body, "model": model, "choices": choices, "usage": usage})
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))

        async def frames() -> AsyncIterator[bytes]:
            stats.active += 1
            try:
                await held()
                await asyncio.sleep(ttft_s)
                for index in range(len(planned)):
                    role = {"role": "assistant", "content": ""}
                    yield _chunk(chunk_id, model, created, role, None, index)
                for step, (index, delta, logprobs, finish) in enumerate(
                    mock_answers.plan_deltas(planned)
                ):
                    if step:
                        await asyncio.sleep(1 / behaviour.tokens_per_s)
                    yield _chunk(chunk_id, model, created, delta, finish, index, logprobs)
                if include_usage:
                    body = {"id": chunk_id, "object": "chat.completion.chunk", "created": created}
                    tail = {**body, "model": model, "choices": [], "usage": usage}
                    yield b"data: " + orjson.dumps(tail) + b"\n\n"
                yield b"data: [DONE]\n\n"
                stats.completed += 1
            except (asyncio.CancelledError, GeneratorExit):
                stats.cancelled += 1
                raise
            finally:
                stats.active -= 1

        return StreamingResponse(frames(), media_type="text/event-stream")

    async def models(_: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": behaviour.model, "object": "model", "created": 0, "owned_by": "mock"}
                ],
            }
        )

    async def release(_: Request) -> Response:
        opened, gate[0] = gate[0], asyncio.Event()
        opened.set()
        return JSONResponse({"released": True})

    async def stats_endpoint(_: Request) -> Response:
        return JSONResponse(stats.as_dict())

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/mock/stats", stats_endpoint, methods=["GET"]),
            Route("/mock/release", release, methods=["POST"]),
            *anthropic_routes(behaviour, stats, deterministic_words),
        ]
    )
