"""The one typed stream every answer is made of.

The serving pipeline yields these events; every transport (SSE, the JSON body, WebSocket)
renders the same stream. Nothing downstream knows where an answer came from except
through ``source``.

Order contract: ``Preliminary``/``Replace`` (optional, progressive mode) → ``Delta``* →
``Usage``? → ``Done`` | ``ErrorEvent``. ``Done`` carries the one ``finish_reason``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from nearline.core.errors import NearlineError, UpstreamError
from nearline.core.source import Source

FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer's text, in order."""

    text: str
    source: str = Source.INFERENCE


@dataclass(frozen=True, slots=True)
class Preliminary:
    """A fast, possibly rough answer shown before the refined one (progressive mode)."""

    text: str
    source: str
    similarity: float | None = None


@dataclass(frozen=True, slots=True)
class Replace:
    """Says whether the refined answer replaces or confirms the preliminary one."""

    action: Literal["replace", "confirm"]
    source: str = Source.INFERENCE


@dataclass(frozen=True, slots=True)
class CallCost:
    """One model call inside an answer that makes several (a plan's planner, steps,
    synthesis, fallback): what it cost and how long it took."""

    role: str  # plan, step, synthesis, fallback
    tier: str
    latency_s: float
    cost_usd: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    step: int | None = None  # the step's number (role "step")
    outcome: str = "ok"  # ok, error, timeout, cancelled


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    # Set by a provider that knows what its answer cost (a plan, whose calls have different
    # prices); ``None``: the model's price applies to the tokens.
    cost_usd: float | None = None
    calls: tuple[CallCost, ...] = ()

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Done:
    finish_reason: FinishReason = "stop"


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """A failure after the stream began; rendered as an error event, never a silent cut."""

    error: NearlineError = field(compare=False)


Event = Delta | Preliminary | Replace | Usage | Done | ErrorEvent


@dataclass(frozen=True, slots=True)
class CollectedAnswer:
    text: str
    finish_reason: FinishReason
    usage: Usage | None
    events: tuple[Event, ...]


async def collect(events: AsyncIterator[Event]) -> CollectedAnswer:
    """The answer's text, finish reason and usage; an ``ErrorEvent`` is raised."""
    seen: list[Event] = []
    parts: list[str] = []
    usage: Usage | None = None
    try:
        async for event in events:
            seen.append(event)
            match event:
                case Delta(text=text):
                    parts.append(text)
                case Usage():
                    usage = event
                case Done(finish_reason=reason):
                    return CollectedAnswer("".join(parts), reason, usage, tuple(seen))
                case ErrorEvent(error=error):
                    raise error
                case _:
                    pass
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    raise UpstreamError("the answer ended without finishing")
