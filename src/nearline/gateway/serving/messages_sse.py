"""The event stream in Anthropic's Messages shapes: SSE events and the ``message`` body.

Streaming: ``message_start`` → per content block ``content_block_start`` →
``content_block_delta``* (``text_delta`` for text, ``input_json_delta`` for a tool call's
arguments) → ``content_block_stop`` → ``message_delta`` (``stop_reason``, the usage) →
``message_stop``; a ``ping`` follows ``message_start``, as Anthropic sends it. A failure
after the stream began is an ``error`` event (Anthropic's error shape), never a silent cut.
Text and each tool call are blocks in the order they arrive. ``message_start`` cannot know
the input tokens yet (nearline's first event is already the answer's); ``message_delta``
carries them with the output tokens, as Anthropic's own recent streams do.

Finish reasons: ``stop`` → ``end_turn``, ``length`` → ``max_tokens``, ``tool_calls`` →
``tool_use``, ``content_filter`` → ``refusal``. Progressive events travel as SSE comment
lines, as on the chat route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from nearline.core.errors import NearlineError
from nearline.core.events import (
    CollectedAnswer,
    Delta,
    Done,
    ErrorEvent,
    Event,
    FinishReason,
    Preliminary,
    Replace,
    ToolCallDelta,
    Usage,
)
from nearline.gateway.serving.sse import progressive_comment

STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
_ERROR_TYPES = {"server_error": "api_error"}


def message_id(request_id: str) -> str:
    """``msg_…``: the request id's unique part, as Anthropic names its messages."""
    return "msg_" + request_id.removeprefix("chatcmpl-")


def error_body(error: NearlineError) -> dict[str, Any]:
    """nearline's error in Anthropic's shape (``not_found_error`` for a 404)."""
    kind = _ERROR_TYPES.get(error.error_type, error.error_type)
    if error.status_code == 404:
        kind = "not_found_error"
    return {"type": "error", "error": {"type": kind, "message": error.client_message}}


def usage_body(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def _arguments(text: str) -> Any:
    try:
        return orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {}


def message_body(model: str, request_id: str, answer: CollectedAnswer) -> dict[str, Any]:
    """A non-streamed ``message``: choice 0's text and tool calls as content blocks."""
    choice = answer.choices[0]
    content: list[dict[str, Any]] = []
    if choice.text or not choice.tool_calls:
        content.append({"type": "text", "text": choice.text})
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": _arguments(c.arguments)}
        for c in choice.tool_calls
    ]
    return {
        "id": message_id(request_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": usage_body(answer.usage),
    }


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


@dataclass(slots=True)
class MessagesEncoder:
    """One answer's events as Anthropic's SSE events (choice 0 only)."""

    model: str
    request_id: str
    _block: int = -1  # the open content block's index (-1: none)
    _open: str | None = None  # "text" or "tool:<call index>"
    _usage: Usage | None = None
    _calls: dict[int, str] = field(default_factory=dict)

    def opening(self) -> bytes:
        message: dict[str, Any] = {
            "id": message_id(self.request_id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"message": message}) + _event("ping", {})

    def _start(self, kind: str, block: dict[str, Any]) -> bytes:
        frames = self._stop()
        self._block += 1
        self._open = kind
        return frames + _event(
            "content_block_start", {"index": self._block, "content_block": block}
        )

    def _stop(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _event("content_block_stop", {"index": self._block})

    def encode(self, event: Event) -> bytes:
        match event:
            case Delta(text=text, choice=0):
                frames = b""
                if self._open != "text":
                    frames = self._start("text", {"type": "text", "text": ""})
                piece = {"type": "text_delta", "text": text}
                return frames + _event(
                    "content_block_delta", {"index": self._block, "delta": piece}
                )
            case ToolCallDelta(choice=0, index=index):
                frames = b""
                kind = f"tool:{index}"
                if self._open != kind:
                    block = {
                        "type": "tool_use",
                        "id": event.id or self._calls.get(index, f"toolu_{index}"),
                        "name": event.name or "",
                        "input": {},
                    }
                    self._calls[index] = str(block["id"])
                    frames = self._start(kind, block)
                if not event.arguments:
                    return frames
                delta = {"type": "input_json_delta", "partial_json": event.arguments}
                return frames + _event(
                    "content_block_delta", {"index": self._block, "delta": delta}
                )
            case Usage():
                self._usage = event
                return b""
            case Done(finish_reason=reason):
                usage = usage_body(self._usage)
                stop = {"stop_reason": STOP_REASONS.get(reason, "end_turn"), "stop_sequence": None}
                return (
                    self._stop()
                    + _event("message_delta", {"delta": stop, "usage": usage})
                    + _event("message_stop", {})
                )
            case ErrorEvent(error=error):
                return _event("error", {"error": error_body(error)["error"]})
            case Preliminary() | Replace():
                return progressive_comment(event)
            case _:
                return b""  # pieces of other choices: Anthropic has one answer per message
