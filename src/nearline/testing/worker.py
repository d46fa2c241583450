"""Test doubles shipped with nearline: handlers for tests, demos and the ``kill -9`` check.

Reference them from a worker config as ``nearline.testing.worker:<name>``; the factories take
the pipeline's ``options``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from nearline.worker.broker import Entry
from nearline.worker.pipeline import Result, SyncHandler
from nearline.worker.worker import Worker


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Run ``worker`` in a task for the ``async with`` block; stop it and wait for it after."""
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.started.wait(), 5)
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)


class PoisonError(ValueError):
    """Raised by ``poison_aware`` handlers for entries marked ``{"poison": true}``."""


def echo(batch: list[Entry]) -> list[Result]:
    """One result per entry: its data, the batch size, its delivery count and who handled it."""
    pid = os.getpid()
    return [
        {**entry.data, "batch_size": len(batch), "deliveries": entry.deliveries, "pid": pid}
        for entry in batch
    ]


async def async_echo(batch: list[Entry]) -> list[Result]:
    await asyncio.sleep(0)
    return echo(batch)


def slow_echo(delay_ms: float = 100.0, fail_marked: bool = True) -> SyncHandler:
    """``echo`` that takes ``delay_ms`` per batch (a model's work), raising on poison entries."""

    def handle(batch: list[Entry]) -> list[Result]:
        if fail_marked:
            raise_on_poison(batch)
        time.sleep(delay_ms / 1000)
        return echo(batch)

    return handle


def raise_on_poison(batch: Sequence[Entry]) -> None:
    for entry in batch:
        if entry.data.get("poison"):
            raise PoisonError(f"cannot handle entry {entry.id}: it is poison")


@dataclass
class RecordingHandler:
    """Remembers every batch it was called with; fails on entries marked poison."""

    batches: list[list[Entry]] = field(default_factory=list)
    results: bool = True
    delay_s: float = 0.0  # time the work takes, per batch

    def __call__(self, batch: list[Entry]) -> list[Result]:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.batches.append(list(batch))
        raise_on_poison(batch)
        return echo(batch) if self.results else [None] * len(batch)

    @property
    def calls(self) -> int:
        return len(self.batches)
