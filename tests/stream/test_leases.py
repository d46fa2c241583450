"""Leases: a batch slower than ``reclaim_idle_ms`` keeps its entries; only dead consumers lose
theirs, and dead consumers are removed from the group after a retention (issue 14 point 3)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as redis

from nearline.testing.worker import RecordingHandler, running
from nearline.worker.broker import Broker, Entry, Message
from nearline.worker.pipeline import Pipeline
from nearline.worker.worker import Worker, WorkerOptions

pytestmark = pytest.mark.timeout(60)
both = pytest.mark.parametrize("broker_kind", ["memory", "redis"], indirect=True)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def everything(broker: Broker, stream: str, want: int) -> list[Entry]:
    got: list[Entry] = []
    async with asyncio.timeout(10):
        async for entry in broker.tail(stream, "0"):
            got.append(entry)
            if len(got) == want:
                break
    return got


@both
async def test_a_batch_slower_than_reclaim_idle_keeps_its_entries(
    broker: Broker, prefix: str
) -> None:
    source, results, dead = f"{prefix}-source", f"{prefix}-results", f"{prefix}-dead"
    handler = RecordingHandler(delay_s=1.2)  # four times reclaim_idle_ms
    pipeline = Pipeline(
        "slow",
        source,
        handler,
        results=results,
        dead_letter=dead,
        max_batch=10,
        window_ms=0,
        max_deliveries=1,  # a second delivery of a live batch would dead-letter it
        concurrency=2,
    )
    worker = Worker(broker, [pipeline], WorkerOptions(consumer_name="w1", reclaim_idle_ms=300))
    other = Worker(broker, [pipeline], WorkerOptions(consumer_name="w2", reclaim_idle_ms=300))
    await broker.create_group(source, pipeline.group_name)
    ids = await broker.publish(source, [Message({"n": n}) for n in range(40)])

    async with running(worker), running(other):

        async def settled() -> bool:
            info = await broker.group_info(source, pipeline.group_name)
            return info.lag == 0 and info.pending == 0

        await eventually(settled, 30)

    handled = [entry.id for batch in handler.batches for entry in batch]
    assert sorted(handled) == sorted(ids), f"{len(handled)} handler runs for {len(ids)} entries"
    assert await broker.length(dead) == 0
    written = await everything(broker, results, 40)
    assert sorted(str(e.data["source_id"]) for e in written) == sorted(ids)
    assert all(e.data["deliveries"] == 1 for e in written)


@both
async def test_a_dead_consumers_entries_are_still_taken_over(broker: Broker, prefix: str) -> None:
    source, results = f"{prefix}-source", f"{prefix}-results"
    handler = RecordingHandler()
    pipeline = Pipeline("p", source, handler, results=results, max_batch=10, window_ms=0)
    await broker.create_group(source, pipeline.group_name)
    ids = await broker.publish(source, [Message({"n": n}) for n in range(5)])
    dead_one = broker.consumer(source, pipeline.group_name, "dead-one", reclaim_idle_ms=300)
    taken = await dead_one.read(5, block_ms=100)  # ...and never acknowledges: it died
    assert [e.id for e in taken] == ids
    worker = Worker(broker, [pipeline], WorkerOptions(consumer_name="alive", reclaim_idle_ms=300))

    async with running(worker):

        async def settled() -> bool:
            return (await broker.group_info(source, pipeline.group_name)).pending == 0

        await eventually(settled)

    assert [e.id for batch in handler.batches for e in batch] == ids
    assert all(e.deliveries == 2 for batch in handler.batches for e in batch)


@pytest.mark.parametrize("broker_kind", ["redis"], indirect=True)
async def test_dead_consumers_are_removed_from_the_group_after_the_retention(
    broker: Broker, prefix: str, redis_client: redis.Redis
) -> None:
    source = f"{prefix}-source"
    handler = RecordingHandler()
    pipeline = Pipeline("p", source, handler, max_batch=10, window_ms=0)
    await broker.create_group(source, pipeline.group_name)
    ids = await broker.publish(source, [Message({"n": n}) for n in range(3)])
    ghost = broker.consumer(source, pipeline.group_name, "ghost", reclaim_idle_ms=200)
    assert len(await ghost.read(3, block_ms=100)) == 3  # it dies holding three entries
    options = WorkerOptions(
        consumer_name="alive",
        reclaim_idle_ms=200,
        housekeeping_every_s=0.05,
        dead_consumer_retention_s=0.5,
    )
    worker = Worker(broker, [pipeline], options)

    async def names() -> set[str]:
        consumers = await redis_client.xinfo_consumers(source, pipeline.group_name)
        return {c["name"].decode() for c in consumers}

    async with running(worker):

        async def ghost_gone() -> bool:
            return "ghost" not in await names()

        await eventually(ghost_gone)
        assert (await broker.group_info(source, pipeline.group_name)).pending == 0
        assert "alive-p-0" in await names()  # a live consumer is never removed
    # removed only once its entries were taken over (deleting it first would drop them)
    assert [e.id for batch in handler.batches for e in batch] == ids
