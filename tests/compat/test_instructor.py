"""Issue 12, point 6: instructor against a running gateway, in each mode that an
OpenAI-compatible server can serve (tools, parallel tools, JSON mode, JSON
schema, the Responses API's tools) and through ``/v1/messages`` with the Anthropic client
(its tool mode), on nearline's mock upstream; JSON schema also on the local model."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anthropic
import instructor
import openai
import pytest
from pydantic import BaseModel

MODELS = {
    "m": {"provider": "up", "upstream_model": "mock-1", "supports_tools": True},
    "local": {"provider": "local"},
}
ASK = [{"role": "user", "content": "Extract the user: Jason is 25. Reply in json."}]


class User(BaseModel):
    name: str
    age: int


class Answer(BaseModel):
    answer: str


@pytest.fixture(scope="module")
def gateway(make_module_gateway: Any) -> Any:
    return make_module_gateway(
        models=MODELS,
        cache={"semantic": {"enabled": False}},
        progressive={"draft_model": None},
        local={"n_ctx": 512},
    )


def _openai(gateway: Any, mode: instructor.Mode) -> Any:
    client = openai.OpenAI(base_url=gateway.v1, api_key="unused", max_retries=0)
    return instructor.from_openai(client, mode=mode)


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA])
def test_extracts_a_model(gateway: Any, mode: instructor.Mode) -> None:
    user = _openai(gateway, mode).chat.completions.create(
        model="m", response_model=User, messages=ASK, max_retries=0
    )
    assert isinstance(user, User) and user.name and isinstance(user.age, int)


def test_json_mode(gateway: Any) -> None:
    answer = _openai(gateway, instructor.Mode.JSON).chat.completions.create(
        model="m", response_model=Answer, messages=ASK, max_retries=0
    )
    assert len(answer.answer.split()) == 24  # the mock's JSON-mode answer


def test_parallel_tools(gateway: Any) -> None:
    calls = _openai(gateway, instructor.Mode.PARALLEL_TOOLS).chat.completions.create(
        model="m", response_model=Iterable[User | Answer], messages=ASK, max_retries=0
    )
    found = list(calls)
    assert found and all(isinstance(item, User | Answer) for item in found)


def test_responses_tools(gateway: Any) -> None:
    user = _openai(gateway, instructor.Mode.RESPONSES_TOOLS).responses.create(
        model="m", response_model=User, input="Jason is 25.", max_retries=0
    )
    assert isinstance(user, User) and isinstance(user.age, int)


def test_anthropic_tools(gateway: Any) -> None:
    client = instructor.from_anthropic(
        anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0),
        mode=instructor.Mode.TOOLS,  # Anthropic's tool use (the client says which)
    )
    user = client.messages.create(
        model="m", response_model=User, messages=ASK, max_tokens=64, max_retries=0
    )
    assert isinstance(user, User) and isinstance(user.age, int)


def test_json_schema_on_the_local_model(gateway: Any) -> None:
    user = _openai(gateway, instructor.Mode.JSON_SCHEMA).chat.completions.create(
        model="local", response_model=User, messages=ASK, max_tokens=48, max_retries=0
    )
    assert isinstance(user, User)  # the grammar makes it parse and validate
