"""Rules route requests to tiers inside the gateway: header, tenant and per-request budget.
Both tiers stream from nearline's mock upstream (real HTTP servers standing in for paid APIs);
which one answered is read from their request counters."""

from __future__ import annotations

import httpx

from nearline.config import hash_api_key
from nearline.testing import http


def test_rules_pick_the_tier_and_the_exact_cache_keeps_tiers_apart(make_gateway):
    cheap, strong = (make_gateway.mock(fresh=True) for _ in range(2))  # one counter per tier
    gateway = make_gateway(
        auth={
            "keys": [
                {"sha256": hash_api_key("sk-free"), "tenant": "free-plan"},
                {"sha256": hash_api_key("sk-pro"), "tenant": "pro"},
            ]
        },
        providers={
            "cheap": {"base_url": cheap.base_url},
            "strong": {"base_url": strong.base_url},
        },
        models={"chat": {"provider": "frontier"}},
        routing={
            "tiers": {
                "light": {"deployments": [{"provider": "cheap", "upstream_model": "c"}]},
                "frontier": {"deployments": [{"provider": "strong", "upstream_model": "s"}]},
            },
            "rules": [
                {"tier": "light", "when": {"tenants": ["free-plan"]}},
                {"tier": "light", "when": {"headers": {"x-nearline-tier": "light"}}},
            ],
        },
    )
    url = gateway.url

    def ask(key: str, **headers: str) -> httpx.Response:
        return http.post(
            f"{url}/v1/chat/completions",
            timeout=10,
            headers={"Authorization": f"Bearer {key}", **headers},
            json={
                "model": "chat",
                "messages": [{"role": "user", "content": "hi"}],
                "nearline": {"ttft_budget_ms": 5000},
            },
        )

    assert ask("sk-pro").status_code == 200
    assert (cheap.requests(), strong.requests()) == (0, 1)
    assert ask("sk-free").status_code == 200
    assert (cheap.requests(), strong.requests()) == (1, 1)
    routed = ask("sk-pro", **{"X-Nearline-Tier": "light"})
    assert routed.headers["x-nearline-source"] == "inference"  # not pro's frontier entry
    assert (cheap.requests(), strong.requests()) == (2, 1)
    assert ask("sk-pro").headers["x-nearline-source"] == "exact"


def test_the_learned_policy_routes_inside_the_gateway(make_gateway):
    """The shipped learned router (real embedding model) picks the tier per prompt; its
    embedding runs off the event loop. Both tiers are mock upstreams."""
    weak, strong = (make_gateway.mock(fresh=True) for _ in range(2))  # one counter per tier
    gateway = make_gateway(
        providers={"weak": {"base_url": weak.base_url}, "strong": {"base_url": strong.base_url}},
        models={"chat": {"provider": "standard"}},
        cache={"exact": {"enabled": False}, "semantic": {"enabled": False}},
        routing={
            "tiers": {
                "standard": {"deployments": [{"provider": "weak", "upstream_model": "w"}]},
                "frontier": {"deployments": [{"provider": "strong", "upstream_model": "s"}]},
            },
            "learned": {"strong": "frontier", "weak": "standard", "threshold": 0.2},
        },
    )

    def counts() -> tuple[int, int]:
        return weak.requests(), strong.requests()

    url = gateway.url

    def ask(question: str) -> None:
        response = http.post(
            f"{url}/v1/chat/completions",
            timeout=30,
            json={"model": "chat", "messages": [{"role": "user", "content": question}]},
        )
        assert response.status_code == 200, response.text

    ask("hi")  # strong-tier probability 0.11 with the shipped router
    assert counts() == (1, 0)
    ask(
        "Natalia sold clips to 48 of her friends in April, and then she sold half as "
        "many clips in May. How many clips did Natalia sell altogether in April and May?"
    )  # 0.26: a multi-step word problem
    assert counts() == (1, 1)
