"""OpenAI's Responses API (``POST /v1/responses``) as nearline reads it, translated once.

The body is as strict as a chat request (unknown fields are a 400 naming them:
``reasoning``, ``include``, ``background``, built-in tools such as ``web_search`` …). It
becomes one ``ChatRequest``:

* ``instructions`` → a system message first (not carried to the next response, as OpenAI
  says), then the stored conversation of ``previous_response_id`` (its inputs and outputs),
  then ``input``: a string is a user message; message items keep their role and parts
  (``input_text``/``output_text`` → text, ``input_image`` → an image URL);
  ``function_call`` items → an assistant message's ``tool_calls`` (consecutive ones
  together); ``function_call_output`` items → ``tool`` messages;
* function ``tools`` → chat tools, ``tool_choice`` as in chat (``{"type": "function",
  "name"}`` → the named function), ``parallel_tool_calls``;
* ``text.format`` → ``response_format``; ``max_output_tokens`` → ``max_completion_tokens``;
  ``temperature``, ``top_p``, ``metadata``, ``user`` as they are.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import Discriminator, Field, Tag

from nearline.core.request import ChatRequest, Metadata, NearlineOptions
from nearline.gateway.serving.wire import Wire, to_chat


class InputText(Wire):
    type: Literal["input_text", "output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class InputImage(Wire):
    type: Literal["input_image"]
    image_url: str
    detail: Literal["auto", "low", "high"] | None = None


Part = Annotated[InputText | InputImage, Field(discriminator="type")]


class MessageItem(Wire):
    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]
    id: str | None = None  # an output item sent back
    status: str | None = None


class FunctionCallItem(Wire):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(Wire):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str
    id: str | None = None
    status: str | None = None


def _item_kind(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", None)
    return str(kind or "message")


Item = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(_item_kind),
]


class FunctionTool(Wire):
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(Wire):
    type: Literal["function"]
    name: str


class TextFormat(Wire):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextOptions(Wire):
    format: TextFormat | None = None


class ResponsesRequest(Wire):
    model: str = Field(min_length=1)
    input: str | list[Item]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    metadata: Metadata | None = None
    user: str | None = None
    text: TextOptions | None = None
    truncation: Literal["disabled"] | None = None
    nearline: NearlineOptions | None = None


def input_messages(request: ResponsesRequest) -> list[dict[str, Any]]:
    """This request's ``input`` as chat messages (what the next response carries on)."""
    if isinstance(request.input, str):
        return [{"role": "user", "content": request.input}]
    messages: list[dict[str, Any]] = []
    for item in request.input:
        if isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
        else:
            messages.append({"role": item.role, "content": _content(item)})
    return messages


def _content(item: MessageItem) -> str | list[dict[str, Any]]:
    if isinstance(item.content, str):
        return item.content
    if item.role != "user":  # only a user's message may hold images: say it as text
        return "".join(p.text for p in item.content if isinstance(p, InputText))
    return [
        {"type": "text", "text": p.text}
        if isinstance(p, InputText)
        else {
            "type": "image_url",
            "image_url": {"url": p.image_url, **({"detail": p.detail} if p.detail else {})},
        }
        for p in item.content
    ]


def chat_request(request: ResponsesRequest, earlier: list[dict[str, Any]]) -> ChatRequest:
    """The one translation: ``earlier`` is the previous response's stored conversation."""
    messages = list(earlier) + input_messages(request)
    if request.instructions:
        messages.insert(0, {"role": "system", "content": request.instructions})
    body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": request.stream}
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    for name in ("temperature", "top_p", "metadata", "user", "parallel_tool_calls"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.max_output_tokens is not None:
        body["max_completion_tokens"] = request.max_output_tokens
    if request.tools:
        body["tools"] = [
            {"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}
            for tool in request.tools
        ]
    if isinstance(request.tool_choice, NamedFunction):
        body["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice.name}}
    elif request.tool_choice is not None:
        body["tool_choice"] = request.tool_choice
    formatted = request.text.format if request.text is not None else None
    if formatted is not None and formatted.type == "json_schema":
        spec = formatted.model_dump(exclude={"type"}, exclude_none=True, by_alias=True)
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif formatted is not None:
        body["response_format"] = {"type": formatted.type}
    if request.nearline is not None:
        body["nearline"] = request.nearline.model_dump(exclude_none=True)
    return to_chat(body)


def conversation(
    request: ResponsesRequest, chat: ChatRequest, output: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """What a stored response carries on: ``chat``'s messages without ``request``'s
    instructions (OpenAI does not carry them over), then its answer (a chat message)."""
    messages = [orjson.loads(orjson.dumps(m.model_dump(exclude_none=True))) for m in chat.messages]
    if request.instructions:
        messages = messages[1:]
    return messages + ([output] if output is not None else [])
