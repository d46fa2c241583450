"""Redis memory per event of a worker pipeline: what stays in Redis once events are handled.

Starts a private ``redis-server`` (no persistence) so other clients do not blur the figure,
puts ``--events`` events through a trivial pipeline (``nearline.testing.worker:echo``, results
published, the source trimmed of acknowledged entries as the worker's housekeeping does) and
prints ``INFO memory`` ``used_memory`` after minus before, per event, with what Redis holds:
the results stream's length and the number of dedupe keys. Usage::

    .venv/bin/python benchmarks/worker_memory.py [--events 10000] [--set results_max_len=1000]

``--set KEY=VALUE`` sets a ``worker:`` setting (the value is read as YAML).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from typing import Any

import redis.asyncio as redis
import yaml

from nearline.config import load_settings
from nearline.testing import free_port
from nearline.testing.worker import running
from nearline.worker.broker import Message
from nearline.worker.build import build_pipelines, open_broker
from nearline.worker.worker import Worker, WorkerOptions

SOURCE, RESULTS = "memory-source", "memory-results"


async def used_memory(client: redis.Redis) -> int:
    info: dict[str, Any] = await client.info("memory")
    return int(info["used_memory"])


async def measure(url: str, events: int, worker_settings: dict[str, Any]) -> dict[str, Any]:
    pipelines = [
        {
            "name": "echo",
            "source": SOURCE,
            "handler": "nearline.testing.worker:echo",
            "results": RESULTS,
            "max_batch": 500,
            "window_ms": 10,
        }
    ]
    settings = load_settings(
        redis={"url": url},
        worker={"broker": "redis", "pipelines": pipelines, **worker_settings},
    )
    client = redis.Redis.from_url(url)
    broker = await open_broker(settings)
    (pipeline,) = build_pipelines(settings.worker)
    await broker.create_group(SOURCE, "echo")
    await client.execute_command("MEMORY", "PURGE")
    before = await used_memory(client)
    worker = Worker(broker, [pipeline], WorkerOptions(housekeeping_every_s=0.2))
    async with running(worker):
        for start in range(0, events, 500):
            batch = [Message({"n": n, "text": f"event {n}"}) for n in range(start, start + 500)]
            await broker.publish(SOURCE, batch[: events - start])
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            info = await broker.group_info(SOURCE, "echo")
            if info.lag == 0 and info.pending == 0:
                break
            await asyncio.sleep(0.1)
    await broker.trim_acknowledged(SOURCE)
    await client.execute_command("MEMORY", "PURGE")
    after = await used_memory(client)
    keys = await client.dbsize()
    probe = [key async for key in client.scan_iter(match=f"{RESULTS}:dedupe:*", count=100)]
    ttl = await client.ttl(probe[0]) if probe else None
    report = {
        "events": events,
        "settings": worker_settings,
        "used_memory_delta_bytes": after - before,
        "bytes_per_event": round((after - before) / events, 1),
        "source_len": await client.xlen(SOURCE),
        "results_len": await client.xlen(RESULTS),
        "dedupe_keys": keys - 2,
        "dedupe_key_ttl_s": ttl,
    }
    await broker.aclose()
    await client.aclose()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--set", action="append", default=[], help="worker setting KEY=VALUE")
    args = parser.parse_args()
    worker_settings = {
        key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)
    }
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("needs redis-server on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [server, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        try:
            url = f"redis://127.0.0.1:{port}/0"
            deadline = time.monotonic() + 10
            while True:
                try:
                    subprocess.run(
                        ["redis-cli", "-p", str(port), "ping"], check=True, capture_output=True
                    )
                    break
                except subprocess.CalledProcessError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            print(asyncio.run(measure(url, args.events, worker_settings)))
        finally:
            process.terminate()
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
