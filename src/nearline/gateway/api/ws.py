"""``GET /v1/ws``: the progressive event stream over WebSocket (docs/protocol.md).

One connection carries several requests at once, each run by its own task and named by the
client's ``id``. ``cancel`` closes that request's ``Answer``, which stops its upstream work;
closing the socket cancels every request still running. A malformed message is answered
with an ``error`` whose ``id`` is null, and the connection stays open.

Limits (``server.websocket``, ``server.max_body_bytes``): an unauthenticated socket is
closed ``auth_timeout_s`` after the upgrade, whatever it sends meanwhile; a message is
measured in bytes, like an HTTP body; at most ``max_in_flight`` requests run at once. The
upgrade's ``Origin`` and ``Host`` are checked before it is accepted (``origin.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, WebSocket
from pydantic import Field, TypeAdapter, ValidationError
from starlette.websockets import WebSocketDisconnect

from nearline.core.errors import AuthenticationFailed, BodyTooLarge, InvalidRequest, NearlineError
from nearline.core.events import (
    Delta,
    Done,
    ErrorEvent,
    Event,
    Preliminary,
    Replace,
    ToolCallDelta,
    Usage,
)
from nearline.core.model import Strict as _Strict
from nearline.core.request import ChatRequest
from nearline.core.tasks import BackgroundTasks
from nearline.gateway.api.openai import chat_request_from
from nearline.gateway.api.state import AppState
from nearline.gateway.serving.service import WEBSOCKET
from nearline.gateway.serving.sse import (
    progressive_event,
    tool_call_fragment,
    usage_extension,
)
from nearline.gateway.tenancy import Tenant

log = logging.getLogger(__name__)

router = APIRouter()

POLICY_VIOLATION = 1008  # WebSocket close code for a failed authentication


class ChatMessage(_Strict):
    type: Literal["chat"]
    id: Annotated[str, Field(min_length=1, max_length=200)]
    body: dict[str, Any]


class CancelMessage(_Strict):
    type: Literal["cancel"]
    id: str


class AuthMessage(_Strict):
    type: Literal["auth"]
    api_key: str


ClientMessage = Annotated[ChatMessage | CancelMessage | AuthMessage, Field(discriminator="type")]
_client_message: TypeAdapter[ChatMessage | CancelMessage | AuthMessage] = TypeAdapter(ClientMessage)


def event_message(request_id: str, event: Event, source: str) -> dict[str, Any]:
    """The one rendering of a pipeline event as a WebSocket message."""
    body: dict[str, Any]
    match event:
        case Preliminary() | Replace():
            body = progressive_event(event)
        case Delta(text=text):
            body = {"type": "delta", "text": text}
            if event.choice:
                body["choice"] = event.choice
        case ToolCallDelta():
            body = {"type": "tool_call", **tool_call_fragment(event), "choice": event.choice}
        case Usage():
            body = {
                "type": "usage",
                "prompt_tokens": event.prompt_tokens,
                "completion_tokens": event.completion_tokens,
                "cached_tokens": event.cached_tokens,
            }
            if (extension := usage_extension(event)) is not None:
                body["nearline"] = extension
        case Done(finish_reason=reason):
            body = {"type": "done", "finish_reason": reason, "source": source}
        case ErrorEvent(error=error):
            return error_message(request_id, error)
    return {"type": body.pop("type"), "id": request_id, **body}


def error_message(request_id: str | None, error: NearlineError) -> dict[str, Any]:
    return {"type": "error", "id": request_id, **error.body()}


def parse_client_message(raw: str | bytes) -> ChatMessage | CancelMessage | AuthMessage:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the message is not valid JSON: {exc}") from exc
    try:
        return _client_message.validate_python(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise InvalidRequest(
            f"invalid message at {where}: {first['msg']} (expected "
            '{"type": "chat", "id", "body"}, {"type": "cancel", "id"} or '
            '{"type": "auth", "api_key"})'
        ) from exc


class _Connection:
    """One socket: its tenant, its running requests, and a lock so sends never interleave."""

    def __init__(self, websocket: WebSocket, state: AppState) -> None:
        self._socket = websocket
        self._state = state
        self._send_lock = asyncio.Lock()
        self._requests = BackgroundTasks("nearline-ws-request")  # keyed by the client's id
        self.tenant: Tenant | None = None
        self.open = True
        self.max_message_bytes = state.settings.server.max_body_bytes
        self.max_in_flight = state.settings.server.websocket.max_in_flight
        # an unauthenticated connection must say who it is by then, whatever it sends
        self.auth_deadline = (
            asyncio.get_running_loop().time() + state.settings.server.websocket.auth_timeout_s
        )

    async def send(self, message: dict[str, Any]) -> bool:
        """Send one message; ``False`` once the client has gone."""
        if not self.open:
            return False
        try:
            async with self._send_lock:
                await self._socket.send_text(orjson.dumps(message).decode())  # text frames: JSON
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.open = False
        return self.open

    def authenticate(self, authorization: str | None) -> None:
        self.tenant = self._state.keyring.tenant_for(authorization)

    async def start(self, message: ChatMessage) -> None:
        if self._requests.running(message.id):
            await self.send(
                error_message(None, InvalidRequest(f"request id {message.id!r} is already running"))
            )
            return
        if len(self._requests) >= self.max_in_flight:
            too_many = InvalidRequest(
                f"too many requests in flight on this connection: at most {self.max_in_flight}"
                " (server.websocket.max_in_flight)",
                code="too_many_requests_in_flight",
            )
            await self.send(error_message(message.id, too_many))
            return
        self._requests.start(
            self._run(message.id, message.body, time.perf_counter()), key=message.id
        )

    def cancel(self, request_id: str) -> None:
        """Stop one request (its id is free at once); an id that already finished is not an
        error: the race is normal."""
        self._requests.cancel(request_id)

    async def cancel_all(self) -> None:
        await self._requests.aclose()

    async def _run(self, request_id: str, body: dict[str, Any], received_at: float) -> None:
        assert self.tenant is not None

        async def read() -> ChatRequest:
            return chat_request_from(body)  # the message's JSON is decoded once, already

        try:
            answer = await self._state.service.handle(
                read,
                self.tenant,
                self._socket.headers,
                received_at=received_at,
                transport=WEBSOCKET,
            )
        except NearlineError as error:
            await self.send(error_message(request_id, error))
            return
        except Exception:  # a bug, not the client's fault: say so instead of going silent
            log.exception("WebSocket request %r failed", request_id)
            await self.send(error_message(request_id, NearlineError("internal error")))
            return
        try:
            async for event in answer.events():
                if not await self.send(event_message(request_id, event, answer.source)):
                    return  # the client left; the finally below stops the upstream work
        finally:
            await answer.aclose()


@router.websocket("/v1/ws")
async def chat_socket(websocket: WebSocket) -> None:
    state = websocket.app.state.nearline
    assert isinstance(state, AppState)
    await websocket.accept()
    connection = _Connection(websocket, state)
    header = websocket.headers.get("authorization")
    try:
        if header is not None or not state.keyring.enabled:
            try:
                connection.authenticate(header)
            except AuthenticationFailed as error:
                await _refuse(connection, websocket, error)
                return
        await _serve(connection, websocket)
    finally:
        await connection.cancel_all()


async def _serve(connection: _Connection, websocket: WebSocket) -> None:
    first = True
    while True:
        if connection.tenant is None:
            try:
                async with asyncio.timeout_at(connection.auth_deadline):
                    received = await websocket.receive()
            except TimeoutError:
                late = AuthenticationFailed(
                    'send {"type": "auth", "api_key": "..."} first (or an Authorization header)'
                )
                await _refuse(connection, websocket, late)
                return
        else:
            received = await websocket.receive()
        if received["type"] == "websocket.disconnect":
            return
        raw = received.get("text") or received.get("bytes") or b""
        if _size(raw) > connection.max_message_bytes:  # the HTTP body limit, per message
            too_large = BodyTooLarge(
                f"the message is larger than {connection.max_message_bytes} bytes"
            )
            await connection.send(error_message(None, too_large))
            continue
        try:
            message = parse_client_message(raw)
        except InvalidRequest as error:
            await connection.send(error_message(None, error))
            continue
        if isinstance(message, AuthMessage):
            if not first:
                await connection.send(
                    error_message(None, InvalidRequest("auth must be the first message"))
                )
                continue
            try:
                connection.authenticate(f"Bearer {message.api_key}")
            except AuthenticationFailed as error:
                await _refuse(connection, websocket, error)
                return
        elif connection.tenant is None:
            missing = AuthenticationFailed(
                'missing API key: send {"type": "auth", "api_key": "..."} as the first message'
            )
            await _refuse(connection, websocket, missing)
            return
        elif isinstance(message, ChatMessage):
            await connection.start(message)
        else:
            connection.cancel(message.id)
        first = False


def _size(raw: str | bytes) -> int:
    """A message's size in bytes (a text frame's UTF-8, as it came over the wire)."""
    if isinstance(raw, bytes):
        return len(raw)
    return len(raw.encode("utf-8", "surrogatepass"))


async def _refuse(connection: _Connection, websocket: WebSocket, error: NearlineError) -> None:
    """Say why (browsers cannot read a refused upgrade's status), then close."""
    if await connection.send(error_message(None, error)):
        await websocket.close(POLICY_VIOLATION, reason=error.code or "")
