"""Where semantic-cache entries live: in this process, or in Redis shared by many replicas.

A store keeps each entry (partition, question, vector, expiry, answer payload) and, when it is
shared, a change feed: every insert and delete is appended to a Redis Stream, which each
replica follows to keep its local ANN index in step (:class:`nearline.gateway.cache.semantic.
SemanticCache`). Redis is the source of truth; a replica's index is a cache of it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from redis.asyncio import Redis
from redis.exceptions import RedisError

from nearline.gateway.cache.thresholds import Outcome

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class IndexedEntry:
    """What a replica's index needs of an entry (everything but the answer payload)."""

    entry_id: int
    partition: str
    query: str
    vector: Vector
    expires_at: float


@dataclass(frozen=True, slots=True)
class Change:
    """One event of the change feed, at ``position`` (a Redis Stream id)."""

    position: str
    op: Literal["add", "delete", "learn"]
    entry_id: int
    entry: IndexedEntry | None = None
    outcome: Outcome | None = None  # "learn": a candidate match judged against the model


class SemanticStoreUnavailable(Exception):
    """The shared store could not be reached or failed; the cache treats it as a miss."""


@contextmanager
def _translated(operation: str) -> Iterator[None]:
    """Turn a Redis or socket failure into :class:`SemanticStoreUnavailable`, once, here."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise SemanticStoreUnavailable(f"semantic store {operation} failed: {exc}") from exc


class SemanticStore(Protocol):
    """Persistence behind the semantic cache."""

    @property
    def shared(self) -> bool:
        """Whether other processes see these entries (and a change feed exists)."""
        ...

    @property
    def namespace(self) -> str: ...

    async def next_id(self) -> int: ...

    async def put(self, entry: IndexedEntry, payload: bytes) -> None:
        """Store the entry and its payload (expiring at ``entry.expires_at``)."""
        ...

    async def payload(self, entry_id: int) -> bytes | None:
        """The stored answer, or ``None`` if the entry expired or was deleted."""
        ...

    async def delete(self, entry_ids: Sequence[int]) -> int: ...

    async def feed_head(self) -> str:
        """The position of the newest change (``"0-0"`` for none)."""
        ...

    async def changes_after(
        self, position: str, *, limit: int = 1000, block_ms: int | None = None
    ) -> list[Change]:
        """Changes after ``position``, oldest first; waits up to ``block_ms`` for one."""
        ...

    async def can_resume(self, position: str) -> bool:
        """Whether every change after ``position`` is still in the feed (none trimmed)."""
        ...

    def scan(self, batch: int = 1000) -> AsyncIterator[list[IndexedEntry]]:
        """Every live entry, in batches (for a replica that has no usable snapshot)."""
        ...

    async def put_outcome(self, outcome: Outcome) -> None:
        """Share a learned outcome: on the change feed, and in the outcome log."""
        ...

    async def outcomes_until(self, position: str) -> list[Outcome]:
        """The logged outcomes up to feed ``position`` (later ones are replayed from the
        feed), for a replica that rebuilds without a snapshot."""
        ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """Entries in this process only (the embedded default); no change feed."""

    def __init__(self) -> None:
        self._payloads: dict[int, tuple[bytes, float]] = {}
        self._counter = 0

    @property
    def shared(self) -> bool:
        return False

    @property
    def namespace(self) -> str:
        return "memory"

    async def next_id(self) -> int:
        self._counter += 1
        return self._counter

    async def put(self, entry: IndexedEntry, payload: bytes) -> None:
        self._payloads[entry.entry_id] = (payload, entry.expires_at)

    async def payload(self, entry_id: int) -> bytes | None:
        stored = self._payloads.get(entry_id)
        if stored is None:
            return None
        payload, expires_at = stored
        if expires_at <= time.time():
            del self._payloads[entry_id]
            return None
        return payload

    async def delete(self, entry_ids: Sequence[int]) -> int:
        return sum(self._payloads.pop(entry_id, None) is not None for entry_id in entry_ids)

    async def feed_head(self) -> str:
        return "0-0"

    async def changes_after(
        self, position: str, *, limit: int = 1000, block_ms: int | None = None
    ) -> list[Change]:
        return []

    async def can_resume(self, position: str) -> bool:
        return False

    async def scan(self, batch: int = 1000) -> AsyncIterator[list[IndexedEntry]]:
        for _ in ():
            yield []

    async def put_outcome(self, outcome: Outcome) -> None:
        del outcome  # nobody else to tell: the cache keeps its own evidence

    async def outcomes_until(self, position: str) -> list[Outcome]:
        return []

    async def aclose(self) -> None:
        self._payloads.clear()


# The feed is trimmed with XDEL rather than XADD MAXLEN: XDEL records the highest removed id
# (XINFO's max-deleted-entry-id), which is how a restarting replica learns that changes after
# its snapshot are gone and it must rescan instead of replaying.
_TRIM_LUA = """
local function trim(feed, max_len)
  local excess = redis.call('XLEN', feed) - tonumber(max_len)
  if excess > 0 then
    for _, event in ipairs(redis.call('XRANGE', feed, '-', '+', 'COUNT', excess)) do
      redis.call('XDEL', feed, event[1])
    end
  end
