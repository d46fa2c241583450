"""Circuit breakers: a failing deployment is taken out, probed after a cool-down, and put
back when the probe succeeds — by the state machine alone, and against a mock upstream that
goes down and comes back on the same port (a flapping deployment)."""

from __future__ import annotations

import asyncio

import pytest

from nearline.config import load_settings
from nearline.config.routing import BreakerSettings
from nearline.core.events import Done
from nearline.core.provider import ProviderCall
from nearline.core.request import ChatRequest
from nearline.gateway.providers.build import build_providers
from nearline.gateway.routing.breaker import BreakerState, CircuitBreaker
from nearline.gateway.routing.telemetry import RoutingCounters
from nearline.gateway.routing.tiered import TieredProvider
from nearline.testing import free_port, serve_in_thread
from nearline.testing.mock_fleet import mock_upstreams
from nearline.testing.mock_upstream import MockBehaviour, create_mock_app


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock, **settings: float) -> CircuitBreaker:
    return CircuitBreaker(BreakerSettings(**settings), clock=clock)  # type: ignore[arg-type]


def test_opens_after_consecutive_failures_and_refuses_until_the_cooldown(clock: Clock):
    cb = breaker(clock, consecutive_failures=3, cooldown_s=10)
    for _ in range(2):
        cb.record_failure()
    assert cb.state is BreakerState.CLOSED
    cb.record_failure()
    assert cb.state is BreakerState.OPEN
    assert not cb.allow()
    clock.now = 9.9
    assert not cb.allow()


def test_a_success_resets_the_consecutive_count(clock: Clock):
    cb = breaker(clock, consecutive_failures=3, min_calls=100)
    for _ in range(5):
        cb.record_failure()
        cb.record_failure()
        cb.record_success()
    assert cb.state is BreakerState.CLOSED


def test_opens_on_the_failure_ratio_over_the_window(clock: Clock):
    cb = breaker(clock, consecutive_failures=100, failure_ratio=0.5, window=10, min_calls=10)
    for _ in range(4):
        cb.record_failure()
        cb.record_success()
    cb.record_success()
    assert cb.state is BreakerState.CLOSED  # 4 failures in 9 calls: too few calls to judge
    cb.record_failure()
    assert cb.state is BreakerState.OPEN  # 5 of the last 10


def test_half_open_lets_one_probe_through_and_closes_on_success(clock: Clock):
    cb = breaker(clock, consecutive_failures=1, cooldown_s=10)
    cb.record_failure()
    clock.now = 10
    assert cb.state is BreakerState.HALF_OPEN
    assert cb.allow()  # the probe
    assert not cb.allow()  # only one at a time
    cb.record_success()
    assert cb.state is BreakerState.CLOSED
    assert cb.allow()
    assert cb.allow()


def test_a_failed_probe_opens_again_for_another_cooldown(clock: Clock):
    cb = breaker(clock, consecutive_failures=1, cooldown_s=10)
    cb.record_failure()
    clock.now = 10
    assert cb.allow()
    cb.record_failure()
    assert cb.state is BreakerState.OPEN
    clock.now = 19
    assert not cb.allow()
    clock.now = 20
    assert cb.allow()


def test_a_cancelled_probe_frees_the_slot(clock: Clock):
    cb = breaker(clock, consecutive_failures=1, cooldown_s=1)
    cb.record_failure()
    clock.now = 1
    assert cb.allow()
    cb.release_probe()
    assert cb.allow()


async def test_a_dead_deployment_is_taken_out_and_probed_back_when_it_returns():
    port = free_port()
    cooldown = 0.3
    with mock_upstreams(backup=MockBehaviour(ttft_s=0.01, tokens_per_s=2000)) as up:
        counters = RoutingCounters()
        settings = load_settings(
            providers={
                "flappy": {"base_url": f"http://127.0.0.1:{port}/v1", "connect_timeout_s": 1},
                "backup": {"base_url": up["backup"].base_url},
            },
            models={"chat": {"provider": "main"}},
            routing={
                "tiers": {
                    "main": {
                        "deployments": [
                            {"provider": "flappy", "upstream_model": "m", "name": "flappy"},
                            {"provider": "backup", "upstream_model": "m", "name": "backup"},
                        ],
                        "breaker": {"consecutive_failures": 2, "cooldown_s": cooldown},
                    }
                }
            },
        )
        tier = build_providers(settings, counters)["main"]
        assert isinstance(tier, TieredProvider)
        request = ChatRequest.model_validate(
            {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        )
        call = ProviderCall(request, upstream_model="m", tenant="t")

        async def ask() -> None:
            events = [event async for event in tier.stream(call)]
            assert isinstance(events[-1], Done)

        for _ in range(4):  # flappy is down: every request still completes, via backup
            await ask()
        assert counters.attempts[("main", "flappy", "first")] == 2  # then the breaker opened
        assert tier.deployment("flappy").breaker.state is BreakerState.OPEN
        assert counters.answers[("main", "backup")] == 4

        healthy_again = create_mock_app(MockBehaviour(ttft_s=0.01, tokens_per_s=2000))
        with serve_in_thread(healthy_again, port):  # the same address comes back
            await asyncio.sleep(cooldown)  # the behaviour under test: the cooldown runs out
            await ask()  # the probe
            await ask()
        assert counters.answers[("main", "flappy")] == 2
        assert tier.deployment("flappy").breaker.state is BreakerState.CLOSED
        assert counters.breaker_transitions == [
            ("main/flappy", BreakerState.OPEN),
            ("main/flappy", BreakerState.HALF_OPEN),
            ("main/flappy", BreakerState.CLOSED),
        ]
