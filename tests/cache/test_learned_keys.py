"""Issue 18, the second round: the per-request bound's weighted count, verified paraphrases
as keys of the answer they were served, and requests answered by another tier as trials.
"""

from __future__ import annotations

import math
import random

import pytest

from nearline.embed import EmbeddingBatcher
from nearline.gateway.cache.bounds import (
    gamma_cdf,
    gamma_quantile,
    poisson_upper,
    weighted_poisson_upper,
)
from nearline.gateway.cache.partition import partition_key
from nearline.gateway.cache.semantic import SemanticCache
from nearline.gateway.cache.semantic_types import SemanticMatch
from nearline.gateway.cache.thresholds import LearnedThresholds, Outcome
from nearline.gateway.cache.verify import OnlineLearning, VerificationBudget
from nearline.testing import eventually_async

from .conftest import BASE, FakeEmbedder
from .test_learned_thresholds import STATIC_HIT, redis_replica

# -- the bounds ---------------------------------------------------------------------------


def test_the_gamma_function_and_its_quantile() -> None:
    assert gamma_cdf(1.0, 1.0) == pytest.approx(1 - math.exp(-1), abs=1e-12)
    assert gamma_cdf(30.0, 4.0) == pytest.approx(1.0, abs=1e-9)
    assert gamma_cdf(3.5, 2.5) == pytest.approx(0.7793597, abs=1e-6)  # scipy.stats.gamma
    assert gamma_quantile(0.95, 4.31, 1.93) == pytest.approx(15.8120636, abs=1e-6)
    for count in (0, 1, 5, 20, 200):  # unit weights: Garwood's bound
        assert weighted_poisson_upper(count, count, 1.0, 0.05) == pytest.approx(
            poisson_upper(count, 0.05), rel=1e-9
        )


def test_the_weighted_bound_is_tighter_than_two_split_garwood_bounds() -> None:
    weight = 1 / 0.3
    nothing_seen = weighted_poisson_upper(0.0, 0.0, weight, 0.05)
    assert nothing_seen == pytest.approx(weight * -math.log(0.05), rel=1e-9)
    five_unserved = weighted_poisson_upper(5.0, 5.0, weight, 0.05)
    split = poisson_upper(5, 0.025) + poisson_upper(0, 0.025) * weight
    assert five_unserved == pytest.approx(15.84, abs=0.01)
    assert five_unserved < 0.7 * split


def test_the_weighted_bound_covers_its_mean() -> None:
    """Unserved wrong answers seen in full, served ones on a 30 % sample: the bound on the
    mean of the weighted count covers it in at least 95 % of 4,000 draws, at small and at
    larger counts."""
    rng = random.Random(18)
    rate, weight = 0.3, 1 / 0.3

    def poisson(mean: float) -> int:
        count, total = 0, rng.expovariate(1.0)
        while total < mean:
            count += 1
            total += rng.expovariate(1.0)
        return count

    for unserved_mean, served_mean in ((0.5, 1.0), (4.0, 6.0), (20.0, 30.0)):
        covered = 0
        for _ in range(4000):
            unserved, sampled = poisson(unserved_mean), poisson(served_mean * rate)
            total = unserved + sampled * weight
            square = unserved + sampled * weight * weight
            covered += weighted_poisson_upper(total, square, weight, 0.05) >= (
                unserved_mean + served_mean
            )
        assert covered / 4000 >= 0.95


# -- requests answered by another tier ----------------------------------------------------


def test_requests_answered_elsewhere_are_trials_of_the_per_request_bound() -> None:
    def taught() -> LearnedThresholds:
        learned = LearnedThresholds(0.01, static_hit=STATIC_HIT, per_request=True, verify_rate=0.5)
        for index in range(40):
            learned.record(Outcome("p", index, 0.93, correct=index % 20 != 0))
        return learned

    looked_up, with_exact = taught(), taught()
    for _ in range(600):
        looked_up.count_lookup("p")
        with_exact.count_lookup("p")
        with_exact.count_lookup("p")  # and as many again answered by the exact tier
        with_exact.count_lookup("q")  # another partition's requests do not count

    first, second = looked_up.request_bound("p", 0.93), with_exact.request_bound("p", 0.93)
    assert first is not None and second is not None
    assert second == pytest.approx(first / 2)
    assert not looked_up.decide("p", 99, 0.93).serve
    assert with_exact.decide("p", 99, 0.93).rule == "learned"


async def test_count_request_reaches_the_learned_thresholds(
    fake: tuple[FakeEmbedder, EmbeddingBatcher],
) -> None:
    _, batcher = fake
    learned = LearnedThresholds(0.05, static_hit=STATIC_HIT, per_request=True)
    async with SemanticCache(batcher, learned=learned) as cache:
        for _ in range(3):
            cache.count_request("p")
        assert learned.to_document()["lookups"] == {"p": 3}
    async with SemanticCache(batcher) as static:
        static.count_request("p")  # no learned thresholds: nothing to count, no error


