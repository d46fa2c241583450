"""The semantic tier: answer a paraphrase of a question already answered.

``lookup`` embeds the query (micro-batched with concurrent lookups, in the embedding thread),
searches the query's partition of the local ANN index (in the index thread), and checks the
best candidates with the near-miss guard. A candidate above ``thresholds.hit`` that the guard
accepts is a hit; one between ``thresholds.near`` and ``thresholds.hit`` is returned with
``band="near"`` (good enough for a clearly-labelled preliminary answer, not for serving).

With a shared store (Redis), Redis holds the entries and a change stream; every
:class:`SemanticCache` follows the stream into its own index, so what one replica stores is
found by all within the follow latency (milliseconds). A replica saves its index with the
stream position (``save_snapshot``) and at start loads it and replays only later changes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from nearline.core.threads import DedicatedThread
from nearline.embed import EmbeddingBatcher
from nearline.gateway.cache.ann_index import PartitionedIndex
from nearline.gateway.cache.guard import GuardVerdict, NearMissGuard
from nearline.gateway.cache.partition import parse_partition
from nearline.gateway.cache.semantic_snapshot import (
    Catalog,
    CatalogEntry,
    read_snapshot,
    write_snapshot,
)
from nearline.gateway.cache.semantic_store import (
    Change,
    IndexedEntry,
    MemoryStore,
    SemanticStore,
    SemanticStoreUnavailable,
    Vector,
)
from nearline.gateway.cache.semantic_types import (
    Band,
    SemanticMatch,
    SemanticStats,
    SemanticThresholds,
)
from nearline.gateway.cache.thresholds import Decision, LearnedThresholds, Outcome

logger = logging.getLogger(__name__)


class SemanticCache:
    """Embedding + partitioned ANN index + near-miss guard, over a memory or Redis store.

    Use ``async with SemanticCache(...)`` or call :meth:`start` and :meth:`aclose`.
    """

    def __init__(
        self,
        batcher: EmbeddingBatcher,
        *,
        store: SemanticStore | None = None,
        thresholds: SemanticThresholds | None = None,
        guard: NearMissGuard | None = None,
        candidates: int = 4,
        snapshot_dir: Path | None = None,
        follow_block_ms: int = 250,
        sweep_interval_s: float = 30.0,
        hnsw_threshold: int = 2048,
        max_entries: int | None = None,
        learned: LearnedThresholds | None = None,
    ) -> None:
        self._batcher = batcher
        self._store: SemanticStore = store or MemoryStore()
        self.thresholds = thresholds or SemanticThresholds()
        self._guard = guard or NearMissGuard()
        self._candidates = candidates
        self._snapshot_dir = snapshot_dir
        self._follow_block_ms = follow_block_ms
        self._sweep_interval_s = sweep_interval_s
        self._index = PartitionedIndex(batcher.dim, hnsw_threshold=hnsw_threshold)
        self._catalog: Catalog = {}
        self._position = "0-0"
        self._thread = DedicatedThread("nearline-ann")  # the one thread that owns the index
        self._follower: asyncio.Task[None] | None = None
        self._closing = False
        self._max_entries = max_entries
        self._ready = asyncio.Event()
        self._lookups = self._hits = self._near = self._rejections = self._applied = 0
        self._learned = learned
        self._learned_hits = self._densified = 0

    # -- life cycle ----------------------------------------------------------------------

    async def __aenter__(self) -> SemanticCache:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self, *, wait_ready: bool = True) -> None:
        """Load the snapshot (if any), catch up with the store, then follow its changes.

        With ``wait_ready=False`` the catch-up runs in the background; lookups meanwhile see
        what has been loaded so far, and :attr:`ready` tells when the index is complete.
        """
        if not self._store.shared:
            self._ready.set()
            self._follower = asyncio.create_task(self._sweep_forever(), name="semantic-sweep")
            return
        self._follower = asyncio.create_task(self._sync_and_follow(), name="semantic-follow")
        if wait_ready:
            await self.wait_ready()

    async def wait_ready(self) -> None:
        if self._follower is None:
            raise RuntimeError("call start() before wait_ready()")
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({ready, self._follower}, return_when="FIRST_COMPLETED")
        if ready not in done:
            ready.cancel()
            self._follower.result()  # re-raise the start-up failure

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def position(self) -> str:
        """The last change-feed position applied to the local index."""
        return self._position

    async def aclose(self, *, save_snapshot: bool = True) -> None:
        self._closing = True
        if self._follower is not None:
            await self._stop_follower(self._follower)
            self._follower = None
        if save_snapshot and self._store.shared and self._snapshot_dir is not None:
            await self.save_snapshot()
        await self._thread.aclose()
        await self._store.aclose()

    async def _stop_follower(self, follower: asyncio.Task[None]) -> None:
        # The follower sees ``_closing`` after its current blocking read (follow_block_ms).
        # Cancelling is only the fallback: redis-py can swallow a CancelledError that lands
        # inside a blocking XREAD, so a cancel alone may never stop the task. The in-process
        # sweep only sleeps between sweeps: it is cancelled at once.
        if not self._store.shared:
            follower.cancel()
        await asyncio.wait({follower}, timeout=self._follow_block_ms / 1000 + 0.5)
        while not follower.done():
            follower.cancel()
            await asyncio.wait({follower}, timeout=0.1)
        if not follower.cancelled() and (error := follower.exception()) is not None:
            logger.error("the semantic-cache follower had failed", exc_info=error)

    # -- the API the serving pipeline calls ----------------------------------------------

    async def lookup(self, partition: str, query: str) -> SemanticMatch | None:
        """The best guarded match for ``query`` in ``partition``, or ``None``.

        A shared store that cannot be reached makes this a miss (logged), never an error.
        """
        self._lookups += 1
        if self._learned is not None:
            self._learned.count_lookup(partition)  # local: conservative with many replicas
        vector = await self._batcher.embed(query)
        neighbours = await self._thread.run(self._index.search, partition, vector, self._candidates)
        now = time.time()
        for neighbour in neighbours:
            if neighbour.similarity < self.thresholds.near:
                break
            entry = self._catalog.get(neighbour.label)
            if entry is None or entry.expires_at <= now:
                continue
            if not self.check_guard(query, entry.query).accepted:
                self._rejections += 1
                continue
            try:
                payload = await self._store.payload(neighbour.label)
            except SemanticStoreUnavailable as exc:
                logger.warning("semantic lookup treated as a miss: %s", exc)
                return None
            if payload is None:  # expired or deleted in the store before we heard of it
                await self._forget([neighbour.label])
                continue
            similarity = neighbour.similarity
            decision = (
                Decision(similarity >= self.thresholds.hit, "static")
                if self._learned is None
                else self._learned.decide(partition, neighbour.label, similarity)
            )
            band: Band = "hit" if decision.serve else "near"
            self._hits += decision.serve
            self._near += not decision.serve
            self._learned_hits += decision.serve and decision.rule == "learned"
            return SemanticMatch(
                neighbour.label,
                payload,
                similarity,
                band,
                entry.query,
                partition=partition,
                rule=decision.rule,
                bound=decision.bound,
            )
        return None

    @property
    def learned(self) -> LearnedThresholds | None:
        """The learned thresholds (``None``: the static rule only)."""
        return self._learned

    def count_request(self, partition: str) -> None:
        """A request of ``partition`` answered by another tier (an exact hit): one more trial
        of the per-request bound (a share of *requests*); no effect otherwise."""
        if self._learned is not None:
            self._learned.count_lookup(partition)

    async def record_outcome(self, outcome: Outcome) -> None:
        """Evidence for the learned thresholds: a shared store puts it on the change feed
        (every replica, this one included, applies it from there); otherwise it is applied
        here. Raises :class:`SemanticStoreUnavailable` if a shared store cannot be reached."""
        if self._learned is None:
            return
        if self._store.shared:
            await self._store.put_outcome(outcome)
        else:
            self._learned.record(outcome)

    async def store(self, partition: str, query: str, payload: bytes, ttl_s: float) -> int:
        """Store ``payload`` as the answer to ``query`` in ``partition``; returns its id.
        Raises :class:`SemanticStoreUnavailable` if a shared store cannot be reached."""
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        return await self._store_until(partition, query, payload, None, ttl_s)

    async def _store_until(
        self, partition: str, query: str, payload: bytes, expires_at: float | None, ttl_s: float
    ) -> int:
        vector = await self._batcher.embed(query)
        expires_at = time.time() + ttl_s if expires_at is None else expires_at
        entry = IndexedEntry(await self._store.next_id(), partition, query, vector, expires_at)
        await self._store.put(entry, payload)
        await self._thread.run(self._apply_adds, [entry])
        await self._evict_over_bound()
        return entry.entry_id

    async def add_key(self, match: SemanticMatch, query: str) -> int | None:
        """``query`` (a served paraphrase the model's answer agreed with) as another key of
        ``match``'s payload, until the entry expires; ``None`` if that entry is gone or is
        ``query``'s own. Raises :class:`SemanticStoreUnavailable` like :meth:`store`."""
        entry = self._catalog.get(match.entry_id)
        if entry is None or entry.partition != match.partition or entry.query == query:
            return None
        if entry.expires_at <= time.time():
            return None
        self._densified += 1
        return await self._store_until(match.partition, query, match.payload, entry.expires_at, 0)

    async def store_embedded(
        self,
        partition: str,
        items: Sequence[tuple[str, Vector, bytes]],
        ttl_s: float,
    ) -> list[int]:
        """Store questions already embedded by this model: ``(query, unit vector, payload)``,
        for imports and warm-ups (and benchmarks) that have the vectors; skips the model."""
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        expires_at = time.time() + ttl_s
        entries = []
        for query, vector, payload in items:
            if vector.shape != (self._index.dim,):
                raise ValueError(f"vectors must have shape ({self._index.dim},)")
            entry = IndexedEntry(await self._store.next_id(), partition, query, vector, expires_at)
            await self._store.put(entry, payload)
            entries.append(entry)
        for start in range(0, len(entries), 1000):
            await self._thread.run(self._apply_adds, entries[start : start + 1000])
        return [entry.entry_id for entry in entries]

    async def delete(self, entry_id: int) -> bool:
        removed = await self._store.delete([entry_id])
        await self._forget([entry_id])
        return removed > 0

    async def purge(self, *, tenant: str | None = None, model: str | None = None) -> int:
        """Delete every entry of ``tenant`` and/or ``model`` (both ``None``: everything)."""
        doomed = [
            entry_id
            for entry_id, entry in list(self._catalog.items())
            if _partition_matches(entry.partition, tenant, model)
        ]
        await self._store.delete(doomed)
        await self._forget(doomed)
        if self._learned is not None:
            self._learned.purge(lambda partition: _partition_matches(partition, tenant, model))
        return len(doomed)

    def check_guard(self, query: str, cached_query: str) -> GuardVerdict:
        return self._guard.check(query, cached_query)

    def __len__(self) -> int:
        return len(self._catalog)

    @property
    def stats(self) -> SemanticStats:
        return SemanticStats(
            len(self._catalog),
            self._lookups,
            self._hits,
            self._near,
            self._rejections,
            self._applied,
            self._learned_hits,
            self._densified,
        )

    async def save_snapshot(self) -> Path:
        """Write the index, catalog and feed position to ``snapshot_dir``."""
        if self._snapshot_dir is None:
            raise ValueError("this cache has no snapshot_dir")
        directory = self._snapshot_dir
        learned = None if self._learned is None else self._learned.to_document()
        await self._thread.run(
            write_snapshot,
            directory,
            self._index,
            self._catalog,
            self._position,
            self._store.namespace,
            learned,
        )
        return directory

    # -- keeping the local index in step with the store ----------------------------------

    async def _sync_and_follow(self) -> None:
        await self._catch_up()
        self._ready.set()
        last_sweep = time.monotonic()
        failures = 0
        while not self._closing:
            try:
                changes = await self._store.changes_after(
                    self._position, block_ms=self._follow_block_ms
                )
            except SemanticStoreUnavailable as exc:
                failures += 1
                logger.warning("semantic change feed unreachable (try %d): %s", failures, exc)
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                continue
            failures = 0
            if changes:
                await self._apply(changes)
            if time.monotonic() - last_sweep >= self._sweep_interval_s:
                await self._sweep_expired()
                last_sweep = time.monotonic()

    async def _catch_up(self) -> None:
        loaded = await self._load_snapshot()
        if not loaded or not await self._store.can_resume(self._position):
            if loaded:
                logger.warning("semantic snapshot is older than the change feed; rescanning")
            await self._rescan()
        while changes := await self._store.changes_after(self._position, limit=5000):
            await self._apply(changes)
        await self._sweep_expired()

    async def _load_snapshot(self) -> bool:
        if self._snapshot_dir is None or not self._snapshot_dir.exists():
            return False
        try:
            snapshot = await self._thread.run(read_snapshot, self._snapshot_dir)
        except ValueError as exc:
            logger.warning("ignoring unusable semantic snapshot: %s", exc)
            return False
        if snapshot.namespace != self._store.namespace or snapshot.index.dim != self._index.dim:
            logger.warning("semantic snapshot belongs to another store or model; ignoring it")
            return False
        if self._learned is not None and snapshot.learned is not None:
            try:
                self._learned.load_document(snapshot.learned)
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning("ignoring the snapshot's learned thresholds: %s", exc)
                return False
        self._index, self._catalog, self._position = (
            snapshot.index,
            snapshot.catalog,
            snapshot.position,
        )
        return True

    async def _rescan(self) -> None:
        self._index = PartitionedIndex(self._index.dim, hnsw_threshold=self._index.hnsw_threshold)
        self._catalog = {}
        self._position = await self._store.feed_head()  # changes after this are replayed
        async for batch in self._store.scan():
            await self._thread.run(self._apply_adds, batch)
        if self._learned is not None:
            self._learned.purge(lambda _: True)
            for outcome in await self._store.outcomes_until(self._position):
                self._learned.record(outcome)

    async def _apply(self, changes: list[Change]) -> None:
        """Entries into the index (its thread); learned outcomes here, on the event loop,
        where lookups read them."""
        await self._thread.run(self._apply_changes, changes)
        if self._learned is not None:
            for change in changes:
                if change.op == "learn" and change.outcome is not None:
                    self._learned.record(change.outcome)

    def _apply_changes(self, changes: list[Change]) -> None:
        adds: list[IndexedEntry] = []
        for change in changes:
            if change.op == "learn":
                continue  # applied on the event loop (_apply)
            if change.op == "add" and change.entry is not None:
                adds.append(change.entry)
            else:
                self._apply_adds(adds)
                adds = []
                self._remove([change.entry_id])
        self._apply_adds(adds)
        self._applied += len(changes)
        self._position = changes[-1].position

    def _apply_adds(self, entries: Iterable[IndexedEntry]) -> None:
        by_partition: dict[str, list[IndexedEntry]] = {}
        now = time.time()
        for entry in entries:
            if entry.entry_id in self._catalog or entry.expires_at <= now:
                continue
            by_partition.setdefault(entry.partition, []).append(entry)
        for partition, group in by_partition.items():
            vectors: Vector = np.stack([entry.vector for entry in group])
            self._index.add(partition, (entry.entry_id for entry in group), vectors)
            for entry in group:
                self._catalog[entry.entry_id] = CatalogEntry(
                    entry.partition, entry.query, entry.expires_at
                )

    def _remove(self, entry_ids: Iterable[int]) -> None:
        for entry_id in entry_ids:
            self._catalog.pop(entry_id, None)
            self._index.remove(entry_id)

    async def _forget(self, entry_ids: list[int]) -> None:
        if entry_ids:
            await self._thread.run(self._remove, entry_ids)

    async def _sweep_expired(self) -> None:
        now = time.time()
        expired = [key for key, entry in list(self._catalog.items()) if entry.expires_at <= now]
        if expired and not self._store.shared:  # Redis expires its own copies
            await self._store.delete(expired)
        await self._forget(expired)
        if self._learned is not None:
            self._learned.forget_entries(set(self._catalog))

    async def _evict_over_bound(self) -> None:
        """Keep at most ``max_entries``: the oldest stored entries go first."""
        if self._max_entries is None or len(self._catalog) <= self._max_entries:
            return
        excess = len(self._catalog) - self._max_entries
        oldest = list(itertools.islice(iter(list(self._catalog)), excess))
        await self._store.delete(oldest)
        await self._forget(oldest)

    async def _sweep_forever(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._sweep_interval_s)
            await self._sweep_expired()


def _partition_matches(partition: str, tenant: str | None, model: str | None) -> bool:
    parts = parse_partition(partition)
    return (tenant is None or parts.tenant == tenant) and (model is None or parts.model == model)


__all__ = [
    "Band",
    "SemanticCache",
    "SemanticMatch",
    "SemanticStats",
    "SemanticStoreUnavailable",
    "SemanticThresholds",
]
