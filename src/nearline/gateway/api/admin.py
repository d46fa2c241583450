"""Admin calls: purge cache entries by tenant and/or model.

Allowed with an admin key (``auth.admin_keys``, SHA-256 digests), or to anyone when auth is
off (no keys configured and a loopback bind).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.responses import Response

from nearline.config import hash_api_key
from nearline.core.errors import AuthenticationFailed, InvalidRequest
from nearline.gateway.api.responses import JSONBody
from nearline.gateway.api.state import app_state
from nearline.gateway.tenancy import bearer_key

router = APIRouter()


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str | None = None
    model: str | None = None


def _require_admin(request: Request) -> None:
    settings = app_state(request).settings
    if not settings.auth_enabled:
        return
    key = bearer_key(request.headers.get("authorization"))
    if key is None or hash_api_key(key) not in settings.auth.admin_keys:
        raise AuthenticationFailed("an admin API key is required")


@router.post("/admin/cache/purge")
async def purge_cache(request: Request) -> Response:
    _require_admin(request)
    try:
        body = PurgeRequest.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        raise InvalidRequest(f"invalid purge request: {exc.errors(include_url=False)}") from exc
    purged = await app_state(request).pipeline.tiers.purge(body.tenant, body.model)
    return JSONBody({"purged": purged, "tenant": body.tenant, "model": body.model})
