"""Issue 13, point 1: no 5xx from client input.

Deeply nested ``response_format`` / ``tools`` used to pass validation and then break
serialisation (orjson's recursion limit) in the exact key or the upstream payload: a
plain-text 500 over HTTP, a ``server_error`` frame over WebSocket. Now the request is
bounded when it is parsed (depth, array lengths, string and total sizes) and refused with a
400 naming the field; whatever parses serialises.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from nearline.core.errors import InvalidRequest
from nearline.core.provider import ProviderCall
from nearline.core.request import MAX_DEPTH, ChatRequest
from nearline.gateway.api.openai import parse_chat_request
from nearline.gateway.cache.exact import exact_key
from nearline.gateway.providers.openai_compat import upstream_payload
from nearline.testing import http

HI = [{"role": "user", "content": "hi"}]


def nested(depth: int, leaf: Any = "x") -> Any:
    """``{"a": {"a": ... leaf}}``, ``depth`` objects deep."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def _body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": HI, **fields}


def _deep_tools(depth: int) -> list[dict[str, Any]]:
    function = {"name": "f", "parameters": nested(depth)}
    return [{"type": "function", "function": function}]


def _deep_raw(field: str, depth: int) -> bytes:
    """A body whose ``field`` is ``depth`` objects deep, written by hand (JSON writers refuse
    to write what is nested this deep; the tests below use the stdlib's, which goes further
    than orjson)."""
    deep = '{"a":' * depth + '"x"' + "}" * depth
    value = {"response_format": '{"type":"text","x":' + deep + "}", "tool_choice": deep}[field]
    return b'{"model":"m","messages":[{"role":"user","content":"hi"}],"%s":%s}' % (
        field.encode(),
        value.encode(),
    )


def _refused(body: dict[str, Any] | bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as raised:
        parse_chat_request(body if isinstance(body, bytes) else json.dumps(body).encode())
    assert raised.value.status_code == 400
    return raised.value


def _serialises(request: ChatRequest) -> None:
    call = ProviderCall(request, upstream_model="up-1", tenant="t")
    exact_key(call, "up")
    orjson.dumps(upstream_payload(request, "up-1"))


@pytest.mark.parametrize("depth", [252, 260, 400, 1000])
def test_a_deep_response_format_is_a_400_naming_it(depth: int) -> None:
    error = _refused(_deep_raw("response_format", depth))
    assert error.param == "response_format"
    assert "response_format" in error.message
    assert "deep" in error.message


@pytest.mark.parametrize("depth", [252, 300])
def test_deep_tool_parameters_are_a_400_naming_tools(depth: int) -> None:
    error = _refused(_body(tools=_deep_tools(depth)))
    assert error.param == "tools"


def test_deep_tool_choice_is_a_400() -> None:
    assert _refused(_deep_raw("tool_choice", 300)).param == "tool_choice"


def test_a_request_at_the_depth_bound_parses_and_serialises() -> None:
    # containers: the body, tools, tools[0], function, then the nested objects
    request = parse_chat_request(orjson.dumps(_body(tools=_deep_tools(MAX_DEPTH - 4))))
    _serialises(request)
    assert _refused(_body(tools=_deep_tools(MAX_DEPTH - 3))).param == "tools"


def test_too_many_messages_is_a_400() -> None:
    assert _refused(_body(messages=HI * 5000)).param == "messages"


def test_too_many_tools_is_a_400() -> None:
    assert _refused(_body(tools=_deep_tools(1) * 200)).param == "tools"


def test_a_long_array_inside_a_tool_schema_is_a_400() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"enum": [1] * 20000}}}]
    assert _refused(_body(tools=tools)).param == "tools"


def test_an_overlong_model_name_is_a_400() -> None:
    assert _refused({"model": "m" * 10_000, "messages": HI}).param == "model"


def test_an_integer_beyond_64_bits_in_a_tool_schema_is_a_400() -> None:
    # orjson reads it as a Python int it then refuses to write back
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"max": 2**70}}}]
    with pytest.raises(InvalidRequest) as raised:
        ChatRequest.model_validate(_body(tools=tools))
    assert raised.value.param == "tools"


def test_too_many_values_in_total_is_a_400() -> None:
    wide = {f"k{i}": [0] * 1000 for i in range(200)}  # 200k values, within every other bound
    tools = [{"type": "function", "function": {"name": "f", "parameters": wide}}]
    assert _refused(_body(tools=tools)).param == "tools"


# --- over HTTP and WebSocket: an OpenAI-shaped 400, never a plain-text 500 -------------------


def _post(gateway: Any, body: dict[str, Any]) -> httpx.Response:
    return http.post(f"{gateway.v1}/chat/completions", json=body, timeout=30)


def _deep_field(field: str) -> Any:
    return {"type": "text", "x": nested(300)} if field == "response_format" else _deep_tools(300)


@pytest.mark.parametrize("field", ["response_format", "tools"])
def test_deep_input_is_a_json_400_with_the_exact_tier_on(
    exact_gateway: Any, openai_error: Any, field: str
) -> None:
    error = openai_error(_post(exact_gateway, _body(**{field: _deep_field(field)})), 400)
    assert error["param"] == field
    assert _post(exact_gateway, _body(max_tokens=3)).status_code == 200  # still serving


@pytest.mark.parametrize("field", ["response_format", "tools"])
def test_deep_input_is_a_json_400_with_the_caches_off(
    uncached_gateway: Any, openai_error: Any, field: str
) -> None:
    response = _post(uncached_gateway, _body(**{field: _deep_field(field)}))
    assert openai_error(response, 400)["param"] == field


async def test_deep_input_over_websocket_is_an_invalid_request_frame(exact_gateway: Any) -> None:
    body = _body(response_format={"type": "text", "x": nested(300)})
    async with connect(exact_gateway.ws) as socket:
        await socket.send(json.dumps({"type": "chat", "id": "r1", "body": body}))
        reply = orjson.loads(await socket.recv())
    assert reply["type"] == "error"
    assert reply["id"] == "r1"
    assert reply["error"]["type"] == "invalid_request_error"
    assert reply["error"]["param"] == "response_format"
