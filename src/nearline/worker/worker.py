"""The worker loop: micro-batches in, results out, nothing lost.

For each pipeline, each consumer repeats:

1. **collect** a batch: read up to ``max_batch`` entries; once the first is in, keep reading
   until the batch is full or ``window_ms`` after the first entry was *published* (so an entry
   waits at most its window, however long it sat in the stream);
2. dead-letter entries already delivered more than ``max_deliveries`` times (a worker died on
   each of them), acknowledge the ones the filter skips;
3. call the handler with the rest, within ``handler_timeout_ms``; if it raises or passes the
   deadline, call it again one entry at a time, so one poison entry does not sink its batch:
   an entry that fails is given back to the group, or dead-lettered with its error once it
   failed ``max_deliveries`` times (``batch.py``);
4. publish results with the source entry's id as dedupe key (a redelivered entry never yields a
   second result), *then* acknowledge. A crash anywhere before the acknowledgement means the
   entry is delivered again: at-least-once processing, exactly-once results.

No bound makes the worker wait forever on its own output: a results or dead-letter stream that
stays full for ``output_full_wait_s`` has the batch given back (logged, counted). A task of the
worker that fails unexpectedly stops the whole worker and ``run`` raises ``WorkerCrashed``;
after ``stop()``, batches in hand get ``shutdown_grace_s`` to finish, then are abandoned
(their entries given back; a hung sync handler's thread is left behind, see ``runner.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from nearline.worker.batch import Outcome, dead, handle_batch
from nearline.worker.broker import (
    Broker,
    BrokerError,
    Consumer,
    Entry,
    ForgetsConsumers,
    Leasing,
    Message,
    StreamFull,
)
from nearline.worker.metrics import WorkerMetrics
from nearline.worker.pipeline import Pipeline
from nearline.worker.runner import HandlerRunner

logger = logging.getLogger("nearline.worker.worker")

_POLL_MS = 500  # how often an idle consumer checks whether it should stop
_BROKER_RETRY_S = 1.0
_LATENCY_SAMPLES_PER_BATCH = 100
_GIVE_BACK_S = 1.0  # at most this long to give entries back when a batch is abandoned


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerCrashed(RuntimeError):
    """A task of the worker failed with an unexpected error (logged); the worker stopped."""


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    consumer_name: str = ""
    reclaim_idle_ms: int = 30_000
    housekeeping_every_s: float = 1.0  # lag gauges and trimming of acknowledged entries
    trim_acknowledged: bool = True
    shutdown_grace_s: float = 10.0  # after stop(): how long batches in hand may take
    output_full_wait_s: float = 30.0  # a full results stream: wait, then give the batch back
    # a consumer of a group idle this long and holding nothing is removed (None: never)
    dead_consumer_retention_s: float | None = 3600.0


class _Lease:
    """Keeps a consumer's claim on the entries in hand (``Leasing``), extended every third of
    ``reclaim_idle_ms``, so a batch slower than that is never taken over by a live consumer."""

    def __init__(self, consumer: Consumer, reclaim_idle_ms: int, pipeline: str) -> None:
        self.held: list[str] = []
        self._consumer = consumer if isinstance(consumer, Leasing) else None
        self._every_s = max(0.01, reclaim_idle_ms / 3000)
        self._pipeline = pipeline

    def release(self) -> None:
        self.held = []

    async def keep(self) -> None:
        if self._consumer is None:
            return
        while True:
            await asyncio.sleep(self._every_s)
            if not self.held:
                continue
            try:
                await self._consumer.extend(list(self.held))
            except BrokerError as exc:
                logger.warning("pipeline %s: extending the lease failed: %s", self._pipeline, exc)


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
        self._crash: tuple[str, BaseException] | None = None
        self._runners: list[HandlerRunner] = []
        self.started = asyncio.Event()
        self.abandoned = 0  # tasks still busy when the grace ran out (their batches given back)

    def stop(self) -> None:
        """Finish the batches in hand (for ``shutdown_grace_s`` at most), then return from
        ``run``."""
        self._stopping.set()

    @property
    def stopping(self) -> asyncio.Event:
        """Set once ``stop()`` was called (e.g. to end the worker's push subscriptions)."""
        return self._stopping

    @property
    def hung_handler_threads(self) -> int:
        """Threads of sync handlers abandoned at their deadline whose call has not returned."""
        return sum(runner.hung_threads for runner in self._runners)

    async def run(self) -> None:
        for pipeline in self.pipelines:
            await self.broker.create_group(pipeline.source, pipeline.group_name)
        tasks: set[asyncio.Task[None]] = set()
        for pipeline in self.pipelines:
            for index in range(pipeline.concurrency):
                name = self._member(pipeline, index)
                tasks.add(asyncio.create_task(self._guard(name, self._consume(pipeline, name))))
        tasks.add(asyncio.create_task(self._guard("housekeeping", self._housekeeping())))
        self.started.set()
        try:
            await self._stopping.wait()
            await self._wind_down(tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._crash is not None:
            name, error = self._crash
            raise WorkerCrashed(f"worker task {name} failed: {error!r}") from error
        logger.info("worker %s stopped", self._consumer_name)

    def _member(self, pipeline: Pipeline, index: int) -> str:
        return f"{self._consumer_name}-{pipeline.name}-{index}"

    async def _guard(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Run one task of the worker; an unexpected error stops the whole worker, loudly."""
        try:
            await work
        except Exception as exc:
            logger.exception("worker task %s failed; stopping the worker", name)
            if self._crash is None:
                self._crash = (name, exc)
            self.stop()

    def _lease_ended(self, name: str, task: asyncio.Task[None]) -> None:
        """A lease keeper ends only when cancelled; an error in it stops the worker, loudly."""
        error = None if task.cancelled() else task.exception()
        if error is not None:
            logger.error("worker task %s failed; stopping the worker", name, exc_info=error)
            if self._crash is None:
                self._crash = (name, error)
            self.stop()

    async def _wind_down(self, tasks: set[asyncio.Task[None]]) -> None:
        """Wait for the tasks to finish their batches, ``shutdown_grace_s`` at most."""
        _, pending = await asyncio.wait(tasks, timeout=self.options.shutdown_grace_s)
        if pending:
            self.abandoned = len(pending)
            logger.warning(
                "worker %s: %d task(s) still busy after the %gs grace; abandoning their "
                "batches (entries given back, redelivered)",
                self._consumer_name,
                len(pending),
                self.options.shutdown_grace_s,
            )
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=2 * _GIVE_BACK_S)

    async def _consume(self, pipeline: Pipeline, name: str) -> None:
        consumer = self.broker.consumer(
            pipeline.source,
            pipeline.group_name,
            name,
            reclaim_idle_ms=self.options.reclaim_idle_ms,
        )
        runner = HandlerRunner(pipeline.handler, pipeline.handler_timeout_ms, name)
        self._runners.append(runner)
        lease = _Lease(consumer, self.options.reclaim_idle_ms, pipeline.name)
        keeping = asyncio.create_task(lease.keep())
        keeping.add_done_callback(lambda task: self._lease_ended(f"{name}-lease", task))
        in_hand: list[Entry] = []
        try:
            while not self._stopping.is_set():
                try:
                    in_hand = await collect_batch(consumer, pipeline, lease.held)
                    if in_hand:
                        await self._process(consumer, pipeline, runner, in_hand, lease)
                    in_hand = []
                except BrokerError as exc:
                    lease.release()
                    logger.warning(
                        "pipeline %s: %s; retrying in %gs", pipeline.name, exc, _BROKER_RETRY_S
                    )
                    await self._pause(_BROKER_RETRY_S)
        except asyncio.CancelledError:
            if in_hand:  # abandoned at shutdown: give the entries back for another consumer
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.retry([e.id for e in in_hand]), _GIVE_BACK_S)
            raise
        finally:
            keeping.cancel()
            runner.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.aclose(), _GIVE_BACK_S)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the worker is told to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _process(
        self,
        consumer: Consumer,
        pipeline: Pipeline,
        runner: HandlerRunner,
        batch: list[Entry],
        lease: _Lease,
    ) -> None:
        started = time.perf_counter()
        outcome = await handle_batch(pipeline, batch, self.metrics, runner, self._stopping)
        results = pipeline.results
        if (
            results is not None
            and outcome.results
            and not await self._publish_output(pipeline, results, outcome.results)
        ):
            self._results_refused(pipeline, outcome)
        dead_letters = pipeline.dead_letter_stream
        if outcome.dead and not await self._publish_output(pipeline, dead_letters, outcome.dead):
            refused = {str(letter.data["source_id"]) for letter in outcome.dead}
            outcome.done = [i for i in outcome.done if i not in refused]
            outcome.retry += sorted(refused)
        lease.release()  # from here on they are acknowledged or given back (to be reclaimed)
        await consumer.ack(outcome.done)
        if outcome.retry:
            await consumer.retry(outcome.retry)
        self.metrics.batch_seconds.labels(pipeline.name).observe(time.perf_counter() - started)
        now_ms = time.time() * 1000
        handled = outcome.handled
        self.metrics.events.labels(pipeline.name, "processed").inc(len(handled))
        # observing a histogram costs microseconds: a big batch is sampled, evenly
        for entry in handled[:: max(1, len(handled) // _LATENCY_SAMPLES_PER_BATCH)]:
            self.metrics.record_latency(pipeline.name, now_ms - entry.published_ms)

    def _results_refused(self, pipeline: Pipeline, outcome: Outcome) -> None:
        """The results stream refused the batch's results: give the entries back, or
        dead-letter those on their last delivery (they would never get through)."""
        refused = {entry.id for entry in outcome.result_sources}
        outcome.done = [i for i in outcome.done if i not in refused]
        outcome.handled = [e for e in outcome.handled if e.id not in refused]
        for entry in outcome.result_sources:
            if entry.deliveries >= pipeline.max_deliveries:
                why = f"the results stream {pipeline.results!r} stayed full"
                dead(pipeline, entry, why, "output_refused", outcome, self.metrics)
            else:
                outcome.retry.append(entry.id)
                self.metrics.events.labels(pipeline.name, "failed").inc()
        outcome.results, outcome.result_sources = [], []

    async def _publish_output(
        self, pipeline: Pipeline, stream: str, messages: Sequence[Message]
    ) -> bool:
        """Publish the worker's own output, waiting while ``stream`` is full; ``False`` once it
        refused for ``output_full_wait_s`` (or the worker is stopping). Never silent."""
        deadline = time.monotonic() + self.options.output_full_wait_s
        while True:
            try:
                await self.broker.publish(stream, messages)
                return True
            except StreamFull as full:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    self.metrics.output_refused.labels(pipeline.name, stream).inc()
                    logger.warning(
                        "pipeline %s: %s; gave up after %gs, giving the batch back",
                        pipeline.name,
                        full,
                        self.options.output_full_wait_s,
                    )
                    return False
                logger.warning(
                    "pipeline %s: output %s; waiting (up to %.1fs more)",
                    pipeline.name,
                    full,
                    remaining,
                )
                await self._pause(min(max(full.retry_after_s, 0.5), remaining))

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
                    await self._forget_dead_consumers(pipeline)
                except BrokerError as exc:
                    logger.warning("housekeeping of %s: %s", pipeline.name, exc)
            await self._pause(self.options.housekeeping_every_s)

    async def _forget_dead_consumers(self, pipeline: Pipeline) -> None:
        retention_s = self.options.dead_consumer_retention_s
        if retention_s is None or not isinstance(self.broker, ForgetsConsumers):
            return
        ours = [self._member(pipeline, index) for index in range(pipeline.concurrency)]
        removed = await self.broker.remove_idle_consumers(
            pipeline.source, pipeline.group_name, int(retention_s * 1000), keep=ours
        )
        for name in removed:
            logger.info(
                "pipeline %s: removed consumer %s from group %s (idle over %gs, holding nothing)",
                pipeline.name,
                name,
                pipeline.group_name,
                retention_s,
            )


async def collect_batch(
    consumer: Consumer, pipeline: Pipeline, held: list[str] | None = None
) -> list[Entry]:
    """Up to ``max_batch`` entries, waiting no longer than the first one's window (their ids
    are added to ``held`` as they come, for the lease)."""
    batch = await consumer.read(pipeline.max_batch, block_ms=_POLL_MS)
    if not batch:
        return batch
    if held is not None:
        held.extend(entry.id for entry in batch)
    window_ends_ms = batch[0].published_ms + pipeline.window_ms
    while len(batch) < pipeline.max_batch:
        remaining_ms = window_ends_ms - time.time() * 1000
        if remaining_ms < 1:
            break
        more = await consumer.read(pipeline.max_batch - len(batch), block_ms=int(remaining_ms))
        if held is not None:
            held.extend(entry.id for entry in more)
        batch += more
    return batch
