"""One handler renders every error in OpenAI's shape."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from nearline.core.errors import InvalidRequest, NearlineError
from nearline.gateway.api.responses import JSONBody


def error_response(error: NearlineError) -> JSONBody:
    return JSONBody(error.body(), status_code=error.status_code, headers=error.headers())


def install_error_handlers(app: FastAPI) -> None:
    async def on_nearline_error(_: Request, exc: Exception) -> JSONBody:
        assert isinstance(exc, NearlineError)
        return error_response(exc)

    async def on_http_error(_: Request, exc: Exception) -> JSONBody:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        error = NearlineError(str(exc.detail), code=code)
        error.status_code = exc.status_code
        error.error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(error)

    async def on_validation_error(_: Request, exc: Exception) -> JSONBody:
        assert isinstance(exc, RequestValidationError)
        return error_response(InvalidRequest(str(exc.errors())))

    app.add_exception_handler(NearlineError, on_nearline_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
