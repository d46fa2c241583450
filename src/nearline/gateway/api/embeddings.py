"""``POST /v1/embeddings``. Thin: parse, authenticate, embed (``serving/embeddings.py``:
the bundled MiniLM or an upstream's model, exact-cached per tenant), render floats or
base64. This router's lifespan owns the embedding service (its model, its cache store and
its upstream sessions)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from nearline.config import Settings
from nearline.gateway.api.openai import request_tenant
from nearline.gateway.api.responses import JSONBody
from nearline.gateway.cache.exact_store import ExactStore, MemoryExactStore, RedisExactStore
from nearline.gateway.providers.openai_embeddings import UpstreamEmbeddings
from nearline.gateway.serving.embeddings import EmbeddingRequest, EmbeddingService, encode_vector
from nearline.gateway.serving.service import REQUEST_ID_HEADER
from nearline.gateway.serving.sse import new_request_id
from nearline.gateway.serving.wire import parse_json, validated


def _store(settings: Settings) -> tuple[ExactStore | None, aioredis.Redis | None]:
    if not settings.cache.exact.enabled:
        return None, None
    if settings.redis.url:
        client = aioredis.from_url(settings.redis.url)
        return RedisExactStore(client, prefix="nearline:embed:v1"), client
    return MemoryExactStore(settings.cache.exact.max_entries), None


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state.nearline  # the gateway's lifespan built it just before
    settings: Settings = state.settings
    store, client = _store(settings)
    upstreams = {
        name: UpstreamEmbeddings(name, provider)
        for name, provider in settings.providers.items()
        if provider.format == "openai"
    }
    service = EmbeddingService(settings, state.catalogue, store, upstreams)
    app.state.nearline_embeddings = service
    try:
        yield
    finally:
        await service.aclose()
        if store is not None:
            await store.aclose()
        if client is not None:
            await client.aclose()


router = APIRouter(lifespan=_lifespan)


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    tenant = request_tenant(request)
    wire = validated(EmbeddingRequest, parse_json(await request.body()))
    service: EmbeddingService = request.app.state.nearline_embeddings
    embedded = await service.embed(wire, tenant)
    data = [
        {"object": "embedding", "index": i, "embedding": encode_vector(v, wire.encoding_format)}
        for i, v in enumerate(embedded.vectors)
    ]
    tokens = embedded.prompt_tokens
    headers = {
        REQUEST_ID_HEADER: new_request_id().replace("chatcmpl-", "emb-"),
        "x-nearline-source": "exact" if embedded.cached == len(data) else "inference",
        "x-nearline-cached-inputs": str(embedded.cached),
    }
    body = {
        "object": "list",
        "data": data,
        "model": wire.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return JSONBody(body, headers=headers)
