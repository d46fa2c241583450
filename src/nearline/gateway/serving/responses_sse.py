"""The event stream in the Responses API's shapes: the ``response`` object and its SSE events.

Output items, in the order they arrive: a ``message`` (one ``output_text`` part) for the
answer's text, a ``function_call`` (``call_id``, ``name``, ``arguments``) per tool call.
Streaming (every event numbered by ``sequence_number``): ``response.created`` →
``response.in_progress`` → per item ``response.output_item.added`` → (text:
``response.content_part.added``, ``response.output_text.delta``*,
``response.output_text.done``, ``response.content_part.done``; a call:
``response.function_call_arguments.delta``*, ``response.function_call_arguments.done``) →
``response.output_item.done`` → ``response.completed`` (``response.incomplete`` when the
answer hit ``max_output_tokens``). A failure after the stream began is ``response.failed``
(its ``error``), never a silent cut. Only choice 0 is rendered (the API has no ``n``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from nearline.core.events import (
    Choice,
    Delta,
    Done,
    ErrorEvent,
    Event,
    ToolCall,
    ToolCallDelta,
    Usage,
    fold_choices,
)
from nearline.gateway.serving.responses_wire import ResponsesRequest


def response_id(request_id: str) -> str:
    return "resp_" + request_id.removeprefix("chatcmpl-")


def usage_body(usage: Usage | None) -> dict[str, Any]:
    usage = usage or Usage(0, 0)
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [part] if status == "completed" else [],
    }


def call_item(item_id: str, call: ToolCall, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }


def output_items(rid: str, choice: Choice) -> list[dict[str, Any]]:
    items = [message_item(f"msg_{rid[5:]}", choice.text)] if choice.text else []
    items += [call_item(f"fc_{rid[5:]}_{i}", c) for i, c in enumerate(choice.tool_calls)]
    return items


def chat_output(choice: Choice) -> dict[str, Any]:
    """The answer as the assistant message the next response's conversation holds."""
    message: dict[str, Any] = {"role": "assistant", "content": choice.text or None}
    if choice.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in choice.tool_calls
        ]
    return message


def response_body(
    request: ResponsesRequest,
    rid: str,
    *,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    formatted = request.text.format if request.text and request.text.format else None
    return {
        "id": rid,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "model": request.model,
        "output": output,
        "usage": None if usage is None else usage_body(usage),
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": request.instructions,
        "metadata": request.metadata or {},
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_output_tokens": request.max_output_tokens,
        "previous_response_id": request.previous_response_id,
        "store": request.store,
        "tool_choice": _tool_choice(request),
        "tools": [tool.model_dump(exclude_none=True) for tool in request.tools or []],
        "text": {
            "format": {"type": "text"}
            if formatted is None
            else formatted.model_dump(exclude_none=True, by_alias=True)
        },
        "truncation": "disabled",
        "user": request.user,
    }


def _tool_choice(request: ResponsesRequest) -> Any:
    chosen = request.tool_choice
    if chosen is None:
        return "auto"
    return chosen if isinstance(chosen, str) else chosen.model_dump()


def final_status(choice: Choice) -> str:
    return "incomplete" if choice.finish_reason == "length" else "completed"


@dataclass(slots=True)
class ResponsesEncoder:
    """One answer's events as Responses API SSE events; ``result`` is the finished response
    and ``choice`` its answer, once ``response.completed`` (or ``incomplete``) was sent."""

    request: ResponsesRequest
    rid: str
    created_at: int = field(default_factory=lambda: int(time.time()))
    result: dict[str, Any] | None = None
    choice: Choice | None = None
    _sequence: int = 0
    _pieces: list[Event] = field(default_factory=list)
    _items: list[dict[str, Any]] = field(default_factory=list)  # finished output items
    _open: str | None = None  # "text" or "call:<index>"
    _text: list[str] = field(default_factory=list)
    _call: list[str] = field(default_factory=list)  # id, name, argument pieces…
    _usage: Usage | None = None

    def _event(self, kind: str, **data: Any) -> bytes:
        body = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"

    def _snapshot(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_body(
            self.request, self.rid, created_at=self.created_at, status=status, **extra
        )

    def opening(self) -> bytes:
        snapshot = self._snapshot("in_progress", output=[])
        return self._event("response.created", response=snapshot) + self._event(
            "response.in_progress", response=snapshot
        )

    @property
    def _index(self) -> int:
        return len(self._items)

    def _item_id(self) -> str:
        if self._open == "text":
            return f"msg_{self.rid[5:]}"
        return f"fc_{self.rid[5:]}_{sum(i['type'] == 'function_call' for i in self._items)}"

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        item_id = self._item_id()
        where: dict[str, Any] = {"item_id": item_id, "output_index": self._index}
        if self._open == "text":
            text = "".join(self._text)
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            item = message_item(item_id, text)
            frames = self._event("response.output_text.done", **where, content_index=0, text=text)
            frames += self._event("response.content_part.done", **where, content_index=0, part=part)
        else:
            call = ToolCall(self._call[0], self._call[1], "".join(self._call[2:]))
            item = call_item(item_id, call)
            frames = self._event(
                "response.function_call_arguments.done", **where, arguments=call.arguments
            )
        frames += self._event("response.output_item.done", output_index=self._index, item=item)
        self._items.append(item)
        self._open = None
        return frames

    def encode(self, event: Event) -> bytes:
        match event:
            case Delta(choice=0, text=text):
                self._pieces.append(event)
                frames = b""
                if self._open != "text":
                    frames = self._close()
                    self._open, self._text = "text", []
                    item_id = self._item_id()
                    where = {"item_id": item_id, "output_index": self._index}
                    item = message_item(item_id, "", status="in_progress")
                    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                    frames += self._event(
                        "response.output_item.added", output_index=self._index, item=item
                    )
                    frames += self._event(
                        "response.content_part.added", **where, content_index=0, part=part
                    )
                self._text.append(text)
                return frames + self._event(
                    "response.output_text.delta",
                    item_id=self._item_id(),
                    output_index=self._index,
                    content_index=0,
                    delta=text,
                    logprobs=[],
                )
            case ToolCallDelta(choice=0, index=index):
                self._pieces.append(event)
                frames = b""
                if self._open != f"call:{index}":
                    frames = self._close()
                    self._open, self._call = f"call:{index}", [event.id or "", event.name or ""]
                    started = ToolCall(self._call[0], self._call[1], "")
                    item = call_item(self._item_id(), started, status="in_progress")
                    frames += self._event(
                        "response.output_item.added", output_index=self._index, item=item
                    )
                if not event.arguments:
                    return frames
                self._call.append(event.arguments)
                return frames + self._event(
                    "response.function_call_arguments.delta",
                    item_id=self._item_id(),
                    output_index=self._index,
                    delta=event.arguments,
                )
            case Usage():
                self._usage = event
                return b""
            case Done():
                frames = self._close()
                self.choice = fold_choices(self._pieces, event)[0]
                status = final_status(self.choice)
                self.result = self._snapshot(status, output=self._items, usage=self._usage)
                kind = "response.completed" if status == "completed" else "response.incomplete"
                return frames + self._event(kind, response=self.result)
            case ErrorEvent(error=error):
                failure = {"code": error.code or error.error_type, "message": error.client_message}
                failed = self._snapshot("failed", output=self._items, error=failure)
                return self._event("response.failed", response=failed)
            case _:
                return b""  # progressive events, other choices: no Responses shape
