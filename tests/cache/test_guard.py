"""The near-miss guard: pairs that embeddings call the same but whose answers differ."""

from __future__ import annotations

import numpy as np
import pytest

from nearline.embed import Embedder
from nearline.gateway.cache.guard import Mismatch, NearMissGuard
from nearline.gateway.cache.semantic import SemanticThresholds

HARD_NEGATIVES = [
    ("How do I convert 5 km to miles?", "How do I convert 5 miles to km?", Mismatch.UNIT),
    ("What is the boiling point of water in Celsius?",
     "What is the boiling point of water in Fahrenheit?", Mismatch.UNIT),
    ("How long does it take to drive 100 miles?",
     "How long does it take to drive 100 km?", Mismatch.UNIT),
    ("How do I lose 10 pounds in a month?", "How do I lose 10 kg in a month?", Mismatch.UNIT),
    ("How many calories are in 100 grams of rice?",
     "How many calories are in 200 grams of rice?", Mismatch.NUMBER),
    ("What is the best laptop under $500?",
     "What is the best laptop under $1000?", Mismatch.NUMBER),
    ("What are the symptoms of type 1 diabetes?",
     "What are the symptoms of type 2 diabetes?", Mismatch.NUMBER),
    ("How much does an iPhone 12 cost?", "How much does an iPhone 13 cost?", Mismatch.NUMBER),
    ("What is the weather in London today?",
     "What is the weather in London tomorrow?", Mismatch.DATE),
    ("Why did Apple stock fall in March?", "Why did Apple stock fall in April?", Mismatch.DATE),
    ("What is the population of India in 2011?",
     "What is the population of India in 2021?", Mismatch.DATE),
    ("Is it safe to drink tap water in Mexico?",
     "Is it not safe to drink tap water in Mexico?", Mismatch.NEGATION),
    ("Which foods should I eat during pregnancy?",
     "Which foods should I not eat during pregnancy?", Mismatch.NEGATION),
    ("Can I take ibuprofen with alcohol?",
     "Why can't I take ibuprofen with alcohol?", Mismatch.NEGATION),
    ("What is the time difference between New York and London?",
     "What is the time difference between New York and Paris?", Mismatch.ENTITY),
    ("What is the GDP of Germany?", "What is the GDP of France?", Mismatch.ENTITY),
    ("Why is Python better than Java?", "Why is Java better than Python?", Mismatch.ORDER),
    ("How do I get from Paris to Rome by train?",
     "How do I get from Rome to Paris by train?", Mismatch.ORDER),
    ("What are the advantages of nuclear energy?",
     "What are the disadvantages of nuclear energy?", Mismatch.OPPOSITE),
    ("What is the best way to learn Spanish?",
     "What is the worst way to learn Spanish?", Mismatch.OPPOSITE),
]  # fmt: skip

PARAPHRASES = [
    ("How can you access a private Instagram account?",
     "How do I gain access to a private Instagram account?"),
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("How do I lose 10 pounds in a month?", "What's the best way to lose 10 lbs in a month?"),
    ("What are some logical, fact-based reasons to vote for Trump?",
     "What are valid rational reasons for voting for Donald Trump?"),
    ("How do I learn Python quickly?", "What is the fastest way to learn Python?"),
    ("Is it safe to drink tap water in Mexico?",
     "Can you safely drink the tap water in Mexico?"),
    ("What are the symptoms of type 2 diabetes?",
     "What symptoms does type 2 diabetes have?"),
    ("Which is better, Canon or Nikon?", "Which is better, Nikon or Canon?"),
    ("What happened in 1969?", "What happened in the year 1969?"),
    ("How do I make my hair grow faster?", "What can I do to make my hair grow faster?"),
]  # fmt: skip

guard = NearMissGuard()


@pytest.mark.parametrize(("query", "cached", "kind"), HARD_NEGATIVES)
def test_hard_negatives_are_rejected_for_the_right_reason(
    query: str, cached: str, kind: Mismatch
) -> None:
    verdict = guard.check(query, cached)

    assert not verdict.accepted
    assert kind in verdict.reasons
    assert verdict.details  # every rejection says what differed


@pytest.mark.parametrize(("query", "cached"), PARAPHRASES)
def test_paraphrases_pass(query: str, cached: str) -> None:
    verdict = guard.check(query, cached)

    assert verdict.accepted, verdict.details


def test_the_guard_is_symmetric_on_the_hard_negatives() -> None:
    for query, cached, _ in HARD_NEGATIVES:
        assert not guard.check(cached, query).accepted


def test_similarity_alone_would_offer_most_hard_negatives(embedder: Embedder) -> None:
    """Why the guard exists: most of these pairs are in the near band or above."""
    queries = embedder.encode([query for query, _, _ in HARD_NEGATIVES])
    cached = embedder.encode([cached for _, cached, _ in HARD_NEGATIVES])
    similarity = np.sum(queries * cached, axis=1)

    above = int(np.sum(similarity >= SemanticThresholds().near))

    assert above >= len(HARD_NEGATIVES) // 2
