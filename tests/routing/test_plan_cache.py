"""Issue 19 point 3: caching applies to each call a plan makes, not only to its final answer.

The final answer's exact entry is kept out of the way by asking the same task with another
``temperature`` (the plan's own calls do not carry it, so their keys are unchanged): what
the upstream mocks count is then what the step cache saved."""

from __future__ import annotations

from typing import Any

import pytest

from nearline.testing.mock_upstream import MockBehaviour

from .test_plan_gateway import EXECUTOR, PLANNER, TASK, plan_gateway, stream_chat


def final(items: list[tuple[str, Any]]) -> tuple[str, dict[str, Any]]:
    answer = "".join(
        body["choices"][0]["delta"].get("content") or ""
        for kind, body in items
        if kind == "data" and body["choices"]
    )
    return answer, items[-1][1]["usage"]


def test_a_repeated_plan_replays_its_planner_and_steps_from_the_exact_tier(make_gateway):
    planner, executor = (
        make_gateway.mock(PLANNER, fresh=True),
        make_gateway.mock(EXECUTOR, fresh=True),
    )
    gateway = plan_gateway(make_gateway, planner, executor, cache={})
    first, paid = final(stream_chat(gateway))
    assert (planner.requests(), executor.requests()) == (1, 3)
    again, replayed = final(stream_chat(gateway, temperature=0.5))  # the final answer misses
    assert (planner.requests(), executor.requests()) == (1, 3)  # every call replayed
    assert again == first
    calls = replayed["nearline"]["calls"]
    assert [(c["role"], c["step"], c["outcome"]) for c in calls] == [
        ("plan", None, "cached"),
        ("step", 1, "cached"),
        ("step", 2, "cached"),
        ("step", 3, "cached"),
    ]
    assert replayed["nearline"]["cost_usd"] == 0.0 < paid["nearline"]["cost_usd"]
    assert replayed["prompt_tokens_details"]["cached_tokens"] == replayed["prompt_tokens"] > 0
    assert gateway.metric("nearline_plan_calls_total", plan="deep", role="step", outcome="cached")


@pytest.mark.parametrize(
    "no_store",
    [{"headers": {"Cache-Control": "no-store"}}, {"nearline": {"cache": "no-store"}}],
    ids=["header", "body"],
)
def test_no_store_keeps_the_plans_calls_out_of_the_cache(make_gateway, no_store):
    planner, executor = (
        make_gateway.mock(PLANNER, fresh=True),
        make_gateway.mock(EXECUTOR, fresh=True),
    )
    gateway = plan_gateway(make_gateway, planner, executor, cache={})
    for _ in range(2):
        response = gateway.chat(TASK, model="research", **no_store)
        assert response.status_code == 200
    assert (planner.requests(), executor.requests()) == (2, 6)
    gateway.chat(TASK, model="research", temperature=0.5)  # nothing was stored to replay
    assert (planner.requests(), executor.requests()) == (3, 9)


def test_a_synthesis_is_cached_and_an_unusable_plan_is_not(make_gateway):
    planner = make_gateway.mock(MockBehaviour(ttft_s=0.01, tokens_per_s=2000), fresh=True)
    executor = make_gateway.mock(EXECUTOR, fresh=True)
    strong = make_gateway.mock(EXECUTOR, fresh=True)
    gateway = plan_gateway(
        make_gateway, planner, executor, strong=strong, plan={"fallback": "strong"}, cache={}
    )
    for temperature in (0.1, 0.2):  # the fallback answers the request itself: a new key
        _answer, usage = final(stream_chat(gateway, temperature=temperature))
        assert [c["role"] for c in usage["nearline"]["calls"]] == ["plan", "fallback"]
    assert planner.requests() == 2  # not a plan: never replayed
    assert strong.requests() == 2

    planner, synth = make_gateway.mock(PLANNER, fresh=True), make_gateway.mock(EXECUTOR, fresh=True)
    gateway = plan_gateway(
        make_gateway, planner, executor, strong=synth, plan={"synthesise": "strong"}, cache={}
    )
    executor_before = executor.requests()
    first, _ = final(stream_chat(gateway))
    again, usage = final(stream_chat(gateway, temperature=0.5))
    assert again == first
    synthesis = usage["nearline"]["calls"][-1]
    assert (synthesis["role"], synthesis["outcome"]) == ("synthesis", "cached")
    executed = executor.requests() - executor_before
    assert (planner.requests(), executed, synth.requests()) == (1, 3, 1)
