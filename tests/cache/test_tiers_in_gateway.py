"""The semantic tier inside the gateway: paraphrases served, follow-ups and near-misses not,
near-matches as progressive preliminaries, and replicas sharing entries through real Redis.
Answers come from nearline's mock upstream (a real HTTP server standing in for a paid API)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import orjson
import pytest

from nearline.config import hash_api_key
from nearline.testing import http
from nearline.testing.mock_upstream import MockBehaviour


@pytest.fixture
def gateways(make_gateway):
    """``gateways(replicas=1, **settings) -> (mock, [url, ...])``: gateways with tenants of
    their own (``sk-a``, ``sk-b``) in front of one mock upstream, counted from now."""

    def start(replicas: int = 1, **settings: Any) -> tuple[Any, list[str]]:
        mock = make_gateway.mock(MockBehaviour(ttft_s=0))
        auth = {
            "keys": [
                {"sha256": hash_api_key("sk-a"), "tenant": f"a-{uuid.uuid4().hex}"},
                {"sha256": hash_api_key("sk-b"), "tenant": f"b-{uuid.uuid4().hex}"},
            ]
        }
        models = {"m": {"provider": "up"}, "smollm2-135m-instruct": {"provider": "local"}}
        replicas_ = make_gateway.replicas(replicas, mock, auth=auth, models=models, **settings)
        return mock, [gateway.url for gateway in replicas_]

    return start


def ask(
    url: str, messages: list[dict[str, str]] | str, key: str = "sk-a", **extra: Any
) -> httpx.Response:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    return http.post(
        f"{url}/v1/chat/completions",
        timeout=60,
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "m", "messages": messages, **extra},
    )


def upstream(mock: Any) -> int:
    requests: int = mock.requests()
    return requests


def test_a_paraphrase_is_served_by_the_semantic_tier(gateways):
    mock, [url] = gateways()
    first = ask(url, "How do I reset my password?")
    again = ask(url, "How can I reset my password?")
    assert again.headers["x-nearline-source"] == "semantic"
    assert float(again.headers["x-nearline-similarity"]) >= 0.9
    assert again.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]
    assert upstream(mock) == 1
    assert (
        ask(url, "How can I reset my password?", key="sk-b").headers["x-nearline-source"]
        == "inference"
    )  # never across tenants
    assert upstream(mock) == 2


def test_near_misses_and_follow_ups_go_to_the_model(gateways):
    mock, [url] = gateways()
    ask(url, "What is the population of France in 2020?")
    assert (
        ask(url, "What is the population of France in 1920?").headers["x-nearline-source"]
        == "inference"
    )
    context = [
        {"role": "user", "content": "Tell me about Japan."},
        {"role": "assistant", "content": "Japan is an island country."},
        {"role": "user", "content": "What is the population of France in 2020?"},
    ]
    assert ask(url, context).headers["x-nearline-source"] == "inference"
    assert (
        ask(url, "What is the population of France in 2020?", temperature=0.1).headers[
            "x-nearline-source"
        ]
        == "inference"
    )  # other sampling, other partition
    assert upstream(mock) == 4


def test_a_near_match_becomes_the_progressive_preliminary(gateways):
    semantic = {"hit_threshold": 0.999, "near_threshold": 0.5}
    _mock, [url] = gateways(cache={"semantic": semantic})
    original = ask(url, "How do I reset my password?").json()
    response = ask(url, "How can I reset my password?", stream=True, nearline={"progressive": True})
    comments = [
        orjson.loads(line[len(": nearline ") :])
        for line in response.text.splitlines()
        if line.startswith(": nearline ")
    ]
    assert comments[0]["type"] == "preliminary"
    assert comments[0]["source"] == "semantic-near"
    assert 0.5 <= comments[0]["similarity"] < 0.999
    assert comments[0]["text"] == original["choices"][0]["message"]["content"]
    assert response.headers["x-nearline-source"] == "inference"


def test_an_answer_stored_by_one_replica_is_served_by_another_within_a_second(gateways):
    question = f"How do I renew passport number {uuid.uuid4().int % 10**6}?"
    mock, [a, b] = gateways(
        replicas=2,
        redis={"url": "redis://127.0.0.1:6379/0"},
        cache={"exact": {"enabled": False}},
    )
    ask(a, question)
    stored_at = time.monotonic()
    paraphrase = question.replace("How do I", "How can I")
    only_cached = {"Authorization": "Bearer sk-a", "Cache-Control": "only-if-cached"}
    while True:  # replica b looks only in its caches: a miss is a 504, never an upstream call
        probe = http.post(
            f"{b}/v1/chat/completions",
            timeout=10,
            headers=only_cached,
            json={"model": "m", "messages": [{"role": "user", "content": paraphrase}]},
        )
        if probe.status_code != 504 or time.monotonic() - stored_at > 1.0:
            break
        time.sleep(0.02)
    assert probe.status_code == 200
    assert probe.headers["x-nearline-source"] == "semantic"
    assert upstream(mock) == 1
