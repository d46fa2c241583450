from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from nearline.embed import Embedder, EmbeddingBatcher, Vectors
from nearline.testing import eventually_async


class RecordingEmbedder:
    """Encodes each text as a one-hot-ish vector and records every model call."""

    def __init__(self, dim: int = 8, delay_s: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.threads: list[str] = []
        self._dim = dim
        self._delay_s = delay_s

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return "recording"

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        self.threads.append(threading.current_thread().name)
        if self._delay_s:
            threading.Event().wait(self._delay_s)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row, len(text) % self._dim] = 1.0
        return out


class FailingEmbedder(RecordingEmbedder):
    def encode(self, texts: Sequence[str]) -> Vectors:
        raise ValueError("model exploded")


async def test_concurrent_calls_share_one_model_call() -> None:
    model = RecordingEmbedder()
    batcher = EmbeddingBatcher(model, max_wait_s=0.01)
    texts = [f"question {'x' * i}" for i in range(6)]

    vectors = await asyncio.gather(*(batcher.embed(text) for text in texts))

    assert len(model.calls) == 1
    assert sorted(model.calls[0]) == sorted(texts)
    for text, vector in zip(texts, vectors, strict=True):
        np.testing.assert_array_equal(vector, model.encode([text])[0])
    await batcher.aclose()


async def test_by_default_texts_arriving_together_share_one_call() -> None:
    model = RecordingEmbedder()
    batcher = EmbeddingBatcher(model)  # default: no waiting for company

    await asyncio.gather(*(batcher.embed(f"together {i}") for i in range(5)))
    await batcher.embed("alone")

    assert [len(call) for call in model.calls] == [5, 1]
    await batcher.aclose()


async def test_model_runs_off_the_event_loop_thread() -> None:
    model = RecordingEmbedder()
    batcher = EmbeddingBatcher(model)

    await batcher.embed("hello")

    assert model.threads[0] != threading.current_thread().name
    assert model.threads[0].startswith("nearline-embed")
    await batcher.aclose()


async def test_event_loop_keeps_running_while_the_model_works() -> None:
    batcher = EmbeddingBatcher(RecordingEmbedder(delay_s=0.2))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    await batcher.embed("slow")
    ticking.cancel()

    assert ticks >= 5
    await batcher.aclose()


async def test_batches_are_capped_at_max_batch() -> None:
    model = RecordingEmbedder()
    batcher = EmbeddingBatcher(model, max_batch=4, max_wait_s=0.01)

    await batcher.embed_many([f"t{i}" for i in range(10)])

    assert [len(call) for call in model.calls] == [4, 4, 2]
    assert batcher.stats.largest_batch == 4
    await batcher.aclose()


async def test_calls_arriving_while_a_batch_runs_join_the_next_one() -> None:
    model = RecordingEmbedder(delay_s=0.1)
    batcher = EmbeddingBatcher(model, max_wait_s=0.0)

    first = asyncio.create_task(batcher.embed("first"))
    await eventually_async(lambda: model.calls == [["first"]], 5)  # inside the model now
    later = await asyncio.gather(*(batcher.embed(f"later {i}") for i in range(5)))
    await first

    assert len(later) == 5
    assert model.calls == [["first"], [f"later {i}" for i in range(5)]]
    await batcher.aclose()


async def test_duplicate_texts_are_encoded_once() -> None:
    model = RecordingEmbedder()
    batcher = EmbeddingBatcher(model, max_wait_s=0.01)

    a, b = await asyncio.gather(batcher.embed("same"), batcher.embed("same"))

    assert model.calls == [["same"]]
    np.testing.assert_array_equal(a, b)
    await batcher.aclose()


async def test_a_model_error_reaches_every_caller_of_the_batch_and_the_batcher_recovers() -> None:
    batcher = EmbeddingBatcher(FailingEmbedder(), max_wait_s=0.01)

    results = await asyncio.gather(batcher.embed("a"), batcher.embed("b"), return_exceptions=True)

    assert all(isinstance(r, ValueError) for r in results)
    with pytest.raises(ValueError, match="model exploded"):
        await batcher.embed("c")
    await batcher.aclose()


async def test_a_cancelled_caller_does_not_break_the_others() -> None:
    model = RecordingEmbedder(delay_s=0.05)
    batcher = EmbeddingBatcher(model, max_wait_s=0.01)

    doomed = asyncio.create_task(batcher.embed("doomed"))
    survivor = asyncio.create_task(batcher.embed("survivor"))
    await asyncio.sleep(0)
    doomed.cancel()

    vector = await survivor
    assert vector.shape == (8,)
    assert doomed.cancelled()
    await batcher.aclose()


async def test_closed_batcher_refuses_work() -> None:
    batcher = EmbeddingBatcher(RecordingEmbedder())
    await batcher.aclose()

    with pytest.raises(RuntimeError, match="closed"):
        await batcher.embed("late")


async def test_real_model_through_the_batcher_matches_direct_encoding(embedder: Embedder) -> None:
    batcher = EmbeddingBatcher(embedder, max_wait_s=0.01)
    texts = ["What is the capital of France?", "Which city is France's capital?", "hi"]

    batched = await batcher.embed_many(texts)

    np.testing.assert_allclose(batched, embedder.encode(texts), atol=1e-5)
    assert batcher.stats.model_calls == 1
    await batcher.aclose()
