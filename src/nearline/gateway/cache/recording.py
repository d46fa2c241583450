"""A complete, successful answer as it streamed, so a hit replays with the original chunking."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from nearline.core.events import Delta, Done, Event, FinishReason, Usage


@dataclass(frozen=True, slots=True)
class RecordedAnswer:
    chunks: tuple[str, ...]
    finish_reason: FinishReason
    usage: Usage
    stored_at: float = field(default_factory=time.time)

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "chunks": self.chunks,
                "finish_reason": self.finish_reason,
                "usage": [self.usage.prompt_tokens, self.usage.completion_tokens],
                "stored_at": self.stored_at,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> RecordedAnswer:
        data: dict[str, Any] = orjson.loads(raw)
        prompt, completion = data["usage"]
        return cls(
            chunks=tuple(data["chunks"]),
            finish_reason=data["finish_reason"],
            usage=Usage(prompt, completion),
            stored_at=float(data["stored_at"]),
        )


async def replay(
    answer: RecordedAnswer, source: str, pace_tokens_per_s: float = 0.0
) -> AsyncGenerator[Event, None]:
    """The recorded answer as events; usage says every prompt token came from cache."""
    for index, chunk in enumerate(answer.chunks):
        if pace_tokens_per_s > 0 and index:
            await asyncio.sleep(1 / pace_tokens_per_s)
        yield Delta(chunk, source=source)
    usage = answer.usage
    yield Usage(usage.prompt_tokens, usage.completion_tokens, cached_tokens=usage.prompt_tokens)
    yield Done(answer.finish_reason)


async def recorded(
    events: AsyncIterator[Event], on_complete: Callable[[RecordedAnswer], Awaitable[None]]
) -> AsyncGenerator[Event, None]:
    """Pass events through; hand over the recording only if the answer completed.

    An error event, or a consumer that stops early (the client left), records nothing: a
    truncated, errored or cancelled stream is never cached.
    """
    chunks: list[str] = []
    usage = Usage(0, 0)
    async for event in events:
        if isinstance(event, Delta):
            chunks.append(event.text)
        elif isinstance(event, Usage):
            usage = event
        elif isinstance(event, Done):
            await on_complete(RecordedAnswer(tuple(chunks), event.finish_reason, usage))
            yield event
            return
        yield event
