"""A keyed-state handler for the ``kill -9`` checks: it counts each key's events in Redis.

``nearline.testing.keyed:keyed_count`` with options ``{redis_url, prefix, delay_ms}``: each
entry ``{"key": ..., "n": ...}`` adds one to its key's window (idempotent by entry id, so a
redelivered entry is counted once) and yields ``{"key", "n", "count", "deliveries", "pid"}``;
``delay_ms`` per batch keeps batches in flight when the worker is killed.
"""

from __future__ import annotations

import asyncio
import os

from nearline.worker.broker import Entry
from nearline.worker.pipeline import Result
from nearline.worker.state import RedisWindowState, WindowUpdate

WINDOW_MS = 3_600_000


class KeyedCount:
    def __init__(self, redis_url: str, prefix: str, delay_ms: float = 50.0) -> None:
        self.state = RedisWindowState.from_url(redis_url, prefix, WINDOW_MS)
        self.delay_s = delay_ms / 1000

    async def __call__(self, batch: list[Entry]) -> list[Result]:
        await asyncio.sleep(self.delay_s)
        updates = [WindowUpdate(str(e.data["key"]), e.id, e.published_ms, 1.0) for e in batch]
        stats = await self.state.add(updates)
        pid = os.getpid()
        return [
            {
                "key": e.data["key"],
                "n": e.data["n"],
                "count": s.count,
                "deliveries": e.deliveries,
                "pid": pid,
            }
            for e, s in zip(batch, stats, strict=True)
        ]

    async def aclose(self) -> None:
        await self.state.aclose()


def keyed_count(redis_url: str, prefix: str, delay_ms: float = 50.0) -> KeyedCount:
    return KeyedCount(redis_url, prefix, delay_ms)
