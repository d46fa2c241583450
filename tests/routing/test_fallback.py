"""Fallbacks: a deployment that fails before its first token (5xx, 429, refused connection,
timeout) is retried on the next deployment, then on the next tier; the deadline bounds it
all. Every upstream is a mock over real HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nearline.config import load_settings
from nearline.config.routing import TierSettings
from nearline.core.errors import (
    ConfigError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from nearline.core.events import Delta, Done, Event
from nearline.core.provider import Capabilities, Deadline, ProviderCall
from nearline.core.request import ChatRequest
from nearline.gateway.providers.build import build_providers
from nearline.gateway.routing.breaker import BreakerState, CircuitBreaker
from nearline.gateway.routing.deployment import Deployment
from nearline.gateway.routing.hedging import is_retryable
from nearline.gateway.routing.telemetry import RoutingCounters
from nearline.gateway.routing.tiered import TieredProvider
from nearline.testing import free_port
from nearline.testing.mock_fleet import MockUpstream, mock_upstreams, provider_settings
from nearline.testing.mock_upstream import MockBehaviour, deterministic_words

HEALTHY = MockBehaviour(ttft_s=0.01, tokens_per_s=2000)
MESSAGES = [{"role": "user", "content": "fall back"}]
NO_HEDGE = {"enabled": False}


def deployments(*names: str) -> list[dict[str, Any]]:
    return [{"provider": name, "upstream_model": "mock-1", "name": name} for name in names]


def build(
    providers: dict[str, dict[str, Any]], tiers: dict[str, Any], model_tier: str = "main"
) -> tuple[dict[str, TieredProvider], RoutingCounters]:
    counters = RoutingCounters()
    settings = load_settings(
        providers=providers,
        models={"chat": {"provider": model_tier}},
        routing={"tiers": tiers},
    )
    built = build_providers(settings, counters)
    tiered = {name: p for name, p in built.items() if isinstance(p, TieredProvider)}
    return tiered, counters


def http(upstreams: dict[str, MockUpstream], **extra: Any) -> dict[str, dict[str, Any]]:
    return provider_settings(upstreams, read_timeout_s=10, connect_timeout_s=1, **extra)


def call(deadline_s: float | None = None) -> ProviderCall:
    request = ChatRequest.model_validate({"model": "chat", "messages": MESSAGES})
    deadline = Deadline.after(deadline_s) if deadline_s is not None else None
    return ProviderCall(request, upstream_model="chat", tenant="t", deadline=deadline)


async def answer(tier: TieredProvider, deadline_s: float | None = None) -> list[Event]:
    return [event async for event in tier.stream(call(deadline_s))]


def expected_text() -> str:
    return " ".join(deterministic_words(MESSAGES, None, 24))


def text(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta))


@pytest.mark.parametrize(
    ("failing", "code"),
    [
        (MockBehaviour(error_rate=1.0), "upstream_error"),
        (MockBehaviour(rate_limit_rate=1.0), "rate_limit_exceeded"),
    ],
    ids=["5xx", "429"],
)
async def test_a_deployment_failing_before_its_first_token_is_retried_on_the_next(
    failing: MockBehaviour, code: str
):
    with mock_upstreams(failing=failing, healthy=HEALTHY) as up:
        tiers, counters = build(
            http(up), {"main": {"deployments": deployments("failing", "healthy")}}
        )
        events = await answer(tiers["main"])
        assert isinstance(events[-1], Done)
        assert text(events) == expected_text()
        assert counters.failures == {("main", "failing", code): 1}
        assert counters.attempts[("main", "healthy", "fallback")] == 1
        assert counters.answers == {("main", "healthy"): 1}
        assert (await up["failing"].stats())["requests"] == 1


async def test_a_deployment_that_refuses_connections_is_skipped():
    with mock_upstreams(healthy=HEALTHY) as up:
        providers = http(up) | {"dead": {"base_url": f"http://127.0.0.1:{free_port()}/v1"}}
        tiers, counters = build(
            providers, {"main": {"deployments": deployments("dead", "healthy")}}
        )
        events = await answer(tiers["main"])
        assert text(events) == expected_text()
        assert counters.failures == {("main", "dead", "upstream_error"): 1}


async def test_an_upstream_timeout_falls_back():
    stalled = MockBehaviour(ttft_s=3.0)
    with mock_upstreams(stalled=stalled, healthy=HEALTHY) as up:
        providers = http(up)
        providers["stalled"]["read_timeout_s"] = 0.2
        tier = {"deployments": deployments("stalled", "healthy"), "hedge": NO_HEDGE}
        tiers, counters = build(providers, {"main": tier})
        events = await answer(tiers["main"])
        assert text(events) == expected_text()
        assert counters.failures == {("main", "stalled", "upstream_timeout"): 1}
        assert (await up["stalled"].wait_for("cancelled", 1))["cancelled"] == 1


async def test_when_every_deployment_fails_the_next_tier_answers():
    failing = MockBehaviour(error_rate=1.0)
    with mock_upstreams(a=failing, b=failing, cheap=HEALTHY) as up:
        tiers, counters = build(
            http(up),
            {
                "main": {"deployments": deployments("a", "b"), "fallback_tier": "light"},
                "light": {"deployments": deployments("cheap")},
            },
        )
        events = await answer(tiers["main"])
        assert text(events) == expected_text()
        assert counters.tier_fallbacks == {("main", "light"): 1}
        assert counters.answers == {("light", "cheap"): 1}
        assert set(counters.failures) == {
            ("main", "a", "upstream_error"),
            ("main", "b", "upstream_error"),
        }


async def test_the_deadline_bounds_upstream_waits_and_stops_the_tier_fallback():
    stalled = MockBehaviour(ttft_s=5.0)
    with mock_upstreams(a=stalled, cheap=HEALTHY) as up:
        tiers, counters = build(
            http(up) | {"a": {"base_url": up["a"].base_url, "read_timeout_s": 60}},
            {
                "main": {
                    "deployments": deployments("a"),
                    "fallback_tier": "light",
                    "hedge": NO_HEDGE,
                },
                "light": {"deployments": deployments("cheap")},
            },
        )
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await answer(tiers["main"], deadline_s=0.3)
        assert time.monotonic() - started < 30  # the upstream's own read timeout is 60 s
        assert counters.tier_fallbacks == {}
        assert (await up["cheap"].stats())["requests"] == 0
        assert (await up["a"].wait_for("cancelled", 1))["cancelled"] == 1


async def test_the_tier_timeout_becomes_the_call_deadline():
    stalled = MockBehaviour(ttft_s=40.0)
    with mock_upstreams(a=stalled) as up:
        tier = {"deployments": deployments("a"), "timeout_s": 0.3, "hedge": NO_HEDGE}
        tiers, _ = build(http(up) | {"a": {"base_url": up["a"].base_url}}, {"main": tier})
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await answer(tiers["main"])
        assert time.monotonic() - started < 20  # not the upstream's 40 s stall


async def test_a_failure_after_the_first_token_is_not_retried():
    breaks_mid_stream = MockBehaviour(ttft_s=0.01, tokens_per_s=2000, disconnect_rate=1.0)
    with mock_upstreams(flaky=breaks_mid_stream, healthy=HEALTHY) as up:
        tiers, _ = build(http(up), {"main": {"deployments": deployments("flaky", "healthy")}})
        seen: list[Event] = []

        async def drain() -> None:
            async for event in tiers["main"].stream(call()):
                seen.append(event)

        with pytest.raises(UpstreamError):
            await drain()
        assert any(isinstance(e, Delta) for e in seen)  # the client already had tokens
        assert (await up["healthy"].stats())["requests"] == 0


def test_which_errors_are_retried():
    assert is_retryable(UpstreamTimeout("t"))
    assert is_retryable(UpstreamError("e"))
    assert is_retryable(UpstreamRateLimited("r"))
    assert not is_retryable(UpstreamRejected("the request itself is wrong"))


def test_config_refuses_unknown_tiers_and_providers():
    with pytest.raises(ConfigError, match="unknown provider 'nowhere'"):
        load_settings(routing={"tiers": {"t": {"deployments": deployments("nowhere")}}})
    with pytest.raises(ConfigError, match="unknown tier 'ghost'"):
        load_settings(
            providers={"p": {"base_url": "http://127.0.0.1:9/v1"}},
            routing={"tiers": {"t": {"deployments": deployments("p"), "fallback_tier": "ghost"}}},
        )
    with pytest.raises(ConfigError, match="cycle"):
        load_settings(
            providers={"p": {"base_url": "http://127.0.0.1:9/v1"}},
            routing={
                "tiers": {
                    "t": {"deployments": deployments("p"), "fallback_tier": "u"},
                    "u": {"deployments": deployments("p"), "fallback_tier": "t"},
                }
            },
        )
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(routing={"tiers": {}, "hedging": True})


class Rejecting:
    """An upstream that refuses the request itself (its 4xx); counts its calls."""

    name = "rejecting"
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, call: ProviderCall) -> AsyncIterator[Event]:
        self.calls += 1
        raise UpstreamRejected("bad request")
        yield Done()  # pragma: no cover  # makes this an async generator

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def is_ready(self) -> bool:
        return True


async def test_a_rejected_request_is_not_retried_and_not_held_against_the_deployment():
    first, second = Rejecting(), Rejecting()
    settings = TierSettings.model_validate(
        {
            "deployments": [{"provider": "a", "upstream_model": "m"}],
            "breaker": {"consecutive_failures": 1},
        }
    )
    deployments = [
        Deployment(name, provider, "m", CircuitBreaker(settings.breaker))
        for name, provider in (("first", first), ("second", second))
    ]
    tier = TieredProvider("main", settings, deployments, RoutingCounters())
    with pytest.raises(UpstreamRejected):
        await answer(tier)
    assert (first.calls, second.calls) == (1, 0)
    assert deployments[0].breaker.state is BreakerState.CLOSED
