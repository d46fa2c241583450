"""One batch's fate, entry by entry: a result, skipped, given back or dead-lettered.

Nothing an entry or a handler does can stop the pipeline: an entry that cannot be decoded, a
result that is not a JSON-encodable mapping, a handler that raises or passes its deadline
fails *that entry* (logged at warning, counted in ``nearline_worker_dead_letters_total``), and
the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from nearline.worker.broker import Entry, Message
from nearline.worker.metrics import WorkerMetrics
from nearline.worker.pipeline import Pipeline, Result
from nearline.worker.runner import HandlerTimeout

logger = logging.getLogger("nearline.worker.worker")

CallHandler = Callable[[list[Entry]], Awaitable[list[Result]]]


@dataclass(slots=True)
class Outcome:
    done: list[str] = field(default_factory=list)
    results: list[Message] = field(default_factory=list)
    result_sources: list[Entry] = field(default_factory=list)  # the entry of each result
    dead: list[Message] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)
    handled: list[Entry] = field(default_factory=list)  # done by the handler (counted once written)


async def handle_batch(
    pipeline: Pipeline,
    batch: list[Entry],
    metrics: WorkerMetrics,
    call: CallHandler,
    stopping: asyncio.Event | None = None,
) -> Outcome:
    """Decide each entry's fate. ``call`` runs the handler (with its deadline); once
    ``stopping`` is set, a failed batch is given back instead of retried one by one."""
    outcome = Outcome()
    count = metrics.events.labels
    wanted: list[Entry] = []
    for entry in batch:
        if entry.decode_error is not None:
            dead(pipeline, entry, entry.decode_error, "undecodable", outcome, metrics)
            continue
        if entry.deliveries > pipeline.max_deliveries:
            why = f"the worker stopped while handling this entry {entry.deliveries - 1} times"
            dead(pipeline, entry, why, "redelivered", outcome, metrics)
            continue
        try:
            skip = pipeline.filter is not None and not pipeline.filter(entry)
        except Exception as exc:  # noqa: BLE001 - a filter failure is the entry's failure
            fail(pipeline, entry, exc, outcome, metrics)
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
        results = await call(wanted)
    except Exception as exc:  # noqa: BLE001 - any handler failure: retry entries one by one
        if isinstance(exc, HandlerTimeout):
            metrics.handler_timeouts.labels(pipeline.name).inc()
            logger.warning("pipeline %s: %s", pipeline.name, exc)
        if len(wanted) == 1:  # nothing to isolate: this was the entry's try
            fail(pipeline, wanted[0], exc, outcome, metrics)
        elif stopping is not None and stopping.is_set():
            give_back(pipeline, wanted, outcome, metrics)
        else:
            logger.info(
                "pipeline %s: batch of %d failed (%r); retrying one by one",
                pipeline.name,
                len(wanted),
                exc,
            )
            await _handle_one_by_one(pipeline, wanted, outcome, metrics, call, stopping)
    else:
        accept(pipeline, wanted, results, outcome, metrics)
    metrics.handler_seconds.labels(pipeline.name).observe(time.perf_counter() - started)
    return outcome


async def _handle_one_by_one(
    pipeline: Pipeline,
    entries: list[Entry],
    outcome: Outcome,
    metrics: WorkerMetrics,
    call: CallHandler,
    stopping: asyncio.Event | None,
) -> None:
    for index, entry in enumerate(entries):
        if stopping is not None and stopping.is_set():
            give_back(pipeline, entries[index:], outcome, metrics)
            return
        try:
            results = await call([entry])
        except Exception as exc:  # noqa: BLE001 - the error is kept with the entry
            if isinstance(exc, HandlerTimeout):
                metrics.handler_timeouts.labels(pipeline.name).inc()
            fail(pipeline, entry, exc, outcome, metrics)
        else:
            accept(pipeline, [entry], results, outcome, metrics)


def give_back(
    pipeline: Pipeline, entries: list[Entry], outcome: Outcome, metrics: WorkerMetrics
) -> None:
    outcome.retry.extend(entry.id for entry in entries)
    metrics.events.labels(pipeline.name, "failed").inc(len(entries))


def fail(
    pipeline: Pipeline, entry: Entry, error: Exception, outcome: Outcome, metrics: WorkerMetrics
) -> None:
    """Give the entry back, or dead-letter it with ``error`` after its last allowed try."""
    if entry.deliveries >= pipeline.max_deliveries:
        reason = "timeout" if isinstance(error, HandlerTimeout) else "handler_error"
        dead(pipeline, entry, repr(error), reason, outcome, metrics)
    else:
        outcome.retry.append(entry.id)
        metrics.events.labels(pipeline.name, "failed").inc()


def dead(
    pipeline: Pipeline,
    entry: Entry,
    error: str,
    reason: str,
    outcome: Outcome,
    metrics: WorkerMetrics,
) -> None:
    logger.warning(
        "pipeline %s: entry %s dead-lettered to %s (%s, delivery %d): %s",
        pipeline.name,
        entry.id,
        pipeline.dead_letter_stream,
        reason,
        entry.deliveries,
        error,
    )
    outcome.dead.append(dead_letter(pipeline, entry, error))
    outcome.done.append(entry.id)
    metrics.events.labels(pipeline.name, "dead_lettered").inc()
    metrics.dead_letters.labels(pipeline.name, reason).inc()


def _invalid(result: Any) -> str | None:
    """Why ``result`` cannot be published, or ``None``."""
    if not isinstance(result, Mapping):
        return f"the handler's result is a {type(result).__name__}, not a mapping"
    try:
        orjson.dumps(result)
    except TypeError as exc:  # orjson.JSONEncodeError: a set, a non-str key, an object, ...
        return f"the handler's result cannot be encoded as JSON: {exc}"
    return None


def accept(
    pipeline: Pipeline,
    entries: list[Entry],
    results: list[Result],
    outcome: Outcome,
    metrics: WorkerMetrics,
) -> None:
    for entry, result in zip(entries, results, strict=True):
        if result is not None:
            invalid = _invalid(result)
            if invalid is not None:
                dead(pipeline, entry, invalid, "invalid_result", outcome, metrics)
                continue
            outcome.results.append(
                Message({"source_id": entry.id, **result}, dedupe_key=pipeline.result_key(entry))
            )
            outcome.result_sources.append(entry)
        outcome.done.append(entry.id)
        outcome.handled.append(entry)


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
