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

from nearline.worker.broker import Broker, Entry, EntryIds
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


_RAW_IDS = EntryIds(first_seq=900_000_000)


async def publish_undecodable(broker: Broker, stream: str, payload: bytes = b"not json {") -> str:
    """Append ``payload`` as an entry's data, bypassing JSON encoding (what a foreign producer
    might write); returns its id. For the in-process, Redis, RabbitMQ and Kafka brokers."""
    from nearline.worker.memory import MemoryBroker
    from nearline.worker.redis_streams import RedisStreamsBroker

    if isinstance(broker, RedisStreamsBroker):
        raw_id = await broker.client.xadd(stream, {b"d": payload})
        return raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
    if isinstance(broker, MemoryBroker):
        log = broker._stream(stream)  # no wire to write garbage on: into its log directly
        entry_id = log.new_ids.next()
        log.ids.append(entry_id)
        log.payloads.append(payload)
        log.notify()
        return entry_id
    publish_raw = getattr(broker, "publish_raw", None)  # KafkaBroker
    if publish_raw is not None:
        written: str = await publish_raw(stream, payload)
        return written
    import aio_pika

    from nearline.worker.rabbitmq import RabbitMQBroker

    if not isinstance(broker, RabbitMQBroker):
        raise TypeError(f"cannot write raw entries to a {type(broker).__name__}")
    exchange = await broker._exchange(stream)
    entry_id = _RAW_IDS.next()
    await exchange.publish(aio_pika.Message(payload, message_id=entry_id), routing_key="")
    return entry_id


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


def hang_on_marked(hang_s: float = 3600.0, delay_ms: float = 1.0) -> SyncHandler:
    """``echo`` that hangs ``hang_s`` (a stuck model, a call with no timeout) when the batch holds
    an entry marked ``{"hang": true}``."""

    def handle(batch: list[Entry]) -> list[Result]:
        time.sleep(hang_s if any(entry.data.get("hang") for entry in batch) else delay_ms / 1000)
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
