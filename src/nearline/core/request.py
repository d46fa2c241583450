"""The typed chat request every transport parses into.

Shapes follow OpenAI's Chat Completions API. Fields nearline does not implement are
rejected with a 400 that names the field, rather than silently ignored: a client that asks
for ``n=3`` or ``logit_bias`` must learn it did not get it. Types are strict, as OpenAI's
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

from nearline.core.errors import InvalidRequest, UnsupportedParameter

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
    }
)
"""Request fields, besides model and messages, that change the answer: every cache key
includes them; the stream flag, ``stream_options``, ``user`` and nearline's options not.
What of the messages changes the answer is :meth:`ChatRequest.turns`."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One message as it changes the answer: its role as sent (``developer`` is not
    ``system``), its ``name``, and its content with its boundaries (``parts``: the text parts
    when the content was a list; ``text`` is what they say together)."""

    role: str
    text: str
    name: str | None = None
    parts: tuple[str, ...] | None = None

    def identity(self, *, with_text: bool = True) -> list[Any]:
        """What a cache key hashes of this message (``with_text=False``: all but what it
        says, for the question the semantic tier embeds)."""
        content: Any = None
        if with_text:
            content = self.text if self.parts is None else list(self.parts)
        return [self.role, self.name, content]


MAX_DEPTH = 64
"""Containers (objects, arrays) nested in a body, the body itself included: JSON schemas in
``tools`` and ``response_format`` stay far below it; orjson refuses to write past 255."""
MAX_ITEMS = 4096  # elements of any one array (messages included), members of any one object
MAX_TOOLS = 128  # OpenAI's own limit
MAX_VALUES = 100_000  # JSON values in a whole body
MAX_CHARS = 16_000_000  # characters of every string and key in a body, together
MAX_NAME_CHARS = 256  # model, message name, user
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


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Role
    content: str | list[TextPart] | None = None
    name: Annotated[str, Field(max_length=MAX_NAME_CHARS)] | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def turn(self) -> Turn:
        parts = None if not isinstance(self.content, list) else tuple(p.text for p in self.content)
        return Turn(self.role, self.text, self.name, parts)


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
    n: int | None = None
    user: Annotated[str, Field(max_length=MAX_NAME_CHARS)] | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    nearline: NearlineOptions = Field(default_factory=NearlineOptions)

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_bounds(data)
        return data

    @model_validator(mode="after")
    def _reject_unsupported(self) -> ChatRequest:
        if self.n is not None and self.n != 1:
            raise UnsupportedParameter(
                "n > 1 is not supported; send one request per choice", param="n"
            )
        if self.logprobs:
            raise UnsupportedParameter("logprobs is not supported yet", param="logprobs")
        if self.response_format is not None and self.response_format.get("type") != "text":
            raise UnsupportedParameter(
                "only response_format {'type': 'text'} is supported", param="response_format"
            )
        return self

    def turns(self) -> list[Turn]:
        """The messages as they change the answer: the one definition both cache tiers key
        on (every message kept apart, roles as sent, names, content part boundaries)."""
        return [message.turn() for message in self.messages]

    def answer_changing_params(self) -> dict[str, Any]:
        """The set :data:`ANSWER_CHANGING_FIELDS`, as sent (unset ones left out)."""
        return self.model_dump(include=set(ANSWER_CHANGING_FIELDS), exclude_none=True)

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
