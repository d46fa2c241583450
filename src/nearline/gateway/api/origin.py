"""The drive-by guard: web pages in the user's browser cannot use the gateway unasked.

With auth off (the loopback default) the user's browser is the only lock: any page it
shows could otherwise POST a "simple request" (``text/plain``, no preflight) to the
gateway, purge its caches, read answers over a WebSocket (browsers apply no CORS to
WebSockets) or rebind a DNS name to 127.0.0.1. One pure ASGI middleware, in front of
everything (CORS included), for HTTP and WebSocket alike:

* **Host** must be one the gateway answers to: ``localhost`` or an IP literal (names no page
  can rebind), with the port the request arrived on or none, or a name in
  ``server.allowed_hosts`` — else 403 ``host_not_allowed``.
* **Origin**, when a browser sends one, must be the gateway's own (its pages: ``/chat``,
  ``/dashboard``, ``/static``) or in ``server.allowed_origins`` — else 403
  ``origin_not_allowed``, preflights and WebSocket upgrades included. For allowed origins,
  CORS is answered by Starlette's ``CORSMiddleware`` behind this guard (off when none).
* **Content-Type** of a request with a body must be ``application/json`` — else 415
  ``unsupported_media_type`` (only JSON bodies need a preflight from a foreign page).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

import orjson
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from nearline.core.errors import InvalidRequest, NearlineError, PermissionDenied

EXPOSED_HEADERS = (
    "x-request-id",
    "x-nearline-trace-id",
    "x-nearline-source",
    "x-nearline-similarity",
    "retry-after",
)
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class HostNotAllowed(PermissionDenied):
    code = "host_not_allowed"


class OriginNotAllowed(PermissionDenied):
    code = "origin_not_allowed"


class UnsupportedMediaType(InvalidRequest):
    status_code = 415
    code = "unsupported_media_type"


def with_cors(app: ASGIApp, allowed_origins: Sequence[str]) -> ASGIApp:
    """``app`` answering CORS (preflights too) for ``allowed_origins``; itself when none."""
    if not allowed_origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=list(allowed_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=list(EXPOSED_HEADERS),
        max_age=600,
    )


class BrowserGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Sequence[str] = (),
        allowed_origins: Sequence[str] = (),
    ) -> None:
        self._app = with_cors(JsonBodies(app), allowed_origins)  # a 415 carries CORS too
        self._hosts = {host.lower() for host in allowed_hosts}
        self._origins = {origin.lower().rstrip("/") for origin in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        error = self.check(scope)
        if error is None:
            await self._app(scope, receive, send)
        elif scope["type"] == "websocket":
            await _refuse_upgrade(scope, receive, send, error)
        else:
            await _refuse(send, error)

    def check(self, scope: Scope) -> NearlineError | None:
        """Why this request is refused, or ``None``."""
        headers = Headers(scope=scope)
        host = headers.get("host")
        server = scope.get("server")
        port = server[1] if server else None
        if host is not None and not self.host_allowed(host, port):
            return HostNotAllowed(f"the Host {host!r} is not one this gateway answers to")
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(origin, host):
            return OriginNotAllowed(
                f"requests from pages at {origin!r} are not allowed (server.allowed_origins)"
            )
        return None

    def host_allowed(self, host: str, port: int | None) -> bool:
        host = host.lower()
        name, given_port = _split_host(host)
        if "*" in self._hosts or host in self._hosts or name in self._hosts:
            return True
        if name != "localhost" and not _is_ip(name):
            return False
        return given_port is None or port is None or given_port == port

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        origin = origin.lower().rstrip("/")
        if "*" in self._origins or origin in self._origins:
            return True
        parts = urlsplit(origin)
        return (
            parts.scheme in ("http", "https") and host is not None and parts.netloc == host.lower()
        )


class JsonBodies:
    """Refuse a request body that is not ``application/json`` with a 415."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            media_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if _has_body(scope["method"], headers) and media_type != "application/json":
                refused = UnsupportedMediaType(
                    "the request body must be JSON (Content-Type: application/json)"
                )
                await _refuse(send, refused)
                return
        await self._app(scope, receive, send)


def _split_host(host: str) -> tuple[str, int | None]:
    """``"[::1]:8080"`` → ``("::1", 8080)``; ``"localhost"`` → ``("localhost", None)``."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    else:
        name, port = host, ""
    return name, int(port) if port.isdigit() else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _has_body(method: str, headers: Headers) -> bool:
    if method not in _BODY_METHODS:
        return False
    length = headers.get("content-length")
    return "transfer-encoding" in headers or (length is not None and length.strip() != "0")


async def _refuse(send: Send, error: NearlineError) -> None:
    body = orjson.dumps(error.body())
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _refuse_upgrade(scope: Scope, receive: Receive, send: Send, error: NearlineError) -> None:
    """Refuse the upgrade itself: a 403 with the error (or a bare 403), never a socket."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        body = orjson.dumps(error.body())
        await send(
            {
                "type": "websocket.http.response.start",
                "status": error.status_code,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.close", "code": 1008})
