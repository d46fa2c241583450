"""Upstream failures map once, at the boundary, to OpenAI-shaped errors.

Every test here uses nearline's mock upstream (a real HTTP server that behaves like a paid
provider), configured to fail in one specific way.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from nearline.testing import http
from nearline.testing.mock_upstream import MockBehaviour


@pytest.fixture
def gateway_before(make_gateway):
    """``gateway_before(behaviour, read_timeout_s=10)``: a gateway whose model ``m`` is served
    by a mock upstream that fails as ``behaviour`` says; returns the gateway's URL."""

    def start(behaviour: MockBehaviour, read_timeout_s: float = 10.0) -> str:
        mock = make_gateway.mock(behaviour)
        http = {"read_timeout_s": read_timeout_s, "connect_timeout_s": 2}
        return make_gateway(mock, providers={"up": {"base_url": mock.base_url, **http}}).url

    return start


def _ask(url: str, stream: bool = False) -> httpx.Response:
    return http.post(
        f"{url}/v1/chat/completions",
        timeout=30,
        json={"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]},
    )


def test_upstream_5xx_becomes_502(gateway_before):
    url = gateway_before(MockBehaviour(error_rate=1.0))
    for stream in (False, True):
        response = _ask(url, stream)
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_error"
    metrics = http.get(f"{url}/metrics", timeout=5).text
    assert 'nearline_upstream_errors_total{code="upstream_error",model="m"} 2.0' in metrics


def test_upstream_429_is_passed_on_with_retry_after(gateway_before):
    url = gateway_before(MockBehaviour(rate_limit_rate=1.0))
    response = _ask(url)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_upstream_timeout_becomes_504(gateway_before):
    url = gateway_before(MockBehaviour(ttft_s=3.0), read_timeout_s=0.3)
    response = _ask(url, stream=True)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_unreachable_upstream_becomes_502(make_gateway):
    unreachable = {"base_url": "http://127.0.0.1:9/v1", "connect_timeout_s": 1}
    url = make_gateway(providers={"up": unreachable}).url
    response = _ask(url)
    assert response.status_code == 502
    assert response.headers["x-request-id"] in response.json()["error"]["message"]


def test_mid_stream_disconnect_arrives_as_an_error_event_not_a_silent_cut(gateway_before):
    url = gateway_before(MockBehaviour(disconnect_rate=1.0, completion_tokens=10))
    response = _ask(url, stream=True)
    assert response.status_code == 200  # the stream had begun
    frames = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "data: [DONE]"
    assert '"error"' in frames[-2] and "upstream_error" in frames[-2]
    assert not any('"finish_reason":"stop"' in f for f in frames)

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
