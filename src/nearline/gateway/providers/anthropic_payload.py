"""A chat request as Anthropic's Messages API wants it (``format: anthropic`` providers).

Translated once, here: system and developer messages become ``system`` (in order, joined by
a blank line); an assistant's ``tool_calls`` become ``tool_use`` blocks (arguments parsed as
the ``input`` object); consecutive ``tool`` messages become one user turn of
``tool_result`` blocks; image parts become ``image`` blocks (``data:`` URLs as base64
sources, other URLs as url sources); ``tools``/``tool_choice``/``parallel_tool_calls``
map onto Anthropic's ``tools``/``tool_choice``; ``stop`` → ``stop_sequences``, ``user`` →
``metadata.user_id``. Anthropic requires ``max_tokens``: the request's, else
``DEFAULT_MAX_TOKENS``.

What Anthropic cannot do is refused with a 400 naming the field (``n > 1``, ``logprobs``,
``response_format`` JSON modes, presence and frequency penalties); ``seed`` has no
Anthropic counterpart and is dropped (OpenAI only promises best effort for it).
"""

from __future__ import annotations

from typing import Any

import orjson

from nearline.core.chat_types import ImagePart, JsonObjectFormat, JsonSchemaFormat, NamedToolChoice
from nearline.core.errors import UnsupportedParameter
from nearline.core.events import FinishReason
from nearline.core.request import ChatRequest, Message

DEFAULT_MAX_TOKENS = 4096

STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def refuse_unsupported(request: ChatRequest, provider: str) -> None:
    """A 400 naming the first field an Anthropic upstream cannot honour."""
    refused: list[tuple[str, bool]] = [
        ("n", request.choices > 1),
        ("logprobs", bool(request.logprobs)),
        ("response_format", isinstance(request.response_format, JsonObjectFormat)),
        ("response_format", isinstance(request.response_format, JsonSchemaFormat)),
        ("presence_penalty", request.presence_penalty is not None),
        ("frequency_penalty", request.frequency_penalty is not None),
    ]
    for field, asked in refused:
        if asked:
            raise UnsupportedParameter(
                f"{field} is not supported by the Anthropic-format upstream {provider!r}",
                param=field,
            )


def anthropic_payload(request: ChatRequest, upstream_model: str) -> dict[str, Any]:
    """The Messages API body for ``request`` (streamed)."""
    system = [m.text for m in request.messages if m.role in ("system", "developer")]
    payload: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": request.max_output_tokens or DEFAULT_MAX_TOKENS,
        "messages": _turns([m for m in request.messages if m.role not in ("system", "developer")]),
        "stream": True,
    }
    if system:
        payload["system"] = "\n\n".join(system)
    for name, value in (("temperature", request.temperature), ("top_p", request.top_p)):
        if value is not None:
            payload[name] = value
    if request.stop_sequences:
        payload["stop_sequences"] = request.stop_sequences
    if request.user is not None:
        payload["metadata"] = {"user_id": request.user}
    if request.tools:
        payload["tools"] = [
            {
                "name": tool.function.name,
                **(
                    {}
                    if tool.function.description is None
                    else {"description": tool.function.description}
                ),
                "input_schema": tool.function.parameters or {"type": "object", "properties": {}},
            }
            for tool in request.tools
        ]
        choice = _tool_choice(request)
        if choice is not None:
            payload["tool_choice"] = choice
    return payload


def _tool_choice(request: ChatRequest) -> dict[str, Any] | None:
    chosen = request.tool_choice
    choice: dict[str, Any]
    if isinstance(chosen, NamedToolChoice):
        choice = {"type": "tool", "name": chosen.function.name}
    elif chosen == "none":
        return {"type": "none"}
    elif chosen == "required":
        choice = {"type": "any"}
    else:
        choice = {"type": "auto"}
    if request.parallel_tool_calls is False:
        choice["disable_parallel_tool_use"] = True
    elif chosen is None and request.parallel_tool_calls is None:
        return None
    return choice


def _turns(messages: list[Message]) -> list[dict[str, Any]]:
    """User and assistant turns: consecutive messages of one side join one turn (tool
    results first, as they follow the calls), as Anthropic merges them itself."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.text}
        ]
    blocks: list[dict[str, Any]] = []
    if isinstance(message.content, list):
        for part in message.content:
            blocks.append(
                _image_block(part)
                if isinstance(part, ImagePart)
                else {"type": "text", "text": part.text}
            )
    elif message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls or ():
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": _arguments(call.function.arguments),
            }
        )
    return blocks


def _arguments(text: str) -> Any:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"value": value}


def _image_block(part: ImagePart) -> dict[str, Any]:
    url = part.image_url.url
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}
