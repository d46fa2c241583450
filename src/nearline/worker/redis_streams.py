"""``RedisStreamsBroker``: streams and consumer groups on Redis Streams (the production default).

* An entry is one Redis stream entry whose field ``d`` holds the data as JSON (if it does not,
  the entry comes with ``decode_error``); entries written by other producers with other plain
  fields are read as a dict of those fields.
* Publishing is one Lua script per batch: it checks the bound and the dedupe keys and appends,
  atomically, so a producer either gets ``StreamFull`` with nothing written or all its ids.
  Dedupe keys are ``<stream>:dedupe:<key>`` strings that expire after ``dedupe_ttl_s`` (by
  default the bound's: a retained stream's ``max_age_s``).
* Retention (``StreamBound.retained``): ``XADD ... MAXLEN ~ n`` on every write (approximate:
  Redis drops whole nodes of ~100 entries) and ``XTRIM ... MINID`` once per publish for the age.
* Reclaim: a consumer looks for entries idle longer than its reclaim timeout in the group's
  pending list (``XPENDING ... IDLE``) and claims them (``XCLAIM``), which counts a delivery.
  ``retry`` marks entries as long idle so the next read of any consumer claims them.
* Leases: ``extend`` resets the idle time of the entries a consumer still owns (``XCLAIM ...
  JUSTID`` in a script that checks the owner), so a live consumer's slow batch is not taken
  over; ``remove_idle_consumers`` drops consumers idle past a retention that hold nothing.

Redis errors are translated once, here, into ``BrokerError``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from nearline.worker.broker import (
    BrokerError,
    Entry,
    GroupInfo,
    Message,
    StreamBound,
    StreamFull,
    decode_payload,
    entry_id_key,
)

logger = logging.getLogger("nearline.worker.redis")

DATA_FIELD = b"d"
_GIVEN_BACK_IDLE_MS = 100_000_000_000  # "idle for years": claimable by the next read
_TAIL_BLOCK_MS = 1_000
_PLAIN_ACK_MAX = 20  # more ids than this are acknowledged through one script argument

# ARGV: bound (-1: none), dedupe ttl (s), dedupe key prefix, one JSON array
# [key1, payload1, key2, payload2, ...] (key "" = no dedupe): one argument instead of two per
# message, because redis-py packs every argument in Python; then the retention: max length
# (-1: none, trimmed approximately on each XADD) and the maximum age in ms ("": none), cut
# by Redis's clock, which the dedupe keys expire by (a client clock could keep an entry a key
# outlived).
_PUBLISH_SCRIPT = """
local stream = KEYS[1]
local bound = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local prefix = ARGV[3]
local items = cjson.decode(ARGV[4])
local max_len = tonumber(ARGV[5])
local max_age_ms = ARGV[6]
if bound >= 0 then
  local fresh = 0
  for i = 1, #items, 2 do
    local key = items[i]
    if key == '' or redis.call('EXISTS', prefix .. key) == 0 then fresh = fresh + 1 end
  end
  local length = redis.call('XLEN', stream)
  if fresh > 0 and length + fresh > bound then return {'!full', tostring(length)} end
