"""Issue 12, point 1: tools end to end, with the official ``openai`` SDK over a real socket.

The model ``m`` is served by nearline's mock upstream, which calls a tool whenever tools are
offered and the last message is the user's (its arguments an instance of the tool's
schema, streamed in fragments), and answers in text after a tool result.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from nearline.core.provider import ProviderCall
from nearline.core.request import ChatRequest
from nearline.gateway.cache.exact import exact_key
from nearline.gateway.cache.partition import semantic_key
from nearline.gateway.providers.openai_compat import upstream_payload
from nearline.testing import http

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
MODELS = {
    "m": {"provider": "up", "upstream_model": "mock-1", "supports_tools": True},
    "local": {"provider": "local"},
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


def _stream_calls(chunks: list[Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The tool calls folded from streamed fragments, and the one finish reason."""
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in chunks:
        for choice in chunk.choices:
            for fragment in choice.delta.tool_calls or []:
                call = calls.setdefault(fragment.index, {"id": None, "name": None, "args": ""})
                if fragment.id:
                    call["id"] = fragment.id
                if fragment.function and fragment.function.name:
                    call["name"] = fragment.function.name
                if fragment.function and fragment.function.arguments:
                    call["args"] += fragment.function.arguments
            finish = choice.finish_reason or finish
    return [calls[i] for i in sorted(calls)], finish


def test_streamed_tool_call_fragments_pass_through_as_they_arrive(gateway: Any) -> None:
    chunks = list(
        _client(gateway).chat.completions.create(
            model="m", messages=ASK, tools=[WEATHER], stream=True
        )
    )
    fragments = [f for c in chunks for ch in c.choices for f in ch.delta.tool_calls or []]
    assert len(fragments) > 2  # passed through in pieces, not folded
    assert fragments[0].id and fragments[0].function.name == "get_weather"
    assert all(f.id is None and f.function.name is None for f in fragments[1:])
    [call], finish = _stream_calls(chunks)
    assert finish == "tool_calls"
    assert json.loads(call["args"]) == {"city": "mock", "days": 1}


def test_a_tool_round_trip_not_streamed(gateway: Any) -> None:
    client = _client(gateway)
    first = client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "mock", "days": 1}
    history = [
        *ASK,
        choice.message.model_dump(exclude_none=True),  # the assistant's tool_calls message
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
    ]
    final = client.chat.completions.create(model="m", messages=history, tools=[WEATHER])
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.choices[0].message.content
    assert not final.choices[0].message.tool_calls


def test_a_tool_round_trip_streamed(gateway: Any) -> None:
    client = _client(gateway)
    chunks = list(
        client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], stream=True)
    )
    [call], _ = _stream_calls(chunks)
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": call["args"]},
            }
        ],
    }
    tool = {"role": "tool", "tool_call_id": call["id"], "content": "clear, 21 C"}
    answer = list(
        client.chat.completions.create(
            model="m", messages=[*ASK, assistant, tool], tools=[WEATHER], stream=True
        )
    )
    text = "".join(ch.delta.content or "" for c in answer for ch in c.choices)
    assert text.strip()
    assert _stream_calls(answer)[1] in ("stop", "length")


