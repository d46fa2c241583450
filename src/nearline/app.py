"""``create_app(settings)``: the ASGI app. The lifespan owns every provider and client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from nearline import __version__
from nearline.api import health, openai
from nearline.api.body_limit import BodyLimitMiddleware
from nearline.api.errors import install_error_handlers
from nearline.api.state import AppState
from nearline.config import Settings
from nearline.providers.registry import build_providers
from nearline.serving.pipeline import ServingPipeline
from nearline.tenancy import KeyRing


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        providers = build_providers(settings)
        try:
            for provider in providers.values():
                await provider.start()
            app.state.nearline = AppState(
                settings=settings,
                keyring=KeyRing(settings.auth),
                providers=providers,
                pipeline=ServingPipeline(settings.models, providers),
            )
            yield
        finally:
            for provider in providers.values():
                await provider.aclose()

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
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.server.max_body_bytes)
    return app