end
local ids = {}
for i = 1, #items, 2 do
  local key = items[i]
  local existing = false
  if key ~= '' then existing = redis.call('GET', prefix .. key) end
  if existing then
    ids[#ids + 1] = existing
  else
    local id
    if max_len >= 0 then
      id = redis.call('XADD', stream, 'MAXLEN', '~', max_len, '*', 'd', items[i + 1])
    else
      id = redis.call('XADD', stream, '*', 'd', items[i + 1])
    end
    if key ~= '' then redis.call('SET', prefix .. key, id, 'EX', ttl) end
    ids[#ids + 1] = id
  end
end
if max_age_ms ~= '' then  -- by Redis's clock, the one the dedupe keys expire by
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local cutoff = now_ms - tonumber(max_age_ms)
  redis.call('XTRIM', stream, 'MINID', string.format('%d-0', cutoff))
end
return ids
"""

# ARGV: group, then a JSON array of ids (acknowledged 1,000 at a time)
_ACK_SCRIPT = """
local ids = cjson.decode(ARGV[2])
local acked = 0
for start = 1, #ids, 1000 do
  local last = math.min(start + 999, #ids)
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ids, start, last))
end
return acked
"""

# ARGV: group, consumer, JSON array of ids: the ids this consumer still holds get their idle
# time reset (XCLAIM ... JUSTID counts no delivery); one taken over meanwhile stays taken
_EXTEND_SCRIPT = """
local group, name = ARGV[1], ARGV[2]
local ids = cjson.decode(ARGV[3])
local mine = {}
for i = 1, #ids do
  local pending = redis.call('XPENDING', KEYS[1], group, ids[i], ids[i], 1)
  if pending[1] and pending[1][2] == name then mine[#mine + 1] = ids[i] end
end
for start = 1, #mine, 1000 do
  local claim = {'XCLAIM', KEYS[1], group, name, 0}
  for i = start, math.min(start + 999, #mine) do claim[#claim + 1] = mine[i] end
  claim[#claim + 1] = 'JUSTID'
  redis.call(unpack(claim))
end
return #mine
"""

# ARGV: group, idle ms, then names to keep: removes consumers idle longer that hold nothing
# (atomic: a consumer that reads in between is not removed with its entries)
_FORGET_SCRIPT = """
local group, idle_ms = ARGV[1], tonumber(ARGV[2])
local keep = {}
for i = 3, #ARGV do keep[ARGV[i]] = true end
local removed = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], group)) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info['pending'] == 0 and info['idle'] > idle_ms and not keep[info['name']] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], group, info['name'])
    removed[#removed + 1] = info['name']
  end
end
return removed
"""


@contextmanager
def _boundary(what: str) -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise BrokerError(f"redis {what} failed: {exc}") from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _entry(raw_id: bytes | str, fields: Any, deliveries: int = 1) -> Entry:
    """A stream entry: field ``d`` holds JSON; plain fields (other producers) are the data."""
    payload = fields.get(DATA_FIELD)
    if payload is not None and len(fields) == 1:
        data, error = decode_payload(payload)
        return Entry(_text(raw_id), data, deliveries, error)
    return Entry(_text(raw_id), {_field(k): _field(v) for k, v in fields.items()}, deliveries)


def dedupe_prefix(stream: str) -> str:
    return f"{stream}:dedupe:"


class RedisStreamsBroker:
    """Streams on one Redis server. The client is injected; ``aclose`` closes it."""

    def __init__(
        self,
        client: redis.Redis,
        bound: StreamBound | None = None,
        *,
        dedupe_ttl_s: int | None = None,  # None: as the bound says (StreamBound.dedupe_ttl)
    ) -> None:
        self._redis = client
        self._bound = bound or StreamBound()
        self._dedupe_ttl_s = dedupe_ttl_s
        self._publish = client.register_script(_PUBLISH_SCRIPT)
        self._ack = client.register_script(_ACK_SCRIPT)
        self._extend = client.register_script(_EXTEND_SCRIPT)
        self._forget = client.register_script(_FORGET_SCRIPT)

    @classmethod
    def from_url(cls, url: str, bound: StreamBound | None = None) -> RedisStreamsBroker:
        return cls(redis.Redis.from_url(url, decode_responses=False), bound)

    @property
    def client(self) -> redis.Redis:
        return self._redis

    async def publish(self, stream: str, messages: Sequence[Message]) -> list[str]:
        if not messages:
            return []
        bound = self._bound.for_stream(stream)
        items: list[str] = []
        for message in messages:
            items.append(message.dedupe_key or "")
            items.append(orjson.dumps(dict(message.data)).decode())
        retention = self._bound.retention(stream)
        max_len = -1 if retention is None or retention.max_len is None else retention.max_len
        max_age_ms = ""
        if retention is not None and retention.max_age_s is not None:
            max_age_ms = str(int(retention.max_age_s * 1000))
        args: list[int | str | bytes] = [
            -1 if bound is None else bound,
            self._dedupe_ttl_s or self._bound.dedupe_ttl(stream),
            dedupe_prefix(stream),
            orjson.dumps(items),
            max_len,
            max_age_ms,
        ]
        with _boundary("publish"):
            result = await self._publish(keys=[stream], args=args)
        if result and result[0] == b"!full":
            assert bound is not None
            raise StreamFull(stream, int(result[1]), bound)
        return [_text(entry_id) for entry_id in result]

    async def create_group(self, stream: str, group: str) -> None:
        try:
            await self._redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise BrokerError(f"redis create_group failed: {exc}") from exc
        except RedisError as exc:
            raise BrokerError(f"redis create_group failed: {exc}") from exc

    def consumer(
        self, stream: str, group: str, name: str, *, reclaim_idle_ms: int = 30_000
    ) -> RedisConsumer:
        scripts = _Scripts(self._ack, self._extend)
        return RedisConsumer(self._redis, scripts, stream, group, name, reclaim_idle_ms)

    async def remove_idle_consumers(
        self, stream: str, group: str, idle_ms: int, keep: Sequence[str] = ()
    ) -> list[str]:
        try:
            removed: Any = await self._forget(keys=[stream], args=[group, idle_ms, *keep])
        except ResponseError as exc:
            if "NOGROUP" in str(exc) or "no such key" in str(exc):
                return []
            raise BrokerError(f"redis remove_idle_consumers failed: {exc}") from exc
        except RedisError as exc:
            raise BrokerError(f"redis remove_idle_consumers failed: {exc}") from exc
        return [_text(name) for name in removed]

    async def _groups(self, stream: str) -> list[dict[str, Any]]:
        with _boundary("xinfo groups"):
            try:
                groups: list[dict[str, Any]] = await self._redis.xinfo_groups(stream)
            except ResponseError as exc:
                if "no such key" in str(exc):
                    return []
                raise
        return groups

    async def readers(self, stream: str) -> int:
        return len(await self._groups(stream))

    async def group_info(self, stream: str, group: str) -> GroupInfo:
        for info in await self._groups(stream):
            if _text(info["name"]) == group:
                lag = info.get("lag")
                if lag is None:  # Redis cannot say after deletions: count what follows
                    lag = await self._count_after(stream, _text(info["last-delivered-id"]))
                return GroupInfo(lag=int(lag), pending=int(info["pending"]))
        raise BrokerError(f"no group {group!r} on stream {stream!r}")

    async def _count_after(self, stream: str, entry_id: str) -> int:
        with _boundary("xrange"):
            entries: Any = await self._redis.xrange(stream, min=f"({entry_id}", max="+")
        return len(entries)

    async def length(self, stream: str) -> int:
        with _boundary("xlen"):
            return int(await self._redis.xlen(stream))

    async def _last_id(self, stream: str) -> str:
        with _boundary("xrevrange"):
            last: Any = await self._redis.xrevrange(stream, count=1)
        return _text(last[0][0]) if last else "0-0"

    async def tail(self, stream: str, after: str | None) -> AsyncIterator[Entry]:
        position = await self._last_id(stream) if after is None else after
        if position == "0":
            position = "0-0"
        while True:
            with _boundary("xread"):
                response: Any = await self._redis.xread(
                    {stream: position}, count=500, block=_TAIL_BLOCK_MS
                )
            for _name, entries in response or []:
                for raw_id, fields in entries:
                    entry = _entry(raw_id, fields)
                    position = entry.id
                    yield entry

    async def trim_acknowledged(self, stream: str) -> int:
        groups = await self._groups(stream)
        if not groups:
            return 0
        keep_from: list[str] = []
        for info in groups:
            oldest_pending = None
            if int(info["pending"]) > 0:
                with _boundary("xpending"):
                    summary: Any = await self._redis.xpending(stream, _text(info["name"]))
                oldest_pending = summary["min"]  # None if acknowledged in the meantime
            keep_from.append(_text(oldest_pending or info["last-delivered-id"]))
        oldest = min(keep_from, key=entry_id_key)
        if oldest == "0-0":
            return 0
        with _boundary("xtrim"):
            return int(await self._redis.xtrim(stream, minid=oldest, approximate=False))

    async def delete(self, *streams: str) -> None:
        with _boundary("delete"):
            for stream in streams:
                await self._redis.delete(stream)
                keys = [
                    key
                    async for key in self._redis.scan_iter(
                        match=dedupe_prefix(stream) + "*", count=1000
                    )
                ]
                for start in range(0, len(keys), 1000):
                    await self._redis.delete(*keys[start : start + 1000])

    async def aclose(self) -> None:
        await self._redis.aclose()


@dataclass(frozen=True, slots=True)
class _Scripts:
    ack: AsyncScript
    extend: AsyncScript


class RedisConsumer:
    def __init__(
        self,
        client: redis.Redis,
        scripts: _Scripts,
        stream: str,
        group: str,
        name: str,
        reclaim_idle_ms: int,
    ) -> None:
        self._redis = client
        self._scripts = scripts
        self._stream = stream
        self._group = group
        self._name = name
        self._reclaim_idle_ms = reclaim_idle_ms
        self._reclaim_every_s = min(1.0, reclaim_idle_ms / 2000)
        self._next_reclaim_at = 0.0  # check at the first read: a restart finds old entries

    async def _reclaim(self, count: int) -> list[Entry]:
        now = time.monotonic()
        if now < self._next_reclaim_at:
            return []
        self._next_reclaim_at = now + self._reclaim_every_s
        with _boundary("xpending"):
            idle: Any = await self._redis.xpending_range(
                self._stream,
                self._group,
                min="-",
                max="+",
                count=count,
                idle=self._reclaim_idle_ms,
            )
        if not idle:
            return []
        deliveries = {_text(p["message_id"]): int(p["times_delivered"]) + 1 for p in idle}
        with _boundary("xclaim"):
            claimed: Any = await self._redis.xclaim(
                self._stream, self._group, self._name, self._reclaim_idle_ms, list(deliveries)
            )
        entries: list[Entry] = []
        for raw_id, fields in claimed:
            entry_id = _text(raw_id)
            if fields is None:  # deleted from the stream while pending: nothing to redo
                await self.ack([entry_id])
                continue
            entries.append(_entry(raw_id, fields, deliveries.get(entry_id, 2)))
        return entries

    async def read(self, count: int, block_ms: int) -> list[Entry]:
        try:
            return await self._read(count, block_ms)
        except BrokerError as exc:
            cause = str(exc.__cause__ or "")
            if cause.startswith("NOGROUP"):
                await self._recreate_group()
                return []
            if cause.startswith("UNBLOCKED"):  # the stream was deleted while this read waited
                return []
            raise

    async def _recreate_group(self) -> None:
        """The group vanished (Redis restarted without persistence, the stream deleted):
        create it again, at the start of what the stream holds, and say so."""
        try:
            await self._redis.xgroup_create(self._stream, self._group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):  # another consumer recreated it first
                return
            raise BrokerError(f"redis create_group failed: {exc}") from exc
        except RedisError as exc:
            raise BrokerError(f"redis create_group failed: {exc}") from exc
        logger.warning(
            "consumer group %s of stream %s had vanished (Redis restarted without "
            "persistence, or the stream was deleted); recreated it, reading from the start of "
            "what the stream holds",
            self._group,
            self._stream,
        )
        self._next_reclaim_at = 0.0

    async def _read(self, count: int, block_ms: int) -> list[Entry]:
        reclaimed = await self._reclaim(count)
        if reclaimed:
            return reclaimed
        with _boundary("xreadgroup"):
            response: Any = await self._redis.xreadgroup(
                self._group,
                self._name,
                {self._stream: ">"},
                count=count,
                block=block_ms if block_ms > 0 else None,
            )
        return [
            _entry(raw_id, fields)
            for _name, entries in response or []
            for raw_id, fields in entries
        ]

    async def ack(self, ids: Sequence[str]) -> None:
        if len(ids) > _PLAIN_ACK_MAX:
            with _boundary("xack"):
                await self._scripts.ack(keys=[self._stream], args=[self._group, orjson.dumps(ids)])
        elif ids:
            with _boundary("xack"):
                await self._redis.xack(self._stream, self._group, *ids)

    async def retry(self, ids: Sequence[str]) -> None:
        if ids:
            with _boundary("xclaim"):
                await self._redis.xclaim(
                    self._stream,
                    self._group,
                    self._name,
                    0,
                    list(ids),
                    idle=_GIVEN_BACK_IDLE_MS,
                    justid=True,
                )
            self._next_reclaim_at = 0.0

    async def extend(self, ids: Sequence[str]) -> None:
        if ids:
            with _boundary("extend"):
                args: list[str | bytes] = [self._group, self._name, orjson.dumps(list(ids))]
                await self._scripts.extend(keys=[self._stream], args=args)

    async def aclose(self) -> None:
        return None
