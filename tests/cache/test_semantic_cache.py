"""The semantic tier in one process (memory store), with the real local embedding model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from nearline.embed import EmbeddingBatcher
from nearline.gateway.cache.partition import partition_key
from nearline.gateway.cache.semantic import SemanticCache, SemanticThresholds
from nearline.testing import eventually_async

PARIS = partition_key("acme", "small-model")


@pytest.fixture
async def cache(batcher: EmbeddingBatcher) -> AsyncIterator[SemanticCache]:
    async with SemanticCache(batcher) as cache:
        yield cache


async def test_a_paraphrase_is_served_the_stored_answer(cache: SemanticCache) -> None:
    stored_id = await cache.store(
        PARIS, "Is it safe to drink tap water in Mexico?", b'{"answer": 1}', ttl_s=60
    )

    match = await cache.lookup(PARIS, "Can you safely drink the tap water in Mexico?")

    assert match is not None
    assert match.band == "hit"
    assert match.entry_id == stored_id
    assert match.payload == b'{"answer": 1}'
    assert match.cached_query == "Is it safe to drink tap water in Mexico?"
    assert cache.thresholds.hit <= match.similarity <= 1.0


async def test_an_unrelated_question_misses(cache: SemanticCache) -> None:
    await cache.store(PARIS, "How can I access a private Instagram account?", b"x", ttl_s=60)

    assert await cache.lookup(PARIS, "What is the boiling point of water?") is None


async def test_a_near_miss_that_similarity_alone_would_serve_is_rejected(
    cache: SemanticCache, batcher: EmbeddingBatcher
) -> None:
    stored = "Is it safe to drink tap water in Mexico?"
    query = "Is it not safe to drink tap water in Mexico?"
    similarity = float((await batcher.embed(stored)) @ (await batcher.embed(query)))
    assert similarity >= cache.thresholds.hit  # similarity alone would serve it
    await cache.store(PARIS, stored, b"yes", ttl_s=60)

    assert await cache.lookup(PARIS, query) is None
    assert cache.stats.guard_rejections == 1


async def test_the_near_band_offers_a_preliminary_answer(batcher: EmbeddingBatcher) -> None:
    stored = "How can I access a private Instagram account?"
    query = "How do I gain access to a private Instagram account?"
    similarity = float((await batcher.embed(stored)) @ (await batcher.embed(query)))
    # Thresholds straddling the pair's similarity: too far for a hit, close enough for "near".
    thresholds = SemanticThresholds(hit=min(1.0, similarity + 0.01), near=similarity - 0.05)
    async with SemanticCache(batcher, thresholds=thresholds) as cache:
        await cache.store(PARIS, stored, b"answer", ttl_s=60)

        match = await cache.lookup(PARIS, query)

    assert match is not None
    assert match.band == "near"
    assert match.payload == b"answer"


async def test_expired_entries_are_not_served(cache: SemanticCache) -> None:
    await cache.store(PARIS, "What is the capital of France?", b"Paris", ttl_s=0.2)
    assert await cache.lookup(PARIS, "What is the capital of France?") is not None

    await asyncio.sleep(0.3)  # the behaviour under test: the entry's TTL runs out

    assert await cache.lookup(PARIS, "What is the capital of France?") is None


async def test_deleted_entries_are_not_served(cache: SemanticCache) -> None:
    entry_id = await cache.store(PARIS, "What is the capital of France?", b"Paris", ttl_s=60)

    assert await cache.delete(entry_id)

    assert await cache.lookup(PARIS, "What is the capital of France?") is None
    assert len(cache) == 0


async def test_purge_by_tenant_leaves_other_tenants(cache: SemanticCache) -> None:
    other = partition_key("globex", "small-model")
    await cache.store(PARIS, "What is the capital of France?", b"acme", ttl_s=60)
    await cache.store(other, "What is the capital of France?", b"globex", ttl_s=60)

    assert await cache.purge(tenant="acme") == 1

    assert await cache.lookup(PARIS, "What is the capital of France?") is None
    kept = await cache.lookup(other, "What is the capital of France?")
    assert kept is not None
    assert kept.payload == b"globex"


async def test_concurrent_lookups_are_embedded_together(batcher: EmbeddingBatcher) -> None:
    async with SemanticCache(batcher) as cache:
        await cache.store(PARIS, "What is the capital of France?", b"Paris", ttl_s=60)
        calls_before = batcher.stats.model_calls
        questions = [
            "What is the capital of France?",
            "what is the capital of france?",
            "What is the capital of France",
            "What is the capital of France?!",
            "WHAT IS THE CAPITAL OF FRANCE?",
            "What's the capital of France?",
            "what's the capital of France",
            "What is the capital city of France?",
        ]

        matches = await asyncio.gather(*(cache.lookup(PARIS, q) for q in questions))

    assert all(m is not None and m.payload == b"Paris" for m in matches)
    assert batcher.stats.model_calls - calls_before < len(questions)


async def test_store_rejects_a_non_positive_ttl(cache: SemanticCache) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        await cache.store(PARIS, "q", b"a", ttl_s=0)


async def test_store_embedded_imports_vectors_without_the_model(
    cache: SemanticCache, batcher: EmbeddingBatcher
) -> None:
    vector = await batcher.embed("What is the capital of France?")
    calls_before = batcher.stats.model_calls

    [entry_id] = await cache.store_embedded(
        PARIS, [("What is the capital of France?", vector, b"Paris")], ttl_s=60
    )

    assert batcher.stats.model_calls == calls_before
    match = await cache.lookup(PARIS, "What is the capital of France?")
    assert match is not None
    assert match.entry_id == entry_id
    with pytest.raises(ValueError, match="shape"):
        await cache.store_embedded(PARIS, [("q", vector[:10], b"x")], ttl_s=60)


async def test_max_entries_evicts_the_oldest(batcher: EmbeddingBatcher) -> None:
    async with SemanticCache(batcher, max_entries=2) as cache:
        first = await cache.store(PARIS, "What is the capital of France?", b"1", ttl_s=60)
        await cache.store(PARIS, "Why is the sky blue?", b"2", ttl_s=60)
        await cache.store(PARIS, "How do magnets work?", b"3", ttl_s=60)

        assert len(cache) == 2
        assert await cache.lookup(PARIS, "What is the capital of France?") is None
        assert not await cache.delete(first)  # already gone from the store too
        assert await cache.lookup(PARIS, "How do magnets work?") is not None


async def test_the_sweep_drops_expired_entries_from_index_and_store(
    batcher: EmbeddingBatcher,
) -> None:
    async with SemanticCache(batcher, sweep_interval_s=0.05) as cache:
        entry_id = await cache.store(PARIS, "What is the capital of France?", b"1", ttl_s=0.1)
        await eventually_async(lambda: len(cache) == 0, 5)  # the next sweep after expiry

        assert not await cache.delete(entry_id)
