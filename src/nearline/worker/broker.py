"""The one contract every event broker implements: streams, consumer groups, results.

A *stream* is an append-only log of entries. A *consumer group* reads a stream at its own
pace; the consumers of one group share its entries (each entry goes to one consumer). An
entry a consumer read stays *pending* until it is acknowledged; if the consumer dies, or gives
the entry back, another consumer of the group receives it again with ``deliveries`` one
higher. Three brokers implement this contract and pass the same behavioural tests
(``tests/stream/test_broker_contract.py``): ``MemoryBroker`` (in-process, the embedded
default), ``RedisStreamsBroker`` (production default) and ``RabbitMQBroker``.

Entry ids have the form ``"<unix ms>-<sequence>"`` on every broker, so the time an entry was
published is known wherever it travels (end-to-end latency is measured from it).

An entry whose payload is not a JSON object (a foreign producer, a corrupted write) is still
delivered, with ``decode_error`` saying why and ``data = {"raw": <the payload as text>}``, so a
consumer can acknowledge or dead-letter it instead of choking on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import orjson

EntryData = Mapping[str, Any]

logger = logging.getLogger("nearline.worker")


@dataclass(slots=True)
class Entry:
    """One event read from a stream: its id, its JSON-able data and how often it was delivered.

    Treat it as immutable. (Not ``frozen``: a frozen dataclass costs three times as much to
    create, and the worker creates one per event.)
    """

    id: str
    data: EntryData
    deliveries: int = 1
    decode_error: str | None = None  # set when the payload was not a JSON object

    @property
    def published_ms(self) -> int:
        """When the entry was published (unix ms), read from its id."""
        return entry_id_ms(self.id)


def decode_payload(payload: bytes) -> tuple[dict[str, Any], str | None]:
    """An entry's data from its JSON payload, or ``({"raw": text}, why)`` if it is not a JSON
    object."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return {"raw": payload.decode("utf-8", "replace")}, f"the payload is not JSON: {exc}"
    if not isinstance(data, dict):
        why = f"the payload is a JSON {type(data).__name__}, not an object"
        return {"raw": payload.decode("utf-8", "replace")}, why
    return data, None


@dataclass(slots=True)
class Message:
    """Something to publish. With ``dedupe_key``, publishing it twice stores it once."""

    data: EntryData
    dedupe_key: str | None = None


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """Where a consumer group stands: entries not yet delivered, entries delivered not acked."""

    lag: int
    pending: int


DEFAULT_DEDUPE_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Retention:
    """How much of a stream is kept: the oldest entries past ``max_len``, or older than
    ``max_age_s``, are dropped as new ones are written. A retained stream never refuses a
    publish, and its dedupe keys expire after ``max_age_s``. For streams nobody must read
    completely (a worker's results, read by push subscribers); Redis trims approximately
    (whole nodes of ~100 entries)."""

    max_len: int | None = None
    max_age_s: int | None = None


@dataclass(frozen=True, slots=True)
class StreamBound:
    """Per-stream length bounds and retention.

    A publish that would pass a bound raises ``StreamFull``. ``default`` bounds every stream
    that is not ``retained`` and has no bound of its own in ``per_stream``; a ``retained``
    stream is trimmed instead (``Retention``). Dedupe keys live ``dedupe_ttl_s``, those of a
    retained stream with a ``max_age_s`` as long as its entries.
    """

    default: int | None = None
    per_stream: Mapping[str, int] = field(default_factory=dict)
    retained: Mapping[str, Retention] = field(default_factory=dict)
    dedupe_ttl_s: int = DEFAULT_DEDUPE_TTL_S

    def for_stream(self, stream: str) -> int | None:
        if stream in self.per_stream:
            return self.per_stream[stream]
        return None if stream in self.retained else self.default

    def retention(self, stream: str) -> Retention | None:
        return self.retained.get(stream)

    def dedupe_ttl(self, stream: str) -> int:
        retention = self.retained.get(stream)
        if retention is not None and retention.max_age_s is not None:
            return retention.max_age_s
        return self.dedupe_ttl_s


class BrokerError(Exception):
    """A broker operation failed (connection lost, server error); safe to retry."""


