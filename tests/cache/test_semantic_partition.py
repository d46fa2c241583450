"""Entries are only comparable inside one partition: tenant, model, answer-changing
parameters and the conversation so far (system and developer prompts included)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from nearline.embed import EmbeddingBatcher
from nearline.gateway.cache.partition import (
    Turn,
    parse_partition,
    partition_key,
    semantic_key,
)
from nearline.gateway.cache.semantic import SemanticCache, SemanticThresholds

FOLLOWUPS = Path(__file__).parents[3] / "shared" / "data" / "semantic" / "followup_queries.json"
QUESTION = "What is the capital of France?"


@pytest.fixture
async def cache(batcher: EmbeddingBatcher) -> AsyncIterator[SemanticCache]:
    async with SemanticCache(batcher) as cache:
        yield cache


def load_followups() -> list[dict[str, str]]:
    if not FOLLOWUPS.is_file():
        pytest.fail(f"follow-up data set not found at {FOLLOWUPS} (../shared beside the repo)")
    rows: list[dict[str, str]] = json.loads(FOLLOWUPS.read_text())
    return rows


def standalone(tenant: str = "acme", model: str = "m1", **params: object) -> str:
    key = semantic_key(tenant, model, [Turn("user", QUESTION)], params)
    assert key is not None
    return key.partition


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(lambda: standalone(tenant="globex"), id="cross-tenant"),
        pytest.param(lambda: standalone(model="m2"), id="cross-model"),
        pytest.param(lambda: standalone(temperature=1.2), id="cross-temperature"),
        pytest.param(
            lambda: standalone(response_format={"type": "json_object"}), id="cross-format"
        ),
        pytest.param(
            lambda: partition_key(
                "acme",
                "m1",
                context=[Turn("system", "Answer in French.")],
                question=Turn("user", QUESTION),
            ),
            id="cross-system-prompt",
        ),
    ],
)
async def test_the_same_question_never_hits_across_partitions(
    cache: SemanticCache, other: object
) -> None:
    assert callable(other)
    home, foreign = standalone(), other()
    assert home != foreign
    await cache.store(home, QUESTION, b"Paris", ttl_s=60)

    assert await cache.lookup(foreign, QUESTION) is None
    assert await cache.lookup(home, QUESTION) is not None


def test_parameters_that_do_not_change_the_answer_share_a_partition() -> None:
    assert standalone() == standalone(stream=True, user="u-17", stream_options=None)
    assert standalone(temperature=None) == standalone()


def test_semantic_key_splits_context_and_query() -> None:
    messages = [
        Turn("system", "Be brief."),
        Turn("user", QUESTION),
        Turn("assistant", "Paris."),
        Turn("user", "And its population?"),
    ]

    key = semantic_key("acme", "m1", messages)

    assert key is not None
    assert key.query == "And its population?"
    assert key.partition == partition_key("acme", "m1", context=messages[:3], question=messages[3])
    assert parse_partition(key.partition).tenant == "acme"


def test_semantic_key_skips_requests_whose_last_message_is_not_a_user_question() -> None:
    assert semantic_key("acme", "m1", [Turn("user", "hi"), Turn("assistant", "hello")]) is None
    assert semantic_key("acme", "m1", [Turn("user", "   ")]) is None
    assert semantic_key("acme", "m1", []) is None


def test_tenant_and_model_names_with_separators_survive_the_key() -> None:
    parts = parse_partition(partition_key("a|b c", "org/model|v2"))

    assert (parts.tenant, parts.model) == ("a|b c", "org/model|v2")


async def test_follow_ups_never_match_standalone_questions(
    cache: SemanticCache, batcher: EmbeddingBatcher
) -> None:
    rows = load_followups()
    standalone_keys = []
    for row in rows:
        key = semantic_key("acme", "m1", [Turn("user", row["Main Query"])])
        assert key is not None
        standalone_keys.append(key)
        await cache.store(key.partition, key.query, row["Main Query Response"].encode(), 600)
    # Standalone paraphrase-level questions are stored under the same partition as each other,
    # so the follow-ups below compete with every main query, not only their own.
    assert len({key.partition for key in standalone_keys}) == 1

    served = []
    for row in rows:
        conversation = [
            Turn("user", row["Main Query"]),
            Turn("assistant", row["Main Query Response"]),
            Turn("user", row["Follow-Up Query"]),
        ]
        key = semantic_key("acme", "m1", conversation)
        assert key is not None
        match = await cache.lookup(key.partition, key.query)
        if match is not None:
            served.append((row["Follow-Up Query"], match.cached_query))

    assert served == []


async def test_without_conversation_context_some_follow_ups_would_look_like_their_question(
    batcher: EmbeddingBatcher,
) -> None:
    """Guards the test above against being vacuous: the pairs are genuinely close."""
    rows = load_followups()
    mains = await batcher.embed_many([row["Main Query"] for row in rows])
    follow_ups = await batcher.embed_many([row["Follow-Up Query"] for row in rows])

    similarity = np.sum(mains * follow_ups, axis=1)

    assert float(np.max(similarity)) >= SemanticThresholds().near


async def test_a_follow_up_is_served_again_in_the_same_conversation(
    cache: SemanticCache,
) -> None:
    conversation = [
        Turn("user", QUESTION),
        Turn("assistant", "Paris."),
        Turn("user", "And what is its population?"),
    ]
    key = semantic_key("acme", "m1", conversation)
    assert key is not None
    await cache.store(key.partition, key.query, b"About 2.1 million.", ttl_s=60)

    again = semantic_key("acme", "m1", [*conversation[:2], Turn("user", "What's its population?")])
    assert again is not None
    match = await cache.lookup(again.partition, again.query)

    assert match is not None
    assert match.payload == b"About 2.1 million."
    fresh = semantic_key("acme", "m1", [Turn("user", "And what is its population?")])
    assert fresh is not None
    assert await cache.lookup(fresh.partition, fresh.query) is None
