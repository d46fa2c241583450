"""Issue 12, point 4: Anthropic Messages with the official ``anthropic`` SDK over a real socket.

The gateway serves ``/v1/messages`` for three kinds of model: ``m`` on nearline's mock
upstream speaking OpenAI's format, ``claude`` on the same mock speaking Anthropic's
(``providers.claude.format: anthropic``: x-api-key, anthropic-version, its SSE events) and
``local``, the bundled SmolLM2. The mock calls a tool whenever tools are offered and the
last turn is the user's own words, and answers in text after a tool result.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from nearline.config import hash_api_key
from nearline.core.request import ChatRequest
from nearline.gateway.providers.anthropic_payload import anthropic_payload
from nearline.testing import http

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
NO_CACHE = {"exact": {"enabled": False}, "semantic": {"enabled": False}}


def _settings(mock_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {
            "claude": {"base_url": mock_url, "format": "anthropic", "api_key": "sk-ant-mock"},
            "keyless": {"base_url": mock_url, "format": "anthropic"},
        },
        "models": {
            "m": {"provider": "up", "upstream_model": "mock-1", "supports_tools": True},
            "claude": {
                "provider": "claude",
                "upstream_model": "claude-mock",
                "supports_tools": True,
            },
            "keyless": {"provider": "keyless"},
            "local": {"provider": "local"},
        },
        "cache": NO_CACHE,
        "progressive": {"draft_model": None},
        "local": {"n_ctx": 512},
        **extra,
    }


@pytest.fixture
def gateway(make_gateway: Any) -> Any:
    mock = make_gateway.mock()
    return make_gateway(mock, **_settings(mock.base_url))


def _client(gateway: Any, key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)


@pytest.mark.parametrize("model", ["m", "claude"])
def test_create_and_stream_agree(gateway: Any, model: str) -> None:
    client = _client(gateway)
    message = client.messages.create(
        model=model, max_tokens=64, system="Answer briefly.", messages=ASK
    )
    assert message.id.startswith("msg_")
    assert message.role == "assistant" and message.model == model
    assert message.stop_reason == "end_turn"
    [block] = message.content
    assert block.type == "text" and len(block.text.split()) == 24  # the mock's answer
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 24
    with client.messages.stream(
        model=model, max_tokens=64, system="Answer briefly.", messages=ASK
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == block.text  # deterministic: the same question, the same words
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 24
    assert final.usage.input_tokens == message.usage.input_tokens


def test_stream_event_order(gateway: Any) -> None:
    body = {"model": "claude", "max_tokens": 5, "messages": ASK, "stream": True}
    response = http.post(f"{gateway.v1}/messages", json=body, timeout=30)
    assert response.status_code == 200
    kinds = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert kinds[:3] == ["message_start", "ping", "content_block_start"]
    assert set(kinds[3:-3]) == {"content_block_delta"}
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert '"stop_reason":"max_tokens"' in response.text


@pytest.mark.parametrize("model", ["m", "claude"])
@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip(gateway: Any, model: str, stream: bool) -> None:
    client = _client(gateway)
    ask: dict[str, Any] = {"model": model, "max_tokens": 64, "tools": [WEATHER], "messages": ASK}
    if stream:
        with client.messages.stream(**ask) as events:
            first = events.get_final_message()
    else:
        first = client.messages.create(**ask)
    assert first.stop_reason == "tool_use"
    calls = [block for block in first.content if block.type == "tool_use"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert isinstance(call.input, dict) and set(call.input) == {"city", "days"}
    assert isinstance(call.input["city"], str) and isinstance(call.input["days"], int)
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 24 C"}
    turns = [
        *ASK,
        {"role": "assistant", "content": first.content},  # as apps send it back
        {"role": "user", "content": [result]},
    ]
    second = client.messages.create(model=model, max_tokens=64, tools=[WEATHER], messages=turns)
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text" and second.content[0].text


def test_tool_choice_names_the_tool(gateway: Any) -> None:
    other = {**WEATHER, "name": "get_time"}
    message = _client(gateway).messages.create(
        model="claude",
        max_tokens=64,
        tools=[WEATHER, other],
        tool_choice={"type": "tool", "name": "get_time"},
        messages=ASK,
    )
    assert [b.name for b in message.content if b.type == "tool_use"] == ["get_time"]


def test_count_tokens(gateway: Any) -> None:
    client = _client(gateway)
    counted = client.messages.count_tokens(model="claude", system="Be brief.", messages=ASK)
    assert counted.input_tokens == 2 + 6  # the mock counts words: its upstream was asked
    local = client.messages.count_tokens(model="local", messages=ASK)
    created = client.messages.create(model="local", max_tokens=1, messages=ASK)
    assert local.input_tokens == created.usage.input_tokens + (
        created.usage.cache_read_input_tokens or 0
    )
    assert local.input_tokens > 6
    with pytest.raises(anthropic.BadRequestError, match="no token counter"):
        client.messages.count_tokens(model="m", messages=ASK)


def test_local_model(gateway: Any) -> None:
    message = _client(gateway).messages.create(
        model="local", max_tokens=12, messages=[{"role": "user", "content": "Say hello."}]
    )
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.output_tokens <= 12


def test_x_api_key_and_errors(make_gateway: Any) -> None:
    mock = make_gateway.mock()
    key = "sk-nearline-tenant"
    keys = [{"sha256": hash_api_key(key), "tenant": "t1"}]
    gateway = make_gateway(mock, **_settings(mock.base_url, auth={"keys": keys}))
    assert _client(gateway, key).messages.create(model="claude", max_tokens=8, messages=ASK).content
    bearer = http.post(
        f"{gateway.v1}/messages",
        json={"model": "m", "max_tokens": 8, "messages": ASK},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert bearer.status_code == 200
    with pytest.raises(anthropic.AuthenticationError) as refused:
        _client(gateway, "wrong").messages.create(model="claude", max_tokens=8, messages=ASK)
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    client = _client(gateway, key)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=8, messages=ASK)
    with pytest.raises(anthropic.BadRequestError, match="top_k"):
        client.messages.create(model="claude", max_tokens=8, messages=ASK, extra_body={"top_k": 3})
    # The keyless provider sends no x-api-key: the mock refuses it as Anthropic would.
    with pytest.raises(anthropic.BadRequestError, match="rejected"):
        client.messages.create(model="keyless", max_tokens=8, messages=ASK)


def test_openai_client_on_an_anthropic_upstream(gateway: Any) -> None:
    """The chat route in front of the Anthropic-format provider (its streaming and tools)."""
    body = {"model": "claude", "messages": ASK, "stream": True}
    response = http.post(f"{gateway.v1}/chat/completions", json=body, timeout=30)
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    refused = http.post(
        f"{gateway.v1}/chat/completions", json={**body, "n": 2, "stream": False}, timeout=30
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "n"
    for extra, param in (
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
    ):
        ask = {**body, "stream": False, **extra}
        ask["messages"] = [{"role": "user", "content": "Reply in json."}]
        answer = http.post(f"{gateway.v1}/chat/completions", json=ask, timeout=30)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param
    tools = [{"type": "function", "function": {"name": "get_weather", **_schema()}}]
    called = http.post(
        f"{gateway.v1}/chat/completions",
        json={"model": "claude", "messages": ASK, "tools": tools},
        timeout=30,
    ).json()["choices"][0]
    assert called["finish_reason"] == "tool_calls"
    assert called["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


def _schema() -> dict[str, Any]:
    return {"parameters": WEATHER["input_schema"]}


def test_payload_translation() -> None:
    request = ChatRequest.model_validate(
        {
            "model": "claude",
            "messages": [
                {"role": "system", "content": "Be brief."},
                *ASK,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather"}}],
            "parallel_tool_calls": False,
            "stop": "END",
            "user": "u1",
        }
    )
    payload = anthropic_payload(request, "claude-x")
    assert payload["system"] == "Be brief."
    assert payload["max_tokens"] == 4096 and payload["stop_sequences"] == ["END"]
    assert payload["metadata"] == {"user_id": "u1"}
    assert payload["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert [turn["role"] for turn in payload["messages"]] == ["user", "assistant", "user"]
    assert payload["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert payload["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny"}
    ]


def test_every_new_endpoint_through_nearline_serve(make_gateway: Any, tmp_path: Any) -> None:
    """A real ``nearline serve`` process: Messages (both upstream formats, streamed),
    embeddings, completions and responses, each with its own official client."""
    import openai
    import yaml

    from nearline.testing import serve_in_process

    mock = make_gateway.mock()
    config = tmp_path / "nearline.yaml"
    settings = _settings(mock.base_url, request_log={"sqlite_path": str(tmp_path / "r.sqlite")})
    settings["providers"]["up"] = {"base_url": mock.base_url}
    settings["models"].pop("local")
    config.write_text(yaml.safe_dump(settings))
    with serve_in_process(config) as url:
        claude = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
        for model in ("m", "claude"):
            with claude.messages.stream(model=model, max_tokens=64, messages=ASK) as stream:
                assert len("".join(stream.text_stream).split()) == 24
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        vectors = client.embeddings.create(model="all-MiniLM-L6-v2", input=["a", "b"])
        assert [len(row.embedding) for row in vectors.data] == [384, 384]
        completion = client.completions.create(model="claude", prompt="Hello")
        assert len(completion.choices[0].text.split()) == 24
        response = client.responses.create(model="claude", input="Hello")
        follow = client.responses.create(
            model="m", input="And then?", previous_response_id=response.id
        )
        assert follow.status == "completed" and follow.output_text
