"""The local model's admission queue is bounded and fair across tenants."""

from __future__ import annotations

import asyncio

import pytest

from nearline.core.errors import Overloaded
from nearline.gateway.providers.fair_queue import FairQueue


async def test_waiting_tenants_take_turns():
    queue = FairQueue(max_waiting=10, retry_after_s=1)
    served: list[str] = []
    await queue.acquire("holder")

    async def user(tenant: str, name: str) -> None:
        await queue.acquire(tenant)
        served.append(name)
        queue.release()

    tasks = [asyncio.create_task(user("a", f"a{i}")) for i in range(3)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(user("b", "b0")))
    await asyncio.sleep(0)
    queue.release()
    await asyncio.gather(*tasks)
    assert served == ["a0", "b0", "a1", "a2"]
    assert not queue.busy and queue.depth == 0


async def test_a_full_queue_refuses_at_once():
    queue = FairQueue(max_waiting=1, retry_after_s=7)
    await queue.acquire("t")
    waiter = asyncio.create_task(queue.acquire("t"))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as refused:
        await queue.acquire("u")
    assert refused.value.headers() == {"Retry-After": "7"}
    queue.release()
    await waiter
    queue.release()
    assert not queue.busy


async def test_a_waiter_that_gives_up_leaves_no_trace():
    queue = FairQueue(max_waiting=2, retry_after_s=1)
    await queue.acquire("t")
    waiter = asyncio.create_task(queue.acquire("t"))
    await asyncio.sleep(0)
    assert queue.depth == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert queue.depth == 0
    queue.release()
    assert not queue.busy
