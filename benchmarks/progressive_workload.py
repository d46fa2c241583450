"""Time to first useful content, with and without progressive answers, on the cache trace.

A slow paid model (nearline's mock upstream: 1.5 s to first token, 40 tokens/s) answers
the trace of benchmarks/workload.py through two real ``nearline serve`` processes with the
same caches: one answers progressively (a semantic near-match's answer or a draft from the
local SmolLM2 model first, then the refined answer), one does not. Each request goes to both,
one after the other. Time to first useful content is the first preliminary or answer token.
Prints p50/p95 per path (what gave the first useful content).

    .venv/bin/python benchmarks/progressive_workload.py --requests 120 --concurrency 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import orjson
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from nearline.testing import free_port, wait_until_ready
from workload import (
    TraceRequest,
    build_trace,
    describe,
    percentile,
    start_nearline,
    tenant_keys,
)


def config(mock_port: int, progressive: bool, folder: Path) -> Path:
    path = folder / f"nearline-{progressive}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"log_level": "warning"},
                "auth": {"keys": tenant_keys()},
                "request_log": {"sqlite_path": str(folder / f"log-{progressive}.sqlite")},
                "providers": {"paid": {"base_url": f"http://127.0.0.1:{mock_port}/v1"}},
                "models": {
                    "m": {
                        "provider": "paid",
                        "upstream_model": "mock-1",
                        "progressive": progressive,
                    },
                    "smollm2-135m-instruct": {"provider": "local"},
                },
            }
        )
    )
    return path


async def first_useful(
    client: httpx.AsyncClient, url: str, request: TraceRequest
) -> tuple[str, float]:
    body = {
        "model": "m",
        "stream": True,
        "max_tokens": 40,
        "messages": [{"role": "user", "content": request.question}],
    }
    began = time.perf_counter()
    async with client.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer sk-{request.tenant}"},
    ) as response:
        source = response.headers.get("x-nearline-source", "?")
        path, at = None, None
        async for line in response.aiter_lines():
            if at is None and line.startswith(": nearline "):
                event = orjson.loads(line[len(": nearline ") :])
                if event["type"] == "preliminary":
                    path, at = event["source"], time.perf_counter()
            elif at is None and line.startswith("data: {"):
                chunk = orjson.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    path, at = source, time.perf_counter()
    assert path is not None
    assert at is not None
    return path, (at - began) * 1000


async def replay(
    trace: list[TraceRequest], urls: dict[str, str], concurrency: int
) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in urls}
    queue: asyncio.Queue[TraceRequest] = asyncio.Queue()
    for request in trace:
        queue.put_nowait(request)
    async with httpx.AsyncClient(timeout=120) as client:

        async def worker() -> None:
            while not queue.empty():
                request = queue.get_nowait()
                for name, url in urls.items():
                    path, ms = await first_useful(client, url, request)
                    results[name][path].append(ms)
                    results[name]["all"].append(ms)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    trace = build_trace(requests=args.requests)
    folder = Path(tempfile.mkdtemp())
    mock_port = free_port()
    ports = {"progressive": free_port(), "plain": free_port()}
    processes = [
        start_nearline(
            [
                "mock-upstream",
                "--port",
                str(mock_port),
                "--ttft-ms",
                "1500",
                "--tokens-per-s",
                "40",
                "--tokens",
                "40",
            ]
        )
    ]
    for name, port in ports.items():
        path = config(mock_port, name == "progressive", folder)
        processes.append(start_nearline(["serve", "--config", str(path), "--port", str(port)]))
    try:
        wait_until_ready(f"http://127.0.0.1:{mock_port}", path="/v1/models")
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for url in urls.values():
            wait_until_ready(url, timeout_s=120)
        results = asyncio.run(replay(trace, urls, args.concurrency))
        print(
            f"# {time.strftime('%Y-%m-%d %H:%M')} | {os.cpu_count()} cores | load "
            f"{os.getloadavg()[0]:.2f} | {len(trace)} requests: {describe(trace)} | "
            f"mock: 1.5 s to first token, 40 tokens/s | concurrency {args.concurrency}"
        )
        print("| gateway | first useful content from | requests | p50 (ms) | p95 (ms) |")
        print("|---|---|---:|---:|---:|")
        for name, paths in results.items():
            for path in sorted(paths, key=lambda p: (p == "all", p)):
                values = paths[path]
                print(
                    f"| {name} | {path} | {len(values)} | {percentile(values, 0.5):.0f} "
                    f"| {percentile(values, 0.95):.0f} |"
                )
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)


if __name__ == "__main__":
    main()
