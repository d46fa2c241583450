"""The merge of a preliminary source and the refined answer, with scripted event sources."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from nearline.core.events import Delta, Done, Event, Preliminary, Replace, Usage
from nearline.core.tasks import BackgroundTasks
from nearline.gateway.serving.progressive import with_preliminary


@pytest.fixture
async def background() -> AsyncIterator[BackgroundTasks]:
    """The owner of the merge's background work (stopping the preliminary source)."""
    tasks = BackgroundTasks("test-merge")
    yield tasks
    await tasks.aclose()


class Source:
    """A scripted event source that can be held back and records whether it was closed."""

    def __init__(self, events: list[Event], gate: asyncio.Event | None = None) -> None:
        self.events = events
        self.gate = gate
        self.closed = False
        self.sent = 0

    async def run(self) -> AsyncGenerator[Event, None]:
        try:
            if self.gate is not None:
                await self.gate.wait()
            for event in self.events:
                await asyncio.sleep(0)
                self.sent += 1
                yield event
        finally:
            self.closed = True


async def test_preliminary_is_shown_until_the_refined_answer_starts_then_replaced(
    background: BackgroundTasks,
):
    gate = asyncio.Event()
    refined = Source([Delta("Refined"), Delta(" text"), Usage(3, 2), Done()], gate)
    draft = Source([Delta("Draft"), Delta(" words"), Delta(" more")])
    merged = with_preliminary(refined.run(), draft.run(), source="draft", background=background)
    seen = [await anext(merged), await anext(merged)]
    assert seen == [Preliminary("Draft", "draft"), Preliminary("Draft words", "draft")]
    gate.set()
    rest = [event async for event in merged]
    assert rest[0] == Preliminary("Draft words more", "draft") or rest[0] == Replace("replace")
    after = rest[rest.index(Replace("replace")) :]
    assert after == [Replace("replace"), Delta("Refined"), Delta(" text"), Usage(3, 2), Done()]
    assert draft.closed and refined.closed


async def test_a_refinement_that_agrees_confirms_the_preliminary(background: BackgroundTasks):
    gate = asyncio.Event()
    refined = Source([Delta("Paris is"), Done()], gate)
    draft = Source([Delta("Paris is the capital.")])
    merged = with_preliminary(refined.run(), draft.run(), source="draft", background=background)
    assert await anext(merged) == Preliminary("Paris is the capital.", "draft")
    gate.set()
    assert [e async for e in merged] == [Replace("confirm"), Delta("Paris is"), Done()]


async def test_a_fast_refinement_gets_no_preliminary_at_all(background: BackgroundTasks):
    refined = Source([Delta("quick"), Done()])
    draft = Source([Delta("slow")], asyncio.Event())  # never released
    events = [
        e
        async for e in with_preliminary(
            refined.run(), draft.run(), source="draft", background=background
        )
    ]
    assert events == [Delta("quick"), Done()]
    assert draft.sent == 0


async def test_closing_the_merged_stream_closes_both_sources(background: BackgroundTasks):
    gate = asyncio.Event()
    refined = Source([Delta("never")], gate)
    draft = Source([Delta("a"), Delta("b"), Delta("c")])
    merged = with_preliminary(refined.run(), draft.run(), source="draft", background=background)
    await anext(merged)
    await merged.aclose()
    assert draft.closed
    assert refined.closed or refined.sent == 0
