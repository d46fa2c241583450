"""Anthropic's Messages API (``POST /v1/messages``) as nearline reads it, translated once.

The body is validated as strictly as a chat request (unknown fields are a 400 naming them:
``top_k``, ``thinking``, ``document`` blocks …; ``cache_control`` marks are accepted and
ignored: nearline's caches decide), then translated into one ``ChatRequest`` — so the
pipeline, its caches, routing and limits see an ordinary chat request:

* ``system`` (a string or text blocks) → a system message;
* a user turn's ``tool_result`` blocks → ``tool`` messages (first, as they answer the calls
  of the turn before), its text and image blocks → one user message whose parts keep their
  boundaries (``image`` sources become ``data:`` or ``https:`` image URLs);
* an assistant turn's text → its content, its ``tool_use`` blocks → ``tool_calls`` (the
  ``input`` object as the JSON arguments);
* ``tools`` (``input_schema``) → function tools, ``tool_choice`` auto/any/tool/none →
  auto/required/the named function/none, ``disable_parallel_tool_use`` →
  ``parallel_tool_calls: false``; ``stop_sequences`` → ``stop``, ``metadata.user_id`` →
  ``user``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import Field

from nearline.core.errors import InvalidRequest
from nearline.core.request import ChatRequest, NearlineOptions
from nearline.gateway.serving.wire import Wire, to_chat

CacheControl = dict[str, Any] | None


class TextBlock(Wire):
    type: Literal["text"]
    text: str
    cache_control: CacheControl = None
    citations: list[dict[str, Any]] | None = None


class Base64Source(Wire):
    type: Literal["base64"]
    media_type: str
    data: str


class UrlSource(Wire):
    type: Literal["url"]
    url: str


class ImageBlock(Wire):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]
    cache_control: CacheControl = None


class ToolUseBlock(Wire):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str
    input: dict[str, Any]
    cache_control: CacheControl = None
    # Echoed back from a response by the SDK's own models; nothing to act on
    caller: dict[str, Any] | None = None
    toolset_name: str | None = None


ResultPart = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class ToolResultBlock(Wire):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[ResultPart] = ""
    is_error: bool = False
    cache_control: CacheControl = None


Block = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")
]


class AnthropicMessage(Wire):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class AnthropicTool(Wire):
    name: str
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: CacheControl = None


class AnthropicToolChoice(Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class AnthropicMetadata(Wire):
    user_id: str | None = None


class MessagesRequest(Wire):
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    metadata: AnthropicMetadata | None = None
    nearline: NearlineOptions | None = None


class CountTokensRequest(Wire):
    model: str = Field(min_length=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None


def chat_request(request: MessagesRequest) -> ChatRequest:
    """The one translation of a Messages request into the pipeline's request."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": chat_messages(request.system, request.messages),
        "max_tokens": request.max_tokens,
        "stream": request.stream,
    }
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    for name in ("temperature", "top_p"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stop_sequences:
        body["stop"] = request.stop_sequences
    if request.metadata is not None and request.metadata.user_id is not None:
        body["user"] = request.metadata.user_id
    body.update(chat_tools(request.tools, request.tool_choice))
    if request.nearline is not None:
        body["nearline"] = request.nearline.model_dump(exclude_none=True)
    return to_chat(body)


def chat_tools(
    tools: list[AnthropicTool] | None, choice: AnthropicToolChoice | None
) -> dict[str, Any]:
    if not tools:
        return {}
    body: dict[str, Any] = {
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    **({} if tool.description is None else {"description": tool.description}),
                    "parameters": tool.input_schema,
                },
            }
            for tool in tools
        ]
    }
    if choice is None:
        return body
    if choice.type == "tool":
        if choice.name is None:
            raise InvalidRequest(
                "missing required parameter: tool_choice.name", param="tool_choice"
            )
        body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    else:
        body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    if choice.disable_parallel_tool_use:
        body["parallel_tool_calls"] = False
    return body


def chat_messages(
    system: str | list[TextBlock] | None, messages: list[AnthropicMessage]
) -> list[dict[str, Any]]:
    chat: list[dict[str, Any]] = []
    if system:
        text = system if isinstance(system, str) else "\n\n".join(b.text for b in system)
        chat.append({"role": "system", "content": text})
    for message in messages:
        if isinstance(message.content, str):
            chat.append({"role": message.role, "content": message.content})
        elif message.role == "assistant":
            chat.append(_assistant(message.content))
        else:
            chat.extend(_user(message.content))
    return chat


def _assistant(blocks: list[Block]) -> dict[str, Any]:
    text = "".join(b.text for b in blocks if isinstance(b, TextBlock))
    calls = [
        {
            "id": b.id,
            "type": "function",
            "function": {"name": b.name, "arguments": orjson.dumps(b.input).decode()},
        }
        for b in blocks
        if isinstance(b, ToolUseBlock)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _user(blocks: list[Block]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, ToolResultBlock):
            messages.append(
                {"role": "tool", "tool_call_id": block.tool_use_id, "content": _result(block)}
            )
        elif isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block)}})
        else:
            raise InvalidRequest(
                "invalid value for messages: tool_use blocks are only allowed in assistant turns",
                param="messages",
            )
    if parts:
        messages.append({"role": "user", "content": parts})
    return messages


def _result(block: ToolResultBlock) -> str:
    text = (
        block.content
        if isinstance(block.content, str)
        else "".join(p.text for p in block.content if isinstance(p, TextBlock))
    )
    return f"Error: {text}" if block.is_error else text


def _image_url(block: ImageBlock) -> str:
    source = block.source
    if isinstance(source, Base64Source):
        return f"data:{source.media_type};base64,{source.data}"
    return source.url
