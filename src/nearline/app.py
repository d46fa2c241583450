"""``create_app(settings)``: the ASGI app. The lifespan owns every provider and client."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import Tracer

from nearline import __version__
from nearline.config import Settings
from nearline.core.provider import Provider
from nearline.embed import EmbeddingBatcher, load_embedder
from nearline.gateway.api import (
    admin,
    completions,
    embeddings,
    health,
    messages,
    metrics,
    openai,
    openai_responses,
    pages,
    ws,
)
from nearline.gateway.api.body_limit import BodyLimitMiddleware
from nearline.gateway.api.errors import install_error_handlers
from nearline.gateway.api.origin import BrowserGuard
from nearline.gateway.api.state import AppState
from nearline.gateway.cache.exact import ExactCache
from nearline.gateway.cache.exact_store import ExactStore, MemoryExactStore, RedisExactStore
from nearline.gateway.cache.semantic import SemanticCache, SemanticThresholds
from nearline.gateway.cache.semantic_store import MemoryStore, RedisStore, SemanticStore
from nearline.gateway.cache.thresholds import LearnedThresholds
from nearline.gateway.cache.verify import OnlineLearning, online_learning
from nearline.gateway.keys import KeyManager, build_key_manager
from nearline.gateway.limits import Governor, MemoryCounters, build_counters
from nearline.gateway.plan.provider import attach_caches
from nearline.gateway.providers.build import build_providers
from nearline.gateway.routing.build import build_router, provider_reach
from nearline.gateway.routing.telemetry import RoutingCounters
from nearline.gateway.serving.catalogue import Catalogue
from nearline.gateway.serving.pipeline import ServingPipeline
from nearline.gateway.serving.service import ChatService
from nearline.gateway.serving.tiers import CacheTiers
from nearline.gateway.telemetry.metrics import GatewayMetrics
from nearline.gateway.telemetry.observe import AnswerObserver
from nearline.gateway.telemetry.requestlog import (
    PostgresSink,
    Redactor,
    RequestLog,
    RowSink,
    SqliteSink,
)
from nearline.gateway.telemetry.tracing import UnexportedTracer, build_tracer_provider, tracer_from
from nearline.gateway.tenancy import KeyRing
from nearline.insights.dashboard import routes as dashboard


def build_exact_cache(settings: Settings, redis_client: aioredis.Redis | None) -> ExactCache | None:
    config = settings.cache.exact
    if not config.enabled:
        return None
    store: ExactStore = (
        RedisExactStore(redis_client)
        if redis_client is not None
        else MemoryExactStore(config.max_entries)
    )
    return ExactCache(store, config.ttl_s, config.stale_while_revalidate_s)


async def build_semantic_cache(
    settings: Settings, redis_client: aioredis.Redis | None, batcher: EmbeddingBatcher | None
) -> SemanticCache | None:
    """Start the semantic tier on the shared embedding batcher."""
    config = settings.cache.semantic
    if not config.enabled or batcher is None:
        return None
    store: SemanticStore = RedisStore(redis_client) if redis_client is not None else MemoryStore()
    cache = SemanticCache(
        batcher,
        store=store,
        thresholds=SemanticThresholds(hit=config.hit_threshold, near=config.near_threshold),
        snapshot_dir=config.snapshot_dir,
        learned=None
        if config.max_error_rate is None
        else LearnedThresholds(
            config.max_error_rate,
            static_hit=config.hit_threshold,
            per_request=config.error_bound == "per-request",
            verify_rate=config.verify_rate,
        ),
    )
    await cache.start()
    return cache


def build_learning(
    stack: AsyncExitStack,
    settings: Settings,
    semantic: SemanticCache | None,
    batcher: EmbeddingBatcher | None,
    metrics: GatewayMetrics,
) -> OnlineLearning | None:
    """The semantic tier's online learning, when ``cache.semantic.max_error_rate`` is set."""
    if semantic is None or batcher is None or semantic.learned is None:
        return None
    learning = online_learning(
        semantic,
        batcher.embed,
        verify_rate=settings.cache.semantic.verify_rate,
        verify_per_minute=settings.cache.semantic.verify_per_minute,
        on_outcome=metrics.observe_semantic_outcome,
    )
    stack.push_async_callback(learning.aclose)
    return learning


def build_tiers(
    settings: Settings,
    catalogue: Catalogue,
    providers: Mapping[str, Provider],
    exact: ExactCache | None,
    semantic: SemanticCache | None,
    learning: OnlineLearning | None,
) -> CacheTiers:
    """Both cache tiers behind one object; the plans among ``providers`` cache their own
    calls in it (bound here: the tiers are built over the catalogue, after the providers)."""
    tiers = CacheTiers(
        catalogue.provider_name,
        exact,
        semantic,
        semantic_ttl_s=settings.cache.semantic.ttl_s,
        learning=learning,
    )
    attach_caches(providers.values(), tiers, settings.models)
    return tiers


