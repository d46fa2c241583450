"""Issue 13, point 5: WebSocket limits that hold whatever the client sends.

* An unauthenticated socket is closed when the auth timeout runs out, even if it keeps
  sending (junk used to restart the timeout).
* Message sizes are counted in bytes, as HTTP bodies are (emoji used to count as one).
* Requests in flight on one connection are capped (``server.websocket.max_in_flight``);
  one over the cap gets an error frame naming the limit.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from nearline.config import hash_api_key
from nearline.testing.mock_upstream import MockBehaviour
from nearline.testing.ws import receive, until_done

KEY = "sk-ws"


def chat(request_id: str, text: str = "What is a cache?") -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    return orjson.dumps({"type": "chat", "id": request_id, "body": body}).decode()


async def test_junk_does_not_keep_an_unauthenticated_socket_open(make_gateway):
    gateway = make_gateway(
        auth={"keys": [{"sha256": hash_api_key(KEY), "tenant": "t"}]},
        server={"websocket": {"auth_timeout_s": 1.0}},
    )
    started = time.monotonic()

    async def junk_until_closed(socket: ClientConnection) -> None:
        while time.monotonic() - started < 20:  # junk every 0.3 s, well inside the timeout
            await socket.send("not json")
            error = await receive(socket)
            assert error["type"] == "error"
            await asyncio.sleep(0.3)

    async with connect(gateway.ws) as socket:
        with pytest.raises(ConnectionClosed):
            await junk_until_closed(socket)
    assert time.monotonic() - started < 10  # the 1 s auth timeout, not the 20 s of junk
    assert socket.close_code == 1008


async def test_message_sizes_are_counted_in_bytes(make_gateway):
    gateway = make_gateway(server={"max_body_bytes": 4096})
    emoji = "\N{GRINNING FACE}" * 1500  # 1,500 characters, 6,000 bytes of UTF-8
    async with connect(gateway.ws) as socket:
        await socket.send(chat("big", emoji))
        refused = await receive(socket)
        assert refused["type"] == "error", refused
        assert refused["error"]["code"] == "request_too_large"
        assert "4096 bytes" in refused["error"]["message"]
        await socket.send(chat("small"))  # the connection stays open
        answer = await until_done(socket, {"small"})
        assert answer[-1]["type"] == "done"
    assert gateway.upstream.requests() == 1


async def test_requests_in_flight_per_connection_are_capped(make_gateway):
    held = make_gateway.mock(MockBehaviour(hold_until_released=True), fresh=True)
    gateway = make_gateway(
        held,
        server={"websocket": {"max_in_flight": 2}},
        cache={"exact": {"enabled": False}, "semantic": {"enabled": False}},
    )
    async with connect(gateway.ws) as socket:
        for request_id in ("a", "b", "c"):
            await socket.send(chat(request_id, f"question {request_id}"))
        refused = await receive(socket)
        assert refused["id"] == "c", refused
        assert refused["error"]["code"] == "too_many_requests_in_flight"
        assert "server.websocket.max_in_flight" in refused["error"]["message"]
        assert "2" in refused["error"]["message"]
        # a release lets go only of the answers held by then: wait until both reached the mock
        await asyncio.to_thread(held.wait_for, "requests", 2)
        held.release()
        done: set[str] = set()
        while done != {"a", "b"}:  # the two within the cap are answered
            message = await receive(socket)
            assert message["type"] != "error", message
            if message["type"] == "done":
                done.add(message["id"])
