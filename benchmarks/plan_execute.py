"""Plan-and-Execute next to strong-model-only: cost and latency, over real HTTP.

The strong and the cheap model are mock upstreams with the speeds and prices given below
(defaults: a frontier-like model at 300 ms TTFT, 50 tokens/s, 2.5/10 USD per million
input/output tokens; a small model at 50 ms, 250 tokens/s, 0.15/0.6 USD). The figures are
therefore a model of the trade-off under those assumptions, measured through nearline's
real plan helper (``gateway/plan.py``), HTTP provider and token accounting — not a claim
about any vendor. The mock writes words, not plans: ``NumberedPlan`` lays the strong
model's plan answer out as ``--steps`` numbered lines (its tokens, time and usage are the
mock's).

    .venv/bin/python benchmarks/plan_execute.py
    .venv/bin/python benchmarks/plan_execute.py --answer-tokens 800 --steps 5 --parallel
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

from nearline.config import HttpProviderSettings
from nearline.core.events import Delta, Event
from nearline.core.price import Price
from nearline.core.provider import Capabilities, Provider, ProviderCall
from nearline.gateway.plan import Endpoint, compare
from nearline.gateway.providers.openai_compat import OpenAICompatProvider
from nearline.testing.mock_fleet import mock_upstreams
from nearline.testing.mock_upstream import MockBehaviour


class NumberedPlan:
    """Passes the inner provider's answer on, laid out as ``steps`` numbered lines."""

    capabilities = Capabilities()

    def __init__(self, inner: Provider, steps: int) -> None:
        self.name = inner.name
        self._inner = inner
        self._steps = steps

    async def stream(self, call: ProviderCall) -> AsyncIterator[Event]:
        words: list[str] = []
        async for event in self._inner.stream(call):
            if isinstance(event, Delta):
                words.extend(event.text.split())
                continue
            if words:
                size = max(1, -(-len(words) // self._steps))
                lines = [words[i : i + size] for i in range(0, len(words), size)]
                yield Delta("\n".join(f"{n}. {' '.join(line)}" for n, line in enumerate(lines, 1)))
                words = []
            yield event

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        await self._inner.aclose()

    def is_ready(self) -> bool:
        return self._inner.is_ready()


async def run(args: argparse.Namespace) -> str:
    strong_mock = MockBehaviour(
        ttft_s=0.3, tokens_per_s=50, completion_tokens=max(args.answer_tokens, args.plan_tokens)
    )
    cheap_mock = MockBehaviour(ttft_s=0.05, tokens_per_s=250, completion_tokens=args.step_tokens)
    with mock_upstreams(strong=strong_mock, cheap=cheap_mock) as up:
        strong_http = OpenAICompatProvider(
            "strong", HttpProviderSettings(base_url=up["strong"].base_url)
        )
        cheap_http = OpenAICompatProvider(
            "cheap", HttpProviderSettings(base_url=up["cheap"].base_url)
        )
        strong_plan = NumberedPlan(strong_http, args.steps)
        try:
            comparison = await compare(
                args.task,
                Endpoint(strong_plan, "strong", Price(input_per_mtok=2.5, output_per_mtok=10.0)),
                Endpoint(cheap_http, "cheap", Price(input_per_mtok=0.15, output_per_mtok=0.6)),
                max_steps=args.steps,
                parallel=args.parallel,
                max_tokens=args.answer_tokens,
                plan_max_tokens=args.plan_tokens,
                step_max_tokens=args.step_tokens,
            )
        finally:
            await strong_plan.aclose()
            await cheap_http.aclose()
    plan = comparison.plan_and_execute
    return (
        comparison.table()
        + f"\n\nplan: {len(plan.plan)} steps, planning {plan.planning_latency_s:.3f} s; "
        + f"steps {'in parallel' if args.parallel else 'in order'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="Write a migration guide from v1 to v2 of our API.")
    parser.add_argument("--answer-tokens", type=int, default=600)
    parser.add_argument("--plan-tokens", type=int, default=60)
    parser.add_argument("--step-tokens", type=int, default=150)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--parallel", action="store_true")
    print(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
