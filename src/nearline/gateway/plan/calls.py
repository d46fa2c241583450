"""One model call of a plan (the planner's, a step's, the synthesis, the fallback): its
sub-request, its cost, and — for the planner and the steps — a task that streams its text
into the run's queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from nearline.core.errors import NearlineError, UpstreamError
from nearline.core.events import CallCost, Delta, Done, ErrorEvent, Event, FinishReason, Usage
from nearline.core.price import FREE, Price
from nearline.core.provider import Provider, ProviderCall
from nearline.core.request import ChatRequest, Message

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Part:
    """A tier a plan calls, and what its tokens cost (its first deployment's price)."""

    provider: Provider
    price: Price = FREE

    @property
    def name(self) -> str:
        return self.provider.name


def sub_call(call: ProviderCall, part: Part, prompt: str, max_tokens: int | None) -> ProviderCall:
    """``prompt`` asked of ``part`` for ``call``'s tenant, by ``call``'s deadline. The public
    model stays the plan's (cache keys and purges follow it); the provider names the tier."""
    request = ChatRequest(
        model=call.request.model,
        messages=[Message(role="user", content=prompt)],
        max_tokens=max_tokens,
        stream=True,
    )
    return ProviderCall(
        request, call.upstream_model, call.tenant, deadline=call.deadline, provider=part.name
    )


PieceKind = Literal["delta", "done", "failed"]


@dataclass(frozen=True, slots=True)
class Piece:
    """What a running call reports: a piece of its text, its end, or its failure."""

    kind: PieceKind
    who: int  # 0: the planner; n: step n
    text: str = ""
    cost: CallCost | None = None


class Run:
    """One plan's running calls: their queue, their tasks, what they spent, its deadline."""

    def __init__(self, timeout_s: float | None) -> None:
        self.queue: asyncio.Queue[Piece] = asyncio.Queue()
        self.calls: list[CallCost] = []
        self._tasks: dict[asyncio.Task[None], CallCost] = {}  # running: as if stopped now
        loop = asyncio.get_running_loop()
        self._deadline = None if timeout_s is None else loop.time() + timeout_s

    def start(
        self, work: Coroutine[Any, Any, None], role: str, part: Part, *, step: int | None = None
    ) -> None:
        task = asyncio.create_task(work)
        self._tasks[task] = CallCost(role, part.name, time.perf_counter(), 0.0, step=step)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def next(self) -> Piece | None:
        """The next piece; ``None`` once the plan's ``timeout_s`` has passed."""
        try:
            async with asyncio.timeout_at(self._deadline):
                return await self.queue.get()
        except TimeoutError:
            return None

    @property
    def spent_usd(self) -> float:
        return sum(call.cost_usd for call in self.calls)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def cancel(self) -> list[CallCost]:
        """Cancel every call still running; what each was (outcome ``cancelled``, tokens
        unknown). Synchronous, so it holds even when the caller is being cancelled too."""
        now = time.perf_counter()
        stopped = []
        for task, started in list(self._tasks.items()):
            if task.done():
                continue
            task.cancel()
            stopped.append(
                CallCost(
                    started.role,
                    started.tier,
                    now - started.latency_s,
                    0.0,
                    step=started.step,
                    outcome="cancelled",
                )
            )
        return stopped

    async def wait(self) -> None:
        """Wait for every cancelled call to close its upstream stream."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def usage(self, finish: Usage | None = None) -> Usage:
        """Every call's tokens and cost together (plus ``finish``'s cached tokens)."""
        return Usage(
            prompt_tokens=sum(c.prompt_tokens for c in self.calls),
            completion_tokens=sum(c.completion_tokens for c in self.calls),
            cached_tokens=0 if finish is None else finish.cached_tokens,
            cost_usd=self.spent_usd,
            calls=tuple(self.calls),
        )


def cost_of(
    role: str,
    part: Part,
    started: float,
    usage: Usage | None,
    *,
    step: int | None = None,
    outcome: str = "ok",
) -> CallCost:
    usage = usage or Usage(0, 0)
    return CallCost(
        role=role,
        tier=part.name,
        latency_s=time.perf_counter() - started,
        cost_usd=part.price.cost(usage),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        step=step,
        outcome=outcome,
    )


async def produce(
    run: Run,
    who: int,
    part: Part,
    call: ProviderCall,
    *,
    role: str,
    timeout_s: float | None,
) -> None:
    """Run ``call`` on ``part``; report its text, then its end or failure, to ``run``
    (whatever fails: the plan waits on this report)."""
    try:
        await _produce(run, who, part, call, role=role, timeout_s=timeout_s)
    except Exception as error:  # a bug, not an upstream failure: still end the plan's wait
        log.exception("plan call %s %s failed", role, who)
        failed = CallCost(role, part.name, 0.0, 0.0, step=who or None, outcome="error")
        run.queue.put_nowait(Piece("failed", who, type(error).__name__, failed))


async def _produce(
    run: Run,
    who: int,
    part: Part,
    call: ProviderCall,
    *,
    role: str,
    timeout_s: float | None,
) -> None:
    step = who or None
    started = time.perf_counter()
    parts: list[str] = []
    usage: Usage | None = None
    try:
        async with asyncio.timeout(timeout_s):
            finish = await _stream_text(part.provider.stream(call), run, who, parts)
            usage, _reason = finish
    except TimeoutError:
        failed = cost_of(role, part, started, usage, step=step, outcome="timeout")
        run.queue.put_nowait(Piece("failed", who, "timeout", failed))
        return
    except NearlineError as error:
        failed = cost_of(role, part, started, usage, step=step, outcome="error")
        run.queue.put_nowait(Piece("failed", who, error.code or "error", failed))
        return
    text = "".join(parts)
    run.queue.put_nowait(Piece("done", who, text, cost_of(role, part, started, usage, step=step)))


async def _stream_text(
    events: AsyncIterator[Event], run: Run, who: int, parts: list[str]
) -> tuple[Usage | None, FinishReason]:
    usage: Usage | None = None
    try:
        async for event in events:
            match event:
                case Delta(text=text):
                    parts.append(text)
                    run.queue.put_nowait(Piece("delta", who, text))
                case Usage():
                    usage = event
                case Done(finish_reason=reason):
                    return usage, reason
                case ErrorEvent(error=error):
                    raise error
                case _:
                    pass
    finally:
        await close(events)
    raise UpstreamError("the answer ended without finishing")


async def close(events: AsyncIterator[Event]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(NearlineError):
            await aclose()
