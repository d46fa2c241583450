"""What every nearline HTTP face shares: JSON rendered with orjson, and one renderer of errors.

The gateway and the worker answer every error in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``: nearline's own errors
(``core/errors.py``), Starlette's ``HTTPException`` (an unknown route, a wrong method, a
router's ``raise HTTPException(404, ...)``) and FastAPI's request validation errors (400, as
the gateway has always answered them). ``install_error_handlers(app)`` puts the three
handlers on an app.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from nearline.core.errors import InvalidRequest, NearlineError


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

    app.add_exception_handler(NearlineError, on_nearline_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)


__all__ = ["JSONBody", "error_response", "http_error", "install_error_handlers"]
