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

sys.path.insert(0, str(Path(__file__).parent))
from workload import (
    TraceRequest,
    build_trace,
    describe,
    gateway_config,
    mock_and_gateways,
    percentile,
    replay,
)


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


async def replay_all(
    trace: list[TraceRequest], urls: dict[str, str], concurrency: int
) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in urls}

    async def each_gateway(client: httpx.AsyncClient, request: TraceRequest) -> None:
        for name, url in urls.items():
            path, ms = await first_useful(client, url, request)
            results[name][path].append(ms)
            results[name]["all"].append(ms)

    await replay(trace, concurrency, each_gateway)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    trace = build_trace(requests=args.requests)
    folder = Path(tempfile.mkdtemp())

    def configs(mock_port: int) -> dict[str, Path]:
        return {
            name: gateway_config(
                folder,
                name,
                mock_port,
                models={
                    "m": {"provider": "paid", "upstream_model": "mock-1", "progressive": on},
                    "smollm2-135m-instruct": {"provider": "local"},
                },
            )
            for name, on in (("progressive", True), ("plain", False))
        }

    mock = ["--ttft-ms", "1500", "--tokens-per-s", "40", "--tokens", "40"]
    with mock_and_gateways(mock, configs) as urls:
        results = asyncio.run(replay_all(trace, urls, args.concurrency))
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


if __name__ == "__main__":
    main()
