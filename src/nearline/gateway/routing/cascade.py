"""Cascade: answer with the cheap tier, escalate to the strong one when unsure.

``CascadeProvider`` is itself a provider. It reads the cheap tier's whole answer, scores it
(``confidence.py``), and either passes that answer on (``kept``) or streams the strong
tier's answer instead (``escalated``); a cheap-tier failure escalates too. Both outcomes are
counted (``RoutingTelemetry.cascade``).

The cheap answer has to be complete before it can be judged, so the first token comes after
the whole cheap answer. In progressive mode (``"nearline": {"progressive": true}``) that
answer is sent at once as the ``Preliminary``, followed by ``Replace("confirm")`` and the
same text as deltas, or by ``Replace("replace")`` and the strong answer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from nearline.core.errors import NearlineError
from nearline.core.events import CollectedAnswer, Event, Preliminary, Replace, collect
from nearline.core.provider import Capabilities, Provider, ProviderCall
from nearline.gateway.routing.confidence import ConfidenceScorer
from nearline.gateway.routing.telemetry import RoutingTelemetry

log = logging.getLogger(__name__)


class CascadeProvider:
    def __init__(
        self,
        name: str,
        cheap: Provider,
        strong: Provider,
        scorer: ConfidenceScorer,
        threshold: float,
        telemetry: RoutingTelemetry,
    ) -> None:
        self.name = name
        self.capabilities = Capabilities(
            tools=cheap.capabilities.tools and strong.capabilities.tools
        )
        self._cheap = cheap
        self._strong = strong
        self._scorer = scorer
        self._threshold = threshold
        self._telemetry = telemetry

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def is_ready(self) -> bool:
        return self._cheap.is_ready() and self._strong.is_ready()

    async def stream(self, call: ProviderCall) -> AsyncIterator[Event]:
        progressive = bool(call.request.nearline.progressive)
        cheap = await self._cheap_answer(call)
        if cheap is not None and progressive:
            yield Preliminary(cheap.text, source=f"cascade:{self._cheap.name}")
        if cheap is not None and await self._confident(call, cheap):
            self._telemetry.cascade(self.name, "kept")
            if progressive:
                yield Replace("confirm")
            for event in cheap.events:
                yield event
            return
        self._telemetry.cascade(self.name, "escalated")
        if cheap is not None and progressive:
            yield Replace("replace")
        async for event in self._strong.stream(call):
            yield event

    async def _cheap_answer(self, call: ProviderCall) -> CollectedAnswer | None:
        try:
            return await collect(self._cheap.stream(call))
        except NearlineError as error:
            log.info("cascade %s: the cheap tier failed (%s); escalating", self.name, error.code)
            return None

    async def _confident(self, call: ProviderCall, answer: CollectedAnswer) -> bool:
        confidence = await self._scorer.score(call, answer)
        log.debug("cascade %s: confidence %.2f %s", self.name, confidence.value, confidence.reasons)
        return confidence.value >= self._threshold
