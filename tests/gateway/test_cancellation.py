"""A client that disconnects stops the upstream work.

The local-model cases run the real SmolLM2 model; the HTTP-upstream case uses nearline's
mock upstream and reads its counters to see that the gateway closed the connection.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from nearline.config import DEFAULT_MODEL_NAME, LocalModelSettings
from nearline.core.events import Delta
from nearline.core.provider import ProviderCall
from nearline.core.request import ChatRequest
from nearline.gateway.providers.local import LocalProvider
from nearline.testing import eventually, http
from nearline.testing.mock_upstream import MockBehaviour

pytestmark = pytest.mark.slow

LOCAL = {DEFAULT_MODEL_NAME: {"provider": "local"}}
LONG_ANSWER = [{"role": "user", "content": "Tell me a very long story about a lighthouse."}]


async def test_closing_the_stream_stops_the_local_model_within_a_token():
    provider = LocalProvider(LocalModelSettings())
    await provider.start()
    try:
        request = ChatRequest(
            model="local", messages=LONG_ANSWER, max_tokens=400, temperature=0.8, seed=1
        )
        events = provider.stream(ProviderCall(request, upstream_model="local", tenant="t"))
        deltas = 0
        async for event in events:
            deltas += isinstance(event, Delta)
            if deltas == 3:
                break
        await events.aclose()
        run = provider.recent_runs[-1]
        assert not run.finished
        assert run.tokens < 400
        assert run.tokens_after_cancel is not None and run.tokens_after_cancel <= 2
    finally:
        await provider.aclose()


def test_http_client_disconnect_stops_the_local_model(make_gateway):
    gateway = make_gateway(models=LOCAL)
    url = gateway.url
    with http.stream(
        "POST",
        f"{url}/v1/chat/completions",
        timeout=30,
        json={
            "model": "smollm2-135m-instruct",
            "stream": True,
            "max_tokens": 400,
            "temperature": 0.8,
            "seed": 1,
            "messages": LONG_ANSWER,
        },
    ) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
        assert any("content" in line for line in received)
    # the connection is closed now; the gateway must notice and stop generating
    provider = gateway.state.providers["local"]
    eventually(lambda: provider.recent_runs[-1].tokens_at_cancel is not None)
    run = provider.recent_runs[-1]
    # The behaviour under test: nothing more is generated in the next half second, which
    # would be ~50 more tokens at this model's speed if it kept going.
    time.sleep(0.5)
    assert not run.finished
    assert run.tokens < 400
    assert run.tokens_after_cancel is not None and run.tokens_after_cancel <= 2


def test_http_client_disconnect_closes_the_upstream_connection(make_gateway):
    gateway = make_gateway(MockBehaviour(ttft_s=0.01, tokens_per_s=10, completion_tokens=200))
    with http.stream(
        "POST",
        f"{gateway.v1}/chat/completions",
        timeout=30,
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    ) as response:
        lines = response.iter_lines()
        for _ in range(4):
            next(lines)
    stats = gateway.upstream.wait_for("cancelled", 1)
    assert stats["cancelled"] == 1
    assert stats["completed"] == 0
    assert stats["active"] == 0


async def test_a_full_queue_answers_503_with_retry_after_and_never_hangs(make_gateway):
    gateway = make_gateway(models=LOCAL, local={"max_queue": 1, "queue_retry_after_s": 4})
    url = gateway.url
    async with httpx.AsyncClient(timeout=60) as client:

        async def ask() -> httpx.Response:
            return await client.post(
                f"{url}/v1/chat/completions",
                json={
                    "model": "smollm2-135m-instruct",
                    "max_tokens": 48,
                    "messages": LONG_ANSWER,
                },
            )

        responses = await asyncio.gather(*(ask() for _ in range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2
    refused = [r for r in responses if r.status_code == 503]
    assert refused, statuses
    assert all(r.headers["Retry-After"] == "4" for r in refused)
    assert all(r.json()["error"]["code"] == "overloaded" for r in refused)
