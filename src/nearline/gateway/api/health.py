"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from nearline.gateway.api.responses import JSONBody
from nearline.gateway.api.state import app_state

router = APIRouter()


@router.get("/healthz")
async def liveness() -> Response:
    return JSONBody({"status": "ok"})


@router.get("/readyz")
async def readiness(request: Request) -> Response:
    providers = app_state(request).providers
    not_ready = sorted(name for name, provider in providers.items() if not provider.is_ready())
    if not_ready:
        return JSONBody({"status": "starting", "not_ready": not_ready}, status_code=503)
    return JSONBody({"status": "ready"})
