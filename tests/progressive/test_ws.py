"""``GET /v1/ws`` against a real gateway and nearline's mock upstream (docs/protocol.md)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from nearline.config import hash_api_key
from nearline.testing import eventually_async, http
from nearline.testing.mock_upstream import MockBehaviour, deterministic_words
from nearline.testing.ws import receive, until_done

KEY = "sk-ws-alpha"
LIMITED_KEY = "sk-ws-beta"  # may use only a model that does not exist here


def question(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def chat(request_id: str, text: str, model: str = "big", **extra: Any) -> str:
    """A ``chat`` message as a text frame (what browsers send)."""
    body = {"model": model, "messages": question(text), **extra}
    return orjson.dumps({"type": "chat", "id": request_id, "body": body}).decode()


async def test_several_requests_share_one_connection_and_interleave(make_stack):
    with make_stack(MockBehaviour(ttft_s=0.3, tokens_per_s=40)) as stack:
        async with connect(stack.ws) as socket:
            await socket.send(chat("r1", "first question"))
            await socket.send(chat("r2", "second question"))
            messages = await until_done(socket, {"r1", "r2"})
    texts: dict[str, str] = defaultdict(str)
    for message in messages:
        if message["type"] == "delta":
            texts[message["id"]] += message["text"]
    assert texts["r1"] == " ".join(deterministic_words(question("first question"), None, 24))
    assert texts["r2"] == " ".join(deterministic_words(question("second question"), None, 24))
    order = [(m["type"], m["id"]) for m in messages]
    # concurrent, not one after the other: r2 streams before r1 has finished
    assert order.index(("delta", "r2")) < order.index(("done", "r1"))
    for request_id in ("r1", "r2"):
        own = [m for m in messages if m["id"] == request_id and m["type"] != "delta"]
        assert own[-2:] == [
            {
                "type": "usage",
                "id": request_id,
                "prompt_tokens": 2,
                "completion_tokens": 24,
                "cached_tokens": 0,
            },
            {"type": "done", "id": request_id, "finish_reason": "stop", "source": "inference"},
        ]
    done = [m for m in messages if m["type"] == "done"]
    assert {m["finish_reason"] for m in done} == {"stop"}
    assert {m["source"] for m in done} == {"inference"}
    assert all(m["type"] != "error" for m in messages)


async def test_cancel_stops_the_upstream_work_and_the_connection_stays_usable(make_stack):
    slow = MockBehaviour(ttft_s=0.01, tokens_per_s=10, completion_tokens=200)
    with make_stack(slow) as stack:
        async with connect(stack.ws) as socket:
            await socket.send(chat("long", "tell me everything"))
            first = await receive(socket)
            assert (first["type"], first["id"]) == ("delta", "long")
            await socket.send(orjson.dumps({"type": "cancel", "id": "long"}))
            stats = await asyncio.to_thread(stack.wait_for_stats, "cancelled", 1)
            assert stats["cancelled"] == 1
            assert stats["completed"] == 0
            assert stats["active"] == 0
            # a cancel for an id that is not running is harmless
            await socket.send(orjson.dumps({"type": "cancel", "id": "never-started"}))
            await socket.send(chat("next", "short one", max_tokens=3))
            messages = await until_done(socket, {"next"})
            # a cancelled id is free again at once
            await socket.send(chat("again", "one more"))  # 200 tokens, would end with "stop"
            await receive(socket)
            await socket.send(orjson.dumps({"type": "cancel", "id": "again"}))
            await socket.send(chat("again", "and another", max_tokens=2))
            reused = await until_done(socket, {"again"})
            stats = await asyncio.to_thread(stack.wait_for_stats, "completed", 2)
    assert not any(m["id"] == "long" and m["type"] == "done" for m in messages)
    assert messages[-1] == {
        "type": "done",
        "id": "next",
        "finish_reason": "length",
        "source": "inference",
    }
    assert (reused[-1]["type"], reused[-1]["finish_reason"]) == ("done", "length")
    assert not any(m["type"] == "error" for m in reused)
    assert (stats["cancelled"], stats["completed"]) == (2, 2)


async def test_cancel_before_the_first_token_stops_the_upstream_too(make_stack):
    with make_stack(MockBehaviour(ttft_s=30, tokens_per_s=10)) as stack:
        async with connect(stack.ws) as socket:
            await socket.send(chat("slow", "take your time"))
            await asyncio.to_thread(stack.wait_for_stats, "active", 1)
            await socket.send(orjson.dumps({"type": "cancel", "id": "slow"}).decode())
            stats = await asyncio.to_thread(stack.wait_for_stats, "cancelled", 1)
            assert (stats["cancelled"], stats["active"]) == (1, 0)
            with pytest.raises(TimeoutError):  # nothing is sent for a cancelled request
                await receive(socket, timeout_s=0.5)


async def test_closing_the_socket_cancels_every_running_request(make_stack):
    slow = MockBehaviour(ttft_s=0.01, tokens_per_s=10, completion_tokens=200)
    with make_stack(slow) as stack:
        async with connect(stack.ws) as socket:
            await socket.send(chat("a", "one"))
            await socket.send(chat("b", "two"))
            seen: set[str] = set()
            while seen != {"a", "b"}:
                seen.add((await receive(socket))["id"])
        stats = await asyncio.to_thread(stack.wait_for_stats, "cancelled", 2)
    assert stats["cancelled"] == 2
    assert stats["completed"] == 0
    assert stats["active"] == 0


async def test_malformed_messages_get_an_error_without_id_and_the_connection_stays_open(
    make_stack,
):
    bad = [
        "not json",
        "[1, 2]",
        orjson.dumps({"type": "shout", "id": "x"}),
        orjson.dumps({"type": "chat", "id": "x"}),  # no body
        orjson.dumps({"type": "chat", "id": "", "body": {}}),
        orjson.dumps({"type": "cancel"}),
    ]
    with make_stack(MockBehaviour()) as stack:
        async with connect(stack.ws) as socket:
            for raw in bad:
                await socket.send(raw)
                error = await receive(socket)
                assert error["type"] == "error", raw
                assert error["id"] is None, raw
                assert error["error"]["type"] == "invalid_request_error", raw
                assert error["error"]["message"], raw
            await socket.send(b"\x00 not a message")  # a binary frame
            assert (await receive(socket))["id"] is None
            # a well-formed message whose request is invalid fails that request only
            await socket.send(orjson.dumps({"type": "chat", "id": "r", "body": {"model": "big"}}))
            invalid = await receive(socket)
            assert invalid["id"] == "r"
            assert invalid["error"]["code"] == "invalid_request"
            assert "messages" in invalid["error"]["message"]
            await socket.send(chat("m", "hello", model="no-such-model"))
            missing = await receive(socket)
            assert (missing["id"], missing["error"]["code"]) == ("m", "model_not_found")
            await socket.send(chat("ok", "still there?"))
            messages = await until_done(socket, {"ok"})
    assert messages[-1]["type"] == "done"
    assert "".join(m.get("text", "") for m in messages if m["type"] == "delta")


async def test_a_message_over_the_body_limit_is_refused_and_the_connection_stays(make_stack):
    with make_stack(MockBehaviour(), server={"max_body_bytes": 4096}) as stack:
        async with connect(stack.ws) as socket:
            await socket.send(chat("big", "x" * 5000))
            error = await receive(socket)
            assert (error["id"], error["error"]["code"]) == (None, "request_too_large")
            await socket.send(chat("ok", "small"))
            assert (await until_done(socket, {"ok"}))[-1]["type"] == "done"
        assert stack.stats()["requests"] == 1


async def test_an_id_already_running_is_refused_without_disturbing_it(make_stack):
    with make_stack(MockBehaviour(ttft_s=0.3, tokens_per_s=40)) as stack:
        async with connect(stack.ws) as socket:
            await socket.send(chat("same", "first"))
            await socket.send(chat("same", "second"))
            messages = await until_done(socket, {"same"})
    errors = [m for m in messages if m["type"] == "error"]
    assert len(errors) == 1
    assert errors[0]["id"] is None
    assert "already running" in errors[0]["error"]["message"]
    text = "".join(m["text"] for m in messages if m["type"] == "delta")
    assert text == " ".join(deterministic_words(question("first"), None, 24))


@pytest.fixture
def auth_settings() -> dict[str, Any]:
    return {
        "auth": {
            "keys": [
                {"sha256": hash_api_key(KEY), "tenant": "alpha"},
                {"sha256": hash_api_key(LIMITED_KEY), "tenant": "beta", "models": ["other"]},
            ]
        }
    }


async def test_auth_by_upgrade_header_or_first_message(make_stack, auth_settings):
    with make_stack(MockBehaviour(), **auth_settings) as stack:
        async with connect(
            stack.ws, additional_headers={"Authorization": f"Bearer {KEY}"}
        ) as socket:
            await socket.send(chat("h", "by header"))
            assert (await until_done(socket, {"h"}))[-1]["type"] == "done"
        async with connect(stack.ws) as socket:
            await socket.send(orjson.dumps({"type": "auth", "api_key": KEY}))
            await socket.send(chat("m", "by message"))
            assert (await until_done(socket, {"m"}))[-1]["type"] == "done"
            # auth is the first message only; later ones are refused, the connection stays
            await socket.send(orjson.dumps({"type": "auth", "api_key": KEY}))
            late = await receive(socket)
            assert (late["type"], late["id"]) == ("error", None)
        async with connect(stack.ws) as socket:
            await socket.send(orjson.dumps({"type": "auth", "api_key": LIMITED_KEY}))
            await socket.send(chat("p", "not allowed"))
            denied = await receive(socket)
            assert (denied["id"], denied["error"]["code"]) == ("p", "model_not_allowed")


@pytest.mark.parametrize(
    ("headers", "first_message"),
    [
        ({}, chat("r", "no key")),
        ({}, orjson.dumps({"type": "auth", "api_key": "sk-wrong"})),
        ({"Authorization": "Bearer sk-wrong"}, None),
    ],
    ids=["chat-before-auth", "wrong-key-message", "wrong-key-header"],
)
async def test_failed_auth_says_why_then_closes(make_stack, auth_settings, headers, first_message):
    with make_stack(MockBehaviour(), **auth_settings) as stack:
        async with connect(stack.ws, additional_headers=headers) as socket:
            if first_message is not None:
                await socket.send(first_message)
            error = await receive(socket)
            assert error["type"] == "error"
            assert error["id"] is None
            assert error["error"]["type"] == "authentication_error"
            with pytest.raises(ConnectionClosed) as closed:
                await receive(socket)
        assert stack.stats()["requests"] == 0
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


@pytest.mark.slow
async def test_a_progressive_answer_over_the_socket_drafts_first_and_cancel_stops_the_paid_call(
    make_stack,
):
    """Through the real pipeline: the light local model drafts while the paid answer (the
    mock, held until released so the order does not depend on this machine's speed) waits."""
    paid = MockBehaviour(ttft_s=0.2, tokens_per_s=100, hold_until_released=True)
    progressive = {"nearline": {"progressive": True}}
    with make_stack(paid, with_draft_model=True) as stack:
        async with connect(stack.ws) as socket:
            await socket.send(chat("p", "Why is the sky blue?", **progressive))
            first = await receive(socket, timeout_s=60)
            assert (first["type"], first["id"], first["source"]) == ("preliminary", "p", "draft")
            assert first["text"]
            await asyncio.to_thread(http.post, f"{stack.mock}/mock/release", timeout=5)
            messages = [first, *await until_done(socket, {"p"})]
            kinds = [m["type"] for m in messages]
            replace = kinds.index("replace")
            assert set(kinds[:replace]) == {"preliminary"}
            assert kinds[replace + 1] == "delta"
            assert messages[replace]["action"] in ("replace", "confirm")
            assert kinds[-1] == "done"
            refined = "".join(m["text"] for m in messages if m["type"] == "delta")
            assert refined == " ".join(
                deterministic_words(question("Why is the sky blue?"), None, 24)
            )

            # cancelled while the draft shows and the paid answer is held: the paid call stops
            await socket.send(chat("c", "And the sea?", **progressive))
            assert (await receive(socket, timeout_s=60))["type"] == "preliminary"
            await socket.send(orjson.dumps({"type": "cancel", "id": "c"}).decode())
            stats = await asyncio.to_thread(stack.wait_for_stats, "cancelled", 1)
            assert stats["cancelled"] == 1
            assert stats["active"] == 0


async def test_each_socket_request_is_traced_like_an_http_one(make_stack):
    exporter = InMemorySpanExporter()
    with make_stack(MockBehaviour(), span_exporter=exporter) as stack:
        async with connect(stack.ws) as socket:
            await socket.send(chat("t1", "trace me"))
            await socket.send(chat("t2", "and me", model="nope"))
            await until_done(socket, {"t1", "t2"})
        await asyncio.to_thread(stack.wait_for_stats, "completed", 1)

        def roots() -> list:  # a root span ends when its request's task finishes
            return [s for s in exporter.get_finished_spans() if s.name == "WS /v1/ws chat"]

        await eventually_async(lambda: len(roots()) == 2)
    spans = exporter.get_finished_spans()
    assert len(roots()) == 2
    answered = next(r for r in roots() if r.attributes.get("nearline.source") == "inference")
    failed = next(r for r in roots() if r is not answered)
    assert failed.status.status_code.name == "ERROR"
    children = {s.name for s in spans if s.parent and s.parent.span_id == answered.context.span_id}
    assert "chat mock-1" in children


@pytest.mark.slow
async def test_the_progressive_header_on_the_upgrade_applies_to_the_sockets_requests(
    make_stack,
):
    paid = MockBehaviour(ttft_s=0.2, tokens_per_s=100, hold_until_released=True)
    with make_stack(paid, with_draft_model=True) as stack:
        headers = {"X-Nearline-Progressive": "1"}
        async with connect(stack.ws, additional_headers=headers) as socket:
            await socket.send(chat("h", "Why is the sky blue?"))
            first = await receive(socket, timeout_s=60)
            assert (first["type"], first["source"]) == ("preliminary", "draft")
            await asyncio.to_thread(http.post, f"{stack.mock}/mock/release", timeout=5)
            messages = await until_done(socket, {"h"})
            assert messages[-1]["type"] == "done"
