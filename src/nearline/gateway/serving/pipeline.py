"""The serving pipeline: the one place that decides how a request is answered.

In order: the exact tier (a complete earlier answer to the same request) → the semantic
tier (a paraphrase's answer) → the provider the catalogue names. A stale exact hit is served
at once and refreshed once in the background. Only complete, successful answers are stored.
Progressive answers and prefetch plug in here, and nowhere else.

The pipeline decides; its collaborators do: the ``Catalogue`` names providers and derived
calls, ``CacheTiers`` computes keys, looks up and stores, the ``AnswerObserver`` counts,
traces and logs. Background work (refreshes, prefetches, stopping drafts) has one owner,
the pipeline's ``BackgroundTasks``, cancelled and awaited by ``aclose``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.trace import Span

from nearline.config import ModelRoute, PrefetchSettings, ProgressiveSettings
from nearline.core.errors import NearlineError, NotCached, UpstreamError
from nearline.core.events import Delta, Done, ErrorEvent, Event
from nearline.core.provider import ProviderCall
from nearline.core.request import ChatRequest
from nearline.core.source import Source
from nearline.core.tasks import BackgroundTasks
from nearline.gateway.cache import policy
from nearline.gateway.cache.exact import ExactCache
from nearline.gateway.cache.policy import CacheDirective
from nearline.gateway.cache.recording import RecordedAnswer, recorded, replay
from nearline.gateway.cache.semantic import SemanticCache, SemanticMatch
from nearline.gateway.serving.catalogue import Catalogue
from nearline.gateway.serving.prefetch import Embed, Prefetcher
from nearline.gateway.serving.progressive import with_preliminary
from nearline.gateway.serving.sse import new_request_id
from nearline.gateway.serving.tiers import CacheKeys, CacheTiers
from nearline.gateway.telemetry.metrics import GatewayMetrics
from nearline.gateway.telemetry.observe import AnswerObserver
from nearline.gateway.tenancy import Tenant

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer whose first event has already arrived (so errors before it are HTTP errors).

    ``request_id`` names it everywhere: the response's ``x-request-id`` and body ``id``, the
    request-log row, the root span. ``aclose`` stops the answer and ends ``spans``.

    ``layers`` are the generators ``rest`` is built on (outermost first): ``aclose`` closes
    them after it, so that an answer that stopped at ``Done`` leaves none for the loop's
    finalizer hook (each costs a thread-safe wake-up and a task, after the response).
    """

    first: Event
    rest: AsyncGenerator[Event, None]
    call: ProviderCall
    request_id: str
    source: Source = Source.INFERENCE
    similarity: float | None = None
    trace_id: str = ""
    spans: tuple[Span, ...] = ()
    layers: tuple[AsyncGenerator[Event, None], ...] = ()

    async def events(self) -> AsyncIterator[Event]:
        yield self.first
        async for event in self.rest:
            yield event

    async def aclose(self) -> None:
        try:
            await _close_all((self.rest, *self.layers))
        finally:
            for span in self.spans:
                span.end()


