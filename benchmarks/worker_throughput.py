"""Event worker throughput and end-to-end latency, real handlers, real worker processes.

For each handler (the fraud model with streaming card features; embeddings of short texts
with the bundled MiniLM model), window (0 = per event, i.e. batches of one; 10, 100, 1000 ms)
and number of ``nearline worker`` processes (1, 2), on Redis Streams (``--broker redis``) or
Kafka (``--broker kafka``: 4 partitions keyed by card, group state in Redis):

1. **capacity**: a backlog of events is put in the stream, the workers are started, and the
   rate at which results appear is measured from the results' own entry ids;
2. **latency**: the backlog is skipped, a producer publishes at a steady rate (2,000 events/s
   for the fraud model, 50/s for embeddings, or half the capacity if that is lower) for a few
   seconds, and end-to-end latency is read from each result: its entry id's time minus
   its source entry id's time (both stamped by Redis; on Kafka, the records' timestamps), p50
   and p99. On Kafka the backlog is drained, not skipped, before the latency phase.

It prints one Markdown table. Usage::

    .venv/bin/python benchmarks/worker_throughput.py [--quick] [--handlers fraud,embed]
        [--broker redis|kafka]

Needs Redis at 127.0.0.1:6379 (and for Kafka a broker at 127.0.0.1:9092, e.g. tansu).
Timings depend on the machine and its load: run ``uptime``
first and report the load average with the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as redis
import yaml

from nearline.testing import free_port
from nearline.worker.broker import Broker, Entry, Message, entry_id_ms
from nearline.worker.demo.fraud.generator import GeneratorSettings, TransactionGenerator
from nearline.worker.demo.fraud.model import train
from nearline.worker.metrics import percentile
from nearline.worker.redis_streams import RedisStreamsBroker

REDIS_URL = "redis://127.0.0.1:6379/0"
KAFKA_BOOTSTRAP = "127.0.0.1:9092"
KAFKA_PARTITIONS = 4
# the latency phase offers this rate (or half the measured capacity, if lower), so every
# window is compared at the same load
STEADY_RATE = {"fraud": 2_000.0, "embed": 50.0}
_CLI = "import sys; from nearline.cli import main; sys.exit(main())"


@dataclass(frozen=True)
class Case:
    handler: str  # "fraud" | "embed"
    window_ms: int
    workers: int
    concurrency: int = 1  # consumers of the pipeline in each worker process
    broker: str = "redis"  # "redis" | "kafka"

    @property
    def max_batch(self) -> int:
        if self.window_ms == 0:
            return 1
        return 2000 if self.handler == "fraud" else 64


@dataclass
class Outcome:
    case: Case
    capacity_per_s: float
    offered_per_s: float
    p50_ms: float
    p99_ms: float
    latency_samples: int
    handler_ms: float  # mean time in the handler per batch, during the latency phase
    mean_batch: float  # mean entries per handler call, during the latency phase
    batch_ms: float  # mean time from batch in hand to acknowledged (handler + publish + ack)


def events_for(handler: str, count: int) -> list[dict[str, Any]]:
    if handler == "fraud":
        now_ms = int(time.time() * 1000)
        return TransactionGenerator(GeneratorSettings(seed=5)).take(count, now_ms, 5000.0)
    subjects = ("order", "refund", "delivery", "invoice", "password", "subscription")
    return [
        {
            "key": f"user-{i % 997}",
            "text": f"customer {i} asks about their {subjects[i % len(subjects)]} number {i * 7}",
        }
        for i in range(count)
    ]


def worker_config(case: Case, source: str, results: str, model_path: Path) -> dict[str, Any]:
    if case.handler == "fraud":
        handler = {
            "handler": "nearline.worker.demo.fraud.handler:build_handler",
            "options": {"model_path": str(model_path)},
        }
    else:
        handler = {"handler": "nearline.worker.embedding:build_embedding_handler", "options": {}}
    kafka = {"bootstrap_servers": KAFKA_BOOTSTRAP, "partitions": KAFKA_PARTITIONS}
    return {
        "redis": {"url": REDIS_URL},
        "kafka": {**kafka, "key_field": "card_id" if case.handler == "fraud" else "key"},
        "worker": {
            "broker": case.broker,
            "reclaim_idle_ms": 10_000,
            "pipelines": [
                {
                    "name": "bench",
                    "source": source,
                    "results": results,
                    "max_batch": case.max_batch,
                    "window_ms": case.window_ms,
                    "concurrency": case.concurrency,
                    **handler,
                }
            ],
        },
    }


def start_workers(config_path: Path, ports: list[int]) -> list[subprocess.Popen[bytes]]:
    """One ``nearline worker`` process per port; each serves /metrics on its port."""
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CLI,
                "worker",
                "--config",
                str(config_path),
                "--log-level",
                "warning",
                "--http-port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for port in ports
    ]


async def handler_totals(ports: list[int]) -> tuple[float, float, float, float, float]:
    """Summed over the workers: seconds in the handler, handler calls, entries handled,
    seconds from batch in hand to acknowledged, batches acknowledged."""
    seconds = calls = entries = batch_seconds = batches = 0.0
    async with httpx.AsyncClient(timeout=10) as client:
        for port in ports:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            for line in text.splitlines():
                if line.startswith("nearline_worker_handler_seconds_sum"):
                    seconds += float(line.split()[-1])
                elif line.startswith("nearline_worker_handler_seconds_count"):
                    calls += float(line.split()[-1])
                elif line.startswith("nearline_worker_batch_size_sum"):
                    entries += float(line.split()[-1])
                elif line.startswith("nearline_worker_batch_seconds_sum"):
                    batch_seconds += float(line.split()[-1])
                elif line.startswith("nearline_worker_batch_seconds_count"):
                    batches += float(line.split()[-1])
    return seconds, calls, entries, batch_seconds, batches


def wait_ready(processes: list[subprocess.Popen[bytes]], timeout_s: float = 120) -> None:
    """Each worker prints one line once its handler (and model) is loaded."""
    deadline = time.monotonic() + timeout_s
    for process in processes:
        assert process.stderr is not None
        while time.monotonic() < deadline:
            line = process.stderr.readline().decode()
            if line.startswith("nearline worker:"):
                stderr = process.stderr
                threading.Thread(target=stderr.read, daemon=True).start()  # keep it drained
                break
            if not line and process.poll() is not None:
                raise RuntimeError(f"a worker exited with {process.returncode}")
        else:
            raise RuntimeError("workers did not start in time")


def stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def preload(broker: Broker, stream: str, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 2000):
        await broker.publish(stream, [Message(e) for e in events[start : start + 2000]])


async def capacity(client: redis.Redis, results: str, seconds: float, expected: int) -> float:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and await client.xlen(results) < expected:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    count = await client.xlen(results)
    if count < 2:
        return 0.0
    first: Any = await client.xrange(results, count=1)
    last: Any = await client.xrevrange(results, count=1)
    span_ms = entry_id_ms(last[0][0].decode()) - entry_id_ms(first[0][0].decode())
    return count / max(span_ms / 1000, 0.001)


async def offered_load(
    broker: Broker,
    stream: str,
    events: list[dict[str, Any]],
    rate: float,
    seconds: float,
) -> None:
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate) - sent
        if due > 0:
            batch = [events[(sent + i) % len(events)] for i in range(due)]
            await broker.publish(stream, [Message(e) for e in batch])
            sent += due
        await asyncio.sleep(0.002)


async def latencies(client: redis.Redis, results: str, since_ms: int) -> list[float]:
    values: list[float] = []
    position = f"{since_ms}-0"
    while True:
        chunk: Any = await client.xrange(results, min=position, count=5000)
        if not chunk:
            return values
        for raw_id, fields in chunk:
            result_id = raw_id.decode()
            source_ms = entry_id_ms(orjson.loads(fields[b"d"])["source_id"])
            if source_ms >= since_ms:
                values.append(entry_id_ms(result_id) - source_ms)
        position = "(" + chunk[-1][0].decode()


async def run_case(case: Case, model_path: Path, quick: bool, workdir: Path) -> Outcome:
    tag = uuid.uuid4().hex[:8]
    source, results = f"bench-{tag}-source", f"bench-{tag}-results"
    broker = RedisStreamsBroker.from_url(REDIS_URL)
    client = broker.client
    expected_rate = {"fraud": 30_000, "embed": 400}[case.handler]
    if case.window_ms == 0:
        expected_rate = {"fraud": 2_000, "embed": 150}[case.handler]
    run_s = 2.0 if quick else 5.0
    backlog = max(200, int(expected_rate * run_s * 1.5))
    events = events_for(case.handler, backlog)
    config_path = workdir / f"{tag}.yaml"
    config_path.write_text(yaml.safe_dump(worker_config(case, source, results, model_path)))
    await broker.create_group(source, "bench")
    await preload(broker, source, events)
    ports = [free_port() for _ in range(case.workers)]
    processes = start_workers(config_path, ports)
    try:
        await asyncio.to_thread(wait_ready, processes)
        capacity_per_s = await capacity(client, results, run_s, backlog)
        # skip what is left of the backlog, let batches in flight finish
        await client.xgroup_setid(source, "bench", "$")
        await asyncio.sleep(1.5)
        offered = max(1.0, min(capacity_per_s * 0.5, STEADY_RATE[case.handler]))
        before = await handler_totals(ports)
        since_ms = int(time.time() * 1000)
        await offered_load(broker, source, events, offered, run_s)
        await asyncio.sleep(case.window_ms / 1000 + 2.0)
        measured = await latencies(client, results, since_ms)
        after = await handler_totals(ports)
    finally:
        await asyncio.to_thread(stop_workers, processes)
        await broker.delete(source, results)
        await broker.aclose()
    calls = max(after[1] - before[1], 1.0)
    return Outcome(
        case,
        capacity_per_s,
        offered,
        percentile(measured, 0.5) if measured else float("nan"),
        percentile(measured, 0.99) if measured else float("nan"),
        len(measured),
        handler_ms=1000 * (after[0] - before[0]) / calls,
        mean_batch=(after[2] - before[2]) / calls,
        batch_ms=1000 * (after[3] - before[3]) / max(after[4] - before[4], 1.0),
    )


class TailedResults:
    """Every result of a stream as it is written, read by ``tail`` (for brokers other than
    Redis, where ``XRANGE`` reads them back): ``(result ms, source ms)`` pairs."""

    def __init__(self, broker: Broker, stream: str) -> None:
        self.seen: list[tuple[int, int]] = []
        self._task = asyncio.create_task(self._follow(broker, stream))

    async def _follow(self, broker: Broker, stream: str) -> None:
        entry: Entry
        async for entry in broker.tail(stream, "0"):
            self.seen.append((entry.published_ms, entry_id_ms(str(entry.data["source_id"]))))

    async def capacity(self, seconds: float, expected: int) -> float:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(self.seen) < expected:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        if len(self.seen) < 2:
            return 0.0
        times = [result_ms for result_ms, _ in self.seen]
        return len(times) / max((max(times) - min(times)) / 1000, 0.001)

    def latencies(self, since_ms: int) -> list[float]:
        return [float(r - s) for r, s in self.seen if s >= since_ms]

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def run_kafka_case(case: Case, model_path: Path, quick: bool, workdir: Path) -> Outcome:
    from nearline.worker.kafka import KafkaBroker

    tag = uuid.uuid4().hex[:8]
    source, results = f"bench-{tag}-source", f"bench-{tag}-results"
    key_field = "card_id" if case.handler == "fraud" else "key"
    broker = await KafkaBroker.connect(
        KAFKA_BOOTSTRAP, REDIS_URL, partitions=KAFKA_PARTITIONS, key_field=key_field
    )
    expected_rate = {"fraud": 10_000, "embed": 400}[case.handler]
    if case.window_ms == 0:
        expected_rate = {"fraud": 1_000, "embed": 150}[case.handler]
    run_s = 2.0 if quick else 5.0
    backlog = max(200, int(expected_rate * run_s * 1.5))
    events = events_for(case.handler, backlog)
    config_path = workdir / f"{tag}.yaml"
    config_path.write_text(yaml.safe_dump(worker_config(case, source, results, model_path)))
    await broker.create_group(source, "bench")
    await preload(broker, source, events)
    tailed = TailedResults(broker, results)
    ports = [free_port() for _ in range(case.workers)]
    processes = start_workers(config_path, ports)
    try:
        await asyncio.to_thread(wait_ready, processes)
        capacity_per_s = await tailed.capacity(run_s, backlog)
        drained_by = time.monotonic() + 120  # Kafka cannot skip a group's backlog: drain it
        while time.monotonic() < drained_by:
            info = await broker.group_info(source, "bench")
            if info.lag == 0 and info.pending == 0:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        offered = max(1.0, min(capacity_per_s * 0.5, STEADY_RATE[case.handler]))
        before = await handler_totals(ports)
        since_ms = int(time.time() * 1000)
        await offered_load(broker, source, events, offered, run_s)
        await asyncio.sleep(case.window_ms / 1000 + 2.0)
        measured = tailed.latencies(since_ms)
        after = await handler_totals(ports)
    finally:
        await asyncio.to_thread(stop_workers, processes)
        await tailed.aclose()
        await broker.delete(source, results)
        await broker.aclose()
    calls = max(after[1] - before[1], 1.0)
    return Outcome(
        case,
        capacity_per_s,
        offered,
        percentile(measured, 0.5) if measured else float("nan"),
        percentile(measured, 0.99) if measured else float("nan"),
        len(measured),
        handler_ms=1000 * (after[0] - before[0]) / calls,
        mean_batch=(after[2] - before[2]) / calls,
        batch_ms=1000 * (after[3] - before[3]) / max(after[4] - before[4], 1.0),
    )


def table(outcomes: list[Outcome]) -> str:
    lines = [
        "| broker | handler | workers | window ms | max batch | capacity events/s "
        "| offered events/s | e2e p50 ms | e2e p99 ms | samples | mean batch "
        "| handler ms/batch | batch→ack ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.case.broker} | {o.case.handler} | {o.case.workers} | {o.case.window_ms} "
            f"| {o.case.max_batch} "
            f"| {o.capacity_per_s:,.0f} | {o.offered_per_s:,.0f} | {o.p50_ms:.0f} "
            f"| {o.p99_ms:.0f} | {o.latency_samples} | {o.mean_batch:.1f} | {o.handler_ms:.1f} "
            f"| {o.batch_ms:.1f} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s phases instead of 5 s")
    parser.add_argument("--handlers", default="fraud,embed")
    parser.add_argument("--windows", default="0,10,100,1000")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--broker", default="redis", help="redis or kafka (or both: redis,kafka)")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="consumers per pipeline in each worker process"
    )
    args = parser.parse_args()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}",
        flush=True,
    )
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        model_path = workdir / "fraud.joblib"
        train().save(model_path)
        for handler in args.handlers.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                for window, kind in (
                    (int(w), b) for w in args.windows.split(",") for b in args.broker.split(",")
                ):
                    run = run_kafka_case if kind == "kafka" else run_case
                    outcome = await run(
                        Case(handler, window, workers, args.concurrency, kind),
                        model_path,
                        args.quick,
                        workdir,
                    )
                    outcomes.append(outcome)
                    print(table([outcome]).splitlines()[-1], flush=True)
    print()
    print(table(outcomes))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
