"""BackgroundTasks and DedicatedThread: one owner of background work, one way to shut down."""

from __future__ import annotations

import asyncio
import threading
import time

from nearline.core.tasks import BackgroundTasks
from nearline.core.threads import DedicatedThread


async def test_a_keyed_start_runs_once_per_key_and_aclose_cancels_and_awaits() -> None:
    tasks = BackgroundTasks("test")
    started: list[str] = []
    cancelled: list[str] = []

    async def work(name: str) -> None:
        started.append(name)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    assert tasks.start(work("a"), key="k")
    assert not tasks.start(work("b"), key="k")  # the same key is already running
    assert tasks.start(work("c"))
    await asyncio.sleep(0)  # let them start
    assert started == ["a", "c"] and len(tasks) == 2
    await tasks.aclose()
    assert sorted(cancelled) == ["a", "c"] and len(tasks) == 0
    assert not tasks.start(work("d"))  # closed: nothing new starts


async def test_cancel_by_key_frees_the_key_at_once() -> None:
    tasks = BackgroundTasks("test")
    gate = asyncio.Event()

    async def work() -> None:
        await gate.wait()

    tasks.start(work(), key="id")
    assert tasks.running("id")
    assert tasks.cancel("id")
    assert not tasks.running("id")
    assert tasks.start(work(), key="id")  # reusable before the first has wound down
    assert not tasks.cancel("other")
    gate.set()
    await tasks.aclose()


async def test_a_dedicated_thread_runs_calls_in_order_and_closes_off_the_loop() -> None:
    thread = DedicatedThread("test-thread")
    names = await asyncio.gather(
        *(thread.run(lambda: threading.current_thread().name) for _ in range(3))
    )
    assert len(set(names)) == 1 and names[0].startswith("test-thread")
    release, started = threading.Event(), threading.Event()

    def hold() -> bool:
        started.set()
        return release.wait(5)

    running = thread.submit(hold)
    assert await asyncio.to_thread(started.wait, 5)  # the call is running, not just queued
    closing = asyncio.create_task(thread.aclose())
    ticks = 0
    deadline = time.monotonic() + 5
    while ticks < 3 and time.monotonic() < deadline:  # the loop keeps turning while it waits
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 3 and not closing.done()
    release.set()
    await closing
    assert await running is True
