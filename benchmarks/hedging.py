"""Does hedging cut the tail of time to first token, and what does it cost?

Two deployments of one tier, each a mock upstream over real HTTP whose first-token latency
has a heavy tail: ``--tail-rate`` of requests (5 %) wait ``--tail-factor`` times (10x) the
usual ``--ttft-ms``. Each deployment's tail is drawn independently. The same requests go
through a ``TieredProvider`` in three modes:

* ``off``    — no hedging: the first deployment answers, however slow;
* ``budget`` — hedge to the second deployment after a fixed TTFT budget (``--budget-ms``);
* ``p95``/``p90`` — hedge at the deployment's observed p95 (p90) TTFT; the budget is set
  10x higher, so the percentile decides once 100 TTFTs are seen.

Requests run closed-loop with ``--concurrency`` in flight; each mode first sends
``--warmup`` requests that are not measured, so the observed percentiles have samples (the
TTFT window holds the last 200). TTFT is measured from the call to the first token. Cost
uses ``--price-in``/``--price-out`` (USD per million tokens) and assumes, conservatively,
that every started attempt is billed for its prompt; a cancelled hedge loser never produced
a token, so it adds no completion tokens. ``losers`` counts the
attempts cancelled because another won; ``closed`` is read from the mocks' own counters:
losers whose upstream was already streaming and saw its connection close (a loser cancelled
before the mock read its request shows only in ``losers``).

    .venv/bin/python benchmarks/hedging.py               # 300 warm-up + 1000 requests per mode
    .venv/bin/python benchmarks/hedging.py --requests 2000 --concurrency 16 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from starlette.requests import ClientDisconnect

from nearline.config import load_settings
from nearline.core.errors import NearlineError
from nearline.core.events import Delta, Usage
from nearline.core.provider import ProviderCall
from nearline.core.request import ChatRequest
from nearline.gateway.providers.build import build_providers
from nearline.gateway.routing.telemetry import RoutingCounters
from nearline.gateway.routing.tiered import TieredProvider
from nearline.testing.mock_fleet import MockUpstream, mock_upstreams, provider_settings
from nearline.testing.mock_upstream import MockBehaviour

PROMPT_WORDS = 200
MODES = ("off", "budget", "p95", "p90")


@dataclass
class Result:
    mode: str
    requests: int
    errors: int
    ttft_p50_ms: float
    ttft_p90_ms: float
    ttft_p99_ms: float
    ttft_max_ms: float
    attempts_per_request: float
    hedges: int
    losers: int
    closed_upstream: int
    cost_per_1k_usd: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def tier_settings(up: dict[str, MockUpstream], mode: str, budget_s: float) -> dict[str, Any]:
    observed = mode in ("p95", "p90")
    hedge: dict[str, Any] = {"enabled": mode != "off", "use_observed_p95": observed}
    if mode == "p90":
        hedge["percentile"] = 0.90
    return {
        "providers": provider_settings(up, read_timeout_s=30, max_connections=1000),
        "models": {"chat": {"provider": "tier"}},
        "routing": {
            "tiers": {
                "tier": {
                    "deployments": [
                        {"provider": name, "upstream_model": "mock-1", "name": name} for name in up
                    ],
                    "ttft_budget_s": 10 * budget_s if observed else budget_s,
                    "hedge": hedge,
                }
            }
        },
    }


async def run_mode(mode: str, args: argparse.Namespace) -> Result:
    def heavy_tailed(seed: int) -> MockBehaviour:
        return MockBehaviour(
            ttft_s=args.ttft_ms / 1000,
            tokens_per_s=2000,
            slow_rate=args.tail_rate,
            slow_factor=args.tail_factor,
            seed=seed,
        )

    with mock_upstreams(east=heavy_tailed(1), west=heavy_tailed(2)) as up:
        counters = RoutingCounters()
        settings = load_settings(**tier_settings(up, mode, args.budget_ms / 1000))
        tier = build_providers(settings, counters)["tier"]
        assert isinstance(tier, TieredProvider)
        prompt = " ".join(f"w{i}" for i in range(PROMPT_WORDS))
        ttfts: list[float] = []
        usages: list[Usage] = []
        errors = 0

        async def one(index: int) -> None:
            nonlocal errors
            request = ChatRequest.model_validate(
                {"model": "chat", "messages": [{"role": "user", "content": f"{index} {prompt}"}]}
            )
            started = time.perf_counter()
            first: float | None = None
            try:
                async for event in tier.stream(ProviderCall(request, "chat", "bench")):
                    if first is None and isinstance(event, Delta):
                        first = time.perf_counter() - started
                    if isinstance(event, Usage):
                        usages.append(event)
            except NearlineError:
                errors += 1
                return
            if first is not None:
                ttfts.append(first)

        async def run(first: int, count: int) -> None:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for index in range(first, first + count):
                queue.put_nowait(index)

            async def worker() -> None:
                while not queue.empty():
                    await one(queue.get_nowait())

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            await asyncio.sleep(0.3)  # let the mocks notice the last closed connections

        async def closed() -> int:
            return sum([(await u.stats())["cancelled"] for u in up.values()])

        await run(0, args.warmup)
        ttfts.clear()
        usages.clear()
        errors = 0
        warm = snapshot(counters), await closed()
        await run(args.warmup, args.requests)
        attempts, hedges, losers = (b - a for a, b in zip(warm[0], snapshot(counters), strict=True))
        closed_upstream = await closed() - warm[1]
        for deployment in tier.deployments:  # the tier owns none of its providers
            await deployment.provider.aclose()
    prompt_tokens = sum(u.prompt_tokens for u in usages) / max(1, len(usages))
    completion = sum(u.completion_tokens for u in usages)
    cost = (attempts * prompt_tokens * args.price_in + completion * args.price_out) / 1e6
    return Result(
        mode=mode,
        requests=args.requests,
        errors=errors,
        ttft_p50_ms=1000 * percentile(ttfts, 0.50),
        ttft_p90_ms=1000 * percentile(ttfts, 0.90),
        ttft_p99_ms=1000 * percentile(ttfts, 0.99),
        ttft_max_ms=1000 * max(ttfts),
        attempts_per_request=attempts / args.requests,
        hedges=hedges,
        losers=losers,
        closed_upstream=closed_upstream,
        cost_per_1k_usd=1000 * cost / args.requests,
    )


def snapshot(counters: RoutingCounters) -> tuple[int, int, int]:
    """Attempts, hedges and cancelled losers so far."""
    return (
        sum(counters.attempts.values()),
        counters.hedges(),
        sum(counters.cancellations.values()),
    )


def quiet_client_disconnects() -> None:
    """A loser cancelled before the mock read its body makes uvicorn log a traceback."""

    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not (record.exc_info and isinstance(record.exc_info[1], ClientDisconnect))

    logging.getLogger("uvicorn.error").addFilter(Drop())


def table(results: list[Result]) -> str:
    header = (
        f"{'mode':<8}{'requests':>9}{'errors':>7}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}"
        f"{'max ms':>8}{'attempts/req':>13}{'hedges':>7}{'losers':>7}{'closed':>7}"
        f"{'USD/1k req':>11}"
    )
    rows = [
        f"{r.mode:<8}{r.requests:>9}{r.errors:>7}{r.ttft_p50_ms:>8.1f}{r.ttft_p90_ms:>8.1f}"
        f"{r.ttft_p99_ms:>8.1f}{r.ttft_max_ms:>8.1f}{r.attempts_per_request:>13.3f}"
        f"{r.hedges:>7}{r.losers:>7}{r.closed_upstream:>7}{r.cost_per_1k_usd:>11.4f}"
        for r in results
    ]
    return "\n".join([header, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--tail-rate", type=float, default=0.05)
    parser.add_argument("--tail-factor", type=float, default=10.0)
    parser.add_argument("--budget-ms", type=float, default=200.0)
    parser.add_argument("--price-in", type=float, default=2.5)
    parser.add_argument("--price-out", type=float, default=10.0)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    quiet_client_disconnects()
    results = [asyncio.run(run_mode(mode, args)) for mode in args.modes]
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(table(results))


if __name__ == "__main__":
    main()
