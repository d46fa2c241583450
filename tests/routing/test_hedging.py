"""Hedging: a stalled deployment is raced by the next one; the first token wins, the loser is
cancelled (its upstream connection closed). Every upstream is a mock over real HTTP."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from nearline.config import load_settings
from nearline.config.routing import BreakerSettings, HedgeSettings
from nearline.core.events import Delta, Done, Event
from nearline.core.provider import Deadline, ProviderCall
from nearline.core.request import ChatRequest
from nearline.gateway.providers.build import build_providers
from nearline.gateway.routing.breaker import CircuitBreaker
from nearline.gateway.routing.deployment import Deployment
from nearline.gateway.routing.hedging import hedge_delay
from nearline.gateway.routing.telemetry import RoutingCounters
from nearline.gateway.routing.tiered import TieredProvider
from nearline.gateway.telemetry.metrics import GatewayMetrics
from nearline.testing.mock_fleet import MockUpstream, mock_upstreams, provider_settings
from nearline.testing.mock_upstream import MockBehaviour, deterministic_words

STALL_S = 20.0
FAST = MockBehaviour(ttft_s=0.02, tokens_per_s=2000)
STALLED = MockBehaviour(ttft_s=STALL_S, tokens_per_s=2000)
MESSAGES = [{"role": "user", "content": "hedge me"}]


def tier_config(
    upstreams: dict[str, MockUpstream], order: list[str], **tier: Any
) -> dict[str, Any]:
    return {
        "providers": provider_settings(upstreams, read_timeout_s=30),
        "models": {"chat": {"provider": "frontier"}},
        "routing": {
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
    }


def build_tier(config: dict[str, Any]) -> tuple[TieredProvider, RoutingCounters]:
    counters = RoutingCounters()
    providers = build_providers(load_settings(**config), counters)
    tier = providers["frontier"]
    assert isinstance(tier, TieredProvider)
    return tier, counters


def call(deadline_s: float | None = None) -> ProviderCall:
    request = ChatRequest.model_validate({"model": "chat", "messages": MESSAGES})
    deadline = Deadline.after(deadline_s) if deadline_s is not None else None
    return ProviderCall(request, upstream_model="chat", tenant="t", deadline=deadline)


async def answer(tier: TieredProvider, deadline_s: float | None = None) -> list[Event]:
    return [event async for event in tier.stream(call(deadline_s))]


def text(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta))


async def test_a_stalled_deployment_is_hedged_and_the_loser_is_cancelled():
    with mock_upstreams(stalled=STALLED, fast=FAST) as up:
        tier, counters = build_tier(tier_config(up, ["stalled", "fast"], ttft_budget_s=0.1))
        started = time.monotonic()
        events = await answer(tier)
        elapsed = time.monotonic() - started

        assert isinstance(events[-1], Done)
        assert text(events) == " ".join(deterministic_words(MESSAGES, None, 24))
        assert counters.answers == {("frontier", "fast"): 1}
        assert counters.attempts[("frontier", "fast", "hedge")] == 1
        assert counters.cancellations == {("frontier", "stalled"): 1}
        stalled = await up["stalled"].wait_for("cancelled", 1)
        assert stalled["cancelled"] == 1
        assert stalled["completed"] == 0
        assert stalled["active"] == 0
        assert (await up["fast"].stats())["completed"] == 1
        assert elapsed < STALL_S / 2  # generous: without the hedge it would take the stall
        await tier.aclose()


async def test_no_hedge_when_the_first_deployment_answers_within_the_budget():
    with mock_upstreams(fast=FAST, spare=FAST) as up:
        tier, counters = build_tier(tier_config(up, ["fast", "spare"], ttft_budget_s=2.0))
        for _ in range(3):
            assert isinstance((await answer(tier))[-1], Done)
        assert counters.hedges() == 0
        assert counters.answers == {("frontier", "fast"): 3}
        assert (await up["spare"].stats())["requests"] == 0


async def test_hedging_off_waits_for_the_stalled_deployment():
    slow = MockBehaviour(ttft_s=0.4, tokens_per_s=2000)
    with mock_upstreams(slow=slow, fast=FAST) as up:
        config = tier_config(up, ["slow", "fast"], ttft_budget_s=0.05, hedge={"enabled": False})
        tier, counters = build_tier(config)
        assert isinstance((await answer(tier))[-1], Done)
        assert counters.answers == {("frontier", "slow"): 1}
        assert (await up["fast"].stats())["requests"] == 0


async def test_a_client_leaving_mid_race_cancels_every_attempt():
    with mock_upstreams(one=STALLED, two=STALLED) as up:
        tier, counters = build_tier(tier_config(up, ["one", "two"], ttft_budget_s=0.05))
        stream = tier.stream(call())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(stream), timeout=0.5)  # the client gives up
        await stream.aclose()
        assert counters.attempts[("frontier", "two", "hedge")] == 1
        for name in ("one", "two"):
            stats = await up[name].wait_for("cancelled", 1)
            assert stats["cancelled"] == 1, name
            assert stats["active"] == 0, name


async def test_the_hedge_fires_at_the_observed_p95_when_it_is_below_the_budget():
    deployment = Deployment(
        name="d",
        provider=None,  # type: ignore[arg-type]  # hedge_delay reads only the TTFT window
        upstream_model="m",
        breaker=CircuitBreaker(BreakerSettings()),
    )
    policy = HedgeSettings(min_samples=20)
    assert hedge_delay(deployment, 1.0, policy) == 1.0  # too few samples: the budget
    for index in range(100):
        deployment.ttft.observe(0.1 if index < 95 else 3.0)
    assert hedge_delay(deployment, 1.0, policy) == pytest.approx(0.1)
    assert hedge_delay(deployment, 0.05, policy) == pytest.approx(0.05)
    assert hedge_delay(deployment, None, policy) == pytest.approx(0.1)
    assert hedge_delay(deployment, 1.0, HedgeSettings(enabled=False)) is None


async def test_a_per_request_budget_overrides_the_tier_budget():
    # ``nearline.ttft_budget_ms`` in the request body; built without validation here, as the
    # field belongs to ``NearlineOptions`` (core/request.py).
    with mock_upstreams(stalled=STALLED, fast=FAST) as up:
        tier, counters = build_tier(tier_config(up, ["stalled", "fast"], ttft_budget_s=60))
        request = ChatRequest.model_construct(
            model="chat",
            messages=ChatRequest.model_validate({"model": "c", "messages": MESSAGES}).messages,
            nearline=SimpleNamespace(ttft_budget_ms=100, progressive=None, cache="default"),
        )
        events = [e async for e in tier.stream(ProviderCall(request, "chat", "t"))]
        assert isinstance(events[-1], Done)
        assert counters.answers == {("frontier", "fast"): 1}
        assert (await up["stalled"].wait_for("cancelled", 1))["cancelled"] == 1


async def test_hedges_show_in_the_gateways_prometheus_registry():
    metrics = GatewayMetrics()
    with mock_upstreams(stalled=STALLED, fast=FAST) as up:
        config = tier_config(up, ["stalled", "fast"], ttft_budget_s=0.05)
        tier = build_providers(load_settings(**config), RoutingCounters(metrics.registry))
        frontier = tier["frontier"]
        assert isinstance(frontier, TieredProvider)
        await answer(frontier)
    text = metrics.render().decode()
    assert (
        'nearline_routing_attempts_total{deployment="fast",kind="hedge",tier="frontier"} 1.0'
        in text
    )
    assert 'nearline_routing_answered_total{deployment="fast",tier="frontier"} 1.0' in text
    assert 'nearline_routing_cancelled_total{deployment="stalled",tier="frontier"} 1.0' in text
