"""Blocking work on a dedicated thread, off the event loop, with one way to shut it down.

A library that is not thread-safe (llama.cpp, an ANN index, an ONNX session used by one
caller at a time) gets a ``DedicatedThread``: every call runs on that one thread, in order,
and ``aclose()`` waits for the running call off the loop, so the loop never blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class DedicatedThread:
    """One worker thread; ``run`` awaits a blocking call on it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._closed = False

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise RuntimeError(f"{self.name}: the thread is shut down")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))

    def submit(self, function: Callable[[], T]) -> asyncio.Future[T]:
        """Start ``function`` now; the future completes on the loop (for callers that keep
        the future, e.g. to wait for it after a cancellation)."""
        if self._closed:
            raise RuntimeError(f"{self.name}: the thread is shut down")
        return asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def aclose(self) -> None:
        """Refuse new calls; wait for the running one on another thread (never the loop)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
