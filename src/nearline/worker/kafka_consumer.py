"""``KafkaConsumer``: one member of a group on ``KafkaBroker``, reading the partitions it leases.

A background task renews the consumer's leases every ``min(0.2 s, reclaim_idle_ms / 3)`` and
takes its fair share of the partitions; a partition it must give up (another consumer joined)
is paused first and given back once every entry read from it is acknowledged, so no entry is
delivered to two live consumers. Acknowledging commits the partition's oldest unacknowledged
offset; a record from a partition this consumer no longer holds is dropped, never committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from nearline.worker.broker import BrokerError, Entry, decode_payload, entry_id_key

if TYPE_CHECKING:
    from nearline.worker.kafka import KafkaBroker

logger = logging.getLogger("nearline.worker.kafka")

MAX_PARTITIONS = 1000  # ids pack the partition into the last three digits
_RENEW_EVERY_S = 0.2  # lease renewal; also how soon a busy consumer makes room for a new one
_SETTLE_S = 0.05
# tansu holds a fetch until its max wait even when a record arrives meanwhile (measured: ~115 ms
# late at aiokafka's default 500 ms, <= 18 ms at 20); Kafka answers at the first record
FETCH_MAX_WAIT_MS = 20


@contextlib.contextmanager
def boundary(what: str) -> Iterator[None]:
    try:
        yield
    except KafkaError as exc:
        raise BrokerError(f"kafka {what} failed: {exc!r}") from exc


def topic_name(stream: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", lambda m: f".{ord(m.group()):02x}", stream)


def entry_id(timestamp_ms: int, partition: int, offset: int) -> str:
    return f"{timestamp_ms}-{offset * MAX_PARTITIONS + partition}"


def id_position(entry_id_: str) -> tuple[int, int]:
    """``(partition, offset)`` of an entry id."""
    _, sequence = entry_id_key(entry_id_)
    return sequence % MAX_PARTITIONS, sequence // MAX_PARTITIONS


def record_entry(record: ConsumerRecord[Any, Any], deliveries: int = 1) -> Entry:
    payload = record.value if isinstance(record.value, bytes) else b""
    data, error = decode_payload(payload)
    return Entry(
        entry_id(record.timestamp, record.partition, record.offset), data, deliveries, error
    )


class KafkaConsumer:
    def __init__(
        self, broker: KafkaBroker, stream: str, group: str, token: str, reclaim_idle_ms: int
    ) -> None:
        self._broker = broker
        self._stream = stream
        self._group = group
        self._token = token
        self._ttl_ms = reclaim_idle_ms
        self._renew_every_s = min(_RENEW_EVERY_S, reclaim_idle_ms / 3000)
        self._client: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._topic = ""
        self._partitions = 0
        self._held: set[int] = set()
        self._draining: set[int] = set()  # held, paused, given back once nothing is in flight
        self._changed = asyncio.Event()  # the leases changed: a waiting read looks again
        self._lock = asyncio.Lock()  # one lease renewal or assignment change at a time
        self._next: dict[int, int] = {}  # partition -> next offset to read
        self._in_flight: dict[str, Entry] = {}  # id -> entry read, not acknowledged
        self._offsets: dict[int, set[int]] = {}  # partition -> offsets in flight
        self._given_back: deque[Entry] = deque()
        self._closed = False

    async def _start(self) -> None:
        self._partitions = await self._broker.partitions_of(self._stream)
        self._topic = topic_name(self._stream)
        client = AIOKafkaConsumer(
            bootstrap_servers=self._broker.bootstrap_servers,
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        with boundary("connect"):
            await client.start()
        self._client = client
        # announce this member first, so that consumers starting together share fairly
        await self._broker.store.leases(
            self._stream,
            self._group,
            self._token,
            now_ms=int(time.time() * 1000),
            ttl_ms=self._ttl_ms,
            partitions=0,
        )
        await asyncio.sleep(_SETTLE_S)
        await self._renew()
        self._task = asyncio.create_task(self._keep_leases())

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self._renew_every_s)
            try:
                await self._renew()
            except BrokerError as exc:  # the leases expire unless a later renewal succeeds
                logger.warning("consumer %s: renewing its leases: %s", self._token, exc)

    def _releasable(self) -> list[int]:
        return [p for p in self._draining if not self._offsets.get(p)]

    async def _renew(self, *, leave: bool = False) -> None:
        async with self._lock:
            target, held = await self._broker.store.leases(
                self._stream,
                self._group,
                self._token,
                now_ms=int(time.time() * 1000),
                ttl_ms=self._ttl_ms,
                partitions=self._partitions,
                releasable=self._releasable() if not leave else sorted(self._held),
                leave=leave,
            )
            if leave:
                return
            now_held = set(held)
            extra = len(now_held) - target
            busy = sorted(now_held, key=lambda p: len(self._offsets.get(p, ())))
            draining = set(busy[:extra]) if extra > 0 else set()
            if now_held != self._held or draining != self._draining:
                self._assign(now_held, draining)

    def _assign(self, held: set[int], draining: set[int]) -> None:
        assert self._client is not None
        for lost in self._held - held:  # taken by another consumer: its entries are theirs
            self._drop(lost)
        kept = self._held & held
        self._held, self._draining = held, draining
        tps = [TopicPartition(self._topic, p) for p in sorted(held)]
        with contextlib.suppress(KafkaError):
            if set(tps) != self._client.assignment():
                self._client.assign(tps)
                for p in kept:  # assign() rewinds to the committed offset: not for ours
                    if p in self._next:
                        self._client.seek(TopicPartition(self._topic, p), self._next[p])
            self._client.resume(*[tp for tp in tps if tp.partition not in draining])
            self._client.pause(*[tp for tp in tps if tp.partition in draining])
        self._changed.set()
        self._changed = asyncio.Event()

    def _drop(self, partition: int) -> None:
        self._next.pop(partition, None)
        self._offsets.pop(partition, None)
        gone = [i for i, e in self._in_flight.items() if _partition(e.id) == partition]
        for entry_id in gone:
            del self._in_flight[entry_id]
        self._given_back = deque(e for e in self._given_back if _partition(e.id) != partition)

    async def read(self, count: int, block_ms: int) -> list[Entry]:
        if self._closed:
            raise RuntimeError("consumer is closed")
        if self._client is None:
            await self._start()
        if self._given_back:
            return await self._redeliver(count)
        deadline = time.monotonic() + block_ms / 1000
        while True:
            readable = [TopicPartition(self._topic, p) for p in self._held - self._draining]
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if readable:
                entries = await self._fetch(readable, count, remaining_ms)
                if entries or time.monotonic() >= deadline:
                    return entries
                continue
            if remaining_ms <= 0:
                return []
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining_ms / 1000)

    async def _fetch(self, tps: list[TopicPartition], count: int, timeout_ms: int) -> list[Entry]:
        assert self._client is not None
        with boundary("fetch"):
            fetched = await self._client.getmany(*tps, timeout_ms=timeout_ms, max_records=count)
        records = [
            r
            for tp, rs in fetched.items()
            if tp.partition in self._held and tp.partition not in self._draining
            for r in rs
        ]
        if not records:
            return []
        by_partition: dict[int, list[int]] = {}
        for record in records:
            by_partition.setdefault(record.partition, []).append(record.offset)
        ordered = [r for p in by_partition for r in records if r.partition == p]
        counts = await self._broker.store.deliveries(
            self._stream, self._group, by_partition, self._broker.dedupe_ttl(self._stream)
        )
        entries: list[Entry] = []
        for record, deliveries in zip(ordered, counts, strict=True):
            if record.partition not in self._held:  # lost while asking Redis
                continue
            entry = record_entry(record, deliveries)
            self._in_flight[entry.id] = entry
            self._offsets.setdefault(record.partition, set()).add(record.offset)
            self._next[record.partition] = max(
                self._next.get(record.partition, 0), record.offset + 1
            )
            entries.append(entry)
        return entries

    async def _redeliver(self, count: int) -> list[Entry]:
        taken = [self._given_back.popleft() for _ in range(min(count, len(self._given_back)))]
        by_partition: dict[int, list[int]] = {}
        for entry in taken:
            partition, offset = _position(entry.id)
            by_partition.setdefault(partition, []).append(offset)
        ordered = [e for p in by_partition for e in taken if _partition(e.id) == p]
        counts = await self._broker.store.deliveries(
            self._stream, self._group, by_partition, self._broker.dedupe_ttl(self._stream)
        )
        again = [
            Entry(e.id, e.data, deliveries, e.decode_error)
            for e, deliveries in zip(ordered, counts, strict=True)
        ]
        for entry in again:
            self._in_flight[entry.id] = entry
        return again

    async def ack(self, ids: Sequence[str]) -> None:
        touched: set[int] = set()
        for entry_id in ids:
            if self._in_flight.pop(entry_id, None) is None:
                continue
            partition, offset = _position(entry_id)
            self._offsets.get(partition, set()).discard(offset)
            touched.add(partition)
        commits = {}
        for partition in touched & self._held:
            in_flight = self._offsets.get(partition)
            upto = min(in_flight) if in_flight else self._next.get(partition)
            if upto is not None:
                commits[TopicPartition(self._topic, partition)] = upto
        if commits and self._client is not None:
            with boundary("commit"):
                await self._client.commit(commits)

    async def retry(self, ids: Sequence[str]) -> None:
        for entry_id in ids:
            entry = self._in_flight.pop(entry_id, None)
            if entry is not None:  # still in ``_offsets``: not committed past
                self._given_back.append(entry)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._broker.forget_consumer(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            with contextlib.suppress(BrokerError):
                await self._renew(leave=True)
            with contextlib.suppress(KafkaError, RuntimeError):
                await self._client.stop()


def _position(entry_id_: str) -> tuple[int, int]:
    return id_position(entry_id_)


def _partition(entry_id_: str) -> int:
    return id_position(entry_id_)[0]
