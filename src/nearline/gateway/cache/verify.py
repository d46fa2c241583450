"""Online learning for the semantic tier: which matches to verify, and how to judge them.

A candidate match becomes evidence (:class:`~nearline.gateway.cache.thresholds.Outcome`)
when its cached answer is compared with a fresh answer from the model:

* **free**: a candidate that was not served (below the learned threshold, or in the near
  band) — the request went to the model anyway, so its answer is compared at no extra cost;
* **paid** (a *verification*): a served match on a budgeted share of requests
  (:class:`VerificationBudget`: ``verify_rate`` of served matches, at most
  ``per_minute``) is also sent to the model in the background; its spend is counted. When
  the answers agree, the question becomes another key of that answer
  (:meth:`SemanticCache.add_key`): asked again, it matches at similarity 1 instead of
  at the learned threshold's margin.

The comparison is a pluggable :class:`AnswerJudge`. The default (:class:`AnswerAgreement`)
takes normalised exact match for short or structured answers (numbers that differ are a
disagreement, whatever else agrees) and answer-embedding similarity, with the bundled
embedder, for longer ones.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from nearline.core.tasks import BackgroundTasks
from nearline.gateway.cache.semantic import SemanticCache, SemanticMatch
from nearline.gateway.cache.semantic_store import SemanticStoreUnavailable, Vector
from nearline.gateway.cache.thresholds import Outcome

EmbedText = Callable[[str], Awaitable[Vector]]
# Told of every judged outcome: (a paid verification?, agreed?).
OnOutcome = Callable[[bool, bool], None]
logger = logging.getLogger(__name__)


class AnswerJudge(Protocol):
    """Whether ``fresh`` (the model's answer now) agrees with ``cached`` for ``question``."""

    async def agree(self, question: str, cached: str, fresh: str) -> bool: ...


_WORD = re.compile(r"[\w.%$€£-]+")
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")


def normalise(text: str) -> str:
    """Lower case, words only, single spaces: what two equal short answers share."""
    return " ".join(_WORD.findall(text.lower())).strip(" .")


def _structured(text: str) -> bool:
    stripped = text.strip()
    return stripped[:1] in {"{", "["} or stripped.startswith("```")


class AnswerAgreement:
    """The default judge: exact for short/structured answers, embeddings for the rest.

    ``short_words``: answers with at most this many words (either side) must match after
    :func:`normalise`. Longer answers agree when their embeddings' cosine is at least
    ``min_similarity``; answers whose numbers differ never agree.
    """

    def __init__(
        self, embed: EmbedText, *, short_words: int = 8, min_similarity: float = 0.9
    ) -> None:
        self._embed = embed
        self._short_words = short_words
        self._min_similarity = min_similarity

    async def agree(self, question: str, cached: str, fresh: str) -> bool:
        del question
        left, right = normalise(cached), normalise(fresh)
        if left == right:
            return True
        if _NUMBER.findall(left) != _NUMBER.findall(right):
            return False
        short = min(len(left.split()), len(right.split())) <= self._short_words
        if short or _structured(cached) or _structured(fresh):
            return False
        a, b = await self._embed(cached), await self._embed(fresh)
        return float(np.dot(a, b)) >= self._min_similarity


class VerificationBudget:
    """Sample ``rate`` of served matches for verification, at most ``per_minute`` of them
    (a token bucket; ``per_minute=0``: no cap). ``rate=0`` verifies nothing."""

    def __init__(
        self,
        rate: float,
        per_minute: int = 0,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("verify_rate must be in [0, 1]")
        self._rate = rate
        self._per_minute = per_minute
        self._rng = rng or random.Random()
        self._clock = clock
        self._tokens = float(per_minute)
        self._last = clock()

    def take(self) -> bool:
        if self._rate <= 0.0 or self._rng.random() >= self._rate:
            return False
        if self._per_minute <= 0:
            return True
        now = self._clock()
        self._tokens = min(
            float(self._per_minute), self._tokens + (now - self._last) * self._per_minute / 60
        )
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass(slots=True)
class LearningStats:
    verifications: int = 0  # paid: served matches also sent to the model
    free: int = 0  # candidates not served, compared with the answer the model gave anyway
    agreed: int = 0
    disagreed: int = 0

    @property
    def agreement_rate(self) -> float | None:
        judged = self.agreed + self.disagreed
        return None if judged == 0 else self.agreed / judged


class OnlineLearning:
    """Turn comparisons of cached and fresh answers into the cache's learned evidence.

    ``on_outcome(paid, agreed)`` is told of each judged outcome (metrics). Judging that
    must not delay an answer runs in this object's background tasks (``learn_later``),
    cancelled by ``aclose``.
    """

    def __init__(
        self,
        cache: SemanticCache,
        judge: AnswerJudge,
        budget: VerificationBudget,
        *,
        on_outcome: OnOutcome | None = None,
        add_keys: bool = True,
    ) -> None:
        self._cache = cache
        self._add_keys = add_keys
        self._judge = judge
        self._budget = budget
        self._on_outcome = on_outcome
        self._tasks = BackgroundTasks("nearline-semantic-learning")
        self.stats = LearningStats()

    @property
    def cache(self) -> SemanticCache:
        return self._cache

    def learn_later(
        self, match: SemanticMatch, question: str, cached: str, fresh: str, *, paid: bool
    ) -> None:
        """:meth:`learn` in the background."""
        self._tasks.start(self.learn(match, question, cached, fresh, paid=paid))

    async def aclose(self) -> None:
        await self._tasks.aclose()

    def should_verify(self, match: SemanticMatch) -> bool:
        """Whether to also ask the model, in the background, about this served match."""
        return match.band == "hit" and self._budget.take()

    async def learn(
        self, match: SemanticMatch, question: str, cached: str, fresh: str, *, paid: bool
    ) -> bool:
        """Judge ``fresh`` against ``cached`` and record the outcome; whether they agreed.

        A shared store that cannot be reached loses the outcome (logged), never the request.
        """
        agreed = await self._judge.agree(question, cached, fresh)
        if paid:
            self.stats.verifications += 1
        else:
            self.stats.free += 1
        if agreed:
            self.stats.agreed += 1
        else:
            self.stats.disagreed += 1
        if self._on_outcome is not None:
            self._on_outcome(paid, agreed)
        outcome = Outcome(match.partition, match.entry_id, match.similarity, agreed, paid)
        try:
            await self._cache.record_outcome(outcome)
            if paid and agreed and self._add_keys:
                await self._cache.add_key(match, question)
        except SemanticStoreUnavailable as exc:
            logger.warning("semantic outcome not recorded: %s", exc)
        return agreed


def online_learning(
    cache: SemanticCache,
    embed: EmbedText,
    *,
    verify_rate: float,
    verify_per_minute: int,
    on_outcome: OnOutcome | None = None,
) -> OnlineLearning:
    """The default set-up: :class:`AnswerAgreement` on the bundled embedder, a budget."""
    return OnlineLearning(
        cache,
        AnswerAgreement(embed),
        VerificationBudget(verify_rate, verify_per_minute),
        on_outcome=on_outcome,
    )


__all__ = [
    "AnswerAgreement",
    "AnswerJudge",
    "LearningStats",
    "OnOutcome",
    "OnlineLearning",
    "VerificationBudget",
    "normalise",
    "online_learning",
]
