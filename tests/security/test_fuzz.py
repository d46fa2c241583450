"""Issue 13, point 9: a bounded fuzz test of the chat route, from the schema it publishes.

Request bodies are drawn (hypothesis) from the request-body schema in ``/openapi.json`` —
valid ones, then mutated: a field given any JSON value, an unknown field, nesting hundreds of
levels deep, a body that is any JSON or no JSON at all. Whatever comes in, the gateway must
answer without a 5xx, every error in OpenAI's shape; and whatever parses must serialise into
the cache keys and the upstream payload. Bounded: a fixed number of examples, derandomised
(the same every run), no example database, a few seconds in all. The model is served by the
mock upstream, so no local generation runs.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nearline.core.errors import InvalidRequest
from nearline.core.provider import ProviderCall
from nearline.core.request import ChatRequest, request_body_schema
from nearline.gateway.api.openai import parse_chat_request
from nearline.gateway.cache.exact import exact_key
from nearline.gateway.cache.partition import semantic_key
from nearline.gateway.providers.openai_compat import upstream_payload
from nearline.testing import http

BOUNDED = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples every run: CI is not a lottery
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MODEL = "m"  # the gateway's model, served by the mock upstream
ERROR_KEYS = {"message", "type", "param", "code"}

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)  # no lone surrogates
LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
ANY_JSON = st.recursive(
    LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=16,
)


def nested(depth: int) -> Any:
    """Objects and arrays, alternating, ``depth`` levels deep."""
    value: Any = "x"
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


# Where free-form JSON goes deep in a request that is otherwise fine.
DEEP_PLACES = {
    "response_format": lambda deep: {"type": "text", "x": deep},
    "tools": lambda deep: [{"type": "function", "function": {"name": "f", "parameters": deep}}],
    "tool_choice": lambda deep: {"type": "function", "function": deep},
}


def from_schema(node: dict[str, Any], *, top: bool = False) -> st.SearchStrategy[Any]:
    """Values valid for ``node``: the subset of JSON Schema pydantic writes (no ``$ref``:
    the published schema is self-contained)."""
    if "anyOf" in node or "oneOf" in node:  # oneOf: a discriminated union (content parts)
        return st.one_of([from_schema(option) for option in node.get("anyOf", node.get("oneOf"))])
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "string":
        return st.text(
            st.characters(exclude_categories=["Cs"]),
            min_size=node.get("minLength", 0),
            max_size=min(node.get("maxLength", 24), 24),
        )
    if kind == "integer":
        return st.integers(node.get("minimum"), node.get("maximum"))
    if kind == "number":
        low = node.get("minimum", node.get("exclusiveMinimum"))
        return st.floats(
            low,
            node.get("maximum"),
            exclude_min="exclusiveMinimum" in node,
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(
            from_schema(node.get("items", {})),
            min_size=node.get("minItems", 0),
            max_size=min(node.get("maxItems", 3), 3),
        )
    if kind == "object" and "properties" in node:
        properties = {name: from_schema(sub) for name, sub in node["properties"].items()}
        if top:  # mostly the model that exists, so requests get past the catalogue
            drawn_model = properties["model"]  # one in five (one_of does not weigh repeats)
            properties["model"] = st.integers(0, 4).flatmap(
                lambda i: drawn_model if i == 0 else st.just(MODEL)
            )
            properties["max_tokens"] = st.none() | st.integers(1, 4)
            # mostly what nearline supports (the schema cannot say "n must be 1")
            properties["n"] = st.none() | st.just(1) | properties["n"]
            properties["logprobs"] = st.none() | st.just(False) | properties["logprobs"]
            properties["response_format"] = (
                st.none() | st.just({"type": "text"}) | properties["response_format"]
            )
            # OpenAI refuses a tool_choice or parallel_tool_calls without tools, top_logprobs
            # without logprobs: mostly leave them out, so bodies get past those checks
            # (and drawn tools and metadata mostly break the name and value rules)
            for name in ("tool_choice", "parallel_tool_calls", "top_logprobs", "tools", "metadata"):
                properties[name] = st.one_of(*[st.none()] * 3, properties[name])
            # drawn messages mostly break OpenAI's tool-message rules (a tool message must
            # answer a call): half the bodies carry a plain conversation instead
            plain = st.lists(
                st.fixed_dictionaries(
                    {"role": st.sampled_from(["system", "user", "assistant"]), "content": TEXT}
                ),
                min_size=1,
                max_size=3,
            )
            properties["messages"] = st.one_of(plain, properties["messages"])
        required = set(node.get("required", ()))
        return st.fixed_dictionaries(
            {name: strategy for name, strategy in properties.items() if name in required},
            optional={n: s for n, s in properties.items() if n not in required},
        )
    if kind == "object":  # free-form: a tool, tool_choice, response_format
        return st.dictionaries(TEXT, ANY_JSON, max_size=4)
    return ANY_JSON


def bodies(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Valid bodies, and the same bodies broken in the ways clients break them."""
    valid = from_schema(schema, top=True)
    fields = sorted(schema["properties"])
    wrong_value = st.tuples(valid, st.sampled_from(fields), ANY_JSON).map(
        lambda t: {**t[0], t[1]: t[2]}
    )
    unknown_field = st.tuples(valid, TEXT, ANY_JSON).map(lambda t: {**t[0], f"x_{t[1]}": t[2]})
    deep = st.tuples(valid, st.sampled_from(sorted(DEEP_PLACES)), st.integers(40, 400)).map(
        lambda t: {**t[0], t[1]: DEEP_PLACES[t[1]](nested(t[2]))}
    )
    not_json = st.binary(max_size=64)  # sent as the body's bytes
    return st.one_of(*[valid] * 4, wrong_value, unknown_field, deep, ANY_JSON, not_json)


