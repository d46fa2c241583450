"""Issue 12, point 3: the legacy ``/v1/completions`` with the official ``openai`` SDK.

A prompt is one user turn through the pipeline (``serving/completions_wire.py``), so the
answer is the chat answer to that message: the mock upstream's deterministic words, or the
local model's.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from nearline.testing import http

PROMPT = "Write one sentence about caches."
MODELS = {"m": {"provider": "up", "upstream_model": "mock-1"}, "local": {"provider": "local"}}


@pytest.fixture
def gateway(make_gateway: Any) -> Any:
    return make_gateway(
        models=MODELS,
        cache={"semantic": {"enabled": False}},
        progressive={"draft_model": None},
        local={"n_ctx": 512},
    )


def _client(gateway: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key="unused", max_retries=0)


def test_completion_is_the_chat_answer_to_one_user_turn(gateway: Any) -> None:
    client = _client(gateway)
    completion = client.completions.create(model="m", prompt=PROMPT, max_tokens=50)
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    [choice] = completion.choices
    chat = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": PROMPT}], max_tokens=50
    )
    assert choice.text == chat.choices[0].message.content
    assert choice.finish_reason == "stop" and choice.index == 0
    assert completion.usage is not None and completion.usage.completion_tokens == 24
    # The same prompt again is an exact-cache hit: the tier applies to this endpoint too.
    again = http.post(
        f"{gateway.v1}/completions",
        json={"model": "m", "prompt": [PROMPT], "max_tokens": 50},
        timeout=30,
    )
    assert again.headers["x-nearline-source"] == "exact"
    assert again.json()["choices"][0]["text"] == choice.text


def test_streaming_joins_to_the_answer(gateway: Any) -> None:
    client = _client(gateway)
    whole = client.completions.create(model="m", prompt="Stream this.", n=2, seed=3).choices
    chunks = list(
        client.completions.create(
            model="m",
            prompt="Stream this.",
            n=2,
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    for index in (0, 1):
        text = "".join(c.text for chunk in chunks for c in chunk.choices if c.index == index)
        assert text == whole[index].text
    finishes = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert finishes == ["stop", "stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 48


def test_refused_fields_are_named(gateway: Any) -> None:
    client = _client(gateway)
    for extra, param in (
        ({"suffix": "x"}, "suffix"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"echo": True}, "echo"),
        ({"logprobs": 2}, "logprobs"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            client.completions.create(model="m", prompt=PROMPT, **extra)
        assert refused.value.body["param"] == param  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="prompt"):
        client.completions.create(model="m", prompt=["one", "two"])


def test_local_model(gateway: Any) -> None:
    completion = _client(gateway).completions.create(
        model="local", prompt="Say hello.", max_tokens=8
    )
    assert completion.choices[0].text.strip()
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 8
    chunks = list(
        _client(gateway).completions.create(
            model="local", prompt="Say hello.", max_tokens=8, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == completion.choices[0].text


DEEP: dict[str, Any] = {}
_node = DEEP
for _ in range(300):
    _node["x"] = {}
    _node = _node["x"]
MALFORMED: list[tuple[str, Any]] = [
    ("completions", []),
    ("completions", {"model": "m"}),
    ("completions", {"model": "m", "prompt": 5}),
    ("completions", {"model": "m", "prompt": "x", "n": "2"}),
    ("embeddings", {"model": "all-MiniLM-L6-v2", "input": [None]}),
    ("embeddings", {"model": "all-MiniLM-L6-v2", "input": [[]]}),
    ("embeddings", {"model": "all-MiniLM-L6-v2", "input": ["x"] * 3000}),
    ("responses", {"model": "m", "input": [{"type": "function_call"}]}),
    ("responses", {"model": "m", "input": [{"type": "nope"}]}),
    ("responses", {"model": "m", "input": [{"role": "tool", "content": "x"}]}),
    ("responses", {"model": "m", "input": "x", "tool_choice": {"type": "function"}}),
    ("messages", {"model": "m", "max_tokens": 5, "messages": [{"role": "user"}]}),
    ("messages", {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{}]}]}),
    ("messages", {"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    ("messages/count_tokens", {"model": "m", "messages": [], "tools": [{"name": "t"}]}),
    (
        "messages/count_tokens",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "t", "input_schema": DEEP}],
        },
    ),
]


@pytest.mark.parametrize(("path", "body"), MALFORMED)
def test_malformed_bodies_are_400s_on_every_new_endpoint(
    gateway: Any, path: str, body: Any
) -> None:
    response = http.post(f"{gateway.v1}/{path}", json=body, timeout=30)
    assert response.status_code == 400, response.text
