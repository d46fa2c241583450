"""Issue 13, point 7: errors tell tenants a request id, not internals.

Upstream failures used to reach tenants as e.g. ``upstream 'internal-vllm' connection
failed: ClientConnectorError: Cannot connect to host 127.0.0.1:41743``, and upstream error
bodies were passed on. Now a tenant gets a generic message naming the request id (the
``x-request-id`` header's); the details are logged at warning with that id.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from nearline.core.errors import (
    NearlineError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from nearline.testing import http
from nearline.testing.mock_upstream import MockBehaviour

SECRET_PROVIDER = "internal-vllm"
SECRET_MODEL = "secret-model-7"
NO_CACHES = {"exact": {"enabled": False}, "semantic": {"enabled": False}}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _gateway(make_gateway: Any, base_url: str) -> Any:
    provider = {"base_url": base_url, "connect_timeout_s": 1, "read_timeout_s": 5}
    return make_gateway(
        providers={SECRET_PROVIDER: provider},
        models={"m": {"provider": SECRET_PROVIDER, "upstream_model": SECRET_MODEL}},
        cache=NO_CACHES,
    )


def _assert_discreet(message: str, *secrets: str) -> None:
    for secret in (SECRET_PROVIDER, SECRET_MODEL, "127.0.0.1", "Error:", *secrets):
        assert secret not in message, message


def _assert_logged(caplog: pytest.LogCaptureFixture, request_id: str, detail: str) -> None:
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and request_id in r.getMessage()
    ]
    assert any(detail in line for line in lines), lines


def test_an_unreachable_upstream_names_the_request_not_the_host(make_gateway, caplog):
    gateway = _gateway(make_gateway, "http://127.0.0.1:9/v1")
    for stream in (False, True):
        response = http.post(
            f"{gateway.v1}/chat/completions", json={**BODY, "stream": stream}, timeout=30
        )
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["code"] == "upstream_error"
        _assert_discreet(error["message"], ":9")
        request_id = response.headers["x-request-id"]
        assert request_id in error["message"]
        _assert_logged(caplog, request_id, "127.0.0.1:9")


@pytest.mark.parametrize(
    ("behaviour", "status", "upstream_body"),
    [
        (MockBehaviour(error_rate=1.0), 502, "mock upstream failure"),
        (MockBehaviour(rate_limit_rate=1.0), 429, "mock rate limit"),
    ],
    ids=["5xx", "429"],
)
def test_an_upstream_error_body_is_not_passed_on(
    make_gateway, caplog, behaviour, status, upstream_body
):
    mock = make_gateway.mock(behaviour)
    gateway = _gateway(make_gateway, mock.base_url)
    response = http.post(f"{gateway.v1}/chat/completions", json=BODY, timeout=30)
    assert response.status_code == status
    message = response.json()["error"]["message"]
    _assert_discreet(message, upstream_body)
    assert response.headers["x-request-id"] in message
    _assert_logged(caplog, response.headers["x-request-id"], upstream_body)


def test_a_mid_stream_failure_frame_names_the_request_not_the_upstream(make_gateway, caplog):
    mock = make_gateway.mock(MockBehaviour(disconnect_rate=1.0, completion_tokens=10))
    gateway = _gateway(make_gateway, mock.base_url)
    response = http.post(
        f"{gateway.v1}/chat/completions", json={**BODY, "stream": True}, timeout=30
    )
    assert response.status_code == 200
    frames = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    error = orjson.loads(frames[-2])["error"]
    _assert_discreet(error["message"])
    request_id = response.headers["x-request-id"]
    assert request_id in error["message"]
    _assert_logged(caplog, request_id, SECRET_PROVIDER)


async def test_a_websocket_error_names_the_request_not_the_host(make_gateway):
    gateway = _gateway(make_gateway, "http://127.0.0.1:9/v1")
    async with connect(gateway.ws) as socket:
        await socket.send(orjson.dumps({"type": "chat", "id": "r1", "body": BODY}).decode())
        reply = orjson.loads(await socket.recv())
    assert reply["type"] == "error"
    _assert_discreet(reply["error"]["message"], ":9")
    assert "chatcmpl-" in reply["error"]["message"]


@pytest.mark.parametrize(
    "error",
    [
        UpstreamError("upstream 'internal-vllm' answered 500: stack trace at 10.1.2.3"),
        UpstreamTimeout("upstream 'internal-vllm' timed out (TimeoutError)"),
        UpstreamRateLimited("upstream 'internal-vllm' rate limited: org-123 over quota"),
        UpstreamRejected("upstream 'internal-vllm' rejected the request (422): body"),
        UpstreamError("every deployment of tier 'frontier' is unavailable (circuit open)"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_upstream_error_renders_without_its_details(error: NearlineError) -> None:
    error.for_request("chatcmpl-1")
    message = error.body()["error"]["message"]
    for secret in ("internal-vllm", "10.1.2.3", "org-123", "body", "frontier", "TimeoutError"):
        assert secret not in message
    assert message.endswith("(request id chatcmpl-1)")
    assert error.message.startswith(("upstream 'internal-vllm'", "every deployment"))  # logs
