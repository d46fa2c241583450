"""The cache tiers together: the exact tier and the semantic tier, behind one object.

A request's keys are computed once (``keys``) and handed to every step that needs them:
the lookups, the storer that records a completed answer into both tiers, and ``is_cached``
(the prefetcher's question). Either tier may be off; its key is then ``None``. Both keys
come from one definition of what changes the answer: ``ChatRequest.turns()`` and
``ChatRequest.answer_changing_params()``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nearline.core.provider import ProviderCall
from nearline.gateway.cache.exact import ExactCache, ExactHit, exact_key
from nearline.gateway.cache.exact_store import EntryKey
from nearline.gateway.cache.partition import SemanticKey, semantic_key
from nearline.gateway.cache.recording import RecordedAnswer
from nearline.gateway.cache.semantic import SemanticCache, SemanticMatch
from nearline.gateway.cache.verify import OnlineLearning

Store = Callable[[RecordedAnswer], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CacheKeys:
    """Where one request's answer lives in each tier (``None``: the tier is off or the
    request cannot be cached there)."""

    exact: EntryKey | None
    semantic: SemanticKey | None

    @property
    def any(self) -> bool:
        return self.exact is not None or self.semantic is not None


class CacheTiers:
    def __init__(
        self,
        provider_name: Callable[[ProviderCall], str],
        exact: ExactCache | None = None,
        semantic: SemanticCache | None = None,
        *,
        semantic_ttl_s: float = 3600.0,
        learning: OnlineLearning | None = None,
    ) -> None:
        self._provider_name = provider_name
        self._exact = exact
        self._semantic = semantic
        self._semantic_ttl_s = semantic_ttl_s
        self._learning = learning

    @property
    def exact(self) -> ExactCache | None:
        return self._exact

    @property
    def semantic(self) -> SemanticCache | None:
        return self._semantic

    @property
    def learning(self) -> OnlineLearning | None:
        """The semantic tier's online learning (``None``: static thresholds only)."""
        return self._learning

    @property
    def enabled(self) -> bool:
        return self._exact is not None or self._semantic is not None

    def keys(self, call: ProviderCall) -> CacheKeys:
        """``call``'s keys in both tiers. Tiers chosen per request (routing) answer
        differently, so both keys name the provider."""
        provider = self._provider_name(call)
        exact = exact_key(call, provider) if self._exact is not None else None
        return CacheKeys(exact, self._semantic_key(call, provider))

    def _semantic_key(self, call: ProviderCall, provider: str) -> SemanticKey | None:
        if self._semantic is None:
            return None
        request = call.request
        key = semantic_key(
            call.tenant, request.model, request.turns(), request.answer_changing_params()
        )
        if key is None:
            return None
        return SemanticKey(f"{key.partition}|{provider}", key.query)

    async def lookup_exact(self, keys: CacheKeys) -> ExactHit | None:
        if self._exact is None or keys.exact is None:
            return None
        return await self._exact.get(keys.exact)

    async def lookup_semantic(self, keys: CacheKeys) -> SemanticMatch | None:
        """The nearest stored answer in ``band`` "hit" or "near", or ``None``."""
        if self._semantic is None or keys.semantic is None:
            return None
        return await self._semantic.lookup(keys.semantic.partition, keys.semantic.query)

    async def is_cached(self, keys: CacheKeys) -> bool:
        """Whether a lookup would be answered from a tier (fresh, stale or semantic hit)."""
        if await self.lookup_exact(keys) is not None:
            return True
        match = await self.lookup_semantic(keys)
        return match is not None and match.band == "hit"

    async def purge(self, tenant: str | None = None, model: str | None = None) -> dict[str, int]:
        """Drop the entries of ``tenant`` and/or ``model`` from both tiers; how many each."""
        return {
            "exact": 0 if self._exact is None else await self._exact.purge(tenant, model),
            "semantic": 0
            if self._semantic is None
            else await self._semantic.purge(tenant=tenant, model=model),
        }

    def storer(
        self, keys: CacheKeys, *, semantic: bool = True, candidate: SemanticMatch | None = None
    ) -> Store:
        """Store a completed answer under ``keys`` in the exact tier, and in the semantic
        tier too unless ``semantic`` is false (a stale exact entry's refresh). A
        ``candidate`` match that was not served is compared with the answer (free evidence
        for the learned thresholds)."""
        exact, cache, ttl_s = self._exact, self._semantic, self._semantic_ttl_s
        skey = keys.semantic if semantic else None
        learning = self._learning if keys.semantic is not None else None

        async def store(answer: RecordedAnswer) -> None:
            if learning is not None and candidate is not None and keys.semantic is not None:
                cached = RecordedAnswer.from_bytes(candidate.payload).text
                learning.learn_later(
                    candidate, keys.semantic.query, cached, answer.text, paid=False
                )
            if exact is not None and keys.exact is not None:
                await exact.put(keys.exact, answer)
            if cache is not None and skey is not None:
                await cache.store(skey.partition, skey.query, answer.to_bytes(), ttl_s)

        return store

    async def verified(self, keys: CacheKeys, match: SemanticMatch, fresh: RecordedAnswer) -> bool:
        """Record a served ``match`` checked against ``fresh`` (a paid verification);
        whether they agreed."""
        if self._learning is None or keys.semantic is None:
            return True
        cached = RecordedAnswer.from_bytes(match.payload).text
        return await self._learning.learn(match, keys.semantic.query, cached, fresh.text, paid=True)
