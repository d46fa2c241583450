"""The worker loop: micro-batches in, results out, nothing lost.

For each pipeline, each consumer repeats:

1. **collect** a batch: read up to ``max_batch`` entries; once the first is in, keep reading
   until the batch is full or ``window_ms`` after the first entry was *published* (so an entry
   waits at most its window, however long it sat in the stream);
2. dead-letter entries already delivered more than ``max_deliveries`` times (a worker died on
   each of them), acknowledge the ones the filter skips;
3. call the handler with the rest; if it raises, call it again one entry at a time, so one
   poison entry does not sink its batch: an entry that fails is given back to the group, or
   dead-lettered with its error once it failed ``max_deliveries`` times;
4. publish results with the source entry's id as dedupe key (a redelivered entry never yields a
   second result), *then* acknowledge. A crash anywhere before the acknowledgement means the
   entry is delivered again: at-least-once processing, exactly-once results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from nearline.worker.broker import (
    Broker,
    BrokerError,
    Consumer,
    Entry,
    Message,
    publish_patiently,
)
from nearline.worker.metrics import WorkerMetrics
from nearline.worker.pipeline import Pipeline, Result, call_handler

logger = logging.getLogger("nearline.worker.worker")

_POLL_MS = 500  # how often an idle consumer checks whether it should stop
_BROKER_RETRY_S = 1.0
_LATENCY_SAMPLES_PER_BATCH = 100


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    consumer_name: str = ""
    reclaim_idle_ms: int = 30_000
    housekeeping_every_s: float = 1.0  # lag gauges and trimming of acknowledged entries
    trim_acknowledged: bool = True


@dataclass(slots=True)
class _Outcome:
    done: list[str]
    results: list[Message]
    dead: list[Message]
    retry: list[str]
    latency_entries: list[Entry]


class Worker:
    """Runs pipelines against one broker until ``stop()`` (or cancellation)."""

    def __init__(
        self,
        broker: Broker,
        pipelines: Sequence[Pipeline],
        options: WorkerOptions | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        names = [p.name for p in pipelines]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline names must be unique, got {names}")
        self.broker = broker
        self.pipelines = list(pipelines)
        self.options = options or WorkerOptions()
        self.metrics = metrics or WorkerMetrics()
        self._consumer_name = self.options.consumer_name or default_consumer_name()
        self._stopping = asyncio.Event()
        self.started = asyncio.Event()

    def stop(self) -> None:
        """Finish the batches in hand, then return from ``run``."""
        self._stopping.set()

    @property
    def stopping(self) -> asyncio.Event:
        """Set once ``stop()`` was called (e.g. to end the worker's push subscriptions)."""
        return self._stopping

    async def run(self) -> None:
        for pipeline in self.pipelines:
            await self.broker.create_group(pipeline.source, pipeline.group_name)
        async with asyncio.TaskGroup() as tasks:
            for pipeline in self.pipelines:
                for index in range(pipeline.concurrency):
                    name = f"{self._consumer_name}-{pipeline.name}-{index}"
                    tasks.create_task(self._consume(pipeline, name))
            tasks.create_task(self._housekeeping())
            self.started.set()
        logger.info("worker %s stopped", self._consumer_name)

    async def _consume(self, pipeline: Pipeline, name: str) -> None:
        consumer = self.broker.consumer(
            pipeline.source,
            pipeline.group_name,
            name,
            reclaim_idle_ms=self.options.reclaim_idle_ms,
        )
        try:
            while not self._stopping.is_set():
                try:
                    batch = await collect_batch(consumer, pipeline)
                    if batch:
                        await self._process(consumer, pipeline, batch)
                except BrokerError as exc:
                    logger.warning(
                        "pipeline %s: %s; retrying in %gs", pipeline.name, exc, _BROKER_RETRY_S
                    )
                    await asyncio.sleep(_BROKER_RETRY_S)
        finally:
            await consumer.aclose()

    async def _process(self, consumer: Consumer, pipeline: Pipeline, batch: list[Entry]) -> None:
        started = time.perf_counter()
        outcome = await handle_batch(pipeline, batch, self.metrics)
        if pipeline.results is not None and outcome.results:
            await publish_patiently(
                self.broker, pipeline.results, outcome.results, stop=self._stopping
            )
        if outcome.dead:
            await publish_patiently(
                self.broker, pipeline.dead_letter_stream, outcome.dead, stop=self._stopping
            )
        await consumer.ack(outcome.done)
        if outcome.retry:
            await consumer.retry(outcome.retry)
        self.metrics.batch_seconds.labels(pipeline.name).observe(time.perf_counter() - started)
        now_ms = time.time() * 1000
        handled = outcome.latency_entries
        # observing a histogram costs microseconds: a big batch is sampled, evenly
        for entry in handled[:: max(1, len(handled) // _LATENCY_SAMPLES_PER_BATCH)]:
            self.metrics.record_latency(pipeline.name, now_ms - entry.published_ms)

    async def _housekeeping(self) -> None:
        while not self._stopping.is_set():
            for pipeline in self.pipelines:
                try:
                    info = await self.broker.group_info(pipeline.source, pipeline.group_name)
                    self.metrics.lag.labels(pipeline.source, pipeline.group_name).set(info.lag)
                    self.metrics.pending.labels(pipeline.source, pipeline.group_name).set(
                        info.pending
                    )
                    if self.options.trim_acknowledged:
                        await self.broker.trim_acknowledged(pipeline.source)
                except BrokerError as exc:
                    logger.warning("housekeeping of %s: %s", pipeline.name, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.options.housekeeping_every_s)


async def collect_batch(consumer: Consumer, pipeline: Pipeline) -> list[Entry]:
    """Up to ``max_batch`` entries, waiting no longer than the first one's window."""
    batch = await consumer.read(pipeline.max_batch, block_ms=_POLL_MS)
    if not batch:
        return batch
    window_ends_ms = batch[0].published_ms + pipeline.window_ms
    while len(batch) < pipeline.max_batch:
        remaining_ms = window_ends_ms - time.time() * 1000
        if remaining_ms < 1:
            break
        batch += await consumer.read(pipeline.max_batch - len(batch), block_ms=int(remaining_ms))
    return batch


async def handle_batch(pipeline: Pipeline, batch: list[Entry], metrics: WorkerMetrics) -> _Outcome:
    """Decide each entry's fate: result, skipped, retried or dead-lettered."""
    outcome = _Outcome(done=[], results=[], dead=[], retry=[], latency_entries=[])
    count = metrics.events.labels
    wanted: list[Entry] = []
    for entry in batch:
        if entry.deliveries > pipeline.max_deliveries:
            outcome.dead.append(
                dead_letter(
                    pipeline,
                    entry,
                    f"the worker stopped while handling this entry {entry.deliveries - 1} times",
                )
            )
            outcome.done.append(entry.id)
            count(pipeline.name, "dead_lettered").inc()
            continue
        try:
            skip = pipeline.filter is not None and not pipeline.filter(entry)
        except Exception as exc:  # noqa: BLE001 - a filter failure is the entry's failure
            _fail(pipeline, entry, exc, outcome, metrics)
            continue
        if skip:
            outcome.done.append(entry.id)
            count(pipeline.name, "skipped").inc()
        else:
            wanted.append(entry)
    if not wanted:
        return outcome

    metrics.batch_size.labels(pipeline.name).observe(len(wanted))
    started = time.perf_counter()
    try:
        results = await call_handler(pipeline.handler, wanted)
    except Exception as exc:  # noqa: BLE001 - any handler failure: retry entries one by one
        logger.info(
            "pipeline %s: batch of %d failed (%r); retrying one by one",
            pipeline.name,
            len(wanted),
            exc,
        )
        await _handle_one_by_one(pipeline, wanted, outcome, metrics)
    else:
        _accept(pipeline, wanted, results, outcome, metrics)
    metrics.handler_seconds.labels(pipeline.name).observe(time.perf_counter() - started)
    return outcome


async def _handle_one_by_one(
    pipeline: Pipeline, entries: list[Entry], outcome: _Outcome, metrics: WorkerMetrics
) -> None:
    for entry in entries:
        try:
            results = await call_handler(pipeline.handler, [entry])
        except Exception as exc:  # noqa: BLE001 - the error is kept with the entry
            _fail(pipeline, entry, exc, outcome, metrics)
        else:
            _accept(pipeline, [entry], results, outcome, metrics)


def _fail(
    pipeline: Pipeline, entry: Entry, error: Exception, outcome: _Outcome, metrics: WorkerMetrics
) -> None:
    """Give the entry back, or dead-letter it with ``error`` after its last allowed try."""
    if entry.deliveries >= pipeline.max_deliveries:
        outcome.dead.append(dead_letter(pipeline, entry, repr(error)))
        outcome.done.append(entry.id)
        metrics.events.labels(pipeline.name, "dead_lettered").inc()
    else:
        outcome.retry.append(entry.id)
        metrics.events.labels(pipeline.name, "failed").inc()


def _accept(
    pipeline: Pipeline,
    entries: list[Entry],
    results: list[Result],
    outcome: _Outcome,
    metrics: WorkerMetrics,
) -> None:
    for entry, result in zip(entries, results, strict=True):
        if result is not None:
            outcome.results.append(
                Message({"source_id": entry.id, **result}, dedupe_key=pipeline.result_key(entry))
            )
        outcome.done.append(entry.id)
        outcome.latency_entries.append(entry)
    metrics.events.labels(pipeline.name, "processed").inc(len(entries))


def dead_letter(pipeline: Pipeline, entry: Entry, error: str) -> Message:
    return Message(
        {
            "source_id": entry.id,
            "source": pipeline.source,
            "pipeline": pipeline.name,
            "deliveries": entry.deliveries,
            "error": error,
            "data": dict(entry.data),
        },
        dedupe_key=pipeline.result_key(entry),
    )
