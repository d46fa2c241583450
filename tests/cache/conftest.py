"""Fixtures for the semantic-cache tests: the real local embedding model, loaded once, and
a Redis namespace of each test's own on the real Redis (its keys deleted afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from nearline.embed import Embedder, EmbeddingBatcher, load_embedder


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return load_embedder()


@pytest.fixture
async def batcher(embedder: Embedder) -> AsyncIterator[EmbeddingBatcher]:
    batcher = EmbeddingBatcher(embedder)
    yield batcher
    await batcher.aclose()


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    """A Redis key namespace of this test's own; its keys are deleted afterwards."""
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except RedisConnectionError:
        pytest.fail("no Redis on 127.0.0.1:6379 (.ci/run starts one)")
    name = f"nearline-test:semantic:{uuid.uuid4().hex[:12]}"
    yield name
    keys = [key async for key in client.scan_iter(match=f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
