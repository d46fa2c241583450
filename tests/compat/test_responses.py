"""Issue 12, point 3: the Responses API with the official ``openai`` SDK over a real socket.

``m`` is served by nearline's mock upstream (it calls a tool whenever tools are offered and
the last message is the user's, and answers in text after a tool result); ``local`` by the
bundled SmolLM2. Stored responses live in the gateway's memory store, per tenant.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from nearline.config import hash_api_key
from nearline.testing import http

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
        "additionalProperties": False,
    },
    "strict": True,
}
MODELS = {
    "m": {"provider": "up", "upstream_model": "mock-1", "supports_tools": True},
    "local": {"provider": "local"},
}
KEYS = {"alice": "sk-alice-key", "bob": "sk-bob-key"}


@pytest.fixture
def gateway(make_gateway: Any) -> Any:
    keys = [{"sha256": hash_api_key(key), "tenant": name} for name, key in KEYS.items()]
    return make_gateway(
        models=MODELS,
        auth={"keys": keys},
        cache={"semantic": {"enabled": False}},
        progressive={"draft_model": None},
        local={"n_ctx": 512},
    )


def _client(gateway: Any, tenant: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=KEYS[tenant], max_retries=0)


def test_text_and_streaming_agree(gateway: Any) -> None:
    client = _client(gateway)
    response = client.responses.create(
        model="m", input="What is a cache?", instructions="Answer briefly."
    )
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.object == "response" and response.instructions == "Answer briefly."
    assert len(response.output_text.split()) == 24
    assert response.usage is not None and response.usage.output_tokens == 24
    kinds: list[str] = []
    text = ""
    final = None
    with client.responses.stream(
        model="m", input="What is a cache?", instructions="Answer briefly."
    ) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
        final = stream.get_final_response()
    assert text == response.output_text == final.output_text
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]


def test_previous_response_id_carries_the_conversation(gateway: Any) -> None:
    client = _client(gateway)
    first = client.responses.create(model="m", input="Remember the word cobalt.")
    second = client.responses.create(model="m", input="Which word?", previous_response_id=first.id)
    fresh = client.responses.create(model="m", input="Which word?")
    assert second.output_text != fresh.output_text  # the mock's words depend on every message
    replay = client.chat.completions.create(
        model="m",
        messages=[
            {"role": "user", "content": "Remember the word cobalt."},
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "Which word?"},
        ],
    )
    assert second.output_text == replay.choices[0].message.content
    assert client.responses.retrieve(second.id).output_text == second.output_text
    # Within a tenant only: bob can neither read nor continue alice's response.
    with pytest.raises(openai.NotFoundError):
        _client(gateway, "bob").responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError, match="not found"):
        _client(gateway, "bob").responses.create(
            model="m", input="Which word?", previous_response_id=first.id
        )
    unstored = client.responses.create(model="m", input="Forget me.", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip(gateway: Any, stream: bool) -> None:
    client = _client(gateway)
    ask: dict[str, Any] = {"model": "m", "input": "Weather in Paris?", "tools": [WEATHER]}
    if stream:
        with client.responses.stream(**ask) as events:
            deltas = "".join(
                e.delta for e in events if e.type == "response.function_call_arguments.delta"
            )
            first = events.get_final_response()
    else:
        first = client.responses.create(**ask)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id
    arguments = json.loads(call.arguments)
    assert set(arguments) == {"city", "days"} and isinstance(arguments["days"], int)
    if stream:
        assert deltas == call.arguments
    second = client.responses.create(
        model="m",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}],
        tools=[WEATHER],
    )
    assert second.status == "completed" and second.output_text
    # Without the store: the call sent back as an input item, as stateless clients do.
    stateless = client.responses.create(
        model="m",
        store=False,
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"},
        ],
    )
    assert stateless.output_text == second.output_text


def test_json_schema_text_format(gateway: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    response = _client(gateway).responses.create(
        model="m",
        input="Name a city in json.",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    )
    assert set(json.loads(response.output_text)) == {"city"}


def test_refusals_and_incomplete(gateway: Any) -> None:
    client = _client(gateway)
    with pytest.raises(openai.BadRequestError, match="reasoning"):
        client.responses.create(model="m", input="x", reasoning={"effort": "low"})
    with pytest.raises(openai.BadRequestError, match=r"tools\.0\.type"):
        client.responses.create(model="m", input="x", tools=[{"type": "web_search"}])
    short = client.responses.create(model="m", input="Be long.", max_output_tokens=3)
    assert short.status == "incomplete"
    assert short.incomplete_details is not None
    assert short.incomplete_details.reason == "max_output_tokens"


def test_local_model(gateway: Any) -> None:
    client = _client(gateway)
    response = client.responses.create(model="local", input="Say hello.", max_output_tokens=8)
    assert response.output_text.strip()
    follow = client.responses.create(
        model="local", input="Again.", previous_response_id=response.id, max_output_tokens=8
    )
    assert follow.status in ("completed", "incomplete") and follow.output_text.strip()
    body = {"model": "local", "input": "Hi.", "max_output_tokens": 4, "stream": True}
    streamed = http.post(
        f"{gateway.v1}/responses",
        json=body,
        headers={"Authorization": f"Bearer {KEYS['alice']}"},
        timeout=60,
    )
    assert "event: response.created" in streamed.text
    assert "event: response.incomplete" in streamed.text or "response.completed" in streamed.text
