"""Replay a realistic trace through nearline with and without its cache tiers.

The trace (benchmarks/workload.py): three tenants, Zipf-popular questions asked again word
for word or as their labelled Quora paraphrase, and a long tail of questions asked once.
Two real ``nearline serve`` processes front one mock upstream (a stand-in for a paid API:
300 ms to first token, 100 tokens/s): one with the exact and semantic tiers (the defaults),
one with both off. Each request goes to both, one after the other, so machine noise hits
both alike. Prints the hit rate per tier and per request kind, the upstream tokens avoided,
semantic hits on questions never asked before (false-hit candidates), and time to first
token p50/p95 with and without caching.

    .venv/bin/python benchmarks/cache_workload.py --requests 600 --concurrency 6
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
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


@dataclass
class Result:
    request: TraceRequest
    source: str
    ttft_ms: float
    tokens: int
    similarity: float | None


async def ask(client: httpx.AsyncClient, url: str, request: TraceRequest) -> Result:
    body = {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": request.question}],
    }
    key = f"sk-{request.tenant}"
    start_at = time.perf_counter()
    ttft = None
    tokens = 0
    async with client.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        source = response.headers.get("x-nearline-source", "?")
        similarity = response.headers.get("x-nearline-similarity")
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = orjson.loads(line[6:])
            if ttft is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                ttft = (time.perf_counter() - start_at) * 1000
            if chunk.get("usage"):
                tokens = chunk["usage"]["prompt_tokens"] + chunk["usage"]["completion_tokens"]
    return Result(
        request, source, ttft or float("nan"), tokens, float(similarity) if similarity else None
    )


async def replay_both(
    trace: list[TraceRequest], cached_url: str, plain_url: str, concurrency: int
) -> tuple[list[Result], list[Result]]:
    cached: list[Result] = []
    plain: list[Result] = []

    async def both(client: httpx.AsyncClient, request: TraceRequest) -> None:
        cached.append(await ask(client, cached_url, request))
        plain.append(await ask(client, plain_url, request))

    await replay(trace, concurrency, both)
    return cached, plain


def report(trace: list[TraceRequest], cached: list[Result], plain: list[Result]) -> None:
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')} | {os.cpu_count()} cores | load "
        f"{os.getloadavg()[0]:.2f} | {len(trace)} requests: {describe(trace)}"
    )
    sources = Counter(r.source for r in cached)
    print("\n| tier | answers | share |\n|---|---:|---:|")
    for tier in ("exact", "semantic", "inference"):
        print(f"| {tier} | {sources[tier]} | {sources[tier] / len(cached):.1%} |")
    print("\n| request kind | requests | exact | semantic | inference |\n|---|---:|---:|---:|---:|")
    for kind in ("first", "exact", "paraphrase", "unique"):
        rows = [r for r in cached if r.request.kind == kind]
        count = Counter(r.source for r in rows)
        print(
            f"| {kind} | {len(rows)} | {count['exact']} | {count['semantic']} "
            f"| {count['inference']} |"
        )
    avoided = sum(r.tokens for r in cached if r.source != "inference")
    total = sum(r.tokens for r in plain)
    print(
        f"\nupstream tokens: {total} without caching, {total - avoided} with "
        f"({avoided} avoided, {avoided / max(total, 1):.1%})"
    )
    wrong = [r for r in cached if r.request.kind in ("unique", "first") and r.source == "semantic"]
    print(f"semantic hits on questions never asked before (false-hit candidates): {len(wrong)}")
    for r in wrong[:5]:
        print(f"  {r.similarity:.3f} {r.request.question[:90]!r}")
    print("\n| gateway | TTFT p50 (ms) | TTFT p95 (ms) |\n|---|---:|---:|")
    for name, rows in (("with caching", cached), ("without caching", plain)):
        values = [r.ttft_ms for r in rows]
        print(f"| {name} | {percentile(values, 0.5):.0f} | {percentile(values, 0.95):.0f} |")
    hits = [r.ttft_ms for r in cached if r.source != "inference"]
    if hits:
        print(f"| cache hits only | {percentile(hits, 0.5):.0f} | {percentile(hits, 0.95):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=6)
    args = parser.parse_args()
    trace = build_trace(requests=args.requests)
    folder = Path(tempfile.mkdtemp())
    model = {"m": {"provider": "paid", "upstream_model": "mock-1"}}

    def configs(mock_port: int) -> dict[str, Path]:
        return {
            name: gateway_config(
                folder,
                name,
                mock_port,
                models=model,
                cache={"exact": {"enabled": cached}, "semantic": {"enabled": cached}},
            )
            for name, cached in (("cached", True), ("plain", False))
        }

    mock = ["--ttft-ms", "300", "--tokens-per-s", "100", "--tokens", "30"]
    with mock_and_gateways(mock, configs) as urls:
        cached, plain = asyncio.run(
            replay_both(trace, urls["cached"], urls["plain"], args.concurrency)
        )
    report(trace, cached, plain)


if __name__ == "__main__":
    main()
