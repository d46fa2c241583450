"""Fixtures for the semantic-cache tests: the real local embedding model, loaded once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from nearline.embed import Embedder, EmbeddingBatcher, load_embedder


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return load_embedder()


@pytest.fixture
async def batcher(embedder: Embedder) -> AsyncIterator[EmbeddingBatcher]:
    batcher = EmbeddingBatcher(embedder)
    yield batcher
    await batcher.aclose()