def _assert_error_shape(payload: Any) -> None:
    assert isinstance(payload, dict), payload
    assert set(payload) == {"error"}, payload
    error = payload["error"]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["message"], str)
    assert error["message"]


def _assert_answered(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    kind = response.headers.get("content-type", "")
    if response.status_code >= 400:
        assert kind.startswith("application/json"), response.text
        _assert_error_shape(response.json())
    elif kind.startswith("text/event-stream"):
        frames = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert frames[-1] == "[DONE]", response.text
        for frame in frames[:-1]:
            chunk = orjson.loads(frame)
            if "error" in chunk:
                _assert_error_shape(chunk)
    else:
        assert response.json()["object"] == "chat.completion", response.text


# --- in process: whatever parses serialises --------------------------------------------------


def _parsed(raw: bytes) -> ChatRequest | None:
    """The request, or ``None`` when it is refused — with a 4xx in OpenAI's shape."""
    try:
        return parse_chat_request(raw)
    except InvalidRequest as error:
        refused = error
    assert 400 <= refused.status_code < 500
    _assert_error_shape(refused.body())
    return None


@BOUNDED
@given(body=bodies(request_body_schema()))
def test_whatever_parses_serialises_into_keys_and_payload(body: Any) -> None:
    chat = _parsed(body if isinstance(body, bytes) else json.dumps(body).encode())
    if chat is None:
        return
    call = ProviderCall(chat, upstream_model="up-1", tenant="t")
    exact_key(call, "up")
    semantic_key("t", chat.model, chat.turns(), chat.answer_changing_params())
    orjson.dumps(upstream_payload(chat, "up-1"))


# --- over HTTP, from the schema the gateway publishes ----------------------------------------


@pytest.fixture(scope="module")
def fuzzed(make_module_gateway: Any) -> Any:
    return make_module_gateway(
        cache={"semantic": {"enabled": False}}, progressive={"draft_model": None}
    )


@pytest.fixture(scope="module")
def published(fuzzed: Any) -> dict[str, Any]:
    spec = http.get(f"{fuzzed.url}/openapi.json", timeout=10).json()
    content = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]
    schema: dict[str, Any] = content["application/json"]["schema"]
    return schema


def test_the_chat_body_schema_is_published(published: dict[str, Any]) -> None:
    assert published["required"] == ["model", "messages"]
    assert published["additionalProperties"] is False
    assert "$ref" not in json.dumps(published)  # self-contained
    assert published["properties"]["tools"]["anyOf"][0]["maxItems"] == 128


def test_no_5xx_and_openai_shaped_errors_for_fuzzed_bodies(
    fuzzed: Any, published: dict[str, Any]
) -> None:
    url = f"{fuzzed.v1}/chat/completions"
    statuses: list[int] = []
    with httpx.Client(timeout=30) as client:

        @settings(BOUNDED, max_examples=300)
        @given(body=bodies(published))
        def answered(body: Any) -> None:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            response = client.post(
                url, content=content, headers={"content-type": "application/json"}
            )
            statuses.append(response.status_code)
            _assert_answered(response)

        answered()
    # not vacuous: the bodies reached the model and the refusals alike
    assert sum(status == 200 for status in statuses) >= 15, statuses
    assert sum(400 <= status < 500 for status in statuses) >= 15, statuses
