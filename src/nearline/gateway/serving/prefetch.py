"""Prefetch: answer the likely next question before it is asked.

Each completed request is put in a *query cluster* (its embedding's nearest cluster above
``cluster_similarity``, else a new one). Consecutive requests of one tenant and model within
``session_gap_s`` are transitions between clusters. After an answer in cluster A, every
cluster B that followed A at least ``min_transitions`` times, with probability at least
``min_probability``, has its representative question answered in the background — if it
is not cached already, and within a token bucket of ``requests_per_minute``. The answer is
stored by the cache tiers as usual; when a later request is served from a prefetched entry,
``nearline_prefetch_used_total`` counts it.

What is learnt is kept per ``Tenant`` — its name *and* its rights — so the traffic of one key
only ever precomputes calls that key itself made (and the pipeline checks them again).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from nearline.config import PrefetchSettings
from nearline.core.provider import ProviderCall
from nearline.gateway.serving.tiers import CacheTiers
from nearline.gateway.tenancy import Tenant

log = logging.getLogger(__name__)

Embed = Callable[[str], Awaitable[npt.NDArray[np.float32]]]


@dataclass(slots=True)
class Cluster:
    centroid: npt.NDArray[np.float32]
    representative: ProviderCall  # the first request seen in the cluster
    size: int = 1


@dataclass(slots=True)
class _Stream:
    """One tenant's traffic to one model (for one set of rights): clusters and transitions."""

    clusters: list[Cluster] = field(default_factory=list)
    transitions: dict[int, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    last_cluster: int | None = None
    last_at: float = 0.0


class TokenBucket:
    def __init__(self, per_minute: float) -> None:
        self._rate = per_minute / 60.0
        self._capacity = max(1.0, per_minute / 6.0)  # at most 10 s worth in a burst
        self._tokens = self._capacity
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class Prefetcher:
    def __init__(
        self,
        settings: PrefetchSettings,
        embed: Embed,
        tiers: CacheTiers,
        precompute: Callable[[ProviderCall, Tenant], Awaitable[None]],
        on_prefetch: Callable[[], None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._embed = embed
        self._tiers = tiers
        self._precompute = precompute
        self._on_prefetch = on_prefetch
        self._streams: dict[tuple[Tenant, str], _Stream] = defaultdict(_Stream)
        self._bucket = TokenBucket(settings.requests_per_minute)
        self.prefetched: set[str] = set()  # questions answered ahead, by tenant/model/text

    def applies_to(self, call: ProviderCall) -> bool:
        return call.request.model in self._settings.models

    async def observe(self, call: ProviderCall, tenant: Tenant) -> None:
        """Learn from one request answered for ``tenant``, then prefetch its likely
        successors (with ``tenant``'s rights)."""
        question = _question(call)
        if question is None or not self.applies_to(call):
            return
        stream = self._streams[tenant, call.request.model]
        cluster = await self._cluster_of(stream, call, question)
        now = time.monotonic()
        if stream.last_cluster is not None and now - stream.last_at <= self._settings.session_gap_s:
            stream.transitions[stream.last_cluster][cluster] += 1
        stream.last_cluster, stream.last_at = cluster, now
        for successor in self.likely_next(stream, cluster):
            await self._maybe_prefetch(stream.clusters[successor].representative, tenant)

    def likely_next(self, stream: _Stream, cluster: int) -> list[int]:
        followers = stream.transitions.get(cluster)
        if not followers:
            return []
        total = sum(followers.values())
        return [
            successor
            for successor, count in followers.most_common()
            if successor != cluster
            and count >= self._settings.min_transitions
            and count / total >= self._settings.min_probability
        ]

    def was_prefetched(self, call: ProviderCall, question: str | None = None) -> bool:
        """Whether the entry that answered ``call`` (asked as ``question``) was prefetched."""
        question = question if question is not None else _question(call)
        return question is not None and _mark(call, question) in self.prefetched

    async def _cluster_of(self, stream: _Stream, call: ProviderCall, question: str) -> int:
        vector = await self._embed(question)
        if stream.clusters:
            centroids = np.stack([c.centroid for c in stream.clusters])
            similarities = centroids @ vector
            best = int(np.argmax(similarities))
            if similarities[best] >= self._settings.cluster_similarity:
                found = stream.clusters[best]
                found.size += 1
                mean = found.centroid + (vector - found.centroid) / found.size
                found.centroid = (mean / np.linalg.norm(mean)).astype(np.float32)
                return best
        stream.clusters.append(Cluster(vector, call))
        return len(stream.clusters) - 1

    async def _maybe_prefetch(self, call: ProviderCall, tenant: Tenant) -> None:
        question = _question(call)
        if (
            question is None
            or await self._tiers.is_cached(self._tiers.keys(call))
            or not self._bucket.take()
        ):
            return
        self.prefetched.add(_mark(call, question))
        self._on_prefetch()
        await self._precompute(call, tenant)


def _question(call: ProviderCall) -> str | None:
    messages: Sequence[object] = call.request.messages
    last = call.request.messages[-1] if messages else None
    if last is None or last.role != "user" or not last.text.strip():
        return None
    return last.text


def _mark(call: ProviderCall, question: str) -> str:
    return f"{call.tenant}\x00{call.request.model}\x00{' '.join(question.lower().split())}"
