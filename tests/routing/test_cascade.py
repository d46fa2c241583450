"""Cascade: the cheap tier answers first; a low-confidence or failed cheap answer escalates to
the strong tier, and both outcomes are counted. Tiers are mock upstreams over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from nearline.config import load_settings
from nearline.core.events import CollectedAnswer, Delta, Done, Event, Preliminary, Replace, Usage
from nearline.core.provider import Capabilities, ProviderCall
from nearline.core.request import ChatRequest
from nearline.gateway.providers.build import build_providers
from nearline.gateway.routing.cascade import CascadeProvider
from nearline.gateway.routing.confidence import (
    HeuristicConfidence,
    VerifierConfidence,
    heuristic_confidence,
)
from nearline.gateway.routing.telemetry import RoutingCounters
from nearline.gateway.telemetry.metrics import GatewayMetrics
from nearline.testing.mock_fleet import MockUpstream, mock_upstreams, provider_settings
from nearline.testing.mock_upstream import MockBehaviour, deterministic_words

QUICK = MockBehaviour(ttft_s=0.01, tokens_per_s=2000)
MESSAGES = [{"role": "user", "content": "what is a cascade?"}]


def build_cascade(
    up: dict[str, MockUpstream], threshold: float = 0.6
) -> tuple[CascadeProvider, RoutingCounters]:
    counters = RoutingCounters()
    settings = load_settings(
        providers=provider_settings(up),
        models={"auto": {"provider": "auto"}},
        routing={
            "tiers": {
                "light": {"deployments": [{"provider": "cheap", "upstream_model": "small"}]},
                "frontier": {"deployments": [{"provider": "strong", "upstream_model": "big"}]},
            },
            "cascades": {"auto": {"cheap": "light", "strong": "frontier", "threshold": threshold}},
        },
    )
    cascade = build_providers(settings, counters)["auto"]
    assert isinstance(cascade, CascadeProvider)
    return cascade, counters


def call(**request: Any) -> ProviderCall:
    body = {"model": "auto", "messages": MESSAGES, **request}
    return ProviderCall(ChatRequest.model_validate(body), upstream_model="auto", tenant="t")


async def answer(cascade: CascadeProvider, **request: Any) -> list[Event]:
    return [event async for event in cascade.stream(call(**request))]


def text(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta))


async def test_a_confident_cheap_answer_is_kept_and_the_strong_tier_never_called():
    with mock_upstreams(cheap=QUICK, strong=QUICK) as up:
        cascade, counters = build_cascade(up)
        events = await answer(cascade)
        assert text(events) == " ".join(deterministic_words(MESSAGES, None, 24))
        assert isinstance(events[-1], Done)
        assert counters.cascades == {("auto", "kept"): 1}
        assert (await up["strong"].stats())["requests"] == 0


async def test_a_truncated_cheap_answer_escalates_to_the_strong_tier():
    cheap = MockBehaviour(ttft_s=0.01, tokens_per_s=2000, completion_tokens=48)
    strong = MockBehaviour(ttft_s=0.01, tokens_per_s=2000, completion_tokens=8)
    with mock_upstreams(cheap=cheap, strong=strong) as up:
        cascade, counters = build_cascade(up)
        events = await answer(cascade, max_tokens=16)  # the cheap answer stops at the limit
        assert text(events) == " ".join(deterministic_words(MESSAGES, None, 8))
        assert counters.escalations("auto") == 1
        assert (await up["cheap"].stats())["completed"] == 1
        assert (await up["strong"].stats())["completed"] == 1


async def test_a_failing_cheap_tier_escalates():
    with mock_upstreams(cheap=MockBehaviour(error_rate=1.0), strong=QUICK) as up:
        cascade, counters = build_cascade(up)
        events = await answer(cascade)
        assert isinstance(events[-1], Done)
        assert counters.escalations() == 1


async def test_progressive_mode_sends_the_cheap_answer_as_the_preliminary():
    cheap = MockBehaviour(ttft_s=0.01, tokens_per_s=2000, completion_tokens=48)
    strong = MockBehaviour(ttft_s=0.01, tokens_per_s=2000, completion_tokens=8)
    with mock_upstreams(cheap=cheap, strong=strong) as up:
        cascade, _ = build_cascade(up)
        escalated = await answer(cascade, max_tokens=16, nearline={"progressive": True})
        assert isinstance(escalated[0], Preliminary)
        assert escalated[0].text == " ".join(deterministic_words(MESSAGES, None, 16))
        assert escalated[1] == Replace("replace")
        assert text(escalated) == " ".join(deterministic_words(MESSAGES, None, 8))

        kept = await answer(cascade, nearline={"progressive": True})
        assert isinstance(kept[0], Preliminary)
        assert kept[1] == Replace("confirm")
        assert text(kept) == kept[0].text


def collected(text: str, finish: str = "stop") -> CollectedAnswer:
    return CollectedAnswer(text, finish, Usage(1, 1), ())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answer_text", "finish", "low"),
    [
        ("Paris is the capital of France.", "stop", False),
        ("", "stop", True),
        ("Paris is the capital of", "length", True),
        ("I'm not sure, it might be Lyon.", "stop", True),
        ("the cat the cat the cat the cat the cat the cat", "stop", True),
    ],
    ids=["plain", "empty", "truncated", "hedges", "loops"],
)
def test_heuristic_confidence_flags_visible_failures(answer_text: str, finish: str, low: bool):
    value = heuristic_confidence(collected(answer_text, finish)).value
    assert (value < 0.6) is low, value


class Grader:
    name = "grader"
    capabilities = Capabilities()

    def __init__(self, verdict: str) -> None:
        self.verdict = verdict
        self.prompts: list[str] = []

    async def stream(self, call: ProviderCall) -> AsyncIterator[Event]:
        self.prompts.append(call.request.messages[0].text)
        yield Delta(self.verdict)
        yield Done("stop")

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def is_ready(self) -> bool:
        return True


@pytest.mark.parametrize(("verdict", "value"), [("Yes.", 0.9), ("no", 0.1), ("maybe", 0.5)])
async def test_the_verifier_grades_the_answer(verdict: str, value: float):
    grader = Grader(verdict)
    confidence = await VerifierConfidence(grader, "judge").score(call(), collected("Paris."))
    assert confidence.value == value
    assert "what is a cascade?" in grader.prompts[0]
    assert "Paris." in grader.prompts[0]


async def test_heuristic_scorer_matches_the_function():
    scorer = HeuristicConfidence()
    answer = collected("fine answer")
    assert (await scorer.score(call(), answer)) == heuristic_confidence(answer)


async def test_escalations_show_in_the_gateways_prometheus_registry():
    metrics = GatewayMetrics()
    with mock_upstreams(cheap=MockBehaviour(error_rate=1.0), strong=QUICK) as up:
        settings = load_settings(
            providers=provider_settings(up),
            models={"auto": {"provider": "auto"}},
            routing={
                "tiers": {
                    "light": {"deployments": [{"provider": "cheap", "upstream_model": "s"}]},
                    "frontier": {"deployments": [{"provider": "strong", "upstream_model": "b"}]},
                },
                "cascades": {"auto": {"cheap": "light", "strong": "frontier"}},
            },
        )
        cascade = build_providers(settings, RoutingCounters(metrics.registry))["auto"]
        assert isinstance(cascade, CascadeProvider)
        await answer(cascade)
    text = metrics.render().decode()
    assert 'nearline_routing_cascade_total{cascade="auto",outcome="escalated"} 1.0' in text