class ServingPipeline:
    def __init__(
        self,
        catalogue: Catalogue,
        tiers: CacheTiers,
        observer: AnswerObserver,
        *,
        replay_tokens_per_s: float = 0.0,
        progressive: ProgressiveSettings | None = None,
        prefetch: PrefetchSettings | None = None,
        embed: Embed | None = None,
    ) -> None:
        self._catalogue = catalogue
        self._tiers = tiers
        self._observer = observer
        self._replay_tokens_per_s = replay_tokens_per_s
        self._progressive = progressive or ProgressiveSettings()
        self._tasks = BackgroundTasks("nearline-pipeline")
        self._prefetcher: Prefetcher | None = None
        if prefetch is not None and prefetch.enabled and embed is not None:
            self._prefetcher = Prefetcher(
                prefetch, embed, tiers, self._precompute, observer.metrics.prefetches.inc
            )

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogue

    @property
    def tiers(self) -> CacheTiers:
        return self._tiers

    @property
    def metrics(self) -> GatewayMetrics:
        return self._observer.metrics

    @property
    def exact_cache(self) -> ExactCache | None:
        return self._tiers.exact

    @property
    def semantic_cache(self) -> SemanticCache | None:
        return self._tiers.semantic

    @property
    def background(self) -> BackgroundTasks:
        """The pipeline's background work (refreshes, prefetches, stopping drafts)."""
        return self._tasks

    async def answer(
        self,
        call: ProviderCall,
        *,
        tenant: Tenant,
        request_id: str | None = None,
        client_directive: CacheDirective | None = None,
        received_at: float | None = None,
        trace_parent: Context | None = None,
        progressive: bool | None = None,
    ) -> Answer:
        """Start answering; raise ``NearlineError`` if it fails before the first event.

        ``progressive`` is the transport's say (e.g. the ``X-Nearline-Progressive`` header);
        the request's ``nearline.progressive`` and the model's config are consulted too.
        ``tenant`` (whose rights ``call`` was resolved with) bounds every other call the
        answer makes: a draft from a model it may not use is not made, a prefetch learnt
        from its traffic runs with its rights only.
        """
        answering = _Answering(
            call=call,
            tenant=tenant,
            request_id=request_id or new_request_id(),
            received_at=time.perf_counter() if received_at is None else received_at,
            trace_parent=trace_parent,
        )
        try:
            return await self._answer(answering, client_directive or CacheDirective(), progressive)
        except NearlineError as error:
            self._observer.refused(call.request.model, error)
            raise

    async def _answer(
        self, answering: _Answering, client_directive: CacheDirective, progressive: bool | None
    ) -> Answer:
        call, parent = answering.call, answering.trace_parent
        route = self._catalogue.route(call.request.model)
        directive = client_directive.also(policy.from_request(call.request)).also(
            policy.from_model(route, call.request)
        )
        keys = self._tiers.keys(call)
        if directive.lookup and keys.exact is not None:
            with self._observer.span("cache.exact", parent) as lookup:
                hit = await self._tiers.lookup_exact(keys)
                lookup.set_attribute("nearline.gateway.cache.hit", hit is not None)
            if hit is not None:
                self._observer.cache_hit(Source.EXACT)
                self._count_prefetch_use(call)
                if hit.stale and keys.exact is not None:
                    self._tasks.start(self._refresh(call, keys), key=("refresh", keys.exact.digest))
                return await self._replayed(hit.answer, answering, Source.EXACT, 1.0)
        near: SemanticMatch | None = None
        if directive.lookup and keys.semantic is not None:
            with self._observer.span("cache.semantic", parent) as lookup:
                match = await self._tiers.lookup_semantic(keys)
                lookup.set_attribute(
                    "nearline.gateway.cache.hit", match is not None and match.band == "hit"
                )
                if match is not None:
                    lookup.set_attribute("nearline.gateway.cache.similarity", match.similarity)
            if match is not None and match.band == "hit":
                self._observer.cache_hit(Source.SEMANTIC)
                self._count_prefetch_use(call, match.cached_query)
                self._verify_maybe(answering, keys, match)
                answer = RecordedAnswer.from_bytes(match.payload)
                return await self._replayed(answer, answering, Source.SEMANTIC, match.similarity)
            near = match
        if directive.lookup and self._tiers.enabled:
            self._observer.cache_miss()
        if directive.only_if_cached:
            raise NotCached("no cache tier holds an answer to this request (only-if-cached)")
        provider = self._catalogue.provider_name(call)
        answering_call = policy.carried(call, directive)  # a plan's calls follow it too
        inferred = self._infer(answering_call)
        events = self._observer.traced_call(inferred, call, provider, parent)
        layers: tuple[AsyncGenerator[Event, None], ...] = (events, inferred)
        if directive.store and keys.any:
            events = recorded(events, self._tiers.storer(keys, candidate=near))
            layers = (events, *layers)
        if self._wants_progressive(call.request, route, progressive):
            events = self._with_preliminary(events, answering, near)
            layers = ()  # the refined answer may run in a background task: not ours to close
        observed = self._observed(events, answering, Source.INFERENCE, route)
        return await _started(observed, answering, layers)

    def _observed(
        self,
        events: AsyncIterator[Event],
        answering: _Answering,
        source: Source,
        route: ModelRoute,
        similarity: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        call, prefetcher = answering.call, self._prefetcher

        def learn() -> None:
            if prefetcher is not None:
                self._tasks.start(prefetcher.observe(call, answering.tenant))

        return self._observer.observe(
            events,
            call,
            request_id=answering.request_id,
            source=source,
            received_at=answering.received_at,
            price=route.price,
            similarity=similarity,
            on_ok=learn,
        )

    async def _replayed(
        self, answer: RecordedAnswer, answering: _Answering, source: Source, similarity: float
    ) -> Answer:
        route = self._catalogue.route(answering.call.request.model)
        replayed = replay(answer, source, self._replay_tokens_per_s)
        events = self._observed(replayed, answering, source, route, similarity=similarity)
        return Answer(
            first=await anext(events),
            rest=events,
            call=answering.call,
            request_id=answering.request_id,
            source=source,
            similarity=similarity,
            layers=(replayed,),
        )

    def _with_preliminary(
        self,
        refined: AsyncGenerator[Event, None],
        answering: _Answering,
        near: SemanticMatch | None,
    ) -> AsyncGenerator[Event, None]:
        """The fastest credible preliminary: a near-match's answer, else a light-model draft."""
        if near is not None:
            text = RecordedAnswer.from_bytes(near.payload).text
            return with_preliminary(
                refined,
                _single(Delta(text)),
                source=Source.SEMANTIC_NEAR,
                similarity=near.similarity,
                background=self._tasks,
            )
        draft = self._draft(answering.call, answering.tenant)
        if draft is None:
            return refined
        return with_preliminary(
            refined,
            draft,
            source=Source.DRAFT,
            background=self._tasks,
            fallback=self._progressive.fallback_to_draft,
        )

    def _wants_progressive(
        self, request: ChatRequest, route: ModelRoute, transport_says: bool | None
    ) -> bool:
        if request.nearline.progressive is not None:
            return request.nearline.progressive
        if transport_says is not None:
            return transport_says
        return route.progressive

    def _draft(self, call: ProviderCall, tenant: Tenant) -> AsyncGenerator[Event, None] | None:
        """A quick answer from the light model, when one is configured, ``tenant`` may use
        it and it is not the model that gives the refined answer anyway (no draft: the
        refined answer comes without a preliminary)."""
        model = self._progressive.draft_model
        draft = (
            self._catalogue.draft_call(call, tenant, model, self._progressive.draft_max_tokens)
            if model
            else None
        )
        return None if draft is None else self._infer(draft)

    def _infer(self, call: ProviderCall) -> AsyncGenerator[Event, None]:
        return _guarded(self._catalogue.stream(call))

    # --- background work ---------------------------------------------------------------

    def _count_prefetch_use(self, call: ProviderCall, question: str | None = None) -> None:
        if self._prefetcher is not None and self._prefetcher.was_prefetched(call, question):
            self.metrics.prefetch_used.inc()

    async def _precompute(self, call: ProviderCall, tenant: Tenant) -> None:
        """Answer ``call`` into the caches, as if ``tenant`` asked it, without a client."""
        if not self._catalogue.permits(call, tenant):
            return
        keys = self._tiers.keys(call)
        self._tasks.start(self._drain(recorded(self._infer(call), self._tiers.storer(keys))))

    async def _drain(self, events: AsyncIterator[Event]) -> None:
        async for event in events:
            if isinstance(event, ErrorEvent):
                log.warning("prefetch failed: %s", event.error.message)

    async def _refresh(self, call: ProviderCall, keys: CacheKeys) -> None:
        """Replace a stale exact entry (one refresh per entry: the task is keyed by it)."""
        try:
            async for event in recorded(
                self._infer(call), self._tiers.storer(keys, semantic=False)
            ):
                if isinstance(event, ErrorEvent):
                    log.warning("stale-entry refresh failed: %s", event.error.message)
        except NearlineError as error:
            log.warning("stale-entry refresh failed: %s", error.message)

    def _verify_maybe(self, answering: _Answering, keys: CacheKeys, match: SemanticMatch) -> None:
        """Count a semantic hit by its rule; on a budgeted share, also ask the model in the
        background (the request's own resolved call, with its tenant's rights) and teach
        the learned thresholds whether the served answer agreed."""
        self.metrics.semantic_hits.labels(rule=match.rule).inc()
        if match.rule == "learned" and match.bound is not None:
            self.metrics.semantic_error_bound.observe(match.bound)
        learning, call = self._tiers.learning, answering.call
        if learning is None or not self._catalogue.permits(call, answering.tenant):
            return
        if learning.should_verify(match):
            self._tasks.start(self._verify(call, keys, match))

    async def _verify(self, call: ProviderCall, keys: CacheKeys, match: SemanticMatch) -> None:
        fresh: list[RecordedAnswer] = []

        async def keep(answer: RecordedAnswer) -> None:
            fresh.append(answer)

        try:
            async for event in recorded(self._infer(call), keep):
                if isinstance(event, ErrorEvent):
                    log.warning("semantic verification failed: %s", event.error.message)
        except NearlineError as error:
            log.warning("semantic verification failed: %s", error.message)
        if fresh:
            usage, price = fresh[0].usage, self._catalogue.route(call.request.model).price
            tokens = self.metrics.semantic_verification_tokens
            tokens.labels(kind="prompt").inc(usage.prompt_tokens)
            tokens.labels(kind="completion").inc(usage.completion_tokens)
            if price is not None:
                self.metrics.semantic_verification_cost.inc(price.cost(usage))
            await self._tiers.verified(keys, match, fresh[0])

    async def aclose(self) -> None:
        await self._tasks.aclose()


@dataclass(frozen=True, slots=True)
class _Answering:
    """One request being answered: what the steps after the decision need to know."""

    call: ProviderCall
    tenant: Tenant
    request_id: str
    received_at: float
    trace_parent: Context | None


async def _started(
    events: AsyncGenerator[Event, None],
    answering: _Answering,
    layers: tuple[AsyncGenerator[Event, None], ...] = (),
) -> Answer:
    try:
        first = await anext(events)
    except StopAsyncIteration as exc:
        await _close_all(layers)
        raise UpstreamError("the provider produced no answer") from exc
    if isinstance(first, ErrorEvent):
        await _close_all((events, *layers))
        first.error.counted = True  # the observed stream counted it
        raise first.error
    return Answer(
        first=first,
        rest=events,
        call=answering.call,
        request_id=answering.request_id,
        layers=layers,
    )


async def _close_all(generators: tuple[AsyncGenerator[Event, None], ...]) -> None:
    """Close each generator in turn (outermost first), each even if one before it failed."""
    if not generators:
        return
    try:
        await generators[0].aclose()
    finally:
        await _close_all(generators[1:])


async def _single(event: Event) -> AsyncGenerator[Event, None]:
    yield event


async def _guarded(events: AsyncIterator[Event]) -> AsyncGenerator[Event, None]:
    """Turn a provider failure into an ``ErrorEvent``; nothing follows ``Done`` or an error."""
    try:
        async for event in events:
            yield event
            if isinstance(event, Done):
                return
    except NearlineError as error:
        yield ErrorEvent(error)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
