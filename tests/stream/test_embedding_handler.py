"""Embedding handlers on the bundled local model: one call per micro-batch, or the batcher."""

from __future__ import annotations

import numpy as np
import pytest

from nearline.embed import Embedder, EmbeddingBatcher, load_embedder
from nearline.worker.broker import Entry
from nearline.worker.embedding import BatchedEmbeddingHandler, EmbeddingHandler

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TEXTS = ["where is my parcel", "my package has not arrived yet", "reset my password please"]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder()


def entries() -> list[Entry]:
    return [Entry(f"{i + 1}-0", {"key": f"user-{i}", "text": t}) for i, t in enumerate(TEXTS)]


def cosine(a: object, b: object) -> float:
    return float(np.dot(np.asarray(a), np.asarray(b)))


def test_one_model_call_embeds_the_whole_batch_keeping_keys(embedder: Embedder) -> None:
    calls: list[int] = []

    class Counting:
        dim = embedder.dim
        name = embedder.name

        def encode(self, texts: list[str]) -> object:
            calls.append(len(texts))
            return embedder.encode(texts)

    results = EmbeddingHandler(Counting())(entries())  # type: ignore[arg-type]

    assert calls == [3]
    assert [r["key"] for r in results if r] == ["user-0", "user-1", "user-2"]
    vectors = [r["vector"] for r in results if r]
    assert all(len(v) == embedder.dim for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])  # meaning, not noise


async def test_the_batched_handler_gives_the_same_vectors_through_the_shared_batcher(
    embedder: Embedder,
) -> None:
    batcher = EmbeddingBatcher(embedder, max_batch=8)
    try:
        through_batcher = await BatchedEmbeddingHandler(batcher)(entries())
    finally:
        await batcher.aclose()
    direct = EmbeddingHandler(embedder)(entries())

    for a, b in zip(through_batcher, direct, strict=True):
        assert a is not None and b is not None
        assert np.allclose(a["vector"], b["vector"], atol=1e-4)
