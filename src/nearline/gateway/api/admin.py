"""Admin calls: purge cache entries by tenant and/or model.

Allowed with an admin key (``auth.admin_keys``, SHA-256 digests); open only with no keys
of any kind configured on a loopback bind (``access.py`` says who may call what).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.responses import Response

from nearline.core.errors import InvalidRequest
from nearline.gateway.api.access import require_admin
from nearline.gateway.api.responses import JSONBody
from nearline.gateway.api.state import app_state

router = APIRouter()


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str | None = None
    model: str | None = None


@router.post("/admin/cache/purge")
async def purge_cache(request: Request) -> Response:
    require_admin(request)
    try:
        body = PurgeRequest.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        raise InvalidRequest(f"invalid purge request: {exc.errors(include_url=False)}") from exc
    purged = await app_state(request).pipeline.tiers.purge(body.tenant, body.model)
    return JSONBody({"purged": purged, "tenant": body.tenant, "model": body.model})
