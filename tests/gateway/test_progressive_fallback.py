"""The paid upstream is down and progressive mode is on: the local draft becomes the answer,
marked as such, instead of a bare 502 (issue 15). The real local model drafts; the mock
upstream refuses every request with a 500 before any token."""

from __future__ import annotations

import orjson
import pytest

from nearline.testing.mock_upstream import MockBehaviour

pytestmark = pytest.mark.slow

DOWN = MockBehaviour(error_rate=1.0)
MODELS = {
    "smollm2-135m-instruct": {"provider": "local"},
    "big": {"provider": "up", "upstream_model": "mock-1", "progressive": True},
}
CACHE = {"exact": {"enabled": False}, "semantic": {"enabled": False}}
QUESTION = "Say hello in French."


def _comments(text: str) -> list[dict[str, object]]:
    prefix = ": nearline "
    return [
        orjson.loads(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)
    ]


def _content(text: str) -> str:
    parts = []
    for line in text.splitlines():
        if line.startswith("data: {"):
            for choice in orjson.loads(line[6:]).get("choices", []):
                parts.append(choice["delta"].get("content") or "")
    return "".join(parts)


def test_the_draft_answers_when_the_upstream_fails_before_its_first_token(make_gateway):
    gateway = make_gateway(
        make_gateway.mock(DOWN),
        models=MODELS,
        cache=CACHE,
        progressive={"draft_max_tokens": 12, "fallback_to_draft": True},
    )
    response = gateway.chat(QUESTION, model="big", stream=True, timeout=120)
    assert response.status_code == 200, response.text
    comments = _comments(response.text)
    assert {"type": "replace", "action": "confirm", "source": "draft"} in comments
    drafts = [c["text"] for c in comments if c["type"] == "preliminary"]
    assert drafts and _content(response.text) == drafts[-1]
    assert response.text.rstrip().endswith("data: [DONE]")
    assert '"error"' not in response.text


def test_without_the_fallback_the_upstream_error_stands(make_gateway):
    gateway = make_gateway(
        make_gateway.mock(DOWN),
        models=MODELS,
        cache=CACHE,
        progressive={"draft_max_tokens": 12, "fallback_to_draft": False},
    )
    response = gateway.chat(QUESTION, model="big", stream=True, timeout=120)
    assert response.status_code == 502 or '"error"' in response.text