class StreamFull(BrokerError):
    """The stream is at its bound: the producer must slow down and retry later.

    Nothing was written (on RabbitMQ, nothing was written to the full group's queue).
    """

    def __init__(self, stream: str, length: int, bound: int, retry_after_s: float = 0.1) -> None:
        super().__init__(
            f"stream {stream!r} holds {length} entries, at its bound of {bound}; "
            f"retry in {retry_after_s:g} s"
        )
        self.stream = stream
        self.length = length
        self.bound = bound
        self.retry_after_s = retry_after_s


class NoReaders(BrokerError):
    """No consumer group reads the stream: nothing was written (``on_unread="raise"``)."""

    def __init__(self, stream: str) -> None:
        super().__init__(
            f"no consumer group reads stream {stream!r}: nothing would process what is "
            "published there (a typo in the stream name? the worker not started yet, or its "
            "group lost in a Redis restart?)"
        )
        self.stream = stream


def entry_id_ms(entry_id: str) -> int:
    milliseconds, _, _ = entry_id.partition("-")
    return int(milliseconds)


def entry_id_key(entry_id: str) -> tuple[int, int]:
    """Sort key for ids of the form ``"<ms>-<seq>"``."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


class EntryIds:
    """Increasing ``"<ms>-<seq>"`` entry ids from one producer, Redis Streams style: ``seq``
    restarts at ``first_seq`` each millisecond (a random ``first_seq`` per producer keeps two
    producers writing in the same millisecond apart)."""

    def __init__(self, first_seq: int = 0) -> None:
        self._first_seq = first_seq
        self._last_ms = 0
        self._counter = 0

    def next(self) -> str:
        now_ms = int(time.time() * 1000)
        if now_ms > self._last_ms:
            self._last_ms, self._counter = now_ms, 0
        else:
            self._counter += 1
        return f"{self._last_ms}-{self._first_seq + self._counter}"


@runtime_checkable
class Consumer(Protocol):
    """One named member of a consumer group."""

    async def read(self, count: int, block_ms: int) -> list[Entry]:
        """Up to ``count`` entries for this consumer, waiting at most ``block_ms`` for the first.

        Entries given back (``retry``) or left pending by a dead consumer for longer than the
        group's reclaim timeout come first, then new entries. ``[]`` when nothing came.
        """
        ...

    async def ack(self, ids: Sequence[str]) -> None:
        """The entries are done: the group will not deliver them again."""
        ...

    async def retry(self, ids: Sequence[str]) -> None:
        """Give the entries back: the group delivers them again, ``deliveries`` one higher."""
        ...

    async def aclose(self) -> None:
        """Stop reading. Entries read and not acknowledged stay owed to the group."""
        ...


@runtime_checkable
class Leasing(Protocol):
    """Optional for a ``Consumer``: brokers that reclaim entries idle for ``reclaim_idle_ms``
    (in-process, Redis Streams) let a live consumer extend its claim on the entries in hand,
    so a batch slower than ``reclaim_idle_ms`` is never taken over. The worker calls it every
    third of ``reclaim_idle_ms`` while it holds entries. Brokers that only give entries back
    when their consumer dies (RabbitMQ, Kafka) need not implement it."""

    async def extend(self, ids: Sequence[str]) -> None:
        """Reset the idle time of those of ``ids`` this consumer still holds (not a delivery)."""
        ...


@runtime_checkable
class ForgetsConsumers(Protocol):
    """Optional for a ``Broker`` whose groups remember every consumer that ever read (Redis
    Streams): removing the ones gone for good keeps the group from filling with the dead."""

    async def remove_idle_consumers(
        self, stream: str, group: str, idle_ms: int, keep: Sequence[str] = ()
    ) -> list[str]:
        """Remove the consumers of ``group`` idle longer than ``idle_ms`` that hold no entries
        (never those named in ``keep``), atomically; returns their names."""
        ...


@runtime_checkable
class KnowsReaders(Protocol):
    """Optional for a ``Broker`` that can count the consumer groups of a stream (in-process,
    Redis Streams; AMQP cannot list an exchange's queues), for ``publish_patiently`` to tell a
    producer that nobody reads what it publishes."""

    async def readers(self, stream: str) -> int:
        """How many consumer groups read ``stream`` now (0 when it does not exist)."""
        ...


@runtime_checkable
class Broker(Protocol):
    """Streams with consumer groups, idempotent publishing, bounds and tailing."""

    async def publish(self, stream: str, messages: Sequence[Message]) -> list[str]:
        """Append ``messages`` in order and return their entry ids.

        A message whose ``dedupe_key`` was already published to ``stream`` is not appended
        again; its original id is returned. Raises ``StreamFull`` when the stream's bound
        would be passed (then nothing is appended).
        """
        ...

    async def create_group(self, stream: str, group: str) -> None:
        """Create ``group`` (idempotent). A new group receives every entry published after."""
        ...

    def consumer(
        self, stream: str, group: str, name: str, *, reclaim_idle_ms: int = 30_000
    ) -> Consumer:
        """A consumer of an existing group, reclaiming entries idle for ``reclaim_idle_ms``."""
        ...

    async def group_info(self, stream: str, group: str) -> GroupInfo: ...

    async def length(self, stream: str) -> int:
        """Entries the stream holds now (RabbitMQ: the longest group backlog)."""
        ...

    def tail(self, stream: str, after: str | None) -> AsyncIterator[Entry]:
        """Every entry after id ``after`` (``"0"``: from the start, ``None``: only new), forever.

        For pushing results to clients and resuming them after a reconnect.
        """
        ...

    async def trim_acknowledged(self, stream: str) -> int:
        """Drop entries every group has acknowledged; returns how many were dropped."""
        ...

    async def delete(self, *streams: str) -> None:
        """Remove the streams with their groups and dedupe keys (tests, demos)."""
        ...

    async def aclose(self) -> None: ...


UnreadPolicy = Literal["warn", "raise", "ignore"]
_UNREAD_WARN_EVERY_S = 60.0


class _UnreadWarnings:
    """When each stream was last reported as read by no group (once a minute per stream)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def due(self, stream: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(stream, -_UNREAD_WARN_EVERY_S) < _UNREAD_WARN_EVERY_S:
            return False
        self._last[stream] = now
        return True

    def clear(self, stream: str) -> None:
        self._last.pop(stream, None)


_unread_warnings = _UnreadWarnings()


async def check_readers(broker: Broker, stream: str, on_unread: UnreadPolicy) -> None:
    """Tell a producer that no consumer group reads ``stream``: a warning (once a minute per
    stream) or ``NoReaders``. A broker that cannot count groups (``KnowsReaders``) is not
    checked."""
    if on_unread == "ignore" or not isinstance(broker, KnowsReaders):
        return
    if await broker.readers(stream) > 0:
        _unread_warnings.clear(stream)
        return
    if on_unread == "raise":
        raise NoReaders(stream)
    if _unread_warnings.due(stream):
        logger.warning("publishing anyway: %s", NoReaders(stream))


async def publish_patiently(
    broker: Broker,
    stream: str,
    messages: Sequence[Message],
    *,
    stop: asyncio.Event | None = None,
    max_wait_s: float | None = None,
    on_unread: UnreadPolicy = "warn",
) -> list[str]:
    """Publish, waiting while ``stream`` is full: how a producer obeys backpressure.

    Re-raises ``StreamFull`` once ``stop`` is set or after ``max_wait_s`` of waiting. If no
    consumer group reads ``stream`` (``check_readers``), ``on_unread`` says what happens:
    ``"warn"`` logs a warning (once a minute per stream) and publishes, ``"raise"`` raises
    ``NoReaders`` and publishes nothing, ``"ignore"`` does not check.
    """
    await check_readers(broker, stream, on_unread)
    waited = 0.0
    while True:
        try:
            return await broker.publish(stream, messages)
        except StreamFull as full:
            out_of_time = max_wait_s is not None and waited + full.retry_after_s > max_wait_s
            if out_of_time or (stop is not None and stop.is_set()):
                raise
            logger.debug("%s; waiting", full)
            await asyncio.sleep(full.retry_after_s)
            waited += full.retry_after_s


async def publish_one(broker: Broker, stream: str, data: EntryData) -> str:
    (entry_id,) = await broker.publish(stream, [Message(data)])
    return entry_id
