"""``create_app(settings)``: the ASGI app. The lifespan owns every provider and client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI

from nearline import __version__
from nearline.api import admin, health, metrics, openai, pages, ws
from nearline.api.body_limit import BodyLimitMiddleware
from nearline.api.errors import install_error_handlers
from nearline.api.state import AppState
from nearline.cache.exact import ExactCache
from nearline.cache.exact_store import ExactStore, MemoryExactStore, RedisExactStore
from nearline.config import Settings
from nearline.providers.registry import build_providers
from nearline.serving.pipeline import ServingPipeline
from nearline.tenancy import KeyRing


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


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        providers = build_providers(settings)
        redis_client = aioredis.from_url(settings.redis.url) if settings.redis.url else None
        exact = build_exact_cache(settings, redis_client)
        pipeline = ServingPipeline(
            settings.models, providers, exact, settings.cache.replay_tokens_per_s
        )
        try:
            for provider in providers.values():
                await provider.start()
            app.state.nearline = AppState(
                settings=settings,
                keyring=KeyRing(settings.auth),
                providers=providers,
                pipeline=pipeline,
            )
            yield
        finally:
            await pipeline.aclose()
            if exact is not None:
                await exact.aclose()
            for provider in providers.values():
                await provider.aclose()
            if redis_client is not None:
                await redis_client.aclose()

    app = FastAPI(
        title="nearline",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(openai.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(metrics.router)
    app.include_router(ws.router)
    app.include_router(pages.router)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.server.max_body_bytes)
    return app
