"""Micro-batching of embedding calls that arrive together.

Many requests embedding one query each would run the model once per request; a model call
costs much less per text for eight short texts than for one, so :class:`EmbeddingBatcher`
collects the texts that arrive together — in the same event-loop turn, while the previous
batch is still running, or within ``max_wait_s`` — encodes them in one call in a worker
thread and hands each caller its own row.

By default it waits for nobody (``max_wait_s=0``): a lone query is encoded at once, and
queries that arrive while the model is busy form the next batch. Waiting even 1 ms for
company cost a lone semantic-cache lookup ~2 ms at the median on a 2-core machine (the
timer's wake-up on top of the wait); a positive ``max_wait_s`` trades that for larger batches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nearline.core.threads import DedicatedThread
from nearline.embed.model import Embedder, Vectors

_Vector = np.ndarray[tuple[int], np.dtype[np.float32]]


@dataclass(slots=True)
class _Pending:
    text: str
    future: asyncio.Future[_Vector] = field(repr=False)


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What the batcher has done so far (for metrics and tests)."""

    model_calls: int
    texts: int
    largest_batch: int


class EmbeddingBatcher:
    """Embed texts concurrently submitted by many coroutines in few model calls.

    ``await embed(text)`` returns one unit vector. Calls that arrive while a batch is being
    collected or encoded join the next batch, up to ``max_batch`` texts. The model runs in a
    dedicated thread, so the event loop is never blocked by it.
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        self._embedder = embedder
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._thread = DedicatedThread("nearline-embed")
        self._closed = False
        self._model_calls = 0
        self._texts = 0
        self._largest_batch = 0

    @property
    def dim(self) -> int:
        return self._embedder.dim

    @property
    def stats(self) -> BatchStats:
        return BatchStats(self._model_calls, self._texts, self._largest_batch)

    async def embed(self, text: str) -> _Vector:
        """The unit embedding of ``text``, computed together with concurrent callers'."""
        if self._closed:
            raise RuntimeError("the embedding batcher is closed")
        queue = self._ensure_worker()
        future: asyncio.Future[_Vector] = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Pending(text, future))
        return await future

    async def embed_many(self, texts: Sequence[str]) -> Vectors:
        """Embed several texts (each joins the shared batches); rows follow ``texts``."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = await asyncio.gather(*(self.embed(text) for text in texts))
        return np.stack(rows)

    async def aclose(self) -> None:
        """Stop the worker; pending callers get ``RuntimeError``. Idempotent."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._queue is not None:
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("the embedding batcher closed"))
        await self._thread.aclose()

    def _ensure_worker(self) -> asyncio.Queue[_Pending]:
        if self._queue is None or self._worker is None or self._worker.done():
            # (Re)bind to the running loop: a batcher may outlive one event loop in tests.
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(
                self._run(self._queue), name="nearline-embedding-batcher"
            )
        return self._queue

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        while True:
            batch = await self._collect(queue)
            live = [pending for pending in batch if not pending.future.done()]
            if not live:
                continue
            unique_texts = list(dict.fromkeys(pending.text for pending in live))
            try:
                vectors = await self._thread.run(self._embedder.encode, unique_texts)
            except asyncio.CancelledError:
                for pending in live:
                    if not pending.future.done():
                        pending.future.set_exception(RuntimeError("the embedding batcher closed"))
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every caller of this batch
                for pending in live:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            self._model_calls += 1
            self._texts += len(unique_texts)
            self._largest_batch = max(self._largest_batch, len(unique_texts))
            row_of = {text: row for row, text in enumerate(unique_texts)}
            for pending in live:
                if not pending.future.done():
                    pending.future.set_result(vectors[row_of[pending.text]])

    async def _collect(self, queue: asyncio.Queue[_Pending]) -> list[_Pending]:
        batch = [await queue.get()]
        if self._max_wait_s == 0:
            while not queue.empty() and len(batch) < self._max_batch:
                batch.append(queue.get_nowait())
            return batch
        deadline = asyncio.get_running_loop().time() + self._max_wait_s
        while len(batch) < self._max_batch:
            while not queue.empty() and len(batch) < self._max_batch:
                batch.append(queue.get_nowait())
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or len(batch) >= self._max_batch:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return batch
