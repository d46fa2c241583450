"""The serving pipeline's decision table, in-process and in milliseconds.

Built from its collaborators with in-memory stores and a ``ScriptedProvider``: no HTTP, no
local model. Each test says which way the pipeline decided and what it did (or did not)
ask the provider and store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from nearline.config import ModelRoute, ProgressiveSettings
from nearline.core.errors import NotCached, PermissionDenied, UpstreamError
from nearline.core.events import Delta, Done, ErrorEvent, Event, Preliminary, Replace, Usage
from nearline.core.request import ChatRequest
from nearline.core.source import Source
from nearline.embed import EmbeddingBatcher
from nearline.gateway.cache.exact import ExactCache
from nearline.gateway.cache.exact_store import EntryKey, MemoryExactStore
from nearline.gateway.cache.recording import RecordedAnswer
from nearline.gateway.cache.semantic import SemanticCache
from nearline.gateway.serving.catalogue import Catalogue
from nearline.gateway.serving.pipeline import Answer, ServingPipeline
from nearline.gateway.serving.service import ChatService
from nearline.gateway.serving.tiers import CacheTiers
from nearline.gateway.telemetry.observe import AnswerObserver
from nearline.gateway.tenancy import Tenant
from nearline.testing.routing import KeywordEmbedder
from nearline.testing.scripted import ScriptedProvider

TENANT = Tenant("acme")
ANSWER: tuple[Event, ...] = (Delta("Paris"), Delta(" it is."), Usage(5, 2), Done())


class NotifyingStore(MemoryExactStore):
    """The memory store, saying when an entry was written (so a test waits on it)."""

    def __init__(self, max_entries: int = 100) -> None:
        super().__init__(max_entries)
        self.written = asyncio.Event()

    async def set(self, key: EntryKey, value: bytes, ttl_s: float) -> None:
        await super().set(key, value, ttl_s)
        self.written.set()


@dataclass
class Gateway:
    provider: ScriptedProvider
    draft: ScriptedProvider
    store: NotifyingStore
    tiers: CacheTiers
    pipeline: ServingPipeline
    service: ChatService

    async def ask(
        self, text: str = "capital of France?", *, tenant: Tenant = TENANT, **options: Any
    ) -> Answer:
        headers = options.pop("headers", {})
        request = chat(text, **options)
        return await self.service.handle(request, tenant, headers, received_at=time.perf_counter())


def chat(text: str, **options: Any) -> ChatRequest:
    return ChatRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": text}], **options}
    )


async def events_of(answer: Answer) -> list[Event]:
    try:
        return [event async for event in answer.events()]
    finally:
        await answer.aclose()


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta))


@pytest.fixture
async def make_pipeline() -> AsyncIterator[Callable[..., Gateway]]:
    """``make_pipeline(semantic=None, exact=True)``: a pipeline over scripted providers;
    everything it built is closed after the test."""
    built: list[ServingPipeline] = []

    def make(*, semantic: SemanticCache | None = None, exact: bool = True) -> Gateway:
        provider, draft = ScriptedProvider("up"), ScriptedProvider("light")
        catalogue = Catalogue(
            {"m": ModelRoute(provider="up"), "draft": ModelRoute(provider="light")},
            {"up": provider, "light": draft},
        )
        store = NotifyingStore()
        cache = ExactCache(store, ttl_s=60, stale_while_revalidate_s=600) if exact else None
        tiers = CacheTiers(catalogue.provider_name, cache, semantic)
        observer = AnswerObserver()
        pipeline = ServingPipeline(
            catalogue, tiers, observer, progressive=ProgressiveSettings(draft_model="draft")
        )
        built.append(pipeline)
        return Gateway(
            provider, draft, store, tiers, pipeline, ChatService(catalogue, pipeline, observer)
        )

    yield make
    for pipeline in built:
        await pipeline.aclose()


async def test_a_miss_asks_the_provider_and_stores_the_answer(make_pipeline):
    gateway = make_pipeline()
    gateway.provider.enqueue(*ANSWER)
    answer = await gateway.ask()
    assert answer.source == Source.INFERENCE
    assert await events_of(answer) == list(ANSWER)
    assert len(gateway.provider.calls) == 1
    assert gateway.provider.calls[0].upstream_model == "m"
    assert len(gateway.store) == 1


async def test_an_exact_hit_replays_and_the_provider_is_not_called(make_pipeline):
    gateway = make_pipeline()
    gateway.provider.enqueue(*ANSWER)
    await events_of(await gateway.ask())
    hit = await gateway.ask()
    assert hit.source == Source.EXACT
    events = await events_of(hit)
    assert [e.text for e in events if isinstance(e, Delta)] == ["Paris", " it is."]
    assert events[-1] == Done()
    assert len(gateway.provider.calls) == 1  # only the first request reached it


async def test_a_stale_hit_is_served_and_refreshed_once_in_the_background(make_pipeline):
    gateway = make_pipeline()
    key = gateway.tiers.keys(await gateway.pipeline.catalogue.resolve(chat("q"), TENANT)).exact
    assert key is not None and gateway.tiers.exact is not None
    stale = RecordedAnswer(("old",), "stop", Usage(1, 1), stored_at=time.time() - 120)
    await gateway.tiers.exact.put(key, stale)
    gateway.store.written.clear()
    release = asyncio.Event()
    gateway.provider.enqueue(Delta("new"), Usage(1, 1), Done(), hold=release)

    first, second = await gateway.ask("q"), await gateway.ask("q")  # both while refreshing
    assert (first.source, second.source) == (Source.EXACT, Source.EXACT)
    assert text_of(await events_of(first)) == text_of(await events_of(second)) == "old"
    await asyncio.wait_for(gateway.provider.wait_for(calls=1), 5)
    assert len(gateway.pipeline.background) == 1  # one refresh for the stale entry, not two

    release.set()
    await asyncio.wait_for(gateway.store.written.wait(), 5)
    fresh = await gateway.ask("q")
    assert fresh.source == Source.EXACT
    assert text_of(await events_of(fresh)) == "new"
    assert len(gateway.provider.calls) == 1


async def test_closing_the_pipeline_cancels_a_refresh_in_flight(make_pipeline):
    gateway = make_pipeline()
    key = gateway.tiers.keys(await gateway.pipeline.catalogue.resolve(chat("q"), TENANT)).exact
    assert key is not None and gateway.tiers.exact is not None
    stale = RecordedAnswer(("old",), "stop", Usage(1, 1), stored_at=time.time() - 120)
    await gateway.tiers.exact.put(key, stale)
    gateway.provider.enqueue(Delta("new"), Done(), hold=asyncio.Event())  # never released
    await events_of(await gateway.ask("q"))
    await asyncio.wait_for(gateway.provider.wait_for(calls=1), 5)  # the refresh is held
    await gateway.pipeline.aclose()
    assert len(gateway.pipeline.background) == 0
    assert gateway.provider.cancellations == 1


async def test_an_error_before_the_first_event_raises_and_stores_nothing(make_pipeline):
    gateway = make_pipeline()
    gateway.provider.enqueue(fail=UpstreamError("upstream refused"), after=0)
    with pytest.raises(UpstreamError, match="upstream refused") as raised:
        await gateway.ask()
    assert "x-request-id" in raised.value.headers()  # the HTTP error names the request
    assert len(gateway.store) == 0


async def test_an_error_after_the_first_event_is_an_error_event_and_stores_nothing(
    make_pipeline,
):
    gateway = make_pipeline()
    gateway.provider.enqueue(Delta("Par"), fail=UpstreamError("connection reset"), after=1)
    answer = await gateway.ask()
    assert answer.first == Delta("Par")
    events = await events_of(answer)
    assert isinstance(events[-1], ErrorEvent)
    assert events[-1].error.message == "connection reset"
    assert len(gateway.store) == 0


async def test_a_stream_abandoned_midway_is_not_stored_and_the_provider_stops(make_pipeline):
    gateway = make_pipeline()
    gateway.provider.enqueue(*ANSWER)
    answer = await gateway.ask()
    assert answer.first == Delta("Paris")
    await answer.aclose()  # the client left after the first token
    await asyncio.wait_for(gateway.provider.wait_for(closes=1), 5)
    assert gateway.provider.cancellations == 1
    assert len(gateway.store) == 0


async def test_only_if_cached_with_nothing_cached_is_not_cached(make_pipeline):
    gateway = make_pipeline()
    with pytest.raises(NotCached):
        await gateway.ask(headers={"cache-control": "only-if-cached"})
    assert gateway.provider.calls == []


async def test_a_key_limited_to_some_models_may_not_use_another(make_pipeline):
    gateway = make_pipeline()
    limited = Tenant("acme", frozenset({"draft"}))
    with pytest.raises(PermissionDenied):
        await gateway.ask(tenant=limited)
    assert gateway.provider.calls == []


async def test_progressive_shows_a_draft_then_the_refined_answer(make_pipeline):
    gateway = make_pipeline()
    refined = asyncio.Event()
    gateway.provider.enqueue(Delta("Paris"), Usage(5, 1), Done(), hold=refined)
    gateway.draft.enqueue(Delta("Lyon?"), Done())
    answer = await gateway.ask(nearline={"progressive": True})
    assert answer.first == Preliminary("Lyon?", source=Source.DRAFT)
    refined.set()
    rest = (await events_of(answer))[1:]
    assert rest == [Replace("replace"), Delta("Paris"), Usage(5, 1), Done()]
    assert gateway.draft.calls[0].request.model == "draft"
    assert gateway.draft.calls[0].request.max_tokens == 48
    assert len(gateway.store) == 1  # the refined answer is what gets stored


@pytest.fixture
async def semantic() -> AsyncIterator[SemanticCache]:
    batcher = EmbeddingBatcher(KeywordEmbedder())
    try:
        async with SemanticCache(batcher) as cache:
            yield cache
    finally:
        await batcher.aclose()


async def test_the_semantic_tier_answers_what_it_stored(make_pipeline, semantic):
    gateway = make_pipeline(semantic=semantic, exact=False)
    gateway.provider.enqueue(*ANSWER)
    await events_of(await gateway.ask("capital of France?"))
    hit = await gateway.ask("capital of France?")
    assert hit.source == Source.SEMANTIC
    assert hit.similarity == pytest.approx(1.0)
    assert text_of(await events_of(hit)) == "Paris it is."
    assert len(gateway.provider.calls) == 1
    keys = gateway.tiers.keys(gateway.provider.calls[0])
    assert await gateway.tiers.is_cached(keys)  # what the prefetcher asks
    assert await gateway.tiers.purge(tenant="acme") == {"exact": 0, "semantic": 1}
    assert not await gateway.tiers.is_cached(keys)
