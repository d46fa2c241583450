"""Fixtures for the event worker tests: one broker fixture parametrised over every broker.

Each test gets streams under a unique prefix and the fixture deletes them afterwards, so
tests can share the real Redis and RabbitMQ servers on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Protocol

import pytest
import redis.asyncio as redis

from nearline.worker.broker import Broker, StreamBound
from nearline.worker.memory import MemoryBroker
from nearline.worker.redis_streams import RedisStreamsBroker

REDIS_URL = "redis://127.0.0.1:6379/0"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
KAFKA_BOOTSTRAP = "127.0.0.1:9092"  # the broker the root conftest starts for the run


class MakeBroker(Protocol):
    async def __call__(self, bound: StreamBound | None = None) -> Broker: ...


@pytest.fixture(autouse=True)
def quick_worker_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process workers poll every 50 ms (not 500): an idle consumer notices ``stop()``
    sooner, so each ``async with running(worker)`` ends in ~50 ms instead of ~500 ms, and a
    broker error is retried after 50 ms (not 1 s). Only how long an idle worker waits
    changes; what it reads, handles, acknowledges and writes is the same."""
    from nearline.worker import worker

    monkeypatch.setattr(worker, "_POLL_MS", 50)
    monkeypatch.setattr(worker, "_BROKER_RETRY_S", 0.05)


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def _make_broker(kind: str, bound: StreamBound | None) -> Broker:
    if kind == "memory":
        return MemoryBroker(bound)
    if kind == "redis":
        return RedisStreamsBroker.from_url(REDIS_URL, bound)
    if kind == "kafka":
        from nearline.worker.kafka import KafkaBroker

        return await KafkaBroker.connect(KAFKA_BOOTSTRAP, REDIS_URL, bound)
    from nearline.worker.rabbitmq import RabbitMQBroker

    return await RabbitMQBroker.connect(RABBITMQ_URL, bound, queue_expires_ms=300_000)


@pytest.fixture(scope="session")
def kafka_server() -> str:
    """The Kafka-protocol broker the root conftest made sure of for the whole run."""
    return KAFKA_BOOTSTRAP


@pytest.fixture(params=["memory", "redis", "rabbitmq", "kafka"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "kafka":
        request.getfixturevalue("kafka_server")
    return kind


@pytest.fixture
async def make_broker(broker_kind: str, prefix: str) -> AsyncIterator[MakeBroker]:
    """``await make_broker(bound=None)``: a broker of the test's kind, cleaned up after."""
    made: list[Broker] = []

    async def make(bound: StreamBound | None = None) -> Broker:
        broker = await _make_broker(broker_kind, bound)
        made.append(broker)
        return broker

    yield make
    if made:
        cleaner = made[0]
        # The streams are this test's own. Under four test processes the in-memory tansu was
        # seen to stall, on topic deletions and (3 times in ~30 runs, never in isolation) on
        # closing the Kafka clients: a clean-up that stalls is given up (the topics stay in
        # that throw-away broker) rather than failing the test it follows, and closing is
        # bounded as `nearline worker` bounds it at shutdown (worker/cli.py, 5 s).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await cleaner.delete(*[f"{prefix}-{suffix}" for suffix in _SUFFIXES])
    for broker in made:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await broker.aclose()


_SUFFIXES = ("source", "results", "dead", "other")


@pytest.fixture
async def broker(make_broker: MakeBroker) -> Broker:
    return await make_broker()
