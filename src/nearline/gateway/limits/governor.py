"""Rate limits and budgets around one answer: admit it, meter it as it streams.

``Governor.admit`` names the subjects a request answers to (its key, its tenant), checks and
counts it in one call to the counters, and raises the OpenAI-shaped 429 when a limit or a
budget says no. ``Governor.metered`` wraps the answer's events: streamed deltas count as
tokens as they pass (eight at a time), the ``Usage`` event corrects that to the real count;
at the end the answer's cost (catalogue price; zero from a cache) is added to the budgets,
and every answer, limited or not, goes to the spend ledger. Nothing here waits on a network
but ``admit``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass

from nearline.config import KeyLimits, LimitsSettings
from nearline.core.events import Delta, Event, Usage
from nearline.core.price import Price
from nearline.core.source import Source
from nearline.gateway.limits.window import Counters, Subject, rate_headers, refusal_error
from nearline.gateway.tenancy import Tenant

SpendSink = Callable[[str, str, str, Usage, float, float], None]
"""``(tenant, key id, model, usage, cost, saved)``: where every answer's spend is recorded."""


@dataclass(frozen=True, slots=True)
class Grant:
    """An admitted request: whom it counts against, its headers, the bucket it was counted in."""

    subjects: tuple[Subject, ...]
    headers: Mapping[str, str]
    bucket: int


NO_GRANT = Grant((), {}, 0)
TOKEN_BATCH = 8  # streamed deltas counted together (the usage at the end corrects the count)


class Governor:
    def __init__(
        self,
        counters: Counters,
        settings: LimitsSettings,
        *,
        spend_sink: SpendSink | None = None,
    ) -> None:
        self.counters = counters
        self._tenants: dict[str, KeyLimits] = {n: t for n, t in settings.tenants.items() if t.any}
        self._count_cache_hits = settings.count_cache_hits
        self._spend_sink = spend_sink

    def subjects(self, tenant: Tenant) -> tuple[Subject, ...]:
        key = tenant.limits
        shared = self._tenants.get(tenant.name)
        if key is None and shared is None:
            return ()
        subjects: list[Subject] = []
        if key is not None and tenant.key_id is not None:
            subjects.append(Subject("key", tenant.key_id, key))
        if shared is not None:
            subjects.append(Subject("tenant", tenant.name, shared))
        return tuple(subjects)

    async def admit(self, tenant: Tenant) -> Grant:
        """Count the request against its key and tenant, or raise the 429 that says which
        limit refused it (``RateLimited`` with Retry-After, or ``QuotaExceeded``)."""
        subjects = self.subjects(tenant)
        if not subjects:
            return NO_GRANT
        decision = await self.counters.acquire(subjects)
        headers = rate_headers(subjects, decision.standing)
        if decision.refused is not None:
            raise refusal_error(decision, headers)
        return Grant(subjects, headers, decision.bucket)

    def answered(self, grant: Grant, source: Source) -> None:
        """The pipeline chose ``source``: a cache hit gives its request back if hits do not
        count (``limits.count_cache_hits: false``)."""
        if grant.subjects and source != Source.INFERENCE and not self._count_cache_hits:
            self.counters.give_back(grant.subjects, grant.bucket)

    async def metered(
        self,
        first: Event,
        events: AsyncGenerator[Event, None],
        grant: Grant,
        *,
        tenant: Tenant,
        model: str,
        source: Source,
        price: Price | None,
    ) -> AsyncGenerator[Event, None]:
        """``first`` then ``events``, counted as they pass (tokens) and, at the end, priced
        (spend). Take ``first`` back at once (``anext``): the stream is then started, so
        closing it always closes ``events``."""
        counting = bool(grant.subjects) and (source == Source.INFERENCE or self._count_cache_hits)
        counters, subjects = self.counters, grant.subjects
        counted = pending = 0  # sent to the counters; seen since
        usage: Usage | None = None

        def see(event: Event) -> None:
            nonlocal counted, pending, usage
            if isinstance(event, Delta):
                if counting:
                    pending += 1
                    if pending >= TOKEN_BATCH:
                        counters.add_tokens(subjects, pending)
                        counted, pending = counted + pending, 0
            elif isinstance(event, Usage):
                usage = event
                if counting:
                    total = event.prompt_tokens + event.completion_tokens
                    counters.add_tokens(subjects, total - counted)
                    counted, pending = total, 0

        try:
            see(first)
            yield first
            async for event in events:
                see(event)
                yield event
        finally:
            await events.aclose()
            if pending:
                counters.add_tokens(subjects, pending)
            if usage is not None:
                self._spent(grant, tenant, model, source, price, usage)

    def _spent(
        self,
        grant: Grant,
        tenant: Tenant,
        model: str,
        source: Source,
        price: Price | None,
        usage: Usage,
    ) -> None:
        value = 0.0 if price is None else price.cost(usage)
        cost, saved = (value, 0.0) if source == Source.INFERENCE else (0.0, value)
        if cost and grant.subjects:
            self.counters.add_spend(grant.subjects, cost)
        if self._spend_sink is not None:
            self._spend_sink(tenant.name, tenant.key_id or "", model, usage, cost, saved)
