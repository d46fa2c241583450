"""Issue 12, point 6: LangChain against a running gateway — ``ChatOpenAI.bind_tools``,
``with_structured_output`` (function_calling, json_schema, json_mode) and
``OpenAIEmbeddings``, on nearline's mock upstream (tool- and JSON-capable) and, for JSON
schema output, on the local model (a llama.cpp grammar built from the schema)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel

MODELS = {
    "m": {"provider": "up", "upstream_model": "mock-1", "supports_tools": True},
    "local": {"provider": "local"},
}


class City(BaseModel):
    """A city and its country."""

    name: str
    country: str


class Answer(BaseModel):
    """What the mock answers in JSON mode."""

    answer: str


@tool
def get_weather(city: str, days: int) -> str:
    """The weather in a city for some days."""
    return f"Sunny in {city} for {days} days"


@pytest.fixture(scope="module")
def gateway(make_module_gateway: Any) -> Any:
    return make_module_gateway(
        models=MODELS,
        cache={"semantic": {"enabled": False}},
        progressive={"draft_model": None},
        local={"n_ctx": 512},
    )


def _chat(gateway: Any, model: str = "m", **options: Any) -> ChatOpenAI:
    return ChatOpenAI(model=model, base_url=gateway.v1, api_key="unused", max_retries=0, **options)  # type: ignore[call-arg]


@pytest.mark.parametrize("streaming", [False, True])
def test_bind_tools_round_trip(gateway: Any, streaming: bool) -> None:
    llm = _chat(gateway, streaming=streaming).bind_tools([get_weather])
    question = HumanMessage("What is the weather in Paris for two days?")
    first = llm.invoke([question])
    assert isinstance(first, AIMessage)
    [call] = first.tool_calls
    assert call["name"] == "get_weather" and set(call["args"]) == {"city", "days"}
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    second = llm.invoke([question, first, result])
    assert isinstance(second.content, str) and second.content and not second.tool_calls


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_structured_output(gateway: Any, method: str) -> None:
    city = _chat(gateway).with_structured_output(City, method=method).invoke("Name a city.")
    assert isinstance(city, City) and city.name and city.country


def test_json_mode(gateway: Any) -> None:
    structured = _chat(gateway).with_structured_output(Answer, method="json_mode")
    answer = structured.invoke("Answer in json: what is a cache?")
    assert isinstance(answer, Answer) and len(answer.answer.split()) == 24


def test_json_schema_on_the_local_model(gateway: Any) -> None:
    structured = _chat(gateway, "local", max_tokens=48, temperature=0).with_structured_output(
        City, method="json_schema"
    )
    city = structured.invoke("Name a city in France.")
    assert isinstance(city, City)  # the grammar makes it parse and validate


def test_openai_embeddings(gateway: Any) -> None:
    # check_embedding_ctx_length=False: LangChain would otherwise tokenize with tiktoken
    # (whose encodings are downloaded) and send token ids, which the bundled model refuses.
    embeddings = OpenAIEmbeddings(
        model="all-MiniLM-L6-v2",
        base_url=gateway.v1,
        api_key="unused",  # type: ignore[arg-type]
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    documents = embeddings.embed_documents(["What is a cache?", "How do I bake bread?"])
    query = embeddings.embed_query("What is a cache?")
    assert len(documents) == 2 and len(documents[0]) == len(query) == 384
    assert query == pytest.approx(documents[0], abs=1e-6)
