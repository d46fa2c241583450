"""A bounded, tenant-fair admission queue for a single-slot resource (the local model).

One request holds the slot at a time. Waiting requests are served round-robin across
tenants, FIFO within a tenant, so one tenant's burst cannot starve another. When
``max_waiting`` requests already wait, ``acquire`` fails at once with ``Overloaded``
(503 + Retry-After) instead of hanging.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nearline.core.errors import Overloaded


class FairQueue:
    def __init__(self, max_waiting: int, retry_after_s: float) -> None:
        self._max_waiting = max_waiting
        self._retry_after_s = retry_after_s
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._n_waiting = 0
        self._busy = False

    @property
    def depth(self) -> int:
        """Requests waiting for the slot (not counting the one holding it)."""
        return self._n_waiting

    @property
    def busy(self) -> bool:
        return self._busy

    @asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[None]:
        await self.acquire(tenant)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, tenant: str) -> None:
        if not self._busy and self._n_waiting == 0:
            self._busy = True
            return
        if self._n_waiting >= self._max_waiting:
            raise Overloaded(
                f"the local model is busy and {self._n_waiting} requests are already waiting; "
                "retry shortly",
                retry_after_s=self._retry_after_s,
            )
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, deque()).append(turn)
        self._n_waiting += 1
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # the slot was handed to us as we left: pass it on
            else:
                self._forget(tenant, turn)
            raise

    def release(self) -> None:
        while self._waiting:
            tenant, turns = next(iter(self._waiting.items()))
            turn = turns.popleft()
            self._n_waiting -= 1
            del self._waiting[tenant]
            if turns:
                self._waiting[tenant] = turns  # back of the round-robin line
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False

    def _forget(self, tenant: str, turn: asyncio.Future[None]) -> None:
        turns = self._waiting.get(tenant)
        if turns is None or turn not in turns:
            return
        turns.remove(turn)
        self._n_waiting -= 1
        if not turns:
            del self._waiting[tenant]