end
"""

# put: the entry hash with its TTL and the "add" event, atomically (one round trip).
_PUT_LUA = (
    _TRIM_LUA
    + """
redis.call('HSET', KEYS[1], 'p', ARGV[2], 'q', ARGV[3], 'v', ARGV[4], 'x', ARGV[5], 'a', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('XADD', KEYS[2], '*', 'op', 'add', 'id', ARGV[1],
           'p', ARGV[2], 'q', ARGV[3], 'v', ARGV[4], 'x', ARGV[5])
trim(KEYS[2], ARGV[8])
return 1
"""
)

# delete: drop the entry and tell every replica, atomically.
_DELETE_LUA = (
    _TRIM_LUA
    + """
local removed = redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], '*', 'op', 'delete', 'id', ARGV[1])
trim(KEYS[2], ARGV[2])
return removed
"""
)


# learn: the outcome on the feed (replicas apply it) and in the outcome log (a rescanning
# replica rebuilds from it), with the feed position, atomically.
_LEARN_LUA = (
    _TRIM_LUA
    + """
local id = redis.call('XADD', KEYS[1], '*', 'op', 'learn', 'id', ARGV[1],
                      'p', ARGV[2], 's', ARGV[3], 'c', ARGV[4], 'v', ARGV[7])
redis.call('RPUSH', KEYS[2], id .. '|' .. ARGV[1] .. '|' .. ARGV[3] .. '|' .. ARGV[4]
           .. '|' .. ARGV[7] .. '|' .. ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[6]), -1)
