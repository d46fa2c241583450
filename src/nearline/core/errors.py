"""nearline's own error tree, rendered once, in OpenAI's error shape.

Every failure a client can see is one of these. Provider adapters translate their
library's exceptions into this tree at the boundary (see ``gateway/providers/openai_compat.py``),
and one handler in ``core/http.py`` renders them as
``{"error": {"message", "type", "param", "code"}}``.

Errors whose message carries internals (upstream names, hosts, ports, upstream bodies, an
exception's text) have a ``public_message``: a tenant is told that and the request id, and
the details are logged once, at warning, with the request id (``for_request``).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

log = logging.getLogger("nearline.errors")


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
    public_message: ClassVar[str | None] = None
    """What a tenant is told instead of ``message`` (None: the message is the client's to
    read)."""
    log_level: ClassVar[int] = logging.WARNING  # of the details' log line (ERROR: traceback)

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
        self.request_id: str | None = None

    def for_request(self, request_id: str) -> None:
        """Name the request this error answers (the first name sticks); an error with
        internals logs them here, once, with the request id."""
        if self.request_id is not None:
            return
        self.request_id = request_id
        if self.public_message is not None:
            log.log(
                self.log_level,
                "request %s failed: %s: %s",
                request_id,
                type(self).__name__,
                self.message,
                exc_info=self.__cause__ if self.log_level >= logging.ERROR else None,
            )

    @property
    def client_message(self) -> str:
        """The message a tenant sees: no internals; the request id where it helps."""
        if self.public_message is None:
            return self.message
        if self.request_id is None:
            return self.public_message
        return f"{self.public_message} (request id {self.request_id})"

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.client_message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return dict(self.extra_headers)
        return {"Retry-After": str(max(1, round(self.retry_after_s))), **self.extra_headers}


class InternalError(NearlineError):
    """A bug, not the client's fault: the tenant sees "internal error" and the request id,
    the log the traceback."""

    public_message = "internal error"
    log_level = logging.ERROR


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


class UnsupportedContentEncoding(InvalidRequest):
    """A ``Content-Encoding`` other than gzip or identity (415)."""

    status_code = 415
    code = "unsupported_content_encoding"


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

    public_message = "the upstream model is rate limited; retry later"
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamTimeout(NearlineError):
    public_message = "the upstream model timed out"
    status_code = 504
    error_type = "server_error"
    code = "upstream_timeout"


class UpstreamError(NearlineError):
    """The upstream failed: 5xx, reset, refused or a malformed reply (502)."""

    public_message = "the upstream model failed"
    status_code = 502
    error_type = "server_error"
    code = "upstream_error"


class UpstreamRejected(NearlineError):
    """The upstream refused the request as invalid (its 4xx, passed on as 400)."""

    public_message = "the upstream model rejected the request"
    status_code = 400
    error_type = "invalid_request_error"
    code = "upstream_rejected"
