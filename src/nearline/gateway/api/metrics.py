"""``GET /metrics`` in Prometheus' text format (a metrics or admin key when auth is on)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from nearline.gateway.api.access import require_metrics_reader
from nearline.gateway.api.state import app_state

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    require_metrics_reader(request)
    state = app_state(request)
    depth = getattr(state.providers.get("local"), "queue_depth", 0)
    state.pipeline.metrics.queue_depth.set(depth)
    if state.request_log is not None:
        state.pipeline.metrics.request_log_dropped.set(state.request_log.dropped)
    return Response(state.pipeline.metrics.render(), media_type=CONTENT_TYPE_LATEST)
