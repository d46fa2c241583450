"""The refined answer fails before its first token: the draft becomes the answer (issue 15)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from nearline.core.errors import UpstreamError
from nearline.core.events import Delta, Done, ErrorEvent, Event, Preliminary, Replace, Usage
from nearline.core.tasks import BackgroundTasks
from nearline.gateway.serving.progressive import with_preliminary


@pytest.fixture
async def background() -> AsyncIterator[BackgroundTasks]:
    tasks = BackgroundTasks("test-fallback")
    yield tasks
    await tasks.aclose()


async def _events(*events: Event, wait: asyncio.Event | None = None) -> AsyncGenerator[Event]:
    if wait is not None:
        await wait.wait()
    for event in events:
        await asyncio.sleep(0)
        yield event


def _failing() -> AsyncGenerator[Event]:
    return _events(ErrorEvent(UpstreamError("upstream refused the connection")))


async def test_a_failed_refinement_leaves_the_draft_as_the_marked_answer(
    background: BackgroundTasks,
):
    draft = _events(Delta("Bonjour"), Delta(" !"), Usage(5, 2), Done("stop"))
    merged = with_preliminary(
        _failing(), draft, source="draft", background=background, fallback=True
    )
    seen = [event async for event in merged]
    assert not any(isinstance(event, ErrorEvent) for event in seen)
    end = seen[seen.index(Replace("confirm", source="draft")) :]
    assert end == [
        Replace("confirm", source="draft"),
        Delta("Bonjour !", source="draft"),
        Usage(5, 2),
        Done("stop"),
    ]
    assert Preliminary("Bonjour", "draft") in seen


async def test_the_draft_streams_on_when_the_refinement_fails_first(
    background: BackgroundTasks,
):
    """The upstream fails before the draft's first token: the draft is still waited for."""
    later = asyncio.Event()
    draft = _events(Delta("Salut"), Done("length"), wait=later)
    merged = with_preliminary(
        _failing(), draft, source="draft", background=background, fallback=True
    )
    first = asyncio.ensure_future(anext(merged))
    await asyncio.sleep(0.05)
    assert not first.done()  # not an error: waiting for the draft
    later.set()
    seen = [await first, *[event async for event in merged]]
    assert seen[-2:] == [Delta("Salut", source="draft"), Done("length")]


async def test_without_fallback_the_error_stands(background: BackgroundTasks):
    draft = _events(Delta("Bonjour"), Done())
    merged = with_preliminary(_failing(), draft, source="draft", background=background)
    seen = [event async for event in merged]
    assert isinstance(seen[-1], ErrorEvent)


async def test_a_failed_draft_and_a_failed_refinement_give_the_refined_error(
    background: BackgroundTasks,
):
    draft = _events(ErrorEvent(UpstreamError("draft failed too")))
    merged = with_preliminary(
        _failing(), draft, source="draft", background=background, fallback=True
    )
    seen = [event async for event in merged]
    assert len(seen) == 1 and isinstance(seen[0], ErrorEvent)
    assert "refused" in seen[0].error.message
