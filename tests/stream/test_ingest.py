"""HTTP ingest (issue 14 point 8): the worker's HTTP face accepts published events, bounded
and authenticated like the gateway, so the in-process default broker is usable from outside."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from nearline.config import Settings
from nearline.testing.worker import RecordingHandler, running
from nearline.worker.broker import Broker, StreamBound
from nearline.worker.memory import MemoryBroker
from nearline.worker.pipeline import Pipeline
from nearline.worker.server import create_worker_app
from nearline.worker.worker import Worker

pytestmark = pytest.mark.timeout(30)

KEY = "sk-worker-test"
ADMIN = "sk-admin-test"


def settings(**worker: object) -> Settings:
    return Settings.model_validate(
        {
            "auth": {
                "keys": [{"sha256": hashlib.sha256(KEY.encode()).hexdigest(), "tenant": "t"}],
                "admin_keys": [hashlib.sha256(ADMIN.encode()).hexdigest()],
            },
            "worker": worker,
        }
    )


async def client_for(
    broker: Broker, stream: str, config: Settings | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, RecordingHandler, Worker]]:
    handler = RecordingHandler()
    worker = Worker(broker, [Pipeline("p", stream, handler, results=f"{stream}:out")])
    transport = httpx.ASGITransport(app=create_worker_app(worker, config or settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        yield client, handler, worker


async def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def handled(handler: RecordingHandler, want: int) -> bool:
    return sum(len(batch) for batch in handler.batches) >= want


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_published_events_are_processed_by_the_in_process_worker() -> None:
    broker = MemoryBroker()
    async for client, handler, worker in client_for(broker, "tx"):
        async with running(worker):
            response = await client.post(
                "/v1/streams/tx/events",
                json={"events": [{"n": 1}, {"n": 2}, {"n": 3}]},
                headers=bearer(KEY),
            )
            await eventually(functools.partial(handled, handler, 3))
            by_admin = await client.post(
                "/v1/streams/tx/events", json={"events": [{"n": 4}]}, headers=bearer(ADMIN)
            )

    assert response.status_code == 200, response.text
    ids = response.json()["ids"]
    assert len(ids) == 3
    assert [e.id for b in handler.batches for e in b][:3] == ids
    assert [e.data for b in handler.batches for e in b][:3] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert by_admin.status_code == 200


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing API key"),
        ({"Authorization": "Basic abc"}, "malformed Authorization header"),
        (bearer("sk-wrong"), "invalid API key"),
    ],
)
async def test_a_missing_or_wrong_key_is_a_401_in_openai_shape(
    headers: dict[str, str], message: str
) -> None:
    broker = MemoryBroker()
    async for client, _, _ in client_for(broker, "tx"):
        response = await client.post(
            "/v1/streams/tx/events", json={"events": [{}]}, headers=headers
        )

    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "authentication_error" and message in error["message"]
    assert await broker.length("tx") == 0


async def test_without_configured_keys_ingest_is_open_as_the_gateway_is_on_loopback() -> None:
    broker = MemoryBroker()
    async for client, _, _ in client_for(broker, "tx", Settings()):
        response = await client.post("/v1/streams/tx/events", json={"events": [{"n": 1}]})
    assert response.status_code == 200


async def test_only_pipeline_sources_take_events() -> None:
    broker = MemoryBroker()
    async for client, _, _ in client_for(broker, "tx"):
        results = await client.post(
            "/v1/streams/tx:out/events", json={"events": [{}]}, headers=bearer(KEY)
        )
    assert results.status_code == 404
    assert results.json()["error"]["code"] == "stream_not_found"


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "not JSON"),
        (b'[{"n": 1}]', 400, '{"events"'),
        (b'{"events": [{"n": 1}], "more": 1}', 400, '{"events"'),
        (b'{"events": []}', 400, "empty"),
        (b'{"events": [{"n": 1}, 7]}', 400, "events[1] is a JSON int"),
        (b'{"events": [' + b",".join([b"{}"] * 11) + b"]}", 400, "at most 10"),
        (b'{"events": [{"text": "' + b"x" * 3000 + b'"}]}', 413, "over the limit of 2048"),
    ],
)
async def test_bodies_are_bounded_and_checked(body: bytes, status: int, says: str) -> None:
    broker = MemoryBroker()
    config = settings(ingest_max_events=10, ingest_max_body_bytes=2048)
    async for client, _, _ in client_for(broker, "tx", config):
        response = await client.post(
            "/v1/streams/tx/events",
            content=body,
            headers={**bearer(KEY), "Content-Type": "application/json"},
        )
    assert response.status_code == status, response.text
    assert says in response.json()["error"]["message"]
    assert await broker.length("tx") == 0


async def test_a_full_source_is_a_503_with_retry_after() -> None:
    broker = MemoryBroker(StreamBound(per_stream={"tx": 2}))
    async for client, _, _ in client_for(broker, "tx"):
        response = await client.post(
            "/v1/streams/tx/events", json={"events": [{}, {}, {}]}, headers=bearer(KEY)
        )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "overloaded"
