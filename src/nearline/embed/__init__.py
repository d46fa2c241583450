"""Local sentence embeddings: the model (:func:`load_embedder`) and an async micro-batcher."""

from nearline.embed.batcher import BatchStats, EmbeddingBatcher
from nearline.embed.model import (
    DEFAULT_MODEL,
    Embedder,
    EmbedderLoadError,
    MiniLMEmbedder,
    Vectors,
    load_embedder,
)

__all__ = [
    "DEFAULT_MODEL",
    "BatchStats",
    "Embedder",
    "EmbedderLoadError",
    "EmbeddingBatcher",
    "MiniLMEmbedder",
    "Vectors",
    "load_embedder",
]