trim(KEYS[1], ARGV[5])
return id
"""
)


def _stream_id_tuple(position: str) -> tuple[int, int]:
    millis, _, sequence = position.partition("-")
    return int(millis), int(sequence or 0)


class RedisStore:
    """Entries as Redis hashes with a TTL, changes on a Redis Stream.

    ``redis`` must return bytes (``decode_responses=False``, the default). Keys (under
    ``namespace``): ``{ns}:e:{id}`` one hash per entry, ``{ns}:ids`` the id
    counter, ``{ns}:changes`` the change stream, trimmed to ``max_feed_len`` events.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str = "nearline:semantic",
        max_feed_len: int = 1_000_000,
        max_outcomes: int = 1_000_000,
        close_client: bool = False,
    ) -> None:
        self._redis = redis
        self._close_client = close_client
        self._ns = namespace
        self._max_feed_len = max_feed_len
        self._max_outcomes = max_outcomes
        self._put_script = redis.register_script(_PUT_LUA)
        self._learn_script = redis.register_script(_LEARN_LUA)
        self._delete_script = redis.register_script(_DELETE_LUA)

    @classmethod
    def from_url(cls, url: str, **options: object) -> RedisStore:
        namespace = str(options.get("namespace", "nearline:semantic"))
        max_feed_len = int(str(options.get("max_feed_len", 1_000_000)))
        return cls(
            Redis.from_url(url), namespace=namespace, max_feed_len=max_feed_len, close_client=True
        )

    @property
    def shared(self) -> bool:
        return True

    @property
    def namespace(self) -> str:
        return self._ns

    @property
    def _feed(self) -> str:
        return f"{self._ns}:changes"

    def _entry_key(self, entry_id: int) -> str:
        return f"{self._ns}:e:{entry_id}"

    async def next_id(self) -> int:
        with _translated("next_id"):
            return int(await self._redis.incr(f"{self._ns}:ids"))

    async def put(self, entry: IndexedEntry, payload: bytes) -> None:
        with _translated("put"):
            ttl_ms = max(1, int((entry.expires_at - time.time()) * 1000))
            vector = np.ascontiguousarray(entry.vector, dtype="<f4").tobytes()
            await self._put_script(
                keys=[self._entry_key(entry.entry_id), self._feed],
                args=[
                    entry.entry_id,
                    entry.partition,
                    entry.query,
                    vector,
                    repr(entry.expires_at),
                    payload,
                    ttl_ms,
                    self._max_feed_len,
                ],
            )

    async def payload(self, entry_id: int) -> bytes | None:
        with _translated("payload"):
            value: Any = await self._redis.hget(self._entry_key(entry_id), "a")
            return None if value is None else bytes(value)

    async def delete(self, entry_ids: Sequence[int]) -> int:
        with _translated("delete"):
            removed = 0
            for entry_id in entry_ids:
                removed += int(
                    await self._delete_script(
                        keys=[self._entry_key(entry_id), self._feed],
                        args=[entry_id, self._max_feed_len],
                    )
                )
            return removed

    async def feed_head(self) -> str:
        with _translated("feed_head"):
            info = await self._stream_info()
            if info is None:
                return "0-0"
            return _text(info["last-generated-id"])

    async def _stream_info(self) -> dict[str, Any] | None:
        if not await self._redis.exists(self._feed):
            return None
        info: dict[str, Any] = await self._redis.xinfo_stream(self._feed)
        return info

    async def changes_after(
        self, position: str, *, limit: int = 1000, block_ms: int | None = None
    ) -> list[Change]:
        with _translated("changes_after"):
            response: Any = await self._redis.xread(
                {self._feed: position}, count=limit, block=block_ms
            )
            if not response:
                return []
            _, events = response[0]
            return [self._parse(_text(event_id), fields) for event_id, fields in events]

    async def can_resume(self, position: str) -> bool:
        with _translated("can_resume"):
            """Whether the feed still holds every change after ``position`` (none trimmed)."""
            info = await self._stream_info()
            if info is None:
                return position == "0-0"
            trimmed_up_to = _text(info.get("max-deleted-entry-id", b"0-0"))
            return _stream_id_tuple(trimmed_up_to) <= _stream_id_tuple(position)

    async def put_outcome(self, outcome: Outcome) -> None:
        with _translated("put_outcome"):
            await self._learn_script(
                keys=[self._feed, f"{self._ns}:outcomes"],
                args=[
                    outcome.entry_id,
                    outcome.partition,
                    repr(outcome.similarity),
                    int(outcome.correct),
                    self._max_feed_len,
                    self._max_outcomes,
                    int(outcome.served),
                ],
            )

    async def outcomes_until(self, position: str) -> list[Outcome]:
        with _translated("outcomes_until"):
            rows: list[Any] = await self._redis.lrange(f"{self._ns}:outcomes", 0, -1)
        limit = _stream_id_tuple(position)
        outcomes = []
        for row in rows:
            event_id, entry_id, similarity, correct, served, partition = _text(row).split("|", 5)
            if _stream_id_tuple(event_id) <= limit:
                outcome = Outcome(
                    partition, int(entry_id), float(similarity), correct == "1", served == "1"
                )
                outcomes.append(outcome)
        return outcomes

    def _parse(self, position: str, fields: dict[bytes, bytes]) -> Change:
        entry_id = int(fields[b"id"])
        if fields[b"op"] == b"delete":
            return Change(position, "delete", entry_id)
        if fields[b"op"] == b"learn":
            outcome = Outcome(
                fields[b"p"].decode(),
                entry_id,
                float(fields[b"s"]),
                fields[b"c"] == b"1",
                fields.get(b"v") == b"1",
            )
            return Change(position, "learn", entry_id, outcome=outcome)
        entry = IndexedEntry(
            entry_id=entry_id,
            partition=fields[b"p"].decode(),
            query=fields[b"q"].decode(),
            vector=np.frombuffer(fields[b"v"], dtype="<f4").astype(np.float32),
            expires_at=float(fields[b"x"]),
        )
        return Change(position, "add", entry_id, entry)

    async def scan(self, batch: int = 1000) -> AsyncIterator[list[IndexedEntry]]:
        keys: list[bytes] = []
        with _translated("scan"):
            found = [
                key async for key in self._redis.scan_iter(match=f"{self._ns}:e:*", count=batch)
            ]
        for key in found:
            keys.append(key)
            if len(keys) >= batch:
                yield await self._read_entries(keys)
                keys = []
        if keys:
            yield await self._read_entries(keys)

    async def _read_entries(self, keys: list[bytes]) -> list[IndexedEntry]:
        with _translated("scan"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    _ = pipe.hmget(key, ["p", "q", "v", "x"])
                rows: list[Any] = await pipe.execute()
            entries = []
            for key, (partition, query, vector, expires_at) in zip(keys, rows, strict=True):
                if partition is None:  # expired between SCAN and HMGET
                    continue
                entries.append(
                    IndexedEntry(
                        entry_id=int(key.rsplit(b":", 1)[1]),
                        partition=partition.decode(),
                        query=query.decode(),
                        vector=np.frombuffer(vector, dtype="<f4").astype(np.float32),
                        expires_at=float(expires_at),
                    )
                )
            return entries

    async def aclose(self) -> None:
        """Close the Redis client if this store made it (``from_url``); an injected client
        belongs to its owner."""
        if self._close_client:
            await self._redis.aclose()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
