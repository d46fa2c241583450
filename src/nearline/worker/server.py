"""The worker's own small HTTP face: health, Prometheus metrics, the results push API and the
ingest API (``POST /v1/streams/{source}/events``)."""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from nearline.config import Settings
from nearline.core.http import install_error_handlers
from nearline.worker.ingest import create_ingest_router
from nearline.worker.push import create_push_router
from nearline.worker.worker import Worker


def create_worker_app(worker: Worker, settings: Settings | None = None) -> FastAPI:
    """Health, metrics, the push API for the results streams and the ingest API for the
    sources (keys as ``settings.auth`` configures them for the gateway: tenant and admin keys)."""
    settings = settings or Settings()
    app = FastAPI(title="nearline worker", docs_url=None, redoc_url=None)
    install_error_handlers(app)  # errors in OpenAI's shape, as the gateway answers them
    results = sorted({p.results for p in worker.pipelines if p.results is not None})

    @app.get("/healthz")
    async def liveness() -> Response:
        return JSONResponse({"status": "ok", "pipelines": [p.name for p in worker.pipelines]})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(worker.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(create_push_router(worker.broker, results, stop=worker.stopping))
    auth = settings.auth
    app.include_router(
        create_ingest_router(
            worker.broker,
            sorted({p.source for p in worker.pipelines}),
            key_digests=[key.sha256 for key in auth.keys] + list(auth.admin_keys),
            max_events=settings.worker.ingest_max_events,
            max_body_bytes=settings.worker.ingest_max_body_bytes,
        )
    )
    return app


async def serve_with_worker(worker: Worker, settings: Settings, port: int) -> None:
    """Run ``worker`` and its HTTP face until either stops (a signal stops both)."""
    config = uvicorn.Config(
        create_worker_app(worker, settings),
        host=settings.server.host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws="websockets-sansio",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    working = asyncio.create_task(worker.run())
    done, _ = await asyncio.wait({serving, working}, return_when=asyncio.FIRST_COMPLETED)
    worker.stop()
    server.should_exit = True
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await working  # raises WorkerCrashed if a task of the worker failed
    finally:
        await serving
    for task in done:
        task.result()
