"""The typed chat request every transport parses into.

Shapes follow OpenAI's Chat Completions API (tools, tool calls, image parts and response
formats in :mod:`nearline.core.chat_types`). Fields nearline does not implement are
rejected with a 400 that names the field, rather than silently ignored: a client that asks
for ``logit_bias`` must learn it did not get it. Where OpenAI refuses a combination (a
``tool_choice`` without ``tools``, a ``tool`` message answering no call, JSON mode without
the word "json"), so does nearline, with the same 400. Types are strict, as OpenAI's
are: ``"10"`` or ``true`` is not a ``max_tokens``, ``"yes"`` not a ``stream`` (an integer is
still a number: ``temperature: 1``).

The body is bounded before it is validated (:func:`check_bounds`): nesting depth, array
lengths, string lengths and total size. Whatever parses can then be serialised again (the
cache keys, the upstream payload) without reaching a JSON writer's limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nearline.core.chat_types import (
    ContentPart,
    ImagePart,
    JsonObjectFormat,
    JsonSchemaFormat,
    NamedToolChoice,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    check_strict_schema,
)
from nearline.core.errors import InvalidRequest

Role = Literal["system", "developer", "user", "assistant", "tool"]

ANSWER_CHANGING_FIELDS = frozenset(
    {
        "tools",
        "tool_choice",
        "response_format",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "n",
        "logprobs",
        "top_logprobs",
        "parallel_tool_calls",
    }
)
"""Request fields, besides model and messages, that change the answer: every cache key
includes them; the stream flag, ``stream_options``, ``user``, ``metadata``, ``store`` and
nearline's options not.
What of the messages changes the answer is :meth:`ChatRequest.turns`."""
_DEFAULTS: dict[str, object] = {"n": 1, "logprobs": False}  # the same answer as unset


ImageRef = tuple[str, str, str | None]
"""An image part as a key sees it: ``("image_url", url, detail)``."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One message as it changes the answer: its role as sent (``developer`` is not
    ``system``), its ``name``, and its content with its boundaries (``parts``: the text parts
    — and image parts as :data:`ImageRef` — when the content was a list; ``text`` is what
    the text parts say together); an assistant's ``tool_calls`` as ``(id, name, arguments)``
    and a tool message's ``tool_call_id``."""

    role: str
    text: str
    name: str | None = None
    parts: tuple[str | ImageRef, ...] | None = None
    tool_calls: tuple[tuple[str, str, str], ...] = ()
    tool_call_id: str | None = None

    def identity(self, *, with_text: bool = True) -> list[Any]:
        """What a cache key hashes of this message (``with_text=False``: all but what it
        says, for the question the semantic tier embeds)."""
        content: Any = None
        if with_text:
            content = self.text if self.parts is None else [_part(p) for p in self.parts]
        identity: list[Any] = [self.role, self.name, content]
        if self.tool_calls or self.tool_call_id is not None:
            identity += [[list(call) for call in self.tool_calls], self.tool_call_id]
        return identity


def _part(part: str | ImageRef) -> Any:
    return part if isinstance(part, str) else list(part)


MAX_DEPTH = 64
"""Containers (objects, arrays) nested in a body, the body itself included: JSON schemas in
``tools`` and ``response_format`` stay far below it; orjson refuses to write past 255."""
MAX_ITEMS = 4096  # elements of any one array (messages included), members of any one object
MAX_TOOLS = 128  # OpenAI's own limit
MAX_VALUES = 100_000  # JSON values in a whole body
MAX_CHARS = 16_000_000  # characters of every string and key in a body, together
MAX_NAME_CHARS = 256  # model, message name, user
MAX_CHOICES = 128  # n, as OpenAI bounds it
_INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson writes
_PATH_SHOWN = 8  # path segments an error message shows


