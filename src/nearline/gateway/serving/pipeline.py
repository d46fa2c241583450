"""The serving pipeline: the one place that decides how a request is answered.

In order: the exact cache (a complete earlier answer to the same request) → the provider the
model catalogue names. A stale exact hit is served at once and refreshed once in the
background. Only complete, successful answers are stored. The semantic tier, progressive
answers and routing plug in here, and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, replace

import orjson
from opentelemetry.context import Context
from opentelemetry.trace import NoOpTracer, SpanKind, Tracer

from nearline.config import ModelRoute, PrefetchSettings, ProgressiveSettings
from nearline.core.errors import (
    ModelNotFound,
    NearlineError,
    NotCached,
    PermissionDenied,
    UnsupportedParameter,
    UpstreamError,
)
from nearline.core.events import Delta, Done, ErrorEvent, Event
from nearline.core.price import Price
from nearline.core.provider import Provider, ProviderCall
from nearline.core.request import ChatRequest
from nearline.core.source import Source
from nearline.gateway.cache import policy
from nearline.gateway.cache.exact import ExactCache, exact_key
from nearline.gateway.cache.exact_store import EntryKey
from nearline.gateway.cache.partition import SemanticKey, Turn, semantic_key
from nearline.gateway.cache.policy import CacheDirective
from nearline.gateway.cache.recording import RecordedAnswer, recorded, replay
from nearline.gateway.cache.semantic import SemanticCache, SemanticMatch
from nearline.gateway.routing.rules import Router
from nearline.gateway.serving.prefetch import Embed, Prefetcher
from nearline.gateway.serving.progressive import with_preliminary
from nearline.gateway.telemetry.metrics import GatewayMetrics
from nearline.gateway.telemetry.observe import AnswerOutcome, observed
from nearline.gateway.telemetry.requestlog import RequestLog, RequestRecord
from nearline.gateway.telemetry.tracing import genai_request_attributes, traced
from nearline.gateway.tenancy import Tenant

log = logging.getLogger(__name__)

_Store = Callable[[RecordedAnswer], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer whose first event has already arrived (so errors before it are HTTP errors)."""

    first: Event
    rest: AsyncGenerator[Event, None]
    source: Source = Source.INFERENCE
    similarity: float | None = None

    async def events(self) -> AsyncIterator[Event]:
        yield self.first
        async for event in self.rest:
            yield event

    async def aclose(self) -> None:
        await self.rest.aclose()


