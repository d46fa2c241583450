"""``nearline worker`` as real processes on real Redis: kill -9 mid-batch, two workers, poison."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis
import yaml

from nearline.testing import free_port
from nearline.worker.broker import Broker, Consumer, Message
from nearline.worker.redis_streams import RedisStreamsBroker

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]

REDIS_URL = "redis://127.0.0.1:6379/0"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
_CLI = "import sys; from nearline.cli import main; sys.exit(main())"
# a worker with a bug: acknowledging fails with an error no broker code expects
_BUGGY_CLI = (
    "import sys; from nearline.worker import redis_streams as r\n"
    "async def ack(self, ids): raise RuntimeError('a bug in a worker task (simulated)')\n"
    "r.RedisConsumer.ack = ack\n"
    "from nearline.cli import main; sys.exit(main())"
)


def write_config(
    path: Path,
    prefix: str,
    *,
    delay_ms: float,
    max_batch: int,
    handler: str = "nearline.testing.worker:slow_echo",
    **worker: object,
) -> Path:
    config = {
        "redis": {"url": REDIS_URL},
        "worker": {
            "broker": "redis",
            "reclaim_idle_ms": 1000,
            **worker,
            "pipelines": [
                {
                    "name": "echo",
                    "source": f"{prefix}-source",
                    "handler": handler,
                    "options": {"delay_ms": delay_ms},
                    "results": f"{prefix}-results",
                    "dead_letter": f"{prefix}-dead",
                    "max_batch": max_batch,
                    "window_ms": 20,
                    "max_deliveries": 3,
                }
            ],
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


class WorkerProcesses:
    def __init__(self, config: Path, logs: Path) -> None:
        self.config = config
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *extra: str, program: str = _CLI) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{len(self.started)}.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                program,
                "worker",
                "--config",
                str(self.config),
                "--log-level",
                "warning",
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def workers(tmp_path: Path, prefix: str) -> Iterator[WorkerProcesses]:
    running = WorkerProcesses(tmp_path / "worker.yaml", tmp_path)
    yield running
    running.stop_all()


@pytest.fixture
async def redis_broker(prefix: str) -> RedisStreamsBroker:
    broker = RedisStreamsBroker.from_url(REDIS_URL)
    yield broker  # type: ignore[misc]
    await broker.delete(f"{prefix}-source", f"{prefix}-results", f"{prefix}-dead")
    await broker.aclose()


async def results_by_source(client: redis.Redis, stream: str) -> list[dict[str, object]]:
    import orjson

    entries = await client.xrange(stream)
    return [orjson.loads(fields[b"d"]) for _id, fields in entries]


async def wait_for(check, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Results:
    """The results a worker wrote so far, read from Redis or from a RabbitMQ group."""

    def __init__(self, broker: Broker, stream: str) -> None:
        self.broker = broker
        self.stream = stream
        self.seen: list[dict[str, object]] = []
        self._checker = None if isinstance(broker, RedisStreamsBroker) else "checker"
        self._consumer: Consumer | None = None

    async def prepare(self) -> None:
        if self._checker is not None:  # a RabbitMQ group only gets what is published after
            await self.broker.create_group(self.stream, self._checker)

    async def poll(self, *, drain: bool = False) -> list[dict[str, object]]:
        """What was written so far; with ``drain``, until nothing more comes (no writer)."""
        if isinstance(self.broker, RedisStreamsBroker):
            self.seen = await results_by_source(self.broker.client, self.stream)
            return self.seen
        assert self._checker is not None
        if self._consumer is None:
            self._consumer = self.broker.consumer(self.stream, self._checker, "checker")
        while batch := await self._consumer.read(1000, block_ms=300 if drain else 20):
            self.seen += [dict(entry.data) for entry in batch]
            await self._consumer.ack([entry.id for entry in batch])
            if not drain:
                break
        return self.seen

    async def aclose(self) -> None:
        if self._consumer is not None:
            await self._consumer.aclose()


@pytest.fixture(params=["redis", "rabbitmq"])
async def process_broker(
    request: pytest.FixtureRequest, tmp_path: Path, prefix: str
) -> AsyncIterator[Broker]:
    """A broker of the kind the worker processes use, declaring queues as they do."""
    from nearline.config import load_settings
    from nearline.worker.build import stream_bound

    kind: str = request.param
    config = write_config(tmp_path / "worker.yaml", prefix, delay_ms=5, max_batch=20)
    config.write_text(config.read_text().replace("broker: redis", f"broker: {kind}"))
    bound = stream_bound(load_settings(config).worker)
    broker: Broker
    if kind == "redis":
        broker = RedisStreamsBroker.from_url(REDIS_URL, bound)
    else:
        from nearline.worker.rabbitmq import RabbitMQBroker, RedisDedupeStore

        dedupe = RedisDedupeStore(redis.Redis.from_url(REDIS_URL))
        broker = await RabbitMQBroker.connect(RABBITMQ_URL, bound, dedupe)
    yield broker
    await broker.delete(f"{prefix}-source", f"{prefix}-results", f"{prefix}-dead")
    await broker.aclose()


EVENTS = 2000


async def test_kill_9_mid_batch_then_restart_loses_nothing_and_duplicates_nothing(
    workers: WorkerProcesses, process_broker: Broker, prefix: str
) -> None:
    """Four workers killed mid-batch one after another, then one that finishes: every entry
    has exactly one result, on Redis and on RabbitMQ (there with the Redis dedupe store, the
    default when redis.url is set)."""
    source, results = f"{prefix}-source", f"{prefix}-results"
    broker = process_broker
    written = Results(broker, results)
    await written.prepare()
    await broker.create_group(source, "echo")
    ids = await broker.publish(source, [Message({"n": n}) for n in range(EVENTS)])

    for _kill in range(4):
        before = len(await written.poll())
        victim = workers.start()

        async def mid_batch(before: int = before) -> bool:
            return len(await written.poll()) >= before + 100

        await wait_for(mid_batch, 30, "the worker to be mid-batch")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=5)
    assert len({str(r["source_id"]) for r in await written.poll()}) < EVENTS, "killed too late"

    last = workers.start()

    async def all_written() -> bool:
        return len({str(r["source_id"]) for r in await written.poll()}) == EVENTS

    await wait_for(all_written, 60, "the restarted worker to finish")
    if isinstance(broker, RedisStreamsBroker):
        # entries a killed worker wrote results for but never acked: the last worker takes
        # them over (after reclaim_idle_ms), finds their results written, and acks them
        async def all_acked() -> bool:
            return (await broker.group_info(source, "echo")).pending == 0

        await wait_for(all_acked, 60, "the restarted worker to ack what the dead left")
    last.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(last.wait, 15) == 0
    info = await broker.group_info(source, "echo")
    assert info.lag == 0 and (info.pending == 0 or not isinstance(broker, RedisStreamsBroker))
    final = await written.poll(drain=True)  # everything, now that no worker runs
    await written.aclose()
    source_ids = [str(r["source_id"]) for r in final]
    duplicates = len(source_ids) - len(set(source_ids))
    assert duplicates == 0, f"{duplicates} duplicate results"
    assert sorted(source_ids) == sorted(ids), "lost or unexpected results"
    assert sorted(int(r["n"]) for r in final) == list(range(EVENTS))  # type: ignore[call-overload]
    redelivered = [r for r in final if int(r["deliveries"]) > 1]  # type: ignore[call-overload]
    assert redelivered, "the entries in flight at the kills were handled again"
    assert len({r["pid"] for r in final}) == 5


async def test_two_worker_processes_in_one_group_share_the_load(
    workers: WorkerProcesses, redis_broker: RedisStreamsBroker, prefix: str
) -> None:
    source, results = f"{prefix}-source", f"{prefix}-results"
    write_config(workers.config, prefix, delay_ms=50, max_batch=10)
    await redis_broker.create_group(source, "echo")
    first, second = workers.start(), workers.start()
    ids = await redis_broker.publish(source, [Message({"n": n}) for n in range(400)])

    async def all_done() -> bool:
        return await redis_broker.client.xlen(results) >= 400

    await wait_for(all_done, 60, "both workers to finish")
    written = await results_by_source(redis_broker.client, results)
    assert sorted(str(r["source_id"]) for r in written) == sorted(ids)
    per_worker = {
        pid: sum(1 for r in written if r["pid"] == pid) for pid in (first.pid, second.pid)
    }
    assert all(count >= 40 for count in per_worker.values()), per_worker


async def test_a_poison_entry_reaches_the_dead_letter_stream_of_a_worker_process(
    workers: WorkerProcesses, redis_broker: RedisStreamsBroker, prefix: str
) -> None:
    source, results, dead = f"{prefix}-source", f"{prefix}-results", f"{prefix}-dead"
    write_config(workers.config, prefix, delay_ms=1, max_batch=10)
    await redis_broker.create_group(source, "echo")
    ids = await redis_broker.publish(
        source, [Message({"n": n, "poison": n == 7}) for n in range(20)]
    )
    workers.start()

    async def settled() -> bool:  # every entry read (lag) and acknowledged (pending)
        info = await redis_broker.group_info(source, "echo")
        return await redis_broker.client.xlen(dead) == 1 and info.pending == info.lag == 0

    await wait_for(settled, 30, "the poison entry to be dead-lettered")
    (letter,) = await results_by_source(redis_broker.client, dead)
    assert letter["source_id"] == ids[7]
    assert letter["deliveries"] == 3
    assert "poison" in str(letter["error"])
    written = await results_by_source(redis_broker.client, results)
    assert sorted(int(r["n"]) for r in written) == [  # type: ignore[call-overload]
        n for n in range(20) if n != 7
    ]


async def test_a_worker_process_serves_health_and_metrics_on_its_http_port(
    workers: WorkerProcesses, redis_broker: RedisStreamsBroker, prefix: str
) -> None:
    import httpx

    source = f"{prefix}-source"
    write_config(workers.config, prefix, delay_ms=1, max_batch=10)
    await redis_broker.create_group(source, "echo")
    port = free_port()
    process = workers.start("--http-port", str(port))
    await redis_broker.publish(source, [Message({"n": n}) for n in range(25)])
    metric = 'nearline_worker_events_total{outcome="processed",pipeline="echo"} 25.0'

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

        async def counted() -> bool:
            try:
                response = await client.get("/metrics")
            except httpx.TransportError:
                return False
            return metric in response.text

        await wait_for(counted, 30, "the metrics to count 25 processed events")
        health = await client.get("/healthz")

    assert health.json() == {"status": "ok", "pipelines": ["echo"]}
    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 15) == 0


async def test_a_worker_process_dead_letters_a_non_json_entry_and_handles_the_rest(
    workers: WorkerProcesses, redis_broker: RedisStreamsBroker, prefix: str
) -> None:
    source, results, dead = f"{prefix}-source", f"{prefix}-results", f"{prefix}-dead"
    write_config(workers.config, prefix, delay_ms=1, max_batch=10)
    await redis_broker.create_group(source, "echo")
    client = redis_broker.client
    await redis_broker.publish(source, [Message({"n": n}) for n in range(10)])
    bad_id = (await client.xadd(source, {b"d": b"{not json"})).decode()
    await redis_broker.publish(source, [Message({"n": n}) for n in range(10, 20)])
    workers.start()

    async def settled() -> bool:
        info = await redis_broker.group_info(source, "echo")
        done = await client.xlen(results) == 20 and await client.xlen(dead) == 1
        return done and info.lag == 0 and info.pending == 0

    await wait_for(settled, 30, "20 results and 1 dead letter")
    (letter,) = await results_by_source(client, dead)
    assert letter["source_id"] == bad_id
    assert letter["data"] == {"raw": "{not json"}
    written = await results_by_source(client, results)
    assert sorted(int(r["n"]) for r in written) == list(range(20))  # type: ignore[call-overload]
    assert workers.started[0].poll() is None  # and it keeps running


async def test_a_worker_process_whose_task_dies_exits_3_and_says_why(
    workers: WorkerProcesses, redis_broker: RedisStreamsBroker, prefix: str, tmp_path: Path
) -> None:
    source = f"{prefix}-source"
    write_config(workers.config, prefix, delay_ms=1, max_batch=10)
    await redis_broker.create_group(source, "echo")
    await redis_broker.publish(source, [Message({"n": n}) for n in range(5)])

    process = workers.start(program=_BUGGY_CLI)

    assert await asyncio.to_thread(process.wait, 30) == 3
    log = (tmp_path / "worker-0.log").read_text()
    assert "a bug in a worker task (simulated)" in log
    assert "Traceback" in log


async def test_sigterm_with_a_hung_sync_handler_exits_4_within_the_grace(
    workers: WorkerProcesses, redis_broker: RedisStreamsBroker, prefix: str, tmp_path: Path
) -> None:
    source = f"{prefix}-source"
    write_config(
        workers.config,
        prefix,
        delay_ms=1,
        max_batch=10,
        handler="nearline.testing.worker:hang_on_marked",
        shutdown_grace_ms=1000,
        reclaim_idle_ms=60_000,
    )
    await redis_broker.create_group(source, "echo")
    (hung,) = await redis_broker.publish(source, [Message({"n": 1, "hang": True})])
    process = workers.start()

    async def in_the_handler() -> bool:
        return (await redis_broker.group_info(source, "echo")).pending == 1

    await wait_for(in_the_handler, 30, "the worker to be stuck in its handler")
    stopped_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(process.wait, 20)
    took = time.monotonic() - stopped_at

    assert code == 4
    assert took < 1.0 + 4.0, took  # the grace, plus giving the entries back and exiting
    log = (tmp_path / "worker-0.log").read_text()
    assert "abandoning" in log and "hung handler thread" in log
    # the abandoned entry was given back: another consumer takes it at once
    taker = redis_broker.consumer(source, "echo", "taker", reclaim_idle_ms=60_000)
    assert [e.id for e in await taker.read(10, block_ms=100)] == [hung]


def test_the_dedupe_store_is_redis_whenever_redis_is_configured(tmp_path: Path) -> None:
    from nearline.config import load_settings
    from nearline.core.errors import ConfigError
    from nearline.worker.dedupe import MemoryDedupeStore, RedisDedupeStore, dedupe_store

    config = tmp_path / "worker.yaml"
    config.write_text(yaml.safe_dump({"redis": {"url": REDIS_URL}, "worker": {}}))
    assert isinstance(dedupe_store(load_settings(config)), RedisDedupeStore)
    config.write_text(yaml.safe_dump({"redis": {"url": REDIS_URL}, "worker": {"dedupe": "memory"}}))
    assert isinstance(dedupe_store(load_settings(config)), MemoryDedupeStore)
    config.write_text(yaml.safe_dump({"worker": {}}))
    assert isinstance(dedupe_store(load_settings(config)), MemoryDedupeStore)
    config.write_text(yaml.safe_dump({"worker": {"dedupe": "redis"}}))
    with pytest.raises(ConfigError, match=r"worker\.dedupe: 'redis' needs redis\.url"):
        dedupe_store(load_settings(config))


def test_the_worker_command_takes_dedupe(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", _CLI, "worker", "--dedupe", "redis", "--config", "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "--dedupe" not in finished.stderr  # accepted; fails later on the missing file
    assert finished.returncode == 2
