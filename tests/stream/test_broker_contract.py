"""The behaviour every broker promises, run against in-process, Redis and RabbitMQ brokers."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from nearline.testing.worker import publish_undecodable
from nearline.worker.broker import Broker, Consumer, Entry, Message, StreamBound, StreamFull

if TYPE_CHECKING:
    from tests.stream.conftest import MakeBroker

pytestmark = pytest.mark.timeout(30)


def messages(count: int, start: int = 0) -> list[Message]:
    return [Message({"n": n, "text": f"event {n}"}) for n in range(start, start + count)]


async def read_until(consumer: Consumer, want: int, timeout_s: float = 5.0) -> list[Entry]:
    got: list[Entry] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got += await consumer.read(want - len(got), block_ms=100)
    return got


async def test_a_group_receives_published_entries_in_order_with_their_data(
    broker: Broker, prefix: str
) -> None:
    stream = f"{prefix}-source"
    await broker.create_group(stream, "g")
    ids = await broker.publish(stream, messages(5))
    consumer = broker.consumer(stream, "g", "c1")

    got = await read_until(consumer, 5)

    assert [e.id for e in got] == ids
    assert [e.data for e in got] == [{"n": n, "text": f"event {n}"} for n in range(5)]
    assert all(e.deliveries == 1 for e in got)
    assert all(abs(e.published_ms - time.time() * 1000) < 60_000 for e in got)


async def test_read_waits_at_most_block_ms_when_nothing_comes(broker: Broker, prefix: str) -> None:
    stream = f"{prefix}-source"
    await broker.create_group(stream, "g")
    consumer = broker.consumer(stream, "g", "c1")

    started = time.monotonic()
    got = await consumer.read(10, block_ms=200)
    waited = time.monotonic() - started

    assert got == []
    assert 0.15 <= waited < 2.0


async def test_read_returns_as_soon_as_an_entry_arrives(broker: Broker, prefix: str) -> None:
    stream = f"{prefix}-source"
    await broker.create_group(stream, "g")
    consumer = broker.consumer(stream, "g", "c1")

    reading = asyncio.create_task(consumer.read(10, block_ms=40_000))
    # No broker says when a reader is parked; this gives it time to block in its read
    # first, so the test covers waking a blocked reader (a late reader would pass anyway).
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await broker.publish(stream, messages(1))
    got = await reading

    assert [e.data["n"] for e in got] == [0]
    assert time.monotonic() - started < 20  # woken by the entry, not by the 40 s block


async def test_acknowledged_entries_are_not_delivered_again(broker: Broker, prefix: str) -> None:
    stream = f"{prefix}-source"
    await broker.create_group(stream, "g")
    await broker.publish(stream, messages(3))
    consumer = broker.consumer(stream, "g", "c1", reclaim_idle_ms=100)
    got = await read_until(consumer, 3)
    await consumer.ack([e.id for e in got])

    await asyncio.sleep(0.3)  # the behaviour under test: past reclaim_idle_ms, still not due
    again = await consumer.read(10, block_ms=300)

    assert again == []
    assert (await broker.group_info(stream, "g")).pending == 0


async def test_entries_given_back_come_again_with_a_higher_delivery_count(
    broker: Broker, prefix: str
) -> None:
    stream = f"{prefix}-source"
    await broker.create_group(stream, "g")
    await broker.publish(stream, messages(2))
    consumer = broker.consumer(stream, "g", "c1", reclaim_idle_ms=60_000)
    first = await read_until(consumer, 2)
    await consumer.ack([first[0].id])

    await consumer.retry([first[1].id])
    again = await read_until(consumer, 1)

    assert [(e.id, e.data, e.deliveries) for e in again] == [(first[1].id, first[1].data, 2)]


async def test_entries_left_by_a_consumer_that_went_away_go_to_another(
    broker: Broker, prefix: str
) -> None:
    stream = f"{prefix}-source"
    await broker.create_group(stream, "g")
    ids = await broker.publish(stream, messages(4))
    departed = broker.consumer(stream, "g", "departed", reclaim_idle_ms=300)
    taken = await read_until(departed, 4)
    assert len(taken) == 4
    await departed.aclose()  # without acknowledging anything

    survivor = broker.consumer(stream, "g", "survivor", reclaim_idle_ms=300)
    got = await read_until(survivor, 4)

    assert sorted(e.id for e in got) == sorted(ids)
    assert all(e.deliveries == 2 for e in got)


@pytest.mark.parametrize("consumers", [1, 3])
async def test_consumers_of_one_group_share_its_entries_each_exactly_once(
    broker: Broker, prefix: str, consumers: int
) -> None:
    stream = f"{prefix}-source"
    await broker.create_group(stream, "g")
    ids = await broker.publish(stream, messages(90))
    members = [broker.consumer(stream, "g", f"c{i}") for i in range(consumers)]
    received: dict[str, list[str]] = {f"c{i}": [] for i in range(consumers)}

    async def consume(name: str, consumer: Consumer) -> None:
        idle_reads = 0
        while idle_reads < 3:
            batch = await consumer.read(7, block_ms=100)
            idle_reads = 0 if batch else idle_reads + 1
            received[name] += [e.id for e in batch]
            await consumer.ack([e.id for e in batch])
            await asyncio.sleep(0)  # let the others take their turn

    await asyncio.gather(*(consume(f"c{i}", c) for i, c in enumerate(members)))

    everything = [entry_id for got in received.values() for entry_id in got]
    assert sorted(everything) == sorted(ids)  # all of them, none twice
    if consumers > 1:
        assert sum(1 for got in received.values() if got) >= 2, received


async def test_every_group_receives_every_entry_at_its_own_pace(
    broker: Broker, prefix: str
) -> None:
    stream = f"{prefix}-source"
    await broker.create_group(stream, "fast")
    await broker.create_group(stream, "slow")
    ids = await broker.publish(stream, messages(6))
    assert (await broker.group_info(stream, "fast")).lag == 6

    fast = broker.consumer(stream, "fast", "f1")
    got_fast = await read_until(fast, 6)
    await fast.ack([e.id for e in got_fast])

    assert [e.id for e in got_fast] == ids
    assert (await broker.group_info(stream, "fast")).lag == 0
    assert (await broker.group_info(stream, "fast")).pending == 0
    assert (await broker.group_info(stream, "slow")).lag == 6
    slow = broker.consumer(stream, "slow", "s1")
    got_slow = await read_until(slow, 6)
    assert [e.id for e in got_slow] == ids


async def test_a_full_stream_refuses_producers_and_trims_nothing(
    make_broker: MakeBroker, prefix: str
) -> None:
    stream = f"{prefix}-source"
    broker = await make_broker(StreamBound(per_stream={stream: 5}))
    await broker.create_group(stream, "g")
    await broker.publish(stream, messages(5))

    with pytest.raises(StreamFull) as refused:
        await broker.publish(stream, messages(1, start=5))
    assert refused.value.bound == 5

    consumer = broker.consumer(stream, "g", "c1")
    got = await read_until(consumer, 6, timeout_s=1.0)
    assert [e.data["n"] for e in got] == [0, 1, 2, 3, 4]  # the first five, all kept

    await consumer.ack([e.id for e in got])
    await broker.trim_acknowledged(stream)
    await broker.publish(stream, messages(1, start=5))  # room again once consumed
    assert [e.data["n"] for e in await read_until(consumer, 1)] == [5]


async def test_a_dedupe_key_is_published_once(broker: Broker, prefix: str) -> None:
    stream = f"{prefix}-results"
    await broker.create_group(stream, "g")

    first = await broker.publish(stream, [Message({"v": 1}, dedupe_key="src-1")])
    again = await broker.publish(
        stream, [Message({"v": 1}, dedupe_key="src-1"), Message({"v": 2}, dedupe_key="src-2")]
    )

    assert again[0] == first[0]
    consumer = broker.consumer(stream, "g", "c1")
    got = await read_until(consumer, 3, timeout_s=1.0)
    assert [e.data for e in got] == [{"v": 1}, {"v": 2}]


async def test_tail_resumes_after_an_id_without_gaps(broker: Broker, prefix: str) -> None:
    stream = f"{prefix}-results"
    await broker.create_group(stream, "g")  # RabbitMQ keeps entries for groups and tails
    ids = await broker.publish(stream, messages(5))

    async def first(count: int, after: str | None) -> list[Entry]:
        got: list[Entry] = []
        async with asyncio.timeout(5):
            async for entry in broker.tail(stream, after):
                got.append(entry)
                if len(got) == count:
                    return got
        return got

    everything = await first(5, "0")
    resumed = await first(3, ids[1])

    assert [e.id for e in everything] == ids
    assert [e.id for e in resumed] == ids[2:]
    assert [e.data["n"] for e in resumed] == [2, 3, 4]


async def test_tail_of_new_entries_sees_what_is_published_later(
    broker: Broker, prefix: str
) -> None:
    stream = f"{prefix}-results"
    await broker.create_group(stream, "g")
    await broker.publish(stream, messages(2))
    received: list[Entry] = []

    async def follow() -> None:
        async for entry in broker.tail(stream, None):
            received.append(entry)
            if len(received) == 2:
                return

    following = asyncio.create_task(follow())
    # No broker says when a tail has subscribed; this gives it time to, so that the entries
    # published next are "new" to it (a late tail would fail, never pass wrongly).
    await asyncio.sleep(0.5)
    later = await broker.publish(stream, messages(2, start=2))
    async with asyncio.timeout(5):
        await following

    assert [e.id for e in received] == later


async def test_trim_drops_only_what_every_group_acknowledged(broker: Broker, prefix: str) -> None:
    stream = f"{prefix}-source"
    await broker.create_group(stream, "a")
    await broker.create_group(stream, "b")
    await broker.publish(stream, messages(6))
    a = broker.consumer(stream, "a", "a1")
    b = broker.consumer(stream, "b", "b1")
    got_a = await read_until(a, 6)
    await a.ack([e.id for e in got_a])
    got_b = await read_until(b, 3)
    await b.ack([e.id for e in got_b])

    await broker.trim_acknowledged(stream)

    rest = await read_until(b, 3)
    assert [e.data["n"] for e in rest] == [3, 4, 5]


async def test_an_entry_that_is_not_json_comes_with_its_decode_error_and_can_be_acked(
    broker: Broker, prefix: str
) -> None:
    stream = f"{prefix}-source"
    await broker.create_group(stream, "g")
    (first,) = await broker.publish(stream, messages(1))
    bad = await publish_undecodable(broker, stream, b"\xff not json")
    (last,) = await broker.publish(stream, messages(1, start=1))
    consumer = broker.consumer(stream, "g", "c1")

    got = await read_until(consumer, 3)
    await consumer.ack([e.id for e in got])

    assert [e.id for e in got] == [first, bad, last]
    assert [e.decode_error is None for e in got] == [True, False, True]
    assert "not JSON" in str(got[1].decode_error)
    assert got[1].data == {"raw": "\ufffd not json"}
    assert (await broker.group_info(stream, "g")).pending == 0
    tailed: list[Entry] = []
    async with asyncio.timeout(5):
        async for entry in broker.tail(stream, "0"):
            tailed.append(entry)
            if len(tailed) == 3:
                break
    assert [e.id for e in tailed] == [first, bad, last]
