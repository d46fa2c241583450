"""Results pushed over SSE and WebSocket from a real server: key filter, resume, disconnect."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import connect

from nearline.testing import QuickStopServer, eventually_async
from nearline.worker.broker import Broker, Entry, Message
from nearline.worker.push import create_push_router

pytestmark = pytest.mark.timeout(30)


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """A real uvicorn server for ``app`` on a free port; yields its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="websockets-sansio"
    )
    server = QuickStopServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def base_url(broker: Broker, prefix: str) -> AsyncIterator[str]:
    app = FastAPI()
    app.include_router(create_push_router(broker, [f"{prefix}-results"], heartbeat_s=0.5))
    async with serving(app) as url:
        yield url


async def publish(broker: Broker, stream: str, keys: list[str], start: int = 0) -> list[str]:
    await broker.create_group(stream, "keep")  # RabbitMQ: a stream exists once declared
    return await broker.publish(
        stream, [Message({"key": key, "n": start + i}) for i, key in enumerate(keys)]
    )


async def sse_events(
    client: httpx.AsyncClient, url: str, want: int, headers: dict[str, str] | None = None
) -> list[tuple[str, dict[str, object]]]:
    """The first ``want`` (id, data) events of an SSE response, then hang up."""
    got: list[tuple[str, dict[str, object]]] = []
    event_id = ""
    async with client.stream("GET", url, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                got.append((event_id, orjson.loads(line[6:])))
                if len(got) == want:
                    break
    return got


async def test_sse_sends_only_the_subscribed_key_with_entry_ids(
    broker: Broker, prefix: str, base_url: str
) -> None:
    stream = f"{prefix}-results"
    ids = await publish(broker, stream, ["card-1", "card-2", "card-1", "card-3", "card-1"])
    url = f"{base_url}/v1/streams/{stream}/events?key=card-1&last_event_id=0"

    async with httpx.AsyncClient(timeout=10) as client:
        got = await sse_events(client, url, 3)

    assert [event_id for event_id, _ in got] == [ids[0], ids[2], ids[4]]
    assert [data["n"] for _, data in got] == [0, 2, 4]


async def test_sse_resumes_from_last_event_id_without_gaps_or_repeats(
    broker: Broker, prefix: str, base_url: str
) -> None:
    stream = f"{prefix}-results"
    url = f"{base_url}/v1/streams/{stream}/events"
    first_ids = await publish(broker, stream, ["k"] * 3)

    async with httpx.AsyncClient(timeout=10) as client:
        before = await sse_events(client, url + "?last_event_id=0", 2)
        missed_ids = await publish(broker, stream, ["k"] * 3, start=3)  # while disconnected
        after = await sse_events(client, url, 4, headers={"Last-Event-ID": before[-1][0]})

    assert [i for i, _ in before] == first_ids[:2]
    assert [i for i, _ in after] == [first_ids[2], *missed_ids]
    assert [d["n"] for _, d in before + after] == list(range(6))


async def test_sse_refuses_streams_it_does_not_publish(base_url: str, prefix: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{base_url}/v1/streams/{prefix}-source/events")
    assert response.status_code == 404


async def test_websocket_filters_by_key_and_resumes_after_an_id(
    broker: Broker, prefix: str, base_url: str
) -> None:
    stream = f"{prefix}-results"
    ids = await publish(broker, stream, ["a", "b", "a", "a"])
    ws_url = base_url.replace("http", "ws") + f"/v1/streams/{stream}/ws?key=a&last_event_id="

    async with connect(ws_url + ids[0]) as websocket:
        first = orjson.loads(await asyncio.wait_for(websocket.recv(), 5))
        later_ids = await publish(broker, stream, ["b", "a"], start=4)
        received = [first]
        while len(received) < 3:
            received.append(orjson.loads(await asyncio.wait_for(websocket.recv(), 5)))

    assert [m["id"] for m in received] == [ids[2], ids[3], later_ids[1]]
    assert [m["data"]["n"] for m in received] == [2, 3, 5]


class _SpyBroker:
    """Delegates to a broker and says when a tail was closed."""

    def __init__(self, inner: Broker) -> None:
        self.inner = inner
        self.tail_closed = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def tail(self, stream: str, after: str | None) -> AsyncIterator[Entry]:
        try:
            async for entry in self.inner.tail(stream, after):
                yield entry
        finally:
            self.tail_closed.set()


@pytest.mark.parametrize("broker_kind", ["memory"], indirect=True)
async def test_a_client_that_hangs_up_stops_its_tail(broker: Broker, prefix: str) -> None:
    spy = _SpyBroker(broker)
    app = FastAPI()
    app.include_router(create_push_router(spy, None, heartbeat_s=0.2))  # type: ignore[arg-type]
    stream = f"{prefix}-results"
    await publish(broker, stream, ["k"])
    async with serving(app) as url, httpx.AsyncClient(timeout=10) as client:
        got = await sse_events(client, f"{url}/v1/streams/{stream}/events?last_event_id=0", 1)
        assert len(got) == 1
        await asyncio.wait_for(spy.tail_closed.wait(), 3)


@pytest.mark.parametrize("broker_kind", ["memory"], indirect=True)
async def test_stopping_the_server_ends_open_subscriptions_promptly(
    broker: Broker, prefix: str
) -> None:
    stop = asyncio.Event()
    app = FastAPI()
    app.include_router(create_push_router(broker, None, heartbeat_s=10, stop=stop))
    stream = f"{prefix}-results"
    await publish(broker, stream, ["k"])
    async with serving(app) as url, httpx.AsyncClient(timeout=10) as client:
        lines: list[str] = []
        async with client.stream("GET", f"{url}/v1/streams/{stream}/events?last_event_id=0") as r:

            async def read_all() -> None:
                async for line in r.aiter_lines():
                    lines.append(line)

            reading = asyncio.create_task(read_all())
            await eventually_async(lambda: any(line.startswith("data: ") for line in lines))
            stop.set()
            await asyncio.wait_for(reading, 3)  # the response ended by itself

    assert any(line.startswith("data: ") for line in lines)


@pytest.mark.parametrize("broker_kind", ["memory"], indirect=True)
async def test_the_worker_answers_a_bad_push_request_in_openai_error_shape(
    broker: Broker, prefix: str
) -> None:
    from nearline.worker.pipeline import Pipeline
    from nearline.worker.server import create_worker_app
    from nearline.worker.worker import Worker

    async def echo(batch: list[Entry]) -> list[dict[str, object]]:
        return [dict(entry.data) for entry in batch]

    worker = Worker(broker, [Pipeline("echo", f"{prefix}-source", echo, f"{prefix}-results")])
    transport = httpx.ASGITransport(app=create_worker_app(worker))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        unknown = await client.get(f"/v1/streams/{prefix}-source/events")
        wrong_method = await client.put(f"/v1/streams/{prefix}-results/events")

    assert unknown.status_code == 404
    assert unknown.json() == {
        "error": {
            "message": f"no results stream named '{prefix}-source' is published here",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }
    }
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert set(wrong_method.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("broker_kind", ["memory", "redis"], indirect=True)
@pytest.mark.parametrize("where", ["header", "query"])
async def test_a_garbage_last_event_id_is_a_400_in_openai_error_shape(
    broker: Broker, prefix: str, where: str
) -> None:
    from nearline.core.http import install_error_handlers

    stream = f"{prefix}-results"
    await publish(broker, stream, ["k"])
    app = FastAPI()
    install_error_handlers(app)  # as the worker's HTTP face does
    app.include_router(create_push_router(broker, [stream], heartbeat_s=0.5))
    url = f"/v1/streams/{stream}/events"
    headers = {"Last-Event-ID": "garbage"} if where == "header" else {}
    params = {"last_event_id": "garbage"} if where == "query" else {}

    async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        response = await client.get(url, headers=headers, params=params)
        resumed = await sse_events(client, f"{base}{url}?last_event_id=0", 1)  # still fine

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert "garbage" in response.json()["error"]["message"]
    assert len(resumed) == 1
