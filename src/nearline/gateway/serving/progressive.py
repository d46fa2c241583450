"""Merge a fast preliminary answer with the refined one into one event stream.

The refined answer starts at once. While it has produced nothing, the preliminary source's
text is shown as ``Preliminary`` events (each carries the whole preliminary text so far).
When the refined answer's first token arrives the preliminary source is stopped (a draft
model frees its slot), one ``Replace`` says whether the refinement replaces or confirms
what was shown, and the refined events follow unchanged.

Stopping the preliminary source runs in the caller's ``BackgroundTasks`` (the pipeline's),
so it is cancelled and awaited when its owner closes.

With ``fallback``, a refined answer that fails before its first token does not end the
answer: the preliminary source runs to its end and becomes the answer, marked as such —
``Replace("confirm", source=<its source>)``, then its text as a ``Delta`` of that source,
its usage and its finish reason. Only when it has nothing to give does the error stand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator

from nearline.core.errors import NearlineError
from nearline.core.events import Delta, Done, ErrorEvent, Event, Preliminary, Replace, Usage
from nearline.core.tasks import BackgroundTasks

log = logging.getLogger(__name__)


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
    fallback: bool = False,
) -> AsyncGenerator[Event, None]:
    refined_first: asyncio.Future[Event] = asyncio.ensure_future(anext(refined))
    pending: asyncio.Future[Event] | None = asyncio.ensure_future(anext(preliminary))
    shown = ""
    ending: list[Usage | Done] = []  # the preliminary's own usage and finish, for a fallback
    complete = False  # the preliminary source ran to its end without failing
    try:
        while pending is not None:
            done, _ = await asyncio.wait(
                {refined_first, pending}, return_when=asyncio.FIRST_COMPLETED
            )
            if refined_first in done and not (fallback and _failed(refined_first)):
                break
            if pending not in done:  # the refinement failed: wait for the preliminary alone
                await asyncio.wait({pending})
            try:
                event = pending.result()
            except StopAsyncIteration:
                pending, complete = None, True
                break
            except NearlineError:
                pending = None  # the preliminary source failed: wait for the refinement
                break
            if isinstance(event, Delta):
                shown += event.text
                yield Preliminary(shown, source=source, similarity=similarity)
            elif isinstance(event, Usage | Done):
                ending.append(event)
            elif isinstance(event, ErrorEvent):
                pending = None
                break
            pending = asyncio.ensure_future(anext(preliminary))
        if fallback and complete and shown and refined_first.done() and _failed(refined_first):
            log.warning(
                "the refined answer failed before its first token (%s); the %s stands as the "
                "answer",
                _failure(refined_first),
                source,
            )
            for event in _standing(shown, source, ending):
                yield event
            return
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


def _standing(shown: str, source: str, ending: list[Usage | Done]) -> list[Event]:
    """The preliminary as the answer: marked, its text, its usage and finish reason."""
    usage = [event for event in ending if isinstance(event, Usage)]
    finish = [event for event in ending if isinstance(event, Done)]
    return [
        Replace("confirm", source=source),
        Delta(shown, source=source),
        *usage[-1:],
        finish[-1] if finish else Done(),
    ]


def _failed(first: asyncio.Future[Event]) -> bool:
    """The refined answer's first event is a failure (an error, or no answer at all)."""
    if first.cancelled():
        return False
    return first.exception() is not None or isinstance(first.result(), ErrorEvent)


def _failure(first: asyncio.Future[Event]) -> str:
    error = first.exception()
    if error is None:
        event = first.result()
        return event.error.message if isinstance(event, ErrorEvent) else "no event"
    return str(error) or type(error).__name__


async def _stop(pending: asyncio.Future[Event] | None, source: AsyncGenerator[Event, None]) -> None:
    if pending is not None and not pending.done():
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, NearlineError):
            await pending
    await source.aclose()
