"""``KafkaBroker``: the broker contract on Apache Kafka (or any Kafka-protocol broker), via
aiokafka, with Redis beside it (``KafkaGroupStore``).

How the contract maps onto Kafka:

* a **stream** is a topic of ``partitions`` partitions (created on first use; a stream name's
  characters outside ``[A-Za-z0-9_-]`` become ``.<hex>`` in the topic name); a **group** is a
  Kafka consumer group id under which offsets are committed, so Kafka's own tools show its lag.
* **partition by key**: with ``key_field``, an entry whose data holds that field is the record
  key, so one key's entries stay in one partition, in order, read by one consumer. Entries
  without a key stick to one partition for ``sticky_records`` records, then move to the next
  (Kafka's sticky partitioner): order holds within a partition only.
* **ids** are ``"<record timestamp ms>-<offset * 1000 + partition>"``: the entry is found from
  its id (``tail`` resumes exactly), and a foreign producer's records get ids too.
* **consumers** read partitions they *lease* in Redis (fair shares, renewed in the background,
  a closed consumer's given back at once, a dead one's taken after ``reclaim_idle_ms``) rather
  than through Kafka's rebalance protocol, whose every join stops the group for seconds
  (5 s per join on tansu, ``group.initial.rebalance.delay.ms`` on Kafka).
* **ack** commits, per partition, the offset of the oldest entry not yet acknowledged: the
  worker publishes results, then acks, so a crash redelivers what had no committed result.
  ``retry`` hands the entry back to the same consumer's next read (Kafka cannot redeliver one
  record); a crash redelivers it from the committed offset anyway.
* **deliveries** and **dedupe keys** live in Redis (``kafka_store.py``): a record at or below
  the highest offset ever delivered in its partition is a redelivery. A dedupe key is marked
  ``?<ms>`` before its record is sent (the record carries it in the ``nl-dedupe`` header) and
  set to the entry id once Kafka confirmed it; a key found still marked (its publisher died in
  between) is looked up in the topic from the mark's time on, and only written if absent.
* **bounds**: a bounded stream's length is its slowest group's backlog (end offset minus
  committed offset); a publish that would pass the bound raises ``StreamFull``.
* **retention** is Kafka's (``retention.ms`` from ``Retention.max_age_s``, set when the topic
  is created); ``trim_acknowledged`` has nothing to do (acknowledged entries stop counting
  against a bound at once).
* ``length`` with groups is the slowest group's backlog; ``group_info``'s ``pending`` counts
  entries delivered (per the Redis frontier) and not committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from nearline.worker.broker import (
    BrokerError,
    Entry,
    GroupInfo,
    Message,
    StreamBound,
    StreamFull,
    entry_id_key,
    entry_id_ms,
)
from nearline.worker.kafka_consumer import (
    FETCH_MAX_WAIT_MS,
    MAX_PARTITIONS,
    KafkaConsumer,
    boundary,
    entry_id,
    id_position,
    record_entry,
    topic_name,
)
from nearline.worker.kafka_store import KafkaGroupStore

_TOPIC_EXISTS = 36
_TAIL_POLL_MS = 500
_LOOKUP_POLL_MS = 300
_MARK_SLACK_MS = 5_000  # records are stamped after their mark, by the same clock: slack anyway
DEDUPE_HEADER = "nl-dedupe"

logger = logging.getLogger("nearline.worker.kafka")


def _dedupe_header(record: ConsumerRecord[Any, Any]) -> str | None:
    for name, value in record.headers or ():
        if name == DEDUPE_HEADER and isinstance(value, bytes):
            return value.decode("utf-8", "replace")
    return None


class KafkaBroker:
    """Streams on a Kafka cluster; ``connect`` starts the clients, ``aclose`` stops them."""

    def __init__(
        self,
        bootstrap_servers: str,
        store: KafkaGroupStore,
        bound: StreamBound | None = None,
        *,
        partitions: int = 3,
        key_field: str | None = None,
        sticky_records: int = 32,
    ) -> None:
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be between 1 and {MAX_PARTITIONS}")
        self.bootstrap_servers = bootstrap_servers
        self.store = store
        self._bound = bound or StreamBound()
        self._partitions = partitions
        self._key_field = key_field
        self._sticky_records = sticky_records
        self._sticky: dict[str, tuple[int, int]] = {}  # topic -> (partition, records left)
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        self._meta = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
        self._offsets: dict[str, AIOKafkaConsumer] = {}  # group -> client holding its offsets
        self._topics: dict[str, int] = {}  # topic -> partitions
        self._consumers: set[KafkaConsumer] = set()

    @classmethod
    async def connect(
        cls,
        bootstrap_servers: str,
        redis_url: str,
        bound: StreamBound | None = None,
        *,
        partitions: int = 3,
        key_field: str | None = None,
    ) -> KafkaBroker:
        broker = cls(
            bootstrap_servers,
            KafkaGroupStore.from_url(redis_url),
            bound,
            partitions=partitions,
            key_field=key_field,
        )
        try:
            with boundary("connect"):
                await broker._producer.start()
                await broker._admin.start()
                await broker._meta.start()
        except BaseException:
            await broker.aclose()
            raise
        return broker

    async def partitions_of(self, stream: str) -> int:
        """The stream's partition count, creating its topic first if it does not exist."""
        topic = topic_name(stream)
        known = self._topics.get(topic)
        if known is not None:
            return known
        config: dict[str, str] = {}
        retention = self._bound.retention(stream)
        if retention is not None and retention.max_age_s is not None:
            config["retention.ms"] = str(retention.max_age_s * 1000)
        with boundary("create topic"):
            response = await self._admin.create_topics(
                [NewTopic(topic, self._partitions, 1, topic_configs=config)]
            )
            for _topic, code, *_ in response.topic_errors:
                if code not in (0, _TOPIC_EXISTS):
                    raise BrokerError(f"kafka create topic {topic!r} failed: error {code}")
            found = await self._producer.partitions_for(topic)
        self._topics[topic] = len(found)
        return len(found)

    def _partition(self, topic: str, partitions: int) -> int:
        current, left = self._sticky.get(topic, (random.randrange(partitions), 0))
        if left <= 0:
            current, left = (current + 1) % partitions, self._sticky_records
        self._sticky[topic] = (current, left - 1)
        return current

    async def _send(
        self, stream: str, payloads: Sequence[tuple[bytes, bytes | None, str | None]]
    ) -> tuple[list[str], dict[int, int]]:
        """Write the records; their ids, and the end offset they reached per partition."""
        topic = topic_name(stream)
        partitions = await self.partitions_of(stream)
        now_ms = int(time.time() * 1000)
        with boundary("publish"):
            sent = [
                await self._producer.send(
                    topic,
                    value,
                    key=key,
                    partition=None if key is not None else self._partition(topic, partitions),
                    timestamp_ms=now_ms,
                    headers=[(DEDUPE_HEADER, dedupe.encode())] if dedupe is not None else None,
                )
                for value, key, dedupe in payloads
            ]
            written = await asyncio.gather(*sent)
        ends: dict[int, int] = {}
        for m in written:
            ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
        ids = [
            entry_id(now_ms if m.timestamp in (None, -1) else m.timestamp, m.partition, m.offset)
            for m in written
        ]
        return ids, ends

    def _key(self, message: Message) -> bytes | None:
        if self._key_field is None:
            return None
        value = message.data.get(self._key_field)
        return None if value is None else str(value).encode()

    async def publish(self, stream: str, messages: Sequence[Message]) -> list[str]:
        if not messages:
            return []
        keys = list(dict.fromkeys(m.dedupe_key for m in messages if m.dedupe_key is not None))
        marker = f"?{int(time.time() * 1000)}"
        ttl_s = self._bound.dedupe_ttl(stream)
        known = await self.store.reserve(stream, keys, marker, ttl_s)
        unsure = {k: int(v[1:]) for k, v in known.items() if v.startswith("?")}
        resolved: dict[str, str] = {}
        if unsure:  # a publisher died (or is still writing) between its mark and its id
            resolved = await self._find_written(stream, unsure)
            known = {k: v for k, v in known.items() if k not in unsure} | resolved
        fresh: list[Message] = []
        slot: list[int | str] = []  # per message: its index in ``fresh``, or a known id
        first_of: dict[str, int] = {}
        for message in messages:
            key = message.dedupe_key
            if key is not None and key in known:
                slot.append(known[key])
            elif key is not None and key in first_of:
                slot.append(first_of[key])
            else:
                if key is not None:
                    first_of[key] = len(fresh)
                slot.append(len(fresh))
                fresh.append(message)
        try:
            await self._refuse_if_full(stream, len(fresh))
        except StreamFull:
            await self.store.unreserve(stream, [k for k in keys if k not in known], marker)
            raise
        written, ends = await self._send(
            stream, [(orjson.dumps(dict(m.data)), self._key(m), m.dedupe_key) for m in fresh]
        )
        ids_by_key = resolved | {key: written[i] for key, i in first_of.items()}
        await self.store.published(stream, ids_by_key, ttl_s, ends)
        return [written[s] if isinstance(s, int) else s for s in slot]

    async def _find_written(self, stream: str, since_ms: Mapping[str, int]) -> dict[str, str]:
        """The ids of records carrying these dedupe keys, written since their marks (read back
        from the topic: only after a publisher died between writing and remembering)."""
        tps = await self._tps(stream)
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
        )
        found: dict[str, str] = {}
        with boundary("dedupe lookup"):
            await reader.start()
            try:
                reader.assign(tps)
                start_ms = min(since_ms.values()) - _MARK_SLACK_MS
                starts = await reader.offsets_for_times({tp: start_ms for tp in tps})
                readable = [tp for tp in tps if starts.get(tp) is not None]
                for tp in readable:
                    reader.seek(tp, starts[tp].offset)
                empty_polls = 0
                while readable and empty_polls < 2 and len(found) < len(since_ms):
                    fetched = await reader.getmany(*readable, timeout_ms=_LOOKUP_POLL_MS)
                    records = [r for rs in fetched.values() for r in rs]
                    empty_polls = 0 if records else empty_polls + 1
                    for record in records:
                        key = _dedupe_header(record)
                        if key is not None and key in since_ms:
                            found[key] = record_entry(record).id
            finally:
                await reader.stop()
        logger.warning(
            "stream %s: %d dedupe key(s) left marked by a publish that did not finish; "
            "%d were written, the rest are written now",
            stream,
            len(since_ms),
            len(found),
        )
        return found

    async def publish_raw(self, stream: str, payload: bytes) -> str:
        """Write ``payload`` as a record's value, as a foreign producer would (tests)."""
        (written,), ends = await self._send(stream, [(payload, None, None)])
        await self.store.published(stream, {}, self._bound.dedupe_ttl(stream), ends)
        return written

    async def _refuse_if_full(self, stream: str, adding: int) -> None:
        bound = self._bound.for_stream(stream)
        if bound is None or adding == 0:
            return
        backlog = await self.length(stream)
        if backlog + adding > bound:
            raise StreamFull(stream, backlog, bound)

    async def _tps(self, stream: str) -> list[TopicPartition]:
        count = await self.partitions_of(stream)
        return [TopicPartition(topic_name(stream), p) for p in range(count)]

    async def _offset_client(self, stream: str, group: str) -> AIOKafkaConsumer:
        """A client of ``group`` assigned every partition of ``stream``, paused (never fetches):
        it reads and writes the group's committed offsets."""
        tps = await self._tps(stream)
        client = self._offsets.get(group)
        if client is None:
            client = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers, group_id=group, enable_auto_commit=False
            )
            with boundary("connect"):
                await client.start()
            self._offsets[group] = client
        if not set(tps) <= client.assignment():
            client.assign(list(client.assignment() | set(tps)))
            client.pause(*client.assignment())
        return client

    async def committed(self, stream: str, group: str) -> dict[int, int | None]:
        client = await self._offset_client(stream, group)
        tps = await self._tps(stream)
        with boundary("fetch offsets"):
            found = await asyncio.gather(*(client.committed(tp) for tp in tps))
        return {tp.partition: offset for tp, offset in zip(tps, found, strict=True)}

    async def end_offsets(self, stream: str) -> dict[int, int]:
        tps = await self._tps(stream)
        with boundary("list offsets"):
            ends = await self._meta.end_offsets(tps)
        written = await self.store.ends(stream)
        return {
            tp.partition: max(int(end), written.get(tp.partition, 0)) for tp, end in ends.items()
        }

    async def create_group(self, stream: str, group: str) -> None:
        await self.store.add_group(stream, group)
        committed = await self.committed(stream, group)
        missing = [p for p, offset in committed.items() if offset is None]
        if missing:  # a new group starts at the end: it receives what is published after
            ends = await self.end_offsets(stream)
            client = await self._offset_client(stream, group)
            topic = topic_name(stream)
            with boundary("commit"):
                await client.commit({TopicPartition(topic, p): ends[p] for p in missing})

    def consumer(
        self, stream: str, group: str, name: str, *, reclaim_idle_ms: int = 30_000
    ) -> KafkaConsumer:
        consumer = KafkaConsumer(
            self, stream, group, f"{name}-{uuid.uuid4().hex[:8]}", reclaim_idle_ms
        )
        self._consumers.add(consumer)
        return consumer

    def forget_consumer(self, consumer: KafkaConsumer) -> None:
        self._consumers.discard(consumer)

    def dedupe_ttl(self, stream: str) -> int:
        return self._bound.dedupe_ttl(stream)

    async def _positions(self, stream: str, group: str) -> tuple[int, int]:
        """``(not delivered, delivered and not committed)`` over the group's partitions."""
        ends = await self.end_offsets(stream)
        committed = await self.committed(stream, group)
        frontier = await self.store.frontier(stream, group)
        lag = pending = 0
        for partition, end in ends.items():
            done = committed.get(partition) or 0
            delivered = max(done, frontier.get(partition, -1) + 1)
            lag += max(0, end - delivered)
            pending += max(0, min(delivered, end) - done)
        return lag, pending

    async def readers(self, stream: str) -> int:
        """How many consumer groups read ``stream`` (those created through nearline)."""
        return len(await self.store.groups(stream))

    async def group_info(self, stream: str, group: str) -> GroupInfo:
        if group not in await self.store.groups(stream):
            raise BrokerError(f"no group {group!r} on stream {stream!r}")
        lag, pending = await self._positions(stream, group)
        return GroupInfo(lag=lag, pending=pending)

    async def length(self, stream: str) -> int:
        groups = await self.store.groups(stream)
        if not groups:
            tps = await self._tps(stream)
            with boundary("list offsets"):
                starts = await self._meta.beginning_offsets(tps)
            ends = await self.end_offsets(stream)
            return sum(ends[tp.partition] - int(starts[tp]) for tp in tps)
        backlogs = []
        ends = await self.end_offsets(stream)
        for group in groups:
            committed = await self.committed(stream, group)
            backlogs.append(sum(end - (committed.get(p) or 0) for p, end in ends.items()))
        return max(backlogs)

    async def tail(self, stream: str, after: str | None) -> AsyncIterator[Entry]:
        tps = await self._tps(stream)
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
        )
        with boundary("tail"):
            await reader.start()
        try:
            with boundary("tail"):
                reader.assign(tps)
                await self._seek(reader, stream, tps, after)
            skip_until = None if after in (None, "0") else entry_id_key(str(after))
            while True:
                with boundary("tail"):
                    fetched = await reader.getmany(timeout_ms=_TAIL_POLL_MS)
                for records in fetched.values():
                    for record in records:
                        entry = record_entry(record)
                        if skip_until is None or entry_id_key(entry.id) > skip_until:
                            yield entry
        finally:
            with contextlib.suppress(KafkaError, RuntimeError):
                await reader.stop()

    async def _seek(
        self, reader: AIOKafkaConsumer, stream: str, tps: list[TopicPartition], after: str | None
    ) -> None:
        if after is None:
            ends = await self.end_offsets(stream)
            for tp in tps:
                reader.seek(tp, ends[tp.partition])
            return
        if after == "0":
            starts = await reader.beginning_offsets(tps)
            for tp in tps:
                reader.seek(tp, starts[tp])
            return
        partition, offset = id_position(after)
        # other partitions have no order with this one: from the entry's millisecond on
        times = await reader.offsets_for_times({tp: entry_id_ms(after) for tp in tps})
        ends = await self.end_offsets(stream)
        for tp in tps:
            if tp.partition == partition:
                reader.seek(tp, offset + 1)
            else:
                found = times.get(tp)
                reader.seek(tp, found.offset if found is not None else ends[tp.partition])

    async def trim_acknowledged(self, stream: str) -> int:
        return 0  # Kafka trims by retention.ms; acknowledged entries leave the backlog at once

    async def delete(self, *streams: str) -> None:
        topics = [topic_name(s) for s in streams]
        with boundary("delete"):
            existing = set(await self._admin.list_topics())
            gone = [t for t in topics if t in existing]
            if gone:
                await self._admin.delete_topics(gone)
        for stream, topic in zip(streams, topics, strict=True):
            self._topics.pop(topic, None)
            self._sticky.pop(topic, None)
            await self.store.forget(stream)

    async def aclose(self) -> None:
        for consumer in list(self._consumers):
            await consumer.aclose()
        for client in [*self._offsets.values(), self._meta]:
            with contextlib.suppress(KafkaError, RuntimeError):
                await client.stop()
        with contextlib.suppress(KafkaError, RuntimeError):
            await self._producer.stop()
        with contextlib.suppress(KafkaError, RuntimeError):
            await self._admin.close()
        await self.store.aclose()
