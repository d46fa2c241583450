"""Two real ``nearline serve`` processes sharing the real Redis on 127.0.0.1:6379: an answer
one process stored is served by the other, from the exact tier and from the semantic tier.
Answers come from nearline's mock upstream (a real HTTP server standing in for a paid API)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import yaml

from nearline.testing import http, serve_in_process
from nearline.testing.mock_upstream import MockBehaviour

pytestmark = pytest.mark.slow


@pytest.fixture
def two_replicas(tmp_path: Path, make_gateway) -> Iterator[tuple[object, str, str]]:
    mock = make_gateway.mock(MockBehaviour(ttft_s=0))  # the session's, counted from here
    with ExitStack() as exits:
        config = tmp_path / "nearline.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "server": {"log_level": "warning"},
                    "redis": {"url": "redis://127.0.0.1:6379/0"},
                    "request_log": {"enabled": False},
                    "providers": {"up": {"base_url": mock.base_url}},
                    "models": {"m": {"provider": "up"}},
                }
            )
        )
        urls = [exits.enter_context(serve_in_process(config)) for _ in range(2)]
        yield mock, urls[0], urls[1]


def _ask(url: str, question: str, **headers: str) -> httpx.Response:
    return http.post(
        f"{url}/v1/chat/completions",
        timeout=30,
        headers=headers,
        json={"model": "m", "messages": [{"role": "user", "content": question}]},
    )


def _served_within(url: str, question: str, seconds: float) -> httpx.Response:
    """Ask ``url`` with only-if-cached (never reaching the upstream) until it has the answer."""
    deadline = time.monotonic() + seconds
    while True:
        response = _ask(url, question, **{"Cache-Control": "only-if-cached"})
        if response.status_code != 504 or time.monotonic() > deadline:
            return response
        time.sleep(0.02)


def test_each_process_serves_what_the_other_stored(two_replicas):
    mock, a, b = two_replicas
    topic = uuid.uuid4().hex[:8]
    question = f"How do I rotate the {topic} signing keys?"
    first = _ask(a, question)
    assert first.headers["x-nearline-source"] == "inference"

    exact = _served_within(b, question, 1.0)
    assert exact.status_code == 200
    assert exact.headers["x-nearline-source"] == "exact"
    assert exact.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]

    paraphrase = _served_within(b, f"How can I rotate the {topic} signing keys?", 1.0)
    assert paraphrase.status_code == 200
    assert paraphrase.headers["x-nearline-source"] == "semantic"
    assert mock.requests() == 1
