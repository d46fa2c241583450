"""Push results to clients over SSE and WebSocket, filtered by key, resumable by entry id.

``create_push_router(broker, streams)`` gives an ``APIRouter`` with

* ``GET /v1/streams/{stream}/events?key=K`` — Server-Sent Events; each event's ``id`` is the
  entry id, so a browser's ``EventSource`` reconnects with ``Last-Event-ID`` and gets exactly
  what it missed (``?last_event_id=`` works too; ``0`` replays the whole stream);
* ``WS /v1/streams/{stream}/ws?key=K&last_event_id=ID`` — one JSON text message per entry,
  ``{"id": ..., "data": {...}}``.

Only the streams listed are served. A client that goes away stops its tail of the stream. A
``Last-Event-ID`` that is not an entry id is refused: 400 (``InvalidRequest``), close code 4400.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Collection
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, HTTPException, Query, WebSocket, WebSocketDisconnect
from starlette.responses import StreamingResponse

from nearline.core.errors import InvalidRequest
from nearline.worker.broker import Broker, Entry

_HEARTBEAT = b": keep-alive\n\n"
_ENTRY_ID = re.compile(r"\d{1,15}(-\d{1,19})?")  # "<ms>-<seq>", "<ms>" or "0"


def resume_point(last_event_id: str | None) -> str | None:
    """The entry id to resume after, checked: a garbage id is the client's error (400), not an
    aborted stream the client would reconnect to forever."""
    if last_event_id is None or _ENTRY_ID.fullmatch(last_event_id) is not None:
        return last_event_id
    raise InvalidRequest(
        f"Last-Event-ID {last_event_id[:80]!r} is not an entry id: expected '<ms>-<seq>' "
        "(an event's id), or '0' to replay the stream",
        param="last_event_id",
    )


def sse_event(entry: Entry) -> bytes:
    return (
        b"id: "
        + entry.id.encode()
        + b"\nevent: result\ndata: "
        + orjson.dumps(dict(entry.data))
        + b"\n\n"
    )


def _matches(entry: Entry, key_field: str, key: str | None) -> bool:
    return key is None or str(entry.data.get(key_field)) == key


async def follow(
    broker: Broker,
    stream: str,
    after: str | None,
    *,
    key_field: str,
    key: str | None,
    heartbeat_s: float,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[Entry | None]:
    """Entries of ``stream`` after ``after`` that match ``key``; ``None`` when idle a while.

    Ends when ``stop`` is set (the server is shutting down).
    """
    inbox: asyncio.Queue[Entry | BaseException] = asyncio.Queue(maxsize=1000)
    stopped = asyncio.Event() if stop is None else stop

    async def pump() -> None:
        try:
            async for entry in broker.tail(stream, after):
                if _matches(entry, key_field, key):
                    await inbox.put(entry)
        except Exception as exc:  # noqa: BLE001 - handed to the reader, which raises it
            await inbox.put(exc)

    pumping = asyncio.create_task(pump())
    stopping = asyncio.create_task(stopped.wait())
    try:
        while True:
            getting = asyncio.create_task(inbox.get())
            done, _ = await asyncio.wait(
                {getting, stopping}, timeout=heartbeat_s, return_when=asyncio.FIRST_COMPLETED
            )
            if getting not in done:
                getting.cancel()
                if stopping in done:
                    return
                yield None
                continue
            item = getting.result()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        for task in (pumping, stopping):
            task.cancel()
        await asyncio.gather(pumping, stopping, return_exceptions=True)


def create_push_router(
    broker: Broker,
    streams: Collection[str] | None,
    *,
    key_field: str = "key",
    heartbeat_s: float = 15.0,
    stop: asyncio.Event | None = None,
) -> APIRouter:
    """Routes for subscribing to ``streams`` (``None``: any stream; only for trusted setups).

    Setting ``stop`` ends every open subscription (so a server can shut down promptly).
    """
    router = APIRouter(prefix="/v1/streams", tags=["push"])

    def check(stream: str) -> None:
        if streams is not None and stream not in streams:
            raise HTTPException(404, f"no results stream named {stream!r} is published here")

    @router.get("/{stream}/events")
    async def server_sent_events(
        stream: str,
        key: str | None = None,
        last_event_id: Annotated[str | None, Query()] = None,
        last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> StreamingResponse:
        check(stream)
        after = resume_point(last_event_id_header or last_event_id)

        async def frames() -> AsyncIterator[bytes]:
            yield b"retry: 1000\n\n"
            async for entry in follow(
                broker,
                stream,
                after,
                key_field=key_field,
                key=key,
                heartbeat_s=heartbeat_s,
                stop=stop,
            ):
                yield _HEARTBEAT if entry is None else sse_event(entry)

        return StreamingResponse(
            frames(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @router.websocket("/{stream}/ws")
    async def websocket_events(
        websocket: WebSocket,
        stream: str,
        key: str | None = None,
        last_event_id: str | None = None,
    ) -> None:
        if streams is not None and stream not in streams:
            await websocket.close(code=4404, reason="unknown stream")
            return
        try:
            last_event_id = resume_point(last_event_id)
        except InvalidRequest:
            await websocket.close(code=4400, reason="last_event_id is not an entry id")
            return
        await websocket.accept()

        async def send() -> None:
            async for entry in follow(
                broker,
                stream,
                last_event_id,
                key_field=key_field,
                key=key,
                heartbeat_s=heartbeat_s,
                stop=stop,
            ):
                if entry is not None:
                    message = orjson.dumps({"id": entry.id, "data": dict(entry.data)})
                    await websocket.send_text(message.decode())

        async def until_closed() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await websocket.receive_text()

        sending = asyncio.create_task(send())
        closing = asyncio.create_task(until_closed())
        done, pending = await asyncio.wait({sending, closing}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if task is sending and task.exception() is not None:
                await websocket.close(code=1011, reason="stream unavailable")

    return router
