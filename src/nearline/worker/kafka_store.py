"""What ``KafkaBroker`` keeps in Redis: partition leases, delivery counts and dedupe keys.

Kafka commits one offset per partition and counts no deliveries; the broker contract acks
single entries, counts deliveries and publishes a dedupe key once. This store fills the gap,
durably, so a worker killed with ``kill -9`` is replaced without losing or repeating a result:

* **leases** (``nlk:<stream>:<group>:owners``, a hash ``partition -> "<token>|<expiry ms>"``):
  each consumer of a group holds the partitions it reads for ``reclaim_idle_ms`` and renews
  them in the background; its fair share is ``ceil(partitions / live consumers)`` (members
  in the sorted set ``...:members``, by last renewal). A consumer that closes gives its
  partitions back at once; a dead one's expire after ``reclaim_idle_ms``.
* **deliveries**: ``...:frontier`` holds the highest offset ever delivered per partition; a
  record at or below it is a redelivery, counted in ``...:redelivered`` (``"<p>:<offset>"``).
* **dedupe keys**: ``<stream>:dedupe:<key>`` strings with a TTL, as on Redis Streams, marked
  ``?<ms>`` while a publish is under way (``reserve``), the entry id once Kafka confirmed it.
* **groups**: the set ``nlk:<stream>:groups``, so any process knows a stream's groups (bounds,
  lag); **ends**: ``nlk:<stream>:ends``, the end offset per partition its producers wrote.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from nearline.worker.broker import BrokerError

# KEYS: owners hash, members zset. ARGV: token, now ms, ttl ms, partitions, leave (0/1),
# JSON list of partitions this consumer may give up now. Returns {target, partitions...}.
_LEASE_SCRIPT = """
local owners, members = KEYS[1], KEYS[2]
local token, now, ttl, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local leave = ARGV[5] == '1'
local releasable = {}
for _, p in ipairs(cjson.decode(ARGV[6])) do releasable[tostring(p)] = true end
redis.call('ZREMRANGEBYSCORE', members, '-inf', now - ttl)
if leave then redis.call('ZREM', members, token) else redis.call('ZADD', members, now, token) end
local live = redis.call('ZCARD', members)
local target = 0
if not leave and live > 0 then target = math.ceil(count / live) end
local mine, free = {}, {}
for p = 0, count - 1 do
  local holder = redis.call('HGET', owners, tostring(p))
  if holder then
    local sep = string.find(holder, '|', 1, true)
    local who, expiry = string.sub(holder, 1, sep - 1), tonumber(string.sub(holder, sep + 1))
    if who == token then mine[#mine + 1] = p elseif expiry < now then free[#free + 1] = p end
  else
    free[#free + 1] = p
  end
end
local kept = {}
local excess = #mine - target
for _, p in ipairs(mine) do
  if excess > 0 and releasable[tostring(p)] then
    redis.call('HDEL', owners, tostring(p))
    excess = excess - 1
  else
    kept[#kept + 1] = p
  end
end
for _, p in ipairs(free) do
  if #kept >= target then break end
  kept[#kept + 1] = p
end
local result = {target}
for _, p in ipairs(kept) do
  redis.call('HSET', owners, tostring(p), token .. '|' .. tostring(now + ttl))
  result[#result + 1] = p
end
redis.call('PEXPIRE', owners, ttl * 10 + 60000)
redis.call('PEXPIRE', members, ttl * 10 + 60000)
return result
"""

# KEYS: frontier hash, redelivered hash. ARGV: ttl s, JSON [[p, [offsets...]], ...].
# Returns one JSON list of delivery counts per record, in order.
_DELIVERIES_SCRIPT = """
local frontier, redelivered = KEYS[1], KEYS[2]
local counts = {}
for _, item in ipairs(cjson.decode(ARGV[2])) do
  local p = tostring(item[1])
  local highest = tonumber(redis.call('HGET', frontier, p) or '-1')
  local newest = highest
  for _, offset in ipairs(item[2]) do
    if offset > highest then
      counts[#counts + 1] = 1
      if offset > newest then newest = offset end
    else
      counts[#counts + 1] = 1 + redis.call('HINCRBY', redelivered, p .. ':' .. offset, 1)
    end
  end
  if newest > highest then redis.call('HSET', frontier, p, newest) end
end
redis.call('EXPIRE', frontier, ARGV[1])
redis.call('EXPIRE', redelivered, ARGV[1])
return cjson.encode(counts)
"""


# KEYS: ends hash. ARGV: dedupe ttl s, JSON [key, id, key, id, ...], JSON [[p, end], ...].
_PUBLISHED_SCRIPT = """
local ttl = tonumber(ARGV[1])
local pairs_ = cjson.decode(ARGV[2])
for i = 1, #pairs_, 2 do redis.call('SET', pairs_[i], pairs_[i + 1], 'EX', ttl) end
for _, item in ipairs(cjson.decode(ARGV[3])) do
  local p = tostring(item[1])
  local known = tonumber(redis.call('HGET', KEYS[1], p) or '0')
  if item[2] > known then redis.call('HSET', KEYS[1], p, item[2]) end
end
return 1
"""


# ARGV: dedupe key prefix, marker, ttl s, JSON keys. Marks each key that has no value yet with
# the marker; returns {key, value, ...} for the keys that had one (an id, or an older marker).
_RESERVE_SCRIPT = """
local prefix, marker, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local found = {}
for _, key in ipairs(cjson.decode(ARGV[4])) do
  local value = redis.call('GET', prefix .. key)
  if value then
    found[#found + 1] = key
    found[#found + 1] = value
  else
    redis.call('SET', prefix .. key, marker, 'EX', ttl)
  end
end
return found
"""

# ARGV: dedupe key prefix, marker, JSON keys: drop the keys still holding this marker.
_UNRESERVE_SCRIPT = """
for _, key in ipairs(cjson.decode(ARGV[3])) do
  if redis.call('GET', ARGV[1] .. key) == ARGV[2] then redis.call('DEL', ARGV[1] .. key) end
end
return 1
"""


@contextmanager
def _boundary(what: str) -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise BrokerError(f"redis {what} (kafka group state) failed: {exc}") from exc


def _group_key(stream: str, group: str, what: str) -> str:
    return f"nlk:{stream}:{group}:{what}"


class KafkaGroupStore:
    """The Redis side of ``KafkaBroker``; the client is injected, ``aclose`` closes it."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._lease = client.register_script(_LEASE_SCRIPT)
        self._deliveries = client.register_script(_DELIVERIES_SCRIPT)
        self._published = client.register_script(_PUBLISHED_SCRIPT)
        self._reserve = client.register_script(_RESERVE_SCRIPT)
        self._unreserve = client.register_script(_UNRESERVE_SCRIPT)

    @classmethod
    def from_url(cls, url: str) -> KafkaGroupStore:
        return cls(redis.Redis.from_url(url, decode_responses=False))

    async def leases(
        self,
        stream: str,
        group: str,
        token: str,
        *,
        now_ms: int,
        ttl_ms: int,
        partitions: int,
        releasable: Sequence[int] = (),
        leave: bool = False,
    ) -> tuple[int, list[int]]:
        """Renew, take or give up partitions: ``(fair share, the partitions now held)``."""
        keys = [_group_key(stream, group, "owners"), _group_key(stream, group, "members")]
        args: list[str | int | bytes] = [
            token,
            now_ms,
            ttl_ms,
            partitions,
            int(leave),
            orjson.dumps(list(releasable)),
        ]
        with _boundary("leases"):
            result = await self._lease(keys=keys, args=args)
        return int(result[0]), [int(p) for p in result[1:]]

    async def deliveries(
        self, stream: str, group: str, offsets: Mapping[int, Sequence[int]], ttl_s: int
    ) -> list[int]:
        """Each record's delivery count (1: first), in the order of ``offsets``' values."""
        if not offsets:
            return []
        keys = [_group_key(stream, group, "frontier"), _group_key(stream, group, "redelivered")]
        items = [[p, list(offs)] for p, offs in offsets.items()]
        with _boundary("deliveries"):
            counts = await self._deliveries(keys=keys, args=[ttl_s, orjson.dumps(items)])
        return [int(c) for c in orjson.loads(counts)]

    async def frontier(self, stream: str, group: str) -> dict[int, int]:
        """The highest offset delivered so far, per partition."""
        with _boundary("frontier"):
            raw = await self._redis.hgetall(_group_key(stream, group, "frontier"))
        return {int(p): int(offset) for p, offset in raw.items()}

    async def add_group(self, stream: str, group: str) -> None:
        with _boundary("groups"):
            await self._redis.sadd(f"nlk:{stream}:groups", group)

    async def groups(self, stream: str) -> list[str]:
        with _boundary("groups"):
            raw = await self._redis.smembers(f"nlk:{stream}:groups")
        return sorted(g.decode() if isinstance(g, bytes) else str(g) for g in raw)

    async def known(self, stream: str, keys: Sequence[str]) -> dict[str, str]:
        """The ids already published under any of ``keys`` (and not expired)."""
        if not keys:
            return {}
        with _boundary("dedupe"):
            values = await self._redis.mget([f"{stream}:dedupe:{key}" for key in keys])
        return {
            key: value.decode() if isinstance(value, bytes) else str(value)
            for key, value in zip(keys, values, strict=True)
            if value is not None
        }

    async def reserve(
        self, stream: str, keys: Sequence[str], marker: str, ttl_s: int
    ) -> dict[str, str]:
        """Mark the ``keys`` not yet known with ``marker`` (a publish under way); the others'
        values: an id, or the marker of a publish that may not have finished."""
        if not keys:
            return {}
        args: list[str | int | bytes] = [f"{stream}:dedupe:", marker, ttl_s, orjson.dumps(keys)]
        with _boundary("dedupe"):
            found = await self._reserve(keys=[], args=args)
        texts = [v.decode() if isinstance(v, bytes) else str(v) for v in found]
        return dict(zip(texts[::2], texts[1::2], strict=True))

    async def unreserve(self, stream: str, keys: Sequence[str], marker: str) -> None:
        """Drop the marks of a publish that wrote nothing (a full stream)."""
        if keys:
            args: list[str | bytes] = [f"{stream}:dedupe:", marker, orjson.dumps(list(keys))]
            with _boundary("dedupe"):
                await self._unreserve(keys=[], args=args)

    async def published(
        self, stream: str, ids_by_key: Mapping[str, str], ttl_s: int, ends: Mapping[int, int]
    ) -> None:
        """Remember the dedupe keys just written and raise the partitions' known end offsets
        (the ``ends`` hash: Kafka-protocol brokers such as tansu can under-report them)."""
        if not ids_by_key and not ends:
            return
        pairs: list[str] = []
        for key, entry_id in ids_by_key.items():
            pairs += [f"{stream}:dedupe:{key}", entry_id]
        args: list[int | bytes] = [
            ttl_s,
            orjson.dumps(pairs),
            orjson.dumps([[p, e] for p, e in ends.items()]),
        ]
        with _boundary("publish"):
            await self._published(keys=[f"nlk:{stream}:ends"], args=args)

    async def ends(self, stream: str) -> dict[int, int]:
        """The end offset per partition as far as this store's producers wrote."""
        with _boundary("ends"):
            raw = await self._redis.hgetall(f"nlk:{stream}:ends")
        return {int(p): int(end) for p, end in raw.items()}

    async def forget(self, stream: str) -> None:
        """Drop the stream's dedupe keys, groups, leases and delivery counts."""
        with _boundary("delete"):
            groups = await self.groups(stream)
            keys = [f"nlk:{stream}:groups", f"nlk:{stream}:ends"] + [
                _group_key(stream, group, what)
                for group in groups
                for what in ("owners", "members", "frontier", "redelivered")
            ]
            keys += [
                key async for key in self._redis.scan_iter(match=f"{stream}:dedupe:*", count=1000)
            ]
            for start in range(0, len(keys), 1000):
                await self._redis.delete(*keys[start : start + 1000])

    async def aclose(self) -> None:
        await self._redis.aclose()