class ServingPipeline:
    def __init__(
        self,
        models: Mapping[str, ModelRoute],
        providers: Mapping[str, Provider],
        exact: ExactCache | None = None,
        replay_tokens_per_s: float = 0.0,
        metrics: GatewayMetrics | None = None,
        request_log: RequestLog | None = None,
        redact: Callable[[str], str] = str,
        tracer: Tracer | None = None,
        progressive: ProgressiveSettings | None = None,
        router: Router | None = None,
        semantic: SemanticCache | None = None,
        semantic_ttl_s: float = 3600.0,
        prefetch: PrefetchSettings | None = None,
        embed: Embed | None = None,
    ) -> None:
        self._models = dict(models)
        self._providers = dict(providers)
        self._exact = exact
        self._replay_tokens_per_s = replay_tokens_per_s
        self._metrics = metrics or GatewayMetrics()
        self._request_log = request_log
        self._redact = redact
        self._tracer = tracer or NoOpTracer()
        self._progressive = progressive or ProgressiveSettings()
        self._router = router
        self._semantic = semantic
        self._semantic_ttl_s = semantic_ttl_s
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._prefetcher: Prefetcher | None = None
        if prefetch is not None and prefetch.enabled and embed is not None:
            self._prefetcher = Prefetcher(
                prefetch, embed, self._is_cached, self._precompute, self._metrics.prefetches.inc
            )

    @property
    def model_names(self) -> list[str]:
        return sorted(self._models)

    @property
    def exact_cache(self) -> ExactCache | None:
        return self._exact

    @property
    def semantic_cache(self) -> SemanticCache | None:
        return self._semantic

    async def resolve(
        self, request: ChatRequest, tenant: Tenant, headers: Mapping[str, str] | None = None
    ) -> ProviderCall:
        """Check the request against the catalogue and the tenant's rights; name its provider."""
        route = self._models.get(request.model)
        if route is None:
            raise ModelNotFound(
                f"the model {request.model!r} does not exist; available: "
                + ", ".join(self.model_names),
                param="model",
            )
        if not tenant.may_use(request.model):
            raise PermissionDenied(
                f"this API key may not use the model {request.model!r}", param="model"
            )
        if request.wants_tools and not route.supports_tools:
            raise UnsupportedParameter(
                f"the model {request.model!r} does not support tools", param="tools"
            )
        call = ProviderCall(
            request=request,
            upstream_model=route.upstream_model or request.model,
            tenant=tenant.name,
        )
        if self._router is None:
            return call
        return replace(call, provider=await self._router.choose(call, headers or {}))

    def _provider_name(self, call: ProviderCall) -> str:
        return call.provider or self._models[call.request.model].provider

    @property
    def metrics(self) -> GatewayMetrics:
        return self._metrics

    async def answer(
        self,
        call: ProviderCall,
        client_directive: CacheDirective | None = None,
        received_at: float | None = None,
        trace_parent: Context | None = None,
        progressive: bool | None = None,
    ) -> Answer:
        """Start answering; raise ``NearlineError`` if it fails before the first event.

        ``progressive`` is the transport's say (e.g. the ``X-Nearline-Progressive`` header);
        the request's ``nearline.progressive`` and the model's config are consulted too.
        """
        received_at = time.perf_counter() if received_at is None else received_at
        try:
            return await self._answer(
                call, client_directive or CacheDirective(), received_at, trace_parent, progressive
            )
        except NearlineError as error:
            if not error.counted:  # an error event was already counted as it passed
                self._metrics.upstream_errors.labels(
                    model=call.request.model, code=error.code or ""
                ).inc()
            raise

    def _observed(
        self,
        events: AsyncIterator[Event],
        call: ProviderCall,
        source: str,
        received_at: float,
        similarity: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        route = self._models[call.request.model]
        price = route.price
        arrived_unix = time.time() - (time.perf_counter() - received_at)

        def log_request(outcome: AnswerOutcome) -> None:
            if outcome.outcome == "ok" and self._prefetcher is not None:
                self._in_background(self._prefetcher.observe(call))
            if self._request_log is None:
                return
            self._request_log.record(
                self._record(call, source, similarity, arrived_unix, outcome, price)
            )

        return observed(
            events,
            self._metrics,
            model=call.request.model,
            source=source,
            received_at=received_at,
            price=price,
            on_end=log_request,
        )

    def _record(
        self,
        call: ProviderCall,
        source: str,
        similarity: float | None,
        arrived_unix: float,
        outcome: AnswerOutcome,
        price: Price | None,
    ) -> RequestRecord:
        request = call.request
        messages = [{"role": m.role, "content": m.text} for m in request.messages]
        cost = None
        if price is not None and source == Source.INFERENCE:
            cost = price.cost(outcome.usage)
        elif price is not None:
            cost = 0.0  # answered from cache: no upstream spend
        return RequestRecord(
            ts=arrived_unix,
            request_id=uuid.uuid4().hex,
            tenant=call.tenant,
            model=request.model,
            route="chat.completions",
            source=source,
            similarity=similarity,
            stream=request.stream,
            outcome=outcome.outcome,
            error_code=outcome.error_code,
            time_to_first_useful_ms=_ms(outcome.first_useful_s),
            time_to_first_token_ms=_ms(outcome.first_token_s),
            total_ms=outcome.total_s * 1000,
            prompt_tokens=outcome.usage.prompt_tokens,
            completion_tokens=outcome.usage.completion_tokens,
            cached_tokens=outcome.usage.cached_tokens,
            cost_usd=cost,
            input=self._redact(orjson.dumps(messages).decode()),
            output=self._redact(outcome.text),
        )

    async def _answer(
        self,
        call: ProviderCall,
        client_directive: CacheDirective,
        received_at: float,
        trace_parent: Context | None,
        progressive: bool | None,
    ) -> Answer:
        route = self._models[call.request.model]
        directive = client_directive.also(policy.from_request(call.request)).also(
            policy.from_model(route, call.request)
        )
        key = exact_key(call, self._provider_name(call)) if self._exact is not None else None
        if self._exact is not None and key is not None and directive.lookup:
            with self._tracer.start_span("cache.exact", context=trace_parent) as lookup:
                hit = await self._exact.get(key)
                lookup.set_attribute("nearline.gateway.cache.hit", hit is not None)
            if hit is not None:
                self._metrics.cache_hits.labels(tier=Source.EXACT).inc()
                self._count_prefetch_use(call)
                if hit.stale:
                    self._refresh_in_background(call, key)
                return await self._replayed(hit.answer, call, Source.EXACT, 1.0, received_at)
        skey = self._semantic_key(call)
        near: SemanticMatch | None = None
        if self._semantic is not None and skey is not None and directive.lookup:
            with self._tracer.start_span("cache.semantic", context=trace_parent) as lookup:
                match = await self._semantic.lookup(skey.partition, skey.query)
                lookup.set_attribute(
                    "nearline.gateway.cache.hit", match is not None and match.band == "hit"
                )
                if match is not None:
                    lookup.set_attribute("nearline.gateway.cache.similarity", match.similarity)
            if match is not None and match.band == "hit":
                self._metrics.cache_hits.labels(tier=Source.SEMANTIC).inc()
                self._count_prefetch_use(call, match.cached_query)
                answer = RecordedAnswer.from_bytes(match.payload)
                return await self._replayed(
                    answer, call, Source.SEMANTIC, match.similarity, received_at
                )
            near = match
        if directive.lookup and (self._exact is not None or self._semantic is not None):
            self._metrics.cache_misses.inc()
        if directive.only_if_cached:
            raise NotCached("no cache tier holds an answer to this request (only-if-cached)")
        provider_span = self._tracer.start_span(
            f"chat {call.upstream_model}",
            context=trace_parent,
            kind=SpanKind.CLIENT,
            attributes=genai_request_attributes(call.request, self._provider_name(call)),
        )
        events = traced(self._infer(call), provider_span)
        if directive.store and (key is not None or skey is not None):
            events = recorded(events, self._storer(key, skey))
        if self._wants_progressive(call.request, route, progressive):
            events = self._with_preliminary(events, call, near)
        return await _started(
            self._observed(events, call, Source.INFERENCE, received_at), Source.INFERENCE
        )

    async def _replayed(
        self,
        answer: RecordedAnswer,
        call: ProviderCall,
        source: Source,
        similarity: float,
        received_at: float,
    ) -> Answer:
        replayed = replay(answer, source, self._replay_tokens_per_s)
        events = self._observed(replayed, call, source, received_at, similarity=similarity)
        return Answer(first=await anext(events), rest=events, source=source, similarity=similarity)

    def _semantic_key(self, call: ProviderCall) -> SemanticKey | None:
        if self._semantic is None:
            return None
        request = call.request
        turns = [Turn(m.role, m.text) for m in request.messages]
        params = request.answer_changing_params()
        key = semantic_key(call.tenant, request.model, turns, params)
        if key is None:
            return None
        # Tiers chosen per request answer differently: keep their entries apart.
        return SemanticKey(f"{key.partition}|{self._provider_name(call)}", key.query)

    def _with_preliminary(
        self, refined: AsyncGenerator[Event, None], call: ProviderCall, near: SemanticMatch | None
    ) -> AsyncGenerator[Event, None]:
        """The fastest credible preliminary: a near-match's answer, else a light-model draft."""
        if near is not None:
            text = RecordedAnswer.from_bytes(near.payload).text
            return with_preliminary(
                refined,
                _single(Delta(text)),
                source=Source.SEMANTIC_NEAR,
                similarity=near.similarity,
            )
        draft = self._draft(call)
        if draft is None:
            return refined
        return with_preliminary(refined, draft, source=Source.DRAFT)

    def _wants_progressive(
        self, request: ChatRequest, route: ModelRoute, transport_says: bool | None
    ) -> bool:
        if request.nearline.progressive is not None:
            return request.nearline.progressive
        if transport_says is not None:
            return transport_says
        return route.progressive

    def _draft(self, call: ProviderCall) -> AsyncGenerator[Event, None] | None:
        """A quick answer from the light model, when one is configured and it is not the
        model that gives the refined answer anyway."""
        draft_model = self._progressive.draft_model
        draft_route = self._models.get(draft_model) if draft_model else None
        if draft_route is None or draft_route.provider == self._provider_name(call):
            return None
        request = call.request.model_copy(
            update={
                "model": draft_model,
                "max_tokens": self._progressive.draft_max_tokens,
                "max_completion_tokens": None,
                "stream": True,
            }
        )
        draft_call = ProviderCall(
            request=request,
            upstream_model=draft_route.upstream_model or request.model,
            tenant=call.tenant,
            deadline=call.deadline,
        )
        return _guarded(self._providers[draft_route.provider].stream(draft_call))

    def _infer(self, call: ProviderCall) -> AsyncGenerator[Event, None]:
        return _guarded(self._providers[self._provider_name(call)].stream(call))

    def _storer(self, key: EntryKey | None, skey: SemanticKey | None = None) -> _Store:
        exact, semantic, ttl_s = self._exact, self._semantic, self._semantic_ttl_s

        async def store(answer: RecordedAnswer) -> None:
            if exact is not None and key is not None:
                await exact.put(key, answer)
            if semantic is not None and skey is not None:
                await semantic.store(skey.partition, skey.query, answer.to_bytes(), ttl_s)

        return store

    # --- prefetch ----------------------------------------------------------------------

    def _count_prefetch_use(self, call: ProviderCall, question: str | None = None) -> None:
        if self._prefetcher is not None and self._prefetcher.was_prefetched(call, question):
            self._metrics.prefetch_used.inc()

    async def _is_cached(self, call: ProviderCall) -> bool:
        key = exact_key(call, self._provider_name(call)) if self._exact is not None else None
        if self._exact is not None and key is not None and await self._exact.get(key) is not None:
            return True
        skey = self._semantic_key(call)
        if self._semantic is not None and skey is not None:
            match = await self._semantic.lookup(skey.partition, skey.query)
            return match is not None and match.band == "hit"
        return False

    async def _precompute(self, call: ProviderCall) -> None:
        """Answer ``call`` into the caches, as if asked, without a client."""
        key = exact_key(call, self._provider_name(call)) if self._exact is not None else None
        self._in_background(
            self._drain(recorded(self._infer(call), self._storer(key, self._semantic_key(call))))
        )

    async def _drain(self, events: AsyncIterator[Event]) -> None:
        async for event in events:
            if isinstance(event, ErrorEvent):
                log.warning("prefetch failed: %s", event.error.message)

    def _in_background(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _refresh_in_background(self, call: ProviderCall, key: EntryKey) -> None:
        if key.digest in self._refreshing:
            return  # one refresh per stale entry
        task = asyncio.create_task(self._refresh(call, key))
        self._refreshing[key.digest] = task
        task.add_done_callback(lambda _: self._refreshing.pop(key.digest, None))

    async def _refresh(self, call: ProviderCall, key: EntryKey) -> None:
        try:
            async for event in recorded(self._infer(call), self._storer(key)):
                if isinstance(event, ErrorEvent):
                    log.warning("stale-entry refresh failed: %s", event.error.message)
        except NearlineError as error:
            log.warning("stale-entry refresh failed: %s", error.message)

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for task in list(self._refreshing.values()):
            task.cancel()
        await asyncio.gather(*self._refreshing.values(), return_exceptions=True)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


async def _started(events: AsyncGenerator[Event, None], source: Source) -> Answer:
    try:
        first = await anext(events)
    except StopAsyncIteration as exc:
        raise UpstreamError("the provider produced no answer") from exc
    if isinstance(first, ErrorEvent):
        await events.aclose()
        first.error.counted = True  # the observed stream counted it
        raise first.error
    return Answer(first=first, rest=events, source=source)


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
