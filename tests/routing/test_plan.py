"""Plan-and-Execute: the strong model plans, the cheap one executes each step; cost and
latency are reported next to the strong-model-only run. The executor is a mock upstream over
real HTTP; the planner is a scripted provider, so the plan's text is known."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from nearline.config import HttpProviderSettings
from nearline.core.events import Delta, Done, Event, Usage
from nearline.core.price import Price
from nearline.core.provider import Capabilities, ProviderCall
from nearline.gateway.plan import Endpoint, compare, parse_plan, plan_and_execute
from nearline.gateway.providers.openai_compat import OpenAICompatProvider
from nearline.testing.mock_fleet import mock_upstreams
from nearline.testing.mock_upstream import MockBehaviour

PLAN = "Here is the plan:\n1. Find the facts\n2) Write the summary\nStep 3: Check the numbers\n"
STRONG = Price(input_per_mtok=10.0, output_per_mtok=30.0)
CHEAP = Price(input_per_mtok=0.1, output_per_mtok=0.4)


class ScriptedProvider:
    """Answers every call with ``text`` and a fixed usage; records the prompts."""

    name = "scripted"
    capabilities = Capabilities()

    def __init__(self, text: str, usage: Usage) -> None:
        self._text = text
        self._usage = usage
        self.prompts: list[str] = []

    async def stream(self, call: ProviderCall) -> AsyncIterator[Event]:
        self.prompts.append(call.request.messages[-1].text)
        yield Delta(self._text)
        yield self._usage
        yield Done("stop")

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def is_ready(self) -> bool:
        return True


def test_parse_plan_reads_numbered_steps_and_caps_them():
    assert parse_plan(PLAN, 5) == ["Find the facts", "Write the summary", "Check the numbers"]
    assert parse_plan(PLAN, 2) == ["Find the facts", "Write the summary"]
    assert parse_plan("just do it", 5) == ["just do it"]


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
async def test_the_cheap_model_executes_each_step_and_costs_add_up(parallel: bool):
    planner_provider = ScriptedProvider(PLAN, Usage(prompt_tokens=100, completion_tokens=20))
    planner = Endpoint(planner_provider, "strong-1", STRONG)
    with mock_upstreams(cheap=MockBehaviour(ttft_s=0.01, tokens_per_s=2000)) as up:
        http = OpenAICompatProvider("cheap", HttpProviderSettings(base_url=up["cheap"].base_url))
        try:
            run = await plan_and_execute(
                "Summarise the report", planner, Endpoint(http, "mock-1", CHEAP), parallel=parallel
            )
            stats = await up["cheap"].stats()
        finally:
            await http.aclose()
    assert run.plan == ["Find the facts", "Write the summary", "Check the numbers"]
    assert stats["completed"] == 3
    assert [s.number for s in run.steps] == [1, 2, 3]
    assert all(len(s.text.split()) == 24 for s in run.steps)  # the mock's answers
    assert run.planning_cost_usd == pytest.approx((100 * 10.0 + 20 * 30.0) / 1e6)
    step_costs = [s.cost_usd for s in run.steps]
    assert all(cost > 0 for cost in step_costs)
    assert run.cost_usd == pytest.approx(run.planning_cost_usd + sum(step_costs))
    assert "Find the facts" in run.answer
    assert run.latency_s >= run.planning_latency_s


async def test_sequential_steps_see_the_results_so_far():
    planner = Endpoint(ScriptedProvider(PLAN, Usage(10, 10)), "strong-1", STRONG)
    executor_provider = ScriptedProvider("done", Usage(10, 1))
    await plan_and_execute("task", planner, Endpoint(executor_provider, "cheap-1", CHEAP))
    first, second, third = executor_provider.prompts
    assert "Result of step" not in first
    assert "Result of step 1: done" in second
    assert "Result of step 2: done" in third


async def test_compare_reports_both_runs_side_by_side():
    planner = Endpoint(ScriptedProvider(PLAN, Usage(100, 400)), "strong-1", STRONG)
    executor = Endpoint(ScriptedProvider("ok", Usage(150, 100)), "cheap-1", CHEAP)
    comparison = await compare("task", planner, executor)
    strong_cost = (100 * 10.0 + 400 * 30.0) / 1e6
    assert comparison.strong_only.cost_usd == pytest.approx(strong_cost)
    planned = comparison.plan_and_execute
    assert planned.cost_usd == pytest.approx(strong_cost + 3 * (150 * 0.1 + 100 * 0.4) / 1e6)
    table = comparison.table()
    assert "strong only" in table
    assert "plan + execute" in table
