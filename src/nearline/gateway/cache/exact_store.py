"""Where exact-cache entries live: in memory (one process) or in Redis (many replicas).

Keys are namespaced by tenant and model so an admin can purge either; both parts are
percent-encoded, so they hold no ``:`` or glob characters.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

import redis.asyncio as aioredis


@dataclass(frozen=True, slots=True)
class EntryKey:
    tenant: str
    model: str
    digest: str

    def redis_key(self, prefix: str) -> str:
        return f"{prefix}:{quote(self.tenant, safe='')}:{quote(self.model, safe='')}:{self.digest}"


class ExactStore(Protocol):
    async def get(self, key: EntryKey) -> bytes | None: ...

    async def set(self, key: EntryKey, value: bytes, ttl_s: float) -> None: ...

    async def purge(self, tenant: str | None, model: str | None) -> int: ...

    async def aclose(self) -> None: ...


class MemoryExactStore:
    """An LRU bounded by entry count, with per-entry expiry."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[EntryKey, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: EntryKey) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if expires_at <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: EntryKey, value: bytes, ttl_s: float) -> None:
        self._entries[key] = (time.monotonic() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def purge(self, tenant: str | None, model: str | None) -> int:
        doomed = [
            key
            for key in self._entries
            if (tenant is None or key.tenant == tenant) and (model is None or key.model == model)
        ]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    async def aclose(self) -> None:
        self._entries.clear()


class RedisExactStore:
    """Entries shared by every replica; Redis expires them (TTL) and bounds memory (maxmemory)."""

    def __init__(self, client: aioredis.Redis, prefix: str = "nearline:exact:v1") -> None:
        self._redis = client
        self._prefix = prefix

    async def get(self, key: EntryKey) -> bytes | None:
        value = await self._redis.get(key.redis_key(self._prefix))
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: EntryKey, value: bytes, ttl_s: float) -> None:
        await self._redis.set(key.redis_key(self._prefix), value, px=max(1, int(ttl_s * 1000)))

    async def purge(self, tenant: str | None, model: str | None) -> int:
        tenant_part = "*" if tenant is None else quote(tenant, safe="")
        model_part = "*" if model is None else quote(model, safe="")
        pattern = f"{self._prefix}:{tenant_part}:{model_part}:*"
        removed = 0
        batch: list[bytes] = []
        async for name in self._redis.scan_iter(match=pattern, count=500):
            batch.append(name)
            if len(batch) >= 500:
                removed += int(await self._redis.delete(*batch))
                batch.clear()
        if batch:
            removed += int(await self._redis.delete(*batch))
        return removed

    async def aclose(self) -> None:
        return None
