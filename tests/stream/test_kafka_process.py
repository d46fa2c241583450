"""``nearline worker`` on Kafka as real processes: kill -9 mid-batch loses nothing, duplicates no
result, and keyed state stays exact (each key's count is its number of events)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis
import yaml

from nearline.worker.broker import Entry, Message
from nearline.worker.kafka import KafkaBroker

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

REDIS_URL = "redis://127.0.0.1:6379/0"  # as in conftest.py
KAFKA_BOOTSTRAP = "127.0.0.1:9092"
_CLI = "import sys; from nearline.cli import main; sys.exit(main())"
EVENTS = 600
KEYS = 12


def write_config(path: Path, prefix: str) -> None:
    config = {
        "redis": {"url": REDIS_URL},
        "kafka": {"bootstrap_servers": KAFKA_BOOTSTRAP, "partitions": 4, "key_field": "key"},
        "worker": {
            "broker": "kafka",
            "reclaim_idle_ms": 1000,
            "pipelines": [
                {
                    "name": "count",
                    "source": f"{prefix}-source",
                    "handler": "nearline.testing.keyed:keyed_count",
                    "options": {
                        "redis_url": REDIS_URL,
                        "prefix": f"{prefix}:state:",
                        "delay_ms": 100,
                    },
                    "results": f"{prefix}-results",
                    "dead_letter": f"{prefix}-dead",
                    "max_batch": 20,
                    "window_ms": 20,
                    "max_deliveries": 3,
                }
            ],
        },
    }
    path.write_text(yaml.safe_dump(config))


class Workers:
    def __init__(self, config: Path, logs: Path) -> None:
        self.config, self.logs = config, logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{len(self.started)}.log").open("wb")
        command = [sys.executable, "-c", _CLI, "worker", "--config", str(self.config)]
        process = subprocess.Popen(
            [*command, "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT
        )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    running = Workers(tmp_path / "worker.yaml", tmp_path)
    yield running
    running.stop_all()


@pytest.fixture
async def kafka(kafka_server: str, prefix: str) -> AsyncIterator[KafkaBroker]:
    from nearline.worker.kafka_store import KafkaGroupStore

    broker = await KafkaBroker.connect(kafka_server, REDIS_URL, partitions=4, key_field="key")
    yield broker
    await broker.delete(f"{prefix}-source", f"{prefix}-results", f"{prefix}-dead")
    await broker.aclose()
    assert isinstance(broker.store, KafkaGroupStore)


async def collect(broker: KafkaBroker, stream: str, want: int, timeout_s: float) -> list[Entry]:
    """Everything in ``stream``: until ``want`` came and nothing more for a second."""
    got: list[Entry] = []
    enough = asyncio.Event()

    async def read() -> None:
        async for entry in broker.tail(stream, "0"):
            got.append(entry)
            if len(got) >= want:
                enough.set()

    reading = asyncio.create_task(read())
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), timeout_s)
        await asyncio.sleep(1.0)  # a duplicate would arrive too
    finally:
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
    return got


async def test_kill_9_mid_batch_on_kafka_loses_nothing_duplicates_nothing_state_exact(
    workers: Workers, kafka: KafkaBroker, prefix: str
) -> None:
    source, results = f"{prefix}-source", f"{prefix}-results"
    write_config(workers.config, prefix)
    await kafka.create_group(source, "count")
    events = [Message({"key": f"k{n % KEYS}", "n": n}) for n in range(EVENTS)]
    ids = await kafka.publish(source, events)

    async def mid_batch() -> bool:
        info = await kafka.group_info(source, "count")
        done = EVENTS - info.lag - info.pending
        return done >= 100 and info.pending > 0 and info.lag > 0

    deadline = time.monotonic() + 60
    for _ in range(5):
        victim = workers.start()  # alone until the kill: the entries pending are the victim's
        while not await mid_batch():
            assert time.monotonic() < deadline, "timed out waiting for the worker to be mid-batch"
            await asyncio.sleep(0.05)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=5)
        # the victim is dead, so this is exact: did it die holding a batch it had not committed?
        if (await kafka.group_info(source, "count")).pending > 0:
            break  # (else it died between two batches: the next one is the victim)
    else:
        pytest.fail("five workers were each killed between two batches")
    for _ in range(2):  # two share what the victim left, its pending entries included
        workers.start()

    async def all_done() -> bool:
        info = await kafka.group_info(source, "count")
        return info.lag == 0 and info.pending == 0

    deadline = time.monotonic() + 60
    while not await all_done():
        assert time.monotonic() < deadline, "timed out waiting for the workers to finish"
        await asyncio.sleep(0.1)

    written = await collect(kafka, results, EVENTS, 30)
    source_ids = [str(r.data["source_id"]) for r in written]
    assert len(source_ids) == len(set(source_ids)), "duplicate results"
    assert sorted(source_ids) == sorted(ids), "lost or unexpected results"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        # what the victim held was delivered again (the store counts each redelivery; a
        # result's own ``deliveries`` stays 1 when the victim had written it before dying)
        redelivered = await client.hlen(f"nlk:{source}:count:redelivered")
        assert redelivered > 0, "nothing was redelivered"
        per_key = Counter(f"k{n % KEYS}" for n in range(EVENTS))
        for key, count in per_key.items():
            assert await client.zcard(f"{prefix}:state:{key}") == count, key
        counted = {key: 0 for key in per_key}
        for result in written:  # a key's counts: 1, 2, ... in its partition's order, none twice
            counted[str(result.data["key"])] = max(
                counted[str(result.data["key"])], int(result.data["count"])
            )
        assert counted == dict(per_key)
        keys = [key async for key in client.scan_iter(match=f"{prefix}:state:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