def build_request_log(settings: Settings) -> RequestLog | None:
    config = settings.request_log
    if not config.enabled:
        return None
    sink: RowSink = (
        PostgresSink(config.postgres_dsn) if config.postgres_dsn else SqliteSink(config.sqlite_path)
    )
    return RequestLog(sink, buffer_rows=config.buffer_rows, retention_days=config.retention_days)


def open_redis(settings: Settings, stack: AsyncExitStack) -> aioredis.Redis | None:
    """The shared Redis client (``redis.url``), closed with ``stack``."""
    client = aioredis.from_url(settings.redis.url) if settings.redis.url else None
    if client is not None:
        stack.push_async_callback(client.aclose)
    return client


async def build_keys_and_limits(
    settings: Settings, redis_client: aioredis.Redis | None, stack: AsyncExitStack
) -> tuple[KeyRing, KeyManager, Governor]:
    """The key ring, the key store it follows, and the rate limits and budgets over them."""
    keyring = KeyRing(settings.auth)
    keys = build_key_manager(settings, keyring)
    await keys.start()
    stack.push_async_callback(keys.aclose)
    counters = build_counters(settings, redis_client)
    if isinstance(counters, MemoryCounters):
        counters.seed_spend(await keys.period_spend())  # budgets hold across a restart
    await counters.start()
    stack.push_async_callback(counters.aclose)
    return keyring, keys, Governor(counters, settings.limits, spend_sink=keys.record_spend)


def create_app(settings: Settings, span_exporter: SpanExporter | None = None) -> FastAPI:
    """The gateway. ``span_exporter`` receives every finished span (tests, embedding apps)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Each thing's teardown is pushed right after it is built or started, so shutdown
        # runs in the reverse order: the pipeline first, the tracer's flush last.
        async with AsyncExitStack() as stack:
            tracer: Tracer = UnexportedTracer()
            if settings.tracing.otlp_endpoint or span_exporter is not None:
                tracer_provider = build_tracer_provider(
                    settings.tracing.service_name, settings.tracing.otlp_endpoint, span_exporter
                )
                stack.callback(tracer_provider.shutdown)  # flushes the OTLP exporter
                tracer = tracer_from(tracer_provider)
            metrics = GatewayMetrics()
            redis_client = open_redis(settings, stack)
            keyring, keys, governor = await build_keys_and_limits(settings, redis_client, stack)
            providers = build_providers(settings, RoutingCounters(metrics.registry))
            for provider in providers.values():
                await provider.start()
                stack.push_async_callback(provider.aclose)
            exact = build_exact_cache(settings, redis_client)
            if exact is not None:
                stack.push_async_callback(exact.aclose)
            batcher = None
            if settings.cache.semantic.enabled or settings.prefetch.enabled:
                batcher = EmbeddingBatcher(await asyncio.to_thread(load_embedder))
                stack.push_async_callback(batcher.aclose)
            semantic = await build_semantic_cache(settings, redis_client, batcher)
            if semantic is not None:
                stack.push_async_callback(semantic.aclose)
            learning = build_learning(stack, settings, semantic, batcher, metrics)
            request_log = build_request_log(settings)
            if request_log is not None:
                await request_log.start()
                stack.push_async_callback(request_log.aclose)
            router = build_router(settings.routing)
            stack.push_async_callback(router.aclose)
            catalogue = Catalogue(
                settings.models,
                providers,
                router,
                reach=functools.partial(provider_reach, settings.routing),
            )
            tiers = build_tiers(settings, catalogue, providers, exact, semantic, learning)
            observer = AnswerObserver(
                metrics,
                tracer=tracer,
                request_log=request_log,
                redact=Redactor(
                    settings.request_log.redact_patterns, settings.request_log.store_content
                ),
            )
            pipeline = ServingPipeline(
                catalogue,
                tiers,
                observer,
                replay_tokens_per_s=settings.cache.replay_tokens_per_s,
                progressive=settings.progressive,
                prefetch=settings.prefetch,
                embed=batcher.embed if batcher is not None else None,
            )
            stack.push_async_callback(pipeline.aclose)
            app.state.nearline = AppState(
                settings=settings,
                keyring=keyring,
                providers=providers,
                catalogue=catalogue,
                pipeline=pipeline,
                service=ChatService(catalogue, pipeline, observer, governor=governor),
                request_log=request_log,
                tracer=tracer,
                keys=keys,
                governor=governor,
            )
            yield

    app = FastAPI(
        title="nearline",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    for face in (openai, completions, embeddings, openai_responses, messages):  # the APIs
        app.include_router(face.router)
    for face in (health, admin, metrics, ws, pages, dashboard):
        app.include_router(face.router)
    app.add_middleware(openai.ChatRoute)  # innermost: the chat route without FastAPI's layers
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.server.max_body_bytes)
    # Outermost (added last): the drive-by guard, with CORS for allowed origins behind it.
    app.add_middleware(
        BrowserGuard,
        allowed_hosts=settings.server.allowed_hosts,
        allowed_origins=settings.server.allowed_origins,
    )
    return app
