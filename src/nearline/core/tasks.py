"""Background work with one owner: every task is kept, cancelled and awaited at shutdown.

A ``BackgroundTasks`` belongs to the component that starts the work (the pipeline, a cache, a
merge); its ``aclose()`` is part of that component's ``aclose()``. Nothing module-global.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Hashable
from typing import Any

log = logging.getLogger(__name__)


class BackgroundTasks:
    """A set of running tasks: started here, forgotten when done, cancelled on ``aclose``."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._keyed: dict[Hashable, asyncio.Task[Any]] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, work: Coroutine[Any, Any, Any], *, key: Hashable | None = None) -> bool:
        """Run ``work`` in the background. With ``key``, at most one task per key runs: a
        second start while the first is running is dropped (``False``)."""
        if self._closed:
            work.close()
            return False
        if key is not None and key in self._keyed:
            work.close()
            return False
        task = asyncio.get_running_loop().create_task(work, name=f"{self._name}")
        self._tasks.add(task)
        if key is not None:
            self._keyed[key] = task
        task.add_done_callback(lambda done: self._forget(done, key))
        return True

    def running(self, key: Hashable) -> bool:
        """A task started with ``key`` is running (and was not cancelled by key)."""
        return key in self._keyed

    def cancel(self, key: Hashable) -> bool:
        """Cancel the task started with ``key``; its key is free at once (a new task may start
        under it while the cancelled one winds down). ``False`` if none was running."""
        task = self._keyed.pop(key, None)
        if task is None:
            return False
        task.cancel()
        return True

    def _forget(self, task: asyncio.Task[Any], key: Hashable | None) -> None:
        self._tasks.discard(task)
        if key is not None and self._keyed.get(key) is task:
            del self._keyed[key]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("%s: background task failed: %r", self._name, error)

    async def aclose(self) -> None:
        """Cancel every running task and wait until each has finished."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
