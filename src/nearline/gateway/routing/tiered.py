"""A tier is itself a provider: ``TieredProvider`` streams from the best of its deployments.

For each call it sets the deadline (the caller's, else the tier's ``timeout_s``) so every
upstream timeout is bounded by it, races the deployments to the first token
(``hedging.FirstTokenRace``), and when every deployment failed before its first token with a
retryable error, hands the same call — same deadline — to its fallback tier. After the first
token the winner streams on; a failure there is the winner's (its breaker records it) and is
raised, because the client has already seen part of the answer.

The TTFT budget is the request's ``nearline.ttft_budget_ms`` when the request carries one,
else the tier's ``ttft_budget_s``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from nearline.config.routing import TierSettings
from nearline.core.errors import NearlineError
from nearline.core.events import Done, Event
from nearline.core.provider import Capabilities, Deadline, ProviderCall
from nearline.gateway.routing.deployment import Deployment
from nearline.gateway.routing.hedging import FirstTokenRace, Winner, is_retryable
from nearline.gateway.routing.telemetry import RoutingTelemetry


def request_ttft_budget_s(call: ProviderCall) -> float | None:
    """The per-request TTFT budget (``"nearline": {"ttft_budget_ms": ...}``), if any."""
    budget_ms = getattr(call.request.nearline, "ttft_budget_ms", None)
    return None if budget_ms is None else float(budget_ms) / 1000


class TieredProvider:
    """Implements the ``Provider`` protocol over a tier's deployments.

    It owns none of the deployments' providers (the registry starts and closes those once,
    even when several tiers share one).
    """

    def __init__(
        self,
        name: str,
        settings: TierSettings,
        deployments: Sequence[Deployment],
        telemetry: RoutingTelemetry,
        fallback: TieredProvider | None = None,
    ) -> None:
        self.name = name
        self.deployments = list(deployments)
        self.capabilities = Capabilities(
            tools=all(d.provider.capabilities.tools for d in self.deployments),
            logprobs=all(d.provider.capabilities.logprobs for d in self.deployments),
        )
        self._settings = settings
        self._telemetry = telemetry
        self._fallback = fallback

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def is_ready(self) -> bool:
        return any(d.provider.is_ready() for d in self.deployments)

    def deployment(self, name: str) -> Deployment:
        return next(d for d in self.deployments if d.name == name)

    def with_deadline(self, call: ProviderCall) -> ProviderCall:
        if call.deadline is not None or self._settings.timeout_s is None:
            return call
        return replace(call, deadline=Deadline.after(self._settings.timeout_s))

    async def stream(self, call: ProviderCall) -> AsyncIterator[Event]:
        call = self.with_deadline(call)
        try:
            winner = await self.race(call)
        except NearlineError as error:
            if self._fallback is None or not is_retryable(error) or _expired(call):
                raise
            self._telemetry.tier_fallback(self.name, self._fallback.name)
            async for event in self._fallback.stream(call):
                yield event
            return
        async for event in _streamed(winner):
            yield event

    async def race(self, call: ProviderCall) -> Winner:
        """Race this tier's deployments to the first token (no tier fallback)."""
        budget = request_ttft_budget_s(call)
        if budget is None:
            budget = self._settings.ttft_budget_s
        race = FirstTokenRace(
            self.name, self.deployments, call, self._settings.hedge, budget, self._telemetry
        )
        return await race.run()


def _expired(call: ProviderCall) -> bool:
    return call.deadline is not None and call.deadline.remaining() <= 0


async def _streamed(winner: Winner) -> AsyncIterator[Event]:
    """The winner's events; its breaker hears how the stream ended."""
    breaker = winner.deployment.breaker
    outcome_known = False
    try:
        for event in winner.head:
            yield event
        if isinstance(winner.head[-1], Done):
            breaker.record_success()
            outcome_known = True
            return
        async for event in winner.rest:
            yield event
            if isinstance(event, Done):
                breaker.record_success()
                outcome_known = True
                return
    except NearlineError:
        breaker.record_failure()
        outcome_known = True
        raise
    finally:
        if not outcome_known:
            breaker.release_probe()  # the client left: no verdict on the deployment
        await winner.rest.aclose()
