"""Rules on request metadata choose a tier: headers, model, tenant, parameters; first match
wins; no match keeps the model's configured provider (``None``)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from nearline.config import load_settings
from nearline.config.routing import RoutingSettings
from nearline.core.errors import ConfigError
from nearline.core.provider import ProviderCall
from nearline.core.request import ChatRequest
from nearline.gateway.routing.build import build_router
from nearline.gateway.routing.rules import LearnedPolicy, Router, RulePolicy

TIERS = {
    name: {"deployments": [{"provider": "p", "upstream_model": name}]}
    for name in ("light", "standard", "frontier")
}
PROVIDERS = {"p": {"base_url": "http://127.0.0.1:9/v1"}}


def router(*rules: dict[str, Any]) -> Router:
    settings = load_settings(providers=PROVIDERS, routing={"tiers": TIERS, "rules": list(rules)})
    return build_router(settings.routing)


def call(tenant: str = "acme", content: str = "hello", **request: Any) -> ProviderCall:
    body = {"model": "chat", "messages": [{"role": "user", "content": content}], **request}
    return ProviderCall(ChatRequest.model_validate(body), upstream_model="chat", tenant=tenant)


async def test_a_header_rule_matches_case_insensitively_on_the_name_and_exactly_on_the_value():
    chooser = router({"tier": "frontier", "when": {"headers": {"X-Nearline-Tier": "frontier"}}})
    assert await chooser.choose(call(), {"x-nearline-tier": "frontier"}) == "frontier"
    assert await chooser.choose(call(), {"X-NEARLINE-TIER": "frontier"}) == "frontier"
    assert await chooser.choose(call(), {"x-nearline-tier": "Frontier"}) is None
    assert await chooser.choose(call(), {}) is None


async def test_first_matching_rule_wins_and_no_match_keeps_the_catalogue_provider():
    chooser = router(
        {"tier": "light", "when": {"tenants": ["free"]}},
        {"tier": "frontier", "when": {"min_prompt_chars": 200}},
        {"tier": "standard", "when": {"models": ["chat"], "stream": True}},
    )
    long_prompt = "x" * 300
    assert await chooser.choose(call(tenant="free", content=long_prompt), {}) == "light"
    assert await chooser.choose(call(content=long_prompt), {}) == "frontier"
    assert await chooser.choose(call(stream=True), {}) == "standard"
    assert await chooser.choose(call(stream=False), {}) is None


async def test_parameter_conditions():
    chooser = router(
        {"tier": "frontier", "when": {"tools": True}},
        {"tier": "standard", "when": {"min_max_tokens": 1000}},
        {"tier": "light", "when": {"max_temperature": 0.2, "max_prompt_chars": 50}},
    )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert await chooser.choose(call(tools=tools), {}) == "frontier"
    assert await chooser.choose(call(max_tokens=2000), {}) == "standard"
    assert await chooser.choose(call(max_completion_tokens=1500), {}) == "standard"
    assert await chooser.choose(call(max_tokens=10), {}) is None
    assert await chooser.choose(call(temperature=0.0), {}) == "light"
    assert await chooser.choose(call(temperature=0.9), {}) is None
    assert await chooser.choose(call(temperature=0.0, content="y" * 80), {}) is None


async def test_all_conditions_of_a_rule_must_hold():
    chooser = router(
        {"tier": "frontier", "when": {"tenants": ["acme"], "headers": {"x-plan": "pro"}}}
    )
    assert await chooser.choose(call(tenant="acme"), {"x-plan": "pro"}) == "frontier"
    assert await chooser.choose(call(tenant="acme"), {}) is None
    assert await chooser.choose(call(tenant="other"), {"x-plan": "pro"}) is None


class Keyword:
    """Needs the strong tier when the text says "prove"."""

    def __init__(self) -> None:
        self.thresholds: list[float | None] = []
        self.threads: list[str] = []

    def needs_strong(self, query: str, threshold: float | None = None) -> bool:
        self.thresholds.append(threshold)
        self.threads.append(threading.current_thread().name)
        return "prove" in query


async def test_a_learned_policy_answers_when_no_rule_matched():
    classifier = Keyword()
    chooser = Router(
        [
            RulePolicy(RoutingSettings.model_validate({"rules": []}).rules),
            LearnedPolicy(classifier, strong="frontier", weak="light", threshold=0.3),
        ]
    )
    assert await chooser.choose(call(content="prove it"), {}) == "frontier"
    assert await chooser.choose(call(content="say hi"), {}) == "light"
    assert classifier.thresholds == [0.3, 0.3]
    assert all(name.startswith("nearline-router") for name in classifier.threads), (
        "the learned policy must embed off the event loop"
    )
    only_other = LearnedPolicy(classifier, strong="frontier", weak="light", models=["other"])
    assert await only_other.choose(call(content="prove it"), {}) is None


def test_a_rule_must_name_a_known_tier():
    with pytest.raises(ConfigError, match="unknown tier or cascade 'ultra'"):
        router({"tier": "ultra"})
    with pytest.raises(ConfigError, match="unknown key"):
        router({"tier": "light", "when": {"header": {"a": "b"}}})


def test_a_model_may_name_a_tier_but_not_an_unknown_one():
    settings = load_settings(
        providers=PROVIDERS, routing={"tiers": TIERS}, models={"m": {"provider": "light"}}
    )
    assert settings.models["m"].provider == "light"
    with pytest.raises(ConfigError, match="unknown provider 'heavy'"):
        load_settings(
            providers=PROVIDERS, routing={"tiers": TIERS}, models={"m": {"provider": "heavy"}}
        )


async def test_the_documented_example_configuration_is_valid(tmp_path: Path):
    page = (Path(__file__).parents[2] / "docs" / "routing.md").read_text()
    example = page.split("## Configuration")[1].split("```yaml\n")[1].split("```")[0]
    (tmp_path / "nearline.yaml").write_text(example)
    settings = load_settings(tmp_path / "nearline.yaml")
    assert set(settings.routing.tiers) == {"light", "standard", "frontier"}
    assert settings.routing.fallback_chain("frontier") == ["frontier", "standard", "light"]
    rules_only = build_router(settings.routing.model_copy(update={"learned": None}))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert await rules_only.choose(call(tools=tools), {}) == "frontier"
