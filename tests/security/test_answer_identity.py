"""Issue 13, point 6: one definition of what changes the answer, for both cache tiers.

The semantic partition used to drop the message ``name`` (alice's "What is my name?" answer
was served to bob, within a tenant), to file ``developer`` and ``system`` prompts together,
and to join leading system messages A, B into one "A\\n\\nB". Both tiers now key on the same
identity of the conversation (``ChatRequest.turns``: roles as sent, names, message and part
boundaries); the semantic tier leaves out only the text of the question it embeds.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nearline.config import ModelRoute
from nearline.core.events import Delta, Done, Event, Usage
from nearline.core.provider import ProviderCall
from nearline.core.request import ChatRequest
from nearline.core.source import Source
from nearline.embed import EmbeddingBatcher
from nearline.gateway.cache.exact import ExactCache
from nearline.gateway.cache.exact_store import MemoryExactStore
from nearline.gateway.cache.semantic import SemanticCache
from nearline.gateway.serving.catalogue import Catalogue
from nearline.gateway.serving.pipeline import ServingPipeline
from nearline.gateway.serving.service import ChatService
from nearline.gateway.serving.tiers import CacheKeys, CacheTiers
from nearline.gateway.telemetry.observe import AnswerObserver
from nearline.gateway.tenancy import Tenant
from nearline.testing.routing import KeywordEmbedder
from nearline.testing.scripted import ScriptedProvider

QUESTION = {"role": "user", "content": "What is my name?"}


def request(*messages: dict[str, Any], **fields: Any) -> ChatRequest:
    return ChatRequest.model_validate({"model": "m", "messages": list(messages), **fields})


def keys(chat: ChatRequest, tenant: str = "acme") -> CacheKeys:
    store = MemoryExactStore(10)
    tiers = CacheTiers(
        lambda call: "up",
        ExactCache(store, ttl_s=60, stale_while_revalidate_s=0),
        SemanticCache.__new__(SemanticCache),  # keys only: never looked up here
    )
    return tiers.keys(ProviderCall(chat, upstream_model="m", tenant=tenant))


def partition(chat: ChatRequest) -> str:
    semantic = keys(chat).semantic
    assert semantic is not None
    return semantic.partition


def system(role: str, text: str | list[str]) -> dict[str, Any]:
    content = text if isinstance(text, str) else [{"type": "text", "text": t} for t in text]
    return {"role": role, "content": content}


# Pairs of requests that may get different answers: both tiers must keep them apart.
DIFFERENT = {
    "asker's name": (
        request({**QUESTION, "name": "alice"}),
        request({**QUESTION, "name": "bob"}),
    ),
    "named vs anonymous": (request({**QUESTION, "name": "alice"}), request(QUESTION)),
    "developer vs system": (
        request(system("developer", "Be brief."), QUESTION),
        request(system("system", "Be brief."), QUESTION),
    ),
    "two system messages vs one joined": (
        request(system("system", "A"), system("system", "B"), QUESTION),
        request(system("system", "A\n\nB"), QUESTION),
    ),
    "content parts vs one string": (
        request(system("system", ["Be ", "brief."]), QUESTION),
        request(system("system", "Be brief."), QUESTION),
    ),
    "a name earlier in the conversation": (
        request({"role": "user", "content": "hi", "name": "alice"}, QUESTION),
        request({"role": "user", "content": "hi", "name": "bob"}, QUESTION),
    ),
}


@pytest.mark.parametrize("pair", DIFFERENT.values(), ids=DIFFERENT.keys())
def test_both_tiers_keep_apart_what_may_change_the_answer(
    pair: tuple[ChatRequest, ChatRequest],
) -> None:
    first, second = pair
    assert keys(first).exact != keys(second).exact
    assert partition(first) != partition(second)


def test_what_does_not_change_the_answer_shares_both_keys() -> None:
    plain = request(system("developer", "Be brief."), {**QUESTION, "name": "alice"})
    streamed = request(
        system("developer", "Be brief."), {**QUESTION, "name": "alice"}, stream=True, user="u-1"
    )
    assert keys(plain) == keys(streamed)


def test_the_semantic_partition_leaves_out_only_the_question_text() -> None:
    """Paraphrases must still meet: the question's text is embedded, not keyed."""
    one = request(system("system", "Be brief."), {**QUESTION, "name": "alice"})
    other = request(
        system("system", "Be brief."), {"role": "user", "content": "Who am I?", "name": "alice"}
    )
    assert keys(one).exact != keys(other).exact
    assert partition(one) == partition(other)


# --- through the pipeline: alice's answer is not served to bob ------------------------------


@pytest.fixture
async def pipeline() -> AsyncIterator[tuple[ChatService, ScriptedProvider]]:
    batcher = EmbeddingBatcher(KeywordEmbedder())
    provider = ScriptedProvider("up")
    catalogue = Catalogue({"m": ModelRoute(provider="up")}, {"up": provider})
    async with SemanticCache(batcher) as semantic:
        tiers = CacheTiers(catalogue.provider_name, None, semantic)
        observer = AnswerObserver()
        serving = ServingPipeline(catalogue, tiers, observer)
        try:
            yield ChatService(catalogue, serving, observer), provider
        finally:
            await serving.aclose()
            await batcher.aclose()


async def _text(service: ChatService, chat: ChatRequest) -> tuple[str, Source]:
    answer = await service.handle(chat, Tenant("acme"), {}, received_at=time.perf_counter())
    try:
        events: list[Event] = [event async for event in answer.events()]
    finally:
        await answer.aclose()
    return "".join(e.text for e in events if isinstance(e, Delta)), answer.source


async def test_alices_answer_is_not_served_to_bob(pipeline) -> None:
    service, provider = pipeline
    provider.enqueue(Delta("Alice."), Usage(5, 1), Done())
    provider.enqueue(Delta("Bob."), Usage(5, 1), Done())
    alice = request({**QUESTION, "name": "alice"})
    assert await _text(service, alice) == ("Alice.", Source.INFERENCE)
    assert await _text(service, alice) == ("Alice.", Source.SEMANTIC)  # the tier is on
    bob = request({**QUESTION, "name": "bob"})
    assert await _text(service, bob) == ("Bob.", Source.INFERENCE)
