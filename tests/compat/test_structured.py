"""Issue 12, point 2: structured outputs, ``n``, logprobs, images and the accepted extras,
with the official ``openai`` SDK over a real socket — through the mock upstream and on the
real local model (SmolLM2-135M, its output held to the schema by a llama.cpp grammar)."""

from __future__ import annotations

import json
from typing import Any, Literal

import openai
import pytest
from pydantic import BaseModel, ConfigDict

from nearline.core.provider import ProviderCall
from nearline.core.request import ChatRequest
from nearline.gateway.cache.exact import exact_key
from nearline.testing import http

ASK = [{"role": "user", "content": "Describe the sky over the sea in one short line."}]
MODELS = {"m": {"provider": "up", "upstream_model": "mock-1"}, "local": {"provider": "local"}}
IMAGE = {
    "type": "image_url",
    "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
}


class Colour(BaseModel):
    model_config = ConfigDict(extra="forbid")
    colour: Literal["red", "green", "blue"]
    bright: bool
    count: int


COLOUR_SCHEMA = {
    "type": "object",
    "properties": {
        "colour": {"type": "string", "enum": ["red", "green", "blue"]},
        "bright": {"type": "boolean"},
        "count": {"type": "integer"},
    },
    "required": ["colour", "bright", "count"],
    "additionalProperties": False,
}
COLOUR_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "colour", "strict": True, "schema": COLOUR_SCHEMA},
}


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


def test_json_schema_through_the_upstream_with_the_sdk_parse_helper(gateway: Any) -> None:
    parsed = _client(gateway).chat.completions.parse(
        model="m", messages=ASK, response_format=Colour
    )
    assert parsed.choices[0].message.parsed == Colour(colour="red", bright=True, count=1)


def test_json_object_through_the_upstream_streamed(gateway: Any) -> None:
    chunks = _client(gateway).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Answer in JSON: what is a cache?"}],
        response_format={"type": "json_object"},
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert isinstance(json.loads(text)["answer"], str)


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_on_the_local_model_always_parses_and_validates(
    gateway: Any, stream: bool
) -> None:
    client = _client(gateway)
    for seed in (1, 2, 3):
        params: dict[str, Any] = {
            "model": "local",
            "messages": [{"role": "user", "content": "Pick a colour and count to three."}],
            "response_format": COLOUR_FORMAT,
            "max_tokens": 40,
            "temperature": 1.0,
            "seed": seed,
        }
        if stream:
            chunks = client.chat.completions.create(**params, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            text = client.chat.completions.create(**params).choices[0].message.content or ""
        Colour.model_validate(json.loads(text))  # parses, and validates against the schema


@pytest.mark.slow
def test_json_object_and_n_samples_on_the_local_model(gateway: Any) -> None:
    answer = _client(gateway).chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "Reply in json with a key 'a'."}],
        response_format={"type": "json_object"},
        max_tokens=40,
        n=2,
        seed=5,
    )
    assert [c.index for c in answer.choices] == [0, 1]
    for choice in answer.choices:
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content or ""), dict)


def test_n_choices_through_the_upstream_streamed_and_not(gateway: Any) -> None:
    client = _client(gateway)
    whole = client.chat.completions.create(model="m", messages=ASK, n=2, seed=3)
    assert [c.index for c in whole.choices] == [0, 1]
    texts = [c.message.content for c in whole.choices]
    assert texts[0] != texts[1] and all(texts)
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=ASK,
            n=2,
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    joined = {0: "", 1: ""}
    finishes: dict[int, list[str]] = {0: [], 1: []}
    for chunk in chunks:
        for choice in chunk.choices:
            joined[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index].append(choice.finish_reason)
    assert [joined[0], joined[1]] == texts
    assert finishes == {0: [whole.choices[0].finish_reason], 1: [whole.choices[1].finish_reason]}
    assert (
        chunks[-1].usage is not None
        and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    )


