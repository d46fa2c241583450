"""nearline's own error tree, rendered once, in OpenAI's error shape.

Every failure a client can see is one of these. Provider adapters translate their
library's exceptions into this tree at the boundary (see ``gateway/providers/openai_compat.py``),
and one handler in ``core/http.py`` renders them as
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending key."""


class CommandError(Exception):
    """A ``nearline`` subcommand cannot do what it was asked; the CLI prints the message as
    one line on stderr and exits with status 2."""


class NearlineError(Exception):
    """Base of every error nearline reports to a client."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after_s = retry_after_s
        self.extra_headers: dict[str, str] = {}
        self.counted = False  # already counted in the error metrics

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return dict(self.extra_headers)
        return {"Retry-After": str(max(1, round(self.retry_after_s))), **self.extra_headers}


class InvalidRequest(NearlineError):
    """The request is malformed or asks for something nearline cannot do (400)."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class ModelNotFound(NearlineError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class BodyTooLarge(InvalidRequest):
    status_code = 413
    code = "request_too_large"


class AuthenticationFailed(NearlineError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(NearlineError):
    status_code = 403
    error_type = "permission_error"
    code = "model_not_allowed"


class Overloaded(NearlineError):
    """nearline's own queue is full: come back later (503 + Retry-After)."""

    status_code = 503
    error_type = "server_error"
    code = "overloaded"


class NotCached(NearlineError):
    """``Cache-Control: only-if-cached`` and no cache tier had the answer (504, as in HTTP)."""

    status_code = 504
    error_type = "invalid_request_error"
    code = "not_cached"


class UpstreamRateLimited(NearlineError):
    """The upstream said 429; passed on with its Retry-After."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamTimeout(NearlineError):
    status_code = 504
    error_type = "server_error"
    code = "upstream_timeout"


class UpstreamError(NearlineError):
    """The upstream failed: 5xx, reset, refused or a malformed reply (502)."""

    status_code = 502
    error_type = "server_error"
    code = "upstream_error"


class UpstreamRejected(NearlineError):
    """The upstream refused the request as invalid (its 4xx, passed on as 400)."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "upstream_rejected"
