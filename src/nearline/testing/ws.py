"""Reading nearline's WebSocket protocol (``/v1/ws``) from a test's ``websockets`` client."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection


async def receive(socket: ClientConnection, timeout_s: float = 20.0) -> dict[str, Any]:
    """The next message, decoded (JSON travels in text frames)."""
    raw = await asyncio.wait_for(socket.recv(), timeout_s)
    assert isinstance(raw, str), "JSON travels in text frames (browsers get a Blob otherwise)"
    message: dict[str, Any] = orjson.loads(raw)
    return message


async def until_done(socket: ClientConnection, ids: set[str]) -> list[dict[str, Any]]:
    """Every message up to the ``done`` (or ``error``) of each id in ``ids``. Read answers to
    their end before closing: a client that closes behind unread frames stops reading at its
    queue limit, never sees the server's close frame and waits out its close timeout."""
    messages: list[dict[str, Any]] = []
    open_ids = set(ids)
    while open_ids:
        message = await receive(socket)
        messages.append(message)
        if message["type"] in ("done", "error"):
            open_ids.discard(message["id"])
    return messages
