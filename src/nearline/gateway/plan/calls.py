"""One model call of a plan (the planner's, a step's, the synthesis, the fallback): its
sub-request, its cost, and — for the planner and the steps — a task that streams its text
into the run's queue.

With the exact tier on (``StepCache``), each call is looked up first: a fresh entry is
replayed (outcome ``cached``, cost 0) instead of asking the tier again, and a completed
answer is stored under the call's own key (tenant, plan model, tier, prompt) — a planner's
only when it is a usable plan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from nearline.core.errors import NearlineError, UpstreamError
from nearline.core.events import CallCost, Delta, Done, ErrorEvent, Event, FinishReason, Usage
from nearline.core.price import FREE, Price
from nearline.core.provider import Provider, ProviderCall
from nearline.core.request import ChatRequest, Message
from nearline.core.source import Source
from nearline.gateway.cache.recording import RecordedAnswer, recorded, replay

if TYPE_CHECKING:
    from nearline.gateway.serving.tiers import CacheTiers

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


@dataclass(frozen=True, slots=True)
class StepCache:
    """The exact tier as one plan's calls use it: ``lookup`` and ``store`` follow the
    request's cache directive (body extension, ``Cache-Control``, the model's policy)."""

    tiers: CacheTiers
    lookup: bool = True
    store: bool = True

    async def open(
        self, part: Part, call: ProviderCall, keep: Callable[[str], bool] | None = None
    ) -> tuple[AsyncIterator[Event], bool]:
        """``call``'s answer: replayed from a fresh entry (``True``), else from ``part``,
        recorded and stored once complete — when ``keep`` (given the text) allows."""
        keys = self.tiers.keys(call)
        if self.lookup and keys.exact is not None:
            hit = await self.tiers.lookup_exact(keys)
            if hit is not None and not hit.stale:
                return replay(hit.answer, Source.EXACT), True
        events = part.provider.stream(call)
        if not self.store or keys.exact is None:
            return events, False
        store = self.tiers.storer(keys, semantic=False)

        async def kept(answer: RecordedAnswer) -> None:
            if keep is None or keep(answer.text):
                await store(answer)

        return recorded(events, kept), False


async def opened(
    cache: StepCache | None,
    part: Part,
    call: ProviderCall,
    keep: Callable[[str], bool] | None = None,
) -> tuple[AsyncIterator[Event], bool]:
    """``call``'s events, and whether they are replayed from the exact tier."""
    if cache is None:
        return part.provider.stream(call), False
    return await cache.open(part, call, keep)


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
        """Every call's tokens and cost together; the prompt tokens of calls replayed from
        cache (and ``finish``'s cached tokens) are cached tokens."""
        replayed = sum(c.prompt_tokens for c in self.calls if c.outcome == "cached")
        return Usage(
            prompt_tokens=sum(c.prompt_tokens for c in self.calls),
            completion_tokens=sum(c.completion_tokens for c in self.calls),
            cached_tokens=replayed + (0 if finish is None else finish.cached_tokens),
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
        cost_usd=0.0 if outcome == "cached" else part.price.cost(usage),
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
    cache: StepCache | None = None,
    keep: Callable[[str], bool] | None = None,
) -> None:
    """Run ``call`` on ``part`` (or replay it from ``cache``); report its text, then its
    end or failure, to ``run`` (whatever fails: the plan waits on this report)."""
    try:
        await _produce(run, who, part, call, role=role, timeout_s=timeout_s, cache=cache, keep=keep)
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
    cache: StepCache | None,
    keep: Callable[[str], bool] | None,
) -> None:
    step = who or None
    started = time.perf_counter()
    parts: list[str] = []
    usage: Usage | None = None
    cached = False
    try:
        async with asyncio.timeout(timeout_s):
            events, cached = await opened(cache, part, call, keep)
            usage, _reason = await _stream_text(events, run, who, parts)
    except TimeoutError:
        failed = cost_of(role, part, started, usage, step=step, outcome="timeout")
        run.queue.put_nowait(Piece("failed", who, "timeout", failed))
        return
    except NearlineError as error:
        failed = cost_of(role, part, started, usage, step=step, outcome="error")
        run.queue.put_nowait(Piece("failed", who, error.code or "error", failed))
        return
    text = "".join(parts)
    outcome = "cached" if cached else "ok"
    done = cost_of(role, part, started, usage, step=step, outcome=outcome)
    run.queue.put_nowait(Piece("done", who, text, done))


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
