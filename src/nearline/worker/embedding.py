"""Embedding handlers: turn each entry's text into a vector with the shared embedding model.

``EmbeddingHandler`` is sync (the worker runs it in a thread) and encodes a whole micro-batch
in one model call. ``BatchedEmbeddingHandler`` is async and goes through an
``EmbeddingBatcher``, so a worker embedded in the gateway shares one batcher (and one model
thread) with the semantic cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nearline.embed import Embedder, EmbeddingBatcher, load_embedder
from nearline.worker.broker import Entry
from nearline.worker.pipeline import Result


def _results(batch: Sequence[Entry], vectors: Any, key_field: str) -> list[Result]:
    rows = np.round(np.asarray(vectors, dtype=np.float64), 6)  # vectorised, not per float
    return [
        {"key": entry.data.get(key_field), "dim": len(row), "vector": row}
        for entry, row in zip(batch, rows.tolist(), strict=True)
    ]


class EmbeddingHandler:
    def __init__(
        self, embedder: Embedder, text_field: str = "text", key_field: str = "key"
    ) -> None:
        self.embedder = embedder
        self.text_field = text_field
        self.key_field = key_field

    def __call__(self, batch: list[Entry]) -> list[Result]:
        vectors = self.embedder.encode([str(e.data[self.text_field]) for e in batch])
        return _results(batch, vectors, self.key_field)


class BatchedEmbeddingHandler:
    def __init__(
        self, batcher: EmbeddingBatcher, text_field: str = "text", key_field: str = "key"
    ) -> None:
        self.batcher = batcher
        self.text_field = text_field
        self.key_field = key_field

    async def __call__(self, batch: list[Entry]) -> list[Result]:
        vectors = await self.batcher.embed_many([str(e.data[self.text_field]) for e in batch])
        return _results(batch, vectors, self.key_field)


def build_embedding_handler(text_field: str = "text", key_field: str = "key") -> EmbeddingHandler:
    """Factory for worker configs: the bundled local model (two non-spinning threads)."""
    return EmbeddingHandler(load_embedder(), text_field, key_field)
