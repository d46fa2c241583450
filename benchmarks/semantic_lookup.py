"""Semantic-cache lookup latency at 100,000 entries, and replica start-up: snapshot vs rebuild.

1. Fills one partition of a Redis-backed SemanticCache with ``--entries`` entries. Their
   vectors are real embeddings of the QQP questions (../shared/data/semantic/
   qqp_pairs_dev.csv), topped up with perturbed copies of them to reach the count, so the
   HNSW graph sees a realistic, clustered distribution. Stored with ``store_embedded``.
2. Times ``await cache.lookup(partition, question)`` end to end — embedding (int8 ONNX
   MiniLM, one thread), HNSW search, guard, payload read from Redis — one request at a time
   (latency) and ``--concurrency`` at a time (micro-batched embedding; throughput).
3. Saves the replica's snapshot, writes ``--replay`` more entries, and times the start-up of
   (a) a replica that loads the snapshot and replays the later changes and (b) a replica
   with no snapshot that rescans Redis and rebuilds its index.

    .venv/bin/python benchmarks/semantic_lookup.py [--entries 100000] [--queries 400]

Needs Redis on 127.0.0.1:6379; everything is written under a fresh namespace, deleted after.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from redis.asyncio import Redis

from nearline.embed import EmbeddingBatcher, load_embedder
from nearline.gateway.cache.partition import partition_key
from nearline.gateway.cache.semantic import SemanticCache
from nearline.gateway.cache.semantic_store import RedisStore

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "semantic" / "qqp_pairs_dev.csv"
REDIS_URL = "redis://127.0.0.1:6379/0"
PARTITION = partition_key("bench", "model")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def questions() -> list[str]:
    with DATA.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    everything = [row["question2"] for row in rows] + [row["question1"] for row in rows]
    return list(dict.fromkeys(everything))


def corpus_vectors(texts: list[str], count: int, batch: int = 64) -> np.ndarray:
    embedder = load_embedder()
    base = np.concatenate(
        [embedder.encode(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    )
    if count <= len(base):
        return base[:count]
    rng = np.random.default_rng(7)
    extra = base[rng.integers(0, len(base), count - len(base))]
    extra = extra + rng.normal(scale=0.04, size=extra.shape).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    return np.concatenate([base, extra.astype(np.float32)])


async def timed_lookups(
    cache: SemanticCache, queries: list[str]
) -> tuple[list[float], list[float], int]:
    """Wall-clock and CPU milliseconds per lookup, one at a time.

    CPU time is this process's (all threads) over the lookup: the work a lookup costs,
    whatever else the machine runs — on a busy machine wall time also holds the wait for
    a core.
    """
    latencies, cpu = [], []
    hits = 0
    for query in queries:
        started, cpu_started = time.perf_counter(), time.process_time()
        match = await cache.lookup(PARTITION, query)
        latencies.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
        hits += match is not None
    return latencies, cpu, hits


async def concurrent_lookups(
    cache: SemanticCache, queries: list[str], concurrency: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    pending = list(queries)

    async def client() -> None:
        while pending:
            query = pending.pop()
            started = time.perf_counter()
            await cache.lookup(PARTITION, query)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, len(queries) / (time.perf_counter() - started)


async def start_replica(
    batcher: EmbeddingBatcher, namespace: str, snapshot: Path | None
) -> tuple[SemanticCache, float]:
    cache = SemanticCache(batcher, store=RedisStore.from_url(REDIS_URL, namespace=namespace),
                          snapshot_dir=snapshot)  # fmt: skip
    started = time.perf_counter()
    await cache.start()
    return cache, time.perf_counter() - started


def row(name: str, values: list[float]) -> str:
    return (
        f"| {name} | {len(values)} | {statistics.median(values):.2f} | "
        f"{percentile(values, 95):.2f} | {percentile(values, 99):.2f} | {max(values):.2f} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--replay", type=int, default=1000)
    parser.add_argument("--real", type=int, default=3000, help="questions really embedded")
    args = parser.parse_args()

    texts = questions()
    print(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}")
    started = time.perf_counter()
    real = min(args.real, args.entries, len(texts))
    vectors = corpus_vectors(texts[:real], args.entries)
    print(f"embedded {real} corpus questions in {time.perf_counter() - started:.0f} s; "
          f"{args.entries - real} more entries are perturbed copies of them")  # fmt: skip
    stored_texts = [texts[i % real] for i in range(args.entries)]
    # Queries: half were stored as asked (hits), half never were (misses or near band).
    rng = np.random.default_rng(1)
    seen = [texts[i] for i in rng.choice(real, args.queries // 2, replace=False)]
    unseen = [texts[i] for i in rng.choice(range(real, len(texts)), args.queries // 2)]
    probe = [q for pair in zip(seen, unseen, strict=True) for q in pair]

    namespace = f"nearline-bench:semantic:{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="nearline-semantic-"))
    batcher = EmbeddingBatcher(load_embedder())
    try:
        writer = SemanticCache(batcher, store=RedisStore.from_url(REDIS_URL, namespace=namespace),
                               snapshot_dir=workdir / "snapshot")  # fmt: skip
        await writer.start()
        started = time.perf_counter()
        items = [
            (query, vector, f"answer {i}".encode())
            for i, (query, vector) in enumerate(zip(stored_texts, vectors, strict=True))
        ]
        await writer.store_embedded(PARTITION, items, ttl_s=3600)
        build_s = time.perf_counter() - started
        print(f"stored {len(writer)} entries (Redis writes + HNSW build) in {build_s:.1f} s")

        await timed_lookups(writer, probe[:20])  # warm-up
        embed_only, embed_cpu = [], []
        for query in probe:
            t0, c0 = time.perf_counter(), time.process_time()
            await batcher.embed(query)
            embed_only.append((time.perf_counter() - t0) * 1000)
            embed_cpu.append((time.process_time() - c0) * 1000)
        sequential, sequential_cpu, hits = await timed_lookups(writer, probe)
        concurrent, throughput = await concurrent_lookups(writer, probe, args.concurrency)

        print(f"\nLookup latency at {len(writer):,} entries (ms), load average now "
              f"{os.getloadavg()[0]:.2f}:\n")  # fmt: skip
        print("| what | n | p50 | p95 | p99 | max |")
        print("|---|---|---|---|---|---|")
        print(row("embedding only (batcher, 1 at a time)", embed_only))
        print(row("embedding only: CPU time", embed_cpu))
        print(row("lookup end to end, 1 at a time", sequential))
        print(row("lookup end to end: CPU time", sequential_cpu))
        print(row(f"lookup end to end, {args.concurrency} concurrent", concurrent))
        print(f"\nhits: {hits}/{len(probe)}; throughput at concurrency {args.concurrency}: "
              f"{throughput:.0f} lookups/s")  # fmt: skip

        started = time.perf_counter()
        await writer.save_snapshot()
        save_s = time.perf_counter() - started
        size_mb = sum(f.stat().st_size for f in (workdir / "snapshot").rglob("*")) / 1e6
        extra = [(f"later question {i}", vectors[i], b"later") for i in range(args.replay)]
        await writer.store_embedded(PARTITION, extra, ttl_s=3600)

        restored, restore_s = await start_replica(batcher, namespace, workdir / "snapshot")
        replayed = restored.stats.applied_changes
        restored_entries = len(restored)
        await restored.aclose(save_snapshot=False)
        rebuilt, rebuild_s = await start_replica(batcher, namespace, None)
        rebuilt_entries = len(rebuilt)
        await rebuilt.aclose(save_snapshot=False)
        await writer.aclose(save_snapshot=False)

        print("\nReplica start-up until ready:\n")
        print("| start | entries | changes replayed | seconds |")
        print("|---|---|---|---|")
        print(f"| snapshot ({size_mb:.0f} MB, saved in {save_s:.1f} s) + replay | "
              f"{restored_entries:,} | {replayed:,} | {restore_s:.1f} |")  # fmt: skip
        print(f"| no snapshot: rescan Redis + rebuild HNSW | {rebuilt_entries:,} | 0 | "
              f"{rebuild_s:.1f} |")  # fmt: skip
    finally:
        await batcher.aclose()
        client = Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=5000)]
        for start in range(0, len(keys), 5000):
            await client.delete(*keys[start : start + 5000])
        await client.aclose()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
