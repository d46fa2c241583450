"""HTTP ingest: ``POST /v1/streams/{stream}/events`` publishes events to a pipeline's source.

So a worker on the in-process broker (the default) can be fed from outside, and any worker
without a client library. The body is ``{"events": [{...}, ...]}`` (each event a JSON object,
at most ``max_events``; the body at most ``max_body_bytes``); the answer is
``{"ids": [...]}``, one entry id per event, in order. Keys are checked as the gateway checks
them (``nearline.core.keys``: ``Authorization: Bearer <key>``, compared by SHA-256 digest) when
any are configured. Errors are in OpenAI's shape: 400 (the body), 401 (the key), 404 (a stream
no pipeline reads), 413 (too large), 503 with ``Retry-After`` (the stream is full, or the
broker is unreachable).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Request
from starlette.responses import JSONResponse, Response

from nearline.core.errors import (
    AuthenticationFailed,
    BodyTooLarge,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
)
from nearline.core.keys import bearer_key, hash_api_key
from nearline.worker.broker import Broker, BrokerError, Message, StreamFull, publish_patiently

logger = logging.getLogger("nearline.worker.ingest")


class StreamNotFound(ModelNotFound):
    code = "stream_not_found"


def check_key(authorization: str | None, digests: Collection[str]) -> None:
    """Raise ``AuthenticationFailed`` unless no keys are configured or a configured one is
    presented."""
    if not digests:
        return
    if not authorization:
        raise AuthenticationFailed("missing API key: send it as 'Authorization: Bearer <key>'")
    key = bearer_key(authorization)
    if key is None:
        raise AuthenticationFailed("malformed Authorization header: expected 'Bearer <key>'")
    if hash_api_key(key) not in digests:
        raise AuthenticationFailed("invalid API key")


async def read_bounded(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(f"the body is over the limit of {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BodyTooLarge(f"the body is over the limit of {max_bytes} bytes")
    return bytes(body)


def parse_events(body: bytes, max_events: int) -> list[dict[str, Any]]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from None
    events = parsed.get("events") if isinstance(parsed, dict) else None
    if not isinstance(events, list) or set(parsed) != {"events"}:
        raise InvalidRequest(
            'expected a JSON object {"events": [{...}, ...]}', param="events", code="invalid_body"
        )
    if not events:
        raise InvalidRequest("events is empty: send at least one", param="events")
    if len(events) > max_events:
        raise InvalidRequest(
            f"{len(events)} events in one request; at most {max_events} (worker.ingest_max_events)",
            param="events",
        )
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise InvalidRequest(
                f"events[{index}] is a JSON {type(event).__name__}, not an object",
                param=f"events.{index}",
            )
    return events


def create_ingest_router(
    broker: Broker,
    streams: Collection[str],
    *,
    key_digests: Collection[str] = (),
    max_events: int = 1000,
    max_body_bytes: int = 1_000_000,
) -> APIRouter:
    """``POST /v1/streams/{stream}/events`` for the ``streams`` named (a worker's sources)."""
    router = APIRouter(prefix="/v1/streams", tags=["ingest"])
    digests = frozenset(key_digests)

    @router.post("/{stream}/events")
    async def publish_events(
        stream: str,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        check_key(authorization, digests)
        if stream not in streams:
            raise StreamNotFound(f"no pipeline reads a stream named {stream!r} here")
        events = parse_events(await read_bounded(request, max_body_bytes), max_events)
        try:
            ids = await publish_patiently(
                broker, stream, [Message(event) for event in events], max_wait_s=0
            )
        except StreamFull as full:
            raise Overloaded(str(full), retry_after_s=full.retry_after_s) from None
        except BrokerError as exc:  # the details are for the log, not the client
            logger.warning("ingest into %s failed: %s", stream, exc)
            raise Overloaded("the event broker is unavailable; retry", retry_after_s=1.0) from exc
        return JSONResponse({"ids": ids})

    return router
