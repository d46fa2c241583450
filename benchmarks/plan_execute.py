"""Plan-and-Execute next to strong-model-only, both through the gateway, in the same run.

The gateway serves two models: ``research`` (``provider: plan:deep`` — the strong tier
plans, the cheap tier executes each step) and ``strong`` (the strong tier alone). Both
tiers are mock upstreams with the speeds and prices below (defaults: a frontier-like model
at 300 ms TTFT, 50 tokens/s, 2.5/10 USD per million input/output tokens; a small model at
50 ms, 250 tokens/s, 0.15/0.6 USD), the planner's mock writing its answer as ``--steps``
numbered lines. The figures are therefore a model of the trade-off under those assumptions,
measured through nearline's real gateway (HTTP, SSE, the plan provider, token accounting:
the cost is the usage's ``nearline.cost_usd``) — not a claim about any vendor.

    .venv/bin/python benchmarks/plan_execute.py
    .venv/bin/python benchmarks/plan_execute.py --answer-tokens 800 --steps 5 --parallel
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import httpx
import orjson

from nearline.app import create_app
from nearline.config import load_settings
from nearline.testing import run_in_thread
from nearline.testing.mock_fleet import mock_upstreams
from nearline.testing.mock_upstream import MockBehaviour

STRONG = {"input_per_mtok": 2.5, "output_per_mtok": 10.0}
CHEAP = {"input_per_mtok": 0.15, "output_per_mtok": 0.6}


def ask(url: str, model: str, task: str, max_tokens: int) -> dict[str, Any]:
    """One streamed answer: time to first useful content, total time, cost, calls."""
    started = time.perf_counter()
    first_useful: float | None = None
    usage: dict[str, Any] = {}
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": task}],
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        timeout=120,
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            content = '"content":"' in line and '"content":""' not in line
            useful = line.startswith(": nearline ") or content
            if useful and first_useful is None:
                first_useful = time.perf_counter() - started
            if line.startswith("data: {") and '"usage"' in line:
                usage = orjson.loads(line.removeprefix("data: ")).get("usage") or usage
    extension = usage.get("nearline") or {}
    return {
        "first_useful_s": first_useful,
        "total_s": time.perf_counter() - started,
        "cost_usd": extension.get("cost_usd"),
        "calls": len(extension.get("calls", [])) or 1,
        "prompt_tokens": usage.get("prompt_tokens", 0),
        "completion_tokens": usage.get("completion_tokens", 0),
    }


def run(args: argparse.Namespace) -> str:
    strong_mock = MockBehaviour(
        ttft_s=0.3,
        tokens_per_s=50,
        completion_tokens=max(args.answer_tokens, args.plan_tokens),
        numbered_lines=args.steps,
    )
    cheap_mock = MockBehaviour(ttft_s=0.05, tokens_per_s=250, completion_tokens=args.step_tokens)
    with mock_upstreams(strong=strong_mock, cheap=cheap_mock) as up:
        settings = load_settings(
            providers={
                "strong-up": {"base_url": up["strong"].base_url},
                "cheap-up": {"base_url": up["cheap"].base_url},
            },
            models={
                "research": {"provider": "plan:deep"},
                "strong": {"provider": "frontier", "price": STRONG},
            },
            cache={"exact": {"enabled": False}},
            routing={
                "tiers": {
                    "frontier": {
                        "deployments": [{"provider": "strong-up", "upstream_model": "s", **STRONG}]
                    },
                    "light": {
                        "deployments": [{"provider": "cheap-up", "upstream_model": "c", **CHEAP}]
                    },
                },
                "plans": {
                    "deep": {
                        "planner": "frontier",
                        "executor": "light",
                        "max_steps": args.steps,
                        "parallel": args.parallel,
                        "plan_max_tokens": args.plan_tokens,
                        "step_max_tokens": args.step_tokens,
                    }
                },
            },
        )
        with run_in_thread(create_app(settings)) as server:
            strong = ask(server.url, "strong", args.task, args.answer_tokens)
            planned = ask(server.url, "research", args.task, args.answer_tokens)
    if strong["cost_usd"] is None:  # one call: the model's price times its usage
        strong["cost_usd"] = (
            strong["prompt_tokens"] * STRONG["input_per_mtok"]
            + strong["completion_tokens"] * STRONG["output_per_mtok"]
        ) / 1e6
    rows = [("run", "calls", "first useful s", "total s", "cost USD")]
    for name, row in (("strong only", strong), ("plan + execute", planned)):
        cost = row["cost_usd"]
        rows.append(
            (
                name,
                str(row["calls"]),
                f"{row['first_useful_s']:.3f}",
                f"{row['total_s']:.3f}",
                "n/a" if cost is None else f"{cost:.6f}",
            )
        )
    table = "\n".join(f"{a:<16}{b:>6}{c:>16}{d:>10}{e:>12}" for a, b, c, d, e in rows)
    ratio = planned["cost_usd"] / strong["cost_usd"]
    order = "in parallel" if args.parallel else "in order"
    return table + f"\n\ncost ratio plan/strong {ratio:.3f}; steps {order}; through the gateway"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="Write a migration guide from v1 to v2 of our API.")
    parser.add_argument("--answer-tokens", type=int, default=600)
    parser.add_argument("--plan-tokens", type=int, default=60)
    parser.add_argument("--step-tokens", type=int, default=150)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--parallel", action="store_true")
    print(run(parser.parse_args()))


if __name__ == "__main__":
    main()
