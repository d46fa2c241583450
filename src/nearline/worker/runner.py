"""Calling a pipeline's handler with a deadline, sync handlers on a thread that can be left.

A sync handler runs on a daemon thread owned by its consumer (one call at a time, in order). A
thread cannot be killed: when a call passes the deadline, the worker stops waiting for it,
*abandons* the thread (it ends by itself if the call ever returns; its answer is dropped) and
starts a fresh one for the next call. Daemon threads never hold up the process's exit, so a
hung handler cannot keep a stopping worker alive. An async handler is cancelled at the deadline
(one that blocks the event loop cannot be helped: nothing runs until it yields).
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, cast

from nearline.worker.broker import Entry
from nearline.worker.pipeline import (
    AsyncHandler,
    Handler,
    Result,
    SyncHandler,
    check_results,
    is_async,
)


class HandlerTimeout(TimeoutError):
    """A handler call lasted longer than its pipeline's ``handler_timeout_ms``."""


_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller stopped waiting (deadline, shutdown)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _HandlerThread:
    """One daemon thread running submitted calls in order."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._work, name=name, daemon=True)
        self.thread.start()

    def submit(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((call, loop, future))
        return future

    def stop(self) -> None:
        """End the thread after the call in hand (if any) returns."""
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, loop, future = job
            result: Any = None
            error: BaseException | None = None
            try:
                result = call()
            except Exception as exc:  # noqa: BLE001 - handed to the caller on the loop
                error = exc
            except BaseException as exc:  # noqa: BLE001 - SystemExit & co. must not end the loop
                error = RuntimeError(f"the handler raised {exc!r}")
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return


class HandlerRunner:
    """Calls one handler for one consumer: ``await runner(batch)``; ``close()`` when done."""

    def __init__(self, handler: Handler, timeout_ms: int | None, name: str) -> None:
        self._handler = handler
        self._timeout_s = None if timeout_ms is None else timeout_ms / 1000
        self._name = name
        self._async = is_async(handler)
        self._thread: _HandlerThread | None = None
        self.abandoned: list[threading.Thread] = []

    @property
    def hung_threads(self) -> int:
        """Abandoned threads whose call has still not returned."""
        self.abandoned = [thread for thread in self.abandoned if thread.is_alive()]
        return len(self.abandoned)

    async def __call__(self, batch: list[Entry]) -> list[Result]:
        if self._async:
            return check_results(batch, await self._call_async(batch))
        return check_results(batch, await self._call_sync(batch))

    async def _call_async(self, batch: list[Entry]) -> Any:
        deadline = asyncio.timeout(self._timeout_s)
        try:
            async with deadline:
                return await cast(AsyncHandler, self._handler)(batch)
        except TimeoutError:
            if deadline.expired():
                raise self._timeout(batch) from None
            raise

    async def _call_sync(self, batch: list[Entry]) -> Any:
        if self._thread is None:
            self._thread = _HandlerThread(f"handler-{self._name}")
        handler = cast(SyncHandler, self._handler)
        context = contextvars.copy_context()
        future = self._thread.submit(lambda: context.run(handler, batch))
        try:
            done, _ = await asyncio.wait({future}, timeout=self._timeout_s)
        except asyncio.CancelledError:
            future.cancel()
            self._abandon()
            raise
        if not done:
            future.cancel()
            self._abandon()
            raise self._timeout(batch)
        return future.result()

    def _abandon(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self.abandoned.append(self._thread.thread)
            self._thread = None

    def _timeout(self, batch: list[Entry]) -> HandlerTimeout:
        return HandlerTimeout(
            f"the handler did not return within handler_timeout_ms={self._timeout_ms} "
            f"for a batch of {len(batch)}"
        )

    @property
    def _timeout_ms(self) -> int | None:
        return None if self._timeout_s is None else round(self._timeout_s * 1000)

    def close(self) -> None:
        """Let the thread end (without waiting for it: it may be stuck in a call)."""
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
