"""End to end: a public model backed by a tier, through ``create_app(load_settings(...))``
(the ``make_gateway`` fixture), asked with the official ``openai`` SDK; the upstreams are
mock servers over real HTTP."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest

from nearline.gateway.routing.tiered import TieredProvider
from nearline.testing.mock_upstream import MockBehaviour

STALL_S = 20.0
FAST = MockBehaviour(ttft_s=0.02, tokens_per_s=2000)
MESSAGES: Any = [{"role": "user", "content": "hedge me"}]


def providers(up: dict[str, Any], **http: Any) -> dict[str, Any]:
    return {name: {"base_url": mock.base_url, **http} for name, mock in up.items()}


def gateway_settings(up: dict[str, Any], order: list[str], **tier: Any) -> dict[str, Any]:
    return dict(
        providers=providers(up, read_timeout_s=30),
        models={"chat": {"provider": "frontier"}},
        cache={"exact": {"enabled": False}, "semantic": {"enabled": False}},  # all reach the tier
        routing={
            "tiers": {
                "frontier": {
                    "deployments": [
                        {"provider": name, "upstream_model": "mock-1", "name": name}
                        for name in order
                    ],
                    **tier,
                }
            }
        },
    )


def test_a_stalled_deployment_is_hedged_behind_the_openai_sdk(make_gateway):
    up = {
        "stalled": make_gateway.mock(MockBehaviour(ttft_s=STALL_S)),
        "fast": make_gateway.mock(FAST),
    }
    gateway = make_gateway(**gateway_settings(up, ["stalled", "fast"], ttft_budget_s=0.1))
    app, url = gateway.app, gateway.url
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    started = time.monotonic()
    chunks = list(
        client.chat.completions.create(
            model="chat",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    elapsed = time.monotonic() - started
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert [f for f in finishes if f] == ["stop"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 24
    assert elapsed < STALL_S / 2  # generous: without the hedge it would take the stall

    plain = client.chat.completions.create(model="chat", messages=MESSAGES)
    assert plain.choices[0].message.content == streamed

    tier = app.state.nearline.providers["frontier"]
    assert isinstance(tier, TieredProvider)
    assert len(tier.deployment("fast").ttft) == 2
    waits = tier.deployment("stalled").ttft  # the losers' waits: lower bounds
    assert len(waits) == 2
    assert 0.1 <= (waits.percentile(0.01) or 0) <= (waits.percentile(1.0) or 0) < STALL_S
    stats = up["stalled"].wait_for("cancelled", 2)
    assert stats["cancelled"] == 2
    assert stats["completed"] == 0


def test_a_failing_deployment_is_invisible_to_the_client(make_gateway):
    up = {
        "broken": make_gateway.mock(MockBehaviour(error_rate=1.0)),
        "fast": make_gateway.mock(FAST),
    }
    url = make_gateway(**gateway_settings(up, ["broken", "fast"])).url
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    for _ in range(3):
        reply = client.chat.completions.create(model="chat", messages=MESSAGES)
        assert reply.choices[0].finish_reason == "stop"
    assert up["broken"].stats()["failed"] == 3
    assert up["fast"].stats()["completed"] == 3


def test_when_every_deployment_fails_the_client_gets_the_upstream_error(make_gateway):
    failing = make_gateway.mock(MockBehaviour(error_rate=1.0))
    url = make_gateway(**gateway_settings({"a": failing, "b": failing}, ["a", "b"])).url
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="chat", messages=MESSAGES)
    assert raised.value.status_code == 502
    assert raised.value.body["code"] == "upstream_error"  # type: ignore[index]


def test_a_model_backed_by_a_cascade_escalates_behind_the_openai_sdk(make_gateway):
    truncating = MockBehaviour(ttft_s=0.01, tokens_per_s=2000, completion_tokens=48)
    strong = MockBehaviour(ttft_s=0.01, tokens_per_s=2000, completion_tokens=8)
    up = {"cheap": make_gateway.mock(truncating), "strong": make_gateway.mock(strong)}
    gateway = make_gateway(
        providers=providers(up),
        models={"auto": {"provider": "auto"}},
        cache={"exact": {"enabled": False}, "semantic": {"enabled": False}},
        routing={
            "tiers": {
                "light": {"deployments": [{"provider": "cheap", "upstream_model": "s"}]},
                "frontier": {"deployments": [{"provider": "strong", "upstream_model": "b"}]},
            },
            "cascades": {"auto": {"cheap": "light", "strong": "frontier", "threshold": 0.6}},
        },
    )
    url = gateway.url
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    # 16 tokens: the cheap answer is cut at the limit (low confidence), the strong
    # model's 8-token answer is complete
    reply = client.chat.completions.create(model="auto", messages=MESSAGES, max_tokens=16)
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 8
    kept = client.chat.completions.create(model="auto", messages=MESSAGES, max_tokens=64)
    assert kept.usage is not None
    assert kept.usage.completion_tokens == 48
    assert up["cheap"].stats()["completed"] == 2
    assert up["strong"].stats()["completed"] == 1
