"""The race to the first token across one tier's deployments: hedging and fallbacks.

One attempt starts on the first deployment whose breaker allows it. Then, until a token
arrives:

* **hedge** — the newest attempt has produced no token within its hedge delay
  (``min(TTFT budget, the deployment's observed p95)``) and fewer than ``max_attempts`` run:
  the same request starts on the next deployment;
* **fallback** — an attempt failed before its first token with a retryable error (timeout,
  5xx/connection failure, 429, overload): its breaker records the failure and the next
  deployment starts at once;
* **win** — an attempt produced its first token: every other attempt is cancelled (its task
  cancelled, its stream closed, so its upstream connection closes) and the winner's stream
  goes on.

The deadline bounds the whole race. An error that another deployment would answer the same
way (the request itself was rejected) ends the race at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

from nearline.config.routing import HedgeSettings
from nearline.core.errors import (
    NearlineError,
    Overloaded,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from nearline.core.events import Delta, Done, ErrorEvent, Event, ToolCallDelta
from nearline.core.provider import ProviderCall
from nearline.gateway.routing.deployment import Deployment
from nearline.gateway.routing.telemetry import AttemptKind, RoutingTelemetry

RETRYABLE: tuple[type[NearlineError], ...] = (
    UpstreamTimeout,
    UpstreamError,
    UpstreamRateLimited,
    Overloaded,
)


def is_retryable(error: NearlineError) -> bool:
    """Would another deployment plausibly answer? Timeouts, 5xx, resets, 429 and 503: yes."""
    return isinstance(error, RETRYABLE)


@dataclass(slots=True)
class Attempt:
    deployment: Deployment
    events: AsyncGenerator[Event, None]
    started_at: float
    task: asyncio.Task[list[Event]] = field(init=False)


@dataclass(frozen=True, slots=True)
class Winner:
    """The deployment whose first token came first; ``head`` holds the events up to it."""

    deployment: Deployment
    head: list[Event]
    rest: AsyncGenerator[Event, None]
    ttft_s: float


async def _until_first_token(events: AsyncGenerator[Event, None]) -> list[Event]:
    """Read events up to and including the first token (or an empty answer's ``Done``)."""
    head: list[Event] = []
    async for event in events:
        if isinstance(event, ErrorEvent):
            raise event.error
        head.append(event)
        if isinstance(event, Done | ToolCallDelta) or (isinstance(event, Delta) and event.text):
            return head
    raise UpstreamError("the upstream ended the stream without an answer")


def hedge_delay(
    deployment: Deployment, budget_s: float | None, policy: HedgeSettings
) -> float | None:
    """How long ``deployment`` may go without a token before a hedge starts (None: never)."""
    if not policy.enabled:
        return None
    delays = [] if budget_s is None else [budget_s]
    if policy.use_observed_p95 and len(deployment.ttft) >= policy.min_samples:
        observed = deployment.ttft.percentile(policy.percentile)
        if observed is not None:
            delays.append(observed)
    return min(delays) if delays else None


class FirstTokenRace:
    """Runs one call against one tier's deployments until a first token arrives."""

    def __init__(
        self,
        tier: str,
        deployments: Sequence[Deployment],
        call: ProviderCall,
        policy: HedgeSettings,
        budget_s: float | None,
        telemetry: RoutingTelemetry,
    ) -> None:
        self._tier = tier
        self._candidates: Iterator[Deployment] = iter(deployments)
        self._call = call
        self._policy = policy
        self._budget_s = budget_s
        self._telemetry = telemetry
        self._max_parallel = policy.max_attempts if policy.enabled else 1
        self._running: dict[asyncio.Task[list[Event]], Attempt] = {}
        self._newest: Attempt | None = None

    async def run(self) -> Winner:
        """The winner, or the last failure (``NearlineError``) when no deployment answered."""
        last_error: NearlineError | None = None
        try:
            self._start_next("first")
            while self._running:
                done, _ = await asyncio.wait(
                    self._running, timeout=self._wait_s(), return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    self._on_timer()
                    continue
                for task in done:
                    attempt = self._running.pop(task)
                    error = _failure(task)
                    if error is None:
                        return self._win(attempt, task.result())
                    await self._fail(attempt, error)
                    last_error = error
                if len(self._running) < self._max_parallel:
                    self._start_next("fallback")
            raise last_error or UpstreamError(
                f"every deployment of tier {self._tier!r} is unavailable (circuit open)",
                code="circuit_open",
            )
        finally:
            await self._cancel_running()

    def _wait_s(self) -> float | None:
        """Until the next hedge or the deadline, whichever is sooner (None: no timer)."""
        waits: list[float] = []
        if self._call.deadline is not None:
            waits.append(self._call.deadline.remaining())
        newest = self._newest
        if newest is not None and len(self._running) < self._max_parallel:
            delay = hedge_delay(newest.deployment, self._budget_s, self._policy)
            if delay is not None:
                waits.append(max(0.0, newest.started_at + delay - time.monotonic()))
        return min(waits) if waits else None

    def _on_timer(self) -> None:
        if self._call.deadline is not None and self._call.deadline.remaining() <= 0:
            raise UpstreamTimeout(f"tier {self._tier!r}: no first token before the deadline")
        if not self._start_next("hedge"):
            self._newest = None  # nothing left to hedge to: stop the hedge timer

    def _start_next(self, kind: AttemptKind) -> bool:
        for deployment in self._candidates:
            if not deployment.breaker.allow():
                continue
            events = deployment.provider.stream(deployment.call_for(self._call))
            attempt = Attempt(deployment, closable(events), time.monotonic())
            attempt.task = asyncio.create_task(_until_first_token(attempt.events))
            self._running[attempt.task] = attempt
            self._newest = attempt
            self._telemetry.attempt(self._tier, deployment.name, kind)
            return True
        return False

    def _win(self, attempt: Attempt, head: list[Event]) -> Winner:
        now = time.monotonic()
        attempt.deployment.ttft.observe(now - attempt.started_at)
        for loser in self._running.values():
            # Its TTFT is at least this long. Leaving it out would keep only the fast
            # answers in the window, and the percentile would fall below the real one.
            loser.deployment.ttft.observe(now - loser.started_at)
        self._telemetry.answered(self._tier, attempt.deployment.name)
        return Winner(attempt.deployment, head, attempt.events, now - attempt.started_at)

    async def _fail(self, attempt: Attempt, error: NearlineError) -> None:
        await attempt.events.aclose()
        self._telemetry.failed_before_first_token(
            self._tier, attempt.deployment.name, error.code or ""
        )
        if not is_retryable(error):
            attempt.deployment.breaker.release_probe()  # the request's fault, not the upstream's
            raise error
        attempt.deployment.breaker.record_failure()

    async def _cancel_running(self) -> None:
        """Cancel every attempt still racing and close its stream (its connection closes)."""
        if not self._running:
            return
        attempts = list(self._running.values())
        self._running.clear()
        for attempt in attempts:
            attempt.task.cancel()
        await asyncio.gather(*(a.task for a in attempts), return_exceptions=True)
        for attempt in attempts:
            await attempt.events.aclose()
            attempt.deployment.breaker.release_probe()
            self._telemetry.cancelled(self._tier, attempt.deployment.name)


def _failure(task: asyncio.Task[list[Event]]) -> NearlineError | None:
    """The attempt's ``NearlineError``, or None if it succeeded; anything else propagates."""
    error = task.exception()
    if error is None:
        return None
    if isinstance(error, NearlineError):
        return error
    raise error


def closable(events: AsyncIterator[Event]) -> AsyncGenerator[Event, None]:
    """``events`` as an async generator, so that it can be closed (providers return one)."""
    if isinstance(events, AsyncGenerator):
        return events
    return _closing(events)


async def _closing(events: AsyncIterator[Event]) -> AsyncGenerator[Event, None]:
    try:
        async for event in events:
            yield event
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
