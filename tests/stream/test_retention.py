"""Bounds without stalls: results streams have their own retention, dedupe keys expire with it,
and a full output stream never makes the worker wait forever."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pytest

from nearline.config import load_settings
from nearline.testing.worker import echo, running
from nearline.worker.broker import Message, StreamBound, publish_patiently
from nearline.worker.pipeline import Pipeline
from nearline.worker.worker import Worker, WorkerOptions

if TYPE_CHECKING:
    from tests.stream.conftest import MakeBroker

pytestmark = pytest.mark.timeout(60)

# Redis trims approximately (whole nodes of up to 100 entries), the others exactly
_SLACK = {"memory": 0, "redis": 100, "rabbitmq": 0}
# Kafka keeps a topic's records until its retention.ms, on its own schedule, and trims by age
# or bytes, never to a count; tansu implements no DeleteRecords either (nothing can trim sooner)
_KAFKA_KEEPS = "Kafka trims by retention.ms/retention.bytes, never to a number of entries"


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def processed(worker: Worker, outcome: str = "processed") -> float:
    value = worker.metrics.registry.get_sample_value(
        "nearline_worker_events_total", {"pipeline": "p", "outcome": outcome}
    )
    return value or 0.0


async def test_a_pipeline_writes_more_results_than_stream_max_len_without_stalling(
    make_broker: MakeBroker, prefix: str, broker_kind: str
) -> None:
    """F4: ``stream_max_len`` bounded results streams too, which nothing trims: the pipeline
    wrote exactly that many results and waited forever."""
    if broker_kind == "kafka":
        pytest.skip(_KAFKA_KEEPS)
    from nearline.worker.build import build_pipelines, stream_bound

    source, results = f"{prefix}-source", f"{prefix}-results"
    settings = load_settings(
        worker={
            "stream_max_len": 20,
            "results_max_len": 30,
            "pipelines": [
                {
                    "name": "p",
                    "source": source,
                    "handler": "nearline.testing.worker:echo",
                    "results": results,
                    "max_batch": 10,
                    "window_ms": 5,
                }
            ],
        }
    )
    broker = await make_broker(stream_bound(settings.worker))
    await broker.create_group(results, "unread")  # a group that never reads its results
    (pipeline,) = build_pipelines(settings.worker)
    # acknowledged source entries are trimmed every 0.1 s (not 1 s): the producer waits on
    # that trimming, 20 entries at a time, and this test is about the results stream
    worker = Worker(broker, [pipeline], WorkerOptions(housekeeping_every_s=0.1))

    async with running(worker):
        for start in range(0, 200, 10):
            batch = [Message({"n": n}) for n in range(start, start + 10)]
            await publish_patiently(broker, source, batch, max_wait_s=20)

        async def all_processed() -> bool:
            return processed(worker) == 200

        await eventually(all_processed, 30, "200 events processed")

    assert await broker.length(results) <= 30 + _SLACK[broker_kind]


async def test_a_results_stream_that_stays_full_gives_the_batch_back_then_dead_letters(
    make_broker: MakeBroker, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    source, results, dead = f"{prefix}-source", f"{prefix}-results", f"{prefix}-dead"
    broker = await make_broker(StreamBound(per_stream={results: 3}))  # refuses, never trims
    await broker.create_group(results, "unread")
    await broker.create_group(dead, "check")
    pipeline = Pipeline(
        "p", source, echo, results=results, dead_letter=dead, window_ms=50, max_deliveries=2
    )
    worker = Worker(broker, [pipeline], WorkerOptions(output_full_wait_s=0.3))

    with caplog.at_level(logging.WARNING, logger="nearline.worker"):
        async with running(worker):
            await broker.publish(source, [Message({"n": n}) for n in range(5)])

            async def settled() -> bool:
                info = await broker.group_info(source, "p")
                return processed(worker, "dead_lettered") >= 1 and info.pending == 0

            await eventually(settled, 30, "the refused entries to be dead-lettered")

    refused = worker.metrics.registry.get_sample_value(
        "nearline_worker_dead_letters_total", {"pipeline": "p", "reason": "output_refused"}
    )
    assert refused is not None and refused >= 1
    assert processed(worker) + processed(worker, "dead_lettered") == 5
    assert any("full" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_a_retained_stream_keeps_its_newest_entries_and_never_refuses(
    make_broker: MakeBroker, prefix: str, broker_kind: str
) -> None:
    from nearline.worker.broker import Retention

    if broker_kind == "kafka":
        pytest.skip(_KAFKA_KEEPS)
    stream = f"{prefix}-results"
    broker = await make_broker(StreamBound(default=5, retained={stream: Retention(max_len=10)}))
    await broker.create_group(stream, "unread")

    for start in range(0, 300, 30):
        await broker.publish(stream, [Message({"n": n}) for n in range(start, start + 30)])

    assert await broker.length(stream) <= 10 + _SLACK[broker_kind]
    newest: list[int] = []
    async with asyncio.timeout(5):
        async for entry in broker.tail(stream, "0"):
            newest.append(int(entry.data["n"]))
            if newest[-1] == 299:
                break
    assert newest[-10:] == list(range(290, 300))


async def test_dedupe_keys_and_entries_of_a_retained_stream_expire_with_its_age(
    make_broker: MakeBroker, prefix: str, broker_kind: str
) -> None:
    from nearline.worker.broker import Retention

    stream = f"{prefix}-results"
    retained = await make_broker(StreamBound(retained={stream: Retention(max_age_s=1)}))
    await retained.create_group(stream, "g")
    (first,) = await retained.publish(stream, [Message({"v": 1}, dedupe_key="k")])
    (again,) = await retained.publish(stream, [Message({"v": 1}, dedupe_key="k")])
    assert again == first  # deduplicated while the key lives

    async def key_expired() -> bool:
        (later,) = await retained.publish(stream, [Message({"v": 1}, dedupe_key="k")])
        return later != first

    await eventually(key_expired, 10, "the dedupe key to expire after max_age_s")
    # a RabbitMQ stream queue drops whole segments, later; Kafka at its retention.ms, later
    if broker_kind not in ("rabbitmq", "kafka"):
        assert await retained.length(stream) == 1  # the first entry was older than max_age_s