# -- verified paraphrases become keys -----------------------------------------------------


class Judge:
    def __init__(self, agree: bool) -> None:
        self.answer = agree

    async def agree(self, question: str, cached: str, fresh: str) -> bool:
        del question, cached, fresh
        return self.answer


def _learning(cache: SemanticCache, agree: bool, add_keys: bool = True) -> OnlineLearning:
    return OnlineLearning(cache, Judge(agree), VerificationBudget(1.0), add_keys=add_keys)


async def _served(cache: SemanticCache, partition: str, query: str) -> SemanticMatch:
    match = await cache.lookup(partition, query)
    assert match is not None
    assert match.band == "hit"
    return match


async def test_a_verified_paraphrase_becomes_a_key_of_the_answer(
    fake: tuple[FakeEmbedder, EmbeddingBatcher],
) -> None:
    embedder, batcher = fake
    partition, other = partition_key("acme", "m1"), partition_key("globex", "m1")
    query = embedder.at(0.97)
    learned = LearnedThresholds(0.05, static_hit=STATIC_HIT)
    async with SemanticCache(batcher, learned=learned) as cache:
        await cache.store(partition, BASE, b"answer", 60)
        match = await _served(cache, partition, query)
        assert match.similarity == pytest.approx(0.97, abs=1e-4)

        assert await _learning(cache, agree=True).learn(match, query, "a", "a", paid=True)

        assert len(cache) == 2 and cache.stats.added_keys == 1
        again = await _served(cache, partition, query)
        assert (again.payload, again.rule, again.cached_query) == (b"answer", "static", query)
        assert again.similarity == pytest.approx(1.0, abs=1e-5)
        assert await cache.lookup(other, query) is None  # the key is its partition's only
        # verified again at similarity 1: it is that entry's own key, nothing more is added
        await _learning(cache, agree=True).learn(again, query, "a", "a", paid=True)
        assert len(cache) == 2


async def test_only_a_served_match_verified_right_becomes_a_key(
    fake: tuple[FakeEmbedder, EmbeddingBatcher],
) -> None:
    embedder, batcher = fake
    partition = partition_key("acme", "m1")
    learned = LearnedThresholds(0.05, static_hit=STATIC_HIT)
    async with SemanticCache(batcher, learned=learned) as cache:
        await cache.store(partition, BASE, b"answer", 60)
        free, off, wrong = embedder.at(0.98), embedder.at(0.975), embedder.at(0.99)

        match = await _served(cache, partition, free)  # judged for free: the pipeline
        await _learning(cache, agree=True).learn(match, free, "a", "a", paid=False)  # stores
        match = await _served(cache, partition, off)
        await _learning(cache, agree=True, add_keys=False).learn(match, off, "a", "a", paid=True)
        match = await _served(cache, partition, wrong)
        assert not await _learning(cache, agree=False).learn(match, wrong, "a", "b", paid=True)
        assert learned.decide(partition, match.entry_id, 0.99).rule == "vetoed"
        assert len(cache) == 1 and cache.stats.added_keys == 0


async def test_an_added_key_keeps_the_entry_s_lifetime(
    fake: tuple[FakeEmbedder, EmbeddingBatcher],
) -> None:
    embedder, batcher = fake
    partition = partition_key("acme", "m1")
    query = embedder.at(0.97)
    async with SemanticCache(batcher, learned=LearnedThresholds(0.05, static_hit=STATIC_HIT)) as c:
        entry_id = await c.store(partition, BASE, b"answer", 5)
        match = await _served(c, partition, query)
        added = await c.add_key(match, query)
        assert added is not None
        catalog = c._catalog  # the expiry is not part of the public API
        assert catalog[added].expires_at <= catalog[entry_id].expires_at + 1e-6
        await c.delete(entry_id)
        assert await c.add_key(match, embedder.at(0.96)) is None  # entry gone: no key


async def test_an_added_key_is_shared_by_the_replicas(
    fake: tuple[FakeEmbedder, EmbeddingBatcher], namespace: str
) -> None:
    embedder, batcher = fake
    partition = partition_key("acme", "m1")
    query = embedder.at(0.97)

    async with redis_replica(batcher, namespace) as one, redis_replica(batcher, namespace) as two:
        await one.store(partition, BASE, b"answer", 60)
        await eventually_async(lambda: len(two) == 1)
        match = await _served(one, partition, query)

        await _learning(one, agree=True).learn(match, query, "a", "a", paid=True)

        await eventually_async(lambda: len(two) == 2)
        seen = await _served(two, partition, query)
        assert (seen.payload, seen.cached_query) == (b"answer", query)
        assert seen.similarity == pytest.approx(1.0, abs=1e-5)
