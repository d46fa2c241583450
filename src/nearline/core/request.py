"""The typed chat request every transport parses into.

Shapes follow OpenAI's Chat Completions API. Fields nearline does not implement are
rejected with a 400 that names the field, rather than silently ignored: a client that asks
for ``n=3`` or ``logit_bias`` must learn it did not get it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nearline.core.errors import UnsupportedParameter

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
includes them; the stream flag, ``stream_options``, ``user`` and nearline's options not."""


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str | list[TextPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class NearlineOptions(BaseModel):
    """nearline's body extension (``"nearline": {...}``); ignored by plain OpenAI servers."""

    model_config = ConfigDict(extra="forbid")
    cache: Literal["default", "no-cache", "no-store"] = "default"
    progressive: bool | None = None
    ttft_budget_ms: int | None = Field(default=None, ge=1)  # hedge/fall back past this


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
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
    user: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    nearline: NearlineOptions = Field(default_factory=NearlineOptions)

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
