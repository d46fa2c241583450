"""Refuse request bodies over the configured size with an OpenAI-shaped 413, and decode gzip.

A pure ASGI middleware: it checks ``Content-Length`` up front and counts the bytes of a
chunked body as they arrive, so an oversized upload is refused without being buffered.

``Content-Encoding: gzip`` bodies are decompressed here, bounded: decoding stops as soon as
the decoded body would pass the same limit (413 — a zip bomb costs at most that many
bytes), a corrupt stream is a 400, and the app sees the decoded body without the header.
Any other encoding is refused with a 415 rather than read as if it were plain.
"""

from __future__ import annotations

import zlib

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nearline.core.errors import (
    BodyTooLarge,
    InvalidRequest,
    NearlineError,
    UnsupportedContentEncoding,
)

_PLAIN = frozenset({"", "identity"})
_GZIP = frozenset({"gzip", "x-gzip"})
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around a deflate stream


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self._app = app
        self._max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        encodings: list[str] = []
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self._max:
                await _refuse(send, self._too_large())
                return
            if name == b"content-encoding":
                encodings.append(value.decode("latin-1").strip().lower())
        encoding = ",".join(encodings)
        if encoding in _GZIP:
            await self._gzip(scope, receive, send)
            return
        if encoding not in _PLAIN:
            await _refuse(
                send,
                UnsupportedContentEncoding(
                    f"Content-Encoding {encoding!r} is not supported: send gzip or no encoding"
                ),
            )
            return
        await self._counted(scope, receive, send)

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"the request body is larger than {self._max} bytes", param=None)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max:
                    raise _TooLarge
            return message

        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self._app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not response_started:
                await _refuse(send, self._too_large())

    async def _gzip(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read and decode the whole (bounded) body, then hand the app the decoded one."""
        decoded = await self._read_gzip(receive)
        if decoded is None:
            return  # the client left before its body arrived
        if isinstance(decoded, NearlineError):
            await _refuse(send, decoded)
            return
        headers = [
            (name, value)
            for name, value in scope["headers"]
            if name not in (b"content-encoding", b"content-length")
        ]
        headers.append((b"content-length", str(len(decoded)).encode()))
        delivered = False

        async def decoded_receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": decoded, "more_body": False}
            return await receive()  # what follows the body: the disconnect

        await self._app({**scope, "headers": headers}, decoded_receive, send)

    async def _read_gzip(self, receive: Receive) -> bytes | NearlineError | None:
        """The decoded body; the error to answer instead; ``None`` if the client left.
        Never holds more than ``max_body_bytes`` (+1) of either form."""
        decoder = zlib.decompressobj(_GZIP_WBITS)
        decoded = bytearray()
        received = 0
        more = True
        try:
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return None
                chunk = message.get("body", b"")
                more = message.get("more_body", False)
                received += len(chunk)
                if received > self._max:
                    return self._too_large()
                decoded += decoder.decompress(chunk, self._max + 1 - len(decoded))
                if len(decoded) > self._max or decoder.unconsumed_tail:
                    return self._too_large()
            decoded += decoder.flush(self._max + 1 - len(decoded))
        except zlib.error:
            return InvalidRequest("the request body is not valid gzip")
        if len(decoded) > self._max:
            return self._too_large()
        if not decoder.eof:
            return InvalidRequest("the request body is not valid gzip (it is cut short)")
        return bytes(decoded)


async def _refuse(send: Send, error: NearlineError) -> None:
    body = orjson.dumps(error.body())
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