def test_tool_choice_and_parallel_tool_calls_reach_the_upstream(gateway: Any) -> None:
    client = _client(gateway)
    named = client.chat.completions.create(
        model="m",
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [c.function.name for c in named.choices[0].message.tool_calls] == ["get_time"]
    both = client.chat.completions.create(
        model="m", messages=ASK, tools=[WEATHER, TIME], parallel_tool_calls=True
    )
    calls = both.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2
    none = client.chat.completions.create(
        model="m", messages=ASK, tools=[WEATHER], tool_choice="none"
    )
    assert none.choices[0].message.content and not none.choices[0].message.tool_calls


def test_the_exact_cache_replays_a_tool_call_answer_exactly(gateway: Any) -> None:
    body = {"model": "m", "messages": ASK, "tools": [WEATHER, TIME], "parallel_tool_calls": True}

    def streamed() -> tuple[list[Any], str]:
        response = http.post(f"{gateway.v1}/chat/completions", json={**body, "stream": True})
        frames = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        chunks = [json.loads(frame) for frame in frames[:-1]]
        source = chunks[0]["nearline"]["source"]
        return [(c["choices"], c.get("usage")) for c in chunks], source

    original, first_source = streamed()
    replayed, second_source = streamed()
    assert (first_source, second_source) == ("inference", "exact")
    assert replayed == original  # the same fragments, ids, names, arguments, finish reason

    fresh = http.post(f"{gateway.v1}/chat/completions", json={**body, "seed": 4}).json()
    again = http.post(f"{gateway.v1}/chat/completions", json={**body, "seed": 4}).json()
    assert again["nearline"]["source"] == "exact"
    assert again["choices"] == fresh["choices"]
    assert fresh["choices"][0]["finish_reason"] == "tool_calls"
    assert len(fresh["choices"][0]["message"]["tool_calls"]) == 2
    assert gateway.upstream.requests() == 2


def _chat(**fields: Any) -> ChatRequest:
    return ChatRequest.model_validate({"model": "m", "messages": ASK, **fields})


def test_cache_keys_follow_the_tool_set_and_the_semantic_tier_skips_tools() -> None:
    def key(chat: ChatRequest) -> str:
        return exact_key(ProviderCall(chat, "up-1", "t"), "up").digest

    keys = {
        key(_chat()),
        key(_chat(tools=[WEATHER])),
        key(_chat(tools=[WEATHER, TIME])),
        key(_chat(tools=[WEATHER], tool_choice="required")),
        key(_chat(tools=[WEATHER, TIME], parallel_tool_calls=False)),
    }
    assert len(keys) == 5
    plain = _chat()
    assert semantic_key("t", "m", plain.turns(), plain.answer_changing_params()) is not None
    tooled = _chat(tools=[WEATHER])
    assert semantic_key("t", "m", tooled.turns(), tooled.answer_changing_params()) is None


def test_tool_calls_and_results_are_part_of_the_conversation_key() -> None:
    def turn(arguments: str, result: str) -> ChatRequest:
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
        return _chat(
            messages=[
                *ASK,
                {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": result},
            ]
        )

    def key(chat: ChatRequest) -> str:
        return exact_key(ProviderCall(chat, "up-1", "t"), "up").digest

    assert len({key(turn("{}", "a")), key(turn('{"x":1}', "a")), key(turn("{}", "b"))}) == 3


def test_the_upstream_payload_carries_tools_and_the_assistant_and_tool_messages() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    chat = _chat(
        messages=[
            *ASK,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        tools=[WEATHER],
        tool_choice="auto",
        parallel_tool_calls=False,
    )
    payload = upstream_payload(chat, "up-1")
    assert payload["tools"] == [WEATHER]
    assert (payload["tool_choice"], payload["parallel_tool_calls"]) == ("auto", False)
    assert payload["messages"][1] == {"role": "assistant", "tool_calls": [call]}
    assert payload["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}


@pytest.mark.parametrize(
    ("messages", "fields", "param", "says"),
    [
        ([{"role": "tool", "content": "x"}], {}, "messages", "messages.0.tool_call_id"),
        (
            [*ASK, {"role": "tool", "tool_call_id": "nope", "content": "x"}],
            {},
            "messages",
            "must be a response to a preceding message with 'tool_calls'",
        ),
        (ASK, {"tool_choice": "auto"}, "tool_choice", "only allowed when tools"),
        (ASK, {"parallel_tool_calls": True}, "parallel_tool_calls", "only allowed when tools"),
        (
            ASK,
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools",
            "tools.0.function.name",
        ),
        (
            [{"role": "user", "content": "x", "tool_call_id": "c"}],
            {},
            "messages",
            "messages.0.tool_call_id",
        ),
    ],
)
def test_openai_refusals_are_kept(
    gateway: Any, messages: list[Any], fields: dict[str, Any], param: str, says: str
) -> None:
    response = gateway.chat(messages, **fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert says in error["message"]


def test_the_local_model_refuses_tools_with_a_400_naming_the_field(gateway: Any) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        _client(gateway).chat.completions.create(model="local", messages=ASK, tools=[WEATHER])
    assert raised.value.body["param"] == "tools"
    assert "does not support tools" in raised.value.body["message"]
