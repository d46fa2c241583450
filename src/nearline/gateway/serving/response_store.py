"""Where stored responses live (``/v1/responses`` with ``store`` true, the default): the
response object and the conversation it ends (for ``previous_response_id``), per tenant.

In memory by default (an LRU of ``MAX_ENTRIES``, one process), in Redis when ``redis.url``
is set (every replica sees them); either way an entry expires ``TTL_S`` after it was written
(OpenAI keeps responses 30 days). A tenant never sees another tenant's responses: the
tenant is part of every key.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import orjson
import redis.asyncio as aioredis

TTL_S = 30 * 24 * 3600.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]  # the response object, as GET /v1/responses/{id} returns it
    conversation: list[dict[str, Any]]  # chat messages, its answer last

    def to_bytes(self) -> bytes:
        return orjson.dumps({"response": self.response, "conversation": self.conversation})

    @classmethod
    def from_bytes(cls, raw: bytes) -> StoredResponse:
        value = orjson.loads(raw)
        return cls(value["response"], value["conversation"])


class ResponseStore(Protocol):
    async def get(self, tenant: str, response_id: str) -> StoredResponse | None: ...

    async def put(self, tenant: str, response_id: str, stored: StoredResponse) -> None: ...

    async def delete(self, tenant: str, response_id: str) -> bool: ...

    async def aclose(self) -> None: ...


class MemoryResponseStore:
    def __init__(self, max_entries: int = MAX_ENTRIES, ttl_s: float = TTL_S) -> None:
        self._max = max_entries
        self._ttl_s = ttl_s
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        entry = self._entries.get((tenant, response_id))
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[(tenant, response_id)]
            return None
        self._entries.move_to_end((tenant, response_id))
        return StoredResponse.from_bytes(entry[1])

    async def put(self, tenant: str, response_id: str, stored: StoredResponse) -> None:
        self._entries[(tenant, response_id)] = (time.monotonic() + self._ttl_s, stored.to_bytes())
        self._entries.move_to_end((tenant, response_id))
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def delete(self, tenant: str, response_id: str) -> bool:
        return self._entries.pop((tenant, response_id), None) is not None

    async def aclose(self) -> None:
        self._entries.clear()


class RedisResponseStore:
    def __init__(
        self, client: aioredis.Redis, prefix: str = "nearline:responses:v1", ttl_s: float = TTL_S
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl_ms = int(ttl_s * 1000)

    def _key(self, tenant: str, response_id: str) -> str:
        return f"{self._prefix}:{quote(tenant, safe='')}:{quote(response_id, safe='')}"

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        raw = await self._redis.get(self._key(tenant, response_id))
        if raw is None:
            return None
        return StoredResponse.from_bytes(raw.encode() if isinstance(raw, str) else raw)

    async def put(self, tenant: str, response_id: str, stored: StoredResponse) -> None:
        await self._redis.set(self._key(tenant, response_id), stored.to_bytes(), px=self._ttl_ms)

    async def delete(self, tenant: str, response_id: str) -> bool:
        return bool(await self._redis.delete(self._key(tenant, response_id)))

    async def aclose(self) -> None:
        await self._redis.aclose()


def open_response_store(redis_url: str | None) -> ResponseStore:
    if redis_url:
        return RedisResponseStore(aioredis.from_url(redis_url))
    return MemoryResponseStore()
