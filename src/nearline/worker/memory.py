"""``MemoryBroker``: the in-process broker, for development, tests and the embedded demo.

It follows Redis Streams' semantics exactly (pending entries, reclaim after idle, delivery
counts, ids ``"<ms>-<seq>"``) so code tested against it behaves the same in production. Data
goes through JSON on the way in, as it would over the wire. Everything lives in one event
loop; nothing survives the process.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import orjson

from nearline.worker.broker import (
    BrokerError,
    Entry,
    EntryIds,
    GroupInfo,
    Message,
    Retention,
    StreamBound,
    StreamFull,
    decode_payload,
    entry_id_key,
    entry_id_ms,
)


@dataclass(slots=True)
class _Pending:
    index: int
    consumer: str
    delivered_at: float  # monotonic seconds; 0.0 means "given back, reclaim now"
    deliveries: int


@dataclass(slots=True)
class _Group:
    next_index: int
    pending: dict[str, _Pending] = field(default_factory=dict)


@dataclass(slots=True)
class _Stream:
    ids: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    base: int = 0  # absolute index of ids[0]; grows when acknowledged entries are trimmed
    groups: dict[str, _Group] = field(default_factory=dict)
    dedupe: dict[str, tuple[str, float]] = field(default_factory=dict)  # id, expiry (monotonic)
    new_ids: EntryIds = field(default_factory=EntryIds)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def end(self) -> int:
        return self.base + len(self.ids)

    def entry(self, index: int, deliveries: int) -> Entry:
        position = index - self.base
        data, error = decode_payload(self.payloads[position])
        return Entry(self.ids[position], data, deliveries, error)

    def index_after(self, entry_id: str) -> int:
        position = bisect.bisect_right(self.ids, entry_id_key(entry_id), key=entry_id_key)
        return self.base + position

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def known(self, key: str, now: float) -> str | None:
        found = self.dedupe.get(key)
        return found[0] if found is not None and found[1] > now else None

    def expire_dedupe(self, now: float) -> None:
        """Forget expired keys (kept in the order they expire: one TTL per stream)."""
        while self.dedupe:
            oldest = next(iter(self.dedupe))
            if self.dedupe[oldest][1] > now:
                return
            del self.dedupe[oldest]

    def drop_front(self, count: int) -> None:
        """Drop the ``count`` oldest entries; groups skip them, as on Redis."""
        if count <= 0:
            return
        del self.ids[:count]
        del self.payloads[:count]
        self.base += count
        for group in self.groups.values():
            group.next_index = max(group.next_index, self.base)
            gone = [i for i, pending in group.pending.items() if pending.index < self.base]
            for entry_id in gone:
                del group.pending[entry_id]

    def trim_to(self, retention: Retention) -> None:
        drop = 0
        if retention.max_len is not None:
            drop = len(self.ids) - retention.max_len
        if retention.max_age_s is not None:
            cutoff_ms = time.time() * 1000 - retention.max_age_s * 1000
            drop = max(drop, bisect.bisect_left(self.ids, cutoff_ms, key=entry_id_ms))
        self.drop_front(drop)


class MemoryBroker:
    """Streams in this process's memory. Bounds as in ``StreamBound``."""

    def __init__(self, bound: StreamBound | None = None) -> None:
        self._bound = bound or StreamBound()
        self._streams: dict[str, _Stream] = {}

    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream()
        return stream

    async def publish(self, stream: str, messages: Sequence[Message]) -> list[str]:
        log = self._stream(stream)
        now = time.monotonic()
        log.expire_dedupe(now)
        fresh = [
            m for m in messages if m.dedupe_key is None or log.known(m.dedupe_key, now) is None
        ]
        bound = self._bound.for_stream(stream)
        if bound is not None and fresh and len(log.ids) + len(fresh) > bound:
            raise StreamFull(stream, len(log.ids), bound)
        expires = now + self._bound.dedupe_ttl(stream)
        ids: list[str] = []
        for message in messages:
            key = message.dedupe_key
            known = None if key is None else log.known(key, now)
            if known is not None:
                ids.append(known)
                continue
            entry_id = log.new_ids.next()
            log.ids.append(entry_id)
            log.payloads.append(orjson.dumps(dict(message.data)))
            if key is not None:
                log.dedupe.pop(key, None)  # re-inserted last: the dict stays in expiry order
                log.dedupe[key] = (entry_id, expires)
            ids.append(entry_id)
        if fresh:
            retention = self._bound.retention(stream)
            if retention is not None:
                log.trim_to(retention)
            log.notify()
        return ids

    async def create_group(self, stream: str, group: str) -> None:
        log = self._stream(stream)
        log.groups.setdefault(group, _Group(next_index=log.base))

    def consumer(
        self, stream: str, group: str, name: str, *, reclaim_idle_ms: int = 30_000
    ) -> MemoryConsumer:
        log = self._stream(stream)
        if group not in log.groups:
            raise KeyError(f"no group {group!r} on stream {stream!r}; call create_group first")
        return MemoryConsumer(log, log.groups[group], name, reclaim_idle_ms / 1000)

    async def readers(self, stream: str) -> int:
        log = self._streams.get(stream)
        return 0 if log is None else len(log.groups)

    async def group_info(self, stream: str, group: str) -> GroupInfo:
        log = self._stream(stream)
        state = log.groups.get(group)
        if state is None:
            raise BrokerError(f"no group {group!r} on stream {stream!r}")
        return GroupInfo(lag=log.end - state.next_index, pending=len(state.pending))

    async def length(self, stream: str) -> int:
        return len(self._stream(stream).ids)

    async def tail(self, stream: str, after: str | None) -> AsyncIterator[Entry]:
        log = self._stream(stream)
        if after is None:
            position = log.end
        elif after == "0":
            position = log.base
        else:
            position = log.index_after(after)
        while True:
            changed = log.changed
            position = max(position, log.base)
            while position < log.end:
                yield log.entry(position, 1)
                position += 1
            await changed.wait()

    async def trim_acknowledged(self, stream: str) -> int:
        log = self._stream(stream)
        if not log.groups:
            return 0
        keep_from = min(
            min((p.index for p in g.pending.values()), default=g.next_index)
            for g in log.groups.values()
        )
        dropped = keep_from - log.base
        if dropped <= 0:
            return 0
        log.drop_front(dropped)
        return dropped

    async def delete(self, *streams: str) -> None:
        for name in streams:
            self._streams.pop(name, None)

    async def aclose(self) -> None:
        self._streams.clear()


