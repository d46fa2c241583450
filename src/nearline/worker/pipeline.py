"""A pipeline: source stream → optional filter → handler(batch) → results stream.

Handlers are plain functions, sync or async, called with a batch of entries and returning
one result per entry (``None``: no result for that entry). A sync handler runs in a thread of
its consumer (``nearline.worker.runner``) so the event loop stays free; an async handler runs on
the loop and must not block it. A call may last ``handler_timeout_ms`` at most.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nearline.worker.broker import Entry, EntryData

Result = EntryData | None
SyncHandler = Callable[[list[Entry]], Sequence[Result]]
AsyncHandler = Callable[[list[Entry]], Awaitable[Sequence[Result]]]
Handler = SyncHandler | AsyncHandler
EntryFilter = Callable[[Entry], bool]


class HandlerContractError(TypeError):
    """The handler returned something other than one result (or ``None``) per entry."""


@dataclass(frozen=True, slots=True)
class Pipeline:
    """What to read, what to do with it, where results and failures go.

    ``max_batch`` entries at most per handler call; ``window_ms``: how long after the first
    entry of a batch was *published* the worker may wait for more (0: take what is there).
    An entry whose handling failed ``max_deliveries`` times goes to ``dead_letter`` with its
    error. ``concurrency`` consumers of this pipeline run in each worker process. A handler call
    that lasts longer than ``handler_timeout_ms`` (``None``: no deadline) fails its batch.
    """

    name: str
    source: str
    handler: Handler
    results: str | None = None
    filter: EntryFilter | None = None
    group: str | None = None
    max_batch: int = 100
    window_ms: int = 100
    max_deliveries: int = 5
    dead_letter: str | None = None
    concurrency: int = 1
    handler_timeout_ms: int | None = 60_000

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"pipeline {self.name}: max_batch must be at least 1")
        if self.window_ms < 0:
            raise ValueError(f"pipeline {self.name}: window_ms must not be negative")
        if self.max_deliveries < 1:
            raise ValueError(f"pipeline {self.name}: max_deliveries must be at least 1")
        if self.concurrency < 1:
            raise ValueError(f"pipeline {self.name}: concurrency must be at least 1")
        if self.handler_timeout_ms is not None and self.handler_timeout_ms < 1:
            raise ValueError(f"pipeline {self.name}: handler_timeout_ms must be at least 1")

    @property
    def group_name(self) -> str:
        return self.group or self.name

    @property
    def dead_letter_stream(self) -> str:
        return self.dead_letter or f"{self.source}:dead"

    def result_key(self, entry: Entry) -> str:
        """Dedupe key of an entry's result: the same entry never yields two results."""
        return f"{self.name}:{entry.id}"


def is_async(handler: Handler) -> bool:
    """Whether ``handler`` is a coroutine function (or an object with an async ``__call__``)."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - objects with an async __call__
    )


def check_results(batch: list[Entry], results: Any) -> list[Result]:
    if not isinstance(results, Sequence) or isinstance(results, str | bytes):
        raise HandlerContractError(
            f"a handler must return a list with one result per entry, got {type(results).__name__}"
        )
    if len(results) != len(batch):
        raise HandlerContractError(
            f"a handler must return one result per entry: got {len(results)} for {len(batch)}"
        )
    return list(results)
