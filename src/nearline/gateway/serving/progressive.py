"""Merge a fast preliminary answer with the refined one into one event stream.

The refined answer starts at once. While it has produced nothing, the preliminary source's
text is shown as ``Preliminary`` events (each carries the whole preliminary text so far).
When the refined answer's first token arrives the preliminary source is stopped (a draft
model frees its slot), one ``Replace`` says whether the refinement replaces or confirms
what was shown, and the refined events follow unchanged.

Stopping the preliminary source runs in the caller's ``BackgroundTasks`` (the pipeline's),
so it is cancelled and awaited when its owner closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from nearline.core.errors import NearlineError
from nearline.core.events import Delta, Event, Preliminary, Replace
from nearline.core.tasks import BackgroundTasks


def _agrees(preliminary: str, refined_start: str) -> bool:
    """The refinement so far says what the preliminary said (whitespace and case aside)."""
    start = " ".join(refined_start.split()).lower()
    return bool(start) and " ".join(preliminary.split()).lower().startswith(start)


async def with_preliminary(
    refined: AsyncGenerator[Event, None],
    preliminary: AsyncGenerator[Event, None],
    source: str,
    similarity: float | None = None,
    *,
    background: BackgroundTasks,
) -> AsyncGenerator[Event, None]:
    refined_first: asyncio.Future[Event] = asyncio.ensure_future(anext(refined))
    pending: asyncio.Future[Event] | None = asyncio.ensure_future(anext(preliminary))
    shown = ""
    try:
        while pending is not None:
            done, _ = await asyncio.wait(
                {refined_first, pending}, return_when=asyncio.FIRST_COMPLETED
            )
            if refined_first in done:
                break
            try:
                event = pending.result()
            except (StopAsyncIteration, NearlineError):
                pending = None  # the preliminary source ended or failed: wait for the refinement
                break
            if isinstance(event, Delta):
                shown += event.text
                yield Preliminary(shown, source=source, similarity=similarity)
            pending = asyncio.ensure_future(anext(preliminary))
        # Stop the preliminary source without waiting for it: a draft model may be in the
        # middle of evaluating its prompt, which cannot be interrupted, and the refined answer
        # must not wait for that.
        if not background.start(_stop(pending, preliminary)) and pending is not None:
            pending.cancel()  # the owner is closing: drop the preliminary source's next event
        pending = None
        first = await refined_first
        if shown and isinstance(first, Delta):
            yield Replace("confirm" if _agrees(shown, first.text) else "replace")
        yield first
        async for event in refined:
            yield event
    finally:
        if pending is not None:
            await _stop(pending, preliminary)
        if not refined_first.done():
            refined_first.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, NearlineError):
                await refined_first
        await refined.aclose()


async def _stop(pending: asyncio.Future[Event] | None, source: AsyncGenerator[Event, None]) -> None:
    if pending is not None and not pending.done():
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, NearlineError):
            await pending
    await source.aclose()
