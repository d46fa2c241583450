"""Many replicas sharing the real Redis on 127.0.0.1:6379: Redis holds the entries and a
change stream, every replica follows it into its own index, and a restarted replica loads its
snapshot and replays only what changed since."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from nearline.embed import EmbeddingBatcher
from nearline.gateway.cache.partition import partition_key
from nearline.gateway.cache.semantic import SemanticCache
from nearline.gateway.cache.semantic_store import RedisStore, SemanticStoreUnavailable

REDIS_URL = "redis://127.0.0.1:6379/0"
PARTITION = partition_key("acme", "m1")

# A second gateway process: a SemanticCache on the same Redis, driven by JSON lines on stdin.
REPLICA = """
import asyncio, json, sys, time
from nearline.gateway.cache.semantic import SemanticCache
from nearline.gateway.cache.semantic_store import RedisStore, SemanticStoreUnavailable
from nearline.embed import EmbeddingBatcher, load_embedder

async def main() -> None:
    batcher = EmbeddingBatcher(load_embedder())
    store = RedisStore.from_url(sys.argv[1], namespace=sys.argv[2])
    async with SemanticCache(batcher, store=store) as cache:
        print(json.dumps({"ready": True}), flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command = json.loads(line)
            if command["op"] == "store":
                entry_id = await cache.store(
                    command["partition"], command["query"], command["payload"].encode(), 60
                )
                print(json.dumps({"stored": entry_id}), flush=True)
            elif command["op"] == "lookup":
                deadline = time.monotonic() + command["within_s"]
                while True:
                    match = await cache.lookup(command["partition"], command["query"])
                    if match is not None or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.01)
                found = None if match is None else match.payload.decode()
                print(json.dumps({"payload": found}), flush=True)
    await batcher.aclose()

