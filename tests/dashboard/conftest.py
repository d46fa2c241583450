"""A real gateway in front of nearline's mock upstreams, with traffic whose figures are known:
three identical questions to ``fast`` (one computed answer, two exact-cache hits), one to
``broken`` (the upstream answers 500) and one streamed from ``trickle`` that the client
leaves after the first content."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from nearline.testing import eventually, http
from nearline.testing.mock_upstream import MockBehaviour

PRICE = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}
UPSTREAMS = {
    "fast": MockBehaviour(ttft_s=0.01, tokens_per_s=500, completion_tokens=8),
    "broken": MockBehaviour(error_rate=1.0),
    "trickle": MockBehaviour(ttft_s=0.01, tokens_per_s=4, completion_tokens=40),
    "steady": MockBehaviour(ttft_s=0.25, tokens_per_s=100, completion_tokens=12),  # flow kept
    "slow": MockBehaviour(ttft_s=1.2, tokens_per_s=100, completion_tokens=12),  # attention
}


def gateway_factory(make_gateway: Any) -> Any:
    """``gateway(**settings)``: a context manager yielding the URL of a gateway whose models
    ``fast``, ``broken``, ... are served by the mock upstreams of the same names."""

    @contextmanager
    def gateway(**settings: Any) -> Iterator[str]:
        mocks = {name: make_gateway.mock(behaviour) for name, behaviour in UPSTREAMS.items()}
        started = make_gateway(
            providers={name: {"base_url": mock.base_url} for name, mock in mocks.items()},
            models={name: {"provider": name, "price": PRICE} for name in mocks},
            cache={"semantic": {"enabled": False}},
            **settings,
        )
        yield started.url  # stopped with the test

    return gateway


def ask(url: str, model: str, question: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": question}]}
    return http.post(f"{url}/v1/chat/completions", json=body, timeout=30)


def leave_after_first_content(url: str, model: str, question: str) -> None:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": question}]}
    with http.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
        for line in response.iter_lines():
            if '"content"' in line:
                return


def send_known_traffic(url: str) -> None:
    for _ in range(3):
        assert ask(url, "fast", "what is a cache?").status_code == 200
    assert ask(url, "broken", "anyone there?").status_code == 502
    leave_after_first_content(url, "trickle", "tell me a long story")


def data_when(url: str, ready: Any, timeout_s: float = 30.0) -> dict[str, Any]:
    """Wait until ``/dashboard/data`` satisfies ``ready(data)`` (the gateway notices a client
    that left when it next writes to it); return the last figures either way."""

    def figures() -> dict[str, Any]:
        data: dict[str, Any] = http.get(f"{url}/dashboard/data", timeout=10).json()
        return data

    def when_ready() -> dict[str, Any] | None:
        data = figures()
        return data if ready(data) else None

    try:
        return eventually(when_ready, timeout_s)
    except TimeoutError:
        return figures()


class Traffic:
    """The helpers above, handed to tests by the ``traffic`` fixture."""

    def __init__(self, make_gateway: Any) -> None:
        self.gateway = gateway_factory(make_gateway)

    send_known = staticmethod(send_known_traffic)
    data_when = staticmethod(data_when)
    ask = staticmethod(ask)


@pytest.fixture
def traffic(make_gateway: Any) -> Traffic:
    return Traffic(make_gateway)