class MemoryConsumer:
    def __init__(self, log: _Stream, group: _Group, name: str, reclaim_idle_s: float) -> None:
        self._log = log
        self._group = group
        self._name = name
        self._reclaim_idle_s = reclaim_idle_s
        self._closed = False

    def _take(self, count: int) -> list[Entry]:
        now = time.monotonic()
        taken: list[Entry] = []
        for entry_id, pending in self._group.pending.items():
            if len(taken) >= count:
                return taken
            if now - pending.delivered_at >= self._reclaim_idle_s:
                pending.consumer = self._name
                pending.delivered_at = now
                pending.deliveries += 1
                taken.append(self._log.entry(pending.index, pending.deliveries))
                assert taken[-1].id == entry_id
        while len(taken) < count and self._group.next_index < self._log.end:
            index = self._group.next_index
            self._group.next_index += 1
            entry = self._log.entry(index, 1)
            self._group.pending[entry.id] = _Pending(index, self._name, now, 1)
            taken.append(entry)
        return taken

    def _next_reclaim_in(self) -> float | None:
        if not self._group.pending:
            return None
        oldest = min(p.delivered_at for p in self._group.pending.values())
        return max(0.0, oldest + self._reclaim_idle_s - time.monotonic())

    async def read(self, count: int, block_ms: int) -> list[Entry]:
        if self._closed:
            raise RuntimeError("consumer is closed")
        deadline = time.monotonic() + block_ms / 1000
        while True:
            changed = self._log.changed
            taken = self._take(count)
            remaining = deadline - time.monotonic()
            if taken or remaining <= 0:
                return taken
            reclaim_in = self._next_reclaim_in()
            wait = remaining if reclaim_in is None else min(remaining, reclaim_in + 0.001)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), wait)

    async def ack(self, ids: Sequence[str]) -> None:
        for entry_id in ids:
            self._group.pending.pop(entry_id, None)

    async def retry(self, ids: Sequence[str]) -> None:
        for entry_id in ids:
            pending = self._group.pending.get(entry_id)
            if pending is not None:
                pending.delivered_at = 0.0
        self._log.notify()

    async def extend(self, ids: Sequence[str]) -> None:
        now = time.monotonic()
        for entry_id in ids:
            pending = self._group.pending.get(entry_id)
            if pending is not None and pending.consumer == self._name and pending.delivered_at:
                pending.delivered_at = now

    async def aclose(self) -> None:
        self._closed = True
