"""``ScriptedProvider``: an in-process provider that replays queued answers.

Like httpx's ``MockTransport`` or simonw/llm's ``MockModel.enqueue``: a test queues the
events of each answer the provider will give, in order, and reads back what it was asked::

    provider = ScriptedProvider()
    provider.enqueue(Delta("Hi"), Usage(3, 1), Done())
    provider.enqueue(Delta("half"), fail=UpstreamError("reset"), after=1)  # fails mid-way
    provider.enqueue(fail=UpstreamTimeout("slow"))  # fails before the first event

Every ``ProviderCall`` is kept in ``calls``; ``closes`` counts the answers that ended
(completed, failed or stopped), ``cancellations`` those stopped by the consumer before their
script ran out (the client left); ``wait_for`` waits until enough of either happened. An
answer may be held back until an ``asyncio.Event`` is set.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from nearline.core.errors import NearlineError
from nearline.core.events import Event
from nearline.core.provider import Capabilities, ProviderCall


@dataclass(frozen=True, slots=True)
class Script:
    """One answer: its events, and the error raised after the first ``after`` of them."""

    events: tuple[Event, ...]
    fail: NearlineError | None = None
    after: int = 0
    hold: asyncio.Event | None = None


class ScriptedProvider:
    """Implements ``nearline.core.provider.Provider``; answers come from ``enqueue``."""

    def __init__(self, name: str = "scripted", *, capabilities: Capabilities | None = None) -> None:
        self.name = name
        self.capabilities = capabilities or Capabilities()
        self.calls: list[ProviderCall] = []
        self.closes = 0
        self.cancellations = 0
        self.started = False
        self.closed = False
        self._scripts: deque[Script] = deque()
        self._changed = asyncio.Event()

    def enqueue(
        self,
        *events: Event,
        fail: NearlineError | None = None,
        after: int | None = None,
        hold: asyncio.Event | None = None,
    ) -> None:
        """Queue one answer. With ``fail``, it is raised after the first ``after`` events
        (default: all of them; ``after=0``: before the first). With ``hold``, the answer
        waits for that event to be set before its first event."""
        if after is not None and fail is None:
            raise ValueError("after says when `fail` is raised: give fail too")
        cut = len(events) if after is None else after
        self._scripts.append(Script(tuple(events[:cut]), fail, cut, hold))

    @property
    def pending(self) -> int:
        """Answers queued and not yet asked for."""
        return len(self._scripts)

    async def wait_for(self, *, calls: int = 0, closes: int = 0) -> None:
        """Return once at least ``calls`` calls were made and ``closes`` answers ended
        (background work, or generators closed by the loop): wait on that, not a sleep."""
        while len(self.calls) < calls or self.closes < closes:
            self._changed.clear()
            await self._changed.wait()

    def stream(self, call: ProviderCall) -> AsyncIterator[Event]:
        self.calls.append(call)
        self._changed.set()
        if not self._scripts:
            raise AssertionError(
                f"ScriptedProvider {self.name!r}: no answer enqueued for call {len(self.calls)}"
            )
        return self._play(self._scripts.popleft())

    async def _play(self, script: Script) -> AsyncGenerator[Event, None]:
        sent = 0
        try:
            if script.hold is not None:
                await script.hold.wait()
            for event in script.events:
                sent += 1
                yield event
            if script.fail is not None:
                raise script.fail
        except (GeneratorExit, asyncio.CancelledError):
            if sent < len(script.events) or not script.events:
                self.cancellations += 1  # stopped before its script ran out
            raise
        finally:
            self.closes += 1
            self._changed.set()

    async def start(self) -> None:
        self.started = True

    async def aclose(self) -> None:
        self.closed = True

    def is_ready(self) -> bool:
        return self.started and not self.closed