asyncio.run(main())
"""


def redis_cache(
    batcher: EmbeddingBatcher,
    namespace: str,
    snapshot_dir: Path | None = None,
    max_feed_len: int = 1_000_000,
) -> SemanticCache:
    store = RedisStore.from_url(REDIS_URL, namespace=namespace, max_feed_len=max_feed_len)
    return SemanticCache(batcher, store=store, snapshot_dir=snapshot_dir, follow_block_ms=100)


class Replica:
    """A SemanticCache in another OS process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls, namespace: str) -> Replica:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            REPLICA,
            REDIS_URL,
            namespace,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        replica = cls(process)
        assert await replica._read() == {"ready": True}
        return replica

    async def call(self, **command: object) -> dict[str, object]:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command).encode() + b"\n")
        await self._process.stdin.drain()
        return await self._read()

    async def _read(self) -> dict[str, object]:
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout=90)
        assert line, "the replica process died"
        result: dict[str, object] = json.loads(line)
        return result

    async def stop(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        await asyncio.wait_for(self._process.wait(), timeout=30)


@pytest.mark.slow
async def test_two_processes_serve_each_others_entries_within_a_second(
    batcher: EmbeddingBatcher, namespace: str
) -> None:
    other = await Replica.start(namespace)
    try:
        async with redis_cache(batcher, namespace) as here:
            await other.call(
                op="store",
                partition=PARTITION,
                query="How can I access a private Instagram account?",
                payload="written by the other process",
            )
            stored_at = time.monotonic()
            match = None
            while match is None and time.monotonic() - stored_at < 1.0:
                match = await here.lookup(
                    PARTITION, "How do I gain access to a private Instagram account?"
                )
                await asyncio.sleep(0.01)
            assert match is not None, "not served by this process within 1 s"
            assert match.payload == b"written by the other process"

            await here.store(PARTITION, "What is the capital of France?", b"Paris", ttl_s=60)
            answer = await other.call(
                op="lookup",
                partition=PARTITION,
                query="Which city is the capital of France?",
                within_s=1.0,
            )
            assert answer == {"payload": "Paris"}

            foreign = await other.call(
                op="lookup",
                partition=partition_key("globex", "m1"),
                query="What is the capital of France?",
                within_s=0.2,
            )
            assert foreign == {"payload": None}
    finally:
        await other.stop()


async def test_deletes_and_purges_reach_other_replicas(
    batcher: EmbeddingBatcher, namespace: str
) -> None:
    async with redis_cache(batcher, namespace) as first, redis_cache(batcher, namespace) as second:
        entry_id = await first.store(PARTITION, "What is the capital of France?", b"P", 60)
        await first.store(partition_key("globex", "m1"), "Why is the sky blue?", b"R", 60)
        await wait_for_entries(second, 2)

        await first.delete(entry_id)
        await wait_for_entries(second, 1)
        assert await second.lookup(PARTITION, "What is the capital of France?") is None

        assert await second.purge(tenant="globex") == 1
        await wait_for_entries(first, 0)


async def test_a_new_replica_loads_everything_already_in_redis(
    batcher: EmbeddingBatcher, namespace: str
) -> None:
    async with redis_cache(batcher, namespace) as writer:
        for number in range(5):
            await writer.store(PARTITION, f"Question number {number}?", str(number).encode(), 60)

        async with redis_cache(batcher, namespace) as late:
            assert len(late) == 5
            match = await late.lookup(PARTITION, "Question number 3?")
            assert match is not None
            assert match.payload == b"3"


async def test_a_restarted_replica_loads_its_snapshot_and_replays_only_later_changes(
    batcher: EmbeddingBatcher, namespace: str, tmp_path: Path
) -> None:
    snapshot = tmp_path / "semantic-index"
    questions = [f"What is the square root of {n}?" for n in range(30)]
    async with redis_cache(batcher, namespace) as writer:
        replica = redis_cache(batcher, namespace, snapshot_dir=snapshot)
        await replica.start()
        ids = [await writer.store(PARTITION, q, q.encode(), 60) for q in questions]
        await wait_for_entries(replica, 30)
        await replica.aclose()  # saves the snapshot
        assert (snapshot / "catalog.json").is_file()

        await writer.store(PARTITION, "What is the capital of Peru?", b"Lima", 60)
        await writer.delete(ids[0])

        async with redis_cache(batcher, namespace, snapshot_dir=snapshot) as restarted:
            assert restarted.stats.applied_changes == 2  # not 32: the snapshot held the rest
            assert len(restarted) == 30
            assert await restarted.lookup(PARTITION, questions[0]) is None
            kept = await restarted.lookup(PARTITION, questions[29])
            assert kept is not None
            assert kept.payload == questions[29].encode()
            peru = await restarted.lookup(PARTITION, "What is the capital of Peru?")
            assert peru is not None
            assert peru.payload == b"Lima"


async def test_a_snapshot_older_than_the_trimmed_feed_falls_back_to_a_rescan(
    batcher: EmbeddingBatcher, namespace: str, tmp_path: Path
) -> None:
    snapshot = tmp_path / "semantic-index"
    async with redis_cache(batcher, namespace, max_feed_len=1) as writer:
        async with redis_cache(batcher, namespace, snapshot_dir=snapshot) as replica:
            await writer.store(PARTITION, "What is the capital of France?", b"Paris", 60)
            await wait_for_entries(replica, 1)
        # Two more changes; the feed keeps only the last, so replaying from the snapshot would
        # miss Peru.
        await writer.store(PARTITION, "What is the capital of Peru?", b"Lima", 60)
        await writer.store(PARTITION, "What is the capital of Chile?", b"Santiago", 60)

        async with redis_cache(batcher, namespace, snapshot_dir=snapshot) as restarted:
            assert len(restarted) == 3
            peru = await restarted.lookup(PARTITION, "What is the capital of Peru?")
            assert peru is not None
            assert peru.payload == b"Lima"


async def wait_for_entries(cache: SemanticCache, count: int, within_s: float = 2.0) -> None:
    deadline = time.monotonic() + within_s
    while len(cache) != count:
        assert time.monotonic() < deadline, f"{len(cache)} entries, expected {count}"
        await asyncio.sleep(0.01)


async def test_a_damaged_snapshot_is_ignored_and_the_replica_rescans(
    batcher: EmbeddingBatcher, namespace: str, tmp_path: Path
) -> None:
    snapshot = tmp_path / "semantic-index"
    async with redis_cache(batcher, namespace, snapshot_dir=snapshot) as replica:
        await replica.store(PARTITION, "What is the capital of France?", b"Paris", 60)
    (snapshot / "catalog.json").write_text("{damaged")

    async with redis_cache(batcher, namespace, snapshot_dir=snapshot) as restarted:
        match = await restarted.lookup(PARTITION, "What is the capital of France?")

    assert match is not None
    assert match.payload == b"Paris"


async def test_an_unreachable_redis_is_a_typed_error_and_a_lookup_miss(
    batcher: EmbeddingBatcher, namespace: str
) -> None:
    async with redis_cache(batcher, namespace) as cache:
        await cache.store(PARTITION, "What is the capital of France?", b"Paris", 60)
        down = RedisStore.from_url("redis://127.0.0.1:1/0")  # nothing listens there
        with pytest.raises(SemanticStoreUnavailable):
            await down.payload(1)
        working, cache._store = cache._store, down  # the same cache, its Redis gone
        try:
            assert await cache.lookup(PARTITION, "What is the capital of France?") is None
            with pytest.raises(SemanticStoreUnavailable):
                await cache.store(PARTITION, "Why is the sky blue?", b"Rayleigh", 60)
        finally:
            cache._store = working
            await down.aclose()


async def test_an_injected_redis_client_stays_open_for_its_owner(
    batcher: EmbeddingBatcher, namespace: str
) -> None:
    client = Redis.from_url(REDIS_URL)
    async with SemanticCache(batcher, store=RedisStore(client, namespace=namespace)) as cache:
        await cache.store(PARTITION, "What is the capital of France?", b"Paris", 60)

    assert await client.ping()  # the cache closed, the application's client did not
    await client.aclose()
