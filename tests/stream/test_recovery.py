"""Recovery (issue 14 point 5): a consumer group that vanished (Redis restarted without
persistence) is recreated with a warning; a producer publishing to a stream that no group
reads is told."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as redis

from nearline.testing.worker import RecordingHandler, running
from nearline.worker.broker import Broker, Message, NoReaders, publish_patiently
from nearline.worker.pipeline import Pipeline
from nearline.worker.worker import Worker, WorkerOptions

pytestmark = pytest.mark.timeout(60)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("broker_kind", ["redis"], indirect=True)
async def test_a_vanished_group_is_recreated_with_a_warning_and_processing_goes_on(
    broker: Broker, prefix: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    source, results = f"{prefix}-source", f"{prefix}-results"
    handler = RecordingHandler()
    pipeline = Pipeline("p", source, handler, results=results, max_batch=10, window_ms=0)
    worker = Worker(broker, [pipeline], WorkerOptions(consumer_name="w", reclaim_idle_ms=500))
    first = await broker.publish(source, [Message({"n": n}) for n in range(5)])

    async def handled(want: int) -> bool:
        return sum(len(batch) for batch in handler.batches) >= want

    async with running(worker):
        await eventually(lambda: handled(5))
        await redis_client.delete(source)  # what a Redis restart without persistence leaves
        caplog.set_level(logging.WARNING, logger="nearline.worker")
        again = await broker.publish(source, [Message({"n": n}) for n in range(5, 10)])
        await eventually(lambda: handled(10))

    seen = [entry.id for batch in handler.batches for entry in batch]
    assert seen == first + again
    assert any("recreated" in r.getMessage() and source in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("broker_kind", ["memory", "redis"], indirect=True)
async def test_a_producer_publishing_where_no_group_reads_is_warned(
    broker: Broker, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    stream = f"{prefix}-source"
    caplog.set_level(logging.WARNING, logger="nearline.worker")

    ids = await publish_patiently(broker, stream, [Message({"n": 1})])
    await publish_patiently(broker, stream, [Message({"n": 2})])  # told once, not every time

    assert len(ids) == 1
    told = [r for r in caplog.records if "no consumer group reads" in r.getMessage()]
    assert len(told) == 1 and stream in told[0].getMessage()
    await broker.create_group(stream, "g")
    caplog.clear()
    await publish_patiently(broker, stream, [Message({"n": 3})])
    assert not [r for r in caplog.records if "no consumer group reads" in r.getMessage()]


@pytest.mark.parametrize("broker_kind", ["memory", "redis"], indirect=True)
async def test_a_producer_may_ask_to_be_refused_where_no_group_reads(
    broker: Broker, prefix: str
) -> None:
    stream = f"{prefix}-source"

    with pytest.raises(NoReaders, match="no consumer group reads"):
        await publish_patiently(broker, stream, [Message({"n": 1})], on_unread="raise")

    assert await broker.length(stream) == 0  # nothing written
    await broker.create_group(stream, "g")
    assert len(await publish_patiently(broker, stream, [Message({})], on_unread="raise")) == 1
