"""The worker loop on real brokers, with one and with several consumers per pipeline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import pytest

from nearline.testing.worker import (
    RecordingHandler,
    async_echo,
    echo,
    publish_undecodable,
    running,
)
from nearline.worker.broker import Broker, BrokerError, Consumer, Entry, Message
from nearline.worker.pipeline import Pipeline, Result
from nearline.worker.worker import Worker, WorkerOptions

if TYPE_CHECKING:
    from tests.stream.conftest import MakeBroker

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.parametrize("broker_kind", ["memory", "redis", "rabbitmq", "kafka"], indirect=True),
]


@pytest.fixture(params=[1, 3], ids=["one-consumer", "many-consumers"])
def concurrency(request: pytest.FixtureRequest) -> int:
    value: int = request.param
    return value


async def all_entries(broker: Broker, stream: str) -> list[Entry]:
    """Everything ``stream`` holds, read for 0.3 s: a window for a duplicate to show in (an
    absence has no event to wait on)."""
    got: list[Entry] = []

    async def collect() -> None:
        async for entry in broker.tail(stream, "0"):
            got.append(entry)

    with_timeout = asyncio.create_task(collect())
    await asyncio.sleep(0.3)
    with_timeout.cancel()
    await asyncio.gather(with_timeout, return_exceptions=True)
    return got


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def publish_numbers(broker: Broker, stream: str, numbers: Sequence[int]) -> list[str]:
    return await broker.publish(stream, [Message({"n": n}) for n in numbers])


async def count_results(broker: Broker, stream: str, group: str, want: int) -> list[Entry]:
    consumer = broker.consumer(stream, group, "checker")
    got: list[Entry] = []
    deadline = time.monotonic() + 10
    while len(got) < want and time.monotonic() < deadline:
        batch = await consumer.read(want, block_ms=100)
        await consumer.ack([e.id for e in batch])
        got += batch
    got += await consumer.read(want, block_ms=300)  # anything more would be a duplicate
    return got


async def test_every_entry_gets_exactly_one_result(
    broker: Broker, prefix: str, concurrency: int
) -> None:
    source, results = f"{prefix}-source", f"{prefix}-results"
    await broker.create_group(results, "check")
    handler = RecordingHandler()
    pipeline = Pipeline(
        "p", source, handler, results=results, max_batch=10, window_ms=20, concurrency=concurrency
    )
    worker = Worker(broker, [pipeline])

    async with running(worker):
        ids = await publish_numbers(broker, source, range(50))
        got = await count_results(broker, results, "check", 50)

    assert sorted(e.data["source_id"] for e in got) == sorted(ids)
    assert sorted(e.data["n"] for e in got) == list(range(50))
    info = await broker.group_info(source, "p")
    assert (info.lag, info.pending) == (0, 0)
    assert all(len(batch) <= 10 for batch in handler.batches)


async def test_a_batch_is_handled_when_its_window_ends_without_filling_up(
    broker: Broker, prefix: str
) -> None:
    source = f"{prefix}-source"
    handler = RecordingHandler()
    pipeline = Pipeline("p", source, handler, max_batch=1000, window_ms=300)
    worker = Worker(broker, [pipeline])

    async with running(worker):
        for n in range(3):
            await publish_numbers(broker, source, [n])
            await asyncio.sleep(0.02)

        async def handled() -> bool:
            return sum(len(b) for b in handler.batches) == 3

        await eventually(handled, timeout_s=5)

    assert [[e.data["n"] for e in batch] for batch in handler.batches] == [[0, 1, 2]]


async def test_the_filter_skips_entries_and_they_are_still_acknowledged(
    broker: Broker, prefix: str
) -> None:
    source, results = f"{prefix}-source", f"{prefix}-results"
    await broker.create_group(results, "check")
    handler = RecordingHandler()
    pipeline = Pipeline(
        "p",
        source,
        handler,
        results=results,
        window_ms=10,
        filter=lambda entry: entry.data["n"] % 2 == 0,
    )
    worker = Worker(broker, [pipeline])

    async with running(worker):
        await publish_numbers(broker, source, range(10))
        got = await count_results(broker, results, "check", 5)

        async def settled() -> bool:
            info = await broker.group_info(source, "p")
            return info.lag == 0 and info.pending == 0

        await eventually(settled)

    assert sorted(e.data["n"] for e in got) == [0, 2, 4, 6, 8]
    assert all(e.data["n"] % 2 == 0 for batch in handler.batches for e in batch)


async def test_a_poison_entry_goes_to_the_dead_letter_stream_and_the_rest_succeed(
    broker: Broker, prefix: str, concurrency: int
) -> None:
    source, results, dead = f"{prefix}-source", f"{prefix}-results", f"{prefix}-dead"
    await broker.create_group(results, "check")
    await broker.create_group(dead, "check")
    pipeline = Pipeline(
        "p",
        source,
        RecordingHandler(),
        results=results,
        dead_letter=dead,
        max_batch=20,
        window_ms=50,
        max_deliveries=3,
        concurrency=concurrency,
    )
    worker = Worker(broker, [pipeline], WorkerOptions(reclaim_idle_ms=200))

    async with running(worker):
        ids = await broker.publish(source, [Message({"n": n, "poison": n == 4}) for n in range(10)])
        got, dead_letters = await asyncio.gather(  # both streams watched for duplicates at once
            count_results(broker, results, "check", 9), count_results(broker, dead, "check", 1)
        )

    assert sorted(e.data["n"] for e in got) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert len(dead_letters) == 1
    letter = dead_letters[0].data
    assert letter["source_id"] == ids[4]
    assert letter["data"] == {"n": 4, "poison": True}
    assert letter["deliveries"] == 3
    assert "PoisonError" in letter["error"] and "poison" in letter["error"]

    async def settled() -> bool:
        info = await broker.group_info(source, "p")
        return info.lag == 0 and info.pending == 0

    await eventually(settled)


async def test_a_result_written_before_a_crash_is_not_written_again(
    make_broker: MakeBroker, prefix: str
) -> None:
    """The worker dies after publishing results but before acknowledging: no duplicates."""
    broker = await make_broker()
    source, results = f"{prefix}-source", f"{prefix}-results"
    await broker.create_group(results, "check")
    pipeline = Pipeline("p", source, RecordingHandler(), results=results, max_batch=5, window_ms=10)
    forgetful = Worker(_NeverAcks(broker), [pipeline], WorkerOptions(reclaim_idle_ms=60_000))
    async with running(forgetful):
        # 8: fewer than RabbitMQ lets one consumer hold unacknowledged (twice the batch)
        ids = await publish_numbers(broker, source, range(8))
        first = await count_results(broker, results, "check", 8)
        assert (await broker.group_info(source, "p")).pending == 8
    assert len(first) == 8

    handler = RecordingHandler()
    again = Pipeline("p", source, handler, results=results, max_batch=5, window_ms=10)
    async with running(Worker(broker, [again], WorkerOptions(reclaim_idle_ms=200))):

        async def redone() -> bool:  # RabbitMQ requeues a closed channel's entries later
            return sum(len(b) for b in handler.batches) >= 8

        async def settled() -> bool:
            info = await broker.group_info(source, "p")
            return info.lag == 0 and info.pending == 0

        await eventually(redone)
        await eventually(settled)

    assert sum(len(b) for b in handler.batches) == 8  # it really did all of them again
    assert all(e.deliveries == 2 for batch in handler.batches for e in batch)
    checker = broker.consumer(results, "check", "checker")
    new, entries = await asyncio.gather(  # both look for a duplicate over the same time
        checker.read(10, block_ms=500), all_entries(broker, results)
    )
    assert new == []  # and wrote nothing new
    everything = [e.data["source_id"] for e in entries]
    assert sorted(everything) == sorted(ids)


async def test_async_handlers_run_on_the_loop(broker: Broker, prefix: str) -> None:
    source, results = f"{prefix}-source", f"{prefix}-results"
    await broker.create_group(results, "check")
    pipeline = Pipeline("p", source, async_echo, results=results, window_ms=10)

    async with running(Worker(broker, [pipeline])):
        await publish_numbers(broker, source, range(5))
        got = await count_results(broker, results, "check", 5)

    assert sorted(e.data["n"] for e in got) == list(range(5))


async def test_a_handler_breaking_the_contract_dead_letters_instead_of_hanging(
    broker: Broker, prefix: str
) -> None:
    source, dead = f"{prefix}-source", f"{prefix}-dead"
    await broker.create_group(dead, "check")

    def wrong(batch: list[Entry]) -> list[dict[str, int]]:
        return []

    pipeline = Pipeline("p", source, wrong, dead_letter=dead, window_ms=10, max_deliveries=1)
    async with running(Worker(broker, [pipeline])):
        await publish_numbers(broker, source, [1])
        letters = await count_results(broker, dead, "check", 1)

    assert len(letters) == 1
    assert "one result per entry" in letters[0].data["error"]


class _NeverAcks:
    """A broker whose consumers forget to acknowledge: a worker that crashes before ``ack``."""

    def __init__(self, inner: Broker) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def consumer(
        self, stream: str, group: str, name: str, *, reclaim_idle_ms: int = 30_000
    ) -> Consumer:
        inner = self._inner.consumer(stream, group, name, reclaim_idle_ms=reclaim_idle_ms)

        class Forgetful:
            read = inner.read
            retry = inner.retry
            aclose = inner.aclose

            async def ack(self, ids: Sequence[str]) -> None:
                return None

        return Forgetful()


class _FlakyReads:
    """A broker whose consumers fail their first two reads, as during a Redis restart."""

    def __init__(self, inner: Broker) -> None:
        self._inner = inner
        self.failures = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def consumer(
        self, stream: str, group: str, name: str, *, reclaim_idle_ms: int = 30_000
    ) -> Consumer:
        inner = self._inner.consumer(stream, group, name, reclaim_idle_ms=reclaim_idle_ms)
        outer = self

        class Flaky:
            ack = inner.ack
            retry = inner.retry
            aclose = inner.aclose

            async def read(self, count: int, block_ms: int) -> list[Entry]:
                if outer.failures < 2:
                    outer.failures += 1
                    raise BrokerError("connection reset (simulated)")
                return await inner.read(count, block_ms)

        return Flaky()


async def test_the_worker_rides_out_broker_errors(broker: Broker, prefix: str) -> None:
    source, results = f"{prefix}-source", f"{prefix}-results"
    await broker.create_group(results, "check")
    flaky = _FlakyReads(broker)
    pipeline = Pipeline("p", source, RecordingHandler(), results=results, window_ms=10)

    async with running(Worker(flaky, [pipeline])):  # type: ignore[arg-type]
        await publish_numbers(broker, source, range(5))
        got = await count_results(broker, results, "check", 5)

    assert flaky.failures == 2
    assert sorted(e.data["n"] for e in got) == list(range(5))


def dead_letter_count(worker: Worker, reason: str) -> float:
    value = worker.metrics.registry.get_sample_value(
        "nearline_worker_dead_letters_total", {"pipeline": "p", "reason": reason}
    )
    return value or 0.0


async def test_an_undecodable_entry_is_dead_lettered_and_the_rest_go_on(
    broker: Broker, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    source, results, dead = f"{prefix}-source", f"{prefix}-results", f"{prefix}-dead"
    for stream, group in ((source, "p"), (results, "check"), (dead, "check")):
        await broker.create_group(stream, group)
    pipeline = Pipeline(
        "p", source, RecordingHandler(), results=results, dead_letter=dead, window_ms=20
    )
    worker = Worker(broker, [pipeline])
    await publish_numbers(broker, source, range(3))
    bad_id = await publish_undecodable(broker, source, b"not json {")
    await publish_numbers(broker, source, range(3, 6))

    with caplog.at_level(logging.WARNING, logger="nearline.worker"):
        async with running(worker):
            got, letters = await asyncio.gather(
                count_results(broker, results, "check", 6), count_results(broker, dead, "check", 1)
            )

            async def settled() -> bool:
                info = await broker.group_info(source, "p")
                return info.lag == 0 and info.pending == 0

            await eventually(settled)

    assert sorted(e.data["n"] for e in got) == list(range(6))
    assert len(letters) == 1
    letter = letters[0].data
    assert letter["source_id"] == bad_id
    assert letter["data"] == {"raw": "not json {"}
    assert "JSON" in letter["error"]
    assert dead_letter_count(worker, "undecodable") == 1
    assert any(bad_id in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_a_result_that_is_not_a_json_mapping_is_dead_lettered_and_the_rest_go_on(
    broker: Broker, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    source, results, dead = f"{prefix}-source", f"{prefix}-results", f"{prefix}-dead"
    for stream, group in ((results, "check"), (dead, "check")):
        await broker.create_group(stream, group)

    def sloppy(batch: list[Entry]) -> list[object]:
        made: list[object] = []
        for entry, result in zip(batch, echo(batch), strict=True):
            n = entry.data["n"]
            made.append(
                ["not", "a", "mapping"] if n == 3 else {"tags": {1, 2}} if n == 5 else result
            )
        return made

    pipeline = Pipeline("p", source, sloppy, results=results, dead_letter=dead, window_ms=20)
    worker = Worker(broker, [pipeline])

    with caplog.at_level(logging.WARNING, logger="nearline.worker"):
        async with running(worker):
            ids = await publish_numbers(broker, source, range(10))
            got, letters = await asyncio.gather(
                count_results(broker, results, "check", 8), count_results(broker, dead, "check", 2)
            )

    assert sorted(e.data["n"] for e in got) == [0, 1, 2, 4, 6, 7, 8, 9]
    by_source = {letter.data["source_id"]: letter.data for letter in letters}
    assert set(by_source) == {ids[3], ids[5]}
    assert "mapping" in by_source[ids[3]]["error"]
    assert "JSON" in by_source[ids[5]]["error"]
    assert by_source[ids[5]]["data"] == {"n": 5}
    assert dead_letter_count(worker, "invalid_result") == 2
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert ids[3] in warned and ids[5] in warned


class _BrokenReads:
    """A broker whose consumers fail with an unexpected error: a bug in a worker task."""

    def __init__(self, inner: Broker) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def consumer(
        self, stream: str, group: str, name: str, *, reclaim_idle_ms: int = 30_000
    ) -> Consumer:
        inner = self._inner.consumer(stream, group, name, reclaim_idle_ms=reclaim_idle_ms)

        class Broken:
            ack = inner.ack
            retry = inner.retry
            aclose = inner.aclose

            async def read(self, count: int, block_ms: int) -> list[Entry]:
                raise RuntimeError("a bug in a worker task (simulated)")

        return Broken()


async def test_a_worker_task_that_dies_takes_the_worker_down_loudly(
    broker: Broker, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    from nearline.worker.worker import WorkerCrashed

    pipeline = Pipeline("p", f"{prefix}-source", RecordingHandler(), window_ms=10)
    worker = Worker(_BrokenReads(broker), [pipeline])  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR, logger="nearline.worker"), pytest.raises(WorkerCrashed):
        await asyncio.wait_for(worker.run(), 5)

    assert worker.stopping.is_set()
    assert any("a bug in a worker task" in r.getMessage() or r.exc_info for r in caplog.records)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_batch_past_its_deadline_is_split_and_only_the_culprit_is_dead_lettered(
    broker: Broker, prefix: str, kind: str
) -> None:
    import threading

    source, results, dead = f"{prefix}-source", f"{prefix}-results", f"{prefix}-dead"
    for stream in (results, dead):
        await broker.create_group(stream, "check")
    release = threading.Event()  # the hung call ends with the test, not before

    def hanging(batch: list[Entry]) -> list[Result]:
        if any(entry.data["n"] == 3 for entry in batch):
            release.wait(30)
        return echo(batch)

    async def hanging_async(batch: list[Entry]) -> list[Result]:
        if any(entry.data["n"] == 3 for entry in batch):
            await asyncio.sleep(30)
        return echo(batch)

    handler = hanging if kind == "sync" else hanging_async
    pipeline = Pipeline(
        "p",
        source,
        handler,
        results=results,
        dead_letter=dead,
        max_batch=10,
        window_ms=50,
        max_deliveries=1,
        handler_timeout_ms=300,
    )
    worker = Worker(broker, [pipeline])
    try:
        async with running(worker):
            ids = await publish_numbers(broker, source, range(6))
            got, letters = await asyncio.gather(
                count_results(broker, results, "check", 5), count_results(broker, dead, "check", 1)
            )
    finally:
        release.set()

    assert sorted(e.data["n"] for e in got) == [0, 1, 2, 4, 5]
    assert [letter.data["source_id"] for letter in letters] == [ids[3]]
    assert "handler_timeout_ms=300" in letters[0].data["error"]
    assert dead_letter_count(worker, "timeout") == 1


async def test_a_failing_batch_of_one_runs_the_handler_once_per_delivery(
    broker: Broker, prefix: str
) -> None:
    source, dead = f"{prefix}-source", f"{prefix}-dead"
    await broker.create_group(dead, "check")
    handler = RecordingHandler()
    pipeline = Pipeline(
        "p", source, handler, dead_letter=dead, max_batch=1, window_ms=0, max_deliveries=2
    )

    async with running(Worker(broker, [pipeline], WorkerOptions(reclaim_idle_ms=200))):
        await broker.publish(source, [Message({"n": 1, "poison": True})])
        letters = await count_results(broker, dead, "check", 1)

    assert [letter.data["deliveries"] for letter in letters] == [2]
    assert [[e.deliveries for e in batch] for batch in handler.batches] == [[1], [2]]
