"""The one typed stream every answer is made of.

The serving pipeline yields these events; every transport (SSE, the JSON body, WebSocket)
renders the same stream. Nothing downstream knows where an answer came from except
through ``source``.

Order contract: ``Preliminary``/``Replace`` (optional, progressive mode) → (``Delta`` |
``ToolCallDelta``)* → ``Usage``? → ``Done`` | ``ErrorEvent``. ``Done`` carries the one
``finish_reason`` (one per choice when the request asked for ``n > 1``).

Choices: every answer piece names its ``choice`` (0 unless ``n > 1``); pieces of different
choices may interleave. Tool calls stream as ``ToolCallDelta`` fragments: the first
fragment of call ``index`` carries its ``id`` and ``name``, later ones only more of its
``arguments`` (a JSON text, in pieces). :func:`collect` folds the fragments back into whole
calls (:class:`ToolCall`) per choice (:class:`Choice`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from nearline.core.errors import NearlineError, UpstreamError
from nearline.core.source import Source

FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer's text, in order. ``logprobs``: the entries of OpenAI's
    ``logprobs.content`` for this piece (token, logprob, bytes, top_logprobs), as the
    upstream sent them, when the request asked for them."""

    text: str
    source: str = Source.INFERENCE
    choice: int = 0
    logprobs: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of tool call ``index`` of ``choice``: ``id`` and ``name`` on its first
    fragment (``None`` after), ``arguments`` the next piece of its JSON arguments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    choice: int = 0
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
    outcome: str = "ok"  # ok, cached (replayed from the exact tier), error, timeout, cancelled


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
    """The end: choice 0's ``finish_reason``; ``more_choices`` those of choices 1… (``n >
    1``). ``response_id`` / ``response_model``: what the upstream called its answer and the
    model that gave it, when it said (spans; not part of an event's equality)."""

    finish_reason: FinishReason = "stop"
    more_choices: tuple[FinishReason, ...] = ()
    response_id: str | None = field(default=None, compare=False)
    response_model: str | None = field(default=None, compare=False)

    @property
    def finish_reasons(self) -> tuple[FinishReason, ...]:
        return (self.finish_reason, *self.more_choices)


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """A failure after the stream began; rendered as an error event, never a silent cut."""

    error: NearlineError = field(compare=False)


Event = Delta | ToolCallDelta | Preliminary | Replace | Usage | Done | ErrorEvent
AnswerPiece = Delta | ToolCallDelta
"""What an answer is made of (what a cache records and replays)."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A whole tool call, folded from its fragments."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Choice:
    """One choice of a finished answer: its text, tool calls, finish reason and logprobs
    (``None`` unless some piece carried them)."""

    index: int
    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: FinishReason
    logprobs: tuple[dict[str, Any], ...] | None = None


def fold_choices(pieces: Iterable[Event], done: Done) -> tuple[Choice, ...]:
    """The choices that ``pieces`` (in order) make, finished as ``done`` says."""
    texts: dict[int, list[str]] = {}
    logprobs: dict[int, list[dict[str, Any]]] = {}
    calls: dict[int, dict[int, list[str]]] = {}  # choice → call index → [id, name, args…]
    for piece in pieces:
        if isinstance(piece, Delta):
            texts.setdefault(piece.choice, []).append(piece.text)
            if piece.logprobs is not None:
                logprobs.setdefault(piece.choice, []).extend(piece.logprobs)
        elif isinstance(piece, ToolCallDelta):
            call = calls.setdefault(piece.choice, {}).setdefault(piece.index, ["", ""])
            call[0] = call[0] or (piece.id or "")
            call[1] = call[1] or (piece.name or "")
            call.append(piece.arguments)
    reasons = done.finish_reasons
    count = max([len(reasons) - 1, *texts, *calls], default=0) + 1
    return tuple(
        Choice(
            index=index,
            text="".join(texts.get(index, ())),
            tool_calls=tuple(
                ToolCall(call[0], call[1], "".join(call[2:]))
                for _, call in sorted(calls.get(index, {}).items())
            ),
            finish_reason=reasons[index] if index < len(reasons) else reasons[0],
            logprobs=tuple(logprobs[index]) if index in logprobs else None,
        )
        for index in range(count)
    )


@dataclass(frozen=True, slots=True)
class CollectedAnswer:
    """A finished answer: choice 0's ``text`` and ``finish_reason`` (what most callers
    need), every choice in ``choices``, the usage and the events as they came."""

    text: str
    finish_reason: FinishReason
    usage: Usage | None
    events: tuple[Event, ...]
    choices: tuple[Choice, ...] = ()


async def collect(events: AsyncIterator[Event]) -> CollectedAnswer:
    """The answer's text, finish reason and usage; an ``ErrorEvent`` is raised."""
    seen: list[Event] = []
    parts: list[str] = []
    usage: Usage | None = None
    try:
        async for event in events:
            seen.append(event)
            match event:
                case Delta(text=text, choice=0):
                    parts.append(text)
                case Usage():
                    usage = event
                case Done(finish_reason=reason):
                    return CollectedAnswer(
                        "".join(parts), reason, usage, tuple(seen), fold_choices(seen, event)
                    )
                case ErrorEvent(error=error):
                    raise error
                case _:
                    pass
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    raise UpstreamError("the answer ended without finishing")
