"""Dedupe stores: where a broker without dedupe keys of its own (RabbitMQ) remembers them.

A result is published with the dedupe key ``<pipeline>:<source entry id>``; publishing the
same key again must return the first id and write nothing, *also after the worker that wrote
it was killed*. ``MemoryDedupeStore`` keeps the keys in the process (lost with it: a killed
worker's redelivered entries get their results written a second time);
``RedisDedupeStore`` keeps them in Redis, where every worker of the group and the restarted
one find them. ``dedupe_store(settings)`` picks one from ``worker.dedupe`` (default: Redis
whenever ``redis.url`` is set).

The broker asks ``known`` before publishing and calls ``remember`` once the broker confirmed
the publish: a process killed between the confirm and ``remember`` (one Redis round trip)
can still write a result twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from nearline.config import Settings
from nearline.core.errors import ConfigError
from nearline.worker.broker import DEFAULT_DEDUPE_TTL_S


class DedupeStore(Protocol):
    async def known(self, stream: str, keys: Sequence[str]) -> dict[str, str]:
        """The ids already published under any of ``keys`` (and not expired)."""
        ...

    async def remember(
        self, stream: str, ids_by_key: Mapping[str, str], ttl_s: int | None = None
    ) -> None:
        """Keep the keys ``ttl_s`` seconds (``None``: the store's default)."""
        ...

    async def forget(self, stream: str) -> None: ...


class MemoryDedupeStore:
    """Dedupe keys in this process, forgotten after their TTL (lost on a crash)."""

    def __init__(self, ttl_s: int = DEFAULT_DEDUPE_TTL_S) -> None:
        self._ttl_s = ttl_s
        self._ids: dict[str, dict[str, tuple[str, float]]] = {}  # id, expiry (monotonic)

    async def known(self, stream: str, keys: Sequence[str]) -> dict[str, str]:
        ids = self._ids.get(stream, {})
        now = time.monotonic()
        while ids:  # kept in expiry order: forget what expired
            oldest = next(iter(ids))
            if ids[oldest][1] > now:
                break
            del ids[oldest]
        return {key: ids[key][0] for key in keys if key in ids}

    async def remember(
        self, stream: str, ids_by_key: Mapping[str, str], ttl_s: int | None = None
    ) -> None:
        ids = self._ids.setdefault(stream, {})
        expires = time.monotonic() + (self._ttl_s if ttl_s is None else ttl_s)
        for key, entry_id in ids_by_key.items():
            ids.pop(key, None)
            ids[key] = (entry_id, expires)

    async def forget(self, stream: str) -> None:
        self._ids.pop(stream, None)


class RedisDedupeStore:
    """Dedupe keys in Redis (``<stream>:dedupe:<key>``), kept ``ttl_s`` seconds. With
    ``owns_client``, ``aclose`` closes the client."""

    def __init__(
        self, client: Any, ttl_s: int = DEFAULT_DEDUPE_TTL_S, *, owns_client: bool = False
    ) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._owns_client = owns_client

    @classmethod
    def from_url(cls, url: str) -> RedisDedupeStore:
        import redis.asyncio as redis

        return cls(redis.Redis.from_url(url), owns_client=True)

    async def known(self, stream: str, keys: Sequence[str]) -> dict[str, str]:
        if not keys:
            return {}
        values = await self._redis.mget([f"{stream}:dedupe:{key}" for key in keys])
        return {
            key: value.decode() if isinstance(value, bytes) else str(value)
            for key, value in zip(keys, values, strict=True)
            if value is not None
        }

    async def remember(
        self, stream: str, ids_by_key: Mapping[str, str], ttl_s: int | None = None
    ) -> None:
        if not ids_by_key:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, entry_id in ids_by_key.items():
                pipe.set(f"{stream}:dedupe:{key}", entry_id, ex=ttl_s or self._ttl_s)
            await pipe.execute()

    async def forget(self, stream: str) -> None:
        keys = [key async for key in self._redis.scan_iter(match=f"{stream}:dedupe:*")]
        if keys:
            await self._redis.delete(*keys)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._redis.aclose()


def dedupe_store(settings: Settings) -> DedupeStore:
    """The store ``worker.dedupe`` names; by default Redis when ``redis.url`` is set."""
    kind = settings.worker.dedupe or ("redis" if settings.redis.url else "memory")
    if kind == "memory":
        return MemoryDedupeStore()
    if settings.redis.url is None:
        raise ConfigError("worker.dedupe: 'redis' needs redis.url (e.g. redis://127.0.0.1:6379/0)")
    return RedisDedupeStore.from_url(settings.redis.url)
