"""Issue 13, point 2: a key's model rights hold for every model a request touches.

A key limited to some models never gets output from another one — not as the progressive
draft, not through a routing rule or a tier header, not through a cascade or its verifier,
and prefetch never answers one tenant's question with another key's rights — unless the
operator marked that model ``public: true`` (allowed for every key).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import numpy as np
import pytest

from nearline.config import ModelRoute, PrefetchSettings, ProgressiveSettings, hash_api_key
from nearline.core.events import Delta, Done, Event, Preliminary, Usage
from nearline.core.provider import ProviderCall
from nearline.core.request import ChatRequest
from nearline.gateway.serving.catalogue import Catalogue
from nearline.gateway.serving.pipeline import Answer, ServingPipeline
from nearline.gateway.serving.prefetch import Prefetcher
from nearline.gateway.serving.service import ChatService
from nearline.gateway.serving.tiers import CacheTiers
from nearline.gateway.telemetry.observe import AnswerObserver
from nearline.gateway.tenancy import Tenant
from nearline.testing import http
from nearline.testing.scripted import ScriptedProvider

ANSWER: tuple[Event, ...] = (Delta("Paris"), Delta(" it is."), Usage(5, 2), Done())
LIMITED = Tenant("acme", frozenset({"m"}))
PROGRESSIVE = {"x-nearline-progressive": "1"}


def chat(text: str = "capital of France?", model: str = "m") -> ChatRequest:
    return ChatRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": text}]}
    )


async def events_of(answer: Answer) -> list[Event]:
    try:
        return [event async for event in answer.events()]
    finally:
        await answer.aclose()


@pytest.fixture
async def make_service() -> AsyncIterator[Callable[..., tuple[ChatService, ScriptedProvider]]]:
    """``make_service(draft_public=False, hold=None)``: model ``m`` on ``up`` (its answer held
    until ``hold`` is set), the draft model on ``light``; the draft's provider is returned to
    count its calls."""
    built: list[ServingPipeline] = []

    def make(
        *, draft_public: bool = False, hold: asyncio.Event | None = None
    ) -> tuple[ChatService, ScriptedProvider]:
        up, light = ScriptedProvider("up"), ScriptedProvider("light")
        catalogue = Catalogue(
            {
                "m": ModelRoute(provider="up"),
                "draft": ModelRoute(provider="light", **({"public": True} if draft_public else {})),
            },
            {"up": up, "light": light},
        )
        up.enqueue(*ANSWER, hold=hold)
        light.enqueue(Delta("Paris, I think"), Usage(5, 3), Done())
        observer = AnswerObserver()
        pipeline = ServingPipeline(
            catalogue,
            CacheTiers(catalogue.provider_name, None, None),
            observer,
            progressive=ProgressiveSettings(draft_model="draft"),
        )
        built.append(pipeline)
        return ChatService(catalogue, pipeline, observer), light

    yield make
    for pipeline in built:
        await pipeline.aclose()


async def test_a_limited_key_gets_no_draft_from_a_model_it_may_not_use(make_service):
    service, light = make_service()
    answer = await service.handle(chat(), LIMITED, PROGRESSIVE, received_at=time.perf_counter())
    events = await events_of(answer)
    assert not [e for e in events if isinstance(e, Preliminary)]  # no preliminary at all
    assert light.calls == []  # the draft model was never asked
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "Paris it is."


async def test_a_public_draft_model_drafts_for_every_key(make_service):
    refined = asyncio.Event()  # held until the draft was shown
    service, light = make_service(draft_public=True, hold=refined)
    answer = await service.handle(chat(), LIMITED, PROGRESSIVE, received_at=time.perf_counter())
    refined.set()
    events = await events_of(answer)
    assert [e.text for e in events if isinstance(e, Preliminary)]
    assert len(light.calls) == 1


async def test_an_unlimited_key_still_gets_the_draft(make_service):
    refined = asyncio.Event()
    service, light = make_service(hold=refined)
    answer = await service.handle(
        chat(), Tenant("acme"), PROGRESSIVE, received_at=time.perf_counter()
    )
    refined.set()
    assert [e for e in await events_of(answer) if isinstance(e, Preliminary)]
    assert len(light.calls) == 1


# --- routing rules, tier headers, cascades and verifiers, through the gateway -------------

SMALL_KEY, BOTH_KEY = "sk-small", "sk-both"


def routed_gateway(make_gateway: Any) -> Any:
    """``small`` on the light tier, ``big`` on the frontier tier (separate mock upstreams,
    to count which one answered); rules pick a tier or a cascade by a client header."""
    light, frontier = (make_gateway.mock(fresh=True) for _ in range(2))
    gateway = make_gateway(
        auth={
            "keys": [
                {"sha256": hash_api_key(SMALL_KEY), "tenant": "t", "models": ["small"]},
                {"sha256": hash_api_key(BOTH_KEY), "tenant": "t", "models": ["small", "big"]},
            ]
        },
        cache={"exact": {"enabled": False}, "semantic": {"enabled": False}},
        providers={
            "light-up": {"base_url": light.base_url},
            "frontier-up": {"base_url": frontier.base_url},
        },
        models={"small": {"provider": "light"}, "big": {"provider": "frontier"}},
        routing={
            "tiers": {
                "light": {"deployments": [{"provider": "light-up", "upstream_model": "l"}]},
                "frontier": {"deployments": [{"provider": "frontier-up", "upstream_model": "f"}]},
            },
            "cascades": {
                "auto": {"cheap": "light", "strong": "frontier", "threshold": 1.0},
                "checked": {
                    "cheap": "light",
                    "strong": "light",
                    "confidence": "verifier",
                    "verifier_tier": "frontier",
                },
            },
            "rules": [
                {"tier": tier, "when": {"headers": {"x-nearline-tier": tier}}}
                for tier in ("frontier", "auto", "checked", "light")
            ],
        },
    )
    return gateway, light, frontier


def ask(gateway: Any, key: str, tier: str | None = None, model: str = "small") -> httpx.Response:
    headers = {} if tier is None else {"x-nearline-tier": tier}
    return gateway.chat("hi", model=model, key=key, headers=headers, timeout=10)


@pytest.mark.parametrize("tier", ["frontier", "auto", "checked"])
def test_a_tier_header_cannot_route_a_limited_key_to_a_tier_it_may_not_use(make_gateway, tier):
    gateway, light, frontier = routed_gateway(make_gateway)
    refused = ask(gateway, SMALL_KEY, tier)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "model_not_allowed"
    assert "frontier" in error["message"]  # the tier it may not use is named
    assert frontier.requests() == 0
    assert light.requests() == 0  # refused before any model was asked


def test_routing_within_the_keys_rights_still_works(make_gateway):
    gateway, light, frontier = routed_gateway(make_gateway)
    assert ask(gateway, SMALL_KEY).status_code == 200
    assert ask(gateway, SMALL_KEY, "light").status_code == 200
    assert (light.requests(), frontier.requests()) == (2, 0)
    assert ask(gateway, BOTH_KEY, "frontier").status_code == 200  # it may use big
    assert frontier.requests() == 1
    checked = ask(gateway, BOTH_KEY, "checked")
    assert checked.status_code == 200, checked.text  # its verifier is on frontier


def test_a_public_model_opens_its_tier_to_every_key(make_gateway):
    light = make_gateway.mock(fresh=True)
    gateway = make_gateway(
        auth={"keys": [{"sha256": hash_api_key(SMALL_KEY), "tenant": "t", "models": ["small"]}]},
        providers={"light-up": {"base_url": light.base_url}},
        models={
            "small": {"provider": "light"},
            "big": {"provider": "frontier", "public": True},
        },
        routing={
            "tiers": {
                "light": {"deployments": [{"provider": "light-up", "upstream_model": "l"}]},
                "frontier": {"deployments": [{"provider": "light-up", "upstream_model": "f"}]},
            },
            "rules": [{"tier": "frontier", "when": {"headers": {"x-nearline-tier": "frontier"}}}],
        },
    )
    assert ask(gateway, SMALL_KEY, "frontier").status_code == 200
    assert ask(gateway, SMALL_KEY, model="big").status_code == 200  # and directly
    listed = http.get(
        f"{gateway.v1}/models", headers={"Authorization": f"Bearer {SMALL_KEY}"}, timeout=5
    )
    assert {m["id"] for m in listed.json()["data"]} == {"small", "big"}


# --- prefetch ------------------------------------------------------------------------------


async def test_prefetch_never_spends_one_keys_traffic_on_another_keys_calls():
    """Two keys of one tenant with different rights: what the wider key's traffic taught
    the prefetcher is never precomputed because of the narrower key's requests."""
    up = ScriptedProvider("up")
    catalogue = Catalogue({"m": ModelRoute(provider="up")}, {"up": up})
    precomputed: list[tuple[ProviderCall, Tenant]] = []

    async def precompute(call: ProviderCall, tenant: Tenant) -> None:
        precomputed.append((call, tenant))

    async def embed(text: str) -> Any:
        vector = np.zeros(4, dtype=np.float32)
        vector[int("landmark" in text)] = 1.0
        return vector

    prefetcher = Prefetcher(
        PrefetchSettings(enabled=True, models=["m"], min_transitions=1),
        embed,
        CacheTiers(catalogue.provider_name, None, None),
        precompute,
    )
    wide, narrow = Tenant("t"), Tenant("t", frozenset({"m"}))

    def call(text: str, tenant: Tenant, provider: str | None = None) -> ProviderCall:
        return ProviderCall(chat(text), "mock-1", tenant.name, provider=provider)

    # the wide key asked France → landmarks, the landmarks question routed to "frontier"
    await prefetcher.observe(call("capital of France?", wide), wide)
    await prefetcher.observe(call("landmarks of Paris?", wide, "frontier"), wide)
    await prefetcher.observe(call("capital of France?", narrow), narrow)
    assert precomputed == []  # the narrow key's stream learnt nothing of the wide one's
    await prefetcher.observe(call("capital of France?", wide), wide)
    assert [(c.provider, t) for c, t in precomputed] == [("frontier", wide)]
