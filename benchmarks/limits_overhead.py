"""What do rate limits and budgets cost? Gateway CPU per request, with and without limits.

Starts ``nearline mock-upstream`` and three ``nearline serve`` processes in front of it,
identical but for limits: ``off`` (a key without limits), ``memory`` (the key has rpm, tpm
and a budget, its tenant rpm and tpm: counters in memory), ``redis`` (the same limits,
counters in the real Redis at 127.0.0.1:6379 under a prefix of this run, deleted after) and
``off-control`` (a second ``off``: how far two identical gateways differ, i.e. the noise).
Caches and the request log are off, so every request goes upstream. Rounds alternate
between the gateways (off, memory, redis, off-control, off, ...), each a closed loop of streamed
requests; the gateway's CPU time (utime + stime from /proc) over a round divided by its
requests is the figure. Every mode meters answers for the spend ledger, so ``off`` includes
that; the difference is what the limits add. The limits are far above the load: nothing is
refused, and a refusal would fail the run.

    .venv/bin/python benchmarks/limits_overhead.py                       # 3 rounds x 1000
    .venv/bin/python benchmarks/limits_overhead.py --rounds 5 --requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import redis
import yaml

from nearline.config import hash_api_key
from nearline.testing import free_port, wait_until_ready

sys.path.insert(0, str(Path(__file__).parent))
from workload import start_nearline

KEY = "sk-bench-limits"
REDIS_URL = "redis://127.0.0.1:6379/0"
BODY = {
    "model": "m",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "stream": True,
}
LIMITED_KEY = {"rpm": 1_000_000, "tpm": 100_000_000, "budget_usd": 1_000_000.0}
LIMITED_TENANT = {"rpm": 1_000_000, "tpm": 100_000_000}


def config(folder: Path, name: str, mock_port: int, prefix: str) -> Path:
    limited = not name.startswith("off")
    key: dict[str, Any] = {"sha256": hash_api_key(KEY), "tenant": "bench"}
    sections: dict[str, Any] = {
        "server": {"log_level": "warning"},
        "auth": {
            "keys": [{**key, **(LIMITED_KEY if limited else {})}],
            "store": {"sqlite_path": str(folder / f"keys-{name}.sqlite")},
        },
        "cache": {"exact": {"enabled": False}, "semantic": {"enabled": False}},
        "request_log": {"enabled": False},
        "providers": {"up": {"base_url": f"http://127.0.0.1:{mock_port}/v1"}},
        "models": {
            "m": {
                "provider": "up",
                "upstream_model": "mock-1",
                "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
            }
        },
        "limits": {"redis_prefix": prefix, "tenants": {"bench": LIMITED_TENANT} if limited else {}},
    }
    if name == "redis":
        sections["redis"] = {"url": REDIS_URL}
    path = folder / f"nearline-{name}.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def closed_loop(url: str, requests: int, concurrency: int) -> list[str]:
    """``requests`` streamed chats, ``concurrency`` at a time; returns the failures."""
    failed: list[str] = []
    remaining = requests
    headers = {"Authorization": f"Bearer {KEY}"}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining, failed
        while remaining > 0:
            remaining -= 1
            async with session.post(f"{url}/v1/chat/completions", json=BODY) as response:
                body = await response.read()
                if response.status != 200 or b"[DONE]" not in body or b'"error"' in body:
                    failed.append(f"{response.status} {body[-300:]!r}")

    async with aiohttp.ClientSession(headers=headers) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1000, help="per gateway per round")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    prefix = f"nearline-bench:{uuid.uuid4().hex[:8]}:"
    modes = ("off", "memory", "redis", "off-control")
    processes = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mock_port = free_port()
        processes.append(
            start_nearline(
                [
                    "mock-upstream",
                    "--port",
                    str(mock_port),
                    "--ttft-ms",
                    "0",
                    "--tokens-per-s",
                    "100000",
                ]
            )
        )
        urls: dict[str, str] = {}
        gateways: dict[str, int] = {}
        try:
            wait_until_ready(f"http://127.0.0.1:{mock_port}", path="/mock/stats")
            for mode in modes:
                port = free_port()
                process = start_nearline(
                    [
                        "serve",
                        "--config",
                        str(config(folder, mode, mock_port, prefix)),
                        "--port",
                        str(port),
                    ]
                )
                processes.append(process)
                urls[mode] = f"http://127.0.0.1:{port}"
                gateways[mode] = process.pid
            for url in urls.values():
                wait_until_ready(url)
            for mode in modes:  # warm-up: connections, code paths, the Lua script loaded
                if failed := asyncio.run(closed_loop(urls[mode], 200, args.concurrency)):
                    raise SystemExit(f"{mode}: {len(failed)} failed in the warm-up: {failed[0]}")
            per_request: dict[str, list[float]] = {mode: [] for mode in modes}
            load = os.getloadavg()[0]
            for _ in range(args.rounds):
                for mode in modes:
                    before = cpu_s(gateways[mode])
                    failed = asyncio.run(closed_loop(urls[mode], args.requests, args.concurrency))
                    used = cpu_s(gateways[mode]) - before
                    if failed:
                        raise SystemExit(f"{mode}: {len(failed)} failed: {failed[0]}")
                    per_request[mode].append(used / args.requests * 1000)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=20)
            client = redis.Redis.from_url(REDIS_URL)
            stale = list(client.scan_iter(f"{prefix}*"))
            if stale:
                client.delete(*stale)
            client.close()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"load average {load:.2f} at the start; {args.rounds} rounds x {args.requests} "
        f"streamed requests per gateway, concurrency {args.concurrency}"
    )
    print("| gateway | CPU ms/request, per round | median | added vs off |")
    print("|---|---|---:|---:|")
    base = statistics.median(per_request["off"])
    for mode in modes:
        values = per_request[mode]
        median = statistics.median(values)
        rounds = ", ".join(f"{v:.3f}" for v in values)
        added = "—" if mode == "off" else f"{median - base:+.3f} ms"  # off-control: the noise
        print(f"| {mode} | {rounds} | {median:.3f} | {added} |")


if __name__ == "__main__":
    main()
