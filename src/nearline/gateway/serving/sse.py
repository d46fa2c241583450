"""The one place that turns the event stream into OpenAI's wire shapes.

``ChunkEncoder`` renders events as ``chat.completion.chunk`` SSE frames; ``collect_body``
folds the same events into a non-streaming ``chat.completion`` body. Both produce the usage
object in one way, with ``prompt_tokens_details.cached_tokens``. Every choice (``n > 1``)
gets its ``index``; tool-call fragments become ``delta.tool_calls`` entries as they arrive
and whole ``message.tool_calls`` in a body (``content`` null when the answer is only calls).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from nearline.core.errors import NearlineError
from nearline.core.events import (
    Choice,
    Delta,
    Done,
    ErrorEvent,
    Event,
    Preliminary,
    Replace,
    ToolCallDelta,
    Usage,
    collect,
)
from nearline.core.source import Source

DONE_FRAME = b"data: [DONE]\n\n"


def new_request_id() -> str:
    """The one id of a request: the response's ``x-request-id`` and body ``id``, its
    request-log row, its root span's ``nearline.request_id``."""
    return f"chatcmpl-{uuid.uuid4().hex}"


new_completion_id = new_request_id  # the body's ``id`` is the request id


def usage_body(usage: Usage) -> dict[str, Any]:
    extension = usage_extension(usage)
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        **({} if extension is None else {"nearline": extension}),
    }


def usage_extension(usage: Usage) -> dict[str, Any] | None:
    """What an answer made of several calls (a plan) cost: the total and each call, as the
    usage object's ``nearline`` field (SSE, body) and the WebSocket ``usage`` message carry
    it; ``None`` for a single call."""
    if usage.cost_usd is None and not usage.calls:
        return None
    return {
        "cost_usd": usage.cost_usd,
        "calls": [
            {
                "role": c.role,
                "tier": c.tier,
                "step": c.step,
                "outcome": c.outcome,
                "latency_ms": round(c.latency_s * 1000, 3),
                "cost_usd": c.cost_usd,
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
            }
            for c in usage.calls
        ],
    }


def sse_frame(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


def tool_call_fragment(event: ToolCallDelta) -> dict[str, Any]:
    """A ``delta.tool_calls`` entry: the first fragment of a call names it, later ones only
    carry more arguments (as OpenAI streams them)."""
    function: dict[str, Any] = {"arguments": event.arguments}
    entry: dict[str, Any] = {"index": event.index}
    if event.id is not None:
        entry["id"] = event.id
        entry["type"] = "function"
    if event.name is not None:
        function["name"] = event.name
    entry["function"] = function
    return entry


def choice_body(choice: Choice) -> dict[str, Any]:
    """One choice of a ``chat.completion`` body."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if choice.tool_calls and not choice.text else choice.text,
    }
    if choice.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in choice.tool_calls
        ]
    return {
        "index": choice.index,
        "message": message,
        "finish_reason": choice.finish_reason,
        "logprobs": None if choice.logprobs is None else {"content": list(choice.logprobs)},
    }


@dataclass(slots=True)
class ChunkEncoder:
    model: str
    include_usage: bool
    extension: dict[str, Any] | None = None
    completion_id: str = field(default_factory=new_request_id)
    created: int = field(default_factory=lambda: int(time.time()))
    choices: int = 1  # the request's n
    _pending_usage: Usage | None = None

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse_frame(
            {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": choices,
                **extra,
            }
        )

    def opening(self) -> bytes:
        extra = {} if self.extension is None else {"nearline": self.extension}
        role = {"role": "assistant", "content": ""}
        return b"".join(
            self._chunk(
                [{"index": index, "delta": role, "finish_reason": None}],
                **(extra if index == 0 else {}),
            )
            for index in range(self.choices)
        )

    def encode(self, event: Event) -> bytes:
        match event:
            case Delta(text=text, choice=index, logprobs=logprobs):
                choice: dict[str, Any] = {
                    "index": index,
                    "delta": {"content": text},
                    "finish_reason": None,
                }
                if logprobs is not None:
                    choice["logprobs"] = {"content": list(logprobs)}
                return self._chunk([choice])
            case ToolCallDelta(choice=index):
                delta = {"tool_calls": [tool_call_fragment(event)]}
                return self._chunk([{"index": index, "delta": delta, "finish_reason": None}])
            case Usage():
                self._pending_usage = event
                return b""
            case Done():
                frames = b"".join(
                    self._chunk([{"index": index, "delta": {}, "finish_reason": reason}])
                    for index, reason in enumerate(event.finish_reasons)
                )
                if self.include_usage and self._pending_usage is not None:
                    frames += self._chunk([], usage=usage_body(self._pending_usage))
                return frames + DONE_FRAME
            case ErrorEvent(error=error):
                return sse_frame(error.body()) + DONE_FRAME
            case Preliminary() | Replace():
                return progressive_comment(event)


def progressive_event(event: Preliminary | Replace) -> dict[str, Any]:
    """A progressive event as the JSON object both SSE comments and WebSocket messages carry."""
    if isinstance(event, Preliminary):
        return {
            "type": "preliminary",
            "text": event.text,
            "source": event.source,
            "similarity": event.similarity,
        }
    if event.source != Source.INFERENCE:  # the preliminary stands as the answer (a fallback)
        return {"type": "replace", "action": event.action, "source": event.source}
    return {"type": "replace", "action": event.action}


def progressive_comment(event: Preliminary | Replace) -> bytes:
    """SSE comment lines are ignored by every SSE parser, so plain OpenAI clients never see
    them; progressive-aware clients read lines starting with ``: nearline ``."""
    return b": nearline " + orjson.dumps(progressive_event(event)) + b"\n\n"


async def collect_body(
    model: str,
    events: AsyncIterator[Event],
    extension: dict[str, Any] | None = None,
    *,
    completion_id: str | None = None,
) -> dict[str, Any]:
    """Fold an event stream into a ``chat.completion`` body; an error event raises it.

    With ``extension``, the body carries it as ``"nearline"``, plus the last preliminary
    answer shown (or null) under ``"preliminary"``.
    """
    answer = await collect(events)
    preliminary: dict[str, Any] | None = None
    for event in answer.events:
        match event:
            case Preliminary():
                preliminary = progressive_event(event)
            case Replace():
                if preliminary is not None:
                    preliminary["action"] = event.action
    return {
        "id": completion_id or new_request_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice_body(choice) for choice in answer.choices],
        "usage": usage_body(answer.usage or Usage(0, 0)),
        **({} if extension is None else {"nearline": {**extension, "preliminary": preliminary}}),
    }


def error_frame(error: NearlineError) -> bytes:
    return sse_frame(error.body()) + DONE_FRAME
