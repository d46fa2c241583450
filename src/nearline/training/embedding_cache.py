"""Embeddings of the training prompts, computed once and kept in a file.

The file is keyed by the embedding model and a hash of the prompts, so a changed data set or
model never reads stale vectors. It lives under ``build/`` (ignored by git).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nearline.embed import Embedder, Vectors

DEFAULT_CACHE_DIR = Path("build/routing")
BATCH = 64


def prompts_key(model_name: str, prompts: Sequence[str]) -> str:
    digest = hashlib.sha256(model_name.encode("utf-8"))
    for prompt in prompts:
        digest.update(hashlib.sha256(prompt.encode("utf-8")).digest())
    return digest.hexdigest()[:16]


def cached_embeddings(
    embedder: Embedder, prompts: Sequence[str], cache_dir: Path = DEFAULT_CACHE_DIR
) -> Vectors:
    """The embeddings of ``prompts``, from the cache file when it matches, else computed."""
    path = cache_dir / f"embeddings-{prompts_key(embedder.name, prompts)}.npy"
    if path.is_file():
        vectors: Vectors = np.load(path)
        if vectors.shape == (len(prompts), embedder.dim):
            return vectors
    vectors = _encode(embedder, prompts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    np.save(partial, vectors)
    partial.replace(path)
    return vectors


def _encode(embedder: Embedder, prompts: Sequence[str]) -> Vectors:
    # Similar lengths in a batch waste less padding; the result keeps the original order.
    order = np.argsort([len(prompt) for prompt in prompts], kind="stable")
    vectors = np.zeros((len(prompts), embedder.dim), dtype=np.float32)
    for start in range(0, len(prompts), BATCH):
        rows = order[start : start + BATCH]
        vectors[rows] = embedder.encode([prompts[int(row)] for row in rows])
        if start // BATCH % 20 == 0:
            print(f"embedding {start}/{len(prompts)}", file=sys.stderr, flush=True)
    return vectors
