"""What the extra wire formats share: strict request models, one JSON parse, errors that name
the field, and the validation of a translated body as a ``ChatRequest``."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from nearline.core.errors import InvalidRequest
from nearline.core.request import ChatRequest, check_bounds

M = TypeVar("M", bound=BaseModel)


class Wire(BaseModel):
    """A request model that refuses unknown fields and loose types, as ``ChatRequest`` does."""

    model_config = ConfigDict(extra="forbid", strict=True)


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidRequest("the request body must be a JSON object")
    check_bounds(payload)  # as a chat body is bounded: depth, lengths, size
    return payload


def invalid_from(error: ValidationError) -> InvalidRequest:
    """A pydantic error as the 400 naming the field (the deepest of a union's reports)."""
    first = max(error.errors(include_url=False), key=lambda e: len(e["loc"]))
    path = ".".join(str(p) for p in first["loc"] if not (isinstance(p, str) and "[" in p))
    param = path.split(".")[0] or None
    if first["type"] == "extra_forbidden":
        return InvalidRequest(f"unrecognized request argument supplied: {path}", param=param)
    if first["type"] == "missing":
        return InvalidRequest(f"missing required parameter: {path}", param=param)
    return InvalidRequest(f"invalid value for {path}: {first['msg']}", param=param)


def validated(model: type[M], payload: dict[str, Any]) -> M:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise invalid_from(exc) from exc


def to_chat(body: dict[str, Any]) -> ChatRequest:
    """Validate a translated body as a ``ChatRequest`` (OpenAI's rules apply to it too)."""
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid_from(exc) from exc
