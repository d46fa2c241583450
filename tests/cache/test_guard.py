"""The near-miss guard: pairs that embeddings call the same but whose answers differ."""

from __future__ import annotations

import numpy as np
import pytest

from nearline.embed import Embedder, EmbeddingBatcher
from nearline.gateway.cache.guard import Mismatch, NearMissGuard
from nearline.gateway.cache.semantic import SemanticCache, SemanticThresholds

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

# Issue 18 point 4: blind spots measured on the shipped guard, each a regression test.
BLIND_SPOTS = [
    # who does what to whom: the order around any verb, not only to/than/into/over
    ("Why do Poles dislike Russians?", "Why do Russians dislike Poles?", Mismatch.ORDER),
    ("What percentage of terrorists are Muslim?",
     "What percentage of Muslims are terrorists?", Mismatch.ORDER),
    ("Do cats chase dogs?", "Do dogs chase cats?", Mismatch.ORDER),
    ("Why does India hate Pakistan?", "Why does Pakistan hate India?", Mismatch.ORDER),
    # opposite pairs the list did not have
    ("How do I cook an egg with a soft yolk?",
     "How do I cook an egg with a hard yolk?", Mismatch.OPPOSITE),
    ("How long should I boil a soft-boiled egg?",
     "How long should I boil a hard-boiled egg?", Mismatch.OPPOSITE),
    ("Why are rich countries getting richer?",
     "Why are poor countries getting richer?", Mismatch.OPPOSITE),
    ("How do I build strong muscles?", "How do I build weak muscles?", Mismatch.OPPOSITE),
    ("Which foods are high in iron?", "Which foods are low in iron?", Mismatch.OPPOSITE),
    ("Is it better to upload or not?", "Is it better to download or not?", Mismatch.OPPOSITE),
    # a different kind of answer: a time (decade, year) is not a person
    ("In which decade was the polio vaccine developed?",
     "Who developed the polio vaccine?", Mismatch.QUESTION_TYPE),
    ("In what year was penicillin discovered?",
     "Who discovered penicillin?", Mismatch.QUESTION_TYPE),
    ("What year did the Titanic sink?", "Where did the Titanic sink?", Mismatch.QUESTION_TYPE),
    ("Which country invented paper?", "Who invented paper?", Mismatch.QUESTION_TYPE),
]  # fmt: skip

# Spellings of one name are one entity: they must not block a true duplicate.
SPELLING_VARIANTS = [
    ("Why do so many people hate Hilary Clinton?",
     "Why do so many people hate Hillary Clinton?"),
    ("What is the best time to visit Sweeden?", "What is the best time to visit Sweden?"),
    ("How do I learn Tensorflow?", "How do I learn TensorFlow?"),
]  # fmt: skip

# ... while names that differ by a letter or two and are other entities still differ.
DIFFERENT_NAMES = [
    ("What is the capital of Austria?", "What is the capital of Australia?"),
    ("Is Iran a safe country to visit?", "Is Iraq a safe country to visit?"),
    ("What is the population of Niger?", "What is the population of Nigeria?"),
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
    for query, cached, _ in HARD_NEGATIVES + BLIND_SPOTS:
        assert not guard.check(cached, query).accepted


@pytest.mark.parametrize(("query", "cached", "kind"), BLIND_SPOTS)
def test_blind_spots_are_rejected_for_the_right_reason(
    query: str, cached: str, kind: Mismatch
) -> None:
    verdict = guard.check(query, cached)

    assert kind in verdict.reasons, verdict.details


@pytest.mark.parametrize(("query", "cached"), SPELLING_VARIANTS)
def test_spelling_variants_of_one_name_do_not_block_a_duplicate(query: str, cached: str) -> None:
    verdict = guard.check(query, cached)

    assert verdict.accepted, verdict.details


@pytest.mark.parametrize(("query", "cached"), DIFFERENT_NAMES)
def test_names_a_letter_or_two_apart_are_still_different_entities(query: str, cached: str) -> None:
    assert Mismatch.ENTITY in guard.check(query, cached).reasons


@pytest.mark.parametrize(
    ("cached", "asked"),
    [
        ("Who developed the polio vaccine?", "In which decade was the polio vaccine developed?"),
        ("Who discovered penicillin?", "In what year was penicillin discovered?"),
    ],
)
async def test_the_near_band_does_not_offer_another_question_types_answer(
    batcher: EmbeddingBatcher, cached: str, asked: str
) -> None:
    async with SemanticCache(batcher) as cache:
        await cache.store("t|m|p", cached, b"an answer about a person", ttl_s=60)

        match = await cache.lookup("t|m|p", asked)

    assert match is None


def test_similarity_alone_would_offer_most_hard_negatives(embedder: Embedder) -> None:
    """Why the guard exists: most of these pairs are in the near band or above."""
    queries = embedder.encode([query for query, _, _ in HARD_NEGATIVES])
    cached = embedder.encode([cached for _, cached, _ in HARD_NEGATIVES])
    similarity = np.sum(queries * cached, axis=1)

    above = int(np.sum(similarity >= SemanticThresholds().near))

    assert above >= len(HARD_NEGATIVES) // 2
