"""The exact tier: the same answer-changing request, from the same tenant, gets the same answer.

The key is a SHA-256 of every request field that changes the answer — tenant, resolved
model, every message as ``ChatRequest.turns`` defines it (role as sent, name, content and
its boundaries), tools, sampling parameters, response format — and none that don't (the
stream flag, ``stream_options``, ``user``, nearline's own options). Entries are served
fresh for ``ttl_s``; for ``stale_while_revalidate_s`` after that a stale entry is still
served at once while one background refresh replaces it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import orjson

from nearline.core.provider import ProviderCall
from nearline.gateway.cache.exact_store import EntryKey, ExactStore
from nearline.gateway.cache.recording import RecordedAnswer


def exact_key(call: ProviderCall, provider: str) -> EntryKey:
    request = call.request
    canonical = {
        "tenant": call.tenant,
        "model": request.model,
        "provider": provider,
        "upstream_model": call.upstream_model,
        "messages": [turn.identity() for turn in request.turns()],
        "params": request.answer_changing_params(),
    }
    digest = hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return EntryKey(tenant=call.tenant, model=request.model, digest=digest)


@dataclass(frozen=True, slots=True)
class ExactHit:
    answer: RecordedAnswer
    stale: bool


class ExactCache:
    def __init__(self, store: ExactStore, ttl_s: float, stale_while_revalidate_s: float) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._swr_s = stale_while_revalidate_s

    async def get(self, key: EntryKey) -> ExactHit | None:
        raw = await self._store.get(key)
        if raw is None:
            return None
        answer = RecordedAnswer.from_bytes(raw)
        age = time.time() - answer.stored_at
        if age > self._ttl_s + self._swr_s:
            return None
        return ExactHit(answer, stale=age > self._ttl_s)

    async def put(self, key: EntryKey, answer: RecordedAnswer) -> None:
        await self._store.set(key, answer.to_bytes(), self._ttl_s + self._swr_s)

    async def purge(self, tenant: str | None = None, model: str | None = None) -> int:
        return await self._store.purge(tenant, model)

    async def aclose(self) -> None:
        await self._store.aclose()
