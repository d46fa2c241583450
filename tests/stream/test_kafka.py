"""Kafka-only behaviour: what the contract suite cannot show, because it needs a publisher
killed between writing a record and remembering its dedupe key, or Kafka's partitions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from nearline.worker.broker import Message
from nearline.worker.kafka import KafkaBroker, id_position

pytestmark = pytest.mark.timeout(30)

REDIS_URL = "redis://127.0.0.1:6379/0"  # as in conftest.py


@pytest.fixture
async def kafka(kafka_server: str, prefix: str) -> AsyncIterator[KafkaBroker]:
    broker = await KafkaBroker.connect(kafka_server, REDIS_URL, partitions=4, key_field="key")
    yield broker
    await broker.delete(f"{prefix}-source", f"{prefix}-results")
    await broker.aclose()


async def test_a_key_left_marked_by_a_dead_publisher_is_found_in_the_topic_not_rewritten(
    kafka: KafkaBroker, prefix: str
) -> None:
    stream = f"{prefix}-results"
    (first,) = await kafka.publish(stream, [Message({"v": 1}, dedupe_key="src-1")])
    client = redis.Redis.from_url(REDIS_URL)
    try:  # as if the publisher died after Kafka's confirm, before writing the id
        await client.set(f"{stream}:dedupe:src-1", f"?{int(first.partition('-')[0]) - 10}")
        (again,) = await kafka.publish(stream, [Message({"v": 1}, dedupe_key="src-1")])
        assert again == first
        assert (await client.get(f"{stream}:dedupe:src-1")) == first.encode()
        # a mark whose record never reached Kafka: written now, once
        await client.set(f"{stream}:dedupe:src-2", f"?{int(first.partition('-')[0])}")
        (second,) = await kafka.publish(stream, [Message({"v": 2}, dedupe_key="src-2")])
        (third,) = await kafka.publish(stream, [Message({"v": 2}, dedupe_key="src-2")])
    finally:
        await client.aclose()
    assert second == third != first
    assert await kafka.length(stream) == 2


async def test_entries_with_the_same_key_share_a_partition_in_order(
    kafka: KafkaBroker, prefix: str
) -> None:
    stream = f"{prefix}-source"
    events = [Message({"key": f"card-{n % 5}", "n": n}) for n in range(60)]
    ids = await kafka.publish(stream, events)

    partitions: dict[str, set[int]] = {}
    offsets: dict[str, list[int]] = {}
    for message, entry_id in zip(events, ids, strict=True):
        partition, offset = id_position(entry_id)
        partitions.setdefault(str(message.data["key"]), set()).add(partition)
        offsets.setdefault(str(message.data["key"]), []).append(offset)
    assert all(len(p) == 1 for p in partitions.values()), partitions
    assert all(o == sorted(o) for o in offsets.values())
    assert len({p for ps in partitions.values() for p in ps}) >= 2  # keys spread over partitions


async def test_worker_broker_kafka_needs_redis_url() -> None:
    from nearline.config import load_settings
    from nearline.core.errors import ConfigError
    from nearline.worker.build import open_broker

    settings = load_settings(worker={"broker": "kafka"})
    with pytest.raises(ConfigError, match=r"'kafka' needs redis\.url"):
        await open_broker(settings)


async def test_worker_broker_kafka_opens_the_kafka_section(kafka_server: str, prefix: str) -> None:
    from nearline.config import load_settings
    from nearline.worker.build import open_broker

    settings = load_settings(
        redis={"url": REDIS_URL},
        kafka={"bootstrap_servers": kafka_server, "partitions": 2, "key_field": "card"},
        worker={"broker": "kafka"},
    )
    broker = await open_broker(settings)
    stream = f"{prefix}-source"
    try:
        assert isinstance(broker, KafkaBroker)
        await broker.create_group(stream, "g")
        assert await broker.partitions_of(stream) == 2
        ids = await broker.publish(stream, [Message({"card": "c1", "n": n}) for n in range(4)])
        assert len({id_position(i)[0] for i in ids}) == 1  # one key, one partition
        assert (await broker.group_info(stream, "g")).lag == 4
    finally:
        await broker.delete(stream)
        await broker.aclose()


def test_a_kafka_section_with_an_unknown_key_names_it() -> None:
    from nearline.config import load_settings
    from nearline.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"kafka\.bootstrap"):
        load_settings(kafka={"bootstrap": "127.0.0.1:9092"})
