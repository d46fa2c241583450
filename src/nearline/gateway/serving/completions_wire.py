"""OpenAI's legacy Completions API (``POST /v1/completions``), translated once, rendered once.

A prompt is one **user turn**: ``{"prompt": "…"}`` becomes the chat request
``{"messages": [{"role": "user", "content": "…"}]}`` with the same sampling fields, so the
pipeline (caches, routing, limits, telemetry) serves it like any chat request and a model
renders it with its chat template (nearline has no raw-prompt path: every provider is a
chat model). A list of one prompt is that prompt; several prompts, token-id prompts,
``suffix``, ``logprobs``, ``logit_bias``, ``echo: true`` and ``best_of > 1`` are refused with
a 400 naming the field.

The answer is rendered as ``text_completion`` objects: SSE chunks ending in ``[DONE]``
(with a usage chunk when ``stream_options.include_usage``), or one body; every choice
(``n``) keeps its ``index``. A failure after the stream began is an error frame, then
``[DONE]``, as on the chat route.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field

from nearline.core.events import CollectedAnswer, Delta, Done, ErrorEvent, Event, Usage
from nearline.core.request import ChatRequest, NearlineOptions, StreamOptions
from nearline.gateway.serving.sse import DONE_FRAME, sse_frame, usage_body
from nearline.gateway.serving.wire import Wire, to_chat


class CompletionRequest(Wire):
    model: str = Field(min_length=1)
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    user: str | None = None
    echo: Literal[False] | None = None
    best_of: Literal[1] | None = None
    logprobs: None = None
    nearline: NearlineOptions | None = None


_PASSED = (
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "user",
    "nearline",
)


def chat_request(request: CompletionRequest) -> ChatRequest:
    """The prompt as one user turn, with the request's sampling fields."""
    prompt = request.prompt if isinstance(request.prompt, str) else request.prompt[0]
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [{"role": "user", "content": prompt}],
    }
    body.update(request.model_dump(include=set(_PASSED), exclude_none=True))
    return to_chat(body)


def completion_id(request_id: str) -> str:
    return "cmpl-" + request_id.removeprefix("chatcmpl-")


def completion_body(model: str, request_id: str, answer: CollectedAnswer) -> dict[str, Any]:
    return {
        "id": completion_id(request_id),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "text": choice.text,
                "index": choice.index,
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
            for choice in answer.choices
        ],
        "usage": usage_body(answer.usage or Usage(0, 0)),
    }


@dataclass(slots=True)
class CompletionEncoder:
    model: str
    request_id: str
    include_usage: bool
    created: int = field(default_factory=lambda: int(time.time()))
    _usage: Usage | None = None

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": completion_id(self.request_id),
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return sse_frame(body)

    def encode(self, event: Event) -> bytes:
        match event:
            case Delta(text=text, choice=index):
                choice = {"text": text, "index": index, "logprobs": None, "finish_reason": None}
                return self._chunk([choice])
            case Usage():
                self._usage = event
                return b""
            case Done():
                frames = b"".join(
                    self._chunk(
                        [{"text": "", "index": i, "logprobs": None, "finish_reason": reason}]
                    )
                    for i, reason in enumerate(event.finish_reasons)
                )
                if self.include_usage and self._usage is not None:
                    frames += self._chunk([], usage=usage_body(self._usage))
                return frames + DONE_FRAME
            case ErrorEvent(error=error):
                return b"data: " + orjson.dumps(error.body()) + b"\n\n" + DONE_FRAME
            case _:
                return b""  # progressive events and tool calls have no legacy shape
