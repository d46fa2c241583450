"""Fan-out, lag and backpressure: several groups at their own pace, producers told to wait."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from nearline.testing.worker import RecordingHandler, running, slow_echo
from nearline.worker.broker import Broker, Message, StreamBound, StreamFull, publish_patiently
from nearline.worker.metrics import WorkerMetrics
from nearline.worker.pipeline import Pipeline
from nearline.worker.worker import Worker, WorkerOptions

if TYPE_CHECKING:
    from tests.stream.conftest import MakeBroker

pytestmark = [pytest.mark.timeout(60)]


def lag_metric(metrics: WorkerMetrics, stream: str, group: str) -> float | None:
    return metrics.registry.get_sample_value(
        "nearline_stream_lag", {"stream": stream, "group": group}
    )


async def test_two_groups_on_one_stream_each_get_everything_at_their_own_pace(
    broker: Broker, prefix: str
) -> None:
    source = f"{prefix}-source"
    fast, slow = RecordingHandler(), RecordingHandler(delay_s=0.05)
    metrics = WorkerMetrics()
    pipelines = [
        Pipeline("fast", source, fast, max_batch=50, window_ms=10),
        Pipeline("slow", source, slow, max_batch=5, window_ms=10),
    ]
    worker = Worker(broker, pipelines, WorkerOptions(housekeeping_every_s=0.05), metrics)

    async with running(worker):
        await broker.publish(source, [Message({"n": n}) for n in range(60)])
        deadline = time.monotonic() + 20
        slow_lag_seen = 0.0
        while sum(len(b) for b in slow.batches) < 60 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if sum(len(b) for b in fast.batches) == 60:
                slow_lag_seen = max(slow_lag_seen, lag_metric(metrics, source, "slow") or 0.0)

    assert sorted(e.data["n"] for b in fast.batches for e in b) == list(range(60))
    assert sorted(e.data["n"] for b in slow.batches for e in b) == list(range(60))
    assert slow_lag_seen > 0  # the slow group was behind while the fast one was done
    assert lag_metric(metrics, source, "fast") == 0


async def test_a_producer_waits_while_the_stream_is_full_and_nothing_is_lost(
    make_broker: MakeBroker, prefix: str
) -> None:
    source, results = f"{prefix}-source", f"{prefix}-results"
    broker = await make_broker(StreamBound(per_stream={source: 20}))
    await broker.create_group(results, "check")
    pipeline = Pipeline(
        "p", source, slow_echo(delay_ms=30), results=results, max_batch=5, window_ms=5
    )
    refusals = 0
    longest = 0

    async with running(Worker(broker, [pipeline], WorkerOptions(housekeeping_every_s=0.05))):
        for start in range(0, 100, 10):
            batch = [Message({"n": n}) for n in range(start, start + 10)]
            while True:
                try:
                    await broker.publish(source, batch)
                    break
                except StreamFull:
                    refusals += 1
                    await asyncio.sleep(0.05)
            longest = max(longest, await broker.length(source))
        consumer = broker.consumer(results, "check", "checker")
        got: list[int] = []
        deadline = time.monotonic() + 20
        while len(got) < 100 and time.monotonic() < deadline:
            entries = await consumer.read(100, block_ms=200)
            await consumer.ack([e.id for e in entries])
            got += [int(e.data["n"]) for e in entries]

    assert refusals > 0, "the producer outran the worker, so it must have been told to wait"
    assert longest <= 20
    assert sorted(got) == list(range(100))


async def test_publish_patiently_gives_up_after_its_limit(
    make_broker: MakeBroker, prefix: str
) -> None:
    source = f"{prefix}-source"
    broker = await make_broker(StreamBound(per_stream={source: 3}))
    await broker.create_group(source, "nobody-reads")
    await broker.publish(source, [Message({"n": n}) for n in range(3)])

    started = time.monotonic()
    with pytest.raises(StreamFull):
        await publish_patiently(broker, source, [Message({"n": 3})], max_wait_s=0.5)

    assert 0.3 <= time.monotonic() - started < 20  # waited, then gave up (not forever)
    assert await broker.length(source) == 3