def check_bounds(body: dict[str, Any]) -> None:
    """Refuse ``body`` (a decoded JSON object) if it is too deep, too long or too large.

    Iterative, so it cannot itself hit Python's recursion limit. Raises ``InvalidRequest``
    whose ``param`` is the top-level field at fault and whose message names the path.
    """
    stack: list[tuple[object, int, tuple[str | int, ...]]] = [(body, 1, ())]
    values = 0
    chars = 0
    while stack:
        value, depth, path = stack.pop()
        values += 1
        if values > MAX_VALUES:
            raise _bound_error(
                path, f"the body holds more than {MAX_VALUES} JSON values (at {{where}})"
            )
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise _bound_error(
                    path, f"{{where}} is nested too deeply (over {MAX_DEPTH} levels)"
                )
            limit = MAX_TOOLS if path == ("tools",) else MAX_ITEMS
            if len(value) > limit:
                raise _bound_error(path, f"{{where}} has more than {limit} items")
            if isinstance(value, list):
                stack.extend((item, depth + 1, (*path, i)) for i, item in enumerate(value))
            else:
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise _bound_error(path, "{where} has a key that is not a string")
                    chars += len(key)
                    stack.append((item, depth + 1, (*path, key)))
        elif isinstance(value, bool | BaseModel) or value is None:
            pass  # a model instance was validated when it was built (a derived request)
        elif isinstance(value, int):
            if not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
                raise _bound_error(path, "{where} is an integer outside the 64-bit range")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _bound_error(path, "{where} is not a finite number")
        else:
            raise _bound_error(path, "{where} is not a JSON value")
        if chars > MAX_CHARS:
            raise _bound_error(
                path, f"the body holds more than {MAX_CHARS} characters (at {{where}})"
            )


def _bound_error(path: tuple[str | int, ...], problem: str) -> InvalidRequest:
    """``problem`` says what is wrong with ``{where}``, the path shown (shortened)."""
    where = ".".join(str(part) for part in path[:_PATH_SHOWN]) or "the body"
    if len(path) > _PATH_SHOWN:
        where += ".…"
    return InvalidRequest(
        problem.format(where=where),
        param=str(path[0]) if path else None,
        code="request_too_complex",
    )


class Message(BaseModel):
    """One message. ``tool_calls`` only on assistant messages, ``tool_call_id`` only (and
    always) on tool messages, image parts only in user messages — checked by
    :class:`ChatRequest`, which names the message at fault."""

    model_config = ConfigDict(extra="forbid", strict=True)
    role: Role
    content: str | list[ContentPart] | None = None
    name: Annotated[str, Field(max_length=MAX_NAME_CHARS)] | None = None
    tool_calls: Annotated[list[ToolCall], Field(min_length=1, max_length=MAX_TOOLS)] | None = None
    tool_call_id: Annotated[str, Field(min_length=1)] | None = None

    @property
    def text(self) -> str:
        """What the text parts say (image parts say nothing here)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        if not isinstance(self.content, list):
            return []
        return [part for part in self.content if isinstance(part, ImagePart)]

    def turn(self) -> Turn:
        parts: tuple[str | ImageRef, ...] | None = None
        if isinstance(self.content, list):
            parts = tuple(
                p.text
                if isinstance(p, TextPart)
                else ("image_url", p.image_url.url, p.image_url.detail)
                for p in self.content
            )
        calls = tuple((c.id, c.function.name, c.function.arguments) for c in self.tool_calls or ())
        return Turn(self.role, self.text, self.name, parts, calls, self.tool_call_id)


Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]
"""``metadata``: up to 16 string pairs (keys up to 64 characters, values up to 512)."""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class NearlineOptions(BaseModel):
    """nearline's body extension (``"nearline": {...}``); ignored by plain OpenAI servers."""

    model_config = ConfigDict(extra="forbid", strict=True)
    cache: Literal["default", "no-cache", "no-store"] = "default"
    progressive: bool | None = None
    ttft_budget_ms: int | None = Field(default=None, ge=1)  # hedge/fall back past this


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    messages: list[Message] = Field(min_length=1, max_length=MAX_ITEMS)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None
    user: Annotated[str, Field(max_length=MAX_NAME_CHARS)] | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    metadata: Metadata | None = None
    store: bool | None = None
    nearline: NearlineOptions = Field(default_factory=NearlineOptions)

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_bounds(data)
        return data

    @model_validator(mode="after")
    def _as_openai_checks(self) -> ChatRequest:
        check_openai_rules(self)
        return self

    def turns(self) -> list[Turn]:
        """The messages as they change the answer: the one definition both cache tiers key
        on (every message kept apart, roles as sent, names, content part boundaries)."""
        return [message.turn() for message in self.messages]

    def answer_changing_params(self) -> dict[str, Any]:
        """The set :data:`ANSWER_CHANGING_FIELDS`, as sent (unset ones left out, and so are
        ``n: 1`` and ``logprobs: false``, the defaults)."""
        params = self.model_dump(
            include=set(ANSWER_CHANGING_FIELDS), exclude_none=True, by_alias=True
        )
        for name, default in _DEFAULTS.items():
            if name in params and params[name] == default:
                del params[name]
        return params

    @property
    def choices(self) -> int:
        """How many answers (``n``) the request asks for."""
        return self.n or 1

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def max_output_tokens(self) -> int | None:
        """``max_completion_tokens`` wins over the older ``max_tokens``."""
        return (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else self.max_tokens
        )

    @property
    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def wants_tools(self) -> bool:
        return bool(self.tools) or self.tool_choice not in (None, "none")


