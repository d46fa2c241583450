"""Request validation in-process: ``parse_chat_request`` and ``ChatRequest``.

Every failure is an ``InvalidRequest`` (a 400) whose ``param`` names the offending field.
Over HTTP (the error shape, the server still serving afterwards) the same cases are checked
against a real ``nearline serve`` in ``tests/gateway/test_bad_requests.py``.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from nearline.core.errors import InvalidRequest
from nearline.core.request import ANSWER_CHANGING_FIELDS, ChatRequest
from nearline.gateway.api.openai import parse_chat_request

HI = [{"role": "user", "content": "hi"}]


def body(**fields: Any) -> bytes:
    return orjson.dumps({"model": "m", "messages": HI, **fields})


def refused(raw: bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as raised:
        parse_chat_request(raw)
    error = raised.value
    assert error.status_code == 400
    assert error.body()["error"]["type"] == "invalid_request_error"
    return error


def test_a_minimal_request_parses_with_defaults():
    chat = parse_chat_request(body())
    assert chat.model == "m"
    assert [m.text for m in chat.messages] == ["hi"]
    assert chat.stream is False
    assert chat.include_usage is False
    assert chat.max_output_tokens is None
    assert chat.stop_sequences == []
    assert chat.nearline.cache == "default"


def test_invalid_json_is_a_400_that_says_json():
    error = refused(b'{"model": "x", "messages": [')
    assert "JSON" in error.message
    assert error.param is None


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"42", b"null"])
def test_a_body_that_is_not_an_object_is_refused(raw):
    assert "JSON object" in refused(raw).message


def test_an_unknown_field_is_named():
    error = refused(body(logit_bias_typo={"1": 2}))
    assert error.param == "logit_bias_typo"
    assert error.message == "unrecognized request argument supplied: logit_bias_typo"


def test_an_unknown_field_inside_a_message_is_named_with_its_path():
    error = refused(orjson.dumps({"model": "m", "messages": [{**HI[0], "mood": "sunny"}]}))
    assert error.param == "messages"
    assert "messages.0.mood" in error.message


@pytest.mark.parametrize(
    ("payload", "path"),
    [({"model": "m"}, "messages"), ({"messages": HI}, "model")],
)
def test_a_missing_field_is_named(payload, path):
    error = refused(orjson.dumps(payload))
    assert error.param == path
    assert error.message == f"missing required parameter: {path}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "hot"),
        ("temperature", 2.5),
        ("max_tokens", 0),
        ("messages", "hello"),
        ("messages", []),
        ("stream", "yes please"),
        ("top_p", 3),
        ("stop", ["a", "b", "c", "d", "e"]),
        ("seed", "seven"),
        ("model", ""),
    ],
)
def test_a_bad_type_or_range_names_the_field(field, value):
    error = refused(body(**{field: value}))
    assert error.param == field
    assert error.message.startswith(f"invalid value for {field}")


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        # pydantic's locations end in the union branch: ('stop', 'str'), ('tool_choice',
        # 'dict[str,any]'), ('messages', 0, 'content', 'list[TextPart]', 0, 'text'), ...
        ({"stop": 5}, "stop"),
        ({"tool_choice": 5}, "tool_choice"),
        ({"messages": [{"role": "user", "content": 7}]}, "messages.0.content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]},
            "messages.0.content.0.text",  # the deepest of the union's errors, its tag dropped
        ),
    ],
)
def test_union_tags_are_dropped_from_the_param_path(fields, path):
    error = refused(body(**fields))
    assert error.param == path.split(".")[0]
    assert error.message.startswith(f"invalid value for {path}: ")


def test_a_bad_role_names_the_message_field():
    error = refused(orjson.dumps({"model": "m", "messages": [{"role": "robot", "content": "x"}]}))
    assert error.message.startswith("invalid value for messages.0.role")


def test_openai_parameters_once_refused_are_accepted_now():  # issue 12: n, logprobs, formats
    chat = parse_chat_request(
        body(
            n=3, logprobs=True, response_format={"type": "json_object"}, seed=1, store=False
        ).replace(b'"content":"hi"', b'"content":"hi, in json"')
    )
    assert chat.choices == 3
    assert chat.answer_changing_params()["n"] == 3


def test_default_values_of_those_parameters_leave_the_key_alone():
    chat = parse_chat_request(body(n=1, logprobs=False, response_format={"type": "text"}))
    assert chat.answer_changing_params() == {"response_format": {"type": "text"}}


def test_answer_changing_params_hold_exactly_what_changes_the_answer():
    chat = ChatRequest.model_validate(
        {
            "model": "m",
            "messages": HI,
            "temperature": 0.2,
            "seed": 5,
            "max_tokens": 7,
            "stop": "END",
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "someone",
            "nearline": {"cache": "no-store"},
        }
    )
    assert chat.answer_changing_params() == {
        "temperature": 0.2,
        "seed": 5,
        "max_tokens": 7,
        "stop": "END",
    }
    assert set(chat.answer_changing_params()) <= ANSWER_CHANGING_FIELDS
    assert {"stream", "stream_options", "user", "nearline", "model", "messages"}.isdisjoint(
        ANSWER_CHANGING_FIELDS
    )
    assert ChatRequest.model_validate({"model": "m", "messages": HI}).answer_changing_params() == {}


def test_the_same_question_with_or_without_stream_flags_has_the_same_params():
    plain = parse_chat_request(body(temperature=0.5))
    streamed = parse_chat_request(body(temperature=0.5, stream=True, user="u"))
    assert plain.answer_changing_params() == streamed.answer_changing_params()


def test_derived_properties():
    chat = parse_chat_request(
        body(
            max_tokens=9,
            max_completion_tokens=4,
            stop=["a", "b"],
            stream_options={"include_usage": True},
            tools=[{"type": "function", "function": {"name": "f"}}],
            tool_choice="auto",
        )
    )
    assert chat.max_output_tokens == 4  # the newer field wins
    assert chat.stop_sequences == ["a", "b"]
    assert chat.include_usage is True
    assert chat.wants_tools is True
    assert parse_chat_request(body()).wants_tools is False
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    message = parse_chat_request(
        orjson.dumps({"model": "m", "messages": [{"role": "user", "content": parts}]})
    )
    assert message.messages[0].text == "ab"


def test_nearline_options_reject_unknown_keys_and_bad_values():
    assert refused(body(nearline={"cache": "sometimes"})).param == "nearline"
    assert refused(body(nearline={"tier": "gold"})).param == "nearline"
    assert refused(body(nearline={"ttft_budget_ms": 0})).param == "nearline"
