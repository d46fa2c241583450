"""Admin calls: purge cache entries; manage API keys; read spend (docs/keys.md).

Purge and spend are allowed with an admin key (``auth.admin_keys``, SHA-256 digests) and
open only with no keys of any kind configured on a loopback bind; the key API always needs
an admin key (``access.py`` says who may call what).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from nearline.config import KeyLimits
from nearline.core.errors import InvalidRequest, NearlineError
from nearline.gateway.api.access import require_admin, require_admin_key
from nearline.gateway.api.responses import JSONBody
from nearline.gateway.api.state import app_state
from nearline.gateway.keys import KeyManager, KeyRecord
from nearline.gateway.limits.window import period_start
from nearline.gateway.tenancy import config_key_id

router = APIRouter()
Body = TypeVar("Body", bound=BaseModel)


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str | None = None
    model: str | None = None


class KeyNotFound(NearlineError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "key_not_found"


class ConfigKey(NearlineError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "key_in_config"


async def _body(request: Request, model: type[Body], what: str) -> Body:
    try:
        return model.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        raise InvalidRequest(f"invalid {what}: {exc.errors(include_url=False)}") from exc


@router.post("/admin/cache/purge")
async def purge_cache(request: Request) -> Response:
    require_admin(request)
    body = await _body(request, PurgeRequest, "purge request")
    purged = await app_state(request).pipeline.tiers.purge(body.tenant, body.model)
    return JSONBody({"purged": purged, "tenant": body.tenant, "model": body.model})


# --- keys ---------------------------------------------------------------------------------


class KeyFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=200)
    models: list[str] | None = None  # None: every model
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    budget_usd: float | None = Field(default=None, ge=0)
    budget_period: Literal["day", "month"] = "month"


class CreateKey(KeyFields):
    tenant: str = Field(min_length=1, max_length=200)


def _manager(request: Request) -> KeyManager:
    require_admin_key(request)
    return _store(request)


def _store(request: Request) -> KeyManager:
    manager = app_state(request).keys
    if manager is None:
        raise NearlineError("this gateway was built without a key store")
    return manager


async def _record(manager: KeyManager, request: Request, key_id: str) -> KeyRecord:
    record = await manager.store.key(key_id)
    if record is None:
        if any(config_key_id(k.sha256) == key_id for k in app_state(request).settings.auth.keys):
            raise ConfigKey(f"the key {key_id!r} is written in the config file: change it there")
        raise KeyNotFound(f"no API key {key_id!r}")
    return record


@router.post("/admin/keys")
async def create_key(request: Request) -> Response:
    manager = _manager(request)
    body = await _body(request, CreateKey, "key")
    limits = KeyLimits(
        rpm=body.rpm, tpm=body.tpm, budget_usd=body.budget_usd, budget_period=body.budget_period
    )
    record, secret = await manager.create(
        body.tenant, name=body.name, models=body.models, limits=limits
    )
    return JSONBody({**record.public(), "key": secret}, status_code=201)


@router.get("/admin/keys")
async def list_keys(request: Request, tenant: str | None = None) -> Response:
    manager = _manager(request)
    data: list[dict[str, Any]] = [
        _config_key(key.sha256, key.tenant, key.models, key.limits)
        for key in app_state(request).settings.auth.keys
        if tenant is None or key.tenant == tenant
    ]
    data += [record.public() for record in await manager.store.keys(tenant=tenant)]
    return JSONBody({"object": "list", "data": data})


@router.get("/admin/keys/{key_id}")
async def get_key(request: Request, key_id: str) -> Response:
    manager = _manager(request)
    return JSONBody((await _record(manager, request, key_id)).public())


@router.patch("/admin/keys/{key_id}")
async def update_key(request: Request, key_id: str) -> Response:
    """Change what the body names (``null`` clears a limit); the rest stays."""
    manager = _manager(request)
    body = await _body(request, KeyFields, "key update")
    record = await _record(manager, request, key_id)
    given = body.model_dump(include=body.model_fields_set)
    models = given.get("models", record.models)
    limits = record.limits.model_copy(
        update={k: v for k, v in given.items() if k in KeyLimits.model_fields}
    )
    updated = replace(
        record,
        name=given.get("name", record.name),
        models=None if models is None else tuple(models),
        limits=KeyLimits.model_validate(limits.model_dump()),
    )
    return JSONBody((await manager.replace(updated)).public())


@router.post("/admin/keys/{key_id}/revoke")
@router.delete("/admin/keys/{key_id}")
async def revoke_key(request: Request, key_id: str) -> Response:
    """The key is refused at once here, and by every replica within ``poll_interval_s``."""
    manager = _manager(request)
    record = await _record(manager, request, key_id)
    if record.revoked_ts is None:
        record = await manager.replace(replace(record, revoked_ts=time.time()))
    return JSONBody(record.public())


@router.post("/admin/keys/{key_id}/rotate")
async def rotate_key(request: Request, key_id: str) -> Response:
    """A new secret for the key (returned once); the old one stops working now."""
    manager = _manager(request)
    record = await _record(manager, request, key_id)
    if record.revoked_ts is not None:
        raise InvalidRequest(f"the key {key_id!r} is revoked: create a new one")
    rotated, secret = await manager.rotate(record)
    return JSONBody({**rotated.public(), "key": secret})


def _config_key(
    sha256: str, tenant: str, models: list[str] | None, limits: KeyLimits
) -> dict[str, Any]:
    return {
        "id": config_key_id(sha256),
        "object": "api_key",
        "tenant": tenant,
        "models": models,
        **limits.model_dump(),
        "source": "config",
    }


# --- spend --------------------------------------------------------------------------------


def _since(value: str | None) -> float:
    """Unix seconds, or an ISO date or date-time (UTC unless it says); default: this month."""
    if value is None:
        return period_start("month")
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequest(
            f"invalid since {value!r}: give unix seconds or an ISO date", param="since"
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


@router.get("/admin/spend")
async def spend(
    request: Request,
    tenant: str | None = None,
    key: str | None = None,
    model: str | None = None,
    since: str | None = None,
) -> Response:
    """Spend (catalogue prices, inference only) beside what the caches saved, per tenant,
    key and model, since ``since`` (minute resolution)."""
    require_admin(request)
    manager = _store(request)
    start = _since(since)
    await manager.flush_spend()  # this replica's last second too
    rows = await manager.store.spend(since=start, tenant=tenant, key_id=key, model=model)
    by = [
        {
            "tenant": r.tenant,
            "key": r.key_id or None,
            "model": r.model,
            "requests": r.requests,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "spend_usd": r.cost_usd,
            "saved_usd": r.saved_usd,
        }
        for r in rows
    ]
    return JSONBody(
        {
            "object": "spend",
            "since": int(start),
            "filters": {"tenant": tenant, "key": key, "model": model},
            "requests": sum(r.requests for r in rows),
            "spend_usd": sum(r.cost_usd for r in rows),
            "saved_usd": sum(r.saved_usd for r in rows),
            "by": by,
        }
    )
