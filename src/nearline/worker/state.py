"""Keyed state for streaming features: per-key count and sum over a sliding time window.

``add`` applies updates in order and returns, for each, the window's count and sum *including*
it, e.g. "this card's transactions and spend in the last 60 s". Updates are idempotent by
event id, so an entry handled twice after a crash is counted once; an event older than the
key's window (a late replay) is not counted at all.

``MemoryWindowState`` lives in the process. ``RedisWindowState`` keeps each key in a sorted
set plus a running sum (one Lua call per batch), so it survives a worker restart and is shared
by every worker of a group.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as redis


@dataclass(slots=True)  # not frozen: created per event, and frozen costs 3x
class WindowUpdate:
    key: str
    event_id: str
    at_ms: int
    value: float


@dataclass(slots=True)
class WindowStats:
    count: int
    total: float

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class WindowState(Protocol):
    window_ms: int

    async def add(self, updates: Sequence[WindowUpdate]) -> list[WindowStats]: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class _KeyWindow:
    events: deque[tuple[int, str, float]] = field(default_factory=deque)
    ids: set[str] = field(default_factory=set)
    total: float = 0.0
    newest_ms: int = 0


class MemoryWindowState:
    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._keys: dict[str, _KeyWindow] = {}

    def add_now(self, updates: Sequence[WindowUpdate]) -> list[WindowStats]:
        """``add``, synchronously (for offline feature computation and sync handlers)."""
        keys = self._keys
        window_ms = self.window_ms
        stats: list[WindowStats] = []
        for update in updates:
            window = keys.get(update.key)
            if window is None:
                window = keys[update.key] = _KeyWindow()
            at_ms = update.at_ms
            horizon = max(window.newest_ms, at_ms) - window_ms
            events = window.events
            while events and events[0][0] <= horizon:
                _, old_id, old_value = events.popleft()
                window.ids.discard(old_id)
                window.total -= old_value
            if at_ms > horizon and update.event_id not in window.ids:
                events.append((at_ms, update.event_id, update.value))
                window.ids.add(update.event_id)
                window.total += update.value
                window.newest_ms = max(window.newest_ms, at_ms)
            stats.append(WindowStats(len(events), window.total))
        return stats

    async def add(self, updates: Sequence[WindowUpdate]) -> list[WindowStats]:
        return self.add_now(updates)

    async def aclose(self) -> None:
        self._keys.clear()


_ADD_SCRIPT = """
local prefix = ARGV[1]
local window = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV, 4 do
  local members = prefix .. ARGV[i]
  local sum = members .. ':sum'
  local id = ARGV[i + 1]
  local at = tonumber(ARGV[i + 2])
  local value = ARGV[i + 3]
  local newest = redis.call('ZRANGE', members, -1, -1, 'WITHSCORES')
  local horizon = at - window
  if #newest == 2 and tonumber(newest[2]) - window > horizon then
    horizon = tonumber(newest[2]) - window
  end
  local expired = redis.call('ZRANGEBYSCORE', members, '-inf', horizon)
  if #expired > 0 then
    local dropped = 0
    for _, member in ipairs(expired) do
      dropped = dropped + tonumber(string.match(member, '|([^|]*)$'))
    end
    redis.call('INCRBYFLOAT', sum, -dropped)
    redis.call('ZREMRANGEBYSCORE', members, '-inf', horizon)
  end
  if at > horizon and redis.call('ZADD', members, 'NX', at, id .. '|' .. value) == 1 then
    redis.call('INCRBYFLOAT', sum, value)
  end
  redis.call('PEXPIRE', members, ttl)
  redis.call('PEXPIRE', sum, ttl)
  out[#out + 1] = redis.call('ZCARD', members)
  out[#out + 1] = redis.call('GET', sum) or '0'
end
return out
"""


class RedisWindowState:
    """Windows in Redis under ``<prefix><key>``; idle keys expire after twice the window."""

    def __init__(self, client: redis.Redis, prefix: str, window_ms: int) -> None:
        self.window_ms = window_ms
        self._redis = client
        self._prefix = prefix
        self._script = client.register_script(_ADD_SCRIPT)

    @classmethod
    def from_url(cls, url: str, prefix: str, window_ms: int) -> RedisWindowState:
        return cls(redis.Redis.from_url(url), prefix, window_ms)

    async def add(self, updates: Sequence[WindowUpdate]) -> list[WindowStats]:
        if not updates:
            return []
        args: list[Any] = [self._prefix, self.window_ms, 2 * self.window_ms]
        for update in updates:
            args += [update.key, update.event_id, update.at_ms, repr(float(update.value))]
        raw: Any = await self._script(keys=[], args=args)
        return [WindowStats(int(raw[i]), float(raw[i + 1])) for i in range(0, len(raw), 2)]

    async def clear(self) -> None:
        keys = [key async for key in self._redis.scan_iter(match=f"{self._prefix}*")]
        if keys:
            await self._redis.delete(*keys)

    async def aclose(self) -> None:
        await self._redis.aclose()