def test_n_choices_are_replayed_by_the_exact_cache(gateway: Any) -> None:
    body = {"model": "m", "messages": ASK, "n": 3}
    first = http.post(f"{gateway.v1}/chat/completions", json=body).json()
    again = http.post(f"{gateway.v1}/chat/completions", json=body).json()
    single = http.post(f"{gateway.v1}/chat/completions", json={**body, "n": 1}).json()
    assert again["nearline"]["source"] == "exact"
    assert again["choices"] == first["choices"] and len(first["choices"]) == 3
    assert single["nearline"]["source"] == "inference" and len(single["choices"]) == 1


def test_logprobs_pass_through(gateway: Any) -> None:
    client = _client(gateway)
    whole = client.chat.completions.create(
        model="m", messages=ASK, logprobs=True, top_logprobs=2, max_tokens=4
    )
    entries = whole.choices[0].logprobs.content
    assert "".join(e.token for e in entries) == whole.choices[0].message.content
    assert all(len(e.top_logprobs) == 2 for e in entries)
    chunks = list(
        client.chat.completions.create(
            model="m", messages=ASK, logprobs=True, top_logprobs=2, max_tokens=4, stream=True
        )
    )
    streamed = [
        e.token for c in chunks for ch in c.choices if ch.logprobs for e in ch.logprobs.content
    ]
    assert streamed == [e.token for e in entries]


def test_images_seed_user_metadata_store_are_accepted_upstream(gateway: Any) -> None:
    answer = _client(gateway).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE]}],
        seed=7,
        user="someone",
        metadata={"app": "tests"},
        store=False,
    )
    assert answer.choices[0].message.content


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, IMAGE]}]},
            "messages",
        ),
    ],
)
def test_the_local_model_refuses_what_it_cannot_do_naming_the_field(
    gateway: Any, fields: dict[str, Any], param: str
) -> None:
    response = gateway.chat(fields.pop("messages", ASK), model="local", **fields)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "strict": True,
                        "schema": {
                            "type": "object",
                            "properties": {"a": {"type": "string"}},
                            "required": ["a"],
                        },
                    },
                }
            },
            "response_format",
            "additionalProperties",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "strict": True,
                        "schema": {**COLOUR_SCHEMA, "required": ["colour"]},
                    },
                }
            },
            "response_format",
            "bright, count",
        ),
        ({"response_format": {"type": "json_object"}}, "messages", "must contain the word 'json'"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            "response_format",
            "response_format.json_schema.name",
        ),
        ({"top_logprobs": 2}, "top_logprobs", "logprobs must be true"),
        ({"n": 0}, "n", "n"),
        ({"n": 129}, "n", "n"),
        ({"metadata": {"k": 1}}, "metadata", "metadata.k"),
        ({"logit_bias": {"1": 1}}, "logit_bias", "unrecognized request argument"),
    ],
)
def test_validation_stays_strict_where_openai_is(
    gateway: Any, fields: dict[str, Any], param: str, says: str
) -> None:
    response = gateway.chat(ASK, **fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"], error


def test_n_logprobs_and_formats_are_part_of_the_cache_key() -> None:
    def key(**fields: Any) -> str:
        chat = ChatRequest.model_validate({"model": "m", "messages": ASK, **fields})
        return exact_key(ProviderCall(chat, "up-1", "t"), "up").digest

    assert key() == key(n=1) == key(logprobs=False)  # the defaults
    distinct = {
        key(),
        key(n=2),
        key(logprobs=True),
        key(logprobs=True, top_logprobs=3),
        key(response_format=COLOUR_FORMAT),
        key(
            response_format={
                **COLOUR_FORMAT,
                "json_schema": {**COLOUR_FORMAT["json_schema"], "name": "other"},
            }
        ),
    }
    assert len(distinct) == 6
    assert key(user="a", metadata={"x": "y"}, store=True) == key()
