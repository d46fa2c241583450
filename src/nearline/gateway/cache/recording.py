"""A complete, successful answer as it streamed, so a hit replays with the original chunking.

A plain answer (one choice, text only) is its text ``chunks``. Anything more — tool-call
fragments, other choices (``n > 1``), logprobs — is recorded as the whole ordered sequence
of answer pieces (``pieces``), so a replay yields exactly the events the provider gave:
the same fragments, ids, names, arguments, choice indices and finish reasons.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from nearline.core.events import AnswerPiece, Delta, Done, Event, FinishReason, ToolCallDelta, Usage


@dataclass(frozen=True, slots=True)
class RecordedAnswer:
    chunks: tuple[str, ...]  # choice 0's text, piece by piece
    finish_reason: FinishReason
    usage: Usage
    stored_at: float = field(default_factory=time.time)
    # The whole answer in order, when it is more than choice 0's plain text (else empty).
    pieces: tuple[AnswerPiece, ...] = ()
    more_choices: tuple[FinishReason, ...] = ()  # the finish reasons of choices 1…

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def has_tool_calls(self) -> bool:
        return any(isinstance(piece, ToolCallDelta) for piece in self.pieces)

    def answer_pieces(self, source: str) -> list[AnswerPiece]:
        if not self.pieces:
            return [Delta(chunk, source=source) for chunk in self.chunks]
        return [_with_source(piece, source) for piece in self.pieces]

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {
            "chunks": self.chunks,
            "finish_reason": self.finish_reason,
            "usage": [self.usage.prompt_tokens, self.usage.completion_tokens],
            "stored_at": self.stored_at,
        }
        if self.pieces:
            data["pieces"] = [_piece_data(piece) for piece in self.pieces]
        if self.more_choices:
            data["more_choices"] = self.more_choices
        return orjson.dumps(data)

    @classmethod
    def from_bytes(cls, raw: bytes) -> RecordedAnswer:
        data: dict[str, Any] = orjson.loads(raw)
        prompt, completion = data["usage"]
        return cls(
            chunks=tuple(data["chunks"]),
            finish_reason=data["finish_reason"],
            usage=Usage(prompt, completion),
            stored_at=float(data["stored_at"]),
            pieces=tuple(_piece_from(item) for item in data.get("pieces", ())),
            more_choices=tuple(data.get("more_choices", ())),
        )


def _piece_data(piece: AnswerPiece) -> list[Any]:
    if isinstance(piece, Delta):
        return ["d", piece.text, piece.choice, piece.logprobs]
    return ["t", piece.choice, piece.index, piece.id, piece.name, piece.arguments]


def _piece_from(item: list[Any]) -> AnswerPiece:
    if item[0] == "d":
        _, text, choice, logprobs = item
        return Delta(text, choice=choice, logprobs=None if logprobs is None else tuple(logprobs))
    _, choice, index, call_id, name, arguments = item
    return ToolCallDelta(index, call_id, name, arguments, choice=choice)


def _with_source(piece: AnswerPiece, source: str) -> AnswerPiece:
    if isinstance(piece, Delta):
        return Delta(piece.text, source, piece.choice, piece.logprobs)
    return ToolCallDelta(piece.index, piece.id, piece.name, piece.arguments, piece.choice, source)


async def replay(
    answer: RecordedAnswer, source: str, pace_tokens_per_s: float = 0.0
) -> AsyncGenerator[Event, None]:
    """The recorded answer as events; usage says every prompt token came from cache."""
    for index, piece in enumerate(answer.answer_pieces(source)):
        if pace_tokens_per_s > 0 and index:
            await asyncio.sleep(1 / pace_tokens_per_s)
        yield piece
    usage = answer.usage
    yield Usage(usage.prompt_tokens, usage.completion_tokens, cached_tokens=usage.prompt_tokens)
    yield Done(answer.finish_reason, answer.more_choices)


async def recorded(
    events: AsyncIterator[Event], on_complete: Callable[[RecordedAnswer], Awaitable[None]]
) -> AsyncGenerator[Event, None]:
    """Pass events through; hand over the recording only if the answer completed.

    An error event, or a consumer that stops early (the client left), records nothing: a
    truncated, errored or cancelled stream is never cached.
    """
    chunks: list[str] = []
    pieces: list[AnswerPiece] = []
    plain = True  # only choice 0's text, without logprobs
    usage = Usage(0, 0)
    async for event in events:
        if isinstance(event, Delta | ToolCallDelta):
            pieces.append(event)
            if isinstance(event, Delta) and event.choice == 0:
                chunks.append(event.text)
                plain = plain and event.logprobs is None
            else:
                plain = False
        elif isinstance(event, Usage):
            usage = event
        elif isinstance(event, Done):
            answer = RecordedAnswer(
                tuple(chunks),
                event.finish_reason,
                usage,
                pieces=() if plain else tuple(pieces),
                more_choices=event.more_choices,
            )
            await on_complete(answer)
            yield event
            return
        yield event
