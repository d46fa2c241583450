"""Rate limits and budgets per key and per tenant (docs/keys.md).

``window.py`` the shared vocabulary (subjects, decisions, OpenAI's headers and 429s),
``memory.py`` and ``redis_counters.py`` the two counter backends, ``governor.py`` what the
chat service calls: admit a request, meter its answer.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from nearline.config import Settings
from nearline.gateway.limits.governor import NO_GRANT, Governor, Grant, SpendSink
from nearline.gateway.limits.memory import MemoryCounters
from nearline.gateway.limits.redis_counters import RedisCounters
from nearline.gateway.limits.window import Counters, QuotaExceeded, RateLimited


def build_counters(settings: Settings, redis_client: aioredis.Redis | None) -> Counters:
    """Redis counters with ``redis.url`` (every replica shares them), else in memory."""
    if redis_client is None:
        return MemoryCounters()
    return RedisCounters(
        redis_client,
        prefix=settings.limits.redis_prefix,
        flush_s=settings.limits.flush_interval_s,
    )


__all__ = [
    "NO_GRANT",
    "Counters",
    "Governor",
    "Grant",
    "MemoryCounters",
    "QuotaExceeded",
    "RateLimited",
    "RedisCounters",
    "SpendSink",
    "build_counters",
]
