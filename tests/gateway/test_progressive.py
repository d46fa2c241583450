"""Progressive answers end to end: the real local model drafts a preliminary while the
refined answer comes from nearline's mock upstream (a real HTTP server standing in for a
slow paid provider). The mock holds the refined answer until the draft has produced tokens
(``POST /mock/release``), so the order of events does not depend on how busy the machine is.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai
import orjson
import pytest
from fastapi import FastAPI

from nearline.testing import eventually, http
from nearline.testing.mock_upstream import MockBehaviour, deterministic_words

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]
REFINED = " ".join(deterministic_words(QUESTION, None, 12))


@dataclass
class Stack:
    url: str
    mock_url: str
    app: FastAPI

    def release_after_draft(self) -> threading.Thread:
        """Release the held refined answer once the local model has drafted a few tokens."""
        local = self.app.state.nearline.providers["local"]
        started = len(local.recent_runs)

        def wait_then_release() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                runs = list(local.recent_runs)[started:] if len(local.recent_runs) > started else []
                if runs and runs[-1].tokens >= 3:
                    break
                time.sleep(0.02)
            http.post(f"{self.mock_url}/mock/release", timeout=5)

        thread = threading.Thread(target=wait_then_release, daemon=True)
        thread.start()
        return thread

    def ask(self, send: Callable[[], Any]) -> Any:
        releaser = self.release_after_draft()
        try:
            return send()
        finally:
            releaser.join(timeout=60)


@pytest.fixture(scope="module")
def stack(make_module_gateway) -> Stack:
    held = MockBehaviour(
        ttft_s=0.01, tokens_per_s=40, completion_tokens=12, hold_until_released=True
    )
    mock = make_module_gateway.mock(held, fresh=True)  # its own hold, released by its tests
    gateway = make_module_gateway(
        mock,
        models={
            "smollm2-135m-instruct": {"provider": "local"},
            "big": {"provider": "up", "upstream_model": "mock-1"},
        },
        cache={"exact": {"enabled": False}, "semantic": {"enabled": False}},
    )
    return Stack(gateway.url, mock.root, gateway.app)


def _requests(mock_url: str) -> int:
    return int(http.get(f"{mock_url}/mock/stats", timeout=5).json()["requests"])


def _frames(text: str) -> list[tuple[str, dict]]:
    frames = []
    for line in text.splitlines():
        if line.startswith(": nearline "):
            frames.append(("nearline", orjson.loads(line[len(": nearline ") :])))
        elif line.startswith("data: {"):
            frames.append(("data", orjson.loads(line[6:])))
    return frames


def test_sse_shows_a_draft_first_then_the_refined_answer(stack: Stack):
    response = stack.ask(
        lambda: http.post(
            f"{stack.url}/v1/chat/completions",
            timeout=60,
            headers={"X-Nearline-Progressive": "1"},
            json={"model": "big", "stream": True, "messages": QUESTION},
        )
    )
    frames = _frames(response.text)
    kinds = [body.get("type") if kind == "nearline" else "chunk" for kind, body in frames]
    first_content = next(
        i
        for i, (kind, body) in enumerate(frames)
        if kind == "data" and body["choices"] and body["choices"][0]["delta"].get("content")
    )
    preliminaries = [
        body for kind, body in frames if kind == "nearline" and body["type"] == "preliminary"
    ]
    assert len(preliminaries) >= 3, kinds
    assert all(p["source"] == "draft" for p in preliminaries)
    texts = [p["text"] for p in preliminaries]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts))
    assert max(i for i, kind in enumerate(kinds) if kind == "preliminary") < first_content
    assert kinds[first_content - 1] == "replace"
    refined = "".join(
        body["choices"][0]["delta"].get("content") or ""
        for kind, body in frames
        if kind == "data" and body["choices"]
    )
    assert refined == REFINED
    assert response.text.rstrip().endswith("data: [DONE]")


def test_plain_openai_clients_see_only_the_refined_answer(stack: Stack):
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)

    def send() -> str:
        stream = client.chat.completions.create(
            model="big",
            messages=QUESTION,
            stream=True,
            extra_body={"nearline": {"progressive": True}},
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert stack.ask(send) == REFINED


def test_the_json_body_names_the_preliminary_it_would_have_shown(stack: Stack):
    body = stack.ask(
        lambda: http.post(
            f"{stack.url}/v1/chat/completions",
            timeout=60,
            json={"model": "big", "messages": QUESTION, "nearline": {"progressive": True}},
        ).json()
    )
    assert body["choices"][0]["message"]["content"] == REFINED
    preliminary = body["nearline"]["preliminary"]
    assert preliminary["source"] == "draft"
    assert preliminary["text"]
    assert preliminary["action"] in ("replace", "confirm")


def test_without_progressive_there_is_no_preliminary(stack: Stack):
    asked = _requests(stack.mock_url)

    def release_once_asked() -> None:  # nothing to wait for: no draft runs without progressive
        eventually(lambda: _requests(stack.mock_url) > asked, 30)
        http.post(f"{stack.mock_url}/mock/release", timeout=5)

    releaser = threading.Thread(target=release_once_asked, daemon=True)
    releaser.start()
    response = http.post(
        f"{stack.url}/v1/chat/completions",
        timeout=60,
        json={"model": "big", "stream": True, "messages": QUESTION},
    )
    releaser.join(timeout=60)
    assert ": nearline" not in response.text
    assert REFINED in "".join(
        body["choices"][0]["delta"].get("content") or ""
        for kind, body in _frames(response.text)
        if kind == "data" and body["choices"]
    )


def test_metrics_count_first_useful_content_by_path_and_replacements(stack: Stack):
    stack.ask(
        lambda: http.post(
            f"{stack.url}/v1/chat/completions",
            timeout=60,
            headers={"X-Nearline-Progressive": "1"},
            json={"model": "big", "stream": True, "messages": QUESTION},
        )
    )
    text = http.get(f"{stack.url}/metrics", timeout=5).text
    assert 'nearline_time_to_first_useful_content_seconds_count{model="big",source="draft"}' in text
    assert "nearline_preliminaries_total{action=" in text
