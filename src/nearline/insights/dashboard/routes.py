"""The live dashboard: ``GET /dashboard`` (the page, ``static/dashboard.*``) and
``GET /dashboard/data`` (its figures, polled every second; see ``nearline.insights.dashboard``).

The page is static HTML and says nothing; its data needs a metrics or admin key whenever
``/metrics`` does (``gateway/api/access.py``): the page sends the key given in its URL
fragment (``/dashboard#key=…``)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, JSONResponse, Response

from nearline.gateway.api.access import require_metrics_reader
from nearline.gateway.api.pages import STATIC_DIR
from nearline.gateway.api.state import app_state
from nearline.insights.dashboard.history import Restored, restore
from nearline.insights.dashboard.snapshot import dashboard_data
from nearline.insights.dashboard.worker_lag import WorkerLagReader
from nearline.insights.requestlog import LogLocation

router = APIRouter()
_READER_KEY = "nearline_dashboard_worker_lag"
_RESTORED_KEY = "nearline_dashboard_restored"


@router.get("/dashboard", include_in_schema=False)
async def dashboard_page() -> Response:
    return FileResponse(
        STATIC_DIR / "dashboard.html",
        media_type="text/html; charset=utf-8",
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/dashboard/data")
async def dashboard_figures(request: Request) -> Response:
    require_metrics_reader(request)
    state = app_state(request)
    workers = await _worker_lag_reader(request).read()
    restored = await _restored(request)
    return JSONResponse(
        dashboard_data(state.pipeline.metrics, workers, restored),
        headers={"Cache-Control": "no-store"},
    )


async def _restored(request: Request) -> Restored | None:
    """The request log's rows from before this process, read once per app (on first use,
    off the event loop; a lock keeps concurrent first reads to one)."""
    holder = getattr(request.app.state, _RESTORED_KEY, None)
    if not isinstance(holder, _RestoredOnce):
        holder = _RestoredOnce()
        setattr(request.app.state, _RESTORED_KEY, holder)
    async with holder.lock:
        if not holder.done:
            state = app_state(request)
            config = state.settings.request_log
            location = (
                LogLocation(sqlite_path=config.sqlite_path, postgres_dsn=config.postgres_dsn)
                if config.enabled
                else None
            )
            holder.value = await restore(location, state.pipeline.metrics.started_unix)
            holder.done = True
    return holder.value


class _RestoredOnce:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.done = False
        self.value: Restored | None = None


def _worker_lag_reader(request: Request) -> WorkerLagReader:
    """One reader per app, made on first use (it shares scrapes between open dashboards)."""
    reader = getattr(request.app.state, _READER_KEY, None)
    if not isinstance(reader, WorkerLagReader):
        settings = app_state(request).settings.dashboard
        reader = WorkerLagReader(
            settings.worker_metrics_urls,
            timeout_s=settings.worker_scrape_timeout_s,
            interval_s=settings.worker_scrape_interval_s,
        )
        setattr(request.app.state, _READER_KEY, reader)
    return reader
