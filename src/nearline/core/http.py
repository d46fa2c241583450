"""What every nearline HTTP face shares: JSON rendered with orjson, and one renderer of errors.

The gateway and the worker answer every error in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``: nearline's own errors
(``core/errors.py``), Starlette's ``HTTPException`` (an unknown route, a wrong method, a
router's ``raise HTTPException(404, ...)``) and FastAPI's request validation errors (400, as
the gateway has always answered them); anything else is a bug, answered as a JSON 500 that
names the request (``x-request-id``), its traceback logged. ``install_error_handlers(app)``
puts the handlers on an app.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from nearline.core.errors import InternalError, InvalidRequest, NearlineError

REQUEST_ID_HEADER = "x-request-id"


class JSONBody(Response):
    """A JSON response rendered with orjson (the gateway's hot path renders a lot of JSON)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: NearlineError) -> JSONBody:
    return JSONBody(error.body(), status_code=error.status_code, headers=error.headers())


def http_error(exc: StarletteHTTPException) -> NearlineError:
    """Starlette's ``HTTPException`` as a ``NearlineError`` with the same status."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    error = NearlineError(str(exc.detail), code=code)
    error.status_code = exc.status_code
    error.error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return error


def install_error_handlers(app: FastAPI) -> None:
    """Render every error ``app`` answers in OpenAI's error shape."""

    async def on_nearline_error(_: Request, exc: Exception) -> JSONBody:
        assert isinstance(exc, NearlineError)
        return error_response(exc)

    async def on_http_error(_: Request, exc: Exception) -> JSONBody:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(http_error(exc))

    async def on_validation_error(_: Request, exc: Exception) -> JSONBody:
        assert isinstance(exc, RequestValidationError)
        return error_response(InvalidRequest(str(exc.errors())))

    async def on_bug(_: Request, exc: Exception) -> JSONBody:
        # Starlette's outermost middleware calls this, then re-raises ``exc`` to the server.
        return error_response(internal_error(exc))

    app.add_exception_handler(NearlineError, on_nearline_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_bug)


def internal_error(exc: BaseException, request_id: str | None = None) -> InternalError:
    """``exc``, a bug, as the 500 a client may see: "internal error" and the request id
    (a new one unless given), in the body and the ``x-request-id`` header; the traceback is
    logged with the id."""
    request_id = request_id or f"req-{uuid.uuid4().hex}"
    error = InternalError(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    error.for_request(request_id)
    error.extra_headers[REQUEST_ID_HEADER] = request_id
    return error


__all__ = ["JSONBody", "error_response", "http_error", "install_error_handlers", "internal_error"]
