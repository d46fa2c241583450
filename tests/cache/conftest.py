"""Fixtures for the semantic-cache tests: the real local embedding model, loaded once, and
a Redis namespace of each test's own on the real Redis (its keys deleted afterwards), and
an in-process embedder whose similarities a test sets (``fake``)."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from nearline.embed import Embedder, EmbeddingBatcher, Vectors, load_embedder


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


# -- an embedder whose similarities a test sets (the learned-threshold tests) ----------

BASE = "question base"
DIM = 16


def _name(k: int) -> str:
    letters = "bcdfghjklmnpqrstvwxz"
    name = ""
    while True:
        name = letters[k % len(letters)] + name
        k //= len(letters)
        if not k:
            return name


class FakeEmbedder:
    """``question base`` is e0; a text registered with ``at(similarity)`` is at exactly that
    cosine from it (its other component points somewhere of its own)."""

    def __init__(self) -> None:
        self._similarity: dict[str, float] = {}

    @property
    def dim(self) -> int:
        return DIM

    @property
    def name(self) -> str:
        return "fake"

    def at(self, similarity: float) -> str:
        text = f"question {_name(len(self._similarity))}"
        self._similarity[text] = similarity
        return text

    def encode(self, texts: Sequence[str]) -> Vectors:
        rows = []
        for text in texts:
            vector = np.zeros(DIM, dtype=np.float32)
            similarity = 1.0 if text == BASE else self._similarity[text]
            other = np.random.default_rng(abs(hash(text)) % 2**32).normal(size=DIM - 1)
            vector[0] = similarity
            vector[1:] = other / np.linalg.norm(other) * math.sqrt(max(0.0, 1 - similarity**2))
            rows.append(vector / np.linalg.norm(vector))
        return np.stack(rows).astype(np.float32)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeEmbedder, EmbeddingBatcher]]:
    embedder = FakeEmbedder()
    batcher = EmbeddingBatcher(embedder)
    yield embedder, batcher
    await batcher.aclose()
