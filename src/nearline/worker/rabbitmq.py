"""``RabbitMQBroker``: the broker contract on RabbitMQ (AMQP 0-9-1, via aio-pika).

How the contract maps onto RabbitMQ:

* a **stream** is a durable fanout exchange ``nl.<stream>``; a **group** is a quorum queue
  ``nl.<stream>.<group>`` bound to it (quorum queues count deliveries in ``x-delivery-count``);
  every exchange also feeds a RabbitMQ *stream queue* ``nl.<stream>.log`` that keeps the
  entries for ``tail`` (replay from an offset, resume after an entry id).
* **ids** are made by the producer (``"<ms>-<seq>"``, seq unique per producer) and travel as
  the message id.
* **reclaim**: RabbitMQ itself gives a dead consumer's unacknowledged messages back when its
  channel closes, so ``reclaim_idle_ms`` is not needed; ``retry`` is ``nack(requeue=True)``.
* **bounds**: group queues get ``x-max-length`` with ``x-overflow: reject-publish`` and every
  publish waits for its confirm, so a full queue refuses the producer (``StreamFull``) instead
  of dropping anything. Before publishing, the queues of the groups this broker knows are
  checked so a batch is refused whole; a group created by another process is only guarded by
  the refusal itself (other groups may then have received the entries: at-least-once).
* **dedupe keys**: RabbitMQ has no such thing; a ``DedupeStore`` (``dedupe.py``) remembers
  them, written ahead: ``?<id>`` before sending, ``<id>`` once confirmed. A key still marked
  ``?`` (its publisher died waiting for the confirm) is looked up in the stream's log: found,
  it is published; not found, its message is sent again with the same id. Without a store
  the broker keeps them in memory (lost on a crash: a killed worker's results are written
  again); ``nearline worker`` passes ``RedisDedupeStore`` whenever
  ``redis.url`` is set (``worker.dedupe``). Either forgets a key after the stream's dedupe TTL
  (``StreamBound.dedupe_ttl``).
* **retention** (``StreamBound.retained``): the group queues of a retained stream get
  ``x-max-length`` with ``x-overflow: drop-head`` (the oldest go, nothing is refused) and its
  log queue ``x-max-age``. RabbitMQ refuses to redeclare a queue with other arguments: a queue
  declared before a retention was set must be deleted once.
* ``GroupInfo.pending`` counts only the unacknowledged entries of this process's consumers:
  AMQP cannot ask the server (the management plugin could).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError, DeliveryError

from nearline.worker.broker import (
    BrokerError,
    Entry,
    EntryIds,
    GroupInfo,
    Message,
    StreamBound,
    StreamFull,
    decode_payload,
    entry_id_ms,
)
from nearline.worker.dedupe import DedupeStore, MemoryDedupeStore, RedisDedupeStore

__all__ = ["DedupeStore", "MemoryDedupeStore", "RabbitMQBroker", "RedisDedupeStore"]

_ENTRY_ID = re.compile(r"\d{1,15}-\d{1,19}")
_TAIL_PREFETCH = 500
_TAIL_SKIP_ALLOWANCE_MS = 10_000
_SENDING = "?"  # a dedupe key's value while its message awaits the confirm
_LOG_END_S = 1.0  # no message for this long: the end of a stream's log


@contextlib.contextmanager
def _boundary(what: str) -> Iterator[None]:
    try:
        yield
    except (AMQPError, ConnectionError) as exc:
        raise BrokerError(f"rabbitmq {what} failed: {exc!r}") from exc


def exchange_name(stream: str) -> str:
    return f"nl.{stream}"


def group_queue_name(stream: str, group: str) -> str:
    return f"nl.{stream}.{group}"


def log_queue_name(stream: str) -> str:
    return f"nl.{stream}.log"


def _entry(message: AbstractIncomingMessage) -> Entry:
    headers = message.headers or {}
    previous = headers.get("x-delivery-count")
    deliveries = 1 + (int(previous) if isinstance(previous, int) else 0)
    data, error = decode_payload(message.body)
    entry_id = str(message.message_id)
    if _ENTRY_ID.fullmatch(entry_id) is None:  # a foreign producer's message: an id of ours
        error = error or f"the message id {message.message_id!r} is not an entry id"
        entry_id = f"{int(time.time() * 1000)}-{message.delivery_tag or 0}"
    return Entry(entry_id, data, deliveries, error)


class RabbitMQBroker:
    """Streams on one RabbitMQ server. ``connect`` opens the connection; ``aclose`` closes it."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        channel: AbstractChannel,
        bound: StreamBound | None = None,
        dedupe: DedupeStore | None = None,
        *,
        queue_expires_ms: int | None = None,
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._bound = bound or StreamBound()
        self._dedupe: DedupeStore = dedupe or MemoryDedupeStore()
        self._queue_expires_ms = queue_expires_ms
        self._ids = EntryIds(first_seq=random.SystemRandom().randrange(1, 1 << 30) * 1_000_000)
        self._exchanges: dict[str, AbstractExchange] = {}
        self._groups: dict[str, set[str]] = {}
        self._unacked: dict[tuple[str, str], set[str]] = {}

    @classmethod
    async def connect(
        cls,
        url: str,
        bound: StreamBound | None = None,
        dedupe: DedupeStore | None = None,
        *,
        queue_expires_ms: int | None = None,
    ) -> RabbitMQBroker:
        with _boundary("connect"):
            connection = await aio_pika.connect_robust(url)
            channel = await connection.channel(publisher_confirms=True)
        return cls(connection, channel, bound, dedupe, queue_expires_ms=queue_expires_ms)

    async def _exchange(self, stream: str) -> AbstractExchange:
        exchange = self._exchanges.get(stream)
        if exchange is None:
            with _boundary("declare"):
                exchange = await self._channel.declare_exchange(
                    exchange_name(stream), aio_pika.ExchangeType.FANOUT, durable=True
                )
                log = await self._channel.declare_queue(
                    log_queue_name(stream), durable=True, arguments=self._log_arguments(stream)
                )
                await log.bind(exchange)
            self._exchanges[stream] = exchange
        return exchange

    def _log_arguments(self, stream: str) -> dict[str, Any]:
        arguments: dict[str, Any] = {"x-queue-type": "stream"}
        retention = self._bound.retention(stream)
        if retention is not None and retention.max_age_s is not None:
            arguments["x-max-age"] = f"{retention.max_age_s}s"
        return arguments

    async def _group_queue(
        self, channel: AbstractChannel, stream: str, group: str
    ) -> AbstractQueue:
        arguments: dict[str, Any] = {"x-queue-type": "quorum"}
        bound = self._bound.for_stream(stream)
        retention = self._bound.retention(stream)
        if bound is not None:
            arguments |= {"x-max-length": bound, "x-overflow": "reject-publish"}
        elif retention is not None and retention.max_len is not None:
            arguments |= {"x-max-length": retention.max_len, "x-overflow": "drop-head"}
        if self._queue_expires_ms is not None:
            arguments["x-expires"] = self._queue_expires_ms
        with _boundary("declare"):
            return await channel.declare_queue(
                group_queue_name(stream, group), durable=True, arguments=arguments
            )

    async def _ready(self, stream: str, group: str) -> int:
        # a passive declare answers 0 through aio-pika; an identical active one is idempotent
        queue = await self._group_queue(self._channel, stream, group)
        count = queue.declaration_result.message_count
        return int(count or 0)

    async def publish(self, stream: str, messages: Sequence[Message]) -> list[str]:
        if not messages:
            return []
        exchange = await self._exchange(stream)
        keys = [m.dedupe_key for m in messages if m.dedupe_key is not None]
        ttl_s = self._bound.dedupe_ttl(stream)
        known, unsure = await self._known(stream, keys, ttl_s)
        ids: list[str] = []
        fresh: list[tuple[str, Message]] = []
        for message in messages:
            key = message.dedupe_key
            if key is not None and key in known:
                ids.append(known[key])
                continue
            entry_id = unsure.get(key) if key is not None else None
            entry_id = entry_id or self._ids.next()
            if key is not None:
                known[key] = entry_id
            fresh.append((entry_id, message))
            ids.append(entry_id)
        await self._refuse_if_full(stream, len(fresh))
        reserved = {m.dedupe_key: _SENDING + i for i, m in fresh if m.dedupe_key is not None}
        if reserved:  # written ahead: a publisher killed before the confirms leaves them marked
            await self._dedupe.remember(stream, reserved, ttl_s)

        async def send(entry_id: str, message: Message) -> None:
            await exchange.publish(
                aio_pika.Message(
                    orjson.dumps(dict(message.data)),
                    message_id=entry_id,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key="",
                mandatory=False,
            )
            if message.dedupe_key is not None:  # at once, each: a kill mid-batch forgets none
                await self._dedupe.remember(stream, {message.dedupe_key: entry_id}, ttl_s)

        with _boundary("publish"):
            try:
                await asyncio.gather(*(send(entry_id, message) for entry_id, message in fresh))
            except DeliveryError as refused:
                bound = self._bound.for_stream(stream) or 0
                raise StreamFull(stream, bound, bound) from refused
        return ids

    async def _known(
        self, stream: str, keys: Sequence[str], ttl_s: int
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The ids already published under ``keys``, and the ids of keys whose publisher died
        between sending and the confirm, not found in the stream's log (to send again)."""
        known = await self._dedupe.known(stream, keys)
        marked = {k: v.removeprefix(_SENDING) for k, v in known.items() if v.startswith(_SENDING)}
        if not marked:
            return known, {}
        landed = await self._in_log(stream, set(marked.values()))
        confirmed = {key: entry_id for key, entry_id in marked.items() if entry_id in landed}
        if confirmed:
            await self._dedupe.remember(stream, confirmed, ttl_s)
        known = {
            k: confirmed.get(k, v) for k, v in known.items() if k not in marked or k in confirmed
        }
        return known, {k: i for k, i in marked.items() if i not in landed}

    async def _in_log(self, stream: str, ids: set[str]) -> set[str]:
        """Which of ``ids`` the stream's log holds: read from a little before the oldest until
        all are found, the log passes the newest by ``_TAIL_SKIP_ALLOWANCE_MS`` or ends."""
        newest_ms = max(entry_id_ms(i) for i in ids) + _TAIL_SKIP_ALLOWANCE_MS
        start = datetime.datetime.fromtimestamp(
            min(entry_id_ms(i) for i in ids) / 1000 - 2, tz=datetime.UTC
        )
        found: set[str] = set()
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        with _boundary("log lookup"):
            channel = await self._connection.channel()
        try:
            with _boundary("log lookup"):
                await channel.set_qos(prefetch_count=_TAIL_PREFETCH)
                queue = await channel.declare_queue(
                    log_queue_name(stream), durable=True, arguments=self._log_arguments(stream)
                )
                await queue.consume(inbox.put, arguments={"x-stream-offset": start})
                while found != ids:
                    try:
                        message = await asyncio.wait_for(inbox.get(), _LOG_END_S)
                    except TimeoutError:  # the end of the log
                        break
                    await message.ack()
                    entry = _entry(message)
                    if entry.id in ids:
                        found.add(entry.id)
                    elif entry.published_ms > newest_ms:
                        break
        finally:
            with contextlib.suppress(AMQPError, ConnectionError, RuntimeError):
                await channel.close()
        return found

    async def _refuse_if_full(self, stream: str, adding: int) -> None:
        bound = self._bound.for_stream(stream)
        if bound is None or adding == 0:
            return
        for group in self._groups.get(stream, ()):
            ready = await self._ready(stream, group)
            if ready + adding > bound:
                raise StreamFull(stream, ready, bound)

    async def create_group(self, stream: str, group: str) -> None:
        exchange = await self._exchange(stream)
        queue = await self._group_queue(self._channel, stream, group)
        with _boundary("bind"):
            await queue.bind(exchange)
        self._groups.setdefault(stream, set()).add(group)

    def consumer(
        self, stream: str, group: str, name: str, *, reclaim_idle_ms: int = 30_000
    ) -> RabbitMQConsumer:
        unacked = self._unacked.setdefault((stream, group), set())
        return RabbitMQConsumer(self, self._connection, stream, group, unacked)

    async def group_info(self, stream: str, group: str) -> GroupInfo:
        ready = await self._ready(stream, group)
        return GroupInfo(lag=ready, pending=len(self._unacked.get((stream, group), ())))

    async def length(self, stream: str) -> int:
        groups = self._groups.get(stream, set())
        return max([await self._ready(stream, group) for group in groups], default=0)

    async def tail(self, stream: str, after: str | None) -> AsyncIterator[Entry]:
        await self._exchange(stream)
        offset: Any
        if after is None:
            offset = "next"
        elif after == "0":
            offset = "first"
        else:
            offset = datetime.datetime.fromtimestamp(entry_id_ms(after) / 1000 - 2, tz=datetime.UTC)
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        with _boundary("tail"):
            channel = await self._connection.channel()
        try:
            with _boundary("tail"):
                await channel.set_qos(prefetch_count=_TAIL_PREFETCH)
                queue = await channel.declare_queue(
                    log_queue_name(stream), durable=True, arguments=self._log_arguments(stream)
                )
                await queue.consume(inbox.put, arguments={"x-stream-offset": offset})
            passed_after = after is None or after == "0"
            while True:
                message = await inbox.get()
                await message.ack()
                entry = _entry(message)
                if not passed_after:
                    if entry.id == after:
                        passed_after = True
                        continue
                    # the id is gone from the log: deliver what is clearly later
                    assert after is not None
                    if entry.published_ms <= entry_id_ms(after) + _TAIL_SKIP_ALLOWANCE_MS:
                        continue
                    passed_after = True
                yield Entry(entry.id, entry.data)
        finally:
            with contextlib.suppress(AMQPError, ConnectionError, RuntimeError):
                await channel.close()

    async def trim_acknowledged(self, stream: str) -> int:
        return 0  # group queues drop what is acknowledged; the log keeps its own retention

    async def delete(self, *streams: str) -> None:
        with _boundary("delete"):
            for stream in streams:
                for group in self._groups.pop(stream, set()):
                    await self._channel.queue_delete(group_queue_name(stream, group))
                await self._channel.queue_delete(log_queue_name(stream))
                await self._channel.exchange_delete(exchange_name(stream))
                self._exchanges.pop(stream, None)
                await self._dedupe.forget(stream)

    async def aclose(self) -> None:
        with contextlib.suppress(AMQPError, ConnectionError, RuntimeError):
            await self._connection.close()
        close_store = getattr(self._dedupe, "aclose", None)
        if close_store is not None:
            await close_store()


class RabbitMQConsumer:
    """One channel consuming a group's queue; closing it gives unacknowledged entries back."""

    def __init__(
        self,
        broker: RabbitMQBroker,
        connection: AbstractRobustConnection,
        stream: str,
        group: str,
        unacked: set[str],
    ) -> None:
        self._broker = broker
        self._connection = connection
        self._stream = stream
        self._group = group
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._in_hand: dict[str, AbstractIncomingMessage] = {}
        self._unacked = unacked
        self._channel: AbstractChannel | None = None

    async def _start(self, count: int) -> None:
        with _boundary("consume"):
            self._channel = await self._connection.channel()
            await self._channel.set_qos(prefetch_count=max(2 * count, 10))
            queue = await self._broker._group_queue(self._channel, self._stream, self._group)
            await queue.consume(self._deliver)

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        self._unacked.add(str(message.message_id))
        await self._inbox.put(message)

    def _take(self, message: AbstractIncomingMessage) -> Entry:
        entry = _entry(message)
        self._in_hand[entry.id] = message
        return entry

    async def read(self, count: int, block_ms: int) -> list[Entry]:
        if self._channel is None:
            await self._start(count)
        taken: list[Entry] = []
        if self._inbox.empty() and block_ms > 0:
            with contextlib.suppress(TimeoutError):
                taken.append(self._take(await asyncio.wait_for(self._inbox.get(), block_ms / 1000)))
        while len(taken) < count and not self._inbox.empty():
            taken.append(self._take(self._inbox.get_nowait()))
        return taken

    async def ack(self, ids: Sequence[str]) -> None:
        with _boundary("ack"):
            for entry_id in ids:
                message = self._in_hand.pop(entry_id, None)
                if message is not None:
                    await message.ack()
                    self._unacked.discard(entry_id)

    async def retry(self, ids: Sequence[str]) -> None:
        with _boundary("nack"):
            for entry_id in ids:
                message = self._in_hand.pop(entry_id, None)
                if message is not None:
                    await message.nack(requeue=True)
                    self._unacked.discard(entry_id)

    async def aclose(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(AMQPError, ConnectionError, RuntimeError):
                await self._channel.close()
            self._channel = None
        for entry_id in self._in_hand:
            self._unacked.discard(entry_id)
        self._in_hand.clear()
        while not self._inbox.empty():
            self._unacked.discard(str(self._inbox.get_nowait().message_id))