def check_openai_rules(request: ChatRequest) -> None:
    """The combinations OpenAI refuses with a 400, refused the same way (``param`` names
    the top-level field, the message the path)."""
    _check_messages(request.messages)
    tools = request.tools or []
    if request.tool_choice is not None and not tools:
        raise InvalidRequest(
            "invalid value for tool_choice: tool_choice is only allowed when tools are specified",
            param="tool_choice",
        )
    if request.parallel_tool_calls is not None and not tools:
        raise InvalidRequest(
            "invalid value for parallel_tool_calls: parallel_tool_calls is only allowed when "
            "tools are specified",
            param="parallel_tool_calls",
        )
    names = [tool.function.name for tool in tools]
    if isinstance(request.tool_choice, NamedToolChoice) and (
        request.tool_choice.function.name not in names
    ):
        raise InvalidRequest(
            f"invalid value for tool_choice: no function named "
            f"{request.tool_choice.function.name!r} was specified in tools",
            param="tool_choice",
        )
    for index, tool in enumerate(tools):
        if tool.function.strict and tool.function.parameters is not None:
            check_strict_schema(tool.function.parameters, f"tools.{index}.function.parameters")
    if request.top_logprobs is not None and not request.logprobs:
        raise InvalidRequest(
            "invalid value for top_logprobs: logprobs must be true when top_logprobs is set",
            param="top_logprobs",
        )
    formatted = request.response_format
    if isinstance(formatted, JsonObjectFormat) and not any(
        "json" in message.text.lower() for message in request.messages
    ):
        raise InvalidRequest(
            "'messages' must contain the word 'json' in some form, to use 'response_format' "
            "of type 'json_object'",
            param="messages",
        )
    if isinstance(formatted, JsonSchemaFormat) and formatted.json_schema.strict:
        check_strict_schema(formatted.json_schema.schema_ or {}, "response_format")


def _check_messages(messages: list[Message]) -> None:
    """Tool calls only from the assistant, each answered by a tool message that follows it;
    a tool message answers one of them; image parts only from the user."""
    open_calls: set[str] = set()  # asked by the last assistant message, not answered yet
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if message.tool_calls is not None and message.role != "assistant":
            raise InvalidRequest(
                f"unrecognized request argument supplied: {where}.tool_calls", param="messages"
            )
        if message.role == "tool":
            if message.tool_call_id is None:
                raise InvalidRequest(
                    f"missing required parameter: {where}.tool_call_id", param="messages"
                )
            if message.tool_call_id not in open_calls:
                raise InvalidRequest(
                    f"invalid value for {where}: a message with role 'tool' must be a response "
                    "to a preceding message with 'tool_calls'",
                    param="messages",
                )
            open_calls.discard(message.tool_call_id)
            continue
        if message.tool_call_id is not None:
            raise InvalidRequest(
                f"unrecognized request argument supplied: {where}.tool_call_id",
                param="messages",
            )
        if open_calls:
            raise InvalidRequest(
                f"invalid value for {where}: an assistant message with 'tool_calls' must be "
                "followed by tool messages responding to each 'tool_call_id' (not answered: "
                + ", ".join(sorted(open_calls))
                + ")",
                param="messages",
            )
        if message.images and message.role != "user":
            raise InvalidRequest(
                f"invalid value for {where}.content: image parts are only allowed in user messages",
                param="messages",
            )
        open_calls = {call.id for call in message.tool_calls or ()}
    # A conversation may end on the assistant's tool calls (a prefill): OpenAI refuses it.
    if open_calls:
        raise InvalidRequest(
            f"invalid value for messages.{len(messages) - 1}: an assistant message with "
            "'tool_calls' must be followed by tool messages responding to each "
            "'tool_call_id'",
            param="messages",
        )


@cache
def request_body_schema() -> dict[str, Any]:
    """``ChatRequest``'s JSON Schema, self-contained (its ``$defs`` inlined: none of the
    models is recursive), as ``/openapi.json`` publishes the chat route's request body."""
    schema = ChatRequest.model_json_schema()
    defs: dict[str, Any] = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined
