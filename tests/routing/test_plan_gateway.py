"""Issue 19: a plan is a model of the catalogue, answered through the gateway.

The planner, the executor and (where a test needs one) a separate strong fallback are each
a mock upstream over real HTTP; the planner's mock writes its answer as numbered lines.
What each mock was asked is read from its counters."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from nearline.config import hash_api_key
from nearline.gateway.telemetry.requestlog import TABLE
from nearline.testing import http
from nearline.testing.mock_upstream import MockBehaviour

PLANNER = MockBehaviour(ttft_s=0.01, tokens_per_s=2000, completion_tokens=18, numbered_lines=3)
EXECUTOR = MockBehaviour(ttft_s=0.01, tokens_per_s=2000, completion_tokens=12)
STRONG_PRICE = {"input_per_mtok": 10.0, "output_per_mtok": 30.0}
CHEAP_PRICE = {"input_per_mtok": 0.1, "output_per_mtok": 0.4}
TASK = "Write a migration guide from v1 to v2 of our API."


def plan_gateway(make_gateway, planner, executor, *, strong=None, plan=None, **settings: Any):
    providers = {"planner": {"base_url": planner.base_url}, "exec": {"base_url": executor.base_url}}
    tiers: dict[str, Any] = {
        "frontier": {
            "deployments": [{"provider": "planner", "upstream_model": "p", **STRONG_PRICE}]
        },
        "light": {"deployments": [{"provider": "exec", "upstream_model": "e", **CHEAP_PRICE}]},
    }
    if strong is not None:
        providers["strong-up"] = {"base_url": strong.base_url}
        tiers["strong"] = {
            "deployments": [{"provider": "strong-up", "upstream_model": "s", **STRONG_PRICE}]
        }
    routing = {
        "tiers": tiers,
        "plans": {"deep": {"planner": "frontier", "executor": "light", **(plan or {})}},
        **settings.pop("routing", {}),
    }
    return make_gateway(
        providers=providers,
        models={
            "research": {"provider": "plan:deep"},
            "m": {"provider": "light"},
            **settings.pop("models", {}),
        },
        routing=routing,
        cache=settings.pop("cache", {"exact": {"enabled": False}}),
        **settings,
    )


def sse_items(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """The stream in order: ("nearline", comment body) and ("data", chunk) items."""
    items: list[tuple[str, dict[str, Any]]] = []
    for line in response.iter_lines():
        if line.startswith(": nearline "):
            items.append(("nearline", orjson.loads(line.removeprefix(": nearline "))))
        elif line.startswith("data: ") and line != "data: [DONE]":
            items.append(("data", orjson.loads(line.removeprefix("data: "))))
    return items


def stream_chat(gateway, model: str = "research", **body: Any) -> list[tuple[str, Any]]:
    with http.stream(
        "POST",
        f"{gateway.v1}/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": TASK}],
            "stream": True,
            "stream_options": {"include_usage": True},
            **body,
        },
        timeout=30,
    ) as response:
        assert response.status_code == 200, response.read()
        return sse_items(response)


def test_the_plan_streams_first_then_each_step_then_the_answer(make_gateway, tmp_path):
    planner, executor = (
        make_gateway.mock(PLANNER, fresh=True),
        make_gateway.mock(EXECUTOR, fresh=True),
    )
    db = tmp_path / "log.sqlite"
    gateway = plan_gateway(
        make_gateway, planner, executor, request_log={"sqlite_path": str(db)}, cache={}
    )
    items = stream_chat(gateway)
    kinds = [
        "preliminary"
        if kind == "nearline" and body["type"] == "preliminary"
        else "replace"
        if kind == "nearline"
        else "usage"
        if not body["choices"]
        else "delta"
        if body["choices"][0]["delta"].get("content")
        else "other"
        for kind, body in items
    ]
    first_useful = kinds.index("preliminary")
    assert "delta" not in kinds[:first_useful]  # the plan comes first
    preliminaries = [body["text"] for kind, body in items if kind == "nearline" and "text" in body]
    assert preliminaries[0].startswith("Plan:\n1.")  # the planner's first tokens
    assert preliminaries[0] != preliminaries[-1]  # ... and it grows as the plan streams
    assert [p for p in preliminaries if "Step 1:" in p], "each step's result is shown"
    assert "Step 3:" in preliminaries[-1]
    assert kinds.index("replace") < kinds.index("delta") < kinds.index("usage")
    assert all(body["source"] == "plan:deep" for kind, body in items if "text" in body)
    answer = "".join(
        body["choices"][0]["delta"].get("content") or ""
        for kind, body in items
        if kind == "data" and body["choices"]
    )
    assert answer.startswith("1. ") and "\n\n3. " in answer  # the step results joined
    usage = items[-1][1]["usage"]
    calls = usage["nearline"]["calls"]
    assert [(c["role"], c["step"], c["tier"]) for c in calls] == [
        ("plan", None, "frontier"),
        ("step", 1, "light"),
        ("step", 2, "light"),
        ("step", 3, "light"),
    ]
    assert all(c["outcome"] == "ok" and c["latency_ms"] > 0 for c in calls)
    assert calls[0]["cost_usd"] == pytest.approx(
        (calls[0]["prompt_tokens"] * 10.0 + 18 * 30.0) / 1e6
    )
    assert usage["nearline"]["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in calls))
    assert usage["completion_tokens"] == 18 + 3 * 12
    assert (planner.requests(), executor.requests()) == (1, 3)
    # a plain OpenAI body: only the answer as its content (the plan rides in "nearline")
    body = gateway.chat("Plan the v3 launch.", model="research").json()
    assert body["choices"][0]["message"]["content"].startswith("1. ")
    assert body["usage"]["nearline"]["cost_usd"] > 0
    assert body["nearline"]["preliminary"]["text"].startswith("Plan:\n1.")
    # the final answer is cached like any model's: the same request again plans nothing
    again = gateway.chat("Plan the v3 launch.", model="research")
    assert again.headers["x-nearline-source"] == "exact"
    assert again.json()["choices"][0]["message"] == body["choices"][0]["message"]
    assert (planner.requests(), executor.requests()) == (2, 6)
    assert gateway.metric("nearline_plan_answers_total", plan="deep", outcome="planned") == 2
    assert gateway.metric("nearline_plan_calls_total", plan="deep", role="step", outcome="ok") == 6
    assert gateway.metric("nearline_plan_cost_usd_total", plan="deep", role="plan") > 0
    gateway.stop()
    rows = (
        sqlite3.connect(db).execute(f"SELECT cost_usd, calls FROM {TABLE} ORDER BY ts").fetchall()
    )
    assert rows[0][0] == pytest.approx(usage["nearline"]["cost_usd"])
    assert orjson.loads(rows[0][1]) == calls  # each call's figures, as the usage gave them
    assert rows[-1][1] is None  # the exact tier's replay: one answer, no calls


def test_parallel_steps_and_a_synthesised_answer_over_websocket(make_gateway):
    planner, executor = (
        make_gateway.mock(PLANNER, fresh=True),
        make_gateway.mock(EXECUTOR, fresh=True),
    )
    synth = make_gateway.mock(EXECUTOR, fresh=True)
    gateway = plan_gateway(
        make_gateway,
        planner,
        executor,
        strong=synth,
        plan={"parallel": True, "synthesise": "strong"},
    )

    async def talk() -> list[dict[str, Any]]:
        async with connect(gateway.ws) as socket:
            await socket.send(
                orjson.dumps(
                    {
                        "type": "chat",
                        "id": "r1",
                        "body": {
                            "model": "research",
                            "messages": [{"role": "user", "content": TASK}],
                        },
                    }
                ).decode()
            )
            messages = []
            while not messages or messages[-1]["type"] not in ("done", "error"):
                messages.append(orjson.loads(await asyncio.wait_for(socket.recv(), 10)))
            return messages

    messages = asyncio.run(talk())
    types = [m["type"] for m in messages]
    assert types[0] == "preliminary" and types[-2:] == ["usage", "done"]
    assert types.index("replace") < types.index("delta")
    assert "Step 3:" in [m for m in messages if m["type"] == "preliminary"][-1]["text"]
    roles = [c["role"] for c in messages[-2]["nearline"]["calls"]]
    assert roles == ["plan", "step", "step", "step", "synthesis"]
    assert (planner.requests(), executor.requests(), synth.requests()) == (1, 3, 1)


@pytest.mark.parametrize(
    ("planner_behaviour", "executor_behaviour", "reason"),
    [
        (MockBehaviour(ttft_s=0.01, tokens_per_s=2000), EXECUTOR, "unusable plan"),
        (PLANNER, MockBehaviour(ttft_s=0.01, error_rate=1.0), "step 1 upstream_error"),
    ],
    ids=["not-a-plan", "failing-executor"],
)
def test_a_failed_plan_falls_back_to_the_strong_model_alone(
    make_gateway, planner_behaviour, executor_behaviour, reason
):
    planner = make_gateway.mock(planner_behaviour, fresh=True)
    executor = make_gateway.mock(executor_behaviour, fresh=True)
    strong = make_gateway.mock(EXECUTOR, fresh=True)
    gateway = plan_gateway(
        make_gateway, planner, executor, strong=strong, plan={"fallback": "strong"}
    )
    items = stream_chat(gateway)
    answer = "".join(
        body["choices"][0]["delta"].get("content") or ""
        for kind, body in items
        if kind == "data" and body["choices"]
    )
    assert len(answer.split()) == 12  # the strong mock's whole answer, nothing of the plan
    assert ("nearline", {"type": "replace", "action": "replace"}) in items
    calls = items[-1][1]["usage"]["nearline"]["calls"]
    assert calls[-1]["role"] == "fallback" and calls[-1]["outcome"] == "ok"
    assert strong.requests() == 1
    assert (
        gateway.metric(
            "nearline_plan_answers_total", plan="deep", outcome="fallback", reason=reason
        )
        == 1
    )


def test_on_failure_error_fails_the_request_and_never_sends_half_an_answer(make_gateway):
    planner = make_gateway.mock(MockBehaviour(ttft_s=0.01), fresh=True)  # not a plan
    executor = make_gateway.mock(EXECUTOR, fresh=True)
    gateway = plan_gateway(make_gateway, planner, executor, plan={"on_failure": "error"})
    response = gateway.chat(TASK, model="research", nearline={"progressive": False})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "plan_failed"
    assert executor.requests() == 0


def test_a_step_past_its_timeout_falls_back(make_gateway):
    planner = make_gateway.mock(PLANNER, fresh=True)
    executor = make_gateway.mock(MockBehaviour(ttft_s=5.0), fresh=True)
    gateway = plan_gateway(make_gateway, planner, executor, plan={"step_timeout_s": 0.3})
    items = stream_chat(gateway)
    calls = items[-1][1]["usage"]["nearline"]["calls"]
    assert [(c["role"], c["outcome"]) for c in calls] == [
        ("plan", "ok"),
        ("step", "timeout"),
        ("fallback", "ok"),
    ]
    executor.wait_for("cancelled", 1)  # the timed-out step's upstream call was closed


def test_closing_the_stream_cancels_every_step_in_flight(make_gateway):
    planner = make_gateway.mock(PLANNER, fresh=True)
    executor = make_gateway.mock(MockBehaviour(ttft_s=5.0), fresh=True)  # steps in flight
    gateway = plan_gateway(make_gateway, planner, executor, plan={"parallel": True})
    with http.stream(
        "POST",
        f"{gateway.v1}/chat/completions",
        json={"model": "research", "messages": [{"role": "user", "content": TASK}], "stream": True},
        timeout=30,
    ) as response:
        lines = response.iter_lines()  # kept: dropping the iterator closes the response
        for line in lines:
            if line.startswith(": nearline "):
                text = orjson.loads(line.removeprefix(": nearline "))["text"]
                if "\n3. " in text and " \n" not in text:  # the whole plan: steps launched
                    break
        executor.wait_for("active", 3)  # all three steps are waiting on the executor
    executor.wait_for("cancelled", 3)  # the client left: every step's upstream call closed
    assert executor.stats()["completed"] == 0
    gateway.settle()
    assert (
        gateway.metric("nearline_plan_calls_total", plan="deep", role="step", outcome="cancelled")
        == 3
    )


def test_rights_reach_the_plans_tiers_and_no_further(make_gateway):
    planner, executor = (
        make_gateway.mock(PLANNER, fresh=True),
        make_gateway.mock(EXECUTOR, fresh=True),
    )
    gateway = plan_gateway(
        make_gateway,
        planner,
        executor,
        auth={
            "keys": [
                {"sha256": hash_api_key("sk-research"), "tenant": "r", "models": ["research"]},
                {"sha256": hash_api_key("sk-chat"), "tenant": "c", "models": ["m"]},
            ]
        },
        routing={"rules": [{"tier": "plan:deep", "when": {"headers": {"x-deep": "1"}}}]},
    )
    allowed = gateway.chat(TASK, model="research", key="sk-research")
    assert allowed.status_code == 200  # the plan reaches its planner and executor tiers
    assert gateway.chat(TASK, model="research", key="sk-chat").status_code == 403
    routed = gateway.chat(TASK, model="m", key="sk-chat", headers={"x-deep": "1"})
    assert routed.status_code == 403
    assert "plan:deep" in routed.json()["error"]["message"]
    assert "frontier" in routed.json()["error"]["message"]  # the tier it would have called
    assert planner.requests() == 1  # only the allowed request planned


def test_an_anthropic_client_asks_the_plan_model_and_gets_one_answer(make_gateway):
    """Any client: the Anthropic SDK on /v1/messages reaches the same plan (non-streamed and
    streamed); it sees the final answer only, never the plan's preliminaries."""
    import anthropic

    planner = make_gateway.mock(PLANNER, fresh=True)
    executor = make_gateway.mock(EXECUTOR, fresh=True)
    gateway = plan_gateway(make_gateway, planner, executor)
    client = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
    message = client.messages.create(
        model="research", max_tokens=200, messages=[{"role": "user", "content": TASK}]
    )
    text = "".join(block.text for block in message.content if block.type == "text")
    assert text and not text.startswith("Plan:")  # the answer, not the plan
    assert message.stop_reason == "end_turn"
    assert (planner.requests(), executor.requests()) == (1, 3)
    with client.messages.stream(
        model="research", max_tokens=200, messages=[{"role": "user", "content": TASK}]
    ) as stream:
        streamed = "".join(stream.text_stream)
    assert streamed == text  # the same plan's joined steps, streamed
